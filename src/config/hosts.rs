//! `[hosts]`: host metrics and syslog inputs (line protocol over UDP/TCP/HTTP, Prometheus
//! remote-write, syslog over UDP/TCP), the series key's tag allow-list and bounds, and
//! `[hosts.detect]` (CPU spikes, memory leaks, error bursts, silent hosts).
//!
//! May depend on: `decode` (timestamp precision), `detect` (the detector settings type),
//! `pipeline` (the shard-side settings type). Lives on: the main thread at start-up.

use super::{err, Config, ConfigError};
use crate::decode::lineproto::Precision;
use crate::detect::host::HostDetectConfig;
use crate::pipeline::host::HostPathConfig;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `[hosts]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Hosts {
    /// InfluxDB line protocol over UDP (Telegraf `socket_writer` with `udp://`), one socket per
    /// shard (`SO_REUSEPORT`).
    pub line_udp: Vec<String>,
    /// Line protocol over TCP, newline-delimited (Telegraf `socket_writer` with `tcp://`);
    /// connections spread over the shards.
    pub line_tcp: Vec<String>,
    /// Syslog (RFC 5424 / 3164) over UDP.
    pub syslog_udp: Vec<String>,
    /// Syslog over TCP (RFC 6587: octet counting or newline framing, detected per frame).
    pub syslog_tcp: Vec<String>,
    /// Unit of line-protocol timestamps on UDP and TCP (HTTP writes say it per request).
    pub precision: Precision,
    /// Accept `POST /api/v2/write` (line protocol) and `POST /api/v1/write` (Prometheus
    /// remote-write) on the HTTP server.
    pub http: bool,
    /// Tags (labels) kept in a series key besides the host; others are ignored.
    pub tags: Vec<String>,
    /// Series one shard may know (key-flood bound).
    pub max_series: usize,
    /// Syslog message patterns one shard may know.
    pub max_patterns: usize,
    /// Longest TCP frame (a line or a syslog message), bytes.
    pub max_frame_bytes: usize,
    /// Open TCP connections per shard.
    pub max_connections: usize,
    /// Largest HTTP write body, bytes (after decompression).
    pub max_body_bytes: usize,
    /// Telegraf JSON metrics consumed from a Kafka topic (unset: off).
    pub kafka: Option<HostsKafka>,
    /// Host detectors.
    pub detect: HostDetectConfig,
}

/// `[hosts.kafka]`: where Telegraf's Kafka output (`data_format = "json"`) writes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostsKafka {
    /// Bootstrap servers, e.g. "10.0.0.5:9092".
    pub brokers: String,
    /// Topic.
    #[serde(default = "hosts_kafka_topic")]
    pub topic: String,
    /// Consumer group, shared by the appliances that split the topic.
    #[serde(default = "hosts_kafka_group")]
    pub group_id: String,
    /// Extra librdkafka properties (TLS, SASL).
    #[serde(default)]
    pub properties: std::collections::BTreeMap<String, String>,
}

fn hosts_kafka_topic() -> String {
    "telegraf".into()
}

fn hosts_kafka_group() -> String {
    "flowshard-hosts".into()
}

impl Default for Hosts {
    fn default() -> Self {
        let p = HostPathConfig::default();
        Hosts {
            line_udp: Vec::new(),
            line_tcp: Vec::new(),
            syslog_udp: Vec::new(),
            syslog_tcp: Vec::new(),
            precision: Precision::Ns,
            http: true,
            tags: p.tags,
            max_series: p.max_series,
            max_patterns: p.max_patterns,
            max_frame_bytes: 64 << 10,
            max_connections: 1024,
            max_body_bytes: 32 << 20,
            kafka: None,
            detect: HostDetectConfig::default(),
        }
    }
}

impl Hosts {
    /// The shard-side settings.
    pub fn path(&self) -> HostPathConfig {
        HostPathConfig { tags: self.tags.clone(), max_series: self.max_series, max_patterns: self.max_patterns }
    }

    /// Is any socket input configured?
    pub fn any_socket(&self) -> bool {
        !(self.line_udp.is_empty()
            && self.line_tcp.is_empty()
            && self.syslog_udp.is_empty()
            && self.syslog_tcp.is_empty())
    }

    /// Every socket input as (field, address, is TCP, is syslog).
    pub fn sockets(&self) -> impl Iterator<Item = (&'static str, &String, bool, bool)> {
        self.line_udp
            .iter()
            .map(|a| ("hosts.line_udp", a, false, false))
            .chain(self.line_tcp.iter().map(|a| ("hosts.line_tcp", a, true, false)))
            .chain(self.syslog_udp.iter().map(|a| ("hosts.syslog_udp", a, false, true)))
            .chain(self.syslog_tcp.iter().map(|a| ("hosts.syslog_tcp", a, true, true)))
    }
}

impl Config {
    /// Checks `[hosts]`.
    pub(super) fn validate_hosts(&self, e: &mut Vec<ConfigError>) {
        let h = &self.hosts;
        let flows: Vec<SocketAddr> = self.listener.iter().filter_map(|l| l.address.parse().ok()).collect();
        let mut seen: Vec<(SocketAddr, bool)> = Vec::new();
        for (field, a, tcp, _) in h.sockets() {
            match a.parse::<SocketAddr>() {
                Err(_) => e.push(err(
                    field,
                    format!("{a:?} is not an IP:port"),
                    "write an address and port such as \"0.0.0.0:8094\" (no host names)",
                )),
                Ok(addr) => {
                    // port 0 picks a free port per socket: never a clash
                    let clash = seen.contains(&(addr, tcp)) || (!tcp && flows.contains(&addr));
                    if addr.port() != 0 && clash {
                        e.push(err(
                            field,
                            format!("{addr} ({}) is used by another listener", if tcp { "TCP" } else { "UDP" }),
                            "give every input its own port",
                        ));
                    }
                    seen.push((addr, tcp));
                }
            }
        }
        if h.max_series == 0 {
            e.push(err("hosts.max_series", "0", "set how many series a shard may know, e.g. 100000"));
        }
        if h.max_frame_bytes < 1024 {
            e.push(err("hosts.max_frame_bytes", format!("{} is too small", h.max_frame_bytes), "use at least 1024"));
        }
        if h.max_connections == 0 {
            e.push(err("hosts.max_connections", "0", "allow at least one connection per shard, e.g. 1024"));
        }
        if let Some(k) = &h.kafka {
            if k.brokers
                .split(',')
                .any(|b| b.trim().rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()))
            {
                e.push(err(
                    "hosts.kafka.brokers",
                    format!("{:?} is not a list of host:port", k.brokers),
                    "use e.g. \"10.0.0.5:9092\"",
                ));
            }
            if k.topic.is_empty() {
                e.push(err(
                    "hosts.kafka.topic",
                    "empty",
                    "name the topic Telegraf's Kafka output writes, e.g. \"telegraf\"",
                ));
            }
        }
        for (field, problem, fix) in h.detect.check() {
            e.push(err(format!("hosts.detect.{field}"), problem, fix));
        }
    }
}
