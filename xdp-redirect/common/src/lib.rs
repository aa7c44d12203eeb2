//! Names and value types shared between the XDP program (`xdp-redirect-ebpf`)
//! and user space (the loader in `control`, the frame parser in `dataplane`).
//! `no_std` so the eBPF side can use it.
#![no_std]

/// Ethernet, IP and UDP header sizes and protocol numbers. The XDP program
/// and the dataplane's frame parser must agree on what relay traffic looks
/// like, so both take them from here.
pub mod headers {
    /// Ethernet II header (two MACs and the EtherType).
    pub const ETH_HLEN: usize = 14;
    /// One 802.1Q/802.1ad tag (TCI and the inner EtherType).
    pub const VLAN_HLEN: usize = 4;
    /// IPv4 header without options (the smallest valid IHL).
    pub const IPV4_HLEN: usize = 20;
    /// IPv6 fixed header.
    pub const IPV6_HLEN: usize = 40;
    pub const UDP_HLEN: usize = 8;

    /// EtherTypes, named as in Linux's `if_ether.h`.
    pub const ETH_P_IPV4: u16 = 0x0800;
    pub const ETH_P_IPV6: u16 = 0x86dd;
    pub const ETH_P_8021Q: u16 = 0x8100;
    pub const ETH_P_8021AD: u16 = 0x88a8;

    /// IPv4 Protocol / IPv6 Next Header of UDP.
    pub const IPPROTO_UDP: u8 = 17;
}

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
