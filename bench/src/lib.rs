//! Clients for fastrelay's tests, demo and benchmarks, on quinn (tokio).

pub mod benchrun;
pub mod cli;
pub mod echo;
pub mod harness;
pub mod hist;
pub mod hostile;
pub mod load;
pub mod nsproc;
pub mod plot;
pub mod pnproof;
pub mod procstat;
pub mod profile;
pub mod profile_report;
pub mod quic;
pub mod reference;
pub mod relayproc;
pub mod scenario;
pub mod steering;
pub mod summary;
