//! Namespaces and pushed tracks: PUBLISH_NAMESPACE, SUBSCRIBE_NAMESPACE
//! and their withdrawals, tracks offered to namespace subscribers, and
//! subscriptions waiting for a publisher (rendezvous).

use std::time::{Duration, Instant};

use moqt::{FullTrackName, RequestErrorCode, SubscriptionFilter, TrackNamespace};

use super::{Action, Downstream, Engine, RequestId, SessionId, TrackId, Upstream};

impl Engine {
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
    pub(super) fn serve_waiting(&mut self, matches: impl Fn(&FullTrackName) -> bool) {
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
    pub(super) fn offer(
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
        self.retry_waiting(now);
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
    pub(super) fn namespace_gone(&mut self, publisher: SessionId, namespace: &TrackNamespace) {
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

    pub(super) fn publisher_for(
        &self,
        name: &FullTrackName,
        subscriber: SessionId,
    ) -> Option<SessionId> {
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
        self.local_publisher(name, subscriber)
            .or_else(|| self.link_for(subscriber))
    }

    /// [`publisher_for`](Self::publisher_for) among this relay's own
    /// publishers (this worker's sessions and the other workers).
    fn local_publisher(&self, name: &FullTrackName, subscriber: SessionId) -> Option<SessionId> {
        let from_worker = subscriber.is_worker();
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
}
