//! What the control plane learns about the relay's interface before it
//! starts: index, MAC, MTU, addresses, RX queue count, virtual or physical.

use std::{ffi::CString, fs, net::IpAddr, path::Path};

use anyhow::{bail, Context};
use dataplane::frame::MacAddr;

#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    pub name: String,
    pub index: u32,
    pub mac: MacAddr,
    pub mtu: u32,
    pub rx_queues: u32,
    /// Global (non-link-local) addresses, IPv4 first.
    pub addrs: Vec<IpAddr>,
    /// No backing device (veth, bridge, ...): generic XDP is the safe default.
    pub is_virtual: bool,
}

impl InterfaceInfo {
    pub fn lookup(name: &str) -> anyhow::Result<Self> {
        let cname = CString::new(name).context("interface name contains a NUL byte")?;
        // SAFETY: valid C string.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if index == 0 {
            bail!("interface {name:?} not found in this network namespace (see `ip link`)");
        }
        let sys = Path::new("/sys/class/net").join(name);
        let mac_text = fs::read_to_string(sys.join("address"))
            .with_context(|| format!("reading MAC of {name}"))?;
        let mac = parse_mac(mac_text.trim())
            .with_context(|| format!("{name} has no Ethernet address"))?;
        let mtu = fs::read_to_string(sys.join("mtu"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1500);
        let rx_queues = fs::read_dir(sys.join("queues"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
                    .count() as u32
            })
            .unwrap_or(1)
            .max(1);
        let is_virtual = !sys.join("device").exists();
        let mut addrs = interface_addrs(name)?;
        addrs.sort_by_key(|a| a.is_ipv6());
        Ok(Self {
            name: name.to_string(),
            index,
            mac,
            mtu,
            rx_queues,
            addrs,
            is_virtual,
        })
    }
}

pub fn parse_mac(s: &str) -> Option<MacAddr> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(MacAddr(out))
}

fn interface_addrs(name: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getifaddrs");
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: nodes of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if ifname != name {
            continue;
        }
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip = match family {
            libc::AF_INET => {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
        if !link_local {
            out.push(ip);
        }
    }
    // SAFETY: list from getifaddrs.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01"),
            Some(MacAddr([2, 0, 10, 255, 0, 1]))
        );
        assert_eq!(parse_mac("02:00:0a:ff:00"), None);
        assert_eq!(parse_mac("02:00:0a:ff:00:01:02"), None);
        assert_eq!(parse_mac("zz:00:0a:ff:00:01"), None);
    }

    #[test]
    fn loopback_is_found_and_missing_interfaces_are_explained() {
        let lo = InterfaceInfo::lookup("lo").unwrap();
        assert_eq!(lo.index, 1);
        let err = InterfaceInfo::lookup("no-such-if0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
    }
}
