//! Sinks: where finished seconds and alerts go. One [`Sink`] trait as the I/O loop sees it, one
//! factory ([`from_config`]), one delivery layer ([`delivery`]: the on-disk spool front for
//! Kafka and OpenSearch, the bounded queue front for Valkey, counters per sink and drop reason,
//! and the one retry driver every spooled backend runs), and per service only its protocol code:
//! [`jsonl`], [`kafka`], [`valkey`], [`opensearch`], [`webhook`]. The raw-flows topic
//! ([`flows`]) is fed by the shards directly (its own queue, encoder thread and spool), not
//! through the I/O loop.
//!
//! A sink never blocks the I/O loop: `write` renders and hands on; delivery runs on a thread of
//! the sink's own, pinned to the I/O core.
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`, `detect` (layer-3 results). Lives on: I/O cores.

pub mod alertmanager;
pub mod delivery;
pub mod flows;
pub mod format;
pub mod frame;
pub mod jsonl;
pub mod kafka;
pub mod opensearch;
pub mod spool;
pub mod valkey;
pub mod webhook;

use crate::alert::{AlertDoc, IncidentEvent};
use crate::config::{Config, Sink as SinkCfg};
use crate::pipeline::SecondOutput;
use delivery::SinkStats;
use std::sync::Arc;

/// Typed sink errors.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing to a file, standard output or a thread failed.
    #[error("sink {sink}: {source}")]
    Io {
        /// Sink name.
        sink: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The sink's on-disk spool failed.
    #[error("sink {sink}: spool: {source}")]
    Spool {
        /// Sink name.
        sink: &'static str,
        /// Cause.
        #[source]
        source: spool::SpoolError,
    },
    /// An OpenSearch client could not be built.
    #[error(transparent)]
    Opensearch(#[from] opensearch::OsError),
}

/// Something that takes complete seconds.
pub trait Sink {
    /// Stable sink name (counter label).
    fn name(&self) -> &'static str;
    /// Writes one second: its rollups and its layer-1 alerts (already through the alert gate
    /// and in the shared schema; converted once, by the I/O loop).
    fn write(&mut self, so: &SecondOutput, alerts: &[AlertDoc]) -> Result<(), SinkError>;
    /// Flushes buffers (end of a batch of seconds, and at shutdown).
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Writes alerts of layers 2 and 3 (already through the alert gate).
    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError>;
    /// Writes incident events (open, update, resolve) of every layer. Sinks that page
    /// (webhook, Alertmanager) take only these; the default ignores them.
    fn write_incidents(&mut self, _events: &[IncidentEvent]) -> Result<(), SinkError> {
        Ok(())
    }
    /// Writes layer-3 anomaly results, already rendered (JSON lines, OpenSearch
    /// `<prefix>-anomaly-results`, Kafka `anomaly_results_topic`); the default ignores them.
    fn write_results(&mut self, _docs: &[Doc]) -> Result<(), SinkError> {
        Ok(())
    }
    /// Writes host rows (metric series and syslog counts), already rendered
    /// ([`host_docs`]): JSON lines, Kafka `hosts_topic`, OpenSearch `<prefix>-hosts-*`; the
    /// default ignores them.
    fn write_hosts(&mut self, _docs: &[Doc]) -> Result<(), SinkError> {
        Ok(())
    }
    /// Shutdown begins: no more seconds come. The sink's thread starts its grace period now;
    /// the I/O loop closes every sink first and then waits for each ([`Sink::finish`]), so the
    /// grace periods run at the same time, not one after the other.
    fn close(&mut self) {}
    /// Shutdown ends: deliver what is queued (bounded by the grace period) and wait for the
    /// sink's thread.
    fn finish(&mut self) {}
}

/// A document rendered once by its producer (layer-3 anomaly results): id (OpenSearch `_id`,
/// Kafka key), its second, and its JSON object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Doc {
    /// Document id.
    pub id: String,
    /// Its second (Unix).
    pub second: u64,
    /// JSON object, one line.
    pub json: String,
}

/// The documents of one merged second of host rows (rendered once, for every sink).
pub fn host_docs(hs: &crate::pipeline::host::HostSecond, appliance: &str) -> Vec<Doc> {
    hs.rows
        .iter()
        .map(|r| {
            let mut json = String::with_capacity(256);
            format::host_row(&mut json, appliance, r);
            Doc { id: format::host_row_id(appliance, r), second: r.second, json }
        })
        .collect()
}

/// The documents of layer-3 results (rendered once, for every sink).
pub fn result_docs(results: &[crate::detect::layer3::AnomalyResult], appliance: &str, interval_s: u64) -> Vec<Doc> {
    results
        .iter()
        .map(|r| Doc {
            id: r.doc_id(appliance),
            second: r.data_start,
            json: r.to_json(appliance, interval_s).to_string(),
        })
        .collect()
}

/// Sinks as the I/O loop holds them.
pub type Sinks = Vec<Box<dyn Sink + Send>>;

/// Builds every sink a configuration names, in its order (remote ones with their delivery
/// threads started, pinned to `cpu`), plus the webhook; returns them and the remote sinks'
/// counters.
pub fn from_config(cfg: &Config, cpu: Option<usize>) -> Result<(Sinks, Vec<Arc<SinkStats>>), SinkError> {
    let mut sinks: Sinks = Vec::new();
    let mut stats = Vec::new();
    let dir = cfg.spool.dir.clone().unwrap_or_else(|| cfg.general.state_dir.join("spool"));
    let max = cfg.spool.max_mib << 20;
    let app = cfg.general.appliance_id.as_str();
    let mut remote: Sinks = Vec::new();
    for s in &cfg.sink {
        match s {
            SinkCfg::Stdout { rollups, alerts } => {
                sinks.push(Box::new(jsonl::JsonLines::stdout(app, *rollups, *alerts)))
            }
            SinkCfg::File { path, rollups, alerts } => {
                sinks.push(Box::new(jsonl::JsonLines::file(path, app, *rollups, *alerts)?))
            }
            SinkCfg::Kafka(k) => {
                let sink = kafka::start("kafka", k, app, &dir, max, cpu)?;
                stats.push(sink.stats());
                remote.push(Box::new(sink));
            }
            SinkCfg::Opensearch(o) => {
                let sink = opensearch::start(o, app, &dir, max, cpu)?;
                stats.push(sink.stats());
                remote.push(Box::new(sink));
            }
            SinkCfg::Valkey(v) => {
                let sink = valkey::start(v, app, cpu)?;
                stats.push(sink.stats());
                remote.push(Box::new(sink));
            }
        }
    }
    // JSON lines first, remote sinks after them (the order the I/O loop has always used).
    sinks.extend(remote);
    if let Some(a) = &cfg.alerts.alertmanager {
        let sink = alertmanager::AlertmanagerSink::start(a, app, cpu)?;
        stats.push(sink.stats());
        sinks.push(Box::new(sink));
    }
    if let Some(w) = &cfg.alerts.webhook {
        let sink = webhook::WebhookSink::start(w, app, cpu)?;
        stats.push(sink.stats());
        sinks.push(Box::new(sink));
    }
    Ok((sinks, stats))
}
