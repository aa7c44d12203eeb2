//! The admin listener (`--admin`) of a relay on XDP (generic mode) in
//! namespaces, scraped over TCP from a client namespace (so through the
//! interface the XDP program sits on): `/metrics` before and after one
//! publisher and one subscriber moved a known number of objects, `/health`
//! while serving and while draining, 404 and 405. Run as root.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use bench::harness::*;
use serde_json::Value;

const ADMIN: &str = "198.18.0.1:9464";
/// The scraper's namespace: client 2's.
const SCRAPER: usize = 2;
const GROUPS: u64 = 10;
const PER_GROUP: u64 = 10;
const OBJECTS: u64 = GROUPS * PER_GROUP;
const OBJECT_SIZE: u64 = 1000;

/// Families every scrape must declare, with their type.
const FAMILIES: &[(&str, &str)] = &[
    ("fastrelay_uptime_seconds", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
    ("fastrelay_draining", "gauge"),
    ("fastrelay_worker_up", "gauge"),
    ("fastrelay_connections_accepted_total", "counter"),
    ("fastrelay_connections_refused_total", "counter"),
    ("fastrelay_connections_retried_total", "counter"),
    ("fastrelay_connections_active", "gauge"),
    ("fastrelay_connections_closed_total", "counter"),
    ("fastrelay_moqt_sessions_opened_total", "counter"),
    ("fastrelay_moqt_sessions_active", "gauge"),
    ("fastrelay_tracks", "gauge"),
    ("fastrelay_subscriptions", "gauge"),
    ("fastrelay_objects_received_total", "counter"),
    ("fastrelay_object_bytes_received_total", "counter"),
    ("fastrelay_objects_sent_total", "counter"),
    ("fastrelay_object_bytes_sent_total", "counter"),
    ("fastrelay_subgroups_shed_total", "counter"),
    ("fastrelay_objects_shed_total", "counter"),
    ("fastrelay_cross_worker_objects_total", "counter"),
    ("fastrelay_cross_worker_dropped_total", "counter"),
    ("fastrelay_packets_received_total", "counter"),
    ("fastrelay_packets_sent_total", "counter"),
    ("fastrelay_packets_dropped_total", "counter"),
    ("fastrelay_xsk_ring_events_total", "counter"),
    ("fastrelay_xsk_tx_frames_in_flight", "gauge"),
    ("fastrelay_xdp_packets_total", "counter"),
    ("fastrelay_cache_bytes", "gauge"),
    ("fastrelay_relay_hop_seconds", "histogram"),
];

fn admin() -> SocketAddr {
    ADMIN.parse().unwrap()
}

fn get(topo: &Topology, method: &str, path: &str) -> HttpResponse {
    http_get(
        &topo.client_ns(SCRAPER),
        admin(),
        method,
        path,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One scrape: family types, and samples as (name, labels, value).
struct Scrape {
    types: HashMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("sample line");
                let value = if value == "+Inf" {
                    f64::INFINITY
                } else {
                    value
                        .parse()
                        .unwrap_or_else(|_| panic!("bad value: {line}"))
                };
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.strip_suffix('}').expect("labels close")),
                    None => (series, ""),
                };
                samples.push((name.to_string(), labels.to_string(), value));
            }
        }
        Self { types, samples }
    }

    /// Sum of `name`'s samples whose labels contain `with` (all workers).
    fn sum_with(&self, name: &str, with: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.contains(with))
            .map(|(.., v)| v)
            .sum()
    }

    fn sum(&self, name: &str) -> f64 {
        self.sum_with(name, "")
    }
}

fn metrics(topo: &Topology) -> Scrape {
    let r = get(topo, "GET", "/metrics");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(r.header("connection"), Some("close"));
    let scrape = Scrape::parse(&r.body);
    for (family, kind) in FAMILIES {
        assert_eq!(
            scrape.types.get(*family).map(String::as_str),
            Some(*kind),
            "family {family} missing or mistyped in:\n{}",
            r.body
        );
    }
    scrape
}

/// Scrapes until `done` holds (every 200 ms, at most `within`).
fn scrape_until(topo: &Topology, within: Duration, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + within;
    loop {
        let s = metrics(topo);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// One publisher (client 1) of OBJECTS objects and one subscriber
/// (client 2) that must get them all.
fn publish_and_subscribe(topo: &Topology) {
    let (publisher, subscriber) = std::thread::scope(|s| {
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
                    &OBJECT_SIZE.to_string(),
                    "--rate-groups-per-s",
                    "20",
                    "--start-delay-ms",
                    "300",
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        let subscriber = s.spawn(|| {
            topo.moq(
                2,
                "moq-sub",
                &relay_for(2),
                "live/cam1",
                "video",
                &[
                    "--expect-objects",
                    &OBJECTS.to_string(),
                    "--timeout-ms",
                    "15000",
                    "--retry-ms",
                    "5000",
                ],
            )
        });
        (publisher.join().unwrap(), subscriber.join().unwrap())
    });
    assert_eq!(u(&publisher["objects_sent"]), OBJECTS, "{publisher}");
    assert_eq!(u(&subscriber["objects"]), OBJECTS, "{subscriber}");
}

#[test]
fn admin_listener_serves_metrics_and_health_over_xdp() {
    let topo = Topology::new("frad", 3);
    let relay = Relay::start(
        &topo,
        &["--xdp-mode", "skb", "--admin", ADMIN, "--drain-ms", "3000"],
    );

    let health = get(&topo, "GET", "/health");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert_eq!(get(&topo, "GET", "/nope").status, 404);
    let post = get(&topo, "POST", "/metrics");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));

    let before = metrics(&topo);
    assert_eq!(before.sum("fastrelay_draining"), 0.0);
    assert_eq!(before.sum("fastrelay_worker_up"), 1.0);
    assert_eq!(before.sum("fastrelay_objects_received_total"), 0.0);

    publish_and_subscribe(&topo);

    // The relay publishes its totals every 100 ms, connection closes as
    // they are processed: scrape until both clients' ends are counted.
    let after = scrape_until(&topo, Duration::from_secs(5), |s| {
        s.sum("fastrelay_connections_closed_total")
            - before.sum("fastrelay_connections_closed_total")
            >= 2.0
            && s.sum("fastrelay_objects_sent_total") >= OBJECTS as f64
    });
    let delta = |name: &str| after.sum(name) - before.sum(name);
    let n = OBJECTS as f64;
    let bytes = (OBJECTS * OBJECT_SIZE) as f64;
    eprintln!(
        "deltas: objects in {} out {}, bytes in {} out {}, hop count {}, rx {} tx {}, closed {:?}",
        delta("fastrelay_objects_received_total"),
        delta("fastrelay_objects_sent_total"),
        delta("fastrelay_object_bytes_received_total"),
        delta("fastrelay_object_bytes_sent_total"),
        delta("fastrelay_relay_hop_seconds_count"),
        delta("fastrelay_packets_received_total"),
        delta("fastrelay_packets_sent_total"),
        after
            .samples
            .iter()
            .filter(|(n, ..)| n == "fastrelay_connections_closed_total")
            .collect::<Vec<_>>(),
    );
    assert!(delta("fastrelay_objects_received_total") >= n);
    assert!(delta("fastrelay_objects_sent_total") >= n);
    assert!(delta("fastrelay_object_bytes_received_total") >= bytes);
    assert!(delta("fastrelay_object_bytes_sent_total") >= bytes);
    assert!(delta("fastrelay_connections_accepted_total") >= 2.0);
    assert!(delta("fastrelay_moqt_sessions_opened_total") >= 2.0);
    assert!(delta("fastrelay_connections_closed_total") >= 2.0);
    // The clients close their sessions themselves.
    assert!(
        after.sum_with("fastrelay_connections_closed_total", "peer_application")
            - before.sum_with("fastrelay_connections_closed_total", "peer_application")
            >= 2.0
    );
    // 1000-byte objects do not share a datagram (1500-byte MTU): one
    // packet at least per object each way, all redirected by XDP.
    assert!(delta("fastrelay_packets_received_total") >= n);
    assert!(delta("fastrelay_packets_sent_total") >= n);
    assert!(after.sum_with("fastrelay_xdp_packets_total", "redirected") >= n);
    // The admin's own TCP went through the same XDP program, passed.
    assert!(after.sum_with("fastrelay_xdp_packets_total", "passed") > 0.0);

    // Every object's hop was recorded; the histogram is consistent.
    let hops = delta("fastrelay_relay_hop_seconds_count");
    assert!(hops >= n, "hop count {hops}");
    let inf = after.sum_with("fastrelay_relay_hop_seconds_bucket", "le=\"+Inf\"");
    assert_eq!(inf, after.sum("fastrelay_relay_hop_seconds_count"));
    let sum = after.sum("fastrelay_relay_hop_seconds_sum");
    assert!(sum > 0.0 && sum < hops, "hop sum {sum} s for {hops} hops");
    let mut buckets: Vec<(f64, f64)> = after
        .samples
        .iter()
        .filter(|(n, ..)| n == "fastrelay_relay_hop_seconds_bucket")
        .map(|(_, l, v)| {
            let le = l.split("le=\"").nth(1).unwrap().trim_end_matches('"');
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("hop buckets (le, count): {buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");

    // Draining: a publisher stays connected (waiting for a subscriber that
    // never comes) while the relay is told to stop.
    std::thread::scope(|s| {
        let idle = s.spawn(|| {
            topo.moq_result(
                1,
                "moq-pub",
                &relay_for(1),
                "idle/ns",
                "nothing",
                &["--subscribe-timeout-ms", "20000"],
                Duration::from_secs(30),
            )
        });
        let connected = scrape_until(&topo, Duration::from_secs(5), |s| {
            s.sum("fastrelay_moqt_sessions_active") >= 1.0
        });
        assert!(connected.sum("fastrelay_moqt_sessions_active") >= 1.0);
        relay.terminate();
        let deadline = Instant::now() + Duration::from_secs(2);
        let health = loop {
            let h = get(&topo, "GET", "/health");
            if h.status != 200 || Instant::now() > deadline {
                break h;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(health.status, 503, "{}", health.body);
        assert!(health.body.contains("draining"), "{}", health.body);
        let draining = metrics(&topo);
        assert_eq!(draining.sum("fastrelay_draining"), 1.0);

        let report = relay.wait_stopped();
        let w = &report["workers"][0];
        // Exact: the workers publish a last report as they stop.
        assert_eq!(u(&w["objects_received"]), OBJECTS, "{report}");
        assert_eq!(u(&w["objects_sent"]), OBJECTS, "{report}");
        assert_eq!(
            u(&w["object_bytes_sent"]),
            OBJECTS * OBJECT_SIZE,
            "{report}"
        );
        let _ = idle.join().unwrap();
    });
}

/// Two workers (two queues, native mode): every per-worker family has a
/// sample for each, and the totals still add up whichever workers the
/// publisher and the subscriber land on.
#[test]
fn metrics_are_per_worker_with_two_queues() {
    let topo = Topology::with_queues("fraq", 3, 2);
    let relay = Relay::start(&topo, &["--xdp-mode", "drv", "--admin", ADMIN]);
    assert_eq!(relay.ready["queues"], serde_json::json!([0, 1]));
    publish_and_subscribe(&topo);
    let n = OBJECTS as f64;
    let s = scrape_until(&topo, Duration::from_secs(5), |s| {
        s.sum("fastrelay_objects_sent_total") >= n
            && s.sum("fastrelay_relay_hop_seconds_count") >= n
            && s.sum_with("fastrelay_cross_worker_objects_total", "direction=\"out\"")
                == s.sum_with("fastrelay_cross_worker_objects_total", "direction=\"in\"")
    });
    for (family, kind) in FAMILIES {
        if family.starts_with("fastrelay_xdp_")
            || *kind == "histogram"
            || !family.starts_with("fastrelay_")
        {
            continue;
        }
        if ["fastrelay_uptime_seconds", "fastrelay_draining"].contains(family) {
            continue;
        }
        for worker in ["worker=\"0\"", "worker=\"1\""] {
            assert!(
                s.samples
                    .iter()
                    .any(|(n, l, _)| n == family && l.contains(worker)),
                "{family} has no sample with {worker}"
            );
        }
    }
    assert!(s.sum("fastrelay_objects_received_total") >= n);
    assert!(s.sum("fastrelay_objects_sent_total") >= n);
    assert!(s.sum("fastrelay_relay_hop_seconds_count") >= n);
    // What one worker passed to the other, the other took.
    let out = s.sum_with("fastrelay_cross_worker_objects_total", "direction=\"out\"");
    let taken = s.sum_with("fastrelay_cross_worker_objects_total", "direction=\"in\"");
    assert_eq!(out, taken, "cross-worker objects out {out}, in {taken}");
    eprintln!("cross-worker objects: {out}");
    let report = relay.stop();
    let workers = report["workers"].as_array().unwrap();
    let sum = |f: &str| -> u64 { workers.iter().map(|w| u(&w[f])).sum() };
    assert_eq!(sum("objects_received"), OBJECTS, "{report}");
    assert_eq!(sum("objects_sent"), OBJECTS, "{report}");
}
