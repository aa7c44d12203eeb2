//! The relay (XDP backend, generic mode, in namespaces) driven only by an
//! independent MoQT draft-18 implementation: `moqt-interop`, built on
//! Cloudflare's `moq-transport` crate, is every publisher and subscriber
//! here. Nothing of the project's own MoQT code runs on the client side, so
//! what passes here is what a standard client sees on the wire.
//!
//! Each test makes its own topology (removed on drop, also on failure).
//! Run as root.

use std::{
    thread,
    time::{Duration, Instant},
};

mod common;

use bench::{harness::*, pnproof};
use common::*;
use serde_json::Value;

/// Like [`interop`], asserting that the client reported success.
fn run_ok(topo: &Topology, i: usize, cmd: &str, args: &[&str], timeout: Duration) -> Value {
    let json = interop(topo, i, cmd, args, timeout);
    assert_eq!(json["ok"], true, "moqt-interop {cmd} in c{i}: {json}");
    json
}

fn start_relay(topo: &Topology) -> Relay {
    Relay::start(topo, &["--xdp-mode", "skb"])
}

/// Subscribers first (RENDEZVOUS_TIMEOUT), then the publisher: both
/// waiting subscriptions are served from the very first object, in each
/// forwarding mode of the publisher (a subgroup per group, per object,
/// several subgroups per group with object extensions, datagrams). The
/// publisher starts producing when the relay's upstream SUBSCRIBE arrives,
/// so object (0,0) follows SUBSCRIBE_OK at once and must not be lost.
#[test]
fn subscriber_first_then_publisher_in_every_forwarding_mode() {
    let topo = Topology::new("frti", 3);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = start_relay(&topo);
    let modes = [
        ("per-group", "subgroup-per-group", false),
        ("per-object", "subgroup-per-object", false),
        ("three-subgroups", "subgroups-per-group:3", true),
        ("datagrams", "datagram", false),
    ];
    let (groups, per_group) = (8u64, 12u64);
    let total = (groups * per_group).to_string();
    let (g, o) = (groups.to_string(), per_group.to_string());
    for (track, mode, extensions) in modes {
        let (subs, publisher) = thread::scope(|s| {
            let subs: Vec<_> = [2, 3]
                .into_iter()
                .map(|i| {
                    let total = &total;
                    let o = &o;
                    let topo = &topo;
                    s.spawn(move || {
                        interop(
                            topo,
                            i,
                            "sub",
                            &[
                                "--namespace",
                                "live/cam1",
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
            // Both SUBSCRIBEs wait at the relay before the publisher comes.
            thread::sleep(Duration::from_millis(1500));
            let mut args = vec![
                "--namespace",
                "live/cam1",
                "--track",
                track,
                "--mode",
                mode,
                "--groups",
                &g,
                "--objects-per-group",
                &o,
                "--object-size",
                "600",
                "--rate-objects-per-s",
                "400",
                "--linger-ms",
                "1500",
            ];
            if extensions {
                args.push("--extensions");
            }
            let publisher = interop(&topo, 1, "pub", &args, Duration::from_secs(30));
            let subs: Vec<Value> = subs.into_iter().map(|h| h.join().unwrap()).collect();
            (subs, publisher)
        });
        assert_eq!(publisher["ok"], true, "publisher ({mode}): {publisher}");
        // Two subscribers, one upstream subscription (§9.4 aggregation).
        assert_eq!(
            u(&publisher["tracks"][track]["subscriptions"]),
            1,
            "{mode}: {publisher}"
        );
        for (i, sub) in subs.iter().enumerate() {
            assert_eq!(sub["ok"], true, "subscriber {i} ({mode}): {sub}");
            let t = &sub["tracks"][track];
            assert_eq!(u(&t["objects"]), groups * per_group, "{mode}: {t}");
            assert_eq!(
                t["first_location"],
                serde_json::json!([0, 0]),
                "{mode}: {t}"
            );
            assert_clean(mode, t);
            if extensions {
                assert_eq!(u(&t["extensions_ok"]), groups * per_group, "{mode}: {t}");
            }
        }
    }
    let report = relay.stop();
    let worker = &report["workers"][0];
    // Four rounds of one publisher and two subscribers.
    pnproof::assert_holds(capture, &topo.keylog(), PORT, 12, u(&worker["tx_packets"]));
}

/// A SUBSCRIBE whose publisher never comes: TIMEOUT after its rendezvous,
/// DOES_NOT_EXIST at once without one (§10.2.6).
#[test]
fn rendezvous_expires_with_timeout_and_no_rendezvous_is_refused_at_once() {
    let topo = Topology::new("frtj", 2);
    let relay = start_relay(&topo);
    let started = Instant::now();
    let waited = interop(
        &topo,
        2,
        "sub",
        &[
            "--namespace",
            "nobody/here",
            "--track",
            "t",
            "--rendezvous-ms",
            "1500",
            "--timeout-ms",
            "10000",
        ],
        Duration::from_secs(20),
    );
    let elapsed = started.elapsed();
    let err = &waited["tracks"]["t"]["subscribe_error"];
    assert_eq!(err["code"], 0x2, "expected TIMEOUT: {waited}");
    assert!(
        elapsed >= Duration::from_millis(1400),
        "refused after {elapsed:?}, before the rendezvous ended: {waited}"
    );
    let at_once = interop(
        &topo,
        2,
        "sub",
        &["--namespace", "nobody/here", "--track", "t"],
        Duration::from_secs(20),
    );
    let err = &at_once["tracks"]["t"]["subscribe_error"];
    assert_eq!(err["code"], 0x10, "expected DOES_NOT_EXIST: {at_once}");
    drop(relay.stop());
}

/// Issue 10, case 1: a viewer leaves and at once a new session from the
/// same host subscribes the other track, and a third host subscribes the
/// first track soon after, repeated with different pauses. Every session
/// gets objects and the publisher's session lives through all of it.
#[test]
fn leave_rejoin_and_late_join_never_end_the_publisher() {
    let topo = Topology::new("frtk", 3);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = start_relay(&topo);
    let pauses_ms = [0u64, 20, 150, 600];
    let rounds = pauses_ms.len() as u64;
    let publisher = thread::scope(|s| {
        let publisher = s.spawn(|| {
            interop(
                &topo,
                1,
                "pub",
                &[
                    "--namespace",
                    "live/room",
                    "--track",
                    "hi",
                    "--track",
                    "lo",
                    "--start-when",
                    "immediately",
                    "--groups",
                    "0",
                    "--duration-ms",
                    "22000",
                    "--objects-per-group",
                    "20",
                    "--object-size",
                    "500",
                    "--rate-objects-per-s",
                    "200",
                    "--hold-tracks",
                    "--linger-ms",
                    "500",
                    "--timeout-ms",
                    "40000",
                ],
                Duration::from_secs(45),
            )
        });
        thread::sleep(Duration::from_millis(1000));
        let sub = |i: usize, track: &str, ms: &str| {
            interop(
                &topo,
                i,
                "sub",
                &[
                    "--namespace",
                    "live/room",
                    "--track",
                    track,
                    "--duration-ms",
                    ms,
                    "--retry-ms",
                    "2000",
                    "--timeout-ms",
                    "10000",
                ],
                Duration::from_secs(20),
            )
        };
        for pause in pauses_ms {
            let first = sub(2, "hi", "1500");
            assert_eq!(first["ok"], true, "viewer on hi (pause {pause}): {first}");
            assert!(u(&first["tracks"]["hi"]["objects"]) > 100, "{first}");
            // At once: a new session from the same host, other track; and
            // after `pause` a third host on the first track.
            let (rejoin, late) = thread::scope(|s| {
                let rejoin = s.spawn(|| sub(2, "lo", "2000"));
                thread::sleep(Duration::from_millis(pause));
                let late = s.spawn(|| sub(3, "hi", "1500"));
                (rejoin.join().unwrap(), late.join().unwrap())
            });
            for (what, json, track) in [("rejoin", &rejoin, "lo"), ("late", &late, "hi")] {
                assert_eq!(json["ok"], true, "{what} (pause {pause} ms): {json}");
                let t = &json["tracks"][track];
                assert!(
                    u(&t["objects"]) > 100,
                    "{what} (pause {pause} ms) got too little: {t}"
                );
                assert_eq!(u(&t["gaps"]), 0, "{what} (pause {pause} ms): {t}");
                assert_eq!(u(&t["duplicates"]), 0, "{what}: {t}");
                assert_eq!(u(&t["bad_payloads"]), 0, "{what}: {t}");
            }
        }
        publisher.join().unwrap()
    });
    assert_eq!(publisher["ok"], true, "publisher: {publisher}");
    let served: u64 = ["hi", "lo"]
        .iter()
        .map(|t| u(&publisher["tracks"][t]["subscriptions"]))
        .sum();
    assert!(served >= 1, "publisher served no subscription: {publisher}");
    let report = relay.stop();
    let worker = &report["workers"][0];
    // The publisher and three sessions per round.
    let connections = 1 + 3 * rounds as usize;
    pnproof::assert_holds(
        capture,
        &topo.keylog(),
        PORT,
        connections,
        u(&worker["tx_packets"]),
    );
}

/// Issue 10, case 5: a publisher pushes its track with PUBLISH; a
/// subscriber that asks for it afterwards receives it.
#[test]
fn direct_publish_then_subscribe() {
    let topo = Topology::new("frtl", 2);
    let relay = start_relay(&topo);
    let (publisher, sub) = thread::scope(|s| {
        let publisher = s.spawn(|| {
            interop(
                &topo,
                1,
                "pub",
                &[
                    "--namespace",
                    "live/push",
                    "--track",
                    "video",
                    "--direct-publish",
                    "--start-when",
                    "immediately",
                    "--groups",
                    "100",
                    "--objects-per-group",
                    "10",
                    "--rate-objects-per-s",
                    "200",
                    "--linger-ms",
                    "500",
                ],
                Duration::from_secs(30),
            )
        });
        thread::sleep(Duration::from_millis(1500));
        let sub = interop(
            &topo,
            2,
            "sub",
            &[
                "--namespace",
                "live/push",
                "--track",
                "video",
                "--filter",
                "next-group",
                "--expect-objects",
                "300",
                "--objects-per-group",
                "10",
                "--timeout-ms",
                "10000",
            ],
            Duration::from_secs(20),
        );
        (publisher.join().unwrap(), sub)
    });
    assert_eq!(publisher["ok"], true, "publisher: {publisher}");
    assert_eq!(sub["ok"], true, "subscriber: {sub}");
    let t = &sub["tracks"]["video"];
    assert!(u(&t["objects"]) >= 300, "{t}");
    assert_clean("direct PUBLISH", t);
    drop(relay.stop());
}

/// Standalone FETCH of past groups and SUBSCRIBE_NAMESPACE, both answered
/// by the relay to the independent client.
#[test]
fn fetch_of_past_groups_and_namespace_subscription() {
    let topo = Topology::new("frtn", 3);
    let relay = start_relay(&topo);
    thread::scope(|s| {
        let publisher = s.spawn(|| {
            interop(
                &topo,
                1,
                "pub",
                &[
                    "--namespace",
                    "vod/film",
                    "--track",
                    "video",
                    "--start-when",
                    "subscribed",
                    "--groups",
                    "6",
                    "--objects-per-group",
                    "10",
                    "--rate-objects-per-s",
                    "300",
                    "--hold-tracks",
                    "--linger-ms",
                    "4000",
                ],
                Duration::from_secs(30),
            )
        });
        let names = run_ok(
            &topo,
            3,
            "sub-namespace",
            &["--prefix", "vod", "--duration-ms", "5000", "--expect", "1"],
            Duration::from_secs(20),
        );
        assert!(names.to_string().contains("film"), "{names}");
        // A subscriber pulls the track through the relay (and its cache)
        // and stays while the FETCH is served: the relay fetches from the
        // cache of tracks it relays (no upstream FETCH).
        let sub = s.spawn(|| {
            run_ok(
                &topo,
                2,
                "sub",
                &[
                    "--namespace",
                    "vod/film",
                    "--track",
                    "video",
                    "--retry-ms",
                    "3000",
                    "--duration-ms",
                    "3500",
                    "--objects-per-group",
                    "10",
                ],
                Duration::from_secs(20),
            )
        });
        thread::sleep(Duration::from_millis(1500));
        // Groups 1 to 4 whole (End Location {4, 0}: all of group 4,
        // §10.12.1), from the relay's cache.
        let fetched = run_ok(
            &topo,
            2,
            "fetch",
            &[
                "--namespace",
                "vod/film",
                "--track",
                "video",
                "--start",
                "1:0",
                "--end",
                "4:0",
            ],
            Duration::from_secs(20),
        );
        assert_eq!(u(&fetched["objects"]), 40, "{fetched}");
        assert_eq!(u(&fetched["bad_payloads"]), 0, "{fetched}");
        let sub = sub.join().unwrap();
        assert_eq!(u(&sub["tracks"]["video"]["objects"]), 60, "{sub}");
        assert_clean("subscriber", &sub["tracks"]["video"]);
        let publisher = publisher.join().unwrap();
        assert_eq!(publisher["ok"], true, "{publisher}");
    });
    drop(relay.stop());
}

/// Issue 12, "Loss and reordering": netem-like `loss 5% delay 10ms 5ms
/// reorder 25%` (a delay line, see `Topology::impair`: the kernel has no
/// netem) on both directions of the publisher's link and on the downlink
/// of one of two subscribers. In both stream modes (a subgroup per group,
/// a subgroup per object) every object the publisher sent reaches each
/// subscriber exactly once, in order within its subgroup. Each impaired
/// direction must have dropped and reordered packets in each round, so the
/// test cannot pass on a clean network.
#[test]
fn loss_and_reordering_lose_nothing_and_keep_subgroup_order() {
    let topo = Topology::new("frtlr", 3);
    // On the bridge port towards the relay: the relay's packets before any
    // impairment, the publisher's after it.
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = start_relay(&topo);
    let spec = Impairment {
        loss_percent: 5.0,
        delay: Duration::from_millis(10),
        jitter: Duration::from_millis(5),
        reorder_percent: 25.0,
    };
    let log_on_panic = RelayLogOnPanic(&relay);
    let lines = [
        ("publisher uplink", topo.impair(1, Direction::Up, spec)),
        ("publisher downlink", topo.impair(1, Direction::Down, spec)),
        (
            "subscriber c3 downlink",
            topo.impair(3, Direction::Down, spec),
        ),
    ];
    // 800 objects at 200 a second: 4 s a round.
    let (groups, per_group) = (40u64, 20u64);
    let total = groups * per_group;
    let (g, o) = (groups.to_string(), per_group.to_string());
    for (track, mode) in [
        ("per-group", "subgroup-per-group"),
        ("per-object", "subgroup-per-object"),
    ] {
        // A namespace per round: a publisher whose CONNECTION_CLOSE was
        // lost stays the relay's choice for its namespace until the idle
        // timeout (30 s), even after a new publisher announced it, and
        // this test is about delivery, not that.
        let namespace = format!("lossy/{track}");
        let namespace = namespace.as_str();
        let before: Vec<ImpairStats> = lines.iter().map(|(_, l)| l.stats()).collect();
        let started = Instant::now();
        let (subs, publisher) = thread::scope(|s| {
            let subs: Vec<_> = [2, 3]
                .into_iter()
                .map(|i| {
                    let (topo, o) = (&topo, &o);
                    s.spawn(move || {
                        // No --expect-objects: the subscriber stays until
                        // the publisher's PUBLISH_DONE and its streams are
                        // through, so late duplicates count too.
                        interop(
                            topo,
                            i,
                            "sub",
                            &[
                                "--namespace",
                                namespace,
                                "--track",
                                track,
                                "--rendezvous-ms",
                                "15000",
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
            // Both SUBSCRIBEs wait at the relay before the publisher comes.
            thread::sleep(Duration::from_millis(1500));
            let publisher = interop(
                &topo,
                1,
                "pub",
                &[
                    "--namespace",
                    namespace,
                    "--track",
                    track,
                    "--mode",
                    mode,
                    "--groups",
                    &g,
                    "--objects-per-group",
                    &o,
                    "--object-size",
                    "600",
                    "--rate-objects-per-s",
                    "200",
                    "--linger-ms",
                    "2000",
                    "--timeout-ms",
                    "20000",
                ],
                Duration::from_secs(30),
            );
            let subs: Vec<Value> = subs.into_iter().map(|h| h.join().unwrap()).collect();
            (subs, publisher)
        });
        let impaired: Vec<ImpairStats> = lines
            .iter()
            .zip(before)
            .map(|((_, l), b)| l.stats() - b)
            .collect();
        let sent = u(&publisher["tracks"][track]["objects"]);
        eprintln!(
            "{mode}: publisher sent {sent} objects in {:?}; subscribers received {} (c2, clean) and {} (c3, impaired) in {} and {} streams; stop reasons {} and {}",
            started.elapsed(),
            subs[0]["tracks"][track]["objects"],
            subs[1]["tracks"][track]["objects"],
            subs[0]["tracks"][track]["subgroup_streams"],
            subs[1]["tracks"][track]["subgroup_streams"],
            subs[0]["stop_reason"],
            subs[1]["stop_reason"],
        );
        for ((what, _), d) in lines.iter().zip(&impaired) {
            eprintln!(
                "{mode}: {what}: {} packets, {} dropped, {} delayed, {} sent at once, {} reordered, {} overflow, {} errors",
                d.packets, d.dropped, d.delayed, d.immediate, d.reordered, d.overflow, d.errors
            );
        }
        assert_eq!(publisher["ok"], true, "publisher ({mode}): {publisher}");
        assert_eq!(sent, total, "publisher ({mode}): {publisher}");
        for (sub, who) in subs.iter().zip(["c2 (clean)", "c3 (impaired)"]) {
            let t = &sub["tracks"][track];
            assert_eq!(sub["ok"], true, "subscriber {who} ({mode}): {sub}");
            assert_eq!(
                u(&t["objects"]),
                sent,
                "subscriber {who} ({mode}) missed objects: {t}"
            );
            assert_eq!(u(&t["stream_objects"]), sent, "{who} ({mode}): {t}");
            assert_eq!(
                t["first_location"],
                serde_json::json!([0, 0]),
                "{who} ({mode}): {t}"
            );
            assert_clean(&format!("{who} ({mode})"), t);
            assert_eq!(u(&t["out_of_order"]), 0, "{who} ({mode}): {t}");
        }
        // The network really was lossy and reordering, each way, each round.
        for ((what, _), d) in lines.iter().zip(&impaired) {
            assert!(d.dropped > 0, "{mode}: {what} dropped nothing: {d:?}");
            assert!(d.reordered > 0, "{mode}: {what} reordered nothing: {d:?}");
            assert_eq!(d.overflow + d.errors, 0, "{mode}: {what}: {d:?}");
        }
    }
    drop(log_on_panic);
    let report = relay.stop();
    let worker = &report["workers"][0];
    eprintln!("relay: {worker}");
    // The packet-number proof: retransmissions under loss take new packet
    // numbers, and no transport error, over two rounds of a publisher and
    // two subscribers. Not `assert_holds`, whose connection count is exact:
    // tshark may put client packets it cannot place in one more bucket.
    // Seen: one short-header publisher packet with an unknown Destination
    // Connection ID, just after a relay packet with a retired Connection ID
    // was overtaken by the relay's RETIRE_CONNECTION_ID (the relay retires
    // the client's first IDs at once): most likely quinn's stateless reset.
    let (pcap, capture_dropped) = capture.stop().expect("stopping the capture");
    let proof = pnproof::verify(&pcap, &topo.keylog(), PORT).expect("decoding the capture");
    eprintln!("packet-number proof: {proof:?}");
    assert!(proof.holds(), "packet-number proof failed: {proof:?}");
    assert!(
        (6..=7).contains(&proof.connections),
        "connections in the capture: {proof:?}"
    );
    assert!(
        proof.relay_datagrams + capture_dropped >= u(&worker["tx_packets"]),
        "the capture misses relay datagrams: {proof:?}, capture dropped {capture_dropped}, relay: {worker}"
    );
}

/// Issue 10, case 3: many independent subscriber sessions on one fast
/// track, all waiting before the publisher starts, each must receive every
/// object (`sessions` subscribers, `groups` × 100 objects at `rate`).
fn many_subscribers_lose_nothing(prefix: &str, sessions: usize, rate: u64, groups: u64) {
    let topo = Topology::new(prefix, 4);
    let relay = start_relay(&topo);
    let per_group = 100u64;
    let total = groups * per_group;
    let (expect, g, r) = (total.to_string(), groups.to_string(), rate.to_string());
    let started = Instant::now();
    let (subs, publisher) = thread::scope(|s| {
        let subs: Vec<_> = (0..sessions)
            .map(|k| {
                let (topo, expect) = (&topo, &expect);
                s.spawn(move || {
                    interop(
                        topo,
                        2 + k % 3,
                        "sub",
                        &[
                            "--namespace",
                            "load/one",
                            "--track",
                            "fast",
                            "--rendezvous-ms",
                            "25000",
                            "--expect-objects",
                            expect,
                            "--objects-per-group",
                            "100",
                            "--timeout-ms",
                            "60000",
                        ],
                        Duration::from_secs(90),
                    )
                })
            })
            .collect();
        // Every SUBSCRIBE waits at the relay before the publisher comes.
        thread::sleep(Duration::from_millis(1500 + 100 * sessions as u64));
        let publisher = interop(
            &topo,
            1,
            "pub",
            &[
                "--namespace",
                "load/one",
                "--track",
                "fast",
                "--groups",
                &g,
                "--objects-per-group",
                "100",
                "--object-size",
                "200",
                "--rate-objects-per-s",
                &r,
                "--linger-ms",
                "3000",
                "--timeout-ms",
                "60000",
            ],
            Duration::from_secs(90),
        );
        let subs: Vec<Value> = subs.into_iter().map(|h| h.join().unwrap()).collect();
        (subs, publisher)
    });
    assert_eq!(publisher["ok"], true, "publisher: {publisher}");
    let mut delivered = 0;
    for (k, sub) in subs.iter().enumerate() {
        let t = &sub["tracks"]["fast"];
        delivered += u(&t["objects"]);
        assert_eq!(sub["ok"], true, "subscriber {k}: {sub}");
        assert_eq!(u(&t["objects"]), total, "subscriber {k}: {t}");
        assert_clean(&format!("subscriber {k}"), t);
    }
    eprintln!(
        "{sessions} independent subscribers at {rate} objects/s: {delivered} of {} objects delivered in {:?}",
        total * sessions as u64,
        started.elapsed()
    );
    drop(relay.stop());
}

#[test]
fn eight_independent_subscribers_at_1000_objects_per_s_lose_nothing() {
    many_subscribers_lose_nothing("frtp", 8, 1000, 30);
}

/// The size issue 10 reported losses at: 20 sessions, 4 000 objects/s,
/// 32 000 objects each. About 20 s of both cores.
#[test]
#[ignore = "load run: cargo test --release -p moqt-interop -- --ignored twenty"]
fn twenty_independent_subscribers_at_4000_objects_per_s_lose_nothing() {
    many_subscribers_lose_nothing("frtu", 20, 4000, 320);
}
