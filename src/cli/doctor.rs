//! `flowshard doctor`: checks the host against flowshard's recommendations.
//!
//! Lives on: the main thread.

use super::load;
use crate::config::HostInfo;
use anyhow::{bail, Result};
use std::path::PathBuf;

/// Check the host against flowshard's recommendations (the same checks as tuning/tune.sh);
/// exit status 1 if a check fails.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (listener buffers, shard count).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Read this /proc tree instead of /proc.
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Read this /sys tree instead of /sys.
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, proc_root, sys_root } = a;
    let cfg = load(&config)?;
    let host = HostInfo::detect();
    let layout = cfg.layout(&host);
    let rcvbuf = cfg.listener.iter().map(|l| l.recv_buffer_bytes).max().unwrap_or(0);
    let roots = crate::ops::doctor::Roots { proc_root, sys_root };
    let checks = crate::ops::doctor::run(&roots, rcvbuf, crate::ops::doctor::memlock_limit(), layout.shards.len());
    for c in &checks {
        println!("{c}");
    }
    for e in cfg.validate(&host) {
        println!("FAIL  config {e}");
    }
    if checks.iter().any(|c| c.level == crate::ops::doctor::Level::Fail) || !cfg.validate(&host).is_empty() {
        bail!("host checks failed");
    }
    Ok(())
}
