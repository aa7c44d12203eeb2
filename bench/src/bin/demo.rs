//! `fastrelay-demo`: the main job on its embedded defaults. Builds the
//! namespace topology and runs three parts, printing a report, and writes
//! the whole result as JSON to the file `--json` names:
//!
//! 1. MoQT: the relay (XDP generic mode) with one publisher of a synthetic
//!    live video track (30 groups/s, a keyframe-sized first object then
//!    smaller ones, subgroup streams) and an audio-like datagram track, and
//!    several subscribers on IPv4 and IPv6, two of them joining late (one at
//!    the next group start, one filling in two past groups with a Joining
//!    FETCH from the relay's cache); a live progress line, then a table per
//!    subscriber: objects, gaps, duplicates, bad checksums, latency p50/p99,
//!    datagrams, fetched objects.
//! 2. Chain: a second relay (the origin) in a client namespace takes the
//!    publisher; the topology's relay in XDP mode is the edge, subscribed
//!    upstream to the origin with `--upstream`; subscribers at the edge get
//!    every object through both relays.
//! 3. Congestion: a publisher of two tracks, "video-base" (publisher
//!    priority 10, a third of the bytes) and "video-enhancement" (priority
//!    200), and three subscribers of both, one behind a token bucket at 40 %
//!    of the combined rate; a table per subscriber and track: objects,
//!    whole and dropped groups, latency — the throttled one keeps the base
//!    track and sheds the enhancement, the others get everything.
//! 4. Browsers: the relay (XDP) with `--self-signed --admin` serves its
//!    watch/publish web page; the demo prints the page's URL and how to
//!    open it from a client namespace, and, when `chromium` is installed,
//!    runs the page headless as a subscriber (WebTransport, certificate
//!    pinned by hash) of an independent raw-QUIC publisher and reports
//!    what it received.
//! 5. The dataplane self-test: the relay with the XDP backend and then with
//!    the kernel-socket backend, every client echoing a stream and
//!    ping-pong datagrams; one row per client and backend and a side-by-side
//!    summary with ratios.

use std::time::{Duration, Instant};

use bench::{
    harness::{relay_for, Relay, Topology, PORT, RELAY_V4, RELAY_V6},
    scenario::{strs, Congestion},
    summary::number as f,
};
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
    /// MoQT subscribers (the last two join late).
    #[arg(long, default_value_t = 5)]
    subscribers: usize,
    /// Seconds the MoQT publisher publishes.
    #[arg(long, default_value_t = 6)]
    seconds: u64,
    /// The congested subscriber's downlink, in percent of the two tracks'
    /// combined payload rate (0 skips the congestion part).
    #[arg(long, default_value_t = 40)]
    throttle_percent: u64,
    /// Keep the browser part's relay running this many seconds after its
    /// report, for a person to open the page (publish in one tab, watch in
    /// another).
    #[arg(long, default_value_t = 0)]
    browser_hold_s: u64,
    /// Where the full result goes, as JSON (the terminal gets the report).
    #[arg(long, default_value = "target/demo/report.json")]
    json: std::path::PathBuf,
}

struct Row {
    backend: &'static str,
    client: usize,
    family: &'static str,
    result: Value,
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
    anyhow::ensure!(
        (1..=40).contains(&args.subscribers),
        "--subscribers must be 1..=40"
    );
    anyhow::ensure!(
        (1..=120).contains(&args.seconds),
        "--seconds must be 1..=120"
    );
    let started = Instant::now();
    let namespaces = args.clients.max(args.subscribers + 1);
    eprintln!(
        "[demo] building the namespace topology ({namespaces} clients, prefix {})",
        args.prefix
    );
    let topo = Topology::new(&args.prefix, namespaces);

    let moqt_results = moqt_part(&topo, &args);
    let chain_results = chain_part(&topo, &args, namespaces);
    let congestion_results = congestion_part(&topo, &args);
    let browser_results = browser_part(&topo, &args);

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
        "Dataplane self-test (echo): relay in its own namespace, {} echo clients on a veth bridge",
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
    let report = json!({
            "demo": "fastrelay",
            "clients": args.clients,
            "stream_bytes": args.stream_bytes,
            "datagrams": args.datagrams,
            "xdp": { "stream_mbytes_per_s": xdp_mbps, "rtt_us_p50": xdp_rtt, "verified": xdp_ok, "lost": xdp_lost },
            "socket": { "stream_mbytes_per_s": sock_mbps, "rtt_us_p50": sock_rtt, "verified": sock_ok, "lost": sock_lost },
            "ratio_xdp_over_socket": { "stream_mbytes_per_s": xdp_mbps / sock_mbps, "rtt_us_p50": xdp_rtt / sock_rtt },
            "relay": relay_reports,
            "moqt": moqt_results,
            "chain": chain_results,
            "congestion": congestion_results,
            "browser": browser_results,
    });
    write_json(&args.json, &report)?;
    println!("full result (JSON): {}", args.json.display());
    anyhow::ensure!(xdp_ok && sock_ok, "a stream echo came back corrupted");
    Ok(())
}

const GROUPS_PER_S: u64 = 30;
const OBJECTS_PER_GROUP: u64 = 10;
const DATAGRAMS_PER_GROUP: u64 = 3;

/// Part 1: one publisher, `args.subscribers` subscribers (the last two late)
/// through the relay in XDP mode; prints progress and a table, returns JSON.
fn moqt_part(topo: &Topology, args: &Args) -> Value {
    eprintln!("[demo] MoQT: starting the relay (XDP generic mode)");
    let relay = Relay::start(topo, &["--backend", "xdp", "--xdp-mode", "skb"]);
    let groups = GROUPS_PER_S * args.seconds;
    let total = groups * OBJECTS_PER_GROUP;
    let late_from = args.subscribers.saturating_sub(2).max(1);
    let timeout_ms = (args.seconds * 1000 + 8000).to_string();
    let run_for = Duration::from_secs(args.seconds + 3);
    let started = Instant::now();
    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let groups = groups.to_string();
            let per_group = OBJECTS_PER_GROUP.to_string();
            let rate = GROUPS_PER_S.to_string();
            topo.moq_result(
                1,
                "moq-pub",
                &relay_for(0),
                "demo/live",
                "video",
                &[
                    "--datagram-track",
                    "audio",
                    "--datagrams-per-group",
                    &DATAGRAMS_PER_GROUP.to_string(),
                    "--datagram-size",
                    "160",
                    "--groups",
                    &groups,
                    "--objects-per-group",
                    &per_group,
                    "--object-size",
                    "1200",
                    "--first-object-size",
                    "30000",
                    "--rate-groups-per-s",
                    &rate,
                    "--start-delay-ms",
                    "1000",
                ],
                run_for + Duration::from_secs(10),
            )
        });
        let subscribers: Vec<_> = (1..=args.subscribers)
            .map(|n| {
                let timeout_ms = &timeout_ms;
                s.spawn(move || {
                    let late = n > late_from;
                    if late {
                        // Join while the track is live, at the next group start.
                        std::thread::sleep(Duration::from_millis(1000 + args.seconds * 400));
                    } else {
                        std::thread::sleep(Duration::from_millis(300));
                    }
                    let client = n + 1;
                    let mut a = vec!["--timeout-ms", timeout_ms, "--retry-ms", "5000"];
                    let expect = total.to_string();
                    let datagrams = (groups * DATAGRAMS_PER_GROUP).to_string();
                    a.extend(["--expect-objects", &expect]);
                    a.extend(["--datagram-track", "audio"]);
                    // The last subscriber fills in with a Joining FETCH; the
                    // other late one starts at the next group.
                    let fetches = late && n == args.subscribers;
                    match (late, fetches) {
                        (false, _) => a.extend(["--expect-datagrams", &datagrams]),
                        (true, false) => a.extend(["--filter", "next-group"]),
                        (true, true) => a.extend(["--join-groups", "2"]),
                    }
                    let (_, result) = topo.moq_result(
                        client,
                        "moq-sub",
                        &relay_for(client),
                        "demo/live",
                        "video",
                        &a,
                        run_for + Duration::from_secs(15),
                    );
                    let join = match (late, fetches) {
                        (false, _) => "start",
                        (true, false) => "next",
                        (true, true) => "fetch",
                    };
                    (
                        client,
                        join,
                        if client % 2 == 0 { "IPv4" } else { "IPv6" },
                        result,
                    )
                })
            })
            .collect();
        progress(
            &publisher,
            &format!(
                "MoQT: publishing {GROUPS_PER_S} groups/s for {} s",
                args.seconds
            ),
            started,
        );
        let subscribers: Vec<_> = subscribers.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher.join().unwrap(), subscribers)
    });
    let report = relay.stop();

    println!();
    println!(
        "MoQT: 1 publisher (video: {} groups of {} objects on subgroup streams, {} groups/s, 30 kB keyframe + 1.2 kB objects; audio: {} datagrams of 160 B per group), {} subscribers",
        groups, OBJECTS_PER_GROUP, GROUPS_PER_S, DATAGRAMS_PER_GROUP, args.subscribers
    );
    println!(
        "{:>6} {:<6} {:<5} {:>8} {:>9} {:>5} {:>4} {:>4} {:>9} {:>9} {:>7} {:>7}",
        "client",
        "family",
        "join",
        "objects",
        "first",
        "gaps",
        "dup",
        "bad",
        "p50 us",
        "p99 us",
        "dgrams",
        "fetched"
    );
    let mut rows = Vec::new();
    for (client, join, family, r) in &subscribers {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        let first = r["first"]
            .as_array()
            .map(|a| format!("{}/{}", a[0], a[1]))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>6} {:<6} {:<5} {:>8} {:>9} {:>5} {:>4} {:>4} {:>9} {:>9} {:>7} {:>7}",
            client,
            family,
            join,
            n("objects"),
            first,
            n("gaps"),
            n("duplicates"),
            n("bad_checksums") + n("datagram_bad_checksums") + n("fetch_bad_checksums"),
            n("latency_us_p50"),
            n("latency_us_p99"),
            n("datagrams"),
            n("fetched"),
        );
        rows.push(json!({ "client": client, "join": join, "family": family, "result": r }));
    }
    println!(
        "publisher: {} objects and {} datagrams sent, {} send errors; relay: {} packets via AF_XDP",
        publisher.1["objects_sent"],
        publisher.1["datagrams_sent"],
        publisher.1["send_errors"],
        report["xdp"]["redirected"]
    );
    println!(
        "join: start = subscribed before the first object; next = late, from the next group start; fetch = late, two past groups by Joining FETCH, then live"
    );
    json!({ "objects_published": publisher.1["objects_sent"], "subscribers": rows, "relay": report })
}

/// Subscribers of the chain part, at the edge.
const CHAIN_SUBSCRIBERS: usize = 3;

/// Part 2: a chain of two relays. The origin runs in the last client
/// namespace with the publisher's session; the edge is the topology's relay
/// (XDP) with `--upstream` pointing at the origin, and the subscribers are
/// at the edge: every object crosses both relays.
fn chain_part(topo: &Topology, args: &Args, origin_client: usize) -> Value {
    let origin_ip = format!("198.18.0.{}", 10 + origin_client);
    let origin_cert = topo.dir.path().join("origin.pem").display().to_string();
    eprintln!("[demo] chain: origin relay in client namespace {origin_client} ({origin_ip}), edge relay (XDP) with --upstream to it");
    let origin = Relay::start_in(
        topo,
        &topo.client_ns(origin_client),
        &[
            "--self-signed",
            "--write-cert",
            &origin_cert,
            "--backend",
            "xdp",
            "--xdp-mode",
            "skb",
        ],
    );
    let upstream = format!("moqt://{origin_ip}:{PORT}");
    let edge = Relay::start(
        topo,
        &[
            "--xdp-mode",
            "skb",
            "--upstream",
            &upstream,
            "--upstream-ca",
            &origin_cert,
            "--upstream-server-name",
            bench::quic::RELAY_SERVER_NAME,
        ],
    );
    let groups = GROUPS_PER_S * args.seconds;
    let total = groups * OBJECTS_PER_GROUP;
    let run_for = Duration::from_secs(args.seconds + 3);
    let timeout_ms = (args.seconds * 1000 + 8000).to_string();
    let started = Instant::now();
    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let (groups, per_group) = (groups.to_string(), OBJECTS_PER_GROUP.to_string());
            let rate = GROUPS_PER_S.to_string();
            let server = format!("{origin_ip}:{PORT}");
            let flags = [
                "moq-pub",
                "--server",
                &server,
                "--ca",
                &origin_cert,
                "--namespace",
                "demo/chain",
                "--track",
                "video",
                "--groups",
                &groups,
                "--objects-per-group",
                &per_group,
                "--object-size",
                "1200",
                "--rate-groups-per-s",
                &rate,
                "--start-delay-ms",
                "1000",
            ];
            topo.client_result(1, &flags, run_for + Duration::from_secs(10))
        });
        let subscribers: Vec<_> = (2..2 + CHAIN_SUBSCRIBERS)
            .map(|client| {
                let timeout_ms = &timeout_ms;
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let expect = total.to_string();
                    let flags = [
                        "--expect-objects",
                        &expect,
                        "--timeout-ms",
                        timeout_ms,
                        "--retry-ms",
                        "5000",
                    ];
                    let (_, r) = topo.moq_result(
                        client,
                        "moq-sub",
                        &relay_for(client),
                        "demo/chain",
                        "video",
                        &flags,
                        run_for + Duration::from_secs(15),
                    );
                    (client, r)
                })
            })
            .collect();
        progress(
            &publisher,
            &format!("chain: publishing at the origin for {} s", args.seconds),
            started,
        );
        let subscribers: Vec<_> = subscribers.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher.join().unwrap(), subscribers)
    });
    let (edge_report, origin_report) = (edge.stop(), origin.stop());

    println!();
    println!(
        "Chain: publisher -> origin relay ({origin_ip}) -> edge relay ({RELAY_V4}, XDP, --upstream) -> {CHAIN_SUBSCRIBERS} subscribers; {total} objects"
    );
    println!(
        "{:>6} {:>8} {:>5} {:>4} {:>4} {:>9} {:>9}",
        "client", "objects", "gaps", "dup", "bad", "p50 us", "p99 us"
    );
    let mut rows = Vec::new();
    for (client, r) in &subscribers {
        let n = |k: &str| r[k].as_u64().unwrap_or(0);
        println!(
            "{:>6} {:>8} {:>5} {:>4} {:>4} {:>9} {:>9}",
            client,
            n("objects"),
            n("gaps"),
            n("duplicates"),
            n("bad_checksums"),
            n("latency_us_p50"),
            n("latency_us_p99"),
        );
        rows.push(json!({ "client": client, "result": r }));
    }
    let sum = |report: &Value, key: &str| -> u64 {
        report["workers"]
            .as_array()
            .map(|w| w.iter().map(|w| w[key].as_u64().unwrap_or(0)).sum())
            .unwrap_or(0)
    };
    println!(
        "publisher: {} objects sent; origin: {} connections accepted (the publisher and the edge's link), {} objects out; edge: {} objects in over its link, {} out, {} packets via AF_XDP",
        publisher.1["objects_sent"],
        sum(&origin_report, "connections_accepted"),
        sum(&origin_report, "objects_sent"),
        sum(&edge_report, "objects_received"),
        sum(&edge_report, "objects_sent"),
        edge_report["xdp"]["redirected"],
    );
    json!({ "objects_published": publisher.1["objects_sent"], "subscribers": rows, "edge": edge_report, "origin": origin_report })
}

/// Part 3: priorities under congestion. Subscriber 2 is throttled.
fn congestion_part(topo: &Topology, args: &Args) -> Value {
    if args.throttle_percent == 0 {
        return Value::Null;
    }
    let combined_kbit = Congestion::combined_kbit();
    let limit_kbit = combined_kbit * args.throttle_percent / 100;
    eprintln!(
        "[demo] congestion: subscriber 2 limited to {limit_kbit} kbit/s ({} % of the {combined_kbit} kbit/s both tracks carry)",
        args.throttle_percent
    );
    topo.throttle(2, limit_kbit);
    let relay = Relay::start(
        topo,
        &[
            "--backend",
            "xdp",
            "--xdp-mode",
            "skb",
            "--delivery-timeout-ms",
            "1000",
        ],
    );
    let load = &Congestion {
        groups: Congestion::GROUPS_PER_S * args.seconds,
    };
    let (groups, total) = (load.groups, load.objects());
    let run_for = Duration::from_secs(args.seconds + 3);
    let started = Instant::now();
    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let flags = load.publisher_flags(1000);
            topo.moq_result(
                1,
                "moq-pub",
                &relay_for(0),
                "demo/congestion",
                Congestion::BASE,
                &strs(&flags),
                run_for + Duration::from_secs(10),
            )
        });
        let subscribers: Vec<_> = (2..=4)
            .map(|client| {
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    let flags = load.subscriber_flags(args.seconds * 1000 + 8000);
                    let (_, r) = topo.moq_result(
                        client,
                        "moq-sub",
                        &relay_for(client),
                        "demo/congestion",
                        Congestion::BASE,
                        &strs(&flags),
                        run_for + Duration::from_secs(15),
                    );
                    (client, r)
                })
            })
            .collect();
        progress(
            &publisher,
            &format!("congestion: publishing two tracks for {} s", args.seconds),
            started,
        );
        let subscribers: Vec<_> = subscribers.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher.join().unwrap(), subscribers)
    });
    let report = relay.stop();
    topo.unthrottle(2);

    println!();
    println!(
        "Congestion: video-base (priority 10, {} B objects) + video-enhancement (priority 200, {} B), {} groups/s of {} objects, {groups} groups; subscriber 2 limited to {limit_kbit} kbit/s ({} % of {combined_kbit} kbit/s)",
        Congestion::BASE_SIZE,
        Congestion::ENHANCEMENT_SIZE,
        Congestion::GROUPS_PER_S,
        Congestion::PER_GROUP,
        args.throttle_percent
    );
    println!(
        "{:>6} {:<9} {:<18} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}",
        "client", "link", "track", "objects", "whole", "reset", "absent", "p50 us", "p99 us"
    );
    let mut rows = Vec::new();
    for (client, r) in &subscribers {
        let link = if *client == 2 { "throttled" } else { "full" };
        for (track, t) in [
            ("video-base", &r["per_group"]),
            ("video-enhancement", &r["extra"]),
        ] {
            let n = |k: &str| t[k].as_u64().unwrap_or(0);
            println!(
                "{:>6} {:<9} {:<18} {:>8} {:>7} {:>7} {:>7} {:>9} {:>9}",
                client,
                link,
                track,
                n("objects"),
                n("groups_whole"),
                n("groups_partial_reset"),
                n("groups_absent") + groups.saturating_sub(n("last_group") + 1),
                n("latency_us_p50"),
                n("latency_us_p99"),
            );
        }
        rows.push(json!({ "client": client, "link": link, "result": r }));
    }
    let shed = &report["workers"][0]["shed"];
    println!(
        "relay shed: {} subgroups past the 1 s delivery timeout, {} over the backlog bound, {} bytes; largest backlog {} bytes; publisher lost {} packets",
        shed["subgroups_timed_out"],
        shed["subgroups_over_backlog"],
        shed["bytes_dropped"],
        shed["backlog_max_bytes"],
        publisher.1["lost_packets"]
    );
    println!("whole = every object of the group; reset = partial, ended by a stream reset (DELIVERY_TIMEOUT / TOO_FAR_BEHIND); absent = no object of it");
    json!({
        "limit_kbit": limit_kbit,
        "combined_kbit": combined_kbit,
        "total_per_track": total,
        "subscribers": rows,
        "relay": report,
        "publisher": publisher.1,
    })
}

/// The admin listener of the browser part, on every address of the relay.
const BROWSER_ADMIN_PORT: u16 = 9464;

fn browser_part(topo: &Topology, args: &Args) -> Value {
    use bench::harness::browser;
    eprintln!("[demo] browsers: starting the relay (XDP generic mode) with --self-signed and the web page on --admin");
    let admin = format!("[::]:{BROWSER_ADMIN_PORT}");
    let relay = Relay::start(topo, &["--xdp-mode", "skb", "--admin", &admin]);
    let hash = relay.ready["certificate_sha256"].clone();
    let origin = format!("http://{RELAY_V4}:{BROWSER_ADMIN_PORT}");
    let ns = topo.client_ns(1);
    println!();
    println!("Browsers: the relay's web page (watch and publish, MoQT over WebTransport)");
    println!();
    println!("  page:              {origin}/");
    println!(
        "  certificate:       self-signed ECDSA P-256, SHA-256 {}",
        hash.as_str().unwrap_or("?")
    );
    println!("  (the page reads the hash from {origin}/session.json and pins it)");
    println!("  The relay lives in network namespaces; open the page from a client one, e.g.:");
    println!(
        "    sudo ip netns exec {ns} chromium --user-data-dir=$(mktemp -d) --no-sandbox \\\n      --unsafely-treat-insecure-origin-as-secure={origin} {origin}/"
    );
    println!(
        "  (plain http is not a secure context: the flag lets this one origin use WebTransport;"
    );
    println!("   --no-sandbox only because it runs as root; see docs/browsers.md)");

    let Some(_) = browser::chromium_bin() else {
        println!("  chromium is not installed: the headless check is skipped");
        relay.stop();
        return json!({ "url": format!("{origin}/"), "certificate_sha256": hash, "ran": false });
    };
    let (groups, per_group) = (3 * args.seconds.max(2), 10u64);
    let timeout = Duration::from_secs(args.seconds * 3 + 30);
    let started = Instant::now();
    let (publisher, page) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let (g, o) = (groups.to_string(), per_group.to_string());
            let cert = topo.cert().display().to_string();
            let server = relay_for(2);
            let (_ok, out, err) = topo.exec(
                &topo.client_ns(2),
                &bench::harness::binary("moqt-interop"),
                &[
                    "pub",
                    "--server",
                    &server,
                    "--ca",
                    &cert,
                    "--wtq-raw",
                    "--namespace",
                    "demo/web",
                    "--track",
                    "video",
                    "--groups",
                    &g,
                    "--objects-per-group",
                    &o,
                    "--object-size",
                    "1000",
                    "--rate-objects-per-s",
                    "100",
                    "--linger-ms",
                    "1500",
                    "--timeout-ms",
                    "30000",
                ],
                timeout,
            );
            out.lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
                .unwrap_or_else(|| json!({ "ok": false, "error": err }))
        });
        let query = format!(
            "auto=subscribe&ns=demo/web&track=video&groups={groups}&objects={per_group}&rendezvous_ms=15000&timeout_ms={}",
            timeout.as_millis()
        );
        let url = format!("{origin}/?{query}");
        eprintln!("[demo] browsers: headless chromium in {ns} subscribes to demo/web video; moqt-interop publishes from {}", topo.client_ns(2));
        let page = browser::run_page(&ns, &origin, &url, timeout + Duration::from_secs(10))
            .unwrap_or_else(|e| json!({ "ok": false, "errors": [e] }));
        (publisher.join().unwrap_or(Value::Null), page)
    });
    let latency = &page["latency"];
    println!();
    println!(
        "  headless chromium subscriber: {} of {} objects, {} missing, {} corrupt, latency p50 {} ms, max {} ms ({}; publisher ok: {}); took {:.1} s",
        page["received"], groups * per_group, page["missing"], page["corrupt"],
        latency["p50_ms"], latency["max_ms"],
        if page["ok"] == true { "ok" } else { "FAILED" },
        publisher["ok"], started.elapsed().as_secs_f64()
    );
    if page["ok"] != true {
        println!("  page result: {page}");
    }
    if args.browser_hold_s > 0 {
        println!();
        println!("  holding the relay for {} s: open the page now (publish in one tab, watch in another)", args.browser_hold_s);
        std::thread::sleep(Duration::from_secs(args.browser_hold_s));
    }
    relay.stop();
    json!({
        "url": format!("{origin}/"),
        "certificate_sha256": hash,
        "ran": true,
        "page": page,
        "publisher": publisher,
    })
}

/// A live progress line (stderr) until `publisher` is done.
fn progress<T>(publisher: &std::thread::ScopedJoinHandle<'_, T>, what: &str, started: Instant) {
    while !publisher.is_finished() {
        eprint!(
            "\r[demo] {what} ... {:>4.1} s",
            started.elapsed().as_secs_f64()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!();
}

/// Writes the demo's result to `path` (pretty-printed), creating its folder.
fn write_json(path: &std::path::Path, report: &Value) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(report).context("encoding the result")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
