//! `fastrelay-demo`: the main job on its embedded defaults. Builds the
//! namespace topology, runs the relay with the XDP backend (generic mode on
//! the veth) and then with the kernel-socket backend, has every client echo a
//! stream and ping-pong datagrams over IPv4 or IPv6, and prints a report: one
//! row per client and backend, a side-by-side summary with ratios, and one
//! final JSON line.

use std::time::Instant;

use bench::harness::{Relay, Topology, PORT, RELAY_V4, RELAY_V6};
use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "fastrelay-demo",
    about = "Relay in namespaces with echo clients; prints a report"
)]
struct Args {
    /// Client namespaces (odd ones use IPv4, even ones IPv6).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Bytes each client echoes on one stream.
    #[arg(long, default_value_t = 16 << 20)]
    stream_bytes: u64,
    /// Ping-pong datagrams per client.
    #[arg(long, default_value_t = 1000)]
    datagrams: u64,
    /// Namespace name prefix.
    #[arg(long, default_value = "frdemo")]
    prefix: String,
}

struct Row {
    backend: &'static str,
    client: usize,
    family: &'static str,
    result: Value,
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!((1..=50).contains(&args.clients), "--clients must be 1..=50");
    let started = Instant::now();
    eprintln!(
        "[demo] building the namespace topology ({} clients, prefix {})",
        args.clients, args.prefix
    );
    let topo = Topology::new(&args.prefix, args.clients);

    let mut rows = Vec::new();
    let mut relay_reports = serde_json::Map::new();
    for (backend, extra) in [
        ("xdp", vec!["--backend", "xdp", "--xdp-mode", "skb"]),
        ("socket", vec!["--backend", "socket"]),
    ] {
        eprintln!("[demo] starting the relay: --backend {backend}");
        let relay = Relay::start(&topo, &extra);
        for client in 1..=args.clients {
            let (family, server) = if client % 2 == 1 {
                ("IPv4", format!("{RELAY_V4}:{PORT}"))
            } else {
                ("IPv6", format!("[{RELAY_V6}]:{PORT}"))
            };
            eprintln!("[demo]   {backend}: client {client}/{} ({family}) echoing {} bytes and {} datagrams", args.clients, args.stream_bytes, args.datagrams);
            let mut cargs = topo.echo_args(&server);
            cargs.extend([
                "--stream-bytes".to_string(),
                args.stream_bytes.to_string(),
                "--datagrams".to_string(),
                args.datagrams.to_string(),
            ]);
            let result = topo.client(
                client,
                &cargs.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            rows.push(Row {
                backend,
                client,
                family,
                result,
            });
        }
        relay_reports.insert(backend.to_string(), relay.stop());
    }
    drop(topo);

    println!();
    println!(
        "fastrelay demo: relay in its own namespace, {} echo clients on a veth bridge",
        args.clients
    );
    println!();
    println!(
        "{:<8} {:>6} {:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>6}",
        "backend",
        "client",
        "family",
        "handshake",
        "stream",
        "rtt p50",
        "rtt p99",
        "rtt max",
        "lost"
    );
    println!(
        "{:<8} {:>6} {:<6} {:>10} {:>11} {:>9} {:>9} {:>9} {:>6}",
        "", "", "", "ms", "MB/s", "us", "us", "us", "dgrams"
    );
    for r in &rows {
        let d = &r.result["datagrams"];
        println!(
            "{:<8} {:>6} {:<6} {:>10.1} {:>11.1} {:>9} {:>9} {:>9} {:>6}",
            r.backend,
            r.client,
            r.family,
            f(&r.result["handshake_ms"]),
            f(&r.result["stream"]["mbytes_per_s"]),
            d["rtt_us_p50"].as_u64().unwrap_or(0),
            d["rtt_us_p99"].as_u64().unwrap_or(0),
            d["rtt_us_max"].as_u64().unwrap_or(0),
            d["lost"].as_u64().unwrap_or(0),
        );
    }

    let summary = |backend: &str| {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.backend == backend).collect();
        let mbps = median(
            rows.iter()
                .map(|r| f(&r.result["stream"]["mbytes_per_s"]))
                .collect(),
        );
        let rtt = median(
            rows.iter()
                .map(|r| f(&r.result["datagrams"]["rtt_us_p50"]))
                .collect(),
        );
        let verified = rows.iter().all(|r| r.result["stream"]["verified"] == true);
        let lost: u64 = rows
            .iter()
            .map(|r| r.result["datagrams"]["lost"].as_u64().unwrap_or(0))
            .sum();
        (mbps, rtt, verified, lost)
    };
    let (xdp_mbps, xdp_rtt, xdp_ok, xdp_lost) = summary("xdp");
    let (sock_mbps, sock_rtt, sock_ok, sock_lost) = summary("socket");
    let xdp_counters = &relay_reports["xdp"]["xdp"];
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>10}",
        "median over clients", "xdp", "socket", "xdp/socket"
    );
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>10.2}",
        "stream echo MB/s",
        xdp_mbps,
        sock_mbps,
        xdp_mbps / sock_mbps
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>10.2}",
        "datagram RTT p50 us",
        xdp_rtt,
        sock_rtt,
        xdp_rtt / sock_rtt
    );
    println!();
    println!(
        "XDP program: {} packets redirected to AF_XDP, {} passed to the kernel, {} malformed",
        xdp_counters["redirected"], xdp_counters["passed"], xdp_counters["malformed"]
    );
    println!(
        "all streams verified: {}; datagrams lost: xdp {xdp_lost}, socket {sock_lost}; took {:.1} s",
        xdp_ok && sock_ok,
        started.elapsed().as_secs_f64()
    );
    println!(
        "{}",
        json!({
            "demo": "echo",
            "clients": args.clients,
            "stream_bytes": args.stream_bytes,
            "datagrams": args.datagrams,
            "xdp": { "stream_mbytes_per_s": xdp_mbps, "rtt_us_p50": xdp_rtt, "verified": xdp_ok, "lost": xdp_lost },
            "socket": { "stream_mbytes_per_s": sock_mbps, "rtt_us_p50": sock_rtt, "verified": sock_ok, "lost": sock_lost },
            "ratio_xdp_over_socket": { "stream_mbytes_per_s": xdp_mbps / sock_mbps, "rtt_us_p50": xdp_rtt / sock_rtt },
            "relay": relay_reports,
        })
    );
    anyhow::ensure!(xdp_ok && sock_ok, "a stream echo came back corrupted");
    Ok(())
}
