//! Requests beyond SUBSCRIBE: TRACK_STATUS, FETCH, REQUEST_UPDATE,
//! SUBSCRIBE_TRACKS, and GOAWAY when the relay stops.

use std::time::Instant;

use crate::common::{is_request_ok, ns, track, Stepped};
use moqt::{
    message::{FetchType, StandaloneFetch},
    session::Event as SessionEvent,
    ControlMessage, Location, Parameters,
};

use crate::harness::*;

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
        h.worker.app().relay().tracked_streams() < 20
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
