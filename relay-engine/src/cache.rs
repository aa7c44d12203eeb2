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
//! An object forwarded in parts (cut-through, [`CachedObject::part`]) is
//! collected until its last part arrives and cached whole then; what is
//! collected meanwhile counts against the budget like cached objects do
//! (older groups make room for it; if they cannot, it is not cached). A
//! part out of sequence, a reset of its subgroup or a new object on the
//! same subgroup drops the collection.
//!
//! What the cache does not hold is not necessarily absent: the relay joined
//! the track at some point, and evicted groups are gone. [`TrackCache::
//! complete_from`] is the first group the cache has seen from its start and
//! still holds; a FETCH reaching before it is told the earlier range is
//! unknown (§11.4.4 End of Unknown Range) rather than given a silent gap.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use moqt::session::PayloadPart;
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
    /// `None`: `payload` is the whole object. `Some`: one part of an object
    /// forwarded while it streams in (only the first carries properties).
    pub part: Option<PayloadPart>,
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
    /// A part of an object, collected until the object is whole.
    Collecting,
    /// A part of an object that is not being collected (it is too large,
    /// or an earlier part was missed): the object will not be cached.
    NotCollected,
}

/// An object arriving in parts, collected to be cached once whole.
#[derive(Debug)]
struct Collecting {
    /// The first part's fields, with an empty payload.
    head: CachedObject,
    length: usize,
    payload: BytesMut,
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
    /// Objects arriving in parts (at most one per open subgroup).
    collecting: Vec<Collecting>,
    /// Payload bytes `collecting` holds (counted in `bytes()`).
    collecting_bytes: usize,
}

impl TrackCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            groups: VecDeque::new(),
            bytes: 0,
            budget: budget_bytes,
            evicted_groups: 0,
            complete_from: None,
            collecting: Vec::new(),
            collecting_bytes: 0,
        }
    }

    /// Bytes accounted to the cache now, objects being collected included
    /// (never above the budget).
    pub fn bytes(&self) -> usize {
        self.bytes + self.collecting_bytes
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
        match object.part {
            None => self.insert_whole(object),
            Some(part) => self.collect(object, part),
        }
    }

    /// The subgroup (`group`, `subgroup`) ended: an object it left
    /// unfinished is given up.
    pub fn subgroup_ended(&mut self, group: u64, subgroup: u64) {
        self.drop_collecting(|c| c.head.location.group == group && c.head.subgroup == subgroup);
    }

    fn drop_collecting(&mut self, which: impl Fn(&Collecting) -> bool) {
        let freed: usize = self
            .collecting
            .iter()
            .filter(|c| which(c))
            .map(|c| c.payload.len())
            .sum();
        self.collecting.retain(|c| !which(c));
        self.collecting_bytes -= freed;
    }

    fn collect(&mut self, object: CachedObject, part: PayloadPart) -> Inserted {
        let (location, subgroup) = (object.location, object.subgroup);
        if part.is_first() {
            // A new object on a subgroup: one left unfinished there never
            // completes.
            self.drop_collecting(|c| {
                c.head.location.group == location.group && c.head.subgroup == subgroup
            });
            let length = usize::try_from(part.length).unwrap_or(usize::MAX);
            if length.saturating_add(OBJECT_OVERHEAD) > self.budget {
                return Inserted::NotCollected;
            }
            self.collecting.push(Collecting {
                head: CachedObject {
                    payload: Bytes::new(),
                    part: None,
                    ..object.clone()
                },
                length,
                payload: BytesMut::new(),
            });
        }
        let Some(i) = self
            .collecting
            .iter()
            .position(|c| c.head.location == location && c.head.subgroup == subgroup)
        else {
            return Inserted::NotCollected;
        };
        let c = &mut self.collecting[i];
        if c.payload.len() as u64 != part.offset
            || c.payload.len() + object.payload.len() > c.length
        {
            self.drop_collecting(|c| c.head.location == location && c.head.subgroup == subgroup);
            return Inserted::NotCollected;
        }
        c.payload.extend_from_slice(&object.payload);
        self.collecting_bytes += object.payload.len();
        if c.payload.len() == c.length {
            let c = self.collecting.swap_remove(i);
            self.collecting_bytes -= c.payload.len();
            return self.insert_whole(CachedObject {
                payload: c.payload.freeze(),
                ..c.head
            });
        }
        // Room for what is collected: older groups go; if that is not
        // enough, the object is given up.
        while self.bytes() > self.budget
            && self.groups.front().is_some_and(|g| g.id < location.group)
        {
            self.evict_oldest();
        }
        if self.bytes() > self.budget {
            self.drop_collecting(|c| c.head.location == location && c.head.subgroup == subgroup);
            return Inserted::NotCollected;
        }
        Inserted::Collecting
    }

    fn insert_whole(&mut self, object: CachedObject) -> Inserted {
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
        while self.bytes() + cost > self.budget {
            match self.groups.front() {
                Some(oldest) if oldest.id < group_id => {
                    self.bytes -= oldest.bytes;
                    self.groups.pop_front();
                    evicted += 1;
                }
                // Only objects being collected are in the way: a whole
                // object goes first.
                _ if !self.collecting.is_empty() => self.drop_collecting(|_| true),
                // Unreachable: the check above left room.
                _ => break,
            }
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
    /// With no group left, objects being collected go.
    pub fn evict_oldest(&mut self) -> usize {
        let Some(oldest) = self.groups.pop_front() else {
            let freed = self.collecting_bytes;
            self.drop_collecting(|_| true);
            return freed;
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
            part: None,
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

    /// Part `offset..offset + len` of a `length`-byte object (group, object).
    fn part(group: u64, object: u64, offset: usize, len: usize, length: usize) -> CachedObject {
        CachedObject {
            payload: (offset..offset + len)
                .map(|i| i as u8)
                .collect::<Vec<u8>>()
                .into(),
            part: Some(PayloadPart {
                offset: offset as u64,
                length: length as u64,
            }),
            ..obj(group, object, 0)
        }
    }

    #[test]
    fn parts_are_collected_counted_and_cached_whole() {
        let mut c = TrackCache::new(100_000);
        assert_eq!(
            c.insert(part(1, 0, 0, 10_000, 30_000)),
            Inserted::Collecting
        );
        assert_eq!(
            c.insert(part(1, 0, 10_000, 10_000, 30_000)),
            Inserted::Collecting
        );
        assert_eq!(c.bytes(), 20_000, "what is collected counts");
        assert_eq!(c.range(Location::new(1, 0), Location::new(1, 0)).count(), 0);
        assert!(matches!(
            c.insert(part(1, 0, 20_000, 10_000, 30_000)),
            Inserted::Stored { .. }
        ));
        let cached: Vec<_> = c.range(Location::new(1, 0), Location::new(1, 0)).collect();
        let whole: Vec<u8> = (0..30_000).map(|i| i as u8).collect();
        assert_eq!(cached[0].payload, whole);
        assert_eq!(cached[0].part, None);
        assert_eq!(c.bytes(), OBJECT_OVERHEAD + 30_000);
    }

    #[test]
    fn a_gap_an_ended_subgroup_or_a_new_object_gives_the_collection_up() {
        let mut c = TrackCache::new(100_000);
        c.insert(part(1, 0, 0, 1_000, 5_000));
        // A part missed (lost between workers): nothing more is collected.
        assert_eq!(
            c.insert(part(1, 0, 2_000, 1_000, 5_000)),
            Inserted::NotCollected
        );
        assert_eq!(c.bytes(), 0);
        assert_eq!(
            c.insert(part(1, 0, 3_000, 2_000, 5_000)),
            Inserted::NotCollected
        );
        assert_eq!(c.group_count(), 0);

        c.insert(part(2, 0, 0, 1_000, 5_000));
        c.subgroup_ended(2, 0);
        assert_eq!(c.bytes(), 0);
        assert_eq!(
            c.insert(part(2, 0, 1_000, 4_000, 5_000)),
            Inserted::NotCollected
        );

        c.insert(part(3, 0, 0, 1_000, 5_000));
        c.insert(part(3, 1, 0, 1_000, 5_000));
        assert_eq!(c.bytes(), 1_000, "the unfinished object was given up");
    }

    #[test]
    fn collecting_makes_room_from_older_groups_or_gives_up() {
        let mut c = TrackCache::new(COST_1K * 10);
        for g in 0..8 {
            c.insert(obj(g, 0, 1000));
        }
        // 8 000 bytes collected in group 9: older groups make room.
        for i in 0..8 {
            let outcome = c.insert(part(9, 0, i * 1000, 1000, 8000));
            assert!(c.bytes() <= c.budget(), "{} after part {i}", c.bytes());
            assert_ne!(outcome, Inserted::NotCollected);
        }
        assert_eq!(c.largest(), Some(Location::new(9, 0)));
        assert!(c.oldest_group() > Some(0));
        // Larger than the whole budget: not collected at all.
        assert_eq!(
            c.insert(part(10, 0, 0, 1000, 20_000)),
            Inserted::NotCollected
        );
        assert!(c.bytes() <= c.budget());
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
