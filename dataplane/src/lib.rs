//! fastrelay's dataplane, bottom-up: wire formats ([`frame`]), next-hop
//! resolution ([`neighbor`]), I/O backends behind one trait ([`io`]), QUIC
//! and TLS configuration ([`tls`]), the quinn-proto transport driver
//! ([`driver`]) and the worker loop around it ([`worker`]), connection IDs
//! that name their worker ([`cid`]) and the hand-off of datagrams between
//! workers ([`handoff`]), and the echo test application ([`echo`]).
//!
//! Nothing here knows about MoQT, and the worker never sees a socket type.

pub mod cid;
pub mod driver;
pub mod echo;
pub mod frame;
pub mod handoff;
pub mod io;
pub mod neighbor;
pub mod tls;
pub mod worker;
