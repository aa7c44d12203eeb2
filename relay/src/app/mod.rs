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
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use dataplane::worker::{Application, Connections};
use moqt::{session::SessionConfig, PublishDone, PublishDoneCode, ReasonPhrase};
use quinn_proto::{Connection, ConnectionHandle, Event};
// For keys that are ours (connection handles, stream handles); maps keyed
// by what a peer chooses (request IDs) keep std's keyed hash.
use rustc_hash::FxHashMap;

use crate::{
    auth::{Authorizer, SessionAuth},
    crossworker::CrossWorkerCounters,
    engine::{self, Action, Engine, EngineConfig, SessionId},
    group::{Peers, RelayPart},
    shed::{ShedConfig, ShedCounters},
    telemetry::{HopHistogram, HopRecorder, TrafficCounters},
};

mod authz;
mod conn;
mod events;
mod fetch;
mod links;
mod send;
mod shedding;

pub use self::links::{
    UpstreamConfig, BACKOFF_MAX, BACKOFF_MIN, CONNECT_TIMEOUT, LEAVE_TIMEOUT, LINK_IMPLEMENTATION,
    MAX_UPSTREAMS,
};
use self::{
    conn::Conn,
    events::on_session_event,
    fetch::serve_join,
    links::Links,
    send::{offer_track, run_action, subscribe_upstream, OverLink},
    shedding::{drop_victims, find_late_in_flight, settle},
};

/// ALPN of MoQT draft-18 over raw QUIC.
pub const MOQT_ALPN: &[u8] = moqt::ALPN;

/// How often connections with a backlog are checked without an event.
const BACKLOG_CHECK_PERIOD: Duration = Duration::from_millis(10);
/// How often the shedding totals are published.
const REPORT_PERIOD: Duration = Duration::from_millis(100);
/// The clock is read on every this many worker iterations only.
const CLOCK_EVERY_POLLS: u64 = 16;

/// Messages from other workers taken per iteration, so a flood of them
/// cannot starve this worker's own connections and timers.
const INGEST_BATCH: usize = 256;

/// What a worker's relay publishes for the control plane.
#[derive(Debug, Default, Clone, Copy)]
pub struct RelayReport {
    pub shed: ShedCounters,
    pub state: RelayState,
    /// Objects and bytes through every session, present and past.
    pub traffic: TrafficCounters,
    pub stats: AppStats,
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
    /// Links to upstream relays whose sessions are up (`--upstream`).
    pub upstream_links_up: usize,
}

/// Counters of the glue (the engine has its own).
#[derive(Debug, Default, Clone, Copy)]
pub struct AppStats {
    pub sessions_opened: u64,
    /// Of those, sessions whose connection negotiated `h3` (WebTransport).
    pub webtransport_sessions: u64,
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
    /// Traffic of connections already closed.
    traffic_closed: TrafficCounters,
    /// Relay hop latencies (see [`crate::telemetry`]).
    hop: HopRecorder,
    /// Objects received whose fan-out has not ended yet: their hop is
    /// recorded once the actions they caused are carried out.
    hop_pending: u64,
    /// Totals for the control plane, refreshed every [`REPORT_PERIOD`].
    report: Arc<Mutex<RelayReport>>,
    /// `poll_external` calls, to look at the clock only now and then.
    polls: u64,
    last_backlog_check: Instant,
    last_report: Instant,
    pub stats: AppStats,
    /// The other workers of the group; `None` for a worker on its own.
    peers: Option<Peers>,
    /// Engine actions being carried out (kept for its allocation).
    action_batch: Vec<Option<Action>>,
    /// Reused by `run_actions`: (session, position in the batch).
    action_order: Vec<(u64, usize)>,
    /// Links to upstream relays (relay chaining).
    links: Links,
    /// Verifies tokens when keys are configured; `None`: no authorization.
    authorizer: Option<Arc<Authorizer>>,
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
            traffic_closed: TrafficCounters::default(),
            hop: HopRecorder::default(),
            hop_pending: 0,
            report: Arc::default(),
            polls: 0,
            last_backlog_check: Instant::now(),
            last_report: Instant::now(),
            stats: AppStats::default(),
            peers: None,
            action_batch: Vec::new(),
            action_order: Vec::new(),
            links: Links::default(),
            authorizer: None,
        }
    }

    /// Upstream relays this worker links to (`--upstream`), in order of
    /// preference; connected from the next iteration on.
    pub fn set_upstreams(&mut self, upstreams: Vec<UpstreamConfig>) {
        self.links = Links::new(upstreams, Instant::now());
    }

    /// Connects the links that are due and gives up on handshakes that
    /// take too long (see [`links`]).
    fn service_links(&mut self, conns: &mut Connections<'_>) -> bool {
        let now = Instant::now();
        let late = self.links.overdue(now);
        for ch in &late {
            if let Some(conn) = conns.get_mut(*ch) {
                conn.close(now, 0u32.into(), bytes::Bytes::from_static(b"link timeout"));
            }
        }
        let opened = self.links.connect_due(now, conns);
        let busy = !late.is_empty() || !opened.is_empty();
        for o in opened {
            let config = SessionConfig {
                setup: o.setup,
                ..self.session_config.clone()
            };
            self.conns.insert(o.ch, Conn::client(config));
            self.engine.session_opened(sid(o.ch));
        }
        busy
    }

    /// What a session's SETUP or GOAWAY means for chaining: a link that
    /// is up is routed to; a peer relay's link is served locally only; a
    /// link whose upstream goes away is no longer routed to.
    fn on_setup_or_goaway(&mut self, ch: ConnectionHandle, ready: Option<bool>, goaway: bool) {
        if let Some(peer_is_link) = ready {
            if let Some(rank) = self.links.ready(ch) {
                self.engine.link_up(sid(ch), rank);
            } else if peer_is_link {
                tracing::debug!(
                    session = ch.0,
                    "peer relay link: served from local publishers only"
                );
                self.engine.serve_locally(sid(ch));
            }
        }
        if goaway && self.links.going_away(ch, Instant::now()) {
            self.engine.link_down(sid(ch));
        }
    }

    /// From now on every publish and subscribe needs a valid token
    /// (`crate::auth`); `None` turns authorization off.
    pub fn set_authorizer(&mut self, authorizer: Option<Arc<Authorizer>>) {
        self.authorizer = authorizer;
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

    /// Where the relay hop latencies are published (see
    /// [`crate::telemetry`]).
    pub fn hop_histogram(&self) -> Arc<Mutex<HopHistogram>> {
        self.hop.shared()
    }

    /// Objects and bytes through every session, present and past.
    pub fn traffic(&self) -> TrafficCounters {
        let mut total = self.traffic_closed;
        for c in self.conns.values() {
            total.add(&c.traffic);
        }
        total
    }

    /// Records the hop of the objects received since the last record: the
    /// fan-out they caused is done (see [`crate::telemetry`]).
    fn record_hops(&mut self, conns: &Connections<'_>) {
        if self.hop_pending > 0 {
            let hop = Instant::now().saturating_duration_since(conns.now());
            self.hop.record(hop, std::mem::take(&mut self.hop_pending));
        }
    }

    fn publish_report(&mut self) {
        self.hop.publish();
        let report = RelayReport {
            shed: self.shed_counters(),
            state: self.state(),
            traffic: self.traffic(),
            stats: self.stats,
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
            upstream_links_up: self.engine.links().count(),
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
                settle(state, conn, &self.shed_config);
            }
        }
        for (ch, state) in self.conns.iter_mut() {
            // Only a connection with something to reset is touched (and so
            // driven this iteration).
            if find_late_in_flight(state, &self.shed_config, now) {
                if let Some(conn) = conns.get_mut(*ch) {
                    drop_victims(state, conn);
                    settle(state, conn, &self.shed_config);
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

    /// Turns the session's events into engine calls, then settles the
    /// connection (see [`settle`]).
    fn pump(&mut self, ch: ConnectionHandle, conn: &mut Connection) {
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
        };
        let received = state.traffic.objects_received;
        let (mut ready, mut goaway) = (None, false);
        while let Some(ev) = state.driver.session.poll_event() {
            match &ev {
                moqt::session::Event::Ready { peer_setup } => {
                    ready = Some(
                        peer_setup.implementation().map(|b| &b[..]) == Some(LINK_IMPLEMENTATION),
                    );
                }
                moqt::session::Event::GoAway { .. } => goaway = true,
                _ => {}
            }
            on_session_event(&mut self.engine, state, self.peers.as_ref(), ch, ev);
        }
        self.hop_pending += state.traffic.objects_received - received;
        // What the events and the engine's actions queued (answers, objects)
        // goes out now.
        settle(state, conn, &self.shed_config);
        if state.driver.closed_with.take().is_some() {
            self.stats.sessions_closed_by_violation += 1;
        }
        if ready.is_some() || goaway {
            self.on_setup_or_goaway(ch, ready, goaway);
        }
    }

    /// Carries out the engine's actions on the sessions they name.
    ///
    /// The queued actions are taken as a batch and grouped by session
    /// (keeping each session's order): every connection gets all that is
    /// for it written, then its packets built at once
    /// ([`Connections::transmit`]) while its state is in cache, and an
    /// object and its subgroup's end can leave in one packet.
    fn run_actions(&mut self, conns: &mut Connections<'_>) {
        loop {
            let mut batch = std::mem::take(&mut self.action_batch);
            batch.extend(std::iter::from_fn(|| self.engine.poll_action().map(Some)));
            if batch.is_empty() {
                self.action_batch = batch;
                return;
            }
            // Grouped by session, each session's actions in the engine's
            // order: (session, position) pairs are sorted, not the actions
            // themselves (an object action is large, and a fan-out makes
            // one per subscriber).
            let mut order = std::mem::take(&mut self.action_order);
            order.clear();
            order.extend(
                batch
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.as_ref().map_or(0, |a| a.session().0), i)),
            );
            if !order.is_sorted() {
                order.sort_unstable();
            }
            // The connection being visited; other workers' pseudo-sessions
            // have none (their objects go through the cross-worker queues).
            let mut visiting = None;
            for &(_, i) in &order {
                let Some(action) = batch[i].take() else {
                    continue;
                };
                let target = action.session();
                let ch = target.worker_index().is_none().then(|| ch_of(target));
                if visiting != ch {
                    if let Some(done) = std::mem::replace(&mut visiting, ch) {
                        conns.transmit(done);
                    }
                }
                self.carry_out(conns, target, action);
            }
            if let Some(done) = visiting {
                conns.transmit(done);
            }
            batch.clear();
            self.action_batch = batch;
            self.action_order = order;
        }
    }

    /// Carries out one engine action on the session it names.
    fn carry_out(&mut self, conns: &mut Connections<'_>, target: SessionId, action: Action) {
        if let Some(worker) = target.worker_index() {
            if let Some(peers) = &mut self.peers {
                peers.on_action(worker, action);
            }
            return;
        }
        let ch = ch_of(target);
        let Some(state) = self.conns.get_mut(&ch) else {
            return;
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
            return;
        }
        if let Action::SubscribeUpstream { track, name, .. } = action {
            // Over a relay link the subscriber's rendezvous goes along.
            let link = self.links.rank(ch).map(|_| OverLink {
                rendezvous: self.engine.upstream_rendezvous(track).map(|d| {
                    d.saturating_duration_since(Instant::now())
                        .as_millis()
                        .max(1) as u64
                }),
            });
            if !subscribe_upstream(state, track, name, link) {
                // The link's session is at its concurrent requests.
                self.engine
                    .upstream_failed(track, moqt::RequestErrorCode::ExcessiveLoad);
            }
            if let Some(conn) = conns.get_mut(ch) {
                self.pump(ch, conn);
            }
            return;
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

impl Application for RelayApp {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let Some(conn) = conns.get_mut(ch) else {
            return;
        };
        // A link's state exists from its connect on; authorization is for
        // the connections the relay accepts (a link's upstream is the
        // operator's choice).
        if matches!(event, Event::Connected) && !self.conns.contains_key(&ch) {
            let mut state = Conn::new(self.session_config.clone());
            state.auth = self.authorizer.clone().map(SessionAuth::new);
            if crate::quic::negotiated_alpn(conn).as_deref() == Some(crate::quic::H3_ALPN) {
                state.driver.use_webtransport();
                self.stats.webtransport_sessions += 1;
            }
            self.conns.insert(ch, state);
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
        self.record_hops(conns);
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

    /// The final report: what the periodic one has not published yet.
    fn stopped(&mut self) {
        self.hop.flush();
        self.publish_report();
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        self.links.closed(ch, Instant::now());
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
            self.traffic_closed.add(&state.traffic);
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
        // Only while a link waits to connect or for its handshake.
        if self.links.needs_clock() {
            busy |= self.service_links(conns);
        }
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
            self.record_hops(conns);
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
        self.record_hops(conns);
        busy
    }

    fn external_pending(&self) -> bool {
        self.engine.has_actions() || self.peers.as_ref().is_some_and(Peers::pending)
    }
}
