//! Helpers of the namespace tests that mix the independent client
//! (`moqt-interop`) with the project's deliberately misbehaving peers.

#![allow(dead_code)] // each test file uses its own subset

use std::{path::PathBuf, thread, time::Duration};

use bench::harness::*;
use serde_json::Value;

pub const MIB: u64 = 1 << 20;

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn interop_bin() -> PathBuf {
    binary("moqt-interop")
}

/// `moqt-interop CMD` in client `i` (raw QUIC the way moq-transport's own
/// stack connects); its JSON line.
pub fn interop(topo: &Topology, i: usize, cmd: &str, args: &[&str], timeout: Duration) -> Value {
    let cert = topo.cert().display().to_string();
    let server = relay_for(i);
    let mut all = vec![cmd, "--server", &server, "--ca", &cert, "--wtq-raw"];
    all.extend_from_slice(args);
    let (_ok, out, err) = topo.exec(&topo.client_ns(i), &interop_bin(), &all, timeout);
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("moqt-interop {all:?} printed no JSON:\n{out}\n{err}"))
}

/// `fastrelay-client CMD --server .. --ca ..` in client `i`; its JSON line.
pub fn hostile(topo: &Topology, i: usize, cmd: &str, args: &[&str], timeout: Duration) -> Value {
    hostile_to(topo, i, &relay_for(i), cmd, args, timeout)
}

/// [`hostile`] toward the relay address `server` (e.g. IPv4 from a client
/// whose default is IPv6).
pub fn hostile_to(
    topo: &Topology,
    i: usize,
    server: &str,
    cmd: &str,
    args: &[&str],
    timeout: Duration,
) -> Value {
    let cert = topo.cert().display().to_string();
    let mut all = vec![cmd, "--server", server, "--ca", &cert];
    all.extend_from_slice(args);
    let (ok, out, err) = topo.exec(&topo.client_ns(i), &client_bin(), &all, timeout);
    assert!(ok, "fastrelay-client {all:?} failed:\n{out}\n{err}");
    last_json(&out)
}

/// Prints the relay's log when the test fails while it lives.
pub struct RelayLogOnPanic<'a>(pub &'a Relay);

impl Drop for RelayLogOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("relay log:\n{}", self.0.log());
        }
    }
}
