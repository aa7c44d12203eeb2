//! Ethernet / IPv4 / IPv6 / UDP wire formats: parse a received frame into a
//! [`UdpFrame`] view, build a frame from a [`FrameHeader`] and a payload.
//!
//! Only what the relay needs: Ethernet II with at most one 802.1Q/802.1ad
//! tag, IPv4 with any IHL (options skipped), IPv6 with the fixed header only
//! (extension headers are not relay traffic; the XDP program passes them to
//! the kernel), UDP. Nothing here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// Shared with the XDP program, so both agree on what relay traffic is.
pub use xdp_redirect_common::headers::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN, UDP_HLEN, VLAN_HLEN};
use xdp_redirect_common::headers::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP,
};

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl std::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a received frame is not a UDP datagram we can hand to QUIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than its headers")]
    Truncated,
    #[error("not IPv4 or IPv6")]
    NotIp,
    #[error("not UDP")]
    NotUdp,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("bad IP header (version, length or checksum)")]
    BadIpHeader,
    #[error("UDP length inconsistent with the IP length")]
    BadUdpLength,
}

/// A parsed UDP datagram inside a received Ethernet frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// 802.1Q VLAN ID (12 bits) if the frame carried one tag.
    pub vlan: Option<u16>,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The two ECN bits of the IP header.
    pub ecn: u8,
    /// Byte offset of the UDP payload in the frame.
    pub payload_offset: usize,
    pub payload_len: usize,
}

impl UdpFrame {
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.payload_offset..self.payload_offset + self.payload_len]
    }
}

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses an Ethernet frame carrying UDP over IPv4 or IPv6.
///
/// The IPv4 header checksum is verified. The UDP checksum is not: on veth and
/// with checksum offload the kernel hands XDP frames whose UDP checksum is
/// only partial, and QUIC's AEAD authenticates every byte of the payload anyway.
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame, FrameError> {
    if frame.len() < ETH_HLEN {
        return Err(FrameError::Truncated);
    }
    let dst_mac = MacAddr(frame[0..6].try_into().unwrap());
    let src_mac = MacAddr(frame[6..12].try_into().unwrap());
    let mut ethertype = be16(frame, 12);
    let mut l3 = ETH_HLEN;
    let mut vlan = None;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if frame.len() < ETH_HLEN + VLAN_HLEN {
            return Err(FrameError::Truncated);
        }
        vlan = Some(be16(frame, ETH_HLEN) & 0x0fff);
        ethertype = be16(frame, ETH_HLEN + 2);
        l3 += VLAN_HLEN;
    }

    let (src_ip, dst_ip, ecn, l4, l4_len) = match ethertype {
        ETH_P_IPV4 => {
            let ip = frame.get(l3..).ok_or(FrameError::Truncated)?;
            if ip.len() < IPV4_HLEN {
                return Err(FrameError::Truncated);
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(be16(ip, 2));
            if ip[0] >> 4 != 4 || ihl < IPV4_HLEN || total < ihl {
                return Err(FrameError::BadIpHeader);
            }
            if ip.len() < total {
                return Err(FrameError::Truncated);
            }
            // A correct header sums (with its checksum) to all ones.
            if checksum_fold(checksum_add(0, &ip[..ihl])) != 0xffff {
                return Err(FrameError::BadIpHeader);
            }
            if ip[9] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            // More-fragments flag or a non-zero offset.
            if be16(ip, 6) & 0x3fff != 0 {
                return Err(FrameError::Fragment);
            }
            let src = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap());
            let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap());
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                ip[1] & 0x03,
                l3 + ihl,
                total - ihl,
            )
        }
        ETH_P_IPV6 => {
            let ip = frame.get(l3..).ok_or(FrameError::Truncated)?;
            if ip.len() < IPV6_HLEN {
                return Err(FrameError::Truncated);
            }
            if ip[0] >> 4 != 6 {
                return Err(FrameError::BadIpHeader);
            }
            if ip[6] != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            let payload_len = usize::from(be16(ip, 4));
            if ip.len() < IPV6_HLEN + payload_len {
                return Err(FrameError::Truncated);
            }
            let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
            let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap());
            let traffic_class = ((ip[0] & 0x0f) << 4) | (ip[1] >> 4);
            (
                IpAddr::V6(src),
                IpAddr::V6(dst),
                traffic_class & 0x03,
                l3 + IPV6_HLEN,
                payload_len,
            )
        }
        _ => return Err(FrameError::NotIp),
    };

    if l4_len < UDP_HLEN {
        return Err(FrameError::Truncated);
    }
    let udp = &frame[l4..];
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HLEN || udp_len > l4_len {
        return Err(FrameError::BadUdpLength);
    }
    Ok(UdpFrame {
        src_mac,
        dst_mac,
        vlan,
        src: SocketAddr::new(src_ip, be16(udp, 0)),
        dst: SocketAddr::new(dst_ip, be16(udp, 2)),
        ecn,
        payload_offset: l4 + UDP_HLEN,
        payload_len: udp_len - UDP_HLEN,
    })
}

/// Everything needed to put a UDP payload on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub vlan: Option<u16>,
    /// Source and destination must be of the same IP family.
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// ECN bits for the IP header (0 = not ECN-capable).
    pub ecn: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub hop_limit: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("source and destination address families differ")]
    MixedFamilies,
    #[error("frame buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall { need: usize, have: usize },
    #[error("payload of {0} bytes does not fit one UDP datagram")]
    PayloadTooLarge(usize),
}

impl FrameHeader {
    /// Length of the Ethernet + IP + UDP headers this header produces.
    pub fn header_len(&self) -> usize {
        let l2 = ETH_HLEN + if self.vlan.is_some() { VLAN_HLEN } else { 0 };
        let l3 = if self.dst.is_ipv4() {
            IPV4_HLEN
        } else {
            IPV6_HLEN
        };
        l2 + l3 + UDP_HLEN
    }

    /// Writes the whole frame (headers, then `payload`) into `out` and returns
    /// its length. IPv4 header checksum and UDP checksum are always filled in.
    pub fn write(&self, out: &mut [u8], payload: &[u8]) -> Result<usize, BuildError> {
        let hlen = self.header_len();
        let need = hlen + payload.len();
        if need > out.len() {
            return Err(BuildError::BufferTooSmall {
                need,
                have: out.len(),
            });
        }
        let udp_len = UDP_HLEN + payload.len();
        if udp_len > usize::from(u16::MAX) - IPV4_HLEN {
            return Err(BuildError::PayloadTooLarge(payload.len()));
        }

        out[0..6].copy_from_slice(&self.dst_mac.0);
        out[6..12].copy_from_slice(&self.src_mac.0);
        let mut l3 = ETH_HLEN;
        let ethertype = if self.dst.is_ipv4() {
            ETH_P_IPV4
        } else {
            ETH_P_IPV6
        };
        if let Some(vid) = self.vlan {
            out[12..14].copy_from_slice(&ETH_P_8021Q.to_be_bytes());
            out[14..16].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
            out[16..18].copy_from_slice(&ethertype.to_be_bytes());
            l3 += VLAN_HLEN;
        } else {
            out[12..14].copy_from_slice(&ethertype.to_be_bytes());
        }

        // The UDP checksum covers a pseudo-header of the addresses.
        let (l4, pseudo) = match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let ip = &mut out[l3..l3 + IPV4_HLEN];
                ip[0] = 0x45;
                ip[1] = self.ecn & 0x03;
                ip[2..4].copy_from_slice(&((IPV4_HLEN + udp_len) as u16).to_be_bytes());
                ip[4..6].copy_from_slice(&[0, 0]); // identification: DF set, never fragmented
                ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
                ip[8] = self.hop_limit;
                ip[9] = IPPROTO_UDP;
                ip[10..12].copy_from_slice(&[0, 0]);
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let csum = !checksum_fold(checksum_add(0, ip));
                ip[10..12].copy_from_slice(&csum.to_be_bytes());
                let mut sum = checksum_add(0, &src.octets());
                sum = checksum_add(sum, &dst.octets());
                sum += u32::from(IPPROTO_UDP) + udp_len as u32;
                (l3 + IPV4_HLEN, sum)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let ip = &mut out[l3..l3 + IPV6_HLEN];
                let tc = self.ecn & 0x03;
                ip[0] = 0x60 | (tc >> 4);
                ip[1] = tc << 4;
                ip[2..4].copy_from_slice(&[0, 0]);
                ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                ip[6] = IPPROTO_UDP;
                ip[7] = self.hop_limit;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                let mut sum = checksum_add(0, &src.octets());
                sum = checksum_add(sum, &dst.octets());
                sum += u32::from(IPPROTO_UDP) + udp_len as u32;
                (l3 + IPV6_HLEN, sum)
            }
            _ => return Err(BuildError::MixedFamilies),
        };

        let udp = &mut out[l4..l4 + udp_len];
        udp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        udp[UDP_HLEN..].copy_from_slice(payload);
        // Summed from `payload`, which its writer just left in cache, not
        // from the copy: the destination frame's lines can still be on
        // their way (the copy's stores) when the sum reads them.
        let header_sum = checksum_add(pseudo, &udp[..UDP_HLEN]);
        let mut csum = !checksum_fold(checksum_add(header_sum, payload));
        // RFC 768: a computed zero is sent as all ones (zero means "none" on IPv4
        // and is forbidden on IPv6).
        if csum == 0 {
            csum = 0xffff;
        }
        udp[6..8].copy_from_slice(&csum.to_be_bytes());
        Ok(need)
    }
}

/// Adds `data` as big-endian 16-bit words to a running one's-complement sum.
/// The sum is kept unfolded in a u32; callers fold once at the end.
///
/// Hot path: every transmitted frame's payload passes through here. The
/// one's-complement sum does not depend on byte order (RFC 1071 §2(B)), so
/// the data is summed as little-endian 32-bit words into u64 lanes, which
/// the compiler vectorises, and byte-swapped once. On x86-64 with AVX2 the
/// same loop runs in 256-bit registers (chosen at run time: the build
/// targets baseline x86-64).
#[inline]
pub fn checksum_add(sum: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if data.len() >= 256 && std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU was just seen to support AVX2.
            return sum + unsafe { sum_words_avx2(data) };
        }
    }
    sum + sum_words(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn sum_words_avx2(data: &[u8]) -> u32 {
    sum_words(data)
}

/// The one's-complement sum of `data` as big-endian 16-bit words, folded
/// to 16 bits.
#[inline(always)]
fn sum_words(data: &[u8]) -> u32 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    }
    let mut pairs = words.remainder().chunks_exact(2);
    for p in &mut pairs {
        acc += u64::from(u16::from_le_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        // A trailing odd byte is the high byte of a big-endian word: the low
        // byte of a little-endian one.
        acc += u64::from(*last);
    }
    // Fold to 16 bits; each step keeps the end-around carry.
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u32::from((acc as u16).swap_bytes())
}

/// Folds a running sum into 16 bits (without the final complement).
#[inline]
pub fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
    const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);

    fn header(src: &str, dst: &str) -> FrameHeader {
        FrameHeader {
            src_mac: MAC_A,
            dst_mac: MAC_B,
            vlan: None,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            ecn: 0,
            hop_limit: 64,
        }
    }

    /// The fast sum agrees with the word-by-word definition for every
    /// length and alignment of the data.
    #[test]
    fn checksum_matches_word_by_word_definition() {
        fn reference(data: &[u8]) -> u32 {
            let mut sum = 0u32;
            let mut chunks = data.chunks_exact(2);
            for c in &mut chunks {
                sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
            }
            if let [last] = chunks.remainder() {
                sum += u32::from(*last) << 8;
            }
            sum
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut buf = vec![0u8; 1604];
        for len in (0..80).chain([1199, 1200, 1201, 1452, 1500, 1599]) {
            for offset in 0..4 {
                rng.fill(&mut buf[..]);
                if len % 7 == 0 {
                    buf.fill(0xff); // the largest words: carries everywhere
                }
                let data = &buf[offset..offset + len];
                assert_eq!(
                    checksum_fold(checksum_add(0x1_2345, data)),
                    checksum_fold(0x1_2345 + reference(data)),
                    "len {len} offset {offset}"
                );
            }
        }
    }

    /// RFC 1071 worked example: the words 0001 f203 f4f5 f6f7 sum to ddf2.
    #[test]
    fn rfc1071_checksum_vector() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum_fold(checksum_add(0, &data)), 0xddf2);
    }

    /// A well-known IPv4 header (from the Wikipedia checksum example):
    /// 4500 0073 0000 4000 4011 [b861] c0a8 0001 c0a8 00c7.
    #[test]
    fn ipv4_header_checksum_vector() {
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(!checksum_fold(checksum_add(0, &hdr)), 0xb861);
    }

    /// A UDP/IPv4 frame whose checksum is checked against a word-by-word sum written out by hand.
    #[test]
    fn udp_ipv4_known_frame() {
        // 198.18.0.10:40000 -> 198.18.0.1:4433, payload "hi\n"
        let h = header("198.18.0.10:40000", "198.18.0.1:4433");
        let mut buf = [0u8; 128];
        let n = h.write(&mut buf, b"hi\n").unwrap();
        assert_eq!(n, 14 + 20 + 8 + 3);
        // The pseudo header c612000a c6120001 0011 000b, then the UDP header
        // and payload as 16-bit words.
        let mut sum = 0u32;
        for w in [
            0xc612u32, 0x000a, 0xc612, 0x0001, 0x0011, 0x000b, 40000, 4433, 0x000b, 0x6869, 0x0a00,
        ] {
            sum += w;
        }
        let expected = !checksum_fold(sum);
        assert_eq!(u16::from_be_bytes([buf[40], buf[41]]), expected);
        let parsed = parse_udp(&buf[..n]).unwrap();
        assert_eq!(parsed.payload(&buf[..n]), b"hi\n");
        assert_eq!(parsed.src, h.src);
        assert_eq!(parsed.dst, h.dst);
    }

    fn check_with_etherparse(frame: &[u8], h: &FrameHeader, payload: &[u8]) {
        let sliced = etherparse::SlicedPacket::from_ethernet(frame).expect("etherparse parses it");
        let udp = match sliced.transport {
            Some(etherparse::TransportSlice::Udp(u)) => u,
            other => panic!("not UDP: {other:?}"),
        };
        assert_eq!(udp.source_port(), h.src.port());
        assert_eq!(udp.destination_port(), h.dst.port());
        assert_eq!(udp.payload(), payload);
        match (&sliced.net, h.src.ip(), h.dst.ip()) {
            (Some(etherparse::NetSlice::Ipv4(ip)), IpAddr::V4(s), IpAddr::V4(d)) => {
                let hdr = ip.header();
                assert_eq!(hdr.source_addr(), s);
                assert_eq!(hdr.destination_addr(), d);
                let owned = hdr.to_header();
                assert_eq!(owned.header_checksum, owned.calc_header_checksum());
                let expect = udp.to_header().calc_checksum_ipv4(&owned, payload).unwrap();
                assert_eq!(udp.checksum(), expect, "UDP/IPv4 checksum");
            }
            (Some(etherparse::NetSlice::Ipv6(ip)), IpAddr::V6(s), IpAddr::V6(d)) => {
                let hdr = ip.header();
                assert_eq!(hdr.source_addr(), s);
                assert_eq!(hdr.destination_addr(), d);
                let expect = udp
                    .to_header()
                    .calc_checksum_ipv6(&hdr.to_header(), payload)
                    .unwrap();
                assert_eq!(udp.checksum(), expect, "UDP/IPv6 checksum");
            }
            other => panic!("unexpected network layer {other:?}"),
        }
    }

    #[test]
    fn randomised_frames_agree_with_etherparse() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut buf = vec![0u8; 2048];
        for i in 0..2000 {
            let v6 = i % 2 == 1;
            let (src, dst) = if v6 {
                (
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(rng.gen::<[u8; 16]>())), rng.gen()),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(rng.gen::<[u8; 16]>())), rng.gen()),
                )
            } else {
                (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(rng.gen::<[u8; 4]>())), rng.gen()),
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(rng.gen::<[u8; 4]>())), rng.gen()),
                )
            };
            let h = FrameHeader {
                src_mac: MacAddr(rng.gen()),
                dst_mac: MacAddr(rng.gen()),
                vlan: if rng.gen_bool(0.2) {
                    Some(rng.gen_range(1..4095))
                } else {
                    None
                },
                src,
                dst,
                ecn: rng.gen_range(0..4),
                hop_limit: rng.gen_range(1..=255),
            };
            let len = rng.gen_range(0..1400);
            let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let n = h.write(&mut buf, &payload).unwrap();
            check_with_etherparse(&buf[..n], &h, &payload);

            let parsed = parse_udp(&buf[..n]).unwrap();
            assert_eq!(parsed.src, src);
            assert_eq!(parsed.dst, dst);
            assert_eq!(parsed.src_mac, h.src_mac);
            assert_eq!(parsed.dst_mac, h.dst_mac);
            assert_eq!(parsed.vlan, h.vlan);
            assert_eq!(parsed.ecn, h.ecn);
            assert_eq!(parsed.payload(&buf[..n]), &payload[..]);
        }
    }

    /// Frames built by etherparse (an independent encoder) parse to the same fields.
    #[test]
    fn parses_etherparse_built_frames() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for i in 0..1000 {
            let payload: Vec<u8> = (0..rng.gen_range(0..1300)).map(|_| rng.gen()).collect();
            let sport: u16 = rng.gen();
            let dport: u16 = rng.gen();
            let builder = etherparse::PacketBuilder::ethernet2(MAC_A.0, MAC_B.0);
            let (frame, src, dst) = if i % 2 == 0 {
                let s: [u8; 4] = rng.gen();
                let d: [u8; 4] = rng.gen();
                let b = builder.ipv4(s, d, 33).udp(sport, dport);
                let mut out = Vec::new();
                b.write(&mut out, &payload).unwrap();
                (out, IpAddr::from(s), IpAddr::from(d))
            } else {
                let s: [u8; 16] = rng.gen();
                let d: [u8; 16] = rng.gen();
                let b = builder.ipv6(s, d, 33).udp(sport, dport);
                let mut out = Vec::new();
                b.write(&mut out, &payload).unwrap();
                (out, IpAddr::from(s), IpAddr::from(d))
            };
            let p = parse_udp(&frame).unwrap();
            assert_eq!(p.src, SocketAddr::new(src, sport));
            assert_eq!(p.dst, SocketAddr::new(dst, dport));
            // PacketBuilder::ethernet2 takes (source, destination).
            assert_eq!(p.src_mac, MAC_A);
            assert_eq!(p.dst_mac, MAC_B);
            assert_eq!(p.payload(&frame), &payload[..]);
        }
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let h = header("[fd00::10]:5000", "[fd00::1]:4433");
        let mut buf = [0u8; 256];
        let n = h.write(&mut buf, &[0xab; 100]).unwrap();
        for cut in 0..n {
            assert!(parse_udp(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let h = header("198.18.0.10:5000", "198.18.0.1:4433");
        let n = h.write(&mut buf, &[0xab; 100]).unwrap();
        for cut in 0..n {
            assert!(parse_udp(&buf[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn rejects_corrupt_ipv4_header_and_non_udp() {
        let h = header("198.18.0.10:5000", "198.18.0.1:4433");
        let mut buf = [0u8; 256];
        let n = h.write(&mut buf, b"x").unwrap();
        let mut bad = buf;
        bad[ETH_HLEN + 8] ^= 1; // TTL flipped: header checksum no longer matches
        assert_eq!(parse_udp(&bad[..n]), Err(FrameError::BadIpHeader));
        let mut tcp = buf;
        tcp[ETH_HLEN + 9] = 6;
        // Fix the checksum so only the protocol differs.
        tcp[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
        let c = !checksum_fold(checksum_add(0, &tcp[ETH_HLEN..ETH_HLEN + 20]));
        tcp[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_udp(&tcp[..n]), Err(FrameError::NotUdp));
        let mut arp = buf;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_udp(&arp[..n]), Err(FrameError::NotIp));
    }

    #[test]
    fn build_rejects_mixed_families_and_small_buffers() {
        let h = header("198.18.0.10:5000", "[fd00::1]:4433");
        assert_eq!(
            h.write(&mut [0u8; 128], b""),
            Err(BuildError::MixedFamilies)
        );
        let h = header("198.18.0.10:5000", "198.18.0.1:4433");
        assert!(matches!(
            h.write(&mut [0u8; 40], b"abc"),
            Err(BuildError::BufferTooSmall { .. })
        ));
    }
}
