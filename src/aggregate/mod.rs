//! Sans-I/O pre-aggregation: 1-second windows of flow records per configured [`Dimension`],
//! bounded whatever the key cardinality.
//!
//! Two halves, one table type:
//! * [`ShardWindow`] (every shard, per second): adds records to one [`KeyTable`] per dimension
//!   and, when the second closes, splits the rows by owner shard (`hash(key) % shards`) into
//!   [`PartialBatch`]es.
//! * [`OwnerWindow`] (every shard, for the keys it owns): merges the partials of all shards
//!   and emits the second's rows, the top `top_k` per dimension by bytes, the rest folded into
//!   the `other` key.
//!
//! **Bounded and exact in sum.** A [`KeyTable`] holds at most `capacity` keys. When full, a new
//! key evicts the smallest of a few sampled rows, whose counts are *added to the `other` row*:
//! memory is bounded, heavy hitters survive (they are never the smallest), and the sum over all
//! keys of a dimension (`other` included) always equals the true total. While the cardinality
//! stays under the capacity and `top_k`, the result is exact per key and identical for any shard
//! count.
//!
//! May depend on: `model`. Lives on: shard cores (and replay, tests, benches).

pub use crate::model::hll;
pub mod host;
pub mod table;

pub use table::{key_hash, KeyTable};

use crate::model::{Dimension, FlowRecord, Key};
use hll::Sketch;
use serde::{Deserialize, Serialize};

/// Records per prefetch batch.
pub const BATCH: usize = 32;

/// Sentinel sketch index: the row carries no distinct-count sketch.
pub const NO_SKETCH: u32 = u32::MAX;

/// The counters of one key in one second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Row {
    /// Key.
    pub key: Key,
    /// Octets (sampling-scaled).
    pub bytes: u64,
    /// Packets (sampling-scaled).
    pub packets: u64,
    /// Flow records.
    pub flows: u64,
    /// Sampled packets behind the counts: Σ packets / sampling rate over records taken under
    /// 1-in-N sampling (0 for unsampled traffic). The detector's counting-noise model.
    pub samples: u64,
    /// Part of `bytes` from *continuing* records: longer than the long-flow threshold and not
    /// ended by the flow itself (no TCP FIN/RST), i.e. exported by an active timeout.
    pub long_bytes: u64,
    /// Part of `packets` from long records.
    pub long_packets: u64,
    /// Number of long records.
    pub long_flows: u64,
    /// Part of `samples` from long records.
    pub long_samples: u64,
    /// Sum over long records of bytes / duration in seconds: their rate. The detector spreads
    /// the long part at this rate over `long_bytes / long_rate` seconds (the rate-weighted
    /// mean duration, so the biggest flows' own durations dominate).
    pub long_rate: u64,
    /// The longest long record's duration, seconds (when the oldest of them started).
    pub long_max_s: u32,
    /// TCP connection attempts that were never answered: flows of SYN without ACK (a scanner's
    /// probes, failed connections).
    pub syn_only: u64,
}

impl Row {
    #[inline]
    pub(crate) fn absorb(&mut self, o: &Row) {
        self.bytes += o.bytes;
        self.packets += o.packets;
        self.flows += o.flows;
        self.long_bytes += o.long_bytes;
        self.long_packets += o.long_packets;
        self.long_flows += o.long_flows;
        self.samples += o.samples;
        self.long_samples += o.long_samples;
        self.long_rate += o.long_rate;
        self.long_max_s = self.long_max_s.max(o.long_max_s);
        self.syn_only += o.syn_only;
    }
}

/// Aggregation settings shared by shard and owner windows: the `[aggregate]` section of the
/// configuration file (serde defaults are [`AggConfig::default`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggConfig {
    /// Dimensions to roll up, in output order: total, src_ip, dst_ip, src_port, dst_port,
    /// proto, exporter, exporter_in_if, exporter_out_if, src_as, dst_as, and with `[enrich]`
    /// tables src_country, dst_country, src_net, dst_net, boundary.
    pub dimensions: Vec<Dimension>,
    /// Keys per dimension per shard per second before evict-to-`other`.
    pub max_keys: usize,
    /// Rows emitted per dimension per second (split evenly across owner shards).
    pub top_k: usize,
    /// Records longer than this (ms) that the flow did not end itself (no TCP FIN/RST) are
    /// "long": exported by an active timeout, so the flow goes on; the detector spreads them
    /// over their duration.
    pub long_flow_ms: u32,
}

impl Default for AggConfig {
    fn default() -> Self {
        AggConfig {
            dimensions: vec![
                Dimension::Total,
                Dimension::SrcIp,
                Dimension::DstIp,
                Dimension::DstPort,
                Dimension::Proto,
                Dimension::ExporterInIf,
            ],
            max_keys: 65_536,
            top_k: 1000,
            long_flow_ms: 2000,
        }
    }
}

/// One row of a partial aggregate sent to its owner.
#[derive(Clone, Copy, Debug)]
pub struct PartialRow {
    /// Index into the configured dimensions.
    pub dim: u8,
    /// The row.
    pub row: Row,
    /// Index into [`PartialBatch::sketches`], or [`NO_SKETCH`].
    pub sketch: u32,
}

/// What one shard sends one owner at the end of a second.
#[derive(Clone, Debug, Default)]
pub struct PartialBatch {
    /// Second closed (Unix seconds).
    pub second: u64,
    /// Sending shard.
    pub from: u16,
    /// Rows owned by the receiver.
    pub rows: Vec<PartialRow>,
    /// Distinct-count sketches referenced by rows.
    pub sketches: Vec<Sketch>,
}

/// The owner shard of a key.
#[inline]
pub fn owner_of(key: &Key, shards: usize) -> usize {
    if shards <= 1 {
        0
    } else {
        (key.stable_hash() % shards as u64) as usize
    }
}

/// The per-shard open window: one bounded table per dimension.
///
/// Lives on: one shard core.
pub struct ShardWindow {
    dims: Vec<Dimension>,
    tables: Vec<KeyTable>,
    long_ms: u32,
}

impl ShardWindow {
    /// An empty window.
    pub fn new(cfg: &AggConfig) -> ShardWindow {
        ShardWindow {
            dims: cfg.dimensions.clone(),
            tables: cfg.dimensions.iter().map(|d| KeyTable::new(cfg.max_keys, d.distinct_names().is_some())).collect(),
            long_ms: cfg.long_flow_ms,
        }
    }

    /// Adds one record to every dimension.
    #[inline]
    pub fn add(&mut self, r: &FlowRecord) {
        self.add_batch(std::slice::from_ref(r));
    }

    /// Adds a batch of records (a datagram's worth): hashes every key first and prefetches its
    /// slot, so the cache misses of the batch overlap instead of queueing.
    pub fn add_batch(&mut self, recs: &[FlowRecord]) {
        let mut keys = [(Key::default(), 0u64); BATCH];
        for chunk in recs.chunks(BATCH) {
            for (d, t) in self.dims.iter().zip(self.tables.iter_mut()) {
                for (slot, r) in keys.iter_mut().zip(chunk) {
                    let k = d.key(r);
                    let h = key_hash(&k);
                    t.prefetch(h);
                    *slot = (k, h);
                }
                for ((k, h), r) in keys.iter().zip(chunk) {
                    t.add(k, *h, r, self.long_ms, d.distinct_items(r));
                }
            }
        }
    }

    /// Rows evicted to `other` so far, summed over dimensions.
    pub fn evictions(&self) -> u64 {
        self.tables.iter().map(|t| t.evictions).sum()
    }

    /// Closes the second: one batch per owner shard (index = owner), the tables emptied.
    pub fn close(&mut self, second: u64, from: u16, owners: usize) -> Vec<PartialBatch> {
        let mut out: Vec<PartialBatch> =
            (0..owners.max(1)).map(|_| PartialBatch { second, from, ..Default::default() }).collect();
        for (di, t) in self.tables.iter_mut().enumerate() {
            t.drain(|row, sk| {
                let b = &mut out[owner_of(&row.key, owners)];
                let sketch = match sk {
                    Some(s) if !s.is_empty() => {
                        b.sketches.push(*s);
                        (b.sketches.len() - 1) as u32
                    }
                    _ => NO_SKETCH,
                };
                b.rows.push(PartialRow { dim: di as u8, row: *row, sketch });
            });
        }
        out
    }
}

/// A finished row as the owner emits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnedRow {
    /// Index into the configured dimensions.
    pub dim: u8,
    /// Counters.
    pub row: Row,
    /// Distinct-count estimate, where the dimension tracks one.
    pub distinct: Option<u64>,
    /// Distinct destination ports, where the dimension tracks distinct counts.
    pub distinct_ports: Option<u64>,
    /// Index of the row's sketch in the sketches handed on with the rows, or [`NO_SKETCH`]
    /// (kept for `src_ip` rows only: layer 3 unions them over its interval).
    pub sketch: u32,
}

/// The owner's merge of all shards' partials for one second.
///
/// Lives on: one shard core (for the keys it owns).
pub struct OwnerWindow {
    tables: Vec<KeyTable>,
    dims: Vec<Dimension>,
    top_k: usize,
}

impl OwnerWindow {
    /// An empty owner window; `owners` splits `top_k` evenly.
    pub fn new(cfg: &AggConfig, owners: usize) -> OwnerWindow {
        let owners = owners.max(1);
        OwnerWindow {
            tables: cfg.dimensions.iter().map(|d| KeyTable::new(cfg.max_keys, d.distinct_names().is_some())).collect(),
            dims: cfg.dimensions.clone(),
            top_k: cfg.top_k.div_ceil(owners).max(1),
        }
    }

    /// Merges one partial batch.
    pub fn merge(&mut self, b: &PartialBatch) {
        for pr in &b.rows {
            let Some(t) = self.tables.get_mut(pr.dim as usize) else {
                continue;
            };
            t.merge(&pr.row, b.sketches.get(pr.sketch as usize));
        }
    }

    /// Finishes the second: `observe` sees every merged row first (detection must see keys the
    /// top-K cut is about to fold away), then the top rows per dimension (plus `other`) are
    /// appended to `out`, the `src_ip` rows' sketches to `sketches`; tables are emptied.
    pub fn finish_with(
        &mut self,
        mut observe: impl FnMut(u8, &Row, Option<u64>),
        out: &mut Vec<OwnedRow>,
        sketches: &mut Vec<Sketch>,
    ) {
        for (di, t) in self.tables.iter_mut().enumerate() {
            let has = self.dims[di].distinct_names().is_some();
            let keep = self.dims[di] == Dimension::SrcIp;
            t.for_each(|row, sk| {
                let d = if has { sk.map(|s| s.main_estimate()) } else { None };
                observe(di as u8, row, d);
            });
            t.truncate_top(self.top_k);
            t.drain(|row, sk| {
                let [distinct, ports] = sk.map_or([0; 2], |s| s.estimates());
                let sketch = match sk {
                    Some(s) if keep && !s.is_empty() => {
                        sketches.push(*s);
                        (sketches.len() - 1) as u32
                    }
                    _ => NO_SKETCH,
                };
                out.push(OwnedRow {
                    dim: di as u8,
                    row: *row,
                    distinct: has.then_some(distinct),
                    distinct_ports: has.then_some(ports),
                    sketch,
                })
            });
        }
    }

    /// [`OwnerWindow::finish_with`] without an observer.
    pub fn finish(&mut self, out: &mut Vec<OwnedRow>, sketches: &mut Vec<Sketch>) {
        self.finish_with(|_, _, _| {}, out, sketches)
    }

    /// Rows folded into `other` by the owner's bounds.
    pub fn evictions(&self) -> u64 {
        self.tables.iter().map(|t| t.evictions).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ip;

    fn rec(src: u32, bytes: u64) -> FlowRecord {
        FlowRecord { src: Ip::from_v4(src), dst: Ip::from_v4(1), bytes, packets: 1, proto: 6, ..Default::default() }
    }

    #[test]
    fn eviction_keeps_sum_and_heavy_hitters() {
        let mut t = KeyTable::new(64, true);
        let mut total = 0;
        for i in 0..10_000u32 {
            let r = rec(i, 10);
            let k = Dimension::SrcIp.key(&r);
            t.add(&k, key_hash(&k), &r, 2000, Dimension::SrcIp.distinct_items(&r));
            total += 10;
            let h = rec(0xdead, 1000);
            let k = Dimension::SrcIp.key(&h);
            t.add(&k, key_hash(&k), &h, 2000, None);
            total += 1000;
        }
        assert!(t.len() <= 64);
        let mut sum = 0;
        let mut heavy = 0;
        t.drain(|r, _| {
            sum += r.bytes;
            if r.key.ip == Ip::from_v4(0xdead) {
                heavy = r.bytes;
            }
        });
        assert_eq!(sum, total);
        assert_eq!(heavy, 10_000_000);
    }

    #[test]
    fn shard_to_owner_roundtrip() {
        let cfg = AggConfig { top_k: 10_000, ..AggConfig::default() };
        let mut w = ShardWindow::new(&cfg);
        for i in 0..100 {
            w.add(&rec(i, 100));
        }
        let batches = w.close(7, 0, 3);
        let mut total = 0;
        for (o, b) in batches.iter().enumerate() {
            let mut ow = OwnerWindow::new(&cfg, 3);
            ow.merge(b);
            let mut out = Vec::new();
            ow.finish(&mut out, &mut Vec::new());
            for r in out.iter().filter(|r| cfg.dimensions[r.dim as usize] == Dimension::SrcIp) {
                assert_eq!(owner_of(&r.row.key, 3), o);
                total += r.row.bytes;
            }
        }
        assert_eq!(total, 100 * 100);
    }
}
