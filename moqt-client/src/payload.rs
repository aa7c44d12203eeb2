//! Self-checking test payloads: a send timestamp for latency and a
//! checksum over deterministic filler.

use bytes::Bytes;

/// Smallest test payload: 8-byte timestamp and 8-byte checksum.
pub const TEST_PAYLOAD_HEADER: usize = 16;

/// FNV-1a 64 over `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A test object payload of `size` bytes (at least
/// [`TEST_PAYLOAD_HEADER`]): the send time in ns since the UNIX epoch
/// (big-endian), FNV-1a 64 of the rest (big-endian), then filler derived
/// from (group, object).
pub fn test_payload(size: usize, group: u64, object: u64, sent_ns: u64) -> Bytes {
    let size = size.max(TEST_PAYLOAD_HEADER);
    let mut buf = vec![0u8; size];
    let mut x = (group << 32) ^ object ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in buf[TEST_PAYLOAD_HEADER..].chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a64(&buf[TEST_PAYLOAD_HEADER..]);
    buf[..8].copy_from_slice(&sent_ns.to_be_bytes());
    buf[8..16].copy_from_slice(&sum.to_be_bytes());
    buf.into()
}

/// Check a [`test_payload`]: `Some(sent_ns)` if the checksum matches,
/// `None` if it is too short or corrupt.
pub fn check_test_payload(payload: &[u8]) -> Option<u64> {
    if payload.len() < TEST_PAYLOAD_HEADER {
        return None;
    }
    let sent = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let sum = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    (fnv1a64(&payload[TEST_PAYLOAD_HEADER..]) == sum).then_some(sent)
}

/// Nanoseconds since the UNIX epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_its_send_time_and_checks() {
        let p = test_payload(100, 3, 7, 123_456_789);
        assert_eq!(p.len(), 100);
        assert_eq!(check_test_payload(&p), Some(123_456_789));
        // Same (group, object): same filler; another object: other filler.
        assert_eq!(test_payload(100, 3, 7, 1)[16..], p[16..]);
        assert_ne!(test_payload(100, 3, 8, 1)[16..], p[16..]);
    }

    #[test]
    fn short_or_corrupt_payloads_fail() {
        assert_eq!(test_payload(1, 0, 0, 5).len(), TEST_PAYLOAD_HEADER);
        assert_eq!(check_test_payload(&test_payload(1, 0, 0, 5)), Some(5));
        assert_eq!(check_test_payload(&[0u8; TEST_PAYLOAD_HEADER - 1]), None);
        let mut p = test_payload(64, 1, 2, 9).to_vec();
        p[40] ^= 1;
        assert_eq!(check_test_payload(&p), None);
    }
}
