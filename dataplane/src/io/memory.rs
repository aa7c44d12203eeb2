//! An in-memory backend: datagrams to the worker are pushed into a shared
//! inbox, what it sends lands in a shared outbox. For tests that drive the
//! worker loop without sockets, like quinn-proto's own tests.
//!
//! The client side those tests step by hand (`MemoryPeer`, `EchoTransfer`)
//! is built only with the `test-support` feature.

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::Duration,
};

use super::{IoCounters, LinkPeer, Outgoing, PacketIo, Received};

// Test helpers: kept out of the library's normal build.
#[cfg(feature = "test-support")]
mod peer;
#[cfg(feature = "test-support")]
pub use peer::{EchoTransfer, MemoryPeer};

/// Datagrams in flight on one side of the in-memory "wire": (peer, payload).
pub type Wire = Rc<RefCell<VecDeque<(SocketAddr, Vec<u8>)>>>;

/// Datagrams to the worker arrive in `inbox` (address = sender); what it
/// sends lands in `outbox` (address = destination).
pub struct MemoryIo {
    pub inbox: Wire,
    pub outbox: Wire,
    /// Link address reported with every received datagram (a stand-in for
    /// the source MAC an Ethernet backend sees).
    pub link: Option<LinkPeer>,
    /// Peers learned through [`PacketIo::learn_peer`].
    pub learned: HashMap<IpAddr, LinkPeer>,
    counters: IoCounters,
}

impl MemoryIo {
    pub fn new(inbox: Wire, outbox: Wire) -> Self {
        Self {
            inbox,
            outbox,
            link: None,
            learned: HashMap::new(),
            counters: IoCounters::default(),
        }
    }
}

impl PacketIo for MemoryIo {
    fn recv_batch(
        &mut self,
        max: usize,
        sink: &mut dyn FnMut(Received<'_>),
    ) -> std::io::Result<usize> {
        let mut n = 0;
        while n < max {
            let Some((from, data)) = self.inbox.borrow_mut().pop_front() else {
                break;
            };
            self.counters.rx_packets += 1;
            sink(Received {
                remote: from,
                local_ip: None,
                ecn: 0,
                payload: &data,
                link: self.link,
            });
            n += 1;
        }
        Ok(n)
    }

    fn tx_capacity(&mut self) -> usize {
        64
    }

    fn send(&mut self, out: &Outgoing<'_>) -> std::io::Result<()> {
        for segment in out.segments() {
            self.counters.tx_packets += 1;
            self.outbox
                .borrow_mut()
                .push_back((out.remote, segment.to_vec()));
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn max_segments(&self) -> usize {
        4
    }

    fn wait(&mut self, _timeout: Duration) -> std::io::Result<()> {
        Ok(())
    }

    fn learn_peer(&mut self, remote: IpAddr, link: LinkPeer) {
        self.learned.insert(remote, link);
    }

    fn known_link(&self, remote: IpAddr) -> Option<LinkPeer> {
        self.learned.get(&remote).copied()
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
