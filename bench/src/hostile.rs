//! Peers that cost the relay on purpose, for the limits tests: a publisher
//! that starts huge objects on many streams and never finishes them
//! (`moq-hog`), and a crowd of short sessions that connect, subscribe and
//! leave (`moq-churn`). Both are bounded in count and time and print one
//! JSON line.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::BytesMut;
use moqt::data::subgroup::{SubgroupEncoder, SubgroupHeader, SubgroupObjectHeader};
use moqt::{ObjectStatus, Properties};
use moqt_client::{MoqClient, MOQT_ALPN};
use serde_json::{json, Value};

use dataplane::frame::{FrameHeader, MacAddr};

use crate::{cli::TrackTarget, quic};

/// Bytes of the Ethernet header `FrameHeader::write` puts first (no VLAN).
const ETHERNET_HEADER: usize = 14;

#[derive(clap::Args, Debug)]
pub struct HogArgs {
    /// Relay address.
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM certificate to trust.
    #[arg(long)]
    pub ca: PathBuf,
    /// Subgroup streams to open (each one object, never finished).
    #[arg(long, default_value_t = 1000)]
    pub streams: u64,
    /// Payload length each object declares.
    #[arg(long, default_value_t = 16 << 20)]
    pub declared_bytes: u64,
    /// Payload bytes written on each stream at most (flow control permitting).
    #[arg(long, default_value_t = 1 << 20)]
    pub send_per_stream: usize,
    /// Track Alias on the streams (nobody announced it).
    #[arg(long, default_value_t = 7)]
    pub alias: u64,
    /// How long the connection is held open, writing what flow control allows.
    #[arg(long, default_value_t = 5_000)]
    pub hold_ms: u64,
}

/// One SETUP, then `streams` subgroup streams each carrying the start of an
/// object of `declared_bytes`; reports what the relay let through and what
/// it stopped.
pub async fn hog(args: HogArgs) -> anyhow::Result<Value> {
    let endpoint = quic::client_endpoint(quic::any_addr_for(args.server), &args.ca, MOQT_ALPN)?;
    let session = MoqClient::connect(&endpoint, args.server, quic::RELAY_SERVER_NAME).await?;
    let conn = session.connection().clone();
    let deadline = Instant::now() + Duration::from_millis(args.hold_ms);
    let chunk = vec![0u8; 16 * 1024];
    let written = Arc::new(AtomicU64::new(0));
    let stopped = Arc::new(Mutex::new(BTreeMap::<u64, u64>::new()));
    let mut tasks = Vec::new();
    for i in 0..args.streams {
        let mut head = BytesMut::new();
        let mut enc = SubgroupEncoder::new(SubgroupHeader {
            track_alias: args.alias,
            group_id: i,
            ..SubgroupHeader::default()
        });
        enc.encode_header(&mut head)?;
        enc.encode_object_header(
            &SubgroupObjectHeader {
                object_id: 0,
                properties: Properties::new(),
                status: ObjectStatus::Normal,
                payload_len: args.declared_bytes,
            },
            &mut head,
        )?;
        let Ok(Ok(mut send)) = tokio::time::timeout_at(deadline.into(), conn.open_uni()).await
        else {
            break;
        };
        let (chunk, written, stopped) = (chunk.clone(), written.clone(), stopped.clone());
        let budget = args.send_per_stream.min(args.declared_bytes as usize);
        tasks.push(tokio::spawn(async move {
            let write = async {
                send.write_all(&head).await?;
                let mut sent = 0;
                while sent < budget {
                    let n = send
                        .write(&chunk[..(budget - sent).min(chunk.len())])
                        .await?;
                    sent += n;
                    written.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok::<_, quinn::WriteError>(())
            };
            let code = match tokio::time::timeout_at(deadline.into(), write).await {
                Ok(Err(quinn::WriteError::Stopped(code))) => Some(code),
                // All written: a STOP_SENDING may still come.
                Ok(Ok(())) => {
                    match tokio::time::timeout_at(deadline.into(), send.stopped()).await {
                        Ok(Ok(Some(code))) => Some(code),
                        _ => None,
                    }
                }
                // Blocked by flow control until the deadline, or the
                // connection went: reported below.
                _ => None,
            };
            if let Some(code) = code {
                *stopped
                    .lock()
                    .unwrap()
                    .entry(code.into_inner())
                    .or_default() += 1;
            }
            // Held open (never finished) until the connection closes.
            send
        }));
    }
    let opened = tasks.len();
    tokio::time::sleep_until(deadline.into()).await;
    let alive = conn.close_reason().is_none();
    let close_reason = conn.close_reason().map(|r| r.to_string());
    let mut held = Vec::new();
    for t in tasks {
        if let Ok(send) = t.await {
            held.push(send);
        }
    }
    session.close().await.ok();
    drop(held);
    let stopped = stopped.lock().unwrap().clone();
    Ok(json!({
        "role": "hog",
        "streams_opened": opened,
        "payload_bytes_written": written.load(Ordering::Relaxed),
        "streams_stopped": stopped.values().sum::<u64>(),
        "stopped_by_code": stopped.iter().map(|(c, n)| (format!("0x{c:x}"), *n)).collect::<BTreeMap<_, _>>(),
        "connection_alive_at_end": alive,
        "close_reason": close_reason,
    }))
}

#[derive(clap::Args, Debug)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub target: TrackTarget,
    /// Connect-subscribe-disconnect cycles in all.
    #[arg(long, default_value_t = 1000)]
    pub cycles: u64,
    /// Sessions at a time.
    #[arg(long, default_value_t = 50)]
    pub concurrency: u64,
    /// How long each session stays subscribed (ms).
    #[arg(long, default_value_t = 200)]
    pub hold_ms: u64,
    /// Every Nth cycle of a slot binds the slot's fixed local port
    /// (`--fixed-port-base` + slot), so addresses and ports are reused;
    /// 0: always an ephemeral port.
    #[arg(long, default_value_t = 4)]
    pub fixed_port_every: u64,
    #[arg(long, default_value_t = 41000)]
    pub fixed_port_base: u16,
    /// Upper bound on the whole run (ms).
    #[arg(long, default_value_t = 1_200_000)]
    pub max_ms: u64,
    /// Progress on stderr every this many cycles.
    #[arg(long, default_value_t = 1000)]
    pub progress_every: u64,
}

#[derive(Default)]
struct ChurnTally {
    ok: u64,
    with_objects: u64,
    failures: BTreeMap<String, u64>,
}

/// `cycles` sessions, `concurrency` at a time: connect, SUBSCRIBE, hold,
/// close. Counts what succeeded and why the others failed.
pub async fn churn(args: ChurnArgs) -> anyhow::Result<Value> {
    let name = args.target.full_track_name()?;
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.max_ms);
    let next = Arc::new(AtomicU64::new(0));
    let tally = Arc::new(Mutex::new(ChurnTally::default()));
    let args = Arc::new(args);
    let mut slots = Vec::new();
    for slot in 0..args.concurrency {
        let (args, next, tally, name) = (args.clone(), next.clone(), tally.clone(), name.clone());
        slots.push(tokio::spawn(async move {
            let mut round = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.cycles || Instant::now() >= deadline {
                    break;
                }
                round += 1;
                let fixed =
                    args.fixed_port_every > 0 && round.is_multiple_of(args.fixed_port_every);
                let result = cycle(&args, &name, slot, fixed).await;
                let mut t = tally.lock().unwrap();
                match result {
                    Ok(got_object) => {
                        t.ok += 1;
                        t.with_objects += u64::from(got_object);
                    }
                    Err(e) => *t.failures.entry(format!("{e:#}")).or_default() += 1,
                }
                let done = t.ok + t.failures.values().sum::<u64>();
                if args.progress_every > 0 && done.is_multiple_of(args.progress_every) {
                    eprintln!(
                        "[churn] {done}/{} cycles, {} ok, {:.0} s",
                        args.cycles,
                        t.ok,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }));
    }
    for s in slots {
        s.await.context("a churn task failed")?;
    }
    let t = tally.lock().unwrap();
    Ok(json!({
        "role": "churn",
        "cycles": t.ok + t.failures.values().sum::<u64>(),
        "ok": t.ok,
        "with_objects": t.with_objects,
        "failed": t.failures.values().sum::<u64>(),
        "failures": &t.failures,
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}

/// One session: returns whether an object arrived while it was subscribed.
async fn cycle(
    args: &ChurnArgs,
    name: &moqt::FullTrackName,
    slot: u64,
    fixed_port: bool,
) -> anyhow::Result<bool> {
    let server = args.target.server;
    let mut bind = quic::any_addr_for(server);
    if fixed_port {
        bind.set_port(args.fixed_port_base + slot as u16);
    }
    // The previous session's socket on a fixed port closes once its
    // endpoint's task has ended, a moment after `wait_idle`.
    let mut attempts = 0;
    let endpoint = loop {
        match quic::client_endpoint(bind, &args.target.ca, MOQT_ALPN) {
            Ok(e) => break e,
            Err(_) if fixed_port && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(e.context(format!("binding {bind}"))),
        }
    };
    let session = MoqClient::connect(&endpoint, server, quic::RELAY_SERVER_NAME).await?;
    let mut sub = session
        .subscribe(name.clone(), None)
        .await
        .context("SUBSCRIBE")?;
    let hold = Duration::from_millis(args.hold_ms);
    let got = matches!(
        tokio::time::timeout(hold, sub.next_object()).await,
        Ok(Some(_))
    );
    session.close().await.ok();
    // The port is free again only once the connection is gone.
    endpoint.wait_idle().await;
    Ok(got)
}

#[derive(clap::Args, Debug)]
pub struct InitialFloodArgs {
    /// Relay address (IPv4).
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM certificate to trust (the Initials carry a real ClientHello).
    #[arg(long)]
    pub ca: PathBuf,
    /// Initials to send, each a new connection attempt.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Distinct forged source addresses, taken from --spoof-net.
    #[arg(long, default_value_t = 4096)]
    pub sources: u32,
    /// First address of the forged sources (a /16 from there on); it must
    /// be inside 198.18.0.0/15, the benchmarking range.
    #[arg(long, default_value = "198.19.128.0")]
    pub spoof_net: std::net::Ipv4Addr,
    /// Initials per second.
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Upper bound on the run time.
    #[arg(long, default_value_t = 10_000)]
    pub max_ms: u64,
}

/// Valid-looking Initials (a real ClientHello each, as a quinn-proto client
/// builds them) from many forged source addresses, sent through a raw
/// socket: no handshake can complete, so each costs the relay whatever it
/// gives an unvalidated address. Answers go to the forged addresses and
/// are dropped by the client namespace's kernel.
pub fn initial_flood(args: InitialFloodArgs) -> anyhow::Result<Value> {
    let std::net::SocketAddr::V4(server) = args.server else {
        anyhow::bail!("--server must be an IPv4 address");
    };
    let net = u32::from(args.spoof_net);
    let (lo, hi) = (
        u32::from_be_bytes([198, 18, 0, 0]),
        u32::from_be_bytes([198, 19, 255, 255]),
    );
    anyhow::ensure!(
        net >= lo && net.saturating_add(args.sources) <= hi,
        "forged sources must stay inside 198.18.0.0/15"
    );
    let config = quic::client_config(&args.ca, MOQT_ALPN)?;
    let mut endpoint = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    // SAFETY: plain socket(2); the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    anyhow::ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    let raw = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let started = Instant::now();
    let deadline = started + Duration::from_millis(args.max_ms);
    let mut buf = Vec::with_capacity(1500);
    let mut frame = vec![0u8; 1600];
    let (mut sent, mut errors) = (0u64, 0u64);
    while sent < args.count && Instant::now() < deadline {
        let now = Instant::now();
        let (_, mut conn) = endpoint
            .connect(
                now,
                config.clone(),
                SocketAddr::V4(server),
                quic::RELAY_SERVER_NAME,
            )
            .context("building an Initial")?;
        buf.clear();
        let Some(t) = conn.poll_transmit(now, 1, &mut buf) else {
            continue;
        };
        let source = std::net::Ipv4Addr::from(net + (sent as u32 % args.sources.max(1)));
        let port = 1024 + (sent % 60_000) as u16;
        // The dataplane's own frame writer (checksums filled in); a raw
        // IP socket takes the packet without its Ethernet header.
        let header = FrameHeader {
            src_mac: MacAddr([0; 6]),
            dst_mac: MacAddr([0; 6]),
            vlan: None,
            src: SocketAddr::new(source.into(), port),
            dst: SocketAddr::V4(server),
            ecn: 0,
            hop_limit: 64,
        };
        let len = header.write(&mut frame, &buf[..t.size])?;
        let packet = &frame[ETHERNET_HEADER..len];
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(*server.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: packet and sockaddr are valid for the call.
        let n = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&raw),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            errors += 1;
        } else {
            sent += 1;
        }
        // Pace to --rate.
        let due = started + Duration::from_secs_f64(sent as f64 / args.rate.max(1) as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        drop(conn);
    }
    Ok(json!({
        "role": "initial-flood",
        "initials_sent": sent,
        "send_errors": errors,
        "sources": args.sources,
        "elapsed_s": started.elapsed().as_secs_f64(),
    }))
}
