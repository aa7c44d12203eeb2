//! Object payloads the subscriber can check.
//!
//! Layout (all big-endian):
//! ```text
//! 0..8    send timestamp, microseconds since the UNIX epoch (CLOCK_REALTIME)
//! 8..16   group id
//! 16..24  object id
//! 24..28  payload length (the whole payload, header included)
//! 28..    filler bytes derived from (group, object, index)
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use moq_transport::coding::{KeyValuePair, Value};
use moq_transport::data::ExtensionHeaders;

pub const HEADER_LEN: usize = 28;

/// Even extension type: carries a varint value.
pub const EXT_INT_KEY: u64 = 0x1E0;
pub const EXT_INT_VALUE: u64 = 0x00FA_570B_1E57;
/// Odd extension type: carries a byte string.
pub const EXT_BYTES_KEY: u64 = 0x1E1;
pub const EXT_BYTES_VALUE: &[u8] = b"moqt-interop-ext";

/// Microseconds since the UNIX epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Payloads are never shorter than the checked header.
pub fn clamp_size(size: usize) -> usize {
    size.max(HEADER_LEN)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fill `out` with the filler that follows the header: byte `i` of the
/// payload (counting from the start of the payload) is byte `i % 8` of
/// `mix(seed + i / 8)`.
fn filler(group: u64, object: u64, start: usize, out: &mut [u8]) {
    let seed = mix(group.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ object);
    for (k, b) in out.iter_mut().enumerate() {
        let i = start + k;
        let word = mix(seed.wrapping_add((i / 8) as u64));
        *b = (word >> ((i % 8) * 8)) as u8;
    }
}

/// Build a payload of `size` bytes (clamped) stamped with `ts_us`.
pub fn build_at(ts_us: u64, group: u64, object: u64, size: usize) -> Bytes {
    let size = clamp_size(size);
    let mut buf = BytesMut::with_capacity(size);
    buf.put_u64(ts_us);
    buf.put_u64(group);
    buf.put_u64(object);
    buf.put_u32(u32::try_from(size).unwrap_or(u32::MAX));
    buf.resize(size, 0);
    filler(group, object, HEADER_LEN, &mut buf[HEADER_LEN..]);
    buf.freeze()
}

/// A text payload `<group>/<object>;` (ASCII, no line break) for
/// subscribers of other projects that print what they receive: moq-dev's
/// clock prints object 0 of a group in front of every later object.
pub fn build_text(group: u64, object: u64) -> Bytes {
    Bytes::from(format!("{group}/{object};"))
}

/// Check a received payload against the location it arrived at. Returns the
/// send timestamp.
pub fn verify(payload: &[u8], group: u64, object: u64) -> Result<u64, String> {
    if payload.len() < HEADER_LEN {
        return Err(format!(
            "payload of {}/{} is {} bytes, shorter than the {HEADER_LEN}-byte header",
            group,
            object,
            payload.len()
        ));
    }
    let be64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let ts = be64(0);
    let g = be64(8);
    let o = be64(16);
    let mut lb = [0u8; 4];
    lb.copy_from_slice(&payload[24..28]);
    let len = u32::from_be_bytes(lb) as usize;
    if g != group || o != object {
        return Err(format!(
            "object delivered at {group}/{object} carries header {g}/{o}"
        ));
    }
    if len != payload.len() {
        return Err(format!(
            "object {group}/{object}: header length {len}, received {}",
            payload.len()
        ));
    }
    // Compare the filler in chunks to keep the check cheap for big objects.
    let mut expected = [0u8; 256];
    let mut at = HEADER_LEN;
    while at < payload.len() {
        let n = (payload.len() - at).min(expected.len());
        filler(group, object, at, &mut expected[..n]);
        if expected[..n] != payload[at..at + n] {
            let off = (0..n)
                .find(|&k| expected[k] != payload[at + k])
                .unwrap_or(0);
            return Err(format!(
                "object {group}/{object}: filler corrupt at byte {}",
                at + off
            ));
        }
        at += n;
    }
    Ok(ts)
}

/// The extension headers added to every object with `--extensions`.
pub fn extensions() -> ExtensionHeaders {
    let mut ext = ExtensionHeaders::new();
    ext.set_intvalue(EXT_INT_KEY, EXT_INT_VALUE);
    ext.set_bytesvalue(EXT_BYTES_KEY, EXT_BYTES_VALUE.to_vec());
    ext
}

/// Whether an object carries both known extension values.
pub fn extensions_ok(ext: &ExtensionHeaders) -> bool {
    let int_ok = matches!(
        ext.get(EXT_INT_KEY),
        Some(KeyValuePair { value: Value::IntValue(v), .. }) if *v == EXT_INT_VALUE
    );
    let bytes_ok = matches!(
        ext.get(EXT_BYTES_KEY),
        Some(KeyValuePair { value: Value::BytesValue(v), .. }) if v.as_slice() == EXT_BYTES_VALUE
    );
    int_ok && bytes_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for size in [0usize, 28, 29, 100, 1000, 5000] {
            let p = build_at(123, 4, 5, size);
            assert_eq!(p.len(), clamp_size(size));
            assert_eq!(verify(&p, 4, 5), Ok(123));
            assert!(verify(&p, 4, 6).is_err());
            if p.len() > HEADER_LEN {
                let mut bad = p.to_vec();
                let last = bad.len() - 1;
                bad[last] ^= 1;
                assert!(verify(&bad, 4, 5).is_err());
            }
        }
    }

    #[test]
    fn extension_values() {
        assert!(extensions_ok(&extensions()));
        assert!(!extensions_ok(&ExtensionHeaders::new()));
    }
}
