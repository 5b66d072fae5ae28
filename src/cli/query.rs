//! `flowshard query`: the Valkey hot window, merged over every appliance writing to it.
//!
//! Lives on: the main thread.

use super::load;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

/// Query the Valkey hot window (merged over every appliance writing to it).
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (its valkey sink gives URL and prefix).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Valkey URL (instead of a config file).
    #[arg(long)]
    pub valkey: Option<String>,
    /// Key prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// What to ask.
    #[command(subcommand)]
    pub what: QueryCmd,
}

/// `flowshard query` subcommands.
#[derive(Subcommand)]
pub enum QueryCmd {
    /// Top keys of a dimension by bytes over the last 300 s.
    Top {
        /// Dimension (src_ip, dst_ip, dst_port, exporter, …).
        #[arg(long, default_value = "dst_ip")]
        dim: String,
        /// How many.
        #[arg(long, short, default_value_t = 10)]
        n: usize,
    },
    /// The 300-point per-second series of one key.
    Series {
        /// Dimension.
        #[arg(long)]
        dim: String,
        /// Key, as the outputs print it (e.g. 192.0.2.7, 443/tcp, AS64500).
        #[arg(long)]
        key: String,
    },
    /// The newest alerts.
    Alerts {
        /// How many.
        #[arg(long, short, default_value_t = 20)]
        n: usize,
    },
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, valkey, prefix, json, what } = a;
    use crate::sink::valkey;
    let cfg = load(&config)?;
    let from_cfg = cfg.sink.iter().find_map(|s| match s {
        crate::config::Sink::Valkey(v) => Some((v.url.clone(), v.prefix.clone())),
        _ => None,
    });
    let url = valkey
        .or(from_cfg.as_ref().map(|x| x.0.clone()))
        .context("no Valkey: give --valkey redis://host:port or a config with a valkey sink")?;
    let keys = valkey::Keys { prefix: prefix.or(from_cfg.map(|x| x.1)).unwrap_or_else(|| "fs".into()) };
    let mut con = valkey::connect(&url).with_context(|| format!("cannot connect to {url}"))?;
    let t = std::time::Instant::now();
    match what {
        QueryCmd::Top { dim, n } => {
            anyhow::ensure!(crate::model::Dimension::from_name(&dim).is_some(), "unknown dimension {dim:?}");
            let rows = valkey::top(&mut con, &keys, &dim, n)?;
            let took = t.elapsed();
            let ks: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
            let names: Vec<Option<serde_json::Value>> = valkey::names(&mut con, &keys, &dim, &ks)?
                .into_iter()
                .map(|n| n.and_then(|n| serde_json::from_str(&n).ok()))
                .collect();
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .zip(names.iter().chain(std::iter::repeat(&None)))
                    .map(|((k, b), name)| {
                        let mut o = serde_json::json!({"key": k, "bytes": b});
                        if let (Some(obj), Some(serde_json::Value::Object(n))) = (o.as_object_mut(), name) {
                            obj.extend(n.clone());
                        }
                        o
                    })
                    .collect();
                println!("{}", serde_json::json!({"dimension": dim, "window_s": valkey::WINDOW_S, "top": v}));
            } else {
                println!("top {n} {dim} by bytes, last {} s ({} µs):", valkey::WINDOW_S, took.as_micros());
                for ((k, b), name) in rows.iter().zip(names.iter().chain(std::iter::repeat(&None))) {
                    let label = name.as_ref().and_then(|v| v.get("if_name").or_else(|| v.get("as_name")));
                    match label.and_then(|l| l.as_str()) {
                        Some(l) => println!("{b:>16}  {k}  ({l})"),
                        None => println!("{b:>16}  {k}"),
                    }
                }
            }
        }
        QueryCmd::Series { dim, key } => {
            let now = crate::model::time::now_s();
            let pts = valkey::series(&mut con, &keys, &dim, &key, now)?;
            let took = t.elapsed();
            if json {
                let v: Vec<_> =
                    pts.iter().map(|p| serde_json::json!([p.second, p.bytes, p.packets, p.flows])).collect();
                println!(
                    "{}",
                    serde_json::json!({"dimension": dim, "key": key, "columns": ["second", "bytes", "packets", "flows"], "points": v})
                );
            } else {
                println!("{dim} {key}: {} points ({} µs); non-zero seconds:", pts.len(), took.as_micros());
                for p in pts.iter().filter(|p| p.bytes + p.packets + p.flows > 0) {
                    println!("{}  bytes {}  packets {}  flows {}", p.second, p.bytes, p.packets, p.flows);
                }
            }
        }
        QueryCmd::Alerts { n } => {
            let v: Vec<String> = redis::cmd("LRANGE").arg(keys.alerts()).arg(0).arg(n as isize - 1).query(&mut con)?;
            for a in v {
                println!("{a}");
            }
        }
    }
    Ok(())
}
