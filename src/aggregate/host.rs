//! Host telemetry rollups: metric samples and syslog counts per series and second.
//!
//! A *series* is (host, metric, tags from a bounded allow-list) for metrics, (host, app,
//! facility, severity) for syslog counts and (host, app, message pattern) for patterns. Its id
//! is a 64-bit hash computed from borrowed input ([`SeriesHasher`]), so a known series costs a
//! hash and one table probe; its text ([`SeriesName`]) is built only the first time a window
//! sees it and travels once, with the batch that first carries it.
//!
//! * [`HostWindow`] (every shard, per second): adds samples into (series, sample second)
//!   [`Agg`]s and, at the end of the arrival second, hands them on as one [`HostBatch`].
//! * [`HostMerge`] (I/O core): keeps every series' name, merges the batches of all shards by
//!   (series, second) and emits one row per pair.
//!
//! **Bounded.** A window knows at most `max_series` series; a sample of a new series beyond it
//! is dropped and counted (`series_overflow`), never stored. The open window holds at most
//! `4 × max_series` (series, second) cells (a sender stamping every sample with another second
//! cannot grow it further; counted as `cell_overflow`). Nothing is forgotten: the I/O core holds
//! at most the windows' series, and a series that stopped reporting keeps its place in its
//! window until restart (after enough churn, new series are dropped and counted).
//!
//! May depend on: `model`. Lives on: shard cores and the HTTP ingest thread (windows), the I/O
//! core (merge); replay and tests.

use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use std::sync::Arc;

/// What a series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesKind {
    /// A metric sample (line protocol field, remote-write sample, JSON metric).
    Metric,
    /// Syslog messages of one (host, app, facility, severity).
    Syslog {
        /// 0 emerg … 7 debug.
        severity: u8,
        /// Facility number (4 auth, 10 authpriv, …).
        facility: u8,
    },
    /// Authentication failures logged by one (host, app).
    AuthFailure,
    /// Syslog messages of one (host, app, pattern).
    Pattern,
}

/// A series' text, built once per window when it is first seen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SeriesName {
    /// Host (the `host`/`instance` tag, the syslog HOSTNAME, or the sender's address).
    pub host: String,
    /// Metric name (`cpu.usage_idle`, `node_load1`, `syslog.messages`, `syslog.pattern`).
    pub metric: String,
    /// Allowed tags, sorted, `k=v` joined by `,` (syslog: `app=…,severity=…`).
    pub tags: String,
    /// What it counts.
    pub kind: SeriesKind,
}

impl SeriesName {
    /// The value of tag `k`, if present.
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags.split(',').find_map(|kv| kv.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
    }
}

/// Count, sum, min, max and last value of one series in one second.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Agg {
    /// Samples (syslog: messages).
    pub count: u64,
    /// Sum of values.
    pub sum: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Value with the newest timestamp.
    pub last: f64,
    /// Timestamp of `last`, Unix milliseconds.
    pub last_ms: i64,
}

impl Agg {
    /// One sample.
    pub fn one(v: f64, ms: i64) -> Agg {
        Agg { count: 1, sum: v, min: v, max: v, last: v, last_ms: ms }
    }

    /// Adds one sample.
    #[inline]
    pub fn add(&mut self, v: f64, ms: i64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        if ms >= self.last_ms {
            self.last = v;
            self.last_ms = ms;
        }
    }

    /// Merges another aggregate of the same series and second.
    pub fn merge(&mut self, o: &Agg) {
        self.count += o.count;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.last_ms >= self.last_ms {
            self.last = o.last;
            self.last_ms = o.last_ms;
        }
    }

    /// Mean of the samples.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Builds a series id from borrowed parts: order-independent over tags, so `a=1,b=2` and
/// `b=2,a=1` are one series.
#[derive(Clone, Copy, Debug)]
pub struct SeriesHasher {
    base: u64,
    tags: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(mut h: u64, b: &[u8]) -> u64 {
    for &c in b {
        h = (h ^ u64::from(c)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SeriesHasher {
    /// Starts with the kind tag (0 metric, 1 syslog, 2 auth failure, 3 pattern) and the host.
    pub fn new(kind: u8, host: &[u8]) -> SeriesHasher {
        SeriesHasher { base: fnv(fnv(FNV_OFFSET, &[kind, 0xff]), host), tags: 0 }
    }

    /// Adds a name part (measurement, field, app, …), in order.
    #[inline]
    pub fn part(&mut self, b: &[u8]) {
        self.base = fnv(fnv(self.base, &[0x1f]), b);
    }

    /// Adds one tag (any order).
    #[inline]
    pub fn tag(&mut self, k: &[u8], v: &[u8]) {
        self.tags = self.tags.wrapping_add(mix(fnv(fnv(fnv(FNV_OFFSET, k), b"="), v)));
    }

    /// The id.
    pub fn finish(&self) -> u64 {
        mix(self.base ^ self.tags.rotate_left(17))
    }
}

/// Host-input counters of one window (cumulative).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostCounters {
    /// Metric samples added (counted by the caller of [`HostWindow::add`]).
    pub samples: u64,
    /// Syslog messages counted.
    pub messages: u64,
    /// Samples of a new series dropped because the window knew `max_series` series.
    pub series_overflow: u64,
    /// Samples dropped because the open window held its limit of (series, second) cells.
    pub cell_overflow: u64,
    /// Samples whose timestamp was more than a day old or five minutes ahead (dropped).
    pub out_of_range: u64,
}

/// One window's output for one arrival second.
#[derive(Clone, Debug, Default)]
pub struct HostBatch {
    /// Which window (shard index, or the HTTP ingest thread's).
    pub source: u16,
    /// The arrival second the batch closes.
    pub arrival: u64,
    /// Names of series this window had not sent before.
    pub names: Vec<(u64, SeriesName)>,
    /// (series, sample second, aggregate).
    pub rows: Vec<(u64, u64, Agg)>,
}

/// A shard's open second of host samples.
#[derive(Debug)]
pub struct HostWindow {
    open: FxHashMap<(u64, u64), Agg>,
    known: FxHashSet<u64>,
    names: Vec<(u64, SeriesName)>,
    max_series: usize,
    /// Cumulative counters.
    pub counters: HostCounters,
}

/// Largest accepted age of a sample, seconds.
pub const MAX_AGE_S: u64 = 86_400;
/// Largest accepted lead of a sample over the receiving clock, seconds.
pub const MAX_LEAD_S: u64 = 300;

impl HostWindow {
    /// A window that knows at most `max_series` series.
    pub fn new(max_series: usize) -> HostWindow {
        HostWindow {
            open: FxHashMap::default(),
            known: FxHashSet::default(),
            names: Vec::new(),
            max_series: max_series.max(1),
            counters: HostCounters::default(),
        }
    }

    /// Adds one sample of series `id` at `ms` (Unix milliseconds), received at second `now`;
    /// `name` is called only if the series is new to this window. Returns false if dropped.
    #[inline]
    pub fn add(&mut self, id: u64, name: impl FnOnce() -> SeriesName, ms: i64, v: f64, now: u64) -> bool {
        let sec = ms.div_euclid(1000);
        if sec < now as i64 - MAX_AGE_S as i64 || sec > (now + MAX_LEAD_S) as i64 {
            self.counters.out_of_range += 1;
            return false;
        }
        if !self.known.contains(&id) {
            if self.known.len() >= self.max_series {
                self.counters.series_overflow += 1;
                return false;
            }
            self.known.insert(id);
            self.names.push((id, name()));
        }
        let key = (id, sec as u64);
        match self.open.get_mut(&key) {
            Some(a) => a.add(v, ms),
            None => {
                if self.open.len() >= self.max_series.saturating_mul(4) {
                    self.counters.cell_overflow += 1;
                    return false;
                }
                self.open.insert(key, Agg::one(v, ms));
            }
        }
        true
    }

    /// Series this window knows.
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// Closes arrival second `arrival`: everything added since the last close.
    pub fn close(&mut self, source: u16, arrival: u64) -> HostBatch {
        let mut rows: Vec<(u64, u64, Agg)> = self.open.drain().map(|((id, s), a)| (id, s, a)).collect();
        rows.sort_unstable_by_key(|r| (r.1, r.0));
        HostBatch { source, arrival, names: std::mem::take(&mut self.names), rows }
    }
}

/// One merged row: a series' aggregate of one sample second.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// Series id.
    pub id: u64,
    /// Sample second (Unix).
    pub second: u64,
    /// The series.
    pub name: Arc<SeriesName>,
    /// Its aggregate.
    pub agg: Agg,
}

/// What the I/O core emits once per arrival second.
#[derive(Clone, Debug, Default)]
pub struct HostSecond {
    /// Arrival second.
    pub arrival: u64,
    /// Rows sorted by (second, series).
    pub rows: Vec<HostRow>,
}

/// The I/O core's side: names of every series, and merging of the windows' batches.
#[derive(Debug, Default)]
pub struct HostMerge {
    names: FxHashMap<u64, (Arc<SeriesName>, u64)>,
    pending: FxHashMap<(u64, u64), Agg>,
    pending_arrival: u64,
    /// Rows whose series had no name (a window restarted); dropped, counted.
    pub unnamed: u64,
}

impl HostMerge {
    /// Empty.
    pub fn new() -> HostMerge {
        HostMerge::default()
    }

    /// Adds one window's batch.
    pub fn add(&mut self, b: HostBatch) {
        for (id, n) in b.names {
            match self.names.get_mut(&id) {
                Some(e) => e.1 = b.arrival,
                None => {
                    self.names.insert(id, (Arc::new(n), b.arrival));
                }
            }
        }
        self.pending_arrival = self.pending_arrival.max(b.arrival);
        for (id, s, a) in b.rows {
            match self.pending.get_mut(&(id, s)) {
                Some(x) => x.merge(&a),
                None => {
                    self.pending.insert((id, s), a);
                }
            }
        }
    }

    /// The newest arrival second added since the last flush.
    pub fn pending_arrival(&self) -> u64 {
        self.pending_arrival
    }

    /// Rows waiting for [`HostMerge::flush`].
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Emits everything added since the last flush as one [`HostSecond`].
    pub fn flush(&mut self) -> HostSecond {
        let arrival = self.pending_arrival;
        let mut rows = Vec::with_capacity(self.pending.len());
        for ((id, second), agg) in self.pending.drain() {
            match self.names.get_mut(&id) {
                Some(e) => {
                    e.1 = e.1.max(arrival);
                    rows.push(HostRow { id, second, name: e.0.clone(), agg });
                }
                None => self.unnamed += 1,
            }
        }
        rows.sort_unstable_by_key(|r| (r.second, r.id));
        HostSecond { arrival, rows }
    }

    /// Series known.
    pub fn series(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(h: &str, m: &str) -> SeriesName {
        SeriesName { host: h.into(), metric: m.into(), tags: String::new(), kind: SeriesKind::Metric }
    }

    #[test]
    fn tag_order_does_not_change_the_series() {
        let mut a = SeriesHasher::new(0, b"h");
        a.part(b"cpu");
        a.tag(b"a", b"1");
        a.tag(b"b", b"2");
        let mut b = SeriesHasher::new(0, b"h");
        b.part(b"cpu");
        b.tag(b"b", b"2");
        b.tag(b"a", b"1");
        assert_eq!(a.finish(), b.finish());
        let mut c = SeriesHasher::new(0, b"h");
        c.part(b"cpu");
        c.tag(b"a", b"2");
        c.tag(b"b", b"1");
        assert_ne!(a.finish(), c.finish());
        let mut d = SeriesHasher::new(1, b"h");
        d.part(b"cpu");
        assert_ne!(SeriesHasher::new(0, b"h").finish(), d.finish());
    }

    #[test]
    fn windows_merge_exactly_and_name_once() {
        let now = 1_700_000_000;
        let ms = now as i64 * 1000;
        let mut w1 = HostWindow::new(10);
        let mut w2 = HostWindow::new(10);
        let mut named = 0;
        for i in 0..5 {
            w1.add(
                1,
                || {
                    named += 1;
                    name("a", "m")
                },
                ms + i,
                i as f64,
                now,
            );
        }
        assert_eq!(named, 1);
        w2.add(1, || name("a", "m"), ms + 900, 10.0, now);
        w2.add(1, || name("a", "m"), ms - 1000, -1.0, now);
        let mut m = HostMerge::new();
        m.add(w1.close(0, now));
        m.add(w2.close(1, now));
        let s = m.flush();
        assert_eq!(s.rows.len(), 2);
        let r = &s.rows[1];
        assert_eq!((r.agg.count, r.agg.sum, r.agg.min, r.agg.max, r.agg.last), (6, 20.0, 0.0, 10.0, 10.0));
        assert_eq!(s.rows[0].agg.count, 1);
        // names travel once per window
        w1.add(1, || name("a", "m"), ms + 1000, 1.0, now + 1);
        assert!(w1.close(0, now + 1).names.is_empty());
    }

    #[test]
    fn bounded_and_counted() {
        let now = 1_700_000_000;
        let ms = now as i64 * 1000;
        let mut w = HostWindow::new(2);
        assert!(w.add(1, || name("a", "1"), ms, 1.0, now));
        assert!(w.add(2, || name("a", "2"), ms, 1.0, now));
        assert!(!w.add(3, || name("a", "3"), ms, 1.0, now));
        assert_eq!(w.counters.series_overflow, 1);
        // at most 4 × max_series cells
        for s in 0..10 {
            w.add(1, || name("a", "1"), ms - s * 1000, 1.0, now);
        }
        assert_eq!(w.counters.cell_overflow, 10 - 7);
        assert!(!w.add(1, || name("a", "1"), ms - 2 * 86_400_000, 1.0, now));
        assert!(!w.add(1, || name("a", "1"), ms + 600_000, 1.0, now));
        assert_eq!(w.counters.out_of_range, 2);
    }
}
