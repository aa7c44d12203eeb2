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

use bench::{harness::*, nsproc::NsProcess, quic::RELAY_SERVER_NAME, relayproc::write_identity};
use common::{mint, u};
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
    start_edge_with(topo, upstream, ca, &[])
}

fn start_edge_with(topo: &Topology, upstream: &str, ca: &Path, extra: &[&str]) -> Relay {
    let ca = ca.display().to_string();
    let mut args = vec![
        "--upstream",
        upstream,
        "--upstream-ca",
        &ca,
        "--upstream-server-name",
        RELAY_SERVER_NAME,
    ];
    args.extend_from_slice(extra);
    Relay::start(topo, &args)
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
    publish_with(topo, at, namespace, &[])
}

/// [`publish`] with `extra` arguments (e.g. `--auth-token`).
fn publish_with(
    topo: &Topology,
    at: (&str, &Path, &str),
    namespace: &str,
    extra: &[&str],
) -> Value {
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
        ]
        .iter()
        .chain(extra)
        .copied()
        .collect::<Vec<_>>(),
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
    assert_eq!(
        publisher["ok"], true,
        "publisher: {publisher}\nsubscriber: {sub}"
    );
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
    let edge = start_edge_with(
        &topo,
        &format!("moqt://{ORIGIN}:{PORT}"),
        &origin_id.0,
        &["--stats-interval", "1"],
    );
    let _logs = LogsOnPanic(vec![origin.log_path(), edge.log_path()]);
    assert_eq!(edge.ready["backend"], "xdp", "{}", edge.ready);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the edge's link to the origin did not come up"
    );
    let stats = edge.fresh_stats(Duration::from_secs(5)).expect("stats");
    assert_eq!(
        stats["workers"][0]["state"]["upstream_links_up"], 1,
        "{stats}"
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

/// (1b) An edge with two queues (native XDP on a two-queue veth): each
/// worker keeps its own link, the origin's answers reach whichever queue
/// RSS picks and are handed to the link's worker; still lossless.
#[test]
fn a_two_queue_edge_keeps_a_link_per_worker() {
    let topo = Topology::with_queues("frtche", 3, 2);
    let origin_id = identity(&topo, "origin");
    let origin = start_origin(&topo, &origin_id, &[]);
    let edge = start_edge_with(
        &topo,
        &format!("moqt://{ORIGIN}:{PORT}"),
        &origin_id.0,
        &["--xdp-mode", "drv"],
    );
    let _logs = LogsOnPanic(vec![origin.log_path(), edge.log_path()]);
    assert_eq!(
        edge.ready["queues"].as_array().map(Vec::len),
        Some(2),
        "{}",
        edge.ready
    );
    assert!(
        wait_for_log(&edge, "upstream link up", 2, Duration::from_secs(10)),
        "not every worker's link came up"
    );
    let at = (origin_addr(), origin_id.0.clone());
    let at = (at.0.as_str(), at.1.as_path(), RELAY_SERVER_NAME);
    let (sub, publisher) = relay_through(&topo, at, "chain/queues", true);
    assert_lossless(&sub, &publisher);
    let edge_report = edge.stop();
    let origin_report = origin.stop();
    // Two links and the publisher.
    assert_eq!(
        total(&origin_report, "connections_accepted"),
        3,
        "origin: {origin_report}"
    );
    // Both links leave from the same address and port to the same origin,
    // so RSS puts all the origin's answers on one queue: the other
    // worker's link lives on hand-offs.
    let handed = total(&edge_report, "handed_off_in");
    eprintln!("two-queue edge: {handed} datagrams handed between workers");
    assert!(handed > 0, "edge: {edge_report}");
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

    // A subscription through the link while the origin goes: it ends
    // with PUBLISH_DONE (the origin's GOING_AWAY, relayed), long before
    // the subscriber's own 20 s.
    let (during, stopped_at) = thread::scope(|s| {
        let publisher = s.spawn(|| {
            interop_at(
                &topo,
                1,
                at,
                "pub",
                &[
                    "--namespace",
                    "chain/during",
                    "--track",
                    "video",
                    "--groups",
                    "0",
                    "--duration-ms",
                    "20000",
                    "--rate-objects-per-s",
                    "50",
                ],
                Duration::from_secs(30),
            )
        });
        let sub = s.spawn(|| {
            let server = format!("{RELAY_V4}:{PORT}");
            interop_at(
                &topo,
                2,
                (&server, &topo.cert(), "localhost"),
                "sub",
                &[
                    "--namespace",
                    "chain/during",
                    "--track",
                    "video",
                    "--rendezvous-ms",
                    "10000",
                    "--duration-ms",
                    "20000",
                ],
                Duration::from_secs(30),
            )
        });
        thread::sleep(Duration::from_secs(3));
        let stopped_at = Instant::now();
        drop(origin.stop());
        let during = sub.join().unwrap();
        drop(publisher.join().unwrap());
        (during, stopped_at.elapsed())
    });
    let t = &during["tracks"]["video"];
    eprintln!("subscription through the restart ended with {}", t["end"]);
    assert!(
        u(&t["objects"]) > 0,
        "nothing arrived before the restart: {during}"
    );
    assert_eq!(t["end"]["publish_done"], true, "no PUBLISH_DONE: {during}");
    assert!(
        stopped_at < Duration::from_secs(10),
        "the subscription outlived its origin by {stopped_at:?}: {during}"
    );

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

/// Where ci/bootstrap installs moq-relay.
const MOQ_RELAY: &str = "/opt/moq-relay-0.17.10/bin/moq-relay";

/// Waits (bounded) until UDP `port` is bound in namespace `ns`.
fn wait_for_udp_port(ns: &str, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hlun"])
            .output()
            .expect("running ss");
        if String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} ")) {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

/// (3) A fastrelay edge in front of another implementation's relay:
/// moq-relay 0.17.10 (draft-18 only) as the origin, the publisher at it,
/// the subscriber at the edge; every object arrives.
#[test]
fn fastrelay_edge_in_front_of_moq_relay() {
    assert!(
        Path::new(MOQ_RELAY).exists(),
        "{MOQ_RELAY} is missing: ci/bootstrap installs it"
    );
    let topo = Topology::new("frtchc", 3);
    // moq-relay's certificate watcher reloads when its directory changes:
    // its certificate gets a directory of its own, its log goes elsewhere.
    let cert_dir = topo.dir.path().join("moq-relay-tls");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let (cert, key) = (cert_dir.join("cert.pem"), cert_dir.join("key.pem"));
    write_identity(&cert, &key).unwrap();
    let log = topo.dir.path().join("moq-relay.log");
    let args: Vec<String> = [
        "--listen",
        &format!("[::]:{PORT}"),
        "--listen-tls-cert",
        &cert.display().to_string(),
        "--listen-tls-key",
        &key.display().to_string(),
        "--listen-version",
        "moq-transport-18",
        "--auth-public",
        "**",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut origin = NsProcess::spawn(
        "moq-relay",
        &topo.client_ns(3),
        Path::new(MOQ_RELAY),
        &args,
        log.clone(),
        &[],
        None,
    )
    .expect("starting moq-relay");
    let _logs = LogsOnPanic(vec![log.clone()]);
    assert!(
        wait_for_udp_port(&topo.client_ns(3), PORT, Duration::from_secs(10)),
        "moq-relay did not bind its port"
    );
    let edge = start_edge(&topo, &format!("moqt://{ORIGIN}:{PORT}"), &cert);
    let _edge_logs = LogsOnPanic(vec![edge.log_path()]);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the edge's link to moq-relay did not come up"
    );
    let at = (origin_addr(), cert.clone());
    let at = (at.0.as_str(), at.1.as_path(), RELAY_SERVER_NAME);
    let (sub, publisher) = relay_through(&topo, at, "chain/moqrelay", false);
    assert_lossless(&sub, &publisher);
    // Subscriber first: moq-relay 0.17.10 answers a SUBSCRIBE for a track
    // it has no publisher for with REQUEST_ERROR (DOES_NOT_EXIST, "Track
    // not found") at once, RENDEZVOUS_TIMEOUT or not; the edge asks again
    // within its subscriber's rendezvous until the publisher is there.
    let (sub, publisher) = relay_through(&topo, at, "chain/moqrelay-late", true);
    assert_lossless(&sub, &publisher);
    assert!(origin.is_running(), "moq-relay exited");
    drop(edge.stop());
}

/// Sum of a worker counter over a relay's final report.
fn total(report: &Value, counter: &str) -> u64 {
    report["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers: {report}"))
        .iter()
        .map(|w| u(&w[counter]))
        .sum()
}

/// (4) Two relays that are each other's upstream: a SUBSCRIBE for a track
/// nobody publishes crosses the pair once and is refused, within its
/// rendezvous (TIMEOUT) or at once without one (DOES_NOT_EXIST), with a
/// handful of packets instead of a storm; a track published at one of
/// them is still served at the other.
#[test]
fn mutual_upstreams_do_not_storm() {
    let topo = Topology::new("frtchd", 3);
    let (a_id, b_id) = (identity(&topo, "a"), identity(&topo, "b"));
    let start = |ns: &str, (cert, key): &(PathBuf, PathBuf), peer: &str, peer_ca: &Path| {
        let (c, k, ca) = (
            cert.display().to_string(),
            key.display().to_string(),
            peer_ca.display().to_string(),
        );
        let upstream = format!("moqt://{peer}:{PORT}");
        Relay::start_in(
            &topo,
            ns,
            &[
                "--cert",
                &c,
                "--key",
                &k,
                "--upstream",
                &upstream,
                "--upstream-ca",
                &ca,
                "--upstream-server-name",
                RELAY_SERVER_NAME,
                "--stats-interval",
                "1",
            ],
        )
    };
    let a = start(&topo.relay_ns(), &a_id, ORIGIN, &b_id.0);
    let b = start(&topo.client_ns(3), &b_id, RELAY_V4, &a_id.0);
    let _logs = LogsOnPanic(vec![a.log_path(), b.log_path()]);
    for r in [&a, &b] {
        assert!(
            wait_for_log(r, "upstream link up", 1, Duration::from_secs(10)),
            "a link did not come up"
        );
    }
    let a_addr = format!("{RELAY_V4}:{PORT}");
    let at_a = (a_addr.as_str(), a_id.0.as_path(), RELAY_SERVER_NAME);
    let subscribe_nothing = |rendezvous: Option<&str>| {
        let mut args = vec!["--namespace", "nobody/here", "--track", "t"];
        if let Some(ms) = rendezvous {
            args.extend_from_slice(&["--rendezvous-ms", ms]);
        }
        args.extend_from_slice(&["--timeout-ms", "15000"]);
        let started = Instant::now();
        let v = interop_at(&topo, 2, at_a, "sub", &args, Duration::from_secs(25));
        (v, started.elapsed())
    };

    let received_now = || {
        [&a, &b]
            .iter()
            .map(|r| {
                total(
                    &r.fresh_stats(Duration::from_secs(5)).expect("stats"),
                    "rx_packets",
                )
            })
            .sum::<u64>()
    };
    let before = received_now();
    let (waited, elapsed) = subscribe_nothing(Some("2000"));
    let err = &waited["tracks"]["t"]["subscribe_error"];
    assert_eq!(err["code"], 0x2, "expected TIMEOUT: {waited}");
    assert!(
        elapsed >= Duration::from_millis(1900) && elapsed < Duration::from_secs(8),
        "refused after {elapsed:?}, not at the end of its 2 s rendezvous: {waited}"
    );
    let (at_once, elapsed) = subscribe_nothing(None);
    let err = &at_once["tracks"]["t"]["subscribe_error"];
    assert_eq!(err["code"], 0x10, "expected DOES_NOT_EXIST: {at_once}");
    assert!(
        elapsed < Duration::from_secs(3),
        "refused after {elapsed:?}"
    );
    // Two short subscriber sessions, each request crossing the link once,
    // and the links' keep-alives: a few dozen packets. A SUBSCRIBE
    // bouncing between the relays would cost thousands.
    let refusals = received_now() - before;
    eprintln!(
        "mutual upstreams: {refusals} packets received by both relays for the refused requests"
    );
    assert!(
        refusals < 300,
        "{refusals} packets for two refused requests"
    );

    // A publisher at B is served to a subscriber at A through A's link
    // (B serves the link from its local publisher).
    let b_addr = origin_addr();
    let at_b = (b_addr.as_str(), b_id.0.as_path(), RELAY_SERVER_NAME);
    let (sub, publisher) = thread::scope(|s| {
        let publisher = s.spawn(|| publish(&topo, at_b, "mutual/cam"));
        thread::sleep(Duration::from_secs(1));
        let o = OBJECTS_PER_GROUP.to_string();
        let n = (GROUPS * OBJECTS_PER_GROUP).to_string();
        let sub = interop_at(
            &topo,
            2,
            at_a,
            "sub",
            &[
                "--namespace",
                "mutual/cam",
                "--track",
                "video",
                "--objects-per-group",
                &o,
                "--expect-objects",
                &n,
                "--timeout-ms",
                "30000",
            ],
            Duration::from_secs(40),
        );
        (sub, publisher.join().unwrap())
    });
    assert_lossless(&sub, &publisher);

    drop((a.stop(), b.stop()));
}

/// (6) An origin that requires authorization (`--auth-key`): an edge with
/// `--upstream-token-file` presents that token in its links' SETUP and
/// relays every object; an edge without one has its subscription refused
/// by the origin.
#[test]
fn an_edge_presents_its_token_to_an_origin_that_requires_one() {
    let topo = Topology::new("frtchf", 3);
    let origin_id = identity(&topo, "origin");
    let secret = topo.dir.path().join("auth-secret");
    std::fs::write(&secret, "the origin's HMAC secret for the chain test\n").unwrap();
    let secret_arg = secret.display().to_string();
    let origin = start_origin(&topo, &origin_id, &["--auth-key", &secret_arg]);
    let token_file = topo.dir.path().join("edge.jwt");
    std::fs::write(
        &token_file,
        mint(&secret, &["--sub", "chain", "--ttl", "10m"]),
    )
    .unwrap();
    let publisher_token = mint(&secret, &["--pub", "chain", "--ttl", "10m"]);
    let at = (origin_addr(), origin_id.0.clone());
    let at = (at.0.as_str(), at.1.as_path(), RELAY_SERVER_NAME);
    let url = format!("moqt://{ORIGIN}:{PORT}");

    let token_arg = token_file.display().to_string();
    let edge = start_edge_with(
        &topo,
        &url,
        &origin_id.0,
        &["--upstream-token-file", &token_arg],
    );
    let _logs = LogsOnPanic(vec![origin.log_path(), edge.log_path()]);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the edge's link to the origin did not come up"
    );
    let (sub, publisher) = thread::scope(|s| {
        let publisher =
            s.spawn(|| publish_with(&topo, at, "chain/auth", &["--auth-token", &publisher_token]));
        thread::sleep(Duration::from_secs(1));
        let sub = subscribe(&topo, "chain/auth");
        (sub, publisher.join().unwrap())
    });
    assert_lossless(&sub, &publisher);
    edge.stop();

    // No token: the origin refuses what the edge asks for.
    let edge = start_edge(&topo, &url, &origin_id.0);
    assert!(
        wait_for_log(&edge, "upstream link up", 1, Duration::from_secs(10)),
        "the second edge's link did not come up"
    );
    // Nothing needs publishing: the origin refuses the request itself.
    let started = Instant::now();
    let sub = subscribe(&topo, "chain/auth");
    assert_eq!(
        sub["ok"], false,
        "an edge without a token got the track: {sub}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the refusal took {:?}: {sub}",
        started.elapsed()
    );
    edge.stop();
    let report = origin.stop();
    // The edge's one SUBSCRIBE without a token; the two with one (the
    // first edge's and the publisher's PUBLISH_NAMESPACE) passed.
    assert_eq!(u(&report["auth"]["requests_refused"]), 1, "{report}");
    assert_eq!(u(&report["auth"]["requests_authorized"]), 2, "{report}");
}
