//! `moqt-interop`: a MoQT draft-18 test client for fastrelay built only on
//! Cloudflare's independent `moq-transport` crate.
//!
//! Every subcommand prints human progress on stderr and exactly one JSON
//! object on one line on stdout, also on failure (`"ok":false`), and exits
//! non-zero on failure.

mod capture;
mod cli;
mod conn;
mod fetch;
mod namespace;
mod payload;
mod publish;
mod subscribe;
mod util;

use clap::Parser;
use serde_json::{json, Value};

use crate::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    capture::init_tracing();

    let cmd_name = cli.command.name();
    // The publisher runs on a current-thread runtime on purpose: moq-transport
    // hands datagrams from the application to its forwarder through a
    // latest-value watch, and a single thread plus a yield after every write is
    // what makes the forwarder see each datagram before the next one replaces
    // it. The receiving side counts datagrams below the library (see
    // `conn::TapSession`), so it can use both cores.
    let runtime = match &cli.command {
        Command::Pub(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => finish(cmd_name, Err(anyhow::anyhow!("tokio runtime: {err}"))),
    };

    let result = runtime.block_on(async move {
        match cli.command {
            Command::Pub(args) => publish::run(args).await,
            Command::Sub(args) => subscribe::run(args).await,
            Command::Fetch(args) => fetch::run(args).await,
            Command::SubNamespace(args) => namespace::run(args).await,
        }
    });
    // Do not wait for stray library tasks (e.g. a peer that never closes).
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    finish(cmd_name, result)
}

/// Print the single JSON result line and exit.
///
/// A command returns `Ok(report)` when it ran to the end; the report's own
/// `ok` field still says whether the checks passed. `Err` means it could not
/// run at all (bad arguments, no connection, ...).
fn finish(cmd: &str, result: anyhow::Result<Value>) -> ! {
    let mut report = match result {
        Ok(report) => report,
        Err(err) => json!({ "ok": false, "error": format!("{err:#}") }),
    };
    if let Value::Object(map) = &mut report {
        map.insert("cmd".into(), Value::String(cmd.to_string()));
        map.entry("ok").or_insert(Value::Bool(false));
        map.entry("error").or_insert(Value::Null);
    }
    let ok = report.get("ok").and_then(Value::as_bool).unwrap_or(false);
    if !ok {
        if let Some(err) = report.get("error").and_then(Value::as_str) {
            eprintln!("moqt-interop {cmd}: FAILED: {err}");
        } else {
            eprintln!("moqt-interop {cmd}: FAILED");
        }
    } else {
        eprintln!("moqt-interop {cmd}: ok");
    }
    let line = serde_json::to_string(&report)
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"json: {e}\"}}"));
    println!("{line}");
    std::process::exit(if ok { 0 } else { 1 });
}
