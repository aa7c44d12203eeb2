//! What a congested subscriber loses (issue 5, draft-18 §7 and §8).
//!
//! The relay keeps each subscriber connection's backlog itself (see the
//! `relay` crate's `quic` module: quinn-proto only gets a couple of
//! congestion windows), per subgroup stream, with the age of its oldest waiting byte. This module
//! decides which of those streams to give up, as a pure function of the
//! backlog, so that the rules are testable without a network:
//!
//! 1. a stream whose oldest waiting byte is older than its subscription's
//!    delivery timeout (the subscription's OBJECT/SUBGROUP_DELIVERY_TIMEOUT
//!    parameter, else the relay's default) is dropped — its data would come
//!    too late to be of use;
//! 2. if what remains is still over the connection's backlog bound, whole
//!    streams are dropped, lowest send priority first (§7: subscriber
//!    priority, then publisher priority, then group order), the older group
//!    first among equals, until the rest fits.
//!
//! A dropped stream is reset (DELIVERY_TIMEOUT or TOO_FAR_BEHIND), never cut
//! silently, and later objects of the same subgroup are not sent: delivery
//! of the track resumes with the next subgroup or group. Datagrams are
//! dropped before any of that when the connection is congested and they
//! rank below the best stream waiting ([`datagram_yields`]).

use std::time::{Duration, Instant};

use moqt::{session::StreamRef, StreamResetCode};

/// Relay-wide defaults of the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShedConfig {
    /// Delivery timeout of subscriptions that do not give one.
    pub delivery_timeout: Duration,
    /// Most bytes waiting in the relay for one subscriber connection.
    pub max_backlog_bytes: usize,
}

/// Default delivery timeout: live media older than this is not worth sending.
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default backlog bound per subscriber connection.
pub const DEFAULT_MAX_BACKLOG_BYTES: usize = 1 << 20;

impl Default for ShedConfig {
    fn default() -> Self {
        Self {
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            max_backlog_bytes: DEFAULT_MAX_BACKLOG_BYTES,
        }
    }
}

/// Why a stream was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    DeliveryTimeout,
    Backlog,
}

impl Reason {
    /// The §3.3.3 code the stream is reset with.
    pub fn reset_code(self) -> StreamResetCode {
        match self {
            Reason::DeliveryTimeout => StreamResetCode::DeliveryTimeout,
            Reason::Backlog => StreamResetCode::TooFarBehind,
        }
    }
}

/// One subgroup stream with data waiting, as the policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub stream: StreamRef,
    pub bytes: usize,
    /// When its oldest waiting byte was queued.
    pub since: Instant,
    /// quinn-proto priority (higher is sent first).
    pub priority: i32,
    pub group: u64,
    /// The subscription's delivery timeout.
    pub timeout: Duration,
}

/// Chooses the streams to drop from `candidates` (the sheddable part of a
/// connection's backlog of `total_bytes`, which also counts data that is
/// never shed, such as control messages), appending them to `out`.
/// Reorders `candidates`.
pub fn choose(
    candidates: &mut [Candidate],
    total_bytes: usize,
    max_backlog_bytes: usize,
    now: Instant,
    out: &mut Vec<(StreamRef, Reason)>,
) {
    let mut remaining = total_bytes;
    // Least important first: lowest priority, then the older group.
    candidates.sort_unstable_by(|a, b| a.priority.cmp(&b.priority).then(a.group.cmp(&b.group)));
    let timed_out = |c: &Candidate| now.saturating_duration_since(c.since) > c.timeout;
    for c in candidates.iter().filter(|c| timed_out(c)) {
        out.push((c.stream, Reason::DeliveryTimeout));
        remaining = remaining.saturating_sub(c.bytes);
    }
    for c in candidates.iter().filter(|c| !timed_out(c)) {
        if remaining <= max_backlog_bytes {
            break;
        }
        out.push((c.stream, Reason::Backlog));
        remaining = remaining.saturating_sub(c.bytes);
    }
}

/// Whether a datagram of quinn-proto priority `priority` is dropped on a
/// connection with `backlog_bytes` waiting whose best waiting stream has
/// priority `best_waiting`: when the backlog is past half its bound,
/// datagrams that rank below what already waits go first (they would only
/// take room from it, and a late datagram is worthless).
pub fn datagram_yields(
    priority: i32,
    backlog_bytes: usize,
    best_waiting: Option<i32>,
    max_backlog_bytes: usize,
) -> bool {
    backlog_bytes > max_backlog_bytes / 2 && best_waiting.is_some_and(|best| priority < best)
}

/// What was dropped for one subscriber connection, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShedCounters {
    pub subgroups_timed_out: u64,
    pub subgroups_over_backlog: u64,
    pub bytes_dropped: u64,
    pub datagrams_dropped: u64,
    /// Objects of a dropped subgroup that arrived after it was dropped.
    pub objects_skipped: u64,
    /// Largest backlog seen (bytes waiting in the relay).
    pub backlog_max: u64,
}

impl ShedCounters {
    pub fn add(&mut self, other: &ShedCounters) {
        self.subgroups_timed_out += other.subgroups_timed_out;
        self.subgroups_over_backlog += other.subgroups_over_backlog;
        self.bytes_dropped += other.bytes_dropped;
        self.datagrams_dropped += other.datagrams_dropped;
        self.objects_skipped += other.objects_skipped;
        self.backlog_max = self.backlog_max.max(other.backlog_max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(stream: u64, bytes: usize, age_ms: u64, priority: i32, group: u64) -> Candidate {
        Candidate {
            stream: StreamRef(stream),
            bytes,
            since: base() - Duration::from_millis(age_ms),
            priority,
            group,
            timeout: Duration::from_millis(1000),
        }
    }

    fn base() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| Instant::now() + Duration::from_secs(10))
    }

    fn run(cands: &mut [Candidate], total: usize, max: usize) -> Vec<(u64, Reason)> {
        let mut out = Vec::new();
        choose(cands, total, max, base(), &mut out);
        out.into_iter().map(|(s, r)| (s.0, r)).collect()
    }

    #[test]
    fn under_the_bound_and_fresh_nothing_is_dropped() {
        let mut cands = [c(1, 100, 10, 5, 0), c(2, 100, 10, 9, 0)];
        assert_eq!(run(&mut cands, 200, 1000), []);
    }

    #[test]
    fn timed_out_streams_go_whatever_their_priority() {
        let mut cands = [c(1, 100, 1500, 100, 3), c(2, 100, 10, 1, 4)];
        assert_eq!(run(&mut cands, 200, 1000), [(1, Reason::DeliveryTimeout)]);
    }

    #[test]
    fn over_the_bound_lowest_priority_goes_first_then_older_groups() {
        // Priority 1 is the least important; among equals the older group.
        let mut cands = [
            c(1, 400, 10, 9, 7),
            c(2, 400, 10, 1, 8),
            c(3, 400, 10, 1, 7),
            c(4, 400, 10, 5, 7),
        ];
        // 1 600 waiting, bound 900: drop 3 (prio 1, group 7), then 2, and stop.
        assert_eq!(
            run(&mut cands, 1600, 900),
            [(3, Reason::Backlog), (2, Reason::Backlog)]
        );
    }

    #[test]
    fn timeouts_count_towards_the_bound() {
        let mut cands = [c(1, 500, 2000, 9, 1), c(2, 500, 10, 1, 2)];
        // Dropping the timed-out one brings 1 000 to 500: nothing else goes.
        assert_eq!(run(&mut cands, 1000, 600), [(1, Reason::DeliveryTimeout)]);
    }

    #[test]
    fn unsheddable_bytes_can_keep_the_backlog_over_the_bound() {
        // 5 000 bytes of control data: every stream goes, and that is all.
        let mut cands = [c(1, 100, 10, 3, 0), c(2, 100, 10, 4, 0)];
        assert_eq!(
            run(&mut cands, 5200, 1000),
            [(1, Reason::Backlog), (2, Reason::Backlog)]
        );
    }

    #[test]
    fn datagrams_yield_only_to_better_waiting_streams_when_congested() {
        assert!(!datagram_yields(1, 100, Some(5), 1000), "not congested");
        assert!(datagram_yields(1, 600, Some(5), 1000));
        assert!(!datagram_yields(5, 600, Some(5), 1000), "equal rank stays");
        assert!(!datagram_yields(9, 600, Some(5), 1000));
        assert!(!datagram_yields(1, 600, None, 1000));
    }

    #[test]
    fn reset_codes_are_the_drafts() {
        assert_eq!(Reason::DeliveryTimeout.reset_code().code(), 0x2);
        assert_eq!(Reason::Backlog.reset_code().code(), 0x5);
    }
}
