//! The I/O backends under the worker loop: the worker only ever sees this
//! trait, so the very same loop runs over AF_XDP or a kernel UDP socket.
//!
//! The trait is batch-shaped on both sides so later backends fit without a
//! change in the worker: GRO hands several datagrams per receive, GSO takes a
//! transmit of several equal-size segments (see [`Outgoing::segment_size`]).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::RawFd,
    time::Duration,
};

use crate::frame::MacAddr;

pub mod memory;
pub mod udp;
pub mod xsk;

/// One received UDP datagram, borrowed from the backend's buffer.
#[derive(Debug)]
pub struct Received<'a> {
    pub remote: SocketAddr,
    /// Destination address of the datagram, when the backend knows it.
    pub local_ip: Option<IpAddr>,
    /// ECN bits from the IP header.
    pub ecn: u8,
    pub payload: &'a [u8],
    /// The sender on the link, for backends that build their own frames.
    pub link: Option<LinkPeer>,
}

/// Where a datagram came from on the link. A backend that writes Ethernet
/// headers learns its peers' MACs from what it receives; when a worker hands
/// a datagram to another worker, this travels with it so the owner's backend
/// can answer a peer it never received from ([`PacketIo::learn_peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkPeer {
    pub mac: MacAddr,
    pub vlan: Option<u16>,
}

/// One transmit: `contents` holds one or more UDP payloads of `segment_size`
/// bytes each (the last may be shorter), all to the same destination.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub remote: SocketAddr,
    /// Source address to use; the backend picks one of its own when `None`.
    pub local_ip: Option<IpAddr>,
    pub ecn: u8,
    pub segment_size: usize,
    pub contents: &'a [u8],
}

impl Outgoing<'_> {
    pub fn segments(&self) -> impl Iterator<Item = &[u8]> {
        self.contents.chunks(self.segment_size.max(1))
    }
}

/// Counters a backend keeps about its own work; read by the worker when it
/// publishes statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Frames that were not a UDP datagram for us (malformed, wrong protocol).
    pub rx_dropped_malformed: u64,
    /// Datagrams the backend could not send (no next-hop MAC, ring or socket full).
    pub tx_dropped: u64,
    /// A gauge, not a count: TX frames in the kernel's hands (TX or
    /// completion ring) when read. AF_XDP only; zero elsewhere.
    pub tx_frames_in_flight: u64,
}

/// A packet I/O backend driven by one worker thread.
pub trait PacketIo {
    /// Receives up to `max` datagrams without blocking, handing each to `sink`.
    /// Returns how many were handed over.
    fn recv_batch(&mut self, max: usize, sink: &mut dyn FnMut(Received<'_>)) -> io::Result<usize>;

    /// How many segments can be queued by [`send`](Self::send) right now. The
    /// worker asks before it lets quinn-proto build packets, so that a packet
    /// once built is never thrown away for lack of room.
    fn tx_capacity(&mut self) -> usize;

    /// Queues one transmit; it is on the wire after the next [`flush`](Self::flush).
    fn send(&mut self, out: &Outgoing<'_>) -> io::Result<()>;

    /// Pushes queued transmits to the kernel/NIC.
    fn flush(&mut self) -> io::Result<()>;

    /// Largest number of segments one [`Outgoing`] may carry.
    fn max_segments(&self) -> usize;

    /// Blocks until a datagram may be readable or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;

    /// The descriptor whose readability [`wait`](Self::wait) waits for, if
    /// waiting is nothing more than that: a worker then polls it together
    /// with its hand-off wake-up, so neither kind of datagram waits.
    fn poll_fd(&self) -> Option<RawFd> {
        None
    }

    /// A packet from `remote` over `link` was accepted (a new connection's
    /// Initial for an address not known yet, or an authenticated packet of
    /// a connection), here or by another worker: remember what is needed to
    /// answer it. Backends never learn from a frame by themselves.
    fn learn_peer(&mut self, _remote: IpAddr, _link: LinkPeer) {}

    /// The link learnt for `remote`, if this backend builds frames.
    fn known_link(&self, _remote: IpAddr) -> Option<LinkPeer> {
        None
    }

    fn counters(&self) -> IoCounters;
}

/// ppoll(2) on one descriptor for readability.
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    poll_fds(&[(fd, libc::POLLIN)], timeout)
}

/// ppoll(2) on one descriptor for `events`.
pub(crate) fn poll_fd(fd: RawFd, events: libc::c_short, timeout: Duration) -> io::Result<bool> {
    poll_fds(&[(fd, events)], timeout)
}

/// ppoll(2) until any of (at most four) descriptors is readable or
/// `timeout` passes. Returns whether one is.
pub fn poll_any_readable(fds: &[RawFd], timeout: Duration) -> io::Result<bool> {
    let mut with_events = [(-1, libc::POLLIN); 4];
    assert!(fds.len() <= 4, "poll_any_readable takes at most 4 fds");
    for (slot, fd) in with_events.iter_mut().zip(fds) {
        slot.0 = *fd;
    }
    poll_fds(&with_events[..fds.len()], timeout)
}

/// ppoll(2) on at most four (descriptor, events) pairs. Its timeout has
/// nanosecond resolution (poll(2) rounds up to milliseconds), so a worker
/// can sleep until a timer that is due in less than a millisecond instead
/// of spinning for it. Returns whether any is ready.
fn poll_fds(fds: &[(RawFd, libc::c_short)], timeout: Duration) -> io::Result<bool> {
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    assert!(fds.len() <= pfds.len(), "poll_fds takes at most 4 fds");
    for (p, (fd, events)) in pfds.iter_mut().zip(fds) {
        p.fd = *fd;
        p.events = *events;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `fds.len()` valid pollfds and a valid timespec for the
    // duration of the call; no signal mask is changed (null).
    let rc = unsafe {
        libc::ppoll(
            pfds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0)
}
