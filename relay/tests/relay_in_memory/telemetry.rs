//! What the relay counts for the operator (`relay::telemetry`): objects and
//! payload bytes in and out, each object once even when it is forwarded in
//! parts, and one relay-hop sample per object received.

use moqt::session::SessionConfig;
use relay::{shed::ShedConfig, telemetry::TrafficCounters};

use crate::{common::Stepped, harness::*};

#[test]
fn objects_bytes_and_hops_are_counted_once_each() {
    const SMALL: usize = 500;
    const SMALL_OBJECTS: u64 = 20;
    // Over the relay's part size: forwarded in parts as it streams in.
    const LONG: usize = 100 * 1024;
    let cut = SessionConfig {
        cut_through_bytes: Some(16 * 1024),
        ..SessionConfig::default()
    };
    let mut h = Harness::build(3, ShedConfig::default(), cut);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..3);
    for o in 0..SMALL_OBJECTS {
        send(&mut h, alias, 0, o, 100, SMALL);
    }
    send(&mut h, alias, 0, SMALL_OBJECTS, 100, LONG);

    let objects = SMALL_OBJECTS + 1;
    let bytes = SMALL_OBJECTS * SMALL as u64 + LONG as u64;
    let expected = TrafficCounters {
        objects_received: objects,
        bytes_received: bytes,
        objects_sent: 2 * objects,
        bytes_sent: 2 * bytes,
    };
    h.run_until("every object at both subscribers", |h| {
        h.worker.app().relay().traffic().bytes_sent >= expected.bytes_sent
    });
    assert_eq!(h.worker.app().relay().traffic(), expected);

    // The worker publishes its totals and hops every 100 ms.
    let (report, hops) = (h.worker.app().report(), h.worker.app().hop_histogram());
    h.run_until("the periodic report", |_| {
        report.lock().unwrap().traffic == expected
    });
    h.run_until("the hops published", |_| {
        hops.lock().unwrap().count() >= objects
    });
    let hops = hops.lock().unwrap();
    assert_eq!(hops.count(), objects, "one hop per object received");
    assert!(hops.sum() > std::time::Duration::ZERO);
    // Nothing here waits on the network: every hop is one iteration's work.
    assert!(hops.quantile(1.0) < std::time::Duration::from_secs(1));
}
