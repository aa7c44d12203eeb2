//! The relay engine: namespaces, tracks, subscriptions and fan-out, sans-IO.
//!
//! It speaks in sessions and request IDs, never in streams: the glue turns
//! session events into calls here and [`Action`]s into session commands.
//! One engine per worker; every call is O(subscribers touched).
//!
//! - A downstream SUBSCRIBE for a track nobody relays yet makes the engine
//!   subscribe upstream once, to the session that published the matching
//!   namespace (Largest Object filter, as §9.4 suggests for aggregating
//!   relays); downstream subscribers wait for that upstream SUBSCRIBE_OK
//!   (§9.4: no SUBSCRIBE_OK before the upstream one is established).
//! - The last downstream subscriber leaving ends the upstream subscription.
//! - Every object arrives once, goes into the track's bounded cache and is
//!   handed to every matching subscription as the same `Bytes`.
//! - A publisher leaving ends its tracks: PUBLISH_DONE to every subscriber.
//! - A publisher may also push a track with PUBLISH (§10.10); such a track
//!   stays relayed (and cached) while its publisher keeps it, whether or not
//!   anyone subscribes.
//! - TRACK_STATUS and FETCH are answered from the relay's own state and
//!   cache; a TRACK_STATUS for a track not relayed yet subscribes upstream
//!   to learn the answer (§10.14 allows it) and lets go unless a
//!   subscriber arrived meanwhile.
//!
//! - A SUBSCRIBE for a track nobody publishes yet that carries a
//!   RENDEZVOUS_TIMEOUT (§10.2.6) waits for its publisher: it is served
//!   like any other the moment a matching PUBLISH_NAMESPACE or PUBLISH
//!   arrives, and refused with TIMEOUT when its deadline passes first.
//!
//! Track aliases are the session layer's business: the engine never sees
//! one of a downstream subscription.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moqt::{
    FullTrackName, GroupOrder, Location, Properties, PublishDoneCode, RequestErrorCode,
    StreamResetCode, SubscriptionFilter, TrackNamespace,
};

use crate::{
    cache::{CachedObject, Inserted, TrackCache},
    early::{Early, EarlyBuffer},
};

/// A session (one QUIC connection) as the glue numbers it, or another
/// worker of the process seen as one peer ([`SessionId::worker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Session IDs from here on name peer workers: far above any connection
/// handle (a slab index), so they never collide with one.
const WORKER_SESSION_BASE: u64 = 1 << 62;

impl SessionId {
    /// The pseudo-session standing for worker `w` of the group: its
    /// published namespaces, its subscriptions to our tracks and ours to its
    /// tracks all go through it (see [`crate::group`]).
    pub const fn worker(w: usize) -> Self {
        Self(WORKER_SESSION_BASE + w as u64)
    }

    pub const fn is_worker(self) -> bool {
        self.0 >= WORKER_SESSION_BASE
    }

    /// The worker index of a pseudo-session.
    pub fn worker_index(self) -> Option<usize> {
        self.is_worker()
            .then(|| (self.0 - WORKER_SESSION_BASE) as usize)
    }
}

/// A request ID on one session (§10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Index of a relayed track.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrackId(u64);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Cache budget per track (bytes, see [`crate::cache`]).
    pub cache_bytes_per_track: usize,
    /// Cache budget of all tracks of this engine (one worker) together;
    /// beyond it the oldest groups of the largest caches are evicted.
    pub cache_bytes_total: usize,
    /// Most tracks relayed at once; further subscriptions get EXCESSIVE_LOAD.
    pub max_tracks: usize,
    /// Most subscriptions per session (waiting ones included).
    pub max_subscriptions_per_session: usize,
    /// Longest a SUBSCRIBE may wait for its publisher, whatever
    /// RENDEZVOUS_TIMEOUT it asks for (§10.2.6 allows a shorter wait).
    pub max_rendezvous: Duration,
    /// Objects (entries) and bytes held for aliases whose SUBSCRIBE_OK has
    /// not arrived yet, over all publishers (see [`crate::early`]).
    pub early_max_entries: usize,
    pub early_max_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_bytes_per_track: 8 << 20,
            cache_bytes_total: 256 << 20,
            max_tracks: 4096,
            max_subscriptions_per_session: 1024,
            max_rendezvous: Duration::from_secs(30),
            early_max_entries: crate::early::DEFAULT_EARLY_MAX_ENTRIES,
            early_max_bytes: crate::early::DEFAULT_EARLY_MAX_BYTES,
        }
    }
}

/// What the engine asks the glue to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answer a downstream SUBSCRIBE.
    SubscribeOk {
        session: SessionId,
        request: RequestId,
        largest: Option<Location>,
        /// The upstream's Track Properties, passed on unchanged (§2.5).
        properties: Properties,
    },
    /// Accept a PUBLISH (PUBLISH_OK, Forward 1).
    PublishOk {
        session: SessionId,
        request: RequestId,
    },
    /// Answer a TRACK_STATUS (TRACK_STATUS_OK, then FIN).
    TrackStatusOk {
        session: SessionId,
        request: RequestId,
        largest: Option<Location>,
        properties: Properties,
    },
    /// Refuse a request.
    RequestError {
        session: SessionId,
        request: RequestId,
        code: RequestErrorCode,
        reason: &'static str,
    },
    /// Subscribe upstream; report the outcome with [`Engine::upstream_subscribed`]
    /// or [`Engine::upstream_failed`] quoting `track`.
    SubscribeUpstream {
        publisher: SessionId,
        track: TrackId,
        name: FullTrackName,
    },
    /// End an upstream subscription (cancel its request stream).
    UnsubscribeUpstream {
        publisher: SessionId,
        request: RequestId,
    },
    /// Tell a namespace subscriber about a namespace (NAMESPACE).
    Namespace {
        session: SessionId,
        request: RequestId,
        namespace: TrackNamespace,
    },
    /// Tell a namespace subscriber a namespace is gone (NAMESPACE_DONE).
    NamespaceDone {
        session: SessionId,
        request: RequestId,
        namespace: TrackNamespace,
    },
    /// End a downstream subscription (PUBLISH_DONE).
    PublishDone {
        session: SessionId,
        request: RequestId,
        code: PublishDoneCode,
    },
    /// The publisher finished (`reset: None`) or reset a subgroup stream:
    /// finish or reset (with the same code) the matching stream of this
    /// downstream subscription.
    EndSubgroup {
        session: SessionId,
        request: RequestId,
        group: u64,
        subgroup: u64,
        reset: Option<StreamResetCode>,
    },
    /// Offer a pushed track to a SUBSCRIBE_TRACKS subscriber (§10.19):
    /// send it PUBLISH, then report the request with [`Engine::offered`].
    OfferTrack {
        session: SessionId,
        track: TrackId,
        name: FullTrackName,
        largest: Option<Location>,
        properties: Properties,
        forward: bool,
    },
    /// A pushed track that cannot be offered to a SUBSCRIBE_TRACKS
    /// subscriber (its subscription limit): PUBLISH_BLOCKED (§10.20) on
    /// that SUBSCRIBE_TRACKS, whose `prefix` it names the track under.
    PublishBlocked {
        session: SessionId,
        request: RequestId,
        prefix: TrackNamespace,
        name: FullTrackName,
    },
    /// Send one object on a downstream subscription; `object.payload` is
    /// shared with every other subscriber of the track.
    Object {
        session: SessionId,
        request: RequestId,
        object: CachedObject,
    },
}

/// What a FETCH gets from the cache (§10.12.3).
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPlan {
    /// Last location the response covers (inclusive); FETCH_OK's End
    /// Location is this plus one object.
    pub end: Location,
    /// The part of the range the relay knows nothing about (it joined the
    /// track later, or evicted it): from `start` through this location.
    /// Its End of Unknown Range marker goes where the group order puts
    /// those groups, naming the far end of the range in that order
    /// (§11.4.4.2: everything between the last object sent and it).
    pub unknown_through: Option<Location>,
    /// First location of the requested range.
    pub start: Location,
    /// Cached objects in the requested group order (objects ascending
    /// within a group, §10.12.3).
    pub objects: Vec<CachedObject>,
    /// The track's properties for FETCH_OK.
    pub properties: Properties,
}

/// A refused request: the code and reason for REQUEST_ERROR.
pub type Refusal = (RequestErrorCode, &'static str);

#[derive(Debug)]
struct Downstream {
    session: SessionId,
    request: RequestId,
    start: Location,
    /// Last group that passes (AbsoluteRange), inclusive.
    end_group: Option<u64>,
    filter: SubscriptionFilter,
    established: bool,
    /// Forward State (§10.2.12): objects are sent only while it is on.
    forward: bool,
    /// The track's Largest Object when the subscription was established:
    /// where a Joining FETCH ends (§10.12.2.1).
    joining_location: Option<Location>,
}

impl Downstream {
    /// A subscription not established yet (no SUBSCRIBE_OK / PUBLISH_OK).
    fn new(session: SessionId, request: RequestId, filter: SubscriptionFilter) -> Self {
        Self {
            session,
            request,
            start: Location::new(0, 0),
            end_group: None,
            filter,
            established: false,
            forward: true,
            joining_location: None,
        }
    }

    /// Objects flow from here on: the start follows from the filter and the
    /// track's Largest Object, which is also the Joining Location.
    fn start(&mut self, largest: Option<Location>) {
        self.established = true;
        self.joining_location = largest;
        apply_filter(self, largest);
    }
}

#[derive(Debug)]
enum Upstream {
    /// SUBSCRIBE sent to the namespace's publisher, no answer yet.
    Pending,
    /// The relay's upstream SUBSCRIBE was accepted.
    Established { request: RequestId, alias: u64 },
    /// The publisher pushed the track with PUBLISH: it ends only when the
    /// publisher ends it, not when the last subscriber leaves.
    Published { alias: u64 },
}

#[derive(Debug)]
struct Track {
    name: FullTrackName,
    publisher: SessionId,
    upstream: Upstream,
    cache: TrackCache,
    largest: Option<Location>,
    /// Track Properties from the upstream SUBSCRIBE_OK or PUBLISH.
    properties: Properties,
    subscribers: Vec<Downstream>,
    /// TRACK_STATUS requests waiting for the upstream answer.
    status_waiters: Vec<(SessionId, RequestId)>,
}

impl Track {
    fn new(name: FullTrackName, publisher: SessionId, upstream: Upstream, cache: usize) -> Self {
        Self {
            name,
            publisher,
            upstream,
            cache: TrackCache::new(cache),
            largest: None,
            properties: Properties::new(),
            subscribers: Vec::new(),
            status_waiters: Vec::new(),
        }
    }

    fn is_live(&self) -> bool {
        !matches!(self.upstream, Upstream::Pending)
    }

    /// Nobody needs the track any more.
    fn unused(&self) -> bool {
        self.subscribers.is_empty()
            && self.status_waiters.is_empty()
            && !matches!(self.upstream, Upstream::Published { .. })
    }
}

/// A SUBSCRIBE waiting for its track's publisher (§10.2.6).
#[derive(Debug)]
struct Waiting {
    request: RequestId,
    name: FullTrackName,
    filter: Option<SubscriptionFilter>,
    forward: bool,
    deadline: Instant,
}

#[derive(Debug, Default)]
struct SessionState {
    /// Namespaces this session published, with their request IDs.
    published: Vec<(TrackNamespace, RequestId)>,
    /// When it last published a namespace (the engine's count then).
    last_publication: u64,
    /// Namespace subscriptions of this session: (request, prefix).
    namespace_subscriptions: Vec<(RequestId, TrackNamespace)>,
    /// Downstream subscriptions of this session.
    subscriptions: HashMap<RequestId, TrackId>,
    /// Subscriptions waiting for a publisher (RENDEZVOUS_TIMEOUT).
    waiting: Vec<Waiting>,
    /// SUBSCRIBE_TRACKS of this session: (request, prefix, forward).
    track_subscriptions: Vec<(RequestId, TrackNamespace, bool)>,
}

impl SessionState {
    fn has_request(&self, request: RequestId) -> bool {
        self.subscriptions.contains_key(&request)
            || self.waiting.iter().any(|w| w.request == request)
    }

    fn subscription_count(&self) -> usize {
        self.subscriptions.len() + self.waiting.len()
    }
}

/// Counts of what the engine holds ([`Engine::footprint`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineFootprint {
    pub sessions: usize,
    pub tracks: usize,
    pub track_names: usize,
    pub upstream_aliases: usize,
    /// Downstream subscriptions over all tracks.
    pub subscriptions: usize,
    pub remote_tracks: usize,
    /// Objects waiting for their SUBSCRIBE_OK.
    pub early_objects: usize,
    pub cache_bytes: usize,
}

/// Relay-wide counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub objects_in: u64,
    pub objects_out: u64,
    pub objects_not_cached: u64,
    pub upstream_subscriptions: u64,
    /// Objects that arrived before their SUBSCRIBE_OK and were replayed.
    pub objects_early: u64,
    /// Early objects dropped because their buffer was full.
    pub objects_early_dropped: u64,
    /// Objects on aliases nobody announced (dropped).
    pub objects_unknown_alias: u64,
    /// Groups evicted to keep all caches within the engine's total budget.
    pub cache_groups_reclaimed: u64,
}

#[derive(Debug, Default)]
pub struct Engine {
    config: EngineConfig,
    sessions: HashMap<SessionId, SessionState>,
    tracks: HashMap<TrackId, Track>,
    by_name: HashMap<FullTrackName, TrackId>,
    /// (publisher session, upstream track alias) -> track.
    by_upstream_alias: HashMap<(SessionId, u64), TrackId>,
    /// Tracks pushed with PUBLISH to other workers: name -> that worker's
    /// pseudo-session (kept by the glue from the shared directory).
    remote_tracks: HashMap<FullTrackName, SessionId>,
    next_track: u64,
    actions: VecDeque<Action>,
    stats: EngineStats,
    early: EarlyBuffer,
    /// Bytes held by all track caches (kept with every insert and removal).
    cache_bytes: usize,
    /// PUBLISH_NAMESPACEs so far (orders publishers of one namespace).
    publications: u64,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            early: EarlyBuffer::new(config.early_max_entries, config.early_max_bytes),
            config,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            objects_early_dropped: self.early.dropped(),
            ..self.stats
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether actions wait for [`poll_action`](Self::poll_action).
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// Track `name` is pushed with PUBLISH on another worker, reached as
    /// pseudo-session `publisher`; `None`: no longer.
    pub fn set_remote_track(&mut self, name: FullTrackName, publisher: Option<SessionId>) {
        match publisher {
            Some(p) => {
                self.remote_tracks.insert(name.clone(), p);
                self.serve_waiting(|n| *n == name);
            }
            None => {
                self.remote_tracks.remove(&name);
            }
        }
    }

    /// Bytes held by all track caches.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Over the total cache budget: evicts the oldest groups of the largest
    /// caches until an eighth of the budget is free again (so the scan over
    /// the tracks is paid once per many inserts, not per object).
    fn reclaim_cache(&mut self) {
        let target = self.config.cache_bytes_total - self.config.cache_bytes_total / 8;
        while self.cache_bytes > target {
            let Some(largest) = self.tracks.values_mut().max_by_key(|t| t.cache.bytes()) else {
                return;
            };
            let freed = largest.cache.evict_oldest();
            if freed == 0 {
                return;
            }
            self.cache_bytes -= freed;
            self.stats.cache_groups_reclaimed += 1;
        }
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// What the engine holds now (a finished session leaves none of it).
    pub fn footprint(&self) -> EngineFootprint {
        EngineFootprint {
            sessions: self.sessions.len(),
            tracks: self.tracks.len(),
            track_names: self.by_name.len(),
            upstream_aliases: self.by_upstream_alias.len(),
            subscriptions: self.tracks.values().map(|t| t.subscribers.len()).sum(),
            remote_tracks: self.remote_tracks.len(),
            early_objects: self.early.len(),
            cache_bytes: self.cache_bytes,
        }
    }

    pub fn session_opened(&mut self, session: SessionId) {
        self.sessions.entry(session).or_default();
    }

    /// PUBLISH_NAMESPACE from `session`: it now serves tracks under `namespace`.
    pub fn publish_namespace(
        &mut self,
        session: SessionId,
        request: RequestId,
        namespace: TrackNamespace,
    ) {
        for (&other, state) in &self.sessions {
            for (ns_request, prefix) in &state.namespace_subscriptions {
                if other != session && namespace.starts_with(prefix) {
                    self.actions.push_back(Action::Namespace {
                        session: other,
                        request: *ns_request,
                        namespace: namespace.clone(),
                    });
                }
            }
        }
        self.publications += 1;
        let state = self.sessions.entry(session).or_default();
        state.published.push((namespace.clone(), request));
        state.last_publication = self.publications;
        self.serve_waiting(|name| name.namespace().starts_with(&namespace));
    }

    /// Subscriptions waiting for a publisher that `matches` now has one:
    /// each goes the ordinary way (upstream SUBSCRIBE, or straight to a
    /// pushed track), as if it had just arrived.
    fn serve_waiting(&mut self, matches: impl Fn(&FullTrackName) -> bool) {
        let mut ready = Vec::new();
        for (&session, state) in &mut self.sessions {
            let mut i = 0;
            while i < state.waiting.len() {
                if matches(&state.waiting[i].name) {
                    ready.push((session, state.waiting.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        // Oldest first, so the earliest subscriber is answered first.
        ready.sort_by_key(|(_, w)| w.deadline);
        for (session, w) in ready {
            self.subscribe(session, w.request, w.name, w.filter);
            if !w.forward {
                self.set_forward(session, w.request, false);
            }
        }
    }

    /// The deadline of a SUBSCRIBE that arrives at `now` asking to wait
    /// `requested_ms` for its publisher: capped by the configured maximum;
    /// `None` for no wait (absent or 0, §10.2.6).
    pub fn rendezvous_deadline(&self, now: Instant, requested_ms: Option<u64>) -> Option<Instant> {
        let ms = requested_ms.filter(|ms| *ms > 0)?;
        Some(now + Duration::from_millis(ms).min(self.config.max_rendezvous))
    }

    /// SUBSCRIBE_TRACKS from `session` (§10.19): every track pushed with
    /// PUBLISH under `prefix`, now and later, is offered to it.
    pub fn subscribe_tracks(
        &mut self,
        session: SessionId,
        request: RequestId,
        prefix: TrackNamespace,
        forward: bool,
    ) {
        let state = self.sessions.entry(session).or_default();
        state
            .track_subscriptions
            .push((request, prefix.clone(), forward));
        let pushed: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| {
                matches!(t.upstream, Upstream::Published { .. })
                    && t.name.namespace().starts_with(&prefix)
            })
            .map(|(id, _)| *id)
            .collect();
        for track in pushed {
            self.offer(session, (request, &prefix), track, forward);
        }
    }

    /// The subscriber cancelled its SUBSCRIBE_TRACKS `request`; tracks
    /// already offered keep going.
    pub fn unsubscribe_tracks(&mut self, session: SessionId, request: RequestId) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.track_subscriptions.retain(|(r, _, _)| *r != request);
        }
    }

    /// Offers `track` to `session` unless it publishes the track or
    /// already subscribes to it (§9.4: a held SUBSCRIBE is served instead).
    fn offer(
        &mut self,
        session: SessionId,
        (request, prefix): (RequestId, &TrackNamespace),
        track: TrackId,
        forward: bool,
    ) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let Some(state) = self.sessions.get(&session) else {
            return;
        };
        let subscribed = state.subscriptions.values().any(|id| *id == track);
        if t.publisher == session || subscribed {
            return;
        }
        if state.subscription_count() >= self.config.max_subscriptions_per_session {
            self.actions.push_back(Action::PublishBlocked {
                session,
                request,
                prefix: prefix.clone(),
                name: t.name.clone(),
            });
            return;
        }
        self.actions.push_back(Action::OfferTrack {
            session,
            track,
            name: t.name.clone(),
            largest: t.largest,
            properties: t.properties.clone(),
            forward,
        });
    }

    /// The glue sent PUBLISH `request` to `session` for `track`: a
    /// downstream subscription that starts with PUBLISH_OK.
    pub fn offered(&mut self, session: SessionId, request: RequestId, track: TrackId) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.subscribers.push(Downstream::new(
            session,
            request,
            SubscriptionFilter::LargestObject,
        ));
        self.sessions
            .entry(session)
            .or_default()
            .subscriptions
            .insert(request, track);
    }

    /// PUBLISH_OK for an offered track: objects flow from now on (or from
    /// the subscriber's filter), while `forward` is on. Returns whether the
    /// subscription exists.
    pub fn offer_accepted(
        &mut self,
        session: SessionId,
        request: RequestId,
        forward: bool,
        filter: Option<SubscriptionFilter>,
    ) -> bool {
        let Some((d, largest)) = self.downstream_and_largest(session, request) else {
            return false;
        };
        if let Some(f) = filter {
            d.filter = f;
        }
        d.forward = forward;
        d.start(largest);
        true
    }

    /// Refuses (TIMEOUT) every waiting subscription whose rendezvous
    /// deadline has passed.
    pub fn expire_waiting(&mut self, now: Instant) {
        for (&session, state) in &mut self.sessions {
            state.waiting.retain(|w| {
                let expired = w.deadline <= now;
                if expired {
                    self.actions.push_back(Action::RequestError {
                        session,
                        request: w.request,
                        code: RequestErrorCode::Timeout,
                        reason: "no publisher within the rendezvous timeout",
                    });
                }
                !expired
            });
        }
    }

    /// Subscriptions waiting for a publisher, over all sessions.
    pub fn waiting_count(&self) -> usize {
        self.sessions.values().map(|s| s.waiting.len()).sum()
    }

    /// SUBSCRIBE_NAMESPACE from `session`: tell it about every matching
    /// namespace now and later.
    pub fn subscribe_namespace(
        &mut self,
        session: SessionId,
        request: RequestId,
        prefix: TrackNamespace,
    ) {
        for (&other, state) in &self.sessions {
            if other == session {
                continue;
            }
            for (namespace, _) in &state.published {
                if namespace.starts_with(&prefix) {
                    self.actions.push_back(Action::Namespace {
                        session,
                        request,
                        namespace: namespace.clone(),
                    });
                }
            }
        }
        self.sessions
            .entry(session)
            .or_default()
            .namespace_subscriptions
            .push((request, prefix));
    }

    /// The publisher cancelled its PUBLISH_NAMESPACE `request` (§9.5): no
    /// new subscriptions are routed to it for that namespace; namespace
    /// subscribers get NAMESPACE_DONE. Running tracks continue.
    pub fn withdraw_namespace(&mut self, session: SessionId, request: RequestId) {
        let Some(state) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(at) = state.published.iter().position(|(_, r)| *r == request) else {
            return;
        };
        let (namespace, _) = state.published.remove(at);
        self.namespace_gone(session, &namespace);
    }

    /// NAMESPACE_DONE to every namespace subscriber `namespace` matches,
    /// but the publisher's own session (it was never told NAMESPACE).
    fn namespace_gone(&mut self, publisher: SessionId, namespace: &TrackNamespace) {
        for (&other, st) in &self.sessions {
            if other == publisher {
                continue;
            }
            for (ns_request, prefix) in &st.namespace_subscriptions {
                if namespace.starts_with(prefix) {
                    self.actions.push_back(Action::NamespaceDone {
                        session: other,
                        request: *ns_request,
                        namespace: namespace.clone(),
                    });
                }
            }
        }
    }

    /// The subscriber cancelled its SUBSCRIBE_NAMESPACE `request`.
    pub fn unsubscribe_namespace(&mut self, session: SessionId, request: RequestId) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.namespace_subscriptions.retain(|(r, _)| *r != request);
        }
    }

    /// REQUEST_UPDATE with a new Track Namespace Prefix for SUBSCRIBE_NAMESPACE
    /// `request` (§10.9.2): namespaces under the new prefix are announced
    /// (again). Returns whether the subscription exists.
    pub fn update_namespace_prefix(
        &mut self,
        session: SessionId,
        request: RequestId,
        prefix: TrackNamespace,
    ) -> bool {
        let Some(state) = self.sessions.get_mut(&session) else {
            return false;
        };
        let Some(entry) = state
            .namespace_subscriptions
            .iter_mut()
            .find(|(r, _)| *r == request)
        else {
            return false;
        };
        entry.1 = prefix.clone();
        for (&other, st) in &self.sessions {
            if other == session {
                continue;
            }
            for (namespace, _) in &st.published {
                if namespace.starts_with(&prefix) {
                    self.actions.push_back(Action::Namespace {
                        session,
                        request,
                        namespace: namespace.clone(),
                    });
                }
            }
        }
        true
    }

    fn publisher_for(&self, name: &FullTrackName, subscriber: SessionId) -> Option<SessionId> {
        // Another worker asks only for what our own sessions publish, so a
        // request never travels worker to worker in a loop.
        let from_worker = subscriber.is_worker();
        if !from_worker {
            if let Some(p) = self.remote_tracks.get(name) {
                return Some(*p);
            }
        }
        // The longest published namespace that is a prefix of the track's;
        // on a tie our own sessions win over other workers, then the one
        // that published last: a publisher that reconnected takes over
        // from its old session, which may be dead without having said so
        // (no CONNECTION_CLOSE) until its idle timeout.
        self.sessions
            .iter()
            .filter(|(s, _)| **s != subscriber && !(from_worker && s.is_worker()))
            .flat_map(|(s, st)| {
                st.published
                    .iter()
                    .map(move |(ns, _)| (*s, ns, st.last_publication))
            })
            .filter(|(_, ns, _)| name.namespace().starts_with(ns))
            .max_by_key(|(s, ns, last)| (ns.fields().len(), !s.is_worker(), *last))
            .map(|(s, _, _)| s)
    }

    /// SUBSCRIBE from `session` without a rendezvous: refused at once when
    /// nobody publishes the track.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: FullTrackName,
        filter: Option<SubscriptionFilter>,
    ) {
        self.subscribe_or_wait(session, request, name, filter, None);
    }

    /// SUBSCRIBE from `session`; with a `rendezvous` deadline (§10.2.6) a
    /// track nobody publishes yet is waited for until then.
    pub fn subscribe_or_wait(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: FullTrackName,
        filter: Option<SubscriptionFilter>,
        rendezvous: Option<Instant>,
    ) {
        let state = self.sessions.entry(session).or_default();
        // Checked before anything is created for the request.
        if state.has_request(request) {
            return self.refuse(
                session,
                request,
                RequestErrorCode::DuplicateSubscription,
                "request ID in use",
            );
        }
        // §5.1: one subscription per track per session.
        let relayed = self.by_name.get(&name);
        if state.subscriptions.values().any(|t| Some(t) == relayed)
            || state.waiting.iter().any(|w| w.name == name)
        {
            return self.refuse(
                session,
                request,
                RequestErrorCode::DuplicateSubscription,
                "already subscribed to this track",
            );
        }
        // A peer worker subscribes once per track for all its subscribers:
        // only the track limit bounds it.
        if !session.is_worker()
            && state.subscription_count() >= self.config.max_subscriptions_per_session
        {
            return self.refuse(
                session,
                request,
                RequestErrorCode::ExcessiveLoad,
                "too many subscriptions",
            );
        }
        if let Some(deadline) = rendezvous {
            if !self.by_name.contains_key(&name) && self.publisher_for(&name, session).is_none() {
                let state = self.sessions.get_mut(&session).expect("inserted above");
                state.waiting.push(Waiting {
                    request,
                    name,
                    filter,
                    forward: true,
                    deadline,
                });
                return;
            }
        }
        let Some(track_id) = self.relayed_track(session, request, name) else {
            return;
        };
        let state = self.sessions.get_mut(&session).expect("inserted above");
        state.subscriptions.insert(request, track_id);
        let filter = filter.unwrap_or(SubscriptionFilter::AbsoluteStart {
            start: Location::new(0, 0),
        });
        let track = self.tracks.get_mut(&track_id).expect("track exists");
        let mut downstream = Downstream::new(session, request, filter);
        if track.is_live() {
            establish(
                &mut downstream,
                track.largest,
                &track.properties,
                &mut self.actions,
            );
        }
        track.subscribers.push(downstream);
    }

    /// The relayed track `name`, subscribing upstream if nobody relays it
    /// yet; `None` (REQUEST_ERROR queued for `request`) without a publisher
    /// or over the track limit.
    fn relayed_track(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: FullTrackName,
    ) -> Option<TrackId> {
        if let Some(id) = self.by_name.get(&name) {
            return Some(*id);
        }
        let Some(publisher) = self.publisher_for(&name, session) else {
            self.refuse(
                session,
                request,
                RequestErrorCode::DoesNotExist,
                "no publisher for this track",
            );
            return None;
        };
        if self.refused_over_track_limit(session, request) {
            return None;
        }
        Some(self.subscribe_upstream(publisher, name))
    }

    /// At the track limit: REQUEST_ERROR (EXCESSIVE_LOAD) queued, `true`.
    fn refused_over_track_limit(&mut self, session: SessionId, request: RequestId) -> bool {
        let full = self.tracks.len() >= self.config.max_tracks;
        if full {
            self.refuse(
                session,
                request,
                RequestErrorCode::ExcessiveLoad,
                "too many tracks",
            );
        }
        full
    }

    /// Registers a new track relayed from `publisher`.
    fn add_track(
        &mut self,
        name: FullTrackName,
        publisher: SessionId,
        upstream: Upstream,
    ) -> TrackId {
        let id = TrackId(self.next_track);
        self.next_track += 1;
        let track = Track::new(
            name.clone(),
            publisher,
            upstream,
            self.config.cache_bytes_per_track,
        );
        self.tracks.insert(id, track);
        self.by_name.insert(name, id);
        id
    }

    fn subscribe_upstream(&mut self, publisher: SessionId, name: FullTrackName) -> TrackId {
        let id = self.add_track(name.clone(), publisher, Upstream::Pending);
        self.stats.upstream_subscriptions += 1;
        self.actions.push_back(Action::SubscribeUpstream {
            publisher,
            track: id,
            name,
        });
        id
    }

    /// PUBLISH from `session`: it pushes track `name` on `alias`. Returns
    /// the track when accepted (PUBLISH_OK queued), `None` when refused
    /// (REQUEST_ERROR queued).
    pub fn publish(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: FullTrackName,
        alias: u64,
        largest: Option<Location>,
        properties: Properties,
    ) -> Option<TrackId> {
        if self.by_name.contains_key(&name) {
            // One source per track: objects from a second one would have to
            // be merged and deduplicated (§9.3 allows refusing).
            self.refuse(
                session,
                request,
                RequestErrorCode::Uninterested,
                "track already relayed from another source",
            );
            return None;
        }
        if self.refused_over_track_limit(session, request) {
            return None;
        }
        self.sessions.entry(session).or_default();
        let id = self.add_track(name, session, Upstream::Published { alias });
        if let Some(t) = self.tracks.get_mut(&id) {
            t.largest = largest;
            t.properties = properties;
        }
        self.by_upstream_alias.insert((session, alias), id);
        self.actions
            .push_back(Action::PublishOk { session, request });
        let name = self.tracks[&id].name.clone();
        self.serve_waiting(|n| *n == name);
        // §9.4: PUBLISH goes on to every SUBSCRIBE_TRACKS that matches
        // (not to a session whose held SUBSCRIBE was just served).
        let interested: Vec<(SessionId, RequestId, TrackNamespace, bool)> = self
            .sessions
            .iter()
            .flat_map(|(s, st)| {
                st.track_subscriptions
                    .iter()
                    .filter(|(_, prefix, _)| name.namespace().starts_with(prefix))
                    .map(move |(r, prefix, forward)| (*s, *r, prefix.clone(), *forward))
            })
            .collect();
        for (s, request, prefix, forward) in interested {
            self.offer(s, (request, &prefix), id, forward);
        }
        Some(id)
    }

    /// TRACK_STATUS from `session` (§10.14): answered at once for a relayed
    /// track, after an upstream SUBSCRIBE otherwise.
    pub fn track_status(&mut self, session: SessionId, request: RequestId, name: FullTrackName) {
        let Some(track_id) = self.relayed_track(session, request, name) else {
            return;
        };
        let track = self.tracks.get_mut(&track_id).expect("track exists");
        if track.is_live() {
            self.actions.push_back(Action::TrackStatusOk {
                session,
                request,
                largest: track.largest,
                properties: track.properties.clone(),
            });
        } else {
            track.status_waiters.push((session, request));
        }
    }

    /// Sets the Forward State of a downstream subscription (from its
    /// SUBSCRIBE or a REQUEST_UPDATE). Returns whether it exists.
    pub fn set_forward(&mut self, session: SessionId, request: RequestId, forward: bool) -> bool {
        if let Some(w) = self.waiting_mut(session, request) {
            w.forward = forward;
            return true;
        }
        self.downstream_mut(session, request)
            .map(|d| d.forward = forward)
            .is_some()
    }

    fn waiting_mut(&mut self, session: SessionId, request: RequestId) -> Option<&mut Waiting> {
        self.sessions
            .get_mut(&session)?
            .waiting
            .iter_mut()
            .find(|w| w.request == request)
    }

    /// REQUEST_UPDATE of a downstream subscription's filter (§10.9.1): the
    /// new start and end apply to objects from now on. Returns the track's
    /// Largest Object for REQUEST_OK, or `None` if there is no such
    /// subscription.
    pub fn update_filter(
        &mut self,
        session: SessionId,
        request: RequestId,
        filter: SubscriptionFilter,
    ) -> Option<Option<Location>> {
        if let Some(w) = self.waiting_mut(session, request) {
            // Still waiting for a publisher: the new filter applies when
            // the subscription is established.
            w.filter = Some(filter);
            return Some(None);
        }
        let (d, largest) = self.downstream_and_largest(session, request)?;
        d.filter = filter;
        if d.established {
            apply_filter(d, largest);
        }
        Some(largest)
    }

    fn downstream_mut(
        &mut self,
        session: SessionId,
        request: RequestId,
    ) -> Option<&mut Downstream> {
        self.downstream_and_largest(session, request)
            .map(|(d, _)| d)
    }

    /// A downstream subscription and its track's Largest Object.
    fn downstream_and_largest(
        &mut self,
        session: SessionId,
        request: RequestId,
    ) -> Option<(&mut Downstream, Option<Location>)> {
        let track = *self.sessions.get(&session)?.subscriptions.get(&request)?;
        let t = self.tracks.get_mut(&track)?;
        let largest = t.largest;
        let d = t
            .subscribers
            .iter_mut()
            .find(|d| d.session == session && d.request == request)?;
        Some((d, largest))
    }

    /// Standalone FETCH (§10.12.1) of `name` from `start` to `end` (the
    /// request's End Location: the last object plus one, object 0 meaning
    /// the whole group), served from the cache of a relayed track.
    pub fn fetch_standalone(
        &self,
        session: SessionId,
        name: &FullTrackName,
        start: Location,
        end: Location,
        order: GroupOrder,
    ) -> Result<FetchPlan, Refusal> {
        let Some(track) = self.by_name.get(name).and_then(|t| self.tracks.get(t)) else {
            return Err(match self.publisher_for(name, session) {
                Some(_) => (
                    RequestErrorCode::NotSupported,
                    "track not relayed now; upstream FETCH is not implemented",
                ),
                None => (
                    RequestErrorCode::DoesNotExist,
                    "no publisher for this track",
                ),
            });
        };
        let last = if end.object == 0 {
            Location::new(end.group, u64::MAX)
        } else {
            Location::new(end.group, end.object - 1)
        };
        if end.group < start.group || last < start {
            return Err((RequestErrorCode::InvalidRange, "end before start"));
        }
        plan_fetch(track, start, last, order)
    }

    /// Joining FETCH (§10.12.2) for subscription `joined` of `session`:
    /// `joining_start` groups before its Joining Location (relative) or
    /// from that group (absolute), through the Joining Location.
    pub fn fetch_joining(
        &self,
        session: SessionId,
        joined: RequestId,
        joining_start: u64,
        relative: bool,
        order: GroupOrder,
    ) -> Result<FetchPlan, Refusal> {
        let Some((track, end)) = self.joining(session, joined) else {
            return Err((
                RequestErrorCode::InvalidJoiningRequestId,
                "no such established subscription",
            ));
        };
        let Some(end) = end else {
            return Err((RequestErrorCode::InvalidRange, "nothing published yet"));
        };
        let start_group = if relative {
            end.group.saturating_sub(joining_start)
        } else {
            joining_start
        };
        if start_group > end.group {
            return Err((
                RequestErrorCode::InvalidRange,
                "start after the joining location",
            ));
        }
        plan_fetch(track, Location::new(start_group, 0), end, order)
    }

    /// Whether `session`'s subscription `request` exists and waits for
    /// its SUBSCRIBE_OK (upstream pending, or waiting for a publisher).
    pub fn is_pending(&self, session: SessionId, request: RequestId) -> bool {
        let Some(state) = self.sessions.get(&session) else {
            return false;
        };
        if state.waiting.iter().any(|w| w.request == request) {
            return true;
        }
        let Some(track) = state.subscriptions.get(&request) else {
            return false;
        };
        self.tracks.get(track).is_some_and(|t| {
            t.subscribers
                .iter()
                .any(|d| d.session == session && d.request == request && !d.established)
        })
    }

    /// The track and Joining Location (§10.12.2.1) of an established
    /// subscription.
    fn joining(
        &self,
        session: SessionId,
        request: RequestId,
    ) -> Option<(&Track, Option<Location>)> {
        let track = self.sessions.get(&session)?.subscriptions.get(&request)?;
        let track = self.tracks.get(track)?;
        let d = track
            .subscribers
            .iter()
            .find(|d| d.session == session && d.request == request)?;
        d.established.then_some((track, d.joining_location))
    }

    /// The upstream SUBSCRIBE_OK for `track` arrived: objects on `alias` from
    /// `publisher` now belong to it. `false`: nobody wants the track any
    /// more; the glue cancels the upstream subscription.
    pub fn upstream_subscribed(
        &mut self,
        track: TrackId,
        request: RequestId,
        alias: u64,
        largest: Option<Location>,
        properties: Properties,
    ) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            // Everyone left while the SUBSCRIBE was under way.
            return false;
        };
        t.upstream = Upstream::Established { request, alias };
        t.largest = t.largest.max(largest);
        let publisher = t.publisher;
        self.by_upstream_alias.insert((publisher, alias), track);
        t.properties = properties;
        for d in &mut t.subscribers {
            establish(d, t.largest, &t.properties, &mut self.actions);
        }
        self.replay_early(publisher, alias);
        let Some(t) = self.tracks.get_mut(&track) else {
            return true;
        };
        for (session, request) in t.status_waiters.drain(..) {
            self.actions.push_back(Action::TrackStatusOk {
                session,
                request,
                largest: t.largest,
                properties: t.properties.clone(),
            });
        }
        if t.unused() {
            // Subscribed only to answer TRACK_STATUS.
            self.remove_unused(track);
        }
        true
    }

    /// Objects and stream ends of (`publisher`, `alias`) that came before
    /// the alias was known, as if they arrived now.
    fn replay_early(&mut self, publisher: SessionId, alias: u64) {
        for e in self.early.take(publisher, alias) {
            match e {
                Early::Object(o) => {
                    self.stats.objects_early += 1;
                    self.object(publisher, alias, o);
                }
                Early::SubgroupEnded {
                    group,
                    subgroup,
                    reset,
                } => self.subgroup_ended(publisher, alias, group, subgroup, reset),
            }
        }
    }

    /// Whether an upstream SUBSCRIBE to `publisher` awaits its answer (so
    /// data on an unknown alias may be for it).
    fn awaits_answer_from(&self, publisher: SessionId) -> bool {
        self.tracks
            .values()
            .any(|t| t.publisher == publisher && matches!(t.upstream, Upstream::Pending))
    }

    /// The upstream subscription was refused or ended: every downstream
    /// subscriber of the track is told and the track is dropped.
    pub fn upstream_failed(&mut self, track: TrackId, code: RequestErrorCode) {
        self.end_track(track, Some(code), PublishDoneCode::TrackEnded);
    }

    /// The upstream publisher ended the subscription (PUBLISH_DONE).
    pub fn upstream_done(&mut self, publisher: SessionId, alias: u64, code: PublishDoneCode) {
        if let Some(track) = self.by_upstream_alias.get(&(publisher, alias)).copied() {
            self.end_track(track, None, code);
        }
    }

    fn end_track(
        &mut self,
        track: TrackId,
        refuse: Option<RequestErrorCode>,
        done: PublishDoneCode,
    ) {
        let Some(t) = self.tracks.remove(&track) else {
            return;
        };
        self.cache_bytes -= t.cache.bytes();
        self.by_name.remove(&t.name);
        if let Upstream::Established { alias, .. } | Upstream::Published { alias } = t.upstream {
            self.by_upstream_alias.remove(&(t.publisher, alias));
        }
        for (session, request) in t.status_waiters {
            self.actions.push_back(Action::RequestError {
                session,
                request,
                code: refuse.unwrap_or(RequestErrorCode::DoesNotExist),
                reason: "the track ended upstream",
            });
        }
        for d in t.subscribers {
            if let Some(s) = self.sessions.get_mut(&d.session) {
                s.subscriptions.remove(&d.request);
            }
            match (d.established, refuse) {
                (false, Some(code)) => self.actions.push_back(Action::RequestError {
                    session: d.session,
                    request: d.request,
                    code,
                    reason: "upstream refused the subscription",
                }),
                _ => self.actions.push_back(Action::PublishDone {
                    session: d.session,
                    request: d.request,
                    code: done,
                }),
            }
        }
    }

    /// An object on upstream alias `alias` from `publisher`.
    pub fn object(&mut self, publisher: SessionId, alias: u64, object: CachedObject) {
        let Some(&track_id) = self.by_upstream_alias.get(&(publisher, alias)) else {
            if self.awaits_answer_from(publisher) {
                self.early.push(publisher, alias, Early::Object(object));
            } else {
                self.stats.objects_unknown_alias += 1;
            }
            return;
        };
        let track = self
            .tracks
            .get_mut(&track_id)
            .expect("alias maps to a live track");
        // A part after the first continues an object already counted.
        let starts = object.part.is_none_or(|p| p.is_first());
        if starts {
            self.stats.objects_in += 1;
            track.largest = track.largest.max(Some(object.location));
        }
        // The cache keeps its own copy: a payload decoded in place is a
        // slice of a receive buffer (a 256 KiB arena chunk, a large object
        // buffer) that it would otherwise keep alive, unaccounted. (Parts
        // are copied as the cache collects them.)
        let object = match object.part {
            None => CachedObject {
                payload: Bytes::copy_from_slice(&object.payload),
                ..object
            },
            Some(_) => object,
        };
        let before = track.cache.bytes();
        match track.cache.insert(object.clone()) {
            Inserted::Stored { .. } | Inserted::Duplicate | Inserted::Collecting => {}
            Inserted::NotCollected if !starts => {}
            _ => self.stats.objects_not_cached += 1,
        }
        self.cache_bytes = self.cache_bytes + track.cache.bytes() - before;
        for d in &track.subscribers {
            let passes = d.established
                && d.forward
                && object.location >= d.start
                && d.end_group.is_none_or(|end| object.location.group <= end);
            if passes {
                self.stats.objects_out += u64::from(starts);
                self.actions.push_back(Action::Object {
                    session: d.session,
                    request: d.request,
                    object: object.clone(),
                });
            }
        }
        if self.cache_bytes > self.config.cache_bytes_total {
            self.reclaim_cache();
        }
    }

    /// The publisher finished (or, with `reset`, reset) subgroup (`group`,
    /// `subgroup`) of upstream alias `alias`: every established downstream
    /// subscription finishes (or resets) its copy of that stream.
    pub fn subgroup_ended(
        &mut self,
        publisher: SessionId,
        alias: u64,
        group: u64,
        subgroup: u64,
        reset: Option<StreamResetCode>,
    ) {
        let Some(track) = self
            .by_upstream_alias
            .get(&(publisher, alias))
            .and_then(|t| self.tracks.get_mut(t))
        else {
            if self.awaits_answer_from(publisher) {
                let e = Early::SubgroupEnded {
                    group,
                    subgroup,
                    reset,
                };
                self.early.push(publisher, alias, e);
            }
            return;
        };
        let before = track.cache.bytes();
        track.cache.subgroup_ended(group, subgroup);
        self.cache_bytes = self.cache_bytes + track.cache.bytes() - before;
        for d in track
            .subscribers
            .iter()
            .filter(|d| d.established && d.forward)
        {
            self.actions.push_back(Action::EndSubgroup {
                session: d.session,
                request: d.request,
                group,
                subgroup,
                reset,
            });
        }
    }

    /// The largest location known for the track behind a subscription.
    pub fn largest_for(&self, session: SessionId, request: RequestId) -> Option<Location> {
        let track = self.sessions.get(&session)?.subscriptions.get(&request)?;
        self.tracks.get(track)?.largest
    }

    /// A downstream subscriber cancelled its subscription.
    pub fn unsubscribe(&mut self, session: SessionId, request: RequestId) {
        if let Some(state) = self.sessions.get_mut(&session) {
            state.waiting.retain(|w| w.request != request);
        }
        let Some(track_id) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.subscriptions.remove(&request))
        else {
            return;
        };
        self.drop_subscriber(track_id, session, request);
    }

    fn drop_subscriber(&mut self, track_id: TrackId, session: SessionId, request: RequestId) {
        let Some(track) = self.tracks.get_mut(&track_id) else {
            return;
        };
        track
            .subscribers
            .retain(|d| !(d.session == session && d.request == request));
        track
            .status_waiters
            .retain(|(s, r)| !(*s == session && *r == request));
        if track.unused() {
            // Last one out: end the upstream subscription (§9.4).
            self.remove_unused(track_id);
        }
    }

    /// Drops a track nobody needs and ends its upstream subscription. A
    /// still pending upstream SUBSCRIBE is cancelled when its answer comes
    /// (the track is then unknown and the glue cancels it).
    fn remove_unused(&mut self, track_id: TrackId) {
        let Some(track) = self.tracks.remove(&track_id) else {
            return;
        };
        self.cache_bytes -= track.cache.bytes();
        self.by_name.remove(&track.name);
        if let Upstream::Established { request, alias } = track.upstream {
            self.by_upstream_alias.remove(&(track.publisher, alias));
            self.actions.push_back(Action::UnsubscribeUpstream {
                publisher: track.publisher,
                request,
            });
        }
    }

    /// The session is gone (closed, lost, or closed for a violation): free
    /// everything it held; its tracks end for their subscribers.
    pub fn session_closed(&mut self, session: SessionId) {
        self.early.forget_session(session);
        let Some(state) = self.sessions.remove(&session) else {
            return;
        };
        for (request, track) in state.subscriptions {
            self.drop_subscriber(track, session, request);
        }
        let published: Vec<TrackId> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.publisher == session)
            .map(|(id, _)| *id)
            .collect();
        for track in published {
            self.end_track(
                track,
                Some(RequestErrorCode::DoesNotExist),
                PublishDoneCode::TrackEnded,
            );
        }
        for (namespace, _) in state.published {
            self.namespace_gone(session, &namespace);
        }
        self.actions
            .retain(|a| !matches!(a, Action::Object { session: s, .. } if *s == session));
    }

    fn refuse(
        &mut self,
        session: SessionId,
        request: RequestId,
        code: RequestErrorCode,
        reason: &'static str,
    ) {
        self.actions.push_back(Action::RequestError {
            session,
            request,
            code,
            reason,
        });
    }
}

/// Fixes a subscription's start from its filter and the track's largest
/// object (§5.1.2), and answers SUBSCRIBE_OK.
fn establish(
    d: &mut Downstream,
    largest: Option<Location>,
    properties: &Properties,
    actions: &mut VecDeque<Action>,
) {
    if d.established {
        return;
    }
    d.start(largest);
    actions.push_back(Action::SubscribeOk {
        session: d.session,
        request: d.request,
        largest,
        properties: properties.clone(),
    });
}

/// The subscription's start and end from its filter and the track's
/// Largest Object now (§5.1.2).
fn apply_filter(d: &mut Downstream, largest: Option<Location>) {
    d.end_group = None;
    let after_largest = largest
        .map(|l| Location::new(l.group, l.object + 1))
        .unwrap_or_default();
    match d.filter {
        SubscriptionFilter::LargestObject => d.start = after_largest,
        SubscriptionFilter::NextGroupStart => {
            d.start = largest
                .map(|l| Location::new(l.group + 1, 0))
                .unwrap_or_default()
        }
        SubscriptionFilter::AbsoluteStart { start } => d.start = start,
        SubscriptionFilter::AbsoluteRange {
            start,
            end_group_delta,
        } => {
            d.start = start;
            d.end_group = Some(start.group.saturating_add(end_group_delta));
        }
    }
}

/// What the cache of `track` answers for a FETCH of `start..=last`.
fn plan_fetch(
    track: &Track,
    start: Location,
    last: Location,
    order: GroupOrder,
) -> Result<FetchPlan, Refusal> {
    let Some(largest) = track.largest else {
        return Err((RequestErrorCode::InvalidRange, "nothing published yet"));
    };
    if start > largest {
        return Err((
            RequestErrorCode::InvalidRange,
            "start after the largest object",
        ));
    }
    let end = last.min(largest);
    // Locations before the first whole cached group are unknown here.
    let known = match track.cache.complete_from() {
        Some(group) => Location::new(group, 0),
        None => Location::new(u64::MAX, u64::MAX),
    };
    let unknown_through = (start < known).then(|| {
        let before_known = if known.group == 0 || known.group == u64::MAX {
            end
        } else {
            Location::new(known.group - 1, u64::MAX)
        };
        before_known.min(end)
    });
    let mut objects: Vec<CachedObject> =
        track.cache.range(start.max(known), end).cloned().collect();
    if order == GroupOrder::Descending {
        // Newest group first, objects ascending within each group: sort by
        // group descending (stable, so object order within a group stays).
        objects.sort_by_key(|o| std::cmp::Reverse(o.location.group));
    }
    Ok(FetchPlan {
        end,
        unknown_through,
        start,
        objects,
        properties: track.properties.clone(),
    })
}

/// Objects are shared, not copied: a helper for tests and the glue.
pub fn payload_is_shared(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
