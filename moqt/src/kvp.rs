//! Key-Value-Pair (§1.4.3), the serialization of Setup Options (§10.3) and
//! Properties (§2.5, §11.2.1.2).
//!
//! ```text
//! Key-Value-Pair {
//!   Delta Type (vi64),
//!   [Length (vi64),]   -- only when Type is odd, at most 2^16-1
//!   Value (..)         -- a varint when Type is even, Length bytes when odd
//! }
//! ```
//!
//! Types are delta-encoded, so a sequence is always in ascending type order;
//! repeated types (delta 0) are representable. Encoders here sort pairs by
//! type (stably) before writing.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{
    check_decoded_len, check_len, put_len_bytes, put_varint, DResult, EResult, Reader,
};

/// Maximum length of an odd-type Key-Value-Pair value (§1.4.3).
pub const MAX_KVP_VALUE_LEN: usize = 0xFFFF;

/// The value of a Key-Value-Pair; its kind follows from the type's parity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvValue {
    /// Even type: a single varint.
    Varint(u64),
    /// Odd type: up to [`MAX_KVP_VALUE_LEN`] bytes.
    Bytes(Bytes),
}

/// One Key-Value-Pair with its absolute type (§1.4.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyValuePair {
    /// The Type (absolute, not the delta).
    pub key: u64,
    /// The value; must be [`KvValue::Varint`] for even types and
    /// [`KvValue::Bytes`] for odd types.
    pub value: KvValue,
}

impl KeyValuePair {
    /// An even-typed pair. Fails if `key` is odd.
    pub fn varint(key: u64, value: u64) -> Result<Self, EncodeError> {
        if key & 1 == 1 {
            return Err(EncodeError::InvalidValue {
                field: "key-value pair",
                reason: "odd types carry bytes, not a varint",
            });
        }
        Ok(KeyValuePair {
            key,
            value: KvValue::Varint(value),
        })
    }

    /// An odd-typed pair. Fails if `key` is even or the value is longer
    /// than [`MAX_KVP_VALUE_LEN`].
    pub fn bytes(key: u64, value: impl Into<Bytes>) -> Result<Self, EncodeError> {
        if key & 1 == 0 {
            return Err(EncodeError::InvalidValue {
                field: "key-value pair",
                reason: "even types carry a varint, not bytes",
            });
        }
        let value = value.into();
        check_len("key-value pair value", value.len(), MAX_KVP_VALUE_LEN)?;
        Ok(KeyValuePair {
            key,
            value: KvValue::Bytes(value),
        })
    }

    /// The varint value, if this is an even-typed pair.
    pub fn as_varint(&self) -> Option<u64> {
        match self.value {
            KvValue::Varint(v) => Some(v),
            KvValue::Bytes(_) => None,
        }
    }

    /// The byte value, if this is an odd-typed pair.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match &self.value {
            KvValue::Bytes(b) => Some(b),
            KvValue::Varint(_) => None,
        }
    }

    fn check(&self) -> EResult<()> {
        match (&self.value, self.key & 1) {
            (KvValue::Varint(_), 0) => Ok(()),
            (KvValue::Bytes(b), 1) => check_len("key-value pair value", b.len(), MAX_KVP_VALUE_LEN),
            _ => Err(EncodeError::InvalidValue {
                field: "key-value pair",
                reason: "value kind does not match the parity of the type",
            }),
        }
    }
}

/// Decode pairs until `r` is exhausted (the caller bounds `r`).
pub(crate) fn decode_kvps(r: &mut Reader<'_>) -> DResult<Vec<KeyValuePair>> {
    let mut pairs = Vec::new();
    let mut prev = 0u64;
    while !r.is_empty() {
        let delta = r.varint()?;
        let key = prev.checked_add(delta).ok_or(DecodeError::Overflow {
            field: "key-value pair type",
        })?;
        let value = if key & 1 == 0 {
            KvValue::Varint(r.varint()?)
        } else {
            let len = r.varint()?;
            check_decoded_len("key-value pair value", len, MAX_KVP_VALUE_LEN)?;
            KvValue::Bytes(r.bytes(len)?)
        };
        pairs.push(KeyValuePair { key, value });
        prev = key;
    }
    Ok(pairs)
}

/// Encode pairs in ascending type order (stable for equal types).
pub(crate) fn encode_kvps<'a, B, I>(pairs: I, buf: &mut B) -> EResult<()>
where
    B: BufMut + ?Sized,
    I: IntoIterator<Item = &'a KeyValuePair>,
{
    let mut sorted: Vec<&KeyValuePair> = pairs.into_iter().collect();
    sorted.sort_by_key(|p| p.key);
    for p in &sorted {
        p.check()?;
    }
    let mut prev = 0u64;
    for p in sorted {
        put_varint(buf, p.key - prev);
        match &p.value {
            KvValue::Varint(v) => put_varint(buf, *v),
            KvValue::Bytes(b) => put_len_bytes(buf, b),
        }
        prev = p.key;
    }
    Ok(())
}
