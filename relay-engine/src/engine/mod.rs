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
    FullTrackName, Location, Properties, PublishDoneCode, RequestErrorCode, StreamResetCode,
    SubscriptionFilter, TrackNamespace,
};

use crate::{
    cache::{CachedObject, TrackCache},
    early::EarlyBuffer,
};

pub use crate::ids::{RequestId, SessionId};

mod fetch;
mod links;
mod namespaces;
mod subscriptions;
mod upstream;

pub use links::LINK_RETRY;

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

impl Action {
    /// The session the action is for: the one to answer, notify or send
    /// to, or, for an upstream (un)subscription, the publisher.
    pub fn session(&self) -> SessionId {
        match self {
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
        }
    }
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
    /// The rendezvous deadline of the subscription that made the relay
    /// subscribe upstream (forwarded over a relay link).
    rendezvous: Option<Instant>,
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
            rendezvous: None,
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
    /// An upstream relay refused it while it still had time: asked again
    /// from then on (see `links`).
    retry_at: Option<Instant>,
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
    /// Links to upstream relays that are up: (configuration rank, session),
    /// by rank (`links`).
    links: Vec<(usize, SessionId)>,
    /// Sessions whose subscriptions are served from local publishers only:
    /// links, and relays that identified themselves as links (`links`).
    local_only: std::collections::HashSet<SessionId>,
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

    /// Removes `track` with what indexes it by name and counts its cache;
    /// the caller settles its subscribers and upstream subscription.
    fn take_track(&mut self, track: TrackId) -> Option<Track> {
        let t = self.tracks.remove(&track)?;
        self.cache_bytes -= t.cache.bytes();
        self.by_name.remove(&t.name);
        Some(t)
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

    /// The session is gone (closed, lost, or closed for a violation): free
    /// everything it held; its tracks end for their subscribers.
    pub fn session_closed(&mut self, session: SessionId) {
        self.early.forget_session(session);
        self.links.retain(|(_, s)| *s != session);
        self.local_only.remove(&session);
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

/// Objects are shared, not copied: a helper for tests and the glue.
pub fn payload_is_shared(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
