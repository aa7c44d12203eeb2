//! `fastrelay-bench`: the relay benchmark (BENCHMARKS.md). Builds its own
//! namespace topology (`ci/netns`), runs the relay (fastrelay with --backend xdp or
//! socket, or any draft-18 relay via --relay-cmd), one publisher and S
//! subscribers multiplexed over a few load processes, and prints a human
//! table, then one final JSON line. `--compare` runs both backends with
//! identical load, `--sweep` repeats at 1, 10, 100, 1000 subscribers.
//!
//! The hidden subcommands `load-pub` and `load-sub` are the load processes
//! it starts inside the client namespaces.

use std::path::PathBuf;

use anyhow::Context;
use bench::{
    benchrun::{self, RunConfig, RunResult},
    harness::{self, Topology, PORT},
    load, plot,
    relayproc::{self, RelayCommand},
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
    /// Where to write the latency plot (SVG).
    #[arg(long, default_value = "target/bench/latency.svg")]
    plot: PathBuf,
    /// Namespace name prefix.
    #[arg(long, default_value = "frbench")]
    prefix: String,
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
        None => bench(cli.bench),
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
        (1..=a.objects_per_s).contains(&a.groups_per_s),
        "--groups-per-s must be 1..=--objects-per-s"
    );
    anyhow::ensure!(
        (16..=1 << 20).contains(&a.object_size),
        "--object-size must be 16..=1048576"
    );
    anyhow::ensure!(
        (1..=16).contains(&a.load_namespaces),
        "--load-namespaces must be 1..=16"
    );
    anyhow::ensure!((1..=64).contains(&a.workers), "--workers must be 1..=64");
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

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_table(runs: &[Value]) {
    println!();
    println!(
        "{:<8} {:>5} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "run", "subs", "window", "deliv", "Gbit/s", "p50", "p99", "p99.9", "max", "relay", "pkts/", "ns/", "lost", "gaps", "missing", "RSS"
    );
    println!(
        "{:<8} {:>5} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>7} {:>9} {:>7} {:>6} {:>6} {:>7} {:>6}",
        "", "", "s", "pkts/s", "udp", "us", "us", "us", "us", "CPU s", "CPU-s", "pkt", "pub", "subs", "objs", "MiB"
    );
    for r in runs {
        if let Some(e) = r.get("error") {
            println!(
                "{:<8} {:>5} failed: {}",
                r["label"].as_str().unwrap_or("?"),
                r["subscribers"],
                one_line(e.as_str().unwrap_or("?"), 110)
            );
            continue;
        }
        let l = &r["latency"];
        let u = |v: &Value| v.as_u64().map(|x| x.to_string()).unwrap_or("-".into());
        println!(
            "{:<8} {:>5} {:>7.2} {:>9.0} {:>7.3} {:>7} {:>7} {:>7} {:>8} {:>7.3} {:>9.0} {:>7.0} {:>6} {:>6} {:>7} {:>6.1}",
            r["label"].as_str().unwrap_or("?"),
            r["subscribers"],
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

/// xdp/socket ratios for every subscriber count both backends ran at.
fn ratios(runs: &[Value]) -> Vec<Value> {
    let find = |label: &str, subs: &Value| {
        runs.iter()
            .find(|r| r["label"] == label && &r["subscribers"] == subs && r.get("error").is_none())
    };
    let mut out = Vec::new();
    for x in runs
        .iter()
        .filter(|r| r["label"] == "xdp" && r.get("error").is_none())
    {
        let Some(s) = find("socket", &x["subscribers"]) else {
            continue;
        };
        let q = |path: &[&str]| {
            let get = |r: &Value| path.iter().fold(r.clone(), |v, k| v[*k].clone());
            f(&get(x)) / f(&get(s))
        };
        out.push(json!({
            "subscribers": x["subscribers"],
            "delivered_packets_per_relay_cpu_s": q(&["delivered_packets_per_relay_cpu_s"]),
            "ns_per_delivered_packet": q(&["ns_per_delivered_packet"]),
            "delivered_packets_per_cpu_s_incl_softirq": q(&["delivered_packets_per_cpu_s_incl_softirq"]),
            "latency_p50": q(&["latency", "p50_us"]),
            "latency_p99": q(&["latency", "p99_us"]),
            "latency_p999": q(&["latency", "p999_us"]),
            "relay_rss_peak": q(&["relay_rss_kib", "peak_vmhwm"]),
        }));
    }
    out
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

fn bench(a: BenchArgs) -> anyhow::Result<()> {
    validate(&a)?;
    let counts = if a.sweep {
        a.sweep_counts.clone()
    } else {
        vec![a.subscribers]
    };
    let backends: Vec<&str> = if a.compare {
        vec!["xdp", "socket"]
    } else {
        vec![a.backend.as_str()]
    };
    let custom = a.relay_cmd.is_some();
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

    let mut runs: Vec<Value> = Vec::new();
    let mut plotted: Vec<(String, RunResult)> = Vec::new();
    for &subscribers in &counts {
        for &backend in &backends {
            let label = if custom {
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
                relay: relay_command(&a, backend, &cert_s, &key_s)?,
                subscribers,
                load_namespaces: a.load_namespaces,
                object_size: a.object_size,
                objects_per_s: a.objects_per_s,
                groups_per_s: a.groups_per_s,
                duration_s: a.duration_s,
                datagrams: a.datagrams,
                bench_exe: bench_exe.clone(),
                work_dir: topo.dir.path().to_path_buf(),
                cert: cert.clone(),
            };
            eprintln!(
                "[bench] run {label}: {subscribers} subscribers, {} objects/s of {} B, {} s",
                a.objects_per_s, a.object_size, a.duration_s
            );
            match benchrun::run(&topo, &cfg) {
                Ok(r) => {
                    runs.push(r.json.clone());
                    plotted.push((format!("{label} S={subscribers}"), r));
                }
                Err(e) => {
                    eprintln!("\n[bench] run {label} with {subscribers} subscribers failed: {e:#}");
                    runs.push(json!({ "label": label, "subscribers": subscribers, "error": format!("{e:#}") }));
                }
            }
        }
    }
    drop(topo);

    print_table(&runs);
    let ratios = ratios(&runs);
    if !ratios.is_empty() {
        println!();
        println!(
            "{:<6} {:>14} {:>12} {:>12} {:>12}",
            "subs", "pkts/CPU-s", "ns/pkt", "p50", "p99"
        );
        for r in &ratios {
            println!(
                "{:<6} {:>14.2} {:>12.2} {:>12.2} {:>12.2}   (xdp/socket)",
                r["subscribers"],
                f(&r["delivered_packets_per_relay_cpu_s"]),
                f(&r["ns_per_delivered_packet"]),
                f(&r["latency_p50"]),
                f(&r["latency_p99"]),
            );
        }
    }
    let sweep: Vec<Value> = runs
        .iter()
        .filter(|r| r.get("error").is_none())
        .map(|r| {
            json!({
                "label": r["label"],
                "subscribers": r["subscribers"],
                "ns_per_delivered_packet": r["ns_per_delivered_packet"],
                "ns_per_delivered_packet_incl_softirq": r["ns_per_delivered_packet_incl_softirq"],
            })
        })
        .collect();
    if a.sweep {
        println!();
        println!("ns per delivered packet (relay utime+stime / subscriber-side packets):");
        for s in &sweep {
            println!(
                "  {:<8} {:>5} subscribers: {:>8.0} ns ({:.0} ns with softirq)",
                s["label"].as_str().unwrap_or("?"),
                s["subscribers"],
                f(&s["ns_per_delivered_packet"]),
                f(&s["ns_per_delivered_packet_incl_softirq"])
            );
        }
    }

    let hists: Vec<(String, &hdrhistogram::Histogram<u64>)> = plotted
        .iter()
        .map(|(l, r)| (l.clone(), &r.histogram))
        .collect();
    let svg = plot::latency_svg(
        &format!(
            "fastrelay-bench: {} B objects, {} objects/s, {}",
            a.object_size,
            a.objects_per_s,
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
    println!(
        "{}",
        json!({
            "bench": "fastrelay-bench",
            "machine": machine(),
            "config": {
                "compare": a.compare,
                "sweep": a.sweep,
                "subscriber_counts": counts,
                "backends": backends,
                "relay_cmd": a.relay_cmd,
                "workers": a.workers,
                "idle": a.idle,
                "xdp_mode": a.xdp_mode,
                "load_namespaces": a.load_namespaces,
                "object_size": a.object_size,
                "objects_per_s": a.objects_per_s,
                "groups_per_s": a.groups_per_s,
                "transport": if a.datagrams { "datagrams" } else { "streams" },
                "duration_s": a.duration_s,
            },
            "runs": runs,
            "ratios_xdp_over_socket": ratios,
            "sweep": sweep,
            "plot": a.plot.display().to_string(),
            "failed_runs": failed,
        })
    );
    anyhow::ensure!(failed == 0, "{failed} run(s) failed");
    Ok(())
}
