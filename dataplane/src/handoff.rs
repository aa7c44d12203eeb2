//! Hand-off of mis-steered datagrams between the workers of one process.
//!
//! The NIC or kernel picks a worker by address; [`crate::cid::owner_of`]
//! names the worker that owns the connection. When they differ, the
//! receiving worker pushes the datagram into the owner's inbox: a bounded
//! lock-free queue. Nothing blocks: a full inbox drops the datagram (QUIC
//! recovers it like any loss) and the sender counts it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use bytes::BytesMut;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use quinn_proto::EcnCodepoint;

use crate::cid::MAX_WORKERS;

/// Default inbox size per worker: a few RX batches of headroom while the
/// owner is busy; beyond that, dropping is better than queueing latency.
pub const DEFAULT_INBOX_CAPACITY: usize = 1024;

/// One received UDP datagram, as the worker loop handles it, locally or
/// after a hand-off.
#[derive(Debug)]
pub struct Datagram {
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<EcnCodepoint>,
    /// The payload, already copied out of the backend's buffer into the
    /// receiving worker's arena (the one copy on receive). A hand-off moves
    /// this slice to the owner without copying again; the arena chunk stays
    /// alive until the owner is done with it, which the bounded inbox bounds.
    pub data: BytesMut,
}

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
    senders: Arc<[Sender<Datagram>]>,
    receivers: Vec<Receiver<Datagram>>,
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
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| crossbeam_channel::bounded(inbox_capacity))
            .unzip();
        Ok(Self {
            senders: senders.into(),
            receivers,
        })
    }

    /// One [`Steering`] per worker, index `i` at position `i`.
    pub fn split(self) -> Vec<Steering> {
        let senders = self.senders;
        self.receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| Steering {
                index,
                peers: senders.clone(),
                inbox,
            })
            .collect()
    }
}

/// One worker's place in its group: its index, its inbox, and the way into
/// every other worker's inbox.
pub struct Steering {
    index: usize,
    /// Every worker's inbox sender, indexed by worker (our own included).
    peers: Arc<[Sender<Datagram>]>,
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
        match self.peers[owner].try_send(d) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(HandOffError::Full),
            Err(TrySendError::Disconnected(_)) => Err(HandOffError::Gone),
        }
    }

    /// The next datagram handed to this worker, if any.
    pub fn take(&self) -> Option<Datagram> {
        self.inbox.try_recv().ok()
    }

    pub fn inbox_is_empty(&self) -> bool {
        self.inbox.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(tag: u8) -> Datagram {
        Datagram {
            remote: "198.18.0.9:1000".parse().unwrap(),
            local_ip: None,
            ecn: None,
            data: BytesMut::from(&[tag; 3][..]),
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
