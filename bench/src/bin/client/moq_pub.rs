//! `moq-pub`: PUBLISH_NAMESPACE, wait for the relay's SUBSCRIBEs, then send
//! test objects on subgroup streams (and, if asked, datagrams and a second
//! track) at a fixed group rate.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context;
use bench::{cli::TrackTarget, quic};
use moqt_client::{namespace_from_path, test_payload, track_name, unix_ns, MoqClient, MOQT_ALPN};
use serde_json::json;

#[derive(clap::Args)]
pub(crate) struct MoqPubArgs {
    #[command(flatten)]
    target: TrackTarget,
    #[arg(long, default_value_t = 10)]
    groups: u64,
    #[arg(long, default_value_t = 10)]
    objects_per_group: u64,
    /// Payload bytes per object (at least 16: timestamp + checksum).
    #[arg(long, default_value_t = 1000)]
    object_size: usize,
    /// Payload bytes of each group's first object (a keyframe); default: --object-size.
    #[arg(long)]
    first_object_size: Option<usize>,
    /// Groups per second; objects are spread evenly inside a group.
    #[arg(long, default_value_t = 10.0)]
    rate_groups_per_s: f64,
    /// SUBSCRIBEs to the track to wait for before sending.
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// How long to wait for them.
    #[arg(long, default_value_t = 10_000)]
    subscribe_timeout_ms: u64,
    /// Keep the session open this long after PUBLISH_DONE (ms).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Wait this long after the SUBSCRIBEs before the first object (ms), so
    /// that every downstream subscriber of an aggregating relay has joined.
    #[arg(long, default_value_t = 0)]
    start_delay_ms: u64,
    /// Local address to bind (default: any, ephemeral port).
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// A second track in the same namespace whose objects go as OBJECT_DATAGRAMs.
    #[arg(long)]
    datagram_track: Option<String>,
    /// Datagram objects per group on --datagram-track.
    #[arg(long, default_value_t = 1)]
    datagrams_per_group: u64,
    /// Payload bytes per datagram object (it must fit one QUIC packet).
    #[arg(long, default_value_t = 200)]
    datagram_size: usize,
    /// Publisher Priority of --track's objects (default: the draft's 128).
    #[arg(long)]
    priority: Option<u8>,
    /// A second subgroup-stream track in the same namespace, with the same
    /// groups and objects per group as --track.
    #[arg(long)]
    extra_track: Option<String>,
    /// Payload bytes per object of --extra-track.
    #[arg(long, default_value_t = 1000)]
    extra_object_size: usize,
    /// Publisher Priority of --extra-track's objects.
    #[arg(long)]
    extra_priority: Option<u8>,
}

pub(crate) async fn run(args: MoqPubArgs) -> anyhow::Result<()> {
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
    let namespace = namespace_from_path(&args.target.namespace)?;
    let track = args.target.full_track_name()?;
    let datagram_track = args
        .datagram_track
        .as_deref()
        .map(|t| track_name(&args.target.namespace, t))
        .transpose()?;
    let extra_track = args
        .extra_track
        .as_deref()
        .map(|t| track_name(&args.target.namespace, t))
        .transpose()?;
    session.publish_namespace(namespace).await?;

    // Wait for the relay's SUBSCRIBE(s) to each track; refuse other tracks.
    let mut subs = Vec::new();
    let mut datagram_subs = Vec::new();
    let mut extra_subs = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(args.subscribe_timeout_ms);
    let wanted = |on: bool| if on { args.subscribers } else { 0 };
    let (datagram_wanted, extra_wanted) = (
        wanted(datagram_track.is_some()),
        wanted(extra_track.is_some()),
    );
    while subs.len() < args.subscribers
        || datagram_subs.len() < datagram_wanted
        || extra_subs.len() < extra_wanted
    {
        let inc = tokio::time::timeout_at(deadline.into(), session.next_subscribe())
            .await
            .with_context(|| {
                format!(
                    "{} of {} SUBSCRIBEs for {} after {} ms",
                    subs.len(),
                    args.subscribers,
                    track.to_serialized(),
                    args.subscribe_timeout_ms
                )
            })?
            .ok_or_else(|| {
                session
                    .closed()
                    .map(anyhow::Error::new)
                    .unwrap_or_else(|| anyhow::anyhow!("session ended"))
            })
            .context("waiting for SUBSCRIBE")?;
        if inc.track == track {
            let alias = session.accept_subscribe(inc.id, None).await?;
            subs.push((inc.id, alias));
        } else if Some(&inc.track) == datagram_track.as_ref() {
            let alias = session.accept_subscribe(inc.id, None).await?;
            datagram_subs.push((inc.id, alias));
        } else if Some(&inc.track) == extra_track.as_ref() {
            let alias = session.accept_subscribe(inc.id, None).await?;
            extra_subs.push((inc.id, alias));
        } else {
            session
                .reject_subscribe(
                    inc.id,
                    moqt::RequestErrorCode::DoesNotExist,
                    "unknown track",
                )
                .await?;
        }
    }

    tokio::time::sleep(Duration::from_millis(args.start_delay_ms)).await;
    let send_start = Instant::now();
    let group_interval = Duration::from_secs_f64(1.0 / args.rate_groups_per_s.max(1e-3));
    let per_group = args.objects_per_group.max(1);
    let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
    let (mut datagrams_sent, mut datagram_errors) = (0u64, 0u64);
    let mut first_error = None;
    for g in 0..args.groups {
        for o in 0..args.objects_per_group {
            let at = send_start + group_interval.mul_f64(g as f64 + o as f64 / per_group as f64);
            tokio::time::sleep_until(at.into()).await;
            let size = match (o, args.first_object_size) {
                (0, Some(keyframe)) => keyframe,
                _ => args.object_size,
            };
            let payload = test_payload(size, g, o, unix_ns());
            let extra = test_payload(args.extra_object_size, g, o, unix_ns());
            let sends = subs
                .iter()
                .map(|&(_, alias)| (alias, args.priority, &payload))
                .chain(
                    extra_subs
                        .iter()
                        .map(|&(_, alias)| (alias, args.extra_priority, &extra)),
                );
            for (alias, priority, payload) in sends {
                match session
                    .send_object(alias, g, 0, o, priority, payload.clone())
                    .await
                {
                    Ok(()) => {
                        sent += 1;
                        bytes += payload.len() as u64;
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            if o < args.datagrams_per_group {
                let payload = test_payload(args.datagram_size, g, o, unix_ns());
                for &(_, alias) in &datagram_subs {
                    match session
                        .send_datagram(alias, g, o, None, payload.clone())
                        .await
                    {
                        Ok(()) => datagrams_sent += 1,
                        Err(e) => {
                            datagram_errors += 1;
                            first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
            }
        }
        for &(_, alias) in subs.iter().chain(&extra_subs) {
            session.end_subgroup(alias, g, 0).await?;
        }
    }
    let send_ms = send_start.elapsed().as_secs_f64() * 1e3;
    for &(id, _) in subs.iter().chain(&datagram_subs).chain(&extra_subs) {
        if let Err(e) = session
            .publish_done(id, moqt::PublishDoneCode::TrackEnded, "done")
            .await
        {
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
    }
    if args.linger_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
    }
    let closed_early = session.closed();
    session.close().await?;
    let stats = session.connection().stats();
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    println!(
        "{}",
        json!({
            "setup_ms": setup_ms,
            "subscribers": subs.len(),
            "groups": args.groups,
            "objects_sent": sent,
            "bytes_sent": bytes,
            "send_errors": errors,
            "datagrams_sent": datagrams_sent,
            "datagram_send_errors": datagram_errors,
            "first_error": first_error,
            "send_ms": send_ms,
            "session_closed": closed_early.map(|c| c.to_string()),
            "lost_packets": stats.path.lost_packets,
            "rtt_us": stats.path.rtt.as_micros() as u64,
        })
    );
    if errors > 0 {
        anyhow::bail!("{errors} objects could not be sent");
    }
    Ok(())
}
