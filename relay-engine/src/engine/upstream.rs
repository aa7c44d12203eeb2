//! What comes from publishers: upstream answers, objects and their
//! fan-out, ended subgroups and tracks, and subscribers leaving.

use bytes::Bytes;
use moqt::{Location, Properties, PublishDoneCode, RequestErrorCode, StreamResetCode};

use super::{establish, Action, Engine, RequestId, SessionId, TrackId, Upstream};
use crate::{
    cache::{CachedObject, Inserted},
    early::Early,
};

impl Engine {
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
    pub(super) fn replay_early(&mut self, publisher: SessionId, alias: u64) {
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
    pub(super) fn awaits_answer_from(&self, publisher: SessionId) -> bool {
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

    pub(super) fn end_track(
        &mut self,
        track: TrackId,
        refuse: Option<RequestErrorCode>,
        done: PublishDoneCode,
    ) {
        let Some(t) = self.take_track(track) else {
            return;
        };
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

    pub(super) fn drop_subscriber(
        &mut self,
        track_id: TrackId,
        session: SessionId,
        request: RequestId,
    ) {
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
    pub(super) fn remove_unused(&mut self, track_id: TrackId) {
        let Some(track) = self.take_track(track_id) else {
            return;
        };
        if let Upstream::Established { request, alias } = track.upstream {
            self.by_upstream_alias.remove(&(track.publisher, alias));
            self.actions.push_back(Action::UnsubscribeUpstream {
                publisher: track.publisher,
                request,
            });
        }
    }
}
