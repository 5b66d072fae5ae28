//! `flowshard layer2`: layer 2 over a time range (backtest).
//!
//! Lives on: the main thread.

use super::load;
use anyhow::Result;
use std::path::PathBuf;

/// Layer 2 over a time range (backtest): every bucket far from its Holt-Winters forecast.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (OpenSearch sink and [layer2] settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// OpenSearch URL (instead of a config file).
    #[arg(long)]
    pub opensearch: Option<String>,
    /// Start (Unix seconds).
    #[arg(long)]
    pub from: u64,
    /// End (Unix seconds, exclusive).
    #[arg(long)]
    pub to: u64,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, opensearch, from, to } = a;
    let mut cfg = load(&config)?;
    crate::config::Overrides { opensearch, ..Default::default() }.add_sinks(&mut cfg);
    let client = super::opensearch_client(&cfg)?;
    let buckets = crate::jobs::layer2::evaluate(&client, &cfg.layer2, from, to).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut out = String::new();
    for b in crate::jobs::layer2::flagged(&cfg.layer2, &buckets) {
        out.clear();
        crate::jobs::layer2::alert(&cfg.layer2, b).write_json(&mut out, &cfg.general.appliance_id);
        println!("{out}");
    }
    eprintln!("layer 2: {} buckets evaluated", buckets.len());
    Ok(())
}
