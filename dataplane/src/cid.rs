//! Connection IDs that name their worker, and the rule that maps any
//! datagram to the one worker that owns its connection.
//!
//! Each worker owns its quinn-proto `Endpoint` and the connections in it
//! (the invariant: one writer of packet numbers per connection). The NIC (RSS)
//! or the kernel spreads datagrams over workers by address, not by
//! connection, so a datagram can reach a worker that does not own its
//! connection; that worker hands it to the owner (see [`crate::handoff`]).
//! Any worker must therefore be able to tell the owner from the datagram
//! alone. [`owner_of`] is that rule, a pure function of the destination
//! connection ID (DCID):
//!
//! - an 8-byte DCID that decodes as one of ours (a [`WorkerCidGenerator`]
//!   CID whose tag checks and whose worker index is in range) belongs to the
//!   worker encoded in it;
//! - any other DCID (a client's first Initial, 0-RTT) has no owner yet: the
//!   worker that receives it handles it, and accepts the connection.
//!
//! Why every packet of a connection reaches its owner: the client's first
//! Initial carries a DCID the client chose and lands on the worker the NIC
//! (RSS) or the kernel (SO_REUSEPORT) picks for its address 4-tuple; that
//! worker accepts the connection and from then on issues only CIDs that
//! decode to itself. Every later datagram carries either one of the owner's
//! CIDs (routed by construction, whatever queue it arrives on: migration,
//! an RSS change) or the original DCID (retransmitted client Initials,
//! 0-RTT), which comes from the same 4-tuple and so the same queue. Only an
//! RSS change in the middle of a handshake could take such a datagram to
//! another worker, which would then start a second, half-open connection
//! the client ignores (RFC 9000 §7.2: a client takes the server's first
//! Initial only) and that times out.
//!
//! The receiving worker owning new connections keeps the NIC's spreading:
//! nothing is handed off in steady state. (Owning by a hash of the DCID
//! would hand off (N-1)/N of all datagrams for the life of every
//! connection.)
//!
//! The tag and mask are keyed with one random key per process, shared by
//! all its workers: consistent inside the process, not predictable from
//! outside, so a client cannot forge a CID that names a worker and cannot
//! read the worker out of our CIDs (RFC 9000 §5.1: CIDs must not let an
//! observer correlate them).

use std::{hash::Hasher, sync::OnceLock, time::Duration};

use quinn_proto::{ConnectionId, ConnectionIdGenerator, InvalidCid};
use rand::RngCore;

/// Length of every CID this relay issues; short-header packets carry it
/// without a length byte, so it is a constant of the process.
pub const LOCAL_CID_LEN: usize = 8;
/// Worker indexes must fit in one CID byte.
pub const MAX_WORKERS: usize = 255;
/// QUIC v1 limit on a CID's length in long headers (RFC 9000 §17.2).
const MAX_CID_LEN: usize = 20;
/// Random bytes per CID: 2^40 values, so issued CIDs do not repeat.
const NONCE_LEN: usize = 5;
/// Domain separation for uses of the key.
const DOMAIN_CID: u8 = 1;

/// A secret that keys the CID tag and worker mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidKey {
    k0: u64,
    k1: u64,
}

impl CidKey {
    pub fn new(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }

    /// This process's key, drawn once on first use; every worker shares it.
    pub fn process() -> Self {
        static KEY: OnceLock<CidKey> = OnceLock::new();
        *KEY.get_or_init(|| {
            let mut rng = rand::thread_rng();
            CidKey::new(rng.next_u64(), rng.next_u64())
        })
    }

    /// SipHash (std's `DefaultHasher`, fixed within one build) over the
    /// secret key, a domain byte and `bytes`.
    fn hash(&self, domain: u8, bytes: &[u8]) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write_u64(self.k0);
        h.write_u64(self.k1);
        h.write_u8(domain);
        h.write(bytes);
        h.finish()
    }

    /// The worker encoded in `cid` if it is one of ours for `workers` workers.
    ///
    /// Layout: `nonce[5] | worker ^ mask | tag[2]` with `mask` and `tag` the
    /// low three bytes of `hash(nonce)`. A random client CID passes with
    /// probability about 2^-16 (and then is merely handed to some worker,
    /// which does not know it and drops it). The tag does not bind the worker byte: a peer that
    /// flips it only sends its packet to a worker that does not know the CID.
    pub fn decode(&self, cid: &[u8], workers: usize) -> Option<usize> {
        if cid.len() != LOCAL_CID_LEN {
            return None;
        }
        let h = self.hash(DOMAIN_CID, &cid[..NONCE_LEN]);
        let worker = (cid[NONCE_LEN] ^ h as u8) as usize;
        let tag = ((h >> 8) as u16).to_le_bytes();
        (cid[NONCE_LEN + 1..] == tag && worker < workers).then_some(worker)
    }

    fn encode(&self, nonce: [u8; NONCE_LEN], worker: u8) -> [u8; LOCAL_CID_LEN] {
        let h = self.hash(DOMAIN_CID, &nonce);
        let mut cid = [0u8; LOCAL_CID_LEN];
        cid[..NONCE_LEN].copy_from_slice(&nonce);
        cid[NONCE_LEN] = worker ^ h as u8;
        cid[NONCE_LEN + 1..].copy_from_slice(&((h >> 8) as u16).to_le_bytes());
        cid
    }
}

/// The worker (0..workers) that owns the connection of a datagram with
/// destination CID `dcid`, or `None` when the DCID is not one of ours (the
/// receiving worker handles it); see the module documentation. Uses the
/// process key ([`CidKey::process`]).
pub fn owner_of(dcid: &[u8], workers: usize) -> Option<usize> {
    if workers <= 1 {
        return None; // single worker: nothing to decode on the hot path
    }
    CidKey::process().decode(dcid, workers)
}

/// The destination CID of a QUIC datagram (its first packet), without
/// touching anything else: long header (first bit set) = flags, version(4),
/// DCID length, DCID; short header = flags, then `local_cid_len` bytes.
/// `None` when the datagram is too short or the length is over QUIC v1's 20.
pub fn dcid_of(udp_payload: &[u8], local_cid_len: usize) -> Option<&[u8]> {
    let first = *udp_payload.first()?;
    if first & 0x80 != 0 {
        let len = *udp_payload.get(5)? as usize;
        if len > MAX_CID_LEN {
            return None;
        }
        udp_payload.get(6..6 + len)
    } else {
        udp_payload.get(1..1 + local_cid_len)
    }
}

/// Issues CIDs that decode ([`CidKey::decode`]) to `worker` in a group of
/// `workers`, so that every worker of the process can route to the owner.
#[derive(Debug, Clone)]
pub struct WorkerCidGenerator {
    worker: u8,
    workers: u8,
    key: CidKey,
    lifetime: Option<Duration>,
}

impl WorkerCidGenerator {
    /// A generator for `worker` of `workers` with the process key.
    pub fn new(worker: usize, workers: usize) -> Self {
        Self::with_key(worker, workers, CidKey::process())
    }

    /// Panics unless `worker < workers <= MAX_WORKERS` (a setup bug).
    pub fn with_key(worker: usize, workers: usize, key: CidKey) -> Self {
        assert!(
            worker < workers && workers <= MAX_WORKERS,
            "worker {worker} of {workers} (at most {MAX_WORKERS} workers)"
        );
        Self {
            worker: worker as u8,
            workers: workers as u8,
            key,
            lifetime: None,
        }
    }

    pub fn worker(&self) -> usize {
        self.worker as usize
    }
}

impl ConnectionIdGenerator for WorkerCidGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        ConnectionId::new(&self.key.encode(nonce, self.worker))
    }

    /// Lets quinn-proto drop short-header packets for CIDs we never issued
    /// without answering them with a stateless reset.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        match self.key.decode(cid, self.workers as usize) {
            Some(_) => Ok(()),
            None => Err(InvalidCid),
        }
    }

    fn cid_len(&self) -> usize {
        LOCAL_CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        self.lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(0x5eed)
    }

    #[test]
    fn generated_cids_decode_to_their_worker() {
        for key in [CidKey::process(), CidKey::new(1, 2), CidKey::new(0, 0)] {
            for workers in (1..=17).chain([64, 254, 255]) {
                for worker in 0..workers {
                    let mut g = WorkerCidGenerator::with_key(worker, workers, key);
                    for _ in 0..50 {
                        let cid = g.generate_cid();
                        assert_eq!(cid.len(), LOCAL_CID_LEN);
                        assert_eq!(g.cid_len(), LOCAL_CID_LEN);
                        assert_eq!(key.decode(&cid, workers), Some(worker));
                        assert!(g.validate(&cid).is_ok());
                    }
                }
            }
        }
        // Through the process-wide entry points.
        let mut g = WorkerCidGenerator::new(3, 5);
        for _ in 0..100 {
            assert_eq!(owner_of(&g.generate_cid(), 5), Some(3));
        }
    }

    #[test]
    fn cids_are_not_constant() {
        let mut g = WorkerCidGenerator::new(0, 2);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_ne!(a, b);
    }

    #[test]
    fn another_key_does_not_recognise_our_cids() {
        let mut g = WorkerCidGenerator::with_key(1, 4, CidKey::new(7, 8));
        let other = CidKey::new(9, 10);
        let recognised = (0..1000)
            .filter(|_| other.decode(&g.generate_cid(), 4).is_some())
            .count();
        assert!(recognised < 5, "{recognised} of 1000");
    }

    #[test]
    fn client_chosen_dcids_almost_never_claim_an_owner() {
        let mut rng = rng();
        for len in 0..=MAX_CID_LEN {
            let claimed = (0..2000)
                .filter(|_| {
                    let mut dcid = [0u8; MAX_CID_LEN];
                    rng.fill(&mut dcid[..len]);
                    owner_of(&dcid[..len], 4).is_some()
                })
                .count();
            // Only 8-byte DCIDs can match; then with probability ~2^-16 x 4/256.
            assert!(claimed <= 1, "len {len}: {claimed} of 2000 claimed");
        }
        // One worker: never anything to hand off.
        let mut g = WorkerCidGenerator::new(0, 1);
        assert_eq!(owner_of(&g.generate_cid(), 1), None);
    }

    #[test]
    fn dcid_of_long_and_short_headers() {
        // Long header: flags, version 1, DCID len 8, DCID, SCID len 3, SCID, rest.
        let dcid = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let mut long = vec![0xc3, 0, 0, 0, 1, dcid.len() as u8];
        long.extend_from_slice(&dcid);
        long.extend_from_slice(&[3, 9, 9, 9, 0, 0x41, 0x00]);
        assert_eq!(dcid_of(&long, 8), Some(&dcid[..]));
        // The local CID length does not matter for long headers.
        assert_eq!(dcid_of(&long, 0), Some(&dcid[..]));
        // Every truncation that cuts into the DCID fails, none panics.
        for cut in 0..long.len() {
            let got = dcid_of(&long[..cut], 8);
            if cut < 6 + dcid.len() {
                assert_eq!(got, None, "cut at {cut}");
            } else {
                assert_eq!(got, Some(&dcid[..]), "cut at {cut}");
            }
        }
        // A 20-byte DCID is fine, 21 and 255 are not QUIC v1.
        let mut twenty = vec![0xc0, 0, 0, 0, 1, 20];
        twenty.extend_from_slice(&[0xab; 20]);
        assert_eq!(dcid_of(&twenty, 8), Some(&[0xab; 20][..]));
        for bad in [21u8, 255] {
            let mut p = vec![0xc0, 0xff, 0, 0, 0x1d, bad];
            p.extend_from_slice(&[0; 255]);
            assert_eq!(dcid_of(&p, 8), None);
        }
        // A zero-length DCID (version negotiation shapes) is Some(empty).
        assert_eq!(dcid_of(&[0x80, 0, 0, 0, 0, 0], 8), Some(&[][..]));

        // Short header: flags, then the 8 CID bytes, then the packet number.
        let mut short = vec![0x40];
        short.extend_from_slice(&dcid);
        short.extend_from_slice(&[0x11, 0x22, 0x33]);
        assert_eq!(dcid_of(&short, 8), Some(&dcid[..]));
        assert_eq!(dcid_of(&short, 0), Some(&[][..]));
        for cut in 0..short.len() {
            let got = dcid_of(&short[..cut], 8);
            if cut < 1 + dcid.len() {
                assert_eq!(got, None, "cut at {cut}");
            } else {
                assert_eq!(got, Some(&dcid[..]), "cut at {cut}");
            }
        }
        assert_eq!(dcid_of(&[], 8), None);
    }

    #[test]
    fn dcid_of_never_panics_on_random_bytes() {
        let mut rng = rng();
        for len in 0..64 {
            for _ in 0..100 {
                let mut p = vec![0u8; len];
                rng.fill(&mut p[..]);
                if let Some(d) = dcid_of(&p, 8) {
                    assert!(d.len() <= MAX_CID_LEN);
                }
            }
        }
    }
}
