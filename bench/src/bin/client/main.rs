//! `fastrelay-client`: test clients for the relay. Each subcommand prints one
//! JSON line with its results on stdout and exits non-zero on failure.

use std::{
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

mod moq_pub;
mod moq_sub;
mod tally;

use anyhow::Context;
use bench::{echo, hostile, quic};
use clap::{Parser, Subcommand};
use moqt_client::{track_name, MoqClient, MOQT_ALPN};
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
    MoqPub(moq_pub::MoqPubArgs),
    /// MoQT subscriber: SUBSCRIBE, receive and verify test objects, measure latency.
    MoqSub(moq_sub::MoqSubArgs),
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
        Command::MoqPub(args) => runtime()?.block_on(moq_pub::run(args)),
        Command::MoqSub(args) => runtime()?.block_on(moq_sub::run(args)),
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
