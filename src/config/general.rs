//! `[general]`, `[[listener]]`, `[cores]`, `[handoff]` and `[http]`: the process, its sockets,
//! its CPUs and the shard → I/O hand-off.
//!
//! May depend on: nothing outside `config`. Lives on: the main thread at start-up.

use super::{err, Config, ConfigError, HostInfo};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    /// Whether one exporter's datagrams are handed from the shard the kernel gave them to
    /// every shard (see `runtime::spread`): `auto` spreads an exporter that sends at least
    /// `spread_above` datagrams/s to one shard, `always` spreads every exporter, `off` never.
    #[serde(default)]
    pub spread: SpreadMode,
    /// Datagrams per second from one exporter on one shard above which `auto` spreads it.
    #[serde(default = "default_spread_above")]
    pub spread_above: u32,
}

impl Listener {
    /// A listener on `address` with the default buffer and spread settings.
    pub fn new(address: impl Into<String>) -> Listener {
        Listener {
            address: address.into(),
            recv_buffer_bytes: default_rcvbuf(),
            spread: SpreadMode::default(),
            spread_above: default_spread_above(),
        }
    }
}

/// How a listener spreads one exporter's datagrams over the shards.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SpreadMode {
    /// Each datagram is decoded on the shard the kernel gave it to.
    Off,
    /// An exporter is spread while it sends at least `spread_above` datagrams/s to one shard.
    #[default]
    Auto,
    /// Every exporter's datagrams are spread.
    Always,
}

impl std::str::FromStr for SpreadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(SpreadMode::Off),
            "auto" => Ok(SpreadMode::Auto),
            "always" => Ok(SpreadMode::Always),
            _ => Err(format!("{s:?} is not a spread mode (off, auto, always)")),
        }
    }
}

pub(super) fn default_rcvbuf() -> usize {
    32 << 20
}

/// 10,000 datagrams/s is about 300,000 records/s of NetFlow v5 or IPFIX: a tenth of a core.
fn default_spread_above() -> u32 {
    10_000
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
    /// CPU of the layer-3 (Random Cut Forest) thread. Unset = the first I/O CPU.
    pub layer3: Option<usize>,
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

impl Config {
    /// Checks `[general]`, `[[listener]]`, `[cores]`, `[handoff]` and `[http]`.
    pub(super) fn validate_general(&self, host: &HostInfo, e: &mut Vec<ConfigError>) {
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
            if l.spread == SpreadMode::Auto && l.spread_above == 0 {
                e.push(err(
                    format!("listener[{i}].spread_above"),
                    "0 datagrams/s would spread every exporter",
                    "use spread = \"always\" for that, or a rate such as 10000",
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
        if let Some(c) = self.cores.layer3.filter(|c| !host.cpus.contains(c)) {
            e.push(err(
                "cores.layer3",
                format!("CPU {c} is not available to this process (available: {:?})", host.cpus),
                "name an available CPU, or leave it unset (the I/O CPU)",
            ));
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
    }
}
