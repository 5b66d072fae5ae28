//! The I/O loop: everything that may block lives on the I/O core, never on a shard. It receives
//! [`IoMsg`]s from the shards (and the jobs) over one bounded channel, assembles complete
//! seconds ([`Assembler`]), runs every alert through the one gate, converts layer-1 alerts to
//! the shared schema once, turns the admitted alerts of every layer into incidents (open,
//! update, resolve; [`Incidents`]), writes the sinks, publishes to the HTTP server, persists template
//! snapshots, pings the systemd watchdog and prints the periodic status line.
//!
//! Layer 3 runs on a job thread of its own: each finished second's `src_ip` rows are handed to
//! it ([`crate::jobs::layer3::Feed`], never blocking), and its results come back as
//! [`IoMsg::Layer3`]: written to every sink, anomalies turned into alerts through the gate.
//!
//! May depend on: `pipeline`, `alert`, `sink`, `http`, `ops`, `model`, `detect`, `jobs`, `enrich` (interface and AS names). Lives on: the I/O core
//! (thread `flowshard-io`).

use super::exchange::IoMsg;
use super::state::write_snapshot;
use crate::alert::{AlertDoc, AlertGate, IncidentEvent, Incidents, Verdict};
use crate::detect::layer3::Layer3Batch;
use crate::http::Shared;
use crate::model::time::now_s;
use crate::ops::IoCounters;
use crate::pipeline::{Assembler, SecondOutput};
use crate::sink::{Sink, SinkError, Sinks};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Everything the I/O thread owns, handed over once at start.
pub struct IoLoop {
    /// From the shards and the jobs.
    pub rx: Receiver<IoMsg>,
    /// Assembles one second from every owner's part.
    pub assembler: Assembler,
    /// Every sink, in configuration order.
    pub sinks: Sinks,
    /// Where template snapshots go.
    pub state_dir: PathBuf,
    /// Status line interval (zero = off).
    pub status_every: Duration,
    /// What the HTTP server shows, and the one copy of the shard statuses.
    pub published: Shared,
    /// The alert gate.
    pub gate: AlertGate,
    /// Alerts of every layer become incidents here.
    pub incidents: Incidents,
    /// The layer-3 job's input, when layer 3 runs.
    pub layer3: Option<crate::jobs::layer3::Feed>,
    /// Layer-3 settings (interval, alert grade).
    pub layer3_cfg: crate::detect::layer3::Layer3,
    /// Names the interface rollups, when SNMP or static interface entries are configured.
    pub interfaces: Option<crate::enrich::snmp::Annotator>,
    /// Names the AS and network rollups and adds the derived site/tenant/role rows, when
    /// enrichment tables are configured.
    pub namer: Option<crate::enrich::Namer>,
    /// Appliance id (result documents).
    pub appliance: String,
    /// Host rows: merge and detectors (always present; idle without host input).
    pub hosts: HostIo,
}

/// The I/O core's host-telemetry state: the merge of every window's batches and the host
/// detectors.
pub struct HostIo {
    /// Merges the shards' (and the HTTP ingest's) batches.
    pub merge: crate::pipeline::host::HostMerge,
    /// CPU spike, memory leak, burst and silence detectors.
    pub detectors: crate::detect::host::HostDetectors,
    last_add: Option<Instant>,
    last_tick: u64,
    /// Where the detectors' learnt state is kept across restarts.
    state: Option<PathBuf>,
    last_save: Instant,
}

impl HostIo {
    /// Idle state with these detector settings.
    pub fn new(cfg: &crate::detect::host::HostDetectConfig) -> HostIo {
        HostIo {
            merge: crate::pipeline::host::HostMerge::new(),
            detectors: crate::detect::host::HostDetectors::new(cfg),
            last_add: None,
            last_tick: 0,
            state: None,
            last_save: Instant::now(),
        }
    }

    /// Keeps the detectors' state in `path` (restored from it now, saved every minute and at
    /// shutdown). A missing file is a first start; an unreadable one is logged and ignored.
    pub fn with_state(mut self, path: PathBuf) -> HostIo {
        match std::fs::read(&path) {
            Ok(b) => match self.detectors.restore(&b, now_s()) {
                Ok(n) => tracing::info!("host detectors: {n} host(s) restored from {}", path.display()),
                Err(e) => tracing::warn!("host detectors: ignoring unreadable {}: {e}", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("host detectors: cannot read {}: {e}", path.display()),
        }
        self.state = Some(path);
        self
    }

    /// Writes the detectors' state (atomically: a temporary file renamed), when it has any.
    fn save(&mut self) {
        self.last_save = Instant::now();
        let Some(path) = &self.state else { return };
        if self.detectors.hosts() == 0 {
            return;
        }
        let tmp = path.with_extension("tmp");
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(&tmp, self.detectors.save()).and_then(|()| std::fs::rename(&tmp, path)) {
            tracing::warn!("host detectors: cannot save {}: {e}", path.display());
        }
    }

    /// Adds a batch; returns the merged second of the previous arrival second when this batch
    /// starts a newer one.
    fn add(&mut self, b: crate::pipeline::host::HostBatch) -> Option<crate::pipeline::host::HostSecond> {
        let out = (b.arrival > self.merge.pending_arrival() && self.merge.pending() > 0).then(|| self.merge.flush());
        self.merge.add(b);
        self.last_add = Some(Instant::now());
        out
    }

    /// The pending rows, once no batch came for 1.2 s.
    fn due(&mut self) -> Option<crate::pipeline::host::HostSecond> {
        let late = self.last_add.is_some_and(|t| t.elapsed() > Duration::from_millis(1200));
        (late && self.merge.pending() > 0).then(|| self.merge.flush())
    }
}

/// One finished second and its admitted layer-1 alerts in the shared schema.
struct Done {
    so: SecondOutput,
    docs: Vec<AlertDoc>,
}

impl IoLoop {
    /// Runs until every sender is gone, then flushes the sinks and returns the counters.
    pub fn run(self) -> IoCounters {
        let IoLoop {
            rx,
            mut assembler,
            mut sinks,
            state_dir,
            status_every,
            published,
            mut gate,
            mut incidents,
            layer3,
            layer3_cfg,
            mut interfaces,
            mut namer,
            appliance,
            mut hosts,
        } = self;
        let mut events: Vec<IncidentEvent> = Vec::new();
        // data time: the newest second seen (incidents resolve on it)
        let mut data_now = 0u64;
        let mut c = IoCounters::default();
        let mut finished = Vec::new();
        let mut done: Vec<Done> = Vec::new();
        let mut last_status = Instant::now();
        let mut oldest_pending: Option<Instant> = None;
        // systemd watchdog: pinged from here only while shards keep reporting.
        let watchdog = crate::ops::notify::watchdog_interval();
        let mut last_ping = Instant::now();
        let mut last_shard_status = Instant::now();
        let mut last_reload = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(IoMsg::Output(o)) => {
                    assembler.add(o, &mut finished);
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
                        tracing::warn!("cannot write template snapshot to {}: {e}", state_dir.display());
                    }
                },
                Ok(IoMsg::Status(s)) => {
                    if let Ok(mut p) = published.lock() {
                        p.board.update(*s);
                    }
                    last_shard_status = Instant::now();
                }
                Ok(IoMsg::Layer3(batch)) => {
                    let Layer3Batch { results, confirmed, counters } = *batch;
                    c.layer3 = counters;
                    let docs = crate::sink::result_docs(&results, &appliance, layer3_cfg.interval_s);
                    to_sinks(&mut sinks, &mut c, |s| s.write_results(&docs));
                    let alerts = crate::alert::layer3_alerts(&confirmed, layer3_cfg.interval_s);
                    let mut j = JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
                    data_now = j.take(alerts, data_now, &mut events);
                    publish(&published, &[], &c);
                }
                Ok(IoMsg::Alerts(docs)) => {
                    let mut j = JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
                    data_now = j.take(docs, data_now, &mut events);
                    publish(&published, &[], &c);
                }
                Ok(IoMsg::Host(b)) => {
                    if let Some(hs) = hosts.add(b) {
                        let mut j =
                            JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
                        data_now = host_second(&mut hosts, hs, &appliance, &mut j, data_now, &mut events);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Some(hs) = hosts.due() {
                let mut j = JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
                data_now = host_second(&mut hosts, hs, &appliance, &mut j, data_now, &mut events);
            }
            if hosts.last_save.elapsed() >= Duration::from_secs(60) {
                hosts.save();
            }
            let wall = now_s();
            if wall > hosts.last_tick {
                hosts.last_tick = wall;
                let mut alerts = Vec::new();
                hosts.detectors.tick(wall, &mut alerts);
                c.host_detect = hosts.detectors.counters.clone();
                if !alerts.is_empty() {
                    let docs = alerts.iter().map(AlertDoc::from_host).collect();
                    let mut j = JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
                    data_now = j.take(docs, data_now, &mut events);
                }
            }
            if last_reload.elapsed() >= Duration::from_secs(2) {
                last_reload = Instant::now();
                gate.reload();
                // incidents resolve even while no second finishes (no traffic at all)
                data_now = data_now.max(now_s());
                incidents.tick(data_now, &mut events);
            }
            // An owner that has not reported for 5 s is stalled: write what we have.
            if oldest_pending.is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
                let before = finished.len();
                assembler.flush(&mut finished);
                c.incomplete_seconds += (finished.len() - before) as u64;
                oldest_pending = None;
            }
            if !finished.is_empty() {
                if let Some(a) = &mut namer {
                    for so in &mut finished {
                        a.annotate(&mut so.rollups);
                    }
                }
                if let Some(a) = &mut interfaces {
                    for so in &mut finished {
                        a.annotate(&mut so.rollups);
                    }
                    (c.interfaces_named, c.interfaces_unresolved) = (a.named(), a.unresolved());
                }
                gate_layer1(&mut gate, &mut finished, &mut done, &mut c);
                emit(&mut sinks, &done, &mut c);
                if let Some(f) = &layer3 {
                    for d in &done {
                        f.send(crate::pipeline::layer3_rows(&d.so));
                    }
                }
                for d in &done {
                    data_now = data_now.max(d.so.second);
                    incidents.observe(&d.docs, data_now, &mut events);
                    incidents.tick(data_now, &mut events);
                }
                publish(&published, &done, &c);
                done.clear();
            }
            emit_incidents(&mut sinks, &incidents, &mut events, &mut c, &published);
            if let Some(w) = watchdog {
                if last_ping.elapsed() >= w / 2 && last_shard_status.elapsed() < w {
                    let _ = crate::ops::notify::notify("WATCHDOG=1");
                    last_ping = Instant::now();
                }
            }
            if !status_every.is_zero() && last_status.elapsed() >= status_every {
                last_status = Instant::now();
                status_line(&published, &c);
            }
        }
        if hosts.merge.pending() > 0 {
            let hs = hosts.merge.flush();
            let mut j = JobAlerts { gate: &mut gate, sinks: &mut sinks, c: &mut c, incidents: &mut incidents };
            data_now = host_second(&mut hosts, hs, &appliance, &mut j, data_now, &mut events);
        }
        hosts.save();
        assembler.flush(&mut finished);
        gate_layer1(&mut gate, &mut finished, &mut done, &mut c);
        emit(&mut sinks, &done, &mut c);
        for d in &done {
            data_now = data_now.max(d.so.second);
            incidents.observe(&d.docs, data_now, &mut events);
        }
        publish(&published, &done, &c);
        // Open incidents stay open across a restart of flowshard: nothing is resolved that
        // was not seen to end.
        emit_incidents(&mut sinks, &incidents, &mut events, &mut c, &published);
        // Close every sink first, then wait for each: their grace periods run together.
        for s in sinks.iter_mut() {
            s.close();
        }
        for s in sinks.iter_mut() {
            s.finish();
        }
        if !status_every.is_zero() {
            status_line(&published, &c);
        }
        c
    }
}

/// Runs `f` on every sink; a failure is counted and logged, and the other sinks still run.
fn to_sinks(sinks: &mut Sinks, c: &mut IoCounters, mut f: impl FnMut(&mut (dyn Sink + Send)) -> Result<(), SinkError>) {
    for s in sinks.iter_mut() {
        if let Err(e) = f(s.as_mut()) {
            c.sink_errors += 1;
            tracing::warn!("{e}");
        }
    }
}

/// What the alerts of the jobs (layers 2 and 3) pass through on the I/O loop.
struct JobAlerts<'a> {
    gate: &'a mut AlertGate,
    sinks: &'a mut Sinks,
    c: &'a mut IoCounters,
    incidents: &'a mut Incidents,
}

impl JobAlerts<'_> {
    /// The gate, every sink, then the incidents (at the newest of `data_now` and the wall
    /// clock, which it returns).
    fn take(&mut self, docs: Vec<AlertDoc>, data_now: u64, events: &mut Vec<IncidentEvent>) -> u64 {
        let now = now_s();
        // feedback applied since the last periodic reload counts for this batch (one `stat`)
        self.gate.reload();
        let pass: Vec<AlertDoc> = docs.into_iter().filter(|a| self.gate.admit(a, now) == Verdict::Pass).collect();
        count_alerts(self.c, &pass);
        to_sinks(self.sinks, self.c, |s| s.write_alerts(&pass));
        let data_now = data_now.max(now);
        self.incidents.observe(&pass, data_now, events);
        self.c.gate = self.gate.counters.clone();
        data_now
    }
}

/// One merged second of host rows: to every sink, through the host detectors, their alerts
/// through the gate into incidents.
fn host_second(
    hosts: &mut HostIo,
    hs: crate::pipeline::host::HostSecond,
    appliance: &str,
    j: &mut JobAlerts<'_>,
    data_now: u64,
    events: &mut Vec<IncidentEvent>,
) -> u64 {
    let docs = crate::sink::host_docs(&hs, appliance);
    j.c.host_rows += docs.len() as u64;
    to_sinks(j.sinks, j.c, |s| s.write_hosts(&docs));
    for s in j.sinks.iter_mut() {
        if s.flush().is_err() {
            j.c.sink_errors += 1;
        }
    }
    let mut alerts = Vec::new();
    hosts.detectors.observe(&hs, &mut alerts);
    j.c.host_series = hosts.merge.series() as u64;
    j.c.host_unnamed = hosts.merge.unnamed;
    j.c.host_detect = hosts.detectors.counters.clone();
    if alerts.is_empty() {
        return data_now;
    }
    j.take(alerts.iter().map(AlertDoc::from_host).collect(), data_now, events)
}

fn status_line(published: &Shared, c: &IoCounters) {
    if let Ok(mut p) = published.lock() {
        tracing::info!("{}", p.board.line(c));
    }
}

/// Runs the layer-1 alerts of finished seconds through the gate (suppressions,
/// de-duplication, cooldown) and converts the admitted ones to the shared schema, once.
fn gate_layer1(gate: &mut AlertGate, finished: &mut Vec<SecondOutput>, done: &mut Vec<Done>, c: &mut IoCounters) {
    let now = now_s();
    for mut so in finished.drain(..) {
        let mut docs = Vec::with_capacity(so.alerts.len());
        so.alerts.retain(|a| {
            let d = AlertDoc::from_layer1(a);
            let pass = gate.admit(&d, now) == Verdict::Pass;
            if pass {
                docs.push(d);
            }
            pass
        });
        done.push(Done { so, docs });
    }
    c.gate = gate.counters.clone();
}

/// Hands incident events to every sink and the HTTP server's state.
fn emit_incidents(
    sinks: &mut Sinks,
    incidents: &Incidents,
    events: &mut Vec<IncidentEvent>,
    c: &mut IoCounters,
    published: &Shared,
) {
    c.incidents = incidents.counters.clone();
    c.incidents_open = incidents.open().count() as u64;
    if events.is_empty() {
        return;
    }
    to_sinks(sinks, c, |s| s.write_incidents(events));
    if let Ok(mut p) = published.lock() {
        p.hot.push_incidents(events);
        p.io = c.clone();
    }
    events.clear();
}

fn count_alerts(c: &mut IoCounters, docs: &[AlertDoc]) {
    c.alerts += docs.len() as u64;
    for d in docs {
        c.alerts_by_layer[usize::from(d.layer).min(3)] += 1;
    }
}

/// Hands finished seconds and the counters (already counting them) to the HTTP server's state.
fn publish(published: &Shared, done: &[Done], c: &IoCounters) {
    if let Ok(mut p) = published.lock() {
        for d in done {
            p.hot.push(&d.so, &d.docs);
        }
        p.io = c.clone();
    }
}

fn emit(sinks: &mut Sinks, done: &[Done], c: &mut IoCounters) {
    for d in done {
        c.seconds += 1;
        c.rollups += d.so.rollups.len() as u64;
        count_alerts(c, &d.docs);
        to_sinks(sinks, c, |s| s.write(&d.so, &d.docs));
    }
    for s in sinks.iter_mut() {
        if s.flush().is_err() {
            c.sink_errors += 1;
        }
    }
}
