//! Ethernet / 802.1Q / IPv4 / IPv6 / UDP frames (`dataplane::frame`).
//!
//! Every input is used twice:
//!
//! * as a received frame for `parse_udp`; when it parses, the result must
//!   describe the frame (payload inside it, lengths and addresses as the
//!   headers say, a valid IPv4 header checksum), and rebuilding a frame
//!   from the parsed fields with `FrameHeader::write` must parse back to
//!   the same fields and payload;
//! * as a description (`arbitrary`) of a frame to send: `write` either
//!   refuses it for the documented reasons or produces a frame that
//!   `parse_udp` reads back exactly, with valid IPv4 and UDP checksums.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use dataplane::frame::{
    checksum_add, checksum_fold, parse_udp, BuildError, FrameHeader, MacAddr, UdpFrame, ETH_HLEN,
    IPV4_HLEN, IPV6_HLEN, UDP_HLEN, VLAN_HLEN,
};
use libfuzzer_sys::fuzz_target;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The UDP checksum over the pseudo-header and segment folds to all ones.
fn udp_checksum_ok(src: IpAddr, dst: IpAddr, udp: &[u8]) -> bool {
    let mut sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum_add(checksum_add(0, &s.octets()), &d.octets()),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum_add(checksum_add(0, &s.octets()), &d.octets()),
        _ => return false,
    };
    sum += 17 + udp.len() as u32;
    checksum_fold(checksum_add(sum, udp)) == 0xffff
}

/// What a successful parse must say about `frame`.
fn check_parsed(frame: &[u8], p: &UdpFrame) {
    let end = p
        .payload_offset
        .checked_add(p.payload_len)
        .expect("offset overflow");
    assert!(end <= frame.len(), "payload beyond the frame");
    assert_eq!(p.payload(frame).len(), p.payload_len);
    assert!(p.ecn <= 3);
    assert_eq!(p.dst_mac.0, frame[0..6]);
    assert_eq!(p.src_mac.0, frame[6..12]);
    let l3 = match p.vlan {
        Some(v) => {
            assert!(v < 4096);
            assert_eq!(v, be16(frame, ETH_HLEN) & 0x0fff);
            ETH_HLEN + VLAN_HLEN
        }
        None => ETH_HLEN,
    };
    let ethertype = be16(frame, l3 - 2);
    let ip = &frame[l3..];
    let l4 = match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            assert_eq!(ethertype, 0x0800);
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            assert!(ihl >= IPV4_HLEN);
            assert_eq!(ip[0] >> 4, 4);
            assert_eq!(ip[9], 17);
            assert_eq!(be16(ip, 6) & 0x3fff, 0, "fragment accepted");
            assert_eq!(checksum_fold(checksum_add(0, &ip[..ihl])), 0xffff);
            assert_eq!(s.octets(), ip[12..16]);
            assert_eq!(d.octets(), ip[16..20]);
            assert_eq!(p.ecn, ip[1] & 3);
            let total = usize::from(be16(ip, 2));
            assert!(
                total >= ihl + UDP_HLEN + p.payload_len,
                "UDP beyond the IPv4 length"
            );
            assert!(l3 + total <= frame.len());
            l3 + ihl
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert_eq!(ethertype, 0x86dd);
            assert_eq!(ip[0] >> 4, 6);
            assert_eq!(ip[6], 17);
            assert_eq!(s.octets(), ip[8..24]);
            assert_eq!(d.octets(), ip[24..40]);
            let plen = usize::from(be16(ip, 4));
            assert!(
                plen >= UDP_HLEN + p.payload_len,
                "UDP beyond the IPv6 length"
            );
            assert!(l3 + IPV6_HLEN + plen <= frame.len());
            l3 + IPV6_HLEN
        }
        _ => panic!("mixed address families"),
    };
    assert_eq!(p.payload_offset, l4 + UDP_HLEN);
    let udp = &frame[l4..];
    assert_eq!(p.src.port(), be16(udp, 0));
    assert_eq!(p.dst.port(), be16(udp, 2));
    assert_eq!(usize::from(be16(udp, 4)), UDP_HLEN + p.payload_len);
}

/// `write` followed by `parse_udp` gives back what was written.
fn check_written(h: &FrameHeader, payload: &[u8], out: &mut [u8]) {
    let same_family = h.src.is_ipv4() == h.dst.is_ipv4();
    match h.write(out, payload) {
        Ok(n) => {
            assert!(same_family);
            assert_eq!(n, h.header_len() + payload.len());
            let frame = &out[..n];
            let p = parse_udp(frame).unwrap_or_else(|e| panic!("own frame does not parse: {e}"));
            check_parsed(frame, &p);
            assert_eq!(p.src_mac, h.src_mac);
            assert_eq!(p.dst_mac, h.dst_mac);
            assert_eq!(p.vlan, h.vlan.map(|v| v & 0x0fff));
            assert_eq!(p.src, h.src);
            assert_eq!(p.dst, h.dst);
            assert_eq!(p.ecn, h.ecn & 3);
            assert_eq!(p.payload(frame), payload);
            let udp = &frame[p.payload_offset - UDP_HLEN..];
            assert!(
                udp_checksum_ok(h.src.ip(), h.dst.ip(), udp),
                "bad UDP checksum"
            );
            assert_ne!(be16(udp, 6), 0, "UDP checksum 0 sent");
        }
        Err(BuildError::MixedFamilies) => assert!(!same_family),
        Err(BuildError::BufferTooSmall { need, have }) => {
            assert_eq!(have, out.len());
            assert_eq!(need, h.header_len() + payload.len());
            assert!(need > have);
        }
        Err(BuildError::PayloadTooLarge(n)) => {
            assert_eq!(n, payload.len());
            assert!(UDP_HLEN + n > 65535 - IPV4_HLEN);
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Send {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: Option<u16>,
    v6: bool,
    mixed: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    ecn: u8,
    hop_limit: u8,
    /// Bytes short of (or beyond) the needed buffer.
    slack: i8,
}

fn addr(v6: bool, b: [u8; 16], port: u16) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    SocketAddr::new(ip, port)
}

fuzz_target!(|data: &[u8]| {
    // Received.
    if let Ok(p) = parse_udp(data) {
        check_parsed(data, &p);
        let h = FrameHeader {
            src_mac: p.src_mac,
            dst_mac: p.dst_mac,
            vlan: p.vlan,
            src: p.src,
            dst: p.dst,
            ecn: p.ecn,
            hop_limit: 64,
        };
        let mut out = vec![0u8; h.header_len() + p.payload_len];
        check_written(&h, p.payload(data), &mut out);
    }

    // Sent.
    let mut u = Unstructured::new(data);
    let Ok(s) = Send::arbitrary(&mut u) else {
        return;
    };
    let payload = u.take_rest();
    let h = FrameHeader {
        src_mac: MacAddr(s.src_mac),
        dst_mac: MacAddr(s.dst_mac),
        vlan: s.vlan,
        src: addr(s.v6, s.src, s.sport),
        dst: addr(s.v6 != s.mixed, s.dst, s.dport),
        ecn: s.ecn,
        hop_limit: s.hop_limit,
    };
    let need = h.header_len() + payload.len();
    let len = need.saturating_add_signed(isize::from(s.slack));
    let mut out = vec![0u8; len];
    check_written(&h, payload, &mut out);
});
