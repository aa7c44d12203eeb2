//! FETCH served from the cache: standalone at once, joining once its
//! subscription is established.

use moqt::{
    session::RequestId, EndOfRange, EndOfRangeKind, FetchObject, FetchOk, GroupOrder, Location,
    Parameters, DEFAULT_PUBLISHER_PRIORITY,
};

use crate::{
    engine::{self, Engine, FetchPlan, SessionId},
    priority::{stream_priority, Schedulable},
    quic::SessionDriver,
};

/// A joining FETCH waiting for its subscription to be established.
pub(super) struct PendingJoin {
    pub(super) fetch: RequestId,
    pub(super) joined: u64,
    pub(super) start: u64,
    pub(super) relative: bool,
    pub(super) order: GroupOrder,
    pub(super) subscriber_priority: u8,
}

pub(super) fn serve_join(
    engine: &Engine,
    driver: &mut SessionDriver,
    me: SessionId,
    j: &PendingJoin,
) {
    let plan = engine.fetch_joining(me, RequestId(j.joined), j.start, j.relative, j.order);
    answer_fetch(driver, j.fetch, plan, j.order, j.subscriber_priority);
}

pub(super) fn answer_fetch(
    driver: &mut SessionDriver,
    id: RequestId,
    plan: Result<FetchPlan, engine::Refusal>,
    order: GroupOrder,
    subscriber_priority: u8,
) {
    match plan {
        Ok(plan) => serve_fetch(driver, id, plan, order, subscriber_priority),
        Err((code, reason)) => {
            let _ = driver.session.request_error(id, code, reason);
        }
    }
}

/// Answers a FETCH from the cache: FETCH_OK, then one fetch stream with the
/// objects (and an End of Unknown Range marker for what the relay never had
/// or evicted), then FIN.
pub(super) fn serve_fetch(
    driver: &mut SessionDriver,
    id: RequestId,
    plan: FetchPlan,
    order: GroupOrder,
    subscriber_priority: u8,
) {
    let session = &mut driver.session;
    let ok = FetchOk {
        end_of_track: false,
        // The request's encoding: last object plus one, object 0 for a whole group.
        end_location: match plan.end.object {
            u64::MAX => Location::new(plan.end.group, 0),
            last => Location::new(plan.end.group, last + 1),
        },
        parameters: Parameters::default(),
        track_properties: plan.properties.clone(),
    };
    if session.fetch_ok(id, ok).is_err() {
        return;
    }
    let Ok(stream) = session.open_fetch_stream(id) else {
        return;
    };
    // Past data for this subscriber: ranked as its oldest group would be.
    let first_group = plan
        .objects
        .first()
        .map_or(plan.end.group, |o| o.location.group);
    let rank = Schedulable {
        subscriber_priority,
        publisher_priority: DEFAULT_PUBLISHER_PRIORITY,
        group: first_group,
        subgroup: 0,
    };
    // Ascending: the unknown (older) part comes first, up to its last
    // location; descending: last, down to its first.
    let unknown = plan.unknown_through.map(|through| EndOfRange {
        kind: EndOfRangeKind::Unknown,
        location: match order {
            GroupOrder::Descending => plan.start,
            _ => through,
        },
    });
    let mut result = Ok(());
    if let (Some(end), GroupOrder::Ascending) = (unknown, order) {
        result = session.send_fetch_end_of_range(id, end);
    }
    let mut prev: Option<Location> = None;
    for o in plan.objects {
        if result.is_err() {
            break;
        }
        // A hole between cached objects of one group: the relay never had
        // those objects, so they are unknown, not absent (§11.4.4.2).
        if let Some(p) = prev {
            if p.group == o.location.group && o.location.object > p.object + 1 {
                let hole = EndOfRange {
                    kind: EndOfRangeKind::Unknown,
                    location: Location::new(p.group, o.location.object - 1),
                };
                result = session.send_fetch_end_of_range(id, hole);
                if result.is_err() {
                    break;
                }
            }
        }
        prev = Some(o.location);
        result = session.send_fetch_object(
            id,
            FetchObject {
                location: o.location,
                subgroup_id: (!o.datagram).then_some(o.subgroup),
                publisher_priority: o.publisher_priority,
                properties: o.properties,
                payload: o.payload,
            },
        );
    }
    if let (Some(end), GroupOrder::Descending, Ok(())) = (unknown, order, &result) {
        result = session.send_fetch_end_of_range(id, end);
    }
    if result.is_ok() {
        let _ = session.finish_fetch(id);
    }
    driver.set_priority(
        stream,
        stream_priority(&rank, GroupOrder::Ascending, plan.end.group),
    );
}
