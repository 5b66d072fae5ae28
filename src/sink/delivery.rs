//! Delivery, shared by every remote sink: the counters ([`SinkStats`], drops by
//! [`DropReason`]), the two fronts the I/O loop writes to without blocking — [`Spooled`] (an
//! on-disk spool; Kafka, OpenSearch) and [`DropOldest`] (a bounded in-memory queue that drops
//! the oldest item when full; Valkey, webhook) — and the one retry driver ([`drive`]) that
//! every spooled backend runs: preparation with back-off, frames in order, partial retry of the
//! records the service did not take, back-off, rate-limited logs, the shutdown grace period,
//! commit only when a frame is done. A backend ([`Backend`]) says only how to talk to its
//! service and how to read its answers.
//!
//! May depend on: `model`, `pipeline`, `alert`. Lives on: I/O cores (sink threads).

use super::frame::{self, FrameBuilder, Record};
use super::spool::{self, SpoolReader, SpoolStats, SpoolWriter};
use super::{Sink, SinkError};
use crate::alert::{AlertDoc, IncidentEvent};
use crate::pipeline::SecondOutput;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use hdrhistogram::Histogram;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// The shards' hand-off queue to the sink was full (raw flows: counted in records).
    Handoff,
}

impl DropReason {
    /// Every reason, for the metrics page.
    pub const ALL: [DropReason; 5] =
        [DropReason::Rejected, DropReason::Stale, DropReason::QueueFull, DropReason::Shutdown, DropReason::Handoff];
    /// Label value.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Rejected => "rejected",
            DropReason::Stale => "stale",
            DropReason::QueueFull => "queue_full",
            DropReason::Shutdown => "shutdown",
            DropReason::Handoff => "handoff",
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
        let lag = crate::model::time::now_ms().saturating_sub((second + 1) * 1000);
        if let Ok(mut h) = self.lag_ms.lock() {
            let _ = h.record(lag.max(1));
        }
    }
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
            tracing::warn!(sink = stats.name, "spool: {e}");
            pause(Duration::from_secs(1));
            Step::Idle
        }
    }
}

/// Capped exponential back-off: 0.2 s, 0.4 s, … up to 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(5)).min(5000))
}

/// Renders one second (rollups and its gated layer-1 alerts) into a frame.
pub type Render = fn(&str, &SecondOutput, &[AlertDoc], &mut FrameBuilder, &mut String);
/// Appends one alert of any layer to a frame.
pub type RenderAlert = fn(&str, &AlertDoc, &mut FrameBuilder, &mut String);
/// Appends one incident event to a frame.
pub type RenderIncident = fn(&str, &IncidentEvent, &mut FrameBuilder, &mut String);

/// A sink whose seconds go through an on-disk spool to a delivery thread.
pub struct Spooled {
    name: &'static str,
    appliance: String,
    render: Render,
    render_alert: RenderAlert,
    render_incident: RenderIncident,
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
        appliance: &str,
        dir: &Path,
        max_bytes: u64,
        (render, render_alert, render_incident): (Render, RenderAlert, RenderIncident),
        cpu: Option<usize>,
        deliver: impl FnOnce(SpoolReader, Arc<SinkStats>) + Send + 'static,
    ) -> Result<Spooled, SinkError> {
        let (writer, reader, sstats) =
            spool::open(&dir.join(name), max_bytes).map_err(|source| SinkError::Spool { sink: name, source })?;
        let stats = SinkStats::new(name, Some(sstats));
        let st = stats.clone();
        let worker = spawn_on(name, cpu, move || deliver(reader, st))?;
        Ok(Spooled {
            name,
            appliance: appliance.to_string(),
            render,
            render_alert,
            render_incident,
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

    /// Appends a rendered frame to the spool (nothing for an empty one).
    pub fn append(&mut self, fb: FrameBuilder) -> Result<(), SinkError> {
        if fb.is_empty() {
            return Ok(());
        }
        self.writer.append(&fb.finish()).map_err(|source| SinkError::Spool { sink: self.name, source })
    }
}

impl Sink for Spooled {
    fn name(&self) -> &'static str {
        self.name
    }

    fn write(&mut self, so: &SecondOutput, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        let mut fb = FrameBuilder::new();
        (self.render)(&self.appliance, so, alerts, &mut fb, &mut self.scratch);
        self.append(fb)
    }

    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        let mut fb = FrameBuilder::new();
        for a in alerts {
            (self.render_alert)(&self.appliance, a, &mut fb, &mut self.scratch);
        }
        self.append(fb)
    }

    fn write_incidents(&mut self, events: &[IncidentEvent]) -> Result<(), SinkError> {
        let mut fb = FrameBuilder::new();
        for e in events {
            (self.render_incident)(&self.appliance, e, &mut fb, &mut self.scratch);
        }
        self.append(fb)
    }

    fn write_results(&mut self, docs: &[super::Doc]) -> Result<(), SinkError> {
        let mut fb = FrameBuilder::new();
        for d in docs {
            fb.push(super::frame::Kind::AnomalyResult, d.second, &d.id, &d.json);
        }
        self.append(fb)
    }

    fn write_hosts(&mut self, docs: &[super::Doc]) -> Result<(), SinkError> {
        if docs.is_empty() {
            return Ok(());
        }
        let mut fb = FrameBuilder::new();
        for d in docs {
            fb.push(super::frame::Kind::Host, d.second, &d.id, &d.json);
        }
        self.append(fb)
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    fn close(&mut self) {
        self.writer.close();
    }

    fn finish(&mut self) {
        self.writer.close();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A bounded in-memory queue in front of a sink thread: when it is full the oldest queued item
/// is dropped (counted `queue_full`, weighted by `weight`) so that the newest data goes first.
/// The I/O loop pushes; the sink thread receives from [`DropOldest::receiver`].
pub struct DropOldest<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    stats: Arc<SinkStats>,
    weight: fn(&T) -> u64,
}

impl<T> DropOldest<T> {
    /// A queue of `capacity` items whose drops count on `stats`.
    pub fn new(capacity: usize, stats: Arc<SinkStats>, weight: fn(&T) -> u64) -> DropOldest<T> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        DropOldest { tx, rx, stats, weight }
    }

    /// The receiving end, for the sink thread.
    pub fn receiver(&self) -> Receiver<T> {
        self.rx.clone()
    }

    /// Queues an item; when full, drops the oldest queued one (counted `queue_full`).
    pub fn push(&self, mut item: T) {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    if let Ok(old) = self.rx.try_recv() {
                        self.stats.drop_n(DropReason::QueueFull, (self.weight)(&old));
                    }
                    item = back;
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }
}

/// A sink thread with a stop flag, for the queue-fronted sinks.
pub struct Worker {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Spawns `f(stop)` on a named thread pinned to `cpu`.
    pub fn spawn(
        name: &'static str,
        cpu: Option<usize>,
        f: impl FnOnce(Arc<AtomicBool>) + Send + 'static,
    ) -> Result<Worker, SinkError> {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = spawn_on(name, cpu, move || f(s2))?;
        Ok(Worker { stop, handle: Some(handle) })
    }

    /// Sets the stop flag.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Sets the stop flag and waits for the thread.
    pub fn stop_and_join(&mut self) {
        self.stop();
        if let Some(w) = self.handle.take() {
            let _ = w.join();
        }
    }
}

/// At most one log line per `every` for a recurring condition, with the count of those held
/// back: the one log-limiting rule of the sink threads.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    held: u64,
}

impl LogLimit {
    /// A limiter letting one line through per `every`.
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit { every, last: None, held: 0 }
    }

    /// `Some(n)` when a line may be logged now (`n` = lines held back since the last one).
    pub fn allow(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            self.held += 1;
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.held))
    }

    /// The condition ended: the next occurrence is logged at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.held = 0;
    }
}

/// How a backend judged one record of an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged by the service.
    Delivered,
    /// Not taken this time (throttled, transient error): send it again.
    Retry,
    /// Refused for good (counted `rejected`, logged with this reason).
    Rejected(String),
}

/// Why a whole attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptError {
    /// Nothing of the attempt is known delivered (connection, fatal client error, an answer
    /// that does not match the request): send all of it again after a back-off.
    Failed(String),
    /// The shutdown grace period ended while waiting for the service: the frame stays spooled.
    Abandoned,
}

/// What the driver lends a backend during an attempt.
pub struct Attempt<'a> {
    /// The sink's counters.
    pub stats: &'a SinkStats,
    grace: &'a Grace,
    reader: &'a SpoolReader,
}

impl Attempt<'_> {
    /// True once the shutdown grace period is over: a backend waiting for acknowledgements
    /// gives up with [`AttemptError::Abandoned`].
    pub fn abandon(&self) -> bool {
        self.grace.over(self.reader)
    }
}

/// The service side of a spooled sink: protocol only. Retry, back-off, counters, logging and
/// the spool are the driver's.
pub trait Backend {
    /// Connects and installs what the service needs (topics, templates). Called until it
    /// succeeds, with back-off; `closing` is true once shutdown has begun (a backend may then
    /// skip optional steps).
    fn prepare(&mut self, closing: bool) -> Result<(), String>;
    /// Periodic work, called about every 200 ms and between frames (polling, retention).
    fn tick(&mut self, _stats: &SinkStats) {}
    /// Called once per frame before its first attempt (e.g. create the indices it writes to).
    fn begin_frame(&mut self, _recs: &[Record<'_>]) {}
    /// Sends the records `pending` (indices into `recs`, ascending); returns one [`Outcome`]
    /// per pending record, in the same order.
    fn send(&mut self, recs: &[Record<'_>], pending: &[usize], at: &Attempt<'_>) -> Result<Vec<Outcome>, AttemptError>;
    /// Shutdown has begun: requests started from now on must end by `until` (the end of the
    /// grace period), whatever the service's state.
    fn closing(&mut self, _until: Instant) {}
    /// Delivery ends (spool drained, or grace over when `abandoned`): flush client buffers.
    fn close(&mut self, _abandoned: bool) {}
}

/// Tracks the shutdown grace period of one delivery thread: it starts when the spool is
/// closed (the I/O loop is shutting down) and lasts [`SHUTDOWN_GRACE`].
#[derive(Default)]
struct Grace {
    since: std::cell::Cell<Option<Instant>>,
    /// The backend has been told when the grace period ends.
    told: std::cell::Cell<bool>,
}

impl Grace {
    fn closing(&self, reader: &SpoolReader) -> bool {
        if self.since.get().is_none() && reader.is_closed() {
            self.since.set(Some(Instant::now()));
        }
        self.since.get().is_some()
    }

    fn over(&self, reader: &SpoolReader) -> bool {
        self.closing(reader) && self.since.get().is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE)
    }

    /// Once shutdown has begun, tells `backend` (once) when the grace period ends, so that no
    /// request it starts outlives it.
    fn tell(&self, reader: &SpoolReader, backend: &mut impl Backend) {
        if !self.told.get() && self.closing(reader) {
            self.told.set(true);
            if let Some(t) = self.since.get() {
                backend.closing(t + SHUTDOWN_GRACE);
            }
        }
    }
}

/// Delivers the spool through `backend` until the spool is closed and drained, or the shutdown
/// grace period ends (what is left stays spooled for the next start). A frame is committed only
/// when each of its records is delivered or rejected.
pub fn drive(backend: &mut impl Backend, mut reader: SpoolReader, stats: &SinkStats) {
    let name = stats.name;
    let mut prepare_log = LogLimit::new(Duration::from_secs(60));
    let mut attempt_log = LogLimit::new(Duration::from_secs(60));
    let mut reject_log = LogLimit::new(Duration::from_secs(10));
    let mut attempt = 0u32;
    // Preparation, retried with back-off until it succeeds or the grace period ends.
    let grace = Grace::default();
    loop {
        grace.tell(&reader, backend);
        match backend.prepare(grace.closing(&reader)) {
            Ok(()) => break,
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.up.store(false, Ordering::Relaxed);
                if let Some(held) = prepare_log.allow() {
                    tracing::warn!(sink = name, held, "cannot prepare the sink yet (retrying): {e}");
                }
                if grace.over(&reader) {
                    backend.close(true);
                    return;
                }
                // during shutdown, retry briskly: the grace period is short
                pause(if grace.closing(&reader) { backoff(0) } else { backoff(attempt) });
                attempt += 1;
            }
        }
    }
    loop {
        if grace.over(&reader) {
            backend.close(true);
            return;
        }
        grace.tell(&reader, backend);
        backend.tick(stats);
        let buf = match next_frame(&mut reader, stats) {
            Step::Frame(b) => b,
            Step::Idle => continue,
            Step::Closed => break,
        };
        let Ok(recs) = frame::decode(&buf) else { continue };
        let newest = recs.iter().map(|r| r.second).max().unwrap_or(0);
        backend.begin_frame(&recs);
        let mut pending: Vec<usize> = (0..recs.len()).collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            if grace.over(&reader) {
                backend.close(true);
                return; // the frame stays in the spool
            }
            grace.tell(&reader, backend);
            let at = Attempt { stats, grace: &grace, reader: &reader };
            match backend.send(&recs, &pending, &at) {
                Ok(outcomes) if outcomes.len() == pending.len() => {
                    let mut again = Vec::new();
                    let mut ok = 0u64;
                    for (&i, o) in pending.iter().zip(outcomes) {
                        match o {
                            Outcome::Delivered => ok += 1,
                            Outcome::Retry => again.push(i),
                            Outcome::Rejected(why) => {
                                stats.drop_n(DropReason::Rejected, 1);
                                if let Some(held) = reject_log.allow() {
                                    tracing::warn!(sink = name, held, key = recs[i].key, "record refused: {why}");
                                }
                            }
                        }
                    }
                    stats.delivered.fetch_add(ok, Ordering::Relaxed);
                    stats.up.store(true, Ordering::Relaxed);
                    attempt_log.reset();
                    if !again.is_empty() {
                        stats.retried.fetch_add(again.len() as u64, Ordering::Relaxed);
                        pause(backoff(attempt));
                        attempt += 1;
                    }
                    pending = again;
                }
                Ok(outcomes) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    if let Some(held) = attempt_log.allow() {
                        tracing::warn!(
                            sink = name,
                            held,
                            "answered {} outcomes for {} records; sending again",
                            outcomes.len(),
                            pending.len()
                        );
                    }
                    pause(backoff(attempt));
                    attempt += 1;
                }
                Err(AttemptError::Abandoned) => {
                    backend.close(true);
                    return;
                }
                Err(AttemptError::Failed(e)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    stats.retried.fetch_add(pending.len() as u64, Ordering::Relaxed);
                    if let Some(held) = attempt_log.allow() {
                        tracing::warn!(sink = name, held, "delivery failed (frame kept, retrying): {e}");
                    }
                    pause(backoff(attempt));
                    attempt += 1;
                }
            }
        }
        stats.delivered_second(newest, 0);
        if let Err(e) = reader.commit() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink = name, "spool commit: {e}");
        }
    }
    backend.close(false);
}

/// Spawns a named thread, pinned to `cpu` when given.
pub fn spawn_on(
    name: &'static str,
    cpu: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, SinkError> {
    spawn_sized(name, cpu, None, f)
}

/// [`spawn_on`] with a stack of `stack` bytes instead of the default 2 MiB (for a library that
/// keeps large buffers on the stack).
pub fn spawn_sized(
    name: &'static str,
    cpu: Option<usize>,
    stack: Option<usize>,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, SinkError> {
    let mut b = std::thread::Builder::new().name(format!("flowshard-{name}"));
    if let Some(bytes) = stack {
        b = b.stack_size(bytes);
    }
    b.spawn(move || {
        if let Some(c) = cpu {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        f()
    })
    .map_err(|source| SinkError::Io { sink: name, source })
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

    /// A backend that answers from a script: per attempt, one outcome per pending record or a
    /// whole-attempt failure; records what it was sent.
    struct Fake {
        prepare_failures: u32,
        script: std::collections::VecDeque<Result<Vec<Outcome>, AttemptError>>,
        sent: Vec<Vec<String>>,
        closed: Option<bool>,
    }

    impl Backend for Fake {
        fn prepare(&mut self, _closing: bool) -> Result<(), String> {
            if self.prepare_failures > 0 {
                self.prepare_failures -= 1;
                return Err("not yet".into());
            }
            Ok(())
        }
        fn send(
            &mut self,
            recs: &[Record<'_>],
            pending: &[usize],
            _at: &Attempt<'_>,
        ) -> Result<Vec<Outcome>, AttemptError> {
            self.sent.push(pending.iter().map(|&i| recs[i].key.to_string()).collect());
            self.script.pop_front().unwrap_or_else(|| Ok(vec![Outcome::Delivered; pending.len()]))
        }
        fn close(&mut self, abandoned: bool) {
            self.closed = Some(abandoned);
        }
    }

    fn frame(keys: &[&str], second: u64) -> Vec<u8> {
        let mut fb = FrameBuilder::new();
        for k in keys {
            fb.push(super::super::frame::Kind::Rollup, second, k, "{}");
        }
        fb.finish()
    }

    #[test]
    fn driver_retries_partially_counts_rejects_and_commits_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r, spool) = spool::open(dir.path(), 16 << 20).unwrap();
        w.append(&frame(&["a", "b", "c"], 100)).unwrap();
        w.append(&frame(&["d"], 101)).unwrap();
        w.close();
        let stats = SinkStats::new("fake", Some(spool.clone()));
        let mut b = Fake {
            prepare_failures: 1,
            script: [
                // frame 1: the connection fails as a whole, then b is throttled and c refused,
                // then b goes through
                Err(AttemptError::Failed("connection refused".into())),
                Ok(vec![Outcome::Delivered, Outcome::Retry, Outcome::Rejected("too large".into())]),
                Ok(vec![Outcome::Delivered]),
                // frame 2: an answer that does not match the request is sent again whole
                Ok(vec![]),
            ]
            .into(),
            sent: Vec::new(),
            closed: None,
        };
        drive(&mut b, r, &stats);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(b.sent, vec![s(&["a", "b", "c"]), s(&["a", "b", "c"]), s(&["b"]), s(&["d"]), s(&["d"])]);
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 3, "a, b, d");
        assert_eq!(stats.dropped(DropReason::Rejected), 1, "c");
        assert_eq!(stats.retried.load(Ordering::Relaxed), 3 + 1, "the whole failed attempt, then b");
        assert_eq!(stats.errors.load(Ordering::Relaxed), 1 + 1 + 1, "prepare, failed attempt, mismatched answer");
        assert_eq!(stats.last_second.load(Ordering::Relaxed), 101);
        assert_eq!(spool.pending.load(Ordering::Relaxed), 0, "both frames committed");
        assert_eq!(b.closed, Some(false), "drained, not abandoned");
    }

    #[test]
    fn log_limit_lets_one_line_through_per_interval() {
        let mut l = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        l.reset();
        assert_eq!(l.allow(), Some(0));
    }

    #[test]
    fn drop_oldest_keeps_the_newest_and_counts_by_weight() {
        let stats = SinkStats::new("q", None);
        let q: DropOldest<Vec<u8>> = DropOldest::new(2, stats.clone(), |v| v.len() as u64);
        q.push(vec![1, 1, 1]);
        q.push(vec![2]);
        q.push(vec![3, 3]);
        let rx = q.receiver();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![vec![2], vec![3, 3]]);
        assert_eq!(stats.dropped(DropReason::QueueFull), 3);
    }
}
