//! `fastrelay-client`: test clients for the relay. Each subcommand prints one
//! JSON line with its results on stdout and exits non-zero on failure.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{cli::TrackTarget, echo, hostile, quic};
use clap::{Parser, Subcommand};
use moqt_client::{
    check_test_payload, namespace_from_path, test_payload, track_name, unix_ns, MoqClient,
    ReceivedObject, MOQT_ALPN,
};
use rand::{Rng, SeedableRng};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "fastrelay-client",
    about = "Test clients for the fastrelay relay"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Handshake, echo bytes on a stream and ping-pong datagrams.
    Echo(EchoArgs),
    /// Send random non-QUIC UDP datagrams to the relay port (bounded).
    Garbage {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        count: u64,
        /// Upper bound on the run time.
        #[arg(long, default_value_t = 10_000)]
        max_ms: u64,
    },
    /// Count plain UDP datagrams arriving on a port (proves what reaches the kernel).
    Sink {
        #[arg(long)]
        bind: SocketAddr,
        /// Stop after this many datagrams.
        #[arg(long, default_value_t = 1)]
        expect: u64,
        /// Stop after this long in any case.
        #[arg(long, default_value_t = 5_000)]
        max_ms: u64,
    },
    /// MoQT publisher: PUBLISH_NAMESPACE, wait for SUBSCRIBEs, send test objects.
    MoqPub(MoqPubArgs),
    /// MoQT subscriber: SUBSCRIBE, receive and verify test objects, measure latency.
    MoqSub(MoqSubArgs),
    /// A misbehaving MoQT peer: a valid SETUP, then (optionally after
    /// receiving objects as a subscriber) a request stream starting with a
    /// message of an undefined type (§10: the receiver must close the
    /// session); reports how the relay closed the connection.
    MoqBad(MoqBadArgs),
    /// A hostile publisher: a SETUP, then many subgroup streams each
    /// starting a huge object it never finishes (what a connection may
    /// make the relay hold).
    MoqHog(hostile::HogArgs),
    /// Many short sessions: connect, SUBSCRIBE, hold, close (what each
    /// finished session leaves behind).
    MoqChurn(hostile::ChurnArgs),
    /// Valid-looking QUIC Initials from many forged source addresses
    /// (a raw socket; needs root), bounded in count and time.
    InitialFlood(hostile::InitialFloodArgs),
}

#[derive(clap::Args)]
struct MoqPubArgs {
    #[command(flatten)]
    target: TrackTarget,
    #[arg(long, default_value_t = 10)]
    groups: u64,
    #[arg(long, default_value_t = 10)]
    objects_per_group: u64,
    /// Payload bytes per object (at least 16: timestamp + checksum).
    #[arg(long, default_value_t = 1000)]
    object_size: usize,
    /// Payload bytes of each group's first object (a keyframe); default: --object-size.
    #[arg(long)]
    first_object_size: Option<usize>,
    /// Groups per second; objects are spread evenly inside a group.
    #[arg(long, default_value_t = 10.0)]
    rate_groups_per_s: f64,
    /// SUBSCRIBEs to the track to wait for before sending.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// How long to wait for them.
    #[arg(long, default_value_t = 10_000)]
    subscribe_timeout_ms: u64,
    /// Keep the session open this long after PUBLISH_DONE (ms).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Wait this long after the SUBSCRIBEs before the first object (ms), so
    /// that every downstream subscriber of an aggregating relay has joined.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// Local address to bind (default: any, ephemeral port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// A second track in the same namespace whose objects go as OBJECT_DATAGRAMs.
    #[arg(long)]
    datagram_track: Option<String>,
    /// Datagram objects per group on --datagram-track.
    #[arg(long, default_value_t = 1)]
    datagrams_per_group: u64,
    /// Payload bytes per datagram object (it must fit one QUIC packet).
    #[arg(long, default_value_t = 200)]
    datagram_size: usize,
    /// Publisher Priority of --track's objects (default: the draft's 128).
    #[arg(long)]
    priority: Option<u8>,
    /// A second subgroup-stream track in the same namespace, with the same
    /// groups and objects per group as --track.
    #[arg(long)]
    extra_track: Option<String>,
    /// Payload bytes per object of --extra-track.
    #[arg(long, default_value_t = 1000)]
    extra_object_size: usize,
    /// Publisher Priority of --extra-track's objects.
    #[arg(long)]
    extra_priority: Option<u8>,
}

#[derive(clap::Args)]
struct MoqBadArgs {
    #[arg(long)]
    server: SocketAddr,
    #[arg(long)]
    ca: PathBuf,
    /// Subscribe to NAMESPACE/TRACK (the last '/'-separated field is the
    /// track) and receive --after-objects objects before misbehaving.
    #[arg(long)]
    subscribe: Option<String>,
    #[arg(long, default_value_t = 10)]
    after_objects: u64,
    /// Retry a refused SUBSCRIBE for this long (ms).
    #[arg(long, default_value_t = 5_000)]
    retry_ms: u64,
}

#[derive(clap::Args)]
struct MoqSubArgs {
    #[command(flatten)]
    target: TrackTarget,
    /// Stop after this many objects.
    #[arg(long)]
    expect_objects: u64,
    /// Stop receiving this long after SUBSCRIBE_OK in any case.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// largest | next-group | absolute:G:O (default: no filter parameter).
    #[arg(long)]
    filter: Option<String>,
    /// Retry a refused SUBSCRIBE (e.g. no publisher yet) for this long (ms).
    #[arg(long, default_value_t = 0)]
    retry_ms: u64,
    /// After SUBSCRIBE_OK, a Joining FETCH for this many groups before the
    /// live edge (served from the relay's cache); reported as `fetched_*`.
    #[arg(long)]
    join_groups: Option<u64>,
    /// Local address to bind (default: any, ephemeral port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Also subscribe to this track of the namespace, delivered as datagrams.
    #[arg(long)]
    datagram_track: Option<String>,
    /// Datagram objects to wait for (datagrams may be lost: after the stream
    /// objects are complete, the wait for datagrams lasts at most 1 s).
    #[arg(long, default_value_t = 0)]
    expect_datagrams: u64,
    /// Also subscribe to this subgroup-stream track of the namespace and
    /// report it per group (`extra` in the JSON), until it ends or
    /// --timeout-ms.
    #[arg(long)]
    extra_track: Option<String>,
    /// Objects per group the publisher sends (to tell whole, partial and
    /// absent groups apart in the reports).
    #[arg(long)]
    group_size: Option<u64>,
    /// Subscriber Priority for every subscription (§10.2.7).
    #[arg(long)]
    subscriber_priority: Option<u8>,
}

#[derive(clap::Args)]
struct EchoArgs {
    /// Relay address, e.g. 198.18.0.1:4433 or [fd00:1::1]:4433.
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM certificate to trust (the relay's --write-cert output).
    #[arg(long)]
    pub ca: PathBuf,
    #[arg(long, default_value_t = 4 << 20)]
    pub stream_bytes: u64,
    #[arg(long, default_value_t = 1000)]
    pub datagrams: u64,
    /// Local address to bind (default: any, ephemeral port).
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Keep the connection open this long after the echoes (ms), e.g.
    /// while another client misbehaves.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// After the echoes, move the connection to a new local port this many
    /// times (QUIC migration), echoing a stream and datagrams on each path:
    /// every move is a new address 4-tuple, which RSS may steer to another
    /// queue than the connection's owner.
    #[arg(long, default_value_t = 0)]
    pub migrations: u32,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FASTRELAY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Echo(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(run_echo(args))
        }
        Command::Garbage {
            server,
            count,
            max_ms,
        } => run_garbage(server, count, max_ms),
        Command::Sink {
            bind,
            expect,
            max_ms,
        } => run_sink(bind, expect, max_ms),
        Command::MoqPub(args) => runtime()?.block_on(run_moq_pub(args)),
        Command::MoqSub(args) => runtime()?.block_on(run_moq_sub(args)),
        Command::MoqBad(args) => runtime()?.block_on(run_moq_bad(args)),
        Command::MoqHog(args) => print_json(runtime()?.block_on(hostile::hog(args))?),
        Command::MoqChurn(args) => print_json(runtime()?.block_on(hostile::churn(args))?),
        Command::InitialFlood(args) => print_json(hostile::initial_flood(args)?),
    }
}

/// A control message type draft-18 does not define (Table 5).
const UNDEFINED_MESSAGE_TYPE: u64 = 0x3f00;

async fn run_moq_bad(args: MoqBadArgs) -> anyhow::Result<()> {
    let endpoint = quic::client_endpoint(quic::any_addr_for(args.server), &args.ca, MOQT_ALPN)?;
    // A well-behaved session first (a subscriber receiving objects, if
    // asked), so the test sees the relay close a session that was in use.
    let session = MoqClient::connect(&endpoint, args.server, quic::RELAY_SERVER_NAME).await?;
    let mut objects_before = 0;
    if let Some(path) = &args.subscribe {
        let (namespace, track) = path
            .rsplit_once('/')
            .context("--subscribe wants NAMESPACE/TRACK")?;
        let name = track_name(namespace, track)?;
        let retry_until = Instant::now() + Duration::from_millis(args.retry_ms);
        let mut sub = loop {
            match session.subscribe(name.clone(), None).await {
                Ok(s) => break s,
                Err(_) if Instant::now() < retry_until => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => return Err(e),
            }
        };
        let until = Instant::now() + Duration::from_secs(10);
        while objects_before < args.after_objects {
            match tokio::time::timeout_at(until.into(), sub.next_object()).await {
                Ok(Some(_)) => objects_before += 1,
                _ => anyhow::bail!("only {objects_before} objects before misbehaving"),
            }
        }
    }
    // Then a request stream whose first message has an undefined type.
    let conn = session.connection().clone();
    let (mut send, _recv) = conn.open_bi().await.context("opening a request stream")?;
    let mut bytes = Vec::new();
    moqt::varint::encode(UNDEFINED_MESSAGE_TYPE, &mut bytes);
    bytes.extend_from_slice(&0u16.to_be_bytes()); // Length: empty payload
    send.write_all(&bytes)
        .await
        .context("writing the malformed message")?;
    let closed = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .context("the relay did not close the session within 10 s")?;
    let (by_relay, code, reason) = match &closed {
        quinn::ConnectionError::ApplicationClosed(c) => (
            true,
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        other => (false, 0, other.to_string()),
    };
    println!(
        "{}",
        json!({
            "objects_before": objects_before,
            "closed_by_relay": by_relay,
            "code": code,
            "reason": reason,
        })
    );
    Ok(())
}

fn print_json(v: serde_json::Value) -> anyhow::Result<()> {
    println!("{v}");
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let EchoArgs {
        server,
        ca,
        stream_bytes,
        datagrams,
        bind,
        linger_ms,
        migrations,
    } = args;
    let endpoint = quic::client_endpoint(
        bind.unwrap_or(quic::any_addr_for(server)),
        &ca,
        dataplane::echo::ECHO_ALPN,
    )?;
    let start = Instant::now();
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(server, quic::RELAY_SERVER_NAME)?,
    )
    .await
    .context("handshake timed out after 10 s")?
    .context("handshake failed")?;
    let handshake_ms = start.elapsed().as_secs_f64() * 1e3;
    let stream = if stream_bytes > 0 {
        Some(echo::echo_stream(&conn, stream_bytes).await?)
    } else {
        None
    };
    let dgrams = if datagrams > 0 {
        Some(echo::echo_datagrams(&conn, datagrams).await?)
    } else {
        None
    };
    if linger_ms > 0 {
        // Prove the connection still works after lingering: one more datagram round trip.
        tokio::time::sleep(Duration::from_millis(linger_ms)).await;
    }
    let mut migrated_ok = 0u32;
    for _ in 0..migrations {
        let socket =
            UdpSocket::bind(quic::any_addr_for(server)).context("a socket for migrating")?;
        endpoint.rebind(socket).context("moving the connection")?;
        // The new path must carry both: stream data and datagrams.
        let s = echo::echo_stream(&conn, 64 * 1024).await?;
        let d = echo::echo_datagrams(&conn, 5).await?;
        if s.verified && d.lost == 0 {
            migrated_ok += 1;
        }
    }
    let after = echo::echo_datagrams(&conn, 1).await?;
    let stats = conn.stats();
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    println!(
        "{}",
        json!({
            "handshake_ms": handshake_ms,
            "stream": stream,
            "datagrams": dgrams,
            "alive_at_end": after.echoed == 1,
            "migrations": migrations,
            "migrations_ok": migrated_ok,
            "local": endpoint.local_addr()?,
            "lost_packets": stats.path.lost_packets,
            "sent_packets": stats.path.sent_packets,
            "rtt_us": stats.path.rtt.as_micros() as u64,
        })
    );
    Ok(())
}

fn run_garbage(server: SocketAddr, count: u64, max_ms: u64) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(quic::any_addr_for(server))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6a7b);
    let deadline = Instant::now() + Duration::from_millis(max_ms);
    let mut buf = [0u8; 1500];
    let mut sent = 0u64;
    while sent < count && Instant::now() < deadline {
        let len = rng.gen_range(1..buf.len());
        rng.fill(&mut buf[..len]);
        // Every fourth datagram looks like a QUIC long header, to reach deeper
        // into the endpoint's parser.
        if sent.is_multiple_of(4) {
            buf[0] = 0xc0 | (buf[0] & 0x0f);
            buf[1..5].copy_from_slice(&1u32.to_be_bytes());
        }
        if socket.send_to(&buf[..len], server).is_ok() {
            sent += 1;
        }
        if sent.is_multiple_of(256) {
            std::thread::sleep(Duration::from_millis(1)); // stay well under the veth queue
        }
    }
    println!("{}", json!({ "garbage_sent": sent }));
    Ok(())
}

fn run_sink(bind: SocketAddr, expect: u64, max_ms: u64) -> anyhow::Result<()> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    // Tell a waiting test that the socket is bound before anything is sent.
    println!("{}", json!({ "listening": socket.local_addr()? }));
    let deadline = Instant::now() + Duration::from_millis(max_ms);
    let mut buf = [0u8; 2048];
    let mut received = 0u64;
    while received < expect {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            Ok(_) => received += 1,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", json!({ "received": received }));
    Ok(())
}

fn parse_filter(s: &str) -> anyhow::Result<moqt::SubscriptionFilter> {
    use moqt::SubscriptionFilter as F;
    match s {
        "largest" => Ok(F::LargestObject),
        "next-group" => Ok(F::NextGroupStart),
        _ => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                ["absolute", g, o] => Ok(F::AbsoluteStart {
                    start: moqt::Location {
                        group: g.parse().context("filter group")?,
                        object: o.parse().context("filter object")?,
                    },
                }),
                _ => anyhow::bail!("filter must be largest, next-group or absolute:G:O, not {s:?}"),
            }
        }
    }
}

async fn run_moq_pub(args: MoqPubArgs) -> anyhow::Result<()> {
    let endpoint = quic::client_endpoint(
        args.bind.unwrap_or(quic::any_addr_for(args.target.server)),
        &args.target.ca,
        MOQT_ALPN,
    )?;
    let start = Instant::now();
    let session =
        MoqClient::connect(&endpoint, args.target.server, quic::RELAY_SERVER_NAME).await?;
    let setup_ms = start.elapsed().as_secs_f64() * 1e3;
    let namespace = namespace_from_path(&args.target.namespace)?;
    let track = args.target.full_track_name()?;
    let datagram_track = args
        .datagram_track
        .as_deref()
        .map(|t| track_name(&args.target.namespace, t))
        .transpose()?;
    let extra_track = args
        .extra_track
        .as_deref()
        .map(|t| track_name(&args.target.namespace, t))
        .transpose()?;
    session.publish_namespace(namespace).await?;

    // Wait for the relay's SUBSCRIBE(s) to each track; refuse other tracks.
    let mut subs = Vec::new();
    let mut datagram_subs = Vec::new();
    let mut extra_subs = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(args.subscribe_timeout_ms);
    let wanted = |on: bool| if on { args.subscribers } else { 0 };
    let (datagram_wanted, extra_wanted) = (
        wanted(datagram_track.is_some()),
        wanted(extra_track.is_some()),
    );
    while subs.len() < args.subscribers
        || datagram_subs.len() < datagram_wanted
        || extra_subs.len() < extra_wanted
    {
        let inc = tokio::time::timeout_at(deadline.into(), session.next_subscribe())
            .await
            .with_context(|| {
                format!(
                    "{} of {} SUBSCRIBEs for {} after {} ms",
                    subs.len(),
                    args.subscribers,
                    track.to_serialized(),
                    args.subscribe_timeout_ms
                )
            })?
            .ok_or_else(|| {
                session
                    .closed()
                    .map(anyhow::Error::new)
                    .unwrap_or_else(|| anyhow::anyhow!("session ended"))
            })
            .context("waiting for SUBSCRIBE")?;
        if inc.track == track {
            let alias = session.accept_subscribe(inc.id, None).await?;
            subs.push((inc.id, alias));
        } else if Some(&inc.track) == datagram_track.as_ref() {
            let alias = session.accept_subscribe(inc.id, None).await?;
            datagram_subs.push((inc.id, alias));
        } else if Some(&inc.track) == extra_track.as_ref() {
            let alias = session.accept_subscribe(inc.id, None).await?;
            extra_subs.push((inc.id, alias));
        } else {
            session
                .reject_subscribe(
                    inc.id,
                    moqt::RequestErrorCode::DoesNotExist,
                    "unknown track",
                )
                .await?;
        }
    }

    tokio::time::sleep(Duration::from_millis(args.start_delay_ms)).await;
    let send_start = Instant::now();
    let group_interval = Duration::from_secs_f64(1.0 / args.rate_groups_per_s.max(1e-3));
    let per_group = args.objects_per_group.max(1);
    let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let (mut datagrams_sent, mut datagram_errors) = (0u64, 0u64);
    let mut first_error = None;
    for g in 0..args.groups {
        for o in 0..args.objects_per_group {
            let at = send_start + group_interval.mul_f64(g as f64 + o as f64 / per_group as f64);
            tokio::time::sleep_until(at.into()).await;
            let size = match (o, args.first_object_size) {
                (0, Some(keyframe)) => keyframe,
                _ => args.object_size,
            };
            let payload = test_payload(size, g, o, unix_ns());
            let extra = test_payload(args.extra_object_size, g, o, unix_ns());
            let sends = subs
                .iter()
                .map(|&(_, alias)| (alias, args.priority, &payload))
                .chain(
                    extra_subs
                        .iter()
                        .map(|&(_, alias)| (alias, args.extra_priority, &extra)),
                );
            for (alias, priority, payload) in sends {
                match session
                    .send_object(alias, g, 0, o, priority, payload.clone())
                    .await
                {
                    Ok(()) => {
                        sent += 1;
                        bytes += payload.len() as u64;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            if o < args.datagrams_per_group {
                let payload = test_payload(args.datagram_size, g, o, unix_ns());
                for &(_, alias) in &datagram_subs {
                    match session
                        .send_datagram(alias, g, o, None, payload.clone())
                        .await
                    {
                        Ok(()) => datagrams_sent += 1,
                        Err(e) => {
                            datagram_errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
        }
        for &(_, alias) in subs.iter().chain(&extra_subs) {
            session.end_subgroup(alias, g, 0).await?;
        }
    }
    let send_ms = send_start.elapsed().as_secs_f64() * 1e3;
    for &(id, _) in subs.iter().chain(&datagram_subs).chain(&extra_subs) {
        if let Err(e) = session
            .publish_done(id, moqt::PublishDoneCode::TrackEnded, "done")
            .await
        {
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    if args.linger_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
    }
    let closed_early = session.closed();
    session.close().await?;
    let stats = session.connection().stats();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    println!(
        "{}",
        json!({
            "setup_ms": setup_ms,
            "subscribers": subs.len(),
            "groups": args.groups,
            "objects_sent": sent,
            "bytes_sent": bytes,
            "send_errors": errors,
            "datagrams_sent": datagrams_sent,
            "datagram_send_errors": datagram_errors,
            "first_error": first_error,
            "send_ms": send_ms,
            "session_closed": closed_early.map(|c| c.to_string()),
            "lost_packets": stats.path.lost_packets,
            "rtt_us": stats.path.rtt.as_micros() as u64,
        })
    );
    if errors > 0 {
        anyhow::bail!("{errors} objects could not be sent");
    }
    Ok(())
}

async fn run_moq_sub(args: MoqSubArgs) -> anyhow::Result<()> {
    use std::collections::{HashMap, HashSet};
    let filter = args.filter.as_deref().map(parse_filter).transpose()?;
    let endpoint = quic::client_endpoint(
        args.bind.unwrap_or(quic::any_addr_for(args.target.server)),
        &args.target.ca,
        MOQT_ALPN,
    )?;
    let start = Instant::now();
    let session =
        MoqClient::connect(&endpoint, args.target.server, quic::RELAY_SERVER_NAME).await?;
    let setup_ms = start.elapsed().as_secs_f64() * 1e3;
    let track = args.target.full_track_name()?;
    let retry_until = Instant::now() + Duration::from_millis(args.retry_ms);
    let mut attempts = 0u32;
    let params = moqt::Parameters {
        subscription_filter: filter,
        subscriber_priority: args.subscriber_priority,
        ..moqt::Parameters::default()
    };
    let mut sub = loop {
        attempts += 1;
        match session.subscribe_with(track.clone(), params.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < retry_until && session.closed().is_none() => {
                eprintln!("SUBSCRIBE refused, retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut datagram_sub = match &args.datagram_track {
        Some(t) => Some(
            session
                .subscribe_with(track_name(&args.target.namespace, t)?, params.clone())
                .await
                .context("SUBSCRIBE to the datagram track")?,
        ),
        None => None,
    };
    // The extra track is drained by its own task until it ends or the
    // overall timeout; its report joins this one's.
    let extra = match &args.extra_track {
        Some(t) => {
            let mut extra_sub = session
                .subscribe_with(track_name(&args.target.namespace, t)?, params.clone())
                .await
                .context("SUBSCRIBE to the extra track")?;
            let until = Instant::now() + Duration::from_millis(args.timeout_ms);
            let group_size = args.group_size;
            Some(tokio::spawn(async move {
                let mut tally = GroupTally::new()?;
                while let Ok(Some(o)) =
                    tokio::time::timeout_at(until.into(), extra_sub.next_object()).await
                {
                    tally.record(&o);
                }
                let report = tally.report(group_size, &extra_sub.resets());
                if extra_sub.end().is_none() {
                    extra_sub.cancel().await;
                }
                anyhow::Ok(report)
            }))
        }
        None => None,
    };
    let subscribe_ms = start.elapsed().as_secs_f64() * 1e3 - setup_ms;

    // Past objects first: the Joining FETCH ends where the subscription starts.
    let mut fetched = Vec::new();
    let mut fetch_bad_checksums = 0u64;
    if let Some(groups_before) = args.join_groups {
        let mut fetch = session
            .fetch_joining(&sub, groups_before)
            .await
            .context("joining FETCH")?;
        let until = Instant::now() + Duration::from_millis(args.timeout_ms);
        while let Ok(Some(o)) = tokio::time::timeout_at(until.into(), fetch.next_object()).await {
            if check_test_payload(&o.payload).is_none() {
                fetch_bad_checksums += 1;
            }
            fetched.push((o.group, o.object_id));
        }
    }
    let fetch_in_order = fetched.windows(2).all(|w| w[0] < w[1]);

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut per_group = GroupTally::new()?;
    let mut last: HashMap<(u64, Option<u64>), u64> = HashMap::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let (mut objects, mut bytes, mut gaps, mut duplicates, mut out_of_order) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut bad_checksums, mut negative_latency) = (0u64, 0u64);
    let mut first = None;
    let mut groups = HashSet::new();
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let mut timed_out = false;
    let mut datagrams = DatagramTally::default();
    let mut datagram_deadline = None;
    // Until the datagram track ends (PUBLISH_DONE can overtake the last
    // stream objects of the other track: it ends only itself).
    let mut datagram_open = datagram_sub.is_some();
    loop {
        let streams_done = objects >= args.expect_objects;
        let datagrams_done = !datagram_open || datagrams.seen.len() as u64 >= args.expect_datagrams;
        if streams_done && datagrams_done {
            break;
        }
        // Datagrams can be lost: once the streams are complete, wait a
        // little for the rest of them, not for ever.
        let until = if streams_done {
            *datagram_deadline.get_or_insert(deadline.min(Instant::now() + Duration::from_secs(1)))
        } else {
            deadline
        };
        let next = async {
            match datagram_sub.as_mut() {
                Some(d) if datagram_open => tokio::select! {
                    o = sub.next_object(), if !streams_done => (o, false),
                    o = d.next_object() => (o, true),
                },
                _ => (sub.next_object().await, false),
            }
        };
        let o = match tokio::time::timeout_at(until.into(), next).await {
            Ok((Some(o), true)) => {
                datagrams.record(&o);
                continue;
            }
            Ok((Some(o), false)) => o,
            Ok((None, true)) => {
                datagram_open = false;
                continue;
            }
            Ok((None, false)) => break,
            Err(_) => {
                timed_out = !streams_done;
                break;
            }
        };
        let now = unix_ns();
        if !seen.insert((o.group, o.object_id)) {
            duplicates += 1;
            continue;
        }
        objects += 1;
        bytes += o.payload.len() as u64;
        groups.insert(o.group);
        per_group.record(&o);
        first.get_or_insert((o.group, o.object_id));
        match last.insert((o.group, o.subgroup), o.object_id) {
            Some(prev) if o.object_id <= prev => out_of_order += 1,
            Some(prev) => gaps += o.object_id - prev - 1,
            None => {}
        }
        match check_test_payload(&o.payload) {
            Some(sent_ns) if now >= sent_ns => {
                hist.saturating_record(((now - sent_ns) / 1000).max(1));
            }
            Some(_) => negative_latency += 1,
            None => bad_checksums += 1,
        }
    }
    let receive_ms = start.elapsed().as_secs_f64() * 1e3 - setup_ms - subscribe_ms;
    let end = sub.end().map(|e| format!("{e:?}"));
    let dropped_local = sub.dropped();
    let complete = objects >= args.expect_objects;
    let group_report = per_group.report(args.group_size, &sub.resets());
    let extra = match extra {
        Some(task) => Some(task.await.context("extra-track task")??),
        None => None,
    };
    if sub.end().is_none() {
        sub.cancel().await;
    }
    if let Some(d) = datagram_sub {
        if d.end().is_none() {
            d.cancel().await;
        }
    }
    session.close().await?;
    let stats = session.connection().stats();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let q = |p: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(p));
    println!(
        "{}",
        json!({
            "setup_ms": setup_ms,
            "subscribe_ms": subscribe_ms,
            "subscribe_attempts": attempts,
            "receive_ms": receive_ms,
            "objects": objects,
            "expected": args.expect_objects,
            "complete": complete,
            "timed_out": timed_out,
            "bytes": bytes,
            "groups": groups.len(),
            "first": first,
            "gaps": gaps,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "bad_checksums": bad_checksums,
            "negative_latency": negative_latency,
            "dropped_local": dropped_local,
            "latency_us_p50": q(0.5),
            "latency_us_p99": q(0.99),
            "latency_us_max": (!hist.is_empty()).then(|| hist.max()),
            "end": end,
            "fetched": fetched.len(),
            "fetched_first": fetched.first(),
            "fetched_last": fetched.last(),
            "fetched_in_order": fetch_in_order,
            "fetch_bad_checksums": fetch_bad_checksums,
            "datagrams": datagrams.seen.len(),
            "datagram_duplicates": datagrams.duplicates,
            "datagram_bad_checksums": datagrams.bad_checksums,
            "datagram_on_stream": datagrams.on_stream,
            "lost_packets": stats.path.lost_packets,
            "rtt_us": stats.path.rtt.as_micros() as u64,
            "per_group": group_report,
            "extra": extra,
        })
    );
    if !complete {
        anyhow::bail!("received {objects} of {} objects", args.expect_objects);
    }
    if bad_checksums > 0 {
        anyhow::bail!("{bad_checksums} objects failed the checksum");
    }
    Ok(())
}

/// What a subscriber got on its datagram track.
#[derive(Default)]
struct DatagramTally {
    seen: std::collections::HashSet<(u64, u64)>,
    duplicates: u64,
    bad_checksums: u64,
    /// Objects of the datagram track that arrived on a stream instead.
    on_stream: u64,
}

impl DatagramTally {
    fn record(&mut self, o: &ReceivedObject) {
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
struct GroupTally {
    groups: std::collections::BTreeMap<u64, Vec<u64>>,
    hist: hdrhistogram::Histogram<u64>,
    bad_checksums: u64,
}

impl GroupTally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            groups: Default::default(),
            hist: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)?,
            bad_checksums: 0,
        })
    }

    fn record(&mut self, o: &ReceivedObject) {
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
    fn report(&self, group_size: Option<u64>, resets: &[(u64, u64)]) -> serde_json::Value {
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
