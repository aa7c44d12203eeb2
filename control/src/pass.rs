//! `fastrelay xdp-pass`: the XDP program attached with no relay port, so it
//! passes every packet to the kernel, held until SIGINT/SIGTERM.
//!
//! Why it exists: a veth delivers frames to native-mode XDP (and spreads
//! them over its RX queues) only when its peer has an XDP program as well.
//! Multi-queue tests put this on the peer of the relay's veth.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use serde_json::json;

use crate::xdp::{XdpMode, XdpRedirect};

pub fn run(iface: &str, mode: XdpMode) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }
    // No ports: nothing is redirected. The bpf link goes with `program`.
    let program = XdpRedirect::attach(iface, mode, false, &[])?;
    println!(
        "{}",
        json!({ "event": "ready", "iface": iface, "xdp_mode": program.mode })
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(program);
    Ok(())
}
