//! `flowshard enrich`: loads the `[enrich]` tables exactly as the shards do and answers lookups,
//! one JSON line per address (from the arguments, or one per line on stdin) — to check a
//! database or a networks file, and for tests that compare with an independent reader.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use crate::model::{country_name, names, Ip};
use anyhow::{Context, Result};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// Load the enrichment tables and look addresses up: one JSON line per address
/// (`ip`, `country`, `asn`, `city` (GeoNames id, 0 = none), `city_name`, `net`, `internal`), the
/// load summary on stderr. Cities are read when the config aggregates `src_city` or `dst_city`.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (its `[enrich]` section).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Addresses to look up; none: one per line on stdin.
    pub addresses: Vec<String>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let cfg = load(&a.config)?;
    check(&cfg, &HostInfo::detect())?;
    let t = crate::enrich::load::load(&cfg.enrich)?;
    let s = &t.stats;
    eprintln!(
        "enrich: {} GeoIP networks ({} cities), {} ASN networks, {} networks-file entries -> {} ranges in {} ms",
        s.geoip_networks, s.cities, s.asn_networks, s.networks, s.ranges, s.load_ms
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut one = |text: &str| -> Result<()> {
        let ip: std::net::IpAddr = text.trim().parse().with_context(|| format!("{text:?} is not an address"))?;
        let ans = t.lookup(Ip::from(ip));
        let net = names::name(ans.net).map_or(serde_json::Value::Null, |n| n.to_string().into());
        let country = if ans.country == 0 { serde_json::Value::Null } else { country_name(ans.country).into() };
        let city = names::city(ans.city).map_or(serde_json::Value::Null, |n| n.to_string().into());
        let v = serde_json::json!({"ip": ip.to_string(), "country": country, "asn": ans.asn, "city": ans.city,
            "city_name": city, "net": net, "internal": ans.internal});
        writeln!(out, "{v}")?;
        Ok(())
    };
    if a.addresses.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line?;
            if !line.trim().is_empty() {
                one(&line)?;
            }
        }
    } else {
        for x in &a.addresses {
            one(x)?;
        }
    }
    Ok(())
}
