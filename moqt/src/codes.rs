//! Error and status codes (§3.3.3, §3.5, §10.6.2, §10.11, §15.10).
//!
//! Every enum keeps unknown values in an `Unknown` variant: §14 requires
//! unknown codes to be accepted (and treated like INTERNAL_ERROR), and
//! relays may need to forward them. [`is_grease`] recognises the reserved
//! GREASE values.

/// The last GREASE value listed in §14.
pub const GREASE_MAX: u64 = 0x3fff_ffff_ffff_ffde;

/// True for the GREASE values `0x7f * N + 0x9D` (§14).
pub const fn is_grease(v: u64) -> bool {
    v >= 0x9D && v <= GREASE_MAX && (v - 0x9D).is_multiple_of(0x7F)
}

macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $var:ident = $val:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $var, )*
            /// A code this version does not define (GREASE or future);
            /// treat it as INTERNAL_ERROR (§14).
            Unknown(u64),
        }

        impl $name {
            /// From a wire value; unknown values are kept.
            pub const fn from_code(code: u64) -> Self {
                match code {
                    $( $val => $name::$var, )*
                    other => $name::Unknown(other),
                }
            }

            /// The wire value.
            pub const fn code(self) -> u64 {
                match self {
                    $( $name::$var => $val, )*
                    $name::Unknown(other) => other,
                }
            }

            /// True unless this is an [`Unknown`]($name::Unknown) code.
            pub const fn is_known(self) -> bool {
                !matches!(self, $name::Unknown(_))
            }
        }

        impl From<u64> for $name {
            fn from(code: u64) -> Self {
                $name::from_code(code)
            }
        }

        impl From<$name> for u64 {
            fn from(code: $name) -> u64 {
                code.code()
            }
        }
    };
}

code_enum! {
    /// Session termination error codes (§3.5, §15.10.1 Table 17), used in
    /// CONNECTION_CLOSE or CLOSE_WEBTRANSPORT_SESSION.
    pub enum SessionErrorCode {
        /// NO_ERROR (0x0).
        NoError = 0x0,
        /// INTERNAL_ERROR (0x1).
        InternalError = 0x1,
        /// UNAUTHORIZED (0x2).
        Unauthorized = 0x2,
        /// PROTOCOL_VIOLATION (0x3).
        ProtocolViolation = 0x3,
        /// INVALID_REQUEST_ID (0x4).
        InvalidRequestId = 0x4,
        /// DUPLICATE_TRACK_ALIAS (0x5).
        DuplicateTrackAlias = 0x5,
        /// KEY_VALUE_FORMATTING_ERROR (0x6).
        KeyValueFormattingError = 0x6,
        /// INVALID_PATH (0x8).
        InvalidPath = 0x8,
        /// MALFORMED_PATH (0x9).
        MalformedPath = 0x9,
        /// GOAWAY_TIMEOUT (0x10).
        GoawayTimeout = 0x10,
        /// CONTROL_MESSAGE_TIMEOUT (0x11).
        ControlMessageTimeout = 0x11,
        /// DATA_STREAM_TIMEOUT (0x12).
        DataStreamTimeout = 0x12,
        /// AUTH_TOKEN_CACHE_OVERFLOW (0x13).
        AuthTokenCacheOverflow = 0x13,
        /// DUPLICATE_AUTH_TOKEN_ALIAS (0x14).
        DuplicateAuthTokenAlias = 0x14,
        /// VERSION_NEGOTIATION_FAILED (0x15).
        VersionNegotiationFailed = 0x15,
        /// MALFORMED_AUTH_TOKEN (0x16).
        MalformedAuthToken = 0x16,
        /// UNKNOWN_AUTH_TOKEN_ALIAS (0x17).
        UnknownAuthTokenAlias = 0x17,
        /// EXPIRED_AUTH_TOKEN (0x18).
        ExpiredAuthToken = 0x18,
        /// INVALID_AUTHORITY (0x19).
        InvalidAuthority = 0x19,
        /// MALFORMED_AUTHORITY (0x1A).
        MalformedAuthority = 0x1A,
    }
}

code_enum! {
    /// REQUEST_ERROR codes (§10.6.2, §15.10.2 Table 18).
    pub enum RequestErrorCode {
        /// INTERNAL_ERROR (0x0).
        InternalError = 0x0,
        /// UNAUTHORIZED (0x1).
        Unauthorized = 0x1,
        /// TIMEOUT (0x2).
        Timeout = 0x2,
        /// NOT_SUPPORTED (0x3).
        NotSupported = 0x3,
        /// MALFORMED_AUTH_TOKEN (0x4).
        MalformedAuthToken = 0x4,
        /// EXPIRED_AUTH_TOKEN (0x5).
        ExpiredAuthToken = 0x5,
        /// GOING_AWAY (0x6).
        GoingAway = 0x6,
        /// EXCESSIVE_LOAD (0x9).
        ExcessiveLoad = 0x9,
        /// DOES_NOT_EXIST (0x10).
        DoesNotExist = 0x10,
        /// INVALID_RANGE (0x11).
        InvalidRange = 0x11,
        /// MALFORMED_TRACK (0x12).
        MalformedTrack = 0x12,
        /// DUPLICATE_SUBSCRIPTION (0x19).
        DuplicateSubscription = 0x19,
        /// UNINTERESTED (0x20).
        Uninterested = 0x20,
        /// PREFIX_OVERLAP (0x30).
        PrefixOverlap = 0x30,
        /// NAMESPACE_TOO_LARGE (0x31).
        NamespaceTooLarge = 0x31,
        /// INVALID_JOINING_REQUEST_ID (0x32).
        InvalidJoiningRequestId = 0x32,
        /// UNSUPPORTED_EXTENSION (0x33).
        UnsupportedExtension = 0x33,
        /// REDIRECT (0x34): the message carries a Redirect (§10.6.1).
        Redirect = 0x34,
    }
}

code_enum! {
    /// PUBLISH_DONE status codes (§10.11, §15.10.3 Table 19).
    pub enum PublishDoneCode {
        /// INTERNAL_ERROR (0x0).
        InternalError = 0x0,
        /// UNAUTHORIZED (0x1).
        Unauthorized = 0x1,
        /// TRACK_ENDED (0x2).
        TrackEnded = 0x2,
        /// SUBSCRIPTION_ENDED (0x3).
        SubscriptionEnded = 0x3,
        /// GOING_AWAY (0x4).
        GoingAway = 0x4,
        /// TOO_FAR_BEHIND (0x5).
        TooFarBehind = 0x5,
        /// EXPIRED (0x6).
        Expired = 0x6,
        /// UPDATE_FAILED (0x8).
        UpdateFailed = 0x8,
        /// EXCESSIVE_LOAD (0x9).
        ExcessiveLoad = 0x9,
        /// MALFORMED_TRACK (0x12).
        MalformedTrack = 0x12,
    }
}

code_enum! {
    /// Stream reset / STOP_SENDING error codes (§3.3.3, §15.10.4 Table 20).
    pub enum StreamResetCode {
        /// INTERNAL_ERROR (0x0).
        InternalError = 0x0,
        /// CANCELLED (0x1).
        Cancelled = 0x1,
        /// DELIVERY_TIMEOUT (0x2).
        DeliveryTimeout = 0x2,
        /// SESSION_CLOSED (0x3).
        SessionClosed = 0x3,
        /// GOING_AWAY (0x4).
        GoingAway = 0x4,
        /// TOO_FAR_BEHIND (0x5).
        TooFarBehind = 0x5,
        /// UNKNOWN_OBJECT_STATUS (0x6).
        UnknownObjectStatus = 0x6,
        /// EXPIRED_AUTH_TOKEN (0x7).
        ExpiredAuthToken = 0x7,
        /// EXCESSIVE_LOAD (0x9).
        ExcessiveLoad = 0x9,
        /// MALFORMED_TRACK (0x12).
        MalformedTrack = 0x12,
    }
}

/// How stream error codes (RESET_STREAM, STOP_SENDING) travel on the wire.
///
/// Draft-18 sends the codes of §3.3.3 as they are. Widely deployed raw-QUIC
/// stacks built on a WebTransport library (moq-transport over
/// web-transport-quinn) map them into the range WebTransport reserves in
/// HTTP/3 even on raw QUIC, and treat any code outside that range as a
/// fatal session error. Reading accepts both forms; writing picks one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamCodeDialect {
    /// The draft's codes as they are (the peer has sent one).
    Draft,
    /// WebTransport-mapped until the peer shows it uses the draft's codes
    /// (it sends a nonzero reset or STOP_SENDING code outside the mapped
    /// range; see [`Self::after_peer_code`]):
    /// a strict peer only loses the meaning of codes until then, where a
    /// mapping peer would lose its whole session to one draft code.
    #[default]
    Auto,
}

impl StreamCodeDialect {
    /// The dialect after the peer sent `wire` in a RESET_STREAM or
    /// STOP_SENDING. Code 0 settles nothing: quinn sends STOP_SENDING 0 by
    /// itself whenever an application drops a receive stream it has not
    /// read to the end, so a mapping peer sends it too (moq-transport does,
    /// on a request stream its task has left).
    pub const fn after_peer_code(self, wire: u64) -> Self {
        match self {
            Self::Auto if wire != 0 && !unmap_stream_code(wire).1 => Self::Draft,
            other => other,
        }
    }
}

/// First and last code of WebTransport's range in the HTTP/3 error space
/// (draft-ietf-webtrans-http3, "WEBTRANSPORT_APPLICATION_ERROR"); every
/// 0x1f-th code in it is an HTTP/3 reserved code and skipped.
const WT_FIRST: u64 = 0x52e4_a40f_a8db;
const WT_LAST: u64 = 0x52e5_ac98_3162;

/// A stream error code as WebTransport maps it.
pub const fn webtransport_code(code: u32) -> u64 {
    WT_FIRST + code as u64 + code as u64 / 0x1e
}

/// The application code behind a wire code: a WebTransport-mapped code is
/// unmapped, anything else is taken as it is. `None` in the second field:
/// the code was not in the mapped range.
pub const fn unmap_stream_code(wire: u64) -> (u64, bool) {
    if wire < WT_FIRST || wire > WT_LAST {
        return (wire, false);
    }
    let shifted = wire - WT_FIRST;
    (shifted - shifted / 0x1f, true)
}

#[cfg(test)]
mod dialect_tests {
    use super::*;

    #[test]
    fn webtransport_mapping_round_trips_and_skips_reserved_codes() {
        for code in [0u32, 1, 2, 5, 0x12, 0x1d, 0x1e, 0x1f, 1000, u32::MAX] {
            let wire = webtransport_code(code);
            assert!((WT_FIRST..=WT_LAST).contains(&wire), "{code}");
            // The HTTP/3 reserved code points 0x1f * N + 0x21 are never used.
            assert_ne!((wire - 0x21) % 0x1f, 0, "{code} maps to a reserved code");
            assert_eq!(unmap_stream_code(wire), (code as u64, true));
        }
        assert_eq!(unmap_stream_code(3), (3, false));
    }

    #[test]
    fn only_a_nonzero_draft_code_settles_the_dialect() {
        use StreamCodeDialect::{Auto, Draft};
        // quinn's own STOP_SENDING 0 on a dropped receive stream.
        assert_eq!(Auto.after_peer_code(0), Auto);
        assert_eq!(Auto.after_peer_code(webtransport_code(1)), Auto);
        assert_eq!(Auto.after_peer_code(webtransport_code(0)), Auto);
        assert_eq!(Auto.after_peer_code(1), Draft);
        assert_eq!(Auto.after_peer_code(0x12), Draft);
        // Settled stays settled.
        assert_eq!(Draft.after_peer_code(webtransport_code(1)), Draft);
        assert_eq!(Draft.after_peer_code(0), Draft);
    }
}
