//! The MoQT relay end to end over XDP (generic mode) in namespaces: one
//! publisher, subscribers on IPv4 and IPv6, every object delivered once, in
//! order, intact; a subscriber that disconnects and comes back from the same
//! address and port; a peer sending a malformed control message, closed
//! alone with PROTOCOL_VIOLATION; and the packet-number proof on the
//! capture. Run as root.

use std::time::Duration;

use bench::{harness::*, pnproof};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const GROUPS: u64 = 40;
const OBJECTS_PER_GROUP: u64 = 25;
const GROUPS_PER_S: &str = "10";

#[test]
fn one_publisher_four_subscribers_reconnect_and_a_bad_peer_over_xdp() {
    let topo = Topology::new("frtm", 8);
    let capture = pnproof::Capture::start(
        &format!("{}br", topo.prefix),
        "relay",
        PORT,
        &topo.dir.path().join("relay.pcap"),
    )
    .unwrap();
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let cert = topo.cert().display().to_string();
    let total = GROUPS * OBJECTS_PER_GROUP;

    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            let (groups, per_group) = (GROUPS.to_string(), OBJECTS_PER_GROUP.to_string());
            topo.client(
                1,
                &[
                    "moq-pub",
                    "--server",
                    &format!("{RELAY_V4}:{PORT}"),
                    "--ca",
                    &cert,
                    "--namespace",
                    "live/cam1",
                    "--track",
                    "video",
                    "--groups",
                    &groups,
                    "--objects-per-group",
                    &per_group,
                    "--object-size",
                    "1000",
                    "--rate-groups-per-s",
                    GROUPS_PER_S,
                    "--start-delay-ms",
                    "1500",
                ],
            )
        });
        // Let the namespace be published first; subscribers retry anyway.
        std::thread::sleep(Duration::from_millis(300));
        let subscribers: Vec<_> = (2..=5)
            .map(|i| {
                let topo = &topo;
                let cert = &cert;
                s.spawn(move || {
                    let server = if i % 2 == 0 {
                        format!("{RELAY_V4}:{PORT}")
                    } else {
                        format!("[{RELAY_V6}]:{PORT}")
                    };
                    topo.client(
                        i,
                        &[
                            "moq-sub",
                            "--server",
                            &server,
                            "--ca",
                            cert,
                            "--namespace",
                            "live/cam1",
                            "--track",
                            "video",
                            "--expect-objects",
                            &total.to_string(),
                            "--timeout-ms",
                            "20000",
                            "--retry-ms",
                            "5000",
                        ],
                    )
                })
            })
            .collect();
        // Client 7 subscribes, leaves, and comes back from the same address
        // and port while the track is live.
        let reconnect = s.spawn(|| {
            let bind = "198.18.0.17:40000";
            let sub = |extra: &[&str]| {
                let mut a = vec![
                    "moq-sub",
                    "--server",
                    &format!("{RELAY_V4}:{PORT}"),
                    "--ca",
                    &cert,
                    "--namespace",
                    "live/cam1",
                    "--track",
                    "video",
                    "--bind",
                    bind,
                    "--expect-objects",
                    "100",
                    "--timeout-ms",
                    "20000",
                    "--retry-ms",
                    "5000",
                ]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
                a.extend(extra.iter().map(|x| x.to_string()));
                topo.client(7, &a.iter().map(String::as_str).collect::<Vec<_>>())
            };
            let first = sub(&[]);
            let second = sub(&["--filter", "next-group"]);
            (first, second)
        });
        // Client 8 joins late and fills in the two groups before the live
        // edge with a Joining FETCH from the relay's cache.
        let joiner = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(3500));
            topo.client(
                8,
                &[
                    "moq-sub",
                    "--server",
                    &format!("[{RELAY_V6}]:{PORT}"),
                    "--ca",
                    &cert,
                    "--namespace",
                    "live/cam1",
                    "--track",
                    "video",
                    "--expect-objects",
                    "50",
                    "--timeout-ms",
                    "20000",
                    "--join-groups",
                    "2",
                ],
            )
        });
        // Client 6 misbehaves while the others receive.
        std::thread::sleep(Duration::from_millis(2500));
        let bad = topo.client(
            6,
            &[
                "moq-bad",
                "--server",
                &format!("[{RELAY_V6}]:{PORT}"),
                "--ca",
                &cert,
            ],
        );
        let subscribers: Vec<Value> = subscribers.into_iter().map(|h| h.join().unwrap()).collect();
        (
            publisher.join().unwrap(),
            (
                subscribers,
                reconnect.join().unwrap(),
                bad,
                joiner.join().unwrap(),
            ),
        )
    });
    let (subscribers, (first, second), bad, joiner) = subscribers;

    assert_eq!(u(&publisher["objects_sent"]), total, "{publisher}");
    assert_eq!(u(&publisher["send_errors"]), 0, "{publisher}");
    for (i, sub) in subscribers.iter().enumerate() {
        assert_eq!(u(&sub["objects"]), total, "subscriber {}: {sub}", i + 2);
        for field in ["gaps", "duplicates", "bad_checksums", "out_of_order"] {
            assert_eq!(u(&sub[field]), 0, "subscriber {} {field}: {sub}", i + 2);
        }
    }

    // The malformed control message closed that session, with the draft's code.
    assert_eq!(bad["closed_by_relay"], true, "{bad}");
    assert_eq!(u(&bad["code"]), 0x3, "PROTOCOL_VIOLATION expected: {bad}");
    // The reconnecting subscriber got data both times, the second from a group start.
    for run in [&first, &second] {
        assert_eq!(u(&run["objects"]), 100, "{run}");
        for field in ["gaps", "duplicates", "bad_checksums", "out_of_order"] {
            assert_eq!(u(&run[field]), 0, "{field}: {run}");
        }
    }
    assert_eq!(
        u(&second["first"][1]),
        0,
        "next-group filter starts at object 0: {second}"
    );
    assert!(
        u(&second["first"][0]) > u(&first["first"][0]),
        "{first} / {second}"
    );

    // The late joiner's FETCH covered the two groups before its join point,
    // from a group start, in order and intact, ending before its live objects.
    let (fetched_first, fetched_last, live_first) = (
        &joiner["fetched_first"],
        &joiner["fetched_last"],
        &joiner["first"],
    );
    assert!(u(&joiner["fetched"]) > 0, "{joiner}");
    assert_eq!(
        u(&fetched_first[1]),
        0,
        "joining FETCH starts at a group start: {joiner}"
    );
    assert_eq!(
        u(&fetched_last[0]) - u(&fetched_first[0]),
        2,
        "two groups back: {joiner}"
    );
    assert_eq!(joiner["fetched_in_order"], true, "{joiner}");
    assert_eq!(u(&joiner["fetch_bad_checksums"]), 0, "{joiner}");
    let loc = |v: &Value| (u(&v[0]), u(&v[1]));
    assert!(
        loc(live_first) > loc(fetched_last),
        "FETCH and SUBSCRIBE overlap: {joiner}"
    );
    assert_eq!(u(&joiner["objects"]), 50, "{joiner}");

    let report = relay.stop();
    let worker = &report["workers"][0];
    assert_eq!(
        u(&worker["rx_packets"]),
        u(&report["xdp"]["redirected"]),
        "{report}"
    );
    // 1 publisher, 4 subscribers, the bad peer, the late joiner, and the
    // reconnecting one twice.
    assert_eq!(u(&worker["connections_accepted"]), 9, "{report}");
    pnproof::assert_holds(capture, &topo.keylog(), PORT, 9, u(&worker["tx_packets"]));
}
