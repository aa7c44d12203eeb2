//! The wire-level packet-number proof of the namespace tests: capture the
//! relay's traffic on the bridge, decrypt it with the clients' TLS key log
//! (tshark), and check that every connection's packets from the relay carry
//! strictly increasing packet numbers in each packet-number space, with no
//! duplicate, and that the relay closed no connection with a transport error.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context};
use serde::Serialize;

/// A tcpdump capture running in a namespace; stopped (and flushed) by `stop`.
pub struct Capture {
    child: Option<Child>,
    /// tcpdump's stderr, read by a thread (it carries the final statistics).
    stderr: Option<std::thread::JoinHandle<String>>,
    pub path: PathBuf,
}

/// How long tcpdump may take to start capturing on a loaded machine.
const CAPTURE_START_TIMEOUT: Duration = Duration::from_secs(20);

impl Capture {
    /// Captures the relay's traffic of topology `topo` on the bridge port
    /// towards the relay (every datagram to or from the relay port), into
    /// the topology's directory.
    pub fn relay_port(topo: &crate::harness::Topology) -> Self {
        Self::start(
            &format!("{}br", topo.prefix),
            "relay",
            crate::harness::PORT,
            &topo.dir.path().join("relay.pcap"),
        )
        .expect("starting the capture")
    }

    /// Captures UDP traffic to or from `port` on `iface` in namespace `ns`;
    /// returns once tcpdump says it is listening, so no packet sent after
    /// this call is missed (a missed client Initial leaves the whole
    /// connection undecryptable).
    pub fn start(ns: &str, iface: &str, port: u16, path: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("ip")
            // Immediate mode: otherwise packets wait in a partly filled ring
            // block (up to a second) and are lost when tcpdump is stopped.
            // A large kernel buffer (-B, KiB) so a loaded 2-core box drops none.
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                iface,
                "--immediate-mode",
                "-U",
                "-n",
            ])
            .args(["-B", "131072", "-w"])
            .arg(path)
            .args(["udp", "port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting tcpdump (installed by ci/bootstrap)")?;
        let stderr = child.stderr.take().expect("piped");
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("listening on") {
                    let _ = listening_tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let mut capture = Self {
            child: Some(child),
            stderr: Some(reader),
            path: path.to_path_buf(),
        };
        if listening_rx.recv_timeout(CAPTURE_START_TIMEOUT).is_err() {
            let log = capture.finish().unwrap_or_default();
            bail!("tcpdump did not start listening on {iface} in {ns}: {log}");
        }
        Ok(capture)
    }

    /// Stops tcpdump and returns what it printed.
    fn finish(&mut self) -> anyhow::Result<String> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child; SIGINT makes tcpdump flush and exit.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            child.wait()?;
        }
        Ok(self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default())
    }

    /// Stops the capture; returns the file and how many packets the kernel
    /// dropped before tcpdump could read them (as tcpdump reports it).
    pub fn stop(mut self) -> anyhow::Result<(PathBuf, u64)> {
        std::thread::sleep(Duration::from_millis(300)); // let the last packets land
        let report = self.finish()?;
        let dropped = report
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        Ok((self.path.clone(), dropped))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[derive(Debug, Serialize, Default)]
pub struct PnReport {
    /// QUIC connections seen (tshark's connection numbers).
    pub connections: usize,
    /// UDP datagrams sent by the relay (one may coalesce several packets).
    pub relay_datagrams: u64,
    /// Decrypted QUIC packets sent by the relay.
    pub relay_packets: u64,
    /// Relay packets tshark could not decrypt (missing keys: a proof gap).
    pub undecrypted: u64,
    /// Human-readable violations; empty when the proof holds.
    pub violations: Vec<String>,
    /// CONNECTION_CLOSE frames of the transport type (0x1c) with a non-zero
    /// code, sent by either side.
    pub transport_errors: u64,
}

impl PnReport {
    pub fn holds(&self) -> bool {
        self.violations.is_empty() && self.undecrypted == 0 && self.transport_errors == 0
    }
}

/// Stops `capture` and proves the relay's packet numbers over it: the proof
/// holds, it covers `connections` connections, and it saw every datagram the
/// relay counted as sent (`relay_tx`) but for what the capture dropped.
/// Panics with the details otherwise (for tests).
pub fn assert_holds(
    capture: Capture,
    keylog: &Path,
    relay_port: u16,
    connections: usize,
    relay_tx: u64,
) -> PnReport {
    let (pcap, capture_dropped) = capture.stop().expect("stopping the capture");
    let proof = verify(&pcap, keylog, relay_port).expect("decoding the capture");
    assert!(proof.holds(), "packet-number proof failed: {proof:?}");
    assert_eq!(
        proof.connections, connections,
        "connections in the capture: {proof:?}"
    );
    assert!(
        proof.relay_datagrams + capture_dropped >= relay_tx,
        "the capture misses relay datagrams: {proof:?}, capture dropped {capture_dropped}, relay sent {relay_tx}"
    );
    proof
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Space {
    Initial,
    Handshake,
    Application,
}

/// Decodes `pcap` with the key log and checks the relay's packet numbers.
/// `relay_port` identifies the relay side of every datagram.
pub fn verify(pcap: &Path, keylog: &Path, relay_port: u16) -> anyhow::Result<PnReport> {
    let out = Command::new("tshark")
        // Two passes: connection IDs announced anywhere in the capture are
        // known before any packet is dissected.
        .arg("-2")
        .arg("-r")
        .arg(pcap)
        .arg("-o")
        .arg(format!("tls.keylog_file:{}", keylog.display()))
        .args(["-d", &format!("udp.port=={relay_port},quic")])
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ])
        .args([
            "-e",
            "udp.srcport",
            "-e",
            "quic.connection.number",
            "-e",
            "quic.header_form",
        ])
        .args(["-e", "quic.long.packet_type", "-e", "quic.packet_number"])
        .args(["-e", "quic.frame_type", "-e", "quic.cc.error_code"])
        .stderr(Stdio::null())
        .output()
        .context("running tshark (installed by ci/bootstrap)")?;
    if !out.status.success() {
        bail!("tshark failed on {}", pcap.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(check(&text, relay_port))
}

/// The non-empty items of one aggregated tshark field.
fn list(field: &str) -> Vec<&str> {
    field.split(',').filter(|x| !x.is_empty()).collect()
}

/// The checking half of [`verify`], on tshark's field output.
fn check(tshark_fields: &str, relay_port: u16) -> PnReport {
    let mut report = PnReport::default();
    let mut last: HashMap<(String, Space), u64> = HashMap::new();
    let mut connections = std::collections::HashSet::new();
    for (line_no, line) in tshark_fields.lines().enumerate() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 7 {
            continue;
        }
        let from_relay = f[0] == relay_port.to_string();
        let conn = list(f[1]).first().copied().unwrap_or("?").to_string();
        connections.insert(conn.clone());
        let forms = list(f[2]);
        let mut long_types = list(f[3]).into_iter();
        let pns = list(f[4]);
        // Transport CONNECTION_CLOSE (0x1c) with a non-zero error code.
        let frame_types = list(f[5]);
        let codes = list(f[6]);
        if frame_types.contains(&"28") && codes.iter().any(|c| *c != "0") {
            report.transport_errors += 1;
        }
        if !from_relay {
            continue;
        }
        report.relay_datagrams += 1;
        // A datagram with fewer packet numbers than packets (or none at all)
        // was not fully decrypted.
        if pns.len() < forms.len().max(1) {
            report.undecrypted += (forms.len().max(1) - pns.len()) as u64;
        }
        for (i, pn) in pns.iter().enumerate() {
            let space = match forms.get(i) {
                Some(&"1") => match long_types.next() {
                    Some("0") => Space::Initial,
                    Some("2") => Space::Handshake,
                    _ => Space::Application, // 0-RTT shares the application space
                },
                _ => Space::Application,
            };
            let Ok(pn) = pn.parse::<u64>() else {
                report.violations.push(format!(
                    "capture line {}: unreadable packet number {pn:?}",
                    line_no + 1
                ));
                continue;
            };
            report.relay_packets += 1;
            if let Some(prev) = last.insert((conn.clone(), space), pn) {
                if pn <= prev {
                    report.violations.push(format!(
                        "capture line {}: connection {conn} {space:?} packet number {pn} after {prev}",
                        line_no + 1
                    ));
                }
            }
        }
    }
    report.connections = connections.len();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_increasing_and_flags_repeats_per_space() {
        // relay port 4433; coalesced Initial+Handshake, then 1-RTT packets.
        let good =
            "4433|0|1,1|0,2|0,0||\n50000|0|0||0||\n4433|0|0||1||\n4433|0|0||2|1|\n4433|1|0||0||\n";
        let r = check(good, 4433);
        assert!(r.holds(), "{r:?}");
        assert_eq!(r.relay_packets, 5);
        assert_eq!(r.connections, 2);

        let repeat = "4433|0|0||5||\n4433|0|0||5||\n";
        let r = check(repeat, 4433);
        assert_eq!(r.violations.len(), 1, "{r:?}");

        let backwards = "4433|0|0||7||\n4433|0|0||3||\n";
        assert!(!check(backwards, 4433).holds());

        // The same number in another space or connection is fine.
        let spaces = "4433|0|1|0|0||\n4433|0|1|2|0||\n4433|0|0||0||\n4433|1|0||0||\n";
        assert!(check(spaces, 4433).holds());

        let undecrypted = "4433|0|0||||\n";
        assert!(!check(undecrypted, 4433).holds());

        let transport_error = "50000|0|0||9|28|10\n";
        assert_eq!(check(transport_error, 4433).transport_errors, 1);
    }
}
