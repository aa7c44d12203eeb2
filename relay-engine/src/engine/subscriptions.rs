//! Downstream subscriptions: SUBSCRIBE (served, aggregated upstream or
//! waiting), PUBLISH, TRACK_STATUS, forward state and filter updates.

use std::time::Instant;

use moqt::{
    FullTrackName, Location, Properties, RequestErrorCode, SubscriptionFilter, TrackNamespace,
};

use super::{
    apply_filter, establish, Action, Downstream, Engine, RequestId, SessionId, Track, TrackId,
    Upstream, Waiting,
};

impl Engine {
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
                    retry_at: None,
                });
                return;
            }
        }
        let Some(track_id) = self.relayed_track(session, request, name) else {
            return;
        };
        if let Some(track) = self.tracks.get_mut(&track_id) {
            if !track.is_live() && track.rendezvous.is_none() {
                track.rendezvous = rendezvous;
            }
        }
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
    pub(super) fn relayed_track(
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
    pub(super) fn refused_over_track_limit(
        &mut self,
        session: SessionId,
        request: RequestId,
    ) -> bool {
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
    pub(super) fn add_track(
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

    pub(super) fn subscribe_upstream(
        &mut self,
        publisher: SessionId,
        name: FullTrackName,
    ) -> TrackId {
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

    pub(super) fn waiting_mut(
        &mut self,
        session: SessionId,
        request: RequestId,
    ) -> Option<&mut Waiting> {
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

    pub(super) fn downstream_mut(
        &mut self,
        session: SessionId,
        request: RequestId,
    ) -> Option<&mut Downstream> {
        self.downstream_and_largest(session, request)
            .map(|(d, _)| d)
    }

    /// A downstream subscription and its track's Largest Object.
    pub(super) fn downstream_and_largest(
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
}
