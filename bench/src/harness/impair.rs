//! The delay line behind [`super::Topology::impair`].

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};

use super::{ImpairStats, Impairment};

pub struct Line {
    pub stop: Arc<AtomicBool>,
    pub thread: Option<JoinHandle<()>>,
}

/// Classic BPF for `tc ... bpf bytecode`: matches (-1) IPv4 and IPv6
/// UDP frames, nothing else (0).
///
/// ```text
/// 0 ldh [12]             ethertype
/// 1 jeq #0x800, 2, 4
/// 2 ldb [23]             IPv4 protocol
/// 3 ja 6
/// 4 jeq #0x86dd, 5, 8
/// 5 ldb [20]             IPv6 next header
/// 6 jeq #17, 7, 8
/// 7 ret #-1
/// 8 ret #0
/// ```
pub const UDP_ONLY: &str = "9,40 0 0 12,21 0 2 2048,48 0 0 23,5 0 0 2,21 0 3 34525,48 0 0 20,21 0 1 17,6 0 0 4294967295,6 0 0 0";

/// Frames held at most; more is counted as overflow.
const MAX_HELD: usize = 20_000;
const ETH_P_ALL: u16 = 0x0003;
const PACKET_QDISC_BYPASS: libc::c_int = 20;

fn last_os_error(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// An AF_PACKET socket bound to `ifname` in the current namespace,
/// receiving every protocol when `receive`.
fn packet_socket(ifname: &str, receive: bool) -> Result<(libc::c_int, libc::c_int), String> {
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: plain libc calls on a fresh descriptor; the address is a
    // zeroed sockaddr_ll with its fields set.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr()) as libc::c_int;
        if ifindex == 0 {
            return Err(last_os_error(&format!("no interface {ifname}")));
        }
        // Protocol 0 until bound: nothing from other interfaces queues up.
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_os_error("socket(AF_PACKET)"));
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = if receive { ETH_P_ALL.to_be() } else { 0 };
        addr.sll_ifindex = ifindex;
        let rc = libc::bind(
            fd,
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        );
        if rc < 0 {
            let e = last_os_error(&format!("bind to {ifname}"));
            libc::close(fd);
            return Err(e);
        }
        Ok((fd, ifindex))
    }
}

fn set_int(fd: libc::c_int, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> bool {
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Enters network namespace `ns` (this thread only).
pub(super) fn enter(ns: &str) -> Result<(), String> {
    let file = std::fs::File::open(format!("/run/netns/{ns}"))
        .map_err(|e| format!("opening namespace {ns}: {e}"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: setns on a namespace descriptor we hold open.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(last_os_error(&format!("setns {ns}")));
    }
    Ok(())
}

/// The UDP header's offset and its pseudo-header sum, for an IPv4 or
/// IPv6 UDP frame (without IPv6 extension headers).
fn udp_of(frame: &[u8]) -> Option<(usize, u32)> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let sum_words = |b: &[u8]| -> u32 {
        b.chunks(2)
            .map(|c| (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0)))
            .sum()
    };
    let (udp, addrs) = match ethertype {
        0x0800 => {
            let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
            if *frame.get(23)? != 17 || ihl < 20 {
                return None;
            }
            (14 + ihl, frame.get(26..34)?)
        }
        0x86dd => {
            if *frame.get(20)? != 17 {
                return None;
            }
            (54, frame.get(22..54)?)
        }
        _ => return None,
    };
    let len = u16::from_be_bytes([*frame.get(udp + 4)?, *frame.get(udp + 5)?]);
    if len < 8 || udp + usize::from(len) > frame.len() {
        return None;
    }
    Some((udp, sum_words(addrs) + 17 + u32::from(len)))
}

/// Rewrites the UDP checksum of a whole frame. A frame from a local
/// sender may carry only a partial one (checksum offload): the kernel
/// would have finished it on the wire, a raw socket does not.
fn fix_udp_checksum(frame: &mut [u8]) -> bool {
    let Some((udp, pseudo)) = udp_of(frame) else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([frame[udp + 4], frame[udp + 5]]));
    frame[udp + 6] = 0;
    frame[udp + 7] = 0;
    let mut sum = pseudo as u64;
    for c in frame[udp..udp + len].chunks(2) {
        sum += (u64::from(c[0]) << 8) | u64::from(*c.get(1).unwrap_or(&0));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut ck = !(sum as u16);
    if ck == 0 {
        ck = 0xffff;
    }
    frame[udp + 6..udp + 8].copy_from_slice(&ck.to_be_bytes());
    true
}

struct Out {
    fd: libc::c_int,
    ifindex: libc::c_int,
    /// Arrival number of the latest frame passed on.
    latest: Option<u64>,
}

impl Out {
    fn send(&mut self, seq: u64, frame: &[u8], stats: &Mutex<ImpairStats>) {
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        addr.sll_ifindex = self.ifindex;
        // SAFETY: sendto with a live buffer and a sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        if self.latest.is_some_and(|l| seq < l) {
            s.reordered += 1;
        }
        self.latest = Some(self.latest.map_or(seq, |l| l.max(seq)));
        if n == frame.len() as isize {
            s.forwarded += 1;
        } else {
            s.errors += 1;
        }
    }
}

/// The line's thread: in namespace `ns`, frames arriving on `input`
/// leave through `output` (`bypass`: past its qdisc and tc hooks).
/// Reports on `ready` once it listens.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ns: &str,
    input: &str,
    output: &str,
    bypass: bool,
    spec: Impairment,
    stats: &Mutex<ImpairStats>,
    stop: &AtomicBool,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let opened = enter(ns).and_then(|()| {
        let (rx, _) = packet_socket(input, true)?;
        // Root may exceed rmem_max: room for bursts while busy.
        set_int(rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        let (tx, ifindex) = packet_socket(output, false)?;
        if bypass && !set_int(tx, libc::SOL_PACKET, PACKET_QDISC_BYPASS, 1) {
            return Err(last_os_error("PACKET_QDISC_BYPASS"));
        }
        Ok((rx, tx, ifindex))
    });
    let (rx, tx, ifindex) = match opened {
        Ok(fds) => fds,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut out = Out {
        fd: tx,
        ifindex,
        latest: None,
    };
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut held: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>> = BinaryHeap::new();
    let mut next_seq = 0u64;
    let mut buf = vec![0u8; 65536];
    let loss = (spec.loss_percent / 100.0).clamp(0.0, 1.0);
    let reorder = (spec.reorder_percent / 100.0).clamp(0.0, 1.0);
    let (delay, jitter) = (spec.delay.as_secs_f64(), spec.jitter.as_secs_f64());
    while !stop.load(Ordering::Relaxed) {
        let wait = held
            .peek()
            .map_or(Duration::from_millis(50), |Reverse((at, _, _))| {
                at.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: rx,
            events: libc::POLLIN,
            revents: 0,
        };
        // Round up: never wake before a frame is due.
        let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(&mut pfd, 1, ms) };
        loop {
            // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: recvfrom into our buffer and address.
            let n = unsafe {
                libc::recvfrom(
                    rx,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                    &mut from_len,
                )
            };
            if n < 0 {
                break;
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let n = n as usize;
            if n > buf.len() {
                stats.lock().unwrap_or_else(|p| p.into_inner()).errors += 1;
                continue;
            }
            let mut frame = buf[..n].to_vec();
            if !fix_udp_checksum(&mut frame) {
                // Not UDP: the filter sends none; nothing to impair.
                continue;
            }
            let seq = next_seq;
            next_seq += 1;
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.packets += 1;
            if rng.gen_bool(loss) {
                s.dropped += 1;
            } else if delay <= 0.0 || rng.gen_bool(reorder) {
                s.immediate += 1;
                drop(s);
                out.send(seq, &frame, stats);
            } else if held.len() >= MAX_HELD {
                s.overflow += 1;
            } else {
                s.delayed += 1;
                let d = if jitter > 0.0 {
                    (delay + rng.gen_range(-jitter..=jitter)).max(0.0)
                } else {
                    delay
                };
                held.push(Reverse((
                    Instant::now() + Duration::from_secs_f64(d),
                    seq,
                    frame,
                )));
            }
        }
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Reverse((_, seq, frame)) = held.pop().unwrap();
            out.send(seq, &frame, stats);
        }
    }
    // SAFETY: closing our own descriptors once.
    unsafe {
        libc::close(rx);
        libc::close(tx);
    }
}
