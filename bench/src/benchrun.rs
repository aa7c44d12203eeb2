//! One benchmark run on a built topology: start the relay, the publisher
//! (client namespace 1) and the subscriber load processes (namespaces
//! 2..), measure a window from the publisher's first object until every
//! subscriber has drained, then tear everything down and compute figures.
//!
//! The measured window starts when the publisher is told "go" (every
//! subscription is established by then) and ends when every load process
//! reports that it received all published objects (or its drain timeout
//! passed). Relay CPU, the relay cores' busy time, softirq and subscriber
//! packets are all taken over that window; session setup and teardown are
//! outside it. Before the relay starts, the receive work of what it sends
//! is steered off its cores ([`crate::steering`]); with a profile asked
//! for, `perf` samples the relay during the first seconds of the window.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::{
    harness::{Topology, PORT, RELAY_V4},
    hist,
    nsproc::NsProcess,
    procstat, profile,
    relayproc::{RelayCommand, RunningRelay},
    steering::{RpsMode, Steering},
};

/// How long subscribers may keep receiving after the publisher's last object.
const DRAIN_MS: u64 = 3000;
/// Busy share of the load CPUs from which a run is flagged as possibly
/// load-bound (on the 2-core test box, 100 subscribers at 1 000 objects/s
/// kept the load CPU 97–100 % busy while the relay's worker idled).
const LOAD_SATURATED: f64 = 0.95;

#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Row label, e.g. "xdp".
    pub label: String,
    /// fastrelay's backend ("xdp", "socket"): pairs runs for ratios.
    pub backend: String,
    /// Which repetition of `--runs` (from 1).
    pub run: usize,
    /// `--rps`.
    pub rps: RpsMode,
    /// The cores the relay is expected to pin its workers to (the RPS mask
    /// keeps them clear until the relay's own pinning is seen).
    pub planned_cores: BTreeSet<usize>,
    /// `--load-cpus`: the CPUs the publisher and subscriber processes may
    /// run on (`None`: anywhere).
    pub load_cpus: Option<BTreeSet<usize>>,
    /// `perf record` the relay for this many seconds of the window.
    pub profile_s: Option<u64>,
    pub relay: RelayCommand,
    pub subscribers: usize,
    /// Client namespaces hosting subscriber load processes (2..=1+N).
    pub load_namespaces: usize,
    pub object_size: usize,
    pub objects_per_s: u64,
    pub groups_per_s: u64,
    pub duration_s: u64,
    pub datagrams: bool,
    /// The fastrelay-bench executable (it runs the load subcommands).
    pub bench_exe: PathBuf,
    /// Directory for logs and the certificate.
    pub work_dir: PathBuf,
    pub cert: PathBuf,
}

pub struct RunResult {
    pub json: Value,
    pub histogram: Histogram<u64>,
}

/// The progress line: rewritten in place on a terminal, one line per
/// update otherwise (logs, CI).
fn progress(label: &str, what: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K[bench] {label}: {what}");
    } else {
        eprintln!("[bench] {label}: {what}");
    }
}

/// Sessions per load process: `total` spread over `procs` as evenly as possible.
pub fn spread(total: usize, procs: usize) -> Vec<usize> {
    let procs = procs.clamp(1, total.max(1));
    (0..procs)
        .map(|i| total / procs + usize::from(i < total % procs))
        .filter(|&n| n > 0)
        .collect()
}

pub fn run(topo: &Topology, cfg: &RunConfig) -> anyhow::Result<RunResult> {
    let label = cfg.label.as_str();
    let server = format!("{RELAY_V4}:{PORT}");
    let cert = cfg.cert.display().to_string();
    let common = |sub: &str| -> Vec<String> {
        [
            sub,
            "--server",
            &server,
            "--ca",
            &cert,
            "--namespace",
            "bench/live",
            "--track",
            "load",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let setup_s = 20 + cfg.subscribers as u64 * 40 / 1000;
    let max_s = setup_s + cfg.duration_s * 3 + 60;

    // Steering first, for every run: the relay's first packet already
    // takes the steered path.
    let mut steering = Steering::apply(&topo.prefix, &cfg.rps, &cfg.planned_cores)?;
    let mut steering_adjusted = false;

    progress(label, "starting the relay");
    let mut relay = RunningRelay::start(
        &topo.relay_ns(),
        &cfg.relay,
        PORT,
        cfg.work_dir.join(format!("relay-{label}.log")),
        Duration::from_secs(20),
    )?;
    let pid = relay.pid();
    let ready = relay.ready.clone();
    let cpu_ready = procstat::cpu_times(pid)?;

    progress(label, "starting the publisher");
    let mut pub_args = common("load-pub");
    pub_args.extend([
        "--object-size".into(),
        cfg.object_size.to_string(),
        "--objects-per-s".into(),
        cfg.objects_per_s.to_string(),
        "--groups-per-s".into(),
        cfg.groups_per_s.to_string(),
        "--duration-s".into(),
        cfg.duration_s.to_string(),
        "--max-s".into(),
        max_s.to_string(),
    ]);
    if cfg.datagrams {
        pub_args.push("--datagrams".into());
    }
    let keylog = topo.keylog().display().to_string();
    let env = [("SSLKEYLOGFILE", keylog.as_str())];
    let mut publisher = NsProcess::spawn(
        "publisher",
        &topo.client_ns(1),
        &cfg.bench_exe,
        &pub_args,
        cfg.work_dir.join(format!("pub-{label}.log")),
        &env,
        cfg.load_cpus.as_ref(),
    )?;
    publisher.wait_event("announced", Duration::from_secs(20), |_| {})?;

    let mut loads = Vec::new();
    for (i, sessions) in spread(cfg.subscribers, cfg.load_namespaces)
        .into_iter()
        .enumerate()
    {
        let mut a = common("load-sub");
        a.extend([
            "--sessions".into(),
            sessions.to_string(),
            "--max-s".into(),
            max_s.to_string(),
        ]);
        loads.push(NsProcess::spawn(
            &format!("subscribers {}", i + 1),
            &topo.client_ns(i + 2),
            &cfg.bench_exe,
            &a,
            cfg.work_dir.join(format!("sub-{label}-{}.log", i + 1)),
            &env,
            cfg.load_cpus.as_ref(),
        )?);
    }
    // Where the load really may run, as the kernel reports it (every
    // thread of each process), not as it was asked.
    let load_affinity: Vec<Option<String>> = std::iter::once(&publisher)
        .chain(&loads)
        .map(|p| procstat::allowed_cpus_of_threads(p.pid()))
        .collect();
    let (mut subscribed, mut failed) = (0u64, 0u64);
    for l in &loads {
        progress(
            label,
            &format!("{subscribed}/{} subscribed", cfg.subscribers),
        );
        let v = l.wait_event("subscribed", Duration::from_secs(max_s), |_| {})?;
        subscribed += v["subscribed"].as_u64().unwrap_or(0);
        failed += v["failed"].as_u64().unwrap_or(0);
    }
    anyhow::ensure!(
        subscribed > 0,
        "no subscriber could subscribe ({failed} failed)"
    );

    // The measured window. Workers pin themselves after the ready line, so
    // look for pinned threads only now.
    let cores = procstat::pinned_cores(pid);
    if cfg.rps == RpsMode::Auto && !cores.is_empty() && cores != cfg.planned_cores {
        // The relay pinned itself elsewhere than expected: steer off the
        // cores it really uses before measuring.
        steering = Steering::apply(&topo.prefix, &cfg.rps, &cores)?;
        steering_adjusted = true;
    }
    let lines0 = procstat::cpu_lines()?;
    let cpu0 = procstat::cpu_times(pid)?;
    let switches0 = procstat::context_switches(pid)?;
    let t0 = Instant::now();
    publisher.send("go")?;
    let mut recording = cfg.profile_s.map(|s| {
        profile::Recording::start(
            pid,
            s,
            &cfg.work_dir.join(format!("perf-{label}-{}.data", cfg.run)),
            &cfg.work_dir.join(format!("perf-{label}-{}.log", cfg.run)),
        )
    });
    let sending = publisher.wait_event("sending", Duration::from_secs(10), |_| {})?;
    let mut delivered = vec![0u64; loads.len()];
    let mut rss_max_kib = 0;
    let mut last_print = Instant::now() - Duration::from_secs(1);
    let send_timeout = Duration::from_secs(cfg.duration_s * 2 + 10);
    let sent = loop {
        if let Some(v) = publisher.next_json(Duration::from_millis(200))? {
            if v["event"] == "sent" {
                break v;
            }
        }
        for (i, l) in loads.iter().enumerate() {
            while let Some(v) = l.next_json(Duration::ZERO)? {
                if v["event"] == "progress" {
                    delivered[i] = v["objects"].as_u64().unwrap_or(0);
                }
            }
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            rss_max_kib = rss_max_kib.max(procstat::memory(pid).map(|m| m.rss_kib).unwrap_or(0));
            progress(
                label,
                &format!(
                    "{:.0}/{} s, {} subscribers, {} objects delivered",
                    t0.elapsed().as_secs_f64(),
                    cfg.duration_s,
                    subscribed,
                    delivered.iter().sum::<u64>()
                ),
            );
        }
        if t0.elapsed() > send_timeout {
            anyhow::bail!("the publisher did not finish within {send_timeout:?}");
        }
        if !relay.is_running() {
            anyhow::bail!("the relay exited during the run");
        }
    };
    let published = sent["objects"].as_u64().unwrap_or(0);
    for l in &mut loads {
        l.send(&format!("drain {published} {DRAIN_MS}"))?;
    }
    for l in &loads {
        l.wait_event(
            "received",
            Duration::from_millis(DRAIN_MS) + Duration::from_secs(10),
            |_| {},
        )?;
    }
    let window = t0.elapsed();
    let cpu1 = procstat::cpu_times(pid)?;
    let switches = procstat::context_switches(pid)?.since(&switches0);
    let lines1 = procstat::cpu_lines()?;
    let mem = procstat::memory(pid)?;
    rss_max_kib = rss_max_kib.max(mem.rss_kib);
    // perf must be done before the relay goes: it follows the process.
    if let Some(Ok(r)) = &mut recording {
        if let Err(e) = r.wait() {
            eprintln!("\n[bench] {label}: {e:#}");
        }
    }
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!();
    }

    // Teardown outside the window.
    publisher.send("close")?;
    for l in &mut loads {
        l.send("close")?;
    }
    let mut histogram = hist::new_latency_histogram();
    let mut subs = Vec::new();
    for l in &mut loads {
        let v = l.wait_event("result", Duration::from_secs(60), |_| {})?;
        hist::merge_buckets(&mut histogram, &v["histogram"])
            .with_context(|| format!("{}: histogram", l.name))?;
        subs.push(v);
        let _ = l.wait(Duration::from_secs(10));
    }
    let publisher_result = publisher.wait_event("result", Duration::from_secs(20), |_| {})?;
    let _ = publisher.wait(Duration::from_secs(10));
    let cpu_end = procstat::cpu_times(pid)?;
    let stopped = relay.stop()?;
    // Unwinding the samples takes a while: after the run.
    let profiled = recording.take().map(|r| {
        progress(label, "analysing the profile");
        r.and_then(|r| r.analyse())
    });

    let sum = |k: &str| subs.iter().map(|v| v[k].as_u64().unwrap_or(0)).sum::<u64>();
    let cpu = cpu1.since(&cpu0);
    let cpu_s = cpu.total().as_secs_f64();
    let softirq_s = procstat::cpu_between(&lines0, &lines1, &cores)
        .softirq
        .as_secs_f64();
    // The relay cores' whole busy time: the relay's threads, the kernel
    // work done there for it (softirq included), and anything else
    // scheduled there.
    let core_busy = (!cores.is_empty()).then(|| procstat::cpu_between(&lines0, &lines1, &cores));
    let core_busy_s = core_busy.map(|c| c.busy().as_secs_f64());
    // The load's CPUs over the same window. A load that is never idle
    // bounds delivery and latency itself, whatever the relay does.
    let load_busy = cfg
        .load_cpus
        .as_ref()
        .filter(|c| !c.is_empty())
        .map(|c| procstat::cpu_between(&lines0, &lines1, c));
    let load_share = load_busy.and_then(|l| l.busy_share());
    if let Some(share) = load_share {
        if share >= LOAD_SATURATED {
            eprintln!(
                "[bench] {label}: the load CPUs were {:.0} % busy over the window: \
                 the publisher and subscribers, not the relay, may bound this run's \
                 delivery and latency",
                share * 100.0
            );
        }
    }
    let window_s = window.as_secs_f64();
    let packets = sum("rx_packets");
    let per = |n: f64, d: f64| if d > 0.0 { n / d } else { f64::NAN };
    let worker_sum = |k: &str| -> Option<u64> {
        stopped["workers"]
            .as_array()
            .map(|ws| ws.iter().map(|w| w[k].as_u64().unwrap_or(0)).sum())
    };
    let tx_packets = worker_sum("tx_packets");
    // Mostly ACKs: how often subscribers acknowledge is much of the cost.
    let rx_per_tx = tx_packets
        .zip(worker_sum("rx_packets"))
        .map(|(tx, rx)| per(rx as f64, tx as f64));
    let lifetime_cpu_s = cpu_end.since(&cpu_ready).total().as_secs_f64();
    let cores_json: Vec<usize> = cores.iter().copied().collect();
    let ns_per_packet = per(cpu_s * 1e9, packets as f64);
    let profile_json = match profiled {
        None => Value::Null,
        Some(Ok(p)) => {
            let mut v = p.json(ns_per_packet);
            v["seconds"] = cfg.profile_s.into();
            v["note"] = "perf sampling (DWARF stacks at 999 Hz) costs the relay CPU: this run's CPU figures are inflated by it; ns_per_delivered_packet = share x this run's relay CPU ns per delivered packet".into();
            v
        }
        Some(Err(e)) => json!({ "error": format!("{e:#}") }),
    };
    let mut steering_json = steering.json();
    steering_json["adjusted_to_pinned_cores"] = steering_adjusted.into();
    let core_busy_json = match core_busy {
        Some(c) => json!({
            "scope": format!("/proc/stat busy time (user+nice+system+irq+softirq+steal) of the relay's pinned cores {cores_json:?} over the window"),
            "cores": cores_json,
            "user_s": c.user.as_secs_f64(),
            "nice_s": c.nice.as_secs_f64(),
            "system_s": c.system.as_secs_f64(),
            "irq_s": c.irq.as_secs_f64(),
            "softirq_s": c.softirq.as_secs_f64(),
            "steal_s": c.steal.as_secs_f64(),
            "total_s": c.busy().as_secs_f64(),
        }),
        None => json!({
            "scope": "none: no relay thread is pinned to one core, so no core is the relay's",
            "total_s": null,
        }),
    };
    let json = json!({
        "label": label,

        "relay_cmd": std::iter::once(cfg.relay.program.display().to_string())
            .chain(cfg.relay.args.iter().cloned()).collect::<Vec<_>>().join(" "),
        "subscribers": cfg.subscribers,
        "subscribed": subscribed,
        "subscribe_failed": failed,
        "load_processes": loads.len(),
        "object_size": cfg.object_size,
        "objects_per_s": cfg.objects_per_s,
        "groups_per_s": cfg.groups_per_s,
        "duration_s": cfg.duration_s,
        "transport": if cfg.datagrams { "datagrams" } else { "streams" },
        "window_s": window_s,
        "published_objects": published,
        "upstream_subscriptions": sending["upstream_subscriptions"],
        "delivered_objects": sum("objects"),
        "delivered_packets": packets,
        "delivered_packets_per_s": per(packets as f64, window_s),
        "delivered_udp_gbit_per_s": per(sum("rx_bytes") as f64 * 8.0 / 1e9, window_s),
        "delivered_payload_gbit_per_s": per(sum("bytes") as f64 * 8.0 / 1e9, window_s),
        "latency": hist::summary(&histogram),
        "relay_cpu": {
            "scope": "relay process CPU clock over the window (clock_getcpuclockid: scheduler runtime of all threads, ns resolution; user_s and system_s are its utime/stime split from /proc/<pid>/stat, in 10 ms ticks)",
            "exact": cpu.exact.is_some(),
            "user_s": cpu.user.as_secs_f64(),
            "system_s": cpu.system.as_secs_f64(),
            "total_s": cpu_s,
            "softirq_s": softirq_s,
            "softirq_scope": if cores.is_empty() { "all-cpus".to_string() } else { format!("relay-pinned-cores {cores_json:?}") },
            "softirq_note": "softirq on those CPUs: the relay's own transmit and receive, plus whatever RPS left there (see steering) and any client work scheduled there",
        },
        "delivered_packets_per_relay_cpu_s": per(packets as f64, cpu_s),
        "ns_per_delivered_packet": ns_per_packet,
        // Relays differ in how many packets carry an object: per object
        // is the figure that compares them.
        "ns_per_delivered_object": per(cpu_s * 1e9, sum("objects") as f64),
        "delivered_packets_per_core_busy_s": core_busy_s.map(|b| per(packets as f64, b)),
        "ns_per_delivered_packet_core_busy": core_busy_s.map(|b| per(b * 1e9, packets as f64)),

        "delivered_packets_per_cpu_s_incl_softirq": per(packets as f64, cpu_s + softirq_s),
        "ns_per_delivered_packet_incl_softirq": per((cpu_s + softirq_s) * 1e9, packets as f64),
        "relay_wakeups": {
            "scope": "voluntary context switches of the relay's threads over the window, from /proc/<pid>/task/*/status: a worker that blocks when idle switches once per sleep, so this counts its wake-ups (for another relay, any thread's sleeps)",
            "voluntary": switches.voluntary,
            "involuntary": switches.involuntary,
            "per_s": per(switches.voluntary as f64, window_s),
            "delivered_packets_per_wakeup": per(packets as f64, switches.voluntary as f64),
            "relay_cpu_ns_per_wakeup": per(cpu_s * 1e9, switches.voluntary as f64),
        },
        "relay_lifetime": {
            "cpu_s": lifetime_cpu_s,
            "tx_packets": tx_packets,
            "tx_packets_per_cpu_s": tx_packets.map(|t| per(t as f64, lifetime_cpu_s)),
            "rx_packets_per_tx_packet": rx_per_tx,
        },
        "relay_rss_kib": { "end": mem.rss_kib, "max_sampled": rss_max_kib, "peak_vmhwm": mem.peak_kib },
        "publisher": publisher_result,
        "subscriber_side": {
            "complete_sessions": sum("complete"),
            "missing_objects": sum("missing"),
            "gaps": sum("gaps"),
            "out_of_order": sum("out_of_order"),
            "bad_checksums": sum("bad_checksums"),
            "negative_latency": sum("negative_latency"),
            "dropped_local": sum("dropped_local"),
        },
        "relay_counters_available": !stopped.is_null(),
        "relay_ready": ready,
        "relay_report": stopped,
    });
    // Beside the macro: one json! of all of it exceeds its recursion limit.
    let mut json = json;
    json["backend"] = cfg.backend.clone().into();
    json["run"] = cfg.run.into();
    json["relay_core_busy"] = core_busy_json;
    json["steering"] = steering_json;
    json["load_cpus"] = match &cfg.load_cpus {
        Some(c) => c.iter().copied().collect::<Vec<_>>().into(),
        None => Value::Null,
    };
    json["load_affinity"] = json!(load_affinity);
    json["load_cpus_busy"] = match load_busy {
        Some(l) => json!({
            "scope": "/proc/stat busy time (user+nice+system+irq+softirq+steal) of the load CPUs (--load-cpus) over the window; busy_share = busy / (busy + idle + iowait)",
            "busy_s": l.busy().as_secs_f64(),
            "idle_s": (l.idle + l.iowait).as_secs_f64(),
            "busy_share": load_share,
        }),
        None => Value::Null,
    };
    json["profile"] = profile_json;
    Ok(RunResult { json, histogram })
}
