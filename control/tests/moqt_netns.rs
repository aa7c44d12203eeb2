//! The MoQT relay end to end over XDP (generic mode) in namespaces, at the
//! size issue 3 asks for: one publisher of 10 000 objects (a subgroup-stream
//! track and a datagram track), eight subscribers on distinct IPv4 and IPv6
//! addresses: four from the start, two joining late (one from the next group
//! start, one filling in two past groups with a Joining FETCH), one that
//! leaves and comes back from the same address and port, and one that sends
//! a malformed control message and is closed alone with PROTOCOL_VIOLATION.
//! The packet-number proof runs on the capture of the whole run. Run as root.

use std::time::Duration;

use bench::{harness::*, pnproof};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const GROUPS: u64 = 100;
const OBJECTS_PER_GROUP: u64 = 95;
const DATAGRAMS_PER_GROUP: u64 = 5;
const GROUPS_PER_S: &str = "20";
/// What a late or reconnecting subscriber waits for: ten groups.
const PART: u64 = 10 * OBJECTS_PER_GROUP;

/// A moq-sub of "live/cam1" / "video" in client `i`: `expect` stream
/// objects, then `extra` flags.
fn sub(topo: &Topology, i: usize, expect: u64, extra: &[&str]) -> Value {
    let expect = expect.to_string();
    let mut args = vec![
        "--expect-objects",
        &expect,
        "--timeout-ms",
        "25000",
        "--retry-ms",
        "5000",
    ];
    args.extend_from_slice(extra);
    topo.moq(i, "moq-sub", &relay_for(i), "live/cam1", "video", &args)
}

fn assert_clean(what: &str, sub: &Value) {
    for field in ["gaps", "duplicates", "bad_checksums", "out_of_order"] {
        assert_eq!(u(&sub[field]), 0, "{what} {field}: {sub}");
    }
}

#[test]
fn one_publisher_eight_subscribers_late_joins_reconnect_and_a_bad_peer_over_xdp() {
    let topo = Topology::new("frtm", 9);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let stream_objects = GROUPS * OBJECTS_PER_GROUP;
    let datagrams = GROUPS * DATAGRAMS_PER_GROUP;
    assert_eq!(stream_objects + datagrams, 10_000);

    let (publisher, (regular, late, reconnect, bad)) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            topo.moq(
                1,
                "moq-pub",
                &relay_for(0),
                "live/cam1",
                "video",
                &[
                    "--datagram-track",
                    "audio",
                    "--datagrams-per-group",
                    &DATAGRAMS_PER_GROUP.to_string(),
                    "--groups",
                    &GROUPS.to_string(),
                    "--objects-per-group",
                    &OBJECTS_PER_GROUP.to_string(),
                    "--object-size",
                    "1000",
                    "--first-object-size",
                    "8000",
                    "--rate-groups-per-s",
                    GROUPS_PER_S,
                    "--start-delay-ms",
                    "1500",
                ],
            )
        });
        // Let the namespace be published first; subscribers retry anyway.
        std::thread::sleep(Duration::from_millis(300));
        let regular: Vec<_> = (2..=5)
            .map(|i| {
                let topo = &topo;
                s.spawn(move || {
                    let expect = datagrams.to_string();
                    let datagrams = ["--datagram-track", "audio", "--expect-datagrams", &expect];
                    sub(topo, i, stream_objects, &datagrams)
                })
            })
            .collect();
        // Client 8 subscribes, leaves, and comes back from the same address
        // and port while the track is live.
        let reconnect = s.spawn(|| {
            let bind = ["--bind", "198.18.0.18:40000"];
            let first = sub(&topo, 8, PART, &bind);
            let second = sub(
                &topo,
                8,
                PART,
                &[bind[0], bind[1], "--filter", "next-group"],
            );
            (first, second)
        });
        // Client 9 receives a little, then sends a malformed control message.
        let bad = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(2500));
            topo.client(
                9,
                &[
                    "moq-bad",
                    "--server",
                    &relay_for(9),
                    "--ca",
                    &topo.cert().display().to_string(),
                    "--subscribe",
                    "live/cam1/video",
                    "--after-objects",
                    "50",
                ],
            )
        });
        // Clients 6 and 7 join late: 6 from the next group start, 7 with a
        // Joining FETCH of the two groups before its join point.
        let late6 = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(3500));
            sub(&topo, 6, PART, &["--filter", "next-group"])
        });
        let late7 = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(4000));
            sub(&topo, 7, PART, &["--join-groups", "2"])
        });
        let regular: Vec<Value> = regular.into_iter().map(|h| h.join().unwrap()).collect();
        (
            publisher.join().unwrap(),
            (
                regular,
                [late6.join().unwrap(), late7.join().unwrap()],
                reconnect.join().unwrap(),
                bad.join().unwrap(),
            ),
        )
    });

    assert_eq!(u(&publisher["objects_sent"]), stream_objects, "{publisher}");
    assert_eq!(u(&publisher["datagrams_sent"]), datagrams, "{publisher}");
    assert_eq!(u(&publisher["send_errors"]), 0, "{publisher}");
    assert_eq!(u(&publisher["datagram_send_errors"]), 0, "{publisher}");

    // Every stream object exactly once, in order per subgroup, intact; the
    // datagrams intact, never on a stream, never twice (and, on this
    // loss-free link, nearly all of them: datagrams are unreliable).
    for (i, sub) in regular.iter().enumerate() {
        let what = format!("subscriber {}", i + 2);
        assert_eq!(u(&sub["objects"]), stream_objects, "{what}: {sub}");
        assert_clean(&what, sub);
        assert_eq!(u(&sub["first"][0]), 0, "{what} missed the start: {sub}");
        for field in [
            "datagram_duplicates",
            "datagram_bad_checksums",
            "datagram_on_stream",
        ] {
            assert_eq!(u(&sub[field]), 0, "{what} {field}: {sub}");
        }
        assert!(
            u(&sub["datagrams"]) * 100 >= datagrams * 95,
            "{what} lost more than 5 % of the datagrams: {sub}"
        );
    }

    // The malformed control message closed that session, with the draft's code.
    assert_eq!(u(&bad["objects_before"]), 50, "{bad}");
    assert_eq!(bad["closed_by_relay"], true, "{bad}");
    assert_eq!(u(&bad["code"]), 0x3, "PROTOCOL_VIOLATION expected: {bad}");

    // The reconnecting subscriber got data both times, the second from a group start.
    let (first, second) = &reconnect;
    for run in [first, second] {
        assert_eq!(u(&run["objects"]), PART, "{run}");
        assert_clean("reconnecting subscriber", run);
    }
    assert_eq!(
        u(&second["first"][1]),
        0,
        "next-group starts at object 0: {second}"
    );
    assert!(
        u(&second["first"][0]) > u(&first["first"][0]),
        "{first} / {second}"
    );

    // Late joiners: from the requested start, then everything after it.
    let [late6, late7] = &late;
    for (what, sub) in [("late joiner 6", late6), ("late joiner 7", late7)] {
        assert_eq!(u(&sub["objects"]), PART, "{what}: {sub}");
        assert_clean(what, sub);
        assert!(u(&sub["first"][0]) > 0, "{what} did not join late: {sub}");
    }
    assert_eq!(
        u(&late6["first"][1]),
        0,
        "next-group starts at object 0: {late6}"
    );
    // The Joining FETCH covered the two groups before the join point, from
    // a group start, in order and intact, ending before the live objects.
    assert!(u(&late7["fetched"]) > 0, "{late7}");
    assert_eq!(
        u(&late7["fetched_first"][1]),
        0,
        "FETCH from a group start: {late7}"
    );
    assert_eq!(
        u(&late7["fetched_last"][0]) - u(&late7["fetched_first"][0]),
        2,
        "two groups back: {late7}"
    );
    assert_eq!(late7["fetched_in_order"], true, "{late7}");
    assert_eq!(u(&late7["fetch_bad_checksums"]), 0, "{late7}");
    let loc = |v: &Value| (u(&v[0]), u(&v[1]));
    assert!(
        loc(&late7["first"]) > loc(&late7["fetched_last"]),
        "FETCH and SUBSCRIBE overlap: {late7}"
    );

    let report = relay.stop();
    let worker = &report["workers"][0];
    assert_eq!(
        u(&worker["rx_packets"]),
        u(&report["xdp"]["redirected"]),
        "{report}"
    );
    // 1 publisher, 4 + 2 subscribers, the bad peer, and the reconnecting one twice.
    assert_eq!(u(&worker["connections_accepted"]), 10, "{report}");
    pnproof::assert_holds(capture, &topo.keylog(), PORT, 10, u(&worker["tx_packets"]));
}
