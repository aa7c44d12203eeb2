//! [`Subscription`]: the receiving end of one of our SUBSCRIBEs or joining
//! FETCHes.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use moqt::session::RequestId;
use moqt::{Location, SessionErrorCode};
use tokio::sync::mpsc;

use super::MoqSession;
use crate::driver::{Op, SubscribeAccepted};
use crate::types::{ReceivedObject, SessionClosed, SubItem, SubscriptionEnd};

/// A subscription (or joining fetch) of ours.
pub struct Subscription {
    id: RequestId,
    alias: Option<u64>,
    largest: Option<Location>,
    rx: mpsc::Receiver<SubItem>,
    end: Option<SubscriptionEnd>,
    dropped: Arc<AtomicU64>,
    resets: Arc<std::sync::Mutex<Vec<(u64, u64)>>>,
    session: MoqSession,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("alias", &self.alias)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(crate) fn new(ok: SubscribeAccepted, session: MoqSession) -> Self {
        Subscription {
            id: ok.id,
            alias: ok.alias,
            largest: ok.largest,
            rx: ok.rx,
            end: None,
            dropped: ok.dropped,
            resets: ok.resets,
            session,
        }
    }

    /// Its Request ID.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// The Track Alias from SUBSCRIBE_OK (`None` for a fetch).
    pub fn track_alias(&self) -> Option<u64> {
        self.alias
    }

    /// LARGEST_OBJECT from SUBSCRIBE_OK, if the publisher sent it.
    pub fn largest(&self) -> Option<Location> {
        self.largest
    }

    /// Objects dropped because this subscription's queue
    /// ([`OBJECT_QUEUE`](crate::OBJECT_QUEUE)) was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subgroup streams of this subscription the publisher reset so far:
    /// (group, §3.3.3 code), in arrival order.
    pub fn resets(&self) -> Vec<(u64, u64)> {
        self.resets.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Why it ended, once [`Subscription::next_object`] returned `None`.
    pub fn end(&self) -> Option<&SubscriptionEnd> {
        self.end.as_ref()
    }

    /// The next object; `None` once PUBLISH_DONE (and the data streams it
    /// counts) arrived, the request ended or the session closed.
    pub async fn next_object(&mut self) -> Option<ReceivedObject> {
        if self.end.is_some() {
            return None;
        }
        match self.rx.recv().await {
            Some(SubItem::Object(o)) => Some(o),
            Some(SubItem::End(e)) => {
                self.end = Some(e);
                None
            }
            None => {
                self.end = Some(SubscriptionEnd::SessionClosed(
                    self.session.closed().unwrap_or(SessionClosed {
                        code: SessionErrorCode::InternalError,
                        reason: "driver gone".into(),
                        by_peer: false,
                    }),
                ));
                None
            }
        }
    }

    /// Cancel (§3.3.2): reset and stop the request stream with CANCELLED.
    pub async fn cancel(mut self) {
        self.rx.close();
        let _ = self.session.ops.send(Op::Cancel { id: self.id }).await;
    }
}
