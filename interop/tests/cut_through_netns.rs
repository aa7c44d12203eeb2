//! Cut-through forwarding seen from independent clients (`moqt-interop`,
//! Cloudflare's `moq-transport`): long objects reach subscribers intact
//! while the relay forwards them in parts, and an object larger than a
//! connection's whole receive bound goes through (buffered whole it could
//! not), with the relay growing by a fraction of it.
//!
//! Each test makes its own topology (removed on drop, also on failure).
//! Run as root.

mod common;

use std::{thread, time::Duration};

use bench::harness::*;
use common::*;

fn honest(object_size: u64, groups: u64, per_group: u64, objects_per_s: u64) -> Honest {
    Honest {
        groups,
        per_group,
        object_size,
        objects_per_s,
        timeout: Duration::from_secs(60),
    }
}

/// Runs the honest pair (subscriber first) and checks it lost nothing and
/// every payload is intact; returns the relay's peak RSS over its run.
fn relay_through(topo: &Topology, relay: &Relay, pair: &Honest) -> u64 {
    let ((sub, publisher), peak) = peak_rss_during(relay, || {
        thread::scope(|s| {
            let sub = s.spawn(|| pair.subscribe(topo));
            thread::sleep(Duration::from_millis(1000));
            let publisher = pair.publish(topo);
            (sub.join().unwrap(), publisher)
        })
    });
    pair.assert_lossless(&sub, &publisher);
    let t = &sub["tracks"]["video"];
    assert_eq!(u(&t["bad_payloads"]), 0, "{t}");
    let sent = pair.groups * pair.per_group * pair.object_size;
    assert_eq!(u(&t["bytes"]), sent, "{t}");
    peak
}

#[test]
fn long_objects_and_one_beyond_the_connection_bound_arrive_intact() {
    let topo = Topology::new("frtw", 2);
    // The defaults (--cut-through 16K, --max-connection-buffer 32M), objects
    // up to 64 MiB accepted, and room for a few MiB waiting for the
    // subscriber (the 1 MiB default sheds any object larger than that as
    // soon as the subscriber's link falls a little behind).
    let relay = Relay::start(
        &topo,
        &[
            "--xdp-mode",
            "skb",
            "--max-object-size",
            "64M",
            "--max-backlog-bytes",
            "8388608",
        ],
    );
    let log_on_panic = RelayLogOnPanic(&relay);

    // 1 MiB objects, three per group: 18 MiB in all.
    relay_through(&topo, &relay, &honest(MIB, 6, 3, 10));

    // Two objects of 40 MiB: more than the 25.5 MiB data budget of a
    // connection, so they can only go through in parts.
    let baseline = relay.rss_bytes().expect("relay RSS");
    let peak = relay_through(&topo, &relay, &honest(40 * MIB, 1, 2, 1));
    let grew = peak.saturating_sub(baseline);
    eprintln!(
        "two 40 MiB objects: relay RSS {} MiB before, peak {} MiB (+{} MiB)",
        baseline / MIB,
        peak / MIB,
        grew / MIB
    );
    assert!(
        grew < 32 * MIB,
        "the relay grew by {} MiB relaying 40 MiB objects",
        grew / MIB
    );
    drop(log_on_panic);
    drop(relay.stop());
}
