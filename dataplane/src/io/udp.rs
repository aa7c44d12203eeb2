//! Kernel UDP socket backend: the same worker without XDP, for hosts that
//! lack it and as the baseline of every benchmark. One datagram per system
//! call for now; GSO/GRO and batched system calls arrive with the
//! multi-queue work and fit the same trait.

use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::Duration,
};

use super::{poll_readable, IoCounters, Outgoing, PacketIo, Received};

pub struct UdpSocketIo {
    socket: UdpSocket,
    /// Whether the socket is IPv6 (then IPv4 peers are addressed v4-mapped).
    v6_socket: bool,
    buf: Box<[u8]>,
    counters: IoCounters,
}

impl UdpSocketIo {
    /// Wraps a bound socket (a dual-stack `[::]:port` socket serves both
    /// families); it is switched to non-blocking mode.
    pub fn new(socket: UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let v6_socket = socket.local_addr()?.is_ipv6();
        Ok(Self {
            socket,
            v6_socket,
            buf: vec![0u8; 65536].into_boxed_slice(),
            counters: IoCounters::default(),
        })
    }
}

/// A dual-stack socket reports IPv4 peers as v4-mapped IPv6; QUIC sees them as IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

fn map_for(v6_socket: bool, addr: SocketAddr) -> SocketAddr {
    match (v6_socket, addr) {
        (true, SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

impl PacketIo for UdpSocketIo {
    fn recv_batch(&mut self, max: usize, sink: &mut dyn FnMut(Received<'_>)) -> io::Result<usize> {
        let mut n = 0;
        while n < max {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    self.counters.rx_packets += 1;
                    sink(Received {
                        remote: unmap(from),
                        local_ip: None,
                        ecn: 0,
                        payload: &self.buf[..len],
                        link: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP errors surface as ConnectionRefused etc. on the next receive: not fatal.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    fn tx_capacity(&mut self) -> usize {
        // The kernel queues for us; a full socket buffer shows up as a drop in `send`.
        usize::MAX
    }

    fn send(&mut self, out: &Outgoing<'_>) -> io::Result<()> {
        let to = map_for(self.v6_socket, out.remote);
        for segment in out.segments() {
            match self.socket.send_to(segment, to) {
                Ok(_) => self.counters.tx_packets += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.counters.tx_dropped += 1,
                Err(e) => {
                    self.counters.tx_dropped += 1;
                    tracing::debug!(%to, error = %e, "send_to failed");
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn max_segments(&self) -> usize {
        1
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        poll_readable(self.socket.as_raw_fd(), timeout).map(|_| ())
    }

    fn poll_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(self.socket.as_raw_fd())
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
