//! fastrelay's relay engine: what a MoQT relay decides, without any I/O.
//!
//! The engine speaks in sessions ([`engine::SessionId`]) and request IDs
//! (`moqt`'s own [`engine::RequestId`]); the glue in the `relay` crate turns
//! session events into calls here and the engine's [`engine::Action`]s into
//! session commands. Cargo enforces the layering: this crate depends on
//! `moqt` and `bytes` only, never on quinn-proto or the dataplane.
//!
//! - [`engine`]: namespaces, tracks, upstream-aggregated subscriptions,
//!   filters, fan-out, FETCH planning;
//! - [`cache`]: the bounded per-track cache of recent groups;
//! - [`early`]: objects that beat their SUBSCRIBE_OK, held for the engine;
//! - [`priority`]: the draft-18 send order (§7) and its mapping onto
//!   transport stream priorities;
//! - [`shed`]: what a congested subscriber loses (delivery timeouts,
//!   backlog bound, datagrams first), as a pure policy;
//! - [`directory`]: what each worker's sessions publish, shared by the
//!   workers of one process;
//! - [`ids`]: session and request IDs, shared by all of the above.

#![forbid(unsafe_code)]

pub mod cache;
pub mod directory;
pub mod early;
pub mod engine;
pub mod ids;
pub mod priority;
pub mod shed;
