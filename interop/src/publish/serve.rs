//! Answering SUBSCRIBE, FETCH and TRACK_STATUS, and PUBLISHing a track
//! directly, from what the producers recorded.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use moq_transport::coding::{KeyValuePairs, Location};
use moq_transport::data::{FetchRecord, FetchRecordObject};
use moq_transport::message::{GroupOrder, RequestErrorCode};
use moq_transport::serve::ServeError;
use moq_transport::session::{
    FetchOkInfo, FetchRequested, Publisher, Subscribed, TrackStatusRequested,
};
use serde_json::{json, Value};

use super::{push_log, ArchivedObject, PubTrack, Shared};
use crate::util;

pub(super) async fn serve_subscribe(shared: Arc<Shared>, subscribed: Subscribed) {
    let info = subscribed.info.clone();
    let name = info.track_name.to_string();
    let track = (info.track_namespace == shared.namespace)
        .then(|| shared.tracks.get(&name).cloned())
        .flatten();
    let Some(track) = track else {
        shared.unknown_subscriptions.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "refusing SUBSCRIBE {} for unknown track {}/{}",
            info.id,
            util::ns_string(&info.track_namespace),
            name
        );
        let _ = subscribed.close(ServeError::not_found_full(
            "unknown track",
            "track not published here",
        ));
        return;
    };
    if track.reader.is_closed() {
        eprintln!("refusing SUBSCRIBE {} for ended track {name}", info.id);
        track.stats().subscriptions_rejected += 1;
        let _ = subscribed.close(ServeError::not_found_full("track ended", "track ended"));
        return;
    }

    let entry = json!({
        "request_id": info.id,
        "subscriber_priority": info.subscriber_priority,
        "group_order": format!("{:?}", info.group_order),
        "forward": info.forward,
        "filter": format!("{:?}", info.filter_type),
        "start": info.start_location.map(|l| json!([l.group_id, l.object_id])),
        "end_group": info.end_group_id,
        "at_ms": util::ms_since(shared.start),
    });
    let slot = {
        let mut stats = track.stats();
        stats.subscriptions += 1;
        push_log(&mut stats.subscription_log, entry)
    };
    eprintln!(
        "track {name}: serving SUBSCRIBE {} (priority {}, filter {:?}, forward {})",
        info.id, info.subscriber_priority, info.filter_type, info.forward
    );
    track.started.send_replace(true);

    let result = describe_serve(subscribed.serve(track.reader.clone()).await);
    eprintln!("track {name}: SUBSCRIBE {} done: {result}", info.id);
    if let Some(slot) = slot {
        if let Some(Value::Object(map)) = track.stats().subscription_log.get_mut(slot) {
            map.insert("result".into(), json!(result));
            map.insert("done_at_ms".into(), json!(util::ms_since(shared.start)));
        }
    }
}

/// How serving a subscription ended. The library reports the normal end of
/// a track (PUBLISH_DONE TRACK_ENDED) as the error `Serve(Done)`.
fn describe_serve(result: Result<(), moq_transport::session::SessionError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(moq_transport::session::SessionError::Serve(ServeError::Done)) => "track-ended".into(),
        // The subscriber (relay) cancelled: UNSUBSCRIBE or a reset request stream.
        Err(moq_transport::session::SessionError::Serve(ServeError::Cancel)) => "cancelled".into(),
        Err(err) => err.to_string(),
    }
}

pub(super) fn serve_track_status(shared: &Shared, mut request: TrackStatusRequested) {
    let msg = request.request_msg.clone();
    let track = (msg.track_namespace == shared.namespace)
        .then(|| shared.tracks.get(&msg.track_name.to_string()).cloned())
        .flatten();
    match track {
        Some(track) => {
            track.stats().track_status_requests += 1;
            let _ = request.respond_ok(&track.reader);
        }
        None => {
            let _ = request.respond_error(
                RequestErrorCode::DoesNotExist as u64,
                "track not published here",
            );
        }
    }
}

pub(super) async fn serve_fetch(shared: Arc<Shared>, request: FetchRequested) {
    let range = match tokio::time::timeout(shared.timeout, request.resolve()).await {
        Ok(Ok(Some(range))) => range,
        // The library already answered (e.g. INVALID_JOINING_REQUEST_ID).
        Ok(Ok(None)) | Ok(Err(_)) => return,
        Err(_) => {
            let _ = request.reject(RequestErrorCode::Timeout, "joining FETCH not resolvable");
            return;
        }
    };
    let name = range.track_name.to_string();
    let track = (range.track_namespace == shared.namespace)
        .then(|| shared.tracks.get(&name).cloned())
        .flatten();
    let Some(track) = track else {
        shared.unknown_fetches.fetch_add(1, Ordering::Relaxed);
        let _ = request.reject(RequestErrorCode::DoesNotExist, "track not published here");
        return;
    };

    let start = (
        range.start_location.group_id,
        range.start_location.object_id,
    );
    let end = range.end_location;
    let in_range = |g: u64, o: u64| {
        g < end.group_id || (g == end.group_id && (end.object_id == 0 || o < end.object_id))
    };
    let mut objects: Vec<ArchivedObject> = {
        let archive = track.archive();
        archive
            .objects
            .range(start..)
            .take_while(|((g, _), _)| *g <= end.group_id)
            .filter(|((g, o), _)| in_range(*g, *o))
            .map(|(k, v)| (*k, *v))
            .collect()
    };
    let entry = json!({
        "request_id": request.id(),
        "start": [range.start_location.group_id, range.start_location.object_id],
        "end": [end.group_id, end.object_id],
        "objects": objects.len(),
        "at_ms": util::ms_since(shared.start),
    });
    let Some(largest) = objects.iter().map(|(k, _)| *k).max() else {
        {
            let mut stats = track.stats();
            stats.fetches_rejected += 1;
            push_log(&mut stats.fetch_log, entry);
        }
        let _ = request.reject(RequestErrorCode::InvalidRange, "no objects in range");
        return;
    };
    if request.group_order() == Some(GroupOrder::Descending) {
        // Groups newest first, objects ascending within each group.
        objects.sort_by(|a, b| b.0 .0.cmp(&a.0 .0).then(a.0 .1.cmp(&b.0 .1)));
    }
    let last_produced = track.archive().objects.keys().next_back().copied();
    let end_of_track = track.finished.load(Ordering::Acquire) && last_produced == Some(largest);

    let ok = FetchOkInfo {
        end_of_track,
        end_location: Location::new(largest.0, largest.1 + 1),
        params: KeyValuePairs::default(),
        track_extensions: Default::default(),
    };
    let result: Result<usize, String> = async {
        let mut writer = request.respond(ok).await.map_err(|e| e.to_string())?;
        let ext = shared.ext().unwrap_or_default();
        let count = objects.len();
        for ((g, o), (subgroup, ts)) in objects {
            let body = shared.body(ts, g, o);
            writer
                .write_record(&FetchRecord::Object(FetchRecordObject {
                    group_id: g,
                    subgroup_id: subgroup,
                    object_id: o,
                    publisher_priority: shared.publisher_priority,
                    extension_headers: ext.clone(),
                    payload_length: body.len() as u64,
                }))
                .await
                .map_err(|e| e.to_string())?;
            writer
                .write_payload(&body)
                .await
                .map_err(|e| e.to_string())?;
        }
        writer.finish().await.map_err(|e| e.to_string())?;
        Ok(count)
    }
    .await;
    eprintln!("track {name}: FETCH answered: {result:?}");
    let mut stats = track.stats();
    let mut entry = entry;
    match result {
        Ok(count) => {
            stats.fetches_served += 1;
            stats.fetch_objects += count as u64;
            entry["result"] = json!("ok");
        }
        Err(err) => {
            stats.fetches_rejected += 1;
            entry["result"] = json!(err);
        }
    }
    push_log(&mut stats.fetch_log, entry);
}

pub(super) async fn direct_publish(
    shared: Arc<Shared>,
    mut publisher: Publisher,
    track: Arc<PubTrack>,
) {
    let mut published = match publisher
        .publish(track.reader.clone(), KeyValuePairs::default())
        .await
    {
        Ok(p) => p,
        Err(err) => {
            track.stats().publish = Some(json!({"ok": false, "error": err.to_string()}));
            return;
        }
    };
    let id = published.info.id;
    eprintln!("track {}: PUBLISH sent (request {id})", track.name);
    match tokio::time::timeout(shared.timeout, published.ok()).await {
        Ok(Ok(())) => {
            eprintln!("track {}: PUBLISH accepted", track.name);
            {
                let mut stats = track.stats();
                stats.subscriptions += 1;
                stats.publish = Some(
                    json!({"ok": true, "request_id": id, "track_alias": published.info.track_alias}),
                );
            }
            track.started.send_replace(true);
            let result = describe_serve(published.serve().await);
            if let Some(Value::Object(map)) = track.stats().publish.as_mut() {
                map.insert("result".into(), json!(result));
            }
        }
        Ok(Err(err)) => {
            let refusal = util::refusal_json(Some(id), &err);
            eprintln!("track {}: PUBLISH refused: {refusal}", track.name);
            track.stats().publish = Some(json!({"ok": false, "request_id": id, "error": refusal}));
        }
        Err(_) => {
            track.stats().publish = Some(json!({
                "ok": false,
                "request_id": id,
                "error": format!("no answer to PUBLISH within {} ms", shared.timeout.as_millis()),
            }));
        }
    }
}
