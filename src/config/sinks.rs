//! `[[sink]]` and `[spool]`: where rollups and alerts go, and the on-disk spool in front of
//! Kafka and OpenSearch.
//!
//! May depend on: nothing outside `config`. Lives on: the main thread at start-up.

use super::{err, Config, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// An output sink.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum Sink {
    /// JSON lines on standard output.
    Stdout {
        /// Write rollups.
        #[serde(default = "yes")]
        rollups: bool,
        /// Write alerts.
        #[serde(default = "yes")]
        alerts: bool,
    },
    /// JSON lines appended to a file.
    File {
        /// File path.
        path: PathBuf,
        /// Write rollups.
        #[serde(default = "yes")]
        rollups: bool,
        /// Write alerts.
        #[serde(default = "yes")]
        alerts: bool,
    },
    /// Apache Kafka (rdkafka): rollups keyed by `dimension:key`, alerts; idempotent producer,
    /// acks=all, compression; spooled on disk while Kafka is unreachable.
    Kafka(KafkaSink),
    /// Valkey/Redis: the hot 5-minute window (top-N and series queries).
    Valkey(ValkeySink),
    /// OpenSearch `_bulk`: history with retention, alerts index; spooled while unreachable.
    Opensearch(OpensearchSink),
}

/// `[[sink]] type = "kafka"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSink {
    /// Bootstrap servers, e.g. "10.0.0.5:9092,10.0.0.6:9092".
    pub brokers: String,
    /// Rollups topic.
    #[serde(default = "rollups_topic")]
    pub rollups_topic: String,
    /// Alerts topic.
    #[serde(default = "alerts_topic")]
    pub alerts_topic: String,
    /// Incident events topic (open, update, resolve; keyed by incident id).
    #[serde(default = "incidents_topic")]
    pub incidents_topic: String,
    /// Layer-3 anomaly results topic (the anomaly-detection plugin's result documents).
    #[serde(default = "anomaly_results_topic")]
    pub anomaly_results_topic: String,
    /// Host rows topic (metric series and syslog counts per second, JSON).
    #[serde(default = "hosts_topic")]
    pub hosts_topic: String,
    /// Compression codec.
    #[serde(default)]
    pub compression: Compression,
    /// Partitions of topics flowshard creates when they are missing.
    #[serde(default = "partitions")]
    pub partitions: i32,
    /// Replication factor of topics flowshard creates when they are missing.
    #[serde(default = "one")]
    pub replication_factor: i32,
    /// Extra librdkafka properties (TLS, SASL: "security.protocol", "sasl.mechanism", …).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
    /// Write rollups.
    #[serde(default = "yes")]
    pub rollups: bool,
    /// Write alerts.
    #[serde(default = "yes")]
    pub alerts: bool,
    /// Write every decoded (and enriched) flow record to `flows_topic` (protobuf
    /// `proto/flow.proto`; off by default: it is the biggest stream flowshard can produce).
    #[serde(default)]
    pub flows: bool,
    /// Raw flows topic.
    #[serde(default = "flows_topic")]
    pub flows_topic: String,
    /// 1-in-N output sampling of the raw flows topic (1 = every record; replay is exact only then).
    #[serde(default = "one_u32")]
    pub flows_sample: u32,
}

/// Kafka compression codec (`compression.type`).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4 (the default: cheap on the I/O core).
    #[default]
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// librdkafka's name.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How long one OpenSearch rollup index spans.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum IndexPeriod {
    /// `<prefix>-rollups-YYYYMMDD-HHMM`.
    Minute,
    /// `<prefix>-rollups-YYYYMMDD-HH`.
    Hour,
}

/// `[[sink]] type = "valkey"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValkeySink {
    /// redis://[user:password@]host:port[/db] or rediss:// for TLS.
    pub url: String,
    /// Key prefix (several deployments may share one server).
    #[serde(default = "fs_prefix")]
    pub prefix: String,
    /// Seconds of output queued in memory while Valkey is unreachable (older ones are dropped).
    #[serde(default = "valkey_queue")]
    pub queue_seconds: usize,
}

/// `[[sink]] type = "opensearch"`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OpensearchSink {
    /// Base URL, e.g. "https://search.example:9200".
    pub url: String,
    /// Index name prefix: `<prefix>-rollups-<period>`, `<prefix>-alerts`.
    #[serde(default = "index_prefix")]
    pub index_prefix: String,
    /// Rollups are deleted this many minutes after their period ends.
    #[serde(default = "retention")]
    pub retention_minutes: u64,
    /// Rollup index period (default: minute when retention < 3 h, else hour).
    #[serde(default)]
    pub index_period: Option<IndexPeriod>,
    /// Replicas of each index.
    #[serde(default)]
    pub replicas: u32,
    /// Basic-auth user (with `password`).
    #[serde(default)]
    pub username: String,
    /// Basic-auth password.
    #[serde(default)]
    pub password: String,
    /// PEM file of a CA to trust for https.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The on-disk spool in front of Kafka and OpenSearch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Spool {
    /// Directory (default: `<state_dir>/spool`).
    pub dir: Option<PathBuf>,
    /// Upper bound on disk, per sink, in MiB (oldest frames dropped and counted beyond it).
    pub max_mib: u64,
}

impl Default for Spool {
    fn default() -> Self {
        Spool { dir: None, max_mib: 1024 }
    }
}

fn flows_topic() -> String {
    "flowshard.flows".into()
}
fn one_u32() -> u32 {
    1
}
fn rollups_topic() -> String {
    "flowshard.rollups".into()
}
fn alerts_topic() -> String {
    "flowshard.alerts".into()
}
fn incidents_topic() -> String {
    "flowshard.incidents".into()
}
fn hosts_topic() -> String {
    "flowshard.hosts".into()
}

fn anomaly_results_topic() -> String {
    "flowshard.anomaly-results".into()
}
fn partitions() -> i32 {
    6
}
fn one() -> i32 {
    1
}
fn fs_prefix() -> String {
    "fs".into()
}
fn valkey_queue() -> usize {
    300
}
fn index_prefix() -> String {
    "flowshard".into()
}
fn retention() -> u64 {
    6
}

impl KafkaSink {
    /// A Kafka sink to `brokers` with every other setting at its default.
    pub fn new(brokers: &str) -> KafkaSink {
        KafkaSink {
            brokers: brokers.to_string(),
            rollups_topic: rollups_topic(),
            alerts_topic: alerts_topic(),
            incidents_topic: incidents_topic(),
            anomaly_results_topic: anomaly_results_topic(),
            hosts_topic: hosts_topic(),
            compression: Compression::default(),
            partitions: partitions(),
            replication_factor: one(),
            properties: Default::default(),
            rollups: yes(),
            alerts: yes(),
            flows: false,
            flows_topic: flows_topic(),
            flows_sample: 1,
        }
    }
}

impl ValkeySink {
    /// A Valkey sink at `url` with every other setting at its default.
    pub fn new(url: &str) -> ValkeySink {
        ValkeySink { url: url.to_string(), prefix: fs_prefix(), queue_seconds: valkey_queue() }
    }
}

impl OpensearchSink {
    /// An OpenSearch sink at `url` with every other setting at its default.
    pub fn new(url: &str) -> OpensearchSink {
        OpensearchSink {
            url: url.to_string(),
            index_prefix: index_prefix(),
            retention_minutes: retention(),
            index_period: None,
            replicas: 0,
            username: String::new(),
            password: String::new(),
            ca_file: None,
        }
    }
}

fn yes() -> bool {
    true
}

impl Config {
    /// Checks `[[sink]]` and `[spool]`.
    pub(super) fn validate_sinks(&self, e: &mut Vec<ConfigError>) {
        if self.sink.is_empty() {
            e.push(err("sink", "no sink configured", "add [[sink]] type = \"stdout\""));
        }
        for (i, s) in self.sink.iter().enumerate() {
            self.validate_sink(i, s, e);
        }
        if self.spool.max_mib < 16 {
            e.push(err("spool.max_mib", "must be at least 16", "use e.g. 1024 (per sink)"));
        }
    }

    pub(super) fn validate_sink(&self, i: usize, s: &Sink, e: &mut Vec<ConfigError>) {
        let f = |name: &str| format!("sink[{i}].{name}");
        match s {
            Sink::Kafka(k) => {
                if k.brokers
                    .split(',')
                    .any(|b| b.trim().rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()))
                {
                    e.push(err(
                        f("brokers"),
                        format!("{:?} is not a list of host:port", k.brokers),
                        "use e.g. \"10.0.0.5:9092,10.0.0.6:9092\"",
                    ));
                }
                for (name, t) in [
                    ("rollups_topic", &k.rollups_topic),
                    ("alerts_topic", &k.alerts_topic),
                    ("incidents_topic", &k.incidents_topic),
                    ("anomaly_results_topic", &k.anomaly_results_topic),
                    ("hosts_topic", &k.hosts_topic),
                    ("flows_topic", &k.flows_topic),
                ] {
                    if t.is_empty()
                        || t.len() > 249
                        || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        e.push(err(
                            f(name),
                            format!("{t:?} is not a valid topic name"),
                            "use letters, digits, '.', '_' and '-' (at most 249)",
                        ));
                    }
                }
                if k.flows_sample == 0 || k.flows_sample > 1_000_000 {
                    e.push(err(
                        f("flows_sample"),
                        format!("{} is not a 1-in-N sampling rate", k.flows_sample),
                        "use 1 (every record) up to 1000000",
                    ));
                }
                if k.partitions < 1 || k.replication_factor < 1 {
                    e.push(err(
                        f("partitions"),
                        "partitions and replication_factor must be at least 1",
                        "use e.g. partitions = 6, replication_factor = 3",
                    ));
                }
                for key in ["enable.idempotence", "acks", "bootstrap.servers"] {
                    if k.properties.contains_key(key) {
                        e.push(err(
                            f(&format!("properties.{key}")),
                            "is set by flowshard (exactly-once delivery needs it)",
                            "remove it",
                        ));
                    }
                }
            }
            Sink::Valkey(v) => {
                if !["redis://", "rediss://", "valkey://", "valkeys://", "unix://"].iter().any(|p| v.url.starts_with(p))
                {
                    e.push(err(
                        f("url"),
                        format!("{:?} is not a redis:// URL", v.url),
                        "use e.g. \"redis://127.0.0.1:6379\" (rediss:// for TLS)",
                    ));
                }
                if v.prefix.is_empty() || v.prefix.contains([' ', ':']) {
                    e.push(err(f("prefix"), "must be non-empty without spaces or ':'", "use e.g. \"fs\""));
                }
                if v.queue_seconds == 0 || v.queue_seconds > 3600 {
                    e.push(err(f("queue_seconds"), "must be within 1..=3600", "use e.g. 300"));
                }
            }
            Sink::Opensearch(o) => {
                if !(o.url.starts_with("http://") || o.url.starts_with("https://")) {
                    e.push(err(
                        f("url"),
                        format!("{:?} is not an http(s):// URL", o.url),
                        "use e.g. \"http://127.0.0.1:9200\"",
                    ));
                }
                if o.index_prefix.is_empty()
                    || !o
                        .index_prefix
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
                {
                    e.push(err(
                        f("index_prefix"),
                        format!("{:?} is not a valid index name prefix", o.index_prefix),
                        "use lowercase letters, digits, '-', '_' or '.'",
                    ));
                }
                if o.retention_minutes == 0 {
                    e.push(err(f("retention_minutes"), "must be at least 1", "use e.g. 6 (minutes), 10080 for a week"));
                }
                if o.username.is_empty() != o.password.is_empty() {
                    e.push(err(f("password"), "username and password go together", "set both or neither"));
                }
            }
            Sink::Stdout { .. } | Sink::File { .. } => {}
        }
    }
}
