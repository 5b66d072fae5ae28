//! The layer-3 job: a thread of its own (pinned to `[cores] layer3`, else the I/O CPU) that
//! runs [`crate::detect::layer3::Layer3Engine`] on the `src_ip` rollups the I/O loop hands it
//! after each finished second, returns every interval's results (and its counters) to the I/O
//! loop — which writes them to the sinks and turns anomalies into alerts through the one gate —
//! and checkpoints every model to `<state_dir>/layer3.ckpt` every `checkpoint_s` and when it
//! stops, restoring them at start.
//!
//! The I/O loop only `try_send`s seconds to it (a full queue drops the second, counted as
//! `queue_full` on the `layer3` row of the sink counters): scoring thousands of forests never
//! stalls the I/O core's other work.
//!
//! May depend on: `detect`, `sink` (counters), `model`. Lives on: its own thread.

use crate::detect::layer3::{Layer3, Layer3Batch, Layer3Counters, Layer3Engine, FEATURES};
use crate::model::Ip;
use crate::sink::delivery::{DropReason, SinkStats};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One second of `src_ip` rows, as the I/O loop hands them on ([`crate::pipeline::layer3_rows`]).
pub type Second = (u64, Vec<(Ip, [f64; FEATURES])>);

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

/// Runs until `stop` (or until the I/O loop is gone), then checkpoints.
pub fn run(
    cfg: &Layer3,
    state_dir: &Path,
    rx: &Receiver<Second>,
    out: &ResultsOut,
    stats: &SinkStats,
    stop: &AtomicBool,
) {
    let mut eng = Layer3Engine::new(cfg);
    restore(&mut eng, state_dir);
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
        Ok(n) => tracing::debug!("layer 3: checkpoint of {} models, {n} bytes in {:?}", eng.entities(), t.elapsed()),
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("layer 3: {e}");
        }
    }
}
