//! Per-track tallies of what a `moq-sub` received.

use moqt_client::{check_test_payload, unix_ns, ReceivedObject};
use serde_json::json;

/// What a subscriber got on its datagram track.
#[derive(Default)]
pub(super) struct DatagramTally {
    pub(super) seen: std::collections::HashSet<(u64, u64)>,
    pub(super) duplicates: u64,
    pub(super) bad_checksums: u64,
    /// Objects of the datagram track that arrived on a stream instead.
    pub(super) on_stream: u64,
}

impl DatagramTally {
    pub(super) fn record(&mut self, o: &ReceivedObject) {
        if !o.datagram {
            self.on_stream += 1;
        }
        if check_test_payload(&o.payload).is_none() {
            self.bad_checksums += 1;
        }
        if !self.seen.insert((o.group, o.object_id)) {
            self.duplicates += 1;
        }
    }
}

/// Objects of one track by group, to tell whole, partial and absent groups
/// apart, with latency.
pub(super) struct GroupTally {
    groups: std::collections::BTreeMap<u64, Vec<u64>>,
    hist: hdrhistogram::Histogram<u64>,
    bad_checksums: u64,
}

impl GroupTally {
    pub(super) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            groups: Default::default(),
            hist: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
            bad_checksums: 0,
        })
    }

    pub(super) fn record(&mut self, o: &ReceivedObject) {
        let now = unix_ns();
        self.groups.entry(o.group).or_default().push(o.object_id);
        match check_test_payload(&o.payload) {
            Some(sent) if now >= sent => {
                self.hist.saturating_record(((now - sent) / 1000).max(1));
            }
            Some(_) => {}
            None => self.bad_checksums += 1,
        }
    }

    /// With `group_size` known: groups whole, partial (split into those a
    /// stream reset announced and those cut silently) and absent between
    /// the first and the last group seen. `resets` are (group, code).
    pub(super) fn report(
        &self,
        group_size: Option<u64>,
        resets: &[(u64, u64)],
    ) -> serde_json::Value {
        let reset_groups: std::collections::BTreeSet<u64> = resets.iter().map(|r| r.0).collect();
        let objects: usize = self.groups.values().map(Vec::len).sum();
        let (mut whole, mut partial_reset, mut partial_silent) = (0u64, 0u64, 0u64);
        if let Some(n) = group_size {
            for (g, ids) in &self.groups {
                let mut ids = ids.clone();
                ids.sort_unstable();
                ids.dedup();
                if ids.len() as u64 == n {
                    whole += 1;
                } else if reset_groups.contains(g) {
                    partial_reset += 1;
                } else {
                    partial_silent += 1;
                }
            }
        }
        let span = match (self.groups.keys().next(), self.groups.keys().last()) {
            (Some(a), Some(b)) => b - a + 1,
            _ => 0,
        };
        let mut codes = std::collections::BTreeMap::<u64, u64>::new();
        for (_, code) in resets {
            *codes.entry(*code).or_default() += 1;
        }
        let q = |p: f64| (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(p));
        json!({
            "objects": objects,
            "groups_seen": self.groups.len(),
            "first_group": self.groups.keys().next(),
            "last_group": self.groups.keys().last(),
            "groups_absent": span - self.groups.len() as u64,
            "groups_whole": group_size.map(|_| whole),
            "groups_partial_reset": group_size.map(|_| partial_reset),
            "groups_partial_silent": group_size.map(|_| partial_silent),
            "resets_by_code": codes.iter().map(|(c, n)| (format!("0x{c:x}"), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "bad_checksums": self.bad_checksums,
            "latency_us_p50": q(0.5),
            "latency_us_p99": q(0.99),
            "latency_us_max": (!self.hist.is_empty()).then(|| self.hist.max()),
        })
    }
}
