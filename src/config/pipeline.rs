//! Validation of the sections whose types live with the code that uses them: `[decode]`
//! ([`crate::decode::DecoderConfig`]), `[aggregate]` ([`crate::aggregate::AggConfig`]),
//! `[detect]` ([`crate::detect::DetectConfig`]) and `[layer2]` ([`crate::detect::layer2::Layer2`]).
//! One field list per subsystem: the runtime type is the config section.
//!
//! May depend on: nothing outside `config` (the section types come through `Config`). Lives on:
//! the main thread at start-up.

use super::{err, Config, ConfigError, Sink};

impl Config {
    /// Checks `[decode]`, `[aggregate]`, `[detect]` and `[layer2]`.
    pub(super) fn validate_pipeline(&self, e: &mut Vec<ConfigError>) {
        for (i, d) in self.aggregate.dimensions.iter().enumerate() {
            let missing = match d.needs_table() {
                Some("geoip") => self.enrich.geoip.is_none(),
                Some(_) => self.enrich.networks.is_none(),
                None => false,
            };
            if missing {
                let table = d.needs_table().unwrap_or_default();
                e.push(err(
                    format!("aggregate.dimensions[{i}]"),
                    format!("{:?} needs enrich.{table}, which is not set", d.name()),
                    format!("set enrich.{table} (see README, Enrichment) or remove {:?}", d.name()),
                ));
            }
        }
        for (i, s) in self.enrich.interface.iter().enumerate() {
            if s.exporter.parse::<std::net::IpAddr>().is_err() {
                e.push(err(
                    format!("enrich.interface[{i}].exporter"),
                    format!("{:?} is not an address", s.exporter),
                    "give the exporter's address as it sends flows, e.g. \"192.0.2.1\"",
                ));
            }
            if s.name.is_empty() {
                e.push(err(format!("enrich.interface[{i}].name"), "empty", "name the interface, e.g. \"xe-0/0/1\""));
            }
        }
        let snmp = &self.enrich.snmp;
        if snmp.enabled && snmp.version != 3 && snmp.community.is_empty() {
            e.push(err("enrich.snmp.community", "empty", "set the agents' SNMP v2c read community"));
        }
        if snmp.version != 2 && snmp.version != 3 {
            e.push(err("enrich.snmp.version", format!("{} is not supported", snmp.version), "use 2 (v2c) or 3 (USM)"));
        }
        if snmp.enabled && snmp.version == 3 {
            if snmp.user.is_empty() {
                e.push(err("enrich.snmp.user", "empty", "set the SNMP v3 user the agents know (rouser)"));
            }
            if snmp.authenticates() && snmp.auth_password.chars().count() < 8 {
                e.push(err(
                    "enrich.snmp.auth_password",
                    "shorter than 8 characters",
                    "set the user's authentication pass phrase (RFC 3414: at least 8 characters), or security_level = \"noAuthNoPriv\"",
                ));
            }
            if snmp.encrypts() && snmp.priv_password.chars().count() < 8 {
                e.push(err(
                    "enrich.snmp.priv_password",
                    "shorter than 8 characters",
                    "set the user's privacy pass phrase (at least 8 characters), or security_level = \"authNoPriv\"",
                ));
            }
        }
        if snmp.enabled && (snmp.timeout_ms == 0 || snmp.timeout_ms > 60_000) {
            e.push(err(
                "enrich.snmp.timeout_ms",
                format!("{} out of range", snmp.timeout_ms),
                "use 1..=60000 (default 2000)",
            ));
        }
        for (k, v) in &snmp.agents {
            let addr_ok = v.parse::<std::net::SocketAddr>().is_ok() || v.parse::<std::net::IpAddr>().is_ok();
            if k.parse::<std::net::IpAddr>().is_err() || !addr_ok {
                e.push(err(
                    format!("enrich.snmp.agents.{k:?}"),
                    format!("{k:?} = {v:?}: needs an exporter address = an agent address[:port]"),
                    "e.g. \"192.0.2.1\" = \"10.0.0.1:161\"",
                ));
            }
        }
        if self.aggregate.dimensions.is_empty() {
            e.push(err("aggregate.dimensions", "no dimension", "add at least \"total\""));
        }
        for (i, d) in self.aggregate.dimensions.iter().enumerate() {
            if self.aggregate.dimensions[..i].contains(d) {
                e.push(err(
                    format!("aggregate.dimensions[{i}]"),
                    format!("{:?} listed twice", d.name()),
                    "remove the duplicate",
                ));
            }
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
        for (i, d) in self.aggregate.dimensions.iter().enumerate() {
            if let Some((from, _)) = d.derived_from() {
                if !self.aggregate.dimensions.contains(&from) {
                    e.push(err(
                        format!("aggregate.dimensions[{i}]"),
                        format!("{:?} is the sum of the {:?} rows, which are not aggregated", d.name(), from.name()),
                        format!("add {:?} to aggregate.dimensions", from.name()),
                    ));
                }
            }
        }
        let d = &self.detect;
        for (i, x) in d.dimensions.iter().flatten().enumerate() {
            if let Some((from, _)) = x.derived_from() {
                e.push(err(
                    format!("detect.dimensions[{i}]"),
                    format!(
                        "{:?} is summed on the I/O core from {:?}; layer 1 runs on the shards",
                        x.name(),
                        from.name()
                    ),
                    format!("watch {:?} instead (its rows make up {:?})", from.name(), x.name()),
                ));
            } else if !self.aggregate.dimensions.contains(x) {
                e.push(err(
                    format!("detect.dimensions[{i}]"),
                    format!("{:?} is not aggregated", x.name()),
                    format!("add {:?} to aggregate.dimensions or remove it here", x.name()),
                ));
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
        if d.max_tracked == 0 {
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
        if self.layer3.enabled {
            for (field, problem, fix) in self.layer3.problems() {
                e.push(err(field, problem, fix));
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
        }
    }
}
