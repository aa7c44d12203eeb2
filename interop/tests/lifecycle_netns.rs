//! The relay's life cycle as clients see it (issue 12): SIGTERM drains
//! (GOAWAY, then PUBLISH_DONE with GOING_AWAY and finished streams) within
//! a bounded time, and a relay started again on the same interface serves
//! new sessions at once. The clients are the independent implementation
//! (`moqt-interop`, Cloudflare's `moq-transport`). That SIGKILL leaves no
//! XDP program attached and frees the port is tested in
//! control/tests/dataplane_netns.rs.
//!
//! Each test makes its own topology (removed on drop, also on failure).
//! Run as root.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use bench::harness::*;
use common::*;
use serde_json::Value;

const DRAIN_MS: u64 = 1500;

fn start(topo: &Topology) -> Relay {
    let drain = DRAIN_MS.to_string();
    Relay::start(topo, &["--xdp-mode", "skb", "--drain-ms", &drain])
}

/// Subscribers waiting for `track`: the independent client in c2 and,
/// with `own_sub`, the project's client in c3 (which reads draft-18 GOAWAY,
/// see below); then the project's publisher in c1, 10 groups of 10 objects
/// a second for `groups` groups. Runs `during` on this thread `after` the
/// publisher started; returns (c2, c3 or Null, publisher).
fn publish_and_watch(
    topo: &Topology,
    track: &str,
    groups: u64,
    own_sub: bool,
    after: Duration,
    during: impl FnOnce(),
) -> (Value, Value, Value) {
    let g = groups.to_string();
    let total = (groups * 10).to_string();
    let server = relay_for(1);
    thread::scope(|s| {
        let independent = s.spawn(|| {
            interop(
                topo,
                2,
                "sub",
                &[
                    "--namespace",
                    "life/cam",
                    "--track",
                    track,
                    "--rendezvous-ms",
                    "15000",
                    "--objects-per-group",
                    "10",
                    "--timeout-ms",
                    "30000",
                ],
                Duration::from_secs(40),
            )
        });
        let own = s.spawn(|| {
            if !own_sub {
                return Value::Null;
            }
            let server = relay_for(3);
            topo.moq_result(
                3,
                "moq-sub",
                &server,
                "life/cam",
                track,
                &[
                    "--retry-ms",
                    "15000",
                    "--expect-objects",
                    &total,
                    "--timeout-ms",
                    "30000",
                ],
                Duration::from_secs(40),
            )
            .1
        });
        thread::sleep(Duration::from_millis(1000));
        let publisher = s.spawn(|| {
            topo.moq_result(
                1,
                "moq-pub",
                &server,
                "life/cam",
                track,
                &[
                    "--groups",
                    &g,
                    "--objects-per-group",
                    "10",
                    "--object-size",
                    "300",
                    "--rate-groups-per-s",
                    "10",
                    "--subscribers",
                    "1",
                    "--linger-ms",
                    "500",
                ],
                Duration::from_secs(40),
            )
            .1
        });
        thread::sleep(after);
        during();
        (
            independent.join().unwrap(),
            own.join().unwrap(),
            publisher.join().unwrap(),
        )
    })
}

/// SIGTERM under traffic: the relay keeps forwarding through the drain
/// (its GOAWAY's timeout), then ends the subscription with PUBLISH_DONE
/// (GOING_AWAY) and exits within the drain plus a bounded close. Started
/// again on the same interface (XDP attached anew), the relay serves new
/// sessions at once.
///
/// The independent client (moq-transport 0.17) decodes GOAWAY in its
/// draft-16 form (New Session URI only) and closes its session on the
/// draft-18 one (with Timeout and Request ID), so the drain is followed
/// with the project's publisher and subscriber; the independent
/// subscriber is held to what it can see: the objects up to the GOAWAY,
/// without a gap.
#[test]
fn sigterm_drains_within_bounds_and_a_restart_serves_again() {
    let topo = Topology::new("frtd", 3);
    let relay = start(&topo);
    let log = relay.log_path();
    let mut stopped_in = Duration::ZERO;
    let mut report = Value::Null;
    let (independent, own, _publisher) =
        publish_and_watch(&topo, "video", 100, true, Duration::from_secs(2), || {
            let t = Instant::now();
            report = relay.stop();
            stopped_in = t.elapsed();
        });
    eprintln!("stopped in {stopped_in:?}; own subscriber: {own}; independent: {independent}");
    assert_eq!(report["event"], "stopped", "{report}");
    // The drain, a 200 ms flush, and at most 1 s for the connections to
    // close.
    assert!(
        stopped_in >= Duration::from_millis(DRAIN_MS),
        "exited after {stopped_in:?}, before its drain of {DRAIN_MS} ms"
    );
    assert!(
        stopped_in <= Duration::from_millis(DRAIN_MS + 2500),
        "exited only after {stopped_in:?}; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let end = own["end"].as_str().unwrap_or_default();
    assert!(
        end.contains("GoingAway"),
        "no PUBLISH_DONE (GOING_AWAY) before the close: {own}"
    );
    // Served through the drain: objects from before SIGTERM and during the
    // 1.5 s drain, none missing in between.
    assert!(u(&own["objects"]) >= 250, "{own}");
    assert_eq!(u(&own["gaps"]) + u(&own["duplicates"]), 0, "{own}");
    let t = &independent["tracks"]["video"];
    assert!(u(&t["objects"]) >= 100, "{independent}");
    assert_eq!(u(&t["gaps"]) + u(&t["duplicates"]), 0, "{independent}");

    // Again on the same interface: a clean start, and new sessions flow
    // (the independent subscriber, the project's publisher).
    let relay = start(&topo);
    let log_on_panic = RelayLogOnPanic(&relay);
    let (independent, _, publisher) =
        publish_and_watch(&topo, "video", 20, false, Duration::ZERO, || {});
    assert_eq!(publisher["objects_sent"], 200, "{publisher}");
    // (The payloads are the project publisher's, not the format the
    // independent client checks: objects are counted, not verified.)
    let t = &independent["tracks"]["video"];
    assert_eq!(u(&t["objects"]), 200, "{t}");
    assert_eq!(u(&t["gaps"]) + u(&t["duplicates"]), 0, "{t}");
    assert_eq!(t["end"]["publish_done"], true, "{t}");
    drop(log_on_panic);
    drop(relay.stop());
}
