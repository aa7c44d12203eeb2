//! The draft-18 variable-length integer, `(vi64)` (§1.4.1).
//!
//! The number of leading one bits of the first byte gives the encoded
//! length: `0xxxxxxx` is 1 byte (7 value bits), `10xxxxxx` + 1 byte is 2
//! bytes (14 bits), ... `11111110` + 7 bytes is 8 bytes (56 bits) and
//! `11111111` + 8 bytes is 9 bytes (all 64 bits). The value bits are in
//! network byte order.
//!
//! This is *not* the QUIC varint of RFC 9000. Every 64-bit value can be
//! encoded, and §1.4.1 states that "any encoding length that can represent
//! the value is valid": non-minimal encodings are accepted, and since every
//! byte sequence of the announced length decodes to some value, truncation is
//! the only way a varint can fail to decode. Encoders here always produce the
//! minimal length unless [`encode_with_len`] is used.

use std::io::IoSlice;

use bytes::{Buf, BufMut};

use crate::error::{DecodeError, EncodeError};

/// The longest encoding, in bytes.
pub const MAX_LEN: usize = 9;

/// The largest value encodable in `len` bytes (`len` in 1..=9), or `None`
/// for other lengths (§1.4.1, Table 1).
pub const fn max_value(len: usize) -> Option<u64> {
    match len {
        1..=8 => Some((1u64 << (7 * len)) - 1),
        9 => Some(u64::MAX),
        _ => None,
    }
}

/// Length of the minimal encoding of `v`.
pub const fn encoded_len(v: u64) -> usize {
    let bits = (64 - v.leading_zeros()) as usize;
    if bits <= 7 {
        1
    } else if bits <= 56 {
        bits.div_ceil(7)
    } else {
        9
    }
}

/// Encoded length announced by a first byte: one more than its number of
/// leading one bits, or 9 for `0xFF`.
pub const fn len_from_first_byte(first: u8) -> usize {
    let ones = first.leading_ones() as usize;
    if ones >= 8 {
        9
    } else {
        ones + 1
    }
}

/// Append the minimal encoding of `v`.
pub fn encode<B: BufMut + ?Sized>(v: u64, buf: &mut B) {
    write(v, encoded_len(v), buf);
}

/// Append `v` encoded in exactly `len` bytes (non-minimal encodings are
/// valid, §1.4.1). Fails if `len` is not in 1..=9 or `v` does not fit.
pub fn encode_with_len<B: BufMut + ?Sized>(
    v: u64,
    len: usize,
    buf: &mut B,
) -> Result<(), EncodeError> {
    match max_value(len) {
        Some(max) if v <= max => {
            write(v, len, buf);
            Ok(())
        }
        Some(_) => Err(EncodeError::InvalidValue {
            field: "varint",
            reason: "value does not fit the requested encoding length",
        }),
        None => Err(EncodeError::InvalidValue {
            field: "varint",
            reason: "encoding length must be 1..=9",
        }),
    }
}

fn write<B: BufMut + ?Sized>(v: u64, len: usize, buf: &mut B) {
    // The usual lengths as fixed-size writes: a copy of a constant size
    // compiles to a store, where `&out[..len]` calls memcpy (object
    // headers are encoded once per object per subscriber).
    match len {
        1 => return buf.put_slice(&[v as u8]),
        2 => return buf.put_slice(&((v as u16) | 0x8000).to_be_bytes()),
        _ => {}
    }
    let mut out = [0u8; MAX_LEN];
    if len == 9 {
        out[0] = 0xFF;
        out[1..9].copy_from_slice(&v.to_be_bytes());
    } else {
        // `len` bytes, big-endian, then the (len-1) one bits and a zero bit
        // of the prefix OR-ed into the first byte.
        let be = v.to_be_bytes();
        out[..len].copy_from_slice(&be[8 - len..]);
        out[0] |= ((0xFF00u16 >> (len - 1)) & 0xFF) as u8;
    }
    buf.put_slice(&out[..len]);
}

/// Decode a varint from the front of `src`, returning the value and the
/// number of bytes it occupied. [`DecodeError::Incomplete`] if `src` is
/// shorter than the length the first byte announces.
pub fn decode_slice(src: &[u8]) -> Result<(u64, usize), DecodeError> {
    let Some(&first) = src.first() else {
        return Err(DecodeError::Incomplete);
    };
    let len = len_from_first_byte(first);
    if src.len() < len {
        return Err(DecodeError::Incomplete);
    }
    let mut v: u64 = if len == 9 {
        0
    } else {
        u64::from(first & (0x7F >> (len - 1)))
    };
    for &b in &src[1..len] {
        v = (v << 8) | u64::from(b);
    }
    Ok((v, len))
}

/// Decode a varint from `buf` and advance past it. On
/// [`DecodeError::Incomplete`] nothing is consumed.
pub fn decode<B: Buf + ?Sized>(buf: &mut B) -> Result<u64, DecodeError> {
    // Read in place: the internal readers build on this module, so it
    // does not use them. At most MAX_LEN bytes matter.
    let want = buf.remaining().min(MAX_LEN);
    let chunk = buf.chunk();
    let (v, len) = if chunk.len() >= want {
        decode_slice(&chunk[..want])?
    } else {
        // Split over chunks (a `Chain`): gather the first `want` bytes.
        let mut head = [0u8; MAX_LEN];
        let mut have = 0;
        let mut slices = [IoSlice::new(&[]); 64];
        let n = buf.chunks_vectored(&mut slices);
        for s in &slices[..n] {
            let take = s.len().min(want - have);
            head[have..have + take].copy_from_slice(&s[..take]);
            have += take;
            if have == want {
                break;
            }
        }
        decode_slice(&head[..have])?
    };
    buf.advance(len);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use bytes::{Buf, Bytes};

    use super::*;

    /// `decode` over a buffer split anywhere (a `Chain`) reads what
    /// `decode_slice` reads from the joined bytes, and consumes only on
    /// success.
    #[test]
    fn decode_across_chunks() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            1 << 40,
            (1 << 56) - 1,
            u64::MAX,
        ] {
            let mut enc = Vec::new();
            encode(v, &mut enc);
            enc.push(0xAB);
            for cut in 0..=enc.len() {
                for keep in cut..=enc.len() {
                    let joined = &enc[..keep];
                    let mut buf = Bytes::copy_from_slice(&joined[..cut])
                        .chain(Bytes::copy_from_slice(&joined[cut..]));
                    match decode_slice(joined) {
                        Ok((want, len)) => {
                            assert_eq!(decode(&mut buf), Ok(want));
                            assert_eq!(buf.remaining(), keep - len);
                        }
                        Err(e) => {
                            assert_eq!(decode(&mut buf), Err(e));
                            assert_eq!(buf.remaining(), keep);
                        }
                    }
                }
            }
        }
    }
}
