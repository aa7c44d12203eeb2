//! Two workers on a veth with two queues (native XDP mode; the bridge-side
//! peer runs an XDP pass program so that the veth spreads flows over both
//! queues — generic mode reports every packet on queue 0). Connections land
//! on both workers; clients that migrate to new ports send datagrams that
//! arrive on the other queue and are handed to the connection's owner; the
//! packet-number proof holds over every connection. Run as root.

use bench::{harness::*, pnproof};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const CLIENTS: usize = 4;
/// Connections per client, one after another (16 in all: the chance that
/// the flow hash puts every one on the same queue is 2^-15).
const CONNECTIONS: usize = 4;
const MIGRATIONS: u64 = 6;

#[test]
fn connections_spread_over_two_queue_workers_and_migrations_reach_their_owner() {
    let topo = Topology::with_queues("frtq", CLIENTS, 2);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = Relay::start(&topo, &["--xdp-mode", "drv"]);
    assert_eq!(
        relay.ready["queues"],
        serde_json::json!([0, 1]),
        "{}",
        relay.ready
    );
    assert_eq!(relay.ready["xdp_mode"], "drv", "{}", relay.ready);

    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=CLIENTS)
            .map(|i| {
                let topo = &topo;
                s.spawn(move || {
                    let mut args = topo.echo_args(&relay_for(i));
                    args.extend(
                        [
                            "--stream-bytes",
                            "262144",
                            "--datagrams",
                            "50",
                            "--migrations",
                            &MIGRATIONS.to_string(),
                        ]
                        .map(String::from),
                    );
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    (0..CONNECTIONS)
                        .map(|_| topo.client(i, &args))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for r in &results {
        assert_eq!(r["stream"]["verified"], true, "{r}");
        assert_eq!(u(&r["datagrams"]["lost"]), 0, "{r}");
        assert_eq!(u(&r["migrations_ok"]), MIGRATIONS, "{r}");
        assert_eq!(r["alive_at_end"], true, "{r}");
    }

    let report = relay.stop();
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{report}");
    let sum = |field: &str| -> u64 { workers.iter().map(|w| u(&w[field])).sum() };
    let total = (CLIENTS * CONNECTIONS) as u64;
    assert_eq!(sum("connections_accepted"), total, "{report}");
    for w in workers {
        assert!(
            u(&w["connections_accepted"]) > 0,
            "every connection landed on one worker: {report}"
        );
        assert!(
            u(&w["rx_packets"]) > 0,
            "a queue received nothing: {report}"
        );
    }
    // Migrated paths arrived on the other queue too, and were handed over.
    assert!(
        sum("handed_off_in") > 0,
        "no datagram needed a hand-off: {report}"
    );
    assert_eq!(sum("handed_off_in"), sum("handed_off_out"), "{report}");
    assert_eq!(sum("handoff_dropped"), 0, "{report}");
    assert_eq!(
        sum("rx_packets"),
        u(&report["xdp"]["redirected"]),
        "{report}"
    );

    pnproof::assert_holds(
        capture,
        &topo.keylog(),
        PORT,
        total as usize,
        sum("tx_packets"),
    );
}

const SUBSCRIBERS_PER_CLIENT: usize = 3;
const GROUPS: u64 = 20;
const PER_GROUP: u64 = 10;

/// One publisher and twelve subscribers on a two-queue relay: whichever
/// worker the publisher lands on, the subscribers the other worker owns get
/// every object through one cross-worker hand-off per object; the chance
/// that all twelve land beside the publisher is 2^-12.
#[test]
fn objects_cross_workers_to_subscribers_on_the_other_queue() {
    let topo = Topology::with_queues("frtr", 1 + CLIENTS, 2);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = Relay::start(&topo, &["--xdp-mode", "drv"]);
    let total = GROUPS * PER_GROUP;
    let (publisher, subscribers) = std::thread::scope(|s| {
        let publisher = s.spawn(|| {
            topo.moq(
                1,
                "moq-pub",
                &relay_for(0),
                "live/cam1",
                "video",
                &[
                    "--groups",
                    &GROUPS.to_string(),
                    "--objects-per-group",
                    &PER_GROUP.to_string(),
                    "--object-size",
                    "1000",
                    "--rate-groups-per-s",
                    "20",
                    "--start-delay-ms",
                    "2000",
                ],
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let subs: Vec<_> = (2..=1 + CLIENTS)
            .flat_map(|i| (0..SUBSCRIBERS_PER_CLIENT).map(move |k| (i, k)))
            .map(|(i, k)| {
                let topo = &topo;
                s.spawn(move || {
                    topo.moq(
                        i,
                        "moq-sub",
                        &relay_for(i + k),
                        "live/cam1",
                        "video",
                        &[
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
        let subs: Vec<Value> = subs.into_iter().map(|h| h.join().unwrap()).collect();
        (publisher.join().unwrap(), subs)
    });
    assert_eq!(u(&publisher["objects_sent"]), total, "{publisher}");
    for sub in &subscribers {
        assert_eq!(u(&sub["objects"]), total, "{sub}");
        for field in ["gaps", "duplicates", "bad_checksums", "out_of_order"] {
            assert_eq!(u(&sub[field]), 0, "{field}: {sub}");
        }
    }

    let report = relay.stop();
    let workers = report["workers"].as_array().unwrap();
    let sum = |field: &str| -> u64 { workers.iter().map(|w| u(&w[field])).sum() };
    let connections = 1 + subscribers.len() as u64;
    assert_eq!(sum("connections_accepted"), connections, "{report}");
    // One hand-off per object to the other worker (it has subscribers), and
    // nothing dropped on the way.
    assert_eq!(sum("cross_worker_objects_out"), total, "{report}");
    assert_eq!(sum("cross_worker_objects_in"), total, "{report}");
    let dropped: u64 = workers
        .iter()
        .flat_map(|w| w["cross_worker_dropped"].as_array().unwrap().iter().map(u))
        .sum();
    assert_eq!(dropped, 0, "{report}");
    assert_eq!(
        sum("rx_packets"),
        u(&report["xdp"]["redirected"]),
        "{report}"
    );
    pnproof::assert_holds(
        capture,
        &topo.keylog(),
        PORT,
        connections as usize,
        sum("tx_packets"),
    );
}
