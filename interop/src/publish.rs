//! `pub`: announce a namespace (or PUBLISH tracks directly), produce objects,
//! and serve SUBSCRIBE, FETCH and TRACK_STATUS for them.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moq_transport::coding::{KeyValuePairs, Location, TrackNamespace};
use moq_transport::data::{ExtensionHeaders, FetchRecord, FetchRecordObject, ObjectStatus};
use moq_transport::message::{GroupOrder, RequestErrorCode};
use moq_transport::serve::{
    Datagram, ServeError, Subgroup, SubgroupWriter, Track, TrackReader, TrackWriter,
};
use moq_transport::session::{
    FetchOkInfo, FetchRequested, Publisher, Subscribed, TrackStatusRequested,
};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cli::{PubArgs, PubMode, StartWhen};
use crate::{capture, conn, payload, util};

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
    publisher_priority: u8,
    extensions: bool,
    unknown_subscriptions: AtomicU64,
    unknown_fetches: AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
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

async fn serve_subscribe(shared: Arc<Shared>, subscribed: Subscribed) {
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

fn serve_track_status(shared: &Shared, mut request: TrackStatusRequested) {
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

async fn serve_fetch(shared: Arc<Shared>, request: FetchRequested) {
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
            let body = payload::build_at(ts, g, o, shared.object_size);
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

async fn direct_publish(shared: Arc<Shared>, mut publisher: Publisher, track: Arc<PubTrack>) {
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

struct ProduceCfg {
    mode: PubMode,
    groups: u64,
    objects_per_group: u64,
    rate: f64,
    /// Per-track rates (`--track-rate T=R`) overriding `rate`.
    track_rates: std::collections::HashMap<String, f64>,
    start_when: StartWhen,
    hold_tracks: bool,
    stop_at: Option<tokio::time::Instant>,
}

fn record_object(track: &PubTrack, g: u64, o: u64, subgroup: Option<u64>, ts: u64, len: usize) {
    {
        let mut stats = track.stats();
        stats.objects += 1;
        stats.bytes += len as u64;
    }
    let mut archive = track.archive();
    if archive.objects.len() < MAX_ARCHIVE {
        archive.objects.insert((g, o), (subgroup, ts));
    } else {
        archive.not_kept += 1;
    }
}

async fn produce(
    shared: Arc<Shared>,
    cfg: Arc<ProduceCfg>,
    track: Arc<PubTrack>,
    writer: TrackWriter,
    mut release: watch::Receiver<bool>,
) -> Result<(), String> {
    if cfg.start_when == StartWhen::Subscribed {
        let mut started = track.started.subscribe();
        let got = tokio::time::timeout(shared.timeout, started.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok());
        if !got {
            return Err(format!(
                "no subscription for track {} within {} ms",
                track.name,
                shared.timeout.as_millis()
            ));
        }
    }
    track.stats().started_after_ms = Some(util::ms_since(shared.start));
    eprintln!("track {}: producing ({})", track.name, cfg.mode.label());

    let t0 = tokio::time::Instant::now();
    let mut k = 0u64;
    let ext = shared.ext();
    let prio = shared.publisher_priority;
    let size = shared.object_size;
    let group_end = if cfg.groups == 0 {
        u64::MAX
    } else {
        cfg.groups
    };
    let opg = cfg.objects_per_group.max(1);

    // Wait for the object's slot; false once production must stop.
    let pace = |k: u64| {
        let stop_at = cfg.stop_at;
        let rate = cfg
            .track_rates
            .get(&track.name)
            .copied()
            .unwrap_or(cfg.rate);
        async move {
            if rate > 0.0 {
                let at = t0 + Duration::from_secs_f64(k as f64 / rate);
                if stop_at.is_some_and(|s| at >= s) {
                    return false;
                }
                tokio::time::sleep_until(at).await;
            }
            stop_at.is_none_or(|s| tokio::time::Instant::now() < s)
        }
    };

    let map_err = |e: ServeError| format!("track {}: {e}", track.name);

    if cfg.mode == PubMode::Datagram {
        let mut datagrams = writer.datagrams().map_err(map_err)?;
        'groups: for g in 0..group_end {
            for o in 0..opg {
                if !pace(k).await {
                    break 'groups;
                }
                let ts = payload::now_us();
                let body = payload::build_at(ts, g, o, size);
                let len = body.len();
                datagrams
                    .write(Datagram {
                        group_id: g,
                        object_id: o,
                        priority: prio,
                        status: ObjectStatus::NormalObject,
                        end_of_group: o + 1 == opg,
                        payload: body,
                        extension_headers: ext.clone().unwrap_or_default(),
                    })
                    .map_err(map_err)?;
                record_object(&track, g, o, None, ts, len);
                k += 1;
                // Let the forwarder take this datagram before the next one
                // replaces it (see main.rs on the current-thread runtime).
                tokio::task::yield_now().await;
            }
            track.stats().groups += 1;
        }
        finish_track(&track, &cfg, &mut release, shared.start).await;
        // Closing the track makes moq-transport send PUBLISH_DONE and then
        // drop the request stream's read half, i.e. STOP_SENDING, which QUIC
        // sends ahead of still-queued datagrams; a relay that takes that as
        // cancellation would lose them. So let the datagrams leave first.
        conn::drain_datagrams(&shared.quic, Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = datagrams.close(ServeError::Done);
    } else {
        let mut subgroups = writer.subgroups().map_err(map_err)?;
        'groups: for g in 0..group_end {
            let mut open: BTreeMap<u64, SubgroupWriter> = BTreeMap::new();
            for o in 0..opg {
                if !pace(k).await {
                    for (_, w) in std::mem::take(&mut open) {
                        let _ = w.finish();
                    }
                    break 'groups;
                }
                let subgroup_id = match cfg.mode {
                    PubMode::SubgroupPerGroup => 0,
                    PubMode::SubgroupPerObject => o,
                    PubMode::SubgroupsPerGroup(n) => o % n,
                    PubMode::Datagram => unreachable!(),
                };
                let ts = payload::now_us();
                let body = payload::build_at(ts, g, o, size);
                let len = body.len();
                let writer = match open.entry(subgroup_id) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(v) => v.insert(
                        subgroups
                            .create(Subgroup {
                                group_id: g,
                                subgroup_id,
                                priority: prio,
                            })
                            .map_err(map_err)?,
                    ),
                };
                let mut object = writer
                    .create_with_id(o, len, ext.clone())
                    .map_err(map_err)?;
                object.write(body).map_err(map_err)?;
                if cfg.mode == PubMode::SubgroupPerObject {
                    if let Some(w) = open.remove(&subgroup_id) {
                        w.finish().map_err(map_err)?;
                    }
                }
                record_object(&track, g, o, Some(subgroup_id), ts, len);
                k += 1;
                tokio::task::yield_now().await;
            }
            for (_, w) in open {
                w.finish().map_err(map_err)?;
            }
            track.stats().groups += 1;
        }
        finish_track(&track, &cfg, &mut release, shared.start).await;
        let _ = subgroups.close(ServeError::Done);
    }
    eprintln!("track {}: track closed", track.name);
    Ok(())
}

/// Mark production done; with --hold-tracks keep the track open until released.
async fn finish_track(
    track: &PubTrack,
    cfg: &ProduceCfg,
    release: &mut watch::Receiver<bool>,
    start: Instant,
) {
    track.finished.store(true, Ordering::Release);
    track.stats().finished_after_ms = Some(util::ms_since(start));
    eprintln!(
        "track {}: produced {} objects",
        track.name,
        track.stats().objects
    );
    if cfg.hold_tracks {
        let _ = release.wait_for(|r| *r).await;
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
