//! Names and value types shared between the XDP program (`xdp-redirect-ebpf`)
//! and the user-space loader in `control`. `no_std` so the eBPF side can use it.
#![no_std]

/// Name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "xdp_redirect";
/// `HashMap<u16 port (host order), u8>`: UDP destination ports that belong to the relay.
pub const MAP_PORTS: &str = "RELAY_PORTS";
/// `XskMap`: queue index -> AF_XDP socket.
pub const MAP_XSKS: &str = "XSKS";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "COUNTERS";

/// Capacity of the port set map.
pub const MAX_PORTS: u32 = 64;
/// Capacity of the XSKMAP (highest queue index + 1 the program can redirect to).
pub const MAX_QUEUES: u32 = 256;

/// Per-CPU packet counters kept by the XDP program.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Relay UDP traffic handed to an AF_XDP socket.
    Redirected = 0,
    /// Everything the kernel got: non-relay traffic and relay traffic with no socket on its queue.
    Passed = 1,
    /// Frames too short for the headers they announce (passed to the kernel, never dropped).
    Malformed = 2,
    /// Relay-port traffic whose queue had no socket bound (a subset of `Passed`).
    NoSocket = 3,
}

impl Counter {
    /// Number of counters (the array map's size).
    pub const COUNT: u32 = 4;
}
