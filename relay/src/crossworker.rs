//! Lock-free queues between the relay engines of one process's workers.
//!
//! Every worker has an inbox made of one control queue and [`CLASSES`]
//! object queues (crossbeam bounded channels: `try_send`/`try_recv` are
//! lock-free and never block). Any worker pushes into any other's inbox;
//! only the owner drains it.
//!
//! Objects are sorted into classes by publisher priority (lower value =
//! more important, §7), datagrams last. The owner drains the most important
//! class first. All classes of one inbox share one budget of
//! [`QueueConfig::object_capacity`] messages. A push into a full inbox
//! evicts the oldest message of the least important class below its own,
//! or, when there is none, drops itself; either way the dropped message is
//! counted for its class. So the least important, oldest data goes first,
//! within a class the newest is refused (what is queued stays contiguous),
//! and the publisher's worker never waits.
//!
//! Control messages (subscribe, answers, done) must not be lost: one that
//! finds the destination's control queue full waits in a per-destination
//! backlog of the sender, retried every iteration in order. Only a backlog
//! over its limit (a destination that stopped draining) drops, counted in
//! `control_lost`; see [`crate::group`] for what that costs.

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use dataplane::handoff::GroupWaker;
use moqt::{FullTrackName, Location, PublishDoneCode, RequestErrorCode};

use crate::cache::CachedObject;

/// Object classes per destination: publisher priority 0-63, 64-127,
/// 128-255 on streams, then datagrams (their sender accepted loss).
pub const CLASSES: usize = 4;

/// The class of an object: 0 is drained first and dropped last.
pub fn class_of(object: &CachedObject) -> usize {
    if object.datagram {
        return CLASSES - 1;
    }
    match object.publisher_priority {
        0..=63 => 0,
        64..=127 => 1,
        _ => 2,
    }
}

/// Sizes of one worker's inbox.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Object-path messages per inbox, all classes together.
    pub object_capacity: usize,
    /// Control messages.
    pub control_capacity: usize,
    /// Control messages a sender keeps for one destination whose control
    /// queue is full before it drops them.
    pub backlog_limit: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            // A few iterations' worth of objects at high rates; deeper
            // queues only add latency to what will be late anyway.
            object_capacity: 4096,
            control_capacity: 4096,
            backlog_limit: 65_536,
        }
    }
}

/// An object-path message to one worker.
#[derive(Debug)]
pub enum Data {
    /// An object of the sender's subscription `request` (the receiver's
    /// upstream subscription to the sender).
    Object { request: u64, object: CachedObject },
    /// The publisher finished (`reset: None`) or reset this subgroup.
    EndSubgroup {
        request: u64,
        group: u64,
        subgroup: u64,
        reset: Option<moqt::StreamResetCode>,
    },
}

/// A control message to one worker. `request` numbers a cross-worker
/// subscription; the subscribing worker picks it.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Subscribe to track `name` on behalf of the sender.
    Subscribe { request: u64, name: FullTrackName },
    /// The sender no longer wants `request`.
    Unsubscribe { request: u64 },
    /// `request` is established; objects follow.
    Subscribed {
        request: u64,
        largest: Option<Location>,
        properties: moqt::Properties,
    },
    /// `request` was refused.
    Refused {
        request: u64,
        code: RequestErrorCode,
    },
    /// `request` ended (PUBLISH_DONE).
    Done { request: u64, code: PublishDoneCode },
    /// An object of subgroup (`group`, `subgroup`) of `origin`'s
    /// `request` was dropped on a full inbox: the receiver resets its
    /// copies of that subgroup rather than leave a silent gap in them.
    SubgroupLost {
        origin: usize,
        request: u64,
        group: u64,
        subgroup: u64,
    },
}

/// A message and the worker that sent it.
#[derive(Debug)]
pub struct Msg<T> {
    pub from: usize,
    pub body: T,
}

/// Both ends of one queue: every worker pushes, the owner drains (and a
/// pusher may evict, see [`CrossWorker::push_data`]).
type Queue<T> = (Sender<Msg<T>>, Receiver<Msg<T>>);

struct Inbox {
    control: Queue<Control>,
    classes: [Queue<Data>; CLASSES],
}

/// Counters of one worker's cross-worker traffic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CrossWorkerCounters {
    /// Objects pushed to other workers (one per object per destination).
    pub objects_out: u64,
    /// Objects taken from this worker's inbox.
    pub objects_in: u64,
    /// Objects and subgroup ends dropped on a full destination, by class.
    pub dropped: [u64; CLASSES],
    pub control_out: u64,
    pub control_in: u64,
    /// Control messages that waited in the backlog (destination full).
    pub control_deferred: u64,
    /// Control messages dropped (backlog over its limit, or worker gone).
    pub control_lost: u64,
}

/// The same counters for the control plane (written by the owner only).
#[derive(Debug, Default)]
pub struct CrossWorkerStats {
    pub objects_out: AtomicU64,
    pub objects_in: AtomicU64,
    pub dropped: [AtomicU64; CLASSES],
    pub control_out: AtomicU64,
    pub control_in: AtomicU64,
    pub control_deferred: AtomicU64,
    pub control_lost: AtomicU64,
}

impl CrossWorkerStats {
    fn publish(&self, c: &CrossWorkerCounters) {
        self.objects_out.store(c.objects_out, Ordering::Relaxed);
        self.objects_in.store(c.objects_in, Ordering::Relaxed);
        for (a, v) in self.dropped.iter().zip(c.dropped) {
            a.store(v, Ordering::Relaxed);
        }
        self.control_out.store(c.control_out, Ordering::Relaxed);
        self.control_in.store(c.control_in, Ordering::Relaxed);
        self.control_deferred
            .store(c.control_deferred, Ordering::Relaxed);
        self.control_lost.store(c.control_lost, Ordering::Relaxed);
    }

    /// What the owner published last (each counter read on its own).
    pub fn read(&self) -> CrossWorkerCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CrossWorkerCounters {
            objects_out: get(&self.objects_out),
            objects_in: get(&self.objects_in),
            dropped: std::array::from_fn(|i| get(&self.dropped[i])),
            control_out: get(&self.control_out),
            control_in: get(&self.control_in),
            control_deferred: get(&self.control_deferred),
            control_lost: get(&self.control_lost),
        }
    }
}

/// Builds every worker's inbox; [`split`](Self::split) gives each worker
/// its [`CrossWorker`].
pub struct QueueGroup {
    inboxes: Arc<[Inbox]>,
    config: QueueConfig,
}

impl QueueGroup {
    pub fn new(workers: usize, config: QueueConfig) -> anyhow::Result<Self> {
        if workers == 0 {
            anyhow::bail!("a cross-worker group needs at least one worker");
        }
        if config.object_capacity == 0 || config.control_capacity == 0 {
            anyhow::bail!("cross-worker queues need room for at least one message: {config:?}");
        }
        let inboxes: Vec<Inbox> = (0..workers)
            .map(|_| Inbox {
                control: crossbeam_channel::bounded(config.control_capacity),
                // Each class could take the whole budget; the budget itself
                // is enforced on push.
                classes: std::array::from_fn(|_| {
                    crossbeam_channel::bounded(config.object_capacity)
                }),
            })
            .collect();
        Ok(Self {
            inboxes: inboxes.into(),
            config,
        })
    }

    pub fn split(self) -> Vec<CrossWorker> {
        let n = self.inboxes.len();
        (0..n)
            .map(|index| CrossWorker {
                index,
                inboxes: self.inboxes.clone(),
                config: self.config,
                waker: None,
                wake: vec![false; n],
                to_wake: Vec::with_capacity(n),
                backlog: (0..n).map(|_| VecDeque::new()).collect(),
                backlogged: 0,
                lost_reported: HashSet::new(),
                counters: CrossWorkerCounters::default(),
                stats: Arc::new(CrossWorkerStats::default()),
            })
            .collect()
    }
}

/// One worker's end of the group's queues: it pushes into every other
/// worker's inbox and drains its own.
pub struct CrossWorker {
    index: usize,
    inboxes: Arc<[Inbox]>,
    config: QueueConfig,
    waker: Option<GroupWaker>,
    /// Destinations pushed to since the last [`flush_wakes`](Self::flush_wakes):
    /// one wake-up per destination per batch, not per message.
    wake: Vec<bool>,
    to_wake: Vec<usize>,
    /// Control messages waiting for room, per destination, in order.
    backlog: Vec<VecDeque<Msg<Control>>>,
    backlogged: usize,
    /// Subgroups whose loss was already reported: (to, origin, request,
    /// group, subgroup).
    lost_reported: HashSet<(usize, usize, u64, u64, u64)>,
    counters: CrossWorkerCounters,
    stats: Arc<CrossWorkerStats>,
}

/// Lost subgroups remembered so each is reported once (then forgotten
/// wholesale: a repeat report costs one control message).
const LOST_REPORTS_REMEMBERED: usize = 1024;

impl CrossWorker {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn workers(&self) -> usize {
        self.inboxes.len()
    }

    /// Wakes sleeping destinations after pushes (the worker group's eventfds).
    pub fn set_waker(&mut self, waker: GroupWaker) {
        self.waker = Some(waker);
    }

    pub fn counters(&self) -> CrossWorkerCounters {
        self.counters
    }

    pub fn stats(&self) -> Arc<CrossWorkerStats> {
        self.stats.clone()
    }

    /// Copies the counters to [`CrossWorkerStats`].
    pub fn publish_stats(&self) {
        self.stats.publish(&self.counters);
    }

    fn pushed(&mut self, to: usize) {
        if !self.wake[to] {
            self.wake[to] = true;
            self.to_wake.push(to);
        }
    }

    /// Wakes every destination pushed to since the last call.
    pub fn flush_wakes(&mut self) {
        for to in self.to_wake.drain(..) {
            self.wake[to] = false;
            if let Some(w) = &self.waker {
                w.wake(to);
            }
        }
    }

    /// Pushes an object or a subgroup end of `class` to worker `to`. When
    /// `to`'s inbox is full it evicts a less important message, or drops
    /// this one; drops are counted by class. Never blocks, never allocates.
    pub fn push_data(&mut self, to: usize, class: usize, body: Data) -> bool {
        let is_object = matches!(body, Data::Object { .. });
        let inbox = &self.inboxes[to];
        // Loads only; concurrent pushers may overshoot the budget by one
        // message each, still bounded by the channels' own capacity.
        let queued: usize = inbox.classes.iter().map(|(_, r)| r.len()).sum();
        if queued >= self.config.object_capacity && !self.evict_below(to, class) {
            self.counters.dropped[class] += 1;
            self.report_lost(to, self.index, &body);
            return false;
        }
        let msg = Msg {
            from: self.index,
            body,
        };
        match self.inboxes[to].classes[class].0.try_send(msg) {
            Ok(()) => {
                if is_object {
                    self.counters.objects_out += 1;
                }
                self.pushed(to);
                true
            }
            Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                self.counters.dropped[class] += 1;
                self.report_lost(to, m.from, &m.body);
                false
            }
        }
    }

    /// A dropped object of a subgroup stream: tell `to` (through the
    /// control queue, which never drops) so it resets that subgroup.
    /// Datagrams need nothing: their loss leaves no stream with a hole.
    fn report_lost(&mut self, to: usize, origin: usize, body: &Data) {
        let Data::Object { request, object } = body else {
            return;
        };
        if object.datagram {
            return;
        }
        let key = (to, origin, *request, object.location.group, object.subgroup);
        // Once per subgroup is enough (bounded memory of what was said).
        if self.lost_reported.len() >= LOST_REPORTS_REMEMBERED {
            self.lost_reported.clear();
        }
        if !self.lost_reported.insert(key) {
            return;
        }
        let lost = Control::SubgroupLost {
            origin,
            request: *request,
            group: object.location.group,
            subgroup: object.subgroup,
        };
        self.push_control(to, lost);
    }

    /// Takes the oldest message of the least important non-empty class
    /// below `class` out of `to`'s inbox (channels are multi-consumer).
    fn evict_below(&mut self, to: usize, class: usize) -> bool {
        let inbox = &self.inboxes[to];
        for lower in (class + 1..CLASSES).rev() {
            if let Ok(evicted) = inbox.classes[lower].1.try_recv() {
                self.counters.dropped[lower] += 1;
                self.report_lost(to, evicted.from, &evicted.body);
                return true;
            }
        }
        false
    }

    /// Sends a control message to worker `to`, in order after any earlier
    /// one; it waits in the backlog while `to`'s control queue is full.
    pub fn push_control(&mut self, to: usize, body: Control) {
        let msg = Msg {
            from: self.index,
            body,
        };
        self.counters.control_out += 1;
        if !self.backlog[to].is_empty() {
            return self.defer(to, msg);
        }
        match self.inboxes[to].control.0.try_send(msg) {
            Ok(()) => self.pushed(to),
            Err(TrySendError::Full(msg)) => self.defer(to, msg),
            Err(TrySendError::Disconnected(msg)) => {
                self.counters.control_lost += 1;
                tracing::warn!(to, message = ?msg.body, "cross-worker control message lost: worker gone");
            }
        }
    }

    fn defer(&mut self, to: usize, msg: Msg<Control>) {
        if self.backlog[to].len() >= self.config.backlog_limit {
            self.counters.control_lost += 1;
            tracing::warn!(to, message = ?msg.body, "cross-worker control message lost: backlog full");
            return;
        }
        self.counters.control_deferred += 1;
        self.backlog[to].push_back(msg);
        self.backlogged += 1;
    }

    /// Moves backlogged control messages into queues with room again.
    /// Returns whether any moved.
    pub fn retry_backlog(&mut self) -> bool {
        if self.backlogged == 0 {
            return false;
        }
        let mut moved = false;
        for to in 0..self.backlog.len() {
            while let Some(msg) = self.backlog[to].pop_front() {
                match self.inboxes[to].control.0.try_send(msg) {
                    Ok(()) => {
                        self.backlogged -= 1;
                        moved = true;
                        self.pushed(to);
                    }
                    Err(TrySendError::Full(msg)) => {
                        self.backlog[to].push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        self.backlogged -= 1;
                        self.counters.control_lost += 1;
                    }
                }
            }
        }
        moved
    }

    /// The next control message for this worker.
    pub fn take_control(&mut self) -> Option<Msg<Control>> {
        let msg = self.inboxes[self.index].control.1.try_recv().ok()?;
        self.counters.control_in += 1;
        Some(msg)
    }

    /// The next object-path message for this worker, most important class
    /// first.
    pub fn take_data(&mut self) -> Option<Msg<Data>> {
        let inbox = &self.inboxes[self.index];
        let msg = inbox.classes.iter().find_map(|(_, r)| r.try_recv().ok())?;
        if matches!(msg.body, Data::Object { .. }) {
            self.counters.objects_in += 1;
        }
        Some(msg)
    }

    /// Whether messages wait in this worker's inbox, or in its backlog.
    pub fn pending(&self) -> bool {
        let inbox = &self.inboxes[self.index];
        self.backlogged > 0
            || !inbox.control.1.is_empty()
            || inbox.classes.iter().any(|(_, r)| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use moqt::{ObjectStatus, Properties};

    fn object(priority: u8, datagram: bool) -> CachedObject {
        CachedObject {
            location: Location::new(0, 0),
            subgroup: 0,
            datagram,
            publisher_priority: priority,
            explicit_priority: true,
            end_of_group: false,
            first_object: false,
            status: ObjectStatus::Normal,
            properties: Properties::new(),
            payload: Bytes::from_static(b"x"),
            part: None,
        }
    }

    #[test]
    fn classes_follow_priority_then_datagrams() {
        assert_eq!(class_of(&object(0, false)), 0);
        assert_eq!(class_of(&object(100, false)), 1);
        assert_eq!(class_of(&object(255, false)), 2);
        assert_eq!(class_of(&object(0, true)), 3);
    }

    fn push(w: &mut CrossWorker, request: u64, priority: u8, datagram: bool) -> bool {
        let o = object(priority, datagram);
        w.push_data(1, class_of(&o), Data::Object { request, object: o })
    }

    #[test]
    fn a_full_inbox_evicts_less_important_oldest_first_then_refuses() {
        let config = QueueConfig {
            object_capacity: 3,
            control_capacity: 1,
            backlog_limit: 2,
        };
        let mut parts = QueueGroup::new(2, config).unwrap().split();
        let mut b = parts.pop().unwrap();
        let mut a = parts.pop().unwrap();
        assert!(push(&mut a, 0, 200, false));
        assert!(push(&mut a, 1, 0, true));
        assert!(push(&mut a, 2, 200, false));
        // Full: a low object finds only a datagram below it.
        assert!(push(&mut a, 3, 200, false));
        // Nothing below the lowest stream class any more: refused.
        assert!(!push(&mut a, 4, 200, false));
        // High objects evict the oldest low ones.
        assert!(push(&mut a, 5, 10, false));
        assert!(push(&mut a, 6, 10, false));
        assert!(push(&mut a, 7, 10, false));
        // All high now: the newest is refused.
        assert!(!push(&mut a, 8, 10, false));
        let c = a.counters();
        assert_eq!(c.objects_out, 7);
        assert_eq!(c.dropped, [1, 0, 4, 1]);
        let order: Vec<u64> = std::iter::from_fn(|| b.take_data())
            .map(|m| match m.body {
                Data::Object { request, .. } => request,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, [5, 6, 7]);
        assert_eq!(b.counters().objects_in, 3);
        // Each dropped object of a subgroup stream is reported through the
        // control queue (the first, the refused object 4: its capacity is 1), so the
        // receiver resets that subgroup; the evicted datagram is not.
        let first = b.take_control().expect("a loss report");
        assert!(
            matches!(
                first.body,
                Control::SubgroupLost {
                    origin: 0,
                    request: 4,
                    ..
                }
            ),
            "{first:?}"
        );
    }

    #[test]
    fn the_most_important_class_drains_first() {
        let mut parts = QueueGroup::new(2, QueueConfig::default()).unwrap().split();
        let mut b = parts.pop().unwrap();
        let mut a = parts.pop().unwrap();
        for (request, priority, datagram) in [
            (0, 0, true),
            (1, 200, false),
            (2, 100, false),
            (3, 0, false),
        ] {
            assert!(push(&mut a, request, priority, datagram));
        }
        let order: Vec<u64> = std::iter::from_fn(|| b.take_data())
            .map(|m| match m.body {
                Data::Object { request, .. } => request,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(order, [3, 2, 1, 0]);
    }

    /// A producer thread and a consumer thread race over a small budget
    /// (with evictions by the producer): nothing is seen twice, each class
    /// stays in order, and every object is either delivered or counted.
    #[test]
    fn concurrent_push_take_and_evict_account_for_every_object() {
        const N: u64 = 20_000;
        let config = QueueConfig {
            object_capacity: 16,
            ..QueueConfig::default()
        };
        let mut parts = QueueGroup::new(2, config).unwrap().split();
        let mut b = parts.pop().unwrap();
        let mut a = parts.pop().unwrap();
        let producer = std::thread::spawn(move || {
            for request in 0..N {
                // Every third object is important.
                let priority = if request % 3 == 0 { 0 } else { 200 };
                push(&mut a, request, priority, false);
            }
            a.counters()
        });
        let mut last = [None::<u64>; CLASSES];
        let mut received = 0u64;
        let mut done = None;
        loop {
            match b.take_data() {
                Some(m) => {
                    let Data::Object { request, object } = m.body else {
                        unreachable!()
                    };
                    let class = class_of(&object);
                    assert!(last[class] < Some(request), "class {class} out of order");
                    last[class] = Some(request);
                    received += 1;
                }
                None if done.is_some() => break,
                None if producer.is_finished() => done = Some(()),
                None => std::hint::spin_loop(),
            }
        }
        let sent = producer.join().unwrap();
        // Dropped = refused (never pushed) + evicted (pushed, not received).
        let dropped: u64 = sent.dropped.iter().sum();
        assert_eq!(received + dropped, N, "{sent:?}");
        assert!(sent.objects_out >= received);
        assert_eq!(b.counters().objects_in, received);
    }

    #[test]
    fn control_waits_in_a_backlog_in_order_and_is_bounded() {
        let config = QueueConfig {
            object_capacity: 1,
            control_capacity: 1,
            backlog_limit: 2,
        };
        let mut parts = QueueGroup::new(2, config).unwrap().split();
        let mut b = parts.pop().unwrap();
        let mut a = parts.pop().unwrap();
        for request in 0..4 {
            a.push_control(1, Control::Unsubscribe { request });
        }
        // One in the queue, two in the backlog, one lost.
        let c = a.counters();
        assert_eq!((c.control_deferred, c.control_lost), (2, 1));
        assert!(a.pending());
        let mut got = Vec::new();
        while got.len() < 3 {
            a.retry_backlog();
            let m = b.take_control().unwrap();
            assert_eq!(m.from, 0);
            got.push(m.body);
        }
        let want: Vec<Control> = (0..3)
            .map(|request| Control::Unsubscribe { request })
            .collect();
        assert_eq!(got, want);
        assert!(!a.retry_backlog());
        assert!(!a.pending() && !b.pending());
    }
}
