//! Typed decode and encode errors.
//!
//! [`DecodeError::Incomplete`] is the only error that means "wait for more
//! bytes"; every other decode error means the input is malformed and, per
//! the draft, the session (or the track) has to be torn down. Use
//! [`DecodeError::session_error_code`] to pick the termination code
//! (draft-18 §3.5).

use crate::codes::SessionErrorCode;
use crate::message_type::MessageType;

/// Why decoding failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends before the item does: not an error on a stream, read
    /// more bytes and try again. Nothing was consumed from the buffer.
    #[error("incomplete input: more bytes are needed")]
    Incomplete,
    /// A structure with a known length (control message payload, datagram,
    /// properties block, length-prefixed parameter value) ended before all
    /// of its fields were read.
    #[error("{context} ended before all of its fields were read")]
    Truncated {
        /// The length-delimited structure.
        context: &'static str,
    },
    /// A structure with a known length has bytes left after its last field
    /// (§10: "If the length does not match the length of the Message
    /// Payload ... PROTOCOL_VIOLATION").
    #[error("{count} unexpected trailing byte(s) in {context}")]
    TrailingBytes {
        /// The length-delimited structure.
        context: &'static str,
        /// Number of bytes left over.
        count: usize,
    },
    /// A field holds a value the draft does not allow.
    #[error("invalid value {value:#x} for {field}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// A length exceeds the limit the draft sets for the field.
    #[error("{field} is too long: {actual} > {limit}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit (see the `MAX_*` constants).
        limit: u64,
        /// The length received.
        actual: u64,
    },
    /// Delta arithmetic left the range 0..=2^64-1 (§1.4.3, §10.2, §11.4.2,
    /// §11.4.4.1, §5.1.2).
    #[error("{field} overflows the 64-bit range")]
    Overflow {
        /// The field.
        field: &'static str,
    },
    /// Unknown or reserved control message type (§10: "MUST close the
    /// session").
    #[error("unknown control message type {0:#x}")]
    UnknownMessageType(u64),
    /// Unknown or invalid unidirectional stream type (§3.4, §11.4.2).
    #[error("unknown or invalid stream type {0:#x}")]
    UnknownStreamType(u64),
    /// Unknown or invalid datagram type (§11, §11.3.1).
    #[error("unknown or invalid datagram type {0:#x}")]
    UnknownDatagramType(u64),
    /// Unknown message parameter (§10.2: unknown parameters cannot be
    /// skipped; PROTOCOL_VIOLATION).
    #[error("unknown message parameter type {0:#x}")]
    UnknownParameter(u64),
    /// A non-repeatable message parameter appears twice (§10.2).
    #[error("duplicate message parameter type {0:#x}")]
    DuplicateParameter(u64),
    /// A message parameter appears in a message it is not defined for
    /// (§10.2.1).
    #[error("message parameter {parameter:#x} is not allowed in {message:?}")]
    ParameterNotAllowed {
        /// The parameter type.
        parameter: u64,
        /// The message carrying it.
        message: MessageType,
    },
    /// A Track Namespace Field of length zero (§2.4.1).
    #[error("track namespace field has zero length")]
    EmptyNamespaceField,
    /// A known Key-Value-Pair type whose value does not match its defined
    /// serialization (§1.4.3: KEY_VALUE_FORMATTING_ERROR).
    #[error("key-value pair {key:#x} does not match the serialization of its type")]
    KeyValueFormatting {
        /// The type of the offending pair.
        key: u64,
    },
    /// Properties on an object whose status is not Normal (§11.2.1.2).
    #[error("properties present on an object whose status is not Normal")]
    PropertiesOnStatusObject,
    /// A FETCH object refers to a field of the prior object, but there is
    /// none (§11.4.4.1, §11.4.4.2).
    #[error("{field} refers to a prior object, but there is none")]
    NoPriorObject {
        /// The field.
        field: &'static str,
    },
    /// The track is malformed (§2.4.2): cancel the subscription or fetch,
    /// the session itself stays up.
    #[error("malformed track: {reason}")]
    MalformedTrack {
        /// What was detected.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The session termination code the draft prescribes for this error, or
    /// `None` when the session must not be closed for it
    /// ([`DecodeError::Incomplete`], [`DecodeError::MalformedTrack`]).
    pub fn session_error_code(&self) -> Option<SessionErrorCode> {
        match self {
            DecodeError::Incomplete | DecodeError::MalformedTrack { .. } => None,
            DecodeError::KeyValueFormatting { .. } => {
                Some(SessionErrorCode::KeyValueFormattingError)
            }
            _ => Some(SessionErrorCode::ProtocolViolation),
        }
    }

    /// True for [`DecodeError::Incomplete`].
    pub fn is_incomplete(&self) -> bool {
        matches!(self, DecodeError::Incomplete)
    }
}

/// Why encoding failed: the value cannot be represented on the wire as the
/// draft requires. Nothing is written to the buffer when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A length exceeds the draft's limit for the field.
    #[error("{field} is too long: {actual} > {limit}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit.
        limit: u64,
        /// The actual length.
        actual: u64,
    },
    /// A value cannot be encoded.
    #[error("cannot encode {field}: {reason}")]
    InvalidValue {
        /// The field.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A message parameter set in a message it is not defined for (§10.2.1).
    #[error("message parameter {parameter:#x} is not allowed in {message:?}")]
    ParameterNotAllowed {
        /// The parameter type.
        parameter: u64,
        /// The message.
        message: MessageType,
    },
}
