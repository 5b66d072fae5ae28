//! The sans-I/O data path, in the three roles every deployment has:
//!
//! * [`ShardCore`] — decode datagrams and pre-aggregate the open second; at the end of the
//!   second, split the partial aggregates by owner.
//! * [`OwnerCore`] — merge the partials of all shards for the keys this shard owns, run layer-1
//!   detection on the merged rows (before any top-K cut), emit the top rows and alerts.
//! * [`Assembler`] — collect the outputs of all owners for one second, merge the per-owner
//!   `other` rows into one, and hand a complete [`SecondOutput`] to the sinks.
//!
//! The live runtime ([`crate::runtime::shard`]) moves [`PartialBatch`]es and [`OwnerOutput`]s between cores
//! over bounded channels; [`Engine`] runs the same three roles in one thread for `replay`,
//! tests and benches. Both call exactly this code.
//!
//! May depend on: `model`, `decode`, `enrich`, `aggregate`, `detect`. Lives on: shard cores (ShardCore,
//! OwnerCore), I/O core (Assembler), replay thread (Engine).

pub mod host;

use crate::aggregate::{AggConfig, OwnedRow, OwnerWindow, PartialBatch, ShardWindow};
use crate::decode::{DecodeError, Decoded, Decoder, DecoderConfig, FlowSink, InterfaceCounters};
use crate::detect::{DetectConfig, Detectors};
use crate::model::hll::Sketch;
use crate::model::{Alert, Dimension, FlowRecord, Ip, Rollup};
use std::collections::VecDeque;

/// Everything the pipeline needs to know.
#[derive(Clone, Debug, Default)]
pub struct PipelineConfig {
    /// Decoder settings.
    pub decode: DecoderConfig,
    /// Aggregation settings.
    pub agg: AggConfig,
    /// Detection settings (`None` disables layer 1).
    pub detect: Option<DetectConfig>,
    /// Enrichment table applied to every record before aggregation (`None`: no enrichment).
    pub enrich: Option<std::sync::Arc<crate::enrich::Table>>,
    /// Dimensions the I/O core derives from other rows (site, tenant, role: see
    /// [`Dimension::derived_from`]); never in `agg.dimensions`.
    pub derived: Vec<Dimension>,
    /// Only records this filter matches are aggregated (after enrichment); the others are
    /// counted in [`IngestCounters::filtered_out`]. Set by `query flows` and `replay --where`.
    pub filter: Option<std::sync::Arc<crate::model::filter::Filter>>,
}

/// Per-shard ingest counters (plain integers; snapshotted off the hot path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// Records aggregated.
    pub records: u64,
    /// Sum of scaled bytes of aggregated records.
    pub bytes: u64,
    /// Sum of scaled packets.
    pub packets: u64,
    /// Windows closed.
    pub windows_closed: u64,
    /// sFlow interface counter records seen.
    pub counter_records: u64,
    /// Records decoded but not aggregated: outside the pipeline's filter (counted in
    /// `records` too).
    pub filtered_out: u64,
}

/// Collects a datagram's records so the window can add them as one prefetched batch.
struct BatchSink<'a> {
    buf: &'a mut Vec<FlowRecord>,
    c: &'a mut IngestCounters,
}

impl FlowSink for BatchSink<'_> {
    #[inline]
    fn flow(&mut self, r: &FlowRecord) {
        self.c.records += 1;
        self.c.bytes += r.bytes;
        self.c.packets += r.packets;
        self.buf.push(*r);
    }
    fn counters(&mut self, _c: &InterfaceCounters) {
        self.c.counter_records += 1;
    }
}

/// Decode + pre-aggregate of one shard.
///
/// Lives on: one shard core.
pub struct ShardCore {
    /// Shard index.
    pub id: u16,
    shards: usize,
    /// Decoder (templates, counters).
    pub decoder: Decoder,
    window: ShardWindow,
    batch: Vec<FlowRecord>,
    enrich: Option<std::sync::Arc<crate::enrich::Table>>,
    filter: Option<std::sync::Arc<crate::model::filter::Filter>>,
    /// Ingest counters.
    pub counters: IngestCounters,
    /// Per exporter (datagram source): last second seen, datagrams, records. Bounded.
    exporters: rustc_hash::FxHashMap<Ip, ExporterSeen>,
    /// Copies of the records for the raw-flows topic (`None`: off).
    tap: Option<Tap>,
}

/// Records a shard copied for the raw-flows topic: all of one arrival second, in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TapBatch {
    /// Shard that decoded them.
    pub shard: u16,
    /// Arrival second.
    pub second: u64,
    /// 1-in-N output sampling applied (1 = every record).
    pub sampling: u32,
    /// The records, enriched, in arrival order.
    pub records: Vec<FlowRecord>,
}

/// Records per [`TapBatch`] at most (one allocation per this many records).
pub const TAP_BATCH: usize = 4096;

/// The shard side of the raw-flows topic: a systematic 1-in-N sample of the records, copied
/// after enrichment into batches of one second. The runtime takes finished batches with
/// [`ShardCore::take_tapped`] and hands them to the I/O core, which encodes and produces them.
#[derive(Debug)]
struct Tap {
    every: u32,
    skip: u32,
    open: TapBatch,
    ready: Vec<TapBatch>,
    /// Emptied record buffers handed back by the encoder (fresh 450-KB buffers would cost a
    /// page fault per 36 records on first touch).
    spare: Vec<Vec<FlowRecord>>,
}

/// Emptied buffers a shard keeps for its next batches at most.
const TAP_SPARE: usize = 8;

impl Tap {
    #[inline]
    fn add(&mut self, recs: &[FlowRecord], now: u64) {
        if self.open.second != now && !self.open.records.is_empty() {
            self.seal();
        }
        self.open.second = now;
        for r in recs {
            if self.skip == 0 {
                self.open.records.push(*r);
                if self.open.records.len() >= TAP_BATCH {
                    self.seal(); // the fresh batch keeps this second
                }
            }
            self.skip += 1;
            if self.skip >= self.every {
                self.skip = 0;
            }
        }
    }

    fn seal(&mut self) {
        let records = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(TAP_BATCH));
        let fresh = TapBatch { shard: self.open.shard, second: self.open.second, sampling: self.every, records };
        self.ready.push(std::mem::replace(&mut self.open, fresh));
    }
}

/// What a shard knows of one exporter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExporterSeen {
    /// Last Unix second a datagram arrived.
    pub last_seen: u64,
    /// Datagrams.
    pub datagrams: u64,
    /// Records decoded.
    pub records: u64,
}

/// Exporters tracked per shard (more are not listed, still decoded).
pub const MAX_EXPORTERS: usize = 4096;

impl ShardCore {
    /// Shard `id` of `shards`.
    pub fn new(cfg: &PipelineConfig, id: u16, shards: usize) -> ShardCore {
        ShardCore {
            id,
            shards: shards.max(1),
            decoder: Decoder::new(&cfg.decode),
            window: ShardWindow::new(&cfg.agg),
            batch: Vec::with_capacity(1024),
            enrich: cfg.enrich.clone(),
            filter: cfg.filter.clone(),
            counters: IngestCounters::default(),
            exporters: rustc_hash::FxHashMap::default(),
            tap: None,
        }
    }

    /// Copies a 1-in-`every` sample of the records (after enrichment) for the raw-flows topic
    /// (`every` = 0: off).
    pub fn set_tap(&mut self, every: u32) {
        self.tap = (every > 0).then(|| Tap {
            every,
            skip: 0,
            open: TapBatch { shard: self.id, second: 0, sampling: every, records: Vec::with_capacity(TAP_BATCH) },
            ready: Vec::new(),
            spare: Vec::new(),
        });
    }

    /// Takes back a batch's buffer once its records are encoded (kept, emptied, for a next
    /// batch; beyond a few, freed).
    pub fn recycle_tapped(&mut self, mut records: Vec<FlowRecord>) {
        if let Some(t) = &mut self.tap {
            if t.spare.len() < TAP_SPARE && records.capacity() >= TAP_BATCH {
                records.clear();
                t.spare.push(records);
            }
        }
    }

    /// Takes the finished raw-flow batches; `all` also takes the open one (at a second's end
    /// and at shutdown).
    pub fn take_tapped(&mut self, all: bool, out: &mut Vec<TapBatch>) {
        if let Some(t) = &mut self.tap {
            if all && !t.open.records.is_empty() {
                t.seal();
            }
            out.append(&mut t.ready);
        }
    }

    /// Adds records that were decoded before (replay from the raw-flows topic): counted and
    /// aggregated exactly as a datagram's records, without decoding or enrichment (they carry it).
    pub fn ingest_records(&mut self, recs: &[FlowRecord]) {
        for r in recs {
            self.counters.records += 1;
            self.counters.bytes += r.bytes;
            self.counters.packets += r.packets;
        }
        if let Some(f) = &self.filter {
            self.batch.clear();
            self.batch.extend(recs.iter().filter(|r| f.matches(r)));
            self.counters.filtered_out += (recs.len() - self.batch.len()) as u64;
            self.window.add_batch(&self.batch);
            return;
        }
        self.window.add_batch(recs);
    }

    /// Decodes one datagram from `source` at Unix second `now` into the open window.
    #[inline]
    pub fn ingest(&mut self, data: &[u8], source: Ip, now: u64) -> Result<Decoded, DecodeError> {
        self.batch.clear();
        let mut sink = BatchSink { buf: &mut self.batch, c: &mut self.counters };
        let res = self.decoder.decode(data, source, now, &mut sink);
        if let Some(t) = &self.enrich {
            for r in &mut self.batch {
                t.apply(r);
            }
        }
        if let Some(f) = &self.filter {
            let n = self.batch.len();
            self.batch.retain(|r| f.matches(r));
            self.counters.filtered_out += (n - self.batch.len()) as u64;
        }
        // Records decoded before an error in a later set still count (they were valid).
        self.window.add_batch(&self.batch);
        if let Some(t) = &mut self.tap {
            t.add(&self.batch, now);
        }
        let n = self.exporters.len();
        if let Some(e) = self.exporters.get_mut(&source) {
            e.last_seen = now;
            e.datagrams += 1;
            e.records += self.batch.len() as u64;
        } else if n < MAX_EXPORTERS {
            self.exporters
                .insert(source, ExporterSeen { last_seen: now, datagrams: 1, records: self.batch.len() as u64 });
        }
        res
    }

    /// Swaps in a new enrichment table (between datagrams: every record of one datagram sees
    /// one table).
    pub fn set_enrichment(&mut self, t: Option<std::sync::Arc<crate::enrich::Table>>) {
        self.enrich = t;
    }

    /// Whether this shard aggregates only what a filter matches.
    pub fn filters(&self) -> Option<&crate::model::filter::Filter> {
        self.filter.as_deref()
    }

    /// The exporters this shard has seen.
    pub fn exporters(&self) -> impl Iterator<Item = (&Ip, &ExporterSeen)> {
        self.exporters.iter()
    }

    /// Closes the open window as `second`: one batch per owner (index = owner shard).
    pub fn close(&mut self, second: u64) -> Vec<PartialBatch> {
        self.counters.windows_closed += 1;
        self.window.close(second, self.id, self.shards)
    }

    /// Rows folded into `other` by this shard's bounds.
    pub fn evictions(&self) -> u64 {
        self.window.evictions()
    }
}

/// What one owner emits for one second.
#[derive(Clone, Debug, Default)]
pub struct OwnerOutput {
    /// Second (Unix seconds).
    pub second: u64,
    /// Owner shard.
    pub owner: u16,
    /// Rows (top-K per dimension plus `other`).
    pub rows: Vec<OwnedRow>,
    /// The `src_ip` rows' sketches ([`OwnedRow::sketch`] indexes them).
    pub sketches: Vec<Sketch>,
    /// Layer-1 alerts.
    pub alerts: Vec<Alert>,
}

/// Owner counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerCounters {
    /// Seconds finished.
    pub seconds: u64,
    /// Batches that arrived for a second already finished (merged into the open one).
    pub late_batches: u64,
    /// Seconds finished before every shard had reported (stalled shard).
    pub forced: u64,
    /// Alerts raised.
    pub alerts: u64,
}

/// Merge + detect for the keys one shard owns.
///
/// Lives on: one shard core.
pub struct OwnerCore {
    id: u16,
    shards: usize,
    window: OwnerWindow,
    detectors: Option<Detectors>,
    open: Option<u64>,
    received: usize,
    early: VecDeque<PartialBatch>,
    last_finished: Option<u64>,
    /// Counters.
    pub counters: OwnerCounters,
}

impl OwnerCore {
    /// Owner `id` of `shards`.
    pub fn new(cfg: &PipelineConfig, id: u16, shards: usize) -> OwnerCore {
        OwnerCore {
            id,
            shards: shards.max(1),
            window: OwnerWindow::new(&cfg.agg, shards),
            detectors: cfg.detect.as_ref().map(|d| Detectors::new(d, &cfg.agg.dimensions)),
            open: None,
            received: 0,
            early: VecDeque::new(),
            last_finished: None,
            counters: OwnerCounters::default(),
        }
    }

    /// Accepts one shard's batch; returns the finished seconds it completed.
    pub fn accept(&mut self, b: PartialBatch, out: &mut Vec<OwnerOutput>) {
        if self.last_finished.is_some_and(|l| b.second <= l) {
            self.counters.late_batches += 1;
            self.window.merge(&b);
            return;
        }
        match self.open {
            None => self.open = Some(b.second),
            Some(s) if b.second > s => {
                self.early.push_back(b);
                return;
            }
            _ => {}
        }
        self.window.merge(&b);
        self.received += 1;
        if self.received >= self.shards {
            self.finish_open(out);
        }
    }

    /// Finishes the open second even if some shard has not reported (a stalled shard).
    pub fn force(&mut self, out: &mut Vec<OwnerOutput>) {
        if self.open.is_some() {
            self.counters.forced += 1;
            self.finish_open(out);
        }
    }

    fn finish_open(&mut self, out: &mut Vec<OwnerOutput>) {
        let Some(second) = self.open.take() else {
            return;
        };
        self.received = 0;
        let mut o = OwnerOutput { second, owner: self.id, ..Default::default() };
        if let Some(det) = self.detectors.as_mut() {
            // Seconds with no batch at all (a gap in a capture) still age the detectors.
            let from = self.last_finished.map_or(second, |l| (l + 1).max(second.saturating_sub(3600)));
            for s in from..second {
                det.begin_second(s);
                det.end_second(s, &mut o.alerts);
            }
            det.begin_second(second);
            self.window.finish_with(
                |dim, row, distinct| det.observe(dim, row, distinct, second),
                &mut o.rows,
                &mut o.sketches,
            );
            det.end_second(second, &mut o.alerts);
        } else {
            self.window.finish(&mut o.rows, &mut o.sketches);
        }
        self.counters.seconds += 1;
        self.counters.alerts += o.alerts.len() as u64;
        self.last_finished = Some(second);
        out.push(o);
        // Batches of the next second that came early.
        let early = std::mem::take(&mut self.early);
        for b in early {
            self.accept(b, out);
        }
    }

    /// Finishes everything held, complete or not (shutdown, end of input).
    pub fn drain(&mut self, out: &mut Vec<OwnerOutput>) {
        while self.open.is_some() || !self.early.is_empty() {
            if self.open.is_none() {
                if let Some(b) = self.early.pop_front() {
                    self.accept(b, out);
                }
                continue;
            }
            self.force(out);
        }
    }

    /// Keys with detector state.
    pub fn tracked(&self) -> usize {
        self.detectors.as_ref().map_or(0, |d| d.tracked())
    }
}

/// One complete second, ready for the sinks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecondOutput {
    /// Second (Unix seconds).
    pub second: u64,
    /// Rollups, all dimensions.
    pub rollups: Vec<Rollup>,
    /// Alerts.
    pub alerts: Vec<Alert>,
}

/// The `src_ip` rows of a finished second, as layer 3 takes them (`other` as the unspecified
/// address: it counts in the interval's totals, never as an entity).
pub fn layer3_rows(so: &SecondOutput) -> (u64, Vec<crate::detect::layer3::SourceRow>) {
    let rows = so
        .rollups
        .iter()
        .filter(|r| r.dimension == crate::model::Dimension::SrcIp)
        .map(crate::detect::layer3::row_of)
        .collect();
    (so.second, rows)
}

/// Collects the owners' outputs of each second and merges their `other` rows.
///
/// Lives on: the I/O core (and the replay thread).
pub struct Assembler {
    dims: Vec<Dimension>,
    owners: usize,
    pending: VecDeque<(u64, usize, SecondOutput)>,
}

impl Assembler {
    /// An assembler for `owners` owners and the configured dimensions.
    pub fn new(dims: &[Dimension], owners: usize) -> Assembler {
        Assembler { dims: dims.to_vec(), owners: owners.max(1), pending: VecDeque::new() }
    }

    /// Adds one owner's output; complete seconds (in order) are appended to `done`.
    pub fn add(&mut self, o: OwnerOutput, done: &mut Vec<SecondOutput>) {
        let pos = match self.pending.iter().position(|(s, _, _)| *s == o.second) {
            Some(p) => p,
            None => {
                let at = self.pending.iter().position(|(s, _, _)| *s > o.second).unwrap_or(self.pending.len());
                self.pending.insert(at, (o.second, 0, SecondOutput { second: o.second, ..Default::default() }));
                at
            }
        };
        let entry = &mut self.pending[pos];
        entry.1 += 1;
        let so = &mut entry.2;
        for r in o.rows {
            let dimension = self.dims[r.dim as usize];
            let sketch = o.sketches.get(r.sketch as usize);
            if r.row.key.is_other() {
                if let Some(x) = so.rollups.iter_mut().find(|x| x.dimension == dimension && x.key.is_other()) {
                    x.bytes += r.row.bytes;
                    x.packets += r.row.packets;
                    x.flows += r.row.flows;
                    let max = |a: Option<u64>, b: Option<u64>| match (a, b) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    x.distinct = max(x.distinct, r.distinct);
                    x.distinct_ports = max(x.distinct_ports, r.distinct_ports);
                    match (&mut x.sketch, sketch) {
                        (Some(a), Some(b)) => a.merge(b),
                        (a, b) => *a = a.take().or(b.map(|b| Box::new(*b))),
                    }
                    continue;
                }
            }
            so.rollups.push(Rollup {
                distinct: r.distinct,
                distinct_ports: r.distinct_ports,
                sketch: sketch.map(|s| Box::new(*s)),
                ..Rollup::new(o.second, dimension, r.row.key, r.row.bytes, r.row.packets, r.row.flows)
            });
        }
        so.alerts.extend(o.alerts);
        while self.pending.front().is_some_and(|(_, n, _)| *n >= self.owners) {
            if let Some((_, _, mut so)) = self.pending.pop_front() {
                sort_output(&mut so);
                done.push(so);
            }
        }
    }

    /// Emits whatever is pending (shutdown, or a stalled owner), oldest first.
    pub fn flush(&mut self, done: &mut Vec<SecondOutput>) {
        while let Some((_, _, mut so)) = self.pending.pop_front() {
            sort_output(&mut so);
            done.push(so);
        }
    }

    /// Seconds waiting for an owner.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// Deterministic order: by dimension, then bytes descending, then key.
fn sort_output(so: &mut SecondOutput) {
    so.rollups.sort_by(|a, b| a.dimension.cmp(&b.dimension).then(b.bytes.cmp(&a.bytes)).then(a.key.cmp(&b.key)));
    so.alerts.sort_by_key(|a| (a.dimension, a.key, a.metric as u8));
}

/// All roles in one thread: N shard cores, N owner cores, one assembler. Datagrams are
/// spread over shards by exporter address, as `SO_REUSEPORT` spreads by source.
///
/// Lives on: the replay thread, tests, benches.
pub struct Engine {
    /// Shards.
    pub shards: Vec<ShardCore>,
    /// Owners.
    pub owners: Vec<OwnerCore>,
    assembler: Assembler,
    open: Option<u64>,
    scratch: Vec<OwnerOutput>,
    /// Decode errors (all shards).
    pub decode_errors: u64,
    /// Datagrams fed.
    pub datagrams: u64,
}

impl Engine {
    /// An engine of `shards` shards.
    pub fn new(cfg: &PipelineConfig, shards: usize) -> Engine {
        let n = shards.max(1);
        Engine {
            shards: (0..n).map(|i| ShardCore::new(cfg, i as u16, n)).collect(),
            owners: (0..n).map(|i| OwnerCore::new(cfg, i as u16, n)).collect(),
            assembler: Assembler::new(&cfg.agg.dimensions, n),
            open: None,
            scratch: Vec::new(),
            decode_errors: 0,
            datagrams: 0,
        }
    }

    /// Feeds one datagram that arrived at Unix second `now` from `source`; seconds that ended
    /// before `now` are closed first and their output appended to `done`.
    pub fn feed(&mut self, data: &[u8], source: Ip, source_port: u16, now: u64, done: &mut Vec<SecondOutput>) {
        self.advance(now, done);
        let n = self.shards.len();
        let shard = (crate::model::mix64(source.0 as u64 ^ (source_port as u64) << 48) % n as u64) as usize;
        self.datagrams += 1;
        if self.shards[shard].ingest(data, source, now).is_err() {
            self.decode_errors += 1;
        }
    }

    /// Feeds records decoded before (the raw-flows topic) that arrived at Unix second `now`
    /// from one exporter, to the shard that exporter's datagrams would go to.
    pub fn feed_records(&mut self, recs: &[FlowRecord], now: u64, done: &mut Vec<SecondOutput>) {
        self.advance(now, done);
        let Some(first) = recs.first() else { return };
        let n = self.shards.len();
        let shard = (crate::model::mix64(first.exporter.0 as u64) % n as u64) as usize;
        self.shards[shard].ingest_records(recs);
    }

    /// Closes the open second when `now` is past it.
    fn advance(&mut self, now: u64, done: &mut Vec<SecondOutput>) {
        match self.open {
            Some(s) if now > s => {
                self.close(s, done);
                self.open = Some(now);
            }
            None => self.open = Some(now),
            _ => {}
        }
    }

    /// Closes `second` on every shard and runs the exchange, owners and assembler.
    fn close(&mut self, second: u64, done: &mut Vec<SecondOutput>) {
        let n = self.shards.len();
        let mut per_owner: Vec<Vec<PartialBatch>> = (0..n).map(|_| Vec::new()).collect();
        for s in &mut self.shards {
            for (o, b) in s.close(second).into_iter().enumerate() {
                per_owner[o].push(b);
            }
        }
        for (o, batches) in per_owner.into_iter().enumerate() {
            for b in batches {
                self.owners[o].accept(b, &mut self.scratch);
            }
        }
        for out in self.scratch.drain(..) {
            self.assembler.add(out, done);
        }
    }

    /// Closes the open second and flushes everything (end of input).
    pub fn finish(&mut self, done: &mut Vec<SecondOutput>) {
        if let Some(s) = self.open.take() {
            self.close(s, done);
        }
        self.assembler.flush(done);
    }

    /// Sum of ingest counters over shards.
    pub fn ingest_totals(&self) -> IngestCounters {
        let mut t = IngestCounters::default();
        for s in &self.shards {
            t.records += s.counters.records;
            t.bytes += s.counters.bytes;
            t.packets += s.counters.packets;
            t.windows_closed += s.counters.windows_closed;
            t.counter_records += s.counters.counter_records;
            t.filtered_out += s.counters.filtered_out;
        }
        t
    }
}
