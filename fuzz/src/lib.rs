//! Shared pieces of the fuzz targets: `arbitrary` descriptions of MoQT
//! values that turn into real `moqt` values (and from there into
//! well-formed encodings), and the chunked-decoding helpers.
//!
//! The `A*` types below mirror the `moqt` types field by field but derive
//! [`Arbitrary`], so that a fuzz input can be read as "a SUBSCRIBE with
//! these fields" rather than as bytes that rarely survive the decoder.
//! Building never fails: values a `moqt` constructor refuses (an empty
//! namespace field, a parameter the message does not allow, an overflowing
//! filter) are dropped or clamped, so the encoders accept what is built.

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;
use moqt::data::datagram::ObjectDatagram;
use moqt::data::fetch::{EndOfRange, EndOfRangeKind, FetchHeader, FetchObject};
use moqt::data::subgroup::{SubgroupHeader, SubgroupId, SubgroupObject};
use moqt::kvp::{KeyValuePair, KvValue};
use moqt::message::{
    ControlMessage, Fetch, FetchOk, FetchType, GoAway, JoiningFetch, MessageType, Namespace,
    NamespaceDone, Publish, PublishBlocked, PublishDone, PublishNamespace, Redirect, RequestError,
    RequestOk, RequestUpdate, StandaloneFetch, Subscribe, SubscribeNamespace, SubscribeOk,
    SubscribeTracks, TrackStatus,
};
use moqt::params::{param_type, parameter_allowed, AuthToken, Parameters, SubscriptionFilter};
use moqt::setup::{Setup, SetupOption};
use moqt::{
    DatagramContent, FullTrackName, GroupOrder, Location, ObjectStatus, Properties,
    PublishDoneCode, ReasonPhrase, RequestErrorCode, TrackNamespace,
};

/// A short byte string (at most 48 bytes, fewer if the input runs out).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blob(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Blob {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let n = usize::from(u.int_in_range(0u8..=48)?).min(u.len());
        Ok(Blob(u.bytes(n)?.to_vec()))
    }
}

impl Blob {
    pub fn bytes(&self) -> Bytes {
        Bytes::copy_from_slice(&self.0)
    }
}

/// A varint value, biased towards small numbers and the edges of the
/// 1-9 byte encodings (uniform u64s almost never hit the interesting ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V(pub u64);

/// Values at the length boundaries of the draft-18 varint and of u64.
const EDGES: [u64; 14] = [
    0,
    1,
    0x7f,
    0x80,
    0x3fff,
    0x4000,
    0x1f_ffff,
    0x20_0000,
    (1 << 56) - 1,
    1 << 56,
    (1 << 62) - 1,
    1 << 62,
    u64::MAX - 1,
    u64::MAX,
];

impl<'a> Arbitrary<'a> for V {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(V(match u.int_in_range(0u8..=7)? {
            0..=3 => u64::from(u.int_in_range(0u8..=15)?),
            4 => u64::from(u8::arbitrary(u)?),
            5 => u64::from(u16::arbitrary(u)?),
            6 => *u.choose(&EDGES)?,
            _ => u64::arbitrary(u)?,
        }))
    }
}

// ---------------------------------------------------------------------
// Where request IDs and track aliases come from
// ---------------------------------------------------------------------

/// A Request ID as a fuzz input names it. Mostly a usable one: half
/// `Next`, a third `Known`, the rest `Raw`.
#[derive(Clone, Copy, Debug)]
pub enum AId {
    /// The next ID the peer may use (right parity, never used).
    Next,
    /// One of the IDs seen so far (either side's), counted from the most
    /// recent.
    Known(u8),
    /// Anything.
    Raw(V),
}

impl<'a> Arbitrary<'a> for AId {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u8::arbitrary(u)? {
            0..=127 => AId::Next,
            b @ 128..=211 => AId::Known(b - 128),
            _ => AId::Raw(V::arbitrary(u)?),
        })
    }
}

/// A Track Alias as a fuzz input names it; `Raw` one time in eight.
#[derive(Clone, Copy, Debug)]
pub enum AAlias {
    /// One of the aliases seen so far (either side's), counted from the
    /// most recent.
    Known(u8),
    /// Anything.
    Raw(V),
}

impl<'a> Arbitrary<'a> for AAlias {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(match u8::arbitrary(u)? {
            b @ 0..=223 => AAlias::Known(b),
            _ => AAlias::Raw(V::arbitrary(u)?),
        })
    }
}

/// Resolves [`AId`] and [`AAlias`]: the session harness keeps real state,
/// the codec targets use [`Fixed`].
pub trait Ctx {
    fn next_id(&mut self) -> u64;
    fn known_id(&self, i: u8) -> Option<u64>;
    fn known_alias(&self, i: u8) -> Option<u64>;
    /// An alias the peer (the fuzzer) assigns in SUBSCRIBE_OK or PUBLISH.
    fn peer_alias(&mut self, a: AAlias) -> u64 {
        self.alias(a)
    }

    fn id(&mut self, a: AId) -> u64 {
        match a {
            AId::Next => self.next_id(),
            AId::Known(i) => self.known_id(i).unwrap_or(u64::from(i)),
            AId::Raw(v) => v.0,
        }
    }

    fn alias(&mut self, a: AAlias) -> u64 {
        match a {
            AAlias::Known(i) => self.known_alias(i).unwrap_or(u64::from(i)),
            AAlias::Raw(v) => v.0,
        }
    }
}

/// Context without state: `Next` counts up by two from 0.
#[derive(Default)]
pub struct Fixed {
    next: u64,
}

impl Ctx for Fixed {
    fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next += 2;
        id
    }
    fn known_id(&self, i: u8) -> Option<u64> {
        Some(u64::from(i))
    }
    fn known_alias(&self, i: u8) -> Option<u64> {
        Some(u64::from(i))
    }
}

// ---------------------------------------------------------------------
// Common structures
// ---------------------------------------------------------------------

#[derive(Arbitrary, Clone, Debug, Default)]
pub struct ANamespace(pub Vec<Blob>);

impl ANamespace {
    pub fn build(&self) -> TrackNamespace {
        let fields: Vec<Bytes> = self
            .0
            .iter()
            .take(moqt::MAX_NAMESPACE_FIELDS)
            .filter(|f| !f.0.is_empty())
            .map(Blob::bytes)
            .collect();
        TrackNamespace::new(fields).unwrap_or_default()
    }
}

#[derive(Arbitrary, Clone, Debug, Default)]
pub struct ATrack {
    pub namespace: ANamespace,
    pub name: Blob,
}

impl ATrack {
    pub fn build(&self) -> FullTrackName {
        FullTrackName::new(self.namespace.build(), self.name.bytes()).unwrap_or_default()
    }
}

#[derive(Arbitrary, Clone, Copy, Debug, Default)]
pub struct ALocation {
    pub group: V,
    pub object: V,
}

impl ALocation {
    pub fn build(&self) -> Location {
        Location::new(self.group.0, self.object.0)
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub struct AKvp {
    pub key: V,
    pub varint: V,
    pub bytes: Blob,
}

impl AKvp {
    /// The pair whose value kind fits the key's parity.
    pub fn build(&self) -> KeyValuePair {
        let key = self.key.0;
        let value = if key & 1 == 0 {
            KvValue::Varint(self.varint.0)
        } else {
            KvValue::Bytes(self.bytes.bytes())
        };
        KeyValuePair { key, value }
    }
}

#[derive(Arbitrary, Clone, Debug, Default)]
pub struct AProperties(pub Vec<AKvp>);

impl AProperties {
    pub fn build(&self) -> Properties {
        Properties::from_pairs(self.0.iter().take(8).map(AKvp::build).collect()).unwrap_or_default()
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub enum AAuthToken {
    Delete(V),
    Register(V, V, Blob),
    UseAlias(V),
    UseValue(V, Blob),
}

impl AAuthToken {
    pub fn build(&self) -> AuthToken {
        match self {
            AAuthToken::Delete(a) => AuthToken::Delete { alias: a.0 },
            AAuthToken::Register(a, t, v) => AuthToken::Register {
                alias: a.0,
                token_type: t.0,
                value: v.bytes(),
            },
            AAuthToken::UseAlias(a) => AuthToken::UseAlias { alias: a.0 },
            AAuthToken::UseValue(t, v) => AuthToken::UseValue {
                token_type: t.0,
                value: v.bytes(),
            },
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum AFilter {
    NextGroupStart,
    LargestObject,
    AbsoluteStart(ALocation),
    AbsoluteRange(ALocation, V),
}

impl AFilter {
    pub fn build(&self) -> SubscriptionFilter {
        match *self {
            AFilter::NextGroupStart => SubscriptionFilter::NextGroupStart,
            AFilter::LargestObject => SubscriptionFilter::LargestObject,
            AFilter::AbsoluteStart(l) => SubscriptionFilter::AbsoluteStart { start: l.build() },
            AFilter::AbsoluteRange(l, d) => {
                let start = l.build();
                SubscriptionFilter::AbsoluteRange {
                    start,
                    end_group_delta: d.0.min(u64::MAX - start.group),
                }
            }
        }
    }
}

/// Message Parameters; [`AParams::build`] keeps the ones `msg` allows.
#[derive(Arbitrary, Clone, Debug, Default)]
pub struct AParams {
    pub object_delivery_timeout: Option<V>,
    pub authorization_tokens: Vec<AAuthToken>,
    pub rendezvous_timeout: Option<V>,
    pub subgroup_delivery_timeout: Option<V>,
    pub expires: Option<V>,
    pub largest_object: Option<ALocation>,
    pub fill_timeout: Option<V>,
    pub forward: Option<bool>,
    pub subscriber_priority: Option<u8>,
    pub subscription_filter: Option<AFilter>,
    /// true: Descending.
    pub group_order: Option<bool>,
    pub new_group_request: Option<V>,
    pub track_namespace_prefix: Option<ANamespace>,
}

impl AParams {
    pub fn build(&self, msg: MessageType) -> Parameters {
        use param_type::*;
        let ok = |t| parameter_allowed(t, msg);
        let v = |t, o: Option<V>| o.filter(|_| ok(t)).map(|v| v.0);
        Parameters {
            object_delivery_timeout: v(OBJECT_DELIVERY_TIMEOUT, self.object_delivery_timeout),
            authorization_tokens: if ok(AUTHORIZATION_TOKEN) {
                self.authorization_tokens
                    .iter()
                    .take(3)
                    .map(AAuthToken::build)
                    .collect()
            } else {
                Vec::new()
            },
            rendezvous_timeout: v(RENDEZVOUS_TIMEOUT, self.rendezvous_timeout),
            subgroup_delivery_timeout: v(SUBGROUP_DELIVERY_TIMEOUT, self.subgroup_delivery_timeout),
            expires: v(EXPIRES, self.expires),
            largest_object: self
                .largest_object
                .filter(|_| ok(LARGEST_OBJECT))
                .map(|l| l.build()),
            fill_timeout: v(FILL_TIMEOUT, self.fill_timeout),
            forward: self.forward.filter(|_| ok(FORWARD)),
            subscriber_priority: self.subscriber_priority.filter(|_| ok(SUBSCRIBER_PRIORITY)),
            subscription_filter: self
                .subscription_filter
                .filter(|_| ok(SUBSCRIPTION_FILTER))
                .map(|f| f.build()),
            group_order: self.group_order.filter(|_| ok(GROUP_ORDER)).map(|d| {
                if d {
                    GroupOrder::Descending
                } else {
                    GroupOrder::Ascending
                }
            }),
            new_group_request: v(NEW_GROUP_REQUEST, self.new_group_request),
            track_namespace_prefix: self
                .track_namespace_prefix
                .as_ref()
                .filter(|_| ok(TRACK_NAMESPACE_PREFIX))
                .map(ANamespace::build),
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub enum ASetupOption {
    Path(Blob),
    AuthorizationToken(AAuthToken),
    MaxAuthTokenCacheSize(V),
    Authority(Blob),
    MoqtImplementation(Blob),
    Unknown(AKvp),
}

#[derive(Arbitrary, Clone, Debug, Default)]
pub struct ASetup(pub Vec<ASetupOption>);

impl ASetup {
    /// Options in ascending type order, as they come back from the wire
    /// (the encoder sorts them).
    pub fn build(&self) -> Setup {
        let mut options: Vec<SetupOption> = self
            .0
            .iter()
            .take(8)
            .filter_map(|o| {
                Some(match o {
                    ASetupOption::Path(b) => SetupOption::Path(b.bytes()),
                    ASetupOption::AuthorizationToken(t) => {
                        SetupOption::AuthorizationToken(t.build())
                    }
                    ASetupOption::MaxAuthTokenCacheSize(v) => {
                        SetupOption::MaxAuthTokenCacheSize(v.0)
                    }
                    ASetupOption::Authority(b) => SetupOption::Authority(b.bytes()),
                    ASetupOption::MoqtImplementation(b) => {
                        SetupOption::MoqtImplementation(b.bytes())
                    }
                    // A known type would come back as its typed option.
                    ASetupOption::Unknown(kv) if matches!(kv.key.0, 1 | 3 | 4 | 5 | 7) => {
                        return None
                    }
                    ASetupOption::Unknown(kv) => SetupOption::Unknown(kv.build()),
                })
            })
            .collect();
        options.sort_by_key(SetupOption::option_type);
        Setup { options }
    }

    /// The same options without PATH (a server's SETUP must not carry it).
    pub fn build_without_path(&self) -> Setup {
        let mut s = self.build();
        s.options.retain(|o| !matches!(o, SetupOption::Path(_)));
        s
    }
}

// ---------------------------------------------------------------------
// Control messages
// ---------------------------------------------------------------------

#[derive(Arbitrary, Clone, Debug)]
pub enum AFetchType {
    Standalone(ATrack, ALocation, ALocation),
    RelativeJoining(AId, V),
    AbsoluteJoining(AId, V),
}

#[derive(Arbitrary, Clone, Debug)]
pub struct ARequestOk {
    pub params: AParams,
    pub props: AProperties,
}

/// Every control message of §10.
#[derive(Arbitrary, Clone, Debug)]
pub enum AMsg {
    Setup(ASetup),
    GoAway(Blob, V, Option<AId>),
    Subscribe(AId, ATrack, AParams),
    SubscribeOk(AAlias, AParams, AProperties),
    Publish(AId, ATrack, AAlias, AParams, AProperties),
    PublishOk(ARequestOk),
    PublishDone(V, V, Blob),
    Fetch(AId, AFetchType, AParams),
    FetchOk(bool, ALocation, AProperties),
    TrackStatus(AId, ATrack, AParams),
    PublishNamespace(AId, ANamespace, AParams),
    SubscribeNamespace(AId, ANamespace, AParams),
    SubscribeTracks(AId, ANamespace, AParams),
    Namespace(ANamespace),
    NamespaceDone(ANamespace),
    PublishBlocked(ATrack),
    RequestUpdate(AId, AParams),
    RequestOk(ARequestOk),
    RequestError(V, V, Blob, Blob, ATrack),
}

fn reason(b: &Blob) -> ReasonPhrase {
    ReasonPhrase::new(b.bytes()).unwrap_or_default()
}

impl AMsg {
    pub fn build(&self, ctx: &mut dyn Ctx) -> ControlMessage {
        use MessageType as M;
        match self {
            AMsg::Setup(s) => ControlMessage::Setup(s.build()),
            AMsg::GoAway(uri, timeout, id) => ControlMessage::GoAway(GoAway {
                new_session_uri: uri.bytes(),
                timeout: timeout.0,
                request_id: id.map(|i| ctx.id(i)),
            }),
            AMsg::Subscribe(id, t, p) => Subscribe {
                request_id: ctx.id(*id),
                track: t.build(),
                parameters: p.build(M::Subscribe),
            }
            .into(),
            AMsg::SubscribeOk(a, p, props) => SubscribeOk {
                track_alias: ctx.peer_alias(*a),
                parameters: p.build(M::SubscribeOk),
                track_properties: props.build(),
            }
            .into(),
            AMsg::Publish(id, t, a, p, props) => Publish {
                request_id: ctx.id(*id),
                track: t.build(),
                track_alias: ctx.peer_alias(*a),
                parameters: p.build(M::Publish),
                track_properties: props.build(),
            }
            .into(),
            AMsg::PublishOk(ok) => ControlMessage::PublishOk(RequestOk {
                parameters: ok.params.build(M::PublishOk),
                track_properties: ok.props.build(),
            }),
            AMsg::PublishDone(code, count, r) => PublishDone {
                status_code: PublishDoneCode::from_code(code.0),
                stream_count: count.0,
                reason: reason(r),
            }
            .into(),
            AMsg::Fetch(id, ft, p) => {
                let request_id = ctx.id(*id);
                let fetch_type = match ft {
                    AFetchType::Standalone(t, s, e) => FetchType::Standalone(StandaloneFetch {
                        track: t.build(),
                        start: s.build(),
                        end: e.build(),
                    }),
                    AFetchType::RelativeJoining(j, s) => FetchType::RelativeJoining(JoiningFetch {
                        joining_request_id: ctx.id(*j),
                        joining_start: s.0,
                    }),
                    AFetchType::AbsoluteJoining(j, s) => FetchType::AbsoluteJoining(JoiningFetch {
                        joining_request_id: ctx.id(*j),
                        joining_start: s.0,
                    }),
                };
                Fetch {
                    request_id,
                    fetch_type,
                    parameters: p.build(M::Fetch),
                }
                .into()
            }
            AMsg::FetchOk(eot, end, props) => FetchOk {
                end_of_track: *eot,
                end_location: end.build(),
                parameters: Parameters::new(),
                track_properties: props.build(),
            }
            .into(),
            AMsg::TrackStatus(id, t, p) => TrackStatus {
                request_id: ctx.id(*id),
                track: t.build(),
                parameters: p.build(M::TrackStatus),
            }
            .into(),
            AMsg::PublishNamespace(id, ns, p) => PublishNamespace {
                request_id: ctx.id(*id),
                namespace: ns.build(),
                parameters: p.build(M::PublishNamespace),
            }
            .into(),
            AMsg::SubscribeNamespace(id, ns, p) => SubscribeNamespace {
                request_id: ctx.id(*id),
                prefix: ns.build(),
                parameters: p.build(M::SubscribeNamespace),
            }
            .into(),
            AMsg::SubscribeTracks(id, ns, p) => SubscribeTracks {
                request_id: ctx.id(*id),
                prefix: ns.build(),
                parameters: p.build(M::SubscribeTracks),
            }
            .into(),
            AMsg::Namespace(ns) => Namespace { suffix: ns.build() }.into(),
            AMsg::NamespaceDone(ns) => NamespaceDone { suffix: ns.build() }.into(),
            AMsg::PublishBlocked(t) => PublishBlocked { track: t.build() }.into(),
            AMsg::RequestUpdate(id, p) => RequestUpdate {
                request_id: ctx.id(*id),
                parameters: p.build(M::RequestUpdate),
            }
            .into(),
            AMsg::RequestOk(ok) => RequestOk {
                parameters: ok.params.build(M::RequestOk),
                track_properties: ok.props.build(),
            }
            .into(),
            AMsg::RequestError(code, retry, r, uri, t) => {
                let error_code = RequestErrorCode::from_code(code.0);
                RequestError {
                    error_code,
                    retry_interval: retry.0,
                    reason: reason(r),
                    redirect: (error_code == RequestErrorCode::Redirect).then(|| Redirect {
                        connect_uri: uri.bytes(),
                        track: t.build(),
                    }),
                }
                .into()
            }
        }
    }
}

// ---------------------------------------------------------------------
// Data streams and datagrams
// ---------------------------------------------------------------------

#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ASubgroupId {
    Zero,
    FirstObjectId,
    Explicit(V),
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct ASubgroupHeader {
    pub alias: AAlias,
    pub group: V,
    pub subgroup: ASubgroupId,
    pub priority: Option<u8>,
    pub has_properties: bool,
    pub end_of_group: bool,
    pub first_object: bool,
}

impl ASubgroupHeader {
    pub fn build(&self, ctx: &mut dyn Ctx) -> SubgroupHeader {
        SubgroupHeader {
            track_alias: ctx.alias(self.alias),
            group_id: self.group.0,
            subgroup_id: match self.subgroup {
                ASubgroupId::Zero => SubgroupId::Zero,
                ASubgroupId::FirstObjectId => SubgroupId::FirstObjectId,
                ASubgroupId::Explicit(v) => SubgroupId::Explicit(v.0),
            },
            publisher_priority: self.priority,
            has_properties: self.has_properties,
            end_of_group: self.end_of_group,
            first_object: self.first_object,
        }
    }
}

/// 0, 3 and 4 are the statuses the codec knows.
pub fn status(s: u8) -> ObjectStatus {
    match s % 3 {
        0 => ObjectStatus::Normal,
        1 => ObjectStatus::EndOfGroup,
        _ => ObjectStatus::EndOfTrack,
    }
}

/// A subgroup object; `gap` is added to the previous Object ID plus one.
#[derive(Arbitrary, Clone, Debug)]
pub struct ASubgroupObject {
    pub gap: V,
    pub props: AProperties,
    pub status: u8,
    pub payload: Blob,
}

impl ASubgroupObject {
    /// The object following `prev` (None: first on the stream), shaped to
    /// what the encoder accepts for a header with `has_properties`.
    pub fn build(&self, prev: Option<u64>, has_properties: bool) -> SubgroupObject {
        let object_id = match prev {
            None => self.gap.0,
            Some(p) => p.saturating_add(1).saturating_add(self.gap.0),
        };
        let status = status(self.status);
        let normal = status == ObjectStatus::Normal;
        SubgroupObject {
            object_id,
            properties: if has_properties && normal {
                self.props.build()
            } else {
                Properties::new()
            },
            status,
            payload: if normal {
                self.payload.bytes()
            } else {
                Bytes::new()
            },
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub struct AFetchObject {
    pub location: ALocation,
    pub subgroup: Option<V>,
    pub priority: u8,
    pub props: AProperties,
    pub payload: Blob,
}

impl AFetchObject {
    pub fn build(&self) -> FetchObject {
        FetchObject {
            location: self.location.build(),
            subgroup_id: self.subgroup.map(|v| v.0),
            publisher_priority: self.priority,
            properties: self.props.build(),
            payload: self.payload.bytes(),
        }
    }
}

#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct AEndOfRange {
    pub unknown: bool,
    pub location: ALocation,
}

impl AEndOfRange {
    pub fn build(&self) -> EndOfRange {
        EndOfRange {
            kind: if self.unknown {
                EndOfRangeKind::Unknown
            } else {
                EndOfRangeKind::NonExistent
            },
            location: self.location.build(),
        }
    }
}

#[derive(Arbitrary, Clone, Debug)]
pub struct ADatagram {
    pub alias: AAlias,
    pub location: ALocation,
    pub priority: Option<u8>,
    pub end_of_group: bool,
    pub props: AProperties,
    /// `Some(status)`: a status datagram.
    pub status: Option<u8>,
    pub payload: Blob,
}

impl ADatagram {
    pub fn build(&self, ctx: &mut dyn Ctx) -> ObjectDatagram {
        let content = match self.status {
            Some(s) => DatagramContent::Status(status(s)),
            None => DatagramContent::Payload(self.payload.bytes()),
        };
        let normal = !matches!(
            content,
            DatagramContent::Status(ObjectStatus::EndOfGroup | ObjectStatus::EndOfTrack)
        );
        ObjectDatagram {
            track_alias: ctx.alias(self.alias),
            group_id: self.location.group.0,
            object_id: self.location.object.0,
            publisher_priority: self.priority,
            end_of_group: self.end_of_group && self.status.is_none(),
            properties: if normal {
                self.props.build()
            } else {
                Properties::new()
            },
            content,
        }
    }
}

/// The FETCH_HEADER for `request_id`, encoded.
pub fn fetch_header(request_id: u64) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = FetchHeader { request_id }.encode(&mut v);
    v
}

// ---------------------------------------------------------------------
// Feeding a byte stream in chunks
// ---------------------------------------------------------------------

/// Chunk sizes for feeding `len` bytes: the sizes in `seed` (0 read as 1),
/// cycled; one chunk of everything when `seed` is empty.
pub fn chunk_sizes(seed: &[u8], len: usize) -> Vec<usize> {
    if seed.is_empty() {
        return vec![len];
    }
    let mut out = Vec::new();
    let mut left = len;
    let mut i = 0;
    while left > 0 {
        let n = usize::from(seed[i % seed.len()]).max(1).min(left);
        out.push(n);
        left -= n;
        i += 1;
    }
    out
}

/// How decoding a byte stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Every complete item was decoded; `left` bytes wait for more.
    Incomplete { left: usize },
    /// A malformed item: the stream (or session) is over.
    Error(moqt::DecodeError),
}

/// One decoding step: the next item from the front of the buffer.
pub type Step<'a, T> =
    Box<dyn FnMut(&mut dyn bytes::Buf) -> std::result::Result<T, moqt::DecodeError> + 'a>;

/// Decodes items from `buf` until it runs short or fails, checking the
/// decoder contract on the way: an item consumes at least one byte, an
/// error (Incomplete or not) consumes nothing.
pub fn drive<T>(step: &mut Step<'_, T>, buf: &mut dyn bytes::Buf, out: &mut Vec<T>) -> End {
    loop {
        let before = buf.remaining();
        match step(buf) {
            Ok(item) => {
                assert!(buf.remaining() < before, "an item consumed no bytes");
                out.push(item);
            }
            Err(moqt::DecodeError::Incomplete) => {
                assert_eq!(buf.remaining(), before, "Incomplete consumed bytes");
                return End::Incomplete { left: before };
            }
            Err(e) => {
                assert_eq!(buf.remaining(), before, "an error consumed bytes");
                // Neither may panic.
                let _ = e.session_error_code();
                let _ = e.to_string();
                return End::Error(e);
            }
        }
    }
}

/// Decodes `data` three ways with fresh decoders from `make` and asserts
/// that they agree: all at once from one contiguous buffer; appended chunk
/// by chunk (sizes from `seeds`) to a growing buffer, decoding after each
/// chunk; from a non-contiguous `Chain` of two buffers split where the
/// first seed says. Returns the items and how the stream ended.
pub fn decode_three_ways<'a, T: PartialEq + std::fmt::Debug>(
    data: &Bytes,
    seeds: &[u8],
    mut make: impl FnMut() -> Step<'a, T>,
) -> (Vec<T>, End) {
    use bytes::{Buf, BytesMut};

    // Whole.
    let mut items = Vec::new();
    let mut whole = data.clone();
    let end = drive(&mut make(), &mut whole, &mut items);

    // Chunked.
    let mut step = make();
    let mut got = Vec::new();
    let mut buf = BytesMut::new();
    let mut at = 0;
    let mut chunked_end = None;
    for n in chunk_sizes(seeds, data.len()) {
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        let e = drive(&mut step, &mut buf, &mut got);
        let failed = matches!(e, End::Error(_));
        chunked_end = Some(e);
        if failed {
            break;
        }
    }
    let chunked_end = chunked_end.unwrap_or_else(|| drive(&mut step, &mut buf, &mut got));
    assert_eq!(got, items, "chunked decoding produced other items");
    assert_eq!(chunked_end, end, "chunked decoding ended otherwise");

    // Non-contiguous.
    let split = seeds
        .first()
        .map_or(data.len() / 2, |&s| usize::from(s))
        .min(data.len());
    let mut chain = data.slice(..split).chain(data.slice(split..));
    let mut got = Vec::new();
    let chain_end = drive(&mut make(), &mut chain, &mut got);
    assert_eq!(got, items, "decoding a Chain produced other items");
    assert_eq!(chain_end, end, "decoding a Chain ended otherwise");

    (items, end)
}
