//! SIGHUP reloads the relay's certificate without dropping sessions, seen
//! from the independent client (Cloudflare's moq-transport): a subscription
//! made before the reload receives every object of a publisher that keeps
//! sending through it; after it, a client that trusts only the new
//! certificate connects and receives, and one that trusts only the old one
//! fails its handshake. Run as root.

mod common;

use std::{path::Path, time::Duration};

use bench::harness::{tempdir::TempDir, *};
use common::*;
use serde_json::Value;

/// A self-signed certificate for the names the clients verify, as PEM
/// files `NAME.pem` and `NAME.key` in `dir`.
fn write_identity(dir: &Path, name: &str) -> (String, String) {
    let names = vec!["localhost".to_string(), "fastrelay".to_string()];
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

/// `moqt-interop sub` of the live track from client `i`, trusting `ca`:
/// stops after `expect` objects.
fn sub_trusting(topo: &Topology, i: usize, ca: &str, expect: u64) -> Value {
    let server = relay_for(i);
    let expect = expect.to_string();
    let args = [
        "sub",
        "--server",
        &server,
        "--ca",
        ca,
        "--wtq-raw",
        "--namespace",
        "honest/cam",
        "--track",
        "video",
        "--expect-objects",
        &expect,
        "--timeout-ms",
        "8000",
    ];
    let bin = binary("moqt-interop");
    let (_ok, out, err) = topo.exec(&topo.client_ns(i), &bin, &args, Duration::from_secs(20));
    out.lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("moqt-interop printed no JSON:\n{out}\n{err}"))
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_sessions() {
    let topo = Topology::new("frtr", 4);
    let dir = TempDir::new("tls-reload");
    let (old_cert, old_key) = write_identity(dir.path(), "old");
    let (new_cert, new_key) = write_identity(dir.path(), "new");
    // The relay reads these two paths, now and on SIGHUP.
    let (cert, key) = (
        dir.path().join("relay.pem").display().to_string(),
        dir.path().join("relay.key").display().to_string(),
    );
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    // The honest pair trusts the certificate the relay starts with.
    std::fs::copy(&old_cert, topo.cert()).unwrap();
    let relay = Relay::start_with_tls(&topo, &["--cert", &cert, "--key", &key], &[]);
    let _log = RelayLogOnPanic(&relay);

    // 8 s of objects at 100/s: the reload happens in the middle.
    let honest = Honest {
        groups: 40,
        per_group: 20,
        object_size: 500,
        objects_per_s: 100,
        timeout: Duration::from_secs(30),
    };
    let (sub, publisher, (fresh, stale)) = std::thread::scope(|s| {
        let sub = s.spawn(|| honest.subscribe(&topo));
        std::thread::sleep(Duration::from_millis(300));
        let publisher = s.spawn(|| honest.publish(&topo));
        std::thread::sleep(Duration::from_secs(2));

        std::fs::copy(&new_cert, &cert).unwrap();
        std::fs::copy(&new_key, &key).unwrap();
        relay.signal(libc::SIGHUP);
        let event = relay
            .next_event(
                &["tls_reloaded", "tls_reload_failed"],
                Duration::from_secs(5),
            )
            .expect("the relay reports the reload");
        assert_eq!(event["event"], "tls_reloaded", "{event}");

        let fresh = sub_trusting(&topo, 3, &new_cert, 50);
        let stale = sub_trusting(&topo, 4, &old_cert, 1);
        (
            sub.join().unwrap(),
            publisher.join().unwrap(),
            (fresh, stale),
        )
    });

    // The sessions made before the reload lost nothing.
    honest.assert_lossless(&sub, &publisher);
    // New handshakes get the new certificate...
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert!(u(&fresh["tracks"]["video"]["objects"]) >= 50, "{fresh}");
    // ...and only it.
    assert_eq!(stale["ok"], false, "{stale}");
    let error = stale.to_string().to_lowercase();
    assert!(
        error.contains("certificate") || error.contains("unknownissuer"),
        "the old certificate's client must fail in the handshake: {stale}"
    );

    // A reload that fails (a key that is not PEM) keeps the certificate in use.
    std::fs::write(&key, "not a key").unwrap();
    relay.signal(libc::SIGHUP);
    let event = relay
        .next_event(
            &["tls_reloaded", "tls_reload_failed"],
            Duration::from_secs(5),
        )
        .expect("the relay reports the failed reload");
    assert_eq!(event["event"], "tls_reload_failed", "{event}");
    drop(_log);
    relay.stop();
}
