//! `sub`: subscribe to tracks and verify every object that arrives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use moq_transport::coding::{Decode, KeyValuePairs, Location, TrackNamespace};
use moq_transport::data::{self, ExtensionHeaders, ObjectStatus};
use moq_transport::message::{FilterType, SubscriptionFilter};
use moq_transport::serve::{SubgroupReader, Track, TrackReader, TrackReaderMode};
use moq_transport::session::{Subscribe, Subscriber};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::cli::{FilterArg, SubArgs};
use crate::{conn, payload, util};

const MAX_EXAMPLES: usize = 5;
const MAX_LISTED_GROUPS: usize = 64;
const MAX_ARRIVAL_LIST: usize = 256;
const MAX_PENDING_DATAGRAMS: usize = 100_000;
const RETRY_INTERVAL: Duration = Duration::from_millis(200);

/// What arrived for one track.
#[derive(Default)]
struct TrackStats {
    objects: u64,
    stream_objects: u64,
    datagram_objects: u64,
    duplicates: u64,
    bad_payloads: u64,
    bad_examples: Vec<String>,
    extensions_ok: u64,
    status_objects: u64,
    bytes: u64,
    subgroup_streams: u64,
    stream_errors: u64,
    stream_error_examples: Vec<String>,
    track_errors: Vec<String>,
    /// Group -> object ids received.
    groups: BTreeMap<u64, BTreeSet<u64>>,
    /// (Group, Subgroup) -> largest object id received on its streams.
    subgroup_largest: HashMap<(u64, u64), u64>,
    /// Stream objects that came after a larger object of their subgroup
    /// (not counting duplicates, which `duplicates` has).
    out_of_order: u64,
    out_of_order_examples: Vec<String>,
    latency_us: Vec<u64>,
    /// Set when the run stops: later arrivals are not counted.
    frozen: bool,
    /// Groups in the order their first object arrived.
    group_arrival: Vec<u64>,
    first_object_us: Option<u64>,
    last_object_us: Option<u64>,
    /// `--foreign-payloads`: another project's payloads, not checked.
    foreign_payloads: bool,
    /// With `foreign_payloads`: the first ones as `[group, object, text]`.
    payload_examples: Vec<Value>,
}

/// Total distinct objects received, for `--expect-objects`.
#[derive(Clone)]
struct Progress(Arc<watch::Sender<u64>>);

impl Progress {
    fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl TrackStats {
    /// One object of `group`; `subgroup` is its Subgroup ID when it came
    /// on a subgroup stream, `None` for a datagram.
    fn record(
        &mut self,
        group: u64,
        subgroup: Option<u64>,
        object: u64,
        payload_bytes: &[u8],
        ext: Option<&ExtensionHeaders>,
        progress: &Progress,
    ) {
        if self.frozen {
            return;
        }
        let now = payload::now_us();
        let objects = self.groups.entry(group).or_default();
        if objects.is_empty() && self.group_arrival.len() < MAX_ARRIVAL_LIST {
            self.group_arrival.push(group);
        }
        if !objects.insert(object) {
            self.duplicates += 1;
            return;
        }
        self.first_object_us.get_or_insert(now);
        self.last_object_us = Some(now);
        self.objects += 1;
        match subgroup {
            None => self.datagram_objects += 1,
            Some(subgroup) => {
                self.stream_objects += 1;
                // A subgroup carries its objects in increasing Object ID
                // order, over however many streams the relay used for it.
                let largest = self
                    .subgroup_largest
                    .entry((group, subgroup))
                    .or_insert(object);
                if object < *largest {
                    self.out_of_order += 1;
                    if self.out_of_order_examples.len() < MAX_EXAMPLES {
                        self.out_of_order_examples.push(format!(
                            "group {group} subgroup {subgroup}: object {object} after {largest}"
                        ));
                    }
                }
                *largest = (*largest).max(object);
            }
        }
        self.bytes += payload_bytes.len() as u64;
        if self.foreign_payloads {
            if self.payload_examples.len() < MAX_LISTED_GROUPS {
                let text = String::from_utf8_lossy(payload_bytes);
                self.payload_examples.push(json!([group, object, text]));
            }
        } else {
            self.verify(payload_bytes, group, object, now);
        }
        if ext.is_some_and(payload::extensions_ok) {
            self.extensions_ok += 1;
        }
        progress.bump();
    }

    fn verify(&mut self, payload_bytes: &[u8], group: u64, object: u64, now: u64) {
        match payload::verify(payload_bytes, group, object) {
            Ok(sent_us) => self.latency_us.push(now.saturating_sub(sent_us)),
            Err(err) => {
                self.bad_payloads += 1;
                if self.bad_examples.len() < MAX_EXAMPLES {
                    self.bad_examples.push(err);
                }
            }
        }
    }

    fn stream_error(&mut self, what: String) {
        self.stream_errors += 1;
        if self.stream_error_examples.len() < MAX_EXAMPLES {
            self.stream_error_examples.push(what);
        }
    }

    fn summary(&mut self, objects_per_group: Option<u64>, start_us: u64) -> Value {
        let first_group = self.groups.keys().next().copied();
        let last_group = self.groups.keys().next_back().copied();
        let mut gaps = 0u64;
        let mut complete = 0u64;
        let mut partial = Vec::new();
        let mut partial_count = 0u64;
        for (group, objects) in &self.groups {
            let (Some(min), Some(max)) = (objects.first(), objects.last()) else {
                continue;
            };
            gaps += (max - min + 1) - objects.len() as u64;
            let is_complete = match objects_per_group {
                Some(n) => objects.len() as u64 == n && *max + 1 == n,
                None => *min == 0 && max - min + 1 == objects.len() as u64,
            };
            if is_complete {
                complete += 1;
            } else {
                partial_count += 1;
                if partial.len() < MAX_LISTED_GROUPS {
                    partial.push(json!({
                        "group": group,
                        "objects": objects.len(),
                        "first_object": min,
                        "last_object": max,
                    }));
                }
            }
        }
        let mut missing_groups = Vec::new();
        let mut missing_count = 0u64;
        if let (Some(first), Some(last)) = (first_group, last_group) {
            let span = last - first + 1;
            missing_count = span - self.groups.len() as u64;
            if missing_count > 0 {
                for g in first..=last {
                    if missing_groups.len() >= MAX_LISTED_GROUPS {
                        break;
                    }
                    if !self.groups.contains_key(&g) {
                        missing_groups.push(g);
                    }
                }
            }
        }
        let first_location = first_group.and_then(|g| {
            self.groups
                .get(&g)
                .and_then(|o| o.first())
                .map(|o| json!([g, o]))
        });
        let last_location = last_group.and_then(|g| {
            self.groups
                .get(&g)
                .and_then(|o| o.last())
                .map(|o| json!([g, o]))
        });
        json!({
            "objects": self.objects,
            "stream_objects": self.stream_objects,
            "datagram_objects": self.datagram_objects,
            "bytes": self.bytes,
            "groups_seen": self.groups.len(),
            "first_group": first_group,
            "last_group": last_group,
            "first_location": first_location,
            "last_location": last_location,
            "complete_groups": complete,
            "partial_groups": partial_count,
            "partial_group_list": partial,
            "gaps": gaps,
            "missing_groups": missing_count,
            "missing_group_list": missing_groups,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "out_of_order_examples": self.out_of_order_examples,
            "bad_payloads": self.bad_payloads,
            "bad_payload_examples": self.bad_examples,
            "payload_examples": self.payload_examples,
            "extensions_ok": self.extensions_ok,
            "status_objects": self.status_objects,
            "subgroup_streams": self.subgroup_streams,
            "stream_errors": self.stream_errors,
            "stream_error_examples": self.stream_error_examples,
            "track_errors": self.track_errors,
            "latency_ms": util::latency_json(&mut self.latency_us),
            "group_arrival_order": self.group_arrival,
            "first_object_at_ms": self.first_object_us.map(|t| t.saturating_sub(start_us) as f64 / 1000.0),
            "last_object_at_ms": self.last_object_us.map(|t| t.saturating_sub(start_us) as f64 / 1000.0),
        })
    }
}

type Stats = Arc<Mutex<TrackStats>>;

fn lock(stats: &Stats) -> std::sync::MutexGuard<'_, TrackStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// Routes tapped datagrams to tracks by Track Alias.
#[derive(Default)]
struct Router {
    by_alias: HashMap<u64, Stats>,
    pending: Vec<data::Datagram>,
    unrouted: u64,
    decode_errors: u64,
}

impl Router {
    fn deliver(stats: &Stats, dg: &data::Datagram, progress: &Progress) {
        let mut s = lock(stats);
        match (&dg.status, &dg.payload) {
            (Some(status), _) if *status != ObjectStatus::NormalObject => s.status_objects += 1,
            (_, Some(payload_bytes)) => s.record(
                dg.group_id,
                None,
                dg.object_id.unwrap_or(0),
                payload_bytes,
                dg.extension_headers.as_ref(),
                progress,
            ),
            _ => s.status_objects += 1,
        }
    }

    fn register(&mut self, alias: u64, stats: Stats, progress: &Progress) {
        let pending = std::mem::take(&mut self.pending);
        for dg in pending {
            if dg.track_alias == alias {
                Self::deliver(&stats, &dg, progress);
            } else {
                self.pending.push(dg);
            }
        }
        self.by_alias.insert(alias, stats);
    }

    fn receive(&mut self, mut raw: Bytes, progress: &Progress) {
        let dg = match data::Datagram::decode(&mut raw) {
            Ok(dg) => dg,
            Err(_) => {
                self.decode_errors += 1;
                return;
            }
        };
        match self.by_alias.get(&dg.track_alias) {
            Some(stats) => Self::deliver(stats, &dg, progress),
            None if self.pending.len() < MAX_PENDING_DATAGRAMS => self.pending.push(dg),
            None => self.unrouted += 1,
        }
    }
}

type SharedRouter = Arc<Mutex<Router>>;

fn lock_router(r: &SharedRouter) -> std::sync::MutexGuard<'_, Router> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one track's subscription went.
#[derive(Default)]
struct Outcome {
    attempts: u32,
    request_id: Option<u64>,
    subscribed: bool,
    track_alias: Option<u64>,
    largest_at_ok: Option<Value>,
    subscribe_error: Option<Value>,
    refusals: Vec<Value>,
    ended: bool,
    end: Option<Value>,
    unsubscribed: bool,
    /// A live subscription handed back at stop without UNSUBSCRIBE; dropped
    /// only after the connection is closed.
    held: Option<Subscribe>,
}

struct Ctx {
    subscriber: Subscriber,
    namespace: TrackNamespace,
    timeout: Duration,
    retry: Duration,
    unsubscribe: bool,
    progress: Progress,
    router: SharedRouter,
}

fn params_for(
    priority: Option<u8>,
    args: &SubArgs,
) -> anyhow::Result<(KeyValuePairs, Option<String>)> {
    let mut params = KeyValuePairs::default();
    if let Some(p) = priority {
        params.set_subscriber_priority(p);
    }
    if let Some(order) = args.group_order {
        params.set_group_order(util::group_order(order));
    }
    if let Some(ms) = args.rendezvous_ms {
        // §10.2.6: wait this long at the relay for a publisher to appear.
        params.set_rendezvous_timeout(ms);
    }
    if let Some(ms) = args.delivery_timeout_ms {
        params.set_delivery_timeout(ms);
    }
    if let Some(token) = &args.subscribe_token {
        // The Token structure (§10.2.2): Alias Type USE_VALUE (0x3), Token
        // Type 0, then the value to the end of the parameter.
        let mut value = Vec::new();
        for v in [3u64, 0] {
            moq_transport::coding::Encode::encode(
                &moq_transport::coding::VarInt::from(v),
                &mut value,
            )
            .context("encoding the token")?;
        }
        value.extend_from_slice(token.as_bytes());
        params.set_bytesvalue(0x03, value);
    }
    let mut filter_label = None;
    if let Some(filter) = args.filter {
        let f = match filter {
            FilterArg::Latest => SubscriptionFilter {
                filter_type: FilterType::LargestObject,
                start_location: None,
                end_group_id: None,
            },
            FilterArg::NextGroup => SubscriptionFilter {
                filter_type: FilterType::NextGroupStart,
                start_location: None,
                end_group_id: None,
            },
            FilterArg::Absolute(g, o) => SubscriptionFilter {
                filter_type: FilterType::AbsoluteStart,
                start_location: Some(Location::new(g, o)),
                end_group_id: None,
            },
            FilterArg::Range(g, e) => SubscriptionFilter {
                filter_type: FilterType::AbsoluteRange,
                start_location: Some(Location::new(g, 0)),
                end_group_id: Some(e),
            },
        };
        params
            .set_subscription_filter(&f)
            .map_err(|e| anyhow::anyhow!("encoding the subscription filter: {e}"))?;
        filter_label = Some(filter.label());
    }
    Ok((params, filter_label))
}

async fn read_subgroup(mut sg: SubgroupReader, stats: Stats, progress: Progress) {
    let group = sg.group_id;
    let subgroup = sg.subgroup_id;
    lock(&stats).subgroup_streams += 1;
    loop {
        match sg.next().await {
            Ok(Some(mut obj)) => {
                if obj.status != ObjectStatus::NormalObject {
                    lock(&stats).status_objects += 1;
                    continue;
                }
                let object = obj.object_id;
                let ext = obj.extension_headers.clone();
                match obj.read_all().await {
                    Ok(bytes) => lock(&stats).record(
                        group,
                        Some(subgroup),
                        object,
                        &bytes,
                        Some(&ext),
                        &progress,
                    ),
                    Err(err) => {
                        lock(&stats).stream_error(format!(
                            "group {group} subgroup {subgroup} object {object}: {err}"
                        ));
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(err) => {
                lock(&stats).stream_error(format!("group {group} subgroup {subgroup}: {err}"));
                break;
            }
        }
    }
}

async fn read_track(reader: TrackReader, stats: Stats, progress: Progress) {
    let mode = match reader.mode().await {
        Ok(mode) => mode,
        Err(err) => {
            lock(&stats)
                .track_errors
                .push(format!("track ended before any data: {err}"));
            return;
        }
    };
    match mode {
        TrackReaderMode::Subgroups(mut subgroups) => {
            let mut tasks = JoinSet::new();
            loop {
                match subgroups.next().await {
                    Ok(Some(sg)) => {
                        tasks.spawn(read_subgroup(sg, stats.clone(), progress.clone()));
                    }
                    Ok(None) => break,
                    Err(err) => {
                        let msg = err.to_string();
                        // The normal end of a subscription shows up here too.
                        if !msg.starts_with("closed")
                            && !msg.starts_with("done")
                            && !msg.starts_with("cancelled")
                        {
                            lock(&stats).track_errors.push(format!("subgroups: {msg}"));
                        }
                        break;
                    }
                }
            }
            while tasks.join_next().await.is_some() {}
        }
        // Datagram objects are counted from the transport tap. The library's
        // reader must stay alive all the same: once every datagram reader is
        // gone its next datagram fails with Cancel, and moq-transport treats
        // that as fatal for the whole session.
        TrackReaderMode::Datagrams(mut datagrams) => {
            while let Ok(Some(_)) = datagrams.read().await {}
        }
        TrackReaderMode::Stream(_) => {
            lock(&stats)
                .track_errors
                .push("publisher used the legacy single-stream mode".into());
        }
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn end_json(sub: &Subscribe, library_error: Option<String>, drained: bool) -> Value {
    match sub.publish_done() {
        Some(done) => json!({
            "publish_done": true,
            "status_code": done.status_code,
            "status_hex": format!("{:#x}", done.status_code),
            "stream_count": done.stream_count,
            "reason": done.reason.0,
            "streams_drained": drained,
            "library_error": library_error,
        }),
        None => json!({
            "publish_done": false,
            "library_error": library_error,
        }),
    }
}

async fn run_track(
    ctx: Arc<Ctx>,
    name: String,
    params: KeyValuePairs,
    stats: Stats,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut subscriber = ctx.subscriber.clone();
    let first_attempt = Instant::now();

    let (sub, reader_task) = loop {
        out.attempts += 1;
        let (writer, reader) = Track::new(ctx.namespace.clone(), name.as_str()).produce();
        let reader_task = tokio::spawn(read_track(reader, stats.clone(), ctx.progress.clone()));

        let refusal = match subscriber
            .subscribe_start_with_params(writer, params.clone())
            .await
        {
            Err(err) => util::refusal_json(None, &err),
            Ok(sub) => {
                out.request_id = Some(sub.info.id);
                let answered = tokio::select! {
                    r = tokio::time::timeout(ctx.timeout, sub.ok()) => r,
                    _ = wait_stop(&mut stop) => {
                        reader_task.abort();
                        out.subscribe_error = Some(json!({"reason": "stopped before SUBSCRIBE was answered"}));
                        return out;
                    }
                };
                match answered {
                    Ok(Ok(())) => break (sub, reader_task),
                    // `ok()` reports the terminal state first: a subscription
                    // accepted and already ended (PUBLISH_DONE) reads as an
                    // error there, but it did get SUBSCRIBE_OK.
                    Ok(Err(_)) if sub.subscribe_ok().is_some() => break (sub, reader_task),
                    Ok(Err(err)) => util::refusal_json(Some(sub.info.id), &err),
                    Err(_) => {
                        reader_task.abort();
                        out.subscribe_error = Some(json!({
                            "request_id": sub.info.id,
                            "reason": format!("no answer to SUBSCRIBE within {} ms", ctx.timeout.as_millis()),
                        }));
                        return out;
                    }
                }
            }
        };
        reader_task.abort();
        // The refused attempt's reader only saw the refusal.
        lock(&stats).track_errors.clear();
        eprintln!("track {name}: SUBSCRIBE refused: {refusal}");
        if out.refusals.len() < MAX_EXAMPLES {
            out.refusals.push(refusal.clone());
        }
        if first_attempt.elapsed() + RETRY_INTERVAL > ctx.retry {
            out.subscribe_error = Some(refusal);
            return out;
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY_INTERVAL) => {}
            _ = wait_stop(&mut stop) => {
                out.subscribe_error = Some(refusal);
                return out;
            }
        }
    };

    out.subscribed = true;
    let ok_info = sub.subscribe_ok();
    out.track_alias = ok_info.as_ref().map(|o| o.track_alias);
    out.largest_at_ok = ok_info
        .as_ref()
        .and_then(|o| o.params.largest_object().ok().flatten())
        .map(|l| json!([l.group_id, l.object_id]));
    if let Some(alias) = out.track_alias {
        lock_router(&ctx.router).register(alias, stats.clone(), &ctx.progress);
    }
    eprintln!(
        "track {name}: subscribed (request {}, alias {:?}, largest {:?})",
        sub.info.id, out.track_alias, out.largest_at_ok
    );

    let mut stopped = false;
    tokio::select! {
        res = sub.closed() => {
            out.ended = true;
            out.end = Some(end_json(&sub, res.err().map(|e| e.to_string()), true));
            eprintln!("track {name}: subscription ended: {}", out.end.as_ref().map(Value::to_string).unwrap_or_default());
        }
        _ = wait_stop(&mut stop) => stopped = true,
    }
    if stopped {
        // PUBLISH_DONE may have arrived while the library still waits for the
        // data streams it announced.
        if sub.publish_done().is_some() {
            out.ended = true;
            out.end = Some(end_json(&sub, None, false));
        }
        if ctx.unsubscribe {
            out.unsubscribed = true;
            let _ = tokio::time::timeout(Duration::from_secs(3), sub.unsubscribe()).await;
        } else {
            out.held = Some(sub);
        }
    }

    // After the end of the subscription let the subgroup readers drain what
    // already arrived; after a stop nothing more is counted anyway.
    let mut reader_task = reader_task;
    if stopped
        || tokio::time::timeout(Duration::from_secs(2), &mut reader_task)
            .await
            .is_err()
    {
        reader_task.abort();
    }
    // The alias stays routed: datagrams are unordered and may trail
    // PUBLISH_DONE.
    out
}

fn priority_for(args: &SubArgs, track: &str) -> anyhow::Result<Option<u8>> {
    let mut default = None;
    let mut specific = None;
    for entry in &args.priority {
        match entry.split_once('=') {
            Some((t, p)) => {
                let p: u8 = p
                    .parse()
                    .with_context(|| format!("bad priority in {entry:?}"))?;
                if t == track {
                    specific = Some(p);
                }
            }
            None => {
                default = Some(
                    entry
                        .parse()
                        .with_context(|| format!("bad priority {entry:?}"))?,
                );
            }
        }
    }
    Ok(specific.or(default))
}

pub async fn run(args: SubArgs) -> anyhow::Result<Value> {
    let start = Instant::now();
    let start_us = payload::now_us();
    let namespace = util::parse_namespace(&args.names.namespace)?;
    let mut per_track = Vec::new();
    for name in &args.names.tracks {
        let prio = priority_for(&args, name)?;
        let (params, filter_label) = params_for(prio, &args)?;
        per_track.push((name.clone(), prio, params, filter_label));
    }

    let mut conn = conn::connect(&args.common, true).await?;
    let (progress_tx, mut progress_rx) = watch::channel(0u64);
    let progress = Progress(Arc::new(progress_tx));
    let router: SharedRouter = Arc::default();

    if let Some(mut taps) = conn.datagrams.take() {
        let router = router.clone();
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(raw) = taps.recv().await {
                lock_router(&router).receive(raw, &progress);
            }
        });
    }

    let ctx = Arc::new(Ctx {
        subscriber: conn.subscriber.clone(),
        namespace,
        timeout: Duration::from_millis(args.common.timeout_ms),
        retry: Duration::from_millis(args.retry_ms),
        unsubscribe: args.unsubscribe,
        progress: progress.clone(),
        router: router.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<usize>();
    let mut handles = Vec::new();
    let mut all_stats = Vec::new();
    for (idx, (name, _, params, _)) in per_track.iter().enumerate() {
        let stats: Stats = Arc::new(Mutex::new(TrackStats {
            foreign_payloads: args.foreign_payloads,
            ..TrackStats::default()
        }));
        all_stats.push(stats.clone());
        let ctx = ctx.clone();
        let name = name.clone();
        let params = params.clone();
        let stop = stop_rx.clone();
        let done = done_tx.clone();
        handles.push(tokio::spawn(async move {
            let out = run_track(ctx, name, params, stats, stop).await;
            let _ = done.send(idx);
            out
        }));
    }
    drop(done_tx);

    let end_at = tokio::time::Instant::now()
        + Duration::from_millis(args.duration_ms.unwrap_or(args.common.timeout_ms));
    let mut finished = 0usize;
    let mut session_outcome = None;
    let stop_reason = loop {
        if let Some(n) = args.expect_objects {
            if *progress_rx.borrow_and_update() >= n {
                break "expect-objects";
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end_at) => {
                break if args.duration_ms.is_some() { "duration" } else { "timeout" };
            }
            changed = progress_rx.changed() => {
                if changed.is_err() {
                    tokio::time::sleep_until(end_at).await;
                }
            }
            Some(_) = done_rx.recv() => {
                finished += 1;
                if finished == handles.len() {
                    break "all-ended";
                }
            }
            outcome = conn.ended() => {
                session_outcome = Some(outcome);
                break "session-closed";
            }
        }
    };
    eprintln!(
        "stopping ({stop_reason}) after {} ms, {} objects",
        util::ms_since(start),
        *progress_rx.borrow()
    );
    // Datagrams are unordered: give ones still in flight a moment to land.
    if lock_router(&router)
        .by_alias
        .values()
        .any(|s| lock(s).datagram_objects > 0)
    {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    for stats in &all_stats {
        lock(stats).frozen = true;
    }
    let _ = stop_tx.send(true);

    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut outcomes = Vec::new();
    for handle in handles {
        let abort = handle.abort_handle();
        match tokio::time::timeout_at(collect_deadline, handle).await {
            Ok(Ok(out)) => outcomes.push(out),
            _ => {
                abort.abort();
                outcomes.push(Outcome {
                    subscribe_error: Some(json!({"reason": "track task did not finish"})),
                    ..Outcome::default()
                });
            }
        }
    }
    if session_outcome.is_none() {
        session_outcome = conn.end_outcome();
    }
    // A request that failed without a REQUEST_ERROR on the wire (the
    // library cancelled it, could not send it, or saw its session fail)
    // went down with its session, whose end (and reason: a close capsule
    // is read by a task of its own) may take a moment to be seen.
    let lost_with_session = outcomes.iter().any(|o| {
        o.subscribe_error
            .as_ref()
            .is_some_and(|e| e["library_error"].is_string() && e["reason"].is_null())
    });
    if session_outcome.is_none() && lost_with_session {
        session_outcome = tokio::time::timeout(Duration::from_secs(1), conn.ended())
            .await
            .ok();
    }
    let quic_close = conn.close_reason();
    // Dropping a live Subscribe sends UNSUBSCRIBE: keep them until the
    // connection is closed, where that is a no-op.
    let held: Vec<Subscribe> = outcomes.iter_mut().filter_map(|o| o.held.take()).collect();

    let mut errors = Vec::new();
    let mut tracks = serde_json::Map::new();
    let all_done_by_publisher = outcomes.iter().all(|o| {
        !o.subscribed
            || o.end
                .as_ref()
                .is_some_and(|e| e["publish_done"] == Value::Bool(true))
    });
    let mut total_bad = 0u64;
    for (((name, prio, _, filter_label), out), stats) in
        per_track.iter().zip(outcomes).zip(all_stats.iter())
    {
        let mut s = lock(stats);
        total_bad += s.bad_payloads;
        let mut summary = s.summary(args.objects_per_group, start_us);
        if let Some(err) = &out.subscribe_error {
            errors.push(format!("track {name}: SUBSCRIBE failed: {err}"));
        }
        if let Value::Object(map) = &mut summary {
            map.insert("subscribed".into(), json!(out.subscribed));
            map.insert("request_id".into(), json!(out.request_id));
            map.insert("track_alias".into(), json!(out.track_alias));
            map.insert("attempts".into(), json!(out.attempts));
            map.insert("subscriber_priority".into(), json!(prio));
            map.insert("filter".into(), json!(filter_label));
            map.insert(
                "group_order".into(),
                json!(args.group_order.map(|g| format!("{g:?}").to_lowercase())),
            );
            map.insert("largest_at_subscribe_ok".into(), json!(out.largest_at_ok));
            map.insert("subscribe_error".into(), json!(out.subscribe_error));
            map.insert("refusals".into(), json!(out.refusals));
            map.insert("ended".into(), json!(out.ended));
            map.insert("end".into(), json!(out.end));
            map.insert("unsubscribed".into(), json!(out.unsubscribed));
        }
        tracks.insert(name.clone(), summary);
    }

    let total = *progress_rx.borrow();
    if let Some(n) = args.expect_objects {
        if total < n {
            errors.push(format!("expected {n} objects, received {total}"));
        }
    }
    if total_bad > 0 {
        errors.push(format!("{total_bad} objects failed the payload check"));
    }
    match stop_reason {
        "timeout" => errors.push(format!(
            "timed out after {} ms before the subscriptions ended",
            args.common.timeout_ms
        )),
        "session-closed" => errors.push(format!(
            "session closed early: {}",
            session_outcome.clone().unwrap_or_default()
        )),
        // The session died under a subscription that the publisher had not
        // ended (the track task saw that as its end).
        _ if session_outcome.is_some() && !all_done_by_publisher => errors.push(format!(
            "session closed early: {}",
            session_outcome.clone().unwrap_or_default()
        )),
        _ => {}
    }

    conn.close(0, "done").await;
    drop(held);

    let router = lock_router(&router);
    Ok(json!({
        "ok": errors.is_empty(),
        "error": if errors.is_empty() { Value::Null } else { Value::String(errors.join("; ")) },
        "server": args.common.server.to_string(),
        "namespace": args.names.namespace,
        "stop_reason": stop_reason,
        "elapsed_ms": util::ms_since(start),
        "total_objects": total,
        "tracks": tracks,
        "unrouted_datagrams": router.unrouted + router.pending.len() as u64,
        "undecodable_datagrams": router.decode_errors,
        "session": session_outcome,
        "quic_close": quic_close,
        "control_received": crate::capture::received_counts(),
        "data_stream_failures": crate::capture::stream_failures(),
    }))
}
