//! The in-memory hot window the HTTP API answers from: the last 300 s of rollups with running
//! 300-s totals per (dimension, key), the recent alerts, and the latest state of the recent
//! incidents. Built on the I/O core from the finished seconds; read by the HTTP thread under
//! the published state's lock.
//!
//! May depend on: `pipeline`, `alert`, `model`. Lives on: the I/O core.

use crate::alert::{AlertDoc, IncidentEvent, IncidentState};
use crate::model::{Dimension, Interface, Key};
use crate::pipeline::SecondOutput;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::sync::Arc;

/// Seconds the hot window keeps.
pub const HOT_SECONDS: u64 = 300;
/// Alerts kept for `/api/alerts`.
pub const RECENT_ALERTS: usize = 1000;
/// Incidents kept for `/api/incidents` (open ones first; the oldest resolved go first).
pub const RECENT_INCIDENTS: usize = 1000;

/// The last 300 s of rollups, with running 300-s totals per (dimension, key).
#[derive(Default)]
pub struct HotWindow {
    seconds: VecDeque<SecondOutput>,
    totals: FxHashMap<(Dimension, Key), [u64; 3]>,
    /// The recent layer-1 alerts, oldest first.
    pub(super) alerts: VecDeque<AlertDoc>,
    /// The latest event of each recent incident, oldest first.
    pub(super) incidents: VecDeque<IncidentEvent>,
}

impl HotWindow {
    /// Adds a finished second (and expires what is older than 300 s).
    pub fn push(&mut self, so: &SecondOutput, alerts: &[AlertDoc]) {
        for r in &so.rollups {
            let t = self.totals.entry((r.dimension, r.key)).or_default();
            t[0] += r.bytes;
            t[1] += r.packets;
            t[2] += r.flows;
        }
        for a in alerts {
            if self.alerts.len() >= RECENT_ALERTS {
                self.alerts.pop_front();
            }
            self.alerts.push_back(a.clone());
        }
        // kept sorted by dimension, so a query touches only its dimension's rows
        let mut rollups: Vec<_> = so.rollups.iter().map(crate::model::Rollup::without_sketch).collect();
        rollups.sort_by_key(|r| r.dimension);
        self.seconds.push_back(SecondOutput { second: so.second, rollups, alerts: Vec::new() });
        while self.seconds.front().is_some_and(|f| f.second + HOT_SECONDS <= so.second) {
            if let Some(old) = self.seconds.pop_front() {
                for r in &old.rollups {
                    if let Some(t) = self.totals.get_mut(&(r.dimension, r.key)) {
                        t[0] -= r.bytes;
                        t[1] -= r.packets;
                        t[2] -= r.flows;
                        if t[2] == 0 && t[0] == 0 {
                            self.totals.remove(&(r.dimension, r.key));
                        }
                    }
                }
            }
        }
    }

    /// Records incident events: each incident keeps its latest state.
    pub fn push_incidents(&mut self, events: &[IncidentEvent]) {
        for e in events {
            if let Some(old) = self.incidents.iter_mut().find(|x| x.id == e.id) {
                *old = e.clone();
                continue;
            }
            if self.incidents.len() >= RECENT_INCIDENTS {
                let i = self.incidents.iter().position(|x| x.state == IncidentState::Resolve).unwrap_or(0);
                self.incidents.remove(i);
            }
            self.incidents.push_back(e.clone());
        }
    }

    /// An incident by id (as events carry it, without the appliance).
    pub fn incident(&self, id: &str) -> Option<&IncidentEvent> {
        self.incidents.iter().find(|x| x.id == id)
    }

    /// The dimensions of the newest second (what the view can explore), in order.
    pub fn dimensions(&self) -> Vec<Dimension> {
        let mut v: Vec<Dimension> =
            self.seconds.back().map(|s| s.rollups.iter().map(|r| r.dimension).collect()).unwrap_or_default();
        v.dedup();
        v
    }

    /// Newest second held.
    pub fn newest(&self) -> Option<u64> {
        self.seconds.back().map(|s| s.second)
    }

    /// Top `n` keys of `dim` by `metric` (0 bytes, 1 packets, 2 flows) over the last `secs`.
    pub fn top(&self, dim: Dimension, metric: usize, secs: u64, n: usize) -> Vec<(Key, [u64; 3])> {
        let mut v: Vec<(Key, [u64; 3])> = if secs >= HOT_SECONDS {
            self.totals.iter().filter(|((d, _), _)| *d == dim).map(|((_, k), t)| (*k, *t)).collect()
        } else {
            let from = self.newest().unwrap_or(0).saturating_sub(secs.saturating_sub(1));
            let mut m: FxHashMap<Key, [u64; 3]> = FxHashMap::default();
            for s in self.seconds.iter().filter(|s| s.second >= from) {
                for r in dim_rows(&s.rollups, dim) {
                    let t = m.entry(r.key).or_default();
                    t[0] += r.bytes;
                    t[1] += r.packets;
                    t[2] += r.flows;
                }
            }
            m.into_iter().collect()
        };
        let m = metric.min(2);
        if v.len() > n {
            v.select_nth_unstable_by(n, |a, b| b.1[m].cmp(&a.1[m]).then(a.0.cmp(&b.0)));
            v.truncate(n);
        }
        v.sort_by(|a, b| b.1[m].cmp(&a.1[m]).then(a.0.cmp(&b.0)));
        v
    }

    /// The per-second series of one key over the last `secs` (missing seconds are zero).
    pub fn series(&self, dim: Dimension, key: &Key, secs: u64) -> Vec<(u64, [u64; 3])> {
        let Some(newest) = self.newest() else { return Vec::new() };
        let from = newest.saturating_sub(secs.saturating_sub(1));
        let mut out: Vec<(u64, [u64; 3])> = (from..=newest).map(|s| (s, [0; 3])).collect();
        for s in self.seconds.iter().filter(|s| s.second >= from) {
            if let Some(r) = dim_rows(&s.rollups, dim).iter().find(|r| r.key == *key) {
                out[(s.second - from) as usize].1 = [r.bytes, r.packets, r.flows];
            }
        }
        out
    }
}

impl HotWindow {
    /// The newest name, description and speed known for each key of an interface dimension
    /// (SNMP or the config, as the I/O core set them on the rollups).
    pub fn interfaces(&self, dim: Dimension) -> FxHashMap<Key, Arc<Interface>> {
        self.names_of(dim, |r| r.interface.as_ref())
    }

    /// The AS names of `dim`'s keys, newest first wins (AS dimensions only carry them).
    pub fn as_names(&self, dim: Dimension) -> FxHashMap<Key, Arc<str>> {
        self.names_of(dim, |r| r.as_name.as_ref())
    }

    /// A name field of `dim`'s keys, the newest second's first.
    fn names_of<T: ?Sized>(
        &self,
        dim: Dimension,
        field: impl Fn(&crate::model::Rollup) -> Option<&Arc<T>>,
    ) -> FxHashMap<Key, Arc<T>> {
        let mut m = FxHashMap::default();
        for s in self.seconds.iter().rev() {
            for r in dim_rows(&s.rollups, dim) {
                if let Some(n) = field(r) {
                    m.entry(r.key).or_insert_with(|| n.clone());
                }
            }
        }
        m
    }
}

/// The rows of one dimension in a second's rollups (sorted by dimension).
fn dim_rows(rows: &[crate::model::Rollup], dim: Dimension) -> &[crate::model::Rollup] {
    let a = rows.partition_point(|r| r.dimension < dim);
    let b = rows.partition_point(|r| r.dimension <= dim);
    &rows[a..b]
}
