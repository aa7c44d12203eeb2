//! Names: where the fuzzer's Request IDs and Track Aliases come from.

use fastrelay_fuzz::{AAlias, Ctx};

pub(crate) struct Names {
    /// The next Request ID the peer may use.
    pub(crate) next_peer_id: u64,
    /// Request IDs seen (ours and the peer's), most recent last.
    pub(crate) ids: Vec<u64>,
    /// Track aliases seen (ours and the peer's), most recent last.
    pub(crate) aliases: Vec<u64>,
}

pub(crate) fn recent(list: &[u64], i: u8) -> Option<u64> {
    if list.is_empty() {
        return None;
    }
    Some(list[list.len() - 1 - usize::from(i) % list.len()])
}

pub(crate) fn remember(list: &mut Vec<u64>, v: u64) {
    if list.last() != Some(&v) {
        list.push(v);
        if list.len() > 64 {
            list.remove(0);
        }
    }
}

impl Ctx for Names {
    fn next_id(&mut self) -> u64 {
        let id = self.next_peer_id;
        self.next_peer_id = self.next_peer_id.wrapping_add(2);
        remember(&mut self.ids, id);
        id
    }
    fn known_id(&self, i: u8) -> Option<u64> {
        recent(&self.ids, i)
    }
    fn known_alias(&self, i: u8) -> Option<u64> {
        recent(&self.aliases, i)
    }
    fn peer_alias(&mut self, a: AAlias) -> u64 {
        let v = match a {
            // A fresh alias most of the time: the peer assigns them.
            AAlias::Known(i) if i < 0xc0 => {
                self.aliases.iter().max().map_or(0, |m| m.wrapping_add(1))
            }
            other => self.alias(other),
        };
        remember(&mut self.aliases, v);
        v
    }
}
