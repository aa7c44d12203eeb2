//! Headless Chromium (Debian's `chromium`) in a network namespace, for the
//! tests and the demo of the relay's web page: it loads a page of the
//! admin listener in automatic mode and hands back the one
//! `FASTRELAY-RESULT {json}` line the page logs to its console.
//!
//! The page is served over plain http, which is not a secure context, so
//! WebTransport is enabled for its origin with
//! `--unsafely-treat-insecure-origin-as-secure`. Chromium runs in a process
//! group of its own with a fresh profile directory: both are removed on
//! drop, also when a test fails, and every wait is bounded.

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The marker the page's automatic mode logs its result after.
pub const RESULT_MARKER: &str = "FASTRELAY-RESULT ";

/// The Chromium binary: `$FASTRELAY_CHROMIUM`, else `chromium` on PATH.
pub fn chromium_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FASTRELAY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    })
}

/// The flags a headless run needs; `origin` (`http://host:port`) is the
/// admin listener's, treated as secure so the page may use WebTransport.
pub fn chromium_flags(origin: &str, profile: &Path) -> Vec<String> {
    vec![
        "--headless=new".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--unsafely-treat-insecure-origin-as-secure={origin}"),
        // Console messages go to stderr, where the result is read.
        "--enable-logging=stderr".into(),
        "--v=0".into(),
    ]
}

/// One headless Chromium showing one page.
pub struct Browser {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    profile: PathBuf,
    /// Every stderr line so far (for failure messages).
    seen: Vec<String>,
}

impl Browser {
    /// Starts Chromium in namespace `ns` on `url`; `origin` is the page's.
    pub fn open(ns: &str, origin: &str, url: &str) -> Result<Self, String> {
        let bin = chromium_bin().ok_or("chromium is not installed (apt-get install chromium)")?;
        let profile = std::env::temp_dir().join(format!(
            "fastrelay-chromium-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&profile).map_err(|e| format!("profile dir: {e}"))?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&bin)
            .args(chromium_flags(origin, &profile))
            .arg(url)
            // Its caches and crash reports go to the profile too.
            .env("HOME", &profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the zygote, renderers and GPU process
            // all go with one kill.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting chromium: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr pipe")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child: Some(child),
            lines,
            profile,
            seen: Vec::new(),
        })
    }

    /// Waits up to `timeout` for the page's result line.
    pub fn result(&mut self, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = parse_result(&line) {
                        return Ok(v);
                    }
                    self.seen.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "no result from the page within {timeout:?}; chromium said:\n{}",
                        self.tail()
                    ))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!(
                        "chromium exited without a result; it said:\n{}",
                        self.tail()
                    ))
                }
            }
        }
    }

    /// The last lines Chromium printed.
    pub fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(40);
        self.seen[from..].join("\n")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling the process group we created.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Runs the page at `url` in namespace `ns` until it logs its result (at
/// most `timeout`); Chromium is gone when this returns.
pub fn run_page(ns: &str, origin: &str, url: &str, timeout: Duration) -> Result<Value, String> {
    Browser::open(ns, origin, url)?.result(timeout)
}

/// The JSON of a console line such as
/// `[..:INFO:CONSOLE:213] "FASTRELAY-RESULT {...}", source: http://.. (213)`.
pub fn parse_result(line: &str) -> Option<Value> {
    let at = line.find(RESULT_MARKER)?;
    let rest = &line[at + RESULT_MARKER.len()..];
    let end = rest.rfind('}')?;
    serde_json::from_str(&rest[..=end]).ok()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_result_lines() {
        let line = r#"[1:1:1203/162303.436250:INFO:CONSOLE:213] "FASTRELAY-RESULT {"ok":false,"errors":["a \"b\""]}", source: http://127.0.0.1:9464/app.js (213)"#;
        let v = parse_result(line).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["errors"][0], "a \"b\"");
        assert!(parse_result("[..] \"something else\"").is_none());
    }
}
