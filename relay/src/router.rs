//! What the relay's workers run: the MoQT relay for ALPN `moqt-18` (and for
//! `h3`, where browsers run it inside WebTransport), and the echo self-test
//! for ALPN `fastrelay-echo/1`, chosen per connection by the protocol the
//! client negotiated. The relay's in-memory tests run this same
//! application, so what they check is what production runs.

use std::collections::HashMap;

use crate::{
    app::{RelayApp, RelayReport},
    auth::Authorizer,
    engine::EngineConfig,
    group::RelayPart,
    shed::ShedConfig,
};
use dataplane::{
    echo::{EchoApp, ECHO_ALPN},
    worker::{Application, Connections},
};
use moqt::session::SessionConfig;
use quinn_proto::{ConnectionHandle, Event};

/// The ALPN protocols the relay offers, most preferred first.
pub const ALPNS: [&[u8]; 3] = [moqt::ALPN, crate::quic::H3_ALPN, ECHO_ALPN];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Moqt,
    Echo,
}

/// The worker application: one per worker, routing each connection to the
/// relay or to the echo self-test by its negotiated ALPN.
pub struct AlpnRouter {
    relay: RelayApp,
    echo: EchoApp,
    kinds: HashMap<ConnectionHandle, Kind>,
}

impl AlpnRouter {
    /// Where the relay publishes what its subscribers lost.
    pub fn report(&self) -> std::sync::Arc<std::sync::Mutex<RelayReport>> {
        self.relay.report()
    }

    /// Where the relay publishes its hop latencies.
    pub fn hop_histogram(
        &self,
    ) -> std::sync::Arc<std::sync::Mutex<crate::telemetry::HopHistogram>> {
        self.relay.hop_histogram()
    }

    /// The MoQT relay behind the router (its engine, counters and state).
    pub fn relay(&self) -> &RelayApp {
        &self.relay
    }

    /// Every publish and subscribe needs a valid token from now on
    /// (`crate::auth`); `None` (the default) authorizes nothing.
    pub fn with_authorizer(mut self, authorizer: Option<std::sync::Arc<Authorizer>>) -> Self {
        self.relay.set_authorizer(authorizer);
        self
    }

    /// Links to upstream relays (see [`RelayApp::set_upstreams`]).
    pub fn set_upstreams(&mut self, upstreams: Vec<crate::app::UpstreamConfig>) {
        self.relay.set_upstreams(upstreams);
    }

    /// `group`: this worker's part of a relay group; `None` on its own.
    pub fn new(
        engine: EngineConfig,
        session: SessionConfig,
        shed: ShedConfig,
        group: Option<RelayPart>,
    ) -> Self {
        let mut relay = match group {
            Some(part) => RelayApp::in_group(engine, part),
            None => RelayApp::new(engine),
        };
        relay.set_shedding(shed);
        relay.set_session_config(session);
        Self {
            relay,
            echo: EchoApp::default(),
            kinds: HashMap::new(),
        }
    }
}

impl Application for AlpnRouter {
    fn handle_event(&mut self, ch: ConnectionHandle, event: Event, conns: &mut Connections<'_>) {
        let kind = match self.kinds.get(&ch) {
            Some(kind) => *kind,
            None => {
                // Applications start at the handshake's end; nothing of
                // theirs happens before it.
                if !matches!(event, Event::Connected) {
                    return;
                }
                let Some(conn) = conns.get_mut(ch) else {
                    return;
                };
                let kind = match crate::quic::negotiated_alpn(conn).as_deref() {
                    Some(p) if p == ECHO_ALPN => Kind::Echo,
                    _ => Kind::Moqt,
                };
                self.kinds.insert(ch, kind);
                kind
            }
        };
        match kind {
            Kind::Moqt => self.relay.handle_event(ch, event, conns),
            Kind::Echo => self.echo.handle_event(ch, event, conns),
        }
    }

    fn going_away(&mut self, conns: &mut Connections<'_>, grace: std::time::Duration) {
        self.relay.going_away(conns, grace);
    }

    fn drained(&mut self, conns: &mut Connections<'_>) {
        self.relay.drained(conns);
    }

    fn stopped(&mut self) {
        self.relay.stopped();
    }

    fn connection_closed(&mut self, ch: ConnectionHandle) {
        match self.kinds.remove(&ch) {
            Some(Kind::Moqt) => self.relay.connection_closed(ch),
            Some(Kind::Echo) => self.echo.connection_closed(ch),
            // A connection the relay opened (a link) that never completed
            // its handshake.
            None => self.relay.connection_closed(ch),
        }
    }

    // Only the relay talks to other workers.
    fn poll_external(&mut self, conns: &mut Connections<'_>) -> bool {
        self.relay.poll_external(conns)
    }

    fn external_pending(&self) -> bool {
        self.relay.external_pending()
    }
}
