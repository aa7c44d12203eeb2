//! Objects (and subgroup ends) that reach the relay on an alias its
//! upstream SUBSCRIBE_OK has not announced yet, held for the engine to
//! replay in order once it is announced. Bounded; oldest dropped first.

use std::collections::{HashMap, VecDeque};

use moqt::StreamResetCode;

use crate::{cache::CachedObject, ids::SessionId};

/// Objects may arrive on a data stream before the SUBSCRIBE_OK that
/// announces their track alias (different QUIC streams are not ordered):
/// while an upstream SUBSCRIBE to a publisher is pending, what arrives on
/// aliases it has not announced yet is kept, within these bounds (per
/// worker, [`EngineConfig`](crate::engine::EngineConfig)), and replayed in
/// order when the alias is announced.
pub const DEFAULT_EARLY_MAX_ENTRIES: usize = 1024;
/// See [`DEFAULT_EARLY_MAX_ENTRIES`].
pub const DEFAULT_EARLY_MAX_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) enum Early {
    Object(CachedObject),
    SubgroupEnded {
        group: u64,
        subgroup: u64,
        reset: Option<StreamResetCode>,
    },
}

/// The held entries of all publishers of a worker. When it is full, the
/// publisher holding the most bytes loses its oldest entry: a publisher
/// that floods it (objects on aliases it never announces) pushes out its
/// own entries, not those of a publisher that holds little.
#[derive(Debug)]
pub(crate) struct EarlyBuffer {
    entries: VecDeque<(SessionId, u64, Early)>,
    bytes: usize,
    /// (entries, bytes) held per publisher.
    held: HashMap<SessionId, (usize, usize)>,
    max_entries: usize,
    max_bytes: usize,
    /// Entries dropped because the buffer was full.
    dropped: u64,
}

impl Default for EarlyBuffer {
    fn default() -> Self {
        Self::new(DEFAULT_EARLY_MAX_ENTRIES, DEFAULT_EARLY_MAX_BYTES)
    }
}

impl EarlyBuffer {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            held: HashMap::new(),
            max_entries,
            max_bytes,
            dropped: 0,
        }
    }

    fn size(e: &Early) -> usize {
        match e {
            Early::Object(o) => o.payload.len() + 64,
            Early::SubgroupEnded { .. } => 32,
        }
    }

    fn count_in(&mut self, publisher: SessionId, e: &Early) {
        let size = Self::size(e);
        self.bytes += size;
        let h = self.held.entry(publisher).or_default();
        h.0 += 1;
        h.1 += size;
    }

    fn count_out(&mut self, publisher: SessionId, e: &Early) {
        let size = Self::size(e);
        self.bytes -= size;
        if let Some(h) = self.held.get_mut(&publisher) {
            h.0 -= 1;
            h.1 -= size;
            if h.0 == 0 {
                self.held.remove(&publisher);
            }
        }
    }

    pub(crate) fn push(&mut self, publisher: SessionId, alias: u64, e: Early) {
        self.count_in(publisher, &e);
        self.entries.push_back((publisher, alias, e));
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            // Only when full: a scan of the publishers and of the entries.
            let Some(&heaviest) = self
                .held
                .iter()
                .max_by_key(|(_, (_, bytes))| *bytes)
                .map(|(p, _)| p)
            else {
                break;
            };
            let Some(i) = self.entries.iter().position(|(p, _, _)| *p == heaviest) else {
                break;
            };
            let (p, _, old) = self.entries.remove(i).expect("a found entry");
            self.count_out(p, &old);
            self.dropped += 1;
        }
    }

    /// Entries dropped so far because the buffer was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Takes every entry of (`publisher`, `alias`), in arrival order.
    pub(crate) fn take(&mut self, publisher: SessionId, alias: u64) -> Vec<Early> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for (p, a, e) in std::mem::take(&mut self.entries) {
            if p == publisher && a == alias {
                self.count_out(p, &e);
                taken.push(e);
            } else {
                kept.push_back((p, a, e));
            }
        }
        self.entries = kept;
        taken
    }

    pub(crate) fn forget_session(&mut self, session: SessionId) {
        let Some((_, bytes)) = self.held.remove(&session) else {
            return;
        };
        self.bytes -= bytes;
        self.entries.retain(|(p, _, _)| *p != session);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use moqt::{Location, ObjectStatus, Properties};

    use super::*;

    fn object(len: usize) -> Early {
        Early::Object(CachedObject {
            location: Location::new(0, 0),
            subgroup: 0,
            datagram: false,
            publisher_priority: 128,
            explicit_priority: false,
            end_of_group: false,
            first_object: false,
            status: ObjectStatus::Normal,
            properties: Properties::new(),
            payload: Bytes::from(vec![0u8; len]),
            part: None,
        })
    }

    /// A publisher flooding objects on an alias it never announces pushes
    /// out its own entries, not the few of an honest publisher.
    #[test]
    fn a_flooding_publisher_loses_its_own_entries() {
        let (honest, hog) = (SessionId(1), SessionId(2));
        let mut b = EarlyBuffer::new(100, 64 * 1024);
        for _ in 0..3 {
            b.push(honest, 7, object(100));
        }
        for _ in 0..10_000 {
            b.push(hog, 9, object(1000));
        }
        assert!(b.len() <= 100 && b.bytes <= 64 * 1024);
        assert_eq!(b.take(honest, 7).len(), 3, "the honest entries went");
        assert!(b.dropped() >= 10_000 - 100);
        b.forget_session(hog);
        assert_eq!((b.len(), b.bytes), (0, 0));
        assert!(b.held.is_empty());
    }
}
