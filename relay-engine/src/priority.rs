//! Send order (draft-18 §7.2) and its mapping onto quinn-proto stream
//! priorities, where a higher value is sent first.
//!
//! The draft's order between two schedulable objects: lower subscriber
//! priority number first; then lower publisher priority number; then, within
//! one request, the subscription's group order; then the lower subgroup ID
//! (objects on subgroup streams) or object ID (datagrams).

use std::cmp::Ordering;

use moqt::GroupOrder;

/// Control streams go before everything (§7.2: "SHOULD be prioritized highest").
pub const CONTROL_STREAM_PRIORITY: i32 = i32::MAX;
/// Request streams next, above all objects.
pub const REQUEST_STREAM_PRIORITY: i32 = i32::MAX - 1;

const _: () = assert!(REQUEST_STREAM_PRIORITY < CONTROL_STREAM_PRIORITY);

/// Groups further apart than this from a subscription's newest group share
/// one rank (the i32 has room for 11 bits of group rank).
pub const GROUP_RANK_SPAN: u64 = (1 << GROUP_RANK_BITS) - 1;
/// Subgroup IDs (or object IDs for datagrams) at or above this share a rank.
pub const SUBGROUP_RANK_SPAN: u64 = (1 << SUBGROUP_RANK_BITS) - 1;

const GROUP_RANK_BITS: u32 = 11;
const SUBGROUP_RANK_BITS: u32 = 4;
// 8 (subscriber) + 8 (publisher) + 11 (group) + 4 (subgroup) = 31 bits: the
// key fits a non-negative i32 below the control and request priorities.

/// One schedulable object, as far as ordering is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedulable {
    pub subscriber_priority: u8,
    pub publisher_priority: u8,
    pub group: u64,
    /// Subgroup ID for subgroup streams, object ID for datagrams.
    pub subgroup: u64,
}

/// The draft's order for two objects of the same request: `Less` means `a`
/// is sent first.
pub fn send_order(a: &Schedulable, b: &Schedulable, order: GroupOrder) -> Ordering {
    a.subscriber_priority
        .cmp(&b.subscriber_priority)
        .then(a.publisher_priority.cmp(&b.publisher_priority))
        .then(match order {
            GroupOrder::Ascending => a.group.cmp(&b.group),
            GroupOrder::Descending => b.group.cmp(&a.group),
        })
        .then(a.subgroup.cmp(&b.subgroup))
}

/// The quinn-proto priority of the stream (or datagram) carrying `s`, for a
/// subscription whose newest group so far is `newest_group`. Consistent with
/// [`send_order`] for groups within [`GROUP_RANK_SPAN`] of the newest and
/// subgroups below [`SUBGROUP_RANK_SPAN`]; beyond that, ties.
pub fn stream_priority(s: &Schedulable, order: GroupOrder, newest_group: u64) -> i32 {
    let age = newest_group.saturating_sub(s.group).min(GROUP_RANK_SPAN);
    // Rank 0 is sent first.
    let group_rank = match order {
        GroupOrder::Ascending => GROUP_RANK_SPAN - age, // oldest first
        GroupOrder::Descending => age,                  // newest first
    };
    let subgroup_rank = s.subgroup.min(SUBGROUP_RANK_SPAN);
    let key = (u32::from(s.subscriber_priority) << (8 + GROUP_RANK_BITS + SUBGROUP_RANK_BITS))
        | (u32::from(s.publisher_priority) << (GROUP_RANK_BITS + SUBGROUP_RANK_BITS))
        | ((group_rank as u32) << SUBGROUP_RANK_BITS)
        | subgroup_rank as u32;
    // Smaller key first; quinn sends the larger priority first.
    (i32::MAX - 2) - key as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sub: u8, publ: u8, group: u64, subgroup: u64) -> Schedulable {
        Schedulable {
            subscriber_priority: sub,
            publisher_priority: publ,
            group,
            subgroup,
        }
    }

    /// Every combination of the three priority inputs (and the tie breaker),
    /// over small domains: the rules apply in the draft's precedence.
    #[test]
    fn precedence_of_every_input_combination() {
        let prios = [0u8, 1, 128, 255];
        let groups = [0u64, 1, 7];
        let subgroups = [0u64, 1, 5];
        let mut all = Vec::new();
        for &a in &prios {
            for &b in &prios {
                for &g in &groups {
                    for &sg in &subgroups {
                        all.push(s(a, b, g, sg));
                    }
                }
            }
        }
        for order in [GroupOrder::Ascending, GroupOrder::Descending] {
            for x in &all {
                for y in &all {
                    let got = send_order(x, y, order);
                    let expect = if x.subscriber_priority != y.subscriber_priority {
                        x.subscriber_priority.cmp(&y.subscriber_priority)
                    } else if x.publisher_priority != y.publisher_priority {
                        x.publisher_priority.cmp(&y.publisher_priority)
                    } else if x.group != y.group {
                        match order {
                            GroupOrder::Ascending => x.group.cmp(&y.group),
                            GroupOrder::Descending => y.group.cmp(&x.group),
                        }
                    } else {
                        x.subgroup.cmp(&y.subgroup)
                    };
                    assert_eq!(got, expect, "{x:?} vs {y:?} ({order:?})");

                    // The quinn priority agrees: first in order = higher priority.
                    let (px, py) = (stream_priority(x, order, 7), stream_priority(y, order, 7));
                    match got {
                        Ordering::Less => assert!(px > py, "{x:?} {px} vs {y:?} {py} ({order:?})"),
                        Ordering::Greater => assert!(px < py, "{x:?} {px} vs {y:?} {py}"),
                        Ordering::Equal => assert_eq!(px, py),
                    }
                }
            }
        }
    }

    #[test]
    fn objects_stay_below_control_and_request_streams() {
        for order in [GroupOrder::Ascending, GroupOrder::Descending] {
            let top = stream_priority(&s(0, 0, 100, 0), order, 100);
            let top_asc_old = stream_priority(&s(0, 0, 0, 0), order, u64::MAX);
            assert!(top < REQUEST_STREAM_PRIORITY && top_asc_old < REQUEST_STREAM_PRIORITY);
            // The least important object is the lowest value, without wrapping.
            let bottom = stream_priority(&s(255, 255, 0, u64::MAX), order, u64::MAX);
            let bottom_other = stream_priority(&s(255, 255, u64::MAX, u64::MAX), order, u64::MAX);
            assert!(
                bottom.min(bottom_other) > i32::MIN + 2,
                "{bottom} {bottom_other}"
            );
            assert!(bottom < top);
        }
    }

    #[test]
    fn far_groups_and_high_subgroups_tie_instead_of_wrapping() {
        let newest = 10_000;
        let old_a = stream_priority(&s(5, 5, 0, 0), GroupOrder::Descending, newest);
        let old_b = stream_priority(
            &s(5, 5, newest - GROUP_RANK_SPAN, 0),
            GroupOrder::Descending,
            newest,
        );
        assert_eq!(old_a, old_b);
        let newer = stream_priority(&s(5, 5, newest, 0), GroupOrder::Descending, newest);
        assert!(newer > old_a);
        let sg_a = stream_priority(&s(5, 5, newest, 100), GroupOrder::Ascending, newest);
        let sg_b = stream_priority(
            &s(5, 5, newest, SUBGROUP_RANK_SPAN),
            GroupOrder::Ascending,
            newest,
        );
        assert_eq!(sg_a, sg_b);
    }
}
