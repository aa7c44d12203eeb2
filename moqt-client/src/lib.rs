//! A MoQT (draft-18) endpoint on quinn/tokio: one driver task runs a
//! sans-IO [`moqt::Session`] over a [`quinn::Connection`], for either role.
//!
//! # Tasks and channels (all bounded)
//!
//! * The **driver** task owns the `Session`. It receives application
//!   operations on a channel of [`OP_QUEUE`] entries and transport input on a
//!   channel of [`INPUT_QUEUE`] entries, and carries out the session's
//!   commands.
//! * One **writer** task per send stream (opened by the session's
//!   `OpenUni`/`OpenBi`), fed by a channel of [`WRITE_QUEUE`] operations;
//!   payloads are written with `write_chunk(Bytes)` untouched. The driver
//!   awaits room in that queue, so a stream the peer does not read
//!   back-pressures the application (and delays other input meanwhile).
//!   A peer STOP_SENDING is reported back to the session.
//! * One **reader** task per receive stream: `read_chunk` (zero-copy `Bytes`)
//!   into the input channel; a local STOP_SENDING reaches it on a oneshot.
//! * One **acceptor** task: incoming uni/bi streams, datagrams, and the
//!   connection's end.
//!
//! Towards the application: incoming SUBSCRIBEs queue up to
//! [`INCOMING_QUEUE`] (beyond: answered with REQUEST_ERROR EXCESSIVE_LOAD);
//! each subscription / fetch buffers [`OBJECT_QUEUE`] objects — when the
//! application does not keep up, further objects are dropped and counted
//! ([`Subscription::dropped`]) rather than stalling the whole session.
//! Objects arriving before their SUBSCRIBE_OK (another stream won the race)
//! are held, at most [`ORPHAN_OBJECTS`], and delivered once the alias is
//! known.
//!
//! Nothing here panics on peer input: the session closes on protocol
//! violations and the reason reaches every waiting call as a
//! [`SessionClosed`] error (downcast it from the `anyhow::Error`).
//!
//! # Modules
//!
//! * [`MoqSession`] (set-up, subscriber side) and its publisher-side calls;
//! * [`Subscription`] and the values handed out ([`ReceivedObject`],
//!   [`IncomingSubscribe`], [`SubscriptionEnd`], [`SessionClosed`]);
//! * helpers for names ([`track_name`], [`namespace_from_path`]) and for
//!   self-checking test payloads ([`test_payload`], [`check_test_payload`],
//!   [`unix_ns`]).
//!
//! QUIC endpoint set-up (certificates, ALPN) is left to the caller: pass a
//! [`quinn::Endpoint`] whose client configuration offers [`MOQT_ALPN`], or
//! an established [`quinn::Connection`].

use std::time::Duration;

mod driver;
mod naming;
mod payload;
mod publisher;
mod session;
mod types;

pub use naming::{namespace_from_path, track_name};
pub use payload::{check_test_payload, fnv1a64, test_payload, unix_ns, TEST_PAYLOAD_HEADER};
pub use session::{MoqClient, MoqSession, Subscription};
pub use types::{IncomingSubscribe, ReceivedObject, SessionClosed, SubscriptionEnd};

/// ALPN of MoQT draft-18 over raw QUIC.
pub const MOQT_ALPN: &[u8] = moqt::ALPN;

/// Application operations queued to the driver.
pub const OP_QUEUE: usize = 256;
/// Transport input (stream chunks, new streams, datagrams) queued to the driver.
pub const INPUT_QUEUE: usize = 1024;
/// Write operations queued per send stream.
pub const WRITE_QUEUE: usize = 64;
/// Incoming SUBSCRIBEs (and PUBLISH_NAMESPACEs) waiting for the application.
pub const INCOMING_QUEUE: usize = 64;
/// Objects buffered per subscription or fetch.
pub const OBJECT_QUEUE: usize = 4096;
/// Objects held for a Track Alias whose SUBSCRIBE_OK has not arrived yet.
pub const ORPHAN_OBJECTS: usize = 1024;
/// How long the SETUP exchange may take.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// After PUBLISH_DONE, how long to wait for the data streams it counts.
pub const PUBLISH_DONE_GRACE: Duration = Duration::from_secs(2);
