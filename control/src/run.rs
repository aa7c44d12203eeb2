//! `fastrelay run`: set up, serve until a signal, tear down, report.
//!
//! stdout carries machine-readable JSON lines only: `{"event":"ready",...}`
//! once the dataplane is up, and `{"event":"stopped",...}` with the final
//! counters. Logs go to stderr.

use std::{
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::RawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context};
use dataplane::{
    handoff::{Steering, WorkerGroup, DEFAULT_INBOX_CAPACITY},
    io::{
        udp::UdpSocketIo,
        xsk::{umem_bytes, XskConfig, XskIo, DEFAULT_RING_SIZE},
        PacketIo,
    },
    neighbor::{NextHopView, SharedNextHops},
    tls::{self, Identity, SharedServerConfig, TransportLimits},
    worker::{pin_to_core, Worker, WorkerConfig},
};
use moqt::session::SessionConfig;
use serde::Serialize;
use serde_json::json;

use crate::{
    admin,
    iface::InterfaceInfo,
    netlink, selfsigned,
    snapshot::{rss_bytes, Sources, WorkerSnapshot, WorkerSource},
    upstream, web,
    xdp::XdpRedirect,
    Backend, RunArgs,
};
use relay::{
    app::RelayState,
    auth::Authorizer,
    crossworker::{QueueConfig, CLASSES},
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
    /// Token verification (`--auth-key`), shared by every worker.
    auth: Option<Arc<Authorizer>>,
}

/// How often the kernel's neighbour and route tables are re-read.
const NEXT_HOP_REFRESH: Duration = Duration::from_secs(1);
/// Pause between attempts to renew a self-signed certificate that failed.
const RENEWAL_RETRY: Duration = Duration::from_secs(5);
/// How often the XDP program's counters are read for the admin listener.
const XDP_COUNTERS_REFRESH: Duration = Duration::from_millis(500);

struct RunningWorker {
    queue: u32,
    source: Arc<WorkerSource>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Clears a worker's `running` flag when its thread ends, even by a panic.
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
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
    /// Objects and payload bytes from publishers and to subscribers.
    objects_received: u64,
    object_bytes_received: u64,
    objects_sent: u64,
    object_bytes_sent: u64,
    shed: ShedReport,
    /// What the worker's relay holds now (see `relay::app::RelayState`).
    state: serde_json::Value,
}

impl WorkerReport {
    /// The same snapshot `/metrics` reads (see `crate::snapshot`).
    fn new(source: &WorkerSource) -> Self {
        let w = WorkerSnapshot::counters(source);
        let (s, c) = (&w.counts, &w.cross_worker);
        WorkerReport {
            queue: w.queue,
            core: w.core,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_dropped_malformed: s.rx_dropped_malformed,
            tx_dropped: s.tx_dropped,
            connections_accepted: s.connections_accepted,
            connections_refused: s.connections_refused,
            connections_retried: s.connections_retried,
            connections_active: s.connections_active,
            handed_off_out: s.handed_off_out,
            handed_off_in: s.handed_off_in,
            handoff_dropped: s.handoff_dropped,
            cross_worker_objects_out: c.objects_out,
            cross_worker_objects_in: c.objects_in,
            cross_worker_dropped: c.dropped,
            cross_worker_control_deferred: c.control_deferred,
            cross_worker_control_lost: c.control_lost,
            objects_received: w.relay.traffic.objects_received,
            object_bytes_received: w.relay.traffic.bytes_received,
            objects_sent: w.relay.traffic.objects_sent,
            object_bytes_sent: w.relay.traffic.bytes_sent,
            shed: w.relay.shed.into(),
            state: state_json(&w.relay.state),
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

#[allow(clippy::too_many_arguments)]
fn spawn_worker<B: PacketIo + Send + 'static>(
    io: B,
    xsk_fd: Option<RawFd>,
    queue: u32,
    core: usize,
    config: WorkerConfig,
    group: GroupPart,
    limits: RelayLimits,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<RunningWorker> {
    let cross_worker = group.relay.as_ref().map(RelayPart::stats);
    let mut apps = AlpnRouter::new(limits.engine, limits.session, limits.shed, group.relay)
        .with_authorizer(limits.auth);
    apps.set_upstreams(limits.upstreams);
    let (report, hop) = (apps.report(), apps.hop_histogram());
    let mut worker = Worker::in_group(io, apps, config, group.steering);
    let running = Arc::new(AtomicBool::new(true));
    let source = Arc::new(WorkerSource {
        queue,
        core,
        stats: worker.stats(),
        cross_worker,
        report,
        hop,
        xsk_fd,
        running: running.clone(),
    });
    let handle = std::thread::Builder::new()
        .name(format!("fastrelay-q{queue}"))
        .spawn(move || -> anyhow::Result<()> {
            let _running = RunningFlag(running);
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
        source,
        handle,
    })
}

/// Runs the relay until a signal. The options have passed
/// `check::before_run` (main calls it first, so that errors point into
/// the config file); what needs the host is checked here.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.backend == Backend::Xdp {
        crate::caps::check_xdp()?;
    }
    let iface = InterfaceInfo::lookup(&args.iface)?;
    // Bound before anything is set up: a taken admin address fails the start.
    let admin_listener = match &args.admin {
        Some(spec) => Some(admin::bind(admin::parse_addr(spec)?, args.port)?),
        None => None,
    };
    let available_cores = core_affinity::get_core_ids()
        .unwrap_or_default()
        .len()
        .max(1);
    let (queues, cores) = match args.backend {
        Backend::Xdp => {
            let queues = parse_queues(&args.queues, iface.rx_queues)?;
            let cores = parse_cores(args.cores.as_deref(), queues.len(), available_cores)?;
            (queues, cores)
        }
        Backend::Socket => {
            let workers = args.workers.unwrap_or(1);
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

    let web = Arc::new(web::WebInfo::new(args.port));
    let mut self_signed = None;
    let identity = if args.self_signed {
        let names = selfsigned::names(&iface.addrs);
        let (identity, info) = Identity::self_signed_short(
            &names,
            SystemTime::now(),
            Duration::from_secs(args.self_signed_validity_s),
        )?;
        web.set_certificate_hashes(vec![info.sha256_hex()]);
        self_signed = Some((names, info));
        identity
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
    let server = Arc::new(SharedServerConfig::new(Arc::new(tls::server_config(
        identity,
        &relay::router::ALPNS,
        &limits,
    )?)));
    let endpoint = Arc::new(tls::endpoint_config());
    let worker_config = || WorkerConfig {
        endpoint: endpoint.clone(),
        server: server.clone(),
        idle: args.idle,
        admission: args.limits.admission(),
        drain: Duration::from_millis(args.drain_ms),
    };

    let shed = ShedConfig {
        delivery_timeout: Duration::from_millis(args.delivery_timeout_ms),
        max_backlog_bytes: args.max_backlog_bytes,
    };
    let authorizer = args.auth.authorizer()?;
    let relay_limits = RelayLimits {
        engine: args.limits.engine(queues.len())?,
        session: args.limits.session(),
        shed,
        upstreams: upstream::configs(
            &args.upstream,
            args.upstream_ca.as_deref(),
            args.upstream_server_name.as_deref(),
            args.upstream_token_file.as_deref(),
            &limits,
        )?,
        auth: authorizer.clone(),
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

    // SIGHUP: read --cert, --key and the --auth-key files again; new
    // handshakes and requests use them.
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;

    let next_hops = Arc::new(SharedNextHops::default());
    let mut workers = Vec::new();
    let mut xdp = None;
    match args.backend {
        Backend::Xdp => {
            raise_memlock_limit();
            crate::caps::check_locked_memory(queues.len() as u64 * umem_bytes(DEFAULT_RING_SIZE))?;
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
                let fd = io.raw_fd();
                program.register_socket(queue, fd)?;
                workers.push(spawn_worker(
                    io,
                    Some(fd),
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
                    None,
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

    // Read once now, so that the first scrape already has them.
    let xdp_shared = Arc::new(Mutex::new(xdp.as_ref().and_then(|x| x.counters().ok())));
    if let Some(listener) = admin_listener {
        let addr = listener.local_addr().ok();
        let sources = Sources {
            workers: workers.iter().map(|w| w.source.clone()).collect(),
            stop: stop.clone(),
            xdp: xdp_shared.clone(),
            started,
            auth: authorizer.clone(),
            web: web.clone(),
        };
        admin::spawn(listener, Arc::new(sources))?;
        tracing::info!(addr = ?addr, "admin listener serving /metrics, /health and the web page at /");
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
            "certificate_sha256": self_signed.as_ref().map(|(_, info)| info.sha256_hex()),
        })
    );
    if let Some((_, info)) = &self_signed {
        selfsigned::announce("certificate", info);
    }
    tracing::info!(backend = ?args.backend, queues = ?queues, port = args.port, "relay ready");

    let mut last_refresh = Instant::now();
    let mut last_stats = Instant::now();
    let mut last_xdp_counters: Option<Instant> = None;
    let mut last_renewal_try: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some((names, info)) = &mut self_signed {
            // A failed renewal is tried again a few seconds later, not at
            // every turn of this loop.
            if selfsigned::renewal_due(info, SystemTime::now())
                && last_renewal_try.is_none_or(|t| t.elapsed() >= RENEWAL_RETRY)
            {
                last_renewal_try = Some(Instant::now());
                selfsigned::renew(&args, names, info, &web, |identity| {
                    install_identity(&args, &limits, &server, identity)
                });
            }
        }
        if reload.swap(false, Ordering::Relaxed) {
            reload_certificate(&args, &limits, &server);
            if let Some(authorizer) = &authorizer {
                reload_auth_keys(&args, authorizer);
            }
        }
        if let Some(x) = &xdp {
            if last_xdp_counters.is_none_or(|t| t.elapsed() >= XDP_COUNTERS_REFRESH) {
                last_xdp_counters = Some(Instant::now());
                if let (Ok(c), Ok(mut shared)) = (x.counters(), xdp_shared.lock()) {
                    *shared = Some(c);
                }
            }
        }
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
                let r = WorkerReport::new(&w.source);
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
        reports.push(WorkerReport::new(&w.source));
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
            "auth": authorizer.as_ref().map(|a| a.counts()),
        })
    );
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// SIGHUP: the --auth-key files are read again and verify tokens from now
/// on; keys that do not load leave the running ones in place.
fn reload_auth_keys(args: &RunArgs, authorizer: &Authorizer) {
    let outcome = args
        .auth
        .keys()
        .and_then(|keys| authorizer.replace_keys(keys))
        .map(|()| json!({ "keys": args.auth.auth_key.len() }));
    announce_reload("auth_keys", outcome);
}

/// SIGHUP: the certificate and key files are read again and every worker
/// accepts new handshakes with them; established sessions keep theirs. A
/// file that does not parse leaves the running configuration in place.
fn reload_certificate(args: &RunArgs, limits: &TransportLimits, server: &SharedServerConfig) {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        tracing::warn!("SIGHUP: nothing to reload (the certificate is self-signed)");
        return;
    };
    let outcome = Identity::from_pem_files(cert, key).and_then(|identity| {
        install_identity(args, limits, server, identity)?;
        Ok(json!({ "generation": server.generation() }))
    });
    announce_reload("tls", outcome);
}

/// Hands a new certificate to the workers for the handshakes from now on
/// (a SIGHUP reload, a self-signed renewal) and rewrites `--write-cert`;
/// established connections keep theirs.
fn install_identity(
    args: &RunArgs,
    limits: &TransportLimits,
    server: &SharedServerConfig,
    identity: Identity,
) -> anyhow::Result<()> {
    let cert_pem = identity.cert_pem.clone();
    let config = tls::server_config(identity, &relay::router::ALPNS, limits)?;
    server.replace(Arc::new(config));
    if let Some(path) = &args.write_cert {
        if let Err(e) = std::fs::write(path, &cert_pem) {
            tracing::warn!(path = %path.display(), error = %e, "writing the new certificate failed");
        }
    }
    Ok(())
}

/// Reports a SIGHUP reload of `what` in the log and on stdout:
/// `{"event":"<what>_reloaded",...fields}`, or
/// `{"event":"<what>_reload_failed","error":...}` when what was in use
/// stays.
fn announce_reload(what: &str, outcome: anyhow::Result<serde_json::Value>) {
    let line = match outcome {
        Ok(mut fields) => {
            tracing::info!(what, details = %fields, "reloaded on SIGHUP");
            fields["event"] = format!("{what}_reloaded").into();
            fields
        }
        Err(e) => {
            let error = format!("{e:#}");
            tracing::error!(
                what,
                error,
                "reload on SIGHUP failed; keeping what is in use"
            );
            json!({ "event": format!("{what}_reload_failed"), "error": error })
        }
    };
    println!("{line}");
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK, and AF_XDP
/// UMEMs are charged to it still unless the process has CAP_IPC_LOCK (see
/// `caps::check_locked_memory`). Raising it is harmless either way.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } == 0 {
        return;
    }
    // Without CAP_SYS_RESOURCE: as far as the hard limit allows.
    let mut limit = unlimited;
    // SAFETY: valid rlimit structs we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
        }
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
