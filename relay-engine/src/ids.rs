//! The names the engine and its neighbours share: sessions and request IDs.
//! Kept apart from the engine so that the modules it uses (the early-object
//! buffer, the directory) can name sessions without importing the engine.

/// A request ID on one session (§10.1): the session layer's own type, so
/// the glue passes IDs through without converting them.
pub use moqt::session::RequestId;

/// A session (one QUIC connection) as the glue numbers it, or another
/// worker of the process seen as one peer ([`SessionId::worker`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Session IDs from here on name peer workers: far above any connection
/// handle (a slab index), so they never collide with one.
const WORKER_SESSION_BASE: u64 = 1 << 62;

impl SessionId {
    /// The pseudo-session standing for worker `w` of the group: its
    /// published namespaces, its subscriptions to our tracks and ours to its
    /// tracks all go through it (the `relay` crate's `group` module).
    pub const fn worker(w: usize) -> Self {
        Self(WORKER_SESSION_BASE + w as u64)
    }

    pub const fn is_worker(self) -> bool {
        self.0 >= WORKER_SESSION_BASE
    }

    /// The worker index of a pseudo-session.
    pub fn worker_index(self) -> Option<usize> {
        self.is_worker()
            .then(|| (self.0 - WORKER_SESSION_BASE) as usize)
    }
}
