//! The MoQT relay end to end over XDP (generic mode) in namespaces: one
//! publisher, subscribers on IPv4 and IPv6, every object delivered once, in
//! order, intact, and the packet-number proof on the capture. Run as root.

use std::time::Duration;

use bench::{harness::*, pnproof};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const GROUPS: u64 = 40;
const OBJECTS_PER_GROUP: u64 = 25;

#[test]
fn one_publisher_four_subscribers_over_xdp() {
    let topo = Topology::new("frtm", 5);
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
                    "40",
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
        let subscribers: Vec<Value> = subscribers.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher.join().unwrap(), subscribers)
    });

    assert_eq!(u(&publisher["objects_sent"]), total, "{publisher}");
    assert_eq!(u(&publisher["send_errors"]), 0, "{publisher}");
    for (i, sub) in subscribers.iter().enumerate() {
        assert_eq!(u(&sub["objects"]), total, "subscriber {}: {sub}", i + 2);
        for field in ["gaps", "duplicates", "bad_checksums", "out_of_order"] {
            assert_eq!(u(&sub[field]), 0, "subscriber {} {field}: {sub}", i + 2);
        }
    }

    let report = relay.stop();
    let worker = &report["workers"][0];
    assert_eq!(
        u(&worker["rx_packets"]),
        u(&report["xdp"]["redirected"]),
        "{report}"
    );
    assert_eq!(u(&worker["connections_accepted"]), 5, "{report}");
    let (pcap, capture_dropped) = capture.stop().unwrap();
    let proof = pnproof::verify(&pcap, &topo.keylog(), PORT).unwrap();
    assert!(proof.holds(), "packet-number proof failed: {proof:?}");
    assert_eq!(proof.connections, 5, "{proof:?}");
    assert!(
        proof.relay_datagrams + capture_dropped >= u(&worker["tx_packets"]),
        "{proof:?} capture dropped {capture_dropped} vs {report}"
    );
}
