//! `fastrelay-bench` in a short smoke configuration (seconds, a handful of
//! subscribers): both backends deliver, the CPU figures are non-zero, the
//! final JSON line parses and the latency plot is written. Needs root
//! (namespaces, XDP) and the workspace's `fastrelay` binary built, as
//! ci/test does.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use bench::harness;
use serde_json::Value;

/// Removes the namespaces of `prefix` even if the benchmark was killed.
struct Cleanup(&'static str);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = harness::netns(&["down", self.0]);
    }
}

/// One benchmark at a time: on a 2-core box two would distort each other.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn run_bench(prefix: &'static str, args: &[&str]) -> (Value, PathBuf) {
    harness::require_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let _cleanup = Cleanup(prefix);
    let dir = std::env::temp_dir().join(format!(
        "fastrelay-bench-smoke-{prefix}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let plot = dir.join("latency.svg");
    let out = Command::new("timeout")
        .args(["-k", "5", "100"])
        .arg(env!("CARGO_BIN_EXE_fastrelay-bench"))
        .args(args)
        .args(["--prefix", prefix, "--plot"])
        .arg(&plot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("running fastrelay-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}\n{stdout}");
    assert!(
        out.status.success(),
        "fastrelay-bench failed: {}",
        out.status
    );
    let last = stdout.lines().last().expect("some output");
    let json: Value = serde_json::from_str(last).expect("the final line is JSON");
    (json, plot)
}

fn check_run(r: &Value) {
    assert!(r.get("error").is_none(), "run failed: {r}");
    assert!(r["delivered_objects"].as_u64().unwrap() > 0, "{r}");
    assert!(r["delivered_packets"].as_u64().unwrap() > 0, "{r}");
    assert!(r["relay_cpu"]["total_s"].as_f64().unwrap() > 0.0, "{r}");
    // Its threads sleep between the publisher's objects.
    assert!(r["relay_wakeups"]["voluntary"].as_u64().unwrap() > 0, "{r}");
    assert!(r["latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
    assert!(
        r["relay_rss_kib"]["peak_vmhwm"].as_u64().unwrap() > 0,
        "{r}"
    );
    assert_eq!(r["subscriber_side"]["bad_checksums"], 0, "{r}");
    // The load processes ran on the load CPUs during the window.
    if !r["load_cpus"].is_null() {
        let share = r["load_cpus_busy"]["busy_share"].as_f64().unwrap();
        assert!(share > 0.0 && share <= 1.0, "{r}");
    }
}

/// `--load-cpus auto`: every thread of the publisher and of each load
/// process may run only off the relay's core (as the kernel reports it).
fn check_load_placement(json: &Value, r: &Value) {
    let relay_cores: Vec<u64> = json["config"]["relay_cores_planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    let online = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let expected: Vec<u64> = (0..online).filter(|c| !relay_cores.contains(c)).collect();
    if expected.is_empty() {
        assert!(r["load_cpus"].is_null(), "{r}");
        return;
    }
    let configured: Vec<u64> = r["load_cpus"]
        .as_array()
        .unwrap_or_else(|| panic!("no load_cpus: {r}"))
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(configured, expected);
    let observed = r["load_affinity"].as_array().unwrap();
    assert!(!observed.is_empty(), "{r}");
    for a in observed {
        let list = a
            .as_str()
            .unwrap_or_else(|| panic!("threads disagree: {r}"));
        let cpus = bench::procstat::parse_cpu_list(list).unwrap();
        let cpus: Vec<u64> = cpus.into_iter().map(|c| c as u64).collect();
        assert_eq!(cpus, expected, "a load process may run on {list}");
    }
}

#[test]
fn compare_smoke() {
    let (json, plot) = run_bench(
        "frtk",
        &[
            "--compare",
            "--duration-s",
            "2",
            "--subscribers",
            "4",
            "--objects-per-s",
            "500",
        ],
    );
    assert_eq!(json["failed_runs"], 0);
    let runs = json["runs"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["xdp", "socket"]);
    for r in runs {
        check_run(r);
        assert_eq!(r["relay_counters_available"], true);
        check_load_placement(&json, r);
    }
    assert_eq!(json["ratios_xdp_over_socket"].as_array().unwrap().len(), 1);
    let svg = std::fs::read_to_string(&plot).expect("the plot was written");
    assert!(svg.starts_with("<svg"), "{svg:.80}");
    let _ = std::fs::remove_dir_all(plot.parent().unwrap());
}

/// One second of a two-subscriber load.
const SHORT_LOAD: [&str; 6] = [
    "--duration-s",
    "1",
    "--subscribers",
    "2",
    "--objects-per-s",
    "200",
];

/// fastrelay's socket backend as a `--relay-cmd` style command line.
fn socket_relay_template() -> String {
    format!(
        "{} run --iface {{iface}} --port {{port}} --cert {{cert}} --key {{key}} --backend socket",
        harness::relay_bin().display()
    )
}

/// `--relay-cmd` with fastrelay itself behind the placeholders: the path
/// another draft-18 relay would take.
#[test]
fn relay_cmd_runs_fastrelay() {
    let template = socket_relay_template();
    let args = [["--relay-cmd", template.as_str()].as_slice(), &SHORT_LOAD].concat();
    let (json, plot) = run_bench("frtl", &args);
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["label"], "custom");
    check_run(&runs[0]);
    let _ = std::fs::remove_dir_all(plot.parent().unwrap());
}

/// `--with-relay-cmd`: another relay (fastrelay's socket backend behind the
/// placeholders) runs after the XDP backend in the same invocation, with
/// its own label and the per-object comparison.
#[test]
fn with_relay_cmd_runs_beside_fastrelay() {
    let template = socket_relay_template();
    let args = [
        ["--with-relay-cmd", template.as_str(), "--no-reference"].as_slice(),
        &SHORT_LOAD,
    ]
    .concat();
    let (json, plot) = run_bench("frtw", &args);
    let runs = json["runs"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|r| r["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["xdp", "fastrelay"]);
    for r in runs {
        check_run(r);
        assert!(r["ns_per_delivered_object"].as_f64().unwrap() > 0.0, "{r}");
    }
    let cmp = json["summary"]["per_object_vs_xdp"].as_array().unwrap();
    assert_eq!(cmp.len(), 1, "{cmp:?}");
    assert_eq!(cmp[0]["label"], "fastrelay");
    assert!(cmp[0]["times_xdp"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(plot.parent().unwrap());
}
