//! The TOML configuration, in two phases: [`Config::parse`] (serde, unknown fields rejected,
//! documented defaults, units in field names) and a pure [`Config::validate`] against a
//! [`HostInfo`], whose errors name the field and the fix. `flowshard validate` runs exactly this.
//! One file per group of sections, each with its own `validate_*`; the sections of the pure
//! layers are their own types ([`DecoderConfig`], [`AggConfig`], [`DetectConfig`], [`Layer2`], [`Layer3`]);
//! command-line overrides in [`overrides`].
//!
//! May depend on: `model`, `decode`, `enrich`, `aggregate`, `detect`, `pipeline`, `alert` (to build their
//! settings).
//! Lives on: the main thread at start-up.

mod alerts;
mod general;
pub mod hosts;
pub mod overrides;
mod pipeline;
mod sinks;

pub use crate::aggregate::AggConfig;
pub use crate::alert::IncidentConfig;
pub use crate::decode::{DecoderConfig, SamplingOverride};
pub use crate::detect::layer2::Layer2;
pub use crate::detect::layer3::Layer3;
pub use crate::detect::DetectConfig;
pub use alerts::{AlertmanagerCfg, Alerts, Webhook, WebhookFormat};
pub use general::{Cores, General, Handoff, Http, Listener, SpreadMode, WhenFull};
pub use overrides::Overrides;
pub use sinks::{Compression, IndexPeriod, KafkaSink, OpensearchSink, Sink, Spool, ValkeySink};

use crate::pipeline::PipelineConfig;
use serde::{Deserialize, Serialize};
use std::fmt;

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
    pub decode: DecoderConfig,
    /// 1-second aggregation.
    pub aggregate: AggConfig,
    /// Layer-1 detection.
    pub detect: DetectConfig,
    /// Shard → I/O-core hand-off.
    pub handoff: Handoff,
    /// Output sinks.
    pub sink: Vec<Sink>,
    /// On-disk spool for Kafka and OpenSearch.
    pub spool: Spool,
    /// The alert pipeline shared by every layer.
    pub alerts: Alerts,
    /// How alerts of every layer become incidents.
    pub incidents: IncidentConfig,
    /// Layer 2: Holt-Winters pattern job in OpenSearch.
    pub layer2: Layer2,
    /// Layer 3: Random Cut Forest per source address, in process.
    pub layer3: Layer3,
    /// HTTP server (metrics, health, query API) on the I/O core.
    pub http: Http,
    /// Enrichment tables (GeoIP, ASN, networks file).
    pub enrich: crate::enrich::EnrichConfig,
    /// Host metrics and syslog inputs, and the host detectors.
    pub hosts: hosts::Hosts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            general: General::default(),
            listener: ["0.0.0.0:2055", "0.0.0.0:4739", "0.0.0.0:6343"].into_iter().map(Listener::new).collect(),
            cores: Cores::default(),
            decode: DecoderConfig::default(),
            aggregate: AggConfig::default(),
            detect: DetectConfig::default(),
            handoff: Handoff::default(),
            sink: vec![Sink::Stdout { rollups: true, alerts: true }],
            spool: Spool::default(),
            alerts: Alerts::default(),
            incidents: IncidentConfig::default(),
            layer2: Layer2::default(),
            layer3: Layer3::default(),
            http: Http::default(),
            enrich: Default::default(),
            hosts: hosts::Hosts::default(),
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

pub(crate) fn err(field: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), problem: problem.into(), fix: fix.into() }
}

impl Config {
    /// Parses TOML; unknown fields are errors that name the field.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let field = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "config".into());
            err(field, msg, "correct the TOML (see README, section Configuration, for every field)")
        })?;
        c.enrich.cities = c.aggregate.dimensions.iter().any(|d| d.is_city());
        Ok(c)
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
        self.validate_general(host, &mut e);
        self.validate_pipeline(&mut e);
        self.validate_sinks(&mut e);
        self.validate_alerts(&mut e);
        self.validate_hosts(&mut e);
        e
    }

    /// The pipeline settings (call after a successful [`Config::validate`]).
    pub fn pipeline(&self) -> PipelineConfig {
        let (derived, aggregated) = self.aggregate.dimensions.iter().partition(|d| d.derived_from().is_some());
        PipelineConfig {
            decode: self.decode.clone(),
            agg: crate::aggregate::AggConfig { dimensions: aggregated, ..self.aggregate.clone() },
            detect: self.detect.enabled.then(|| self.detect.clone()),
            enrich: None,
            derived,
            filter: None,
        }
    }

    /// The Kafka sink that writes raw flows (the first with `flows = true`).
    pub fn flows_sink(&self) -> Option<&KafkaSink> {
        self.sink.iter().find_map(|s| match s {
            Sink::Kafka(k) if k.flows => Some(k),
            _ => None,
        })
    }

    /// [`Config::pipeline`] with the `[enrich]` tables loaded (reads files; the error names the
    /// field and the fix).
    pub fn pipeline_loaded(&self) -> Result<PipelineConfig, crate::enrich::load::LoadError> {
        let mut p = self.pipeline();
        if self.enrich.any() {
            let t = crate::enrich::load::load(&self.enrich)?;
            tracing::info!(
                geoip_networks = t.stats.geoip_networks,
                asn_networks = t.stats.asn_networks,
                as_names = t.stats.as_names,
                networks = t.stats.networks,
                ranges = t.stats.ranges,
                load_ms = t.stats.load_ms,
                "enrichment tables loaded"
            );
            p.enrich = Some(std::sync::Arc::new(t));
        }
        Ok(p)
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
            "[cores]\nshards = [0, 7]\n[aggregate]\ndimensions = [\"total\", \"total\"]\n[detect]\nalpha = 2.0\n[[listener]]\naddress = \"localhost:2055\"\n",
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

    /// SNMP v3 without a user or with short pass phrases, an unknown SNMP version, and a raw
    /// flows sampling of 0 are named with their fix.
    #[test]
    fn snmp_v3_and_raw_flows_settings_are_checked() {
        let c = Config::parse(
            "[enrich.snmp]\nenabled = true\nversion = 3\nauth_password = \"short\"\npriv_password = \"\"\n\
             [[sink]]\ntype = \"kafka\"\nbrokers = \"k:9092\"\nflows = true\nflows_sample = 0\nflows_topic = \"bad topic\"\n",
        )
        .unwrap();
        let fields: Vec<String> = c.validate(&host()).into_iter().map(|e| e.field).collect();
        for f in [
            "enrich.snmp.user",
            "enrich.snmp.auth_password",
            "enrich.snmp.priv_password",
            "sink[0].flows_sample",
            "sink[0].flows_topic",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not named: {fields:?}");
        }
        assert!(!fields.iter().any(|x| x == "enrich.snmp.community"), "v3 needs no community: {fields:?}");
        let c = Config::parse("[enrich.snmp]\nversion = 1\n").unwrap();
        let fields: Vec<String> = c.validate(&host()).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["enrich.snmp.version".to_string()]);
    }

    /// Closed choices are enums: a misspelt dimension, codec, period or webhook format is a
    /// parse error that names the line and lists what is accepted.
    #[test]
    fn closed_choices_are_checked_when_parsing() {
        for (text, line, accepted) in [
            ("[aggregate]\ndimensions = [\"total\", \"dst_ipp\"]\n", "line 2", "dst_ip"),
            // a `[[sink]]` is tagged by `type`: serde reads it whole, so the line is the table's
            ("[[sink]]\ntype = \"kafka\"\nbrokers = \"k:1\"\ncompression = \"lz5\"\n", "line 1", "lz4"),
            ("[[sink]]\ntype = \"opensearch\"\nurl = \"http://o\"\nindex_period = \"day\"\n", "line 1", "hour"),
            ("[alerts.webhook]\nurl = \"http://w\"\nformat = \"teams\"\n", "line 3", "pagerduty"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert_eq!(e.field, line, "{text}: {e}");
            assert!(e.problem.contains(accepted), "{text}: {e}");
        }
    }

    /// `[detect] dimensions` unset follows `[aggregate] dimensions`: a config that aggregates
    /// only `src_ip` is valid and detects on it, without errors about entries the user never
    /// wrote; a list the user does write is still checked.
    #[test]
    fn detect_dimensions_derive_from_aggregate() {
        let c = Config::parse("[aggregate]\ndimensions = [\"src_ip\"]\n").unwrap();
        assert_eq!(c.validate(&host()), vec![]);
        let d = c.pipeline().detect.unwrap();
        assert!(d.detects(crate::model::Dimension::SrcIp));
        let c = Config::parse("[aggregate]\ndimensions = [\"src_ip\"]\n[detect]\ndimensions = [\"dst_ip\"]\n").unwrap();
        let fields: Vec<_> = c.validate(&host()).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, vec!["detect.dimensions[0]".to_string()]);
    }

    /// Site, tenant and role are summed from the network rows on the I/O core: they need those
    /// rows, are never handed to the shards, and layer 1 cannot watch them. A city dimension
    /// turns the reading of city records on.
    #[test]
    fn derived_and_city_dimensions_are_checked_and_split_off() {
        let base = "[enrich]\nnetworks = \"n.csv\"\ngeoip = \"g.mmdb\"\n[layer3]\nenabled = false\n[aggregate]\n";
        let c = Config::parse(&format!("{base}dimensions = [\"total\", \"src_site\"]\n")).unwrap();
        let e = c.validate(&host());
        assert!(e.iter().any(|e| e.field == "aggregate.dimensions[1]" && e.fix.contains("\"src_net\"")), "{e:?}");
        let c = Config::parse(&format!(
            "{base}dimensions = [\"total\", \"src_net\", \"src_site\", \"dst_city\"]\n[detect]\ndimensions = [\"src_site\"]\n"
        ))
        .unwrap();
        let e = c.validate(&host());
        assert!(e.iter().any(|e| e.field == "detect.dimensions[0]" && e.fix.contains("src_net")), "{e:?}");
        assert!(c.enrich.cities);
        let p = c.pipeline();
        use crate::model::Dimension as D;
        assert_eq!(p.agg.dimensions, vec![D::Total, D::SrcNet, D::DstCity]);
        assert_eq!(p.derived, vec![D::SrcSite]);
        assert!(!Config::parse("[aggregate]\ndimensions = [\"total\"]\n").unwrap().enrich.cities);
    }

    fn toml_block(markdown: &str, after: &str) -> String {
        let from = markdown.find(after).expect("section");
        let rest = &markdown[from..];
        let start = rest.find("```toml\n").expect("toml block") + 8;
        let end = rest[start..].find("```").expect("end of block");
        rest[start..start + end].to_string()
    }

    /// The README's configuration block shows every default: it parses, and what it parses to
    /// is exactly `Config::default()`.
    #[test]
    fn readme_config_block_is_the_defaults() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let block = toml_block(&readme, "## Configuration");
        let c = Config::parse(&block).unwrap_or_else(|e| panic!("README config block: {e}"));
        assert_eq!(c, Config::default());
    }

    /// The installed configuration parses and validates, and apart from the two settings it
    /// says it changes (state directory, file sink) its values are the defaults.
    #[test]
    fn installed_config_is_valid_and_documents_the_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/flowshard.toml")).unwrap();
        let mut c = Config::parse(&text).unwrap_or_else(|e| panic!("docs/flowshard.toml: {e}"));
        let host = HostInfo { cpus: (0..64).collect() };
        assert_eq!(c.validate(&host), vec![], "docs/flowshard.toml");
        assert_eq!(c.general.state_dir, std::path::PathBuf::from("/var/lib/flowshard"));
        assert!(matches!(c.sink.as_slice(), [Sink::File { .. }]));
        c.general.state_dir = Config::default().general.state_dir;
        c.sink = Config::default().sink;
        assert_eq!(c, Config::default());
    }
}
