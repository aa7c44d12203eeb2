//! The relay's XDP program.
//!
//! Parses Ethernet (with at most one 802.1Q/802.1ad tag), IPv4 (any IHL) or
//! IPv6 (fixed header only) and UDP. A datagram whose destination port is in
//! `RELAY_PORTS` is redirected to the AF_XDP socket registered in `XSKS` for
//! the queue it arrived on, with `XDP_PASS` as the fallback when no socket is
//! there. Everything else is passed to the kernel untouched: this program never
//! drops a packet.
//!
//! IPv6 extension headers: only the fixed header's Next Header is examined. A
//! packet whose Next Header is not UDP (hop-by-hop options, routing, fragment,
//! ...) is passed to the kernel, which then answers it as it would without XDP.
//! IPv4 fragments other than the first are passed for the same reason: they
//! carry no UDP header.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use xdp_redirect_common::{
    headers::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP, IPV4_HLEN,
        IPV6_HLEN, UDP_HLEN, VLAN_HLEN,
    },
    Counter, MAX_PORTS, MAX_QUEUES,
};

#[map]
static RELAY_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_PORTS, 0);

#[map]
static XSKS: XskMap = XskMap::with_max_entries(MAX_QUEUES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[xdp]
pub fn xdp_redirect(ctx: XdpContext) -> u32 {
    match classify(&ctx) {
        Verdict::Relay => {
            // SAFETY: ctx.ctx points at the kernel's xdp_md for this invocation.
            let queue = unsafe { (*ctx.ctx).rx_queue_index };
            match XSKS.redirect(queue, xdp_action::XDP_PASS as u64) {
                Ok(action) => {
                    count(Counter::Redirected);
                    action
                }
                Err(_) => {
                    count(Counter::NoSocket);
                    count(Counter::Passed);
                    xdp_action::XDP_PASS
                }
            }
        }
        Verdict::Kernel => {
            count(Counter::Passed);
            xdp_action::XDP_PASS
        }
        Verdict::Malformed => {
            count(Counter::Malformed);
            count(Counter::Passed);
            xdp_action::XDP_PASS
        }
    }
}

enum Verdict {
    Relay,
    Kernel,
    Malformed,
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe { *slot += 1 };
    }
}

/// Bounds-checked read of a big-endian u16 at `offset` into the frame.
#[inline(always)]
fn be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    let start = ctx.data();
    if start + offset + 2 > ctx.data_end() {
        return None;
    }
    // SAFETY: checked against data_end just above; the verifier re-checks.
    let bytes = unsafe { *((start + offset) as *const [u8; 2]) };
    Some(u16::from_be_bytes(bytes))
}

#[inline(always)]
fn byte(ctx: &XdpContext, offset: usize) -> Option<u8> {
    let start = ctx.data();
    if start + offset + 1 > ctx.data_end() {
        return None;
    }
    // SAFETY: checked against data_end just above.
    Some(unsafe { *((start + offset) as *const u8) })
}

#[inline(always)]
fn classify(ctx: &XdpContext) -> Verdict {
    let Some(mut ethertype) = be16(ctx, 12) else {
        return Verdict::Malformed;
    };
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(inner) = be16(ctx, ETH_HLEN + 2) else {
            return Verdict::Malformed;
        };
        ethertype = inner;
        l3 += VLAN_HLEN;
    }

    let l4 = match ethertype {
        ETH_P_IPV4 => {
            let (Some(version_ihl), Some(proto), Some(frag)) =
                (byte(ctx, l3), byte(ctx, l3 + 9), be16(ctx, l3 + 6))
            else {
                return Verdict::Malformed;
            };
            let ihl = ((version_ihl & 0x0f) as usize) * 4;
            if version_ihl >> 4 != 4 || ihl < IPV4_HLEN {
                return Verdict::Malformed;
            }
            // Not UDP, or a non-first fragment (no UDP header in it).
            if proto != IPPROTO_UDP || frag & 0x1fff != 0 {
                return Verdict::Kernel;
            }
            l3 + ihl
        }
        ETH_P_IPV6 => {
            let Some(next_header) = byte(ctx, l3 + 6) else {
                return Verdict::Malformed;
            };
            if ctx.data() + l3 + IPV6_HLEN > ctx.data_end() {
                return Verdict::Malformed;
            }
            if next_header != IPPROTO_UDP {
                return Verdict::Kernel;
            }
            l3 + IPV6_HLEN
        }
        _ => return Verdict::Kernel,
    };

    if ctx.data() + l4 + UDP_HLEN > ctx.data_end() {
        return Verdict::Malformed;
    }
    let Some(dst_port) = be16(ctx, l4 + 2) else {
        return Verdict::Malformed;
    };
    // SAFETY: the map value is a plain u8 and only read here.
    if unsafe { RELAY_PORTS.get(&dst_port) }.is_some() {
        Verdict::Relay
    } else {
        Verdict::Kernel
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
