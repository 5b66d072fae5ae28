//! I/O cores: everything that may block lives here, never on a shard. The I/O thread receives
//! [`IoMsg`]s from the shards over one bounded channel, assembles complete seconds
//! ([`crate::pipeline::Assembler`]), writes them to the sinks, persists template snapshots
//! to the state directory, and prints the periodic status line.
//!
//! May depend on: `model`, `pipeline`, `config`, `ops`. Lives on: I/O cores.

pub mod alerts;
pub mod frame;
pub mod http;
pub mod json;
pub mod kafka;
pub mod layer2;
pub mod opensearch;
pub mod remote;
pub mod spool;
pub mod valkey;
pub mod webhook;

use crate::config::{Config, Sink as SinkCfg};
use crate::decode::templates::Snapshot;
use crate::ops::{ShardStatus, StatusBoard};
use crate::pipeline::{Assembler, OwnerOutput, SecondOutput};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What shards send to the I/O core.
#[derive(Debug)]
pub enum IoMsg {
    /// One owner's output of one second.
    Output(OwnerOutput),
    /// A shard's template cache changed.
    Templates(u16, Snapshot),
    /// A shard's counters.
    Status(Box<ShardStatus>),
    /// Alerts of layers 2 and 3 (from their jobs on the I/O core).
    Alerts(Vec<alerts::AlertDoc>),
}

/// Typed sink errors.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing failed.
    #[error("sink {sink}: {source}")]
    Io {
        /// Sink name.
        sink: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Something that takes complete seconds.
pub trait Sink {
    /// Stable sink name (counter label).
    fn name(&self) -> &'static str;
    /// Writes one second.
    fn write(&mut self, so: &SecondOutput) -> Result<(), SinkError>;
    /// Flushes buffers (end of a batch of seconds, and at shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Writes alerts of layers 2 and 3 (already through the alert gate; layer-1 alerts come
    /// inside [`SecondOutput`]).
    fn write_alerts(&mut self, alerts: &[alerts::AlertDoc]) -> Result<(), SinkError>;
    /// Shutdown: no more seconds come; deliver what is queued (bounded by a grace period).
    fn finish(&mut self) {}
}

/// JSON lines to stdout or a file.
pub struct JsonLines {
    name: &'static str,
    out: Box<dyn Write + Send>,
    appliance: String,
    rollups: bool,
    alerts: bool,
    buf: String,
}

impl JsonLines {
    /// A JSON-lines sink over `out`.
    pub fn new(
        name: &'static str,
        out: Box<dyn Write + Send>,
        appliance: &str,
        rollups: bool,
        alerts: bool,
    ) -> JsonLines {
        JsonLines { name, out, appliance: appliance.to_string(), rollups, alerts, buf: String::with_capacity(1 << 16) }
    }

    /// Builds the sinks a config names.
    pub fn from_config(cfg: &Config) -> Result<Vec<Box<dyn Sink + Send>>, SinkError> {
        let mut v: Vec<Box<dyn Sink + Send>> = Vec::new();
        for s in &cfg.sink {
            match s {
                SinkCfg::Stdout { rollups, alerts } => v.push(Box::new(JsonLines::new(
                    "stdout",
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
                    &cfg.general.appliance_id,
                    *rollups,
                    *alerts,
                ))),
                SinkCfg::File { path, rollups, alerts } => {
                    let f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(|source| SinkError::Io { sink: "file", source })?;
                    v.push(Box::new(JsonLines::new(
                        "file",
                        Box::new(std::io::BufWriter::with_capacity(1 << 16, f)),
                        &cfg.general.appliance_id,
                        *rollups,
                        *alerts,
                    )))
                }
                // started by remote::from_config
                SinkCfg::Kafka(_) | SinkCfg::Valkey(_) | SinkCfg::Opensearch(_) => {}
            }
        }
        Ok(v)
    }
}

impl Sink for JsonLines {
    fn name(&self) -> &'static str {
        self.name
    }
    fn write(&mut self, so: &SecondOutput) -> Result<(), SinkError> {
        self.buf.clear();
        if self.rollups {
            for r in &so.rollups {
                json::rollup(&mut self.buf, &self.appliance, r);
                self.buf.push('\n');
            }
        }
        if self.alerts {
            for a in &so.alerts {
                json::alert(&mut self.buf, &self.appliance, a);
                self.buf.push('\n');
            }
        }
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }
    fn write_alerts(&mut self, alerts: &[alerts::AlertDoc]) -> Result<(), SinkError> {
        if !self.alerts || alerts.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for a in alerts {
            a.write_json(&mut self.buf, &self.appliance);
            self.buf.push('\n');
        }
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { sink: self.name, source })
    }
}

/// I/O-core counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Seconds written.
    pub seconds: u64,
    /// Rollups written.
    pub rollups: u64,
    /// Alerts written.
    pub alerts: u64,
    /// Sink write errors.
    pub sink_errors: u64,
    /// Template snapshots written.
    pub snapshots: u64,
    /// Snapshot write errors.
    pub snapshot_errors: u64,
    /// Seconds flushed incomplete because an owner did not report in time.
    pub incomplete_seconds: u64,
    /// The alert gate's counters (passed, suppressed, duplicate, by layer).
    pub gate: alerts::GateCounters,
}

/// Path of a shard's template snapshot.
pub fn snapshot_path(state_dir: &Path, shard: u16) -> PathBuf {
    state_dir.join(format!("templates-shard{shard}.json"))
}

/// Writes a snapshot atomically (temporary file, then rename).
pub fn write_snapshot(state_dir: &Path, shard: u16, snap: &Snapshot) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let path = snapshot_path(state_dir, shard);
    let tmp = path.with_extension("json.tmp");
    let data = serde_json::to_vec(snap).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &path)
}

/// Reads and merges every shard snapshot in the state directory (missing = empty). Corrupt
/// files are reported and skipped.
pub fn read_snapshots(state_dir: &Path) -> (Snapshot, Vec<String>) {
    let mut all = Snapshot::default();
    let mut problems = Vec::new();
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return (all, problems);
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !(name.starts_with("templates-shard") && name.ends_with(".json")) {
            continue;
        }
        match std::fs::read(e.path())
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Snapshot>(&b).map_err(|e| e.to_string()))
        {
            Ok(s) => {
                all.templates.extend(s.templates);
                all.sampling.extend(s.sampling);
            }
            Err(err) => problems.push(format!("{name}: {err}")),
        }
    }
    (all, problems)
}

/// The I/O-core loop: runs until every sender is gone, then flushes and returns its counters.
#[allow(clippy::too_many_arguments)] // the I/O thread's whole context, passed once at start
pub fn run_io(
    rx: Receiver<IoMsg>,
    mut assembler: Assembler,
    mut sinks: Vec<Box<dyn Sink + Send>>,
    state_dir: PathBuf,
    status_every: Duration,
    mut board: StatusBoard,
    published: Option<http::Shared>,
    mut gate: alerts::AlertGate,
) -> IoCounters {
    let mut c = IoCounters::default();
    let mut done = Vec::new();
    let mut last_status = Instant::now();
    let mut oldest_pending: Option<Instant> = None;
    // systemd watchdog: pinged from here only while shards keep reporting.
    let watchdog = crate::ops::notify::watchdog_interval();
    let mut last_ping = Instant::now();
    let mut last_shard_status = Instant::now();
    let mut last_reload = Instant::now();
    loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        match msg {
            Ok(IoMsg::Output(o)) => {
                assembler.add(o, &mut done);
                if assembler.pending() > 0 {
                    oldest_pending.get_or_insert_with(Instant::now);
                } else {
                    oldest_pending = None;
                }
            }
            Ok(IoMsg::Templates(shard, snap)) => match write_snapshot(&state_dir, shard, &snap) {
                Ok(()) => c.snapshots += 1,
                Err(e) => {
                    c.snapshot_errors += 1;
                    eprintln!("flowshard: cannot write template snapshot to {}: {e}", state_dir.display());
                }
            },
            Ok(IoMsg::Status(s)) => {
                if let Some(p) = &published {
                    if let Ok(mut p) = p.lock() {
                        let i = s.shard as usize;
                        if i < p.shards.len() {
                            p.shards[i] = (*s).clone();
                            p.last_report[i] = Some(Instant::now());
                        }
                    }
                }
                board.update(*s);
                last_shard_status = Instant::now();
            }
            Ok(IoMsg::Alerts(docs)) => {
                let now = remote::now_ms() / 1000;
                let pass: Vec<alerts::AlertDoc> =
                    docs.into_iter().filter(|a| gate.admit(a, now) == alerts::Verdict::Pass).collect();
                c.alerts += pass.len() as u64;
                for s in sinks.iter_mut() {
                    if let Err(e) = s.write_alerts(&pass) {
                        c.sink_errors += 1;
                        eprintln!("flowshard: {e}");
                    }
                }
                c.gate = gate.counters.clone();
                publish(&published, &[], &c);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_reload.elapsed() >= Duration::from_secs(2) {
            last_reload = Instant::now();
            gate.reload();
        }
        // An owner that has not reported for 5 s is stalled: write what we have.
        if oldest_pending.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
            let before = done.len();
            assembler.flush(&mut done);
            c.incomplete_seconds += (done.len() - before) as u64;
            oldest_pending = None;
        }
        if !done.is_empty() {
            gate_layer1(&mut gate, &mut done, &mut c);
            emit(&mut sinks, &done, &mut c);
            publish(&published, &done, &c);
            done.clear();
        }
        if let Some(w) = watchdog {
            if last_ping.elapsed() >= w / 2 && last_shard_status.elapsed() < w {
                let _ = crate::ops::notify::notify("WATCHDOG=1");
                last_ping = Instant::now();
            }
        }
        if !status_every.is_zero() && last_status.elapsed() >= status_every {
            last_status = Instant::now();
            eprintln!("{}", board.line(&c));
        }
    }
    assembler.flush(&mut done);
    gate_layer1(&mut gate, &mut done, &mut c);
    emit(&mut sinks, &done, &mut c);
    publish(&published, &done, &c);
    for s in sinks.iter_mut() {
        s.finish();
    }
    if !status_every.is_zero() {
        eprintln!("{}", board.line(&c));
    }
    c
}

/// Runs layer-1 alerts through the gate (suppressions, de-duplication, cooldown).
fn gate_layer1(gate: &mut alerts::AlertGate, done: &mut [SecondOutput], c: &mut IoCounters) {
    let now = remote::now_ms() / 1000;
    for so in done.iter_mut() {
        if !so.alerts.is_empty() {
            so.alerts.retain(|a| gate.admit(&alerts::AlertDoc::from_layer1(a), now) == alerts::Verdict::Pass);
        }
    }
    c.gate = gate.counters.clone();
}

/// Hands finished seconds and the counters (already counting them) to the HTTP server's state.
fn publish(published: &Option<http::Shared>, done: &[SecondOutput], c: &IoCounters) {
    let Some(p) = published else { return };
    if let Ok(mut p) = p.lock() {
        for so in done {
            p.hot.push(so);
        }
        p.io = c.clone();
    }
}

fn emit(sinks: &mut [Box<dyn Sink + Send>], done: &[SecondOutput], c: &mut IoCounters) {
    for so in done {
        c.seconds += 1;
        c.rollups += so.rollups.len() as u64;
        c.alerts += so.alerts.len() as u64;
        for s in sinks.iter_mut() {
            if let Err(e) = s.write(so) {
                c.sink_errors += 1;
                eprintln!("flowshard: {e}");
            }
        }
    }
    for s in sinks.iter_mut() {
        if s.flush().is_err() {
            c.sink_errors += 1;
        }
    }
}
