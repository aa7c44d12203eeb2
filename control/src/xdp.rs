//! The XDP program's lifecycle: load the embedded object, attach it to the
//! interface through a bpf link owned by this process (so it detaches when
//! the process exits, even by SIGKILL), fill the port set and XSKMAP, read
//! the per-CPU counters.

use std::os::fd::RawFd;

use anyhow::{bail, Context};
use aya::{
    maps::{HashMap, PerCpuArray, XskMap},
    programs::{ProgramError, Xdp, XdpFlags},
    Ebpf, EbpfLoader, VerifierLogLevel,
};
use serde::Serialize;
use xdp_redirect_common::{Counter, MAP_COUNTERS, MAP_PORTS, MAP_XSKS, PROGRAM_NAME};

/// The compiled XDP program, built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("XDP_REDIRECT_OBJECT"));

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode on physical NICs, generic mode on virtual devices.
    Auto,
    /// Generic mode: works on any interface, one extra copy.
    Skb,
    /// Native (driver) mode: the NIC driver runs the program.
    Drv,
}

pub struct XdpRedirect {
    ebpf: Ebpf,
    xsks: XskMap<aya::maps::MapData>,
    pub mode: XdpMode,
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct XdpCounters {
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub no_socket: u64,
}

impl XdpRedirect {
    /// Loads the program and attaches it to `iface`. `virtual_device` decides
    /// what `Auto` means.
    pub fn attach(
        iface: &str,
        mode: XdpMode,
        virtual_device: bool,
        ports: &[u16],
    ) -> anyhow::Result<Self> {
        let mut ebpf = EbpfLoader::new()
            .verifier_log_level(VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS)
            .load(OBJECT)
            .context("loading the embedded XDP object")?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .context("XDP object has no xdp_redirect program")?
            .try_into()
            .context("xdp_redirect is not an XDP program")?;
        match program.load() {
            Ok(()) => {}
            Err(ProgramError::LoadError {
                io_error,
                verifier_log,
            }) => {
                bail!("the kernel verifier rejected the XDP program ({io_error}); verifier log:\n{verifier_log}")
            }
            Err(e) => return Err(e).context("loading the XDP program into the kernel"),
        }
        let effective = match mode {
            XdpMode::Auto if virtual_device => XdpMode::Skb,
            XdpMode::Auto => XdpMode::Drv,
            m => m,
        };
        let flags = match effective {
            XdpMode::Drv => XdpFlags::DRV_MODE,
            _ => XdpFlags::SKB_MODE,
        };
        let attached = program.attach(iface, flags);
        let attached = match (attached, mode) {
            // Auto falls back to generic mode when the driver has no XDP support.
            (Err(e), XdpMode::Auto) if effective == XdpMode::Drv => {
                tracing::warn!(%iface, error = %e, "native XDP unavailable, falling back to generic mode");
                program
                    .attach(iface, XdpFlags::SKB_MODE)
                    .map(|l| (l, XdpMode::Skb))
            }
            (r, _) => r.map(|l| (l, effective)),
        };
        let mode = match attached {
            Ok((_link, mode)) => mode,
            Err(e) => bail!(
                "attaching XDP to {iface} in {effective:?} mode failed: {e:#}. Is another XDP program \
                 attached (`ip link show {iface}`)? Does the driver support this mode (try --xdp-mode skb)?"
            ),
        };

        let mut port_map: HashMap<_, u16, u8> =
            HashMap::try_from(ebpf.map_mut(MAP_PORTS).context("RELAY_PORTS map missing")?)?;
        for &port in ports {
            port_map
                .insert(port, 1, 0)
                .with_context(|| format!("adding port {port} to RELAY_PORTS"))?;
        }
        let xsks = XskMap::try_from(ebpf.take_map(MAP_XSKS).context("XSKS map missing")?)?;
        Ok(Self { ebpf, xsks, mode })
    }

    /// Registers the AF_XDP socket for `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> anyhow::Result<()> {
        // SAFETY-free: aya only reads the raw fd number for the map update.
        struct Raw(RawFd);
        impl std::os::fd::AsRawFd for Raw {
            fn as_raw_fd(&self) -> RawFd {
                self.0
            }
        }
        self.xsks
            .set(queue, Raw(fd), 0)
            .with_context(|| format!("registering the AF_XDP socket of queue {queue} in XSKS"))
    }

    pub fn counters(&self) -> anyhow::Result<XdpCounters> {
        let array: PerCpuArray<_, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(MAP_COUNTERS)
                .context("COUNTERS map missing")?,
        )?;
        let sum =
            |c: Counter| -> anyhow::Result<u64> { Ok(array.get(&(c as u32), 0)?.iter().sum()) };
        Ok(XdpCounters {
            redirected: sum(Counter::Redirected)?,
            passed: sum(Counter::Passed)?,
            malformed: sum(Counter::Malformed)?,
            no_socket: sum(Counter::NoSocket)?,
        })
    }
}
