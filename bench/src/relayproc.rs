//! The relay under test as a command line: fastrelay's own, or any other
//! draft-18 relay given as a template with `{iface} {port} {cert} {key}`
//! (and optionally `{backend}`) placeholders. It runs in the relay
//! namespace; readiness is fastrelay's `{"event":"ready"}` line or, for
//! relays that print none, the UDP port bound for a moment.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::Value;

use crate::{nsproc::NsProcess, procstat};

/// How long a relay without a ready line must hold its port before the
/// benchmark starts (it may still be setting up behind the bound socket).
const PORT_SETTLE: Duration = Duration::from_millis(1500);

/// Program and arguments of the relay to run.
#[derive(Clone, Debug)]
pub struct RelayCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl RelayCommand {
    /// Splits `template` on whitespace (no shell quoting) and fills the
    /// placeholders. Running the program directly, not through a shell,
    /// keeps the child's pid the relay's own for /proc sampling.
    pub fn from_template(template: &str, vars: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut words = template.split_whitespace().map(|w| {
            vars.iter()
                .fold(w.to_string(), |w, (k, v)| w.replace(&format!("{{{k}}}"), v))
        });
        let program = words.next().context("--relay-cmd is empty")?;
        let args: Vec<String> = words.collect();
        if let Some(w) = std::iter::once(&program)
            .chain(&args)
            .find(|w| w.contains('{') && w.contains('}'))
        {
            anyhow::bail!("--relay-cmd: unknown placeholder in {w:?} (known: {{iface}} {{port}} {{cert}} {{key}} {{backend}})");
        }
        Ok(Self {
            program: program.into(),
            args,
        })
    }
}

/// A row label for a relay command line: its program's file name (not
/// `xdp` or `socket`, fastrelay's own labels).
pub fn program_label(cmd: &str) -> String {
    cmd.split_whitespace()
        .next()
        .and_then(|p| p.rsplit('/').next())
        .filter(|n| !n.is_empty() && *n != "xdp" && *n != "socket")
        .unwrap_or("other")
        .to_string()
}

/// A self-signed certificate for the name the clients expect, written as
/// PEM files `cert` and `key` for relays that take files.
pub fn write_identity(cert: &Path, key: &Path) -> anyhow::Result<()> {
    let certified =
        rcgen::generate_simple_self_signed(vec![crate::quic::RELAY_SERVER_NAME.to_string()])
            .context("generating a self-signed certificate")?;
    std::fs::write(cert, certified.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(key, certified.key_pair.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

pub struct RunningRelay {
    proc: NsProcess,
    /// fastrelay's ready line, `Null` for a relay that prints none.
    pub ready: Value,
}

impl RunningRelay {
    pub fn start(
        ns: &str,
        cmd: &RelayCommand,
        port: u16,
        log: PathBuf,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let proc = NsProcess::spawn(
            "relay",
            ns,
            &cmd.program,
            &cmd.args,
            log,
            // NO_COLOR: its log is a file that error messages quote.
            &[("FASTRELAY_LOG", "info"), ("NO_COLOR", "1")],
            // Wherever it pins itself.
            None,
        )?;
        let deadline = Instant::now() + timeout;
        let mut bound_since = None;
        loop {
            if let Some(v) = proc.next_json(Duration::from_millis(100))? {
                if v["event"] == "ready" {
                    return Ok(Self { proc, ready: v });
                }
            }
            if procstat::udp_port_bound(proc.pid(), port) {
                let since = *bound_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= PORT_SETTLE {
                    return Ok(Self {
                        proc,
                        ready: Value::Null,
                    });
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the relay did not become ready within {timeout:?}; its log ends:\n{}",
                    proc.log_tail()
                );
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// SIGTERM; returns fastrelay's `stopped` report (`Null` if it printed
    /// none, as other relays do). A non-zero exit is an error.
    pub fn stop(mut self) -> anyhow::Result<Value> {
        let (ok, lines) = self.proc.terminate(Duration::from_secs(10))?;
        anyhow::ensure!(
            ok,
            "the relay exited with an error; its log ends:\n{}",
            self.proc.log_tail()
        );
        Ok(lines
            .into_iter()
            .rev()
            .find(|v| v["event"] == "stopped")
            .unwrap_or(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_placeholders() {
        let c = RelayCommand::from_template(
            "/bin/relay run --iface {iface} --listen [::]:{port} --tls {cert},{key}",
            &[
                ("iface", "eth0"),
                ("port", "4433"),
                ("cert", "c.pem"),
                ("key", "k.pem"),
            ],
        )
        .unwrap();
        assert_eq!(c.program, PathBuf::from("/bin/relay"));
        assert_eq!(
            c.args,
            [
                "run",
                "--iface",
                "eth0",
                "--listen",
                "[::]:4433",
                "--tls",
                "c.pem,k.pem"
            ]
        );
        assert!(RelayCommand::from_template("relay {nope}", &[]).is_err());
    }
}
