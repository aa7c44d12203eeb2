//! Track Namespace, Track Name and Full Track Name (§2.4.1), and their
//! textual form (§1.5).
//!
//! ```text
//! Track Namespace {
//!   Number of Track Namespace Fields (vi64),   -- 0..=32
//!   Track Namespace Field {
//!     Track Namespace Field Length (vi64),     -- at least 1
//!     Track Namespace Field Value (..)
//!   } ...
//! }
//! ```
//! The sum of the field lengths is at most 4096, and so is that sum plus the
//! Track Name Length for a Full Track Name.

use std::fmt;

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{check_decoded_len, put_len_bytes, put_varint, DResult, Reader};

/// Maximum number of Track Namespace Fields (§2.4.1).
pub const MAX_NAMESPACE_FIELDS: usize = 32;
/// Maximum length of a Track Namespace or Full Track Name, in bytes
/// (§2.4.1).
pub const MAX_FULL_TRACK_NAME_LEN: usize = 4096;

/// A Track Namespace: 0 to 32 non-empty fields totalling at most 4096
/// bytes (§2.4.1). The same structure carries namespace prefixes and
/// suffixes (§10.16-10.20).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackNamespace {
    fields: Vec<Bytes>,
}

impl TrackNamespace {
    /// The empty namespace (zero fields).
    pub const fn empty() -> Self {
        TrackNamespace { fields: Vec::new() }
    }

    /// A namespace from its fields; enforces the §2.4.1 limits.
    pub fn new<I, F>(fields: I) -> Result<Self, EncodeError>
    where
        I: IntoIterator<Item = F>,
        F: Into<Bytes>,
    {
        let fields: Vec<Bytes> = fields.into_iter().map(Into::into).collect();
        if fields.len() > MAX_NAMESPACE_FIELDS {
            return Err(EncodeError::TooLong {
                field: "track namespace fields",
                limit: MAX_NAMESPACE_FIELDS as u64,
                actual: fields.len() as u64,
            });
        }
        if fields.iter().any(|f| f.is_empty()) {
            return Err(EncodeError::InvalidValue {
                field: "track namespace field",
                reason: "fields must not be empty",
            });
        }
        let ns = TrackNamespace { fields };
        if ns.byte_len() > MAX_FULL_TRACK_NAME_LEN {
            return Err(EncodeError::TooLong {
                field: "track namespace",
                limit: MAX_FULL_TRACK_NAME_LEN as u64,
                actual: ns.byte_len() as u64,
            });
        }
        Ok(ns)
    }

    /// The fields.
    pub fn fields(&self) -> &[Bytes] {
        &self.fields
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True for the zero-field namespace.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Sum of the field lengths (§2.4.1).
    pub fn byte_len(&self) -> usize {
        self.fields.iter().map(Bytes::len).sum()
    }

    /// True if `prefix`'s fields are the first fields of `self`.
    pub fn starts_with(&self, prefix: &TrackNamespace) -> bool {
        self.fields.starts_with(&prefix.fields)
    }

    /// The fields after `prefix` (the suffix carried by NAMESPACE,
    /// NAMESPACE_DONE and PUBLISH_BLOCKED), or `None` if `prefix` is not a
    /// prefix of `self`.
    pub fn strip_prefix(&self, prefix: &TrackNamespace) -> Option<TrackNamespace> {
        self.fields
            .strip_prefix(prefix.fields.as_slice())
            .map(|rest| TrackNamespace {
                fields: rest.to_vec(),
            })
    }

    /// `prefix` followed by `self`'s fields; fails if the result breaks the
    /// §2.4.1 limits.
    pub fn with_prefix(&self, prefix: &TrackNamespace) -> Result<TrackNamespace, EncodeError> {
        TrackNamespace::new(prefix.fields.iter().chain(&self.fields).cloned())
    }

    /// The §1.5 textual form: fields joined with `-`, bytes outside
    /// `[a-zA-Z0-9_]` written as `.` and two lowercase hex digits.
    pub fn to_serialized(&self) -> String {
        let mut out = String::new();
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.push('-');
            }
            escape_into(f, &mut out);
        }
        out
    }

    /// Parse the §1.5 textual form of a namespace (no `--`).
    pub fn parse_serialized(s: &str) -> Result<Self, NameParseError> {
        if s.is_empty() {
            return Ok(TrackNamespace::empty());
        }
        let fields = s.split('-').map(unescape).collect::<Result<Vec<_>, _>>()?;
        TrackNamespace::new(fields).map_err(|_| NameParseError::InvalidNamespace)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let count = r.varint()?;
        check_decoded_len("track namespace fields", count, MAX_NAMESPACE_FIELDS)?;
        let mut fields = Vec::with_capacity(count as usize);
        let mut total = 0u64;
        for _ in 0..count {
            let len = r.varint()?;
            if len == 0 {
                return Err(DecodeError::EmptyNamespaceField);
            }
            total = total.saturating_add(len);
            check_decoded_len("track namespace", total, MAX_FULL_TRACK_NAME_LEN)?;
            fields.push(r.bytes(len)?);
        }
        Ok(TrackNamespace { fields })
    }

    pub(crate) fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) {
        put_varint(buf, self.fields.len() as u64);
        for f in &self.fields {
            put_len_bytes(buf, f);
        }
    }
}

impl fmt::Display for TrackNamespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_serialized())
    }
}

/// A Full Track Name: Track Namespace and Track Name, at most 4096 bytes
/// together (§2.4.1). On the wire the name is `Track Name Length (vi64),
/// Track Name (..)` after the namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FullTrackName {
    namespace: TrackNamespace,
    name: Bytes,
}

impl FullTrackName {
    /// A full track name; fails if longer than
    /// [`MAX_FULL_TRACK_NAME_LEN`] in total.
    pub fn new(namespace: TrackNamespace, name: impl Into<Bytes>) -> Result<Self, EncodeError> {
        let name = name.into();
        let total = namespace.byte_len() + name.len();
        if total > MAX_FULL_TRACK_NAME_LEN {
            return Err(EncodeError::TooLong {
                field: "full track name",
                limit: MAX_FULL_TRACK_NAME_LEN as u64,
                actual: total as u64,
            });
        }
        Ok(FullTrackName { namespace, name })
    }

    /// The namespace.
    pub fn namespace(&self) -> &TrackNamespace {
        &self.namespace
    }

    /// The track name (possibly empty).
    pub fn name(&self) -> &Bytes {
        &self.name
    }

    /// Namespace and name.
    pub fn into_parts(self) -> (TrackNamespace, Bytes) {
        (self.namespace, self.name)
    }

    /// Namespace byte length plus name length (§2.4.1).
    pub fn byte_len(&self) -> usize {
        self.namespace.byte_len() + self.name.len()
    }

    /// The §1.5 textual form, `ns1-ns2--name`.
    pub fn to_serialized(&self) -> String {
        let mut out = self.namespace.to_serialized();
        out.push_str("--");
        escape_into(&self.name, &mut out);
        out
    }

    /// Parse the §1.5 textual form, rejecting every non-canonical spelling
    /// (§1.5.1).
    pub fn parse_serialized(s: &str) -> Result<Self, NameParseError> {
        let (ns, name) = s.split_once("--").ok_or(NameParseError::MissingSeparator)?;
        let namespace = TrackNamespace::parse_serialized(ns)?;
        let name = unescape(name)?;
        FullTrackName::new(namespace, name).map_err(|_| NameParseError::InvalidNamespace)
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let namespace = TrackNamespace::decode(r)?;
        let len = r.varint()?;
        let total = (namespace.byte_len() as u64).saturating_add(len);
        check_decoded_len("full track name", total, MAX_FULL_TRACK_NAME_LEN)?;
        let name = r.bytes(len)?;
        Ok(FullTrackName { namespace, name })
    }

    pub(crate) fn encode<B: BufMut + ?Sized>(&self, buf: &mut B) {
        self.namespace.encode(buf);
        put_len_bytes(buf, &self.name);
    }
}

impl fmt::Display for FullTrackName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_serialized())
    }
}

/// Why a §1.5 textual name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameParseError {
    /// No `--` between namespace and track name.
    #[error("missing `--` between namespace and track name")]
    MissingSeparator,
    /// A character that is neither literal nor part of an escape.
    #[error("invalid character {0:?}")]
    InvalidChar(char),
    /// `.` not followed by two lowercase hex digits.
    #[error("`.` must be followed by exactly two lowercase hex digits")]
    BadEscape,
    /// An escape of a byte that must be written literally (§1.5.1).
    #[error("byte {0:#04x} must be written literally")]
    RedundantEscape(u8),
    /// The result breaks the §2.4.1 limits (empty field, too many fields,
    /// too long).
    #[error("the parsed namespace breaks the limits of section 2.4.1")]
    InvalidNamespace,
}

fn is_literal(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn escape_into(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        if is_literal(b) {
            out.push(b as char);
        } else {
            out.push('.');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xF)] as char);
        }
    }
}

fn unescape(s: &str) -> Result<Bytes, NameParseError> {
    fn hex(c: u8) -> Result<u8, NameParseError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(NameParseError::BadEscape),
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if is_literal(c) {
            out.push(c);
            i += 1;
        } else if c == b'.' {
            if i + 2 >= b.len() {
                return Err(NameParseError::BadEscape);
            }
            let v = (hex(b[i + 1])? << 4) | hex(b[i + 2])?;
            if is_literal(v) {
                return Err(NameParseError::RedundantEscape(v));
            }
            out.push(v);
            i += 3;
        } else {
            let ch = s[i..].chars().next().unwrap_or('\u{FFFD}');
            return Err(NameParseError::InvalidChar(ch));
        }
    }
    Ok(Bytes::from(out))
}
