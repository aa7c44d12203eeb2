//! Objects (and subgroup ends) that reach the relay on an alias its
//! upstream SUBSCRIBE_OK has not announced yet, held for the engine to
//! replay in order once it is announced. Bounded; oldest dropped first.

use std::collections::VecDeque;

use moqt::StreamResetCode;

use crate::{cache::CachedObject, engine::SessionId};

/// Objects may arrive on a data stream before the SUBSCRIBE_OK that
/// announces their track alias (different QUIC streams are not ordered):
/// while an upstream SUBSCRIBE to a publisher is pending, what arrives on
/// aliases it has not announced yet is kept, within these bounds, and
/// replayed in order when the alias is announced.
pub(crate) const EARLY_MAX_ENTRIES: usize = 1024;
pub(crate) const EARLY_MAX_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) enum Early {
    Object(CachedObject),
    SubgroupEnded {
        group: u64,
        subgroup: u64,
        reset: Option<StreamResetCode>,
    },
}

#[derive(Debug, Default)]
pub(crate) struct EarlyBuffer {
    entries: VecDeque<(SessionId, u64, Early)>,
    bytes: usize,
    /// Entries dropped because the buffer was full.
    dropped: u64,
}

impl EarlyBuffer {
    fn size(e: &Early) -> usize {
        match e {
            Early::Object(o) => o.payload.len() + 64,
            Early::SubgroupEnded { .. } => 32,
        }
    }

    pub(crate) fn push(&mut self, publisher: SessionId, alias: u64, e: Early) {
        self.bytes += Self::size(&e);
        self.entries.push_back((publisher, alias, e));
        while self.entries.len() > EARLY_MAX_ENTRIES || self.bytes > EARLY_MAX_BYTES {
            let Some((_, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= Self::size(&old);
            self.dropped += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes every entry of (`publisher`, `alias`), in arrival order.
    pub(crate) fn take(&mut self, publisher: SessionId, alias: u64) -> Vec<Early> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for (p, a, e) in self.entries.drain(..) {
            if p == publisher && a == alias {
                self.bytes -= Self::size(&e);
                taken.push(e);
            } else {
                kept.push_back((p, a, e));
            }
        }
        self.entries = kept;
        taken
    }

    pub(crate) fn forget_session(&mut self, session: SessionId) {
        let bytes = &mut self.bytes;
        self.entries.retain(|(p, _, e)| {
            let keep = *p != session;
            if !keep {
                *bytes -= Self::size(e);
            }
            keep
        });
    }
}
