//! Cross-worker fan-out without sockets: two dataplane workers, each with
//! its own in-memory backend and the production [`AlpnRouter`] in front of
//! its own [`RelayApp`], joined by one [`RelayGroup`]. Clients are pinned to a worker (as RSS and CID steering
//! would); publisher and subscribers speak draft-18 over real QUIC and TLS.
//! Both workers are stepped by hand on this thread, so a test can also
//! freeze one of them.

#![allow(clippy::needless_range_loop)]

mod common;

use std::time::Instant;

use bytes::Bytes;
use common::{
    client_addr, is_publish_done, is_request_ok, is_subscribe_ok, is_upstream_subscribe, ns,
    payload, track, Client, Stepped, Tls,
};
use dataplane::{
    io::memory::{MemoryIo, Wire},
    worker::Worker,
};
use moqt::{
    session::{Event as SessionEvent, OutgoingObject, RequestId, SessionConfig},
    ControlMessage, Location, ObjectStatus, Parameters, Properties, PublishDoneCode,
    StreamResetCode,
};
use relay::{
    app::RelayApp, crossworker::QueueConfig, engine::EngineConfig, group::RelayGroup,
    router::AlpnRouter, shed::ShedConfig,
};

struct Node {
    worker: Worker<MemoryIo, AlpnRouter>,
    to_relay: Wire,
    from_relay: Wire,
    /// A frozen worker does not iterate (a stalled core).
    frozen: bool,
}

struct Harness {
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// The worker each client's datagrams reach.
    placement: Vec<usize>,
}

impl Harness {
    /// Two workers; client `i` connects to worker `placement[i]`.
    fn new(placement: &[usize], queues: QueueConfig) -> Self {
        let tls = Tls::self_signed();
        let nodes = RelayGroup::new(2, queues)
            .unwrap()
            .split()
            .into_iter()
            .map(|part| {
                let (to_relay, from_relay): (Wire, Wire) = Default::default();
                let worker = Worker::new(
                    MemoryIo::new(to_relay.clone(), from_relay.clone()),
                    AlpnRouter::new(
                        EngineConfig::default(),
                        SessionConfig::default(),
                        ShedConfig::default(),
                        Some(part),
                    ),
                    tls.worker_config(),
                );
                Node {
                    worker,
                    to_relay,
                    from_relay,
                    frozen: false,
                }
            })
            .collect();
        let clients = (0..placement.len())
            .map(|i| Client::connect(client_addr(i), tls.roots.clone()))
            .collect();
        let mut h = Self {
            nodes,
            clients,
            placement: placement.to_vec(),
        };
        h.ready();
        h
    }

    fn app(&self, w: usize) -> &RelayApp {
        self.nodes[w].worker.app().relay()
    }

    fn steps(&mut self, n: usize) {
        for _ in 0..n {
            self.step();
        }
    }
}

impl Stepped for Harness {
    fn step(&mut self) {
        let now = Instant::now();
        for (c, &w) in self.clients.iter_mut().zip(&self.placement) {
            c.drive(now, &self.nodes[w].to_relay);
        }
        for n in self.nodes.iter_mut().filter(|n| !n.frozen) {
            n.worker.iterate(now).unwrap();
        }
        for n in &self.nodes {
            let answers: Vec<_> = n.from_relay.borrow_mut().drain(..).collect();
            for (to, data) in answers {
                if let Some(c) = self.clients.iter_mut().find(|c| c.peer.addr == to) {
                    c.peer.receive(now, &data);
                }
            }
        }
        for (c, &w) in self.clients.iter_mut().zip(&self.placement) {
            c.drive(now, &self.nodes[w].to_relay);
        }
    }

    fn clients(&mut self) -> &mut [Client] {
        &mut self.clients
    }
}

/// Client 0 publishes live/cam1; the directory reaches both workers.
fn publish_namespace(h: &mut Harness) {
    h.clients[0]
        .driver
        .session
        .publish_namespace(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_OK for PUBLISH_NAMESPACE", |h| {
        h.clients[0].count(is_request_ok) == 1
    });
}

/// `subs` subscribe to "video"; the publisher (client 0) must see exactly
/// one upstream SUBSCRIBE, which it accepts. Returns its alias and the
/// subscribers' request IDs.
fn subscribe_all(h: &mut Harness, subs: &[usize]) -> (u64, Vec<RequestId>) {
    let ids: Vec<RequestId> = subs
        .iter()
        .map(|&s| {
            h.clients[s]
                .driver
                .session
                .subscribe(track("video"), Parameters::default())
                .unwrap()
        })
        .collect();
    let mut upstream = None;
    h.run_until("the relay's upstream SUBSCRIBE", |h| {
        for e in h.clients[0].take(is_upstream_subscribe) {
            let SessionEvent::Request { id, .. } = e else {
                unreachable!()
            };
            assert!(upstream.is_none(), "the relay subscribed upstream twice");
            upstream = Some(id);
        }
        upstream.is_some()
    });
    let alias = h.clients[0]
        .driver
        .session
        .subscribe_ok(upstream.unwrap(), Parameters::default(), Properties::new())
        .unwrap();
    let mut ok = vec![false; h.clients.len()];
    h.run_until("SUBSCRIBE_OK at every subscriber", |h| {
        for &s in subs {
            ok[s] |= h.clients[s].count(is_subscribe_ok) > 0;
        }
        subs.iter().all(|&s| ok[s])
    });
    // However long it took, still one upstream SUBSCRIBE.
    h.steps(5);
    assert_eq!(h.clients[0].count(is_upstream_subscribe), 0);
    (alias, ids)
}

fn send_group(h: &mut Harness, alias: u64, g: u64, objects: u64, priority: u8) {
    for o in 0..objects {
        let obj = OutgoingObject {
            track_alias: alias,
            location: Location::new(g, o),
            subgroup: 0,
            publisher_priority: Some(priority),
            status: ObjectStatus::Normal,
            properties: Properties::new(),
            payload: payload(g, o),
        };
        h.clients[0].driver.session.send_object(obj).unwrap();
    }
}

/// Objects client `c` received: (alias, group, object, payload).
fn objects(h: &mut Harness, c: usize) -> Vec<(u64, u64, u64, Bytes)> {
    h.clients[c]
        .objects()
        .into_iter()
        .map(|o| {
            (
                o.track_alias,
                o.location.group,
                o.location.object,
                o.payload,
            )
        })
        .collect()
}

/// Publisher on worker 0, subscribers on both workers: every subscriber
/// gets every object once and in order, worker 1 gets each object once
/// however many subscribers it has, and subscribers leaving end the
/// cross-worker subscription, then the upstream one.
#[test]
fn objects_reach_subscribers_on_both_workers_with_one_hand_off_each() {
    // 0 publishes; 1 subscribes on worker 0; 2, 3, 4 on worker 1.
    let mut h = Harness::new(&[0, 0, 1, 1, 1], QueueConfig::default());
    publish_namespace(&mut h);
    let subs = [1, 2, 3, 4];
    let (alias, ids) = subscribe_all(&mut h, &subs);

    const GROUPS: u64 = 4;
    const PER_GROUP: u64 = 6;
    for g in 0..GROUPS {
        send_group(&mut h, alias, g, PER_GROUP, 100);
        assert!(h.clients[0].driver.session.end_subgroup(alias, g, 0));
    }
    let total = (GROUPS * PER_GROUP) as usize;
    let mut got = vec![Vec::new(); h.clients.len()];
    h.run_until("every object at every subscriber", |h| {
        for &s in &subs {
            got[s].extend(objects(h, s).into_iter().map(|(_, g, o, p)| (g, o, p)));
        }
        subs.iter().all(|&s| got[s].len() >= total)
    });
    h.steps(10);
    let expect: Vec<_> = (0..GROUPS)
        .flat_map(|g| (0..PER_GROUP).map(move |o| (g, o, payload(g, o))))
        .collect();
    for &s in &subs {
        got[s].extend(objects(&mut h, s).into_iter().map(|(_, g, o, p)| (g, o, p)));
        assert_eq!(
            got[s], expect,
            "subscriber {s}: every object once, in order"
        );
    }
    // Subgroup streams were finished across the workers too.
    h.run_until("subgroup ends at worker 1's subscribers", |h| {
        h.clients[4].count(|e| matches!(e, SessionEvent::SubgroupEnded { abort: None, .. }))
            == GROUPS as usize
    });

    // One hand-off per object to worker 1, for its three subscribers.
    let w0 = h.app(0).cross_worker().unwrap();
    let w1 = h.app(1).cross_worker().unwrap();
    assert_eq!(w0.objects_out, total as u64);
    assert_eq!(w1.objects_in, total as u64);
    assert_eq!((w1.objects_out, w0.objects_in), (0, 0));
    assert_eq!(w0.dropped, [0; 4]);
    let e0 = h.app(0).engine().stats();
    let e1 = h.app(1).engine().stats();
    assert_eq!(e0.objects_in, total as u64);
    // Worker 0: its own subscriber plus worker 1's pseudo-session.
    assert_eq!(e0.objects_out, 2 * total as u64);
    assert_eq!(e1.objects_in, total as u64);
    assert_eq!(e1.objects_out, 3 * total as u64);
    assert_eq!(e0.upstream_subscriptions, 1);
    assert_eq!(e1.upstream_subscriptions, 1);

    // Two of worker 1's subscribers leave: nothing changes upstream.
    for i in [1, 2] {
        h.clients[subs[i]]
            .driver
            .session
            .cancel(ids[i], StreamResetCode::Cancelled)
            .unwrap();
    }
    h.steps(10);
    assert_eq!(h.app(1).engine().track_count(), 1);
    send_group(&mut h, alias, GROUPS, 1, 100);
    h.run_until("the next object at the remaining subscribers", |h| {
        objects(h, 4).len() == 1 && objects(h, 1).len() == 1
    });
    // The last one leaves: worker 1 drops the track and its cross-worker
    // subscription; worker 0 keeps relaying to its own subscriber.
    h.clients[4]
        .driver
        .session
        .cancel(ids[3], StreamResetCode::Cancelled)
        .unwrap();
    h.steps(10);
    assert_eq!(h.app(1).engine().track_count(), 0);
    assert_eq!(h.app(0).engine().track_count(), 1);
    let out_before = h.app(0).cross_worker().unwrap().objects_out;
    send_group(&mut h, alias, GROUPS + 1, 2, 100);
    h.run_until("objects at worker 0's subscriber", |h| {
        objects(h, 1).len() == 2
    });
    h.steps(5);
    assert_eq!(h.app(0).cross_worker().unwrap().objects_out, out_before);
    assert!(objects(&mut h, 2).is_empty() && objects(&mut h, 3).is_empty());
    assert!(h.clients[0]
        .events
        .iter()
        .all(|e| !matches!(e, SessionEvent::RequestCancelled { .. })));

    // The last subscriber anywhere leaves: the upstream subscription ends.
    h.clients[1]
        .driver
        .session
        .cancel(ids[0], StreamResetCode::Cancelled)
        .unwrap();
    h.run_until("upstream subscription cancelled", |h| {
        h.clients[0].count(|e| matches!(e, SessionEvent::RequestCancelled { .. })) == 1
    });
    assert_eq!(h.app(0).engine().track_count(), 0);
}

/// Subscribers only on the other worker: their leaving ends the upstream
/// subscription at the publisher.
#[test]
fn the_last_remote_subscriber_leaving_ends_the_upstream_subscription() {
    let mut h = Harness::new(&[0, 1, 1], QueueConfig::default());
    publish_namespace(&mut h);
    let (alias, ids) = subscribe_all(&mut h, &[1, 2]);
    send_group(&mut h, alias, 0, 3, 100);
    h.run_until("objects at both", |h| {
        objects(h, 1).len() + objects(h, 2).len() == 6
    });
    h.clients[1]
        .driver
        .session
        .cancel(ids[0], StreamResetCode::Cancelled)
        .unwrap();
    h.steps(10);
    assert_eq!(
        h.clients[0].count(|e| matches!(e, SessionEvent::RequestCancelled { .. })),
        0
    );
    h.clients[2]
        .driver
        .session
        .cancel(ids[1], StreamResetCode::Cancelled)
        .unwrap();
    h.run_until("upstream subscription cancelled", |h| {
        h.clients[0].count(|e| matches!(e, SessionEvent::RequestCancelled { .. })) == 1
    });
    assert_eq!(h.app(0).engine().track_count(), 0);
    assert_eq!(h.app(1).engine().track_count(), 0);
}

/// The publisher leaving ends the track on both workers (PUBLISH_DONE),
/// and namespace subscribers on the other worker hear of the namespace
/// coming and going.
#[test]
fn publisher_leaving_ends_the_track_on_every_worker() {
    // 0 publishes; 1 subscribes on worker 0, 2 on worker 1; 3 (worker 1)
    // subscribes to namespaces.
    let mut h = Harness::new(&[0, 0, 1, 1], QueueConfig::default());
    h.clients[3]
        .driver
        .session
        .subscribe_namespace(ns(&["live"]), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_OK for SUBSCRIBE_NAMESPACE", |h| {
        h.clients[3].count(is_request_ok) == 1
    });
    publish_namespace(&mut h);
    h.run_until("NAMESPACE on the other worker", |h| {
        h.clients[3].count(|e| {
            matches!(e, SessionEvent::Message { message: ControlMessage::Namespace(n), .. }
                if n.suffix == ns(&["cam1"]))
        }) == 1
    });
    let (alias, _) = subscribe_all(&mut h, &[1, 2]);
    send_group(&mut h, alias, 0, 2, 100);
    h.run_until("objects at both", |h| {
        objects(h, 1).len() + objects(h, 2).len() == 4
    });

    h.clients[0]
        .peer
        .conn
        .close(Instant::now(), 0u32.into(), Bytes::from_static(b"bye"));
    let mut done = [false; 3];
    h.run_until("PUBLISH_DONE on both workers", |h| {
        for s in [1, 2] {
            for e in h.clients[s].take(is_publish_done) {
                let SessionEvent::Message {
                    message: ControlMessage::PublishDone(d),
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(d.status_code, PublishDoneCode::TrackEnded);
                assert!(!done[s], "second PUBLISH_DONE");
                done[s] = true;
            }
        }
        done[1] && done[2]
    });
    h.run_until("NAMESPACE_DONE on the other worker", |h| {
        h.clients[3].count(|e| {
            matches!(
                e,
                SessionEvent::Message {
                    message: ControlMessage::NamespaceDone(_),
                    ..
                }
            )
        }) == 1
    });
    assert_eq!(h.app(0).engine().track_count(), 0);
    assert_eq!(h.app(1).engine().track_count(), 0);
    // Nothing more routes to the gone publisher from either worker.
    let id = h.clients[2]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_ERROR", |h| {
        h.clients[2].count(|e| {
            matches!(e, SessionEvent::Message { id: i, message: ControlMessage::RequestError(r) }
                if *i == id && r.error_code == moqt::RequestErrorCode::DoesNotExist)
        }) == 1
    });
}

/// Client 0 pushes `names` with PUBLISH; returns their aliases.
fn publish_tracks(h: &mut Harness, names: &[&str]) -> Vec<u64> {
    let aliases = names
        .iter()
        .map(|name| {
            h.clients[0]
                .driver
                .session
                .publish(track(name), Parameters::default(), Properties::new())
                .unwrap()
                .1
        })
        .collect();
    let mut accepted = 0;
    h.run_until("PUBLISH_OK for every track", |h| {
        accepted += h.clients[0].count(is_request_ok);
        accepted == names.len()
    });
    aliases
}

/// Subscribes client `c` to `name`; returns the alias the relay gave it.
fn subscribe_to(h: &mut Harness, c: usize, name: &str) -> u64 {
    let id = h.clients[c]
        .driver
        .session
        .subscribe(track(name), Parameters::default())
        .unwrap();
    let mut alias = None;
    h.run_until("SUBSCRIBE_OK", |h| {
        for e in h.clients[c].take(|e| {
            matches!(e, SessionEvent::Message { id: i, message: ControlMessage::SubscribeOk(_) } if *i == id)
        }) {
            let SessionEvent::Message {
                message: ControlMessage::SubscribeOk(ok),
                ..
            } = e
            else {
                unreachable!()
            };
            alias = Some(ok.track_alias);
        }
        alias.is_some()
    });
    alias.unwrap()
}

/// Worker 1 stalls (does not iterate) while the publisher bursts two
/// PUBLISH-pushed tracks of different priority into a tiny cross-worker
/// budget: worker 0 keeps going (its own subscriber gets everything), the
/// drops are counted, and what worker 1 keeps is the high-priority track.
#[test]
fn an_overloaded_worker_drops_low_priority_first_and_never_stalls_the_publisher() {
    const N: u64 = 40;
    const BUDGET: usize = 8;
    let queues = QueueConfig {
        object_capacity: BUDGET,
        ..QueueConfig::default()
    };
    // 0 publishes; 1 subscribes on worker 0, 2 on worker 1.
    let mut h = Harness::new(&[0, 0, 1], queues);
    let aliases = publish_tracks(&mut h, &["low", "high"]);
    // The directory reached worker 1 with the step that accepted them.
    let mut high_alias = 0;
    for s in [1, 2] {
        subscribe_to(&mut h, s, "low");
        high_alias = subscribe_to(&mut h, s, "high");
    }

    h.nodes[1].frozen = true;
    for o in 0..N {
        for (alias, priority) in [(aliases[0], 200), (aliases[1], 10)] {
            let obj = OutgoingObject {
                track_alias: alias,
                location: Location::new(0, o),
                subgroup: 0,
                publisher_priority: Some(priority),
                status: ObjectStatus::Normal,
                properties: Properties::new(),
                payload: Bytes::from(vec![o as u8; 300]),
            };
            h.clients[0].driver.session.send_object(obj).unwrap();
        }
    }
    let mut local = Vec::new();
    h.run_until(
        "worker 0 forwards the whole burst to its own subscriber",
        |h| {
            local.extend(objects(h, 1));
            local.len() as u64 == 2 * N
        },
    );
    assert_eq!(h.app(0).engine().stats().objects_in, 2 * N);
    let w0 = h.app(0).cross_worker().unwrap();
    // Low: 8 queued, then all evicted by high or refused; high: 8 kept,
    // the rest refused. Whatever order the two streams arrived in.
    assert_eq!(w0.dropped, [N - BUDGET as u64, 0, N, 0], "{w0:?}");

    h.nodes[1].frozen = false;
    // Worker 1 got the high track's oldest objects and then a hole: it is
    // told (one control message per lost subgroup) and resets its
    // subscriber's copies of both subgroups (EXCESSIVE_LOAD) instead of
    // leaving a silent gap in a stream. Here the reset overtakes the kept
    // objects before they leave, so the subscriber may see none of them;
    // whatever it sees is the oldest ones, in order, with no hole.
    h.steps(50);
    let remote = objects(&mut h, 2);
    assert!(remote.iter().all(|o| o.0 == high_alias), "{remote:?}");
    let kept: Vec<u64> = remote.iter().map(|o| o.2).collect();
    assert_eq!(kept, (0..kept.len() as u64).collect::<Vec<_>>());
    let w0 = h.app(0).cross_worker().unwrap();
    assert_eq!(
        w0.control_out,
        2 + 2,
        "two subscriptions, two lost subgroups: {w0:?}"
    );
    let w1 = h.app(1).cross_worker().unwrap();
    assert_eq!(w1.objects_in, BUDGET as u64);
    assert_eq!(h.app(1).engine().stats().objects_in, BUDGET as u64);
}

/// TRACK_STATUS on worker 1 for a track only worker 0's publisher serves:
/// answered through a cross-worker subscription that ends right after.
#[test]
fn track_status_across_workers() {
    let mut h = Harness::new(&[0, 1], QueueConfig::default());
    publish_namespace(&mut h);
    let status = h.clients[1]
        .driver
        .session
        .track_status(track("video"), Parameters::default())
        .unwrap();
    let mut upstream = None;
    h.run_until("the relay's upstream SUBSCRIBE", |h| {
        for e in h.clients[0].take(is_upstream_subscribe) {
            let SessionEvent::Request { id, .. } = e else {
                unreachable!()
            };
            upstream = Some(id);
        }
        upstream.is_some()
    });
    let largest = Location::new(5, 3);
    h.clients[0]
        .driver
        .session
        .subscribe_ok(
            upstream.unwrap(),
            Parameters {
                largest_object: Some(largest),
                ..Parameters::default()
            },
            Properties::new(),
        )
        .unwrap();
    let mut answered = None;
    h.run_until("TRACK_STATUS answered", |h| {
        for e in h.clients[1].take(|e| {
            matches!(e, SessionEvent::Message { id, message: ControlMessage::RequestOk(_) } if *id == status)
        }) {
            let SessionEvent::Message {
                message: ControlMessage::RequestOk(ok),
                ..
            } = e
            else {
                unreachable!()
            };
            answered = Some(ok.parameters.largest_object);
        }
        answered.is_some()
    });
    assert_eq!(answered, Some(Some(largest)));
    // Nobody subscribed: both workers let go, and so does the publisher's
    // subscription.
    h.run_until("upstream subscription cancelled", |h| {
        h.clients[0].count(|e| matches!(e, SessionEvent::RequestCancelled { .. })) == 1
    });
    assert_eq!(h.app(0).engine().track_count(), 0);
    assert_eq!(h.app(1).engine().track_count(), 0);
}
