//! Hand-off of mis-steered datagrams between the workers of one process.
//!
//! The NIC or kernel picks a worker by address; [`crate::cid::owner_of`]
//! names the worker that owns the connection. When they differ, the
//! receiving worker pushes the datagram into the owner's inbox: a bounded
//! lock-free queue. Nothing blocks: a full inbox drops the datagram (QUIC
//! recovers it like any loss) and the sender counts it.
//!
//! A worker that blocks in poll() would not see its inbox fill, so each
//! worker of a group also has an eventfd that it polls with its backend.
//! Senders write to it only when the owner said it is about to sleep: one
//! atomic load per hand-off, one syscall per sleep, none on the busy path.
//! The same wake-up serves other cross-worker traffic ([`GroupWaker`]): an
//! application that queues work for another worker wakes it the same way.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{fence, AtomicBool, Ordering},
        Arc,
    },
};

use anyhow::Context;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::cid::MAX_WORKERS;
// What travels between workers is the transport driver's input as it is.
pub use crate::driver::Datagram;

/// Default inbox size per worker: a few RX batches of headroom while the
/// owner is busy; beyond that, dropping is better than queueing latency.
pub const DEFAULT_INBOX_CAPACITY: usize = 1024;

/// Why a hand-off did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandOffError {
    /// The owner's inbox is full.
    Full,
    /// The owner is gone (its worker stopped).
    Gone,
}

/// Builds the inboxes of `workers` workers once; [`split`](Self::split)
/// gives each worker its [`Steering`].
pub struct WorkerGroup {
    peers: Arc<[Peer]>,
    receivers: Vec<Receiver<Datagram>>,
}

/// What other workers hold of one worker.
struct Peer {
    inbox: Sender<Datagram>,
    /// `None` in a group of one, where nobody hands over anything.
    waker: Option<Waker>,
}

struct Waker {
    /// Set by the worker just before it blocks; cleared by whoever wakes it.
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl Waker {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: plain syscall; the result is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("creating a hand-off eventfd");
        }
        Ok(Self {
            sleeping: AtomicBool::new(false),
            // SAFETY: a fresh descriptor that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Called after a push: wakes the worker if it is (about to be) asleep.
    fn wake(&self) {
        // Pairs with the fence in `Steering::prepare_sleep`: either the
        // sleeper sees our datagram in its inbox, or we see its flag.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to our own eventfd.
            // It can only fail when the counter is saturated: still readable.
            unsafe { libc::write(self.eventfd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }
}

impl WorkerGroup {
    /// `workers` inboxes of `inbox_capacity` datagrams each.
    pub fn new(workers: usize, inbox_capacity: usize) -> anyhow::Result<Self> {
        if workers == 0 || workers > MAX_WORKERS {
            anyhow::bail!("a worker group has 1..={MAX_WORKERS} workers, not {workers}");
        }
        if inbox_capacity == 0 {
            anyhow::bail!("a hand-off inbox needs room for at least one datagram");
        }
        let mut peers = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (inbox, receiver) = crossbeam_channel::bounded(inbox_capacity);
            let waker = if workers > 1 {
                Some(Waker::new()?)
            } else {
                None
            };
            peers.push(Peer { inbox, waker });
            receivers.push(receiver);
        }
        Ok(Self {
            peers: peers.into(),
            receivers,
        })
    }

    /// One [`Steering`] per worker, index `i` at position `i`.
    pub fn split(self) -> Vec<Steering> {
        let peers = self.peers;
        self.receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Steering {
                index,
                peers: peers.clone(),
                inbox,
            })
            .collect()
    }
}

/// One worker's place in its group: its index, its inbox, and the way into
/// every other worker's inbox.
pub struct Steering {
    index: usize,
    /// Every worker's inbox and waker, indexed by worker (our own included).
    peers: Arc<[Peer]>,
    inbox: Receiver<Datagram>,
}

impl Steering {
    /// A group of one: the owner is always this worker.
    pub fn single() -> Self {
        WorkerGroup::new(1, 1)
            .expect("a group of one is valid")
            .split()
            .pop()
            .expect("one steering")
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn workers(&self) -> usize {
        self.peers.len()
    }

    /// Queues `d` for worker `owner` without blocking.
    ///
    /// crossbeam's bounded (array) channel: `try_send`/`try_recv` are
    /// lock-free; its lock is only taken to wake blocked receivers, and no
    /// worker ever blocks on a receive.
    pub fn hand_off(&self, owner: usize, d: Datagram) -> Result<(), HandOffError> {
        let peer = &self.peers[owner];
        match peer.inbox.try_send(d) {
            Ok(()) => {
                if let Some(waker) = &peer.waker {
                    waker.wake();
                }
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(HandOffError::Full),
            Err(TrySendError::Disconnected(_)) => Err(HandOffError::Gone),
        }
    }

    /// A handle that wakes any worker of this group (for cross-worker
    /// traffic of the application; see [`GroupWaker`]).
    pub fn waker(&self) -> GroupWaker {
        GroupWaker {
            peers: self.peers.clone(),
        }
    }

    /// The next datagram handed to this worker, if any.
    pub fn take(&self) -> Option<Datagram> {
        self.inbox.try_recv().ok()
    }

    pub fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// The descriptor that becomes readable when another worker hands this
    /// one a datagram while it sleeps (after [`prepare_sleep`](Self::prepare_sleep)).
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.peers[self.index]
            .waker
            .as_ref()
            .map(|w| w.eventfd.as_raw_fd())
    }

    /// Announces that this worker is about to block. Returns false (and
    /// stays awake) if its inbox already holds datagrams; otherwise call
    /// [`woke`](Self::woke) after the wait.
    pub fn prepare_sleep(&self) -> bool {
        self.prepare_sleep_unless(|| false)
    }

    /// [`prepare_sleep`](Self::prepare_sleep) that also stays awake when
    /// `pending()` says the application has queued work (checked after the
    /// sleeping flag is up, so work queued by a [`GroupWaker`] user just
    /// before is never missed).
    pub fn prepare_sleep_unless(&self, pending: impl FnOnce() -> bool) -> bool {
        let Some(waker) = &self.peers[self.index].waker else {
            return self.inbox.is_empty() && !pending();
        };
        waker.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.inbox.is_empty() && !pending() {
            return true;
        }
        waker.sleeping.store(false, Ordering::Relaxed);
        false
    }

    /// Ends a sleep begun by [`prepare_sleep`](Self::prepare_sleep): clears
    /// the flag and resets the eventfd.
    pub fn woke(&self) {
        let Some(waker) = &self.peers[self.index].waker else {
            return;
        };
        waker.sleeping.store(false, Ordering::Relaxed);
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (not
        // woken) is the expected failure and harmless.
        unsafe { libc::read(waker.eventfd.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    }
}

/// Wakes workers of a group after queueing work for them outside the
/// datagram inbox (an application's own cross-worker queues). Like a
/// hand-off: a fence and a load on the busy path, a syscall only when the
/// worker said it is about to sleep.
#[derive(Clone)]
pub struct GroupWaker {
    peers: Arc<[Peer]>,
}

impl GroupWaker {
    /// Call after queueing work for `worker`.
    pub fn wake(&self, worker: usize) {
        if let Some(waker) = self.peers.get(worker).and_then(|p| p.waker.as_ref()) {
            waker.wake();
        }
    }

    pub fn workers(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn datagram(tag: u8) -> Datagram {
        Datagram {
            remote: "198.18.0.9:1000".parse().unwrap(),
            local_ip: None,
            ecn: None,
            data: BytesMut::from(&[tag; 3][..]),
            link: None,
        }
    }

    #[test]
    fn group_splits_into_indexed_workers() {
        let parts = WorkerGroup::new(3, 8).unwrap().split();
        assert_eq!(parts.len(), 3);
        for (i, s) in parts.iter().enumerate() {
            assert_eq!((s.index(), s.workers()), (i, 3));
        }
        parts[0].hand_off(2, datagram(7)).unwrap();
        assert!(parts[1].take().is_none());
        assert_eq!(&parts[2].take().unwrap().data[..], &[7; 3]);
        assert!(parts[2].inbox_is_empty());
        let single = Steering::single();
        assert_eq!((single.index(), single.workers()), (0, 1));
        assert!(WorkerGroup::new(0, 8).is_err());
        assert!(WorkerGroup::new(MAX_WORKERS + 1, 8).is_err());
        assert!(WorkerGroup::new(2, 0).is_err());
    }

    #[test]
    fn full_or_gone_inbox_refuses_without_blocking() {
        let mut parts = WorkerGroup::new(2, 2).unwrap().split();
        for i in 0..2 {
            parts[0].hand_off(1, datagram(i)).unwrap();
        }
        assert_eq!(parts[0].hand_off(1, datagram(9)), Err(HandOffError::Full));
        assert_eq!(parts[1].take().unwrap().data[0], 0);
        parts[0].hand_off(1, datagram(2)).unwrap();
        drop(parts.pop());
        assert_eq!(parts[0].hand_off(1, datagram(3)), Err(HandOffError::Gone));
    }
}

#[cfg(test)]
mod wake_tests {
    use super::*;
    use crate::io::poll_any_readable;
    use bytes::BytesMut;
    use std::time::{Duration, Instant};

    fn datagram() -> Datagram {
        Datagram {
            remote: "198.18.0.9:1000".parse().unwrap(),
            local_ip: None,
            ecn: None,
            data: BytesMut::from(&b"x"[..]),
            link: None,
        }
    }

    #[test]
    fn a_sleeping_worker_is_woken_by_a_hand_off() {
        let mut parts = WorkerGroup::new(2, 8).unwrap().split();
        let b = parts.pop().unwrap();
        let a = parts.pop().unwrap();
        let fd = b.wake_fd().unwrap();
        // Awake: a hand-off does not touch the eventfd.
        a.hand_off(1, datagram()).unwrap();
        assert!(!poll_any_readable(&[fd], Duration::ZERO).unwrap());
        // A non-empty inbox refuses to sleep.
        assert!(!b.prepare_sleep());
        b.take().unwrap();
        assert!(b.prepare_sleep());
        let sleeper = std::thread::spawn(move || {
            let started = Instant::now();
            let woke = poll_any_readable(&[fd], Duration::from_secs(5)).unwrap();
            b.woke();
            assert!(b.take().is_some());
            // Reset: not readable any more.
            assert!(!poll_any_readable(&[fd], Duration::ZERO).unwrap());
            (woke, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(20));
        a.hand_off(1, datagram()).unwrap();
        let (woke, slept) = sleeper.join().unwrap();
        assert!(woke && slept < Duration::from_secs(4), "{slept:?}");
        assert!(Steering::single().wake_fd().is_none());
    }

    #[test]
    fn application_work_keeps_a_worker_awake_and_group_waker_wakes_it() {
        let mut parts = WorkerGroup::new(2, 8).unwrap().split();
        let b = parts.pop().unwrap();
        let a = parts.pop().unwrap();
        let fd = b.wake_fd().unwrap();
        // Work queued by the application (checked after the flag is up).
        assert!(!b.prepare_sleep_unless(|| true));
        assert!(b.prepare_sleep_unless(|| false));
        let waker = a.waker();
        assert_eq!(waker.workers(), 2);
        let sleeper = std::thread::spawn(move || {
            let woke = poll_any_readable(&[fd], Duration::from_secs(5)).unwrap();
            b.woke();
            woke
        });
        std::thread::sleep(Duration::from_millis(20));
        waker.wake(1);
        assert!(sleeper.join().unwrap());
        // Out of range or a group of one: nothing to wake, no panic.
        waker.wake(7);
        Steering::single().waker().wake(0);
    }
}
