//! `flowshard replay`: feeds the UDP payloads of a capture through the same decode →
//! aggregate → exchange → detect path the shards run ([`crate::pipeline::Engine`]), with each
//! packet's capture timestamp as its arrival time, runs layer 3 on the finished seconds (the
//! same engine the layer-3 job runs, execution times stamped with data time so a replay is
//! deterministic), and writes rollups, alerts, layer-3 results and the incidents they make
//! ([`crate::alert::Incidents`], the same tracker the I/O loop runs) as JSON lines.
//!
//! Lives on: the main thread (a replay is single-threaded and deterministic).

pub mod kafka;
pub mod pcap;

use crate::alert::{AlertDoc, IncidentConfig, IncidentEvent, Incidents};
use crate::detect::layer3::{Layer3, Layer3Engine};
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
    /// Records outside the `--where` filter (decoded and counted in `records`, not
    /// aggregated); absent without a filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filtered_out: Option<u64>,
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
    /// Layer-3 results (entity intervals scored).
    pub anomaly_results: u64,
    /// Of those, anomalies (grade > 0).
    pub layer3_anomalies: u64,
    /// Sources layer 3 modelled at the end.
    pub layer3_entities: u64,
    /// Frames in the capture that were not UDP.
    pub skipped_frames: u64,
    /// Shards used.
    pub shards: usize,
    /// Replay from the raw-flows topic: Kafka messages read, and those that did not decode
    /// or came later than the reorder window (both counted, never fed silently).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kafka: Option<kafka::KafkaCounts>,
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
    /// Reading the raw-flows topic failed.
    #[error("kafka: {0}")]
    Kafka(String),
}

/// What runs after the pipeline: incidents, layer 3, and the appliance id of documents.
pub struct Downstream<'a> {
    /// Incident settings.
    pub incidents: &'a IncidentConfig,
    /// Layer-3 settings (`enabled = false`: layer 1 only).
    pub layer3: &'a Layer3,
    /// Appliance id.
    pub appliance: &'a str,
}

/// Replays a capture held in memory through `shards` shards, writing each finished second to
/// `sink`. `realtime` paces the replay by the capture's timestamps.
pub fn replay(
    data: &[u8],
    cfg: &PipelineConfig,
    down: &Downstream<'_>,
    shards: usize,
    realtime: bool,
    sink: &mut dyn Sink,
) -> Result<Summary, ReplayError> {
    let mut rd = PcapReader::new(data)?;
    let mut run = Session::new(cfg, down, shards, sink);
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
        run.engine.feed(p.payload, p.src, p.src_port, p.ts_ns / 1_000_000_000, &mut run.done);
        run.write_out()?;
    }
    let mut sum = run.finish()?;
    sum.skipped_frames = rd.stats.not_udp;
    Ok(sum)
}

/// Replays the raw-flows topic (a time range of it) through `shards` shards into `sink`.
pub fn replay_kafka(
    src: &kafka::KafkaSource,
    cfg: &PipelineConfig,
    down: &Downstream<'_>,
    shards: usize,
    sink: &mut dyn Sink,
) -> Result<Summary, ReplayError> {
    let mut run = Session::new(cfg, down, shards, sink);
    let counts = kafka::feed(src, &mut run)?;
    let mut sum = run.finish()?;
    sum.kafka = Some(counts);
    Ok(sum)
}

/// One replay in progress, whatever feeds it (a capture, the raw-flows topic): the engine,
/// what runs after it, and the summary.
pub struct Session<'s> {
    /// The pipeline.
    pub engine: Engine,
    /// Seconds the engine finished and `write_out` has not written yet.
    pub done: Vec<SecondOutput>,
    sum: Summary,
    inc: Out,
    sink: &'s mut dyn Sink,
    namer: Option<crate::enrich::Namer>,
}

impl<'s> Session<'s> {
    /// A replay through `shards` shards into `sink`.
    pub fn new(cfg: &PipelineConfig, down: &Downstream<'_>, shards: usize, sink: &'s mut dyn Sink) -> Session<'s> {
        let engine = Engine::new(cfg, shards);
        let sum = Summary { shards: engine.shards.len(), ..Default::default() };
        let inc = Out {
            incidents: Incidents::new(down.incidents),
            events: Vec::new(),
            layer3: down.layer3.enabled.then(|| Layer3Engine::new(down.layer3)),
            appliance: down.appliance.to_string(),
            results: Vec::new(),
        };
        let namer = cfg.enrich.clone().map(|t| crate::enrich::Namer::fixed(t, &cfg.derived));
        Session { engine, done: Vec::new(), sum, inc, sink, namer }
    }

    /// Writes the finished seconds, with layer 3 and incidents.
    pub fn write_out(&mut self) -> Result<(), ReplayError> {
        if let Some(n) = &mut self.namer {
            for so in &mut self.done {
                n.annotate(&mut so.rollups);
            }
        }
        write_out(&mut self.done, self.sink, &mut self.sum, &mut self.inc)
    }

    /// Ends the input: closes the open second, resolves open incidents, flushes the sink and
    /// returns the summary.
    pub fn finish(mut self) -> Result<Summary, ReplayError> {
        self.engine.finish(&mut self.done);
        let last = self.done.last().map(|so| so.second);
        self.write_out()?;
        let Session { engine, mut sum, mut inc, sink, .. } = self;
        if let Some(last) = last.or(inc.incidents.open().map(|e| e.last_evidence).max()) {
            inc.incidents.resolve_all(last, &mut inc.events);
            sink.write_incidents(&inc.events)?;
        }
        sum.incidents = inc.incidents.counters.opened;
        if let Some(l3) = &inc.layer3 {
            sum.anomaly_results = l3.counters.results;
            sum.layer3_anomalies = l3.counters.anomalies;
            sum.layer3_entities = l3.entities() as u64;
        }
        sink.flush()?;
        let t = engine.ingest_totals();
        sum.datagrams = engine.datagrams;
        sum.records = t.records;
        sum.bytes = t.bytes;
        sum.packets = t.packets;
        sum.filtered_out = engine.shards.first().and_then(|s| s.filters()).map(|_| t.filtered_out);
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
        Ok(sum)
    }
}

/// The incident tracker, its events' buffer, and layer 3.
struct Out {
    incidents: Incidents,
    events: Vec<IncidentEvent>,
    layer3: Option<Layer3Engine>,
    appliance: String,
    results: Vec<crate::detect::layer3::AnomalyResult>,
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
        let mut docs: Vec<AlertDoc> = so.alerts.iter().map(AlertDoc::from_layer1).collect();
        sink.write(&so, &docs)?;
        if let Some(l3) = &mut inc.layer3 {
            let (second, rows) = crate::pipeline::layer3_rows(&so);
            inc.results.clear();
            if let Err(e) = l3.observe(second, &rows, second * 1000, &mut inc.results) {
                tracing::warn!("layer 3: {e}");
            }
            let iv = l3.config().interval_s;
            if !inc.results.is_empty() {
                sink.write_results(&crate::sink::result_docs(&inc.results, &inc.appliance, iv))?;
            }
            let l3alerts = crate::alert::layer3_alerts(&l3.take_confirmed(), iv);
            if !l3alerts.is_empty() {
                sink.write_alerts(&l3alerts)?;
                docs.extend(l3alerts);
            }
        }
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
