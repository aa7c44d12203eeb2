//! `sub-namespace`: SUBSCRIBE_NAMESPACE and record what gets announced.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use moq_transport::coding::{KeyValuePairs, TrackNamespacePrefix};
use moq_transport::session::NamespaceEvent;
use serde_json::{json, Value};

use crate::cli::SubNamespaceArgs;
use crate::{capture, conn, util};

pub async fn run(args: SubNamespaceArgs) -> anyhow::Result<Value> {
    let start = Instant::now();
    let timeout = Duration::from_millis(args.common.timeout_ms);
    let prefix = TrackNamespacePrefix::from_utf8_path(args.prefix.trim_matches('/'));

    let conn = conn::connect(&args.common, false).await?;
    let mut subscriber = conn.subscriber.clone();
    let mut announcements = conn.subscriber.clone();

    let mut errors: Vec<String> = Vec::new();
    let mut added: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut active: BTreeSet<String> = BTreeSet::new();
    let mut distinct: BTreeSet<String> = BTreeSet::new();
    let mut tracks: Vec<Value> = Vec::new();
    let mut published_namespaces: Vec<String> = Vec::new();
    let mut request_id = None;
    let mut stop_reason = "duration";

    match subscriber
        .subscribe_namespace(prefix, KeyValuePairs::default())
        .await
    {
        Err(err) => errors.push(format!("SUBSCRIBE_NAMESPACE not sent: {err}")),
        Ok(sub) => {
            let id = sub.info.request_id;
            request_id = Some(id);
            eprintln!("SUBSCRIBE_NAMESPACE {:?} sent (request {id})", args.prefix);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(args.duration_ms);
            match tokio::time::timeout(timeout, sub.ok()).await {
                Err(_) => errors.push(format!(
                    "no answer to SUBSCRIBE_NAMESPACE within {} ms",
                    timeout.as_millis()
                )),
                Ok(Err(err)) => {
                    errors.push(format!(
                        "SUBSCRIBE_NAMESPACE refused: {}",
                        util::refusal_json(Some(id), &err)
                    ));
                }
                Ok(Ok(())) => {
                    eprintln!("SUBSCRIBE_NAMESPACE accepted");
                    let mut events_open = true;
                    let mut publishes_open = true;
                    let mut announcements_open = true;
                    loop {
                        if args.expect.is_some_and(|n| distinct.len() >= n) {
                            stop_reason = "expect";
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline) => break,
                            ev = sub.next(), if events_open => match ev {
                                Ok(Some(NamespaceEvent::Added(ns))) => {
                                    let ns = util::ns_string(&ns);
                                    eprintln!("NAMESPACE {ns}");
                                    active.insert(ns.clone());
                                    distinct.insert(ns.clone());
                                    added.push(ns);
                                }
                                Ok(Some(NamespaceEvent::Removed(ns))) => {
                                    let ns = util::ns_string(&ns);
                                    eprintln!("NAMESPACE_DONE {ns}");
                                    active.remove(&ns);
                                    removed.push(ns);
                                }
                                Ok(None) => {
                                    events_open = false;
                                }
                                Err(err) => {
                                    errors.push(format!("SUBSCRIBE_NAMESPACE ended: {err}"));
                                    stop_reason = "ended";
                                    break;
                                }
                            },
                            publish = subscriber.publish_received(), if publishes_open => {
                                if publish.is_none() {
                                    publishes_open = false;
                                }
                                if let Some(publish) = publish {
                                    let ns = util::ns_string(publish.namespace());
                                    let name = publish.name().to_string();
                                    eprintln!("PUBLISH {ns} {name} (declined)");
                                    tracks.push(json!({
                                        "namespace": ns,
                                        "track": name,
                                        "track_alias": publish.track_alias(),
                                        "forward": publish.initial_forward(),
                                    }));
                                    // Dropping it answers REQUEST_ERROR UNINTERESTED.
                                    drop(publish);
                                }
                            }
                            announced = announcements.published_namespace(), if announcements_open => {
                                if announced.is_none() {
                                    announcements_open = false;
                                }
                                if let Some(announced) = announced {
                                    let ns = util::ns_string(&announced.info.namespace);
                                    eprintln!("PUBLISH_NAMESPACE {ns} (declined)");
                                    published_namespaces.push(ns);
                                    drop(announced);
                                }
                            }
                            outcome = conn.ended() => {
                                errors.push(format!("session ended: {outcome}"));
                                stop_reason = "session-closed";
                                break;
                            }
                        }
                    }
                }
            }
            drop(sub);
        }
    }
    if let Some(n) = args.expect {
        if distinct.len() < n {
            errors.push(format!("expected {n} namespaces, saw {}", distinct.len()));
        }
    }
    let quic_close = conn.close_reason();
    conn.close(0, "done").await;

    Ok(json!({
        "ok": errors.is_empty(),
        "error": if errors.is_empty() { Value::Null } else { Value::String(errors.join("; ")) },
        "server": args.common.server.to_string(),
        "prefix": args.prefix,
        "request_id": request_id,
        "stop_reason": stop_reason,
        "namespaces": active.iter().collect::<Vec<_>>(),
        "added": added,
        "removed": removed,
        "tracks": tracks,
        "published_namespaces": published_namespaces,
        "quic_close": quic_close,
        "control_received": capture::received_counts(),
        "elapsed_ms": util::ms_since(start),
    }))
}
