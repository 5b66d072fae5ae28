//! Per-shard probes and the status line. A shard keeps plain counters in its own state and
//! sends a [`ShardStatus`] snapshot to the I/O core every status interval; the I/O core keeps
//! the latest snapshot of each shard in a [`StatusBoard`] and prints one line. No atomics on the
//! hot path, no labels outside closed sets.
//!
//! Also here: the host planner ([`plan`]), host checks ([`doctor`]) and systemd notification
//! ([`notify`]).
//!
//! May depend on: `model`, `decode`, `pipeline`, `alert`, `detect` (counter types). Lives on: shard cores
//! (building snapshots), I/O core (board, line), main thread (plan, doctor, notify, log).

pub mod doctor;
pub mod log;
pub mod notify;
pub mod plan;

use crate::decode::{DecodeCounters, ErrorReason};
use crate::model::Protocol;
use crate::pipeline::{IngestCounters, OwnerCounters};
use std::fmt::Write;
use std::time::Instant;

/// I/O-core counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Seconds written.
    pub seconds: u64,
    /// Rollups written.
    pub rollups: u64,
    /// Alerts written, every layer.
    pub alerts: u64,
    /// Alerts written, by layer (index = layer 1..=3).
    pub alerts_by_layer: [u64; 4],
    /// Sink write errors.
    pub sink_errors: u64,
    /// Template snapshots written.
    pub snapshots: u64,
    /// Snapshot write errors.
    pub snapshot_errors: u64,
    /// Seconds flushed incomplete because an owner did not report in time.
    pub incomplete_seconds: u64,
    /// The alert gate's counters (passed, suppressed, duplicate, by layer).
    pub gate: crate::alert::GateCounters,
    /// The incident tracker's counters (opened, updated, resolved, …).
    pub incidents: crate::alert::incident::IncidentCounters,
    /// Incidents open now.
    pub incidents_open: u64,
    /// Layer 3's counters (entities, results, anomalies, model memory), as its job last sent them.
    pub layer3: crate::detect::layer3::Layer3Counters,
    /// Exporter interfaces with a name (SNMP or the config).
    pub interfaces_named: u64,
    /// Exporter interfaces seen in the flows that nothing names.
    pub interfaces_unresolved: u64,
    /// Host rows written (merged series-seconds).
    pub host_rows: u64,
    /// Host series known to the I/O core.
    pub host_series: u64,
    /// Host rows whose series had no name (dropped).
    pub host_unnamed: u64,
    /// The host detectors' counters.
    pub host_detect: crate::detect::host::HostDetectCounters,
}

/// One shard's counters at one moment.
#[derive(Clone, Debug, Default)]
pub struct ShardStatus {
    /// Shard index.
    pub shard: u16,
    /// Decoder counters.
    pub decode: DecodeCounters,
    /// Ingest counters.
    pub ingest: IngestCounters,
    /// Owner counters.
    pub owner: OwnerCounters,
    /// Datagrams dropped by the kernel on this shard's sockets (`SO_MEMINFO`).
    pub kernel_drops: u64,
    /// Datagrams received on this shard's sockets.
    pub received: u64,
    /// Templates cached.
    pub templates: usize,
    /// Keys with detector state.
    pub tracked_keys: usize,
    /// Rows folded into `other` by bounds.
    pub evictions: u64,
    /// Owner outputs dropped because the I/O queue was full.
    pub handoff_dropped: u64,
    /// Window close lag, 50th percentile, microseconds.
    pub close_lag_p50_us: u64,
    /// Window close lag, 99th percentile, microseconds.
    pub close_lag_p99_us: u64,
    /// Exporters: (address, last second seen, datagrams, records, templates, sampling rate).
    pub exporters: Vec<ExporterStatus>,
    /// Host inputs (line protocol, syslog) of this shard, when configured.
    pub hosts: Option<HostStatus>,
    /// Exporter spread: datagrams handed on and taken over.
    pub spread: SpreadCounters,
}

/// One shard's exporter-spread counters (see `runtime::spread`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpreadCounters {
    /// Datagrams this shard received and handed to another shard to decode.
    pub forwarded: u64,
    /// Datagrams another shard received and this shard decoded.
    pub taken: u64,
    /// Template / options datagrams copied to the other shards (decoded here as well).
    pub state_copies: u64,
    /// Template syncs sent: when an exporter starts being spread, or after a stall.
    pub syncs: u64,
    /// Times a datagram's turn went to a shard whose queue was full (decoded elsewhere).
    pub busy: u64,
    /// State copies that found a full queue: that shard got no more data of this shard's
    /// exporters until a sync reached it.
    pub stale: u64,
    /// Exporters this shard spreads now.
    pub exporters: u64,
}

/// One shard's host-input counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// Bad or skipped input by reason.
    pub input: crate::pipeline::host::HostInputCounters,
    /// Samples, messages and bounds.
    pub window: crate::pipeline::host::HostCounters,
    /// Series this shard knows.
    pub series: usize,
    /// Open TCP connections.
    pub connections: usize,
    /// TCP connections refused because `hosts.max_connections` were open.
    pub connections_refused: u64,
    /// Datagrams received on host UDP sockets.
    pub datagrams: u64,
    /// Host batches dropped because the I/O queue was full.
    pub handoff_dropped: u64,
}

/// One exporter as a shard sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExporterStatus {
    /// Datagram source address (sFlow: the UDP source; the agent address is in the records).
    pub address: crate::model::Ip,
    /// Last Unix second seen.
    pub last_seen: u64,
    /// Datagrams.
    pub datagrams: u64,
    /// Records.
    pub records: u64,
    /// Templates cached for it on this shard.
    pub templates: usize,
    /// Domain-wide sampling rate it announced, if any.
    pub sampling: Option<u32>,
}

/// The latest status of every shard (I/O core).
pub struct StatusBoard {
    shards: Vec<ShardStatus>,
    last_report: Vec<Option<Instant>>,
    last: Option<(Instant, u64, u64)>,
}

impl StatusBoard {
    /// A board for `n` shards.
    pub fn new(n: usize) -> StatusBoard {
        StatusBoard {
            shards: (0..n).map(|i| ShardStatus { shard: i as u16, ..Default::default() }).collect(),
            last_report: vec![None; n],
            last: None,
        }
    }

    /// Stores a shard's snapshot (and when it arrived).
    pub fn update(&mut self, s: ShardStatus) {
        let i = s.shard as usize;
        if i < self.shards.len() {
            self.shards[i] = s;
            self.last_report[i] = Some(Instant::now());
        }
    }

    /// True when every shard reported within `within`.
    pub fn all_reported_within(&self, within: std::time::Duration) -> bool {
        self.last_report.iter().all(|t| t.is_some_and(|t| t.elapsed() < within))
    }

    /// Latest snapshots.
    pub fn shards(&self) -> &[ShardStatus] {
        &self.shards
    }

    /// The one-line status.
    pub fn line(&mut self, io: &IoCounters) -> String {
        let mut dec = DecodeCounters::default();
        let (mut recs, mut kdrops, mut tmpl, mut tracked, mut hdrops, mut evict, mut lag) = (0, 0, 0, 0, 0, 0, 0);
        for s in &self.shards {
            dec.add(&s.decode);
            recs += s.ingest.records;
            kdrops += s.kernel_drops;
            tmpl += s.templates;
            tracked += s.tracked_keys;
            hdrops += s.handoff_dropped;
            evict += s.evictions;
            lag = lag.max(s.close_lag_p99_us);
        }
        let dgrams: u64 = dec.datagrams.iter().sum::<u64>() + dec.unknown_datagrams;
        let now = Instant::now();
        let rate = match self.last {
            Some((t, d, r)) if now > t => {
                let dt = now.duration_since(t).as_secs_f64().max(1e-3);
                format!(
                    " rate={:.0}dg/s,{:.0}rec/s",
                    (dgrams - d.min(dgrams)) as f64 / dt,
                    (recs - r.min(recs)) as f64 / dt
                )
            }
            _ => String::new(),
        };
        self.last = Some((now, dgrams, recs));
        let mut line =
            format!("flowshard status: shards={} datagrams={dgrams} records={recs}{rate}", self.shards.len());
        for p in Protocol::ALL {
            let n = dec.records[p.index()];
            if n > 0 {
                let _ = write!(line, " {}={n}", p.label());
            }
        }
        let _ = write!(line, " decode_errors={}", dec.error_total());
        for r in ErrorReason::ALL {
            let n = dec.errors[r.index()];
            if n > 0 {
                let _ = write!(line, " err_{}={n}", r.label());
            }
        }
        let _ = write!(
            line,
            " templates={tmpl} kernel_drops={kdrops} tracked_keys={tracked} evicted_to_other={evict} close_lag_p99_ms={:.1} seconds={} rollups={} alerts={} handoff_drops={hdrops} sink_errors={}",
            lag as f64 / 1000.0,
            io.seconds,
            io.rollups,
            io.alerts,
            io.sink_errors
        );
        line
    }
}
