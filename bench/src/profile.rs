//! `--profile`: where the relay's CPU goes during a run. `perf record`
//! samples the relay process (every thread, user and kernel stacks,
//! DWARF unwinding) for a few seconds of the measured window; afterwards
//! `perf script` prints each sample's stack and every sample is put in
//! one bucket by the innermost frame of its stack that names one (so a
//! sample inside quinn-proto's `poll_transmit` called from the relay's
//! event handler counts as "quinn-proto send"):
//!
//! | bucket | frames |
//! |---|---|
//! | kernel TX | the backend's `PacketIo::send` / `flush` (UMEM framing and the AF_XDP kick; or `sendmsg`), the kernel's send system calls |
//! | quinn-proto send | `Connection::poll_transmit` |
//! | ACK intake / receive | `Driver::handle_datagram`, the backend's `recv_batch` |
//! | relay + MoQT | `Application::handle_event`, `poll_external` |
//! | wait | the backend's `wait`, poll(2) |
//! | loop/other | everything else (timers, the loop itself, stacks perf could not unwind) |
//!
//! The JSON also counts the samples of each bucket by the frame name that
//! put them there (`by_marker`: e.g. `recv_batch` apart from
//! `handle_datagram`), and splits "loop/other" by the innermost
//! `dataplane::` frame of each sample (`loop_other_by_frame`: e.g.
//! `Worker::run` itself, spinning towards a timer less than a millisecond
//! away).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{json, Value};

/// Sampling frequency (Hz).
pub const FREQUENCY: u32 = 999;

/// The buckets, in the order they are printed.
pub const BUCKETS: [&str; 6] = [
    "kernel TX",
    "quinn-proto send",
    "ACK intake / receive",
    "relay + MoQT",
    "wait",
    "loop/other",
];
const OTHER: usize = 5;

/// Substrings of frame names that put a sample in a bucket (index into
/// [`BUCKETS`]).
const MARKERS: &[(&str, usize)] = &[
    ("as dataplane::io::PacketIo>::flush", 0),
    ("as dataplane::io::PacketIo>::send", 0),
    ("__sys_sendmsg", 0),
    ("__sys_sendmmsg", 0),
    ("__sys_sendto", 0),
    ("Connection::poll_transmit", 1),
    ("Driver::handle_datagram", 2),
    ("as dataplane::io::PacketIo>::recv_batch", 2),
    ("as dataplane::driver::Application>::handle_event", 3),
    ("as dataplane::driver::Application>::poll_external", 3),
    ("as dataplane::io::PacketIo>::wait", 4),
    ("dataplane::io::poll_readable", 4),
    ("dataplane::io::poll_fd", 4),
    ("poll_any_readable", 4),
    ("do_sys_poll", 4),
];

/// The bucket of one stack, innermost frame first.
pub fn classify<'a>(frames: impl IntoIterator<Item = &'a str>) -> usize {
    marker(frames).map_or(OTHER, |(_, b)| b)
}

/// The marker (and its bucket) of the innermost frame that has one.
fn marker<'a>(frames: impl IntoIterator<Item = &'a str>) -> Option<(&'static str, usize)> {
    frames
        .into_iter()
        .find_map(|f| MARKERS.iter().find(|(m, _)| f.contains(m)).copied())
}

/// The innermost `dataplane::` frame of a stack (without perf's
/// "(inlined)" mark), where a "loop/other" sample is counted.
pub fn loop_frame<'a>(frames: impl IntoIterator<Item = &'a str>) -> String {
    frames
        .into_iter()
        .find(|f| f.contains("dataplane::"))
        .map(|f| f.trim_end_matches(" (inlined)").to_string())
        .unwrap_or_else(|| "(no dataplane frame)".to_string())
}

/// Sample counts per bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub samples: u64,
    pub buckets: [u64; 6],
    /// Samples whose stack has at most two frames: unwinding failed.
    pub shallow: u64,
    /// "loop/other" samples by [`loop_frame`].
    pub other: BTreeMap<String, u64>,
    /// The other samples by the marker that put them in their bucket.
    pub markers: BTreeMap<String, u64>,
}

impl Profile {
    pub fn add(&mut self, o: &Profile) {
        self.samples += o.samples;
        self.shallow += o.shallow;
        for (a, b) in self.buckets.iter_mut().zip(o.buckets) {
            *a += b;
        }
        for (k, n) in &o.other {
            *self.other.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &o.markers {
            *self.markers.entry(k.clone()).or_default() += n;
        }
    }

    /// Back from [`Profile::json`] (to pool several runs).
    pub fn from_json(v: &Value) -> Self {
        let mut p = Profile {
            samples: v["samples"].as_u64().unwrap_or(0),
            shallow: v["shallow_stacks"].as_u64().unwrap_or(0),
            ..Default::default()
        };
        for (i, b) in p.buckets.iter_mut().enumerate() {
            *b = v["buckets"][i]["samples"].as_u64().unwrap_or(0);
        }
        for (key, map) in [
            ("loop_other_by_frame", &mut p.other),
            ("by_marker", &mut p.markers),
        ] {
            for o in v[key].as_array().into_iter().flatten() {
                if let (Some(f), Some(n)) = (o["frame"].as_str(), o["samples"].as_u64()) {
                    *map.entry(f.to_string()).or_default() += n;
                }
            }
        }
        p
    }

    /// The share of each bucket and, given the run's relay CPU ns per
    /// delivered packet, its ns per delivered packet.
    pub fn json(&self, ns_per_packet: f64) -> Value {
        let buckets: Vec<Value> = BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|(name, n)| {
                let share = if self.samples > 0 {
                    n as f64 / self.samples as f64
                } else {
                    f64::NAN
                };
                json!({
                    "bucket": name,
                    "samples": n,
                    "share": share,
                    "ns_per_delivered_packet": share * ns_per_packet,
                })
            })
            .collect();
        let ranked = |map: &BTreeMap<String, u64>| -> Vec<Value> {
            let mut v: Vec<(&String, &u64)> = map.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.into_iter()
                .map(|(f, &n)| {
                    json!({
                        "frame": f,
                        "samples": n,
                        "share": if self.samples > 0 { n as f64 / self.samples as f64 } else { f64::NAN },
                    })
                })
                .collect()
        };
        json!({
            "samples": self.samples,
            "shallow_stacks": self.shallow,
            "buckets": buckets,
            "by_marker": ranked(&self.markers),
            "loop_other_by_frame": ranked(&self.other),
        })
    }
}

/// Parses `perf script -F tid,ip,sym` output: a header line per sample
/// (the thread id), then one tab-indented `ADDRESS SYMBOL` line per frame,
/// innermost first, and a blank line.
pub fn parse_perf_script(text: &str) -> Profile {
    let mut p = Profile::default();
    let mut frames: Vec<&str> = Vec::new();
    let mut in_sample = false;
    let finish = |frames: &mut Vec<&str>, p: &mut Profile| {
        p.samples += 1;
        if frames.len() <= 2 {
            p.shallow += 1;
        }
        match marker(frames.iter().copied()) {
            Some((m, b)) => {
                p.buckets[b] += 1;
                *p.markers.entry(m.to_string()).or_default() += 1;
            }
            None => {
                p.buckets[OTHER] += 1;
                *p.other
                    .entry(loop_frame(frames.iter().copied()))
                    .or_default() += 1;
            }
        }
        frames.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            if in_sample {
                finish(&mut frames, &mut p);
                in_sample = false;
            }
            continue;
        }
        if line.starts_with('\t') {
            // "\t    7f12ab34 symbol+0x10 (dso)" or "\t    7f12ab34 symbol".
            let t = line.trim_start();
            let sym = t.split_once(char::is_whitespace).map_or("", |(_, s)| s);
            frames.push(sym);
            in_sample = true;
        } else {
            if in_sample {
                finish(&mut frames, &mut p);
            }
            in_sample = true;
        }
    }
    if in_sample {
        finish(&mut frames, &mut p);
    }
    p
}

/// Whether `perf` can be run; the reason if not.
pub fn available() -> Result<(), String> {
    match Command::new("perf")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`perf --version` failed ({s})")),
        Err(e) => Err(format!("perf not found ({e})")),
    }
}

/// A `perf record` of one process for a fixed time.
pub struct Recording {
    child: Child,
    data: PathBuf,
    log: PathBuf,
    seconds: u64,
    started: Instant,
}

impl Recording {
    /// Samples `pid` for `seconds` into `data` (perf's messages into `log`).
    pub fn start(pid: u32, seconds: u64, data: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new("perf");
        // SAFETY: prctl is async-signal-safe; perf dies with the benchmark.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .args(["record", "-q", "-F", &FREQUENCY.to_string()])
            .args(["--call-graph", "dwarf,16384", "-p", &pid.to_string()])
            .arg("-o")
            .arg(data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("spawning perf record")?;
        Ok(Self {
            child,
            data: data.to_path_buf(),
            log: log.to_path_buf(),
            seconds,
            started: Instant::now(),
        })
    }

    /// Waits for the recording to end (it stops by itself).
    pub fn wait(&mut self) -> anyhow::Result<()> {
        let deadline = self.started + Duration::from_secs(self.seconds + 30);
        loop {
            if let Some(s) = self.child.try_wait()? {
                anyhow::ensure!(
                    s.success(),
                    "perf record failed ({s}): {}",
                    std::fs::read_to_string(&self.log)
                        .unwrap_or_default()
                        .trim()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                anyhow::bail!("perf record did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `perf script` of the recording, bucketed. Run after the measured
    /// window: unwinding the stacks takes a while.
    pub fn analyse(mut self) -> anyhow::Result<Profile> {
        self.wait()?;
        let out = Command::new("perf")
            .args(["script", "-F", "tid,ip,sym", "-i"])
            .arg(&self.data)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .context("running perf script")?;
        anyhow::ensure!(out.status.success(), "perf script failed ({})", out.status);
        let p = parse_perf_script(&String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(p.samples > 0, "perf recorded no sample");
        let _ = std::fs::remove_file(&self.data);
        Ok(p)
    }

    pub fn seconds(&self) -> u64 {
        self.seconds
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_by_innermost_marker() {
        let stack = [
            "aes_gcm_seal",
            "quinn_proto::connection::Connection::poll_transmit",
            "<relay::router::AlpnRouter as dataplane::driver::Application>::handle_event",
            "dataplane::worker::Worker<B,A>::iterate",
        ];
        assert_eq!(BUCKETS[classify(stack)], "quinn-proto send");
        let tx = [
            "xsk_generic_xmit",
            "__sys_sendto",
            "<dataplane::io::xsk::XskIo as dataplane::io::PacketIo>::flush",
        ];
        assert_eq!(BUCKETS[classify(tx)], "kernel TX");
        assert_eq!(BUCKETS[classify(["main", "_start"])], "loop/other");
        assert_eq!(
            BUCKETS[classify(["do_sys_poll", "dataplane::io::poll_readable"])],
            "wait"
        );
    }

    #[test]
    fn parses_perf_script() {
        let text = "\
 1234 
\t    7f00 aes_gcm_seal+0x10
\t    7f01 quinn_proto::connection::Connection::poll_transmit+0x20
\t    7f02 dataplane::worker::Worker<B,A>::iterate

 1234 
\t    7f10 dataplane::driver::Driver::handle_datagram
\t    7f11 dataplane::worker::Worker<B,A>::iterate

 1234 
\t    ffff [unknown]
";
        let p = parse_perf_script(text);
        assert_eq!(p.samples, 3);
        assert_eq!(p.buckets, [0, 1, 1, 0, 0, 1]);
        assert_eq!(p.shallow, 2);
        assert_eq!(p.other["(no dataplane frame)"], 1);
        assert_eq!(p.markers["Connection::poll_transmit"], 1);
        let mut twice = Profile::from_json(&p.json(1.0));
        assert_eq!(twice, p);
        twice.add(&p);
        assert_eq!(twice.samples, 6);
        assert_eq!(twice.other["(no dataplane frame)"], 2);
        let j = p.json(1000.0);
        assert_eq!(j["buckets"][1]["bucket"], "quinn-proto send");
        assert!(
            (j["buckets"][1]["ns_per_delivered_packet"].as_f64().unwrap() - 333.33).abs() < 0.1
        );
    }
}
