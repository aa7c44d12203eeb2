//! A second independent WebTransport client: moq-dev's `clock` (the
//! example of moq-tokio 0.19.31 on moq-net 0.3.18, its own WebTransport
//! stack, web-transport-moq), dialing `https://` with only `moqt-18` in
//! `wt-available-protocols` (`--connect-version moq-transport-18`), against
//! the relay in XDP mode (generic) in namespaces. The other side of each
//! track is `moqt-interop` (Cloudflare's moq-transport) over WebTransport
//! and over raw QUIC. ci/bootstrap installs the clock.
//!
//! moq-net's subscriber keeps a group only from its first object on (it
//! drops a group it joined in the middle), and the clock publishes one
//! group a minute, so the clock is the publisher of one test and the
//! subscriber of the other, never both.
//!
//! Run as root.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

mod common;

use bench::harness::*;
use common::{interop_via, u, RelayLogOnPanic, Via};
use serde_json::Value;

/// Where ci/bootstrap installs moq-dev's clock.
const CLOCK: &str = "/opt/moq-clock-0.19.31/bin/clock";

fn clock_bin() -> PathBuf {
    assert!(
        Path::new(CLOCK).exists(),
        "{CLOCK} is missing: ci/bootstrap installs it"
    );
    PathBuf::from(CLOCK)
}

/// Runs the clock (`publish` or `subscribe`) in client `i` for `secs`
/// (it runs until killed); (stdout, stderr).
fn clock(
    topo: &Topology,
    i: usize,
    broadcast: &str,
    track: &str,
    role: &str,
    secs: u64,
) -> (String, String) {
    let url = format!("https://{RELAY_V4}:{PORT}/");
    let cert = topo.cert().display().to_string();
    let args = [
        "--connect",
        &url,
        // Offer draft-18 only: `wt-available-protocols: "moqt-18"`.
        "--connect-version",
        "moq-transport-18",
        "--connect-tls-root",
        &cert,
        "--connect-tls-host-name",
        "localhost",
        // One session, no redial and no WebSocket fallback: a failure shows.
        "--connect-once",
        "--connect-websocket-enabled=false",
        "--log-level",
        "info",
        "--broadcast",
        broadcast,
        "--track",
        track,
        role,
    ];
    let (_killed, out, err) = topo.exec(
        &topo.client_ns(i),
        &clock_bin(),
        &args,
        Duration::from_secs(secs),
    );
    (out, err)
}

/// The clock's log says it connected with draft-18.
fn assert_connected_with_draft_18(role: &str, log: &str) {
    assert!(
        log.lines()
            .any(|l| l.contains("connected") && l.contains("moq-transport-18")),
        "the clock ({role}) did not connect with moq-transport-18; its log:\n{log}"
    );
}

/// `moqt-interop CMD` in client `i`, over WebTransport or raw QUIC; its
/// JSON line.
fn interop(topo: &Topology, i: usize, via: Via, cmd: &str, args: &[&str]) -> Value {
    interop_via(topo, i, via, cmd, args, Duration::from_secs(30))
}

/// Waits, if needed, until the next `secs` of wall-clock time hold no
/// minute boundary, so that a test stays inside one of the clock's groups
/// (a minute). The clock ends a group only after it has begun the next;
/// crossing that boundary is what
/// `group_ending_after_the_next_one_began_is_not_reset` tests.
fn clear_of_minute_boundary(secs: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into_minute = now.as_secs() % 60;
    if into_minute + secs >= 59 {
        thread::sleep(Duration::from_secs(61 - into_minute));
    }
}

/// The clock publishes over WebTransport; a WebTransport and a raw-QUIC
/// subscriber (waiting at the relay first) get every object from where
/// the relay joined the clock's group on: no gap, no duplicate, in order,
/// each a clock text (`YYYY-MM-DD HH:MM:` at object 0, then the seconds,
/// rising with the object ID).
#[test]
fn moqdev_clock_publisher_over_webtransport_reaches_both_subscribers() {
    clear_of_minute_boundary(14);
    let topo = Topology::new("frtmdp", 3);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let _log = RelayLogOnPanic(&relay);
    let sub_args = [
        "--namespace",
        "clock",
        "--track",
        "seconds",
        "--rendezvous-ms",
        "10000",
        "--duration-ms",
        "9000",
        "--foreign-payloads",
        "--timeout-ms",
        "20000",
    ];
    let (topo, sub_args) = (&topo, &sub_args);
    let (subs, (_out, publisher_log)) = thread::scope(|s| {
        let subs: Vec<_> = [(2, Via::WebTransport), (3, Via::RawQuic)]
            .into_iter()
            .map(|(i, via)| s.spawn(move || (via, interop(topo, i, via, "sub", sub_args))))
            .collect();
        thread::sleep(Duration::from_millis(1500));
        let publisher = clock(topo, 1, "clock", "seconds", "publish", 10);
        let subs: Vec<_> = subs.into_iter().map(|h| h.join().unwrap()).collect();
        (subs, publisher)
    });
    assert_connected_with_draft_18("publish", &publisher_log);
    for (via, sub) in &subs {
        let via = format!("{via:?}");
        let via = via.as_str();
        assert_eq!(sub["ok"], true, "subscriber over {via}: {sub}");
        let t = &sub["tracks"]["seconds"];
        // About one object a second for the ~8 s the publisher is up.
        assert!(u(&t["objects"]) >= 5, "{via}: too few objects: {t}");
        // Still arriving within 1.5 s of the end (no gap before): none
        // lost but the second in flight at the end.
        let last_ms = t["last_object_at_ms"].as_f64().unwrap_or(0.0);
        assert!(last_ms >= 7500.0, "{via}: objects stopped early: {t}");
        for field in [
            "gaps",
            "duplicates",
            "missing_groups",
            "out_of_order",
            "stream_errors",
        ] {
            assert_eq!(u(&t[field]), 0, "{via} {field}: {t}");
        }
        assert_clock_payloads(via, t);
    }
}

/// Object 0 of a group is `YYYY-MM-DD HH:MM:`, the later ones two-digit
/// seconds that rise with the object ID.
fn assert_clock_payloads(via: &str, track: &Value) {
    let examples = track["payload_examples"]
        .as_array()
        .expect("payload_examples");
    assert_eq!(
        examples.len() as u64,
        u(&track["objects"]),
        "{via}: {track}"
    );
    let mut seconds: BTreeMap<u64, Vec<(u64, u64)>> = BTreeMap::new();
    for e in examples {
        let (g, o, text) = (u(&e[0]), u(&e[1]), e[2].as_str().unwrap_or_default());
        if o == 0 {
            let b = text.as_bytes();
            let shape_ok = b.len() == 17
                && b.iter().enumerate().all(|(k, c)| match k {
                    4 | 7 => *c == b'-',
                    10 => *c == b' ',
                    13 | 16 => *c == b':',
                    _ => c.is_ascii_digit(),
                });
            assert!(
                shape_ok,
                "{via}: object {g}/0 is {text:?}, not a clock prefix"
            );
        } else {
            let s: u64 = text
                .parse()
                .ok()
                .filter(|s| *s < 60 && text.len() == 2)
                .unwrap_or_else(|| panic!("{via}: object {g}/{o} is {text:?}, not seconds"));
            seconds.entry(g).or_default().push((o, s));
        }
    }
    for (g, mut objs) in seconds {
        objs.sort();
        for w in objs.windows(2) {
            assert!(
                w[1].1 > w[0].1,
                "{via}: group {g}: seconds do not rise: {objs:?}"
            );
        }
    }
}

/// `moqt-interop` publishes text payloads (`<group>/<object>;`) over raw
/// QUIC, then over WebTransport; the clock, subscribed over WebTransport
/// first, prints every object after the first of each group behind that
/// first one: every group, every object, once.
#[test]
fn interop_publishers_reach_the_moqdev_clock_subscriber_over_webtransport() {
    let topo = Topology::new("frtmds", 2);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let _log = RelayLogOnPanic(&relay);
    let (groups, per_group) = (8u64, 10u64);
    for (broadcast, publisher_via) in [("raw", Via::RawQuic), ("web", Via::WebTransport)] {
        let (g, o) = (groups.to_string(), per_group.to_string());
        let ((printed, subscriber_log), publisher) = thread::scope(|s| {
            let sub = s.spawn(|| clock(&topo, 2, broadcast, "video", "subscribe", 10));
            thread::sleep(Duration::from_millis(1500));
            let publisher = interop(
                &topo,
                1,
                publisher_via,
                "pub",
                &[
                    "--namespace",
                    broadcast,
                    "--track",
                    "video",
                    "--groups",
                    &g,
                    "--objects-per-group",
                    &o,
                    "--rate-objects-per-s",
                    "40",
                    "--text-payloads",
                    "--linger-ms",
                    "3000",
                    "--timeout-ms",
                    "15000",
                ],
            );
            (sub.join().unwrap(), publisher)
        });
        assert_connected_with_draft_18("subscribe", &subscriber_log);
        assert_eq!(
            publisher["ok"], true,
            "publisher ({broadcast}): {publisher}"
        );
        let got = parse_printed(broadcast, &printed);
        let want: BTreeMap<u64, BTreeSet<u64>> =
            (0..groups).map(|g| (g, (1..per_group).collect())).collect();
        assert_eq!(
            got, want,
            "{broadcast}: the clock printed:\n{printed}\nits log:\n{subscriber_log}"
        );
    }
}

/// The clock's lines, `<g>/0;<g>/<o>;` each, as group -> objects; panics
/// on a malformed line or an object printed twice.
fn parse_printed(what: &str, printed: &str) -> BTreeMap<u64, BTreeSet<u64>> {
    let mut got: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for line in printed.lines() {
        let parts: Vec<(u64, u64)> = line
            .split_terminator(';')
            .map(|p| {
                let (g, o) = p
                    .split_once('/')
                    .unwrap_or_else(|| panic!("{what}: malformed line {line:?}"));
                let num = |s: &str| -> u64 {
                    s.parse()
                        .unwrap_or_else(|_| panic!("{what}: malformed line {line:?}"))
                };
                (num(g), num(o))
            })
            .collect();
        let [(g0, 0), (g, o)] = parts[..] else {
            panic!("{what}: malformed line {line:?}");
        };
        assert_eq!(g0, g, "{what}: {line:?} mixes groups");
        assert!(
            got.entry(g).or_default().insert(o),
            "{what}: object {g}/{o} printed twice"
        );
    }
    got
}

/// The relay passes on the end of a group that ends after the next one
/// began: the clock finishes a minute's group just after starting the
/// next. The subscriber's acknowledgements take 40 ms, so the group's FIN
/// is unacknowledged across several of the relay's 10 ms shedding checks.
/// `find_late_in_flight` used to reset that stream, all of whose objects
/// were delivered, with DELIVERY_TIMEOUT; it now looks for late data in
/// flight only while the connection has a backlog.
/// Waits for a minute boundary (up to a minute).
#[test]
fn group_ending_after_the_next_one_began_is_not_reset() {
    // Start ~5 s before a minute boundary.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    thread::sleep(Duration::from_secs((55 + 60 - now.as_secs() % 60) % 60));
    let topo = Topology::new("frtmdg", 2);
    let _line = topo.impair(
        2,
        Direction::Up,
        Impairment {
            loss_percent: 0.0,
            delay: Duration::from_millis(40),
            jitter: Duration::ZERO,
            reorder_percent: 0.0,
        },
    );
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let log = RelayLogOnPanic(&relay);
    let sub_args = [
        "--namespace",
        "clock",
        "--track",
        "seconds",
        "--rendezvous-ms",
        "10000",
        "--duration-ms",
        "10000",
        "--foreign-payloads",
        "--timeout-ms",
        "20000",
    ];
    let (topo, sub_args) = (&topo, &sub_args);
    let (sub, (_out, publisher_log)) = thread::scope(|s| {
        let sub = s.spawn(move || interop(topo, 2, Via::RawQuic, "sub", sub_args));
        thread::sleep(Duration::from_millis(1000));
        let publisher = clock(topo, 1, "clock", "seconds", "publish", 11);
        (sub.join().unwrap(), publisher)
    });
    drop(log);
    let report = relay.stop();
    assert_connected_with_draft_18("publish", &publisher_log);
    let t = &sub["tracks"]["seconds"];
    assert!(u(&t["groups_seen"]) >= 2, "no minute boundary crossed: {t}");
    for field in ["gaps", "duplicates", "missing_groups", "stream_errors"] {
        assert_eq!(u(&t[field]), 0, "{field}: {t}");
    }
    let timed_out: u64 = report["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers: {report}"))
        .iter()
        .map(|w| u(&w["shed"]["subgroups_timed_out"]))
        .sum();
    assert_eq!(timed_out, 0, "streams reset as late: {report}");
}
