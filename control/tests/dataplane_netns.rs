//! End-to-end tests of the dataplane in network namespaces (ci/netns), with
//! the XDP program in generic mode on the relay's veth. Run as root.

use std::{process::Command, time::Duration};

use bench::{harness::*, pnproof};
use serde_json::Value;

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn assert_echo_ok(result: &Value, stream_bytes: u64, datagrams: u64) {
    assert_eq!(result["stream"]["verified"], true, "{result}");
    assert_eq!(u(&result["stream"]["bytes"]), stream_bytes, "{result}");
    assert_eq!(u(&result["datagrams"]["echoed"]), datagrams, "{result}");
    assert_eq!(result["alive_at_end"], true, "{result}");
}

/// Handshake, 4 MiB stream echo and 1 000 datagram echoes over IPv4 and IPv6;
/// the XDP counters show every relay packet came through AF_XDP, and the
/// decrypted capture shows the relay's packet numbers strictly increasing.
#[test]
fn echo_over_xdp_ipv4_and_ipv6() {
    let topo = Topology::new("frta", 2);
    let capture = pnproof::Capture::relay_port(&topo);
    let relay = Relay::start(&topo, &["--backend", "xdp", "--xdp-mode", "skb"]);
    assert_eq!(relay.ready["xdp_mode"], "skb");
    assert!(
        topo.relay_link().contains("xdpgeneric"),
        "{}",
        topo.relay_link()
    );

    let mut sent_by_clients = 0;
    for (client, server) in [
        (1, format!("{RELAY_V4}:{PORT}")),
        (2, format!("[{RELAY_V6}]:{PORT}")),
    ] {
        let mut args = topo.echo_args(&server);
        args.extend(["--stream-bytes", "4194304", "--datagrams", "1000"].map(String::from));
        let result = topo.client(client, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_echo_ok(&result, 4 << 20, 1000);
        sent_by_clients += u(&result["sent_packets"]);
    }

    let report = relay.stop();
    let xdp = &report["xdp"];
    let worker = &report["workers"][0];
    // Everything the worker received came through the redirect, and every
    // client packet (loss on veth is nil) reached the worker.
    assert_eq!(u(&worker["rx_packets"]), u(&xdp["redirected"]), "{report}");
    assert!(
        u(&xdp["redirected"]) >= sent_by_clients * 99 / 100,
        "{report}: clients sent {sent_by_clients}"
    );
    assert_eq!(u(&worker["rx_dropped_malformed"]), 0, "{report}");
    assert_eq!(u(&xdp["no_socket"]), 0, "{report}");
    assert_eq!(u(&worker["connections_accepted"]), 2, "{report}");

    pnproof::assert_holds(capture, &topo.keylog(), PORT, 2, u(&worker["tx_packets"]));
}

/// The same echo through the kernel-socket backend (the baseline), with two
/// SO_REUSEPORT workers in blocking idle mode.
#[test]
fn echo_over_socket_backend() {
    let topo = Topology::new("frtb", 1);
    // Two SO_REUSEPORT workers that sleep whenever idle.
    let relay = Relay::start(
        &topo,
        &["--backend", "socket", "--workers", "2", "--idle", "block"],
    );
    let v4 = format!("{RELAY_V4}:{PORT}");
    let v6 = format!("[{RELAY_V6}]:{PORT}");
    for server in [&v4, &v6, &v4, &v6] {
        let mut args = topo.echo_args(server);
        args.extend(["--stream-bytes", "1048576", "--datagrams", "200"].map(String::from));
        let result = topo.client(1, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_echo_ok(&result, 1 << 20, 200);
    }
    assert!(
        !topo.relay_link().contains("xdp"),
        "socket backend attached XDP: {}",
        topo.relay_link()
    );
    let report = relay.stop();
    assert!(report["xdp"].is_null(), "{report}");
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{report}");
    let accepted: u64 = workers.iter().map(|w| u(&w["connections_accepted"])).sum();
    assert_eq!(accepted, 4, "{report}");
    // Whatever reached a worker that does not own its connection was
    // handed over, not lost.
    let dropped: u64 = workers.iter().map(|w| u(&w["handoff_dropped"])).sum();
    assert_eq!(dropped, 0, "{report}");
}

/// ICMP echo and UDP to another port still reach the relay namespace's
/// kernel while the program is attached.
#[test]
fn non_relay_traffic_passes_to_the_kernel() {
    let topo = Topology::new("frtc", 1);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    for target in [RELAY_V4, RELAY_V6] {
        let status = Command::new("ip")
            .args([
                "netns",
                "exec",
                &topo.client_ns(1),
                "ping",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                target,
            ])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "ping {target} failed with XDP attached");
    }
    for (bind, dest) in [
        ("0.0.0.0:9000", format!("{RELAY_V4}:9000")),
        ("[::]:9001", format!("[{RELAY_V6}]:9001")),
    ] {
        let relay_ns = topo.relay_ns();
        let bind = bind.to_string();
        let sink = std::thread::spawn({
            let topo_ns = relay_ns.clone();
            move || {
                let out = Command::new("ip")
                    .args(["netns", "exec", &topo_ns])
                    .arg(client_bin())
                    .args([
                        "sink", "--bind", &bind, "--expect", "20", "--max-ms", "5000",
                    ])
                    .output()
                    .unwrap();
                last_json(&String::from_utf8_lossy(&out.stdout))
            }
        });
        std::thread::sleep(Duration::from_millis(300)); // let the sink bind
        topo.client(1, &["garbage", "--server", &dest, "--count", "20"]);
        let got = sink.join().unwrap();
        assert_eq!(
            u(&got["received"]),
            20,
            "UDP to {dest} did not reach the kernel socket"
        );
    }
    let report = relay.stop();
    assert_eq!(u(&report["xdp"]["redirected"]), 0, "{report}");
    assert!(u(&report["xdp"]["passed"]) >= 46, "{report}");
}

/// 10 000 garbage datagrams to the relay port during a live connection:
/// the connection keeps echoing and the relay keeps running.
#[test]
fn garbage_to_the_relay_port_harms_nobody() {
    let topo = Topology::new("frtd", 2);
    let mut relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let server = format!("{RELAY_V4}:{PORT}");
    let echo = std::thread::scope(|s| {
        let echo = s.spawn(|| {
            let mut args = topo.echo_args(&server);
            args.extend(
                [
                    "--stream-bytes",
                    "2097152",
                    "--datagrams",
                    "2000",
                    "--linger-ms",
                    "1500",
                ]
                .map(String::from),
            );
            topo.client(1, &args.iter().map(String::as_str).collect::<Vec<_>>())
        });
        std::thread::sleep(Duration::from_millis(200));
        let sent = topo.client(2, &["garbage", "--server", &server, "--count", "10000"]);
        assert_eq!(u(&sent["garbage_sent"]), 10_000);
        echo.join().unwrap()
    });
    assert_echo_ok(&echo, 2 << 20, 2000);
    assert!(relay.is_running(), "relay died; log:\n{}", relay.log());
    // A new connection after the flood works too.
    let mut args = topo.echo_args(&format!("[{RELAY_V6}]:{PORT}"));
    args.extend(["--stream-bytes", "65536", "--datagrams", "10"].map(String::from));
    assert_echo_ok(
        &topo.client(2, &args.iter().map(String::as_str).collect::<Vec<_>>()),
        65536,
        10,
    );
    let report = relay.stop();
    assert!(u(&report["xdp"]["redirected"]) >= 10_000, "{report}");
}

fn port_is_free(topo: &Topology) -> bool {
    let (ok, _, _) = topo.exec(
        &topo.relay_ns(),
        &client_bin(),
        &[
            "sink",
            "--bind",
            &format!("[::]:{PORT}"),
            "--expect",
            "1",
            "--max-ms",
            "1",
        ],
        Duration::from_secs(5),
    );
    ok
}

/// After a clean exit and after SIGKILL, no XDP program stays on the
/// interface and the port is free again.
#[test]
fn nothing_left_behind_after_exit_or_sigkill() {
    let topo = Topology::new("frte", 1);
    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    assert!(topo.relay_link().contains("xdp"));
    assert!(!port_is_free(&topo), "the relay must hold its UDP port");
    relay.stop();
    assert!(
        !topo.relay_link().contains("xdp"),
        "XDP left after clean exit: {}",
        topo.relay_link()
    );
    assert!(port_is_free(&topo), "port still taken after clean exit");

    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    assert!(topo.relay_link().contains("xdp"));
    relay.kill();
    // The bpf link dies with the process's last descriptor.
    let mut left = true;
    for _ in 0..50 {
        left = topo.relay_link().contains("xdp");
        if !left {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!left, "XDP left after SIGKILL: {}", topo.relay_link());
    assert!(port_is_free(&topo), "port still taken after SIGKILL");
}

/// Operator errors are explained, not panicked on.
#[test]
fn clear_errors_for_bad_setups() {
    let topo = Topology::new("frtf", 1);
    let run = |args: &[&str]| {
        let mut full = vec!["run", "--port", "4433", "--self-signed"];
        full.extend_from_slice(args);
        let (ok, _, err) = topo.exec(
            &topo.relay_ns(),
            &relay_bin(),
            &full,
            Duration::from_secs(20),
        );
        assert!(!ok, "{args:?} should fail");
        err
    };
    let err = run(&["--iface", "nosuch0"]);
    assert!(err.contains("interface \"nosuch0\" not found"), "{err}");
    let err = run(&["--iface", "eth0", "--queues", "3"]);
    assert!(
        err.contains("queue 3 does not exist") && err.contains("1 RX queue"),
        "{err}"
    );

    let err = run(&["--iface", "eth0", "--cores", "4096"]);
    assert!(err.contains("core 4096 does not exist"), "{err}");
    let err = run(&["--iface", "eth0", "--cores", "0,1"]);
    assert!(err.contains("2 core(s) given for 1 worker(s)"), "{err}");
    let err = run(&["--iface", "eth0", "--workers", "2"]);
    assert!(err.contains("--workers is for --backend socket"), "{err}");

    let relay = Relay::start(&topo, &["--xdp-mode", "skb"]);
    let err = run(&["--iface", "eth0"]);
    assert!(err.contains("UDP port 4433 is already in use"), "{err}");
    // The socket backend's SO_REUSEPORT sockets cannot join a port another
    // program holds.
    let err = run(&["--iface", "eth0", "--backend", "socket", "--workers", "2"]);
    assert!(err.contains("UDP port 4433 is already in use"), "{err}");
    relay.stop();
}
