//! The relay in XDP mode as an unprivileged user holding only the
//! capabilities docs/operations.md names (CAP_NET_ADMIN, CAP_NET_RAW,
//! CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK), the way a systemd unit with
//! `User=` and `AmbientCapabilities=` runs it: independent clients get
//! every object over the AF_XDP path. Without one of them it refuses to
//! start, naming it, and leaves nothing attached. Run as root.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use bench::harness::{tempdir::TempDir, *};
use common::*;

const CAPS: &str = "+net_admin,+net_raw,+bpf,+perfmon,+ipc_lock";

/// `setpriv` as nobody with `caps` inheritable and ambient, then `bin`.
fn as_nobody<'a>(caps: &'a str, bin: &'a str) -> Vec<String> {
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        &format!("--inh-caps={caps}"),
        &format!("--ambient-caps={caps}"),
        bin,
    ]
    .map(String::from)
    .to_vec()
}

/// The relay binary where nobody can run it, and a certificate it can read.
fn prepare(dir: &Path) -> (String, String, String) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("fastrelay");
    std::fs::copy(relay_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "fastrelay".into()]).unwrap();
    let (cert, key) = (dir.join("relay.pem"), dir.join("relay.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = |p: &Path| p.display().to_string();
    (s(&bin), s(&cert), s(&key))
}

#[test]
fn xdp_relay_runs_unprivileged_with_the_documented_capabilities() {
    let topo = Topology::new("frcp", 2);
    let dir = TempDir::new("caps");
    let (bin, cert, key) = prepare(dir.path());
    std::fs::copy(&cert, topo.cert()).unwrap();
    let tls = ["--cert", cert.as_str(), "--key", key.as_str()];

    // One capability short: refused up front, with its name.
    let short = as_nobody("+net_admin,+net_raw,+bpf,+ipc_lock", &bin);
    let ns = topo.relay_ns();
    let mut args: Vec<&str> = vec!["netns", "exec", &ns];
    args.extend(short.iter().map(String::as_str));
    args.extend(["run", "--iface", "eth0", "--xdp-mode", "skb"]);
    args.extend(tls);
    let out = std::process::Command::new("ip")
        .args(&args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without CAP_PERFMON: {stderr}"
    );
    assert!(stderr.contains("CAP_PERFMON"), "{stderr}");
    let link = std::process::Command::new("ip")
        .args(["-n", &ns, "link", "show", "eth0"])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(
        !link.contains("xdp"),
        "an XDP program stayed attached: {link}"
    );

    // All of them: it serves, over AF_XDP.
    let full = as_nobody(CAPS, &bin);
    let command: Vec<&str> = full.iter().map(String::as_str).collect();
    let relay = Relay::start_command(
        &topo,
        &topo.relay_ns(),
        &command,
        &tls,
        &["--xdp-mode", "skb"],
    );
    let _log = RelayLogOnPanic(&relay);
    let honest = Honest {
        groups: 10,
        per_group: 20,
        object_size: 800,
        objects_per_s: 200,
        timeout: Duration::from_secs(20),
    };
    let (sub, publisher) = std::thread::scope(|s| {
        let sub = s.spawn(|| honest.subscribe(&topo));
        std::thread::sleep(Duration::from_millis(300));
        let publisher = honest.publish(&topo);
        (sub.join().unwrap(), publisher)
    });
    honest.assert_lossless(&sub, &publisher);
    drop(_log);
    let report = relay.stop();
    assert!(
        u(&report["xdp"]["redirected"]) > 200,
        "traffic took the AF_XDP path: {report}"
    );
}
