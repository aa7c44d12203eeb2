//! What a worker's relay counts for the operator: objects and payload bytes
//! in and out, and the latency of the relay hop.
//!
//! Both are kept by the worker in plain local state and handed to the
//! control plane every report period ([`crate::app::RelayReport`] for the
//! counters, a shared [`HopHistogram`] for the latencies, which the worker
//! only `try_lock`s): nothing here locks or allocates per object.
//!
//! The relay hop of an object starts when the worker iteration that takes
//! the publisher's packet carrying the object's last byte from the backend
//! begins, and ends when the relay has handed the object to every local
//! subscriber's QUIC stream (or datagram queue) and built those
//! subscribers' packets into the TX batch (or queued it for the other
//! workers of a group, whose own hop is not included). Congestion and flow
//! control may still hold those bytes in quinn-proto: that wait shows in
//! the shedding counters and backlogs, not here.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hdrhistogram::Histogram;
use moqt::session::PayloadPart;

/// Objects and payload bytes through one connection or a whole worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrafficCounters {
    /// Whole objects received from publishers (datagrams included).
    pub objects_received: u64,
    /// Payload bytes received from publishers.
    pub bytes_received: u64,
    /// Objects written to subscribers' streams or sent as datagrams.
    pub objects_sent: u64,
    /// Payload bytes written to subscribers.
    pub bytes_sent: u64,
}

impl TrafficCounters {
    pub fn add(&mut self, other: &TrafficCounters) {
        self.objects_received += other.objects_received;
        self.bytes_received += other.bytes_received;
        self.objects_sent += other.objects_sent;
        self.bytes_sent += other.bytes_sent;
    }

    /// A received object, or a part of one (`part`) of `len` payload bytes:
    /// the object counts once, with its last part.
    pub fn received(&mut self, part: Option<PayloadPart>, len: usize) {
        self.bytes_received += len as u64;
        if part.is_none_or(|p| p.ends_with(len)) {
            self.objects_received += 1;
        }
    }

    /// An object (or part of one) written to a subscriber.
    pub fn sent(&mut self, part: Option<PayloadPart>, len: usize) {
        self.bytes_sent += len as u64;
        if part.is_none_or(|p| p.ends_with(len)) {
            self.objects_sent += 1;
        }
    }
}

/// Lowest and highest hop recorded (nanoseconds); longer ones saturate.
const HOP_MIN_NS: u64 = 1;
const HOP_MAX_NS: u64 = 60_000_000_000;
/// Two significant digits: 1 % resolution, about 30 KiB per histogram.
const HOP_SIGFIGS: u8 = 2;

/// Relay hop latencies (see the module docs), in nanoseconds, with their
/// exact sum (the histogram itself only keeps buckets).
#[derive(Debug, Clone)]
pub struct HopHistogram {
    hist: Histogram<u64>,
    sum_ns: u64,
}

impl Default for HopHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl HopHistogram {
    pub fn new() -> Self {
        Self {
            hist: Histogram::new_with_bounds(HOP_MIN_NS, HOP_MAX_NS, HOP_SIGFIGS)
                .expect("constant histogram bounds are valid"),
            sum_ns: 0,
        }
    }

    /// `count` objects whose hop took `hop`.
    pub fn record(&mut self, hop: Duration, count: u64) {
        let ns = u64::try_from(hop.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record_n(ns.max(HOP_MIN_NS), count);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(count));
    }

    /// Adds `other`'s samples (same bounds: never fails).
    pub fn merge(&mut self, other: &HopHistogram) {
        let _ = self.hist.add(&other.hist);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    pub fn clear(&mut self) {
        self.hist.reset();
        self.sum_ns = 0;
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// Samples at or below `bound` (within the histogram's 1 % resolution).
    pub fn count_at_most(&self, bound: Duration) -> u64 {
        let ns = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        self.hist.count_between(0, ns.min(HOP_MAX_NS))
    }

    /// The value at `quantile` (0..=1), zero when empty.
    pub fn quantile(&self, quantile: f64) -> Duration {
        Duration::from_nanos(self.hist.value_at_quantile(quantile))
    }
}

/// The worker's side of the hop histogram: samples gather locally and move
/// to the shared one when it is free at a report.
#[derive(Debug, Default)]
pub struct HopRecorder {
    local: HopHistogram,
    shared: Arc<Mutex<HopHistogram>>,
}

impl HopRecorder {
    pub fn record(&mut self, hop: Duration, count: u64) {
        self.local.record(hop, count);
    }

    /// Hands the local samples over, unless a reader holds the shared
    /// histogram: then they wait for the next report.
    pub fn publish(&mut self) {
        if self.local.count() == 0 {
            return;
        }
        if let Ok(mut shared) = self.shared.try_lock() {
            shared.merge(&self.local);
            self.local.clear();
        }
    }

    /// Hands the local samples over, waiting for a reader if need be: for
    /// the worker's last report, off the hot path.
    pub fn flush(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.merge(&self.local);
            self.local.clear();
        }
    }

    /// The histogram the control plane reads (every hop since the start).
    pub fn shared(&self) -> Arc<Mutex<HopHistogram>> {
        self.shared.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_count_once_and_bytes_add_up() {
        let mut t = TrafficCounters::default();
        t.received(None, 100);
        let first = PayloadPart {
            offset: 0,
            length: 300,
        };
        let last = PayloadPart {
            offset: 200,
            length: 300,
        };
        t.received(Some(first), 200);
        assert_eq!(t.objects_received, 1);
        t.received(Some(last), 100);
        assert_eq!((t.objects_received, t.bytes_received), (2, 400));
        t.sent(Some(last), 100);
        assert_eq!((t.objects_sent, t.bytes_sent), (1, 100));
    }

    #[test]
    fn hop_samples_reach_the_shared_histogram() {
        let mut r = HopRecorder::default();
        r.record(Duration::from_micros(20), 3);
        r.record(Duration::from_millis(2), 1);
        let shared = r.shared();
        assert_eq!(shared.lock().unwrap().count(), 0);
        {
            // Held by a reader: the samples stay local.
            let _reader = shared.lock().unwrap();
            r.publish();
        }
        r.publish();
        let h = shared.lock().unwrap();
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum(), Duration::from_micros(2060));
        assert_eq!(h.count_at_most(Duration::from_micros(100)), 3);
        assert_eq!(h.count_at_most(Duration::from_secs(1)), 4);
    }
}
