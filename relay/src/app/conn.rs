//! What the relay keeps per connection: its session driver, its downstream
//! subscriptions (alias, send priority, delivery timeouts), its upstream and
//! namespace requests, and what it has lost to shedding.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use moqt::{
    session::{RequestId, Role, SessionConfig, StreamRef},
    GroupOrder, Parameters, Properties, TrackNamespace, DEFAULT_SUBSCRIBER_PRIORITY,
};
use rustc_hash::FxHashMap;

use super::fetch::PendingJoin;
use crate::{
    auth::SessionAuth,
    engine::TrackId,
    priority::{stream_priority, Schedulable},
    quic::{server_driver, SessionDriver},
    shed::{Candidate, Reason, ShedCounters},
    telemetry::TrafficCounters,
};

/// One downstream subscription on this connection.
pub(super) struct Subscription {
    /// Track alias the session assigned with SUBSCRIBE_OK.
    pub(super) alias: Option<u64>,
    /// Subgroup streams opened, reported in PUBLISH_DONE.
    pub(super) streams_opened: u64,
    pub(super) subscriber_priority: u8,
    pub(super) group_order: GroupOrder,
    pub(super) newest_group: u64,
    /// Recently opened subgroup streams: (stream, publisher priority,
    /// group, subgroup) — what their rank is computed from.
    pub(super) recent: VecDeque<(StreamRef, u8, u64, u64)>,
    /// The subscriber's delivery timeout, if its request gave one
    /// (§10.2.3-4); see [`Subscription::delivery_timeout`].
    pub(super) subscriber_timeout: Option<Duration>,
    /// The publisher's, from the track's properties at SUBSCRIBE_OK (§8).
    pub(super) publisher_timeout: Option<Duration>,
    /// Subgroups given up on: (group, subgroup). Their later objects are
    /// not sent; delivery resumes with the next subgroup or group.
    pub(super) dropped: HashSet<(u64, u64)>,
}

impl Subscription {
    pub(super) fn new(parameters: &Parameters) -> Self {
        let mut sub = Self {
            alias: None,
            streams_opened: 0,
            subscriber_priority: DEFAULT_SUBSCRIBER_PRIORITY,
            group_order: GroupOrder::default(),
            newest_group: 0,
            recent: VecDeque::new(),
            subscriber_timeout: None,
            publisher_timeout: None,
            dropped: HashSet::new(),
        };
        sub.take_parameters(parameters);
        sub
    }

    /// Takes what a subscriber's request sets (SUBSCRIBE, REQUEST_UPDATE,
    /// PUBLISH_OK): priority, group order, delivery timeout; absent ones
    /// leave the current value. Whether its streams' rank changed.
    pub(super) fn take_parameters(&mut self, p: &Parameters) -> bool {
        let mut rerank = false;
        if let Some(priority) = p.subscriber_priority {
            rerank |= priority != self.subscriber_priority;
            self.subscriber_priority = priority;
        }
        if let Some(order) = p.group_order {
            rerank |= order != self.group_order;
            self.group_order = order;
        }
        if let Some(timeout) = delivery_timeout(p) {
            self.subscriber_timeout = Some(timeout);
        }
        rerank
    }

    /// The delivery timeout that applies to this subscription's data: of
    /// the subscriber's and the publisher's, the tighter (§8); with
    /// neither, the relay's configured `default`. The one place the
    /// fallback is decided.
    pub(super) fn delivery_timeout(&self, default: Duration) -> Duration {
        [self.subscriber_timeout, self.publisher_timeout]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(default)
    }

    /// The quinn-proto priority of an object (or its stream) of this
    /// subscription: the draft's order, ranked against the newest group.
    pub(super) fn priority(&self, publisher_priority: u8, group: u64, subgroup: u64) -> i32 {
        let s = Schedulable {
            subscriber_priority: self.subscriber_priority,
            publisher_priority,
            group,
            subgroup,
        };
        stream_priority(&s, self.group_order, self.newest_group)
    }

    /// Re-ranks the recent streams (after a new group or a priority update).
    pub(super) fn reprioritize(&self, driver: &mut SessionDriver) {
        for &(stream, publisher_priority, group, subgroup) in &self.recent {
            driver.set_priority(stream, self.priority(publisher_priority, group, subgroup));
        }
    }
}

/// The tighter of the two delivery timeouts a request may carry; 0 means
/// "no timeout set" (§8), so the relay's own default applies.
fn delivery_timeout(p: &Parameters) -> Option<Duration> {
    tightest_ms([p.object_delivery_timeout, p.subgroup_delivery_timeout])
}

/// The tighter of the delivery timeouts a publisher gives as Track
/// Properties (§8); 0 or absent: none.
pub(super) fn publisher_delivery_timeout(p: &Properties) -> Option<Duration> {
    tightest_ms(
        [p.object_delivery_timeout(), p.subgroup_delivery_timeout()].map(|t| t.ok().flatten()),
    )
}

/// The smallest of the given millisecond timeouts that are set (0 = not set).
pub(super) fn tightest_ms(ms: [Option<u64>; 2]) -> Option<Duration> {
    ms.into_iter()
        .flatten()
        .filter(|ms| *ms > 0)
        .min()
        .map(Duration::from_millis)
}

/// Per-connection relay state.
pub(super) struct Conn {
    pub(super) driver: SessionDriver,
    pub(super) downstream: HashMap<RequestId, Subscription>,
    /// Open subgroup streams: stream -> (subscription, group, subgroup).
    pub(super) stream_owner: FxHashMap<StreamRef, (RequestId, u64, u64)>,
    /// What this subscriber lost, by reason.
    pub(super) shed: ShedCounters,
    /// Objects and bytes from and to this peer.
    pub(super) traffic: TrafficCounters,
    /// The best priority among this connection's waiting subgroup streams
    /// at the last check.
    pub(super) best_waiting: Option<i32>,
    /// When this subscriber's shedding was last logged.
    pub(super) last_shed_log: Option<Instant>,
    /// Reused by the backlog check (no allocation once warm).
    pub(super) candidates: Vec<Candidate>,
    pub(super) victims: Vec<(StreamRef, Reason)>,
    /// Upstream subscriptions (ours, or the peer's PUBLISH): request ->
    /// (track, alias once known).
    pub(super) upstream: HashMap<RequestId, (TrackId, Option<u64>)>,
    /// Namespace subscriptions: request -> prefix.
    pub(super) namespace_prefixes: HashMap<RequestId, TrackNamespace>,
    /// The peer's PUBLISH_NAMESPACE requests.
    pub(super) published_namespaces: HashSet<RequestId>,
    /// Joining FETCHes waiting for their subscription's SUBSCRIBE_OK.
    pub(super) pending_joins: Vec<PendingJoin>,
    /// Our PUBLISHes to this peer (SUBSCRIBE_TRACKS) awaiting PUBLISH_OK.
    pub(super) offered: HashSet<RequestId>,
    /// The peer's SUBSCRIBE_TRACKS requests: request -> prefix.
    pub(super) track_prefixes: HashMap<RequestId, TrackNamespace>,
    /// The session's authorization (`None`: the relay has no keys).
    pub(super) auth: Option<SessionAuth>,
}

impl Conn {
    pub(super) fn new(session: SessionConfig) -> Self {
        Self::with_driver(server_driver(session))
    }

    /// The relay's side of a connection it opened (a link to an upstream
    /// relay): the session's client role.
    pub(super) fn client(session: SessionConfig) -> Self {
        Self::with_driver(SessionDriver::new(Role::Client, session))
    }

    fn with_driver(driver: SessionDriver) -> Self {
        Self {
            driver,
            downstream: HashMap::new(),
            stream_owner: FxHashMap::default(),
            shed: ShedCounters::default(),
            traffic: TrafficCounters::default(),
            best_waiting: None,
            last_shed_log: None,
            candidates: Vec::new(),
            victims: Vec::new(),
            upstream: HashMap::new(),
            namespace_prefixes: HashMap::new(),
            published_namespaces: HashSet::new(),
            pending_joins: Vec::new(),
            offered: HashSet::new(),
            track_prefixes: HashMap::new(),
            auth: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use moqt::{kvp::KeyValuePair, properties::property_type};

    use super::*;

    fn props(pairs: &[(u64, u64)]) -> Properties {
        let pairs = pairs
            .iter()
            .map(|&(k, v)| KeyValuePair::varint(k, v).unwrap())
            .collect();
        Properties::from_pairs(pairs).unwrap()
    }

    #[test]
    fn delivery_timeouts_zero_means_none_and_the_tighter_one_wins() {
        let p = Parameters {
            object_delivery_timeout: Some(0),
            subgroup_delivery_timeout: Some(300),
            ..Parameters::default()
        };
        assert_eq!(delivery_timeout(&p), Some(Duration::from_millis(300)));
        let none = Parameters {
            object_delivery_timeout: Some(0),
            ..Parameters::default()
        };
        assert_eq!(delivery_timeout(&none), None);
        let publisher = props(&[
            (property_type::OBJECT_DELIVERY_TIMEOUT, 500),
            (property_type::SUBGROUP_DELIVERY_TIMEOUT, 0),
        ]);
        assert_eq!(
            publisher_delivery_timeout(&publisher),
            Some(Duration::from_millis(500))
        );
        assert_eq!(publisher_delivery_timeout(&Properties::new()), None);
    }
}
