//! `fetch`: one standalone FETCH.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use moq_transport::coding::KeyValuePairs;
use moq_transport::data::FetchRecord;
use moq_transport::message::StandaloneFetch;
use serde_json::{json, Value};

use crate::cli::FetchArgs;
use crate::{conn, payload, util};

const MAX_EXAMPLES: usize = 5;

pub async fn run(args: FetchArgs) -> anyhow::Result<Value> {
    let start = Instant::now();
    let namespace = util::parse_namespace(&args.namespace)?;
    let start_loc = util::parse_location(&args.start)?;
    let end_loc = util::parse_location(&args.end)?;
    let timeout = Duration::from_millis(args.common.timeout_ms);

    let conn = conn::connect(&args.common, false).await?;
    let mut subscriber = conn.subscriber.clone();

    let mut params = KeyValuePairs::default();
    if let Some(order) = args.group_order {
        params.set_group_order(util::group_order(order));
    }
    if let Some(p) = args.priority {
        params.set_subscriber_priority(p);
    }

    let mut report = json!({
        "server": args.common.server.to_string(),
        "namespace": args.namespace,
        "track": args.track,
        "start": [start_loc.group_id, start_loc.object_id],
        "end": [end_loc.group_id, end_loc.object_id],
    });
    let mut errors: Vec<String> = Vec::new();

    let mut per_group: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut order: Vec<(u64, u64)> = Vec::new();
    let mut duplicates = 0u64;
    let mut bad_payloads = 0u64;
    let mut bad_examples = Vec::new();
    let mut extensions_ok = 0u64;
    let mut bytes = 0u64;
    let mut not_exist = Vec::new();
    let mut unknown = Vec::new();

    let request = StandaloneFetch {
        track_namespace: namespace,
        track_name: args.track.as_str().into(),
        start_location: start_loc,
        end_location: end_loc,
    };
    match subscriber.fetch(request, params).await {
        Err(err) => errors.push(format!("FETCH not sent: {err}")),
        Ok(mut fetch) => {
            let id = fetch.id();
            report["request_id"] = json!(id);
            eprintln!("FETCH sent (request {id})");
            match tokio::time::timeout(timeout, fetch.ok()).await {
                Err(_) => errors.push(format!(
                    "no answer to FETCH within {} ms",
                    timeout.as_millis()
                )),
                Ok(Err(err)) => {
                    let refusal = match fetch.rejection() {
                        Some(rej) => json!({
                            "request_id": id,
                            "code": rej.error_code,
                            "code_hex": format!("{:#x}", rej.error_code),
                            "reason": rej.reason.0,
                            "retry_interval": rej.retry_interval,
                        }),
                        None => util::refusal_json(Some(id), &err),
                    };
                    errors.push(format!("FETCH refused: {refusal}"));
                    report["fetch_error"] = refusal;
                }
                Ok(Ok(ok)) => {
                    eprintln!(
                        "FETCH_OK: end_of_track {}, end {}:{}",
                        ok.end_of_track, ok.end_location.group_id, ok.end_location.object_id
                    );
                    report["fetch_ok"] = json!({
                        "end_of_track": ok.end_of_track,
                        "end_location": [ok.end_location.group_id, ok.end_location.object_id],
                    });
                    let deadline = tokio::time::Instant::now() + timeout;
                    loop {
                        let next = tokio::time::timeout_at(deadline, fetch.next()).await;
                        let record = match next {
                            Err(_) => {
                                errors.push("FETCH body not finished within the timeout".into());
                                break;
                            }
                            Ok(Err(err)) => {
                                errors.push(format!("FETCH body: {err}"));
                                break;
                            }
                            Ok(Ok(None)) => break,
                            Ok(Ok(Some(record))) => record,
                        };
                        match record {
                            FetchRecord::Object(obj) => {
                                let mut body = Vec::with_capacity(obj.payload_length as usize);
                                let mut failed = None;
                                loop {
                                    match tokio::time::timeout_at(
                                        deadline,
                                        fetch.read_payload_chunk(64 * 1024),
                                    )
                                    .await
                                    {
                                        Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
                                        Ok(Ok(None)) => break,
                                        Ok(Err(err)) => {
                                            failed = Some(err.to_string());
                                            break;
                                        }
                                        Err(_) => {
                                            failed = Some("timeout reading payload".into());
                                            break;
                                        }
                                    }
                                }
                                if let Some(err) = failed {
                                    errors.push(format!(
                                        "FETCH payload of {}/{}: {err}",
                                        obj.group_id, obj.object_id
                                    ));
                                    break;
                                }
                                if !per_group
                                    .entry(obj.group_id)
                                    .or_default()
                                    .insert(obj.object_id)
                                {
                                    duplicates += 1;
                                    continue;
                                }
                                order.push((obj.group_id, obj.object_id));
                                bytes += body.len() as u64;
                                if let Err(err) =
                                    payload::verify(&body, obj.group_id, obj.object_id)
                                {
                                    bad_payloads += 1;
                                    if bad_examples.len() < MAX_EXAMPLES {
                                        bad_examples.push(err);
                                    }
                                }
                                if payload::extensions_ok(&obj.extension_headers) {
                                    extensions_ok += 1;
                                }
                            }
                            FetchRecord::NotExist { end } => {
                                not_exist.push(json!([end.group_id, end.object_id]))
                            }
                            FetchRecord::Unknown { end } => {
                                unknown.push(json!([end.group_id, end.object_id]))
                            }
                        }
                    }
                }
            }
        }
    }
    if bad_payloads > 0 {
        errors.push(format!("{bad_payloads} objects failed the payload check"));
    }
    let quic_close = conn.close_reason();
    conn.close(0, "done").await;

    let objects: u64 = per_group.values().map(|s| s.len() as u64).sum();
    let groups: serde_json::Map<String, Value> = per_group
        .iter()
        .map(|(g, s)| (g.to_string(), json!(s.len())))
        .collect();
    let map = report.as_object_mut().expect("report is an object");
    map.insert("ok".into(), json!(errors.is_empty()));
    map.insert(
        "error".into(),
        if errors.is_empty() {
            Value::Null
        } else {
            json!(errors.join("; "))
        },
    );
    map.insert("objects".into(), json!(objects));
    map.insert("objects_per_group".into(), Value::Object(groups));
    map.insert(
        "first_location".into(),
        json!(order.first().map(|(g, o)| [*g, *o])),
    );
    map.insert(
        "last_location".into(),
        json!(order.last().map(|(g, o)| [*g, *o])),
    );
    map.insert("bytes".into(), json!(bytes));
    map.insert("duplicates".into(), json!(duplicates));
    map.insert("bad_payloads".into(), json!(bad_payloads));
    map.insert("bad_payload_examples".into(), json!(bad_examples));
    map.insert("extensions_ok".into(), json!(extensions_ok));
    map.insert("not_exist_ranges".into(), json!(not_exist));
    map.insert("unknown_ranges".into(), json!(unknown));
    map.insert("quic_close".into(), json!(quic_close));
    map.insert("elapsed_ms".into(), json!(util::ms_since(start)));
    Ok(report)
}
