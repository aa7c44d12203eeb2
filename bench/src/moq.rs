//! A MoQT (draft-18) endpoint on quinn/tokio: one driver task runs a
//! sans-IO [`moqt::Session`] over a [`quinn::Connection`], for either role.
//!
//! # Tasks and channels (all bounded)
//!
//! * The **driver** task owns the `Session`. It receives application
//!   operations on a channel of [`OP_QUEUE`] entries and transport input on a
//!   channel of [`INPUT_QUEUE`] entries, and carries out the session's
//!   commands.
//! * One **writer** task per send stream (opened by the session's
//!   `OpenUni`/`OpenBi`), fed by a channel of [`WRITE_QUEUE`] operations;
//!   payloads are written with `write_chunk(Bytes)` untouched. The driver
//!   awaits room in that queue, so a stream the peer does not read
//!   back-pressures the application (and delays other input meanwhile).
//!   A peer STOP_SENDING is reported back to the session.
//! * One **reader** task per receive stream: `read_chunk` (zero-copy `Bytes`)
//!   into the input channel; a local STOP_SENDING reaches it on a oneshot.
//! * One **acceptor** task: incoming uni/bi streams, datagrams, and the
//!   connection's end.
//!
//! Towards the application: incoming SUBSCRIBEs queue up to
//! [`INCOMING_QUEUE`] (beyond: answered with REQUEST_ERROR EXCESSIVE_LOAD);
//! each subscription / fetch buffers [`OBJECT_QUEUE`] objects — when the
//! application does not keep up, further objects are dropped and counted
//! ([`Subscription::dropped`]) rather than stalling the whole session.
//! Objects arriving before their SUBSCRIBE_OK (another stream won the race)
//! are held, at most [`ORPHAN_OBJECTS`], and delivered once the alias is
//! known.
//!
//! Nothing here panics on peer input: the session closes on protocol
//! violations and the reason reaches every waiting call as a
//! [`SessionClosed`] error (downcast it from the `anyhow::Error`).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use moqt::session::{
    Command, Event, Object, OutgoingObject, PeerAbort, RequestId, Role, SessionConfig, StreamRef,
};
use moqt::{
    ControlMessage, DatagramContent, FetchType, FullTrackName, JoiningFetch, Location,
    ObjectDatagram, ObjectStatus, Parameters, PublishDone, PublishDoneCode, ReasonPhrase,
    RequestErrorCode, RequestOk, SessionErrorCode, StreamResetCode, SubscriptionFilter,
    TrackNamespace, STREAM_COUNT_UNKNOWN,
};
use tokio::sync::{mpsc, oneshot};

/// ALPN of MoQT draft-18 over raw QUIC.
pub const MOQT_ALPN: &[u8] = moqt::ALPN;

/// Application operations queued to the driver.
pub const OP_QUEUE: usize = 256;
/// Transport input (stream chunks, new streams, datagrams) queued to the driver.
pub const INPUT_QUEUE: usize = 1024;
/// Write operations queued per send stream.
pub const WRITE_QUEUE: usize = 64;
/// Incoming SUBSCRIBEs (and PUBLISH_NAMESPACEs) waiting for the application.
pub const INCOMING_QUEUE: usize = 64;
/// Objects buffered per subscription or fetch.
pub const OBJECT_QUEUE: usize = 4096;
/// Objects held for a Track Alias whose SUBSCRIBE_OK has not arrived yet.
pub const ORPHAN_OBJECTS: usize = 1024;
/// How long the SETUP exchange may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// After PUBLISH_DONE, how long to wait for the data streams it counts.
pub const PUBLISH_DONE_GRACE: Duration = Duration::from_secs(2);

/// The session ended; `code` is the MoQT termination code (§3.5), from
/// the peer's CONNECTION_CLOSE or from our own session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClosed {
    /// Termination code.
    pub code: SessionErrorCode,
    /// Reason phrase.
    pub reason: String,
    /// True if the peer (or the transport) closed it, false if we did.
    pub by_peer: bool,
}

impl fmt::Display for SessionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MoQT session closed by {} with code {:#x} ({:?}): {}",
            if self.by_peer { "peer" } else { "us" },
            self.code.code(),
            self.code,
            self.reason
        )
    }
}

impl std::error::Error for SessionClosed {}

/// A peer's SUBSCRIBE waiting for [`MoqSession::accept_subscribe`] or
/// [`MoqSession::reject_subscribe`].
#[derive(Clone, Debug)]
pub struct IncomingSubscribe {
    /// Its Request ID.
    pub id: RequestId,
    /// The track.
    pub track: FullTrackName,
    /// SUBSCRIPTION_FILTER, if given.
    pub filter: Option<SubscriptionFilter>,
    /// All its parameters.
    pub parameters: Parameters,
}

/// An object received on a subscription or fetch.
#[derive(Clone, Debug)]
pub struct ReceivedObject {
    /// Group ID.
    pub group: u64,
    /// Subgroup ID; `None` for datagrams (and datagram-preference fetch objects).
    pub subgroup: Option<u64>,
    /// Object ID.
    pub object_id: u64,
    /// Publisher Priority, if the header carried one.
    pub priority: Option<u8>,
    /// Object Status.
    pub status: ObjectStatus,
    /// Payload (a slice of the received bytes).
    pub payload: Bytes,
    /// True if it came in a datagram.
    pub datagram: bool,
    /// When the driver handed it on.
    pub received: Instant,
}

/// How a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// PUBLISH_DONE from the publisher.
    Done {
        /// Status code.
        code: PublishDoneCode,
        /// Reason.
        reason: String,
    },
    /// The peer cancelled the request stream.
    Cancelled(PeerAbort),
    /// The session ended.
    SessionClosed(SessionClosed),
}

enum SubItem {
    Object(ReceivedObject),
    End(SubscriptionEnd),
}

/// What the driver needs from the application.
enum Op {
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

struct SubscribeAccepted {
    id: RequestId,
    alias: Option<u64>,
    largest: Option<Location>,
    rx: mpsc::Receiver<SubItem>,
    dropped: Arc<AtomicU64>,
    resets: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
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

/// A handle on a running MoQT session; cheap to clone. The session closes
/// (NO_ERROR) when the last handle is dropped.
#[derive(Clone)]
pub struct MoqSession {
    ops: mpsc::Sender<Op>,
    shared: Arc<Shared>,
    incoming: Arc<tokio::sync::Mutex<mpsc::Receiver<IncomingSubscribe>>>,
    namespaces: Arc<tokio::sync::Mutex<mpsc::Receiver<TrackNamespace>>>,
    conn: quinn::Connection,
}

/// The client name used in the task brief.
pub type MoqClient = MoqSession;

struct Shared {
    closed: Mutex<Option<SessionClosed>>,
}

impl Shared {
    fn closed_error(&self) -> anyhow::Error {
        match self.closed.lock().ok().and_then(|c| c.clone()) {
            Some(c) => anyhow::Error::new(c),
            None => anyhow!("MoQT session driver is gone"),
        }
    }
}

impl MoqSession {
    /// Connect to `server_addr` with `endpoint` (whose client config must
    /// offer [`MOQT_ALPN`]) and run a client session; returns once the
    /// server's SETUP arrived.
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        server_addr: SocketAddr,
        server_name: &str,
    ) -> anyhow::Result<Self> {
        let conn = tokio::time::timeout(
            SETUP_TIMEOUT,
            endpoint
                .connect(server_addr, server_name)
                .with_context(|| format!("connecting to {server_addr}"))?,
        )
        .await
        .with_context(|| format!("QUIC handshake with {server_addr} timed out"))?
        .with_context(|| format!("QUIC handshake with {server_addr} failed"))?;
        Self::from_connection(conn, Role::Client).await
    }

    /// Run a session of `role` over an established connection; returns
    /// once the peer's SETUP arrived (within [`SETUP_TIMEOUT`]).
    pub async fn from_connection(conn: quinn::Connection, role: Role) -> anyhow::Result<Self> {
        let config = SessionConfig {
            setup: moqt::Setup {
                options: vec![moqt::SetupOption::MoqtImplementation(Bytes::from_static(
                    b"fastrelay-bench",
                ))],
            },
            ..SessionConfig::default()
        };
        Self::with_config(conn, role, config).await
    }

    /// [`MoqSession::from_connection`] with a session configuration.
    pub async fn with_config(
        conn: quinn::Connection,
        role: Role,
        config: SessionConfig,
    ) -> anyhow::Result<Self> {
        let (ops_tx, ops_rx) = mpsc::channel(OP_QUEUE);
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let (ns_tx, ns_rx) = mpsc::channel(INCOMING_QUEUE);
        let (ready_tx, ready_rx) = oneshot::channel();
        let shared = Arc::new(Shared {
            closed: Mutex::new(None),
        });
        tokio::spawn(acceptor(conn.clone(), input_tx.clone()));
        let driver = Driver {
            session: moqt::Session::new(role, config),
            conn: conn.clone(),
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
        let session = MoqSession {
            ops: ops_tx,
            shared,
            incoming: Arc::new(tokio::sync::Mutex::new(incoming_rx)),
            namespaces: Arc::new(tokio::sync::Mutex::new(ns_rx)),
            conn,
        };
        match tokio::time::timeout(SETUP_TIMEOUT, ready_rx).await {
            Ok(Ok(())) => Ok(session),
            Ok(Err(_)) => Err(session.shared.closed_error()).context("MoQT SETUP exchange"),
            Err(_) => {
                let _ = session.close().await;
                bail!("no SETUP from the peer within {SETUP_TIMEOUT:?}")
            }
        }
    }

    /// The QUIC connection (stats, addresses).
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Why the session ended, once it has.
    pub fn closed(&self) -> Option<SessionClosed> {
        self.shared.closed.lock().ok().and_then(|c| c.clone())
    }

    async fn call<T>(
        &self,
        what: &str,
        op: impl FnOnce(oneshot::Sender<T>) -> Op,
    ) -> anyhow::Result<T> {
        let (tx, rx) = oneshot::channel();
        if self.ops.send(op(tx)).await.is_err() {
            return Err(self.shared.closed_error()).context(what.to_string());
        }
        rx.await
            .map_err(|_| self.shared.closed_error())
            .context(what.to_string())
    }

    // ------------------------------------------------------------------
    // Publisher side
    // ------------------------------------------------------------------

    /// PUBLISH_NAMESPACE; waits for REQUEST_OK (or the REQUEST_ERROR as error).
    pub async fn publish_namespace(&self, namespace: TrackNamespace) -> anyhow::Result<()> {
        let what = format!("PUBLISH_NAMESPACE {}", namespace.to_serialized());
        self.call(&what, |reply| Op::PublishNamespace { namespace, reply })
            .await?
            .context(what)
    }

    /// The next SUBSCRIBE from the peer; `None` once the session ended.
    pub async fn next_subscribe(&self) -> Option<IncomingSubscribe> {
        self.incoming.lock().await.recv().await
    }

    /// The next PUBLISH_NAMESPACE from the peer (already answered with
    /// REQUEST_OK); `None` once the session ended. Unread ones beyond
    /// [`INCOMING_QUEUE`] are not reported (still accepted).
    pub async fn next_namespace(&self) -> Option<TrackNamespace> {
        self.namespaces.lock().await.recv().await
    }

    /// SUBSCRIBE_OK; returns the Track Alias to send objects with.
    /// `largest` is sent as LARGEST_OBJECT.
    pub async fn accept_subscribe(
        &self,
        id: RequestId,
        largest: Option<Location>,
    ) -> anyhow::Result<u64> {
        self.call("SUBSCRIBE_OK", |reply| Op::Accept { id, largest, reply })
            .await?
            .with_context(|| format!("SUBSCRIBE_OK for {id:?}"))
    }

    /// REQUEST_ERROR for a peer's SUBSCRIBE.
    pub async fn reject_subscribe(
        &self,
        id: RequestId,
        code: RequestErrorCode,
        reason: &str,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        self.call("REQUEST_ERROR", |reply| Op::Reject {
            id,
            code,
            reason,
            reply,
        })
        .await?
        .with_context(|| format!("REQUEST_ERROR for {id:?}"))
    }

    /// Send one object on the (alias, group, subgroup) stream, opened on
    /// first use. Fails if the subscription is gone (e.g. cancelled).
    pub async fn send_object(
        &self,
        alias: u64,
        group: u64,
        subgroup: u64,
        object_id: u64,
        priority: Option<u8>,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let object = OutgoingObject {
            track_alias: alias,
            location: Location {
                group,
                object: object_id,
            },
            subgroup,
            publisher_priority: priority,
            status: ObjectStatus::Normal,
            properties: Default::default(),
            payload,
        };
        self.call("send object", |reply| Op::SendObject { object, reply })
            .await?
            .with_context(|| format!("object {group}/{subgroup}/{object_id} on alias {alias}"))
    }

    /// FIN the (alias, group, subgroup) stream; false if it was not open.
    pub async fn end_subgroup(
        &self,
        alias: u64,
        group: u64,
        subgroup: u64,
    ) -> anyhow::Result<bool> {
        self.call("end subgroup", |reply| Op::EndSubgroup {
            alias,
            group,
            subgroup,
            reply,
        })
        .await
    }

    /// Send one object as an OBJECT_DATAGRAM.
    pub async fn send_datagram(
        &self,
        alias: u64,
        group: u64,
        object_id: u64,
        priority: Option<u8>,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        let datagram = ObjectDatagram {
            track_alias: alias,
            group_id: group,
            object_id,
            publisher_priority: priority,
            end_of_group: false,
            properties: Default::default(),
            content: DatagramContent::Payload(payload),
        };
        self.call("send datagram", |reply| Op::SendDatagram {
            datagram,
            reply,
        })
        .await?
        .with_context(|| format!("datagram {group}/{object_id} on alias {alias}"))
    }

    /// PUBLISH_DONE for a subscription we accepted; the stream count is
    /// the number of subgroup streams this session opened for it.
    pub async fn publish_done(
        &self,
        id: RequestId,
        code: PublishDoneCode,
        reason: &str,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        self.call("PUBLISH_DONE", |reply| Op::PublishDone {
            id,
            code,
            reason,
            reply,
        })
        .await?
        .with_context(|| format!("PUBLISH_DONE for {id:?}"))
    }

    // ------------------------------------------------------------------
    // Subscriber side
    // ------------------------------------------------------------------

    /// SUBSCRIBE; waits for SUBSCRIBE_OK, or returns the REQUEST_ERROR.
    pub async fn subscribe(
        &self,
        track: FullTrackName,
        filter: Option<SubscriptionFilter>,
    ) -> anyhow::Result<Subscription> {
        let parameters = Parameters {
            subscription_filter: filter,
            ..Parameters::new()
        };
        self.subscribe_with(track, parameters).await
    }

    /// SUBSCRIBE with arbitrary parameters.
    pub async fn subscribe_with(
        &self,
        track: FullTrackName,
        parameters: Parameters,
    ) -> anyhow::Result<Subscription> {
        let what = format!("SUBSCRIBE {}", track.to_serialized());
        let ok = self
            .call(&what, |reply| Op::Subscribe {
                track,
                parameters,
                reply,
            })
            .await?
            .context(what)?;
        Ok(Subscription::new(ok, self.clone()))
    }

    /// A Relative Joining FETCH (§10.12.2) for `subscription`: the
    /// `groups_before` groups preceding its joining location. Waits for
    /// FETCH_OK; the objects then arrive on the returned [`Subscription`]
    /// (ending when the fetch stream ends).
    pub async fn fetch_joining(
        &self,
        subscription: &Subscription,
        groups_before: u64,
    ) -> anyhow::Result<Subscription> {
        self.fetch_type(
            subscription.id,
            FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: subscription.id.0,
                joining_start: groups_before,
            }),
        )
        .await
    }

    /// An Absolute Joining FETCH for `subscription` from `start_group`.
    pub async fn fetch_joining_absolute(
        &self,
        subscription: &Subscription,
        start_group: u64,
    ) -> anyhow::Result<Subscription> {
        self.fetch_type(
            subscription.id,
            FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: subscription.id.0,
                joining_start: start_group,
            }),
        )
        .await
    }

    async fn fetch_type(
        &self,
        subscription: RequestId,
        fetch_type: FetchType,
    ) -> anyhow::Result<Subscription> {
        let ok = self
            .call("FETCH", |reply| Op::FetchJoining {
                subscription,
                fetch_type,
                reply,
            })
            .await?
            .context("joining FETCH")?;
        Ok(Subscription::new(ok, self.clone()))
    }

    /// Close the session with NO_ERROR, after waiting (up to 2 s) for the
    /// peer to acknowledge every finished data stream.
    pub async fn close(&self) -> anyhow::Result<()> {
        self.close_with(SessionErrorCode::NoError, "bye", Duration::from_secs(2))
            .await
    }

    /// Close with a code and reason; finished streams get up to `flush`
    /// to be acknowledged first.
    pub async fn close_with(
        &self,
        code: SessionErrorCode,
        reason: &str,
        flush: Duration,
    ) -> anyhow::Result<()> {
        let reason = reason.to_string();
        // A driver that is already gone means the session is closed: fine.
        let _ = self
            .call("close", |reply| Op::Close {
                code,
                reason,
                flush,
                reply,
            })
            .await;
        Ok(())
    }
}

/// A subscription (or joining fetch) of ours.
pub struct Subscription {
    id: RequestId,
    alias: Option<u64>,
    largest: Option<Location>,
    rx: mpsc::Receiver<SubItem>,
    end: Option<SubscriptionEnd>,
    dropped: Arc<AtomicU64>,
    resets: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    session: MoqSession,
}

impl fmt::Debug for MoqSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MoqSession")
            .field("remote", &self.conn.remote_address())
            .field("closed", &self.closed())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("alias", &self.alias)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    fn new(ok: SubscribeAccepted, session: MoqSession) -> Self {
        Subscription {
            id: ok.id,
            alias: ok.alias,
            largest: ok.largest,
            rx: ok.rx,
            end: None,
            dropped: ok.dropped,
            resets: ok.resets,
            session,
        }
    }

    /// Its Request ID.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The Track Alias from SUBSCRIBE_OK (`None` for a fetch).
    pub fn track_alias(&self) -> Option<u64> {
        self.alias
    }

    /// LARGEST_OBJECT from SUBSCRIBE_OK, if the publisher sent it.
    pub fn largest(&self) -> Option<Location> {
        self.largest
    }

    /// Objects dropped because this subscription's queue
    /// ([`OBJECT_QUEUE`]) was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subgroup streams of this subscription the publisher reset so far:
    /// (group, §3.3.3 code), in arrival order.
    pub fn resets(&self) -> Vec<(u64, u64)> {
        self.resets.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Why it ended, once [`Subscription::next_object`] returned `None`.
    pub fn end(&self) -> Option<&SubscriptionEnd> {
        self.end.as_ref()
    }

    /// The next object; `None` once PUBLISH_DONE (and the data streams it
    /// counts) arrived, the request ended or the session closed.
    pub async fn next_object(&mut self) -> Option<ReceivedObject> {
        if self.end.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(SubItem::Object(o)) => Some(o),
            Some(SubItem::End(e)) => {
                self.end = Some(e);
                None
            }
            None => {
                self.end = Some(SubscriptionEnd::SessionClosed(
                    self.session.closed().unwrap_or(SessionClosed {
                        code: SessionErrorCode::InternalError,
                        reason: "driver gone".into(),
                        by_peer: false,
                    }),
                ));
                None
            }
        }
    }

    /// Cancel (§3.3.2): reset and stop the request stream with CANCELLED.
    pub async fn cancel(mut self) {
        self.rx.close();
        let _ = self.session.ops.send(Op::Cancel { id: self.id }).await;
    }
}

// ----------------------------------------------------------------------
// Transport tasks
// ----------------------------------------------------------------------

async fn acceptor(conn: quinn::Connection, input: mpsc::Sender<Input>) {
    loop {
        let item = tokio::select! {
            s = conn.accept_uni() => s.map(Input::Uni),
            s = conn.accept_bi() => s.map(|(send, recv)| Input::Bi(send, recv)),
            d = conn.read_datagram() => d.map(Input::Datagram),
        };
        match item {
            Ok(item) => {
                if input.send(item).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = input.send(Input::ConnectionLost(e)).await;
                return;
            }
        }
    }
}

async fn reader(
    stream: StreamRef,
    mut recv: quinn::RecvStream,
    mut stop: oneshot::Receiver<u64>,
    input: mpsc::Sender<Input>,
) {
    loop {
        let chunk = tokio::select! {
            code = &mut stop => {
                if let Ok(code) = code {
                    let _ = recv.stop(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX));
                }
                return;
            }
            c = recv.read_chunk(usize::MAX, true) => c,
        };
        let item = match chunk {
            Ok(Some(c)) => Input::Data {
                stream,
                data: c.bytes,
                fin: false,
            },
            Ok(None) => Input::Data {
                stream,
                data: Bytes::new(),
                fin: true,
            },
            Err(quinn::ReadError::Reset(code)) => Input::Reset {
                stream,
                code: code.into_inner(),
            },
            // Connection loss arrives through the acceptor.
            Err(_) => return,
        };
        let last = !matches!(item, Input::Data { fin: false, .. });
        if input.send(item).await.is_err() || last {
            return;
        }
    }
}

enum Opening {
    Uni,
    Bi(oneshot::Receiver<u64>),
}

async fn writer(
    conn: quinn::Connection,
    stream: StreamRef,
    opening: Opening,
    ops: mpsc::Receiver<WriteOp>,
    input: mpsc::Sender<Input>,
) {
    let opened = match opening {
        Opening::Uni => conn.open_uni().await,
        Opening::Bi(stop) => conn.open_bi().await.map(|(send, recv)| {
            tokio::spawn(reader(stream, recv, stop, input.clone()));
            send
        }),
    };
    let Ok(send) = opened else {
        // Connection gone; the acceptor reports it.
        return;
    };
    write_loop(send, stream, ops, input).await
}

/// Held while a finished stream waits for the peer's acknowledgement, so
/// [`MoqSession::close`] can wait for the data to be delivered.
struct FlushGuard(Arc<AtomicUsize>);

impl FlushGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        FlushGuard(count.clone())
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn write_loop(
    mut send: quinn::SendStream,
    stream: StreamRef,
    mut ops: mpsc::Receiver<WriteOp>,
    input: mpsc::Sender<Input>,
) {
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let mut stop_code = None;
    loop {
        let op = tokio::select! {
            op = ops.recv() => op,
            r = &mut stopped => {
                if let Ok(Some(code)) = r {
                    stop_code = Some(code.into_inner());
                }
                break;
            }
        };
        let Some(op) = op else {
            // The driver forgot the stream (session over): drop it.
            return;
        };
        let (result, guard) = match op {
            WriteOp::Data(data, guard) => {
                let mut r = send.write_chunk(data).await;
                if guard.is_some() && r.is_ok() {
                    r = send.finish().map_err(|_| quinn::WriteError::ClosedStream);
                }
                (r, guard)
            }
            WriteOp::Finish(guard) => (
                send.finish().map_err(|_| quinn::WriteError::ClosedStream),
                Some(guard),
            ),
            WriteOp::Reset(code) => {
                let _ = send.reset(quinn::VarInt::from_u64(code).unwrap_or(quinn::VarInt::MAX));
                return;
            }
        };
        match result {
            Err(quinn::WriteError::Stopped(code)) => {
                stop_code = Some(code.into_inner());
                break;
            }
            Err(_) => break,
            Ok(()) => {
                if let Some(guard) = guard {
                    // Wait for the peer's acknowledgement so close() can flush.
                    ops.close();
                    let _ = stopped.await;
                    drop(guard);
                    return;
                }
            }
        }
    }
    // Stopped or failed: never block the driver on this queue again.
    ops.close();
    drop(ops);
    if let Some(code) = stop_code {
        let _ = input.send(Input::Stopped { stream, code }).await;
    }
}

// ----------------------------------------------------------------------
// Driver
// ----------------------------------------------------------------------

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

    fn on_op(&mut self, op: Op) {
        match op {
            Op::Subscribe {
                track,
                parameters,
                reply,
            } => match self.session.subscribe(track, parameters) {
                Ok(id) => {
                    let acc = self.new_sub(id);
                    self.pending.insert(id, Pending::Subscribe(reply, acc));
                }
                Err(e) => {
                    let _ = reply.send(Err(session_err(e)));
                }
            },
            Op::PublishNamespace { namespace, reply } => {
                match self.session.publish_namespace(namespace, Parameters::new()) {
                    Ok(id) => {
                        self.pending.insert(id, Pending::Namespace(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(session_err(e)));
                    }
                }
            }
            Op::FetchJoining {
                subscription,
                fetch_type,
                reply,
            } => {
                if !self.subs.contains_key(&subscription) {
                    let _ = reply.send(Err(anyhow!("subscription {subscription:?} is not active")));
                    return;
                }
                match self.session.fetch(fetch_type, Parameters::new()) {
                    Ok(id) => {
                        let acc = self.new_sub(id);
                        self.pending.insert(id, Pending::Fetch(reply, acc));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(session_err(e)));
                    }
                }
            }
            Op::Accept { id, largest, reply } => {
                let parameters = Parameters {
                    largest_object: largest,
                    ..Parameters::new()
                };
                let r = self
                    .session
                    .subscribe_ok(id, parameters, Default::default())
                    .map_err(session_err);
                if let Ok(alias) = r {
                    self.publishing.insert(
                        id,
                        Publishing {
                            alias,
                            open: HashSet::new(),
                            streams: 0,
                        },
                    );
                }
                let _ = reply.send(r);
            }
            Op::Reject {
                id,
                code,
                reason,
                reply,
            } => {
                let r = self.session.request_error(id, code, &reason);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::SendObject { object, reply } => {
                let key = (object.location.group, object.subgroup);
                let alias = object.track_alias;
                let r = self.session.send_object(object).map_err(session_err);
                if r.is_ok() {
                    if let Some(p) = self.publishing.values_mut().find(|p| p.alias == alias) {
                        if p.open.insert(key) {
                            p.streams += 1;
                        }
                    }
                }
                let _ = reply.send(r.map(|_| ()));
            }
            Op::EndSubgroup {
                alias,
                group,
                subgroup,
                reply,
            } => {
                if let Some(p) = self.publishing.values_mut().find(|p| p.alias == alias) {
                    p.open.remove(&(group, subgroup));
                }
                let _ = reply.send(self.session.end_subgroup(alias, group, subgroup));
            }
            Op::SendDatagram { datagram, reply } => {
                let r = self.session.send_datagram(&datagram);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::PublishDone {
                id,
                code,
                reason,
                reply,
            } => {
                let stream_count = match self.publishing.remove(&id) {
                    Some(p) => {
                        // Finish whatever subgroup streams are still open.
                        for (g, s) in p.open {
                            self.session.end_subgroup(p.alias, g, s);
                        }
                        p.streams
                    }
                    None => STREAM_COUNT_UNKNOWN,
                };
                let done = PublishDone {
                    status_code: code,
                    stream_count,
                    reason: ReasonPhrase::truncated(&reason),
                };
                let r = self.session.publish_done(id, done);
                let _ = reply.send(r.map_err(session_err));
            }
            Op::Cancel { id } => {
                self.pending.remove(&id);
                if let Some(s) = self.subs.remove(&id) {
                    if let Some(a) = s.alias {
                        self.alias_to_sub.remove(&a);
                    }
                }
                let _ = self.session.cancel(id, StreamResetCode::Cancelled);
            }
            Op::Close {
                code,
                reason,
                flush,
                reply,
            } => {
                if self.session.closed().is_some() {
                    let _ = reply.send(());
                    return;
                }
                self.record_closed(code, &reason, false);
                self.fin_close = Some((flush, reply));
                self.session.close(code, &reason);
            }
        }
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

    fn event(&mut self, ev: Event) {
        match ev {
            Event::Ready { .. } => {
                if let Some(r) = self.ready.take() {
                    let _ = r.send(());
                }
            }
            Event::Request { id, message } => self.on_request(id, message),
            Event::Message { id, message } => self.on_message(id, message),
            Event::PeerFinished { id } => {
                if self.pending.contains_key(&id) {
                    self.fail_pending(id, anyhow!("peer finished the request stream unanswered"));
                }
            }
            Event::RequestCancelled { id, abort } => {
                self.publishing.remove(&id);
                if self.pending.contains_key(&id) {
                    self.fail_pending(id, anyhow!("peer cancelled the request: {abort:?}"));
                } else {
                    self.end_sub(id, SubscriptionEnd::Cancelled(abort));
                }
            }
            Event::GoAway { .. } => {}
            Event::Object(o) => self.on_object(o),
            Event::SubgroupEnded {
                track_alias,
                group,
                abort,
                ..
            } => match self.alias_to_sub.get(&track_alias).copied() {
                Some(id) => {
                    if let Some(s) = self.subs.get_mut(&id) {
                        s.ended_streams += 1;
                        if let Some(code) = abort {
                            if let Ok(mut r) = s.resets.lock() {
                                r.push((group, code.code()));
                            }
                        }
                    }
                    self.finish_sub_if_done(id, false);
                }
                None if self.orphan_ends.len() < ORPHAN_OBJECTS => {
                    *self.orphan_ends.entry(track_alias).or_default() += 1;
                }
                None => {}
            },
            Event::SubgroupStopped {
                track_alias,
                group,
                subgroup,
                ..
            } => {
                if let Some(p) = self
                    .publishing
                    .values_mut()
                    .find(|p| p.alias == track_alias)
                {
                    p.open.remove(&(group, subgroup));
                }
            }
            Event::FetchObject { id, object } => {
                if let Some(s) = self.subs.get(&id) {
                    s.deliver(ReceivedObject {
                        group: object.location.group,
                        subgroup: object.subgroup_id,
                        object_id: object.location.object,
                        priority: Some(object.publisher_priority),
                        status: ObjectStatus::Normal,
                        payload: object.payload,
                        datagram: false,
                        received: Instant::now(),
                    });
                }
            }
            Event::FetchEndOfRange { .. } => {}
            Event::FetchEnded { id, abort } => {
                let end = match abort {
                    None => SubscriptionEnd::Done {
                        code: PublishDoneCode::SubscriptionEnded,
                        reason: "fetch stream finished".into(),
                    },
                    Some(code) => SubscriptionEnd::Cancelled(PeerAbort::Reset(code)),
                };
                self.end_sub(id, end);
                let _ = self.session.finish(id);
            }
            Event::Closed { code, reason } => {
                self.record_closed(code, &reason, false);
                let closed = self.shared.closed.lock().ok().and_then(|c| c.clone());
                let ids: Vec<_> = self.pending.keys().copied().collect();
                for id in ids {
                    let err = match &closed {
                        Some(c) => anyhow::Error::new(c.clone()),
                        None => anyhow!("session closed"),
                    };
                    self.fail_pending(id, err);
                }
                let ids: Vec<_> = self.subs.keys().copied().collect();
                for id in ids {
                    if let Some(c) = &closed {
                        self.end_sub(id, SubscriptionEnd::SessionClosed(c.clone()));
                    }
                }
                self.subs.clear();
            }
        }
    }

    fn on_request(&mut self, id: RequestId, message: ControlMessage) {
        match message {
            ControlMessage::Subscribe(s) => {
                let inc = IncomingSubscribe {
                    id,
                    track: s.track,
                    filter: s.parameters.subscription_filter,
                    parameters: s.parameters,
                };
                if self.incoming.try_send(inc).is_err() {
                    let _ = self.session.request_error(
                        id,
                        RequestErrorCode::ExcessiveLoad,
                        "subscription queue full",
                    );
                }
            }
            ControlMessage::PublishNamespace(p) => {
                let _ = self.session.request_ok(id, RequestOk::default());
                let _ = self.namespaces.try_send(p.namespace);
            }
            _ => {
                let _ = self.session.request_error(
                    id,
                    RequestErrorCode::NotSupported,
                    "not supported by this endpoint",
                );
            }
        }
    }

    fn on_message(&mut self, id: RequestId, message: ControlMessage) {
        match message {
            ControlMessage::SubscribeOk(ok) => {
                let Some(Pending::Subscribe(reply, mut acc)) = self.pending.remove(&id) else {
                    return;
                };
                let alias = ok.track_alias;
                acc.alias = Some(alias);
                acc.largest = ok.parameters.largest_object;
                if let Some(s) = self.subs.get_mut(&id) {
                    s.alias = Some(alias);
                    s.ended_streams = self.orphan_ends.remove(&alias).unwrap_or(0);
                }
                self.alias_to_sub.insert(alias, id);
                let _ = reply.send(Ok(acc));
                // Objects that overtook the SUBSCRIBE_OK.
                let orphans = std::mem::take(&mut self.orphans);
                for o in orphans {
                    if o.track_alias == alias {
                        self.on_object(o);
                    } else {
                        self.orphans.push_back(o);
                    }
                }
            }
            ControlMessage::FetchOk(_) => {
                if let Some(Pending::Fetch(reply, acc)) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(acc));
                }
            }
            ControlMessage::RequestOk(_) => {
                if let Some(Pending::Namespace(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(Ok(()));
                }
            }
            ControlMessage::RequestError(e) if self.pending.contains_key(&id) => {
                self.fail_pending(
                    id,
                    anyhow!(
                        "REQUEST_ERROR {:#x} ({:?}): {}",
                        e.error_code.code(),
                        e.error_code,
                        e.reason.to_string_lossy()
                    ),
                );
            }
            ControlMessage::PublishDone(d) => {
                if let Some(s) = self.subs.get_mut(&id) {
                    s.done = Some((
                        SubscriptionEnd::Done {
                            code: d.status_code,
                            reason: d.reason.to_string_lossy(),
                        },
                        d.stream_count,
                    ));
                    let input = self.input_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(PUBLISH_DONE_GRACE).await;
                        let _ = input.send(Input::Grace(id)).await;
                    });
                    self.finish_sub_if_done(id, false);
                }
                let _ = self.session.finish(id);
            }
            _ => {}
        }
    }

    fn on_object(&mut self, o: Object) {
        let Some(id) = self.alias_to_sub.get(&o.track_alias).copied() else {
            if self.orphans.len() >= ORPHAN_OBJECTS {
                self.orphans.pop_front();
            }
            self.orphans.push_back(o);
            return;
        };
        if let Some(s) = self.subs.get(&id) {
            s.deliver(ReceivedObject {
                group: o.location.group,
                subgroup: o.subgroup,
                object_id: o.location.object,
                priority: o.publisher_priority,
                status: o.status,
                payload: o.payload,
                datagram: o.stream.is_none(),
                received: Instant::now(),
            });
        }
    }
}

/// Parse "a/b/c" into a namespace (fields split on '/').
pub fn namespace_from_path(path: &str) -> anyhow::Result<TrackNamespace> {
    let fields: Vec<Bytes> = path
        .split('/')
        .filter(|f| !f.is_empty())
        .map(|f| Bytes::copy_from_slice(f.as_bytes()))
        .collect();
    TrackNamespace::new(fields).map_err(|e| anyhow!("invalid namespace {path:?}: {e}"))
}

/// Namespace path plus track name as a full track name.
pub fn track_name(namespace: &str, track: &str) -> anyhow::Result<FullTrackName> {
    FullTrackName::new(
        namespace_from_path(namespace)?,
        Bytes::copy_from_slice(track.as_bytes()),
    )
    .map_err(|e| anyhow!("invalid track name {namespace}/{track}: {e}"))
}

/// Smallest test payload: 8-byte timestamp and 8-byte checksum.
pub const TEST_PAYLOAD_HEADER: usize = 16;

/// FNV-1a 64 over `data`.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A test object payload of `size` bytes (at least
/// [`TEST_PAYLOAD_HEADER`]): the send time in ns since the UNIX epoch
/// (big-endian), FNV-1a 64 of the rest (big-endian), then filler derived
/// from (group, object).
pub fn test_payload(size: usize, group: u64, object: u64, sent_ns: u64) -> Bytes {
    let size = size.max(TEST_PAYLOAD_HEADER);
    let mut buf = vec![0u8; size];
    let mut x = (group << 32) ^ object ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in buf[TEST_PAYLOAD_HEADER..].chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let sum = fnv1a64(&buf[TEST_PAYLOAD_HEADER..]);
    buf[..8].copy_from_slice(&sent_ns.to_be_bytes());
    buf[8..16].copy_from_slice(&sum.to_be_bytes());
    buf.into()
}

/// Check a [`test_payload`]: `Some(sent_ns)` if the checksum matches,
/// `None` if it is too short or corrupt.
pub fn check_test_payload(payload: &[u8]) -> Option<u64> {
    if payload.len() < TEST_PAYLOAD_HEADER {
        return None;
    }
    let sent = u64::from_be_bytes(payload[..8].try_into().ok()?);
    let sum = u64::from_be_bytes(payload[8..16].try_into().ok()?);
    (fnv1a64(&payload[TEST_PAYLOAD_HEADER..]) == sum).then_some(sent)
}

/// Nanoseconds since the UNIX epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
