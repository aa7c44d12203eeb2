//! Next-hop resolution for the AF_XDP backend, which writes Ethernet headers
//! itself. The control plane fills a [`NextHopTable`] from the kernel's route
//! and neighbour tables (netlink) and publishes it through [`SharedNextHops`];
//! each worker picks up a new snapshot with one atomic load per loop.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use crate::frame::MacAddr;

/// One route of the kernel's main table that leaves through the relay's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    /// `None` for on-link routes: the destination itself is the next hop.
    pub gateway: Option<IpAddr>,
}

impl Route {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.dst, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let len = u32::from(self.prefix_len.min(32));
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let len = u32::from(self.prefix_len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// A snapshot of the routes and neighbours of one interface.
#[derive(Debug, Clone, Default)]
pub struct NextHopTable {
    pub routes: Vec<Route>,
    pub neighbors: HashMap<IpAddr, MacAddr>,
}

impl NextHopTable {
    /// The next hop for `dst` by longest-prefix match (the destination itself
    /// when no route covers it: a directly attached peer).
    pub fn next_hop(&self, dst: IpAddr) -> IpAddr {
        self.routes
            .iter()
            .filter(|r| r.contains(dst))
            .max_by_key(|r| r.prefix_len)
            .and_then(|r| r.gateway)
            .unwrap_or(dst)
    }

    /// MAC address of the next hop toward `dst`, if the kernel knows it.
    pub fn resolve(&self, dst: IpAddr) -> Option<MacAddr> {
        self.neighbors.get(&self.next_hop(dst)).copied()
    }
}

/// Publication point between the control thread (one writer) and workers.
#[derive(Debug, Default)]
pub struct SharedNextHops {
    generation: AtomicU64,
    table: Mutex<Arc<NextHopTable>>,
}

impl SharedNextHops {
    pub fn publish(&self, table: NextHopTable) {
        *self.table.lock().unwrap() = Arc::new(table);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn snapshot(&self) -> Arc<NextHopTable> {
        self.table.lock().unwrap().clone()
    }
}

/// A worker's view: the latest snapshot, refreshed only when the generation moved.
pub struct NextHopView {
    shared: Arc<SharedNextHops>,
    seen: u64,
    table: Arc<NextHopTable>,
}

impl NextHopView {
    pub fn new(shared: Arc<SharedNextHops>) -> Self {
        let seen = shared.generation();
        let table = shared.snapshot();
        Self {
            shared,
            seen,
            table,
        }
    }

    /// Picks up a newer snapshot if there is one (one atomic load otherwise);
    /// returns whether it did.
    pub fn refresh(&mut self) -> bool {
        let generation = self.shared.generation();
        if generation == self.seen {
            return false;
        }
        self.seen = generation;
        self.table = self.shared.snapshot();
        true
    }

    pub fn resolve(&self, dst: IpAddr) -> Option<MacAddr> {
        self.table.resolve(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_on_link_resolves_directly() {
        let gw: IpAddr = "198.18.0.254".parse().unwrap();
        let peer: IpAddr = "198.18.0.10".parse().unwrap();
        let far: IpAddr = "198.19.5.5".parse().unwrap();
        let mut t = NextHopTable::default();
        t.routes.push(Route {
            dst: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            gateway: Some(gw),
        });
        t.routes.push(Route {
            dst: "198.18.0.0".parse().unwrap(),
            prefix_len: 24,
            gateway: None,
        });
        t.neighbors.insert(gw, MacAddr([2, 0, 0, 0, 0, 0xfe]));
        t.neighbors.insert(peer, MacAddr([2, 0, 0, 0, 0, 0x10]));
        assert_eq!(t.next_hop(peer), peer);
        assert_eq!(t.next_hop(far), gw);
        assert_eq!(t.resolve(far), Some(MacAddr([2, 0, 0, 0, 0, 0xfe])));
        assert_eq!(t.resolve(peer), Some(MacAddr([2, 0, 0, 0, 0, 0x10])));
        let v6: IpAddr = "fd00:1::10".parse().unwrap();
        assert_eq!(t.resolve(v6), None);
    }

    #[test]
    fn view_follows_publications() {
        let shared = Arc::new(SharedNextHops::default());
        let mut view = NextHopView::new(shared.clone());
        let peer: IpAddr = "fd00:1::10".parse().unwrap();
        assert_eq!(view.resolve(peer), None);
        let mut t = NextHopTable::default();
        t.neighbors.insert(peer, MacAddr([2, 0, 0, 0, 0, 1]));
        shared.publish(t);
        assert!(view.refresh(), "a new table is taken");
        assert!(!view.refresh(), "and only once");
        assert_eq!(view.resolve(peer), Some(MacAddr([2, 0, 0, 0, 0, 1])));
    }
}
