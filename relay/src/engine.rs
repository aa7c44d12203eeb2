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

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use moqt::{
    FullTrackName, Location, PublishDoneCode, RequestErrorCode, SubscriptionFilter, TrackNamespace,
};

use crate::cache::{CachedObject, Inserted, TrackCache};

/// A session (one QUIC connection) as the glue numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

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
    /// Most tracks relayed at once; further subscriptions get EXCESSIVE_LOAD.
    pub max_tracks: usize,
    /// Most subscriptions per session.
    pub max_subscriptions_per_session: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_bytes_per_track: 8 << 20,
            max_tracks: 4096,
            max_subscriptions_per_session: 1024,
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
        track_alias: u64,
        largest: Option<Location>,
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
    /// The publisher finished a subgroup stream: finish the matching
    /// stream of this downstream subscription.
    EndSubgroup {
        session: SessionId,
        request: RequestId,
        group: u64,
        subgroup: u64,
    },
    /// Send one object on a downstream subscription; `object.payload` is
    /// shared with every other subscriber of the track.
    Object {
        session: SessionId,
        request: RequestId,
        track_alias: u64,
        object: CachedObject,
    },
}

#[derive(Debug)]
struct Downstream {
    session: SessionId,
    request: RequestId,
    track_alias: u64,
    start: Location,
    /// Last group that passes (AbsoluteRange), inclusive.
    end_group: Option<u64>,
    filter: SubscriptionFilter,
    established: bool,
    /// The track's Largest Object when the subscription was established:
    /// where a Joining FETCH ends (§10.12.2.1).
    joining_location: Option<Location>,
}

#[derive(Debug)]
enum Upstream {
    Pending,
    Established { request: RequestId, alias: u64 },
}

#[derive(Debug)]
struct Track {
    name: FullTrackName,
    publisher: SessionId,
    upstream: Upstream,
    cache: TrackCache,
    largest: Option<Location>,
    subscribers: Vec<Downstream>,
}

#[derive(Debug, Default)]
struct SessionState {
    /// Namespaces this session published, with their request IDs.
    published: Vec<(TrackNamespace, RequestId)>,
    /// Namespace subscriptions of this session: (request, prefix).
    namespace_subscriptions: Vec<(RequestId, TrackNamespace)>,
    /// Downstream subscriptions of this session.
    subscriptions: HashMap<RequestId, TrackId>,
    next_track_alias: u64,
}

/// Relay-wide counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub objects_in: u64,
    pub objects_out: u64,
    pub objects_not_cached: u64,
    pub upstream_subscriptions: u64,
}

#[derive(Debug, Default)]
pub struct Engine {
    config: EngineConfig,
    sessions: HashMap<SessionId, SessionState>,
    tracks: HashMap<TrackId, Track>,
    by_name: HashMap<FullTrackName, TrackId>,
    /// (publisher session, upstream track alias) -> track.
    by_upstream_alias: HashMap<(SessionId, u64), TrackId>,
    next_track: u64,
    actions: VecDeque<Action>,
    stats: EngineStats,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Bytes held by all track caches.
    pub fn cache_bytes(&self) -> usize {
        self.tracks.values().map(|t| t.cache.bytes()).sum()
    }

    pub fn track_count(&self) -> usize {
        self.tracks.len()
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
        self.sessions
            .entry(session)
            .or_default()
            .published
            .push((namespace, request));
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

    fn publisher_for(&self, name: &FullTrackName, subscriber: SessionId) -> Option<SessionId> {
        // The longest published namespace that is a prefix of the track's.
        self.sessions
            .iter()
            .filter(|(s, _)| **s != subscriber)
            .flat_map(|(s, st)| st.published.iter().map(move |(ns, _)| (*s, ns)))
            .filter(|(_, ns)| name.namespace().starts_with(ns))
            .max_by_key(|(s, ns)| (ns.fields().len(), std::cmp::Reverse(s.0)))
            .map(|(s, _)| s)
    }

    /// SUBSCRIBE from `session`.
    pub fn subscribe(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: FullTrackName,
        filter: Option<SubscriptionFilter>,
    ) {
        let state = self.sessions.entry(session).or_default();
        // Checked before anything is created for the request.
        if state.subscriptions.contains_key(&request) {
            return self.refuse(
                session,
                request,
                RequestErrorCode::DuplicateSubscription,
                "request ID in use",
            );
        }
        if state.subscriptions.len() >= self.config.max_subscriptions_per_session {
            return self.refuse(
                session,
                request,
                RequestErrorCode::ExcessiveLoad,
                "too many subscriptions",
            );
        }
        let track_id = match self.by_name.get(&name) {
            Some(id) => *id,
            None => {
                let Some(publisher) = self.publisher_for(&name, session) else {
                    return self.refuse(
                        session,
                        request,
                        RequestErrorCode::DoesNotExist,
                        "no publisher for this track",
                    );
                };
                if self.tracks.len() >= self.config.max_tracks {
                    return self.refuse(
                        session,
                        request,
                        RequestErrorCode::ExcessiveLoad,
                        "too many tracks",
                    );
                }
                let id = TrackId(self.next_track);
                self.next_track += 1;
                self.tracks.insert(
                    id,
                    Track {
                        name: name.clone(),
                        publisher,
                        upstream: Upstream::Pending,
                        cache: TrackCache::new(self.config.cache_bytes_per_track),
                        largest: None,
                        subscribers: Vec::new(),
                    },
                );
                self.by_name.insert(name.clone(), id);
                self.stats.upstream_subscriptions += 1;
                self.actions.push_back(Action::SubscribeUpstream {
                    publisher,
                    track: id,
                    name,
                });
                id
            }
        };
        let state = self.sessions.get_mut(&session).expect("inserted above");
        let track_alias = state.next_track_alias;
        state.next_track_alias += 1;
        state.subscriptions.insert(request, track_id);
        let filter = filter.unwrap_or(SubscriptionFilter::AbsoluteStart {
            start: Location::new(0, 0),
        });
        let track = self.tracks.get_mut(&track_id).expect("track exists");
        let mut downstream = Downstream {
            session,
            request,
            track_alias,
            start: Location::new(0, 0),
            end_group: None,
            filter,
            established: false,
            joining_location: None,
        };
        if matches!(track.upstream, Upstream::Established { .. }) {
            establish(&mut downstream, track.largest, &mut self.actions);
        }
        track.subscribers.push(downstream);
    }

    /// The upstream SUBSCRIBE_OK for `track` arrived: objects on `alias` from
    /// `publisher` now belong to it.
    pub fn upstream_subscribed(
        &mut self,
        track: TrackId,
        request: RequestId,
        alias: u64,
        largest: Option<Location>,
    ) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        t.upstream = Upstream::Established { request, alias };
        t.largest = t.largest.max(largest);
        self.by_upstream_alias.insert((t.publisher, alias), track);
        for d in &mut t.subscribers {
            establish(d, t.largest, &mut self.actions);
        }
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
        self.by_name.remove(&t.name);
        if let Upstream::Established { alias, .. } = t.upstream {
            self.by_upstream_alias.remove(&(t.publisher, alias));
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
            return; // unknown alias: the session layer already judged it
        };
        let track = self
            .tracks
            .get_mut(&track_id)
            .expect("alias maps to a live track");
        self.stats.objects_in += 1;
        track.largest = track.largest.max(Some(object.location));
        if !matches!(
            track.cache.insert(object.clone()),
            Inserted::Stored { .. } | Inserted::Duplicate
        ) {
            self.stats.objects_not_cached += 1;
        }
        for d in &track.subscribers {
            let passes = d.established
                && object.location >= d.start
                && d.end_group.is_none_or(|end| object.location.group <= end);
            if passes {
                self.stats.objects_out += 1;
                self.actions.push_back(Action::Object {
                    session: d.session,
                    request: d.request,
                    track_alias: d.track_alias,
                    object: object.clone(),
                });
            }
        }
    }

    /// The publisher finished subgroup (`group`, `subgroup`) of upstream
    /// alias `alias`: every established downstream subscription finishes its
    /// copy of that stream.
    pub fn subgroup_ended(&mut self, publisher: SessionId, alias: u64, group: u64, subgroup: u64) {
        let Some(track) = self
            .by_upstream_alias
            .get(&(publisher, alias))
            .and_then(|t| self.tracks.get(t))
        else {
            return;
        };
        for d in track.subscribers.iter().filter(|d| d.established) {
            self.actions.push_back(Action::EndSubgroup {
                session: d.session,
                request: d.request,
                group,
                subgroup,
            });
        }
    }

    /// Cached objects of the track `session` subscribed to with `request`,
    /// from `start` through `end` (inclusive): what a joining FETCH serves.
    pub fn cached_range(
        &self,
        session: SessionId,
        request: RequestId,
        start: Location,
        end: Location,
    ) -> Option<Vec<CachedObject>> {
        let track = self.sessions.get(&session)?.subscriptions.get(&request)?;
        Some(
            self.tracks
                .get(track)?
                .cache
                .range(start, end)
                .cloned()
                .collect(),
        )
    }

    /// The Joining Location of subscription `request` of `session`
    /// (§10.12.2.1): `None` if there is no such established subscription,
    /// `Some(None)` if nothing had been published when it was established.
    pub fn joining_location(
        &self,
        session: SessionId,
        request: RequestId,
    ) -> Option<Option<Location>> {
        let track = self.sessions.get(&session)?.subscriptions.get(&request)?;
        let d = self
            .tracks
            .get(track)?
            .subscribers
            .iter()
            .find(|d| d.session == session && d.request == request)?;
        d.established.then_some(d.joining_location)
    }

    /// The largest location known for the track behind a subscription.
    pub fn largest_for(&self, session: SessionId, request: RequestId) -> Option<Location> {
        let track = self.sessions.get(&session)?.subscriptions.get(&request)?;
        self.tracks.get(track)?.largest
    }

    /// A downstream subscriber cancelled its subscription.
    pub fn unsubscribe(&mut self, session: SessionId, request: RequestId) {
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
        if track.subscribers.is_empty() {
            // Last one out: end the upstream subscription (§9.4).
            let track = self.tracks.remove(&track_id).expect("present");
            self.by_name.remove(&track.name);
            if let Upstream::Established { request, alias } = track.upstream {
                self.by_upstream_alias.remove(&(track.publisher, alias));
                self.actions.push_back(Action::UnsubscribeUpstream {
                    publisher: track.publisher,
                    request,
                });
            }
        }
    }

    /// The session is gone (closed, lost, or closed for a violation): free
    /// everything it held; its tracks end for their subscribers.
    pub fn session_closed(&mut self, session: SessionId) {
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
            for (&other, st) in &self.sessions {
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
fn establish(d: &mut Downstream, largest: Option<Location>, actions: &mut VecDeque<Action>) {
    if d.established {
        return;
    }
    d.established = true;
    d.joining_location = largest;
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
    actions.push_back(Action::SubscribeOk {
        session: d.session,
        request: d.request,
        track_alias: d.track_alias,
        largest,
    });
}

/// Objects are shared, not copied: a helper for tests and the glue.
pub fn payload_is_shared(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}
