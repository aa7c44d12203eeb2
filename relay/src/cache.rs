//! A bounded cache of a track's recent groups (draft-18 §9.1), serving late
//! subscribers and joining FETCH.
//!
//! Policy: a byte budget per track. Every object costs its payload, its
//! properties' values and a fixed [`OBJECT_OVERHEAD`] for the metadata, so
//! the bound holds for floods of empty objects too. When an insert goes over
//! budget, whole groups are evicted, oldest (lowest group ID) first; a group
//! is never split. An object that cannot fit even with every older group
//! gone is not cached (it is still forwarded live) and the insert says so.
//! A duplicate Location is ignored (§9.1 allows it), so a cache cannot be
//! poisoned by a second copy.
//!
//! What the cache does not hold is not necessarily absent: the relay joined
//! the track at some point, and evicted groups are gone. [`TrackCache::
//! complete_from`] is the first group the cache has seen from its start and
//! still holds; a FETCH reaching before it is told the earlier range is
//! unknown (§11.4.4 End of Unknown Range) rather than given a silent gap.

use std::collections::VecDeque;

use bytes::Bytes;
use moqt::{Location, ObjectStatus, Properties};

/// Accounted bytes per object besides payload and property values: the
/// object's fields, its `Vec` slot and the `Bytes` handle.
pub const OBJECT_OVERHEAD: usize = 96;

/// One cached object: every field of §11.2.1, payload shared with every
/// subscriber it is forwarded to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedObject {
    pub location: Location,
    /// Subgroup ID (objects on subgroup streams).
    pub subgroup: u64,
    /// Forwarding preference Datagram: forwarded as a datagram, not on a stream.
    pub datagram: bool,
    /// The priority it is scheduled by (the default when the publisher
    /// gave none).
    pub publisher_priority: u8,
    /// The publisher wrote a priority; `false`: its header said "default"
    /// and so will ours (§11.4.2 DEFAULT_PRIORITY).
    pub explicit_priority: bool,
    /// END_OF_GROUP of its subgroup stream or datagram.
    pub end_of_group: bool,
    /// The first object ever published in its subgroup (FIRST_OBJECT).
    pub first_object: bool,
    pub status: ObjectStatus,
    pub properties: Properties,
    pub payload: Bytes,
}

impl CachedObject {
    fn cost(&self) -> usize {
        let props: usize = self
            .properties
            .pairs()
            .iter()
            .map(|p| match &p.value {
                moqt::KvValue::Varint(_) => 24,
                moqt::KvValue::Bytes(b) => 24 + b.len(),
            })
            .sum();
        OBJECT_OVERHEAD + self.payload.len() + props
    }
}

#[derive(Debug)]
struct CachedGroup {
    id: u64,
    /// Sorted by object ID.
    objects: Vec<CachedObject>,
    bytes: usize,
}

/// What [`TrackCache::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored; `evicted_groups` older groups made room.
    Stored { evicted_groups: usize },
    /// Same Location already cached: ignored.
    Duplicate,
    /// Older than every retained group while the cache is full: not stored.
    TooOld,
    /// Larger than the budget allows even alone in its group: not stored.
    TooLarge,
}

#[derive(Debug)]
pub struct TrackCache {
    /// Sorted by group ID, oldest first.
    groups: VecDeque<CachedGroup>,
    bytes: usize,
    budget: usize,
    evicted_groups: u64,
    /// First group seen from object 0 on and not evicted (see module doc).
    complete_from: Option<u64>,
}

impl TrackCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            groups: VecDeque::new(),
            bytes: 0,
            budget: budget_bytes,
            evicted_groups: 0,
            complete_from: None,
        }
    }

    /// Bytes accounted to the cache now (never above the budget).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// Groups evicted over the cache's lifetime.
    pub fn evicted_groups(&self) -> u64 {
        self.evicted_groups
    }

    /// The largest cached Location.
    pub fn largest(&self) -> Option<Location> {
        self.groups
            .back()
            .and_then(|g| g.objects.last())
            .map(|o| o.location)
    }

    /// The first group whose objects the cache has seen from the group's
    /// start and still holds; `None` before any object was stored. Earlier
    /// locations are unknown to the relay, not absent.
    pub fn complete_from(&self) -> Option<u64> {
        self.complete_from
    }

    /// The oldest group still cached.
    pub fn oldest_group(&self) -> Option<u64> {
        self.groups.front().map(|g| g.id)
    }

    pub fn insert(&mut self, object: CachedObject) -> Inserted {
        let cost = object.cost();
        let group_id = object.location.group;
        let position = self.groups.binary_search_by_key(&group_id, |g| g.id);
        if let Ok(i) = position {
            if self.groups[i]
                .objects
                .binary_search_by_key(&object.location.object, |o| o.location.object)
                .is_ok()
            {
                return Inserted::Duplicate;
            }
        }
        // What this group already holds stays; older groups may go.
        let group_bytes = position.map(|i| self.groups[i].bytes).unwrap_or(0);
        // From the newest end: live objects land in the newest group, so
        // this looks at no group at all in the common case (a scan of every
        // group made floods of tiny groups quadratic).
        let newer_bytes: usize = self
            .groups
            .iter()
            .rev()
            .take_while(|g| g.id > group_id)
            .map(|g| g.bytes)
            .sum();
        if cost + group_bytes + newer_bytes > self.budget {
            // Even with every older group evicted it would not fit.
            return if group_bytes + newer_bytes > 0 && cost <= self.budget {
                Inserted::TooOld
            } else {
                Inserted::TooLarge
            };
        }

        let mut evicted = 0;
        while self.bytes + cost > self.budget {
            let oldest = self
                .groups
                .front()
                .expect("over budget implies a group to evict");
            debug_assert!(oldest.id < group_id, "only older groups are evicted");
            self.bytes -= oldest.bytes;
            self.groups.pop_front();
            evicted += 1;
        }
        self.evicted_groups += evicted as u64;
        // The relay joined mid-group unless the first object it keeps is a
        // group's object 0; eviction moves the horizon up.
        let joined_at = if object.location.object == 0 {
            group_id
        } else {
            group_id.saturating_add(1)
        };
        let mut complete = self.complete_from.unwrap_or(joined_at);
        if let Some(oldest) = self.groups.front() {
            if evicted > 0 {
                complete = complete.max(oldest.id);
            }
        }
        self.complete_from = Some(complete);

        let index = match self.groups.binary_search_by_key(&group_id, |g| g.id) {
            Ok(i) => i,
            Err(i) => {
                self.groups.insert(
                    i,
                    CachedGroup {
                        id: group_id,
                        objects: Vec::new(),
                        bytes: 0,
                    },
                );
                i
            }
        };
        let group = &mut self.groups[index];
        let at = group
            .objects
            .partition_point(|o| o.location.object < object.location.object);
        group.objects.insert(at, object);
        group.bytes += cost;
        self.bytes += cost;
        Inserted::Stored {
            evicted_groups: evicted,
        }
    }

    /// Evicts the oldest group (the worker-wide cache budget reclaims
    /// from the largest caches); returns the bytes freed, 0 when empty.
    pub fn evict_oldest(&mut self) -> usize {
        let Some(oldest) = self.groups.pop_front() else {
            return 0;
        };
        self.bytes -= oldest.bytes;
        self.evicted_groups += 1;
        if let Some(next) = self.groups.front() {
            self.complete_from = self.complete_from.map(|c| c.max(next.id));
        } else {
            // Nothing held: later groups start a new horizon, past this one.
            self.complete_from = self.complete_from.map(|c| c.max(oldest.id + 1));
        }
        oldest.bytes
    }

    /// Cached objects from `start` (inclusive) to `end` (inclusive), in
    /// (group, object) order: a FETCH range, or a late join from `start`
    /// with `end = Location::new(u64::MAX, u64::MAX)`.
    pub fn range(&self, start: Location, end: Location) -> impl Iterator<Item = &CachedObject> {
        let first = self.groups.partition_point(|g| g.id < start.group);
        self.groups
            .range(first..)
            .take_while(move |g| g.id <= end.group)
            .flat_map(|g| g.objects.iter())
            .filter(move |o| o.location >= start && o.location <= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn obj(group: u64, object: u64, len: usize) -> CachedObject {
        CachedObject {
            location: Location::new(group, object),
            subgroup: 0,
            datagram: false,
            publisher_priority: 128,
            explicit_priority: true,
            end_of_group: false,
            first_object: false,
            status: ObjectStatus::Normal,
            properties: Properties::new(),
            payload: Bytes::from(vec![group as u8; len]),
        }
    }

    const COST_1K: usize = OBJECT_OVERHEAD + 1000;

    #[test]
    fn evicts_whole_oldest_groups_and_serves_ranges() {
        let mut c = TrackCache::new(COST_1K * 10);
        for g in 0..5 {
            for o in 0..3 {
                assert!(matches!(c.insert(obj(g, o, 1000)), Inserted::Stored { .. }));
            }
        }
        // 15 objects, room for 10: groups 0 and 1 went whole (group 2 fits).
        assert_eq!(c.oldest_group(), Some(2));
        assert_eq!(c.group_count(), 3);
        assert_eq!(c.evicted_groups(), 2);
        assert!(c.bytes() <= c.budget());
        assert_eq!(c.largest(), Some(Location::new(4, 2)));
        let from: Vec<_> = c
            .range(Location::new(3, 1), Location::new(u64::MAX, u64::MAX))
            .map(|o| o.location)
            .collect();
        assert_eq!(
            from,
            [
                Location::new(3, 1),
                Location::new(3, 2),
                Location::new(4, 0),
                Location::new(4, 1),
                Location::new(4, 2)
            ]
        );
        let window: Vec<_> = c
            .range(Location::new(2, 2), Location::new(3, 0))
            .map(|o| o.location)
            .collect();
        assert_eq!(window, [Location::new(2, 2), Location::new(3, 0)]);
    }

    #[test]
    fn complete_from_starts_at_the_first_whole_group_and_follows_eviction() {
        let mut c = TrackCache::new(COST_1K * 4);
        assert_eq!(c.complete_from(), None);
        // Joined in the middle of group 3: group 3 is incomplete.
        c.insert(obj(3, 2, 1000));
        assert_eq!(c.complete_from(), Some(4));
        c.insert(obj(4, 0, 1000));
        c.insert(obj(4, 1, 1000));
        assert_eq!(c.complete_from(), Some(4));
        // Room for 4: groups 3 and 4 are evicted for group 5's objects.
        for o in 0..3 {
            c.insert(obj(5, o, 1000));
        }
        assert_eq!(c.oldest_group(), Some(5));
        assert_eq!(c.complete_from(), Some(5));

        let mut d = TrackCache::new(COST_1K * 4);
        d.insert(obj(7, 0, 1000));
        assert_eq!(d.complete_from(), Some(7));
    }

    #[test]
    fn duplicates_too_large_and_too_old() {
        let mut c = TrackCache::new(COST_1K * 3);
        assert!(matches!(c.insert(obj(5, 0, 1000)), Inserted::Stored { .. }));
        let mut poisoned = obj(5, 0, 1000);
        poisoned.payload = Bytes::from_static(b"other");
        assert_eq!(c.insert(poisoned), Inserted::Duplicate);
        assert_eq!(
            c.range(Location::new(5, 0), Location::new(5, 0))
                .next()
                .unwrap()
                .payload
                .len(),
            1000
        );
        assert_eq!(c.insert(obj(6, 0, COST_1K * 3)), Inserted::TooLarge);
        c.insert(obj(6, 0, 1000));
        c.insert(obj(7, 0, 1000));
        // Full with groups 5..=7: an object of group 1 would need newer ones evicted.
        assert_eq!(c.insert(obj(1, 0, 1000)), Inserted::TooOld);
        assert_eq!(c.oldest_group(), Some(5));
    }

    #[test]
    fn empty_objects_still_cost_their_metadata() {
        let mut c = TrackCache::new(OBJECT_OVERHEAD * 100);
        for i in 0..10_000 {
            c.insert(obj(i / 10, i % 10, 0));
        }
        assert!(c.bytes() <= c.budget());
        assert_eq!(c.group_count(), 10);
    }

    proptest! {
        /// Whatever arrives, in whatever order, the cache stays within its
        /// budget, keeps groups sorted and whole, and never loses the newest.
        #[test]
        fn bounded_sorted_and_whole(
            budget in 1_000usize..50_000,
            arrivals in proptest::collection::vec((0u64..40, 0u64..20, 0usize..3_000), 1..300),
        ) {
            let mut c = TrackCache::new(budget);
            for (g, o, len) in arrivals {
                let before_newest = c.groups.back().map(|g| g.id);
                let outcome = c.insert(obj(g, o, len));
                prop_assert!(c.bytes() <= c.budget());
                prop_assert!(c.groups.iter().zip(c.groups.iter().skip(1)).all(|(a, b)| a.id < b.id));
                prop_assert_eq!(c.bytes(), c.groups.iter().map(|g| g.bytes).sum::<usize>());
                if let (Inserted::Stored { .. }, Some(newest)) = (outcome, before_newest) {
                    prop_assert!(c.groups.iter().any(|x| x.id == newest.max(g)));
                }
            }
        }
    }
}
