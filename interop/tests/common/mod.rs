//! Helpers of the namespace tests that mix the independent client
//! (`moqt-interop`) with the project's deliberately misbehaving peers.

#![allow(dead_code)] // each test file uses its own subset

use std::{
    path::PathBuf,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    thread,
    time::Duration,
};

use bench::harness::*;
use serde_json::Value;

pub const MIB: u64 = 1 << 20;

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn interop_bin() -> PathBuf {
    binary("moqt-interop")
}

/// `moqt-interop CMD` in client `i` (raw QUIC the way moq-transport's own
/// stack connects); its JSON line.
pub fn interop(topo: &Topology, i: usize, cmd: &str, args: &[&str], timeout: Duration) -> Value {
    interop_via(topo, i, Via::RawQuic, cmd, args, timeout)
}

/// How `moqt-interop` reaches the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Raw QUIC (`moqt-18`) the way moq-transport's own stack connects
    /// (web-transport-quinn's `Session::raw`), stream error codes and all.
    RawQuic,
    /// web-transport-quinn's HTTP/3 CONNECT (`h3`), as browsers reach it.
    WebTransport,
}

impl Via {
    fn flag(self) -> &'static str {
        match self {
            Via::RawQuic => "--wtq-raw",
            Via::WebTransport => "--webtransport",
        }
    }
}

/// [`interop`] over `via`. A client that reports a failure has its stderr
/// printed.
pub fn interop_via(
    topo: &Topology,
    i: usize,
    via: Via,
    cmd: &str,
    args: &[&str],
    timeout: Duration,
) -> Value {
    let cert = topo.cert().display().to_string();
    let server = relay_for(i);
    let mut all = vec![cmd, "--server", &server, "--ca", &cert, via.flag()];
    all.extend_from_slice(args);
    let (_ok, out, err) = topo.exec(&topo.client_ns(i), &interop_bin(), &all, timeout);
    let json = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("moqt-interop {all:?} printed no JSON:\n{out}\n{err}"));
    if json["ok"] != true {
        eprintln!("moqt-interop {cmd} ({via:?}) in c{i} reported a failure; its stderr:\n{err}");
    }
    json
}

/// `fastrelay-client CMD --server .. --ca ..` in client `i`; its JSON line.
pub fn hostile(topo: &Topology, i: usize, cmd: &str, args: &[&str], timeout: Duration) -> Value {
    hostile_to(topo, i, &relay_for(i), cmd, args, timeout)
}

/// [`hostile`] toward the relay address `server` (e.g. IPv4 from a client
/// whose default is IPv6).
pub fn hostile_to(
    topo: &Topology,
    i: usize,
    server: &str,
    cmd: &str,
    args: &[&str],
    timeout: Duration,
) -> Value {
    let cert = topo.cert().display().to_string();
    let mut all = vec![cmd, "--server", server, "--ca", &cert];
    all.extend_from_slice(args);
    let (ok, out, err) = topo.exec(&topo.client_ns(i), &client_bin(), &all, timeout);
    assert!(ok, "fastrelay-client {all:?} failed:\n{out}\n{err}");
    last_json(&out)
}

/// `moq-churn` from client 3 against `honest/cam` `video`: `cycles`
/// sessions, `concurrency` at a time, each subscribed `hold_ms`; every
/// `fixed_port_every`th of a slot on the slot's fixed port (0: never).
pub fn churn(
    topo: &Topology,
    cycles: u64,
    concurrency: u64,
    hold_ms: u64,
    fixed_port_every: u64,
) -> Value {
    let (n, c, hold, every) = (
        cycles.to_string(),
        concurrency.to_string(),
        hold_ms.to_string(),
        fixed_port_every.to_string(),
    );
    hostile(
        topo,
        3,
        "moq-churn",
        &[
            "--namespace",
            "honest/cam",
            "--track",
            "video",
            "--cycles",
            &n,
            "--concurrency",
            &c,
            "--hold-ms",
            &hold,
            "--fixed-port-every",
            &every,
            "--progress-every",
            "500",
        ],
        Duration::from_secs(60 + cycles / 5),
    )
}

/// Prints the relay's log when the test fails while it lives.
pub struct RelayLogOnPanic<'a>(pub &'a Relay);

impl Drop for RelayLogOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("relay log:\n{}", self.0.log());
        }
    }
}

/// The honest pair beside a hostile peer: an independent subscriber in c2
/// and an independent publisher in c1 of `honest/cam` `video`.
pub struct Honest {
    pub groups: u64,
    pub per_group: u64,
    pub object_size: u64,
    pub objects_per_s: u64,
    /// Bound on each client's run.
    pub timeout: Duration,
}

impl Honest {
    /// The subscriber (waits for the publisher: RENDEZVOUS_TIMEOUT).
    pub fn subscribe(&self, topo: &Topology) -> Value {
        let o = self.per_group.to_string();
        let timeout_ms = self.timeout.as_millis().to_string();
        interop(
            topo,
            2,
            "sub",
            &[
                "--namespace",
                "honest/cam",
                "--track",
                "video",
                "--rendezvous-ms",
                "15000",
                "--objects-per-group",
                &o,
                "--timeout-ms",
                &timeout_ms,
            ],
            self.timeout + Duration::from_secs(10),
        )
    }

    pub fn publish(&self, topo: &Topology) -> Value {
        let (g, o) = (self.groups.to_string(), self.per_group.to_string());
        let (size, rate) = (self.object_size.to_string(), self.objects_per_s.to_string());
        interop(
            topo,
            1,
            "pub",
            &[
                "--namespace",
                "honest/cam",
                "--track",
                "video",
                "--groups",
                &g,
                "--objects-per-group",
                &o,
                "--object-size",
                &size,
                "--rate-objects-per-s",
                &rate,
                "--linger-ms",
                "1000",
            ],
            self.timeout + Duration::from_secs(10),
        )
    }

    /// The subscriber got every object the publisher sent, once, no gap.
    pub fn assert_lossless(&self, sub: &Value, publisher: &Value) {
        assert_eq!(publisher["ok"], true, "{publisher}");
        let t = &sub["tracks"]["video"];
        assert_eq!(sub["ok"], true, "{sub}");
        assert_eq!(u(&t["objects"]), self.groups * self.per_group, "{t}");
        assert_eq!(u(&t["gaps"]) + u(&t["duplicates"]), 0, "{t}");
    }
}

/// Samples the relay's RSS every 50 ms while `run` runs; returns its result
/// and the largest sample.
pub fn peak_rss_during<T>(relay: &Relay, run: impl FnOnce() -> T) -> (T, u64) {
    let pid = relay.pid();
    let peak = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    /// Stops the sampler even when `run` panics (the scope would wait
    /// for it forever).
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let result = thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let _done = Done(&done);
        run()
    });
    (result, peak.load(Ordering::Relaxed))
}

/// `fastrelay token --key KEY ARGS...`: the token it prints.
pub fn mint(key: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(relay_bin())
        .args(["token", "--key", &key.display().to_string()])
        .args(args)
        .output()
        .expect("running fastrelay token");
    assert!(
        out.status.success(),
        "fastrelay token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWS: {token}");
    token
}

/// Every object once, intact, in whole groups.
pub fn assert_clean(what: &str, track: &Value) {
    for field in [
        "gaps",
        "duplicates",
        "bad_payloads",
        "missing_groups",
        "partial_groups",
    ] {
        assert_eq!(u(&track[field]), 0, "{what} {field}: {track}");
    }
}
