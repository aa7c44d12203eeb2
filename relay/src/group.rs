//! Cross-worker fan-out: every other worker of the group is, to this
//! worker's engine, one more session ([`SessionId::worker`]), so upstream
//! aggregation, filters, the cache, PUBLISH_DONE and last-subscriber-leaves
//! work across workers as they do across connections.
//!
//! - What each worker's sessions publish goes into the shared [`Directory`];
//!   every worker mirrors the other workers' entries into its engine as
//!   namespaces (and PUBLISH tracks) of their pseudo-sessions, so a
//!   SUBSCRIBE, TRACK_STATUS or SUBSCRIBE_NAMESPACE on worker B finds what a
//!   publisher on worker A offers.
//! - B's engine subscribing "upstream" to A's pseudo-session becomes a
//!   [`Control::Subscribe`] to A. A's engine takes it as one downstream
//!   subscriber (pseudo-session B), however many subscribers B has, and
//!   subscribes to the real publisher once if needed. A's answers
//!   (SUBSCRIBE_OK, REQUEST_ERROR, PUBLISH_DONE) travel back as control
//!   messages that B's engine takes as upstream answers.
//! - Each object A's engine sends to pseudo-session B becomes one message on
//!   B's queue of the object's class (the payload `Bytes` is shared, not
//!   copied); B's engine takes it as an object from A and fans it out to
//!   B's subscribers. One hand-off per object per destination worker.
//! - The cross-worker request number is also the alias of the track on A's
//!   pseudo-session in B's engine: no mapping table on the object path.
//!
//! Ordering: each queue is FIFO, but control and objects travel apart. An
//! object for a subscription still waiting for its answer proves the answer
//! was sent, so the receiver first catches up on control messages; before a
//! `Done` it takes the objects already queued, so the last objects are not
//! cut off by a PUBLISH_DONE that overtook them.
//!
//! Losses: a full inbox drops the least important, oldest object (counted
//! per class, see [`crate::crossworker`]); a dropped subgroup end leaves that subgroup's stream open downstream until
//! the subscription ends. Control messages are never dropped unless a
//! destination stops draining for its whole backlog
//! ([`crate::crossworker::QueueConfig::backlog_limit`]); then a lost
//! `Subscribe` or `Subscribed` leaves B's subscribers waiting for
//! SUBSCRIBE_OK until they give up, a lost `Unsubscribe` keeps A sending
//! objects B drops, and a lost `Done` leaves B's subscribers without
//! PUBLISH_DONE: each costs only the subscriptions involved.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use anyhow::Context;
use dataplane::handoff::GroupWaker;
use moqt::{StreamResetCode, SubscriptionFilter};

use crate::{
    crossworker::{
        class_of, Control, CrossWorker, CrossWorkerCounters, CrossWorkerStats, Data, Msg,
        QueueConfig, QueueGroup,
    },
    directory::{Directory, Entry, Published},
    engine::{Action, Engine, RequestId, SessionId, TrackId},
};

/// Class of a subgroup end whose objects were never seen here: the default
/// publisher priority's class.
const DEFAULT_CLASS: usize = 2;

/// Builds the queues and the directory of a relay group once;
/// [`split`](Self::split) gives each worker its [`RelayPart`].
pub struct RelayGroup {
    queues: QueueGroup,
    directory: Arc<Directory>,
}

impl RelayGroup {
    pub fn new(workers: usize, queues: QueueConfig) -> anyhow::Result<Self> {
        Ok(Self {
            queues: QueueGroup::new(workers, queues).context("building cross-worker queues")?,
            directory: Arc::new(Directory::new()),
        })
    }

    /// One part per worker, index `i` at position `i`.
    pub fn split(self) -> Vec<RelayPart> {
        let directory = self.directory;
        self.queues
            .split()
            .into_iter()
            .map(|queues| RelayPart {
                queues,
                directory: directory.clone(),
            })
            .collect()
    }
}

/// What one worker's relay holds of its group.
pub struct RelayPart {
    queues: CrossWorker,
    directory: Arc<Directory>,
}

impl RelayPart {
    pub fn index(&self) -> usize {
        self.queues.index()
    }

    /// Wakes sleeping workers after pushes (from their dataplane group).
    pub fn set_waker(&mut self, waker: GroupWaker) {
        self.queues.set_waker(waker);
    }

    pub fn workers(&self) -> usize {
        self.queues.workers()
    }

    pub fn stats(&self) -> Arc<CrossWorkerStats> {
        self.queues.stats()
    }
}

/// The cross-worker side of one worker's relay (inside [`crate::app::RelayApp`]).
pub(crate) struct Peers {
    queues: CrossWorker,
    directory: Arc<Directory>,
    /// Directory version mirrored into the engine.
    seen_version: u64,
    /// Other workers' directory entries mirrored into the engine, by id.
    mirrored: HashMap<u64, Entry>,
    /// Our subscriptions to other workers: (worker, request) -> (track,
    /// answered).
    upstream: HashMap<(usize, u64), (TrackId, bool)>,
    next_request: u64,
    /// Other workers' subscriptions to us: (worker, request) -> class of
    /// the last object sent, where its subgroup ends follow.
    classes: HashMap<(usize, u64), usize>,
}

impl Peers {
    pub(crate) fn new(part: RelayPart) -> Self {
        Self {
            queues: part.queues,
            directory: part.directory,
            // Never a real version: the first poll mirrors the directory.
            seen_version: u64::MAX,
            mirrored: HashMap::new(),
            upstream: HashMap::new(),
            next_request: 0,
            classes: HashMap::new(),
        }
    }

    pub(crate) fn counters(&self) -> CrossWorkerCounters {
        self.queues.counters()
    }

    fn index(&self) -> usize {
        self.queues.index()
    }

    /// Our session published something other workers should see.
    pub(crate) fn published(&self, session: SessionId, request: RequestId, what: Published) {
        self.directory.add(self.index(), session, request, what);
    }

    /// Our session withdrew `request` (if it was a publication at all).
    pub(crate) fn withdrawn(&self, session: SessionId, request: RequestId) {
        self.directory.remove(self.index(), session, request);
    }

    pub(crate) fn session_gone(&self, session: SessionId) {
        self.directory.remove_session(self.index(), session);
    }

    /// Mirrors other workers' publications into the engine when the
    /// directory changed. Returns whether it did.
    pub(crate) fn sync_directory(&mut self, engine: &mut Engine) -> bool {
        if self.directory.version() == self.seen_version {
            return false;
        }
        let (version, entries) = self.directory.others(self.index());
        self.seen_version = version;
        let current: HashSet<u64> = entries.iter().map(|e| e.id).collect();
        let gone: Vec<u64> = self
            .mirrored
            .keys()
            .filter(|id| !current.contains(id))
            .copied()
            .collect();
        for id in gone {
            let e = self.mirrored.remove(&id).expect("listed above");
            let peer = SessionId::worker(e.worker);
            match e.what {
                Published::Namespace(_) => engine.withdraw_namespace(peer, RequestId(id)),
                Published::Track(name) => engine.set_remote_track(name, None),
            }
        }
        for e in entries {
            let peer = SessionId::worker(e.worker);
            match &e.what {
                // Set again every time: another worker may have pushed the
                // same track and just withdrawn it.
                Published::Track(name) => engine.set_remote_track(name.clone(), Some(peer)),
                Published::Namespace(ns) if !self.mirrored.contains_key(&e.id) => {
                    engine.session_opened(peer);
                    engine.publish_namespace(peer, RequestId(e.id), ns.clone());
                }
                Published::Namespace(_) => {}
            }
            self.mirrored.insert(e.id, e);
        }
        true
    }

    /// Carries out an engine action addressed to another worker's
    /// pseudo-session.
    pub(crate) fn on_action(&mut self, to: usize, action: Action) {
        let q = &mut self.queues;
        match action {
            Action::Object {
                request, object, ..
            } => {
                let class = class_of(&object);
                let key = (to, request.0);
                if self.classes.get(&key) != Some(&class) {
                    self.classes.insert(key, class);
                }
                q.push_data(
                    to,
                    class,
                    Data::Object {
                        request: request.0,
                        object,
                    },
                );
            }
            Action::EndSubgroup {
                request,
                group,
                subgroup,
                reset,
                ..
            } => {
                let class = self
                    .classes
                    .get(&(to, request.0))
                    .copied()
                    .unwrap_or(DEFAULT_CLASS);
                q.push_data(
                    to,
                    class,
                    Data::EndSubgroup {
                        request: request.0,
                        group,
                        subgroup,
                        reset,
                    },
                );
            }
            Action::SubscribeUpstream { track, name, .. } => {
                let request = self.next_request;
                self.next_request += 1;
                self.upstream.insert((to, request), (track, false));
                q.push_control(to, Control::Subscribe { request, name });
            }
            Action::UnsubscribeUpstream { request, .. } => {
                self.upstream.remove(&(to, request.0));
                q.push_control(to, Control::Unsubscribe { request: request.0 });
            }
            Action::SubscribeOk {
                request,
                largest,
                properties,
                ..
            } => q.push_control(
                to,
                Control::Subscribed {
                    request: request.0,
                    largest,
                    properties,
                },
            ),
            Action::RequestError { request, code, .. } => {
                self.classes.remove(&(to, request.0));
                q.push_control(
                    to,
                    Control::Refused {
                        request: request.0,
                        code,
                    },
                );
            }
            Action::PublishDone { request, code, .. } => {
                self.classes.remove(&(to, request.0));
                q.push_control(
                    to,
                    Control::Done {
                        request: request.0,
                        code,
                    },
                );
            }
            // A pseudo-session never publishes, asks for TRACK_STATUS or
            // subscribes to namespaces: nothing else is addressed to one.
            other => {
                tracing::debug!(to, action = ?other, "unexpected action for a peer worker");
            }
        }
    }

    /// Feeds the next message from other workers to the engine. Returns
    /// false when the inbox is empty.
    pub(crate) fn ingest_one(&mut self, engine: &mut Engine) -> bool {
        if let Some(m) = self.queues.take_control() {
            self.on_control(engine, m, true);
            return true;
        }
        if let Some(m) = self.queues.take_data() {
            self.on_data(engine, m, true);
            return true;
        }
        false
    }

    fn on_data(&mut self, engine: &mut Engine, m: Msg<Data>, catch_up: bool) {
        let peer = SessionId::worker(m.from);
        let request = match &m.body {
            Data::Object { request, .. } | Data::EndSubgroup { request, .. } => *request,
        };
        if catch_up && matches!(self.upstream.get(&(m.from, request)), Some((_, false))) {
            // The answer was sent before this object: take it first.
            while let Some(c) = self.queues.take_control() {
                self.on_control(engine, c, false);
            }
        }
        match m.body {
            Data::Object { object, .. } => engine.object(peer, request, object),
            Data::EndSubgroup {
                group,
                subgroup,
                reset,
                ..
            } => engine.subgroup_ended(peer, request, group, subgroup, reset),
        }
    }

    fn on_control(&mut self, engine: &mut Engine, m: Msg<Control>, catch_up: bool) {
        let from = m.from;
        let peer = SessionId::worker(from);
        match m.body {
            Control::Subscribe { request, name } => {
                engine.subscribe(
                    peer,
                    RequestId(request),
                    name,
                    Some(SubscriptionFilter::LargestObject),
                );
            }
            Control::Unsubscribe { request } => {
                self.classes.remove(&(from, request));
                engine.unsubscribe(peer, RequestId(request));
            }
            Control::Subscribed {
                request,
                largest,
                properties,
            } => {
                let wanted = match self.upstream.get_mut(&(from, request)) {
                    Some((track, answered)) => {
                        *answered = true;
                        engine.upstream_subscribed(
                            *track,
                            RequestId(request),
                            request,
                            largest,
                            properties,
                        )
                    }
                    None => false,
                };
                if !wanted {
                    // Everyone left while the subscription was under way.
                    self.upstream.remove(&(from, request));
                    self.queues
                        .push_control(from, Control::Unsubscribe { request });
                }
            }
            Control::Refused { request, code } => {
                if let Some((track, _)) = self.upstream.remove(&(from, request)) {
                    engine.upstream_failed(track, code);
                }
            }
            Control::SubgroupLost {
                origin,
                request,
                group,
                subgroup,
            } => {
                if catch_up {
                    // What of the subgroup arrived goes out before its reset.
                    while let Some(d) = self.queues.take_data() {
                        self.on_data(engine, d, false);
                    }
                }
                engine.subgroup_ended(
                    SessionId::worker(origin),
                    request,
                    group,
                    subgroup,
                    Some(StreamResetCode::ExcessiveLoad),
                );
            }
            Control::Done { request, code } => {
                if catch_up {
                    // Objects sent before the end go out before PUBLISH_DONE.
                    while let Some(d) = self.queues.take_data() {
                        self.on_data(engine, d, false);
                    }
                }
                if self.upstream.remove(&(from, request)).is_some() {
                    engine.upstream_done(peer, request, code);
                }
            }
        }
    }

    /// Wakes the workers pushed to since the last call.
    pub(crate) fn flush(&mut self) {
        self.queues.flush_wakes();
    }

    /// Retries backlogged control messages and publishes the counters.
    pub(crate) fn housekeeping(&mut self) -> bool {
        let moved = self.queues.retry_backlog();
        self.queues.publish_stats();
        moved
    }

    /// Messages wait for this worker (or its backlog for others: a worker
    /// with a backlog stays awake to retry it, which only happens while a
    /// destination is not draining its control queue).
    pub(crate) fn pending(&self) -> bool {
        self.queues.pending()
    }
}

#[cfg(test)]
mod tests {
    //! Two engines joined by their queues, without QUIC: the ordering rules
    //! between the control queue and the object queues.

    use bytes::Bytes;
    use moqt::{
        FullTrackName, Location, ObjectStatus, Properties, PublishDoneCode, TrackNamespace,
    };

    use super::*;
    use crate::{cache::CachedObject, engine::EngineConfig};

    const PUB: SessionId = SessionId(1);
    const SUB: SessionId = SessionId(2);

    fn ns() -> TrackNamespace {
        TrackNamespace::new([Bytes::from_static(b"live")]).unwrap()
    }

    fn name() -> FullTrackName {
        FullTrackName::new(ns(), Bytes::from_static(b"video")).unwrap()
    }

    fn obj(object: u64) -> CachedObject {
        CachedObject {
            location: Location::new(0, object),
            subgroup: 0,
            datagram: false,
            publisher_priority: 128,
            explicit_priority: true,
            end_of_group: false,
            first_object: false,
            status: ObjectStatus::Normal,
            properties: Properties::new(),
            payload: Bytes::from_static(b"x"),
            part: None,
        }
    }

    fn drain(e: &mut Engine) -> Vec<Action> {
        std::iter::from_fn(|| e.poll_action()).collect()
    }

    /// Runs `e`'s actions for peer workers through `p`; returns the rest.
    fn route(p: &mut Peers, e: &mut Engine) -> Vec<Action> {
        let mut local = Vec::new();
        for a in drain(e) {
            let target = match &a {
                Action::SubscribeUpstream { publisher, .. }
                | Action::UnsubscribeUpstream { publisher, .. } => *publisher,
                Action::SubscribeOk { session, .. }
                | Action::Object { session, .. }
                | Action::PublishDone { session, .. }
                | Action::EndSubgroup { session, .. }
                | Action::RequestError { session, .. } => *session,
                _ => SessionId(0),
            };
            match target.worker_index() {
                Some(w) => p.on_action(w, a),
                None => local.push(a),
            }
        }
        local
    }

    fn kinds(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .map(|a| match a {
                Action::SubscribeOk { .. } => "ok",
                Action::Object { .. } => "object",
                Action::PublishDone { .. } => "done",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn an_early_object_waits_for_its_answer_and_a_done_for_earlier_objects() {
        let mut parts = RelayGroup::new(2, QueueConfig::default())
            .unwrap()
            .split()
            .into_iter();
        let (mut pa, mut pb) = (
            Peers::new(parts.next().unwrap()),
            Peers::new(parts.next().unwrap()),
        );
        let mut ea = Engine::new(EngineConfig::default());
        let mut eb = Engine::new(EngineConfig::default());
        ea.session_opened(PUB);
        ea.publish_namespace(PUB, RequestId(0), ns());
        pa.published(PUB, RequestId(0), Published::Namespace(ns()));
        assert!(pb.sync_directory(&mut eb));
        assert!(!pb.sync_directory(&mut eb));

        // B subscribes through A's pseudo-session; A subscribes upstream.
        eb.subscribe(SUB, RequestId(0), name(), None);
        assert_eq!(route(&mut pb, &mut eb), []);
        assert!(pa.ingest_one(&mut ea));
        let [Action::SubscribeUpstream {
            publisher, track, ..
        }] = route(&mut pa, &mut ea)[..]
        else {
            panic!("A did not subscribe upstream");
        };
        assert_eq!(publisher, PUB);
        ea.upstream_subscribed(track, RequestId(1), 7, None, Properties::new());
        ea.object(PUB, 7, obj(0));
        assert_eq!(route(&mut pa, &mut ea), []);

        // B takes the object before it looked at its control queue: the
        // answer queued before it is taken first.
        let early = pb.queues.take_data().unwrap();
        pb.on_data(&mut eb, early, true);
        assert_eq!(kinds(&route(&mut pb, &mut eb)), ["ok", "object"]);

        // The publisher leaves right after another object: B's subscriber
        // gets the object before PUBLISH_DONE, although B looks at its
        // control queue first.
        ea.object(PUB, 7, obj(1));
        ea.session_closed(PUB);
        assert_eq!(route(&mut pa, &mut ea), []);
        while pb.ingest_one(&mut eb) {}
        let local = route(&mut pb, &mut eb);
        assert_eq!(kinds(&local), ["object", "done"]);
        assert!(matches!(
            local[1],
            Action::PublishDone {
                code: PublishDoneCode::TrackEnded,
                ..
            }
        ));
        assert_eq!(eb.track_count(), 0);
        assert_eq!(pb.counters().objects_in, 2);
        assert_eq!(pa.counters().objects_out, 2);
    }
}
