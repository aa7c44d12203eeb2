//! A small rtnetlink client: dumps the kernel's neighbour and route tables
//! for one interface into a [`NextHopTable`]. The control thread calls it
//! periodically, so next hops follow the kernel (ARP/ND, route changes).

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use dataplane::{
    frame::MacAddr,
    neighbor::{NextHopTable, Route},
};

const NLMSG_HDRLEN: usize = 16;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
/// ndm_flags: "use" the entry, which makes the kernel resolve it.
const NTF_USE: u8 = 0x01;
const NLM_F_DUMP: u16 = 0x300;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
/// Neighbour states whose link-layer address can be used.
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80; // REACHABLE STALE DELAY PROBE NOARP PERMANENT

struct NetlinkSocket(libc::c_int);

impl Drop for NetlinkSocket {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

impl NetlinkSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2) call.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self(fd))
    }

    /// Sends a dump request with a 12-byte family header and calls `each`
    /// with (message type, payload) for every answer.
    fn dump(
        &self,
        msg_type: u16,
        family_header: [u8; 12],
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<()> {
        let mut req = [0u8; NLMSG_HDRLEN + 12];
        req[0..4].copy_from_slice(&((NLMSG_HDRLEN + 12) as u32).to_ne_bytes());
        req[4..6].copy_from_slice(&msg_type.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence
        req[NLMSG_HDRLEN..].copy_from_slice(&family_header);
        self.send(&req)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buffer valid for its length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut msgs = &buf[..n as usize];
            while msgs.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(msgs[0..4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(msgs[4..6].try_into().unwrap());
                if len < NLMSG_HDRLEN || len > msgs.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(msgs[16..20].try_into().unwrap_or([0; 4]));
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    _ => each(kind, &msgs[NLMSG_HDRLEN..len]),
                }
                msgs = &msgs[(len + 3) & !3..];
            }
        }
    }
}

impl NetlinkSocket {
    /// Sends one message to the kernel.
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: kernel address (all zero), buffer valid for its length.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        let rc = unsafe {
            libc::sendto(
                self.0,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends one request that asks for an ACK and returns its status.
    fn request(&self, msg: &[u8]) -> io::Result<()> {
        self.send(msg)?;
        let mut buf = [0u8; 1024];
        // SAFETY: buffer valid for its length.
        let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let buf = &buf[..n as usize];
        if buf.len() >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
            let errno = i32::from_ne_bytes(buf[16..20].try_into().unwrap_or([0; 4]));
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(-errno));
            }
        }
        Ok(())
    }
}

/// Asks the kernel to resolve the link-layer address of `ip` on interface
/// `ifindex` (ARP / neighbour solicitation), as if it were about to send
/// to it: RTM_NEWNEIGH with NTF_USE creates the entry if needed and starts
/// resolution without setting an address. The AF_XDP backend writes
/// Ethernet headers itself and so never makes the kernel resolve a next
/// hop; a relay that opens connections (links to upstream relays) calls
/// this for their next hops, and the periodic table refresh picks the
/// answer up.
pub fn nudge_neighbor(ifindex: u32, ip: IpAddr) -> io::Result<()> {
    let (family, addr): (u8, Vec<u8>) = match ip {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let attr_len = 4 + addr.len();
    let total = NLMSG_HDRLEN + 12 + ((attr_len + 3) & !3);
    let mut msg = vec![0u8; total];
    msg[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    let ndm = &mut msg[NLMSG_HDRLEN..NLMSG_HDRLEN + 12];
    ndm[0] = family;
    ndm[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    // ndm_state 0 (NUD_NONE): with NTF_USE the state is not written.
    ndm[10] = NTF_USE;
    let attr = &mut msg[NLMSG_HDRLEN + 12..];
    attr[0..2].copy_from_slice(&(attr_len as u16).to_ne_bytes());
    attr[2..4].copy_from_slice(&NDA_DST.to_ne_bytes());
    attr[4..4 + addr.len()].copy_from_slice(&addr);
    NetlinkSocket::open()?.request(&msg)
}

/// Iterates the rtattrs in `data` as (type, payload).
fn attributes(mut data: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if data.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            return None;
        }
        let payload = &data[4..len];
        data = &data[((len + 3) & !3).min(data.len())..];
        Some((kind, payload))
    })
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).ok()?,
        ))),
        _ => None,
    }
}

/// Reads the routes and neighbours that go through interface `ifindex`.
pub fn read_next_hops(ifindex: u32) -> io::Result<NextHopTable> {
    let sock = NetlinkSocket::open()?;
    let mut neighbors = HashMap::new();
    // struct ndmsg: family, pad[3], ifindex i32, state u16, flags u8, type u8
    sock.dump(RTM_GETNEIGH, [0; 12], |kind, msg| {
        if kind != RTM_NEWNEIGH || msg.len() < 12 {
            return;
        }
        let index = i32::from_ne_bytes(msg[4..8].try_into().unwrap()) as u32;
        let state = u16::from_ne_bytes(msg[8..10].try_into().unwrap());
        if index != ifindex || state & NUD_USABLE == 0 {
            return;
        }
        let (mut dst, mut mac) = (None, None);
        for (t, v) in attributes(&msg[12..]) {
            match t {
                NDA_DST => dst = ip_from(v),
                NDA_LLADDR if v.len() == 6 => mac = Some(MacAddr(v.try_into().unwrap())),
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (dst, mac) {
            neighbors.insert(ip, mac);
        }
    })?;

    let mut routes = Vec::new();
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags u32
    sock.dump(RTM_GETROUTE, [0; 12], |kind, msg| {
        if kind != RTM_NEWROUTE || msg.len() < 12 || msg[7] != RTN_UNICAST {
            return;
        }
        let family = msg[0];
        let prefix_len = msg[1];
        let mut table = u32::from(msg[4]);
        let (mut dst, mut gateway, mut oif) = (None, None, None);
        for (t, v) in attributes(&msg[12..]) {
            match t {
                RTA_DST => dst = ip_from(v),
                RTA_GATEWAY => gateway = ip_from(v),
                RTA_OIF if v.len() == 4 => oif = Some(u32::from_ne_bytes(v.try_into().unwrap())),
                RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes(v.try_into().unwrap()),
                _ => {}
            }
        }
        if table != RT_TABLE_MAIN || oif != Some(ifindex) {
            return;
        }
        let dst = dst.unwrap_or(if family == libc::AF_INET6 as u8 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        routes.push(Route {
            dst,
            prefix_len,
            gateway,
        });
    })?;
    Ok(NextHopTable { routes, neighbors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_walk_aligned_and_stop_on_garbage() {
        // Two attributes: type 1 with 4 bytes, type 2 with 6 bytes (padded to 8).
        let mut data = vec![8, 0, 1, 0, 198, 18, 0, 1];
        data.extend_from_slice(&[10, 0, 2, 0, 2, 0, 0, 0, 0, 1, 0, 0]);
        data.extend_from_slice(&[200, 0]); // truncated header: ignored
        let attrs: Vec<_> = attributes(&data).collect();
        assert_eq!(attrs.len(), 2);
        assert_eq!(ip_from(attrs[0].1), Some("198.18.0.1".parse().unwrap()));
        assert_eq!(attrs[1], (2, &[2u8, 0, 0, 0, 0, 1][..]));
    }

    /// The loopback interface has routes in the local table only; the main
    /// table has none through it, and the dump itself must succeed.
    #[test]
    fn dumps_the_kernel_tables() {
        let table = read_next_hops(1).expect("netlink dump works");
        assert!(table.routes.iter().all(|r| r.prefix_len <= 128));
    }
}
