//! Small shared structures: Location (§1.4.2), Reason Phrase (§1.4.4) and
//! Group Order (§10.2.8, §12.5).

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{
    check_decoded_len, check_len, put_len_bytes, put_varint, DResult, EResult, Reader,
};

/// Maximum length of a Reason Phrase in bytes (§1.4.4).
pub const MAX_REASON_PHRASE_LEN: usize = 1024;

/// Location of an Object: `{Group (vi64), Object (vi64)}` (§1.4.2).
///
/// The derived ordering is the draft's: by group, then by object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Group ID.
    pub group: u64,
    /// Object ID.
    pub object: u64,
}

impl Location {
    /// `{group, object}`.
    pub const fn new(group: u64, object: u64) -> Self {
        Location { group, object }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        Ok(Location {
            group: r.varint()?,
            object: r.varint()?,
        })
    }

    pub(crate) fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) {
        put_varint(buf, self.group);
        put_varint(buf, self.object);
    }
}

/// Group Order: how Objects of different groups are prioritised or ordered
/// (§10.2.8, §12.5). Wire values 0x1 and 0x2; anything else is a
/// PROTOCOL_VIOLATION.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GroupOrder {
    /// Ascending (0x1), the default where the draft gives one.
    #[default]
    Ascending,
    /// Descending (0x2).
    Descending,
}

impl GroupOrder {
    /// The wire value.
    pub const fn code(self) -> u8 {
        match self {
            GroupOrder::Ascending => 0x1,
            GroupOrder::Descending => 0x2,
        }
    }

    /// From a wire value.
    pub fn from_code(code: u64) -> Result<Self, DecodeError> {
        match code {
            0x1 => Ok(GroupOrder::Ascending),
            0x2 => Ok(GroupOrder::Descending),
            value => Err(DecodeError::InvalidValue {
                field: "group order",
                value,
            }),
        }
    }
}

/// Reason Phrase (§1.4.4): at most [`MAX_REASON_PHRASE_LEN`] bytes of
/// diagnostic text.
///
/// The draft says the value "is encoded as UTF-8" but gives receivers no
/// rule for invalid UTF-8, so the bytes are kept as received; use
/// [`ReasonPhrase::as_str`] or [`ReasonPhrase::to_string_lossy`] to read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReasonPhrase(Bytes);

impl ReasonPhrase {
    /// The empty reason.
    pub const fn empty() -> Self {
        ReasonPhrase(Bytes::new())
    }

    /// A reason phrase; fails if longer than [`MAX_REASON_PHRASE_LEN`].
    pub fn new(value: impl Into<Bytes>) -> Result<Self, EncodeError> {
        let value = value.into();
        check_len("reason phrase", value.len(), MAX_REASON_PHRASE_LEN)?;
        Ok(ReasonPhrase(value))
    }

    /// A reason phrase from text, cut at a character boundary to fit
    /// [`MAX_REASON_PHRASE_LEN`].
    pub fn truncated(text: &str) -> Self {
        let mut end = text.len().min(MAX_REASON_PHRASE_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ReasonPhrase(Bytes::copy_from_slice(&text.as_bytes()[..end]))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The text, if it is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text, with invalid UTF-8 replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let len = r.varint()?;
        check_decoded_len("reason phrase", len, MAX_REASON_PHRASE_LEN)?;
        Ok(ReasonPhrase(r.bytes(len)?))
    }

    pub(crate) fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) -> EResult<()> {
        check_len("reason phrase", self.0.len(), MAX_REASON_PHRASE_LEN)?;
        put_len_bytes(buf, &self.0);
        Ok(())
    }
}
