//! `fastrelay-client moq-pub` / `moq-sub` against an in-test server-role
//! `moqt_client` session on 127.0.0.1 (standing in for the relay).

use std::{process::Stdio, time::Duration};

use moqt::session::Role;
use moqt::PublishDoneCode;
use moqt_client::{
    check_test_payload, namespace_from_path, test_payload, track_name, unix_ns, MoqSession,
    SubscriptionEnd, MOQT_ALPN,
};

struct Server {
    ep: quinn::Endpoint,
    pem: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pem);
    }
}

fn server(tag: &str) -> Server {
    let identity = dataplane::tls::Identity::self_signed(&["fastrelay"]).unwrap();
    let pem = std::env::temp_dir().join(format!("bench-moq-cli-{}-{tag}.pem", std::process::id()));
    std::fs::write(&pem, &identity.cert_pem).unwrap();
    let config = dataplane::tls::server_config(
        identity,
        &[MOQT_ALPN],
        &dataplane::tls::TransportLimits::default(),
    )
    .unwrap();
    let ep = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    Server { ep, pem }
}

fn client_cmd(s: &Server, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fastrelay-client"));
    cmd.args(args)
        .arg("--server")
        .arg(s.ep.local_addr().unwrap().to_string())
        .arg("--ca")
        .arg(&s.pem)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

async fn accept(s: &Server) -> MoqSession {
    let conn = tokio::time::timeout(Duration::from_secs(10), async {
        s.ep.accept().await.unwrap().await.unwrap()
    })
    .await
    .unwrap();
    MoqSession::from_connection(conn, Role::Server)
        .await
        .unwrap()
}

/// Kills the child if the test fails before it exits.
struct Child(Option<std::process::Child>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Wait for the child without blocking the runtime; on a timeout the
/// guard kills it.
async fn wait(mut child: Child) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let c = child.0.as_mut().unwrap();
    loop {
        if let Some(status) = c.try_wait()? {
            let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
            if let Some(mut o) = c.stdout.take() {
                o.read_to_end(&mut stdout)?;
            }
            if let Some(mut e) = c.stderr.take() {
                e.read_to_end(&mut stderr)?;
            }
            child.0 = None;
            return Ok(std::process::Output {
                status,
                stdout,
                stderr,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn json_line(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "bad JSON {line:?}: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_pub_cli() {
    let s = server("pub");
    let child = client_cmd(
        &s,
        &[
            "moq-pub",
            "--namespace",
            "live/cam",
            "--track",
            "video",
            "--groups",
            "4",
            "--objects-per-group",
            "5",
            "--object-size",
            "3000",
            "--rate-groups-per-s",
            "100",
        ],
    )
    .spawn()
    .map(|c| Child(Some(c)))
    .unwrap();
    let session = accept(&s).await;
    let ns = session.next_namespace().await.unwrap();
    assert_eq!(ns, namespace_from_path("live/cam").unwrap());
    let mut sub = session
        .subscribe(track_name("live/cam", "video").unwrap(), None)
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(o) = tokio::time::timeout(Duration::from_secs(10), sub.next_object())
        .await
        .unwrap()
    {
        assert_eq!(o.payload.len(), 3000);
        assert!(check_test_payload(&o.payload).is_some());
        got.push((o.group, o.subgroup, o.object_id));
    }
    assert!(matches!(
        sub.end(),
        Some(SubscriptionEnd::Done {
            code: PublishDoneCode::TrackEnded,
            ..
        })
    ));
    let want: Vec<_> = (0..4)
        .flat_map(|g| (0..5).map(move |o| (g, Some(0), o)))
        .collect();
    got.sort();
    assert_eq!(got, want);
    let out = tokio::time::timeout(Duration::from_secs(10), wait(child))
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v = json_line(&out);
    assert_eq!(v["objects_sent"], 20);
    assert_eq!(v["send_errors"], 0);
    assert_eq!(v["subscribers"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moq_sub_cli() {
    let s = server("sub");
    let child = client_cmd(
        &s,
        &[
            "moq-sub",
            "--namespace",
            "live/cam",
            "--track",
            "video",
            "--expect-objects",
            "12",
            "--timeout-ms",
            "10000",
            "--filter",
            "absolute:0:0",
        ],
    )
    .spawn()
    .map(|c| Child(Some(c)))
    .unwrap();
    let session = accept(&s).await;
    let inc = tokio::time::timeout(Duration::from_secs(10), session.next_subscribe())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inc.track, track_name("live/cam", "video").unwrap());
    assert_eq!(
        inc.filter,
        Some(moqt::SubscriptionFilter::AbsoluteStart {
            start: moqt::Location {
                group: 0,
                object: 0
            }
        })
    );
    let alias = session.accept_subscribe(inc.id, None).await.unwrap();
    // 3 groups x 4 objects, with object 1 of group 2 missing and one
    // corrupt payload (so 11 good objects + 1 extra to reach 12).
    for g in 0..3u64 {
        for o in 0..5u64 {
            if (g, o) == (2, 1) || (o == 4 && g != 2) {
                continue;
            }
            let mut p = test_payload(200, g, o, unix_ns()).to_vec();
            if (g, o) == (1, 3) {
                p[100] ^= 1;
            }
            session
                .send_object(alias, g, 0, o, None, p.into())
                .await
                .unwrap();
        }
        // The subscriber may have its 12 objects and close before the last
        // FIN goes out: only earlier ones must succeed.
        let ended = session.end_subgroup(alias, g, 0).await;
        assert!(g == 2 || ended.is_ok(), "{ended:?}");
    }
    let out = tokio::time::timeout(Duration::from_secs(15), wait(child))
        .await
        .unwrap()
        .unwrap();
    let v = json_line(&out);
    assert_eq!(v["objects"], 12, "{v}");
    assert_eq!(v["gaps"], 1, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["bad_checksums"], 1, "{v}");
    assert!(v["latency_us_p50"].as_u64().is_some(), "{v}");
    // A corrupt object makes the run fail.
    assert!(!out.status.success());
}
