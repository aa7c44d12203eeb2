//! Links to upstream relays (`fastrelay run --upstream`): each worker keeps
//! one client connection, with a MoQT session in the client role, to every
//! configured upstream relay. The engine uses a link that is up as the
//! publisher of last resort (`relay_engine::engine` links); this module
//! only keeps the connections: when to connect, the handshake deadline and
//! the reconnect backoff.
//!
//! A link that closes (the upstream restarted, said GOAWAY, went idle or
//! refused us) is reconnected after a backoff that starts at
//! [`BACKOFF_MIN`] and doubles per failed attempt up to [`BACKOFF_MAX`];
//! a session that got as far as the upstream's SETUP resets it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dataplane::worker::Connections;
use moqt::{Setup, SetupOption};
use quinn_proto::{ClientConfig, ConnectionHandle};

/// MOQT_IMPLEMENTATION a relay sends on its links: a relay that receives
/// a session saying it serves that session's subscriptions from local
/// publishers only (the loop rule, see the engine's `links` module).
pub const LINK_IMPLEMENTATION: &[u8] = b"fastrelay-link";
/// Most upstream relays one relay may be configured with.
pub const MAX_UPSTREAMS: usize = 16;
/// First wait before reconnecting a link.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting a link.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A link whose handshake and SETUP exchange take longer is given up (and
/// retried after its backoff): an upstream that is down answers nothing,
/// and its ICMP errors reach the kernel, not an AF_XDP socket.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A link whose upstream said GOAWAY but keeps the connection open longer
/// is closed by us then (its subscriptions end, new ones go to a fresh link).
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// One upstream relay, as configured.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The URL as given (for logs): `moqt://host:port[/path]`.
    pub url: String,
    pub remote: SocketAddr,
    /// The name its certificate is checked against (TLS SNI).
    pub server_name: String,
    /// The URI authority, sent as the AUTHORITY setup option.
    pub authority: String,
    /// Sent as the PATH setup option when present.
    pub path: Option<String>,
    pub client: ClientConfig,
    /// A JWT for upstream relays that require authorization, sent in
    /// SETUP (AUTHORIZATION_TOKEN, USE_VALUE; see docs/auth.md).
    pub token: Option<Bytes>,
}

impl UpstreamConfig {
    /// The SETUP options of a session on this link.
    pub(super) fn setup(&self) -> Setup {
        let mut options = vec![
            SetupOption::Authority(Bytes::from(self.authority.clone())),
            SetupOption::MoqtImplementation(Bytes::from_static(LINK_IMPLEMENTATION)),
        ];
        if let Some(path) = &self.path {
            options.push(SetupOption::Path(Bytes::from(path.clone())));
        }
        if let Some(token) = &self.token {
            options.push(SetupOption::AuthorizationToken(moqt::AuthToken::UseValue {
                token_type: 0,
                value: token.clone(),
            }));
        }
        Setup { options }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No connection; the next attempt is due at `retry_at`.
    Idle { retry_at: Instant },
    /// Handshake or SETUP exchange in progress.
    Connecting {
        ch: ConnectionHandle,
        since: Instant,
    },
    /// The session is ready.
    Up { ch: ConnectionHandle },
    /// The upstream said GOAWAY: no new subscriptions; closed by us after
    /// [`LEAVE_TIMEOUT`] unless the upstream closes it first.
    Leaving {
        ch: ConnectionHandle,
        since: Instant,
    },
    /// Being closed; reconnected once the connection is gone.
    Closing { ch: ConnectionHandle },
}

struct Link {
    config: UpstreamConfig,
    state: State,
    backoff: Duration,
}

impl Link {
    /// The next attempt after the backoff, which doubles (up to
    /// [`BACKOFF_MAX`]) for the one after.
    fn retry_later(&mut self, now: Instant) {
        self.state = State::Idle {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }
}

/// This worker's links, in configuration order (the rank).
#[derive(Default)]
pub(super) struct Links {
    links: Vec<Link>,
}

/// A connection a link just opened, for the application to set up.
pub(super) struct Opened {
    pub(super) ch: ConnectionHandle,
    pub(super) setup: Setup,
}

impl Links {
    pub(super) fn new(upstreams: Vec<UpstreamConfig>, now: Instant) -> Self {
        Self {
            links: upstreams
                .into_iter()
                .map(|config| Link {
                    config,
                    state: State::Idle { retry_at: now },
                    backoff: BACKOFF_MIN,
                })
                .collect(),
        }
    }

    /// Whether some link waits for the clock (to connect, or for its
    /// handshake's deadline).
    pub(super) fn needs_clock(&self) -> bool {
        self.links
            .iter()
            .any(|l| !matches!(l.state, State::Up { .. } | State::Closing { .. }))
    }

    /// The configuration rank of the link on `ch`, if it is one.
    pub(super) fn rank(&self, ch: ConnectionHandle) -> Option<usize> {
        self.links.iter().position(|l| match l.state {
            State::Connecting { ch: c, .. }
            | State::Up { ch: c }
            | State::Leaving { ch: c, .. }
            | State::Closing { ch: c } => c == ch,
            State::Idle { .. } => false,
        })
    }

    /// Handshakes past [`CONNECT_TIMEOUT`] and links left open past
    /// [`LEAVE_TIMEOUT`] after a GOAWAY: the caller closes them; they are
    /// reconnected once gone.
    pub(super) fn overdue(&mut self, now: Instant) -> Vec<ConnectionHandle> {
        let mut late = Vec::new();
        for l in &mut self.links {
            let (ch, since, bound) = match l.state {
                State::Connecting { ch, since } => (ch, since, CONNECT_TIMEOUT),
                State::Leaving { ch, since } => (ch, since, LEAVE_TIMEOUT),
                _ => continue,
            };
            if now.duration_since(since) >= bound {
                tracing::info!(upstream = %l.config.url, "upstream link: closing it, no answer or end in time");
                l.state = State::Closing { ch };
                late.push(ch);
            }
        }
        late
    }

    /// Opens the links whose retry is due.
    pub(super) fn connect_due(&mut self, now: Instant, conns: &mut Connections<'_>) -> Vec<Opened> {
        let mut opened = Vec::new();
        for l in &mut self.links {
            let State::Idle { retry_at } = l.state else {
                continue;
            };
            if retry_at > now {
                continue;
            }
            let c = &l.config;
            match conns.connect(c.client.clone(), c.remote, &c.server_name) {
                Ok(ch) => {
                    tracing::debug!(upstream = %c.url, handle = ch.0, "upstream link connecting");
                    l.state = State::Connecting { ch, since: now };
                    opened.push(Opened {
                        ch,
                        setup: c.setup(),
                    });
                }
                Err(e) => {
                    tracing::warn!(upstream = %c.url, error = %e, "upstream link: cannot connect");
                    l.retry_later(now);
                }
            }
        }
        opened
    }

    /// The upstream's SETUP arrived on `ch`: the link is up (its rank
    /// returned), and its backoff starts over.
    pub(super) fn ready(&mut self, ch: ConnectionHandle) -> Option<usize> {
        let rank = self.rank(ch)?;
        let l = &mut self.links[rank];
        if !matches!(l.state, State::Connecting { .. }) {
            return None;
        }
        tracing::info!(upstream = %l.config.url, handle = ch.0, "upstream link up");
        l.state = State::Up { ch };
        l.backoff = BACKOFF_MIN;
        Some(rank)
    }

    /// GOAWAY on `ch`: whether it is a link (now leaving).
    pub(super) fn going_away(&mut self, ch: ConnectionHandle, now: Instant) -> bool {
        let Some(rank) = self.rank(ch) else {
            return false;
        };
        let l = &mut self.links[rank];
        tracing::info!(upstream = %l.config.url, "upstream link: GOAWAY, reconnecting when it closes");
        l.state = State::Leaving { ch, since: now };
        true
    }

    /// The connection `ch` is gone: whether it was a link (a reconnect is
    /// scheduled after its backoff).
    pub(super) fn closed(&mut self, ch: ConnectionHandle, now: Instant) -> bool {
        let Some(rank) = self.rank(ch) else {
            return false;
        };
        let l = &mut self.links[rank];
        tracing::info!(
            upstream = %l.config.url,
            retry_in_ms = l.backoff.as_millis() as u64,
            "upstream link closed"
        );
        l.retry_later(now);
        true
    }
}
