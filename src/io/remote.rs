//! Remote sinks as seen from the I/O loop: each one is a [`Sink`] that only renders a second
//! and hands it on without blocking — to an on-disk [`spool`](super::spool) for Kafka and
//! OpenSearch, to a bounded in-memory queue for Valkey — and a thread of its own (on the I/O
//! core) that delivers. Counters per sink and reason live in [`SinkStats`].
//!
//! Lives on: I/O cores.

use super::alerts::AlertDoc;
use super::frame::{FrameBuilder, Kind};
use super::spool::{self, SpoolStats, SpoolWriter};
use super::{json, Sink, SinkError};
use crate::config::Config;
use crate::model::Dimension;
use crate::pipeline::SecondOutput;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a remote sink's thread keeps delivering after shutdown begins; what is left stays
/// in the spool for the next start.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a record was not delivered (the discriminant indexes [`SinkStats::dropped`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Refused by the remote side for good (4xx item, message too large, …).
    Rejected,
    /// Older than the hot window when it could finally be written (Valkey).
    Stale,
    /// The in-memory queue was full (Valkey); the oldest queued second was dropped.
    QueueFull,
    /// Still queued in memory when flowshard stopped while the sink was unreachable (Valkey).
    Shutdown,
}

impl DropReason {
    /// Every reason, for the metrics page.
    pub const ALL: [DropReason; 4] =
        [DropReason::Rejected, DropReason::Stale, DropReason::QueueFull, DropReason::Shutdown];
    /// Label value.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Rejected => "rejected",
            DropReason::Stale => "stale",
            DropReason::QueueFull => "queue_full",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// Counters of one remote sink.
#[derive(Debug)]
pub struct SinkStats {
    /// Sink name (`kafka`, `valkey`, `opensearch`).
    pub name: &'static str,
    /// Records acknowledged by the remote side.
    pub delivered: AtomicU64,
    /// Records sent again after a failure.
    pub retried: AtomicU64,
    /// Failed requests / connection errors.
    pub errors: AtomicU64,
    /// Records dropped, by [`DropReason`] (index = position in `DropReason::ALL`).
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    /// 1 while the last attempt succeeded.
    pub up: AtomicBool,
    /// Newest second fully delivered.
    pub last_second: AtomicU64,
    /// The spool in front of the sink, if any.
    pub spool: Option<Arc<SpoolStats>>,
    /// Delay from the end of a second to its acknowledgement, in milliseconds.
    pub lag_ms: Mutex<Histogram<u64>>,
}

impl SinkStats {
    /// Fresh counters.
    pub fn new(name: &'static str, spool: Option<Arc<SpoolStats>>) -> Arc<SinkStats> {
        Arc::new(SinkStats {
            name,
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: Default::default(),
            up: AtomicBool::new(false),
            last_second: AtomicU64::new(0),
            spool,
            lag_ms: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000, 2)
                    .unwrap_or_else(|_| Histogram::new(2).unwrap_or_else(|_| unreachable!())),
            ),
        })
    }

    /// Counts `n` dropped records.
    pub fn drop_n(&self, why: DropReason, n: u64) {
        self.dropped[why as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Dropped so far for a reason.
    pub fn dropped(&self, why: DropReason) -> u64 {
        self.dropped[why as usize].load(Ordering::Relaxed)
    }

    /// Records a delivered second: counters, newest second, lag.
    pub fn delivered_second(&self, second: u64, records: u64) {
        self.delivered.fetch_add(records, Ordering::Relaxed);
        self.last_second.fetch_max(second, Ordering::Relaxed);
        self.up.store(true, Ordering::Relaxed);
        let lag = now_ms().saturating_sub((second + 1) * 1000);
        if let Ok(mut h) = self.lag_ms.lock() {
            let _ = h.record(lag.max(1));
        }
    }
}

/// Wall clock, milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Blocks this sink thread (never a shard: sink threads live on the I/O core and may wait).
#[allow(clippy::disallowed_methods)]
pub fn pause(d: Duration) {
    std::thread::sleep(d);
}

/// What [`next_frame`] found.
pub enum Step {
    /// A frame that decodes (deliver it, then commit).
    Frame(Vec<u8>),
    /// Nothing to do now.
    Idle,
    /// The spool is closed and drained.
    Closed,
}

/// The next spooled frame for a delivery thread: read errors are counted and waited out, and
/// a frame that does not decode (cannot happen for a CRC-checked frame) is counted and skipped.
pub fn next_frame(reader: &mut spool::SpoolReader, stats: &SinkStats) -> Step {
    match reader.next(Duration::from_millis(200)) {
        Ok(spool::Next::Frame(b)) if super::frame::decode(&b).is_ok() => Step::Frame(b),
        Ok(spool::Next::Frame(_)) => {
            stats.drop_n(DropReason::Rejected, 1);
            let _ = reader.commit();
            Step::Idle
        }
        Ok(spool::Next::Idle) => Step::Idle,
        Ok(spool::Next::Closed) => Step::Closed,
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("flowshard: {}: {e}", stats.name);
            pause(Duration::from_secs(1));
            Step::Idle
        }
    }
}

/// Stops a sink's thread: sets its flag and waits for it.
pub fn stop_and_join(stop: &AtomicBool, worker: &mut Option<JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = worker.take() {
        let _ = w.join();
    }
}

/// Capped exponential back-off: 0.2 s, 0.4 s, … up to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

/// Renders one second into a frame for one kind of remote sink.
type Render = fn(&str, &SecondOutput, &mut FrameBuilder, &mut String);

/// A sink whose seconds go through an on-disk spool to a delivery thread.
pub struct Spooled {
    name: &'static str,
    target: Target,
    appliance: String,
    render: Render,
    writer: SpoolWriter,
    stats: Arc<SinkStats>,
    worker: Option<JoinHandle<()>>,
    scratch: String,
}

impl Spooled {
    /// Opens the spool `dir/name` and starts `deliver(reader, stats)` on its own thread.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        name: &'static str,
        target: Target,
        appliance: &str,
        dir: &Path,
        max_bytes: u64,
        render: Render,
        cpu: Option<usize>,
        deliver: impl FnOnce(spool::SpoolReader, Arc<SinkStats>) + Send + 'static,
    ) -> Result<Spooled, SinkError> {
        let (writer, reader, sstats) = spool::open(&dir.join(name), max_bytes)
            .map_err(|e| SinkError::Io { sink: name, source: std::io::Error::other(e) })?;
        let stats = SinkStats::new(name, Some(sstats));
        let st = stats.clone();
        let worker = spawn_on(name, cpu, move || deliver(reader, st))?;
        Ok(Spooled {
            name,
            target,
            appliance: appliance.to_string(),
            render,
            writer,
            stats,
            worker: Some(worker),
            scratch: String::new(),
        })
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }
}

/// Spawns a named thread, pinned to `cpu` when given.
pub fn spawn_on(
    name: &'static str,
    cpu: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, SinkError> {
    std::thread::Builder::new()
        .name(format!("flowshard-{name}"))
        .spawn(move || {
            if let Some(c) = cpu {
                core_affinity::set_for_current(core_affinity::CoreId { id: c });
            }
            f()
        })
        .map_err(|source| SinkError::Io { sink: name, source })
}

impl Sink for Spooled {
    fn name(&self) -> &'static str {
        self.name
    }

    fn write(&mut self, so: &SecondOutput) -> Result<(), SinkError> {
        let mut fb = FrameBuilder::new();
        (self.render)(&self.appliance, so, &mut fb, &mut self.scratch);
        if fb.is_empty() {
            return Ok(());
        }
        self.writer
            .append(&fb.finish())
            .map_err(|e| SinkError::Io { sink: self.name, source: std::io::Error::other(e) })
    }

    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut fb = FrameBuilder::new();
        for a in alerts {
            push_alert(self.target, &self.appliance, a, &mut fb, &mut self.scratch);
        }
        self.writer
            .append(&fb.finish())
            .map_err(|e| SinkError::Io { sink: self.name, source: std::io::Error::other(e) })
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self) {
        self.writer.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Kafka records: key `dimension:key`, value the rollup/alert JSON.
pub fn render_kafka(appliance: &str, so: &SecondOutput, fb: &mut FrameBuilder, s: &mut String) {
    let mut key = String::new();
    for r in &so.rollups {
        s.clear();
        json::rollup(s, appliance, r);
        key.clear();
        key.push_str(r.dimension.name());
        key.push(':');
        key.push_str(&r.dimension.format_key(&r.key));
        fb.push(Kind::Rollup, r.second, &key, s);
    }
    for a in &so.alerts {
        push_alert(Target::Kafka, appliance, &AlertDoc::from_layer1(a), fb, s);
    }
}

/// OpenSearch documents: id `appliance:dimension:key:second` (alerts: [`AlertDoc::id`]), value
/// the rollup/alert JSON plus an `ip` field for address keys.
pub fn render_opensearch(appliance: &str, so: &SecondOutput, fb: &mut FrameBuilder, s: &mut String) {
    let mut id = String::new();
    for r in &so.rollups {
        s.clear();
        json::rollup(s, appliance, r);
        let key = r.dimension.format_key(&r.key);
        if matches!(r.dimension, Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter) && !r.key.is_other() {
            s.pop();
            s.push_str(",\"ip\":\"");
            s.push_str(&key);
            s.push_str("\"}");
        }
        id.clear();
        use std::fmt::Write;
        let _ = write!(id, "{appliance}:{}:{key}:{}", r.dimension.name(), r.second);
        fb.push(Kind::Rollup, r.second, &id, s);
    }
    for a in &so.alerts {
        push_alert(Target::Opensearch, appliance, &AlertDoc::from_layer1(a), fb, s);
    }
}

/// Where a spooled frame goes (decides the record key of alerts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Kafka: key `dimension:key`.
    Kafka,
    /// OpenSearch: key = document id.
    Opensearch,
}

/// Appends one alert record of any layer.
pub fn push_alert(t: Target, appliance: &str, a: &AlertDoc, fb: &mut FrameBuilder, s: &mut String) {
    s.clear();
    a.write_json(s, appliance);
    let key = match t {
        Target::Kafka => format!("{}:{}", a.dimension, a.key),
        Target::Opensearch => a.id(appliance),
    };
    fb.push(Kind::Alert, a.second, &key, s);
}

/// One second for Valkey, rendered on the I/O loop.
#[derive(Debug, Clone)]
pub struct HotBatch {
    /// The second.
    pub second: u64,
    /// (dimension, key, bytes, packets, flows).
    pub rows: Vec<(&'static str, String, u64, u64, u64)>,
    /// Alert JSON documents.
    pub alerts: Vec<String>,
}

/// The Valkey sink as seen by the I/O loop: a bounded queue; when it is full the oldest queued
/// second is dropped (counted `queue_full`) so that the newest data goes first.
pub struct Queued {
    appliance: String,
    tx: Sender<HotBatch>,
    rx: Receiver<HotBatch>,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
}

impl Queued {
    /// Starts `deliver(rx, stats, stop)` on its own thread.
    pub fn start(
        name: &'static str,
        appliance: &str,
        capacity: usize,
        cpu: Option<usize>,
        deliver: impl FnOnce(Receiver<HotBatch>, Arc<SinkStats>, Arc<AtomicBool>) + Send + 'static,
    ) -> Result<Queued, SinkError> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let stats = SinkStats::new(name, None);
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2, st2) = (rx.clone(), stats.clone(), stop.clone());
        let worker = spawn_on(name, cpu, move || deliver(r2, s2, st2))?;
        Ok(Queued { appliance: appliance.to_string(), tx, rx, stats, stop, worker: Some(worker) })
    }

    /// The sink's counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Queues a batch; when full, drops the oldest queued one (counted `queue_full`).
    fn push(&mut self, mut b: HotBatch) {
        loop {
            match self.tx.try_send(b) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    if let Ok(old) = self.rx.try_recv() {
                        self.stats.drop_n(DropReason::QueueFull, (old.rows.len() + old.alerts.len()) as u64);
                    }
                    b = back;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

impl Sink for Queued {
    fn name(&self) -> &'static str {
        self.stats.name
    }

    fn write(&mut self, so: &SecondOutput) -> Result<(), SinkError> {
        let mut b = HotBatch {
            second: so.second,
            rows: so
                .rollups
                .iter()
                .map(|r| (r.dimension.name(), r.dimension.format_key(&r.key), r.bytes, r.packets, r.flows))
                .collect(),
            alerts: Vec::with_capacity(so.alerts.len()),
        };
        for a in &so.alerts {
            let mut s = String::new();
            json::alert(&mut s, &self.appliance, a);
            b.alerts.push(s);
        }
        self.push(b);
        Ok(())
    }

    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        if alerts.is_empty() {
            return Ok(());
        }
        let second = alerts.iter().map(|a| a.second).max().unwrap_or(0).max(now_ms() / 1000);
        let docs = alerts
            .iter()
            .map(|a| {
                let mut s = String::new();
                a.write_json(&mut s, &self.appliance);
                s
            })
            .collect();
        self.push(HotBatch { second, rows: Vec::new(), alerts: docs });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self) {
        stop_and_join(&self.stop, &mut self.worker);
    }
}

/// Sinks as the I/O loop holds them.
pub type Sinks = Vec<Box<dyn Sink + Send>>;

/// Builds the remote sinks of a configuration (each with its thread started) and their
/// counters.
pub fn from_config(cfg: &Config, cpu: Option<usize>) -> Result<(Sinks, Vec<Arc<SinkStats>>), SinkError> {
    use crate::config::Sink as S;
    let mut sinks: Vec<Box<dyn Sink + Send>> = Vec::new();
    let mut stats = Vec::new();
    let dir = cfg.spool.dir.clone().unwrap_or_else(|| cfg.general.state_dir.join("spool"));
    let max = cfg.spool.max_mib << 20;
    let app = cfg.general.appliance_id.clone();
    for s in &cfg.sink {
        match s {
            S::Kafka(k) => {
                let (k, a) = (k.clone(), app.clone());
                let sink = Spooled::start("kafka", Target::Kafka, &app, &dir, max, render_kafka, cpu, move |r, st| {
                    super::kafka::deliver(&k, &a, r, &st)
                })?;
                stats.push(sink.stats());
                sinks.push(Box::new(sink));
            }
            S::Opensearch(o) => {
                let o = o.clone();
                let sink = Spooled::start(
                    "opensearch",
                    Target::Opensearch,
                    &app,
                    &dir,
                    max,
                    render_opensearch,
                    cpu,
                    move |r, st| super::opensearch::deliver(&o, r, &st),
                )?;
                stats.push(sink.stats());
                sinks.push(Box::new(sink));
            }
            S::Valkey(v) => {
                let v = v.clone();
                let sink = Queued::start("valkey", &app, v.queue_seconds, cpu, move |rx, st, stop| {
                    super::valkey::deliver(&v, rx, &st, &stop)
                })?;
                stats.push(sink.stats());
                sinks.push(Box::new(sink));
            }
            S::Stdout { .. } | S::File { .. } => {}
        }
    }
    if let Some(w) = &cfg.alerts.webhook {
        let sink = super::webhook::WebhookSink::start(w, &app, cpu)?;
        stats.push(sink.stats());
        sinks.push(Box::new(sink));
    }
    Ok((sinks, stats))
}

/// Starts the I/O-core jobs: the layer-2 Holt-Winters job (when enabled) and the Kafka
/// feedback consumer (when a Kafka sink and a feedback topic are configured). Their counters
/// are appended to `stats`; they run until `stop`.
pub fn start_jobs(
    cfg: &Config,
    cpu: Option<usize>,
    to_io: Sender<super::IoMsg>,
    stop: &Arc<AtomicBool>,
    stats: &mut Vec<Arc<SinkStats>>,
) -> Result<Vec<JoinHandle<()>>, SinkError> {
    use crate::config::Sink as S;
    let mut jobs = Vec::new();
    let os = cfg.sink.iter().find_map(|s| if let S::Opensearch(o) = s { Some(o.clone()) } else { None });
    if let (true, Some(o)) = (cfg.layer2.enabled, os) {
        let client = super::opensearch::Client::new(&o)
            .map_err(|e| SinkError::Io { sink: "layer2", source: std::io::Error::other(e) })?;
        let st = SinkStats::new("layer2", None);
        stats.push(st.clone());
        let (l2, stop, tx) = (cfg.layer2.clone(), stop.clone(), to_io);
        jobs.push(spawn_on("layer2", cpu, move || super::layer2::run(&client, &l2, &tx, &st, &stop))?);
    }
    let kafka = cfg.sink.iter().find_map(|s| if let S::Kafka(k) = s { Some(k.clone()) } else { None });
    if let (false, Some(k)) = (cfg.alerts.feedback_topic.is_empty(), kafka) {
        let st = SinkStats::new("feedback", None);
        stats.push(st.clone());
        let (topic, dir, app, stop) = (
            cfg.alerts.feedback_topic.clone(),
            cfg.general.state_dir.clone(),
            cfg.general.appliance_id.clone(),
            stop.clone(),
        );
        jobs.push(spawn_on("feedback", cpu, move || {
            super::kafka::consume_feedback(&k, &app, &topic, &dir, &st, &stop)
        })?);
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_index_their_counters() {
        let s = SinkStats::new("t", None);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            s.drop_n(*r, i as u64 + 1);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(s.dropped(*r), i as u64 + 1, "{}", r.name());
        }
    }
}
