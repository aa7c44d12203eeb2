//! The whole relay without sockets: the dataplane worker running the
//! production [`AlpnRouter`](relay::router::AlpnRouter) (and so the relay's
//! [`RelayApp`](relay::app::RelayApp)) over an in-memory backend, and
//! quinn-proto clients that each run a `moqt::Session` through the same
//! [`SessionDriver`](relay::quic::SessionDriver) the relay uses.
//! Publisher and subscribers speak draft-18 through real QUIC and TLS.

// Clients are numbered (0 publishes, the others subscribe): indexing reads best.
#![allow(clippy::needless_range_loop)]

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod auth;
mod congestion;
mod fan_out;
mod requests;
mod stream_codes;
mod telemetry;
