//! fastrelay's MoQT relay: the glue between the sans-IO engine
//! (`relay-engine`, re-exported here) and quinn-proto connections on the
//! dataplane's worker loop (see `docs/architecture.md`).
//!
//! - [`quic`]: a `moqt::Session` driven over one quinn-proto connection,
//!   keeping each connection's backlog where it can still be shed;
//! - [`auth`]: JWT authorization of publishers and subscribers (sans-IO);
//! - [`app`]: the relay as a `dataplane` worker application (one session per
//!   connection, one engine per worker): session events to engine calls,
//!   engine actions to session calls, FETCH serving, shedding applied;
//! - [`router`]: the worker application, choosing the relay or the echo
//!   self-test per connection by ALPN;
//! - [`telemetry`]: objects and bytes counted, the relay hop's latency;
//! - [`crossworker`]: the bounded lock-free queues between workers;
//! - [`group`]: cross-worker fan-out, other workers seen as engine sessions;
//! - from `relay-engine`: [`engine`], [`cache`], [`early`], [`priority`],
//!   [`shed`] and [`directory`].

pub mod app;
pub mod auth;
pub mod crossworker;
pub mod group;
pub mod quic;
pub mod router;
pub mod telemetry;

// The sans-IO engine lives in its own crate so that Cargo keeps it free of
// quinn-proto; re-exported under the paths the glue has always used.
pub use relay_engine::{cache, directory, early, engine, priority, shed};
