//! FETCH served from the cache: standalone and joining, planned against
//! what the track's cache holds.

use moqt::{FullTrackName, GroupOrder, Location, RequestErrorCode};

use super::{Engine, FetchPlan, Refusal, RequestId, SessionId, Track};
use crate::cache::CachedObject;

impl Engine {
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
    pub(super) fn joining(
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
}

/// What the cache of `track` answers for a FETCH of `start..=last`.
pub(super) fn plan_fetch(
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
