//! `flowshard replay`: feeds a pcap/pcapng capture through the pipeline.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Feed a pcap/pcapng capture through the pipeline; JSON lines on stdout, a summary line
/// last on stderr.
#[derive(clap::Args)]
pub struct Args {
    /// Capture file.
    pub file: PathBuf,
    /// Shards to simulate.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Pace the replay by the capture's timestamps.
    #[arg(long)]
    pub realtime: bool,
    /// Configuration file (aggregation and detection settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Only print the summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { file, shards, realtime, config, quiet } = a;
    let cfg = load(&config)?;
    check(&cfg, &HostInfo::detect())?;
    let pipeline = cfg.pipeline_loaded()?;
    let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let out: Box<dyn std::io::Write + Send> = if quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()))
    };
    let mut sink = crate::sink::jsonl::JsonLines::new("stdout", out, &cfg.general.appliance_id, true, true);
    let sum = crate::tools::replay::replay(&data, &pipeline, &super::downstream(&cfg), shards, realtime, &mut sink)
        .with_context(|| format!("replay of {}", file.display()))?;
    eprintln!("{}", crate::tools::replay::summary_line(&sum));
    Ok(())
}
