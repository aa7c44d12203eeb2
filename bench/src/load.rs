//! The benchmark's load processes, each on one tokio current-thread runtime
//! so that many fit on a small box:
//!
//! - [`run_subscribers`]: K subscriber sessions multiplexed on one quinn
//!   endpoint (one UDP socket), all subscribing to the same full track name;
//!   one merged latency histogram, object/gap counts per session.
//! - [`run_publisher`]: publishes a namespace, serves every SUBSCRIBE the
//!   relay sends for the track, and on "go" sends test objects at a fixed
//!   rate on subgroup streams or as datagrams.
//!
//! Both speak plain draft-18 through [`moqt_client`] and talk to the parent
//! on stdio: commands arrive on stdin, JSON events leave on stdout
//! (`{"event": ...}`), the last line being the full result.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use moqt_client::{
    check_test_payload, namespace_from_path, test_payload, unix_ns, MoqClient, MoqSession,
    MOQT_ALPN,
};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::{cli::TrackTarget, hist, quic};

/// Handshakes in flight at once per load process.
const CONNECT_CONCURRENCY: usize = 32;
/// Socket receive buffer of a load process: many sessions share one socket.
const SOCKET_BUFFER: usize = 16 << 20;

#[derive(clap::Args, Clone, Debug)]
pub struct SubscriberArgs {
    #[command(flatten)]
    pub target: TrackTarget,
    /// Subscriber sessions in this process.
    #[arg(long)]
    pub sessions: usize,
    /// Hard bound on this process's lifetime (s).
    #[arg(long, default_value_t = 120)]
    pub max_s: u64,
}

#[derive(clap::Args, Clone, Debug)]
pub struct PublisherArgs {
    #[command(flatten)]
    pub target: TrackTarget,
    #[arg(long, default_value_t = 1200)]
    pub object_size: usize,
    #[arg(long, default_value_t = 1000)]
    pub objects_per_s: u64,
    #[arg(long, default_value_t = 10)]
    pub groups_per_s: u64,
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// OBJECT_DATAGRAMs instead of subgroup streams.
    #[arg(long)]
    pub datagrams: bool,
    /// Hard bound on this process's lifetime (s).
    #[arg(long, default_value_t = 120)]
    pub max_s: u64,
}

fn emit(v: Value) {
    println!("{v}");
}

/// Lines from stdin, forwarded from a plain thread (no tokio io-std here).
/// The channel closes when stdin does.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

/// One quinn endpoint on a socket with a large receive buffer.
fn endpoint(server: SocketAddr, ca: &Path) -> anyhow::Result<quinn::Endpoint> {
    let bind = quic::any_addr_for(server);
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    set_buffers(&socket);
    let runtime = quinn::default_runtime().context("no async runtime for quinn")?;
    let mut ep = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .context("creating the quinn endpoint")?;
    ep.set_default_client_config(quic::client_config(ca, MOQT_ALPN)?);
    Ok(ep)
}

/// Best effort: SO_RCVBUFFORCE/SO_SNDBUFFORCE (root) ignore rmem_max, so no
/// system setting has to change; without the privilege the default stays.
fn set_buffers(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size = SOCKET_BUFFER as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
        // SAFETY: valid fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Connect with retries until `deadline` (the relay may still be starting).
async fn connect(
    ep: &quinn::Endpoint,
    server: SocketAddr,
    deadline: Instant,
) -> anyhow::Result<MoqSession> {
    loop {
        match MoqClient::connect(ep, server, quic::RELAY_SERVER_NAME).await {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() + Duration::from_millis(200) < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Counters shared by every session of a subscriber process.
#[derive(Default)]
struct Totals {
    subscribed: AtomicU64,
    failed: AtomicU64,
    objects: AtomicU64,
    bytes: AtomicU64,
    gaps: AtomicU64,
    out_of_order: AtomicU64,
    bad_checksums: AtomicU64,
    negative_latency: AtomicU64,
    dropped_local: AtomicU64,
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    /// Sessions that received every object the publisher sent.
    complete: AtomicU64,
    /// Objects short of the published count, summed over sessions.
    missing: AtomicU64,
    finished: AtomicU64,
}

/// What the parent tells the subscribers: receive until `target` objects
/// arrived per session or `until` passed.
#[derive(Clone, Copy, Debug)]
struct Drain {
    target: u64,
    until: Instant,
}

pub async fn run_subscribers(args: SubscriberArgs) -> anyhow::Result<()> {
    let hard_deadline = Instant::now() + Duration::from_secs(args.max_s);
    let setup_deadline = Instant::now() + Duration::from_secs(args.max_s / 2);
    let ep = endpoint(args.target.server, &args.target.ca)?;
    let track = args.target.full_track_name()?;
    let totals = Arc::new(Totals::default());
    let histogram = Arc::new(Mutex::new(hist::new_latency_histogram()));
    let (drain_tx, drain_rx) = watch::channel(None::<Drain>);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let (subscribed_tx, mut subscribed_rx) = mpsc::unbounded_channel::<bool>();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(MoqSession, u64)>();

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.sessions {
        let (ep, track, totals, histogram, gate) = (
            ep.clone(),
            track.clone(),
            totals.clone(),
            histogram.clone(),
            gate.clone(),
        );
        let (mut drain_rx, subscribed_tx, done_tx) =
            (drain_rx.clone(), subscribed_tx.clone(), done_tx.clone());
        let server = args.target.server;
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let setup = async {
                let session = connect(&ep, server, setup_deadline).await?;
                let sub = loop {
                    match session.subscribe(track.clone(), None).await {
                        Ok(s) => break s,
                        // Refused while the publisher is not there yet.
                        Err(_) if Instant::now() < setup_deadline && session.closed().is_none() => {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                anyhow::Ok((session, sub))
            };
            let (session, mut sub) = match setup.await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("subscriber session failed: {e:#}");
                    totals.failed.fetch_add(1, Ordering::Relaxed);
                    let _ = subscribed_tx.send(false);
                    return;
                }
            };
            drop(permit);
            let rx_before = session.connection().stats().udp_rx;
            totals.subscribed.fetch_add(1, Ordering::Relaxed);
            let _ = subscribed_tx.send(true);

            let mut received = 0u64;
            let mut last: Option<(u64, u64)> = None;
            loop {
                let drain = *drain_rx.borrow();
                if let Some(d) = drain {
                    if received >= d.target || Instant::now() >= d.until {
                        break;
                    }
                }
                let wake = drain.map_or(hard_deadline, |d| d.until.min(hard_deadline));
                tokio::select! {
                    o = sub.next_object() => {
                        let Some(o) = o else { break };
                        let now = unix_ns();
                        received += 1;
                        totals.objects.fetch_add(1, Ordering::Relaxed);
                        totals.bytes.fetch_add(o.payload.len() as u64, Ordering::Relaxed);
                        // Holes inside a group: objects are numbered 0.. per group.
                        match last {
                            Some((g, prev)) if g == o.group && o.object_id > prev => {
                                totals.gaps.fetch_add(o.object_id - prev - 1, Ordering::Relaxed);
                            }
                            Some((g, _)) if g == o.group => {
                                totals.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => {}
                        }
                        last = Some((o.group, o.object_id));
                        match check_test_payload(&o.payload) {
                            Some(sent) if now >= sent => {
                                let us = ((now - sent) / 1000).max(1);
                                if let Ok(mut h) = histogram.lock() {
                                    h.saturating_record(us);
                                }
                            }
                            Some(_) => { totals.negative_latency.fetch_add(1, Ordering::Relaxed); }
                            None => { totals.bad_checksums.fetch_add(1, Ordering::Relaxed); }
                        }
                    }
                    _ = drain_rx.changed() => {}
                    _ = tokio::time::sleep_until(wake.into()) => {
                        if Instant::now() >= hard_deadline { break; }
                    }
                }
            }
            let rx = session.connection().stats().udp_rx;
            totals
                .rx_packets
                .fetch_add(rx.datagrams - rx_before.datagrams, Ordering::Relaxed);
            totals
                .rx_bytes
                .fetch_add(rx.bytes - rx_before.bytes, Ordering::Relaxed);
            totals
                .dropped_local
                .fetch_add(sub.dropped(), Ordering::Relaxed);
            totals.finished.fetch_add(1, Ordering::Relaxed);
            // Closing is left to the end, outside the measured window.
            let _ = done_tx.send((session, received));
        });
    }
    drop((subscribed_tx, done_tx));

    // Setup: every session subscribed or failed.
    let mut settled = 0;
    while settled < args.sessions {
        match tokio::time::timeout_at(hard_deadline.into(), subscribed_rx.recv()).await {
            Ok(Some(_)) => settled += 1,
            _ => break,
        }
    }
    let subscribed = totals.subscribed.load(Ordering::Relaxed);
    emit(json!({
        "event": "subscribed",
        "subscribed": subscribed,
        "failed": totals.failed.load(Ordering::Relaxed),
    }));

    // Measure until the parent says "drain TARGET MS"; progress once a second.
    let mut commands = stdin_lines();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => emit(json!({
                "event": "progress",
                "objects": totals.objects.load(Ordering::Relaxed),
            })),
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                let mut f = cmd.split_whitespace();
                if f.next() == Some("drain") {
                    let target = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                    let ms = f.next().and_then(|v| v.parse().ok()).unwrap_or(2000);
                    let _ = drain_tx.send(Some(Drain { target, until: Instant::now() + Duration::from_millis(ms) }));
                    break;
                }
            }
            _ = tokio::time::sleep_until(hard_deadline.into()) => break,
        }
    }
    if drain_tx.borrow().is_none() {
        let _ = drain_tx.send(Some(Drain {
            target: 0,
            until: Instant::now(),
        }));
    }
    let mut sessions = Vec::new();
    while sessions.len() < subscribed as usize {
        match tokio::time::timeout_at(hard_deadline.into(), done_rx.recv()).await {
            Ok(Some(s)) => sessions.push(s),
            _ => break,
        }
    }
    // A session may have ended (PUBLISH_DONE) before the drain target was
    // known: completeness is judged here, against the published count.
    let target = drain_tx.borrow().map_or(0, |d| d.target);
    for &(_, received) in &sessions {
        if received >= target {
            totals.complete.fetch_add(1, Ordering::Relaxed);
        }
        totals
            .missing
            .fetch_add(target.saturating_sub(received), Ordering::Relaxed);
    }
    let t = |a: &AtomicU64| a.load(Ordering::Relaxed);
    emit(json!({ "event": "received", "objects": t(&totals.objects) }));

    // Wait for "close" so that the subscribers leave after the measurement.
    let _ = tokio::time::timeout_at(hard_deadline.into(), commands.recv()).await;
    for (s, _) in &sessions {
        let _ = s.close().await;
    }
    tasks.abort_all();
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    let h = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?;
    emit(json!({
        "event": "result",
        "sessions": args.sessions,
        "subscribed": subscribed,
        "failed": t(&totals.failed),
        "finished": t(&totals.finished),
        "complete": t(&totals.complete),
        "objects": t(&totals.objects),
        "bytes": t(&totals.bytes),
        "missing": t(&totals.missing),
        "gaps": t(&totals.gaps),
        "out_of_order": t(&totals.out_of_order),
        "bad_checksums": t(&totals.bad_checksums),
        "negative_latency": t(&totals.negative_latency),
        "dropped_local": t(&totals.dropped_local),
        "rx_packets": t(&totals.rx_packets),
        "rx_bytes": t(&totals.rx_bytes),
        "latency": hist::summary(&h),
        "histogram": hist::to_buckets(&h),
    }));
    Ok(())
}

pub async fn run_publisher(args: PublisherArgs) -> anyhow::Result<()> {
    let hard_deadline = Instant::now() + Duration::from_secs(args.max_s);
    anyhow::ensure!(args.objects_per_s > 0, "--objects-per-s must be positive");
    let ep = endpoint(args.target.server, &args.target.ca)?;
    let session = connect(
        &ep,
        args.target.server,
        Instant::now() + Duration::from_secs(15),
    )
    .await?;
    session
        .publish_namespace(namespace_from_path(&args.target.namespace)?)
        .await
        .context("PUBLISH_NAMESPACE")?;
    let track = args.target.full_track_name()?;

    // Serve every SUBSCRIBE the relay sends (an aggregating relay sends one
    // per track, a multi-worker one may send one per worker).
    let aliases: Arc<Mutex<Vec<(moqt::session::RequestId, u64)>>> = Arc::default();
    let acceptor = {
        let (session, aliases, track) = (session.clone(), aliases.clone(), track.clone());
        tokio::spawn(async move {
            while let Some(inc) = session.next_subscribe().await {
                if inc.track == track {
                    match session.accept_subscribe(inc.id, None).await {
                        Ok(alias) => {
                            if let Ok(mut a) = aliases.lock() {
                                a.push((inc.id, alias));
                            }
                        }
                        Err(e) => eprintln!("accepting SUBSCRIBE: {e:#}"),
                    }
                } else {
                    let _ = session
                        .reject_subscribe(
                            inc.id,
                            moqt::RequestErrorCode::DoesNotExist,
                            "unknown track",
                        )
                        .await;
                }
            }
        })
    };
    emit(json!({ "event": "announced" }));

    let mut commands = stdin_lines();
    loop {
        match tokio::time::timeout_at(hard_deadline.into(), commands.recv()).await {
            Ok(Some(c)) if c == "go" => break,
            Ok(Some(_)) => {}
            _ => anyhow::bail!("no \"go\" from the parent"),
        }
    }
    let current = || aliases.lock().map(|a| a.clone()).unwrap_or_default();
    emit(json!({ "event": "sending", "upstream_subscriptions": current().len() }));

    let total = args.objects_per_s * args.duration_s;
    let per_group = (args.objects_per_s / args.groups_per_s.max(1)).max(1);
    let start = Instant::now();
    let send_deadline = start + Duration::from_secs(args.duration_s) * 2 + Duration::from_secs(5);
    let (mut sent, mut copies, mut errors, mut max_lag) = (0u64, 0u64, 0u64, Duration::ZERO);
    let mut first_error = None;
    for i in 0..total {
        let at = start + Duration::from_nanos(i * 1_000_000_000 / args.objects_per_s);
        let now = Instant::now();
        if now < at {
            tokio::time::sleep_until(at.into()).await;
        } else {
            max_lag = max_lag.max(now - at);
        }
        if Instant::now() > send_deadline {
            break; // far behind schedule: stop, the report says how far we got
        }
        let (group, object) = (i / per_group, i % per_group);
        let payload = test_payload(args.object_size, group, object, unix_ns());
        let subs = current();
        for &(_, alias) in &subs {
            let r = if args.datagrams {
                session
                    .send_datagram(alias, group, object, None, payload.clone())
                    .await
            } else {
                session
                    .send_object(alias, group, 0, object, None, payload.clone())
                    .await
            };
            match r {
                Ok(()) => copies += 1,
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        if !subs.is_empty() {
            sent += 1;
        }
        if !args.datagrams && (object + 1 == per_group || i + 1 == total) {
            for &(_, alias) in &subs {
                let _ = session.end_subgroup(alias, group, 0).await;
            }
        }
    }
    let send_s = start.elapsed().as_secs_f64();
    for (id, _) in current() {
        let _ = session
            .publish_done(id, moqt::PublishDoneCode::TrackEnded, "done")
            .await;
    }
    emit(json!({ "event": "sent", "objects": sent, "send_s": send_s }));

    // Stay connected (retransmissions) until the parent says "close".
    let _ = tokio::time::timeout_at(hard_deadline.into(), commands.recv()).await;
    let stats = session.connection().stats();
    let closed_early = session.closed().map(|c| c.to_string());
    acceptor.abort();
    let _ = session.close().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ep.wait_idle()).await;
    emit(json!({
        "event": "result",
        "objects_sent": sent,
        "object_copies_sent": copies,
        "objects_planned": total,
        "objects_per_group": per_group,
        "send_errors": errors,
        "first_error": first_error,
        "send_s": send_s,
        "max_lag_ms": max_lag.as_secs_f64() * 1e3,
        "upstream_subscriptions": current().len(),
        "session_closed": closed_early,
        "sent_packets": stats.path.sent_packets,
        "lost_packets": stats.path.lost_packets,
        "lost_bytes": stats.path.lost_bytes,
        "congestion_events": stats.path.congestion_events,
        "udp_tx_datagrams": stats.udp_tx.datagrams,
        "udp_tx_bytes": stats.udp_tx.bytes,
        "rtt_us": stats.path.rtt.as_micros() as u64,
    }));
    Ok(())
}
