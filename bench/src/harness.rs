//! Scaffolding shared by the namespace tests, the demo and the benchmarks:
//! the topology of `ci/netns` (embedded, so a binary needs no checkout), a
//! relay process inside it and client processes in the client namespaces.
//! Everything is removed on drop, also when a test fails or panics.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;

pub const RELAY_V4: &str = "198.18.0.1";
pub const RELAY_V6: &str = "fd00:1::1";
pub const PORT: u16 = 4433;

/// The topology script, embedded so that the binaries work from anywhere.
const NETNS_SCRIPT: &str = include_str!("../../ci/netns");

/// Runs `ci/netns ARGS`.
pub fn netns(args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    Command::new("bash")
        .arg("-c")
        .arg(NETNS_SCRIPT)
        .arg("ci/netns")
        .args(args)
        .status()
}

/// Where the workspace's binaries are: beside the running executable (or,
/// for test executables in `deps/`, one level up).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().unwrap();
    for candidate in [dir.join(name), dir.parent().unwrap().join(name)] {
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "{name} not found beside {}: build the whole workspace first (`cargo build --workspace`, as ci/test does)",
        exe.display()
    )
}

pub fn relay_bin() -> PathBuf {
    binary("fastrelay")
}

pub fn client_bin() -> PathBuf {
    binary("fastrelay-client")
}

pub fn require_root() {
    // SAFETY: no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "namespace tests need root (ip netns, XDP, AF_XDP)"
    );
}

/// The relay's address as client `i` of a topology reaches it: IPv4 for
/// even clients, IPv6 for odd ones, so that every test mixes families.
pub fn relay_for(i: usize) -> String {
    if i.is_multiple_of(2) {
        format!("{RELAY_V4}:{PORT}")
    } else {
        format!("[{RELAY_V6}]:{PORT}")
    }
}

/// A `ci/netns` topology; removed on drop.
pub struct Topology {
    pub prefix: String,
    pub clients: usize,
    pub dir: tempdir::TempDir,
    /// `fastrelay xdp-pass` on the bridge side of the relay's veth (see
    /// [`Topology::with_queues`]).
    peer_xdp: Option<Child>,
    /// The delay lines of [`Topology::impair`], stopped before the
    /// namespaces go.
    impairments: Mutex<Vec<impair::Line>>,
}

impl Topology {
    pub fn new(prefix: &str, clients: usize) -> Self {
        Self::with_queues(prefix, clients, 1)
    }

    /// A topology whose relay veth has `queues` RX/TX queues. With more
    /// than one, the bridge-side peer gets an XDP program that passes
    /// everything: a veth delivers to native-mode XDP, spread over its
    /// queues by flow hash, only when its peer runs XDP too (generic mode
    /// reports every packet on queue 0). The relay then needs
    /// `--xdp-mode drv`.
    pub fn with_queues(prefix: &str, clients: usize, queues: usize) -> Self {
        require_root();
        let _ = netns(&["down", prefix]);
        let status = netns(&["up", prefix, &clients.to_string(), &queues.to_string()])
            .expect("running ci/netns");
        assert!(status.success(), "ci/netns up {prefix} failed");
        let mut topo = Self {
            prefix: prefix.to_string(),
            clients,
            dir: tempdir::TempDir::new(prefix),
            peer_xdp: None,
            impairments: Mutex::default(),
        };
        if queues > 1 {
            let mut child = Command::new("ip")
                .args(["netns", "exec", &format!("{prefix}br")])
                .arg(relay_bin())
                .args(["xdp-pass", "--iface", "relay"])
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawning fastrelay xdp-pass");
            let mut first = String::new();
            let stdout = child.stdout.take().unwrap();
            let _ = BufReader::new(stdout).read_line(&mut first);
            topo.peer_xdp = Some(child);
            assert!(
                first.contains("\"ready\""),
                "fastrelay xdp-pass did not start: {first:?}"
            );
        }
        topo
    }

    /// Limits what client `i` receives to `kbit` kbit/s: a token bucket on
    /// the bridge port towards it (its downlink), with a 100 ms queue.
    pub fn throttle(&self, i: usize, kbit: u64) {
        let status = Command::new("ip")
            .args(["netns", "exec", &format!("{}br", self.prefix)])
            .args([
                "tc",
                "qdisc",
                "replace",
                "dev",
                &format!("c{i}"),
                "root",
                "tbf",
            ])
            .args([
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "16kb",
                "latency",
                "100ms",
            ])
            .status()
            .expect("running tc");
        assert!(status.success(), "tc tbf on c{i} failed");
    }

    /// Removes [`Topology::throttle`]'s limit from client `i`.
    pub fn unthrottle(&self, i: usize) {
        let _ = Command::new("ip")
            .args(["netns", "exec", &format!("{}br", self.prefix)])
            .args(["tc", "qdisc", "del", "dev", &format!("c{i}"), "root"])
            .status();
    }

    /// Impairs one direction of client `i`'s link like netem's `loss P%
    /// delay D J reorder R%` (see [`Impairment`]) until the topology is
    /// dropped. This kernel has no `sch_netem`, and no qdisc that holds a
    /// packet for a set time, so the packets go through a delay line in
    /// this process: on the bridge port `c{i}` (egress for
    /// [`Direction::Down`], ingress for [`Direction::Up`]) a tc filter
    /// steals every UDP frame (classic BPF; ARP and neighbour discovery
    /// pass untouched) and redirects it into a veth pair, a thread reads it
    /// there with an AF_PACKET socket, drops, delays or passes it, and
    /// transmits it on: down, out of `c{i}` towards the client (bypassing
    /// the qdisc layer, so the filter does not see it twice); up, out of
    /// the bridge port `relay` towards the relay. The relay's XDP and
    /// AF_XDP path is not involved, so what it sends is impaired like any
    /// other traffic. The frames are whole (the clients segment UDP GSO,
    /// see `ci/netns`), so every QUIC datagram is its own draw. The frames
    /// leaving a downlink line pass no qdisc: do not combine it with
    /// [`Topology::throttle`] of the same client. Returns the line's
    /// counters.
    pub fn impair(&self, i: usize, direction: Direction, spec: Impairment) -> Impaired {
        let br = format!("{}br", self.prefix);
        let port = format!("c{i}");
        let (tag, hook, out, bypass) = match direction {
            Direction::Down => ("dn", "egress", port.clone(), true),
            Direction::Up => ("up", "ingress", "relay".to_string(), false),
        };
        let (tap, line_end) = (format!("{tag}{i}a"), format!("{tag}{i}b"));
        let ip = |args: &[&str]| {
            let status = Command::new("ip")
                .args(["-n", &br])
                .args(args)
                .status()
                .expect("running ip");
            assert!(status.success(), "ip -n {br} {args:?} failed");
        };
        ip(&[
            "link", "add", &tap, "type", "veth", "peer", "name", &line_end,
        ]);
        for dev in [&tap, &line_end] {
            // No IPv6 link-local address, so nothing of its own on the line.
            ip(&["link", "set", dev, "addrgenmode", "none"]);
            ip(&["link", "set", dev, "up"]);
        }
        let stats = Arc::new(Mutex::new(ImpairStats::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (stats, stop) = (stats.clone(), stop.clone());
            let (line_end, out) = (line_end.clone(), out.clone());
            std::thread::Builder::new()
                .name(format!("impair-{tag}{i}"))
                .spawn(move || {
                    impair::run(&br, &line_end, &out, bypass, spec, &stats, &stop, ready_tx)
                })
                .expect("spawning the delay line")
        };
        let ready = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| Err(format!("no answer: {e}")));
        self.impairments.lock().unwrap().push(impair::Line {
            stop,
            thread: Some(thread),
        });
        if let Err(e) = ready {
            panic!("delay line for c{i} ({direction:?}) did not start: {e}");
        }
        // Only now that the line listens: steal the client's UDP frames.
        let tc = |args: &[&str]| {
            let status = Command::new("ip")
                .args(["netns", "exec", &format!("{}br", self.prefix), "tc"])
                .args(args)
                .status()
                .expect("running tc");
            assert!(status.success(), "tc {args:?} on c{i} failed");
        };
        tc(&["qdisc", "replace", "dev", &port, "clsact"]);
        tc(&[
            "filter",
            "add",
            "dev",
            &port,
            hook,
            "prio",
            "1",
            "protocol",
            "all",
            "bpf",
            "bytecode",
            impair::UDP_ONLY,
            "action",
            "mirred",
            "egress",
            "redirect",
            "dev",
            &tap,
        ]);
        Impaired(stats)
    }

    pub fn relay_ns(&self) -> String {
        format!("{}relay", self.prefix)
    }

    pub fn client_ns(&self, i: usize) -> String {
        format!("{}c{}", self.prefix, i)
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("relay-cert.pem")
    }

    /// Where every client run through this topology logs its TLS secrets
    /// (SSLKEYLOGFILE), so captures of the run can be decrypted.
    pub fn keylog(&self) -> PathBuf {
        self.dir.path().join("tls-keys.log")
    }

    /// Runs a command in namespace `ns` and returns (success, stdout, stderr).
    pub fn exec(
        &self,
        ns: &str,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> (bool, String, String) {
        let mut child = Command::new("timeout")
            .arg("--signal=KILL")
            .arg(format!("{}", timeout.as_secs().max(1)))
            .args(["ip", "netns", "exec", ns])
            .arg(program)
            .args(args)
            .env("SSLKEYLOGFILE", self.keylog())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning ip netns exec");
        let out = std::mem::take(&mut child.stdout);
        let err = std::mem::take(&mut child.stderr);
        let out_thread = std::thread::spawn(move || read_all(out));
        let err_thread = std::thread::spawn(move || read_all(err));
        let status = child.wait().expect("waiting for child");
        (
            status.success(),
            out_thread.join().unwrap(),
            err_thread.join().unwrap(),
        )
    }

    /// Runs `fastrelay-client ARGS` in client namespace `i`; returns whether
    /// it succeeded and its last JSON line (`Null` if it printed none).
    pub fn client_result(&self, i: usize, args: &[&str], timeout: Duration) -> (bool, Value) {
        let (ok, out, _err) = self.exec(&self.client_ns(i), &client_bin(), args, timeout);
        let json = out
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('{'))
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or(Value::Null);
        (ok, json)
    }

    /// Runs `fastrelay-client ARGS` in client namespace `i` and parses its
    /// last stdout line as JSON; panics with its stderr on failure.
    pub fn client(&self, i: usize, args: &[&str]) -> Value {
        let (ok, out, err) = self.exec(
            &self.client_ns(i),
            &client_bin(),
            args,
            Duration::from_secs(60),
        );
        assert!(
            ok,
            "fastrelay-client {args:?} failed:\nstdout: {out}\nstderr: {err}"
        );
        last_json(&out)
    }

    /// `fastrelay-client CMD --server SERVER --ca <the relay's certificate>
    /// --namespace NAMESPACE --track TRACK EXTRA..` (a MoQT client: moq-pub,
    /// moq-sub).
    pub fn moq_args(
        &self,
        cmd: &str,
        server: &str,
        namespace: &str,
        track: &str,
        extra: &[&str],
    ) -> Vec<String> {
        let cert = self.cert().display().to_string();
        [cmd, "--server", server, "--ca", &cert]
            .into_iter()
            .chain(["--namespace", namespace, "--track", track])
            .chain(extra.iter().copied())
            .map(String::from)
            .collect()
    }

    /// Runs a MoQT client ([`Topology::moq_args`]) in client namespace `i`;
    /// its JSON line, panicking with its stderr on failure.
    pub fn moq(
        &self,
        i: usize,
        cmd: &str,
        server: &str,
        namespace: &str,
        track: &str,
        extra: &[&str],
    ) -> Value {
        let args = self.moq_args(cmd, server, namespace, track, extra);
        self.client(i, &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Like [`Topology::moq`] for a client that may fail (reported, not
    /// a panic), within `timeout`: (success, JSON).
    #[allow(clippy::too_many_arguments)]
    pub fn moq_result(
        &self,
        i: usize,
        cmd: &str,
        server: &str,
        namespace: &str,
        track: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> (bool, Value) {
        let args = self.moq_args(cmd, server, namespace, track, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.client_result(i, &args, timeout)
    }

    pub fn echo_args(&self, server: &str) -> Vec<String> {
        vec![
            "echo".into(),
            "--server".into(),
            server.into(),
            "--ca".into(),
            self.cert().display().to_string(),
        ]
    }

    /// The XDP attachment of the relay interface as `ip link` shows it.
    pub fn relay_link(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.relay_ns(), "-d", "link", "show", "eth0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let lines = std::mem::take(
            self.impairments
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()),
        );
        for mut line in lines {
            line.stop.store(true, Ordering::Relaxed);
            if let Some(t) = line.thread.take() {
                let _ = t.join();
            }
        }
        if let Some(mut child) = self.peer_xdp.take() {
            // SIGTERM: it detaches (bpf link) and exits.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        let _ = netns(&["down", &self.prefix]);
    }
}

/// Which way along a client's link [`Topology::impair`] acts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// What the client receives: the relay's packets to it.
    Down,
    /// What the client sends: its packets to the relay.
    Up,
}

/// Like netem's `loss LOSS% delay DELAY JITTER reorder REORDER%`, without
/// correlation: each UDP packet is lost with probability `loss_percent`;
/// of the others `reorder_percent` go on at once and the rest after
/// `delay` ± `jitter` (uniform), so the ones sent at once overtake those
/// still waiting, and the jitter reorders the delayed ones among
/// themselves.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    pub loss_percent: f64,
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder_percent: f64,
}

/// What a delay line did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImpairStats {
    /// UDP frames that entered the line.
    pub packets: u64,
    /// Dropped as loss.
    pub dropped: u64,
    /// Passed on at once.
    pub immediate: u64,
    /// Held for the delay.
    pub delayed: u64,
    /// Passed on after a frame that entered the line later: reordered.
    pub reordered: u64,
    /// Transmitted on.
    pub forwarded: u64,
    /// Dropped because the line was full (not loss: a fault of the line).
    pub overflow: u64,
    /// Frames the line failed to read whole or to transmit.
    pub errors: u64,
}

impl std::ops::Sub for ImpairStats {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            packets: self.packets - o.packets,
            dropped: self.dropped - o.dropped,
            immediate: self.immediate - o.immediate,
            delayed: self.delayed - o.delayed,
            reordered: self.reordered - o.reordered,
            forwarded: self.forwarded - o.forwarded,
            overflow: self.overflow - o.overflow,
            errors: self.errors - o.errors,
        }
    }
}

/// The counters of one [`Topology::impair`] line.
#[derive(Clone)]
pub struct Impaired(Arc<Mutex<ImpairStats>>);

impl Impaired {
    pub fn stats(&self) -> ImpairStats {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub mod browser;
mod http;
mod impair;
pub use http::{http_get, HttpResponse};

fn read_all<R: std::io::Read>(r: Option<R>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s);
    }
    s
}

/// Resident memory (VmRSS) of process `pid`, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

pub fn last_json(out: &str) -> Value {
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in output: {out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

/// A relay process in the relay namespace; killed on drop.
pub struct Relay {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    pub ready: Value,
    stderr_path: PathBuf,
}

impl Relay {
    pub fn start(topo: &Topology, extra: &[&str]) -> Self {
        let cert = topo.cert().display().to_string();
        Self::start_with_tls(topo, &["--self-signed", "--write-cert", &cert], extra)
    }

    /// [`Relay::start`] with `tls` (e.g. `--cert`, `--key`) instead of a
    /// self-signed certificate written to [`Topology::cert`].
    pub fn start_with_tls(topo: &Topology, tls: &[&str], extra: &[&str]) -> Self {
        let bin = relay_bin().display().to_string();
        Self::start_command(topo, &topo.relay_ns(), &[&bin], tls, extra)
    }

    /// A relay in namespace `ns` (e.g. a second relay of a chain, in a
    /// client namespace) on its `eth0` and [`PORT`]; `args` give its TLS
    /// identity (`--self-signed`, or `--cert`/`--key`) and the rest.
    pub fn start_in(topo: &Topology, ns: &str, args: &[&str]) -> Self {
        let bin = relay_bin().display().to_string();
        Self::start_command(topo, ns, &[&bin], &[], args)
    }

    /// A relay in namespace `ns` run by `command` in place of the relay
    /// binary: the binary elsewhere, or behind a wrapper (`setpriv ...
    /// BINARY`); `tls` then `extra` follow `run --iface eth0 --port`.
    pub fn start_command(
        topo: &Topology,
        ns: &str,
        command: &[&str],
        tls: &[&str],
        extra: &[&str],
    ) -> Self {
        let stderr_path = topo
            .dir
            .path()
            .join(format!("relay-{}-{ns}.log", std::process::id()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let port = PORT.to_string();
        let mut args = vec!["run", "--iface", "eth0", "--port", &port];
        args.extend_from_slice(tls);
        args.extend_from_slice(extra);
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(command)
            .args(&args)
            // FASTRELAY_TEST_LOG (e.g. `relay=debug,info`) to see more of
            // a failing test's relay.
            .env(
                "FASTRELAY_LOG",
                std::env::var("FASTRELAY_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning the relay");
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut relay = Self {
            child: Some(child),
            lines,
            ready: Value::Null,
            stderr_path,
        };
        let line = relay
            .next_line(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("relay did not become ready; its log:\n{}", relay.log()));
        relay.ready = serde_json::from_str(&line).expect("ready line is JSON");
        assert_eq!(relay.ready["event"], "ready", "{line}");
        relay
    }

    fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Where the relay's log is written (readable after [`Relay::stop`]).
    pub fn log_path(&self) -> PathBuf {
        self.stderr_path.clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// SIGTERM, wait for a clean exit, return the final `stopped` report.
    pub fn stop(self) -> Value {
        self.terminate();
        self.wait_stopped()
    }

    /// SIGTERM only: the relay starts draining (see [`Relay::wait_stopped`]).
    pub fn terminate(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
    }

    /// After [`Relay::terminate`]: waits for a clean exit and returns the
    /// final `stopped` report.
    pub fn wait_stopped(mut self) -> Value {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "relay did not exit within 10 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "relay exited with {status}; log:\n{}",
            self.log()
        );
        let mut last = None;
        while let Some(line) = self.next_line(Duration::from_secs(2)) {
            last = Some(line);
        }
        let line = last.expect("relay printed its final report");
        let report: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(report["event"], "stopped", "{line}");
        report
    }

    /// The next `{"event":"stats",...}` line (the relay must run with
    /// `--stats-interval`), skipping other lines; `None` after `timeout`.
    pub fn next_stats(&self, timeout: Duration) -> Option<Value> {
        self.next_event(&["stats"], timeout)
    }

    /// The next stdout line whose `event` is one of `events`, skipping
    /// other lines; `None` after `timeout`.
    pub fn next_event(&self, events: &[&str], timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let line = self.next_line(left)?;
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if events.iter().any(|e| v["event"] == *e) {
                    return Some(v);
                }
            }
        }
    }

    /// A `stats` line printed after this call (older ones queued are
    /// skipped), so it shows the relay's state now.
    pub fn fresh_stats(&self, timeout: Duration) -> Option<Value> {
        while self.lines.try_recv().is_ok() {}
        self.next_stats(timeout)
    }

    /// The relay process's resident memory now (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.pid())
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the relay process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// SIGKILL, like a crash; waits for the process to be gone.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tiny self-removing temporary directory (no extra crate needed).
pub mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!("fastrelay-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
