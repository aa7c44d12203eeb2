//! One reading of everything the workers publish, shared by the JSON
//! reports on stdout (`--stats-interval`, the final `stopped` line) and the
//! admin listener's `/metrics`.
//!
//! The workers only store counters into atomics and, every report period,
//! their relay's totals behind a mutex they `try_lock` or hold for a copy
//! (see `relay::app::RelayReport`, `relay::telemetry`); readers here take
//! copies and never hold a lock for longer than that.

use std::{
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use dataplane::worker::{WorkerCounts, WorkerStats};
use relay::{
    app::RelayReport,
    crossworker::{CrossWorkerCounters, CrossWorkerStats},
    telemetry::HopHistogram,
};

use crate::xdp::XdpCounters;

/// Where one worker publishes (handed to the admin thread at start).
pub struct WorkerSource {
    /// The NIC queue (XDP) or the worker's index (socket backend).
    pub queue: u32,
    pub core: usize,
    pub stats: Arc<WorkerStats>,
    pub cross_worker: Option<Arc<CrossWorkerStats>>,
    pub report: Arc<Mutex<RelayReport>>,
    pub hop: Arc<Mutex<HopHistogram>>,
    /// The worker's AF_XDP socket, for the kernel's ring statistics.
    pub xsk_fd: Option<RawFd>,
    /// Set while the worker thread runs.
    pub running: Arc<AtomicBool>,
}

/// Everything the admin listener reads.
pub struct Sources {
    pub workers: Vec<Arc<WorkerSource>>,
    /// Set by SIGINT/SIGTERM (or a failed worker): the relay drains.
    pub stop: Arc<AtomicBool>,
    /// The XDP program's counters, refreshed by the control loop (the map
    /// handle stays with it).
    pub xdp: Arc<Mutex<Option<XdpCounters>>>,
    pub started: Instant,
    /// Token verification (`--auth-key`); its counters are atomics.
    pub auth: Option<Arc<relay::auth::Authorizer>>,
    /// What the web page's `/session.json` gives.
    pub web: Arc<crate::web::WebInfo>,
}

/// The kernel's statistics of an AF_XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct XskStats {
    /// Packets dropped for reasons other than a full RX ring or an empty
    /// fill ring (e.g. too large for a frame).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Packets dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was found empty (no frame to receive into).
    pub rx_fill_ring_empty: u64,
    /// Times the TX ring was found empty when the kernel looked.
    pub tx_ring_empty: u64,
}

impl XskStats {
    /// Reads them with getsockopt; `None` if the socket refuses.
    pub fn read(fd: RawFd) -> Option<Self> {
        // SAFETY: plain-old-data struct, zero is a valid value.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` and `len` are valid for writes of the given size.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(Self {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }
}

/// One worker, read once.
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    pub queue: u32,
    pub core: usize,
    pub running: bool,
    pub counts: WorkerCounts,
    pub cross_worker: CrossWorkerCounters,
    pub relay: RelayReport,
    pub hop: HopHistogram,
    pub xsk: Option<XskStats>,
}

impl WorkerSnapshot {
    /// The counters the JSON reports print: everything but the hop
    /// histogram and the AF_XDP socket's statistics.
    pub fn counters(w: &WorkerSource) -> Self {
        let counts = w.stats.read();
        let cross_worker = w
            .cross_worker
            .as_deref()
            .map(CrossWorkerStats::read)
            .unwrap_or_default();
        Self {
            queue: w.queue,
            core: w.core,
            running: w.running.load(Ordering::Relaxed),
            counts,
            cross_worker,
            relay: w.report.lock().map(|g| *g).unwrap_or_default(),
            hop: HopHistogram::new(),
            xsk: None,
        }
    }

    /// Everything: the counters, the hop histogram, the AF_XDP statistics.
    pub fn full(w: &WorkerSource) -> Self {
        let mut snap = Self::counters(w);
        if let Ok(h) = w.hop.lock() {
            snap.hop = h.clone();
        }
        // Only while the worker runs: its descriptor may be closed and the
        // number reused afterwards.
        if snap.running {
            snap.xsk = w.xsk_fd.and_then(XskStats::read);
        }
        snap
    }
}

/// The whole relay, read once.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub uptime_s: f64,
    pub rss_bytes: Option<u64>,
    pub draining: bool,
    pub xdp: Option<XdpCounters>,
    pub workers: Vec<WorkerSnapshot>,
    /// `None` without `--auth-key`.
    pub auth: Option<relay::auth::AuthCounts>,
}

impl Snapshot {
    pub fn take(sources: &Sources) -> Self {
        Self {
            uptime_s: sources.started.elapsed().as_secs_f64(),
            rss_bytes: rss_bytes(),
            draining: sources.stop.load(Ordering::Relaxed),
            xdp: sources.xdp.lock().map(|g| *g).unwrap_or_default(),
            workers: sources
                .workers
                .iter()
                .map(|w| WorkerSnapshot::full(w))
                .collect(),
            auth: sources.auth.as_ref().map(|a| a.counts()),
        }
    }

    /// `Ok` while the relay serves: every worker runs and it is not
    /// draining; otherwise why not.
    pub fn health(&self) -> Result<(), String> {
        let stopped: Vec<String> = self
            .workers
            .iter()
            .filter(|w| !w.running)
            .map(|w| w.queue.to_string())
            .collect();
        let mut reasons = Vec::new();
        // A failed worker makes the relay drain too: both are named.
        if self.draining {
            reasons.push("draining: the relay is shutting down".to_string());
        }
        if !stopped.is_empty() {
            reasons.push(format!("worker(s) stopped: {}", stopped.join(",")));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

/// The process's resident memory (bytes), from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(queue: u32, running: bool) -> WorkerSnapshot {
        WorkerSnapshot {
            queue,
            core: 0,
            running,
            counts: WorkerCounts::default(),
            cross_worker: CrossWorkerCounters::default(),
            relay: RelayReport::default(),
            hop: HopHistogram::new(),
            xsk: None,
        }
    }

    #[test]
    fn health_names_what_is_wrong() {
        let mut snap = Snapshot {
            uptime_s: 1.0,
            rss_bytes: None,
            draining: false,
            xdp: None,
            workers: vec![worker(0, true), worker(3, true)],
            auth: None,
        };
        assert_eq!(snap.health(), Ok(()));
        snap.workers[1].running = false;
        assert_eq!(snap.health(), Err("worker(s) stopped: 3".to_string()));
        snap.draining = true;
        assert_eq!(
            snap.health(),
            Err("draining: the relay is shutting down; worker(s) stopped: 3".to_string())
        );
    }

    #[test]
    fn a_source_reads_what_the_worker_published() {
        let source = WorkerSource {
            queue: 2,
            core: 1,
            stats: Arc::default(),
            cross_worker: None,
            report: Arc::default(),
            hop: Arc::default(),
            xsk_fd: None,
            running: Arc::new(AtomicBool::new(true)),
        };
        source.stats.rx_packets.store(7, Ordering::Relaxed);
        source.stats.connections_closed[dataplane::worker::CloseReason::IdleTimeout as usize]
            .store(2, Ordering::Relaxed);
        source.report.lock().unwrap().traffic.objects_sent = 5;
        source
            .hop
            .lock()
            .unwrap()
            .record(std::time::Duration::from_micros(3), 4);
        let snap = WorkerSnapshot::full(&source);
        assert_eq!((snap.queue, snap.counts.rx_packets), (2, 7));
        assert_eq!(snap.counts.connections_closed[2], 2);
        assert_eq!(snap.relay.traffic.objects_sent, 5);
        assert_eq!(snap.hop.count(), 4);
        assert!(snap.running && snap.xsk.is_none());
        // The JSON reports' reading leaves the histogram out.
        assert_eq!(WorkerSnapshot::counters(&source).hop.count(), 0);
    }
}
