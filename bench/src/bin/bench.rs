//! `fastrelay-bench`: the relay benchmark (BENCHMARKS.md). Builds its own
//! namespace topology (`ci/netns`), runs the relay (fastrelay with --backend xdp or
//! socket, or any draft-18 relay via --relay-cmd), one publisher and S
//! subscribers multiplexed over a few load processes, and prints a human
//! table, then one final JSON line. `--compare` runs both backends with
//! identical load, `--sweep` repeats at 1, 10, 100, 1000 subscribers,
//! `--runs N` repeats the whole set and summarises it (median, min–max).
//! Before the runs it measures path-limit references on the same machine
//! (quinn-proto's send cost, AF_XDP transmit); `--profile` splits the
//! relay's CPU by call stack with perf.
//!
//! The hidden subcommands `load-pub` and `load-sub` are the load processes
//! it starts inside the client namespaces; `xsk-tx-ref` is the AF_XDP
//! reference, run in the relay namespace.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::Context;
use bench::{
    benchrun::{self, RunConfig, RunResult},
    harness::{self, Topology, PORT},
    load, plot, procstat, profile, profile_report, reference,
    relayproc::{self, RelayCommand},
    steering::{self, RpsMode, Steering},
    summary::{self, number as f},
};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "fastrelay-bench",
    about = "MoQT relay benchmark in network namespaces: latency, delivered packets per relay CPU-second, loss, memory",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// (internal) A subscriber load process.
    #[command(hide = true)]
    LoadSub(load::SubscriberArgs),
    /// (internal) The publisher load process.
    #[command(hide = true)]
    LoadPub(load::PublisherArgs),
    /// (internal) The AF_XDP transmit reference, in the relay namespace.
    #[command(hide = true)]
    XskTxRef(reference::XskTxArgs),
}

#[derive(clap::Args, Debug)]
struct BenchArgs {
    /// fastrelay's dataplane backend.
    #[arg(long, default_value = "xdp", value_parser = ["xdp", "socket"])]
    backend: String,
    /// Run the XDP and the socket backend back to back with identical load; print ratios.
    #[arg(long)]
    compare: bool,
    /// Repeat the run for every count of --sweep-counts; print ns per delivered packet.
    #[arg(long)]
    sweep: bool,
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    sweep_counts: Vec<usize>,
    /// With --sweep: hold the delivered rate at N objects/s (summed over
    /// subscribers) instead of the object rate: each count S publishes
    /// N / S objects/s, so only the number of connections changes.
    #[arg(long, requires = "sweep")]
    sweep_delivered_per_s: Option<u64>,
    /// Subscribers (without --sweep).
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Relay workers: with the XDP backend, queues 0..N-1 of a relay veth
    /// with N queues (native XDP mode then); with the socket backend, N
    /// SO_REUSEPORT sockets.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Client namespaces the subscribers are spread over (one load process each).
    #[arg(long, default_value_t = 4)]
    load_namespaces: usize,
    /// Payload bytes per object (at least 16: send timestamp and checksum).
    #[arg(long, default_value_t = 1200)]
    object_size: usize,
    #[arg(long, default_value_t = 1000)]
    objects_per_s: u64,
    #[arg(long, default_value_t = 10)]
    groups_per_s: u64,
    /// Publish objects as OBJECT_DATAGRAMs instead of on subgroup streams.
    #[arg(long)]
    datagrams: bool,
    /// Seconds the publisher publishes (the measured window, plus drain).
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// fastrelay --idle mode (busy burns a whole core at any load: CPU
    /// figures then mean nothing).
    #[arg(long, default_value = "adaptive")]
    idle: String,
    /// fastrelay --xdp-mode (with --workers above 1: drv, see --workers).
    #[arg(long, default_value = "skb")]
    xdp_mode: String,
    /// Extra argument for fastrelay run (repeat: --relay-arg=--foo --relay-arg=bar).
    #[arg(long, allow_hyphen_values = true)]
    relay_arg: Vec<String>,
    /// Run another relay instead of fastrelay: a command line with the
    /// placeholders {iface} {port} {cert} {key} (and {backend} for
    /// --compare), split on whitespace, run in the relay namespace.
    #[arg(long)]
    relay_cmd: Option<String>,
    /// Also run another relay, after fastrelay's runs of each repetition
    /// (interleaved, same topology and load): a --relay-cmd style command
    /// line; its rows are labelled with the program's file name.
    #[arg(long, conflicts_with = "relay_cmd")]
    with_relay_cmd: Option<String>,
    /// Where to write the latency plot (SVG).
    #[arg(long, default_value = "target/bench/latency.svg")]
    plot: PathBuf,
    /// Namespace name prefix.
    #[arg(long, default_value = "frbench")]
    prefix: String,
    /// Repeat the whole set of runs N times (with --compare interleaved:
    /// xdp, socket, xdp, socket, ...) and print the median and min–max.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Receive packet steering of the relay's outgoing traffic on the
    /// bridge port `relay`: `auto` (every online CPU but the relay's
    /// cores), `off` (leave it), or a CPU list such as `1` or `2-3`.
    #[arg(long, default_value = "auto")]
    rps: String,
    /// CPUs the publisher and subscriber processes run on: `auto` (every
    /// online CPU but the relay's cores, as a relay host would be: its
    /// cores and caches are its own), `off` (anywhere), or a CPU list.
    #[arg(long, default_value = "auto")]
    load_cpus: String,
    /// Skip the path-limit references (quinn-proto send cost, AF_XDP TX).
    #[arg(long)]
    no_reference: bool,
    /// Sample the relay with perf during each run (3 s of the window) and
    /// split its CPU by call stack. Inflates that run's CPU figures.
    #[arg(long)]
    profile: bool,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FASTRELAY_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the tokio runtime")
    };
    match cli.command {
        Some(Command::LoadSub(a)) => runtime()?.block_on(load::run_subscribers(a)),
        Some(Command::LoadPub(a)) => runtime()?.block_on(load::run_publisher(a)),
        Some(Command::XskTxRef(a)) => {
            println!("{}", reference::xsk_tx(&a)?);
            Ok(())
        }
        None => bench(cli.bench),
    }
}

/// The object rate of a run with `subscribers` subscribers: --objects-per-s,
/// or with --sweep-delivered-per-s that rate shared among them.
fn objects_per_s(a: &BenchArgs, subscribers: usize) -> u64 {
    match a.sweep_delivered_per_s {
        Some(delivered) => delivered / subscribers.max(1) as u64,
        None => a.objects_per_s,
    }
}

fn validate(a: &BenchArgs) -> anyhow::Result<()> {
    let counts = if a.sweep {
        a.sweep_counts.clone()
    } else {
        vec![a.subscribers]
    };
    anyhow::ensure!(
        counts.iter().all(|c| (1..=5000).contains(c)),
        "subscriber counts must be 1..=5000"
    );
    anyhow::ensure!(
        (1..=600).contains(&a.duration_s),
        "--duration-s must be 1..=600"
    );
    anyhow::ensure!(
        (1..=1_000_000).contains(&a.objects_per_s),
        "--objects-per-s must be 1..=1000000"
    );
    anyhow::ensure!(
        a.sweep_delivered_per_s.is_some() || (1..=a.objects_per_s).contains(&a.groups_per_s),
        "--groups-per-s must be 1..=--objects-per-s"
    );
    if let Some(delivered) = a.sweep_delivered_per_s {
        for &c in &counts {
            let rate = objects_per_s(a, c);
            anyhow::ensure!(
                (1..=1_000_000).contains(&rate) && a.groups_per_s <= rate,
                "--sweep-delivered-per-s {delivered} gives {c} subscribers {rate} objects/s: that must be 1..=1000000 and at least --groups-per-s {}",
                a.groups_per_s
            );
        }
    }
    anyhow::ensure!(
        (16..=1 << 20).contains(&a.object_size),
        "--object-size must be 16..=1048576"
    );
    anyhow::ensure!(
        (1..=16).contains(&a.load_namespaces),
        "--load-namespaces must be 1..=16"
    );
    anyhow::ensure!((1..=64).contains(&a.workers), "--workers must be 1..=64");
    anyhow::ensure!((1..=100).contains(&a.runs), "--runs must be 1..=100");
    a.rps.parse::<RpsMode>()?;
    if let Some(t) = &a.relay_cmd {
        anyhow::ensure!(
            !a.compare || t.contains("{backend}"),
            "--compare with --relay-cmd needs a {{backend}} placeholder in the command"
        );
    }
    // SAFETY: no preconditions.
    anyhow::ensure!(
        unsafe { libc::geteuid() } == 0,
        "fastrelay-bench needs root (ip netns, XDP, AF_XDP)"
    );
    Ok(())
}

/// The "backend" of `--with-relay-cmd`'s runs.
const OTHER_RELAY: &str = "other";

/// The relay command for one backend.
fn relay_command(
    a: &BenchArgs,
    backend: &str,
    cert: &str,
    key: &str,
) -> anyhow::Result<RelayCommand> {
    let port = PORT.to_string();
    let vars = [
        ("iface", "eth0"),
        ("port", port.as_str()),
        ("cert", cert),
        ("key", key),
        ("backend", backend),
    ];
    if let Some(t) = &a.relay_cmd {
        return RelayCommand::from_template(t, &vars);
    }
    if backend == OTHER_RELAY {
        let t = a
            .with_relay_cmd
            .as_deref()
            .context("no --with-relay-cmd for the other relay")?;
        return RelayCommand::from_template(t, &vars);
    }
    // fastrelay's own line, as a list so that new flags are one push away.
    let mut args: Vec<String> = [
        "run",
        "--iface",
        "eth0",
        "--port",
        &port,
        "--cert",
        cert,
        "--key",
        key,
        "--backend",
        backend,
        "--idle",
        &a.idle,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if backend == "xdp" {
        // Several queues of a veth receive only in native mode (generic mode
        // reports every packet on queue 0; see docs/dataplane.md).
        let mode = if a.workers > 1 {
            "drv"
        } else {
            a.xdp_mode.as_str()
        };
        args.extend(["--xdp-mode".into(), mode.to_string()]);
        if a.workers > 1 {
            let queues: Vec<String> = (0..a.workers).map(|q| q.to_string()).collect();
            args.extend(["--queues".into(), queues.join(",")]);
        }
    } else if a.workers > 1 {
        // One SO_REUSEPORT socket per worker.
        args.extend(["--workers".into(), a.workers.to_string()]);
    }
    args.extend(a.relay_arg.iter().cloned());
    Ok(RelayCommand {
        program: harness::relay_bin(),
        args,
    })
}

/// The cores the relay will pin its workers to: fastrelay's `--cores` if
/// given through --relay-arg, else its default (worker i on core i). For
/// a --relay-cmd relay the same guess; the benchmark re-steers once it
/// sees where the relay's threads are really pinned.
fn planned_cores(a: &BenchArgs) -> anyhow::Result<BTreeSet<usize>> {
    if a.relay_cmd.is_none() {
        let mut it = a.relay_arg.iter();
        while let Some(arg) = it.next() {
            let list = if let Some(v) = arg.strip_prefix("--cores=") {
                Some(v.to_string())
            } else if arg == "--cores" {
                it.next().cloned()
            } else {
                None
            };
            if let Some(list) = list {
                return procstat::parse_cpu_list(&list)
                    .with_context(|| format!("--relay-arg --cores {list}"));
            }
        }
    }
    Ok((0..a.workers).collect())
}

fn machine() -> Value {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "kernel": kernel,
    })
}

/// A JSON value as table text (strings unquoted): Value's Display
/// ignores widths.
fn t(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn print_table(runs: &[Value]) {
    println!();
    println!(
        "{:<10} {:>2} {:>5} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "run", "#", "subs", "window", "deliv", "Gbit/s", "p50", "p99", "p99.9", "max", "relay", "pkts/", "ns/", "core", "pkts/", "ns/pkt", "relay", "lost", "gaps", "missing", "RSS"
    );
    println!(
        "{:<10} {:>2} {:>5} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "", "", "", "s", "pkts/s", "udp", "us", "us", "us", "us", "CPU s", "CPU-s", "pkt", "busy s", "core-s", "core", "wakes/s", "pub", "subs", "objs", "MiB"
    );
    for r in runs {
        if let Some(e) = r.get("error") {
            println!(
                "{:<10} {:>2} {:>5} failed: {}",
                r["label"].as_str().unwrap_or("?"),
                t(&r["run"]),
                t(&r["subscribers"]),
                one_line(e.as_str().unwrap_or("?"), 110)
            );
            continue;
        }
        let l = &r["latency"];
        let u = |v: &Value| v.as_u64().map(|x| x.to_string()).unwrap_or("-".into());
        let opt = |v: &Value, digits: usize| {
            v.as_f64()
                .map(|x| format!("{x:.digits$}"))
                .unwrap_or("-".into())
        };
        println!(
            "{:<10} {:>2} {:>5} {:>7.2} {:>9.0} {:>7.3} {:>7} {:>7} {:>7} {:>8} {:>7.3} {:>9.0} {:>7.0} {:>7} {:>9} {:>7} {:>7} {:>6} {:>6} {:>7} {:>6.1}",
            r["label"].as_str().unwrap_or("?"),
            t(&r["run"]),
            t(&r["subscribers"]),
            f(&r["window_s"]),
            f(&r["delivered_packets_per_s"]),
            f(&r["delivered_udp_gbit_per_s"]),
            u(&l["p50_us"]),
            u(&l["p99_us"]),
            u(&l["p999_us"]),
            u(&l["max_us"]),
            f(&r["relay_cpu"]["total_s"]),
            f(&r["delivered_packets_per_relay_cpu_s"]),
            f(&r["ns_per_delivered_packet"]),
            opt(&r["relay_core_busy"]["total_s"], 3),
            opt(&r["delivered_packets_per_core_busy_s"], 0),
            opt(&r["ns_per_delivered_packet_core_busy"], 0),
            opt(&r["relay_wakeups"]["per_s"], 0),
            u(&r["publisher"]["lost_packets"]),
            u(&r["subscriber_side"]["gaps"]),
            u(&r["subscriber_side"]["missing_objects"]),
            f(&r["relay_rss_kib"]["peak_vmhwm"]) / 1024.0,
        );
    }
}

/// An error message squeezed onto one table line.
fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &joined[..i]),
        None => joined,
    }
}

/// xdp/socket ratios of every pair of runs (same run number and
/// subscriber count).
fn ratios(runs: &[Value]) -> Vec<Value> {
    summary::pairs(runs)
        .into_iter()
        .map(|(x, s)| {
            let q = |path: &[&str]| {
                let get = |r: &Value| path.iter().fold(r.clone(), |v, k| v[*k].clone());
                f(&get(x)) / f(&get(s))
            };
            json!({
                "run": x["run"],
                "subscribers": x["subscribers"],
                "delivered_packets_per_relay_cpu_s": q(&["delivered_packets_per_relay_cpu_s"]),
                "ns_per_delivered_packet": q(&["ns_per_delivered_packet"]),
                "delivered_packets_per_cpu_s_incl_softirq": q(&["delivered_packets_per_cpu_s_incl_softirq"]),
                "delivered_packets_per_core_busy_s": q(&["delivered_packets_per_core_busy_s"]),
                "ns_per_delivered_packet_core_busy": q(&["ns_per_delivered_packet_core_busy"]),
                "latency_p50": q(&["latency", "p50_us"]),
                "latency_p99": q(&["latency", "p99_us"]),
                "latency_p999": q(&["latency", "p999_us"]),
                "relay_rss_peak": q(&["relay_rss_kib", "peak_vmhwm"]),
            })
        })
        .collect()
}

/// Ctrl-C or SIGTERM skip destructors: remove the topology from a signal
/// thread, then exit (the load processes and the relay die with us through
/// PR_SET_PDEATHSIG).
fn remove_namespaces_on_signal(prefix: &str) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("installing signal handlers")?;
    let prefix = prefix.to_string();
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("\n[bench] signal {sig}: removing the namespaces of {prefix} and exiting");
            let _ = harness::netns(&["down", &prefix]);
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// The path-limit references (module docs of `bench::reference`), on the
/// relay's first core, with the run's steering in place.
fn references(
    a: &BenchArgs,
    topo: &Topology,
    bench_exe: &std::path::Path,
    core: Option<usize>,
) -> Value {
    let payload = reference::packet_payload(a.object_size);
    eprintln!(
        "[bench] reference: quinn-proto send cost in memory ({} B objects, core {core:?})",
        a.object_size
    );
    let quinn = reference::quinn_send(a.object_size, core, Duration::from_secs(1))
        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    eprintln!("[bench] reference: AF_XDP copy-mode TX on eth0 queue 0 ({payload} B UDP payload, core {core:?})");
    let xsk = reference::xsk_tx_in_topology(topo, bench_exe, payload, core, Duration::from_secs(1))
        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    let limit = match (
        quinn["ns_per_packet"].as_f64(),
        xsk["ns_per_packet"].as_f64(),
    ) {
        (Some(q), Some(x)) => Value::from(q + x),
        _ => Value::Null,
    };
    json!({
        "core": core,
        "udp_payload": payload,
        "quinn_send": quinn,
        "xsk_tx": xsk,
        "path_limit_ns_per_packet": limit,
        "path_limit_note": "quinn_send.ns_per_packet + xsk_tx.ns_per_packet: one packet through quinn-proto and AF_XDP with nothing else (no MoQT, no fan-out, no event loop)",
    })
}

/// Each row label's result as a fraction of the path limit:
/// path_limit_ns / (median) measured ns per delivered packet.
fn fractions(reference: &Value, groups: &[Value]) -> Vec<Value> {
    let Some(limit) = reference["path_limit_ns_per_packet"].as_f64() else {
        return Vec::new();
    };
    groups
        .iter()
        .map(|g| {
            let frac = |k: &str| g["figures"][k]["median"].as_f64().map(|ns| limit / ns);
            json!({
                "label": g["label"],
                "subscribers": g["subscribers"],
                "of_relay_cpu": frac("ns_per_delivered_packet"),
                "of_core_busy": frac("ns_per_delivered_packet_core_busy"),
            })
        })
        .collect()
}

fn print_references(r: &Value, fractions: &[Value]) {
    println!();
    println!(
        "path-limit references (same machine, core {}, {} B UDP payload):",
        r["core"], r["udp_payload"]
    );
    let q = &r["quinn_send"];
    match q.get("error") {
        Some(e) => println!("  quinn-proto send: failed: {}", one_line(e.as_str().unwrap_or("?"), 100)),
        None => println!(
            "  quinn-proto send per packet (poll_transmit {:.0} + ACK intake {:.0}): {:>7.0} ns   [stream writes {:.0} ns, not included; {} packets, largest {} B]",
            f(&q["send_ns_per_packet"]),
            f(&q["ack_intake_ns_per_packet"]),
            f(&q["ns_per_packet"]),
            f(&q["write_ns_per_packet"]),
            q["packets"],
            q["max_datagram_bytes"],
        ),
    }
    let x = &r["xsk_tx"];
    match x.get("error") {
        Some(e) => println!("  AF_XDP TX: failed: {}", one_line(e.as_str().unwrap_or("?"), 100)),
        None => println!(
            "  AF_XDP copy-mode TX per packet (batches of {}, {:.1} kicks each):       {:>7.0} ns   [{:.0} pkts/s; core busy {:.0} ns/pkt; at most {} frames a kick]",
            x["batch"],
            f(&x["kicks_per_batch"]),
            f(&x["ns_per_packet"]),
            f(&x["packets_per_s"]),
            f(&x["core_busy_ns_per_packet"]),
            x["kick_budget"],
        ),
    }
    match r["path_limit_ns_per_packet"].as_f64() {
        Some(l) => println!(
            "  path limit (sum):                                                 {l:>7.0} ns/pkt"
        ),
        None => println!("  path limit: -"),
    }
    for fr in fractions {
        let pct = |v: &Value| {
            v.as_f64()
                .map(|x| format!("{:.1} %", x * 100.0))
                .unwrap_or("-".into())
        };
        println!(
            "  {:<8} {:>5} subscribers: path limit / measured ns per delivered packet = {} of relay CPU, {} of core busy",
            fr["label"].as_str().unwrap_or("?"),
            t(&fr["subscribers"]),
            pct(&fr["of_relay_cpu"]),
            pct(&fr["of_core_busy"]),
        );
    }
}

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    validate(&a)?;
    let counts = if a.sweep {
        a.sweep_counts.clone()
    } else {
        vec![a.subscribers]
    };
    let mut backends: Vec<&str> = if a.compare {
        vec!["xdp", "socket"]
    } else {
        vec![a.backend.as_str()]
    };
    if a.with_relay_cmd.is_some() {
        backends.push(OTHER_RELAY);
    }
    let custom = a.relay_cmd.is_some();
    let rps: RpsMode = a.rps.parse()?;
    let planned = planned_cores(&a)?;
    let load_cpus = steering::load_cpus(&a.load_cpus, &planned)?;
    let ref_core = planned.iter().next().copied();
    let profiling = if a.profile {
        match profile::available() {
            Ok(()) => Ok(a.duration_s.min(3)),
            Err(why) => {
                eprintln!("[bench] --profile: {why}; no profile taken");
                Err(why)
            }
        }
    } else {
        Err("not asked for (--profile)".to_string())
    };
    remove_namespaces_on_signal(&a.prefix)?;
    let bench_exe = std::env::current_exe().context("locating fastrelay-bench")?;

    eprintln!(
        "[bench] building the topology (prefix {}, 1 publisher + {} subscriber namespaces)",
        a.prefix, a.load_namespaces
    );
    let topo = Topology::with_queues(&a.prefix, 1 + a.load_namespaces, a.workers);
    let cert = topo.cert();
    let key = topo.dir.path().join("relay-key.pem");
    relayproc::write_identity(&cert, &key)?;
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    // Right after the topology: the references run with it, and every run
    // sets it again before its relay starts.
    let steering = Steering::apply(&a.prefix, &rps, &planned)?;
    eprintln!("[bench] {}", steering.describe());
    eprintln!(
        "[bench] {}",
        steering::describe_load_cpus(&load_cpus, &planned)
    );

    let reference = if a.no_reference {
        json!({ "skipped": "--no-reference" })
    } else {
        references(&a, &topo, &bench_exe, ref_core)
    };

    let mut runs: Vec<Value> = Vec::new();
    let mut plotted: Vec<(String, RunResult)> = Vec::new();
    for run in 1..=a.runs {
        for &subscribers in &counts {
            for &backend in &backends {
                let label = if backend == OTHER_RELAY {
                    relayproc::program_label(a.with_relay_cmd.as_deref().unwrap_or_default())
                } else if custom {
                    if a.compare {
                        format!("custom-{backend}")
                    } else {
                        "custom".to_string()
                    }
                } else {
                    backend.to_string()
                };
                let cfg = RunConfig {
                    label: label.clone(),
                    backend: backend.to_string(),
                    run,
                    rps: rps.clone(),
                    planned_cores: planned.clone(),
                    load_cpus: load_cpus.clone(),
                    profile_s: profiling.as_ref().ok().copied(),
                    relay: relay_command(&a, backend, &cert_s, &key_s)?,
                    subscribers,
                    load_namespaces: a.load_namespaces,
                    object_size: a.object_size,
                    objects_per_s: objects_per_s(&a, subscribers),
                    groups_per_s: a.groups_per_s,
                    duration_s: a.duration_s,
                    datagrams: a.datagrams,
                    bench_exe: bench_exe.clone(),
                    work_dir: topo.dir.path().to_path_buf(),
                    cert: cert.clone(),
                };
                eprintln!(
                    "[bench] run {label} #{run}/{}: {subscribers} subscribers, {} objects/s of {} B, {} s",
                    a.runs, cfg.objects_per_s, a.object_size, a.duration_s
                );
                match benchrun::run(&topo, &cfg) {
                    Ok(r) => {
                        runs.push(r.json.clone());
                        plotted.push((format!("{label} S={subscribers} #{run}"), r));
                    }
                    Err(e) => {
                        eprintln!("\n[bench] run {label} #{run} with {subscribers} subscribers failed: {e:#}");
                        runs.push(json!({
                            "label": label,
                            "backend": backend,
                            "run": run,
                            "subscribers": subscribers,
                            "error": format!("{e:#}"),
                        }));
                    }
                }
            }
        }
    }
    drop(topo);

    println!();
    println!("{}", steering.describe());
    println!("{}", steering::describe_load_cpus(&load_cpus, &planned));
    print_table(&runs);
    let ratios = ratios(&runs);
    let groups = summary::groups(&runs);
    let ratio_summary = summary::ratios(&runs);
    summary::print(&groups, &ratio_summary);
    let per_object = summary::per_object_vs_xdp(&groups);
    for line in &per_object {
        println!("{}", line["text"].as_str().unwrap_or_default());
    }
    let fractions = fractions(&reference, &groups);
    let mut reference = reference;
    if reference.get("skipped").is_none() {
        reference["fractions"] = json!(fractions);
        print_references(&reference, &fractions);
    }
    let profiles = profile_report::pooled(&runs);
    profile_report::print(&profiles);
    let sweep: Vec<Value> = runs
        .iter()
        .filter(|r| r.get("error").is_none())
        .map(|r| {
            json!({
                "label": r["label"],
                "run": r["run"],
                "subscribers": r["subscribers"],
                "ns_per_delivered_packet": r["ns_per_delivered_packet"],
                "ns_per_delivered_packet_incl_softirq": r["ns_per_delivered_packet_incl_softirq"],
                "ns_per_delivered_packet_core_busy": r["ns_per_delivered_packet_core_busy"],
                "relay_rx_packets_per_tx_packet": r["relay_lifetime"]["rx_packets_per_tx_packet"],
                "relay_wakeups_per_s": r["relay_wakeups"]["per_s"],
                "delivered_packets_per_wakeup": r["relay_wakeups"]["delivered_packets_per_wakeup"],
            })
        })
        .collect();
    let growth = summary::sweep_growth(&groups, 100);
    if a.sweep {
        println!();
        for g in &growth {
            println!("{}", g["text"].as_str().unwrap_or_default());
        }
        println!("ns per delivered packet (relay process CPU time / subscriber-side packets; relay cores' busy time / packets), packets the relay received per packet it sent (mostly ACKs), and the relay's wake-ups (voluntary context switches):");
        for s in &sweep {
            println!(
                "  {:<8} #{:<2} {:>5} subscribers: {:>8.0} ns ({:.0} ns with softirq, {:.0} ns of core busy time), {:.2} received per sent, {:.0} wake-ups/s ({:.1} delivered packets each)",
                s["label"].as_str().unwrap_or("?"),
                t(&s["run"]),
                t(&s["subscribers"]),
                f(&s["ns_per_delivered_packet"]),
                f(&s["ns_per_delivered_packet_incl_softirq"]),
                f(&s["ns_per_delivered_packet_core_busy"]),
                f(&s["relay_rx_packets_per_tx_packet"]),
                f(&s["relay_wakeups_per_s"]),
                f(&s["delivered_packets_per_wakeup"])
            );
        }
    }

    let hists: Vec<(String, &hdrhistogram::Histogram<u64>)> = plotted
        .iter()
        .map(|(l, r)| (l.clone(), &r.histogram))
        .collect();
    let svg = plot::latency_svg(
        &format!(
            "fastrelay-bench: {} B objects, {}, {}",
            a.object_size,
            match a.sweep_delivered_per_s {
                Some(n) => format!("{n} objects/s delivered in all"),
                None => format!("{} objects/s", a.objects_per_s),
            },
            if a.datagrams { "datagrams" } else { "streams" }
        ),
        &hists,
    );
    if let Some(dir) = a.plot.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&a.plot, svg).with_context(|| format!("writing {}", a.plot.display()))?;
    println!();
    println!("latency plot: {}", a.plot.display());

    let failed = runs.iter().filter(|r| r.get("error").is_some()).count();
    let profile_json = match &profiling {
        Ok(s) => json!({ "seconds": s, "frequency_hz": profile::FREQUENCY, "per_label": profiles }),
        Err(why) => json!({ "skipped": why }),
    };
    println!(
        "{}",
        json!({
            "bench": "fastrelay-bench",
            "machine": machine(),
            "config": {
                "compare": a.compare,
                "sweep": a.sweep,
                "runs": a.runs,
                "subscriber_counts": counts,
                "backends": backends,
                "relay_cmd": a.relay_cmd,
                "with_relay_cmd": a.with_relay_cmd,
                "workers": a.workers,
                "idle": a.idle,
                "xdp_mode": a.xdp_mode,
                "load_namespaces": a.load_namespaces,
                "object_size": a.object_size,
                "objects_per_s": a.objects_per_s,
                "sweep_delivered_per_s": a.sweep_delivered_per_s,
                "groups_per_s": a.groups_per_s,
                "transport": if a.datagrams { "datagrams" } else { "streams" },
                "duration_s": a.duration_s,
                "rps": rps.name(),
                "load_cpus": load_cpus.as_ref().map(|c| c.iter().copied().collect::<Vec<_>>()),
                "relay_cores_planned": planned.iter().collect::<Vec<_>>(),
            },
            "steering": steering.json(),
            "runs": runs,
            "ratios_xdp_over_socket": ratios,
            "summary": { "groups": groups, "ratios_xdp_over_socket": ratio_summary, "per_object_vs_xdp": per_object },
            "reference": reference,
            "profile": profile_json,
            "sweep": sweep,
            "sweep_growth": growth,
            "plot": a.plot.display().to_string(),
            "failed_runs": failed,
        })
    );
    anyhow::ensure!(failed == 0, "{failed} run(s) failed");
    Ok(())
}
