//! `flowshard evaluate`: scores layer-1 alerts on a generated capture against its labels.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Score layer-1 alerts on a generated capture against its labels (recall, delay,
/// precision, false alerts per hour).
#[derive(clap::Args)]
pub struct Args {
    /// Generated capture (`flowshard gen --pcap`).
    #[arg(long)]
    pub pcap: PathBuf,
    /// Its labels (default: next to the capture).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Shards to simulate.
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
    /// Configuration file (detector settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a markdown table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { pcap, labels, shards, config, json } = a;
    let cfg = load(&config)?;
    check(&cfg, &HostInfo::detect())?;
    let lp = labels.unwrap_or_else(|| pcap.with_extension("labels.json"));
    let labels: crate::tools::gen::Labels =
        serde_json::from_slice(&std::fs::read(&lp).with_context(|| format!("cannot read labels {}", lp.display()))?)
            .with_context(|| format!("{}: not a labels file", lp.display()))?;
    let data = std::fs::read(&pcap).with_context(|| format!("cannot read {}", pcap.display()))?;
    let mut sink = crate::tools::replay::Collect::default();
    let sum = crate::tools::replay::replay(
        &data,
        &cfg.pipeline_loaded()?,
        &super::downstream(&cfg),
        shards,
        false,
        &mut sink,
    )?;
    let alerts: Vec<_> = sink.seconds.iter().flat_map(|s| s.alerts.iter().cloned()).collect();
    let e = crate::tools::eval::evaluate(&labels, &alerts, sum.seconds);
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", crate::tools::eval::markdown(&e));
    }
    Ok(())
}
