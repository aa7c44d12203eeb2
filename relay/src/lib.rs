//! The MoQT relay engine, sans-IO (see `docs/moqt-relay-plan.md`).
//!
//! Built so far: the draft-18 send order and its mapping onto quinn-proto
//! stream priorities ([`priority`]), the bounded per-track cache of recent
//! groups ([`cache`]), and the engine of namespaces, tracks, subscriptions
//! and fan-out ([`engine`]). The glue between the engine, `moqt`'s session
//! and the dataplane worker follows.

pub mod cache;
pub mod engine;
pub mod priority;
