//! `fastrelay run --config FILE` and `fastrelay check-config FILE`, through
//! the built binary: what a file is accepted with, how each kind of error
//! is reported (file, line, key), that the example file stays valid and
//! complete, and that the command line overrides the file on a running
//! relay (socket backend on loopback only).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_fastrelay");

/// A directory of its own for one test, removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("fastrelay-config-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn fastrelay(args: &[&str]) -> Outcome {
    let out = Command::new(BIN).args(args).output().unwrap();
    Outcome {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check_config(path: &Path) -> Outcome {
    fastrelay(&["check-config", path.to_str().unwrap()])
}

#[test]
fn a_good_file_is_accepted_with_its_values() {
    let dir = Scratch::new("good");
    let path = dir.file(
        "relay.toml",
        r#"# a relay on loopback
iface = "lo"
backend = "socket"
port = 4500
workers = 1
self-signed = true
idle = "block"
max-connection-buffer = "64M"
max-connections = 77
xdp-copy = false
"#,
    );
    let out = check_config(&path);
    assert!(out.ok, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "{}: ok (9 key(s) set: iface, backend, port, workers, self-signed, idle, \
             max-connection-buffer, max-connections, xdp-copy; the other options have their defaults)",
            path.display()
        )
    );
    // The values reached the parsed options (sizes through clap's parser).
    for part in [
        "backend socket on lo port 4500",
        "idle block",
        "--max-connection-buffer 67108864",
        "--max-connections 77 ",
    ] {
        assert!(out.stdout.contains(part), "{part:?} in {}", out.stdout);
    }
}

/// Each bad file is refused with `FILE:LINE: key `KEY`:` and a reason.
#[test]
fn errors_name_file_line_and_key() {
    let dir = Scratch::new("errors");
    let head = "iface = \"lo\"\nbackend = \"socket\"\nself-signed = true\n";
    let cases: &[(&str, &str, usize, &str, &str)] = &[
        (
            "unknown key",
            "max-objekt-size = \"1M\"\n",
            4,
            "max-objekt-size",
            "unknown key; did you mean `max-object-size`?",
        ),
        (
            "wrong type of a switch",
            "port = 4433\nxdp-copy = \"yes\"\n",
            5,
            "xdp-copy",
            "expected true or false, found the string \"yes\"",
        ),
        (
            "wrong type of a value",
            "port = [4433, 4434]\n",
            4,
            "port",
            "expected a single value",
        ),
        (
            "bad size",
            "max-object-size = \"12Q\"\n",
            4,
            "max-object-size",
            "'12Q' is not a size",
        ),
        (
            "invalid enum",
            "idle = \"sleepy\"\n",
            4,
            "idle",
            "[possible values: busy, adaptive, block]",
        ),
        (
            "out of range",
            "port = 70000\n",
            4,
            "port",
            "invalid value '70000'",
        ),
        (
            "cross-field limit",
            "cut-through = 0\nmax-object-size = \"30M\"\n",
            5,
            "max-object-size",
            "must be at most half of the data budget",
        ),
        (
            "cache bounds",
            "cache-per-track = \"1G\"\n",
            4,
            "cache-per-track",
            "must not exceed --cache-per-worker",
        ),
        (
            "conflicting TLS options",
            "cert = \"a.pem\"\nkey = \"b.pem\"\n",
            3,
            "self-signed",
            "cannot be used with",
        ),
        (
            "config in a config",
            "config = \"other.toml\"\n",
            4,
            "config",
            "cannot name another one",
        ),
        (
            "cross-field run option",
            "workers = 0\n",
            4,
            "workers",
            "--workers must be 1..=",
        ),
    ];
    for &(what, tail, line, key, reason) in cases {
        let path = dir.file("bad.toml", &format!("{head}{tail}"));
        let out = check_config(&path);
        assert!(!out.ok, "{what}: accepted");
        let err = out.stderr.trim();
        let at = format!("{}:{line}: key `{key}`: ", path.display());
        assert!(
            err.starts_with(&at),
            "{what}: {err:?} should start with {at:?}"
        );
        assert!(
            err.contains(reason),
            "{what}: {err:?} should say {reason:?}"
        );
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err:?}");
    }
}

/// What depends on the host is a note: the file may be for another one.
#[test]
fn host_specific_problems_are_notes() {
    let dir = Scratch::new("host");
    let path = dir.file(
        "other-host.toml",
        "iface = \"fr-nosuch0\"\nself-signed = true\nqueues = \"0,1\"\ncores = \"0,4096\"\n",
    );
    let out = check_config(&path);
    assert!(out.ok, "{}", out.stderr);
    let notes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("note: "))
        .collect();
    assert!(
        notes[0].contains("interface \"fr-nosuch0\" not found"),
        "{notes:?}"
    );
    assert!(notes[1].contains("core 4096 does not exist"), "{notes:?}");
}

#[test]
fn files_named_by_options_are_checked() {
    let dir = Scratch::new("files");
    let missing = dir.0.join("missing.pem");
    let path = dir.file(
        "tls.toml",
        &format!(
            "iface = \"lo\"\nbackend = \"socket\"\ncert = \"{0}\"\nkey = \"{0}\"\n",
            missing.display()
        ),
    );
    let err = check_config(&path).stderr;
    assert!(
        err.starts_with(&format!("{}:3: key `cert`: ", path.display())),
        "{err}"
    );
    assert!(err.contains("reading certificate"), "{err}");
    // A certificate file that is no certificate.
    let junk = dir.file("junk.pem", "not a PEM file\n");
    let path = dir.file(
        "junk.toml",
        &format!(
            "iface = \"lo\"\nbackend = \"socket\"\ncert = \"{0}\"\nkey = \"{0}\"\n",
            junk.display()
        ),
    );
    let out = check_config(&path);
    assert!(!out.ok);
    assert!(
        out.stderr
            .starts_with(&format!("{}:3: key `cert`: ", path.display())),
        "{}",
        out.stderr
    );
    // A real pair passes; a key of another certificate does not.
    let pair = rcgen::generate_simple_self_signed(vec!["relay.test".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).unwrap();
    let cert = dir.file("cert.pem", &pair.cert.pem());
    let key = dir.file("key.pem", &pair.key_pair.serialize_pem());
    let wrong_key = dir.file("other-key.pem", &other.key_pair.serialize_pem());
    let tls = |key: &Path| {
        format!(
            "iface = \"lo\"\nbackend = \"socket\"\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        )
    };
    let out = check_config(&dir.file("pair.toml", &tls(&key)));
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("certificate {}", cert.display())),
        "{}",
        out.stdout
    );
    let path = dir.file("mismatch.toml", &tls(&wrong_key));
    let out = check_config(&path);
    assert!(!out.ok, "a key of another certificate was accepted");
    assert!(
        out.stderr
            .starts_with(&format!("{}:3: key `cert`: ", path.display()))
            && out.stderr.contains("not a usable TLS identity"),
        "{}",
        out.stderr
    );
    let path = dir.file("nokey.toml", &tls(&junk));
    let out = check_config(&path);
    assert!(
        out.stderr
            .starts_with(&format!("{}:4: key `key`: ", path.display())),
        "{}",
        out.stderr
    );
    let path = dir.file(
        "write.toml",
        &format!(
            "iface = \"lo\"\nbackend = \"socket\"\nself-signed = true\nwrite-cert = \"{}\"\n",
            dir.0.join("no/such/dir/relay.pem").display()
        ),
    );
    let err = check_config(&path).stderr;
    assert!(
        err.starts_with(&format!("{}:4: key `write-cert`: ", path.display())),
        "{err}"
    );
    // Upstream links: the URL, the CA and the token file are checked; the
    // certificate above serves as a CA.
    let upstream = |url: &str, ca: &Path, token: &Path| {
        format!(
            "iface = \"lo\"\nbackend = \"socket\"\nself-signed = true\n\
             upstream = [\"{url}\"]\nupstream-ca = \"{}\"\nupstream-token-file = \"{}\"\n",
            ca.display(),
            token.display()
        )
    };
    let token = dir.file("edge.jwt", "a.b.c\n");
    let empty = dir.file("empty.jwt", "\n");
    let good = dir.file(
        "up.toml",
        &upstream("moqt://198.18.0.13:4433/moq", &cert, &token),
    );
    let out = check_config(&good);
    assert!(out.ok, "{}", out.stderr);
    for (name, url, ca, token, line, key) in [
        (
            "scheme.toml",
            "http://198.18.0.13:4433",
            &cert,
            &token,
            4,
            "upstream",
        ),
        (
            "noport.toml",
            "moqt://198.18.0.13",
            &cert,
            &token,
            4,
            "upstream",
        ),
        (
            "ca.toml",
            "moqt://198.18.0.13:4433",
            &missing,
            &token,
            5,
            "upstream-ca",
        ),
        (
            "empty.toml",
            "moqt://198.18.0.13:4433",
            &cert,
            &empty,
            6,
            "upstream-token-file",
        ),
    ] {
        let path = dir.file(name, &upstream(url, ca, token));
        let out = check_config(&path);
        assert!(!out.ok, "{name} was accepted");
        assert!(
            out.stderr
                .starts_with(&format!("{}:{line}: key `{key}`: ", path.display())),
            "{name}: {}",
            out.stderr
        );
    }
}

#[test]
fn syntax_errors_and_missing_keys() {
    let dir = Scratch::new("syntax");
    let path = dir.file("s.toml", "iface = \"lo\"\nport = = 3\n");
    let out = check_config(&path);
    assert!(!out.ok);
    assert!(
        out.stderr
            .starts_with(&format!("{}:2:8: invalid TOML: ", path.display())),
        "{}",
        out.stderr
    );
    let path = dir.file("d.toml", "iface = \"lo\"\nport = 1\n\nport = 2\n");
    let out = check_config(&path);
    assert!(!out.ok);
    assert!(
        out.stderr
            .starts_with(&format!("{}:4:1: invalid TOML: ", path.display())),
        "{}",
        out.stderr
    );
    let path = dir.file("t.toml", "backend = \"socket\"\nself-signed = true\n");
    let out = check_config(&path);
    assert!(!out.ok);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "{}: key `iface`: required, set neither in the file nor on the command line",
            path.display()
        )
    );
    let out = check_config(&dir.0.join("absent.toml"));
    assert!(!out.ok);
    assert!(
        out.stderr.contains("absent.toml: cannot read"),
        "{}",
        out.stderr
    );
}

/// The options of `run` with their defaults, from clap's own `--help`.
fn run_options() -> BTreeMap<String, Option<String>> {
    let help = fastrelay(&["run", "--help"]).stdout;
    let mut options = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            options.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(at)) = (&current, trimmed.find("[default: ")) {
            let value = trimmed[at + 10..].trim_end_matches(']').to_owned();
            options.insert(name.clone(), Some(value));
        }
    }
    options.remove("help");
    options.remove("config");
    assert!(options.len() > 20, "parsed --help: {options:?}");
    options
}

/// `4M` as 4194304; other values unchanged.
fn normalized(value: &str) -> String {
    let shift = match value.chars().last() {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        _ => return value.to_owned(),
    };
    match value[..value.len() - 1].parse::<u64>() {
        Ok(n) => (n << shift).to_string(),
        Err(_) => value.to_owned(),
    }
}

#[test]
fn the_example_file_is_valid_complete_and_right_about_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/relay.example.toml");
    let out = check_config(&example);
    assert!(out.ok, "{}", out.stderr);
    let text = std::fs::read_to_string(&example).unwrap();
    // Option lines, set or commented out: `key = value` / `# key = value`.
    let mut listed = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        let Some((key, value)) = line.split_once(" = ") else {
            continue;
        };
        if !key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            continue;
        }
        let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .remove("v")
            .unwrap();
        let value = match value {
            toml::Value::String(s) => s,
            other => other.to_string(),
        };
        listed.insert(key.to_owned(), value);
    }
    let options = run_options();
    // Nothing stale: every key the example shows is an option of `run`.
    for key in listed.keys() {
        assert!(
            options.contains_key(key),
            "the example lists `{key}`, no option of run"
        );
    }
    for (option, default) in options {
        let value = listed
            .get(&option)
            .unwrap_or_else(|| panic!("docs/relay.example.toml does not list `{option}`"));
        // A commented line shows the default; an active one may differ.
        let active = text.lines().any(|l| l.starts_with(&format!("{option} = ")));
        if let (Some(default), false) = (default, active) {
            assert_eq!(
                normalized(value),
                default,
                "default of `{option}` in the example"
            );
        }
    }
}

/// Two UDP ports free on loopback now.
fn free_ports() -> (u16, u16) {
    let a = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    let b = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Stops the relay (SIGTERM) if the test ends early.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
            let _ = self.0.wait();
        }
    }
}

#[test]
fn the_command_line_overrides_the_file() {
    let dir = Scratch::new("override");
    let (file_port, cli_port) = free_ports();
    let written = dir.0.join("relay.pem");
    let missing = dir.0.join("missing.pem");
    // The file's TLS files do not exist: --self-signed on the command
    // line must replace them (it conflicts with --cert/--key).
    let path = dir.file(
        "relay.toml",
        &format!(
            "iface = \"lo\"\nbackend = \"socket\"\nport = {file_port}\nidle = \"block\"\n\
             drain-ms = 100\ncert = \"{0}\"\nkey = \"{0}\"\nwrite-cert = \"{1}\"\n",
            missing.display(),
            written.display()
        ),
    );
    let cli_port_text = cli_port.to_string();
    let child = Command::new(BIN)
        .args([
            "run",
            "--config",
            path.to_str().unwrap(),
            "--port",
            &cli_port_text,
            "--self-signed",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut relay = Relay(child);
    let (tx, rx) = mpsc::channel();
    let stdout = relay.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let ready: serde_json::Value = serde_json::from_str(
        &rx.recv_timeout(Duration::from_secs(10))
            .expect("ready line"),
    )
    .unwrap();
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["port"], cli_port, "{ready}");
    assert_eq!(ready["iface"], "lo");
    assert_eq!(ready["backend"], "socket");
    // The relay holds the command line's port, not the file's.
    let held = UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), cli_port));
    assert_eq!(
        held.err().map(|e| e.kind()),
        Some(std::io::ErrorKind::AddrInUse)
    );
    UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), file_port))
        .expect("the file's port stays free");
    // What the command line did not override came from the file.
    let pem = std::fs::read_to_string(&written).expect("write-cert from the file");
    assert!(pem.contains("BEGIN CERTIFICATE"));

    // SAFETY: signalling our own child.
    unsafe { libc::kill(relay.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopped = None;
    while stopped.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["event"] == "stopped" {
                stopped = Some(v);
            }
        }
    }
    assert!(stopped.is_some(), "no stopped line after SIGTERM");
    let status = relay.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn run_refuses_a_bad_file_before_starting() {
    let dir = Scratch::new("runbad");
    let path = dir.file(
        "bad.toml",
        "iface = \"lo\"\nbackend = \"socket\"\nself-signed = true\nmax-connection-buffer = \"4M\"\n",
    );
    let out = fastrelay(&["run", "--config", path.to_str().unwrap()]);
    assert!(!out.ok);
    assert!(out.stdout.is_empty(), "started: {}", out.stdout);
    assert!(
        out.stderr.contains(&format!(
            "{}:4: key `max-connection-buffer`: ",
            path.display()
        )),
        "{}",
        out.stderr
    );
    // check-config says the same.
    let checked = check_config(&path);
    assert!(!checked.ok);
    assert!(
        out.stderr.ends_with(&checked.stderr),
        "{} / {}",
        out.stderr,
        checked.stderr
    );
}
