//! `moq-sub`: SUBSCRIBE (optionally with a joining FETCH, a datagram track
//! and a second track), receive and verify test objects, report latency
//! and what arrived.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{cli::TrackTarget, quic};
use moqt_client::{check_test_payload, track_name, unix_ns, MoqClient, MOQT_ALPN};
use serde_json::json;

use super::tally::{DatagramTally, GroupTally};

#[derive(clap::Args)]
pub(crate) struct MoqSubArgs {
    #[command(flatten)]
    target: TrackTarget,
    /// Stop after this many objects.
    #[arg(long)]
    expect_objects: u64,
    /// Stop receiving this long after SUBSCRIBE_OK in any case.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// largest | next-group | absolute:G:O (default: no filter parameter).
    #[arg(long)]
    filter: Option<String>,
    /// Retry a refused SUBSCRIBE (e.g. no publisher yet) for this long (ms).
    #[arg(long, default_value_t = 0)]
    retry_ms: u64,
    /// After SUBSCRIBE_OK, a Joining FETCH for this many groups before the
    /// live edge (served from the relay's cache); reported as `fetched_*`.
    #[arg(long)]
    join_groups: Option<u64>,
    /// Local address to bind (default: any, ephemeral port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Also subscribe to this track of the namespace, delivered as datagrams.
    #[arg(long)]
    datagram_track: Option<String>,
    /// Datagram objects to wait for (datagrams may be lost: after the stream
    /// objects are complete, the wait for datagrams lasts at most 1 s).
    #[arg(long, default_value_t = 0)]
    expect_datagrams: u64,
    /// Also subscribe to this subgroup-stream track of the namespace and
    /// report it per group (`extra` in the JSON), until it ends or
    /// --timeout-ms.
    #[arg(long)]
    extra_track: Option<String>,
    /// Objects per group the publisher sends (to tell whole, partial and
    /// absent groups apart in the reports).
    #[arg(long)]
    group_size: Option<u64>,
    /// Subscriber Priority for every subscription (§10.2.7).
    #[arg(long)]
    subscriber_priority: Option<u8>,
}

fn parse_filter(s: &str) -> anyhow::Result<moqt::SubscriptionFilter> {
    use moqt::SubscriptionFilter as F;
    match s {
        "largest" => Ok(F::LargestObject),
        "next-group" => Ok(F::NextGroupStart),
        _ => {
            let parts: Vec<&str> = s.split(':').collect();
            match parts.as_slice() {
                ["absolute", g, o] => Ok(F::AbsoluteStart {
                    start: moqt::Location {
                        group: g.parse().context("filter group")?,
                        object: o.parse().context("filter object")?,
                    },
                }),
                _ => anyhow::bail!("filter must be largest, next-group or absolute:G:O, not {s:?}"),
            }
        }
    }
}

pub(crate) async fn run(args: MoqSubArgs) -> anyhow::Result<()> {
    use std::collections::{HashMap, HashSet};
    let filter = args.filter.as_deref().map(parse_filter).transpose()?;
    let endpoint = quic::client_endpoint(
        args.bind.unwrap_or(quic::any_addr_for(args.target.server)),
        &args.target.ca,
        MOQT_ALPN,
    )?;
    let start = Instant::now();
    let session = MoqClient::connect_with_tokens(
        &endpoint,
        args.target.server,
        quic::RELAY_SERVER_NAME,
        &args.target.token,
    )
    .await?;
    let setup_ms = start.elapsed().as_secs_f64() * 1e3;
    let track = args.target.full_track_name()?;
    let retry_until = Instant::now() + Duration::from_millis(args.retry_ms);
    let mut attempts = 0u32;
    let params = moqt::Parameters {
        subscription_filter: filter,
        subscriber_priority: args.subscriber_priority,
        ..moqt::Parameters::default()
    };
    let mut sub = loop {
        attempts += 1;
        match session.subscribe_with(track.clone(), params.clone()).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < retry_until && session.closed().is_none() => {
                eprintln!("SUBSCRIBE refused, retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let mut datagram_sub = match &args.datagram_track {
        Some(t) => Some(
            session
                .subscribe_with(track_name(&args.target.namespace, t)?, params.clone())
                .await
                .context("SUBSCRIBE to the datagram track")?,
        ),
        None => None,
    };
    // The extra track is drained by its own task until it ends or the
    // overall timeout; its report joins this one's.
    let extra = match &args.extra_track {
        Some(t) => {
            let mut extra_sub = session
                .subscribe_with(track_name(&args.target.namespace, t)?, params.clone())
                .await
                .context("SUBSCRIBE to the extra track")?;
            let until = Instant::now() + Duration::from_millis(args.timeout_ms);
            let group_size = args.group_size;
            Some(tokio::spawn(async move {
                let mut tally = GroupTally::new()?;
                while let Ok(Some(o)) =
                    tokio::time::timeout_at(until.into(), extra_sub.next_object()).await
                {
                    tally.record(&o);
                }
                let report = tally.report(group_size, &extra_sub.resets());
                if extra_sub.end().is_none() {
                    extra_sub.cancel().await;
                }
                anyhow::Ok(report)
            }))
        }
        None => None,
    };
    let subscribe_ms = start.elapsed().as_secs_f64() * 1e3 - setup_ms;

    // Past objects first: the Joining FETCH ends where the subscription starts.
    let mut fetched = Vec::new();
    let mut fetch_bad_checksums = 0u64;
    if let Some(groups_before) = args.join_groups {
        let mut fetch = session
            .fetch_joining(&sub, groups_before)
            .await
            .context("joining FETCH")?;
        let until = Instant::now() + Duration::from_millis(args.timeout_ms);
        while let Ok(Some(o)) = tokio::time::timeout_at(until.into(), fetch.next_object()).await {
            if check_test_payload(&o.payload).is_none() {
                fetch_bad_checksums += 1;
            }
            fetched.push((o.group, o.object_id));
        }
    }
    let fetch_in_order = fetched.windows(2).all(|w| w[0] < w[1]);

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut per_group = GroupTally::new()?;
    let mut last: HashMap<(u64, Option<u64>), u64> = HashMap::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let (mut objects, mut bytes, mut gaps, mut duplicates, mut out_of_order) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut bad_checksums, mut negative_latency) = (0u64, 0u64);
    let mut first = None;
    let mut groups = HashSet::new();
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    let mut timed_out = false;
    let mut datagrams = DatagramTally::default();
    let mut datagram_deadline = None;
    // Until the datagram track ends (PUBLISH_DONE can overtake the last
    // stream objects of the other track: it ends only itself).
    let mut datagram_open = datagram_sub.is_some();
    loop {
        let streams_done = objects >= args.expect_objects;
        let datagrams_done = !datagram_open || datagrams.seen.len() as u64 >= args.expect_datagrams;
        if streams_done && datagrams_done {
            break;
        }
        // Datagrams can be lost: once the streams are complete, wait a
        // little for the rest of them, not for ever.
        let until = if streams_done {
            *datagram_deadline.get_or_insert(deadline.min(Instant::now() + Duration::from_secs(1)))
        } else {
            deadline
        };
        let next = async {
            match datagram_sub.as_mut() {
                Some(d) if datagram_open => tokio::select! {
                    o = sub.next_object(), if !streams_done => (o, false),
                    o = d.next_object() => (o, true),
                },
                _ => (sub.next_object().await, false),
            }
        };
        let o = match tokio::time::timeout_at(until.into(), next).await {
            Ok((Some(o), true)) => {
                datagrams.record(&o);
                continue;
            }
            Ok((Some(o), false)) => o,
            Ok((None, true)) => {
                datagram_open = false;
                continue;
            }
            Ok((None, false)) => break,
            Err(_) => {
                timed_out = !streams_done;
                break;
            }
        };
        let now = unix_ns();
        if !seen.insert((o.group, o.object_id)) {
            duplicates += 1;
            continue;
        }
        objects += 1;
        bytes += o.payload.len() as u64;
        groups.insert(o.group);
        per_group.record(&o);
        first.get_or_insert((o.group, o.object_id));
        match last.insert((o.group, o.subgroup), o.object_id) {
            Some(prev) if o.object_id <= prev => out_of_order += 1,
            Some(prev) => gaps += o.object_id - prev - 1,
            None => {}
        }
        match check_test_payload(&o.payload) {
            Some(sent_ns) if now >= sent_ns => {
                hist.saturating_record(((now - sent_ns) / 1000).max(1));
            }
            Some(_) => negative_latency += 1,
            None => bad_checksums += 1,
        }
    }
    let receive_ms = start.elapsed().as_secs_f64() * 1e3 - setup_ms - subscribe_ms;
    let end = sub.end().map(|e| format!("{e:?}"));
    let dropped_local = sub.dropped();
    let complete = objects >= args.expect_objects;
    let group_report = per_group.report(args.group_size, &sub.resets());
    let extra = match extra {
        Some(task) => Some(task.await.context("extra-track task")??),
        None => None,
    };
    if sub.end().is_none() {
        sub.cancel().await;
    }
    if let Some(d) = datagram_sub {
        if d.end().is_none() {
            d.cancel().await;
        }
    }
    session.close().await?;
    let stats = session.connection().stats();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    let q = |p: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(p));
    println!(
        "{}",
        json!({
            "setup_ms": setup_ms,
            "subscribe_ms": subscribe_ms,
            "subscribe_attempts": attempts,
            "receive_ms": receive_ms,
            "objects": objects,
            "expected": args.expect_objects,
            "complete": complete,
            "timed_out": timed_out,
            "bytes": bytes,
            "groups": groups.len(),
            "first": first,
            "gaps": gaps,
            "duplicates": duplicates,
            "out_of_order": out_of_order,
            "bad_checksums": bad_checksums,
            "negative_latency": negative_latency,
            "dropped_local": dropped_local,
            "latency_us_p50": q(0.5),
            "latency_us_p99": q(0.99),
            "latency_us_max": (!hist.is_empty()).then(|| hist.max()),
            "end": end,
            "fetched": fetched.len(),
            "fetched_first": fetched.first(),
            "fetched_last": fetched.last(),
            "fetched_in_order": fetch_in_order,
            "fetch_bad_checksums": fetch_bad_checksums,
            "datagrams": datagrams.seen.len(),
            "datagram_duplicates": datagrams.duplicates,
            "datagram_bad_checksums": datagrams.bad_checksums,
            "datagram_on_stream": datagrams.on_stream,
            "lost_packets": stats.path.lost_packets,
            "rtt_us": stats.path.rtt.as_micros() as u64,
            "per_group": group_report,
            "extra": extra,
        })
    );
    if !complete {
        anyhow::bail!("received {objects} of {} objects", args.expect_objects);
    }
    if bad_checksums > 0 {
        anyhow::bail!("{bad_checksums} objects failed the checksum");
    }
    Ok(())
}
