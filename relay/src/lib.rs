//! fastrelay's MoQT relay (see `docs/moqt-relay-plan.md`).
//!
//! - [`priority`]: the draft-18 send order and its mapping onto quinn-proto
//!   stream priorities;
//! - [`cache`]: the bounded per-track cache of recent groups;
//! - [`engine`]: namespaces, tracks, upstream-aggregated subscriptions,
//!   filters and fan-out, sans-IO;
//! - `early`: objects that beat their SUBSCRIBE_OK, held for the engine;
//! - [`quic`]: a `moqt::Session` driven over one quinn-proto connection,
//!   keeping each connection's backlog where it can still be shed;
//! - [`shed`]: what a congested subscriber loses (delivery timeouts,
//!   backlog bound, datagrams first);
//! - [`app`]: the relay as a `dataplane` worker application (one session per
//!   connection, one engine per worker);
//! - [`directory`]: what each worker's sessions publish, shared by the group;
//! - [`crossworker`]: the bounded lock-free queues between workers;
//! - [`group`]: cross-worker fan-out, other workers seen as engine sessions.

pub mod app;
pub mod crossworker;
pub mod group;
pub mod quic;

// The sans-IO engine lives in its own crate so that Cargo keeps it free of
// quinn-proto; re-exported under the paths the glue has always used.
pub use relay_engine::{cache, directory, early, engine, priority, shed};
