//! `moqt_client` over real quinn connections on 127.0.0.1: a client
//! session publishes, a server-role session (the same driver) subscribes.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use moqt::session::Role;
use moqt::{PublishDoneCode, RequestErrorCode, SessionErrorCode, SubscriptionFilter};
use moqt_client::{
    namespace_from_path, track_name, MoqClient, MoqSession, SessionClosed, SubscriptionEnd,
    MOQT_ALPN,
};

struct Net {
    client_ep: quinn::Endpoint,
    server_ep: quinn::Endpoint,
    server_addr: SocketAddr,
    _dir: TempPem,
}

struct TempPem(std::path::PathBuf);

impl Drop for TempPem {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn net(tag: &str) -> Net {
    let identity = dataplane::tls::Identity::self_signed(&["fastrelay"]).unwrap();
    let pem = std::env::temp_dir().join(format!(
        "bench-moq-{}-{tag}-{:?}.pem",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&pem, &identity.cert_pem).unwrap();
    let config = dataplane::tls::server_config(
        identity,
        &[MOQT_ALPN],
        &dataplane::tls::TransportLimits::default(),
    )
    .unwrap();
    let server_ep = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let server_addr = server_ep.local_addr().unwrap();
    let client_ep =
        bench::quic::client_endpoint("127.0.0.1:0".parse().unwrap(), &pem, MOQT_ALPN).unwrap();
    Net {
        client_ep,
        server_ep,
        server_addr,
        _dir: TempPem(pem),
    }
}

async fn pair(n: &Net) -> (MoqClient, MoqSession) {
    let server_ep = n.server_ep.clone();
    let server = tokio::spawn(async move {
        let conn = server_ep.accept().await.unwrap().await.unwrap();
        MoqSession::from_connection(conn, Role::Server)
            .await
            .unwrap()
    });
    let client = MoqClient::connect(&n.client_ep, n.server_addr, "fastrelay")
        .await
        .unwrap();
    (client, server.await.unwrap())
}

fn payload(group: u64, object: u64, len: usize) -> Bytes {
    (0..len)
        .map(|i| (group as usize * 31 + object as usize * 7 + i) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_objects_and_done() {
    let n = net("pubsub");
    let (client, server) = tokio::time::timeout(Duration::from_secs(10), pair(&n))
        .await
        .unwrap();

    // PUBLISH_NAMESPACE: the server side auto-accepts and reports it.
    client
        .publish_namespace(namespace_from_path("live/room").unwrap())
        .await
        .unwrap();
    let ns = server.next_namespace().await.unwrap();
    assert_eq!(ns.to_serialized(), "live-room");

    // The server subscribes; the client (publisher) accepts.
    let track = track_name("live/room", "video").unwrap();
    let (sub, alias) = tokio::join!(
        server.subscribe(track.clone(), Some(SubscriptionFilter::LargestObject)),
        async {
            let inc = client.next_subscribe().await.unwrap();
            assert_eq!(inc.track, track);
            assert_eq!(inc.filter, Some(SubscriptionFilter::LargestObject));
            let alias = client.accept_subscribe(inc.id, None).await.unwrap();
            (inc.id, alias)
        }
    );
    let mut sub = sub.unwrap();
    let (req, alias) = alias;
    assert_eq!(sub.track_alias(), Some(alias));

    // 3 groups x 5 objects on subgroup streams (one larger than a packet),
    // then one datagram, then PUBLISH_DONE.
    for g in 0..3u64 {
        for o in 0..5u64 {
            let len = if o == 2 { 5000 } else { 100 };
            client
                .send_object(alias, g, 0, o, Some(7), payload(g, o, len))
                .await
                .unwrap();
        }
        assert!(client.end_subgroup(alias, g, 0).await.unwrap());
    }
    client
        .send_datagram(alias, 9, 1, None, payload(9, 1, 50))
        .await
        .unwrap();

    let mut got = Vec::new();
    while got.len() < 16 {
        let o = tokio::time::timeout(Duration::from_secs(5), sub.next_object())
            .await
            .expect("objects arrive")
            .expect("subscription still open");
        let len = if o.datagram {
            50
        } else if o.object_id == 2 {
            5000
        } else {
            100
        };
        assert_eq!(o.payload, payload(o.group, o.object_id, len));
        got.push((o.group, o.subgroup, o.object_id, o.datagram));
    }
    let mut streams: Vec<_> = got.iter().filter(|o| !o.3).copied().collect();
    // Per subgroup stream, objects arrive in order.
    for g in 0..3u64 {
        let ids: Vec<u64> = streams.iter().filter(|o| o.0 == g).map(|o| o.2).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4], "group {g}");
    }
    streams.sort();
    assert_eq!(streams.len(), 15);
    assert!(got.contains(&(9, None, 1, true)));

    client
        .publish_done(req, PublishDoneCode::TrackEnded, "that's all")
        .await
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), sub.next_object())
        .await
        .unwrap();
    assert!(end.is_none());
    assert_eq!(
        sub.end(),
        Some(&SubscriptionEnd::Done {
            code: PublishDoneCode::TrackEnded,
            reason: "that's all".into()
        })
    );
    assert_eq!(sub.dropped(), 0);

    // A rejected SUBSCRIBE surfaces as an error.
    let other = track_name("live/room", "audio").unwrap();
    let (r, ()) = tokio::join!(server.subscribe(other, None), async {
        let inc = client.next_subscribe().await.unwrap();
        client
            .reject_subscribe(inc.id, RequestErrorCode::DoesNotExist, "no audio")
            .await
            .unwrap();
    });
    let err = format!("{:#}", r.expect_err("rejected"));
    assert!(
        err.contains("DoesNotExist") && err.contains("no audio"),
        "{err}"
    );

    // Closing: the peer sees NO_ERROR and the reason.
    client.close().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), server.next_subscribe())
            .await
            .unwrap()
            .is_none()
    );
    let closed = server.closed().expect("closed");
    assert_eq!(closed.code, SessionErrorCode::NoError);
    assert!(closed.by_peer);
    // Calls after the end carry the termination code.
    let err = server
        .subscribe(track_name("live/room", "x").unwrap(), None)
        .await
        .unwrap_err();
    let closed: &SessionClosed = err.downcast_ref().expect("SessionClosed in the chain");
    assert_eq!(closed.code, SessionErrorCode::NoError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_cancel_and_objects_before_ok() {
    let n = net("cancel");
    let (client, server) = tokio::time::timeout(Duration::from_secs(10), pair(&n))
        .await
        .unwrap();
    let track = track_name("a/b", "t").unwrap();
    let (sub, alias) = tokio::join!(server.subscribe(track, None), async {
        let inc = client.next_subscribe().await.unwrap();
        let alias = client.accept_subscribe(inc.id, None).await.unwrap();
        // Objects right behind SUBSCRIBE_OK may overtake it.
        for o in 0..10 {
            client
                .send_object(alias, 1, 3, o, None, payload(1, o, 10))
                .await
                .unwrap();
        }
        alias
    });
    let mut sub = sub.unwrap();
    for o in 0..10 {
        let got = tokio::time::timeout(Duration::from_secs(5), sub.next_object())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.group, got.subgroup, got.object_id), (1, Some(3), o));
        assert_eq!(got.payload, payload(1, o, 10));
    }
    sub.cancel().await;
    // The publisher eventually learns the subscription is gone: sends fail.
    let mut failed = false;
    for o in 10..200 {
        if client
            .send_object(alias, 1, 3, o, None, payload(1, o, 10))
            .await
            .is_err()
        {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(failed, "send_object fails after the subscriber cancelled");
    // The session itself is still fine.
    assert!(client.closed().is_none() && server.closed().is_none());
    server.close().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.next_subscribe()).await;
    assert_eq!(
        client.closed().map(|c| (c.code, c.by_peer)),
        Some((SessionErrorCode::NoError, true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_fetch_refused_is_an_error() {
    let n = net("fetch");
    let (client, server) = tokio::time::timeout(Duration::from_secs(10), pair(&n))
        .await
        .unwrap();
    let track = track_name("a", "t").unwrap();
    let (sub, ()) = tokio::join!(client.subscribe(track, None), async {
        let inc = server.next_subscribe().await.unwrap();
        server.accept_subscribe(inc.id, None).await.unwrap();
    });
    let sub = sub.unwrap();
    // This driver answers FETCH with NOT_SUPPORTED.
    let err = client.fetch_joining(&sub, 2).await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("NotSupported"), "{msg}");
    assert!(client.closed().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_control_stream_closes_with_code() {
    let n = net("garbage");
    let server_ep = n.server_ep.clone();
    // A raw peer that answers with garbage on its control stream.
    let raw = tokio::spawn(async move {
        let conn = server_ep.accept().await.unwrap().await.unwrap();
        let mut s = conn.open_uni().await.unwrap();
        s.write_all(&[0x3f, 0xff, 0xff, 0xff, 0x00, 0x01, 0x02])
            .await
            .unwrap();
        conn.closed().await
    });
    let err = MoqClient::connect(&n.client_ep, n.server_addr, "fastrelay")
        .await
        .expect_err("the session must close");
    let closed: &SessionClosed = err.downcast_ref().unwrap_or_else(|| panic!("{err:#}"));
    assert!(!closed.by_peer);
    assert_ne!(closed.code, SessionErrorCode::NoError);
    // The peer saw the same code in CONNECTION_CLOSE.
    match tokio::time::timeout(Duration::from_secs(5), raw)
        .await
        .unwrap()
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), closed.code.code())
        }
        other => panic!("{other:?}"),
    }
}
