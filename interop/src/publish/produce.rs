//! Producing the objects of one track, and recording them for FETCH.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moq_transport::data::ObjectStatus;
use moq_transport::serve::{Datagram, ServeError, Subgroup, SubgroupWriter, TrackWriter};
use tokio::sync::watch;

use super::{PubTrack, Shared, MAX_ARCHIVE};
use crate::cli::{PubMode, StartWhen};
use crate::{conn, payload, util};

pub(super) struct ProduceCfg {
    pub(super) mode: PubMode,
    pub(super) groups: u64,
    pub(super) objects_per_group: u64,
    pub(super) rate: f64,
    /// Per-track rates (`--track-rate T=R`) overriding `rate`.
    pub(super) track_rates: std::collections::HashMap<String, f64>,
    pub(super) start_when: StartWhen,
    pub(super) hold_tracks: bool,
    pub(super) stop_at: Option<tokio::time::Instant>,
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

pub(super) async fn produce(
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
                let body = shared.body(ts, g, o);
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
                let body = shared.body(ts, g, o);
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
