//! A real browser through the relay: headless Chromium (Debian's
//! `chromium`) in a client namespace loads the relay's web page from the
//! admin listener and speaks MoQT draft-18 over WebTransport (HTTP/3 on the
//! relay's UDP port, XDP mode) with the certificate pinned by the SHA-256
//! hash `--self-signed` prints. Across it, the independent raw-QUIC client
//! `moqt-interop` (Cloudflare's `moq-transport`):
//!
//! - `moqt-interop pub` publishes, the page subscribes and checks every
//!   object (payload layout of interop/src/payload.rs), on subgroup
//!   streams and then as OBJECT_DATAGRAMs;
//! - the page publishes, `moqt-interop sub` subscribes and checks them.
//!
//! Any lost, duplicated or corrupt object fails the test; /metrics must
//! have counted the objects. Chromium is killed (its whole process group)
//! and its profile removed also on failure; every wait is bounded.
//! Makes its own topology (removed on drop). Run as root.

mod common;

use std::{thread, time::Duration};

use bench::harness::{browser, *};
use common::*;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(40);
/// The admin listener on every address of the relay (IPv4 and IPv6).
const ADMIN_PORT: u16 = 9464;
const GROUPS: u64 = 5;
const PER_GROUP: u64 = 10;

/// The page's origin and URL as client `i` (1..) reaches the relay (IPv4
/// for even clients, IPv6 for odd ones, like [`relay_for`]).
fn page(i: usize, query: &str) -> (String, String) {
    let host = if i.is_multiple_of(2) {
        RELAY_V4.to_string()
    } else {
        format!("[{RELAY_V6}]")
    };
    let origin = format!("http://{host}:{ADMIN_PORT}");
    let url = format!("{origin}/?{query}");
    (origin, url)
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn assert_page_clean(what: &str, r: &Value) {
    assert_eq!(r["ok"], true, "{what}: {r}");
    assert_eq!(u(&r["missing"]), 0, "{what}: {r}");
    assert_eq!(u(&r["corrupt"]), 0, "{what}: {r}");
    assert_eq!(u(&r["duplicates"]), 0, "{what}: {r}");
    assert_eq!(u(&r["received"]), GROUPS * PER_GROUP, "{what}: {r}");
}

/// `moqt-interop pub` (raw QUIC, c1) publishes `namespace`/`track` with
/// `publisher_args`; the page in c2 (IPv4) subscribes, waiting for it
/// (RENDEZVOUS_TIMEOUT), and must see every object clean. The page's result.
fn browser_subscribes_to_interop(
    topo: &Topology,
    namespace: &str,
    track: &str,
    what: &str,
    publisher_args: &[&str],
) -> Value {
    let (groups, per_group) = (GROUPS.to_string(), PER_GROUP.to_string());
    let (publisher, seen) = thread::scope(|s| {
        let publisher = s.spawn(|| {
            let mut args = vec![
                "--namespace",
                namespace,
                "--track",
                track,
                "--groups",
                &groups,
                "--objects-per-group",
                &per_group,
                "--linger-ms",
                "1500",
                "--timeout-ms",
                "30000",
            ];
            args.extend_from_slice(publisher_args);
            interop(topo, 1, "pub", &args, TIMEOUT)
        });
        let query = format!(
            "auto=subscribe&ns={namespace}&track={track}&groups={GROUPS}&objects={PER_GROUP}\
             &rendezvous_ms=15000&timeout_ms=30000"
        );
        let (origin, url) = page(2, &query);
        let seen = browser::run_page(&topo.client_ns(2), &origin, &url, TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        eprintln!("{what}: {seen}");
        (publisher.join().expect("publisher thread"), seen)
    });
    assert_page_clean(what, &seen);
    assert_eq!(
        publisher["ok"], true,
        "moqt-interop pub ({what}): {publisher}"
    );
    seen
}

#[test]
fn a_browser_publishes_and_subscribes_over_webtransport() {
    require_root();
    if browser::chromium_bin().is_none() {
        panic!("chromium is not installed: ci/bootstrap installs it (apt-get install chromium)");
    }
    let topo = Topology::new("frweb", 3);
    let admin = format!("[::]:{ADMIN_PORT}");
    let relay = Relay::start(&topo, &["--xdp-mode", "skb", "--admin", &admin]);
    let log = RelayLogOnPanic(&relay);

    // The hash printed at start is the one the page is given.
    let hash = relay.ready["certificate_sha256"]
        .as_str()
        .expect("the ready line carries the certificate hash")
        .to_string();
    let cert = relay
        .next_event(&["certificate"], Duration::from_secs(5))
        .expect("a `certificate` event after `ready`");
    assert_eq!(cert["sha256"], hash.as_str());
    assert!(u(&cert["not_after"]) - u(&cert["not_before"]) <= 14 * 24 * 3600);
    let session = http_get(
        &topo.client_ns(2),
        format!("{RELAY_V4}:{ADMIN_PORT}").parse().unwrap(),
        "GET",
        "/session.json",
        Duration::from_secs(5),
    )
    .expect("GET /session.json");
    assert_eq!(session.status, 200);
    assert_eq!(session.header("content-type"), Some("application/json"));
    assert_eq!(session.header("cache-control"), Some("no-store"));
    let info: Value = serde_json::from_str(&session.body).unwrap();
    assert_eq!(info["certificate_sha256"][0], hash.as_str(), "{info}");
    assert_eq!(info["port"], PORT);

    // 1. moqt-interop publishes (raw QUIC, c1), the browser subscribes (c2,
    //    IPv4). The page waits for the publisher (RENDEZVOUS_TIMEOUT), and
    //    the publisher starts its groups at the relay's SUBSCRIBE.
    browser_subscribes_to_interop(
        &topo,
        "raw/cam",
        "video",
        "browser subscriber",
        &["--object-size", "700", "--rate-objects-per-s", "200"],
    );
    // 1b. The same with every object as an OBJECT_DATAGRAM (small objects,
    //     a modest rate: nothing on these veths drops them).
    let seen = browser_subscribes_to_interop(
        &topo,
        "raw/audio",
        "opus",
        "browser datagram subscriber",
        &[
            "--object-size",
            "300",
            "--rate-objects-per-s",
            "100",
            "--mode",
            "datagram",
        ],
    );
    assert_eq!(
        u(&seen["session"]["datagrams_in"]),
        GROUPS * PER_GROUP,
        "{seen}"
    );

    // 2. The browser publishes (c3, IPv6), moqt-interop subscribes (c2).
    let query = format!(
        "auto=publish&ns=web/cam&track=video&groups={GROUPS}&objects={PER_GROUP}\
         &size=900&rate=200&timeout_ms=30000&linger_ms=2000"
    );
    let (origin, url) = page(3, &query);
    let mut page_publisher =
        browser::Browser::open(&topo.client_ns(3), &origin, &url).expect("starting chromium");
    let expect = (GROUPS * PER_GROUP).to_string();
    let per_group = PER_GROUP.to_string();
    let sub = interop(
        &topo,
        2,
        "sub",
        &[
            "--namespace",
            "web/cam",
            "--track",
            "video",
            "--objects-per-group",
            &per_group,
            "--expect-objects",
            &expect,
            "--rendezvous-ms",
            "15000",
            "--retry-ms",
            "15000",
            "--timeout-ms",
            "30000",
        ],
        TIMEOUT,
    );
    let sent = page_publisher
        .result(TIMEOUT)
        .unwrap_or_else(|e| panic!("browser publisher: {e}"));
    drop(page_publisher);
    eprintln!("browser publisher: {sent}\nmoqt-interop sub: {sub}");
    assert_eq!(sent["ok"], true, "browser publisher: {sent}");
    assert_eq!(u(&sent["sent"]), GROUPS * PER_GROUP, "{sent}");
    assert_eq!(sub["ok"], true, "moqt-interop sub: {sub}");
    let track = &sub["tracks"]["video"];
    assert_eq!(u(&track["objects"]), GROUPS * PER_GROUP, "{sub}");
    for field in [
        "gaps",
        "duplicates",
        "bad_payloads",
        "missing_groups",
        "partial_groups",
    ] {
        assert_eq!(u(&track[field]), 0, "moqt-interop sub {field}: {sub}");
    }

    // The relay counted both directions' objects.
    let metrics = http_get(
        &topo.client_ns(2),
        format!("{RELAY_V4}:{ADMIN_PORT}").parse().unwrap(),
        "GET",
        "/metrics",
        Duration::from_secs(5),
    )
    .expect("GET /metrics");
    let received = metric(&metrics.body, "fastrelay_objects_received_total");
    let sent = metric(&metrics.body, "fastrelay_objects_sent_total");
    assert!(
        received >= 2 * GROUPS * PER_GROUP,
        "objects received {received}"
    );
    assert!(sent >= 2 * GROUPS * PER_GROUP, "objects sent {sent}");
    drop(log);
    relay.stop();
}

/// `--self-signed` renews its certificate before it expires (here after
/// about 17 s of a 30 s validity): a new hash on stdout and in
/// `/session.json`, and a browser that connects afterwards pins the new
/// one and gets its objects.
#[test]
fn a_renewed_self_signed_certificate_is_pinned_by_the_next_page() {
    require_root();
    if browser::chromium_bin().is_none() {
        panic!("chromium is not installed: ci/bootstrap installs it (apt-get install chromium)");
    }
    let topo = Topology::new("frwebr", 2);
    let admin = format!("{RELAY_V4}:{ADMIN_PORT}");
    let relay = Relay::start(
        &topo,
        &[
            "--xdp-mode",
            "skb",
            "--admin",
            &admin,
            "--self-signed-validity-s",
            "30",
        ],
    );
    let log = RelayLogOnPanic(&relay);
    let first = relay
        .next_event(&["certificate"], Duration::from_secs(5))
        .expect("a `certificate` event");
    let renewed = relay
        .next_event(&["certificate_renewed"], Duration::from_secs(30))
        .expect("a `certificate_renewed` event within the validity");
    assert_ne!(renewed["sha256"], first["sha256"]);
    assert!(u(&renewed["not_after"]) > u(&first["not_after"]));
    let session = http_get(
        &topo.client_ns(2),
        admin.parse().unwrap(),
        "GET",
        "/session.json",
        Duration::from_secs(5),
    )
    .expect("GET /session.json");
    let info: Value = serde_json::from_str(&session.body).unwrap();
    assert_eq!(info["certificate_sha256"][0], renewed["sha256"], "{info}");

    // moqt-interop trusts the rewritten --write-cert file; the page pins
    // the hash /session.json gives now.
    let (groups, per_group) = ("2", "10");
    let publisher = thread::scope(|s| {
        let publisher = s.spawn(|| {
            interop(
                &topo,
                1,
                "pub",
                &[
                    "--namespace",
                    "renewed/cam",
                    "--track",
                    "video",
                    "--groups",
                    groups,
                    "--objects-per-group",
                    per_group,
                    "--rate-objects-per-s",
                    "200",
                    "--linger-ms",
                    "1500",
                    "--timeout-ms",
                    "20000",
                ],
                TIMEOUT,
            )
        });
        let (origin, url) = page(
            2,
            "auto=subscribe&ns=renewed/cam&track=video&groups=2&objects=10\
             &rendezvous_ms=10000&timeout_ms=20000",
        );
        let seen = browser::run_page(&topo.client_ns(2), &origin, &url, TIMEOUT)
            .unwrap_or_else(|e| panic!("browser subscriber: {e}"));
        eprintln!("browser subscriber after renewal: {seen}");
        assert_eq!(seen["ok"], true, "{seen}");
        assert_eq!(u(&seen["received"]), 20, "{seen}");
        publisher.join().expect("publisher thread")
    });
    assert_eq!(publisher["ok"], true, "moqt-interop pub: {publisher}");
    drop(log);
    relay.stop();
}
