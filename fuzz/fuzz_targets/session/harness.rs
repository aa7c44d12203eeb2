//! The harness: one session, the streams on both sides, and the peer's
//! and transport's operations applied to it.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use fastrelay_fuzz::{chunk_sizes, fetch_header, Ctx};
use moqt::session::{Event, Role, SessionConfig, SessionError, StreamRef};
use moqt::{
    ControlMessage, Datagram, FetchEncoder, GroupOrder, SessionErrorCode, SubgroupEncoder,
    UniStreamHeader,
};

use crate::input::{ADgram, AFetchItem, Chunk, EndOp, Op, SSel};
use crate::names::Names;
use crate::output::OutStream;

pub(crate) struct Harness {
    pub(crate) s: moqt::Session,
    pub(crate) names: Names,
    pub(crate) peer_uni: Vec<StreamRef>,
    pub(crate) peer_bidi: Vec<StreamRef>,
    /// The peer's control stream, once opened.
    pub(crate) control: Option<StreamRef>,
    pub(crate) local_uni: Vec<StreamRef>,
    pub(crate) local_bidi: Vec<StreamRef>,
    pub(crate) all: HashSet<StreamRef>,
    pub(crate) send_closed: HashSet<StreamRef>,
    pub(crate) out: HashMap<StreamRef, OutStream>,
    /// What the fuzzer wrote on its subgroup / fetch streams.
    pub(crate) sub_enc: HashMap<StreamRef, (SubgroupEncoder, Option<u64>)>,
    pub(crate) fetch_enc: HashMap<StreamRef, FetchEncoder>,
    /// Last Object ID we sent per (alias, group, subgroup).
    pub(crate) sent: HashMap<(u64, u64, u64), u64>,
    /// Group Order of each FETCH the fuzzer sent, by Request ID.
    pub(crate) fetch_orders: HashMap<u64, GroupOrder>,
    pub(crate) ready: bool,
    pub(crate) closed_event: bool,
    pub(crate) close_cmd: bool,
}

pub(crate) fn nth(list: &[StreamRef], i: u8) -> Option<StreamRef> {
    if list.is_empty() {
        return None;
    }
    Some(list[list.len() - 1 - usize::from(i) % list.len()])
}

impl Harness {
    pub(crate) fn new(role: Role, config: SessionConfig) -> Self {
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
    pub(crate) fn peer_sends_on(&self, s: StreamRef) -> bool {
        self.peer_uni.contains(&s) || self.peer_bidi.contains(&s) || self.local_bidi.contains(&s)
    }

    /// We may send on it.
    pub(crate) fn we_send_on(&self, s: StreamRef) -> bool {
        self.local_uni.contains(&s) || self.local_bidi.contains(&s) || self.peer_bidi.contains(&s)
    }

    pub(crate) fn open(&mut self, bidi: bool) -> StreamRef {
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
    pub(crate) fn app_result<T>(&mut self, r: Result<T, SessionError>) -> Option<T> {
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

    pub(crate) fn data(&mut self, s: StreamRef, data: Vec<u8>, split: &[u8], fin: bool) {
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

    pub(crate) fn op(&mut self, op: &Op) {
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
}
