//! `fastrelay run`: set up, serve until a signal, tear down, report.
//!
//! stdout carries machine-readable JSON lines only: `{"event":"ready",...}`
//! once the dataplane is up, and `{"event":"stopped",...}` with the final
//! counters. Logs go to stderr.

use std::{
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use dataplane::{
    handoff::{Steering, WorkerGroup, DEFAULT_INBOX_CAPACITY},
    io::{
        udp::UdpSocketIo,
        xsk::{XskConfig, XskIo, DEFAULT_RING_SIZE},
        PacketIo,
    },
    neighbor::{NextHopView, SharedNextHops},
    tls::{self, Identity},
    worker::{pin_to_core, Worker, WorkerConfig, WorkerStats},
};
use moqt::session::SessionConfig;
use serde::Serialize;
use serde_json::json;

use crate::{iface::InterfaceInfo, netlink, upstream, xdp::XdpRedirect, Backend, RunArgs};
use relay::{
    app::{RelayReport, RelayState},
    crossworker::{CrossWorkerStats, QueueConfig, CLASSES},
    engine::EngineConfig,
    group::{RelayGroup, RelayPart},
    router::AlpnRouter,
    shed::{ShedConfig, ShedCounters},
};

/// What each worker's relay is configured with.
#[derive(Clone)]
struct RelayLimits {
    engine: EngineConfig,
    session: SessionConfig,
    shed: ShedConfig,
    /// Links to upstream relays (`--upstream`), one set per worker.
    upstreams: Vec<relay::app::UpstreamConfig>,
}

/// How often the kernel's neighbour and route tables are re-read.
const NEXT_HOP_REFRESH: Duration = Duration::from_secs(1);

struct RunningWorker {
    queue: u32,
    core: usize,
    stats: Arc<WorkerStats>,
    cross_worker: Option<Arc<CrossWorkerStats>>,
    report: Arc<Mutex<RelayReport>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// What the worker's subscribers lost to congestion (see `relay::shed`).
#[derive(Serialize)]
struct ShedReport {
    subgroups_timed_out: u64,
    subgroups_over_backlog: u64,
    bytes_dropped: u64,
    datagrams_dropped: u64,
    objects_skipped: u64,
    /// Largest backlog one subscriber connection had after a check.
    backlog_max_bytes: u64,
}

impl From<ShedCounters> for ShedReport {
    fn from(c: ShedCounters) -> Self {
        Self {
            subgroups_timed_out: c.subgroups_timed_out,
            subgroups_over_backlog: c.subgroups_over_backlog,
            bytes_dropped: c.bytes_dropped,
            datagrams_dropped: c.datagrams_dropped,
            objects_skipped: c.objects_skipped,
            backlog_max_bytes: c.backlog_max,
        }
    }
}

#[derive(Serialize)]
struct WorkerReport {
    queue: u32,
    core: usize,
    rx_packets: u64,
    tx_packets: u64,
    rx_dropped_malformed: u64,
    tx_dropped: u64,
    connections_accepted: u64,
    connections_refused: u64,
    connections_retried: u64,
    connections_active: u64,
    handed_off_out: u64,
    handed_off_in: u64,
    handoff_dropped: u64,
    cross_worker_objects_out: u64,
    cross_worker_objects_in: u64,
    /// Objects dropped on a full destination queue, by class (publisher
    /// priority 0-63, 64-127, 128-255, datagrams).
    cross_worker_dropped: [u64; CLASSES],
    cross_worker_control_deferred: u64,
    cross_worker_control_lost: u64,
    shed: ShedReport,
    /// What the worker's relay holds now (see `relay::app::RelayState`).
    state: serde_json::Value,
}

impl WorkerReport {
    fn new(
        queue: u32,
        core: usize,
        s: &WorkerStats,
        c: Option<&CrossWorkerStats>,
        report: &Mutex<RelayReport>,
    ) -> Self {
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let report = report.lock().map(|g| *g).unwrap_or_default();
        let cw =
            |f: fn(&CrossWorkerStats) -> &std::sync::atomic::AtomicU64| c.map_or(0, |c| get(f(c)));
        WorkerReport {
            queue,
            core,
            rx_packets: get(&s.rx_packets),
            tx_packets: get(&s.tx_packets),
            rx_dropped_malformed: get(&s.rx_dropped_malformed),
            tx_dropped: get(&s.tx_dropped),
            connections_accepted: get(&s.connections_accepted),
            connections_refused: get(&s.connections_refused),
            connections_retried: get(&s.connections_retried),
            connections_active: get(&s.connections_active),
            handed_off_out: get(&s.handed_off_out),
            handed_off_in: get(&s.handed_off_in),
            handoff_dropped: get(&s.handoff_dropped),
            cross_worker_objects_out: cw(|c| &c.objects_out),
            cross_worker_objects_in: cw(|c| &c.objects_in),
            cross_worker_dropped: std::array::from_fn(|i| c.map_or(0, |c| get(&c.dropped[i]))),
            cross_worker_control_deferred: cw(|c| &c.control_deferred),
            cross_worker_control_lost: cw(|c| &c.control_lost),
            shed: report.shed.into(),
            state: state_json(&report.state),
        }
    }
}

fn state_json(s: &RelayState) -> serde_json::Value {
    json!({
        "connections": s.connections,
        "session_streams": s.sessions.streams,
        "session_requests": s.sessions.requests,
        "session_aliases": s.sessions.aliases,
        "session_out_subgroups": s.sessions.out_subgroups,
        "receive_buffered_bytes": s.sessions.buffered_bytes,
        "transport_streams": s.transport_streams,
        "subscriptions": s.subscriptions,
        "stream_owners": s.stream_owners,
        "send_pending_bytes": s.send_pending_bytes,
        "engine_sessions": s.engine.sessions,
        "tracks": s.engine.tracks,
        "track_names": s.engine.track_names,
        "upstream_aliases": s.engine.upstream_aliases,
        "engine_subscriptions": s.engine.subscriptions,
        "remote_tracks": s.engine.remote_tracks,
        "early_objects": s.engine.early_objects,
        "cache_bytes": s.engine.cache_bytes,
        "upstream_links_up": s.upstream_links_up,
    })
}

/// The process's resident memory (bytes), from /proc/self/statm.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(1) as u64)
}

pub fn parse_queues(spec: &str, available: u32) -> anyhow::Result<Vec<u32>> {
    if spec == "all" {
        return Ok((0..available).collect());
    }
    let mut queues = Vec::new();
    for part in spec.split(',') {
        let q: u32 = part
            .trim()
            .parse()
            .with_context(|| format!("--queues: {part:?} is not a queue number"))?;
        if q >= available {
            bail!("--queues: queue {q} does not exist; the interface has {available} RX queue(s) (0..{})", available - 1);
        }
        if !queues.contains(&q) {
            queues.push(q);
        }
    }
    if queues.is_empty() {
        bail!("--queues: no queue given");
    }
    Ok(queues)
}

/// The core of each of `workers` workers: `spec` (a comma-separated list,
/// one per worker) or worker i on core i. A core that does not exist is
/// refused rather than silently wrapped.
pub fn parse_cores(
    spec: Option<&str>,
    workers: usize,
    available: usize,
) -> anyhow::Result<Vec<usize>> {
    let cores: Vec<usize> = match spec {
        None => (0..workers).collect(),
        Some(spec) => spec
            .split(',')
            .map(|part| {
                part.trim()
                    .parse()
                    .with_context(|| format!("--cores: {part:?} is not a core number"))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    if cores.len() != workers {
        bail!(
            "--cores: {} core(s) given for {workers} worker(s); give one per worker",
            cores.len()
        );
    }
    if let Some(&c) = cores.iter().find(|&&c| c >= available) {
        bail!(
            "core {c} does not exist: this machine has {available} core(s) (0..{}); \
             give --cores, or fewer --queues / --workers",
            available - 1
        );
    }
    Ok(cores)
}

fn reserve_port(port: u16) -> anyhow::Result<UdpSocket> {
    // A dual-stack [::] socket holds the port for both families, so no other
    // program can take it while the relay runs.
    UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("UDP port {port} is already in use in this network namespace (another relay running?)")
        } else {
            anyhow::Error::new(e).context(format!("binding UDP port {port}"))
        }
    })
}

/// One worker's ends of its group: datagram steering and, with more than
/// one worker, the relay's cross-worker queues and directory.
struct GroupPart {
    steering: Steering,
    relay: Option<RelayPart>,
}

/// Each of `n` workers' share of the group: packet steering, and with
/// several workers the relay's cross-worker queues (woken through the
/// steering's eventfd).
fn group_parts(n: usize) -> anyhow::Result<Vec<GroupPart>> {
    let steerings = WorkerGroup::new(n, DEFAULT_INBOX_CAPACITY)
        .context("building the worker group")?
        .split();
    let relays: Vec<Option<_>> = if n > 1 {
        RelayGroup::new(n, QueueConfig::default())
            .context("building the relay group")?
            .split()
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    Ok(steerings
        .into_iter()
        .zip(relays)
        .map(|(steering, mut relay)| {
            if let Some(r) = &mut relay {
                r.set_waker(steering.waker());
            }
            GroupPart { steering, relay }
        })
        .collect())
}

fn spawn_worker<B: PacketIo + Send + 'static>(
    io: B,
    queue: u32,
    core: usize,
    config: WorkerConfig,
    group: GroupPart,
    limits: RelayLimits,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<RunningWorker> {
    let cross_worker = group.relay.as_ref().map(RelayPart::stats);
    let mut apps = AlpnRouter::new(limits.engine, limits.session, limits.shed, group.relay);
    apps.set_upstreams(limits.upstreams);
    let report = apps.report();
    let mut worker = Worker::in_group(io, apps, config, group.steering);
    let stats = worker.stats();
    let handle = std::thread::Builder::new()
        .name(format!("fastrelay-q{queue}"))
        .spawn(move || -> anyhow::Result<()> {
            pin_to_core(core)?;
            tracing::info!(queue, core, "worker started");
            let result = worker.run(&stop);
            // A worker that fails takes the relay down with a clear error.
            stop.store(true, Ordering::Relaxed);
            result.with_context(|| format!("worker of queue {queue} failed"))
        })
        .context("spawning worker thread")?;
    Ok(RunningWorker {
        queue,
        core,
        stats,
        cross_worker,
        report,
        handle,
    })
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    args.limits.validate()?;
    // SAFETY: geteuid has no preconditions.
    if args.backend == Backend::Xdp && unsafe { libc::geteuid() } != 0 {
        bail!("--backend xdp needs root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW); run as root or use --backend socket");
    }
    let iface = InterfaceInfo::lookup(&args.iface)?;
    let available_cores = core_affinity::get_core_ids()
        .unwrap_or_default()
        .len()
        .max(1);
    let (queues, cores) = match args.backend {
        Backend::Xdp => {
            if args.workers.is_some() {
                bail!("--workers is for --backend socket; the XDP backend runs one worker per queue (--queues)");
            }
            let queues = parse_queues(&args.queues, iface.rx_queues)?;
            let cores = parse_cores(args.cores.as_deref(), queues.len(), available_cores)?;
            (queues, cores)
        }
        Backend::Socket => {
            let workers = args.workers.unwrap_or(1);
            if !(1..=dataplane::cid::MAX_WORKERS).contains(&workers) {
                bail!("--workers must be 1..={}", dataplane::cid::MAX_WORKERS);
            }
            let cores = parse_cores(args.cores.as_deref(), workers, available_cores)?;
            // Socket workers are numbered like queues in the reports.
            ((0..workers as u32).collect(), cores)
        }
    };
    // The XDP backend keeps a plain socket on the port so that nothing else
    // takes it; the socket backend's own SO_REUSEPORT sockets hold it.
    let reserved = match args.backend {
        Backend::Xdp => Some(reserve_port(args.port)?),
        Backend::Socket => None,
    };

    let identity = if args.self_signed {
        Identity::self_signed(&["fastrelay", "localhost"])?
    } else {
        match (&args.cert, &args.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
            _ => bail!("give --cert and --key, or --self-signed"),
        }
    };
    if let Some(path) = &args.write_cert {
        std::fs::write(path, &identity.cert_pem)
            .with_context(|| format!("writing certificate to {}", path.display()))?;
    }
    // IPv6 + UDP headers: 48 bytes.
    let limits = args
        .limits
        .transport((iface.mtu.saturating_sub(48)).clamp(1200, 65_000) as u16);
    let server = Arc::new(tls::server_config(
        identity,
        &relay::router::ALPNS,
        &limits,
    )?);
    let endpoint = Arc::new(tls::endpoint_config());
    let worker_config = || WorkerConfig {
        endpoint: endpoint.clone(),
        server: server.clone(),
        idle: args.idle,
        admission: args.limits.admission(),
        drain: Duration::from_millis(args.drain_ms),
    };

    if args.delivery_timeout_ms == 0 {
        bail!("--delivery-timeout-ms must be at least 1");
    }
    let shed = ShedConfig {
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        max_backlog_bytes: args.max_backlog_bytes,
    };
    let relay_limits = RelayLimits {
        engine: args.limits.engine(queues.len())?,
        session: args.limits.session(),
        shed,
        upstreams: upstream::configs(
            &args.upstream,
            args.upstream_ca.as_deref(),
            args.upstream_server_name.as_deref(),
            &limits,
        )?,
    };
    let upstream_addrs: Vec<SocketAddr> = relay_limits.upstreams.iter().map(|u| u.remote).collect();

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while shutting down exits at once (status 1); the
        // bpf link still goes with the process.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .context("installing signal handler")?;
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }

    let next_hops = Arc::new(SharedNextHops::default());
    let mut workers = Vec::new();
    let mut xdp = None;
    match args.backend {
        Backend::Xdp => {
            raise_memlock_limit();
            let mut program =
                XdpRedirect::attach(&iface.name, args.xdp_mode, iface.is_virtual, &[args.port])?;
            tracing::info!(iface = %iface.name, mode = ?program.mode, port = args.port, "XDP program attached");
            let table =
                netlink::read_next_hops(iface.index).context("reading neighbour/route tables")?;
            if upstream::nudge_unresolved(iface.index, &table, &upstream_addrs) > 0 {
                // Give the kernel a moment, so the links' first packets
                // find their next hop (QUIC retransmits if not).
                std::thread::sleep(Duration::from_millis(100));
                next_hops.publish(
                    netlink::read_next_hops(iface.index)
                        .context("reading neighbour/route tables")?,
                );
            } else {
                next_hops.publish(table);
            }
            // RSS picks a queue by address, not by connection: the workers
            // hand each other the datagrams of connections they do not own,
            // and their relays exchange objects.
            let mut group = group_parts(queues.len())?.into_iter();
            for (&queue, &core) in queues.iter().zip(&cores) {
                let part = group.next().context("one group part per queue")?;
                let io = XskIo::open(
                    XskConfig {
                        iface: iface.name.clone(),
                        queue,
                        local_mac: iface.mac,
                        local_ips: iface.addrs.clone(),
                        port: args.port,
                        ring_size: DEFAULT_RING_SIZE,
                        force_copy: args.xdp_copy,
                    },
                    NextHopView::new(next_hops.clone()),
                )?;
                program.register_socket(queue, io.raw_fd())?;
                workers.push(spawn_worker(
                    io,
                    queue,
                    core,
                    worker_config(),
                    part,
                    relay_limits.clone(),
                    stop.clone(),
                )?);
            }
            xdp = Some(program);
        }
        Backend::Socket => {
            // SO_REUSEPORT spreads flows by address over the sockets, like
            // RSS over queues: the same steering and fan-out apply.
            let mut group = group_parts(queues.len())?.into_iter();
            let any = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), args.port);
            for (&index, &core) in queues.iter().zip(&cores) {
                let part = group.next().context("one group part per worker")?;
                let io = UdpSocketIo::bind(any, true).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        anyhow::anyhow!("UDP port {} is already in use in this network namespace (another relay running?)", args.port)
                    } else {
                        anyhow::Error::new(e).context(format!("binding UDP port {}", args.port))
                    }
                })?;
                workers.push(spawn_worker(
                    io,
                    index,
                    core,
                    worker_config(),
                    part,
                    relay_limits.clone(),
                    stop.clone(),
                )?);
            }
        }
    }

    println!(
        "{}",
        json!({
            "event": "ready",
            "backend": args.backend,
            "xdp_mode": xdp.as_ref().map(|x| x.mode),
            "iface": iface.name,
            "port": args.port,
            "queues": workers.iter().map(|w| w.queue).collect::<Vec<_>>(),
            "addrs": iface.addrs,
        })
    );
    tracing::info!(backend = ?args.backend, queues = ?queues, port = args.port, "relay ready");

    let mut last_refresh = Instant::now();
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if xdp.is_some() && last_refresh.elapsed() >= NEXT_HOP_REFRESH {
            last_refresh = Instant::now();
            match netlink::read_next_hops(iface.index) {
                Ok(table) => {
                    upstream::nudge_unresolved(iface.index, &table, &upstream_addrs);
                    next_hops.publish(table)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refreshing next hops failed; keeping the last table")
                }
            }
        }
        if args.stats_interval > 0
            && last_stats.elapsed() >= Duration::from_secs(args.stats_interval)
        {
            last_stats = Instant::now();
            let mut reports = Vec::new();
            for w in &workers {
                let r = WorkerReport::new(
                    w.queue,
                    w.core,
                    &w.stats,
                    w.cross_worker.as_deref(),
                    &w.report,
                );
                tracing::info!(
                    queue = r.queue,
                    rx = r.rx_packets,
                    tx = r.tx_packets,
                    conns = r.connections_active,
                    xw_out = r.cross_worker_objects_out,
                    xw_in = r.cross_worker_objects_in,
                    xw_dropped = ?r.cross_worker_dropped,
                    "worker stats"
                );
                reports.push(r);
            }
            println!(
                "{}",
                json!({
                    "event": "stats",
                    "uptime_s": started.elapsed().as_secs_f64(),
                    "rss_bytes": rss_bytes(),
                    "workers": reports,
                })
            );
            if let Some(x) = &xdp {
                if let Ok(c) = x.counters() {
                    tracing::info!(
                        redirected = c.redirected,
                        passed = c.passed,
                        malformed = c.malformed,
                        "xdp counters"
                    );
                }
            }
        }
    }
    tracing::info!("stopping: closing connections");

    let mut failure = None;
    let mut reports = Vec::new();
    for w in workers {
        let result = w.handle.join();
        reports.push(WorkerReport::new(
            w.queue,
            w.core,
            &w.stats,
            w.cross_worker.as_deref(),
            &w.report,
        ));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some(anyhow::anyhow!("a worker thread panicked")),
        }
    }
    let xdp_counters = xdp.as_ref().map(|x| x.counters()).transpose()?;
    // Dropping the program closes the bpf link: the interface is left clean.
    drop(xdp);
    drop(reserved);
    println!(
        "{}",
        json!({
            "event": "stopped",
            "uptime_s": started.elapsed().as_secs_f64(),
            "rss_bytes": rss_bytes(),
            "xdp": xdp_counters,
            "workers": reports,
        })
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Kernels before 5.11 charge BPF maps and UMEM to RLIMIT_MEMLOCK; newer
/// ones use memory cgroups. Raising it is harmless either way.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lists() {
        assert_eq!(parse_queues("all", 3).unwrap(), vec![0, 1, 2]);
        assert_eq!(parse_queues("1, 0,1", 2).unwrap(), vec![1, 0]);
        let err = parse_queues("2", 2).unwrap_err().to_string();
        assert!(err.contains("queue 2 does not exist"), "{err}");
        assert!(parse_queues("x", 2).is_err());
    }
}
