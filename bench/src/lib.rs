//! Clients for fastrelay's tests, demo and benchmarks, on quinn (tokio).

pub mod echo;
pub mod harness;
pub mod moq;
pub mod pnproof;
pub mod quic;
