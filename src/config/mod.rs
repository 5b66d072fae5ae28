//! The TOML configuration, in two phases: [`Config::parse`] (serde, unknown fields rejected,
//! documented defaults, units in field names) and a pure [`Config::validate`] against a
//! [`HostInfo`], whose errors name the field and the fix. `flowshard validate` runs exactly this.
//!
//! May depend on: `model`, `decode`, `aggregate`, `detect` (to build their settings).
//! Lives on: the main thread at start-up.

use crate::aggregate::AggConfig;
use crate::decode::DecoderConfig;
pub use crate::detect::layer2::Layer2;
use crate::detect::DetectConfig;
use crate::model::{Dimension, Ip};
use crate::pipeline::PipelineConfig;

mod overrides;
pub use overrides::Overrides;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Process-wide settings.
    pub general: General,
    /// UDP listeners; every listener accepts every protocol (sniffed per datagram).
    pub listener: Vec<Listener>,
    /// Which CPUs run shards and I/O.
    pub cores: Cores,
    /// Decoder settings.
    pub decode: Decode,
    /// 1-second aggregation.
    pub aggregate: Aggregate,
    /// Layer-1 detection.
    pub detect: Detect,
    /// Shard → I/O-core hand-off.
    pub handoff: Handoff,
    /// Output sinks.
    pub sink: Vec<Sink>,
    /// On-disk spool for Kafka and OpenSearch.
    pub spool: Spool,
    /// The alert pipeline shared by every layer.
    pub alerts: Alerts,
    /// Layer 2: Holt-Winters pattern job in OpenSearch.
    pub layer2: Layer2,
    /// HTTP server (metrics, health, query API) on the I/O core.
    pub http: Http,
}

/// The HTTP server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Serve HTTP.
    pub enabled: bool,
    /// Address; anything but loopback requires `token`. Port 0 picks a free port.
    pub address: String,
    /// Bearer token required on every request (empty = none; loopback only).
    pub token: String,
}

impl Default for Http {
    fn default() -> Self {
        Http { enabled: true, address: "127.0.0.1:9280".into(), token: String::new() }
    }
}

/// Process-wide settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Directory for persisted state (templates). Created if missing.
    pub state_dir: PathBuf,
    /// Seconds between one-line status logs on stderr (0 = off).
    pub status_interval_s: u64,
    /// Name of this appliance in outputs (several appliances may share sinks).
    pub appliance_id: String,
}

impl Default for General {
    fn default() -> Self {
        General { state_dir: PathBuf::from("state"), status_interval_s: 10, appliance_id: "flowshard".into() }
    }
}

/// One UDP listener.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Address and port, e.g. `"0.0.0.0:2055"` or `"[::]:6343"`.
    pub address: String,
    /// `SO_RCVBUF` per shard socket, bytes (the kernel caps it at `net.core.rmem_max`).
    #[serde(default = "default_rcvbuf")]
    pub recv_buffer_bytes: usize,
}

fn default_rcvbuf() -> usize {
    32 << 20
}

/// CPU layout.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Cores {
    /// CPUs that run one shard each. Empty = all CPUs but the last (at least one shard).
    pub shards: Vec<usize>,
    /// CPUs for the I/O threads (sinks). Empty = the last CPU.
    pub io: Vec<usize>,
    /// Pin threads to their CPUs (turn off on shared development machines).
    pub pin: Option<bool>,
}

/// Decoder settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Decode {
    /// NetFlow v9/IPFIX templates cached per shard; more are refused and counted.
    pub max_templates: usize,
    /// A template not refreshed for this long expires, seconds.
    pub template_timeout_s: u64,
    /// Sampling rates forced per exporter (overrides what the exporter announces).
    pub sampling_override: Vec<SamplingOverride>,
}

impl Default for Decode {
    fn default() -> Self {
        Decode { max_templates: 8192, template_timeout_s: 3600, sampling_override: Vec::new() }
    }
}

/// A forced sampling rate for one exporter.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SamplingOverride {
    /// Exporter address (NetFlow/IPFIX source, sFlow agent).
    pub exporter: String,
    /// 1-in-N rate.
    pub rate: u32,
}

/// Aggregation settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Aggregate {
    /// Dimensions to roll up, by name: total, src_ip, dst_ip, src_port, dst_port, proto,
    /// exporter, exporter_in_if, exporter_out_if, src_as, dst_as.
    pub dimensions: Vec<String>,
    /// Keys per dimension per shard per second; beyond it the smallest keys fold into `other`.
    pub max_keys: usize,
    /// Rollups emitted per dimension per second (the rest is folded into `other`).
    pub top_k: usize,
    /// Records longer than this are spread over their duration for detection, milliseconds.
    pub long_flow_ms: u32,
}

impl Default for Aggregate {
    fn default() -> Self {
        let a = AggConfig::default();
        Aggregate {
            dimensions: a.dimensions.iter().map(|d| d.name().to_string()).collect(),
            max_keys: a.max_keys,
            top_k: a.top_k,
            long_flow_ms: a.long_flow_ms,
        }
    }
}

/// Layer-1 detection settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Detect {
    /// Run layer-1 detection.
    pub enabled: bool,
    /// Dimensions with detectors (each must also be aggregated).
    pub dimensions: Vec<String>,
    /// EWMA weight of each new second, 0 < alpha < 1.
    pub alpha: f64,
    /// Seconds of history before a key may alert.
    pub warmup_s: u32,
    /// |z| threshold on the log scale (reference design: 3.5).
    pub z_threshold: f64,
    /// Standard-deviation floor on the log scale.
    pub min_std: f64,
    /// Quiet period per (key, metric) after an alert, seconds.
    pub cooldown_s: u64,
    /// CUSUM slack, standard deviations.
    pub cusum_k: f64,
    /// CUSUM decision threshold.
    pub cusum_h: f64,
    /// EWMA weight of the slow (minutes) baseline used for slow drifts.
    pub slow_alpha: f64,
    /// CUSUM threshold against the slow baseline.
    pub slow_cusum_h: f64,
    /// Alert on drops (silent interfaces, vanished services).
    pub drop_alerts: bool,
    /// Consecutive anomalous seconds before a spike alert (1 = in the second itself).
    pub spike_confirm_s: u8,
    /// Smallest bytes/s worth an alert.
    pub min_bytes_per_s: f64,
    /// Smallest packets/s worth an alert.
    pub min_packets_per_s: f64,
    /// Smallest flows/s worth an alert.
    pub min_flows_per_s: f64,
    /// Smallest distinct count worth an alert.
    pub min_distinct: f64,
    /// Keys with detector state per dimension per owner shard.
    pub max_tracked_keys: usize,
    /// Forget a key unseen for this long, seconds.
    pub idle_evict_s: u64,
}

impl Default for Detect {
    fn default() -> Self {
        let d = DetectConfig::default();
        Detect {
            enabled: true,
            dimensions: d.dimensions.iter().map(|d| d.name().to_string()).collect(),
            alpha: d.alpha,
            warmup_s: d.warmup_s,
            z_threshold: d.z_threshold,
            min_std: d.min_std,
            cooldown_s: d.cooldown_s,
            cusum_k: d.cusum_k,
            cusum_h: d.cusum_h,
            slow_alpha: d.slow_alpha,
            slow_cusum_h: d.slow_cusum_h,
            drop_alerts: d.drop_alerts,
            spike_confirm_s: d.spike_confirm_s,
            min_bytes_per_s: d.min_value[0],
            min_packets_per_s: d.min_value[1],
            min_flows_per_s: d.min_value[2],
            min_distinct: d.min_value[3],
            max_tracked_keys: d.max_tracked,
            idle_evict_s: d.idle_evict_s,
        }
    }
}

/// What a full bounded queue does.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Drop the item that does not fit (counted as `queue_full`); the shard never waits.
    DropNewest,
}

/// Shard → I/O hand-off.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Handoff {
    /// Capacity of each owner → I/O queue, in seconds of output.
    pub queue_seconds: usize,
    /// Policy when the queue is full.
    pub when_full: WhenFull,
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff { queue_seconds: 64, when_full: WhenFull::DropNewest }
    }
}

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
    /// none, gzip, snappy, lz4 or zstd.
    #[serde(default = "lz4")]
    pub compression: String,
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
    /// Rollup index period: "minute" or "hour" (default: minute when retention < 3 h).
    #[serde(default)]
    pub index_period: Option<String>,
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

/// `[alerts]`: de-duplication, cooldown, feedback, webhook.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// After an alert on (layer, dimension, key), further alerts on it are held back this long.
    pub cooldown_s: u64,
    /// `flowshard feedback false-positive` silences the same alert this long.
    pub false_positive_silence_s: u64,
    /// Kafka topic read for operator feedback (when a Kafka sink is configured; "" = off).
    pub feedback_topic: String,
    /// Optional webhook.
    pub webhook: Option<Webhook>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            cooldown_s: 60,
            false_positive_silence_s: 86_400,
            feedback_topic: "flowshard.feedback".into(),
            webhook: None,
        }
    }
}

/// `[alerts.webhook]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// URL to POST each alert to.
    pub url: String,
    /// "generic" (the alert JSON), "slack" (incoming-webhook text) or "pagerduty" (Events v2).
    #[serde(default = "generic")]
    pub format: String,
    /// PagerDuty integration (routing) key.
    #[serde(default)]
    pub routing_key: String,
    /// Only alerts with at least this score.
    #[serde(default)]
    pub min_score: f64,
}

fn generic() -> String {
    "generic".into()
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

fn rollups_topic() -> String {
    "flowshard.rollups".into()
}
fn alerts_topic() -> String {
    "flowshard.alerts".into()
}
fn partitions() -> i32 {
    6
}
fn one() -> i32 {
    1
}
fn lz4() -> String {
    "lz4".into()
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
            compression: lz4(),
            partitions: partitions(),
            replication_factor: one(),
            properties: Default::default(),
            rollups: yes(),
            alerts: yes(),
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

impl Default for Config {
    fn default() -> Self {
        Config {
            general: General::default(),
            listener: ["0.0.0.0:2055", "0.0.0.0:4739", "0.0.0.0:6343"]
                .iter()
                .map(|a| Listener { address: a.to_string(), recv_buffer_bytes: default_rcvbuf() })
                .collect(),
            cores: Cores::default(),
            decode: Decode::default(),
            aggregate: Aggregate::default(),
            detect: Detect::default(),
            handoff: Handoff::default(),
            sink: vec![Sink::Stdout { rollups: true, alerts: true }],
            spool: Spool::default(),
            alerts: Alerts::default(),
            layer2: Layer2::default(),
            http: Http::default(),
        }
    }
}

/// One validation problem: which field, what is wrong, how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field, e.g. `cores.shards[2]`.
    pub field: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.field, self.problem, self.fix)
    }
}

/// What validation needs to know about the host (passed in, so validation stays pure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// CPU ids this process may run on.
    pub cpus: Vec<usize>,
}

impl HostInfo {
    /// Reads the CPUs this process may use.
    pub fn detect() -> HostInfo {
        let mut cpus: Vec<usize> =
            core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
        if cpus.is_empty() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus = (0..n).collect();
        }
        cpus.sort_unstable();
        HostInfo { cpus }
    }
}

/// A resolved CPU layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// One CPU per shard.
    pub shards: Vec<usize>,
    /// I/O CPUs.
    pub io: Vec<usize>,
    /// Pin threads.
    pub pin: bool,
}

fn err(field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into(), fix: fix.into() }
}

impl Config {
    /// Parses TOML; unknown fields are errors that name the field.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "config".into());
            err(field, msg, "correct the TOML (see README, section Configuration, for every field)")
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(path.display().to_string(), format!("cannot read: {e}"), "pass an existing, readable file")
        })?;
        Config::parse(&text)
    }

    /// The CPU layout this config resolves to on `host`.
    pub fn layout(&self, host: &HostInfo) -> Layout {
        let cpus = &host.cpus;
        let last = cpus.last().copied().unwrap_or(0);
        let shards = if self.cores.shards.is_empty() {
            let n = cpus.len().saturating_sub(1).max(1);
            cpus.iter().copied().take(n).collect()
        } else {
            self.cores.shards.clone()
        };
        let io = if self.cores.io.is_empty() { vec![last] } else { self.cores.io.clone() };
        Layout { shards, io, pin: self.cores.pin.unwrap_or(true) }
    }

    /// Checks everything; returns every problem found (empty = valid).
    pub fn validate(&self, host: &HostInfo) -> Vec<ConfigError> {
        let mut e = Vec::new();
        if self.general.appliance_id.is_empty() || self.general.appliance_id.contains([':', ' ', '/']) {
            e.push(err(
                "general.appliance_id",
                "must be non-empty without ':', '/' or spaces",
                "use e.g. \"fs-par1-01\"",
            ));
        }
        if self.listener.is_empty() {
            e.push(err("listener", "no listener configured", "add [[listener]] address = \"0.0.0.0:2055\""));
        }
        let mut seen = Vec::new();
        for (i, l) in self.listener.iter().enumerate() {
            match l.address.parse::<SocketAddr>() {
                Err(_) => e.push(err(
                    format!("listener[{i}].address"),
                    format!("{:?} is not an IP:port", l.address),
                    "write an address and port such as \"0.0.0.0:2055\" or \"[::]:4739\" (no host names)",
                )),
                Ok(a) => {
                    if seen.contains(&a) {
                        e.push(err(
                            format!("listener[{i}].address"),
                            format!("{a} is listed twice"),
                            "remove the duplicate",
                        ));
                    }
                    seen.push(a);
                }
            }
            if l.recv_buffer_bytes < 65_536 {
                e.push(err(
                    format!("listener[{i}].recv_buffer_bytes"),
                    format!("{} is too small to absorb bursts", l.recv_buffer_bytes),
                    "use at least 65536; 33554432 (32 MiB) is recommended",
                ));
            }
        }
        let lay = self.layout(host);
        for (name, list) in [("cores.shards", &self.cores.shards), ("cores.io", &self.cores.io)] {
            for (i, c) in list.iter().enumerate() {
                if !host.cpus.contains(c) {
                    e.push(err(
                        format!("{name}[{i}]"),
                        format!("CPU {c} is not available to this process (available: {:?})", host.cpus),
                        "list only available CPU ids (see `flowshard plan`)",
                    ));
                }
                if list[..i].contains(c) {
                    e.push(err(format!("{name}[{i}]"), format!("CPU {c} is listed twice"), "list each CPU once"));
                }
            }
        }
        if lay.shards.len() > 1024 {
            e.push(err("cores.shards", "more than 1024 shards", "use at most one shard per CPU"));
        }
        if self.cores.pin.unwrap_or(true) {
            for c in &lay.shards {
                if lay.io.contains(c) && host.cpus.len() > 1 {
                    e.push(err(
                        "cores.io",
                        format!("CPU {c} is both a shard and an I/O core"),
                        "give I/O its own CPU, or set cores.pin = false",
                    ));
                }
            }
        }
        let mut dims = Vec::new();
        for (i, d) in self.aggregate.dimensions.iter().enumerate() {
            match Dimension::from_name(d) {
                None => e.push(err(
                    format!("aggregate.dimensions[{i}]"),
                    format!("unknown dimension {d:?}"),
                    format!("use one of: {}", Dimension::ALL.map(|d| d.name()).join(", ")),
                )),
                Some(x) if dims.contains(&x) => e.push(err(
                    format!("aggregate.dimensions[{i}]"),
                    format!("{d:?} listed twice"),
                    "remove the duplicate",
                )),
                Some(x) => dims.push(x),
            }
        }
        if dims.is_empty() {
            e.push(err("aggregate.dimensions", "no dimension", "add at least \"total\""));
        }
        if self.aggregate.max_keys < 16 || self.aggregate.max_keys > 16_777_216 {
            e.push(err(
                "aggregate.max_keys",
                format!("{} out of range", self.aggregate.max_keys),
                "use 16..=16777216 (default 65536)",
            ));
        }
        if self.aggregate.top_k == 0 {
            e.push(err("aggregate.top_k", "must be at least 1", "use e.g. 1000"));
        }
        let d = &self.detect;
        for (i, name) in d.dimensions.iter().enumerate() {
            match Dimension::from_name(name) {
                None => e.push(err(
                    format!("detect.dimensions[{i}]"),
                    format!("unknown dimension {name:?}"),
                    "use a dimension name from aggregate.dimensions",
                )),
                Some(x) if !dims.contains(&x) => e.push(err(
                    format!("detect.dimensions[{i}]"),
                    format!("{name:?} is not aggregated"),
                    format!("add {name:?} to aggregate.dimensions or remove it here"),
                )),
                _ => {}
            }
        }
        if !(d.alpha > 0.0 && d.alpha < 1.0) {
            e.push(err(
                "detect.alpha",
                format!("{} is not in (0, 1)", d.alpha),
                "use e.g. 0.02 (a half-life of about 35 s)",
            ));
        }
        if !(d.z_threshold > 0.0 && d.z_threshold.is_finite()) {
            e.push(err("detect.z_threshold", format!("{} must be a positive number", d.z_threshold), "use e.g. 3.5"));
        }
        if !(d.min_std > 0.0 && d.min_std.is_finite()) {
            e.push(err("detect.min_std", "must be positive", "use e.g. 0.3"));
        }
        if !(d.slow_alpha > 0.0 && d.slow_alpha < d.alpha) {
            e.push(err(
                "detect.slow_alpha",
                format!("{} must be in (0, detect.alpha)", d.slow_alpha),
                "use e.g. 0.001 (a half-life of about 11 minutes)",
            ));
        }
        if d.slow_cusum_h.is_nan() || d.slow_cusum_h <= 0.0 {
            e.push(err("detect.slow_cusum_h", "must be positive", "use e.g. 150"));
        }
        if !(d.cusum_h > 0.0 && d.cusum_k >= 0.0) {
            e.push(err("detect.cusum_h", "cusum_h must be > 0 and cusum_k >= 0", "use cusum_k = 1.0, cusum_h = 12.0"));
        }
        if d.max_tracked_keys == 0 {
            e.push(err("detect.max_tracked_keys", "must be at least 1", "use e.g. 10000"));
        }
        if self.decode.max_templates == 0 {
            e.push(err("decode.max_templates", "must be at least 1", "use e.g. 8192"));
        }
        if self.decode.template_timeout_s == 0 {
            e.push(err("decode.template_timeout_s", "must be at least 1", "use e.g. 3600"));
        }
        for (i, o) in self.decode.sampling_override.iter().enumerate() {
            if o.exporter.parse::<std::net::IpAddr>().is_err() {
                e.push(err(
                    format!("decode.sampling_override[{i}].exporter"),
                    format!("{:?} is not an IP address", o.exporter),
                    "write the exporter's address, e.g. \"192.0.2.1\"",
                ));
            }
            if o.rate == 0 {
                e.push(err(
                    format!("decode.sampling_override[{i}].rate"),
                    "0 is not a sampling rate",
                    "use 1 for unsampled, N for 1-in-N",
                ));
            }
        }
        if self.handoff.queue_seconds == 0 {
            e.push(err("handoff.queue_seconds", "must be at least 1", "use e.g. 64"));
        }
        if self.http.enabled {
            match self.http.address.parse::<SocketAddr>() {
                Err(_) => e.push(err("http.address", format!("{:?} is not an IP:port", self.http.address), "use e.g. \"127.0.0.1:9280\"")),
                Ok(a) if !a.ip().is_loopback() && self.http.token.is_empty() => e.push(err(
                    "http.token",
                    format!("http.address {a} is not loopback and no token is set"),
                    "set http.token to a long random string (clients send Authorization: Bearer <token>), or bind 127.0.0.1",
                )),
                Ok(_) => {}
            }
        }
        if self.sink.is_empty() {
            e.push(err("sink", "no sink configured", "add [[sink]] type = \"stdout\""));
        }
        for (i, s) in self.sink.iter().enumerate() {
            self.validate_sink(i, s, &mut e);
        }
        if let Some(w) = &self.alerts.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                e.push(err(
                    "alerts.webhook.url",
                    format!("{:?} is not an http(s):// URL", w.url),
                    "use e.g. \"https://hooks.slack.com/services/…\"",
                ));
            }
            if !["generic", "slack", "pagerduty"].contains(&w.format.as_str()) {
                e.push(err(
                    "alerts.webhook.format",
                    format!("unknown format {:?}", w.format),
                    "use generic, slack or pagerduty",
                ));
            }
            if w.format == "pagerduty" && w.routing_key.is_empty() {
                e.push(err(
                    "alerts.webhook.routing_key",
                    "PagerDuty needs the integration's routing key",
                    "set routing_key = \"…\"",
                ));
            }
        }
        let l2 = &self.layer2;
        if l2.enabled {
            if !self.sink.iter().any(|s| matches!(s, Sink::Opensearch(_))) {
                e.push(err(
                    "layer2.enabled",
                    "layer 2 runs against OpenSearch but no opensearch sink is configured",
                    "add [[sink]] type = \"opensearch\" or set enabled = false",
                ));
            }
            for (name, v) in [("layer2.alpha", l2.alpha), ("layer2.beta", l2.beta), ("layer2.gamma", l2.gamma)] {
                if !(v > 0.0 && v < 1.0) {
                    e.push(err(name, format!("{v} is outside (0, 1)"), "use e.g. alpha 0.3, beta 0.05, gamma 0.3"));
                }
            }
            if l2.season_buckets < 2 || l2.bucket_minutes == 0 || l2.interval_s == 0 {
                e.push(err(
                    "layer2.season_buckets",
                    "season_buckets ≥ 2, bucket_minutes ≥ 1 and interval_s ≥ 1 are needed",
                    "use season_buckets = 1440 with bucket_minutes = 1 (a day)",
                ));
            }
            for (i, d) in l2.dimensions.iter().enumerate() {
                if Dimension::from_name(d).is_none() {
                    e.push(err(
                        format!("layer2.dimensions[{i}]"),
                        format!("unknown dimension {d:?}"),
                        "use total, src_ip, dst_ip, dst_port, …",
                    ));
                }
            }
        }
        if self.spool.max_mib < 16 {
            e.push(err("spool.max_mib", "must be at least 16", "use e.g. 1024 (per sink)"));
        }
        e
    }

    fn validate_sink(&self, i: usize, s: &Sink, e: &mut Vec<ConfigError>) {
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
                if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&k.compression.as_str()) {
                    e.push(err(
                        f("compression"),
                        format!("unknown codec {:?}", k.compression),
                        "use none, gzip, snappy, lz4 or zstd",
                    ));
                }
                for (name, t) in [("rollups_topic", &k.rollups_topic), ("alerts_topic", &k.alerts_topic)] {
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
                if let Some(p) = &o.index_period {
                    if p != "minute" && p != "hour" {
                        e.push(err(f("index_period"), format!("unknown period {p:?}"), "use \"minute\" or \"hour\""));
                    }
                }
                if o.username.is_empty() != o.password.is_empty() {
                    e.push(err(f("password"), "username and password go together", "set both or neither"));
                }
            }
            Sink::Stdout { .. } | Sink::File { .. } => {}
        }
    }

    /// The pipeline settings (call after a successful [`Config::validate`]).
    pub fn pipeline(&self) -> PipelineConfig {
        let dims: Vec<Dimension> = self.aggregate.dimensions.iter().filter_map(|d| Dimension::from_name(d)).collect();
        let d = &self.detect;
        PipelineConfig {
            decode: DecoderConfig {
                max_templates: self.decode.max_templates,
                template_timeout_s: self.decode.template_timeout_s,
                sampling_overrides: self
                    .decode
                    .sampling_override
                    .iter()
                    .filter_map(|o| o.exporter.parse::<std::net::IpAddr>().ok().map(|a| (Ip::from(a), o.rate)))
                    .collect(),
            },
            agg: AggConfig {
                dimensions: dims,
                max_keys: self.aggregate.max_keys,
                top_k: self.aggregate.top_k,
                long_flow_ms: self.aggregate.long_flow_ms,
            },
            detect: d.enabled.then(|| DetectConfig {
                dimensions: d.dimensions.iter().filter_map(|x| Dimension::from_name(x)).collect(),
                alpha: d.alpha,
                warmup_s: d.warmup_s,
                z_threshold: d.z_threshold,
                min_std: d.min_std,
                cooldown_s: d.cooldown_s,
                cusum_k: d.cusum_k,
                cusum_h: d.cusum_h,
                slow_alpha: d.slow_alpha,
                slow_cusum_h: d.slow_cusum_h,
                drop_alerts: d.drop_alerts,
                drop_confirm_s: 2,
                spike_confirm_s: d.spike_confirm_s,
                min_value: [d.min_bytes_per_s, d.min_packets_per_s, d.min_flows_per_s, d.min_distinct],
                max_tracked: d.max_tracked_keys,
                idle_evict_s: d.idle_evict_s,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostInfo {
        HostInfo { cpus: vec![0, 1] }
    }

    #[test]
    fn defaults_are_valid_on_two_cores() {
        let c = Config::default();
        assert_eq!(c.validate(&host()), vec![]);
        let l = c.layout(&host());
        assert_eq!((l.shards, l.io), (vec![0], vec![1]));
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse("[aggregate]\nmax_keyz = 5\n").unwrap_err();
        assert!(e.problem.contains("max_keyz"), "{e}");
        assert_eq!(e.field, "line 2");
    }

    #[test]
    fn errors_name_field_and_fix() {
        let c = Config::parse(
            "[cores]\nshards = [0, 7]\n[aggregate]\ndimensions = [\"total\", \"dst_ipp\"]\n[detect]\nalpha = 2.0\n[[listener]]\naddress = \"localhost:2055\"\n",
        )
        .unwrap();
        let errs = c.validate(&host());
        let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"cores.shards[1]"), "{errs:?}");
        assert!(fields.contains(&"aggregate.dimensions[1]"));
        assert!(fields.contains(&"detect.alpha"));
        assert!(fields.contains(&"listener[0].address"));
        assert!(errs.iter().all(|e| !e.fix.is_empty()));
    }
}
