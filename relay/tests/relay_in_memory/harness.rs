//! The in-memory relay and its clients, stepped by hand, with what the
//! tests of this binary share: publishing, subscribing, sending, reading.

use std::{sync::Arc, time::Instant};

use crate::common::{
    client_addr, is_request_ok, is_subscribe_ok, is_upstream_subscribe, ns, track, Client, Stepped,
    Tls,
};
use bytes::Bytes;
use dataplane::{
    io::memory::{MemoryIo, Wire},
    worker::Worker,
};
use moqt::{
    message::{FetchType, StandaloneFetch},
    session::{Event as SessionEvent, OutgoingObject, RequestId, SessionConfig},
    setup::Setup,
    ControlMessage, Location, ObjectStatus, Parameters, Properties,
};
use relay::{auth::Authorizer, engine::EngineConfig, router::AlpnRouter, shed::ShedConfig};

pub struct Harness {
    pub worker: Worker<MemoryIo, AlpnRouter>,
    pub to_relay: Wire,
    pub from_relay: Wire,
    pub clients: Vec<Client>,
    /// Clients whose packets from the relay are held back (a stalled link).
    pub held: Vec<bool>,
    pub held_packets: Vec<Vec<Vec<u8>>>,
}

impl Harness {
    pub fn new(clients: usize) -> Self {
        Self::with_shedding(clients, ShedConfig::default())
    }

    pub fn with_shedding(clients: usize, shed: ShedConfig) -> Self {
        Self::build(clients, shed, SessionConfig::default())
    }

    pub fn build(clients: usize, shed: ShedConfig, session: SessionConfig) -> Self {
        let setups = vec![Setup::default(); clients];
        Self::build_with(&setups, shed, session, None)
    }

    /// A relay that authorizes with `auth`; client `i` sends `setups[i]`.
    pub fn with_auth(auth: Arc<Authorizer>, setups: &[Setup]) -> Self {
        let session = SessionConfig::default();
        Self::build_with(setups, ShedConfig::default(), session, Some(auth))
    }

    fn build_with(
        setups: &[Setup],
        shed: ShedConfig,
        session: SessionConfig,
        auth: Option<Arc<Authorizer>>,
    ) -> Self {
        let tls = Tls::self_signed();
        let (to_relay, from_relay): (Wire, Wire) = Default::default();
        let worker = Worker::new(
            MemoryIo::new(to_relay.clone(), from_relay.clone()),
            // The application production runs, ALPN routing included.
            AlpnRouter::new(EngineConfig::default(), session, shed, None).with_authorizer(auth),
            tls.worker_config(),
        );
        let clients: Vec<Client> = setups
            .iter()
            .enumerate()
            .map(|(i, setup)| {
                let config = SessionConfig {
                    setup: setup.clone(),
                    ..SessionConfig::default()
                };
                Client::connect_with(client_addr(i), tls.roots.clone(), config)
            })
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
    pub fn hold(&mut self, c: usize, held: bool) {
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

/// Publisher (client 0) publishes live/cam1 and waits for the REQUEST_OK.
pub fn publish_namespace(h: &mut Harness) {
    h.clients[0]
        .driver
        .session
        .publish_namespace(ns(&["live", "cam1"]), Parameters::default())
        .unwrap();
    h.run_until("REQUEST_OK for PUBLISH_NAMESPACE", |h| {
        !h.clients[0].take(is_request_ok).is_empty()
    });
}

/// Publisher (client 0) publishes the namespace and answers the relay's one
/// upstream SUBSCRIBE; returns the track alias it assigned.
pub fn publish_and_serve(h: &mut Harness, subscribers: std::ops::Range<usize>) -> u64 {
    publish_namespace(h);
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

/// Client 0 pushes `names` with PUBLISH; returns their aliases once the
/// relay accepted each (PUBLISH_OK with Forward 1).
pub fn publish_tracks(h: &mut Harness, names: &[&str]) -> Vec<u64> {
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

pub fn subscribe_to(h: &mut Harness, c: usize, name: &str, parameters: Parameters) -> RequestId {
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

pub fn send(h: &mut Harness, alias: u64, g: u64, o: u64, priority: u8, len: usize) {
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
pub fn standalone_fetch(
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
pub fn received(h: &mut Harness, c: usize) -> Vec<(u64, u64, u64)> {
    h.clients[c]
        .objects()
        .into_iter()
        .map(|o| (o.track_alias, o.location.group, o.location.object))
        .collect()
}

/// What a subscriber saw of one track: objects per group, and the groups
/// whose subgroup stream was reset (with the code).
#[derive(Default, Debug)]
pub struct TrackView {
    pub objects: std::collections::BTreeMap<u64, Vec<u64>>,
    pub resets: std::collections::BTreeMap<u64, u64>,
    /// Groups whose subgroup stream ended with a FIN.
    pub finished: Vec<u64>,
}

pub fn collect(h: &mut Harness, c: usize, views: &mut std::collections::HashMap<u64, TrackView>) {
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
