//! The layer-3 job: a thread of its own (pinned to `[cores] layer3`, else the I/O CPU) that
//! runs [`crate::detect::layer3::Layer3Engine`] on the `src_ip` rollups the I/O loop hands it
//! after each finished second, returns every interval's results (and its counters) to the I/O
//! loop — which writes them to the sinks and turns anomalies into alerts through the one gate —
//! and checkpoints every model to `<state_dir>/layer3.ckpt` every `checkpoint_s` and when it
//! stops, restoring them at start.
//!
//! At a cold start (no checkpoint restored) with an OpenSearch sink configured, the models
//! first learn the newest `history_intervals` intervals of this appliance's `src_ip` rollups
//! ([`history`], [`cold_start`]), so they score from the first live interval instead of
//! `warmup_points` intervals later; `flowshard layer3 --from --to` runs layer 3 over a stored
//! range through the same reader. The live seconds that arrive meanwhile wait in the queue.
//!
//! The I/O loop only `try_send`s seconds to it (a full queue drops the second, counted as
//! `queue_full` on the `layer3` row of the sink counters): scoring thousands of forests never
//! stalls the I/O core's other work.
//!
//! May depend on: `detect`, `sink` (counters, the OpenSearch client), `model`. Lives on: its own thread.

use crate::detect::layer3::{Layer3, Layer3Batch, Layer3Counters, Layer3Engine, Layer3Error, SourceRow};
use crate::detect::layer3_history::{query, read_page};
use crate::sink::delivery::{DropReason, SinkStats};
use crate::sink::opensearch::{Client, OsError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One second of `src_ip` rows, as the I/O loop hands them on ([`crate::pipeline::layer3_rows`]).
pub type Second = (u64, Vec<SourceRow>);

/// Where the job's results go (the I/O loop); false once the loop is gone.
pub type ResultsOut = Box<dyn Fn(Layer3Batch) -> bool + Send>;

/// The I/O loop's end of the job's input: never blocks, drops are counted.
#[derive(Clone)]
pub struct Feed {
    tx: Sender<Second>,
    stats: Arc<SinkStats>,
}

impl Feed {
    /// Hands one second on (dropped and counted when the job is behind).
    pub fn send(&self, second: Second) {
        if self.tx.try_send(second).is_err() {
            self.stats.drop_n(DropReason::QueueFull, 1);
        }
    }
}

/// Seconds the job may be behind before the I/O loop drops them.
const QUEUE_SECONDS: usize = 600;

/// The checkpoint file.
pub fn checkpoint_path(state_dir: &Path) -> PathBuf {
    state_dir.join("layer3.ckpt")
}

/// Creates the job's feed and its input.
pub fn channel(stats: Arc<SinkStats>) -> (Feed, Receiver<Second>) {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE_SECONDS);
    (Feed { tx, stats }, rx)
}

/// Restores the checkpoint of `state_dir` into `eng`, if there is one (a bad one is reported
/// and ignored: a cold start, never a failed start).
pub fn restore(eng: &mut Layer3Engine, state_dir: &Path) {
    let path = checkpoint_path(state_dir);
    match std::fs::read(&path) {
        Ok(bytes) => match eng.restore(&bytes) {
            Ok(n) => tracing::info!("layer 3: restored {n} models from {}", path.display()),
            Err(e) => tracing::warn!("layer 3: {e} ({})", path.display()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("layer 3: cannot read {}: {e}", path.display()),
    }
}

/// Writes the checkpoint atomically (temporary file, then rename).
pub fn save(eng: &Layer3Engine, state_dir: &Path) -> Result<usize, String> {
    let bytes = eng.checkpoint().map_err(|e| e.to_string())?;
    let path = checkpoint_path(state_dir);
    let tmp = path.with_extension("ckpt.tmp");
    std::fs::create_dir_all(state_dir)
        .and_then(|_| std::fs::write(&tmp, &bytes))
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(bytes.len())
}

/// Reading layer 3's history failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The search failed.
    #[error("history search: {0}")]
    Search(#[from] OsError),
    /// The answer was not the aggregation asked for.
    #[error("history answer: {0}")]
    Answer(String),
    /// The engine refused a point.
    #[error(transparent)]
    Layer3(#[from] Layer3Error),
}

/// What a history read saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRead {
    /// Intervals with data.
    pub intervals: u64,
    /// (interval, source) buckets read.
    pub rows: u64,
    /// Searches (pages).
    pub pages: u64,
    /// Keys that were neither an address nor `other` (skipped).
    pub bad_keys: u64,
    /// Merged sketches that could not be read (the rows kept their per-second maxima).
    pub bad_sketches: u64,
}

/// Reads `appliance`'s `src_ip` rollups of [from, to) back from OpenSearch, interval by
/// interval in time order, and hands each complete interval to `f` as (start, rows) — each
/// source's interval as the live accumulators hold it.
pub fn history(
    client: &Client,
    appliance: &str,
    interval_s: u64,
    from: u64,
    to: u64,
    mut f: impl FnMut(u64, &[SourceRow]) -> Result<(), Layer3Error>,
) -> Result<HistoryRead, HistoryError> {
    let path = format!("/{}-rollups-*/_search?ignore_unavailable=true", client.cfg.index_prefix);
    let mut read = HistoryRead::default();
    let mut after = None;
    let (mut open, mut rows): (Option<u64>, Vec<SourceRow>) = (None, Vec::new());
    loop {
        let body = query(appliance, from, to, interval_s, after.as_ref());
        let (_, v) = client.json(reqwest::Method::POST, &path, Some(&body), &[])?;
        let page = read_page(&v).map_err(HistoryError::Answer)?;
        read.pages += 1;
        read.bad_keys += page.bad_keys;
        read.bad_sketches += page.bad_sketches;
        for (t, row) in page.rows {
            if let Some(o) = open.filter(|&o| o != t) {
                f(o, &rows)?;
                read.intervals += 1;
                rows.clear();
            }
            open = Some(t);
            rows.push(row);
            read.rows += 1;
        }
        after = page.after;
        if after.is_none() {
            break;
        }
    }
    if let Some(t) = open {
        f(t, &rows)?;
        read.intervals += 1;
    }
    Ok(read)
}

/// Cold start from history: unless `eng` already has models (a restored checkpoint), it
/// learns the newest `history_intervals` intervals before `now` (results discarded: history
/// was judged when it was live; the points count as `history_points`).
pub fn cold_start(
    eng: &mut Layer3Engine,
    client: &Client,
    appliance: &str,
    now: u64,
) -> Result<HistoryRead, HistoryError> {
    let (iv, n) = (eng.config().interval_s, eng.config().history_intervals);
    if eng.entities() > 0 || n == 0 {
        return Ok(HistoryRead::default());
    }
    let to = now - now % iv;
    let before = eng.counters.clone();
    let mut scratch = Vec::new();
    let read = history(client, appliance, iv, to.saturating_sub(n * iv), to, |t, rows| {
        scratch.clear();
        eng.observe_interval(t, rows, 0, &mut scratch)
    })?;
    eng.finish_history(to, &before)?;
    Ok(read)
}

/// Runs until `stop` (or until the I/O loop is gone), then checkpoints. `history` (the
/// OpenSearch client and this appliance's id) enables the cold start from history.
pub fn run(
    cfg: &Layer3,
    state_dir: &Path,
    history: Option<(Client, String)>,
    rx: &Receiver<Second>,
    out: &ResultsOut,
    stats: &SinkStats,
    stop: &AtomicBool,
) {
    let mut eng = Layer3Engine::new(cfg);
    restore(&mut eng, state_dir);
    if let Some((client, appliance)) = history {
        let t = Instant::now();
        match cold_start(&mut eng, &client, &appliance, crate::model::time::now_s()) {
            Ok(r) if r.pages > 0 => tracing::info!(
                "layer 3: cold start from history: {} models from {} intervals ({} rows, {} unreadable sketches) in {:?}",
                eng.entities(),
                r.intervals,
                r.rows,
                r.bad_sketches,
                t.elapsed()
            ),
            Ok(_) => {}
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("layer 3: no cold start from history ({e}); learning from live data");
            }
        }
    }
    let mut results = Vec::new();
    let mut last_ckpt = Instant::now();
    let mut last_sent = Layer3Counters::default();
    while !stop.load(Ordering::Relaxed) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((second, rows)) => {
                if let Err(e) = eng.observe(second, &rows, crate::model::time::now_ms(), &mut results) {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("layer 3: {e}");
                }
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if !results.is_empty() || eng.counters != last_sent {
            last_sent = eng.counters.clone();
            let batch = Layer3Batch {
                results: std::mem::take(&mut results),
                confirmed: eng.take_confirmed(),
                counters: last_sent.clone(),
            };
            if !out(batch) {
                break;
            }
        }
        if cfg.checkpoint_s > 0 && last_ckpt.elapsed() >= Duration::from_secs(cfg.checkpoint_s) {
            last_ckpt = Instant::now();
            checkpoint(&eng, state_dir, stats);
        }
    }
    checkpoint(&eng, state_dir, stats);
}

fn checkpoint(eng: &Layer3Engine, state_dir: &Path, stats: &SinkStats) {
    let t = Instant::now();
    match save(eng, state_dir) {
        Ok(n) if t.elapsed() > Duration::from_secs(2) => {
            tracing::info!("layer 3: checkpoint of {} models, {n} bytes in {:?}", eng.entities(), t.elapsed())
        }
        Ok(n) => tracing::debug!("layer 3: checkpoint of {} models, {n} bytes in {:?}", eng.entities(), t.elapsed()),
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("layer 3: {e}");
        }
    }
}
