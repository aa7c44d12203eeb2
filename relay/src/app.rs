//! The relay on the worker loop: a [`dataplane::worker::Application`] that
//! runs one `moqt::Session` per QUIC connection (through [`SessionDriver`])
//! and connects every session to one [`Engine`].
//!
//! Session events become engine calls; engine actions become session calls
//! on the connections they name (reached through [`Connections`], so
//! forwarded objects leave in the same worker iteration). Payloads travel as
//! the same `Bytes` from the publisher's receive buffer to every
//! subscriber's `write_chunks`: no copy until each connection seals.
//!
//! The glue owns what is per connection and not the engine's business:
//! track aliases (the session assigns them), the send priority of each
//! subscription's streams (§7: subscriber priority, publisher priority,
//! group order), which become quinn-proto stream priorities, and what a
//! congested subscriber loses ([`crate::shed`]): after every pump of a
//! connection its backlog is checked against delivery timeouts and its
//! bound, per subscriber, never touching the publisher or other subscribers.
//!
//! In a group of workers ([`RelayApp::in_group`]), actions addressed to
//! another worker's pseudo-session go to [`crate::group`], and what other
//! workers queued for this one is taken every iteration
//! ([`Application::poll_external`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dataplane::worker::{Application, Connections};
use moqt::{
    session::{
        Event as SessionEvent, OutgoingObject, RequestId, SessionConfig, StreamFlags, StreamRef,
    },
    ControlMessage, DatagramContent, EndOfRange, EndOfRangeKind, FetchObject, FetchOk, FetchType,
    GroupOrder, Location, ObjectDatagram, Parameters, Properties, PublishDone, PublishDoneCode,
    ReasonPhrase, RequestErrorCode, RequestOk, RequestUpdate, StreamResetCode, SubscriptionFilter,
    TrackNamespace, DEFAULT_PUBLISHER_PRIORITY, DEFAULT_SUBSCRIBER_PRIORITY,
};
use quinn_proto::{Connection, ConnectionHandle, Event};
// For keys that are ours (connection handles, stream handles); maps keyed
// by what a peer chooses (request IDs) keep std's keyed hash.
use rustc_hash::FxHashMap;

use crate::{
    cache::CachedObject,
    crossworker::CrossWorkerCounters,
    directory::Published,
    engine::{self, Action, Engine, EngineConfig, FetchPlan, SessionId, TrackId},
    group::{Peers, RelayPart},
    priority::{stream_priority, Schedulable},
    quic::{server_driver, SessionDriver},
    shed::{self, Candidate, Reason, ShedConfig, ShedCounters},
};

/// ALPN of MoQT draft-18 over raw QUIC.
pub const MOQT_ALPN: &[u8] = moqt::ALPN;

/// How often connections with a backlog are checked without an event.
const BACKLOG_CHECK_PERIOD: Duration = Duration::from_millis(10);
/// How often one subscriber's shedding is logged at most.
const SHED_LOG_PERIOD: Duration = Duration::from_secs(1);
/// How often the shedding totals are published.
const REPORT_PERIOD: Duration = Duration::from_millis(100);
/// The clock is read on every this many worker iterations only.
const CLOCK_EVERY_POLLS: u64 = 16;

/// Groups behind the newest for which dropped subgroups are remembered
/// (their late objects are skipped); older ones cannot still be arriving.
const SHED_MEMORY_GROUPS: u64 = 64;

/// Data streams per subscription whose priority follows the newest group.
/// Older streams keep the priority they had: by then they are sent, or
/// so far behind that their relative order no longer matters.
const REPRIORITIZED_STREAMS: usize = 32;

/// Messages from other workers taken per iteration, so a flood of them
/// cannot starve this worker's own connections and timers.
const INGEST_BATCH: usize = 256;

/// One downstream subscription on this connection.
struct Subscription {
    /// Track alias the session assigned with SUBSCRIBE_OK.
    alias: Option<u64>,
    /// Subgroup streams opened, reported in PUBLISH_DONE.
    streams_opened: u64,
    subscriber_priority: u8,
    group_order: GroupOrder,
    newest_group: u64,
    /// Recently opened subgroup streams: (stream, publisher priority,
    /// group, subgroup) — what their rank is computed from.
    recent: VecDeque<(StreamRef, u8, u64, u64)>,
    /// The subscription's delivery timeout, if it gave one (§10.2.3-4).
    delivery_timeout: Option<Duration>,
    /// Subgroups given up on: (group, subgroup). Their later objects are
    /// not sent; delivery resumes with the next subgroup or group.
    dropped: HashSet<(u64, u64)>,
}

impl Subscription {
    fn new(parameters: &Parameters) -> Self {
        Self {
            alias: None,
            streams_opened: 0,
            subscriber_priority: parameters
                .subscriber_priority
                .unwrap_or(DEFAULT_SUBSCRIBER_PRIORITY),
            group_order: parameters.group_order.unwrap_or_default(),
            newest_group: 0,
            recent: VecDeque::new(),
            delivery_timeout: delivery_timeout(parameters),
            dropped: HashSet::new(),
        }
    }

    /// The quinn-proto priority of an object (or its stream) of this
    /// subscription: the draft's order, ranked against the newest group.
    fn priority(&self, publisher_priority: u8, group: u64, subgroup: u64) -> i32 {
        let s = Schedulable {
            subscriber_priority: self.subscriber_priority,
            publisher_priority,
            group,
            subgroup,
        };
        stream_priority(&s, self.group_order, self.newest_group)
    }

    /// Re-ranks the recent streams (after a new group or a priority update).
    fn reprioritize(&self, driver: &mut SessionDriver) {
        for &(stream, publisher_priority, group, subgroup) in &self.recent {
            driver.set_priority(stream, self.priority(publisher_priority, group, subgroup));
        }
    }
}

/// The tighter of the two delivery timeouts a request may carry; 0 means
/// "no timeout set" (§8), so the relay's own default applies.
fn delivery_timeout(p: &Parameters) -> Option<Duration> {
    tightest_ms([p.object_delivery_timeout, p.subgroup_delivery_timeout])
}

/// The tighter of the delivery timeouts a publisher gives as Track
/// Properties (§8); 0 or absent: none.
fn publisher_delivery_timeout(p: &Properties) -> Option<Duration> {
    tightest_ms(
        [p.object_delivery_timeout(), p.subgroup_delivery_timeout()].map(|t| t.ok().flatten()),
    )
}

/// The smallest of the given millisecond timeouts that are set (0 = not set).
fn tightest_ms(ms: [Option<u64>; 2]) -> Option<Duration> {
    ms.into_iter()
        .flatten()
        .filter(|ms| *ms > 0)
        .min()
        .map(Duration::from_millis)
}

/// Per-connection relay state.
struct Conn {
    driver: SessionDriver,
    downstream: HashMap<RequestId, Subscription>,
    /// Open subgroup streams: stream -> (subscription, group, subgroup).
    stream_owner: FxHashMap<StreamRef, (RequestId, u64, u64)>,
    /// What this subscriber lost, by reason.
    shed: ShedCounters,
    /// The best priority among this connection's waiting subgroup streams
    /// at the last check.
    best_waiting: Option<i32>,
    /// When this subscriber's shedding was last logged.
    last_shed_log: Option<Instant>,
    /// Reused by the backlog check (no allocation once warm).
    candidates: Vec<Candidate>,
    victims: Vec<(StreamRef, Reason)>,
    /// Upstream subscriptions (ours, or the peer's PUBLISH): request ->
    /// (track, alias once known).
    upstream: HashMap<RequestId, (TrackId, Option<u64>)>,
    /// Namespace subscriptions: request -> prefix.
    namespace_prefixes: HashMap<RequestId, TrackNamespace>,
    /// The peer's PUBLISH_NAMESPACE requests.
    published_namespaces: HashSet<RequestId>,
    /// Joining FETCHes waiting for their subscription's SUBSCRIBE_OK.
    pending_joins: Vec<PendingJoin>,
    /// Our PUBLISHes to this peer (SUBSCRIBE_TRACKS) awaiting PUBLISH_OK.
    offered: HashSet<RequestId>,
    /// The peer's SUBSCRIBE_TRACKS requests: request -> prefix.
    track_prefixes: HashMap<RequestId, TrackNamespace>,
}

impl Conn {
    fn new(session: SessionConfig) -> Self {
        Self {
            driver: server_driver(session),
            downstream: HashMap::new(),
            stream_owner: FxHashMap::default(),
            shed: ShedCounters::default(),
            best_waiting: None,
            last_shed_log: None,
            candidates: Vec::new(),
            victims: Vec::new(),
            upstream: HashMap::new(),
            namespace_prefixes: HashMap::new(),
            published_namespaces: HashSet::new(),
            pending_joins: Vec::new(),
            offered: HashSet::new(),
            track_prefixes: HashMap::new(),
        }
    }
}

/// What a worker's relay publishes for the control plane.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayReport {
    pub shed: ShedCounters,
    pub state: RelayState,
}

/// Counts of what a worker's relay holds ([`RelayApp::state`]): after
/// sessions end they fall back, so a leak shows as growth here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayState {
    pub connections: usize,
    /// The sessions' own state, summed.
    pub sessions: moqt::session::SessionFootprint,
    /// Streams with driver bookkeeping.
    pub transport_streams: usize,
    /// Downstream subscriptions the glue tracks.
    pub subscriptions: usize,
    /// Subgroup streams mapped to their subscription.
    pub stream_owners: usize,
    /// Bytes waiting for quinn-proto to take them (send backlog).
    pub send_pending_bytes: usize,
    pub engine: engine::EngineFootprint,
}

/// Counters of the glue (the engine has its own).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppStats {
    pub sessions_opened: u64,
    pub sessions_closed_by_violation: u64,
}

pub struct RelayApp {
    engine: Engine,
    conns: FxHashMap<ConnectionHandle, Conn>,
    shed_config: ShedConfig,
    /// Limits of each connection's session (buffers, object size).
    session_config: SessionConfig,
    /// Shedding of connections already closed.
    shed_closed: ShedCounters,
    /// Totals for the control plane, refreshed every [`REPORT_PERIOD`].
    report: Arc<Mutex<RelayReport>>,
    /// `poll_external` calls, to look at the clock only now and then.
    polls: u64,
    last_backlog_check: Instant,
    last_report: Instant,
    pub stats: AppStats,
    /// The other workers of the group; `None` for a worker on its own.
    peers: Option<Peers>,
}

fn sid(ch: ConnectionHandle) -> SessionId {
    SessionId(ch.0 as u64)
}

fn ch_of(s: SessionId) -> ConnectionHandle {
    ConnectionHandle(s.0 as usize)
}

impl RelayApp {
    /// The relay of a worker on its own.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            engine: Engine::new(config),
            conns: FxHashMap::default(),
            shed_config: ShedConfig::default(),
            session_config: SessionConfig::default(),
            shed_closed: ShedCounters::default(),
            report: Arc::default(),
            polls: 0,
            last_backlog_check: Instant::now(),
            last_report: Instant::now(),
            stats: AppStats::default(),
            peers: None,
        }
    }

    /// Sets the shedding policy's defaults (delivery timeout, backlog bound).
    pub fn set_shedding(&mut self, config: ShedConfig) {
        self.shed_config = config;
    }

    /// Sets the limits of the sessions of connections accepted from now on
    /// (receive buffers, largest object). The transport's connection
    /// receive window must equal `max_buffered_bytes`.
    pub fn set_session_config(&mut self, config: SessionConfig) {
        self.session_config = config;
    }

    /// Where the shedding totals are published for the control plane.
    pub fn report(&self) -> Arc<Mutex<RelayReport>> {
        self.report.clone()
    }

    fn publish_report(&mut self) {
        let report = RelayReport {
            shed: self.shed_counters(),
            state: self.state(),
        };
        if let Ok(mut r) = self.report.lock() {
            *r = report;
        }
    }

    /// What this worker's relay holds now, over all connections.
    pub fn state(&self) -> RelayState {
        let mut sessions = moqt::session::SessionFootprint::default();
        let (mut transport_streams, mut subscriptions, mut stream_owners, mut send_pending) =
            (0, 0, 0, 0);
        for c in self.conns.values() {
            sessions.add(&c.driver.session.footprint());
            transport_streams += c.driver.stream_count();
            subscriptions += c.downstream.len();
            stream_owners += c.stream_owner.len();
            send_pending += c.driver.pending_bytes();
        }
        RelayState {
            connections: self.conns.len(),
            sessions,
            transport_streams,
            subscriptions,
            stream_owners,
            send_pending_bytes: send_pending,
            engine: self.engine.footprint(),
        }
    }

    /// Every [`BACKLOG_CHECK_PERIOD`] (at the next iteration after it): the
    /// backlog check of every connection
    /// with data waiting, so delivery timeouts apply even to a subscriber
    /// that produces no events (a stalled link).
    fn check_backlogs(&mut self, conns: &mut Connections<'_>) -> bool {
        self.polls += 1;
        if !self.polls.is_multiple_of(CLOCK_EVERY_POLLS) {
            return false;
        }
        let now = Instant::now();
        if now.duration_since(self.last_report) >= REPORT_PERIOD {
            self.last_report = now;
            self.publish_report();
        }
        if now.duration_since(self.last_backlog_check) < BACKLOG_CHECK_PERIOD {
            return false;
        }
        self.last_backlog_check = now;
        self.engine.expire_waiting(now);
        if self.engine.has_actions() {
            self.run_actions(conns);
        }
        for (ch, state) in self.conns.iter_mut() {
            if state.driver.pending_bytes() == 0 {
                continue;
            }
            if let Some(conn) = conns.get_mut(*ch) {
                shed_backlog(state, conn, &self.shed_config);
                state.driver.apply_commands(conn);
            }
        }
        for (ch, state) in self.conns.iter_mut() {
            // Only a connection with something to reset is touched (and so
            // driven this iteration).
            if find_late_in_flight(state, &self.shed_config, now) {
                if let Some(conn) = conns.get_mut(*ch) {
                    drop_victims(state, conn);
                    state.driver.apply_commands(conn);
                }
            }
        }
        // Not "busy": a waiting backlog must not keep the worker spinning;
        // the next check comes with the next iteration after the period.
        false
    }

    /// What every subscriber, present and past, lost, by reason.
    pub fn shed_counters(&self) -> ShedCounters {
        let mut total = self.shed_closed;
        for c in self.conns.values() {
            total.add(&c.shed);
        }
        total
    }

    /// The relay of one worker of a group ([`crate::group::RelayGroup`]).
    pub fn in_group(config: EngineConfig, part: RelayPart) -> Self {
        Self {
            peers: (part.workers() > 1).then(|| Peers::new(part)),
            ..Self::new(config)
        }
    }

    /// Cross-worker counters (`None` for a worker on its own).
    pub fn cross_worker(&self) -> Option<CrossWorkerCounters> {
        self.peers.as_ref().map(Peers::counters)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Streams with driver bookkeeping over all connections (bounded by
    /// the streams actually in use, not by the streams ever opened).
    pub fn tracked_streams(&self) -> usize {
        self.conns.values().map(|c| c.driver.stream_count()).sum()
    }

    /// Applies the session's commands to the connection, then turns its
    /// events into engine calls.
    fn pump(&mut self, ch: ConnectionHandle, conn: &mut Connection) {
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
        };
        state.driver.apply_commands(conn);
        while let Some(ev) = state.driver.session.poll_event() {
            on_session_event(&mut self.engine, state, self.peers.as_ref(), ch, ev);
        }
        // Answers queued by the events (REQUEST_OK, REQUEST_ERROR) go out now.
        state.driver.apply_commands(conn);
        shed_backlog(state, conn, &self.shed_config);
        if state.driver.closed_with.take().is_some() {
            self.stats.sessions_closed_by_violation += 1;
        }
    }

    /// Carries out the engine's actions on the sessions they name.
    fn run_actions(&mut self, conns: &mut Connections<'_>) {
        while let Some(action) = self.engine.poll_action() {
            let target = match &action {
                Action::SubscribeOk { session, .. }
                | Action::PublishOk { session, .. }
                | Action::TrackStatusOk { session, .. }
                | Action::RequestError { session, .. }
                | Action::Namespace { session, .. }
                | Action::NamespaceDone { session, .. }
                | Action::PublishDone { session, .. }
                | Action::EndSubgroup { session, .. }
                | Action::OfferTrack { session, .. }
                | Action::PublishBlocked { session, .. }
                | Action::Object { session, .. } => *session,
                Action::SubscribeUpstream { publisher, .. }
                | Action::UnsubscribeUpstream { publisher, .. } => *publisher,
            };
            if let Some(worker) = target.worker_index() {
                if let Some(peers) = &mut self.peers {
                    peers.on_action(worker, action);
                }
                continue;
            }
            let ch = ch_of(target);
            let Some(state) = self.conns.get_mut(&ch) else {
                continue;
            };
            if let Action::OfferTrack {
                track,
                name,
                largest,
                properties,
                forward,
                ..
            } = action
            {
                offer_track(
                    &mut self.engine,
                    state,
                    target,
                    track,
                    name,
                    largest,
                    properties,
                    forward,
                );
                if let Some(conn) = conns.get_mut(ch) {
                    self.pump(ch, conn);
                }
                continue;
            }
            // A subscription answered (either way): joining FETCHes that
            // waited for it are served or refused now.
            let answered = match &action {
                Action::SubscribeOk { request, .. } | Action::RequestError { request, .. } => {
                    Some(request.0)
                }
                _ => None,
            };
            run_action(state, action, &self.shed_config);
            if let Some(joined) = answered {
                if state.pending_joins.iter().any(|j| j.joined == joined) {
                    let (ready, waiting) = std::mem::take(&mut state.pending_joins)
                        .into_iter()
                        .partition(|j| j.joined == joined);
                    state.pending_joins = waiting;
                    for j in ready {
                        serve_join(&self.engine, &mut state.driver, target, &j);
                    }
                }
            }
            if let Some(conn) = conns.get_mut(ch) {
                self.pump(ch, conn);
            }
        }
    }
}

fn on_session_event(
    engine: &mut Engine,
    state: &mut Conn,
    peers: Option<&Peers>,
    ch: ConnectionHandle,
    ev: SessionEvent,
) {
    let me = sid(ch);
    match ev {
        SessionEvent::Request { id, message } => on_request(engine, state, peers, me, id, message),
        SessionEvent::Message {
            id,
            message: ControlMessage::RequestUpdate(update),
        } => on_request_update(engine, state, me, id, update),
        SessionEvent::Message { id, message } if state.offered.contains(&id) => {
            // The answer to our PUBLISH of a pushed track (§10.19).
            state.offered.remove(&id);
            match message {
                ControlMessage::RequestOk(ok) | ControlMessage::PublishOk(ok) => {
                    let p = ok.parameters;
                    if let Some(sub) = state.downstream.get_mut(&id) {
                        if let Some(prio) = p.subscriber_priority {
                            sub.subscriber_priority = prio;
                        }
                        if let Some(order) = p.group_order {
                            sub.group_order = order;
                        }
                        if let Some(t) = delivery_timeout(&p) {
                            sub.delivery_timeout = Some(t);
                        }
                    }
                    let forward = p.forward.unwrap_or(true);
                    engine.offer_accepted(me, id, forward, p.subscription_filter);
                }
                _ => {
                    // REQUEST_ERROR: the subscriber does not want it.
                    state.downstream.remove(&id);
                    engine.unsubscribe(me, id);
                }
            }
        }
        SessionEvent::Message { id, message } => {
            let Some((track, _)) = state.upstream.get(&id).copied() else {
                return;
            };
            match message {
                ControlMessage::SubscribeOk(ok) => {
                    state.upstream.insert(id, (track, Some(ok.track_alias)));
                    let wanted = engine.upstream_subscribed(
                        track,
                        id,
                        ok.track_alias,
                        ok.parameters.largest_object,
                        ok.track_properties,
                    );
                    if !wanted {
                        state.upstream.remove(&id);
                        let _ = state.driver.session.cancel(id, StreamResetCode::Cancelled);
                    }
                }
                ControlMessage::RequestError(e) => {
                    tracing::debug!(
                        publisher = me.0,
                        code = ?e.error_code,
                        reason = ?e.reason,
                        "upstream SUBSCRIBE refused"
                    );
                    state.upstream.remove(&id);
                    engine.upstream_failed(track, e.error_code);
                }
                ControlMessage::PublishDone(d) => {
                    if let Some(peers) = peers {
                        peers.withdrawn(me, id);
                    }
                    if let Some((_, Some(alias))) = state.upstream.remove(&id) {
                        engine.upstream_done(me, alias, d.status_code);
                    }
                    // Our side of the request ends too (the publisher waits
                    // for it, and the session keeps the request until both
                    // sides are done).
                    let _ = state.driver.session.finish(id);
                }
                _ => {}
            }
        }
        SessionEvent::RequestCancelled { id, abort } => {
            tracing::debug!(
                session = me.0,
                request = id.0,
                ?abort,
                "request cancelled by the peer"
            );
            state.offered.remove(&id);
            if let Some(sub) = state.downstream.remove(&id) {
                if let Some(alias) = sub.alias {
                    // Nobody reads them any more: free the subscriber's
                    // stream credit at once.
                    state
                        .driver
                        .session
                        .reset_track_subgroups(alias, StreamResetCode::Cancelled);
                }
                engine.unsubscribe(me, id);
            } else if let Some((track, alias)) = state.upstream.remove(&id) {
                // The publisher cancelled our subscription (or its PUBLISH):
                // its track ends.
                if let Some(peers) = peers {
                    peers.withdrawn(me, id);
                }
                match alias {
                    Some(alias) => {
                        engine.upstream_done(me, alias, PublishDoneCode::SubscriptionEnded)
                    }
                    None => engine.upstream_failed(track, RequestErrorCode::InternalError),
                }
            } else if state.namespace_prefixes.remove(&id).is_some() {
                engine.unsubscribe_namespace(me, id);
            } else if state.track_prefixes.remove(&id).is_some() {
                engine.unsubscribe_tracks(me, id);
            } else if state.published_namespaces.remove(&id) {
                if let Some(peers) = peers {
                    peers.withdrawn(me, id);
                }
                engine.withdraw_namespace(me, id);
            }
            // Otherwise a FETCH or TRACK_STATUS: nothing is held for it but
            // a joining FETCH still waiting (an answer still to come for a
            // TRACK_STATUS finds no request).
            state.pending_joins.retain(|j| j.fetch != id);
        }
        SessionEvent::Object(o) => {
            let object = CachedObject {
                location: o.location,
                subgroup: o.subgroup.unwrap_or(0),
                datagram: o.subgroup.is_none(),
                publisher_priority: o.publisher_priority.unwrap_or(DEFAULT_PUBLISHER_PRIORITY),
                explicit_priority: o.publisher_priority.is_some(),
                end_of_group: o.end_of_group,
                first_object: o.first_object,
                status: o.status,
                properties: o.properties,
                payload: o.payload,
                part: o.part,
            };
            engine.object(me, o.track_alias, object);
        }
        SessionEvent::SubgroupEnded {
            track_alias,
            group,
            subgroup: Some(subgroup),
            abort,
            ..
        } => {
            engine.subgroup_ended(me, track_alias, group, subgroup, abort);
        }
        SessionEvent::Closed { .. } => {
            if let Some(peers) = peers {
                peers.session_gone(me);
            }
            engine.session_closed(me)
        }
        _ => {}
    }
}

/// The first message of a request stream from the peer.
fn on_request(
    engine: &mut Engine,
    state: &mut Conn,
    peers: Option<&Peers>,
    me: SessionId,
    id: RequestId,
    message: ControlMessage,
) {
    let session = &mut state.driver.session;
    match message {
        ControlMessage::Subscribe(s) => {
            state
                .downstream
                .insert(id, Subscription::new(&s.parameters));
            let rendezvous =
                engine.rendezvous_deadline(Instant::now(), s.parameters.rendezvous_timeout);
            engine.subscribe_or_wait(
                me,
                id,
                s.track,
                s.parameters.subscription_filter,
                rendezvous,
            );
            if s.parameters.forward == Some(false) {
                engine.set_forward(me, id, false);
            }
        }
        ControlMessage::Publish(p) => {
            // Only a worker in a group needs the name afterwards.
            let name = peers.map(|_| p.track.clone());
            if let Some(track) = engine.publish(
                me,
                id,
                p.track,
                p.track_alias,
                p.parameters.largest_object,
                p.track_properties,
            ) {
                state.upstream.insert(id, (track, Some(p.track_alias)));
                if let (Some(peers), Some(name)) = (peers, name) {
                    peers.published(me, id, Published::Track(name));
                }
            }
        }
        ControlMessage::TrackStatus(t) => engine.track_status(me, id, t.track),
        ControlMessage::PublishNamespace(p) => {
            if session.request_ok(id, RequestOk::default()).is_ok() {
                state.published_namespaces.insert(id);
                if let Some(peers) = peers {
                    peers.published(me, id, Published::Namespace(p.namespace.clone()));
                }
                engine.publish_namespace(me, id, p.namespace);
            }
        }
        ControlMessage::SubscribeNamespace(p) => {
            if accept_prefix(session, id, &state.namespace_prefixes, &p.prefix) {
                state.namespace_prefixes.insert(id, p.prefix.clone());
                engine.subscribe_namespace(me, id, p.prefix);
            }
        }
        ControlMessage::Fetch(f) => {
            let order = f.parameters.group_order.unwrap_or_default();
            let subscriber_priority = f
                .parameters
                .subscriber_priority
                .unwrap_or(DEFAULT_SUBSCRIBER_PRIORITY);
            let join = match f.fetch_type {
                FetchType::Standalone(s) => {
                    let plan = engine.fetch_standalone(me, &s.track, s.start, s.end, order);
                    return answer_fetch(&mut state.driver, id, plan, order, subscriber_priority);
                }
                FetchType::RelativeJoining(j) => PendingJoin {
                    fetch: id,
                    joined: j.joining_request_id,
                    start: j.joining_start,
                    relative: true,
                    order,
                    subscriber_priority,
                },
                FetchType::AbsoluteJoining(j) => PendingJoin {
                    fetch: id,
                    joined: j.joining_request_id,
                    start: j.joining_start,
                    relative: false,
                    order,
                    subscriber_priority,
                },
            };
            if engine.is_pending(me, RequestId(join.joined)) {
                // §10.12.2: the subscription may still be Pending (the
                // relay waits for its upstream): served once it is
                // established, refused if it is not.
                state.pending_joins.push(join);
            } else {
                serve_join(engine, &mut state.driver, me, &join);
            }
        }
        ControlMessage::SubscribeTracks(p) => {
            if accept_prefix(session, id, &state.track_prefixes, &p.prefix) {
                state.track_prefixes.insert(id, p.prefix.clone());
                let forward = p.parameters.forward.unwrap_or(true);
                engine.subscribe_tracks(me, id, p.prefix, forward);
            }
        }
        _ => {
            let _ = session.request_error(
                id,
                RequestErrorCode::NotSupported,
                "not supported by this relay",
            );
        }
    }
}

/// REQUEST_UPDATE on one of the peer's requests (§10.9).
fn on_request_update(
    engine: &mut Engine,
    state: &mut Conn,
    me: SessionId,
    id: RequestId,
    update: RequestUpdate,
) {
    let params = update.parameters;
    let session = &mut state.driver.session;
    if let Some(sub) = state.downstream.get_mut(&id) {
        let mut largest = engine.largest_for(me, id);
        if let Some(filter) = params.subscription_filter {
            match engine.update_filter(me, id, filter) {
                Some(l) => largest = l,
                None => {
                    // §10.9.1: a failed update ends the subscription, with
                    // PUBLISH_DONE (UPDATE_FAILED) once it was accepted.
                    let _ = session.request_error(
                        id,
                        RequestErrorCode::InternalError,
                        "no such subscription",
                    );
                    if sub.alias.is_some() {
                        end_subscription(session, id, Some(sub), PublishDoneCode::UpdateFailed);
                    }
                    state.downstream.remove(&id);
                    engine.unsubscribe(me, id);
                    return;
                }
            }
        }
        if let Some(forward) = params.forward {
            engine.set_forward(me, id, forward);
            if let (false, Some(alias)) = (forward, sub.alias) {
                // Forward 0: no more objects, so no stream stays open.
                session.reset_track_subgroups(alias, StreamResetCode::Cancelled);
            }
        }
        let mut rerank = false;
        if let Some(p) = params.subscriber_priority {
            rerank |= p != sub.subscriber_priority;
            sub.subscriber_priority = p;
        }
        if let Some(order) = params.group_order {
            rerank |= order != sub.group_order;
            sub.group_order = order;
        }
        if let Some(timeout) = delivery_timeout(&params) {
            sub.delivery_timeout = Some(timeout);
        }
        if rerank {
            sub.reprioritize(&mut state.driver);
        }
        let ok = RequestOk {
            parameters: Parameters {
                largest_object: largest,
                ..Parameters::default()
            },
            track_properties: Properties::new(),
        };
        let _ = state.driver.session.request_ok(id, ok);
    } else if let Some(current) = state.namespace_prefixes.get_mut(&id) {
        // REQUEST_OK first: later NAMESPACE messages use the new prefix.
        let _ = session.request_ok(id, RequestOk::default());
        if let Some(prefix) = params.track_namespace_prefix {
            *current = prefix.clone();
            engine.update_namespace_prefix(me, id, prefix);
        }
    } else if state.published_namespaces.contains(&id) || state.upstream.contains_key(&id) {
        // Nothing of a PUBLISH_NAMESPACE or PUBLISH that the relay acts on.
        let _ = session.request_ok(id, RequestOk::default());
    } else {
        let _ = session.request_error(
            id,
            RequestErrorCode::NotSupported,
            "nothing to update on this request",
        );
    }
}

/// Answers a SUBSCRIBE_NAMESPACE or SUBSCRIBE_TRACKS: REQUEST_OK, or
/// PREFIX_OVERLAP when its prefix overlaps one of `existing` (the same
/// session's requests of that kind, §10.18, §10.19). Whether accepted.
fn accept_prefix(
    session: &mut moqt::session::Session,
    id: RequestId,
    existing: &HashMap<RequestId, TrackNamespace>,
    prefix: &TrackNamespace,
) -> bool {
    let overlaps = existing
        .values()
        .any(|q| q.starts_with(prefix) || prefix.starts_with(q));
    if overlaps {
        let _ = session.request_error(
            id,
            RequestErrorCode::PrefixOverlap,
            "overlaps a subscription of this session with the same role",
        );
        return false;
    }
    session.request_ok(id, RequestOk::default()).is_ok()
}

/// A joining FETCH waiting for its subscription to be established.
struct PendingJoin {
    fetch: RequestId,
    joined: u64,
    start: u64,
    relative: bool,
    order: GroupOrder,
    subscriber_priority: u8,
}

fn serve_join(engine: &Engine, driver: &mut SessionDriver, me: SessionId, j: &PendingJoin) {
    let plan = engine.fetch_joining(me, RequestId(j.joined), j.start, j.relative, j.order);
    answer_fetch(driver, j.fetch, plan, j.order, j.subscriber_priority);
}

fn answer_fetch(
    driver: &mut SessionDriver,
    id: RequestId,
    plan: Result<FetchPlan, engine::Refusal>,
    order: GroupOrder,
    subscriber_priority: u8,
) {
    match plan {
        Ok(plan) => serve_fetch(driver, id, plan, order, subscriber_priority),
        Err((code, reason)) => {
            let _ = driver.session.request_error(id, code, reason);
        }
    }
}

/// Answers a FETCH from the cache: FETCH_OK, then one fetch stream with the
/// objects (and an End of Unknown Range marker for what the relay never had
/// or evicted), then FIN.
fn serve_fetch(
    driver: &mut SessionDriver,
    id: RequestId,
    plan: FetchPlan,
    order: GroupOrder,
    subscriber_priority: u8,
) {
    let session = &mut driver.session;
    let ok = FetchOk {
        end_of_track: false,
        // The request's encoding: last object plus one, object 0 for a whole group.
        end_location: match plan.end.object {
            u64::MAX => Location::new(plan.end.group, 0),
            last => Location::new(plan.end.group, last + 1),
        },
        parameters: Parameters::default(),
        track_properties: plan.properties.clone(),
    };
    if session.fetch_ok(id, ok).is_err() {
        return;
    }
    let Ok(stream) = session.open_fetch_stream(id) else {
        return;
    };
    // Past data for this subscriber: ranked as its oldest group would be.
    let first_group = plan
        .objects
        .first()
        .map_or(plan.end.group, |o| o.location.group);
    let rank = Schedulable {
        subscriber_priority,
        publisher_priority: DEFAULT_PUBLISHER_PRIORITY,
        group: first_group,
        subgroup: 0,
    };
    // Ascending: the unknown (older) part comes first, up to its last
    // location; descending: last, down to its first.
    let unknown = plan.unknown_through.map(|through| EndOfRange {
        kind: EndOfRangeKind::Unknown,
        location: match order {
            GroupOrder::Descending => plan.start,
            _ => through,
        },
    });
    let mut result = Ok(());
    if let (Some(end), GroupOrder::Ascending) = (unknown, order) {
        result = session.send_fetch_end_of_range(id, end);
    }
    let mut prev: Option<Location> = None;
    for o in plan.objects {
        if result.is_err() {
            break;
        }
        // A hole between cached objects of one group: the relay never had
        // those objects, so they are unknown, not absent (§11.4.4.2).
        if let Some(p) = prev {
            if p.group == o.location.group && o.location.object > p.object + 1 {
                let hole = EndOfRange {
                    kind: EndOfRangeKind::Unknown,
                    location: Location::new(p.group, o.location.object - 1),
                };
                result = session.send_fetch_end_of_range(id, hole);
                if result.is_err() {
                    break;
                }
            }
        }
        prev = Some(o.location);
        result = session.send_fetch_object(
            id,
            FetchObject {
                location: o.location,
                subgroup_id: (!o.datagram).then_some(o.subgroup),
                publisher_priority: o.publisher_priority,
                properties: o.properties,
                payload: o.payload,
            },
        );
    }
    if let (Some(end), GroupOrder::Descending, Ok(())) = (unknown, order, &result) {
        result = session.send_fetch_end_of_range(id, end);
    }
    if result.is_ok() {
        let _ = session.finish_fetch(id);
    }
    driver.set_priority(
        stream,
        stream_priority(&rank, GroupOrder::Ascending, plan.end.group),
    );
}

fn run_action(state: &mut Conn, action: Action, shed: &ShedConfig) {
    let session = &mut state.driver.session;
    match action {
        Action::SubscribeOk {
            request,
            largest,
            properties,
            ..
        } => {
            let params = Parameters {
                largest_object: largest,
                ..Parameters::default()
            };
            let publisher_timeout = publisher_delivery_timeout(&properties);
            if let Ok(alias) = session.subscribe_ok(request, params, properties) {
                let sub = state
                    .downstream
                    .entry(request)
                    .or_insert_with(|| Subscription::new(&Parameters::default()));
                sub.alias = Some(alias);
                // §8: of the publisher's and the subscriber's timeouts,
                // the smaller non-zero one applies.
                sub.delivery_timeout = [sub.delivery_timeout, publisher_timeout]
                    .into_iter()
                    .flatten()
                    .min();
                sub.newest_group = largest.map_or(0, |l| l.group);
            }
        }
        Action::PublishOk { request, .. } => {
            // Forward 1: objects flow (and fill the cache) at once.
            let ok = RequestOk {
                parameters: Parameters {
                    forward: Some(true),
                    ..Parameters::default()
                },
                track_properties: Properties::new(),
            };
            let _ = session.request_ok(request, ok);
        }
        Action::TrackStatusOk {
            request,
            largest,
            properties,
            ..
        } => {
            let ok = RequestOk {
                parameters: Parameters {
                    largest_object: largest,
                    ..Parameters::default()
                },
                track_properties: properties,
            };
            if session.request_ok(request, ok).is_ok() {
                // §10.14: the stream ends after TRACK_STATUS_OK.
                let _ = session.finish(request);
            }
        }
        Action::RequestError {
            request,
            code,
            reason,
            ..
        } => {
            tracing::debug!(request = request.0, ?code, reason, "request refused");
            state.downstream.remove(&request);
            let _ = session.request_error(request, code, reason);
        }
        Action::SubscribeUpstream { track, name, .. } => {
            let params = Parameters {
                forward: Some(true),
                subscription_filter: Some(SubscriptionFilter::LargestObject),
                ..Parameters::default()
            };
            if let Ok(id) = session.subscribe(name, params) {
                state.upstream.insert(id, (track, None));
            }
        }
        Action::UnsubscribeUpstream { request, .. } => {
            state.upstream.remove(&request);
            let _ = session.cancel(request, StreamResetCode::Cancelled);
        }
        Action::Namespace {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace(request, suffix);
            }
        }
        Action::NamespaceDone {
            request, namespace, ..
        } => {
            if let Some(suffix) = namespace_suffix(&state.namespace_prefixes, request, &namespace) {
                let _ = session.namespace_done(request, suffix);
            }
        }
        Action::PublishDone { request, code, .. } => {
            let sub = state.downstream.remove(&request);
            end_subscription(session, request, sub.as_ref(), code);
        }
        Action::EndSubgroup {
            request,
            group,
            subgroup,
            reset,
            ..
        } => {
            if let Some(sub) = state.downstream.get_mut(&request) {
                if let Some(alias) = sub.alias {
                    match reset {
                        None => {
                            session.end_subgroup(alias, group, subgroup);
                        }
                        // The upstream reset: so does every copy (§11.4.3),
                        // and nothing more of the subgroup goes out.
                        Some(code) => {
                            session.reset_subgroup(alias, group, subgroup, code);
                            sub.dropped.insert((group, subgroup));
                        }
                    }
                }
            }
        }
        Action::Object {
            request, object, ..
        } => send_object(state, request, object, shed),
        // Needs the engine: carried out by `run_actions` itself.
        Action::OfferTrack { .. } => {}
        Action::PublishBlocked {
            request,
            prefix,
            name,
            ..
        } => {
            // The track's namespace after the SUBSCRIBE_TRACKS prefix.
            let suffix = name.namespace().strip_prefix(&prefix);
            let track =
                suffix.and_then(|ns| moqt::FullTrackName::new(ns, name.name().clone()).ok());
            if let Some(track) = track {
                let blocked =
                    ControlMessage::PublishBlocked(moqt::message::PublishBlocked { track });
                let _ = session.send_message(request, blocked, false);
            }
        }
    }
}

/// Ends a downstream subscription: its open subgroup streams are reset
/// first (§10.11: no PUBLISH_DONE while they are open), then PUBLISH_DONE
/// with the number of streams it opened.
fn end_subscription(
    session: &mut moqt::session::Session,
    id: RequestId,
    sub: Option<&Subscription>,
    code: PublishDoneCode,
) {
    if let Some(alias) = sub.and_then(|s| s.alias) {
        session.reset_track_subgroups(alias, StreamResetCode::Cancelled);
    }
    let done = PublishDone {
        status_code: code,
        stream_count: sub.map_or(0, |s| s.streams_opened),
        reason: ReasonPhrase::default(),
    };
    let _ = session.publish_done(id, done);
}

/// PUBLISH of a pushed track to a SUBSCRIBE_TRACKS subscriber (§10.19):
/// a downstream subscription of ours that objects follow after PUBLISH_OK.
#[allow(clippy::too_many_arguments)]
fn offer_track(
    engine: &mut Engine,
    state: &mut Conn,
    me: SessionId,
    track: TrackId,
    name: moqt::FullTrackName,
    largest: Option<Location>,
    properties: Properties,
    forward: bool,
) {
    let params = Parameters {
        largest_object: largest,
        forward: Some(forward),
        ..Parameters::default()
    };
    match state.driver.session.publish(name, params, properties) {
        Ok((id, alias)) => {
            let mut sub = Subscription::new(&Parameters::default());
            sub.alias = Some(alias);
            sub.newest_group = largest.map_or(0, |l| l.group);
            state.downstream.insert(id, sub);
            state.offered.insert(id);
            engine.offered(me, id, track);
        }
        Err(e) => tracing::debug!(error = %e, "PUBLISH to a track subscriber not sent"),
    }
}

/// One object to one subscriber: a datagram stays a datagram (§11.3);
/// anything else goes on the subscriber's copy of its subgroup stream,
/// whose priority is set when it opens.
fn send_object(state: &mut Conn, request: RequestId, object: CachedObject, shed: &ShedConfig) {
    let Some(sub) = state.downstream.get_mut(&request) else {
        return;
    };
    let Some(alias) = sub.alias else {
        return;
    };
    let driver = &mut state.driver;
    if object.datagram {
        // Datagrams rank by object ID where streams rank by subgroup.
        let priority = sub.priority(
            object.publisher_priority,
            object.location.group,
            object.location.object,
        );
        if shed::datagram_yields(
            priority,
            driver.pending_bytes(),
            state.best_waiting,
            shed.max_backlog_bytes,
        ) {
            state.shed.datagrams_dropped += 1;
            return;
        }
        let content = if object.status == moqt::ObjectStatus::Normal {
            DatagramContent::Payload(object.payload)
        } else {
            DatagramContent::Status(object.status)
        };
        let datagram = ObjectDatagram {
            track_alias: alias,
            group_id: object.location.group,
            object_id: object.location.object,
            publisher_priority: object
                .explicit_priority
                .then_some(object.publisher_priority),
            end_of_group: object.end_of_group,
            properties: object.properties,
            content,
        };
        let _ = driver.session.send_datagram(&datagram);
        return;
    }
    if sub
        .dropped
        .contains(&(object.location.group, object.subgroup))
    {
        // The rest of a subgroup given up on: the subscriber was told by
        // the stream reset; it resumes with the next subgroup or group.
        state.shed.objects_skipped += 1;
        return;
    }
    let (publisher_priority, group, subgroup) = (
        object.publisher_priority,
        object.location.group,
        object.subgroup,
    );
    let newer_group = object.location.group > sub.newest_group;
    let out = OutgoingObject {
        track_alias: alias,
        location: object.location,
        subgroup: object.subgroup,
        publisher_priority: object
            .explicit_priority
            .then_some(object.publisher_priority),
        status: object.status,
        properties: object.properties,
        payload: object.payload,
    };
    // The upstream stream's header bits, for the stream this may open.
    let flags = StreamFlags {
        end_of_group: object.end_of_group,
        first_object: object.first_object,
    };
    let sent = match object.part {
        None => driver.session.send_object_flagged(out, flags),
        Some(part) => driver.session.send_object_part(out, part, flags),
    };
    let Ok(stream) = sent else {
        // An object that cannot go on its stream (a part of it was lost on
        // the way from another worker, or this subscription started in
        // its middle): if the stream is open it can only be reset, and the
        // rest of the subgroup is skipped like a shed one.
        if driver
            .session
            .reset_subgroup(alias, group, subgroup, StreamResetCode::InternalError)
        {
            sub.dropped.insert((group, subgroup));
        }
        return;
    };
    if newer_group {
        // Group ranks are relative to the newest group: re-rank the others.
        sub.newest_group = object.location.group;
        sub.reprioritize(driver);
        let newest = sub.newest_group;
        sub.dropped
            .retain(|(g, _)| g.saturating_add(SHED_MEMORY_GROUPS) >= newest);
    }
    // A stream the driver does not know yet was opened for this object
    // (its OpenUni is still queued).
    if !driver.knows_stream(stream) {
        sub.streams_opened += 1;
        if sub.recent.len() == REPRIORITIZED_STREAMS {
            sub.recent.pop_front();
        }
        sub.recent
            .push_back((stream, publisher_priority, group, subgroup));
        driver.set_priority(stream, sub.priority(publisher_priority, group, subgroup));
        state
            .stream_owner
            .insert(stream, (request, group, subgroup));
    }
}

/// The delivery timeout for data already handed to quinn-proto: a subgroup
/// of a past group (the subscription has moved on to a newer one) whose
/// first byte was queued longer ago than the timeout and that is still not
/// acknowledged would only arrive late (it waits behind higher priorities
/// or for retransmission): it is reset with DELIVERY_TIMEOUT too. The live
/// group's stream is left alone (its age is that of the group, not of its
/// newest objects). Puts them in `state.victims`; returns whether any.
fn find_late_in_flight(state: &mut Conn, config: &ShedConfig, now: Instant) -> bool {
    state.victims.clear();
    for (stream, born) in state.driver.unacknowledged() {
        let Some(&(request, group, _)) = state.stream_owner.get(&stream) else {
            continue;
        };
        let Some(sub) = state.downstream.get(&request) else {
            continue;
        };
        let timeout = sub.delivery_timeout.unwrap_or(config.delivery_timeout);
        if group < sub.newest_group && now.saturating_duration_since(born) > timeout {
            state.victims.push((stream, Reason::DeliveryTimeout));
        }
    }
    !state.victims.is_empty()
}

/// Gives up on every stream in `state.victims` (reset with its reason's
/// code), remembering its subgroup so that later objects are skipped.
fn drop_victims(state: &mut Conn, conn: &mut Connection) {
    for i in 0..state.victims.len() {
        let (stream, reason) = state.victims[i];
        let Some((request, group, subgroup)) = state.stream_owner.remove(&stream) else {
            continue;
        };
        let code = reason.reset_code();
        let bytes = state.driver.abandon(conn, stream, code);
        if let Some(sub) = state.downstream.get_mut(&request) {
            if let Some(alias) = sub.alias {
                // The session forgets the subgroup (its reset is a no-op now).
                state
                    .driver
                    .session
                    .reset_subgroup(alias, group, subgroup, code);
            }
            sub.dropped.insert((group, subgroup));
        }
        state.shed.bytes_dropped += bytes as u64;
        match reason {
            Reason::DeliveryTimeout => state.shed.subgroups_timed_out += 1,
            Reason::Backlog => state.shed.subgroups_over_backlog += 1,
        }
        tracing::debug!(
            subscriber = %conn.remote_address(),
            ?reason,
            group,
            subgroup,
            bytes,
            "subgroup dropped"
        );
    }
    if !state.victims.is_empty() {
        log_shedding(state, conn);
    }
    state.victims.clear();
}

/// At most once per [`SHED_LOG_PERIOD`] per subscriber: what it lost so
/// far and the congestion signals that made it lose it.
fn log_shedding(state: &mut Conn, conn: &Connection) {
    let now = Instant::now();
    if state
        .last_shed_log
        .is_some_and(|t| now.duration_since(t) < SHED_LOG_PERIOD)
    {
        return;
    }
    state.last_shed_log = Some(now);
    let oldest_ms = state
        .driver
        .backlog()
        .map(|b| b.since)
        .min()
        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
    let s = &state.shed;
    tracing::info!(
        subscriber = %conn.remote_address(),
        cwnd = conn.congestion_state().window(),
        rtt_ms = conn.rtt().as_secs_f64() * 1e3,
        backlog_bytes = state.driver.pending_bytes(),
        oldest_waiting_ms = oldest_ms,
        timed_out = s.subgroups_timed_out,
        over_backlog = s.subgroups_over_backlog,
        datagrams = s.datagrams_dropped,
        bytes = s.bytes_dropped,
        "subscriber shedding"
    );
}

/// Checks one connection's backlog against the shedding policy and gives
/// up on the subgroup streams it picks (reset with the draft's code).
fn shed_backlog(state: &mut Conn, conn: &mut Connection, config: &ShedConfig) {
    let pending = state.driver.pending_bytes();
    if state.stream_owner.len() > 2 * state.driver.stream_count() + 64 {
        // Streams that ended normally: forget them (amortised).
        let driver = &state.driver;
        state.stream_owner.retain(|s, _| driver.knows_stream(*s));
    }
    if pending == 0 {
        state.best_waiting = None;
        return;
    }
    if pending <= config.max_backlog_bytes / 2 {
        // Far from the bound: only timeouts can apply, and only to data
        // that waits; checking every stream's age on every pump of a
        // healthy connection is waste, so look only at the oldest.
        let oldest = state.driver.backlog().map(|b| b.since).min();
        let shortest = config.delivery_timeout.min(Duration::from_millis(100));
        if oldest.is_none_or(|t| t.elapsed() < shortest) {
            state.shed.backlog_max = state.shed.backlog_max.max(pending as u64);
            state.best_waiting = None;
            return;
        }
    }
    let now = Instant::now();
    state.candidates.clear();
    for b in state.driver.backlog() {
        // Only subgroup streams are shed: never control, request or fetch data.
        let Some(&(request, group, _)) = state.stream_owner.get(&b.stream) else {
            continue;
        };
        let timeout = state
            .downstream
            .get(&request)
            .and_then(|s| s.delivery_timeout)
            .unwrap_or(config.delivery_timeout);
        state.candidates.push(Candidate {
            stream: b.stream,
            bytes: b.bytes,
            since: b.since,
            priority: b.priority,
            group,
            timeout,
        });
    }
    state.best_waiting = state.candidates.iter().map(|c| c.priority).max();
    state.victims.clear();
    shed::choose(
        &mut state.candidates,
        pending,
        config.max_backlog_bytes,
        now,
        &mut state.victims,
    );
    drop_victims(state, conn);
    // The bound is on what stays after the check.
    state.shed.backlog_max = state
        .shed
        .backlog_max
        .max(state.driver.pending_bytes() as u64);
}

/// The part of `namespace` after the prefix of namespace subscription `request`.
fn namespace_suffix(
    prefixes: &HashMap<RequestId, TrackNamespace>,
    request: RequestId,
    namespace: &TrackNamespace,
) -> Option<TrackNamespace> {
    namespace.strip_prefix(prefixes.get(&request)?)
}

impl Application for RelayApp {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let Some(conn) = conns.get_mut(ch) else {
            return;
        };
        if matches!(event, Event::Connected) {
            self.conns
                .insert(ch, Conn::new(self.session_config.clone()));
            self.engine.session_opened(sid(ch));
            self.stats.sessions_opened += 1;
        }
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
        };
        state.driver.handle_event(conn, &event);
        self.pump(ch, conn);
        self.run_actions(conns);
        if let Some(peers) = &mut self.peers {
            peers.flush();
        }
    }

    /// GOAWAY (§10.4) to every session: the relay is going away; clients
    /// reconnect (to this URI, or another instance behind it) on their own
    /// time, within the grace the worker leaves before closing.
    fn going_away(&mut self, conns: &mut Connections<'_>, grace: Duration) {
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in handles {
            let Some(conn) = conns.get_mut(ch) else {
                continue;
            };
            if let Some(state) = self.conns.get_mut(&ch) {
                let _ = state
                    .driver
                    .session
                    .go_away(bytes::Bytes::new(), grace.as_millis() as u64);
            }
            self.pump(ch, conn);
        }
    }

    /// The drain is over: every subscription still served ends with
    /// PUBLISH_DONE (GOING_AWAY) after its open subgroup streams are
    /// finished, so subscribers see a clean end rather than a dropped
    /// connection.
    fn drained(&mut self, conns: &mut Connections<'_>) {
        let handles: Vec<ConnectionHandle> = self.conns.keys().copied().collect();
        for ch in handles {
            let Some(conn) = conns.get_mut(ch) else {
                continue;
            };
            if let Some(state) = self.conns.get_mut(&ch) {
                let session = &mut state.driver.session;
                for (id, sub) in state.downstream.drain() {
                    if let Some(alias) = sub.alias {
                        session.finish_track_subgroups(alias);
                    }
                    let _ = session.publish_done(
                        id,
                        PublishDone {
                            status_code: PublishDoneCode::GoingAway,
                            stream_count: sub.streams_opened,
                            reason: ReasonPhrase::default(),
                        },
                    );
                }
            }
            self.pump(ch, conn);
        }
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        if let Some(state) = self.conns.remove(&ch) {
            let s = state.shed;
            if s.subgroups_timed_out + s.subgroups_over_backlog + s.datagrams_dropped > 0 {
                tracing::info!(
                    timed_out = s.subgroups_timed_out,
                    over_backlog = s.subgroups_over_backlog,
                    datagrams = s.datagrams_dropped,
                    skipped = s.objects_skipped,
                    bytes = s.bytes_dropped,
                    backlog_max = s.backlog_max,
                    "subscriber closed after shedding"
                );
            }
            self.shed_closed.add(&s);
            // Its shedding must reach the totals even if the worker stops
            // now; the rest of the report follows every REPORT_PERIOD (a
            // whole report per close would cost a pass over every
            // connection each time one leaves).
            if s != ShedCounters::default() {
                self.publish_report();
            }
            // Whatever the engine answers (PUBLISH_DONE to this publisher's
            // subscribers...) is carried out next iteration by
            // `poll_external`; actions toward this session are dropped.
            if let Some(peers) = &self.peers {
                peers.session_gone(sid(ch));
            }
            self.engine.session_closed(sid(ch));
        }
    }

    fn poll_external(&mut self, conns: &mut Connections<'_>) -> bool {
        let mut busy = self.check_backlogs(conns);
        if let Some(peers) = &mut self.peers {
            // One atomic load unless another worker's publications changed.
            busy |= peers.sync_directory(&mut self.engine);
            busy |= peers.housekeeping();
        }
        // Left by `connection_closed` or the directory (NAMESPACE...).
        if self.engine.has_actions() {
            self.run_actions(conns);
            busy = true;
        }
        if self.peers.is_none() {
            return busy;
        }
        for _ in 0..INGEST_BATCH {
            let Some(peers) = &mut self.peers else {
                break;
            };
            if !peers.ingest_one(&mut self.engine) {
                break;
            }
            busy = true;
            // At once, so the engine's action queue stays short.
            self.run_actions(conns);
        }
        if let Some(peers) = &mut self.peers {
            peers.flush();
        }
        busy
    }

    fn external_pending(&self) -> bool {
        self.engine.has_actions() || self.peers.as_ref().is_some_and(Peers::pending)
    }
}

#[cfg(test)]
mod tests {
    use moqt::{kvp::KeyValuePair, properties::property_type};

    use super::*;

    fn props(pairs: &[(u64, u64)]) -> Properties {
        let pairs = pairs
            .iter()
            .map(|&(k, v)| KeyValuePair::varint(k, v).unwrap())
            .collect();
        Properties::from_pairs(pairs).unwrap()
    }

    #[test]
    fn delivery_timeouts_zero_means_none_and_the_tighter_one_wins() {
        let p = Parameters {
            object_delivery_timeout: Some(0),
            subgroup_delivery_timeout: Some(300),
            ..Parameters::default()
        };
        assert_eq!(delivery_timeout(&p), Some(Duration::from_millis(300)));
        let none = Parameters {
            object_delivery_timeout: Some(0),
            ..Parameters::default()
        };
        assert_eq!(delivery_timeout(&none), None);
        let publisher = props(&[
            (property_type::OBJECT_DELIVERY_TIMEOUT, 500),
            (property_type::SUBGROUP_DELIVERY_TIMEOUT, 0),
        ]);
        assert_eq!(
            publisher_delivery_timeout(&publisher),
            Some(Duration::from_millis(500))
        );
        assert_eq!(publisher_delivery_timeout(&Properties::new()), None);
    }
}
