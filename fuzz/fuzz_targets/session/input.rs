//! The operations an input decodes to, as `arbitrary` reads them.

use arbitrary::Arbitrary;
use fastrelay_fuzz::{
    AAlias, ADatagram, AEndOfRange, AFetchObject, AFetchType, AId, ALocation, AMsg, ANamespace,
    AParams, AProperties, ARequestOk, ASetup, ASubgroupHeader, ASubgroupObject, ATrack, Blob, V,
};
use moqt::codes::webtransport_code;
use moqt::message::MessageType;
use moqt::StreamResetCode;

#[derive(Arbitrary, Debug)]
pub(crate) struct Input {
    pub(crate) server: bool,
    pub(crate) our_setup: ASetup,
    pub(crate) peer_setup: ASetup,
    /// Let a PATH through in a server's SETUP (the client must refuse it).
    pub(crate) allow_path: bool,
    /// Chunk sizes for delivering the peer's SETUP.
    pub(crate) setup_split: Vec<u8>,
    /// Operations before the peer's SETUP: 0 unless the top bits are set.
    pub(crate) early: u8,
    /// A small `max_object_size` (one input in eight), to reach the
    /// EXCESSIVE_LOAD paths.
    pub(crate) max_object: (u8, u16),
    /// Cut-through delivery of long objects (one input in two), with a
    /// small part size so the parts path is reached.
    pub(crate) cut_through: (u8, u16),
    pub(crate) ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Op {
    /// A new request stream with its first message.
    Request {
        msg: AReq,
        split: Vec<u8>,
        fin: bool,
    },
    /// A message on the stream of one of our requests.
    Reply {
        to: u8,
        msg: AReply,
        split: Vec<u8>,
        fin: bool,
    },
    /// A new subgroup stream: header, objects.
    Subgroup {
        header: ASubgroupHeader,
        objects: Vec<ASubgroupObject>,
        split: Vec<u8>,
        fin: bool,
    },
    /// A new fetch stream: FETCH_HEADER, items.
    FetchStream {
        id: AId,
        items: Vec<AFetchItem>,
        split: Vec<u8>,
        fin: bool,
    },
    Open {
        bidi: bool,
    },
    Send {
        to: SSel,
        what: Chunk,
        /// Chunk sizes (empty: one piece).
        split: Vec<u8>,
        fin: bool,
    },
    Fin(SSel),
    Reset(SSel, ACode),
    StopSending(SSel, ACode),
    Datagram(ADgram),
    App(AppOp),
    /// Twice the weight for the application.
    App2(AppOp),
    End(EndOp),
}

/// What the peer says on one of our request streams.
#[derive(Arbitrary, Debug)]
pub(crate) enum AReply {
    /// SUBSCRIBE_OK, FETCH_OK or REQUEST_OK, whichever the request takes.
    Accept {
        alias: AAlias,
        params: AParams,
        props: AProperties,
        end_of_track: bool,
        end: ALocation,
    },
    Reject(V, V, Blob, Blob, ATrack),
    Done(V, V, Blob),
    Namespace(ANamespace),
    NamespaceDone(ANamespace),
    Blocked(ATrack),
    Update(AId, AParams),
    Any(AMsg),
}

impl AReply {
    pub(crate) fn msg(&self, request: Option<MessageType>) -> AMsg {
        match self {
            AReply::Accept {
                alias,
                params,
                props,
                end_of_track,
                end,
            } => match request {
                Some(MessageType::Subscribe) => {
                    AMsg::SubscribeOk(*alias, params.clone(), props.clone())
                }
                Some(MessageType::Fetch) => AMsg::FetchOk(*end_of_track, *end, props.clone()),
                _ => AMsg::RequestOk(ARequestOk {
                    params: params.clone(),
                    props: props.clone(),
                }),
            },
            AReply::Reject(c, r, x, u, t) => {
                AMsg::RequestError(*c, *r, x.clone(), u.clone(), t.clone())
            }
            AReply::Done(c, n, r) => AMsg::PublishDone(*c, *n, r.clone()),
            AReply::Namespace(n) => AMsg::Namespace(n.clone()),
            AReply::NamespaceDone(n) => AMsg::NamespaceDone(n.clone()),
            AReply::Blocked(t) => AMsg::PublishBlocked(t.clone()),
            AReply::Update(i, p) => AMsg::RequestUpdate(*i, p.clone()),
            AReply::Any(m) => m.clone(),
        }
    }
}

/// The seven messages that open a request stream.
#[derive(Arbitrary, Debug)]
pub(crate) enum AReq {
    Subscribe(AId, ATrack, AParams),
    Publish(AId, ATrack, AAlias, AParams, AProperties),
    Fetch(AId, AFetchType, AParams),
    TrackStatus(AId, ATrack, AParams),
    PublishNamespace(AId, ANamespace, AParams),
    SubscribeNamespace(AId, ANamespace, AParams),
    SubscribeTracks(AId, ANamespace, AParams),
}

impl AReq {
    pub(crate) fn msg(&self) -> AMsg {
        match self {
            AReq::Subscribe(i, t, p) => AMsg::Subscribe(*i, t.clone(), p.clone()),
            AReq::Publish(i, t, a, p, x) => AMsg::Publish(*i, t.clone(), *a, p.clone(), x.clone()),
            AReq::Fetch(i, f, p) => AMsg::Fetch(*i, f.clone(), p.clone()),
            AReq::TrackStatus(i, t, p) => AMsg::TrackStatus(*i, t.clone(), p.clone()),
            AReq::PublishNamespace(i, n, p) => AMsg::PublishNamespace(*i, n.clone(), p.clone()),
            AReq::SubscribeNamespace(i, n, p) => AMsg::SubscribeNamespace(*i, n.clone(), p.clone()),
            AReq::SubscribeTracks(i, n, p) => AMsg::SubscribeTracks(*i, n.clone(), p.clone()),
        }
    }
}

#[derive(Arbitrary, Debug)]
pub(crate) enum AFetchItem {
    Object(AFetchObject),
    End(AEndOfRange),
}

/// What ends a session from outside the protocol.
#[derive(Arbitrary, Debug)]
pub(crate) enum EndOp {
    ConnectionClosed(V),
    Close(V, Blob),
}

/// A stream, counted from the most recent one of its kind. The peer's
/// control stream only through `Control`.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum SSel {
    Control,
    Peer(u8),
    PeerUni(u8),
    PeerBidi(u8),
    LocalBidi(u8),
    Local(u8),
    Raw(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
pub(crate) enum ACode {
    Known(u8),
    WebTransport(u8),
    Raw(V),
}

impl ACode {
    pub(crate) fn wire(self) -> u64 {
        const KNOWN: [u64; 10] = [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0x12];
        match self {
            ACode::Known(i) => KNOWN[usize::from(i) % KNOWN.len()],
            ACode::WebTransport(i) => webtransport_code(u32::from(i)),
            ACode::Raw(v) => v.0,
        }
    }

    pub(crate) fn code(self) -> StreamResetCode {
        StreamResetCode::from_code(self.wire())
    }
}

#[derive(Arbitrary, Debug)]
pub(crate) enum Chunk {
    Raw(Blob),
    Message(AMsg),
    SubgroupHeader(ASubgroupHeader),
    Object(ASubgroupObject),
    FetchHeader(AId),
    FetchObject(AFetchObject),
    FetchEnd(AEndOfRange),
    /// The padding stream type and this many zeros.
    Padding(u8),
    /// The UNSUBSCRIBE of earlier drafts (type 0xA), with this payload.
    Unsubscribe(Blob),
    /// A piece shortened by this many bytes.
    Truncated(Box<Chunk>, u8),
    Several(Vec<Chunk>),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum ADgram {
    Object(ADatagram),
    Raw(Blob),
    Padding(u8),
}

#[derive(Arbitrary, Debug)]
pub(crate) enum AppOp {
    Subscribe(ATrack, AParams),
    Publish(ATrack, AParams, AProperties),
    Fetch(AFetchType, AParams),
    TrackStatus(ATrack, AParams),
    PublishNamespace(ANamespace, AParams),
    SubscribeNamespace(ANamespace, AParams),
    SubscribeTracks(ANamespace, AParams),
    RequestUpdate(AId, AParams),
    SubscribeOk(AId, AParams, AProperties),
    RequestOk(AId, ARequestOk),
    RequestError(AId, V, Blob),
    FetchOk(AId, bool, ALocation, AProperties),
    Namespace(AId, ANamespace),
    NamespaceDone(AId, ANamespace),
    PublishDone(AId, V, V, Blob),
    SendMessage(AId, AMsg, bool),
    Finish(AId),
    Cancel(AId, ACode),
    SendObject(AObject),
    EndSubgroup(AAlias, V, V),
    ResetSubgroup(AAlias, V, V, ACode),
    ResetTrackSubgroups(AAlias, ACode),
    SendDatagram(ADatagram),
    OpenFetchStream(AId),
    SendFetchObject(AId, AFetchObject),
    SendFetchEnd(AId, AEndOfRange),
    FinishFetch(AId),
    GoAway(Blob, V),
}

#[derive(Arbitrary, Debug)]
pub(crate) struct AObject {
    pub(crate) alias: AAlias,
    pub(crate) group: V,
    pub(crate) subgroup: V,
    /// Added to the previous Object ID of the subgroup plus one.
    pub(crate) gap: V,
    pub(crate) priority: Option<u8>,
    pub(crate) status: u8,
    pub(crate) props: AProperties,
    pub(crate) payload: Blob,
    pub(crate) end_of_group: bool,
    pub(crate) first_object: bool,
}
