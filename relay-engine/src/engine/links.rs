//! Links to upstream relays (relay chaining): sessions this relay opened to
//! other relays, used as the publisher of last resort, and the loop rule.
//!
//! A track whose namespace no local publisher serves (no session of this
//! worker, no other worker) is subscribed upstream over the first link that
//! is up, in configuration order. Loop rule: a subscription that arrives
//! over a link, or from a session that identified itself as a relay link in
//! its SETUP ([`Engine::serve_locally`]), is served only from local
//! publishers, never forwarded to a link. So a request crosses at most one
//! relay-to-relay hop per relay it enters from a client, and two relays
//! that are each other's upstream answer each other from what they hold
//! (or wait for a local publisher within the rendezvous) instead of
//! passing a SUBSCRIBE back and forth.

use std::time::{Duration, Instant};

use moqt::RequestErrorCode;

use super::{Action, Engine, SessionId, TrackId, Waiting};

/// How long a subscription waits before asking an upstream relay again
/// that refused it (DOES_NOT_EXIST) within its rendezvous: relays that do
/// not hold a SUBSCRIBE for a publisher still to come (moq-relay 0.17)
/// are asked again, at most this often per track, until the rendezvous
/// ends.
pub const LINK_RETRY: Duration = Duration::from_millis(500);

impl Engine {
    /// The link session `session` (an upstream relay, `rank` its place in
    /// the configuration) is ready: tracks nobody here publishes go to it.
    /// Subscriptions arriving over it are served locally only. Waiting
    /// subscriptions (RENDEZVOUS_TIMEOUT) of other sessions go upstream now.
    pub fn link_up(&mut self, session: SessionId, rank: usize) {
        self.local_only.insert(session);
        self.links.retain(|(_, s)| *s != session);
        let at = self.links.partition_point(|(r, _)| *r <= rank);
        self.links.insert(at, (rank, session));
        let local_only = &self.local_only;
        let mut waiting = false;
        for (s, state) in &self.sessions {
            waiting |= !local_only.contains(s) && !s.is_worker() && !state.waiting.is_empty();
        }
        if waiting {
            self.serve_waiting_upstream();
        }
    }

    /// The link is going away (GOAWAY, closing): no new track goes to it;
    /// tracks already subscribed through it go on until it ends them.
    pub fn link_down(&mut self, session: SessionId) {
        self.links.retain(|(_, s)| *s != session);
    }

    /// Subscriptions from `session` (a relay that identified itself as a
    /// link in its SETUP) are served from local publishers only.
    pub fn serve_locally(&mut self, session: SessionId) {
        self.local_only.insert(session);
    }

    /// Whether subscriptions from `session` are served locally only.
    pub fn is_local_only(&self, session: SessionId) -> bool {
        self.local_only.contains(&session)
    }

    /// Links up, in configuration order.
    pub fn links(&self) -> impl Iterator<Item = SessionId> + '_ {
        self.links.iter().map(|(_, s)| *s)
    }

    /// The link a subscription of `subscriber` for a track with no local
    /// publisher goes to, if any (see the module docs for the loop rule).
    pub(super) fn link_for(&self, subscriber: SessionId) -> Option<SessionId> {
        if subscriber.is_worker() || self.local_only.contains(&subscriber) {
            return None;
        }
        self.links
            .iter()
            .map(|(_, s)| *s)
            .find(|s| *s != subscriber)
    }

    /// When the downstream subscription that made the relay subscribe
    /// upstream for `track` gives up waiting for a publisher
    /// (RENDEZVOUS_TIMEOUT): forwarded to the upstream relay, so a
    /// subscriber that arrives first is served when the publisher arrives
    /// at the origin.
    pub fn upstream_rendezvous(&self, track: TrackId) -> Option<Instant> {
        self.tracks.get(&track).and_then(|t| t.rendezvous)
    }

    /// The link that `track` was subscribed through refused it with
    /// DOES_NOT_EXIST. While the subscription that asked still has
    /// rendezvous time left, its subscribers wait again and the link is
    /// asked again after [`LINK_RETRY`] (or when a publisher or a link
    /// turns up); returns `false` (nothing done: refuse as usual) otherwise.
    pub fn retry_upstream_later(&mut self, track: TrackId, now: Instant) -> bool {
        let Some(t) = self.tracks.get(&track) else {
            return false;
        };
        let retry_at = now + LINK_RETRY;
        let retry = t.rendezvous.is_some_and(|d| d > retry_at)
            && !t.is_live()
            && self.links.iter().any(|(_, s)| *s == t.publisher);
        if !retry {
            return false;
        }
        let t = self.take_track(track).expect("checked above");
        let deadline = t.rendezvous.expect("checked above");
        for (session, request) in t.status_waiters {
            self.actions.push_back(Action::RequestError {
                session,
                request,
                code: RequestErrorCode::DoesNotExist,
                reason: "no publisher for this track",
            });
        }
        for d in t.subscribers {
            if let Some(state) = self.sessions.get_mut(&d.session) {
                state.subscriptions.remove(&d.request);
                state.waiting.push(Waiting {
                    request: d.request,
                    name: t.name.clone(),
                    filter: Some(d.filter),
                    forward: d.forward,
                    deadline,
                    retry_at: Some(retry_at),
                });
            }
        }
        true
    }

    /// Subscriptions refused upstream whose retry is due ask again.
    pub(super) fn retry_waiting(&mut self, now: Instant) {
        let mut due = Vec::new();
        for (&session, state) in &mut self.sessions {
            let mut i = 0;
            while i < state.waiting.len() {
                let w = &state.waiting[i];
                if w.retry_at.is_some_and(|r| r <= now) && w.deadline > now {
                    due.push((session, state.waiting.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
        }
        for (session, w) in due {
            self.resume_waiting(session, w);
        }
    }

    /// A waiting subscription asks again (a local publisher, another
    /// worker, a link, or it waits on), keeping its forward state.
    fn resume_waiting(&mut self, session: SessionId, w: Waiting) {
        self.subscribe_or_wait(session, w.request, w.name, w.filter, Some(w.deadline));
        if !w.forward {
            self.set_forward(session, w.request, false);
        }
    }

    /// Waiting subscriptions of sessions a link may serve go upstream.
    fn serve_waiting_upstream(&mut self) {
        let mut ready = Vec::new();
        for (&session, state) in &mut self.sessions {
            if session.is_worker() || self.local_only.contains(&session) {
                continue;
            }
            ready.extend(state.waiting.drain(..).map(|w| (session, w)));
        }
        ready.sort_by_key(|(_, w)| w.deadline);
        for (session, w) in ready {
            self.resume_waiting(session, w);
        }
    }
}
