//! Authorization on the wire with independent clients (`moqt-interop`,
//! Cloudflare's `moq-transport`) and the project's `fastrelay-client`: a
//! relay run with `--auth-key`, tokens minted by `fastrelay token`,
//! presented in SETUP and in SUBSCRIBE. Valid
//! tokens let objects through; each refusal is read from the client's own
//! report (REQUEST_ERROR code, or the code the relay closed the session
//! with), and the authorized pair is not disturbed.
//!
//! Makes its own topology (removed on drop, also on failure). Run as root.

mod common;

use std::{thread, time::Duration};

use bench::harness::*;
use common::*;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(30);
/// The relay's admin listener (/metrics), reached from client 3.
const ADMIN: &str = "198.18.0.1:9464";

/// A subscription attempt from client `i` to `honest/cam` `video`.
fn subscribe(topo: &Topology, i: usize, extra: &[&str]) -> Value {
    let mut args = vec![
        "--namespace",
        "honest/cam",
        "--track",
        "video",
        "--objects-per-group",
        "5",
        "--timeout-ms",
        "5000",
    ];
    args.extend_from_slice(extra);
    interop(topo, i, "sub", &args, TIMEOUT)
}

/// The relay's /metrics page, fetched from client 3.
fn scrape(topo: &Topology) -> String {
    let metrics = http_get(
        &topo.client_ns(3),
        ADMIN.parse().unwrap(),
        "GET",
        "/metrics",
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    metrics.body
}

/// `fastrelay_auth_requests_total{result="authorized"}` on /metrics.
fn relay_requests_authorized(topo: &Topology) -> u64 {
    let body = scrape(topo);
    let prefix = "fastrelay_auth_requests_total{result=\"authorized\"} ";
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in /metrics:\n{body}"))
}

/// The REQUEST_ERROR code of a refused SUBSCRIBE in a `sub` report.
fn refusal_code(report: &Value) -> Option<u64> {
    report["tracks"]["video"]["subscribe_error"]["code"].as_u64()
}

#[test]
fn tokens_authorize_independent_clients_and_refusals_carry_the_draft_codes() {
    require_root();
    let topo = Topology::new("frau", 3);
    let secret = topo.dir.path().join("auth-secret");
    std::fs::write(&secret, "an HMAC secret for the auth test, long enough\n").unwrap();
    let other = topo.dir.path().join("other-secret");
    std::fs::write(&other, "not the relay's secret, but just as long as it\n").unwrap();
    let relay = Relay::start(
        &topo,
        &[
            "--xdp-mode",
            "skb",
            "--auth-key",
            &secret.display().to_string(),
            // So that a token with --ttl 0 is expired on arrival.
            "--auth-leeway-secs",
            "0",
            "--admin",
            ADMIN,
        ],
    );
    let log_on_panic = RelayLogOnPanic(&relay);

    let publish = mint(&secret, &["--pub", "honest/cam", "--ttl", "10m"]);
    let sub = mint(&secret, &["--sub", "honest", "--ttl", "10m"]);

    // The authorized publisher and subscribers: objects flow.
    let pair = Honest {
        groups: 4,
        per_group: 5,
        object_size: 200,
        objects_per_s: 100,
        timeout: TIMEOUT,
    };
    // Subscriber 2 has its token in SETUP, subscriber 3 in its SUBSCRIBE.
    let (sub_report, by_request, pub_report) = thread::scope(|s| {
        let in_setup = s.spawn(|| {
            subscribe(
                &topo,
                2,
                &["--auth-token", &sub, "--rendezvous-ms", "15000"],
            )
        });
        let in_request = s.spawn(|| {
            subscribe(
                &topo,
                3,
                &["--subscribe-token", &sub, "--rendezvous-ms", "15000"],
            )
        });
        thread::sleep(Duration::from_millis(1500));
        let publisher = interop(
            &topo,
            1,
            "pub",
            &[
                "--auth-token",
                &publish,
                "--namespace",
                "honest/cam",
                "--track",
                "video",
                "--groups",
                "4",
                "--objects-per-group",
                "5",
                "--object-size",
                "200",
                "--rate-objects-per-s",
                "100",
                "--linger-ms",
                "1000",
            ],
            TIMEOUT,
        );
        (
            in_setup.join().unwrap(),
            in_request.join().unwrap(),
            publisher,
        )
    });
    pair.assert_lossless(&sub_report, &pub_report);
    pair.assert_lossless(&by_request, &pub_report);

    // The project's own client (`fastrelay-client --token`, tokens in
    // SETUP) on another namespace: publisher first, the subscriber retries
    // until the namespace is there.
    let own_pub = mint(&secret, &["--pub", "own/cam"]);
    let own_sub = mint(&secret, &["--sub", "own"]);
    let (own_publisher, own_subscriber) = thread::scope(|s| {
        let publisher = s.spawn(|| {
            topo.moq(
                1,
                "moq-pub",
                &relay_for(1),
                "own/cam",
                "video",
                &[
                    "--token",
                    &own_pub,
                    "--groups",
                    "4",
                    "--objects-per-group",
                    "5",
                ],
            )
        });
        thread::sleep(Duration::from_millis(300));
        let subscriber = topo.moq(
            2,
            "moq-sub",
            &relay_for(2),
            "own/cam",
            "video",
            &[
                "--token",
                &own_sub,
                "--expect-objects",
                "20",
                "--retry-ms",
                "10000",
            ],
        );
        (publisher.join().unwrap(), subscriber)
    });
    assert_eq!(own_subscriber["complete"], true, "{own_subscriber}");
    assert_eq!(u(&own_subscriber["objects"]), 20, "{own_subscriber}");
    assert_eq!(u(&own_subscriber["bad_checksums"]), 0, "{own_subscriber}");
    assert!(own_publisher.is_object(), "{own_publisher}");

    // Refusals, each from the client's own report.
    let none = subscribe(&topo, 3, &[]);
    assert_eq!(refusal_code(&none), Some(0x1), "no token: {none}");
    let elsewhere = mint(&secret, &["--sub", "other", "--ttl", "10m"]);
    let outside = subscribe(&topo, 3, &["--subscribe-token", &elsewhere]);
    assert_eq!(
        refusal_code(&outside),
        Some(0x1),
        "outside the grant: {outside}"
    );
    let publish_only = subscribe(&topo, 3, &["--subscribe-token", &publish]);
    assert_eq!(
        refusal_code(&publish_only),
        Some(0x1),
        "a publish grant: {publish_only}"
    );
    let forged = mint(&other, &["--sub", "", "--ttl", "10m"]);
    let wrong_key = subscribe(&topo, 3, &["--subscribe-token", &forged]);
    assert_eq!(
        refusal_code(&wrong_key),
        Some(0x1),
        "wrong key: {wrong_key}"
    );
    let garbage = subscribe(&topo, 3, &["--subscribe-token", "not-a-jwt"]);
    assert_eq!(
        refusal_code(&garbage),
        Some(0x4),
        "MALFORMED_AUTH_TOKEN: {garbage}"
    );
    let expired = mint(&secret, &["--sub", "honest", "--ttl", "0"]);
    let late = subscribe(&topo, 3, &["--subscribe-token", &expired]);
    assert_eq!(refusal_code(&late), Some(0x5), "EXPIRED_AUTH_TOKEN: {late}");

    // An expired token in SETUP: the relay closes that session with
    // EXPIRED_AUTH_TOKEN (0x18).
    let closed = subscribe(&topo, 3, &["--auth-token", &expired]);
    assert_ne!(closed["ok"], true, "{closed}");
    // Where the client notes the close (the QUIC close reason, the
    // session's end, the request's error) depends on timing.
    let close_code = format!(
        "closed by peer: authorization token expired (code {})",
        0x18
    );
    assert!(
        closed.to_string().contains(&close_code),
        "no EXPIRED_AUTH_TOKEN close in {closed}"
    );

    // A publisher outside its grant is refused its PUBLISH_NAMESPACE.
    let stray = interop(
        &topo,
        1,
        "pub",
        &[
            "--auth-token",
            &publish,
            "--namespace",
            "honest/other",
            "--track",
            "video",
            "--groups",
            "1",
            "--objects-per-group",
            "1",
        ],
        TIMEOUT,
    );
    assert_eq!(stray["announce"]["ok"], false, "{stray}");
    assert!(
        stray["announce"].to_string().contains("\"code\":1"),
        "not UNAUTHORIZED: {stray}"
    );

    // The same counts on /metrics.
    let metrics = scrape(&topo);
    for line in [
        "fastrelay_auth_sessions_total{result=\"refused\"} 1",
        "fastrelay_auth_requests_total{result=\"refused\"} 7",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in /metrics:\n{metrics}"
        );
    }

    // Key rotation: the key file is replaced and SIGHUP makes the relay
    // verify with the new key only.
    std::fs::copy(&other, &secret).unwrap();
    let before = relay_requests_authorized(&topo);
    relay.signal(libc::SIGHUP);
    let event = relay
        .next_event(
            &["auth_keys_reloaded", "auth_keys_reload_failed"],
            Duration::from_secs(5),
        )
        .expect("the relay reports the key reload");
    assert_eq!(event["event"], "auth_keys_reloaded", "{event}");
    let stale = subscribe(&topo, 3, &["--subscribe-token", &sub]);
    assert_eq!(
        refusal_code(&stale),
        Some(0x1),
        "a token of the retired key: {stale}"
    );
    // The token of the new key passes authorization (the track itself has
    // no publisher now).
    let rotated = subscribe(&topo, 3, &["--subscribe-token", &forged]);
    assert_eq!(
        relay_requests_authorized(&topo),
        before + 1,
        "the new key's token was not authorized: {rotated}"
    );

    drop(log_on_panic);
    let report = relay.stop();
    let auth = &report["auth"];
    // The pair's sessions, the request-token subscriber, the refused ones.
    assert_eq!(u(&auth["sessions_refused"]), 1, "{auth}");
    assert_eq!(u(&auth["requests_refused"]), 8, "{auth}");
    assert!(u(&auth["requests_authorized"]) >= 4, "{auth}");
}
