//! The driver task: it owns the sans-IO [`moqt::Session`], takes
//! application operations ([`Op`]) and transport input ([`Input`]), and
//! carries out what the session asks for (open, write, reset streams, send
//! datagrams, close the connection).
//!
//! Its submodules hold the quinn stream tasks ([`transport`]), the handling
//! of application operations ([`ops`]) and of session events ([`events`]).

mod events;
mod ops;
mod transport;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::anyhow;
use bytes::Bytes;
use moqt::session::{Command, Object, OutgoingObject, RequestId, Role, SessionConfig, StreamRef};
use moqt::{
    FetchType, FullTrackName, Location, ObjectDatagram, Parameters, PublishDoneCode,
    RequestErrorCode, SessionErrorCode, TrackNamespace, STREAM_COUNT_UNKNOWN,
};
use tokio::sync::{mpsc, oneshot};

use crate::types::{
    IncomingSubscribe, ReceivedObject, SessionClosed, Shared, SubItem, SubscriptionEnd,
};
use crate::{INPUT_QUEUE, OBJECT_QUEUE, OP_QUEUE, WRITE_QUEUE};
use transport::{reader, write_loop, writer, FlushGuard, Opening};

/// What the driver needs from the application.
pub(crate) enum Op {
    Subscribe {
        track: FullTrackName,
        parameters: Parameters,
        reply: oneshot::Sender<anyhow::Result<SubscribeAccepted>>,
    },
    PublishNamespace {
        namespace: TrackNamespace,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    FetchJoining {
        subscription: RequestId,
        fetch_type: FetchType,
        reply: oneshot::Sender<anyhow::Result<SubscribeAccepted>>,
    },
    Accept {
        id: RequestId,
        largest: Option<Location>,
        reply: oneshot::Sender<anyhow::Result<u64>>,
    },
    Reject {
        id: RequestId,
        code: RequestErrorCode,
        reason: String,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    SendObject {
        object: OutgoingObject,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    EndSubgroup {
        alias: u64,
        group: u64,
        subgroup: u64,
        reply: oneshot::Sender<bool>,
    },
    SendDatagram {
        datagram: ObjectDatagram,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    PublishDone {
        id: RequestId,
        code: PublishDoneCode,
        reason: String,
        reply: oneshot::Sender<anyhow::Result<()>>,
    },
    Cancel {
        id: RequestId,
    },
    Close {
        code: SessionErrorCode,
        reason: String,
        flush: Duration,
        reply: oneshot::Sender<()>,
    },
}

pub(crate) struct SubscribeAccepted {
    pub(crate) id: RequestId,
    pub(crate) alias: Option<u64>,
    pub(crate) largest: Option<Location>,
    pub(crate) rx: mpsc::Receiver<SubItem>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) resets: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
}

/// Transport input for the driver.
enum Input {
    Data {
        stream: StreamRef,
        data: Bytes,
        fin: bool,
    },
    Reset {
        stream: StreamRef,
        code: u64,
    },
    Stopped {
        stream: StreamRef,
        code: u64,
    },
    Uni(quinn::RecvStream),
    Bi(quinn::SendStream, quinn::RecvStream),
    Datagram(Bytes),
    ConnectionLost(quinn::ConnectionError),
    Grace(RequestId),
}

enum WriteOp {
    /// Data, then FIN if a guard is given.
    Data(Bytes, Option<FlushGuard>),
    Finish(FlushGuard),
    Reset(u64),
}

/// The channel ends a [`crate::MoqSession`] keeps of a driver it started.
pub(crate) struct DriverHandles {
    pub(crate) ops: mpsc::Sender<Op>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) incoming: mpsc::Receiver<IncomingSubscribe>,
    pub(crate) namespaces: mpsc::Receiver<TrackNamespace>,
    /// Fires once the peer's SETUP arrived; dropped if the session ends first.
    pub(crate) ready: oneshot::Receiver<()>,
}

/// Start the acceptor and driver tasks of a session of `role` over `conn`.
pub(crate) fn spawn(conn: quinn::Connection, role: Role, config: SessionConfig) -> DriverHandles {
    let (ops_tx, ops_rx) = mpsc::channel(OP_QUEUE);
    let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
    let (incoming_tx, incoming_rx) = mpsc::channel(crate::INCOMING_QUEUE);
    let (ns_tx, ns_rx) = mpsc::channel(crate::INCOMING_QUEUE);
    let (ready_tx, ready_rx) = oneshot::channel();
    let shared = Arc::new(Shared {
        closed: Mutex::new(None),
    });
    tokio::spawn(transport::acceptor(conn.clone(), input_tx.clone()));
    let driver = Driver {
        session: moqt::Session::new(role, config),
        conn,
        input_tx,
        writers: HashMap::new(),
        stoppers: HashMap::new(),
        unfinished: Arc::new(AtomicUsize::new(0)),
        shared: shared.clone(),
        ready: Some(ready_tx),
        incoming: incoming_tx,
        namespaces: ns_tx,
        pending: HashMap::new(),
        subs: HashMap::new(),
        alias_to_sub: HashMap::new(),
        orphans: VecDeque::new(),
        orphan_ends: HashMap::new(),
        publishing: HashMap::new(),
        fin_close: None,
    };
    tokio::spawn(driver.run(ops_rx, input_rx));
    DriverHandles {
        ops: ops_tx,
        shared,
        incoming: incoming_rx,
        namespaces: ns_rx,
        ready: ready_rx,
    }
}

enum Pending {
    Subscribe(
        oneshot::Sender<anyhow::Result<SubscribeAccepted>>,
        SubscribeAccepted,
    ),
    Namespace(oneshot::Sender<anyhow::Result<()>>),
    Fetch(
        oneshot::Sender<anyhow::Result<SubscribeAccepted>>,
        SubscribeAccepted,
    ),
}

struct SubState {
    tx: mpsc::Sender<SubItem>,
    dropped: Arc<AtomicU64>,
    /// Subgroup streams the publisher reset: (group, §3.3.3 code).
    resets: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    alias: Option<u64>,
    ended_streams: u64,
    /// PUBLISH_DONE received: (end, stream count).
    done: Option<(SubscriptionEnd, u64)>,
}

impl SubState {
    fn deliver(&self, o: ReceivedObject) {
        if self.tx.try_send(SubItem::Object(o)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Publishing {
    alias: u64,
    open: HashSet<(u64, u64)>,
    streams: u64,
}

struct Driver {
    session: moqt::Session,
    conn: quinn::Connection,
    input_tx: mpsc::Sender<Input>,
    writers: HashMap<StreamRef, mpsc::Sender<WriteOp>>,
    stoppers: HashMap<StreamRef, oneshot::Sender<u64>>,
    unfinished: Arc<AtomicUsize>,
    shared: Arc<Shared>,
    ready: Option<oneshot::Sender<()>>,
    incoming: mpsc::Sender<IncomingSubscribe>,
    namespaces: mpsc::Sender<TrackNamespace>,
    pending: HashMap<RequestId, Pending>,
    subs: HashMap<RequestId, SubState>,
    alias_to_sub: HashMap<u64, RequestId>,
    orphans: VecDeque<Object>,
    orphan_ends: HashMap<u64, u64>,
    publishing: HashMap<RequestId, Publishing>,
    /// Close requested by the application: (flush time, reply).
    fin_close: Option<(Duration, oneshot::Sender<()>)>,
}

fn session_err(e: moqt::session::SessionError) -> anyhow::Error {
    anyhow!("{e}")
}

impl Driver {
    async fn run(mut self, mut ops: mpsc::Receiver<Op>, mut input: mpsc::Receiver<Input>) {
        loop {
            if self.pump().await {
                break;
            }
            tokio::select! {
                op = ops.recv() => match op {
                    Some(op) => self.on_op(op),
                    None => self.session.close(SessionErrorCode::NoError, "all handles dropped"),
                },
                i = input.recv() => match i {
                    Some(i) => self.on_input(i),
                    // Cannot happen: we hold a sender.
                    None => self.session.close(SessionErrorCode::InternalError, "input closed"),
                },
            }
        }
        // Wake every waiter; dropping the maps closes their channels.
        self.pending.clear();
        self.subs.clear();
        self.writers.clear();
        self.stoppers.clear();
    }

    /// Carry out commands and dispatch events; true once the session is over.
    async fn pump(&mut self) -> bool {
        loop {
            let mut moved = false;
            while let Some(cmd) = self.session.poll_command() {
                moved = true;
                self.command(cmd).await;
            }
            while let Some(ev) = self.session.poll_event() {
                moved = true;
                self.event(ev);
            }
            if !moved {
                return self.session.closed().is_some();
            }
        }
    }

    fn spawn_writer(&mut self, stream: StreamRef, bidi: bool) {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let opening = if bidi {
            let (stop_tx, stop_rx) = oneshot::channel();
            self.stoppers.insert(stream, stop_tx);
            Opening::Bi(stop_rx)
        } else {
            Opening::Uni
        };
        self.writers.insert(stream, tx);
        tokio::spawn(writer(
            self.conn.clone(),
            stream,
            opening,
            rx,
            self.input_tx.clone(),
        ));
    }

    fn spawn_reader(&mut self, stream: StreamRef, recv: quinn::RecvStream) {
        let (stop_tx, stop_rx) = oneshot::channel();
        self.stoppers.insert(stream, stop_tx);
        tokio::spawn(reader(stream, recv, stop_rx, self.input_tx.clone()));
    }

    async fn write_op(&mut self, stream: StreamRef, op: WriteOp, last: bool) {
        let tx = if last {
            self.writers.remove(&stream)
        } else {
            self.writers.get(&stream).cloned()
        };
        if let Some(tx) = tx {
            // A writer that is gone (stream stopped, connection lost) drops the op.
            let _ = tx.send(op).await;
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::OpenUni(s) => self.spawn_writer(s, false),
            Command::OpenBi(s) => self.spawn_writer(s, true),
            Command::Write { stream, data, fin } => {
                let guard = fin.then(|| FlushGuard::new(&self.unfinished));
                self.write_op(stream, WriteOp::Data(data, guard), fin).await
            }
            Command::Finish(s) => {
                let guard = FlushGuard::new(&self.unfinished);
                self.write_op(s, WriteOp::Finish(guard), true).await
            }
            Command::Reset { stream, code } => {
                self.write_op(stream, WriteOp::Reset(code.code()), true)
                    .await
            }
            Command::StopSending { stream, code } => {
                if let Some(tx) = self.stoppers.remove(&stream) {
                    let _ = tx.send(code.code());
                }
            }
            Command::SendDatagram(d) => {
                // Unreliable by nature; a failure (too large, unsupported) is a loss.
                let _ = self.conn.send_datagram(d);
            }
            Command::Close { code, reason } => {
                if let Some((flush, reply)) = self.fin_close.take() {
                    // Let finished data streams be acknowledged first.
                    let deadline = Instant::now() + flush;
                    while self.unfinished.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    let _ = reply.send(());
                }
                let code = quinn::VarInt::from_u64(code.code()).unwrap_or(quinn::VarInt::MAX);
                self.conn.close(code, reason.as_bytes());
            }
        }
    }

    fn record_closed(&mut self, code: SessionErrorCode, reason: &str, by_peer: bool) {
        if let Ok(mut c) = self.shared.closed.lock() {
            if c.is_none() {
                *c = Some(SessionClosed {
                    code,
                    reason: reason.to_string(),
                    by_peer,
                });
            }
        }
    }

    fn on_input(&mut self, i: Input) {
        // Errors mean the session is closed; its Closed event says why.
        let _ = match i {
            Input::Data { stream, data, fin } => {
                if fin {
                    self.stoppers.remove(&stream);
                }
                self.session.on_stream_data(stream, data, fin)
            }
            Input::Reset { stream, code } => {
                self.stoppers.remove(&stream);
                self.session.on_stream_reset(stream, code)
            }
            Input::Stopped { stream, code } => {
                self.writers.remove(&stream);
                self.session.on_stop_sending(stream, code)
            }
            Input::Uni(recv) => {
                let s = self.session.on_peer_stream(false);
                self.spawn_reader(s, recv);
                Ok(())
            }
            Input::Bi(send, recv) => {
                let s = self.session.on_peer_stream(true);
                self.spawn_reader(s, recv);
                let (tx, rx) = mpsc::channel(WRITE_QUEUE);
                self.writers.insert(s, tx);
                tokio::spawn(write_loop(send, s, rx, self.input_tx.clone()));
                Ok(())
            }
            Input::Datagram(d) => self.session.on_datagram(d),
            Input::ConnectionLost(e) => {
                let (code, reason) = match &e {
                    quinn::ConnectionError::ApplicationClosed(c) => (
                        c.error_code.into_inner(),
                        String::from_utf8_lossy(&c.reason).into_owned(),
                    ),
                    other => (SessionErrorCode::InternalError.code(), other.to_string()),
                };
                if !matches!(e, quinn::ConnectionError::LocallyClosed) {
                    self.record_closed(SessionErrorCode::from_code(code), &reason, true);
                }
                self.session.on_connection_closed(code, &reason);
                Ok(())
            }
            Input::Grace(id) => {
                self.finish_sub_if_done(id, true);
                Ok(())
            }
        };
    }

    fn new_sub(&mut self, id: RequestId) -> SubscribeAccepted {
        let (tx, rx) = mpsc::channel(OBJECT_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let resets = Arc::new(std::sync::Mutex::new(Vec::new()));
        self.subs.insert(
            id,
            SubState {
                tx,
                dropped: dropped.clone(),
                resets: resets.clone(),
                alias: None,
                ended_streams: 0,
                done: None,
            },
        );
        SubscribeAccepted {
            id,
            alias: None,
            largest: None,
            rx,
            dropped,
            resets,
        }
    }

    fn end_sub(&mut self, id: RequestId, end: SubscriptionEnd) {
        if let Some(s) = self.subs.remove(&id) {
            if let Some(a) = s.alias {
                self.alias_to_sub.remove(&a);
            }
            // If the queue is full the receiver still sees the channel close.
            let _ = s.tx.try_send(SubItem::End(end));
        }
    }

    fn finish_sub_if_done(&mut self, id: RequestId, force: bool) {
        let Some(s) = self.subs.get(&id) else {
            return;
        };
        let Some((end, count)) = &s.done else {
            return;
        };
        if force || (*count != STREAM_COUNT_UNKNOWN && s.ended_streams >= *count) {
            let end = end.clone();
            self.end_sub(id, end);
        }
    }

    fn fail_pending(&mut self, id: RequestId, err: anyhow::Error) {
        match self.pending.remove(&id) {
            Some(Pending::Subscribe(reply, _)) | Some(Pending::Fetch(reply, _)) => {
                self.subs.remove(&id);
                let _ = reply.send(Err(err));
            }
            Some(Pending::Namespace(reply)) => {
                let _ = reply.send(Err(err));
            }
            None => {}
        }
    }
}
