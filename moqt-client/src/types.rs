//! Values a session hands to the application: why it closed, incoming
//! SUBSCRIBEs, received objects and how a subscription ended; and the
//! close state the driver and the handles share.

use std::{fmt, sync::Mutex, time::Instant};

use anyhow::anyhow;

use bytes::Bytes;
use moqt::session::{PeerAbort, RequestId};
use moqt::{
    FullTrackName, ObjectStatus, Parameters, PublishDoneCode, SessionErrorCode, SubscriptionFilter,
};

/// The session ended; `code` is the MoQT termination code (§3.5), from
/// the peer's CONNECTION_CLOSE or from our own session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionClosed {
    /// Termination code.
    pub code: SessionErrorCode,
    /// Reason phrase.
    pub reason: String,
    /// True if the peer (or the transport) closed it, false if we did.
    pub by_peer: bool,
}

impl fmt::Display for SessionClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MoQT session closed by {} with code {:#x} ({:?}): {}",
            if self.by_peer { "peer" } else { "us" },
            self.code.code(),
            self.code,
            self.reason
        )
    }
}

impl std::error::Error for SessionClosed {}

/// A peer's SUBSCRIBE waiting for
/// [`MoqSession::accept_subscribe`](crate::MoqSession::accept_subscribe) or
/// [`MoqSession::reject_subscribe`](crate::MoqSession::reject_subscribe).
#[derive(Clone, Debug)]
pub struct IncomingSubscribe {
    /// Its Request ID.
    pub id: RequestId,
    /// The track.
    pub track: FullTrackName,
    /// SUBSCRIPTION_FILTER, if given.
    pub filter: Option<SubscriptionFilter>,
    /// All its parameters.
    pub parameters: Parameters,
}

/// An object received on a subscription or fetch.
#[derive(Clone, Debug)]
pub struct ReceivedObject {
    /// Group ID.
    pub group: u64,
    /// Subgroup ID; `None` for datagrams (and datagram-preference fetch objects).
    pub subgroup: Option<u64>,
    /// Object ID.
    pub object_id: u64,
    /// Publisher Priority, if the header carried one.
    pub priority: Option<u8>,
    /// Object Status.
    pub status: ObjectStatus,
    /// Payload (a slice of the received bytes).
    pub payload: Bytes,
    /// True if it came in a datagram.
    pub datagram: bool,
    /// When the driver handed it on.
    pub received: Instant,
}

/// How a subscription ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// PUBLISH_DONE from the publisher.
    Done {
        /// Status code.
        code: PublishDoneCode,
        /// Reason.
        reason: String,
    },
    /// The peer cancelled the request stream.
    Cancelled(PeerAbort),
    /// The session ended.
    SessionClosed(SessionClosed),
}

pub(crate) enum SubItem {
    Object(ReceivedObject),
    End(SubscriptionEnd),
}

/// State the driver and every handle share: why the session ended.
pub(crate) struct Shared {
    pub(crate) closed: Mutex<Option<SessionClosed>>,
}

impl Shared {
    pub(crate) fn closed_error(&self) -> anyhow::Error {
        match self.closed.lock().ok().and_then(|c| c.clone()) {
            Some(c) => anyhow::Error::new(c),
            None => anyhow!("MoQT session driver is gone"),
        }
    }
}
