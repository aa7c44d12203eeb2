//! The MoQT session state machine (`moqt::session::Session`), live and in
//! memory, fed a sequence of operations decoded from the input with
//! `arbitrary`.
//!
//! The fuzzer plays the peer *after* the transport: it injects plaintext
//! stream data, resets, STOP_SENDINGs and datagrams straight into the
//! session, so every input gets past the handshake. The session (client or
//! server) gets the peer's SETUP on a control stream first (or after a few
//! early operations, to exercise the pre-SETUP buffering); then come
//! operations whose stream data is either arbitrary bytes or well-formed
//! control messages, subgroup / fetch headers and objects, datagrams built
//! from arbitrary fields with the crate's own encoders, with Request IDs and
//! Track Aliases that mostly refer to live ones, so the state machine gets
//! deep. The application side is driven too (requests, responses, objects,
//! fetch streams, GOAWAY, cancel, close).
//!
//! After every operation all commands and events are drained and checked:
//!
//! * commands only name streams the session opened or the peer opened in a
//!   direction that exists (no write on a peer's unidirectional stream, no
//!   STOP_SENDING on our own unidirectional stream), streams it opens are
//!   new, nothing is written after a FIN or reset, Close is the last
//!   command;
//! * the bytes the session writes parse: its control stream is SETUP then
//!   GOAWAY, request streams carry control messages, its data streams are
//!   well-formed subgroup or fetch streams, its datagrams decode;
//! * events: Ready at most once, no peer request or object before Ready,
//!   Closed once and last, `closed()` agrees with the inputs' results;
//! * an application call that fails emits nothing.

#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::Arbitrary;
use bytes::{Bytes, BytesMut};
use fastrelay_fuzz::{
    chunk_sizes, fetch_header, AAlias, ADatagram, AEndOfRange, AFetchObject, AFetchType, AId,
    ALocation, AMsg, ANamespace, AParams, AProperties, ARequestOk, ASetup, ASubgroupHeader,
    ASubgroupObject, ATrack, Blob, Ctx, V,
};
use libfuzzer_sys::fuzz_target;
use moqt::codes::webtransport_code;
use moqt::message::{FetchOk, FetchType, JoiningFetch, MessageType, PublishDone, StandaloneFetch};
use moqt::session::{
    Command, Event, OutgoingObject, RequestId, Role, SessionConfig, SessionError, StreamFlags,
    StreamRef,
};
use moqt::{
    ControlMessage, Datagram, DecodeError, FetchDecoder, FetchEncoder, GroupOrder, Location,
    PublishDoneCode, RequestErrorCode, SessionErrorCode, StreamResetCode, SubgroupDecoder,
    SubgroupEncoder, UniStreamHeader,
};

// ---------------------------------------------------------------------
// The input
// ---------------------------------------------------------------------

#[derive(Arbitrary, Debug)]
struct Input {
    server: bool,
    our_setup: ASetup,
    peer_setup: ASetup,
    /// Let a PATH through in a server's SETUP (the client must refuse it).
    allow_path: bool,
    /// Chunk sizes for delivering the peer's SETUP.
    setup_split: Vec<u8>,
    /// Operations before the peer's SETUP: 0 unless the top bits are set.
    early: u8,
    /// A small `max_object_size` (one input in eight), to reach the
    /// EXCESSIVE_LOAD paths.
    max_object: (u8, u16),
    /// Cut-through delivery of long objects (one input in two), with a
    /// small part size so the parts path is reached.
    cut_through: (u8, u16),
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
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
enum AReply {
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
    fn msg(&self, request: Option<MessageType>) -> AMsg {
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
enum AReq {
    Subscribe(AId, ATrack, AParams),
    Publish(AId, ATrack, AAlias, AParams, AProperties),
    Fetch(AId, AFetchType, AParams),
    TrackStatus(AId, ATrack, AParams),
    PublishNamespace(AId, ANamespace, AParams),
    SubscribeNamespace(AId, ANamespace, AParams),
    SubscribeTracks(AId, ANamespace, AParams),
}

impl AReq {
    fn msg(&self) -> AMsg {
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
enum AFetchItem {
    Object(AFetchObject),
    End(AEndOfRange),
}

/// What ends a session from outside the protocol.
#[derive(Arbitrary, Debug)]
enum EndOp {
    ConnectionClosed(V),
    Close(V, Blob),
}

/// A stream, counted from the most recent one of its kind. The peer's
/// control stream only through `Control`.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum SSel {
    Control,
    Peer(u8),
    PeerUni(u8),
    PeerBidi(u8),
    LocalBidi(u8),
    Local(u8),
    Raw(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum ACode {
    Known(u8),
    WebTransport(u8),
    Raw(V),
}

impl ACode {
    fn wire(self) -> u64 {
        const KNOWN: [u64; 10] = [0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x9, 0x12];
        match self {
            ACode::Known(i) => KNOWN[usize::from(i) % KNOWN.len()],
            ACode::WebTransport(i) => webtransport_code(u32::from(i)),
            ACode::Raw(v) => v.0,
        }
    }

    fn code(self) -> StreamResetCode {
        StreamResetCode::from_code(self.wire())
    }
}

#[derive(Arbitrary, Debug)]
enum Chunk {
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
enum ADgram {
    Object(ADatagram),
    Raw(Blob),
    Padding(u8),
}

#[derive(Arbitrary, Debug)]
enum AppOp {
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
struct AObject {
    alias: AAlias,
    group: V,
    subgroup: V,
    /// Added to the previous Object ID of the subgroup plus one.
    gap: V,
    priority: Option<u8>,
    status: u8,
    props: AProperties,
    payload: Blob,
    end_of_group: bool,
    first_object: bool,
}

// ---------------------------------------------------------------------
// Names: where the fuzzer's Request IDs and Track Aliases come from
// ---------------------------------------------------------------------

struct Names {
    /// The next Request ID the peer may use.
    next_peer_id: u64,
    /// Request IDs seen (ours and the peer's), most recent last.
    ids: Vec<u64>,
    /// Track aliases seen (ours and the peer's), most recent last.
    aliases: Vec<u64>,
}

fn recent(list: &[u64], i: u8) -> Option<u64> {
    if list.is_empty() {
        return None;
    }
    Some(list[list.len() - 1 - usize::from(i) % list.len()])
}

fn remember(list: &mut Vec<u64>, v: u64) {
    if list.last() != Some(&v) {
        list.push(v);
        if list.len() > 64 {
            list.remove(0);
        }
    }
}

impl Ctx for Names {
    fn next_id(&mut self) -> u64 {
        let id = self.next_peer_id;
        self.next_peer_id = self.next_peer_id.wrapping_add(2);
        remember(&mut self.ids, id);
        id
    }
    fn known_id(&self, i: u8) -> Option<u64> {
        recent(&self.ids, i)
    }
    fn known_alias(&self, i: u8) -> Option<u64> {
        recent(&self.aliases, i)
    }
    fn peer_alias(&mut self, a: AAlias) -> u64 {
        let v = match a {
            // A fresh alias most of the time: the peer assigns them.
            AAlias::Known(i) if i < 0xc0 => {
                self.aliases.iter().max().map_or(0, |m| m.wrapping_add(1))
            }
            other => self.alias(other),
        };
        remember(&mut self.aliases, v);
        v
    }
}

// ---------------------------------------------------------------------
// A parser for what the session writes
// ---------------------------------------------------------------------

enum OutKind {
    /// Our control stream: SETUP first, then only GOAWAY.
    Control { setup_seen: bool },
    /// A request stream: control messages.
    Request,
    /// A unidirectional data stream.
    Data(DataOut),
}

enum DataOut {
    Header,
    Subgroup(SubgroupDecoder),
    Fetch(FetchDecoder),
}

struct OutStream {
    kind: OutKind,
    buf: BytesMut,
    /// The type of the first message on a request stream.
    first: Option<MessageType>,
}

impl OutStream {
    /// Decode all complete items; anything malformed is a bug.
    fn feed(&mut self, data: &[u8], fetch_orders: &HashMap<u64, GroupOrder>) {
        self.buf.extend_from_slice(data);
        loop {
            let r = match &mut self.kind {
                OutKind::Control { setup_seen } => match ControlMessage::decode(&mut self.buf) {
                    Ok(ControlMessage::Setup(_)) if !*setup_seen => {
                        *setup_seen = true;
                        Ok(())
                    }
                    Ok(ControlMessage::GoAway(g)) if *setup_seen => {
                        assert!(g.request_id.is_some(), "GOAWAY without Request ID");
                        Ok(())
                    }
                    Ok(m) => panic!("unexpected message on our control stream: {m:?}"),
                    Err(e) => Err(e),
                },
                OutKind::Request => ControlMessage::decode(&mut self.buf).map(|m| {
                    assert_ne!(m.message_type(), MessageType::Setup, "SETUP on a request");
                    self.first.get_or_insert(m.message_type());
                }),
                OutKind::Data(d) => match d {
                    DataOut::Header => UniStreamHeader::decode(&mut self.buf).map(|h| {
                        *d = match h {
                            UniStreamHeader::Subgroup(h) => {
                                DataOut::Subgroup(SubgroupDecoder::new(h))
                            }
                            // The Group Order of the peer's FETCH.
                            UniStreamHeader::Fetch(f) => DataOut::Fetch(FetchDecoder::new(
                                fetch_orders.get(&f.request_id).copied().unwrap_or_default(),
                            )),
                            other => panic!("unexpected data stream header {other:?}"),
                        }
                    }),
                    DataOut::Subgroup(dec) => dec.decode_object(&mut self.buf).map(drop),
                    DataOut::Fetch(dec) => dec.decode_item(&mut self.buf).map(drop),
                },
            };
            match r {
                Ok(()) => {}
                Err(DecodeError::Incomplete) => return,
                Err(e) => panic!("the session wrote malformed bytes: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------

struct Harness {
    s: moqt::Session,
    names: Names,
    peer_uni: Vec<StreamRef>,
    peer_bidi: Vec<StreamRef>,
    /// The peer's control stream, once opened.
    control: Option<StreamRef>,
    local_uni: Vec<StreamRef>,
    local_bidi: Vec<StreamRef>,
    all: HashSet<StreamRef>,
    send_closed: HashSet<StreamRef>,
    out: HashMap<StreamRef, OutStream>,
    /// What the fuzzer wrote on its subgroup / fetch streams.
    sub_enc: HashMap<StreamRef, (SubgroupEncoder, Option<u64>)>,
    fetch_enc: HashMap<StreamRef, FetchEncoder>,
    /// Last Object ID we sent per (alias, group, subgroup).
    sent: HashMap<(u64, u64, u64), u64>,
    /// Group Order of each FETCH the fuzzer sent, by Request ID.
    fetch_orders: HashMap<u64, GroupOrder>,
    ready: bool,
    closed_event: bool,
    close_cmd: bool,
}

fn nth(list: &[StreamRef], i: u8) -> Option<StreamRef> {
    if list.is_empty() {
        return None;
    }
    Some(list[list.len() - 1 - usize::from(i) % list.len()])
}

impl Harness {
    fn new(role: Role, config: SessionConfig) -> Self {
        let mut h = Harness {
            s: moqt::Session::new(role, config),
            names: Names {
                next_peer_id: match role {
                    Role::Server => 0,
                    Role::Client => 1,
                },
                ids: Vec::new(),
                aliases: Vec::new(),
            },
            peer_uni: Vec::new(),
            peer_bidi: Vec::new(),
            control: None,
            local_uni: Vec::new(),
            local_bidi: Vec::new(),
            all: HashSet::new(),
            send_closed: HashSet::new(),
            out: HashMap::new(),
            sub_enc: HashMap::new(),
            fetch_enc: HashMap::new(),
            sent: HashMap::new(),
            fetch_orders: HashMap::new(),
            ready: false,
            closed_event: false,
            close_cmd: false,
        };
        h.drain();
        h
    }

    fn select(&self, sel: SSel) -> Option<StreamRef> {
        match sel {
            SSel::Control => self.control,
            SSel::Peer(i) => {
                let mut v: Vec<StreamRef> = self.peer_uni.clone();
                v.retain(|s| Some(*s) != self.control);
                v.extend(&self.peer_bidi);
                v.sort();
                nth(&v, i)
            }
            SSel::PeerUni(i) => {
                let mut v: Vec<StreamRef> = self.peer_uni.clone();
                v.retain(|s| Some(*s) != self.control);
                nth(&v, i)
            }
            SSel::PeerBidi(i) => nth(&self.peer_bidi, i),
            SSel::LocalBidi(i) => nth(&self.local_bidi, i),
            SSel::Local(i) => {
                let mut v: Vec<StreamRef> = self.local_uni.clone();
                v.extend(&self.local_bidi);
                v.sort();
                nth(&v, i)
            }
            SSel::Raw(i) => Some(StreamRef(u64::from(i))),
        }
    }

    /// The peer may send on it (its own streams, our bidirectional ones).
    fn peer_sends_on(&self, s: StreamRef) -> bool {
        self.peer_uni.contains(&s) || self.peer_bidi.contains(&s) || self.local_bidi.contains(&s)
    }

    /// We may send on it.
    fn we_send_on(&self, s: StreamRef) -> bool {
        self.local_uni.contains(&s) || self.local_bidi.contains(&s) || self.peer_bidi.contains(&s)
    }

    fn open(&mut self, bidi: bool) -> StreamRef {
        let s = self.s.on_peer_stream(bidi);
        assert!(self.all.insert(s), "on_peer_stream reused {s:?}");
        if bidi {
            self.peer_bidi.push(s);
        } else {
            self.peer_uni.push(s);
        }
        s
    }

    /// Check a driver input's result against the session state.
    fn input_result(&mut self, r: Result<(), SessionError>) {
        match r {
            Ok(()) => assert!(self.s.closed().is_none(), "Ok from a closed session"),
            Err(SessionError::Closed(c)) => assert_eq!(self.s.closed(), Some(c)),
            Err(e) => panic!("driver input failed with {e:?}"),
        }
        self.drain();
    }

    /// Check an application call's result: a refusal emits nothing.
    fn app_result<T>(&mut self, r: Result<T, SessionError>) -> Option<T> {
        match r {
            Ok(v) => {
                assert!(self.s.closed().is_none(), "Ok from a closed session");
                self.drain();
                Some(v)
            }
            Err(e) => {
                match e {
                    SessionError::Closed(c) => assert_eq!(self.s.closed(), Some(c)),
                    other => assert!(self.s.closed().is_none(), "{other:?} from a closed session"),
                }
                assert_eq!(
                    self.s.poll_command(),
                    None,
                    "a refused call emitted a command"
                );
                assert_eq!(self.s.poll_event(), None, "a refused call emitted an event");
                None
            }
        }
    }

    fn data(&mut self, s: StreamRef, data: Vec<u8>, split: &[u8], fin: bool) {
        let sizes = chunk_sizes(split, data.len());
        let data = Bytes::from(data);
        let mut at = 0;
        if sizes.is_empty() {
            let r = self.s.on_stream_data(s, data, fin);
            return self.input_result(r);
        }
        let last = sizes.len() - 1;
        for (i, n) in sizes.into_iter().enumerate() {
            let r = self
                .s
                .on_stream_data(s, data.slice(at..at + n), fin && i == last);
            at += n;
            self.input_result(r);
            if self.s.closed().is_some() {
                return;
            }
        }
    }

    fn encode_chunk(&mut self, s: StreamRef, c: &Chunk, out: &mut Vec<u8>) {
        match c {
            Chunk::Raw(b) => out.extend_from_slice(&b.0),
            Chunk::Message(m) => {
                let m = m.build(&mut self.names);
                if let ControlMessage::Fetch(f) = &m {
                    let order = f.parameters.group_order.unwrap_or_default();
                    self.fetch_orders.insert(f.request_id, order);
                }
                let _ = m.encode(out);
            }
            Chunk::SubgroupHeader(h) => {
                let h = h.build(&mut self.names);
                let enc = SubgroupEncoder::new(h);
                let _ = enc.encode_header(out);
                self.sub_enc.insert(s, (enc, None));
            }
            Chunk::Object(o) => {
                let (enc, prev) = self
                    .sub_enc
                    .entry(s)
                    .or_insert_with(|| (SubgroupEncoder::new(Default::default()), None));
                let obj = o.build(*prev, enc.header().has_properties);
                if enc.encode_object(&obj, out).is_ok() {
                    *prev = Some(obj.object_id);
                }
            }
            Chunk::FetchHeader(id) => {
                let id = self.names.id(*id);
                out.extend_from_slice(&fetch_header(id));
                self.fetch_enc
                    .insert(s, FetchEncoder::new(GroupOrder::Ascending));
            }
            Chunk::FetchObject(o) => {
                let enc = self
                    .fetch_enc
                    .entry(s)
                    .or_insert_with(|| FetchEncoder::new(GroupOrder::Ascending));
                let _ = enc.encode_object(&o.build(), out);
            }
            Chunk::FetchEnd(e) => {
                let enc = self
                    .fetch_enc
                    .entry(s)
                    .or_insert_with(|| FetchEncoder::new(GroupOrder::Ascending));
                let _ = enc.encode_end_of_range(&e.build(), out);
            }
            Chunk::Padding(n) => {
                let _ = UniStreamHeader::Padding.encode(out);
                out.extend(std::iter::repeat_n(0u8, usize::from(*n)));
            }
            Chunk::Unsubscribe(b) => {
                out.push(0x0a);
                out.extend_from_slice(&(b.0.len() as u16).to_be_bytes());
                out.extend_from_slice(&b.0);
            }
            Chunk::Truncated(c, n) => {
                let mut v = Vec::new();
                self.encode_chunk(s, c, &mut v);
                v.truncate(v.len().saturating_sub(usize::from(*n).max(1)));
                out.extend_from_slice(&v);
            }
            Chunk::Several(list) => {
                for c in list.iter().take(16) {
                    self.encode_chunk(s, c, out);
                }
            }
        }
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Request { msg, split, fin } => {
                let s = self.open(true);
                let mut bytes = Vec::new();
                self.encode_chunk(s, &Chunk::Message(msg.msg()), &mut bytes);
                self.data(s, bytes, split, *fin);
            }
            Op::Reply {
                to,
                msg,
                split,
                fin,
            } => {
                let Some(s) = nth(&self.local_bidi, *to) else {
                    return;
                };
                let request = self.out.get(&s).and_then(|o| o.first);
                let mut bytes = Vec::new();
                self.encode_chunk(s, &Chunk::Message(msg.msg(request)), &mut bytes);
                self.data(s, bytes, split, *fin);
            }
            Op::Subgroup {
                header,
                objects,
                split,
                fin,
            } => {
                let s = self.open(false);
                let mut bytes = Vec::new();
                self.encode_chunk(s, &Chunk::SubgroupHeader(*header), &mut bytes);
                for o in objects.iter().take(32) {
                    self.encode_chunk(s, &Chunk::Object(o.clone()), &mut bytes);
                }
                self.data(s, bytes, split, *fin);
            }
            Op::FetchStream {
                id,
                items,
                split,
                fin,
            } => {
                let s = self.open(false);
                let mut bytes = Vec::new();
                self.encode_chunk(s, &Chunk::FetchHeader(*id), &mut bytes);
                for it in items.iter().take(32) {
                    let c = match it {
                        AFetchItem::Object(o) => Chunk::FetchObject(o.clone()),
                        AFetchItem::End(e) => Chunk::FetchEnd(*e),
                    };
                    self.encode_chunk(s, &c, &mut bytes);
                }
                self.data(s, bytes, split, *fin);
            }
            Op::Open { bidi } => {
                self.open(*bidi);
            }
            Op::Send {
                to,
                what,
                split,
                fin,
            } => {
                let Some(s) = self.select(*to) else { return };
                let mut bytes = Vec::new();
                self.encode_chunk(s, what, &mut bytes);
                self.data(s, bytes, split, *fin);
            }
            Op::Fin(to) => {
                let Some(s) = self.select(*to) else { return };
                let r = self.s.on_stream_data(s, Bytes::new(), true);
                self.input_result(r);
            }
            Op::Reset(to, code) => {
                let Some(s) = self.select(*to) else { return };
                if !self.peer_sends_on(s) && !matches!(to, SSel::Raw(_)) {
                    return;
                }
                let r = self.s.on_stream_reset(s, code.wire());
                self.input_result(r);
            }
            Op::StopSending(to, code) => {
                let Some(s) = self.select(*to) else { return };
                if !self.we_send_on(s) && !matches!(to, SSel::Raw(_)) {
                    return;
                }
                let r = self.s.on_stop_sending(s, code.wire());
                self.input_result(r);
            }
            Op::Datagram(d) => {
                let bytes = match d {
                    ADgram::Object(d) => {
                        let mut v = Vec::new();
                        let _ = d.build(&mut self.names).encode(&mut v);
                        v
                    }
                    ADgram::Raw(b) => b.0.clone(),
                    ADgram::Padding(n) => {
                        let mut v = Vec::new();
                        let _ = Datagram::Padding {
                            len: usize::from(*n),
                        }
                        .encode(&mut v);
                        v
                    }
                };
                let r = self.s.on_datagram(Bytes::from(bytes));
                self.input_result(r);
            }
            Op::App(a) | Op::App2(a) => self.app(a),
            Op::End(EndOp::Close(code, reason)) => {
                let reason = String::from_utf8_lossy(&reason.0).into_owned();
                self.s.close(SessionErrorCode::from_code(code.0), &reason);
                self.drain();
                assert!(self.s.closed().is_some());
            }
            Op::End(EndOp::ConnectionClosed(code)) => {
                let was_closed = self.s.closed().is_some();
                self.s.on_connection_closed(code.0, "transport");
                assert!(self.s.closed().is_some());
                // Only Event::Closed, no command.
                assert_eq!(
                    self.s.poll_command(),
                    None,
                    "command after connection close"
                );
                if !was_closed {
                    match self.s.poll_event() {
                        Some(Event::Closed { .. }) => self.closed_event = true,
                        other => panic!("expected Closed, got {other:?}"),
                    }
                }
                self.drain();
            }
        }
    }

    fn rid(&mut self, a: AId) -> RequestId {
        RequestId(self.names.id(a))
    }

    fn local_id(&mut self, r: Option<RequestId>) {
        if let Some(id) = r {
            remember(&mut self.names.ids, id.0);
        }
    }

    fn app(&mut self, a: &AppOp) {
        use MessageType as M;
        match a {
            AppOp::Subscribe(t, p) => {
                let r = self.s.subscribe(t.build(), p.build(M::Subscribe));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::Publish(t, p, props) => {
                let r = self
                    .s
                    .publish(t.build(), p.build(M::Publish), props.build());
                if let Some((id, alias)) = self.app_result(r) {
                    remember(&mut self.names.ids, id.0);
                    remember(&mut self.names.aliases, alias);
                }
            }
            AppOp::Fetch(ft, p) => {
                let fetch_type = match ft {
                    AFetchType::Standalone(t, s, e) => FetchType::Standalone(StandaloneFetch {
                        track: t.build(),
                        start: s.build(),
                        end: e.build(),
                    }),
                    AFetchType::RelativeJoining(j, s) => FetchType::RelativeJoining(JoiningFetch {
                        joining_request_id: self.names.id(*j),
                        joining_start: s.0,
                    }),
                    AFetchType::AbsoluteJoining(j, s) => FetchType::AbsoluteJoining(JoiningFetch {
                        joining_request_id: self.names.id(*j),
                        joining_start: s.0,
                    }),
                };
                let r = self.s.fetch(fetch_type, p.build(M::Fetch));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::TrackStatus(t, p) => {
                let r = self.s.track_status(t.build(), p.build(M::TrackStatus));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::PublishNamespace(ns, p) => {
                let r = self
                    .s
                    .publish_namespace(ns.build(), p.build(M::PublishNamespace));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeNamespace(ns, p) => {
                let r = self
                    .s
                    .subscribe_namespace(ns.build(), p.build(M::SubscribeNamespace));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeTracks(ns, p) => {
                let r = self
                    .s
                    .subscribe_tracks(ns.build(), p.build(M::SubscribeTracks));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::RequestUpdate(id, p) => {
                let id = self.rid(*id);
                let r = self.s.request_update(id, p.build(M::RequestUpdate));
                let r = self.app_result(r);
                self.local_id(r);
            }
            AppOp::SubscribeOk(id, p, props) => {
                let id = self.rid(*id);
                let r = self
                    .s
                    .subscribe_ok(id, p.build(M::SubscribeOk), props.build());
                if let Some(alias) = self.app_result(r) {
                    remember(&mut self.names.aliases, alias);
                }
            }
            AppOp::RequestOk(id, ok) => {
                let id = self.rid(*id);
                let msg = moqt::RequestOk {
                    parameters: ok.params.build(M::RequestOk),
                    track_properties: ok.props.build(),
                };
                let r = self.s.request_ok(id, msg);
                self.app_result(r);
            }
            AppOp::RequestError(id, code, reason) => {
                let id = self.rid(*id);
                let reason = String::from_utf8_lossy(&reason.0).into_owned();
                let r = self
                    .s
                    .request_error(id, RequestErrorCode::from_code(code.0), &reason);
                self.app_result(r);
            }
            AppOp::FetchOk(id, eot, end, props) => {
                let id = self.rid(*id);
                let ok = FetchOk {
                    end_of_track: *eot,
                    end_location: end.build(),
                    parameters: Default::default(),
                    track_properties: props.build(),
                };
                let r = self.s.fetch_ok(id, ok);
                self.app_result(r);
            }
            AppOp::Namespace(id, ns) => {
                let id = self.rid(*id);
                let r = self.s.namespace(id, ns.build());
                self.app_result(r);
            }
            AppOp::NamespaceDone(id, ns) => {
                let id = self.rid(*id);
                let r = self.s.namespace_done(id, ns.build());
                self.app_result(r);
            }
            AppOp::PublishDone(id, code, count, reason) => {
                let id = self.rid(*id);
                let done = PublishDone {
                    status_code: PublishDoneCode::from_code(code.0),
                    stream_count: count.0,
                    reason: moqt::ReasonPhrase::new(reason.bytes()).unwrap_or_default(),
                };
                let r = self.s.publish_done(id, done);
                self.app_result(r);
            }
            AppOp::SendMessage(id, m, fin) => {
                let id = self.rid(*id);
                let m = m.build(&mut self.names);
                // SETUP on a request stream would be the application's
                // mistake; the session sends what it is given.
                if m.message_type() == M::Setup {
                    return;
                }
                let r = self.s.send_message(id, m, *fin);
                self.app_result(r);
            }
            AppOp::Finish(id) => {
                let id = self.rid(*id);
                let r = self.s.finish(id);
                self.app_result(r);
            }
            AppOp::Cancel(id, code) => {
                let id = self.rid(*id);
                let r = self.s.cancel(id, code.code());
                self.app_result(r);
            }
            AppOp::SendObject(o) => {
                let alias = self.names.alias(o.alias);
                let key = (alias, o.group.0, o.subgroup.0);
                let object = match self.sent.get(&key) {
                    Some(p) => p.saturating_add(1).saturating_add(o.gap.0),
                    None => o.gap.0,
                };
                let status = fastrelay_fuzz::status(o.status);
                let normal = status == moqt::ObjectStatus::Normal;
                let obj = OutgoingObject {
                    track_alias: alias,
                    location: Location::new(o.group.0, object),
                    subgroup: o.subgroup.0,
                    publisher_priority: o.priority,
                    status,
                    properties: if normal {
                        o.props.build()
                    } else {
                        Default::default()
                    },
                    payload: if normal {
                        o.payload.bytes()
                    } else {
                        Bytes::new()
                    },
                };
                let flags = StreamFlags {
                    end_of_group: o.end_of_group,
                    first_object: o.first_object,
                };
                let r = self.s.send_object_flagged(obj, flags);
                if self.app_result(r).is_some() {
                    self.sent.insert(key, object);
                }
            }
            AppOp::EndSubgroup(a, g, sg) => {
                let alias = self.names.alias(*a);
                self.s.end_subgroup(alias, g.0, sg.0);
                self.drain();
            }
            AppOp::ResetSubgroup(a, g, sg, code) => {
                let alias = self.names.alias(*a);
                self.s.reset_subgroup(alias, g.0, sg.0, code.code());
                self.drain();
            }
            AppOp::ResetTrackSubgroups(a, code) => {
                let alias = self.names.alias(*a);
                self.s.reset_track_subgroups(alias, code.code());
                self.drain();
            }
            AppOp::SendDatagram(d) => {
                let d = d.build(&mut self.names);
                let r = self.s.send_datagram(&d);
                self.app_result(r);
            }
            AppOp::OpenFetchStream(id) => {
                let id = self.rid(*id);
                let r = self.s.open_fetch_stream(id);
                self.app_result(r);
            }
            AppOp::SendFetchObject(id, o) => {
                let id = self.rid(*id);
                let r = self.s.send_fetch_object(id, o.build());
                self.app_result(r);
            }
            AppOp::SendFetchEnd(id, e) => {
                let id = self.rid(*id);
                let r = self.s.send_fetch_end_of_range(id, e.build());
                self.app_result(r);
            }
            AppOp::FinishFetch(id) => {
                let id = self.rid(*id);
                let r = self.s.finish_fetch(id);
                self.app_result(r);
            }
            AppOp::GoAway(uri, timeout) => {
                let r = self.s.go_away(uri.bytes(), timeout.0);
                self.app_result(r);
            }
        }
    }

    /// Drain and check every command and event.
    fn drain(&mut self) {
        while let Some(c) = self.s.poll_command() {
            assert!(!self.close_cmd, "command after Close: {c:?}");
            match c {
                Command::OpenUni(s) | Command::OpenBi(s) => {
                    assert!(self.all.insert(s), "opened an existing stream {s:?}");
                    let bidi = matches!(c, Command::OpenBi(_));
                    let kind = if bidi {
                        self.local_bidi.push(s);
                        OutKind::Request
                    } else {
                        self.local_uni.push(s);
                        if self.out.is_empty() {
                            OutKind::Control { setup_seen: false }
                        } else {
                            OutKind::Data(DataOut::Header)
                        }
                    };
                    self.out.insert(
                        s,
                        OutStream {
                            kind,
                            buf: BytesMut::new(),
                            first: None,
                        },
                    );
                }
                Command::Write { stream, data, fin } => {
                    assert!(
                        self.we_send_on(stream),
                        "write on {stream:?}, not ours to send on"
                    );
                    assert!(
                        !self.send_closed.contains(&stream),
                        "write on {stream:?} after FIN or reset"
                    );
                    if fin {
                        self.send_closed.insert(stream);
                    }
                    self.out
                        .entry(stream)
                        .or_insert_with(|| OutStream {
                            kind: OutKind::Request,
                            buf: BytesMut::new(),
                            first: None,
                        })
                        .feed(&data, &self.fetch_orders);
                }
                Command::Finish(stream) => {
                    assert!(
                        self.we_send_on(stream),
                        "FIN on {stream:?}, not ours to send on"
                    );
                    assert!(
                        self.send_closed.insert(stream),
                        "FIN on {stream:?} after FIN or reset"
                    );
                }
                Command::Reset { stream, .. } => {
                    assert!(
                        self.we_send_on(stream),
                        "reset of {stream:?}, not ours to send on"
                    );
                    self.send_closed.insert(stream);
                }
                Command::StopSending { stream, .. } => {
                    assert!(
                        self.peer_sends_on(stream),
                        "STOP_SENDING on {stream:?}, which the peer does not send on"
                    );
                }
                Command::SendDatagram(d) => {
                    Datagram::decode(&d).expect("the session sent a malformed datagram");
                }
                Command::Close { .. } => {
                    assert!(self.s.closed().is_some(), "Close while not closed");
                    self.close_cmd = true;
                }
            }
        }
        while let Some(e) = self.s.poll_event() {
            assert!(!self.closed_event, "event after Closed: {e:?}");
            match e {
                Event::Ready { peer_setup } => {
                    assert!(!self.ready, "second Ready");
                    self.ready = true;
                    assert_eq!(self.s.peer_setup(), Some(&peer_setup));
                    assert!(self.s.is_ready());
                }
                Event::Request { id, .. } => {
                    assert!(self.ready, "peer request before Ready");
                    remember(&mut self.names.ids, id.0);
                }
                Event::Object(o) => {
                    assert!(self.ready, "object before Ready");
                    if let Some(part) = o.part {
                        assert!(
                            o.payload.len() as u64 <= part.length - part.offset,
                            "part runs past its object: {part:?}, {} bytes",
                            o.payload.len()
                        );
                    }
                    remember(&mut self.names.aliases, o.track_alias);
                }
                Event::Closed { .. } => {
                    assert!(self.s.closed().is_some(), "Closed event while open");
                    self.closed_event = true;
                }
                _ => {}
            }
        }
        if self.s.closed().is_some() {
            assert!(self.closed_event, "closed without an Event::Closed");
        }
    }
}

fuzz_target!(|input: Input| {
    let role = if input.server {
        Role::Server
    } else {
        Role::Client
    };
    let mut config = SessionConfig {
        setup: input.our_setup.build(),
        ..SessionConfig::default()
    };
    if input.max_object.0 >= 0xe0 {
        config.max_object_size = usize::from(input.max_object.1);
    }
    if input.cut_through.0 >= 0x80 {
        config.cut_through_bytes = Some(usize::from(input.cut_through.1 % 4096));
    }
    let mut h = Harness::new(role, config);

    // The peer's SETUP on its control stream, possibly after a few
    // operations (streams and datagrams that must wait for it).
    let early = if input.early >= 0xf0 {
        usize::from(input.early & 0x0f)
    } else {
        0
    };
    let peer_setup = if role == Role::Client && !input.allow_path {
        input.peer_setup.build_without_path()
    } else {
        input.peer_setup.build()
    };
    let mut setup = Vec::new();
    ControlMessage::Setup(peer_setup)
        .encode(&mut setup)
        .expect("SETUP does not encode");
    let mut ops = input.ops.iter();
    for op in ops.by_ref().take(early) {
        h.op(op);
    }
    if h.s.closed().is_none() {
        let cs = h.open(false);
        h.control = Some(cs);
        h.data(cs, setup, &input.setup_split, false);
    }
    for op in ops {
        h.op(op);
    }

    // The end: the transport goes away.
    let was_closed = h.s.closed().is_some();
    h.s.on_connection_closed(0, "end");
    assert_eq!(h.s.poll_command(), None);
    if !was_closed {
        assert!(matches!(h.s.poll_event(), Some(Event::Closed { .. })));
    }
    assert_eq!(h.s.poll_event(), None);
});
