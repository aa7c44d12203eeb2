//! The shedding policy of `relay_engine::shed` applied to one connection:
//! late or over-bound subgroup streams are reset and their later objects
//! skipped; what each subscriber lost is counted and logged.

use std::time::{Duration, Instant};

use quinn_proto::Connection;

use super::conn::Conn;
use crate::shed::{self, Candidate, Reason, ShedConfig};

/// How often one subscriber's shedding is logged at most.
const SHED_LOG_PERIOD: Duration = Duration::from_secs(1);

/// The delivery timeout for data already handed to quinn-proto: a subgroup
/// of a past group (the subscription has moved on to a newer one) whose
/// first byte was queued longer ago than the timeout and that is still not
/// acknowledged would only arrive late (it waits behind higher priorities
/// or for retransmission): it is reset with DELIVERY_TIMEOUT too. The live
/// group's stream is left alone (its age is that of the group, not of its
/// newest objects). Puts them in `state.victims`; returns whether any.
///
/// Only while the connection is congested (something waits in the
/// driver's backlog): quinn-proto does not say which of a stream's bytes
/// are acknowledged, only when all of them are after its end, so an old
/// group's stream whose objects all arrived long ago but whose end comes
/// just after the next group began would otherwise be reset for nothing —
/// its subscriber would see a whole, delivered subgroup fail. Without a
/// backlog, quinn holds at most a congestion window, which leaves within
/// round trips, not delivery timeouts.
pub(super) fn find_late_in_flight(state: &mut Conn, config: &ShedConfig, now: Instant) -> bool {
    state.victims.clear();
    if state.driver.pending_bytes() == 0 {
        return false;
    }
    for (stream, born) in state.driver.unacknowledged() {
        let Some(&(request, group, _)) = state.stream_owner.get(&stream) else {
            continue;
        };
        let Some(sub) = state.downstream.get(&request) else {
            continue;
        };
        let timeout = sub.delivery_timeout(config.delivery_timeout);
        if group < sub.newest_group && now.saturating_duration_since(born) > timeout {
            state.victims.push((stream, Reason::DeliveryTimeout));
        }
    }
    !state.victims.is_empty()
}

/// Gives up on every stream in `state.victims` (reset with its reason's
/// code), remembering its subgroup so that later objects are skipped.
pub(super) fn drop_victims(state: &mut Conn, conn: &mut Connection) -> bool {
    for i in 0..state.victims.len() {
        let (stream, reason) = state.victims[i];
        let Some((request, group, subgroup)) = state.stream_owner.remove(&stream) else {
            continue;
        };
        let code = reason.reset_code();
        let bytes = state.driver.abandon(conn, stream, code);
        if let Some(sub) = state.downstream.get_mut(&request) {
            if let Some(alias) = sub.alias {
                // The session forgets the subgroup (its reset is a no-op now).
                state
                    .driver
                    .session
                    .reset_subgroup(alias, group, subgroup, code);
            }
            sub.dropped.insert((group, subgroup));
        }
        state.shed.bytes_dropped += bytes as u64;
        match reason {
            Reason::DeliveryTimeout => state.shed.subgroups_timed_out += 1,
            Reason::Backlog => state.shed.subgroups_over_backlog += 1,
        }
        tracing::debug!(
            subscriber = %conn.remote_address(),
            ?reason,
            group,
            subgroup,
            bytes,
            "subgroup dropped"
        );
    }
    let dropped = !state.victims.is_empty();
    if dropped {
        log_shedding(state, conn);
    }
    state.victims.clear();
    dropped
}

/// At most once per [`SHED_LOG_PERIOD`] per subscriber: what it lost so
/// far and the congestion signals that made it lose it.
pub(super) fn log_shedding(state: &mut Conn, conn: &Connection) {
    let now = Instant::now();
    if state
        .last_shed_log
        .is_some_and(|t| now.duration_since(t) < SHED_LOG_PERIOD)
    {
        return;
    }
    state.last_shed_log = Some(now);
    let oldest_ms = state
        .driver
        .backlog()
        .map(|b| b.since)
        .min()
        .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
    let s = &state.shed;
    tracing::info!(
        subscriber = %conn.remote_address(),
        cwnd = conn.congestion_state().window(),
        rtt_ms = conn.rtt().as_secs_f64() * 1e3,
        backlog_bytes = state.driver.pending_bytes(),
        oldest_waiting_ms = oldest_ms,
        timed_out = s.subgroups_timed_out,
        over_backlog = s.subgroups_over_backlog,
        datagrams = s.datagrams_dropped,
        bytes = s.bytes_dropped,
        "subscriber shedding"
    );
}

/// Checks one connection's backlog against the shedding policy and gives
/// up on the subgroup streams it picks (reset with the draft's code).
fn shed_backlog(state: &mut Conn, conn: &mut Connection, config: &ShedConfig) -> bool {
    let pending = state.driver.pending_bytes();
    if state.stream_owner.len() > 2 * state.driver.stream_count() + 64 {
        // Streams that ended normally: forget them (amortised).
        let driver = &state.driver;
        state.stream_owner.retain(|s, _| driver.knows_stream(*s));
    }
    if pending == 0 {
        state.best_waiting = None;
        return false;
    }
    if pending <= config.max_backlog_bytes / 2 {
        // Far from the bound: only timeouts can apply, and only to data
        // that waits; checking every stream's age on every pump of a
        // healthy connection is waste, so look only at the oldest.
        let oldest = state.driver.backlog().map(|b| b.since).min();
        let shortest = config.delivery_timeout.min(Duration::from_millis(100));
        if oldest.is_none_or(|t| t.elapsed() < shortest) {
            state.shed.backlog_max = state.shed.backlog_max.max(pending as u64);
            state.best_waiting = None;
            return false;
        }
    }
    let now = Instant::now();
    state.candidates.clear();
    for b in state.driver.backlog() {
        // Only subgroup streams are shed: never control, request or fetch data.
        let Some(&(request, group, _)) = state.stream_owner.get(&b.stream) else {
            continue;
        };
        let timeout = state
            .downstream
            .get(&request)
            .map_or(config.delivery_timeout, |s| {
                s.delivery_timeout(config.delivery_timeout)
            });
        state.candidates.push(Candidate {
            stream: b.stream,
            bytes: b.bytes,
            since: b.since,
            priority: b.priority,
            group,
            timeout,
        });
    }
    state.best_waiting = state.candidates.iter().map(|c| c.priority).max();
    state.victims.clear();
    shed::choose(
        &mut state.candidates,
        pending,
        config.max_backlog_bytes,
        now,
        &mut state.victims,
    );
    let dropped = drop_victims(state, conn);
    // The bound is on what stays after the check.
    state.shed.backlog_max = state
        .shed
        .backlog_max
        .max(state.driver.pending_bytes() as u64);
    dropped
}

/// Ends every visit of the relay to a connection, whatever brought it there
/// (one of its events, engine actions for it, the periodic backlog check):
/// what the session queued goes to quinn-proto, then the backlog is held to
/// the shedding policy, and room that shedding freed is refilled at once.
/// The one place the glue calls `apply_commands`.
pub(super) fn settle(state: &mut Conn, conn: &mut Connection, config: &ShedConfig) {
    state.driver.apply_commands(conn);
    if shed_backlog(state, conn, config) {
        state.driver.apply_commands(conn);
    }
}
