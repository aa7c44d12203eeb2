//! The whole relay without sockets: the dataplane worker running
//! [`RelayApp`] over an in-memory backend, and quinn-proto clients that each
//! run a `moqt::Session` through the same
//! [`SessionDriver`](relay::quic::SessionDriver) the relay uses.
//! Publisher and subscribers speak draft-18 through real QUIC and TLS.

// Clients are numbered (0 publishes, the others subscribe): indexing reads best.
#![allow(clippy::needless_range_loop)]

mod common;

use std::time::{Duration, Instant};

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
    message::{FetchType, JoiningFetch, StandaloneFetch},
    session::{
        Event as SessionEvent, OutgoingObject, PayloadPart, RequestId, Role, SessionConfig,
        StreamFlags,
    },
    ControlMessage, Location, ObjectStatus, Parameters, Properties, PublishDoneCode,
};
use relay::{app::RelayApp, engine::EngineConfig, quic::SessionDriver, shed::ShedConfig};

struct Harness {
    worker: Worker<MemoryIo, RelayApp>,
    to_relay: Wire,
    from_relay: Wire,
    clients: Vec<Client>,
    /// Clients whose packets from the relay are held back (a stalled link).
    held: Vec<bool>,
    held_packets: Vec<Vec<Vec<u8>>>,
}

impl Harness {
    fn new(clients: usize) -> Self {
        Self::with_shedding(clients, ShedConfig::default())
    }

    fn with_shedding(clients: usize, shed: ShedConfig) -> Self {
        Self::build(clients, shed, SessionConfig::default())
    }

    fn build(clients: usize, shed: ShedConfig, session: SessionConfig) -> Self {
        let tls = Tls::self_signed();
        let (to_relay, from_relay): (Wire, Wire) = Default::default();
        let worker = Worker::new(
            MemoryIo::new(to_relay.clone(), from_relay.clone()),
            {
                let mut app = RelayApp::new(EngineConfig::default());
                app.set_shedding(shed);
                app.set_session_config(session);
                app
            },
            tls.worker_config(),
        );
        let clients: Vec<Client> = (0..clients)
            .map(|i| Client::connect(client_addr(i), tls.roots.clone()))
            .collect();
        Self {
            worker,
            to_relay,
            from_relay,
            held: vec![false; clients.len()],
            held_packets: vec![Vec::new(); clients.len()],
            clients,
        }
    }

    /// Holds (or releases, delivering what was held in order) the relay's
    /// packets to client `c`.
    fn hold(&mut self, c: usize, held: bool) {
        self.held[c] = held;
        if !held {
            let now = Instant::now();
            for data in std::mem::take(&mut self.held_packets[c]) {
                self.clients[c].peer.receive(now, &data);
            }
        }
    }
}

impl Stepped for Harness {
    fn step(&mut self) {
        let now = Instant::now();
        for c in &mut self.clients {
            c.drive(now, &self.to_relay);
        }
        self.worker.iterate(now).unwrap();
        let answers: Vec<_> = self.from_relay.borrow_mut().drain(..).collect();
        for (to, data) in answers {
            if let Some(i) = self.clients.iter().position(|c| c.peer.addr == to) {
                if self.held[i] {
                    self.held_packets[i].push(data);
                } else {
                    self.clients[i].peer.receive(now, &data);
                }
            }
        }
        for c in &mut self.clients {
            c.drive(now, &self.to_relay);
        }
    }

    fn clients(&mut self) -> &mut [Client] {
        &mut self.clients
    }
}

/// Publisher (client 0) publishes the namespace and answers the relay's one
/// upstream SUBSCRIBE; returns the track alias it assigned.
fn publish_and_serve(h: &mut Harness, subscribers: std::ops::Range<usize>) -> u64 {
    h.clients[0]
        .driver
        .session
        .publish_namespace(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_OK for PUBLISH_NAMESPACE", |h| {
        !h.clients[0].take(is_request_ok).is_empty()
    });
    for s in subscribers.clone() {
        h.clients[s]
            .driver
            .session
            .subscribe(track("video"), Parameters::default())
            .unwrap();
    }
    let mut upstream = None;
    h.run_until("the relay's upstream SUBSCRIBE", |h| {
        for e in h.clients[0].take(is_upstream_subscribe) {
            let SessionEvent::Request {
                id,
                message: ControlMessage::Subscribe(s),
            } = e
            else {
                unreachable!()
            };
            assert_eq!(s.track, track("video"));
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
    h.run_until("SUBSCRIBE_OK downstream", |h| {
        for s in subscribers.clone() {
            ok[s] |= !h.clients[s].take(is_subscribe_ok).is_empty();
        }
        subscribers.clone().all(|s| ok[s])
    });
    alias
}

#[test]
fn publish_subscribe_fan_out_and_publisher_leaving() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..3);

    for g in 0..3 {
        for o in 0..5 {
            let obj = OutgoingObject {
                track_alias: alias,
                location: Location::new(g, o),
                subgroup: 0,
                publisher_priority: Some(100),
                status: ObjectStatus::Normal,
                properties: Properties::new(),
                payload: payload(g, o),
            };
            h.clients[0].driver.session.send_object(obj).unwrap();
        }
        assert!(h.clients[0].driver.session.end_subgroup(alias, g, 0));
    }
    let mut got: Vec<Vec<(u64, u64, Bytes)>> = vec![Vec::new(); 3];
    h.run_until("15 objects at both subscribers", |h| {
        for s in 1..3 {
            for o in h.clients[s].objects() {
                got[s].push((o.location.group, o.location.object, o.payload));
            }
        }
        got[1].len() >= 15 && got[2].len() >= 15
    });
    for s in 1..3 {
        let expect: Vec<_> = (0..3)
            .flat_map(|g| (0..5).map(move |o| (g, o, payload(g, o))))
            .collect();
        assert_eq!(got[s], expect, "subscriber {s}");
    }
    // Subgroup streams were finished downstream too (no leaked streams).
    h.run_until("subgroup ends downstream", |h| {
        h.clients[1]
            .take(|e| matches!(e, SessionEvent::SubgroupEnded { abort: None, .. }))
            .len()
            == 3
    });

    // The publisher leaves: both subscribers get PUBLISH_DONE.
    h.clients[0]
        .peer
        .conn
        .close(Instant::now(), 0u32.into(), Bytes::from_static(b"bye"));
    let mut done = [false; 3];
    h.run_until("PUBLISH_DONE downstream", |h| {
        for s in 1..3 {
            for e in h.clients[s].take(is_publish_done) {
                let SessionEvent::Message {
                    message: ControlMessage::PublishDone(d),
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!(d.status_code, PublishDoneCode::TrackEnded);
                done[s] = true;
            }
        }
        done[1] && done[2]
    });
    assert_eq!(h.worker.app().engine().track_count(), 0);
}

#[test]
fn subscribe_to_an_unknown_track_is_refused() {
    let mut h = Harness::new(1);
    h.ready();
    h.clients[0]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_ERROR", |h| {
        h.clients[0]
            .take(|e| {
                matches!(e, SessionEvent::Message { message: ControlMessage::RequestError(r), .. }
                    if r.error_code == moqt::RequestErrorCode::DoesNotExist)
            })
            .len()
            == 1
    });
}

#[test]
fn a_late_subscriber_gets_objects_from_its_join_on() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..2);
    let send = |h: &mut Harness, g: u64| {
        for o in 0..3 {
            h.clients[0]
                .driver
                .session
                .send_object(OutgoingObject {
                    track_alias: alias,
                    location: Location::new(g, o),
                    payload: payload(g, o),
                    publisher_priority: Some(1),
                    ..OutgoingObject::default()
                })
                .unwrap();
        }
        h.clients[0].driver.session.end_subgroup(alias, g, 0);
    };
    send(&mut h, 0);
    let mut early = 0;
    h.run_until("group 0 at the early subscriber", |h| {
        early += h.clients[1].objects().len();
        early == 3
    });
    // Client 2 joins late, with no second upstream SUBSCRIBE.
    let late_sub = h.clients[2]
        .driver
        .session
        .subscribe(track("video"), Parameters::default())
        .unwrap();
    h.run_until("late SUBSCRIBE_OK", |h| {
        let upstream_again = h.clients[0].take(is_upstream_subscribe);
        assert!(upstream_again.is_empty(), "second upstream SUBSCRIBE");
        !h.clients[2].take(is_subscribe_ok).is_empty()
    });
    send(&mut h, 1);
    let mut late = Vec::new();
    h.run_until("group 1 at the late subscriber", |h| {
        for o in h.clients[2].objects() {
            late.push((o.location.group, o.location.object));
        }
        late.len() == 3
    });
    assert_eq!(late, [(1, 0), (1, 1), (1, 2)]);

    // A Joining FETCH (relative, 0 groups back) fills in what came before
    // the subscription, from the relay's cache: group 0, up to the Joining
    // Location {0,2}, contiguous with the subscription.
    h.clients[2]
        .driver
        .session
        .fetch(
            FetchType::RelativeJoining(JoiningFetch {
                joining_request_id: late_sub.0,
                joining_start: 0,
            }),
            Parameters::default(),
        )
        .unwrap();
    let (mut fetched, mut ended) = (Vec::new(), false);
    h.run_until("joining FETCH served from the cache", |h| {
        for e in h.clients[2].take(|e| {
            matches!(
                e,
                SessionEvent::FetchObject { .. } | SessionEvent::FetchEnded { .. }
            )
        }) {
            match e {
                SessionEvent::FetchObject { object, .. } => {
                    assert_eq!(
                        object.payload,
                        payload(object.location.group, object.location.object)
                    );
                    fetched.push((object.location.group, object.location.object));
                }
                SessionEvent::FetchEnded { abort, .. } => {
                    assert_eq!(abort, None);
                    ended = true;
                }
                _ => unreachable!(),
            }
        }
        ended
    });
    assert_eq!(fetched, [(0, 0), (0, 1), (0, 2)]);

    // A Joining FETCH for a request that is no subscription is refused.
    h.clients[2]
        .driver
        .session
        .fetch(
            FetchType::AbsoluteJoining(JoiningFetch {
                joining_request_id: 9_999_998,
                joining_start: 0,
            }),
            Parameters::default(),
        )
        .unwrap();
    h.run_until("INVALID_JOINING_REQUEST_ID", |h| {
        !h.clients[2]
            .take(|e| {
                matches!(e, SessionEvent::Message { message: ControlMessage::RequestError(r), .. }
                    if r.error_code == moqt::RequestErrorCode::InvalidJoiningRequestId)
            })
            .is_empty()
    });
}

#[test]
fn datagrams_are_forwarded_as_datagrams() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_and_serve(&mut h, 1..3);
    for o in 0..5u64 {
        let datagram = moqt::ObjectDatagram {
            track_alias: alias,
            group_id: 7,
            object_id: o,
            publisher_priority: Some(3),
            end_of_group: false,
            properties: Properties::new(),
            content: moqt::DatagramContent::Payload(payload(7, o)),
        };
        h.clients[0]
            .driver
            .session
            .send_datagram(&datagram)
            .unwrap();
    }
    let mut got: Vec<Vec<u64>> = vec![Vec::new(); 3];
    h.run_until("datagrams at both subscribers", |h| {
        for s in 1..3 {
            for o in h.clients[s].objects() {
                assert_eq!(o.subgroup, None, "arrived on a stream, not as a datagram");
                assert_eq!(o.payload, payload(7, o.location.object));
                got[s].push(o.location.object);
            }
        }
        got[1].len() == 5 && got[2].len() == 5
    });
}

/// Client 0 pushes `names` with PUBLISH; returns their aliases once the
/// relay accepted each (PUBLISH_OK with Forward 1).
fn publish_tracks(h: &mut Harness, names: &[&str]) -> Vec<u64> {
    let mut aliases = Vec::new();
    for name in names {
        let (_, alias) = h.clients[0]
            .driver
            .session
            .publish(track(name), Parameters::default(), Properties::new())
            .unwrap();
        aliases.push(alias);
    }
    let mut accepted = 0;
    h.run_until("PUBLISH_OK for every track", |h| {
        for e in h.clients[0].take(is_request_ok) {
            let SessionEvent::Message {
                message: ControlMessage::RequestOk(ok),
                ..
            } = e
            else {
                unreachable!()
            };
            assert_eq!(ok.parameters.forward, Some(true));
            accepted += 1;
        }
        accepted == names.len()
    });
    aliases
}

fn subscribe_to(h: &mut Harness, c: usize, name: &str, parameters: Parameters) -> RequestId {
    let id = h.clients[c]
        .driver
        .session
        .subscribe(track(name), parameters)
        .unwrap();
    h.run_until("SUBSCRIBE_OK", |h| {
        !h.clients[c]
            .take(|e| {
                matches!(
                    e,
                    SessionEvent::Message { id: i, message: ControlMessage::SubscribeOk(_) } if *i == id
                )
            })
            .is_empty()
    });
    id
}

fn send(h: &mut Harness, alias: u64, g: u64, o: u64, priority: u8, len: usize) {
    let obj = OutgoingObject {
        track_alias: alias,
        location: Location::new(g, o),
        subgroup: 0,
        publisher_priority: Some(priority),
        status: ObjectStatus::Normal,
        properties: Properties::new(),
        payload: Bytes::from(vec![o as u8; len]),
    };
    h.clients[0].driver.session.send_object(obj).unwrap();
}

/// A standalone FETCH of `video` from client `c`, run to its FIN: the
/// FETCH_OK's end location and the objects.
fn standalone_fetch(
    h: &mut Harness,
    c: usize,
    start: Location,
    end: Location,
) -> (Option<Location>, Vec<moqt::FetchObject>) {
    let fetch = h.clients[c]
        .driver
        .session
        .fetch(
            FetchType::Standalone(StandaloneFetch {
                track: track("video"),
                start,
                end,
            }),
            Parameters::default(),
        )
        .unwrap();
    let (mut ok_end, mut objects, mut ended) = (None, Vec::new(), false);
    h.run_until("FETCH_OK, objects, FIN", |h| {
        for e in h.clients[c].take(|_| true) {
            match e {
                SessionEvent::Message {
                    id,
                    message: ControlMessage::FetchOk(ok),
                } if id == fetch => ok_end = Some(ok.end_location),
                SessionEvent::FetchObject { id, object } if id == fetch => objects.push(object),
                SessionEvent::FetchEnded { id, abort: None } if id == fetch => ended = true,
                _ => {}
            }
        }
        ok_end.is_some() && ended
    });
    (ok_end, objects)
}

/// Objects client `c` received so far: (track alias, group, object).
fn received(h: &mut Harness, c: usize) -> Vec<(u64, u64, u64)> {
    h.clients[c]
        .objects()
        .into_iter()
        .map(|o| (o.track_alias, o.location.group, o.location.object))
        .collect()
}

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
    assert_eq!(h.worker.app().engine().stats().objects_in, 2 * N);
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

/// TRACK_STATUS, standalone FETCH from the cache, REQUEST_UPDATE of the
/// Forward State, and the relay's stream bookkeeping staying bounded.
#[test]
fn track_status_fetch_and_request_update() {
    let mut h = Harness::new(3);
    h.ready();
    let aliases = publish_tracks(&mut h, &["video"]);
    let alias = aliases[0];
    let sub = subscribe_to(&mut h, 1, "video", Parameters::default());
    for g in 0..30 {
        for o in 0..3 {
            send(&mut h, alias, g, o, 100, 200);
        }
        assert!(h.clients[0].driver.session.end_subgroup(alias, g, 0));
    }
    let mut got = Vec::new();
    h.run_until("90 objects", |h| {
        got.extend(received(h, 1));
        got.len() == 90
    });

    // TRACK_STATUS: REQUEST_OK with the Largest Object, then FIN.
    let status = h.clients[2]
        .driver
        .session
        .track_status(track("video"), Parameters::default())
        .unwrap();
    let (mut answered, mut finished) = (false, false);
    h.run_until("TRACK_STATUS_OK and FIN", |h| {
        for e in h.clients[2].take(|e| {
            matches!(e, SessionEvent::Message { id, .. } | SessionEvent::PeerFinished { id } if *id == status)
        }) {
            match e {
                SessionEvent::Message {
                    message: ControlMessage::RequestOk(ok),
                    ..
                } => {
                    assert_eq!(ok.parameters.largest_object, Some(Location::new(29, 2)));
                    answered = true;
                }
                SessionEvent::PeerFinished { .. } => finished = true,
                other => panic!("{other:?}"),
            }
        }
        answered && finished
    });

    // Standalone FETCH of groups 27 through (28, 1).
    let (ok_end, fetched) = standalone_fetch(&mut h, 2, Location::new(27, 0), Location::new(28, 2));
    let objects: Vec<_> = fetched
        .iter()
        .map(|o| (o.location.group, o.location.object))
        .collect();
    assert_eq!(ok_end, Some(Location::new(28, 2)));
    assert_eq!(objects, [(27, 0), (27, 1), (27, 2), (28, 0), (28, 1)]);

    // Forward 0: nothing more arrives; Forward 1: objects flow again.
    let update = |h: &mut Harness, forward: bool| {
        h.clients[1]
            .driver
            .session
            .request_update(
                sub,
                Parameters {
                    forward: Some(forward),
                    ..Parameters::default()
                },
            )
            .unwrap();
        h.run_until("REQUEST_OK for the update", |h| {
            !h.clients[1].take(is_request_ok).is_empty()
        });
    };
    update(&mut h, false);
    send(&mut h, alias, 30, 0, 100, 200);
    for _ in 0..30 {
        h.step();
    }
    assert_eq!(received(&mut h, 1), []);
    update(&mut h, true);
    send(&mut h, alias, 31, 0, 100, 200);
    h.run_until("objects after Forward 1", |h| {
        let r = received(h, 1);
        assert!(r.iter().all(|(_, g, _)| *g == 31), "{r:?}");
        !r.is_empty()
    });

    // 32 subgroup streams each way went through the relay; the driver
    // forgets streams once both directions are over.
    h.run_until("finished streams forgotten", |h| {
        h.worker.app().tracked_streams() < 20
    });
}

/// A stopping relay tells every session GOAWAY (§10.4) before it closes
/// the connections.
#[test]
fn a_stopping_relay_says_goaway_before_closing() {
    let mut h = Harness::new(2);
    h.ready();
    let stop = std::sync::atomic::AtomicBool::new(true);
    let started = Instant::now();
    h.worker.run(&stop).unwrap();
    assert!(
        started.elapsed() >= dataplane::worker::GOAWAY_GRACE,
        "the peers were not given the grace period"
    );
    let now = Instant::now();
    let answers: Vec<_> = h.from_relay.borrow_mut().drain(..).collect();
    assert!(!answers.is_empty());
    for (to, data) in answers {
        if let Some(c) = h.clients.iter_mut().find(|c| c.peer.addr == to) {
            c.peer.receive(now, &data);
        }
    }
    for c in &mut h.clients {
        c.drive(now, &h.to_relay);
        let kinds: Vec<&str> = c
            .events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::GoAway {
                    new_session_uri,
                    timeout,
                } => {
                    assert!(new_session_uri.is_empty());
                    assert_eq!(*timeout, dataplane::worker::GOAWAY_GRACE.as_millis() as u64);
                    Some("goaway")
                }
                SessionEvent::Closed { .. } => Some("closed"),
                _ => None,
            })
            .collect();
        assert_eq!(kinds, ["goaway", "closed"]);
    }
}

/// What a subscriber saw of one track: objects per group, and the groups
/// whose subgroup stream was reset (with the code).
#[derive(Default, Debug)]
struct TrackView {
    objects: std::collections::BTreeMap<u64, Vec<u64>>,
    resets: std::collections::BTreeMap<u64, u64>,
    /// Groups whose subgroup stream ended with a FIN.
    finished: Vec<u64>,
}

fn collect(h: &mut Harness, c: usize, views: &mut std::collections::HashMap<u64, TrackView>) {
    for e in h.clients[c].take(|e| {
        matches!(
            e,
            SessionEvent::Object(_) | SessionEvent::SubgroupEnded { .. }
        )
    }) {
        match e {
            SessionEvent::Object(o) => views
                .entry(o.track_alias)
                .or_default()
                .objects
                .entry(o.location.group)
                .or_default()
                .push(o.location.object),
            SessionEvent::SubgroupEnded {
                track_alias,
                group,
                abort: Some(code),
                ..
            } => {
                views
                    .entry(track_alias)
                    .or_default()
                    .resets
                    .insert(group, code.code());
            }
            SessionEvent::SubgroupEnded {
                track_alias,
                group,
                abort: None,
                ..
            } => {
                views.entry(track_alias).or_default().finished.push(group);
            }
            _ => {}
        }
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
    let shed = h.worker.app().shed_counters();
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
    let shed = h.worker.app().shed_counters();
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

/// SUBSCRIBE_TRACKS (§10.19): a subscriber asks for every pushed track
/// under a prefix; the relay sends it PUBLISH for the track already
/// pushed and for one pushed later, and after PUBLISH_OK forwards their
/// objects. A second, overlapping SUBSCRIBE_TRACKS gets PREFIX_OVERLAP.
#[test]
fn subscribe_tracks_gets_publish_for_pushed_tracks_now_and_later() {
    let mut h = Harness::new(2);
    h.ready();
    let first = publish_tracks(&mut h, &["video"])[0];
    let st = h.clients[1]
        .driver
        .session
        .subscribe_tracks(ns(&["live"]), Parameters::default())
        .unwrap();
    let overlapping = h.clients[1]
        .driver
        .session
        .subscribe_tracks(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    let mut offered = Vec::new();
    let mut answered = (false, false);
    let second = {
        h.run_until(
            "SUBSCRIBE_TRACKS answered and PUBLISH of the pushed track",
            |h| {
                for e in h.clients[1].take(|_| true) {
                    match e {
                        SessionEvent::Message {
                            id,
                            message: ControlMessage::RequestOk(_),
                        } if id == st => answered.0 = true,
                        SessionEvent::Message {
                            id,
                            message: ControlMessage::RequestError(e),
                        } if id == overlapping => {
                            assert_eq!(e.error_code, moqt::RequestErrorCode::PrefixOverlap);
                            answered.1 = true;
                        }
                        SessionEvent::Request {
                            id,
                            message: ControlMessage::Publish(p),
                        } => offered.push((id, p.track)),
                        _ => {}
                    }
                }
                answered == (true, true) && offered.len() == 1
            },
        );
        publish_tracks(&mut h, &["audio"])[0]
    };
    h.run_until("PUBLISH of the track pushed later", |h| {
        for e in h.clients[1].take(|e| matches!(e, SessionEvent::Request { .. })) {
            if let SessionEvent::Request {
                id,
                message: ControlMessage::Publish(p),
            } = e
            {
                offered.push((id, p.track));
            }
        }
        offered.len() == 2
    });
    let names: Vec<_> = offered.iter().map(|(_, t)| t.clone()).collect();
    assert_eq!(names, [track("video"), track("audio")]);
    for (id, _) in &offered {
        h.clients[1]
            .driver
            .session
            .request_ok(*id, moqt::RequestOk::default())
            .unwrap();
    }
    for _ in 0..10 {
        h.step();
    }
    for o in 0..5 {
        send(&mut h, first, 0, o, 128, 100);
        send(&mut h, second, 0, o, 128, 100);
    }
    let mut got = Vec::new();
    h.run_until("objects of both tracks", |h| {
        got.extend(received(h, 1));
        got.len() == 10
    });
    let mut per_track: Vec<(u64, u64)> = got.iter().map(|(_, g, o)| (*g, *o)).collect();
    per_track.sort();
    assert_eq!(per_track.len(), 10);
}

/// A FETCH over cached groups with a hole (an object the relay never got)
/// marks the hole End of Unknown Range: the subscriber does not take the
/// missing object for one that does not exist.
#[test]
fn fetch_marks_holes_in_cached_groups_unknown() {
    let mut h = Harness::new(3);
    h.ready();
    let alias = publish_tracks(&mut h, &["video"])[0];
    subscribe_to(&mut h, 1, "video", Parameters::default());
    for g in 0..3 {
        for o in [0, 1, 3] {
            send(&mut h, alias, g, o, 100, 200);
        }
        assert!(h.clients[0].driver.session.end_subgroup(alias, g, 0));
    }
    let mut got = Vec::new();
    h.run_until("9 objects", |h| {
        got.extend(received(h, 1));
        got.len() == 9
    });
    let fetch = h.clients[2]
        .driver
        .session
        .fetch(
            FetchType::Standalone(StandaloneFetch {
                track: track("video"),
                start: Location::new(1, 0),
                end: Location::new(2, 0),
            }),
            Parameters::default(),
        )
        .unwrap();
    let (mut items, mut ended) = (Vec::new(), false);
    h.run_until("the FETCH response", |h| {
        for e in h.clients[2].take(|_| true) {
            match e {
                SessionEvent::FetchObject { id, object } if id == fetch => {
                    items.push(("object", object.location.group, object.location.object))
                }
                SessionEvent::FetchEndOfRange { id, end } if id == fetch => {
                    items.push(("unknown", end.location.group, end.location.object))
                }
                SessionEvent::FetchEnded { id, abort: None } if id == fetch => ended = true,
                _ => {}
            }
        }
        ended
    });
    assert_eq!(
        items,
        [
            ("object", 1, 0),
            ("object", 1, 1),
            ("unknown", 1, 2),
            ("object", 1, 3),
            ("object", 2, 0),
            ("object", 2, 1),
            ("unknown", 2, 2),
            ("object", 2, 3),
        ]
    );
}

/// Cut-through: a long object is forwarded while it streams in. The
/// publisher sends the first 20 KiB of a 200 KiB object and stops; a
/// subscriber whose session reports parts already has them, before the
/// rest exists. Then the rest: that subscriber reassembles the object, a
/// subscriber taking whole objects gets it whole, an object after it
/// follows on the same stream, and a FETCH serves it whole from the cache.
#[test]
fn a_long_object_is_forwarded_while_it_streams_in() {
    const LEN: usize = 200 * 1024;
    let cut = SessionConfig {
        cut_through_bytes: Some(16 * 1024),
        ..SessionConfig::default()
    };
    let mut h = Harness::build(3, ShedConfig::default(), cut.clone());
    h.clients[1].driver = SessionDriver::new(Role::Client, cut);
    h.ready();
    let alias = publish_tracks(&mut h, &["video"])[0];
    subscribe_to(&mut h, 1, "video", Parameters::default());
    subscribe_to(&mut h, 2, "video", Parameters::default());

    let payload: Bytes = (0..LEN)
        .map(|i| (i % 253) as u8)
        .collect::<Vec<u8>>()
        .into();
    let piece = |offset: usize, len: usize| {
        let obj = OutgoingObject {
            track_alias: alias,
            location: Location::new(0, 0),
            publisher_priority: Some(100),
            payload: payload.slice(offset..offset + len),
            ..OutgoingObject::default()
        };
        let part = PayloadPart {
            offset: offset as u64,
            length: LEN as u64,
        };
        (obj, part)
    };
    let (obj, part) = piece(0, 20 * 1024);
    h.clients[0]
        .driver
        .session
        .send_object_part(obj, part, StreamFlags::default())
        .unwrap();
    let mut parts = Vec::new();
    h.run_until("the first part at the subscriber", |h| {
        parts.extend(h.clients[1].objects());
        !parts.is_empty()
    });
    for _ in 0..20 {
        h.step();
    }
    parts.extend(h.clients[1].objects());
    let first = &parts[0];
    assert_eq!(
        first.part.map(|p| (p.offset, p.length)),
        Some((0, LEN as u64))
    );
    let arrived: usize = parts.iter().map(|o| o.payload.len()).sum();
    assert!(
        (16 * 1024..=20 * 1024).contains(&arrived),
        "{arrived} bytes before the rest was sent"
    );
    assert!(
        h.clients[2].objects().is_empty(),
        "a whole object before its end"
    );

    // The rest, in 30 KiB writes, then a short object on the same subgroup.
    let mut offset = 20 * 1024;
    while offset < LEN {
        let n = (LEN - offset).min(30 * 1024);
        let (obj, part) = piece(offset, n);
        h.clients[0]
            .driver
            .session
            .send_object_part(obj, part, StreamFlags::default())
            .unwrap();
        offset += n;
        h.step();
    }
    send(&mut h, alias, 0, 1, 100, 10);
    assert!(h.clients[0].driver.session.end_subgroup(alias, 0, 0));
    let mut whole = Vec::new();
    h.run_until("the object in parts and whole, and the next one", |h| {
        parts.extend(h.clients[1].objects());
        whole.extend(h.clients[2].objects());
        parts.last().is_some_and(|o| o.location.object == 1) && whole.len() == 2
    });
    let (tail, object_parts) = parts.split_last().unwrap();
    let mut joined = Vec::new();
    for o in object_parts {
        assert_eq!(o.part.unwrap().offset as usize, joined.len());
        joined.extend_from_slice(&o.payload);
    }
    assert_eq!(Bytes::from(joined), payload);
    assert_eq!((tail.location.object, tail.part), (1, None));
    assert_eq!(whole[0].part, None);
    assert_eq!(whole[0].payload, payload);
    assert_eq!(whole[1].location.object, 1);

    // The cache collected the parts into the whole object (the end's
    // object is exclusive).
    let (_, fetched) = standalone_fetch(&mut h, 2, Location::new(0, 0), Location::new(0, 2));
    let got: Vec<_> = fetched
        .iter()
        .map(|o| (o.location, o.payload.len()))
        .collect();
    assert_eq!(fetched.len(), 2, "{got:?}");
    assert_eq!(fetched[0].payload, payload);
}
