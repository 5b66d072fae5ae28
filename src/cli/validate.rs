//! `flowshard validate`: checks a configuration file; prints each problem with its field and fix.
//!
//! Lives on: the main thread.

use super::check;
use crate::config::{Config, HostInfo};
use anyhow::Result;
use std::path::PathBuf;

/// Check a configuration file; prints each problem with its field and fix.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    pub config: PathBuf,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let cfg = Config::load(&a.config).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
    let host = HostInfo::detect();
    check(&cfg, &host)?;
    let l = cfg.layout(&host);
    println!("{}: valid (shards on CPUs {:?}, I/O on CPUs {:?})", a.config.display(), l.shards, l.io);
    Ok(())
}
