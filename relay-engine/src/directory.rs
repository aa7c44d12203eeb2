//! The group-wide directory of what each worker's sessions publish:
//! namespaces (PUBLISH_NAMESPACE) and tracks pushed with PUBLISH.
//!
//! Control-plane changes are rare, so a mutex guards the entries; a version
//! counter lets every worker notice a change with one atomic load per
//! iteration and copy the entries only then. The object path never
//! touches it.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex, MutexGuard,
};

use moqt::{FullTrackName, TrackNamespace};

use crate::ids::{RequestId, SessionId};

/// What one entry announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    Namespace(TrackNamespace),
    Track(FullTrackName),
}

/// One published namespace or track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unique in the directory, never reused: other workers use it as the
    /// request ID of the namespace on the owner's pseudo-session.
    pub id: u64,
    /// The worker whose session publishes it.
    pub worker: usize,
    pub session: SessionId,
    pub request: RequestId,
    pub what: Published,
}

#[derive(Debug, Default)]
struct Entries {
    next_id: u64,
    list: Vec<Entry>,
}

#[derive(Debug, Default)]
pub struct Directory {
    /// Bumped after every change.
    version: AtomicU64,
    entries: Mutex<Entries>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Changes so far; cheap enough to read every iteration.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        // A worker that panicked mid-update left whole entries behind (every
        // change is one push or retain): the list is still usable.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self) {
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Worker `worker`'s `session` published `what` with `request`.
    pub fn add(&self, worker: usize, session: SessionId, request: RequestId, what: Published) {
        let mut entries = self.lock();
        let id = entries.next_id;
        entries.next_id += 1;
        entries.list.push(Entry {
            id,
            worker,
            session,
            request,
            what,
        });
        drop(entries);
        self.changed();
    }

    /// The request was withdrawn (PUBLISH_NAMESPACE cancelled, PUBLISH ended).
    pub fn remove(&self, worker: usize, session: SessionId, request: RequestId) {
        self.remove_where(|e| e.worker == worker && e.session == session && e.request == request);
    }

    /// The session is gone: everything it published goes.
    pub fn remove_session(&self, worker: usize, session: SessionId) {
        self.remove_where(|e| e.worker == worker && e.session == session);
    }

    fn remove_where(&self, gone: impl Fn(&Entry) -> bool) {
        let mut entries = self.lock();
        let before = entries.list.len();
        entries.list.retain(|e| !gone(e));
        let changed = entries.list.len() != before;
        drop(entries);
        if changed {
            self.changed();
        }
    }

    /// The entries of every worker but `worker`, and the version they are of.
    pub fn others(&self, worker: usize) -> (u64, Vec<Entry>) {
        let entries = self.lock();
        // Read under the lock: no change can slip between list and version.
        let version = self.version();
        let list = entries
            .list
            .iter()
            .filter(|e| e.worker != worker)
            .cloned()
            .collect();
        (version, list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ns(s: &'static str) -> TrackNamespace {
        TrackNamespace::new([Bytes::from_static(s.as_bytes())]).unwrap()
    }

    #[test]
    fn entries_of_other_workers_and_versions() {
        let d = Directory::new();
        let v0 = d.version();
        d.add(0, SessionId(1), RequestId(0), Published::Namespace(ns("a")));
        d.add(1, SessionId(1), RequestId(2), Published::Namespace(ns("b")));
        d.add(1, SessionId(1), RequestId(4), Published::Namespace(ns("c")));
        assert!(d.version() > v0);
        let (_, seen_by_0) = d.others(0);
        assert_eq!(seen_by_0.len(), 2);
        assert!(seen_by_0.iter().all(|e| e.worker == 1));
        let (v, seen_by_1) = d.others(1);
        assert_eq!(seen_by_1[0].what, Published::Namespace(ns("a")));
        // Removing nothing changes nothing.
        d.remove(0, SessionId(9), RequestId(0));
        assert_eq!(d.version(), v);
        d.remove(1, SessionId(1), RequestId(2));
        assert_eq!(d.others(0).1.len(), 1);
        d.remove_session(1, SessionId(1));
        assert!(d.others(0).1.is_empty());
        // IDs are never reused.
        d.add(1, SessionId(1), RequestId(2), Published::Namespace(ns("b")));
        assert_eq!(d.others(0).1[0].id, 3);
    }
}
