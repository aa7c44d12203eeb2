//! Receive packet steering (RPS) of the relay's outgoing traffic.
//!
//! Every packet the relay sends leaves its namespace on `eth0` and is
//! received by the veth peer `relay`, a port of the bridge in `<P>br`.
//! Without RPS that receive (the bridge, then each client's veth and stack)
//! runs in softirq on the CPU that sent the packet: the relay's own core,
//! billed to it. With `rps_cpus` of `relay`'s receive queues set to the
//! other CPUs, the kernel hands each packet to one of those right after
//! the veth, so the relay's core only pays for the transmit itself. The
//! same mask is set for every backend and for `--relay-cmd` relays.

use std::{collections::BTreeSet, process::Command, str::FromStr};

use anyhow::Context;
use serde_json::{json, Value};

use crate::procstat;

/// The bridge port that receives what the relay sends (see `ci/netns`).
pub const DEVICE: &str = "relay";

/// What `--rps` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpsMode {
    /// Every online CPU except the relay's cores.
    Auto,
    /// Leave the masks as they are.
    Off,
    /// These CPUs.
    Cpus(BTreeSet<usize>),
}

impl FromStr for RpsMode {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            list => {
                let cpus = procstat::parse_cpu_list(list)
                    .with_context(|| format!("--rps {list:?}: auto, off or a CPU list"))?;
                anyhow::ensure!(!cpus.is_empty(), "--rps: empty CPU list");
                Ok(Self::Cpus(cpus))
            }
        }
    }
}

impl RpsMode {
    pub fn name(&self) -> String {
        match self {
            Self::Auto => "auto".into(),
            Self::Off => "off".into(),
            Self::Cpus(c) => cpu_list(c),
        }
    }
}

/// `0-2,5` for {0, 1, 2, 5}.
pub fn cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = cpus.iter().copied().peekable();
    while let Some(lo) = it.next() {
        let mut hi = lo;
        while it.peek() == Some(&(hi + 1)) {
            hi = it.next().unwrap();
        }
        out.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
    }
    out.join(",")
}

/// A CPU set as the kernel's hexadecimal bitmap syntax: 32-bit groups,
/// most significant first, separated by commas (`2` for CPU 1).
pub fn cpu_mask(cpus: &BTreeSet<usize>) -> String {
    let Some(&max) = cpus.iter().next_back() else {
        return "0".into();
    };
    let mut groups = vec![0u32; max / 32 + 1];
    for &c in cpus {
        groups[c / 32] |= 1 << (c % 32);
    }
    let mut out = String::new();
    for (i, g) in groups.iter().rev().enumerate() {
        if i == 0 {
            out.push_str(&format!("{g:x}"));
        } else {
            out.push_str(&format!(",{g:08x}"));
        }
    }
    out
}

/// The CPUs of a kernel bitmap (`00000000,00000002` or `2`).
pub fn parse_cpu_mask(mask: &str) -> anyhow::Result<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    for (i, group) in mask.trim().split(',').rev().enumerate() {
        let g = u32::from_str_radix(group.trim(), 16)
            .with_context(|| format!("bad CPU mask {mask:?}"))?;
        for bit in 0..32 {
            if g & (1 << bit) != 0 {
                cpus.insert(i * 32 + bit);
            }
        }
    }
    Ok(cpus)
}

/// Every online CPU but the relay's: where `auto` puts the receive
/// steering and the load processes.
fn cpus_besides(relay_cores: &BTreeSet<usize>) -> BTreeSet<usize> {
    procstat::online_cpus()
        .difference(relay_cores)
        .copied()
        .collect()
}

/// `--load-cpus`: `None` leaves the load processes to the scheduler.
pub fn load_cpus(
    arg: &str,
    relay_cores: &BTreeSet<usize>,
) -> anyhow::Result<Option<BTreeSet<usize>>> {
    match arg {
        "off" => Ok(None),
        "auto" => {
            let others = cpus_besides(relay_cores);
            // A one-CPU machine: nowhere else to go.
            Ok((!others.is_empty()).then_some(others))
        }
        list => {
            let cpus = procstat::parse_cpu_list(list)
                .with_context(|| format!("--load-cpus {list:?}: auto, off or a CPU list"))?;
            anyhow::ensure!(!cpus.is_empty(), "--load-cpus: empty CPU list");
            Ok(Some(cpus))
        }
    }
}

pub fn describe_load_cpus(load: &Option<BTreeSet<usize>>, relay_cores: &BTreeSet<usize>) -> String {
    match load {
        Some(c) => format!(
            "load processes (publisher, subscribers) pinned to CPUs {}; relay core(s) {}",
            cpu_list(c),
            cpu_list(relay_cores)
        ),
        None => "load processes not pinned (--load-cpus off, or no CPU besides the relay's)".into(),
    }
}

/// What was done to the receive queues of [`DEVICE`].
#[derive(Clone, Debug)]
pub struct Steering {
    pub mode: RpsMode,
    pub namespace: String,
    /// The relay's cores the mask keeps clear.
    pub relay_cores: BTreeSet<usize>,
    /// The CPUs asked for (empty: nothing written).
    pub cpus: BTreeSet<usize>,
    /// Whether rps_cpus was written.
    pub applied: bool,
    /// Every receive queue and its rps_cpus as read back afterwards.
    pub queues: Vec<(String, String)>,
    pub note: Option<String>,
}

impl Steering {
    /// Steers [`DEVICE`]'s receive work in `<prefix>br` as `mode` says,
    /// keeping `relay_cores` clear (for [`RpsMode::Auto`]), and reads the
    /// masks back.
    pub fn apply(
        prefix: &str,
        mode: &RpsMode,
        relay_cores: &BTreeSet<usize>,
    ) -> anyhow::Result<Self> {
        let namespace = format!("{prefix}br");
        let (cpus, note) = match mode {
            RpsMode::Off => (
                BTreeSet::new(),
                Some("--rps off: masks left as they were".to_string()),
            ),
            RpsMode::Cpus(c) => {
                let overlap: Vec<usize> = c.intersection(relay_cores).copied().collect();
                let note = (!overlap.is_empty()).then(|| {
                    format!("the --rps CPUs include relay core(s) {overlap:?}: their share stays on the relay's core")
                });
                (c.clone(), note)
            }
            RpsMode::Auto => {
                let others = cpus_besides(relay_cores);
                let note = others.is_empty().then(|| {
                    "no online CPU outside the relay's cores: masks left as they were".to_string()
                });
                (others, note)
            }
        };
        let write = !cpus.is_empty();
        let glob = format!("/sys/class/net/{DEVICE}/queues/rx-*/rps_cpus");
        // `ip netns exec` mounts the namespace's own sysfs, where the
        // bridge port lives.
        let script = if write {
            format!(
                "for f in {glob}; do echo {} > \"$f\" || exit 1; done; for f in {glob}; do echo \"$f $(cat \"$f\")\"; done",
                cpu_mask(&cpus)
            )
        } else {
            format!("for f in {glob}; do echo \"$f $(cat \"$f\")\"; done")
        };
        let out = Command::new("ip")
            .args(["netns", "exec", &namespace, "sh", "-c", &script])
            .output()
            .context("running ip netns exec sh")?;
        anyhow::ensure!(
            out.status.success(),
            "setting rps_cpus of {DEVICE} in {namespace} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let mut queues = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((path, value)) = line.split_once(' ') else {
                continue;
            };
            let queue = path
                .split('/')
                .find(|p| p.starts_with("rx-"))
                .unwrap_or(path)
                .to_string();
            queues.push((queue, value.trim().to_string()));
        }
        anyhow::ensure!(
            !queues.is_empty(),
            "{DEVICE} in {namespace} has no rps_cpus (kernel without CONFIG_RPS?)"
        );
        if write {
            for (q, v) in &queues {
                let got = parse_cpu_mask(v)?;
                anyhow::ensure!(
                    got == cpus,
                    "{DEVICE} {q}: rps_cpus reads {v}, not {}",
                    cpu_mask(&cpus)
                );
            }
        }
        Ok(Self {
            mode: mode.clone(),
            namespace,
            relay_cores: relay_cores.clone(),
            cpus,
            applied: write,
            queues,
            note,
        })
    }

    /// One line for the human report.
    pub fn describe(&self) -> String {
        let queues: Vec<String> = self
            .queues
            .iter()
            .map(|(q, v)| format!("{q}={v}"))
            .collect();
        let what = if self.applied {
            format!(
                "rps_cpus {} (CPUs {}) on {} {}",
                cpu_mask(&self.cpus),
                cpu_list(&self.cpus),
                self.namespace,
                DEVICE
            )
        } else {
            format!("not changed on {} {}", self.namespace, DEVICE)
        };
        let mut s = format!(
            "RPS --rps {}: {what} [{}]; relay core(s) {}",
            self.mode.name(),
            queues.join(" "),
            cpu_list(&self.relay_cores)
        );
        if let Some(n) = &self.note {
            s.push_str(&format!(" ({n})"));
        }
        s
    }

    pub fn json(&self) -> Value {
        json!({
            "mode": self.mode.name(),
            "namespace": self.namespace,
            "device": DEVICE,
            "applied": self.applied,
            "mask": if self.applied { Value::from(cpu_mask(&self.cpus)) } else { Value::Null },
            "cpus": self.cpus.iter().collect::<Vec<_>>(),
            "relay_cores": self.relay_cores.iter().collect::<Vec<_>>(),
            "queues": self.queues.iter().map(|(q, v)| json!({ "queue": q, "rps_cpus": v })).collect::<Vec<_>>(),
            "note": self.note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(cpu_mask(&[1].into()), "2");
        assert_eq!(cpu_mask(&[0, 1, 2, 3].into()), "f");
        assert_eq!(cpu_mask(&[1, 32].into()), "1,00000002");
        assert_eq!(cpu_mask(&BTreeSet::new()), "0");
        for set in [vec![1], vec![0, 5, 31, 32, 63, 64]] {
            let set: BTreeSet<usize> = set.into_iter().collect();
            assert_eq!(parse_cpu_mask(&cpu_mask(&set)).unwrap(), set);
        }
        assert_eq!(parse_cpu_mask("00000000,00000002").unwrap(), [1].into());
    }

    #[test]
    fn modes_and_lists() {
        assert_eq!("auto".parse::<RpsMode>().unwrap(), RpsMode::Auto);
        assert_eq!("off".parse::<RpsMode>().unwrap(), RpsMode::Off);
        assert_eq!(
            "1,3-4".parse::<RpsMode>().unwrap(),
            RpsMode::Cpus([1, 3, 4].into())
        );
        assert!("x".parse::<RpsMode>().is_err());
        assert_eq!(cpu_list(&[0, 1, 2, 5, 7, 8].into()), "0-2,5,7-8");
    }
}
