//! A congested subscriber: priorities and group order decide what it gets
//! first, shedding and delivery timeouts what it loses.

use std::time::{Duration, Instant};

use crate::common::Stepped;
use moqt::Parameters;
use relay::shed::ShedConfig;

use crate::harness::*;

/// A subscriber whose link stalls builds a backlog at the relay; when the
/// link comes back, the relay sends the high-priority track's backlog
/// before the low one's, although the low one was queued first (§7.2,
/// through quinn-proto stream priorities). Tracks arrive with PUBLISH.
#[test]
fn priorities_decide_what_a_stalled_subscriber_gets_first() {
    const N: u64 = 40;
    let mut h = Harness::new(2);
    h.ready();
    let aliases = publish_tracks(&mut h, &["low", "high"]);
    let sub_low = subscribe_to(&mut h, 1, "low", Parameters::default());
    let sub_high = subscribe_to(&mut h, 1, "high", Parameters::default());
    assert_ne!(sub_low, sub_high);

    h.hold(1, true);
    // Low first (publisher priority 200), then high (10); 1 100 bytes each.
    for o in 0..N {
        send(&mut h, aliases[0], 0, o, 200, 1100);
    }
    for _ in 0..20 {
        h.step();
    }
    for o in 0..N {
        send(&mut h, aliases[1], 0, o, 10, 1100);
    }
    for _ in 0..40 {
        h.step();
    }
    assert_eq!(h.worker.app().relay().engine().stats().objects_in, 2 * N);
    h.hold(1, false);
    let mut order = Vec::new();
    h.run_until("both backlogs delivered", |h| {
        order.extend(received(h, 1));
        order.len() as u64 == 2 * N
    });
    let down: Vec<bool> = order.iter().map(|(a, _, _)| *a == order[0].0).collect();
    // The first objects are low (sent before the stall was noticed); the
    // relay's alias for "low" is the first one it assigned to client 1.
    let low_is_first = down[0];
    assert!(low_is_first);
    let last_high = down.iter().rposition(|low| !low).unwrap();
    let low_after_last_high = down[last_high..].iter().filter(|low| **low).count();
    assert!(
        low_after_last_high as u64 >= N / 2,
        "high-priority backlog did not overtake the low one: {order:?}"
    );
    // Within each track, objects stay in order.
    for alias in [order[0].0, order[last_high].0] {
        let objects: Vec<u64> = order
            .iter()
            .filter(|(a, _, _)| *a == alias)
            .map(|(_, _, o)| *o)
            .collect();
        assert_eq!(objects, (0..N).collect::<Vec<_>>());
    }
}

/// A subscriber whose link stalls: its backlog at the relay passes the
/// bound, and the relay gives up whole low-priority subgroups (reset with
/// TOO_FAR_BEHIND) while the high-priority track arrives complete; the
/// backlog stays within the bound; the publisher is not touched.
#[test]
fn a_stalled_subscriber_sheds_low_priority_subgroups_whole() {
    const GROUPS: u64 = 20;
    const PER_GROUP: u64 = 5;
    // High: 100 kB in all, within the bound; low: 300 kB, far beyond it.
    let bound = 160 * 1024;
    let mut h = Harness::with_shedding(
        2,
        ShedConfig {
            delivery_timeout: Duration::from_secs(30),
            max_backlog_bytes: bound,
        },
    );
    h.ready();
    let aliases = publish_tracks(&mut h, &["low", "high"]);
    subscribe_to(&mut h, 1, "low", Parameters::default());
    subscribe_to(&mut h, 1, "high", Parameters::default());
    let mut views = std::collections::HashMap::new();

    h.hold(1, true);
    for g in 0..GROUPS {
        for o in 0..PER_GROUP {
            send(&mut h, aliases[1], g, o, 10, 1000);
            send(&mut h, aliases[0], g, o, 200, 3000);
        }
        assert!(h.clients[0].driver.session.end_subgroup(aliases[0], g, 0));
        assert!(h.clients[0].driver.session.end_subgroup(aliases[1], g, 0));
        h.step();
        h.step();
    }
    for _ in 0..20 {
        h.step();
    }
    h.hold(1, false);
    h.run_until("the high-priority track complete", |h| {
        collect(h, 1, &mut views);
        views.values().any(|v| {
            v.objects.len() as u64 == GROUPS
                && v.objects.values().all(|o| o.len() as u64 == PER_GROUP)
        })
    });
    // Every subgroup stream that delivered anything has ended, by FIN or
    // by reset (after the stall, quinn paces what is left at the RTT it
    // measured across the stall: this takes real time, not a fixed number
    // of steps).
    h.run_until("every started subgroup ended", |h| {
        collect(h, 1, &mut views);
        views.values().all(|v| {
            v.objects
                .keys()
                .all(|g| v.finished.contains(g) || v.resets.contains_key(g))
        })
    });
    let shed = h.worker.app().relay().shed_counters();
    assert!(shed.subgroups_over_backlog > 0, "{shed:?}");
    assert_eq!(shed.subgroups_timed_out, 0, "{shed:?}");
    assert!(shed.backlog_max <= bound as u64, "{shed:?}");
    // Which downstream alias is which: the complete one is "high".
    let (high, low): (Vec<_>, Vec<_>) = views
        .iter()
        .partition(|(_, v)| v.objects.len() as u64 == GROUPS && v.resets.is_empty());
    assert_eq!(high.len(), 1, "{views:?}");
    let low = low.first().map(|(_, v)| *v).expect("a low-priority view");
    for (g, objects) in &high[0].1.objects {
        assert_eq!(
            *objects,
            (0..PER_GROUP).collect::<Vec<_>>(),
            "high group {g}"
        );
    }
    // Low: each group is whole, or a prefix ended by a TOO_FAR_BEHIND
    // reset, or absent (reset before anything of it left): never a silent
    // hole.
    let mut lost = 0;
    for g in 0..GROUPS {
        let got = low.objects.get(&g).cloned().unwrap_or_default();
        assert_eq!(
            got,
            (0..got.len() as u64).collect::<Vec<_>>(),
            "low group {g}: {low:?}"
        );
        if got.len() as u64 != PER_GROUP {
            lost += 1;
            if let Some(code) = low.resets.get(&g) {
                assert_eq!(*code, 0x5, "low group {g} reset with {code}");
            } else {
                assert!(
                    got.is_empty(),
                    "low group {g} cut silently: {low:?}; shed {shed:?}; all views {views:?}"
                );
            }
        }
    }
    assert!(lost > 0, "nothing of the low track was shed: {low:?}");
    assert_eq!(
        lost as u64, shed.subgroups_over_backlog,
        "every shed subgroup is one incomplete low group"
    );
    // The publisher's connection saw nothing of it.
    assert_eq!(h.clients[0].peer.conn.stats().path.lost_packets, 0);
}

/// Objects that waited at the relay longer than the subscription's delivery
/// timeout are not sent: their subgroup stream is reset with
/// DELIVERY_TIMEOUT, and delivery resumes with the next group.
#[test]
fn objects_past_the_delivery_timeout_are_not_sent() {
    let timeout_ms = 150;
    let mut h = Harness::with_shedding(
        2,
        ShedConfig {
            delivery_timeout: Duration::from_secs(30),
            // Small: most of the stalled data waits in the relay, not in
            // quinn-proto, where a timeout can still stop it.
            max_backlog_bytes: 1 << 20,
        },
    );
    h.ready();
    let aliases = publish_tracks(&mut h, &["video"]);
    subscribe_to(
        &mut h,
        1,
        "video",
        Parameters {
            object_delivery_timeout: Some(timeout_ms),
            ..Parameters::default()
        },
    );
    let mut views = std::collections::HashMap::new();
    h.hold(1, true);
    // 300 kB for group 0: more than quinn-proto's send window takes.
    for o in 0..300 {
        send(&mut h, aliases[0], 0, o, 100, 1000);
    }
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_millis(3 * timeout_ms) {
        h.step();
    }
    h.hold(1, false);
    // Group 1 comes after the stall, and is delivered.
    for o in 0..5 {
        send(&mut h, aliases[0], 1, o, 100, 1000);
    }
    h.run_until("group 1 delivered", |h| {
        collect(h, 1, &mut views);
        views
            .values()
            .any(|v| v.objects.get(&1).is_some_and(|o| o.len() == 5))
    });
    let shed = h.worker.app().relay().shed_counters();
    assert_eq!(shed.subgroups_timed_out, 1, "{shed:?}");
    let v = views.values().next().unwrap();
    let got0 = v.objects.get(&0).map_or(0, Vec::len);
    // Group 0 is absent (the reset overtook its data in the client's
    // receive buffer), or its stream ended with DELIVERY_TIMEOUT.
    if got0 > 0 {
        assert_eq!(
            v.resets.get(&0),
            Some(&0x2),
            "DELIVERY_TIMEOUT expected: {v:?}"
        );
    }
    assert!(
        got0 < 300,
        "group 0 was delivered whole despite the timeout"
    );
    assert!(shed.bytes_dropped > 0, "{shed:?}");
}

/// GROUP_ORDER descending (§7.2): a slow subscriber with a backlog of
/// several groups gets the newest group first; with the default
/// (ascending) the oldest.
#[test]
fn descending_group_order_sends_the_newest_group_first() {
    for (order, newest_first) in [
        (moqt::GroupOrder::Descending, true),
        (moqt::GroupOrder::Ascending, false),
    ] {
        let mut h = Harness::new(2);
        h.ready();
        let aliases = publish_tracks(&mut h, &["video"]);
        subscribe_to(
            &mut h,
            1,
            "video",
            Parameters {
                group_order: Some(order),
                ..Parameters::default()
            },
        );
        h.hold(1, true);
        // 7 groups of 10 kB: far more than one congestion window.
        for g in 0..7 {
            for o in 0..5 {
                send(&mut h, aliases[0], g, o, 100, 2000);
            }
            assert!(h.clients[0].driver.session.end_subgroup(aliases[0], g, 0));
            h.step();
        }
        for _ in 0..20 {
            h.step();
        }
        h.hold(1, false);
        let mut order_seen = Vec::new();
        h.run_until("every object", |h| {
            order_seen.extend(received(h, 1).into_iter().map(|(_, g, _)| g));
            order_seen.len() == 35
        });
        let first = |g: u64| order_seen.iter().position(|x| *x == g).unwrap();
        // Groups 0 (and part of 1) were in flight when the link stalled; of
        // those that waited, 6 and 3 are in the relay's hands.
        assert_eq!(
            first(6) < first(3),
            newest_first,
            "{order:?}: arrival order {order_seen:?}"
        );
    }
}
