//! A long-running process inside a network namespace that the benchmark
//! talks to while it runs: commands on its stdin, JSON events from its
//! stdout (read on a thread into a channel), stderr into a log file. It is
//! killed on drop, so a failing run leaves nothing behind.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::Value;

pub struct NsProcess {
    pub name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
}

impl NsProcess {
    /// `ip netns exec NS PROGRAM ARGS`. `ip netns exec` execs the program
    /// in place, so the child's pid is the program's own (what /proc
    /// sampling needs). With `cpus`, the process (and every thread it
    /// starts) may run only there.
    pub fn spawn(
        name: &str,
        ns: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        env: &[(&str, &str)],
        cpus: Option<&BTreeSet<usize>>,
    ) -> anyhow::Result<Self> {
        // Built before the fork: the child may only make system calls.
        let affinity = cpus.map(|cpus| {
            // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &c in cpus {
                // SAFETY: CPU_SET only writes inside `set` (it ignores out-of-range CPUs).
                unsafe { libc::CPU_SET(c, &mut set) };
            }
            set
        });
        let stderr = std::fs::File::create(&log)
            .with_context(|| format!("creating log {}", log.display()))?;
        let mut cmd = Command::new("ip");
        // SAFETY: prctl is async-signal-safe; the child dies with the
        // benchmark even if that is SIGKILLed, so no relay outlives a run.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(set) = &affinity {
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {} in namespace {ns}", program.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            stdin,
            lines,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Its stderr so far (for error messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Sends one command line on its stdin.
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .with_context(|| format!("writing to {}", self.name))
    }

    /// The next stdout line that is a JSON object, within `timeout`;
    /// `Ok(None)` on timeout, an error once stdout closed.
    pub fn next_json(&self, timeout: Duration) -> anyhow::Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
                        return Ok(Some(v));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    anyhow::bail!("{} exited; its log ends:\n{}", self.name, self.log_tail())
                }
            }
        }
    }

    /// Waits (up to `timeout`) for a JSON line with `"event": event`,
    /// skipping others; `on_other` sees every skipped event.
    pub fn wait_event(
        &self,
        event: &str,
        timeout: Duration,
        mut on_other: impl FnMut(&Value),
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_json(left)? {
                Some(v) if v["event"] == event => return Ok(v),
                Some(v) => on_other(&v),
                None => anyhow::bail!(
                    "{}: no {event:?} event within {timeout:?}; its log ends:\n{}",
                    self.name,
                    self.log_tail()
                ),
            }
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then SIGKILL after `grace`; returns whether it exited
    /// successfully and every JSON line it printed after this call.
    pub fn terminate(&mut self, grace: Duration) -> anyhow::Result<(bool, Vec<Value>)> {
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("{} already reaped", self.name);
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        self.reap(&mut child, grace)
    }

    /// Closes stdin and waits up to `timeout` for it to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<(bool, Vec<Value>)> {
        self.stdin = None;
        let Some(mut child) = self.child.take() else {
            anyhow::bail!("{} already reaped", self.name);
        };
        self.reap(&mut child, timeout)
    }

    fn reap(&mut self, child: &mut Child, timeout: Duration) -> anyhow::Result<(bool, Vec<Value>)> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().context("waiting for child")? {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!(
                    "{} did not exit within {timeout:?}; killed. Its log ends:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&line) {
                out.push(v);
            }
        }
        Ok((status.success(), out))
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
