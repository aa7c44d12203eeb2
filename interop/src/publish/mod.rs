//! `pub`: announce a namespace (or PUBLISH tracks directly), produce objects,
//! and serve SUBSCRIBE, FETCH and TRACK_STATUS for them.
//!
//! The shared state of the tracks and `run` are here; serving requests is
//! in `serve`, producing the objects in `produce`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moq_transport::coding::TrackNamespace;
use moq_transport::data::ExtensionHeaders;
use moq_transport::serve::{Track, TrackReader};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{PubArgs, PubMode};
use crate::{capture, conn, payload, util};

mod produce;
mod serve;

use produce::{produce, ProduceCfg};
use serve::{direct_publish, serve_fetch, serve_subscribe, serve_track_status};

const MAX_LOG: usize = 32;
const MAX_ARCHIVE: usize = 2_000_000;
/// Room left in a QUIC datagram for the OBJECT_DATAGRAM header and properties.
const DATAGRAM_OVERHEAD: usize = 64;

#[derive(Default)]
struct PubStats {
    objects: u64,
    groups: u64,
    bytes: u64,
    started_after_ms: Option<u64>,
    finished_after_ms: Option<u64>,
    production_error: Option<String>,
    subscriptions: u64,
    subscriptions_rejected: u64,
    subscription_log: Vec<Value>,
    fetches_served: u64,
    fetch_objects: u64,
    fetches_rejected: u64,
    fetch_log: Vec<Value>,
    track_status_requests: u64,
    publish: Option<Value>,
}

/// Everything produced, so FETCH can be answered: (group, object) ->
/// (subgroup, or None for a datagram; send timestamp).
#[derive(Default)]
struct Archive {
    objects: BTreeMap<(u64, u64), (Option<u64>, u64)>,
    not_kept: u64,
}

/// ((group, object), (subgroup, send timestamp)).
type ArchivedObject = ((u64, u64), (Option<u64>, u64));

struct PubTrack {
    name: String,
    reader: TrackReader,
    started: watch::Sender<bool>,
    finished: AtomicBool,
    stats: Mutex<PubStats>,
    archive: Mutex<Archive>,
}

impl PubTrack {
    fn stats(&self) -> std::sync::MutexGuard<'_, PubStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn archive(&self) -> std::sync::MutexGuard<'_, Archive> {
        self.archive.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Shared {
    namespace: TrackNamespace,
    quic: quinn::Connection,
    tracks: HashMap<String, Arc<PubTrack>>,
    start: Instant,
    timeout: Duration,
    object_size: usize,
    text_payloads: bool,
    publisher_priority: u8,
    extensions: bool,
    unknown_subscriptions: AtomicU64,
    unknown_fetches: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    /// The payload of object `g`/`o` stamped `ts`.
    fn body(&self, ts: u64, g: u64, o: u64) -> bytes::Bytes {
        if self.text_payloads {
            payload::build_text(g, o)
        } else {
            payload::build_at(ts, g, o, self.object_size)
        }
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(fut);
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn ext(&self) -> Option<ExtensionHeaders> {
        self.extensions.then(payload::extensions)
    }
}

fn push_log(log: &mut Vec<Value>, entry: Value) -> Option<usize> {
    if log.len() < MAX_LOG {
        log.push(entry);
        Some(log.len() - 1)
    } else {
        None
    }
}

pub async fn run(args: PubArgs) -> anyhow::Result<Value> {
    let start = Instant::now();
    let namespace = util::parse_namespace(&args.names.namespace)?;
    if args.groups == 0 && args.duration_ms.is_none() {
        anyhow::bail!("--groups 0 (unbounded) needs --duration-ms");
    }
    let mut track_rates = std::collections::HashMap::new();
    for tr in &args.track_rate {
        let parsed = tr
            .split_once('=')
            .and_then(|(t, r)| Some((t.to_string(), r.parse::<f64>().ok()?)));
        let Some((t, r)) = parsed else {
            anyhow::bail!("--track-rate wants TRACK=OBJECTS_PER_S, got {tr:?}");
        };
        if !args.names.tracks.contains(&t) {
            anyhow::bail!("--track-rate names {t:?}, which is not a --track");
        }
        track_rates.insert(t, r);
    }
    let conn = conn::connect(&args.common, false).await?;
    let timeout = Duration::from_millis(args.common.timeout_ms);

    let mut object_size = payload::clamp_size(args.object_size);
    let mut size_note = Value::Null;
    if args.mode == PubMode::Datagram {
        let room = conn.max_datagram_size.saturating_sub(DATAGRAM_OVERHEAD);
        if room < payload::HEADER_LEN {
            anyhow::bail!(
                "the connection does not allow datagrams large enough (max {} bytes)",
                conn.max_datagram_size
            );
        }
        if object_size > room {
            size_note = json!(format!(
                "object size clamped from {object_size} to {room} to fit a datagram"
            ));
            eprintln!("{}", size_note.as_str().unwrap_or_default());
            object_size = room;
        }
    }

    let mut tracks = HashMap::new();
    let mut writers = Vec::new();
    for name in &args.names.tracks {
        if tracks.contains_key(name) {
            anyhow::bail!("track {name:?} given twice");
        }
        let (writer, reader) = Track::new(namespace.clone(), name.as_str()).produce();
        let (started, _) = watch::channel(false);
        let track = Arc::new(PubTrack {
            name: name.clone(),
            reader,
            started,
            finished: AtomicBool::new(false),
            stats: Mutex::default(),
            archive: Mutex::default(),
        });
        tracks.insert(name.clone(), track.clone());
        writers.push((track, writer));
    }

    let shared = Arc::new(Shared {
        namespace: namespace.clone(),
        quic: conn.quic.clone(),
        tracks,
        start,
        timeout,
        object_size,
        text_payloads: args.text_payloads,
        publisher_priority: args.publisher_priority,
        extensions: args.extensions,
        unknown_subscriptions: AtomicU64::new(0),
        unknown_fetches: AtomicU64::new(0),
        tasks: Mutex::default(),
    });

    let publisher = conn.publisher.clone();
    publisher.accept_fetch();
    let mut background = Vec::new();

    // SUBSCRIBEs outside an announced namespace (e.g. with --direct-publish).
    {
        let mut publisher = publisher.clone();
        let shared = shared.clone();
        background.push(tokio::spawn(async move {
            while let Some(subscribed) = publisher.subscribed().await {
                let s = shared.clone();
                shared.spawn(serve_subscribe(s, subscribed));
            }
        }));
    }
    {
        let mut publisher = publisher.clone();
        let shared = shared.clone();
        background.push(tokio::spawn(async move {
            while let Some(request) = publisher.fetch_requested().await {
                let s = shared.clone();
                shared.spawn(serve_fetch(s, request));
            }
        }));
    }
    {
        let mut publisher = publisher.clone();
        let shared = shared.clone();
        background.push(tokio::spawn(async move {
            while let Some(request) = publisher.track_status_requested().await {
                serve_track_status(&shared, request);
            }
        }));
    }

    let mut errors: Vec<String> = Vec::new();
    let announce;
    let mut announcement = None;
    if args.direct_publish {
        announce = json!({"method": "direct_publish"});
        for track in shared.tracks.values() {
            let s = shared.clone();
            shared.spawn(direct_publish(s, publisher.clone(), track.clone()));
        }
    } else {
        let mut p = publisher.clone();
        let pns = p
            .publish_namespace_start(namespace.clone())
            .await
            .map_err(|e| anyhow::anyhow!("PUBLISH_NAMESPACE: {e}"))?;
        let id = pns.info.request_id;
        eprintln!(
            "PUBLISH_NAMESPACE {} sent (request {id})",
            args.names.namespace
        );
        match tokio::time::timeout(timeout, pns.ok()).await {
            Ok(Ok(())) => {
                eprintln!("PUBLISH_NAMESPACE accepted");
                announce = json!({"method": "publish_namespace", "request_id": id, "ok": true});
            }
            Ok(Err(err)) => {
                let refusal = util::refusal_json(Some(id), &err);
                errors.push(format!("PUBLISH_NAMESPACE refused: {refusal}"));
                announce = json!({"method": "publish_namespace", "request_id": id, "ok": false, "error": refusal});
            }
            Err(_) => {
                errors.push(format!(
                    "no answer to PUBLISH_NAMESPACE within {} ms",
                    timeout.as_millis()
                ));
                announce = json!({"method": "publish_namespace", "request_id": id, "ok": false, "error": "timeout"});
            }
        }
        if errors.is_empty() {
            let pns = Arc::new(pns);
            let shared2 = shared.clone();
            let pns2 = pns.clone();
            background.push(tokio::spawn(async move {
                let mut subs_open = true;
                let mut status_open = true;
                while subs_open || status_open {
                    tokio::select! {
                        r = pns2.subscribed(), if subs_open => match r {
                            Ok(Some(subscribed)) => {
                                let s = shared2.clone();
                                shared2.spawn(serve_subscribe(s, subscribed));
                            }
                            _ => subs_open = false,
                        },
                        r = pns2.track_status_requested(), if status_open => match r {
                            Ok(Some(request)) => serve_track_status(&shared2, request),
                            _ => status_open = false,
                        },
                    }
                }
            }));
            announcement = Some(pns);
        }
    }

    let mut session_errors = Vec::new();
    let mut producers = Vec::new();
    let (release_tx, release_rx) = watch::channel(false);
    if errors.is_empty() {
        let cfg = Arc::new(ProduceCfg {
            mode: args.mode,
            groups: args.groups,
            objects_per_group: args.objects_per_group,
            rate: args.rate_objects_per_s,
            track_rates: track_rates.clone(),
            start_when: args.start_when,
            hold_tracks: args.hold_tracks,
            stop_at: args
                .duration_ms
                .map(|d| tokio::time::Instant::now() + Duration::from_millis(d)),
        });
        for (track, writer) in writers.drain(..) {
            let s = shared.clone();
            let cfg = cfg.clone();
            let release = release_rx.clone();
            let t = track.clone();
            producers.push((
                track,
                tokio::spawn(async move { produce(s, cfg, t, writer, release).await }),
            ));
        }

        // Produce everything (or fail), then linger.
        let all_produced = async {
            for (track, handle) in producers.iter_mut() {
                if args.hold_tracks {
                    // A held producer only returns once released below:
                    // wait for it to have produced everything instead.
                    while !track.finished.load(Ordering::Acquire) && !handle.is_finished() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if !handle.is_finished() {
                        continue;
                    }
                }
                let outcome = match handle.await {
                    Ok(r) => r,
                    Err(e) => Err(format!("producer task: {e}")),
                };
                if let Err(err) = outcome {
                    track.stats().production_error = Some(err.clone());
                }
            }
        };
        let session_died = tokio::select! {
            _ = all_produced => None,
            outcome = conn.ended() => Some(outcome),
        };
        if let Some(outcome) = session_died {
            session_errors.push(outcome.clone());
            errors.push(format!("session ended while producing: {outcome}"));
        } else {
            if args.linger_ms > 0 {
                eprintln!("lingering {} ms", args.linger_ms);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(args.linger_ms)) => {}
                    outcome = conn.ended() => {
                        session_errors.push(outcome.clone());
                        errors.push(format!("session ended while lingering: {outcome}"));
                    }
                }
            }
            let _ = release_tx.send(true);
            // Wait for the producers released by --hold-tracks to close.
            for (_, handle) in producers.iter_mut() {
                if !handle.is_finished() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
                }
            }
            // Let subscriptions deliver what was produced (PUBLISH_DONE) and
            // running FETCHes finish before closing the connection.
            let deadline = tokio::time::Instant::now() + timeout;
            for handle in shared.take_tasks() {
                let abort = handle.abort_handle();
                if tokio::time::timeout_at(deadline, handle).await.is_err() {
                    abort.abort();
                }
            }
        }
    }
    for (_, handle) in &producers {
        handle.abort();
    }

    conn.drain_datagrams(Duration::from_secs(3)).await;
    // PUBLISH_NAMESPACE_DONE, then close.
    drop(announcement);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for handle in background {
        handle.abort();
    }
    for handle in shared.take_tasks() {
        handle.abort();
    }
    if let Some(outcome) = conn.end_outcome() {
        if !session_errors.contains(&outcome) {
            session_errors.push(outcome);
        }
    }
    let quic_close = conn.close_reason();
    let datagrams_sent = conn.sent_datagrams();
    conn.close(0, "done").await;

    let mut track_json = serde_json::Map::new();
    let mut names: Vec<&String> = shared.tracks.keys().collect();
    names.sort();
    for name in names {
        let track = &shared.tracks[name];
        let stats = track.stats();
        if let Some(err) = &stats.production_error {
            errors.push(err.clone());
        }
        if args.direct_publish {
            match &stats.publish {
                Some(p) if p.get("ok") == Some(&json!(true)) => {}
                Some(p) => errors.push(format!("track {name}: PUBLISH failed: {p}")),
                None => errors.push(format!("track {name}: PUBLISH never answered")),
            }
        }
        track_json.insert(
            name.clone(),
            json!({
                "objects": stats.objects,
                "groups": stats.groups,
                "bytes": stats.bytes,
                "started_after_ms": stats.started_after_ms,
                "finished_after_ms": stats.finished_after_ms,
                "finished": track.finished.load(Ordering::Acquire),
                "production_error": stats.production_error,
                "subscriptions": stats.subscriptions,
                "subscriptions_rejected": stats.subscriptions_rejected,
                "subscription_log": stats.subscription_log,
                "fetches_served": stats.fetches_served,
                "fetch_objects": stats.fetch_objects,
                "fetches_rejected": stats.fetches_rejected,
                "fetch_log": stats.fetch_log,
                "track_status_requests": stats.track_status_requests,
                "publish": stats.publish,
                "archive_not_kept": track.archive().not_kept,
            }),
        );
    }

    Ok(json!({
        "ok": errors.is_empty(),
        "error": if errors.is_empty() { Value::Null } else { Value::String(errors.join("; ")) },
        "server": args.common.server.to_string(),
        "namespace": args.names.namespace,
        "announce": announce,
        "config": {
            "mode": args.mode.label(),
            "groups": args.groups,
            "objects_per_group": args.objects_per_group,
            "object_size": object_size,
            "object_size_note": size_note,
            "rate_objects_per_s": args.rate_objects_per_s,
            "publisher_priority": args.publisher_priority,
            "extensions": args.extensions,
            "start_when": format!("{:?}", args.start_when).to_lowercase(),
            "hold_tracks": args.hold_tracks,
            "linger_ms": args.linger_ms,
        },
        "tracks": track_json,
        "unknown_subscriptions": shared.unknown_subscriptions.load(Ordering::Relaxed),
        "unknown_fetches": shared.unknown_fetches.load(Ordering::Relaxed),
        "datagrams_sent": datagrams_sent,
        "session_errors": session_errors,
        "quic_close": quic_close,
        "request_errors_received": capture::all_request_errors(),
        "control_received": capture::received_counts(),
        "elapsed_ms": util::ms_since(start),
    }))
}
