//! `flowshard replay`: feeds the UDP payloads of a capture through the same decode →
//! aggregate → exchange → detect path the shards run ([`crate::pipeline::Engine`]), with each
//! packet's capture timestamp as its arrival time, and writes rollups, alerts and the incidents
//! they make ([`crate::alert::Incidents`], the same tracker the I/O loop runs) as JSON lines.
//!
//! Lives on: the main thread (a replay is single-threaded and deterministic).

pub mod pcap;

use crate::alert::{AlertDoc, IncidentConfig, IncidentEvent, Incidents};
use crate::pipeline::{Engine, PipelineConfig, SecondOutput};
use crate::sink::{Sink, SinkError};
use pcap::PcapReader;
use serde::Serialize;
use std::time::{Duration, Instant};

/// The summary line printed last on stderr.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// UDP datagrams fed.
    pub datagrams: u64,
    /// Flow records decoded.
    pub records: u64,
    /// Scaled bytes.
    pub bytes: u64,
    /// Scaled packets.
    pub packets: u64,
    /// Datagrams with a decode error.
    pub decode_errors: u64,
    /// Decode errors by reason (only non-zero).
    pub errors_by_reason: std::collections::BTreeMap<String, u64>,
    /// Records by protocol (only non-zero).
    pub records_by_protocol: std::collections::BTreeMap<String, u64>,
    /// Seconds of rollups produced.
    pub seconds: u64,
    /// Rollups written.
    pub rollups: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Incidents opened.
    pub incidents: u64,
    /// Frames in the capture that were not UDP.
    pub skipped_frames: u64,
    /// Shards used.
    pub shards: usize,
}

/// Replay errors.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The capture is unreadable.
    #[error("{0}")]
    Pcap(#[from] pcap::PcapError),
    /// Writing output failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Replays a capture held in memory through `shards` shards, writing each finished second to
/// `sink`. `realtime` paces the replay by the capture's timestamps.
pub fn replay(
    data: &[u8],
    cfg: &PipelineConfig,
    incidents: &IncidentConfig,
    shards: usize,
    realtime: bool,
    sink: &mut dyn Sink,
) -> Result<Summary, ReplayError> {
    let mut rd = PcapReader::new(data)?;
    let mut inc = Out { incidents: Incidents::new(incidents), events: Vec::new() };
    let mut engine = Engine::new(cfg, shards);
    let mut done: Vec<SecondOutput> = Vec::new();
    let mut sum = Summary { shards: engine.shards.len(), ..Default::default() };
    let start = Instant::now();
    let mut first_ts: Option<u64> = None;
    while let Some(p) = rd.next_udp()? {
        if realtime {
            let t0 = *first_ts.get_or_insert(p.ts_ns);
            let due = Duration::from_nanos(p.ts_ns.saturating_sub(t0));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                #[allow(clippy::disallowed_methods)] // the replay thread may block
                std::thread::sleep(wait);
            }
        }
        engine.feed(p.payload, p.src, p.src_port, p.ts_ns / 1_000_000_000, &mut done);
        write_out(&mut done, sink, &mut sum, &mut inc)?;
    }
    engine.finish(&mut done);
    let last = done.last().map(|so| so.second);
    write_out(&mut done, sink, &mut sum, &mut inc)?;
    if let Some(last) = last.or(inc.incidents.open().map(|e| e.last_evidence).max()) {
        inc.incidents.resolve_all(last, &mut inc.events);
        sink.write_incidents(&inc.events)?;
    }
    sum.incidents = inc.incidents.counters.opened;
    sink.flush()?;
    let t = engine.ingest_totals();
    sum.datagrams = engine.datagrams;
    sum.records = t.records;
    sum.bytes = t.bytes;
    sum.packets = t.packets;
    sum.decode_errors = engine.decode_errors;
    let mut dec = crate::decode::DecodeCounters::default();
    for s in &engine.shards {
        dec.add(&s.decoder.counters);
    }
    for r in crate::decode::ErrorReason::ALL {
        if dec.errors[r.index()] > 0 {
            sum.errors_by_reason.insert(r.label().to_string(), dec.errors[r.index()]);
        }
    }
    for p in crate::model::Protocol::ALL {
        if dec.records[p.index()] > 0 {
            sum.records_by_protocol.insert(p.label().to_string(), dec.records[p.index()]);
        }
    }
    sum.skipped_frames = rd.stats.not_udp;
    Ok(sum)
}

/// The incident tracker and its events' buffer.
struct Out {
    incidents: Incidents,
    events: Vec<IncidentEvent>,
}

fn write_out(
    done: &mut Vec<SecondOutput>,
    sink: &mut dyn Sink,
    sum: &mut Summary,
    inc: &mut Out,
) -> Result<(), ReplayError> {
    for so in done.drain(..) {
        sum.seconds += 1;
        sum.rollups += so.rollups.len() as u64;
        sum.alerts += so.alerts.len() as u64;
        let docs: Vec<AlertDoc> = so.alerts.iter().map(AlertDoc::from_layer1).collect();
        sink.write(&so, &docs)?;
        inc.events.clear();
        inc.incidents.observe(&docs, so.second, &mut inc.events);
        inc.incidents.tick(so.second, &mut inc.events);
        sink.write_incidents(&inc.events)?;
    }
    inc.events.clear();
    Ok(())
}

/// A sink that keeps everything in memory (tests, `backtest`).
#[derive(Default)]
pub struct Collect {
    /// Seconds received.
    pub seconds: Vec<SecondOutput>,
}

impl Sink for Collect {
    fn name(&self) -> &'static str {
        "memory"
    }
    fn write(&mut self, so: &SecondOutput, _alerts: &[AlertDoc]) -> Result<(), SinkError> {
        self.seconds.push(so.clone());
        Ok(())
    }
    fn write_alerts(&mut self, _: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(()) // replay runs layer 1 only
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Renders a summary as its one JSON line.
pub fn summary_line(s: &Summary) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "{}".into())
}
