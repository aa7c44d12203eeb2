//! Message Parameters (§10.2) as typed values.
//!
//! ```text
//! Number of Parameters (vi64),
//! Message Parameter {
//!   Type Delta (vi64),   -- from the previous parameter's type, or from 0
//!   Value (..)           -- uint8, varint, Location or length-prefixed
//! } ...
//! ```
//!
//! Unlike Key-Value-Pairs, a parameter's value encoding is known only from
//! its type, so an unknown parameter cannot be skipped: §10.2 requires a
//! PROTOCOL_VIOLATION, reported as [`DecodeError::UnknownParameter`].
//! Duplicates (other than AUTHORIZATION TOKEN) and parameters in messages
//! they are not defined for (§10.2.1) are rejected too.

use bytes::{BufMut, Bytes};

use crate::error::{DecodeError, EncodeError};
use crate::io::{put_len_bytes, put_varint, DResult, EResult, Reader};
use crate::message_type::MessageType;
use crate::names::TrackNamespace;
use crate::types::{GroupOrder, Location};

/// Message Parameter types (§15.7 Table 13).
pub mod param_type {
    /// OBJECT_DELIVERY_TIMEOUT, varint (§10.2.4).
    pub const OBJECT_DELIVERY_TIMEOUT: u64 = 0x02;
    /// AUTHORIZATION_TOKEN, length-prefixed Token (§10.2.2).
    pub const AUTHORIZATION_TOKEN: u64 = 0x03;
    /// RENDEZVOUS_TIMEOUT, varint milliseconds (§10.2.6).
    pub const RENDEZVOUS_TIMEOUT: u64 = 0x04;
    /// SUBGROUP_DELIVERY_TIMEOUT, varint (§10.2.3).
    pub const SUBGROUP_DELIVERY_TIMEOUT: u64 = 0x06;
    /// EXPIRES, varint milliseconds (§10.2.10).
    pub const EXPIRES: u64 = 0x08;
    /// LARGEST_OBJECT, Location (§10.2.11).
    pub const LARGEST_OBJECT: u64 = 0x09;
    /// FILL_TIMEOUT, varint milliseconds (§10.2.5).
    pub const FILL_TIMEOUT: u64 = 0x0A;
    /// FORWARD, uint8 0 or 1 (§10.2.12).
    pub const FORWARD: u64 = 0x10;
    /// SUBSCRIBER_PRIORITY, uint8 (§10.2.7).
    pub const SUBSCRIBER_PRIORITY: u64 = 0x20;
    /// SUBSCRIPTION_FILTER, length-prefixed Subscription Filter (§10.2.9).
    pub const SUBSCRIPTION_FILTER: u64 = 0x21;
    /// GROUP_ORDER, uint8 1 or 2 (§10.2.8).
    pub const GROUP_ORDER: u64 = 0x22;
    /// NEW_GROUP_REQUEST, varint (§10.2.13).
    pub const NEW_GROUP_REQUEST: u64 = 0x32;
    /// TRACK_NAMESPACE_PREFIX, Track Namespace (§10.2.14).
    pub const TRACK_NAMESPACE_PREFIX: u64 = 0x34;
}

/// Subscriber Priority when the parameter is absent (§10.2.7).
pub const DEFAULT_SUBSCRIBER_PRIORITY: u8 = 128;

/// Whether parameter type `param` may appear in message `msg` (§10.2.2 -
/// §10.2.14). REQUEST_OK (0x7) stands for PUBLISH_OK, REQUEST_UPDATE_OK,
/// TRACK_STATUS_OK, SUBSCRIBE_NAMESPACE_OK and PUBLISH_NAMESPACE_OK, which
/// share one wire type, so it accepts the union of what those allow.
pub fn parameter_allowed(param: u64, msg: MessageType) -> bool {
    use param_type::*;
    use MessageType as M;
    match param {
        AUTHORIZATION_TOKEN => matches!(
            msg,
            M::Publish
                | M::Subscribe
                | M::RequestUpdate
                | M::SubscribeNamespace
                | M::SubscribeTracks
                | M::PublishNamespace
                | M::TrackStatus
                | M::Fetch
        ),
        SUBGROUP_DELIVERY_TIMEOUT | OBJECT_DELIVERY_TIMEOUT => {
            matches!(
                msg,
                M::RequestOk | M::PublishOk | M::Subscribe | M::RequestUpdate
            )
        }
        FILL_TIMEOUT => msg == M::Fetch,
        RENDEZVOUS_TIMEOUT => msg == M::Subscribe,
        SUBSCRIBER_PRIORITY => matches!(
            msg,
            M::Subscribe | M::Fetch | M::RequestUpdate | M::RequestOk | M::PublishOk
        ),
        GROUP_ORDER => matches!(msg, M::Subscribe | M::RequestOk | M::PublishOk | M::Fetch),
        SUBSCRIPTION_FILTER => matches!(
            msg,
            M::Subscribe | M::RequestOk | M::PublishOk | M::RequestUpdate
        ),
        EXPIRES => matches!(
            msg,
            M::SubscribeOk | M::Publish | M::RequestOk | M::PublishOk
        ),
        LARGEST_OBJECT => matches!(msg, M::SubscribeOk | M::Publish | M::RequestOk),
        FORWARD => matches!(
            msg,
            M::Subscribe
                | M::RequestUpdate
                | M::Publish
                | M::RequestOk
                | M::PublishOk
                | M::SubscribeTracks
        ),
        NEW_GROUP_REQUEST => matches!(
            msg,
            M::RequestOk | M::PublishOk | M::Subscribe | M::RequestUpdate
        ),
        TRACK_NAMESPACE_PREFIX => msg == M::RequestUpdate,
        _ => false,
    }
}

/// The Token structure of the AUTHORIZATION TOKEN parameter and setup
/// option (§10.2.2, Alias Types §15.5).
///
/// ```text
/// Token {
///   Alias Type (vi64),
///   [Token Alias (vi64),]
///   [Token Type (vi64),]
///   [Token Value (..)]     -- the rest of the enclosing value
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AuthToken {
    /// DELETE (0x0): retire `alias`.
    Delete {
        /// Token Alias.
        alias: u64,
    },
    /// REGISTER (0x1): associate `alias` with the type and value.
    Register {
        /// Token Alias.
        alias: u64,
        /// Token Type (§15.6).
        token_type: u64,
        /// Token Value.
        value: Bytes,
    },
    /// USE_ALIAS (0x2): use the token registered as `alias`.
    UseAlias {
        /// Token Alias.
        alias: u64,
    },
    /// USE_VALUE (0x3): use this token, without registering it.
    UseValue {
        /// Token Type (§15.6).
        token_type: u64,
        /// Token Value.
        value: Bytes,
    },
}

impl AuthToken {
    /// Alias Type DELETE.
    pub const ALIAS_DELETE: u64 = 0x0;
    /// Alias Type REGISTER.
    pub const ALIAS_REGISTER: u64 = 0x1;
    /// Alias Type USE_ALIAS.
    pub const ALIAS_USE_ALIAS: u64 = 0x2;
    /// Alias Type USE_VALUE.
    pub const ALIAS_USE_VALUE: u64 = 0x3;

    /// The Alias Type code.
    pub fn alias_type(&self) -> u64 {
        match self {
            AuthToken::Delete { .. } => Self::ALIAS_DELETE,
            AuthToken::Register { .. } => Self::ALIAS_REGISTER,
            AuthToken::UseAlias { .. } => Self::ALIAS_USE_ALIAS,
            AuthToken::UseValue { .. } => Self::ALIAS_USE_VALUE,
        }
    }

    /// Size of a registration in the token cache, 16 bytes plus the Token
    /// Value (§10.3.1.3); `None` unless this is a REGISTER.
    pub fn cache_size(&self) -> Option<u64> {
        match self {
            AuthToken::Register { value, .. } => Some(16 + value.len() as u64),
            _ => None,
        }
    }

    /// Parse a whole Token; any failure is KEY_VALUE_FORMATTING_ERROR
    /// (§10.2.2).
    pub(crate) fn decode_all(r: &mut Reader<'_>) -> DResult<Self> {
        let fmt = |_| DecodeError::KeyValueFormatting {
            key: param_type::AUTHORIZATION_TOKEN,
        };
        let alias_type = r.varint().map_err(fmt)?;
        let token = match alias_type {
            Self::ALIAS_DELETE => AuthToken::Delete {
                alias: r.varint().map_err(fmt)?,
            },
            Self::ALIAS_REGISTER => AuthToken::Register {
                alias: r.varint().map_err(fmt)?,
                token_type: r.varint().map_err(fmt)?,
                value: r.rest(),
            },
            Self::ALIAS_USE_ALIAS => AuthToken::UseAlias {
                alias: r.varint().map_err(fmt)?,
            },
            Self::ALIAS_USE_VALUE => AuthToken::UseValue {
                token_type: r.varint().map_err(fmt)?,
                value: r.rest(),
            },
            _ => {
                return Err(DecodeError::KeyValueFormatting {
                    key: param_type::AUTHORIZATION_TOKEN,
                })
            }
        };
        r.finish("authorization token").map_err(fmt)?;
        Ok(token)
    }

    /// The Token structure without a length prefix.
    pub(crate) fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_varint(&mut v, self.alias_type());
        match self {
            AuthToken::Delete { alias } | AuthToken::UseAlias { alias } => {
                put_varint(&mut v, *alias)
            }
            AuthToken::Register {
                alias,
                token_type,
                value,
            } => {
                put_varint(&mut v, *alias);
                put_varint(&mut v, *token_type);
                v.extend_from_slice(value);
            }
            AuthToken::UseValue { token_type, value } => {
                put_varint(&mut v, *token_type);
                v.extend_from_slice(value);
            }
        }
        v
    }
}

/// Subscription Filter (§5.1.2), carried by the SUBSCRIPTION_FILTER
/// parameter.
///
/// ```text
/// Subscription Filter {
///   Filter Type (vi64),
///   [Start Location (Location),]   -- types 0x3 and 0x4
///   [End Group Delta (vi64),]      -- type 0x4
/// }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionFilter {
    /// Next Group Start (0x1).
    NextGroupStart,
    /// Largest Object (0x2).
    LargestObject,
    /// AbsoluteStart (0x3).
    AbsoluteStart {
        /// Start Location.
        start: Location,
    },
    /// AbsoluteRange (0x4): last group is `start.group + end_group_delta`.
    AbsoluteRange {
        /// Start Location.
        start: Location,
        /// End Group Delta.
        end_group_delta: u64,
    },
}

impl SubscriptionFilter {
    /// The Filter Type code.
    pub fn filter_type(&self) -> u64 {
        match self {
            SubscriptionFilter::NextGroupStart => 0x1,
            SubscriptionFilter::LargestObject => 0x2,
            SubscriptionFilter::AbsoluteStart { .. } => 0x3,
            SubscriptionFilter::AbsoluteRange { .. } => 0x4,
        }
    }

    /// The last Group ID passing an AbsoluteRange filter.
    pub fn end_group(&self) -> Option<u64> {
        match self {
            SubscriptionFilter::AbsoluteRange {
                start,
                end_group_delta,
            } => start.group.checked_add(*end_group_delta),
            _ => None,
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        match r.varint()? {
            0x1 => Ok(SubscriptionFilter::NextGroupStart),
            0x2 => Ok(SubscriptionFilter::LargestObject),
            0x3 => Ok(SubscriptionFilter::AbsoluteStart {
                start: Location::decode(r)?,
            }),
            0x4 => {
                let start = Location::decode(r)?;
                let end_group_delta = r.varint()?;
                if start.group.checked_add(end_group_delta).is_none() {
                    return Err(DecodeError::Overflow { field: "end group" });
                }
                Ok(SubscriptionFilter::AbsoluteRange {
                    start,
                    end_group_delta,
                })
            }
            value => Err(DecodeError::InvalidValue {
                field: "filter type",
                value,
            }),
        }
    }

    pub(crate) fn to_vec(self) -> EResult<Vec<u8>> {
        let mut v = Vec::new();
        put_varint(&mut v, self.filter_type());
        match self {
            SubscriptionFilter::NextGroupStart | SubscriptionFilter::LargestObject => {}
            SubscriptionFilter::AbsoluteStart { start } => start.encode(&mut v),
            SubscriptionFilter::AbsoluteRange {
                start,
                end_group_delta,
            } => {
                if start.group.checked_add(end_group_delta).is_none() {
                    return Err(EncodeError::InvalidValue {
                        field: "end group delta",
                        reason: "start group plus delta exceeds 2^64-1",
                    });
                }
                start.encode(&mut v);
                put_varint(&mut v, end_group_delta);
            }
        }
        Ok(v)
    }
}

/// The Message Parameters of one message (§10.2). Absent parameters are
/// `None`; the defaults the draft gives for absent parameters are left to
/// the caller (e.g. [`DEFAULT_SUBSCRIBER_PRIORITY`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Parameters {
    /// OBJECT_DELIVERY_TIMEOUT (0x02), milliseconds (§10.2.4).
    pub object_delivery_timeout: Option<u64>,
    /// AUTHORIZATION_TOKEN (0x03), may repeat (§10.2.2).
    pub authorization_tokens: Vec<AuthToken>,
    /// RENDEZVOUS_TIMEOUT (0x04), milliseconds (§10.2.6).
    pub rendezvous_timeout: Option<u64>,
    /// SUBGROUP_DELIVERY_TIMEOUT (0x06), milliseconds (§10.2.3).
    pub subgroup_delivery_timeout: Option<u64>,
    /// EXPIRES (0x08), milliseconds (§10.2.10).
    pub expires: Option<u64>,
    /// LARGEST_OBJECT (0x09) (§10.2.11).
    pub largest_object: Option<Location>,
    /// FILL_TIMEOUT (0x0A), milliseconds (§10.2.5).
    pub fill_timeout: Option<u64>,
    /// FORWARD (0x10) (§10.2.12).
    pub forward: Option<bool>,
    /// SUBSCRIBER_PRIORITY (0x20) (§10.2.7).
    pub subscriber_priority: Option<u8>,
    /// SUBSCRIPTION_FILTER (0x21) (§10.2.9).
    pub subscription_filter: Option<SubscriptionFilter>,
    /// GROUP_ORDER (0x22) (§10.2.8).
    pub group_order: Option<GroupOrder>,
    /// NEW_GROUP_REQUEST (0x32) (§10.2.13).
    pub new_group_request: Option<u64>,
    /// TRACK_NAMESPACE_PREFIX (0x34) (§10.2.14).
    pub track_namespace_prefix: Option<TrackNamespace>,
}

impl Parameters {
    /// No parameters.
    pub fn new() -> Self {
        Parameters::default()
    }

    /// True if no parameter is set.
    pub fn is_empty(&self) -> bool {
        self.types().next().is_none()
    }

    /// The types present, in wire order, AUTHORIZATION_TOKEN once per token.
    pub fn types(&self) -> impl Iterator<Item = u64> + '_ {
        use param_type::*;
        let one = |set: bool, t: u64| set.then_some(t);
        [one(
            self.object_delivery_timeout.is_some(),
            OBJECT_DELIVERY_TIMEOUT,
        )]
        .into_iter()
        .chain(
            self.authorization_tokens
                .iter()
                .map(|_| Some(AUTHORIZATION_TOKEN)),
        )
        .chain([
            one(self.rendezvous_timeout.is_some(), RENDEZVOUS_TIMEOUT),
            one(
                self.subgroup_delivery_timeout.is_some(),
                SUBGROUP_DELIVERY_TIMEOUT,
            ),
            one(self.expires.is_some(), EXPIRES),
            one(self.largest_object.is_some(), LARGEST_OBJECT),
            one(self.fill_timeout.is_some(), FILL_TIMEOUT),
            one(self.forward.is_some(), FORWARD),
            one(self.subscriber_priority.is_some(), SUBSCRIBER_PRIORITY),
            one(self.subscription_filter.is_some(), SUBSCRIPTION_FILTER),
            one(self.group_order.is_some(), GROUP_ORDER),
            one(self.new_group_request.is_some(), NEW_GROUP_REQUEST),
            one(
                self.track_namespace_prefix.is_some(),
                TRACK_NAMESPACE_PREFIX,
            ),
        ])
        .flatten()
    }

    /// `Number of Parameters (vi64), Parameters (..) ...` for message `msg`.
    pub(crate) fn decode(r: &mut Reader<'_>, msg: MessageType) -> DResult<Self> {
        use param_type::*;
        let count = r.varint()?;
        let mut p = Parameters::default();
        let mut prev: Option<u64> = None;
        // Each parameter takes at least one byte of the bounded payload, so
        // a huge count fails with Truncated instead of looping for long.
        for _ in 0..count {
            let delta = r.varint()?;
            let ty = match prev {
                None => delta,
                Some(prev) => prev.checked_add(delta).ok_or(DecodeError::Overflow {
                    field: "parameter type",
                })?,
            };
            prev = Some(ty);
            let known = matches!(
                ty,
                OBJECT_DELIVERY_TIMEOUT
                    | AUTHORIZATION_TOKEN
                    | RENDEZVOUS_TIMEOUT
                    | SUBGROUP_DELIVERY_TIMEOUT
                    | EXPIRES
                    | LARGEST_OBJECT
                    | FILL_TIMEOUT
                    | FORWARD
                    | SUBSCRIBER_PRIORITY
                    | SUBSCRIPTION_FILTER
                    | GROUP_ORDER
                    | NEW_GROUP_REQUEST
                    | TRACK_NAMESPACE_PREFIX
            );
            if !known {
                return Err(DecodeError::UnknownParameter(ty));
            }
            if !parameter_allowed(ty, msg) {
                return Err(DecodeError::ParameterNotAllowed {
                    parameter: ty,
                    message: msg,
                });
            }
            let dup = DecodeError::DuplicateParameter(ty);
            fn set<T>(slot: &mut Option<T>, v: T, dup: DecodeError) -> DResult<()> {
                if slot.is_some() {
                    return Err(dup);
                }
                *slot = Some(v);
                Ok(())
            }
            match ty {
                OBJECT_DELIVERY_TIMEOUT => set(&mut p.object_delivery_timeout, r.varint()?, dup)?,
                AUTHORIZATION_TOKEN => {
                    let len = r.varint()?;
                    let mut sub = r.sub(len, "authorization token parameter")?;
                    p.authorization_tokens
                        .push(AuthToken::decode_all(&mut sub)?);
                }
                RENDEZVOUS_TIMEOUT => set(&mut p.rendezvous_timeout, r.varint()?, dup)?,
                SUBGROUP_DELIVERY_TIMEOUT => {
                    set(&mut p.subgroup_delivery_timeout, r.varint()?, dup)?
                }
                EXPIRES => set(&mut p.expires, r.varint()?, dup)?,
                LARGEST_OBJECT => set(&mut p.largest_object, Location::decode(r)?, dup)?,
                FILL_TIMEOUT => set(&mut p.fill_timeout, r.varint()?, dup)?,
                FORWARD => {
                    let v = match r.u8()? {
                        0 => false,
                        1 => true,
                        value => {
                            return Err(DecodeError::InvalidValue {
                                field: "forward",
                                value: value.into(),
                            })
                        }
                    };
                    set(&mut p.forward, v, dup)?
                }
                SUBSCRIBER_PRIORITY => set(&mut p.subscriber_priority, r.u8()?, dup)?,
                SUBSCRIPTION_FILTER => {
                    let len = r.varint()?;
                    let mut sub = r.sub(len, "subscription filter")?;
                    let f = SubscriptionFilter::decode(&mut sub)?;
                    sub.finish("subscription filter")?;
                    set(&mut p.subscription_filter, f, dup)?
                }
                GROUP_ORDER => set(
                    &mut p.group_order,
                    GroupOrder::from_code(r.u8()?.into())?,
                    dup,
                )?,
                NEW_GROUP_REQUEST => set(&mut p.new_group_request, r.varint()?, dup)?,
                TRACK_NAMESPACE_PREFIX => set(
                    &mut p.track_namespace_prefix,
                    TrackNamespace::decode(r)?,
                    dup,
                )?,
                _ => return Err(DecodeError::UnknownParameter(ty)),
            }
        }
        Ok(p)
    }

    /// Count and parameters in ascending type order, for message `msg`.
    pub(crate) fn encode<B: BufMut + ?Sized>(&self, buf: &mut B, msg: MessageType) -> EResult<()> {
        use param_type::*;
        if let Some(parameter) = self.types().find(|&t| !parameter_allowed(t, msg)) {
            return Err(EncodeError::ParameterNotAllowed {
                parameter,
                message: msg,
            });
        }
        let filter = self
            .subscription_filter
            .map(SubscriptionFilter::to_vec)
            .transpose()?;
        put_varint(buf, self.types().count() as u64);
        let mut prev = 0u64;
        let mut header = |buf: &mut B, ty: u64| {
            put_varint(buf, ty - prev);
            prev = ty;
        };
        if let Some(v) = self.object_delivery_timeout {
            header(buf, OBJECT_DELIVERY_TIMEOUT);
            put_varint(buf, v);
        }
        for t in &self.authorization_tokens {
            header(buf, AUTHORIZATION_TOKEN);
            put_len_bytes(buf, &t.to_vec());
        }
        if let Some(v) = self.rendezvous_timeout {
            header(buf, RENDEZVOUS_TIMEOUT);
            put_varint(buf, v);
        }
        if let Some(v) = self.subgroup_delivery_timeout {
            header(buf, SUBGROUP_DELIVERY_TIMEOUT);
            put_varint(buf, v);
        }
        if let Some(v) = self.expires {
            header(buf, EXPIRES);
            put_varint(buf, v);
        }
        if let Some(v) = self.largest_object {
            header(buf, LARGEST_OBJECT);
            v.encode(buf);
        }
        if let Some(v) = self.fill_timeout {
            header(buf, FILL_TIMEOUT);
            put_varint(buf, v);
        }
        if let Some(v) = self.forward {
            header(buf, FORWARD);
            buf.put_u8(u8::from(v));
        }
        if let Some(v) = self.subscriber_priority {
            header(buf, SUBSCRIBER_PRIORITY);
            buf.put_u8(v);
        }
        if let Some(v) = &filter {
            header(buf, SUBSCRIPTION_FILTER);
            put_len_bytes(buf, v);
        }
        if let Some(v) = self.group_order {
            header(buf, GROUP_ORDER);
            buf.put_u8(v.code());
        }
        if let Some(v) = self.new_group_request {
            header(buf, NEW_GROUP_REQUEST);
            put_varint(buf, v);
        }
        if let Some(v) = &self.track_namespace_prefix {
            header(buf, TRACK_NAMESPACE_PREFIX);
            v.encode(buf);
        }
        Ok(())
    }
}
