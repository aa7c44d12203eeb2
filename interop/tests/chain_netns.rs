//! Relay chaining (`fastrelay run --upstream`), on the wire with
//! independent clients (Cloudflare's `moq-transport`): an origin relay in
//! client namespace 3 (198.18.0.13), the edge in the relay namespace in
//! XDP mode with `--upstream moqt://198.18.0.13:4433`, the publisher in
//! client 1 at the origin and the subscriber in client 2 at the edge.
//! See docs/chaining.md.

mod common;

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use bench::{harness::*, quic::RELAY_SERVER_NAME, relayproc::write_identity};
use common::u;
use serde_json::Value;

/// Client 3's address: the upstream relay's.
const ORIGIN: &str = "198.18.0.13";
const OBJECTS_PER_GROUP: u64 = 10;
const GROUPS: u64 = 20;

/// An identity (certificate, key) for a relay started with `--cert`.
fn identity(topo: &Topology, tag: &str) -> (PathBuf, PathBuf) {
    let cert = topo.dir.path().join(format!("{tag}-cert.pem"));
    let key = topo.dir.path().join(format!("{tag}-key.pem"));
    write_identity(&cert, &key).expect("writing an identity");
    (cert, key)
}

/// A fastrelay in client namespace 3 with `cert`/`key`.
fn start_origin(topo: &Topology, (cert, key): &(PathBuf, PathBuf), extra: &[&str]) -> Relay {
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let mut args = vec!["--cert", &c, "--key", &k];
    args.extend_from_slice(extra);
    Relay::start_in(topo, &topo.client_ns(3), &args)
}

/// The edge: the topology's relay (XDP), upstream `upstream` trusted by `ca`.
fn start_edge(topo: &Topology, upstream: &str, ca: &Path) -> Relay {
    let ca = ca.display().to_string();
    Relay::start(
        topo,
        &[
            "--upstream",
            upstream,
            "--upstream-ca",
            &ca,
            "--upstream-server-name",
            RELAY_SERVER_NAME,
        ],
    )
}

/// `moqt-interop CMD` in client `i` toward `server`, trusting `ca` for
/// `server_name`; its JSON line.
fn interop_at(
    topo: &Topology,
    i: usize,
    (server, ca, server_name): (&str, &Path, &str),
    cmd: &str,
    args: &[&str],
    timeout: Duration,
) -> Value {
    let ca = ca.display().to_string();
    let mut all = vec![
        cmd,
        "--server",
        server,
        "--ca",
        &ca,
        "--server-name",
        server_name,
        "--wtq-raw",
    ];
    all.extend_from_slice(args);
    let (_ok, out, err) = topo.exec(&topo.client_ns(i), &binary("moqt-interop"), &all, timeout);
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("moqt-interop {all:?} printed no JSON:\n{out}\n{err}"))
}

fn origin_addr() -> String {
    format!("{ORIGIN}:{PORT}")
}

/// The publisher in client 1 at the upstream `(server, ca, name)`.
fn publish(topo: &Topology, at: (&str, &Path, &str), namespace: &str) -> Value {
    let (g, o) = (GROUPS.to_string(), OBJECTS_PER_GROUP.to_string());
    interop_at(
        topo,
        1,
        at,
        "pub",
        &[
            "--namespace",
            namespace,
            "--track",
            "video",
            "--groups",
            &g,
            "--objects-per-group",
            &o,
            "--object-size",
            "1000",
            "--rate-objects-per-s",
            "200",
            "--linger-ms",
            "1000",
            "--timeout-ms",
            "30000",
        ],
        Duration::from_secs(40),
    )
}

/// The subscriber in client 2 at the edge (waits for the publisher:
/// RENDEZVOUS_TIMEOUT).
fn subscribe(topo: &Topology, namespace: &str) -> Value {
    let o = OBJECTS_PER_GROUP.to_string();
    let server = format!("{RELAY_V4}:{PORT}");
    interop_at(
        topo,
        2,
        (&server, &topo.cert(), "localhost"),
        "sub",
        &[
            "--namespace",
            namespace,
            "--track",
            "video",
            "--rendezvous-ms",
            "15000",
            "--objects-per-group",
            &o,
            "--expect-objects",
            &(GROUPS * OBJECTS_PER_GROUP).to_string(),
            "--timeout-ms",
            "30000",
        ],
        Duration::from_secs(40),
    )
}

fn assert_lossless(sub: &Value, publisher: &Value) {
    assert_eq!(publisher["ok"], true, "publisher: {publisher}");
    assert_eq!(sub["ok"], true, "subscriber: {sub}");
    let t = &sub["tracks"]["video"];
    assert_eq!(u(&t["objects"]), GROUPS * OBJECTS_PER_GROUP, "{t}");
    assert_eq!(u(&t["gaps"]) + u(&t["duplicates"]), 0, "{t}");
}

/// Subscriber and publisher together, the one `first` starting a second
/// before the other.
fn relay_through(
    topo: &Topology,
    origin: (&str, &Path, &str),
    namespace: &str,
    subscriber_first: bool,
) -> (Value, Value) {
    thread::scope(|s| {
        let (sub, publisher) = if subscriber_first {
            let sub = s.spawn(|| subscribe(topo, namespace));
            thread::sleep(Duration::from_secs(1));
            (sub, s.spawn(|| publish(topo, origin, namespace)))
        } else {
            let publisher = s.spawn(|| publish(topo, origin, namespace));
            thread::sleep(Duration::from_secs(1));
            (s.spawn(|| subscribe(topo, namespace)), publisher)
        };
        (sub.join().unwrap(), publisher.join().unwrap())
    })
}

/// Prints the logs of the relays at these paths when the test fails.
struct LogsOnPanic(Vec<PathBuf>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            for p in &self.0 {
                eprintln!(
                    "log {}:\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                );
            }
        }
    }
}

/// Waits (bounded) until `relay`'s log has `needle` at least `count` times.
fn wait_for_log(relay: &Relay, needle: &str, count: usize, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if relay.log().matches(needle).count() >= count {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// (1) Origin and XDP edge: every object of a publisher at the origin
/// reaches a subscriber at the edge, publisher first and subscriber first.
#[test]
fn objects_cross_a_two_relay_chain_losslessly() {
    let topo = Topology::new("frtcha", 3);
    let origin_id = identity(&topo, "origin");
    let origin = start_origin(&topo, &origin_id, &[]);
    let edge = start_edge(&topo, &format!("moqt://{ORIGIN}:{PORT}"), &origin_id.0);
    let _logs = LogsOnPanic(vec![origin.log_path(), edge.log_path()]);
    assert_eq!(edge.ready["backend"], "xdp", "{}", edge.ready);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the edge's link to the origin did not come up"
    );
    let at = (origin_addr(), origin_id.0.clone());
    let at = (at.0.as_str(), at.1.as_path(), RELAY_SERVER_NAME);

    let (sub, publisher) = relay_through(&topo, at, "chain/first", false);
    assert_lossless(&sub, &publisher);
    let (sub, publisher) = relay_through(&topo, at, "chain/late", true);
    assert_lossless(&sub, &publisher);

    let edge_report = edge.stop();
    let origin_report = origin.stop();
    // Both tracks crossed the link: the origin saw the edge as one
    // connection (its link) besides the two publisher sessions.
    let accepted = u(&origin_report["workers"][0]["connections_accepted"]);
    assert_eq!(accepted, 3, "origin: {origin_report}");
    assert_eq!(
        u(&edge_report["workers"][0]["tx_dropped"]),
        0,
        "the edge could not address some packets: {edge_report}"
    );
}

/// (2) The origin restarts: the edge's subscribers through it get their
/// subscription ended, the edge reconnects (backoff) and a new
/// subscription flows losslessly from the new origin.
#[test]
fn edge_reconnects_when_the_origin_restarts() {
    let topo = Topology::new("frtchb", 3);
    let origin_id = identity(&topo, "origin");
    let origin = start_origin(&topo, &origin_id, &["--drain-ms", "300"]);
    let edge = start_edge(&topo, &format!("moqt://{ORIGIN}:{PORT}"), &origin_id.0);
    let _logs = LogsOnPanic(vec![origin.log_path(), edge.log_path()]);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the edge's link to the origin did not come up"
    );
    let at = (origin_addr(), origin_id.0.clone());
    let at = (at.0.as_str(), at.1.as_path(), RELAY_SERVER_NAME);
    let (sub, publisher) = relay_through(&topo, at, "chain/before", true);
    assert_lossless(&sub, &publisher);

    drop(origin.stop());
    assert!(
        wait_for_log(&edge, "upstream link closed", 1, Duration::from_secs(15)),
        "the edge did not notice the origin going away"
    );
    // Down for a while: the edge keeps retrying meanwhile.
    thread::sleep(Duration::from_secs(2));
    let origin = start_origin(&topo, &origin_id, &[]);
    let _new_log = LogsOnPanic(vec![origin.log_path()]);
    assert!(
        wait_for_log(&edge, "upstream link up", 2, Duration::from_secs(15)),
        "the edge did not reconnect to the restarted origin"
    );
    let (sub, publisher) = relay_through(&topo, at, "chain/after", true);
    assert_lossless(&sub, &publisher);
    drop(edge.stop());
    drop(origin.stop());
}
