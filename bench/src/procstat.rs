//! What /proc says about a process: CPU time (utime + stime of every
//! thread), resident memory, the cores its threads are pinned to, whether it
//! has bound a UDP port, the per-CPU times of /proc/stat, and the calling
//! thread's own CPU time and pinning.

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
    /// The process CPU clock (`clock_getcpuclockid`): the scheduler's
    /// runtime of all threads, dead ones included, in nanoseconds. It is
    /// the same quantity utime + stime add up to, without their 10 ms
    /// granularity, which at a few dozen ms per run is a 25 % error.
    pub exact: Option<Duration>,
}

impl CpuTimes {
    /// The exact total where the CPU clock could be read, else utime + stime.
    pub fn total(&self) -> Duration {
        self.exact.unwrap_or(self.user + self.system)
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
            exact: self
                .exact
                .zip(earlier.exact)
                .map(|(now, then)| now.saturating_sub(then)),
        }
    }
}

/// The CPU time of process `pid` from its CPU clock, `None` if the clock
/// cannot be read (the process is gone, or the kernel refuses).
pub fn process_cpu_clock(pid: u32) -> Option<Duration> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock is a valid out-pointer for the duration of the call.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer; an invalid clock is an error return.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(
        u64::try_from(ts.tv_sec).ok()?,
        u32::try_from(ts.tv_nsec).ok()?,
    ))
}

/// utime and stime from /proc/PID/stat (fields 14 and 15; the process-wide
/// figures, which include every thread), and the exact total from the
/// process CPU clock.
pub fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut times = parse_stat(&stat).with_context(|| format!("parsing {path}"))?;
    times.exact = process_cpu_clock(pid);
    Ok(times)
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
        exact: None,
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

/// Context switches of every thread of a process, from
/// /proc/PID/task/*/status. A voluntary one is a thread going to sleep
/// (poll, a futex, a timer), so for a relay whose workers block when idle
/// it counts their wake-ups; an involuntary one is a preemption. Threads
/// that ended are not counted, so take both readings while the same
/// threads run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextSwitches {
    pub voluntary: u64,
    pub involuntary: u64,
}

impl ContextSwitches {
    /// The switches since `earlier`.
    pub fn since(&self, earlier: &ContextSwitches) -> ContextSwitches {
        ContextSwitches {
            voluntary: self.voluntary.saturating_sub(earlier.voluntary),
            involuntary: self.involuntary.saturating_sub(earlier.involuntary),
        }
    }
}

pub fn context_switches(pid: u32) -> anyhow::Result<ContextSwitches> {
    let dir = format!("/proc/{pid}/task");
    let mut sum = ContextSwitches::default();
    for task in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(task?.path().join("status")) else {
            continue;
        };
        let one = parse_context_switches(&status);
        sum.voluntary += one.voluntary;
        sum.involuntary += one.involuntary;
    }
    Ok(sum)
}

fn parse_context_switches(status: &str) -> ContextSwitches {
    let count = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    ContextSwitches {
        voluntary: count("voluntary_ctxt_switches:"),
        involuntary: count("nonvoluntary_ctxt_switches:"),
    }
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

/// The cumulative times of one CPU line of /proc/stat (`cpuN user nice
/// system idle iowait irq softirq steal ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuLine {
    pub user: Duration,
    pub nice: Duration,
    pub system: Duration,
    pub idle: Duration,
    pub iowait: Duration,
    pub irq: Duration,
    pub softirq: Duration,
    pub steal: Duration,
}

impl CpuLine {
    /// Time the CPU was busy: user + nice + system + irq + softirq + steal
    /// (idle and iowait are not).
    pub fn busy(&self) -> Duration {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }

    /// The busy part of all the time these columns account for (busy,
    /// idle and iowait), or `None` if they account for none.
    pub fn busy_share(&self) -> Option<f64> {
        let busy = self.busy().as_secs_f64();
        let all = busy + (self.idle + self.iowait).as_secs_f64();
        (all > 0.0).then(|| busy / all)
    }

    /// The time spent since `earlier`, column by column.
    pub fn since(&self, earlier: &CpuLine) -> CpuLine {
        CpuLine {
            user: self.user.saturating_sub(earlier.user),
            nice: self.nice.saturating_sub(earlier.nice),
            system: self.system.saturating_sub(earlier.system),
            idle: self.idle.saturating_sub(earlier.idle),
            iowait: self.iowait.saturating_sub(earlier.iowait),
            irq: self.irq.saturating_sub(earlier.irq),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    fn add(&mut self, o: &CpuLine) {
        self.user += o.user;
        self.nice += o.nice;
        self.system += o.system;
        self.idle += o.idle;
        self.iowait += o.iowait;
        self.irq += o.irq;
        self.softirq += o.softirq;
        self.steal += o.steal;
    }
}

/// Every `cpuN` line of /proc/stat, indexed by N (CPUs missing from the
/// file, e.g. offline ones, stay zero).
pub fn cpu_lines() -> anyhow::Result<Vec<CpuLine>> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_cpu_lines(&stat)
}

fn parse_cpu_lines(stat: &str) -> anyhow::Result<Vec<CpuLine>> {
    let mut per_cpu = Vec::new();
    for line in stat.lines() {
        let mut f = line.split_whitespace();
        let Some(name) = f.next() else { continue };
        let Some(cpu) = name.strip_prefix("cpu").filter(|n| !n.is_empty()) else {
            continue;
        };
        let cpu: usize = cpu.parse().with_context(|| format!("/proc/stat: {name}"))?;
        let mut col = || -> anyhow::Result<Duration> {
            // Old kernels end before steal: missing columns count as zero.
            Ok(ticks(match f.next() {
                Some(v) => v.parse().with_context(|| format!("/proc/stat: {name}"))?,
                None => 0,
            }))
        };
        let l = CpuLine {
            user: col()?,
            nice: col()?,
            system: col()?,
            idle: col()?,
            iowait: col()?,
            irq: col()?,
            softirq: col()?,
            steal: col()?,
        };
        if per_cpu.len() <= cpu {
            per_cpu.resize(cpu + 1, CpuLine::default());
        }
        per_cpu[cpu] = l;
    }
    anyhow::ensure!(!per_cpu.is_empty(), "/proc/stat has no cpuN line");
    Ok(per_cpu)
}

/// The sum over `cores` (every CPU if empty) of what each spent between
/// two [`cpu_lines`] samples.
pub fn cpu_between(before: &[CpuLine], after: &[CpuLine], cores: &BTreeSet<usize>) -> CpuLine {
    let mut sum = CpuLine::default();
    for (cpu, a) in after.iter().enumerate() {
        if cores.is_empty() || cores.contains(&cpu) {
            sum.add(&a.since(&before.get(cpu).copied().unwrap_or_default()));
        }
    }
    sum
}

/// The CPUs the kernel has online (/sys/devices/system/cpu/online, e.g.
/// `0-1`); falls back to the cpuN lines of /proc/stat.
pub fn online_cpus() -> BTreeSet<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()).ok())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            cpu_lines()
                .map(|l| (0..l.len()).collect())
                .unwrap_or_else(|_| [0].into())
        })
}

/// The CPUs every thread of `pid` may run on (`Cpus_allowed_list` of each
/// `/proc/<pid>/task/*/status`), when all threads agree; `None` if they
/// differ or cannot be read.
pub fn allowed_cpus_of_threads(pid: u32) -> Option<String> {
    let mut seen: Option<String> = None;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let status = std::fs::read_to_string(task.ok()?.path().join("status")).ok()?;
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_string();
        match &seen {
            Some(s) if *s != list => return None,
            _ => seen = Some(list),
        }
    }
    seen
}

/// A CPU list as the kernel writes them: `0-3,8,10-11`.
pub fn parse_cpu_list(s: &str) -> anyhow::Result<BTreeSet<usize>> {
    let mut set = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (part, part),
        };
        let lo: usize = lo.parse().with_context(|| format!("bad CPU {lo:?}"))?;
        let hi: usize = hi.parse().with_context(|| format!("bad CPU {hi:?}"))?;
        anyhow::ensure!(lo <= hi && hi < 4096, "bad CPU range {part:?}");
        set.extend(lo..=hi);
    }
    Ok(set)
}

/// CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays
    // within it for cpu < CPU_SETSIZE (checked).
    unsafe {
        anyhow::ensure!(
            cpu < libc::CPU_SETSIZE as usize,
            "CPU {cpu} is out of range"
        );
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            anyhow::bail!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
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
    fn context_switch_lines() {
        let status = "Name:\tfastrelay-q0\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        assert_eq!(
            parse_context_switches(status),
            ContextSwitches {
                voluntary: 1234,
                involuntary: 56
            }
        );
        let later = ContextSwitches {
            voluntary: 1300,
            involuntary: 56,
        };
        assert_eq!(later.since(&parse_context_switches(status)).voluntary, 66);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        cpu_times(pid).unwrap();
        assert!(memory(pid).unwrap().rss_kib > 0);
        assert!(!cpu_lines().unwrap().is_empty());
        assert!(!online_cpus().is_empty());
        assert!(thread_cpu_time() > Duration::ZERO);
        // Sleeping is a voluntary switch of this thread.
        let before = context_switches(pid).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(context_switches(pid).unwrap().since(&before).voluntary >= 1);
    }

    #[test]
    fn cpu_clock_of_another_process_agrees_with_proc() {
        // A child that burns CPU for a while, then sleeps.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5",
            ])
            .spawn()
            .unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut t = cpu_times(pid).unwrap();
        // Wait until it has burnt at least 50 ms and stopped burning.
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = cpu_times(pid).unwrap();
            let settled = now.total() == t.total() && now.total() > Duration::from_millis(50);
            t = now;
            if settled || std::time::Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let exact = t
            .exact
            .expect("the process CPU clock of a child is readable");
        let ticks = t.user + t.system;
        assert!(exact > Duration::from_millis(50), "exact {exact:?}");
        // utime + stime is the same runtime, rounded to the clock tick.
        let tick = Duration::from_secs(1) / clock_ticks_per_s() as u32;
        assert!(
            exact.abs_diff(ticks) <= 2 * tick,
            "exact {exact:?}, utime + stime {ticks:?}"
        );
    }

    #[test]
    fn cpu_lines_and_busy_time() {
        let stat = "cpu  10 0 0 0 0 0 0 0 0 0\n\
                    cpu0 100 5 20 900 3 1 7 2 0 0\n\
                    cpu1 50 0 10 80 0 0 4\n\
                    intr 1 2 3\n";
        let l = parse_cpu_lines(stat).unwrap();
        assert_eq!(l.len(), 2);
        let hz = clock_ticks_per_s() as f64;
        assert!((l[0].busy().as_secs_f64() - 135.0 / hz).abs() < 1e-9);
        // No steal column: zero.
        assert!((l[1].busy().as_secs_f64() - 64.0 / hz).abs() < 1e-9);
        let zero = vec![CpuLine::default(); 2];
        let only0 = cpu_between(&zero, &l, &[0].into());
        assert_eq!(only0.busy(), l[0].busy());
        let all = cpu_between(&zero, &l, &BTreeSet::new());
        assert_eq!(all.busy(), l[0].busy() + l[1].busy());
        // cpu0: 135 busy of 135 + 900 idle + 3 iowait ticks.
        let share = l[0].busy_share().unwrap();
        assert!((share - 135.0 / 1038.0).abs() < 1e-9, "{share}");
        assert_eq!(CpuLine::default().busy_share(), None);
    }

    #[test]
    fn cpu_list_syntax() {
        assert_eq!(parse_cpu_list("0-2,5").unwrap(), [0, 1, 2, 5].into());
        assert_eq!(parse_cpu_list("1").unwrap(), [1].into());
        assert!(parse_cpu_list("2-1").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
