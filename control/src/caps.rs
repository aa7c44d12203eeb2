//! The capabilities the XDP backend needs, checked up front so that a relay
//! started without them says which are missing instead of failing later in
//! a bpf() or socket() call with EPERM.

use anyhow::{bail, Context};

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// What each is needed for: creating the program and its maps (CAP_BPF);
/// the verifier accepting the program's packet-pointer arithmetic
/// (CAP_PERFMON: without it the verifier refuses it as a possible pointer
/// leak); binding AF_XDP sockets (CAP_NET_RAW); attaching to the interface
/// and configuring the sockets (CAP_NET_ADMIN). CAP_SYS_ADMIN covers
/// CAP_BPF and CAP_PERFMON, as on kernels before 5.8.
const NEEDED: [(u32, &str); 4] = [
    (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
    (CAP_NET_RAW, "CAP_NET_RAW"),
    (CAP_BPF, "CAP_BPF"),
    (CAP_PERFMON, "CAP_PERFMON"),
];

/// The effective capability set of this process (`CapEff` in
/// /proc/self/status).
fn effective() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff line in /proc/self/status")?;
    u64::from_str_radix(hex.trim(), 16).context("parsing CapEff")
}

/// Fails with the missing capabilities' names unless the process may run
/// the XDP backend.
pub fn check_xdp() -> anyhow::Result<()> {
    let have = effective()?;
    let has = |cap: u32| have & (1 << cap) != 0;
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|&&(cap, _)| {
            let sys_admin_covers = matches!(cap, CAP_BPF | CAP_PERFMON);
            !(has(cap) || sys_admin_covers && has(CAP_SYS_ADMIN))
        })
        .map(|&(_, name)| name)
        .collect();
    if !missing.is_empty() {
        bail!(
            "--backend xdp needs {}; run as root, grant them (e.g. systemd \
             AmbientCapabilities=, see docs/operations.md), or use --backend socket",
            missing.join(", ")
        );
    }
    Ok(())
}

/// The AF_XDP sockets' UMEMs (`umem_bytes` together) are locked memory:
/// without CAP_IPC_LOCK the kernel charges them to RLIMIT_MEMLOCK, which
/// must then be large enough (the relay raises its soft limit to the hard
/// one first).
pub fn check_locked_memory(umem_bytes: u64) -> anyhow::Result<()> {
    if effective()? & (1 << CAP_IPC_LOCK) != 0 {
        return Ok(());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // Unknown: let the UMEM registration decide.
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < umem_bytes {
        bail!(
            "the AF_XDP sockets lock {} MiB of memory but RLIMIT_MEMLOCK is {} KiB \
             and CAP_IPC_LOCK is missing; grant CAP_IPC_LOCK or raise the limit \
             (systemd LimitMEMLOCK=infinity, see docs/operations.md)",
            umem_bytes >> 20,
            limit.rlim_cur >> 10
        );
    }
    Ok(())
}
