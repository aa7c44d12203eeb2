//! What /proc says about a process: CPU time (utime + stime of every
//! thread), resident memory, the cores its threads are pinned to, whether it
//! has bound a UDP port, and the per-CPU softirq time of /proc/stat.

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context;

/// Clock ticks per second of the times in /proc (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn ticks(t: u64) -> Duration {
    Duration::from_secs_f64(t as f64 / clock_ticks_per_s() as f64)
}

/// User and system CPU time of a whole process (all its threads).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuTimes {
    pub user: Duration,
    pub system: Duration,
}

impl CpuTimes {
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// utime and stime from /proc/PID/stat (fields 14 and 15; the process-wide
/// figures, which include every thread).
pub fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat(&stat).with_context(|| format!("parsing {path}"))
}

fn parse_stat(stat: &str) -> anyhow::Result<CpuTimes> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. The first field after it is field 3 (state).
    let rest = &stat[stat.rfind(')').context("no ')' in stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .with_context(|| format!("stat has no field {n}"))?
            .parse()
            .with_context(|| format!("stat field {n}"))
    };
    Ok(CpuTimes {
        user: ticks(field(14)?),
        system: ticks(field(15)?),
    })
}

/// Resident memory from /proc/PID/status, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss_kib: u64,
    /// VmHWM: the peak resident size the kernel recorded.
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: kib("VmRSS:"),
        peak_kib: kib("VmHWM:"),
    })
}

/// The cores that threads of PID are pinned to: every thread whose
/// Cpus_allowed_list is a single CPU. Empty if none is pinned.
pub fn pinned_cores(pid: u32) -> BTreeSet<usize> {
    let mut cores = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return cores;
    };
    for task in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .map(str::trim)
            .unwrap_or("");
        if let Ok(cpu) = list.parse::<usize>() {
            cores.insert(cpu);
        }
    }
    cores
}

/// Cumulative softirq time per CPU (column 7 of the cpuN lines of /proc/stat).
pub fn softirq_per_cpu() -> anyhow::Result<Vec<Duration>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let mut per_cpu = Vec::new();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(cpu) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
            continue;
        };
        let cpu: usize = cpu.parse().with_context(|| format!("/proc/stat: {name}"))?;
        // user nice system idle iowait irq softirq
        let softirq: u64 = f
            .nth(6)
            .context("/proc/stat: no softirq column")?
            .parse()
            .context("/proc/stat: softirq column")?;
        if per_cpu.len() <= cpu {
            per_cpu.resize(cpu + 1, Duration::ZERO);
        }
        per_cpu[cpu] = ticks(softirq);
    }
    Ok(per_cpu)
}

/// Softirq time on `cores` (every CPU if empty) between two samples.
pub fn softirq_between(
    before: &[Duration],
    after: &[Duration],
    cores: &BTreeSet<usize>,
) -> Duration {
    after
        .iter()
        .enumerate()
        .filter(|(cpu, _)| cores.is_empty() || cores.contains(cpu))
        .map(|(cpu, a)| a.saturating_sub(before.get(cpu).copied().unwrap_or_default()))
        .sum()
}

/// Whether a socket bound to UDP `port` exists in PID's network namespace
/// (/proc/PID/net/udp{,6} show the namespace of that process).
pub fn udp_port_bound(pid: u32, port: u16) -> bool {
    let needle = format!(":{port:04X} ");
    ["udp", "udp6"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|t| {
                t.lines().skip(1).any(|l| {
                    // local_address is the second column: ADDR:PORT
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|a| format!("{a} ").ends_with(&needle))
                })
            })
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        let t = parse_stat(line).unwrap();
        let hz = clock_ticks_per_s() as f64;
        assert!((t.user.as_secs_f64() - 250.0 / hz).abs() < 1e-9);
        assert!((t.system.as_secs_f64() - 50.0 / hz).abs() < 1e-9);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        cpu_times(pid).unwrap();
        assert!(memory(pid).unwrap().rss_kib > 0);
        assert!(!softirq_per_cpu().unwrap().is_empty());
    }
}
