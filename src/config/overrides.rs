//! Command-line overrides of a loaded configuration (`flowshard run --listen … --shards …`),
//! applied in one place before `validate()`.
//!
//! May depend on: `config` only. Lives on: the main thread at start-up.

use super::{Config, HostInfo, KafkaSink, Listener, OpensearchSink, Sink, ValkeySink};
use std::path::PathBuf;

/// What the command line may override.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replace the listeners (keeping the first one's receive buffer and spread settings).
    pub listen: Vec<String>,
    /// Run this many shards on CPUs 0..N-1, I/O on the next CPU (not pinned when that is more
    /// than the host has).
    pub shards: Option<usize>,
    /// Do not pin threads.
    pub no_pin: bool,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// HTTP address.
    pub http: Option<String>,
    /// No HTTP server.
    pub no_http: bool,
    /// Add a Kafka sink with these bootstrap servers.
    pub kafka: Option<String>,
    /// Add a Valkey sink at this URL.
    pub valkey: Option<String>,
    /// Add an OpenSearch sink at this URL.
    pub opensearch: Option<String>,
    /// Appliance id.
    pub appliance: Option<String>,
    /// Spread mode of every listener.
    pub spread: Option<super::general::SpreadMode>,
}

impl Overrides {
    /// Adds the remote sinks named on the command line (with every other setting at its
    /// default).
    pub fn add_sinks(&self, cfg: &mut Config) {
        if let Some(b) = &self.kafka {
            cfg.sink.push(Sink::Kafka(KafkaSink::new(b)));
        }
        if let Some(u) = &self.valkey {
            cfg.sink.push(Sink::Valkey(ValkeySink::new(u)));
        }
        if let Some(u) = &self.opensearch {
            cfg.sink.push(Sink::Opensearch(OpensearchSink::new(u)));
        }
    }

    /// Applies every override.
    pub fn apply(self, cfg: &mut Config, host: &HostInfo) {
        self.add_sinks(cfg);
        if let Some(a) = self.appliance {
            cfg.general.appliance_id = a;
        }
        if !self.listen.is_empty() {
            let first = cfg.listener.first().cloned().unwrap_or_else(|| Listener::new(""));
            cfg.listener = self.listen.into_iter().map(|address| Listener { address, ..first.clone() }).collect();
        }
        if let Some(m) = self.spread {
            for l in &mut cfg.listener {
                l.spread = m;
            }
        }
        if let Some(n) = self.shards {
            let n = n.max(1);
            cfg.cores.shards = host.cpus.iter().copied().cycle().take(n).collect();
            cfg.cores.io = vec![host.cpus.get(n).copied().unwrap_or(*host.cpus.last().unwrap_or(&0))];
            if n >= host.cpus.len() {
                cfg.cores.pin = Some(false);
            }
        }
        if self.no_pin {
            cfg.cores.pin = Some(false);
        }
        if let Some(d) = self.state_dir {
            cfg.general.state_dir = d;
        }
        if let Some(h) = self.http {
            cfg.http.address = h;
        }
        if self.no_http {
            cfg.http.enabled = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_from_the_command_line_take_the_documented_defaults() {
        let mut c = Config::default();
        Overrides { kafka: Some("k:1".into()), valkey: Some("redis://v".into()), ..Default::default() }
            .add_sinks(&mut c);
        let parsed = Config::parse(
            "[[sink]]\ntype = \"kafka\"\nbrokers = \"k:1\"\n[[sink]]\ntype = \"valkey\"\nurl = \"redis://v\"\n",
        )
        .unwrap();
        assert_eq!(c.sink[c.sink.len() - 2..], parsed.sink[..]);
    }
}
