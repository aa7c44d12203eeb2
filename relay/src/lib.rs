//! The MoQT relay engine, sans-IO (see `docs/moqt-relay-plan.md`).
//!
//! Built so far: the draft-18 send order and its mapping onto quinn-proto
//! stream priorities ([`priority`]), and the bounded per-track cache of
//! recent groups ([`cache`]). Tracks, subscriptions and fan-out over
//! `moqt::session` follow.

pub mod cache;
pub mod priority;
