//! `flowshard setup`: installs what the sinks need, idempotently.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Install what the sinks need, idempotently: Kafka topics, OpenSearch index templates,
/// alerts index and retention policy. Prints one line per item.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (TOML) naming the sinks.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (instead of a config file).
    #[arg(long)]
    pub kafka: Option<String>,
    /// OpenSearch URL (instead of a config file).
    #[arg(long)]
    pub opensearch: Option<String>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, kafka, opensearch } = a;
    let mut cfg = load(&config)?;
    crate::config::Overrides { kafka, opensearch, ..Default::default() }.add_sinks(&mut cfg);
    check(&cfg, &HostInfo::detect())?;
    let mut n = 0;
    for s in &cfg.sink {
        let lines = match s {
            crate::config::Sink::Kafka(k) => crate::sink::kafka::create_topics(k, &cfg.general.appliance_id, &[])
                .map_err(|e| anyhow::anyhow!("kafka {}: {e}", k.brokers))?,
            crate::config::Sink::Opensearch(o) => {
                crate::sink::opensearch::Client::new(o).and_then(|c| c.setup()).map_err(|e| anyhow::anyhow!("{e}"))?
            }
            _ => continue,
        };
        for l in lines {
            println!("{l}");
        }
        n += 1;
    }
    if n == 0 {
        bail!("no kafka or opensearch sink configured (use --config, --kafka or --opensearch)");
    }
    Ok(())
}
