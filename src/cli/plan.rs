//! `flowshard plan`: proposes a core layout from the host's CPUs, NUMA nodes and NIC.
//!
//! Lives on: the main thread.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Propose a core layout from the host's CPUs, NUMA nodes and NIC; prints the reasoning and
/// the config's [cores] section.
#[derive(clap::Args)]
pub struct Args {
    /// The capture NIC (default: the first interface with a device).
    #[arg(long)]
    pub nic: Option<String>,
    /// Read this /sys tree instead of /sys.
    #[arg(long, default_value = "/sys")]
    pub sys_root: PathBuf,
    /// Write the [cores] section to this file instead of stdout.
    #[arg(long)]
    pub write: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { nic, sys_root, write } = a;
    let host = crate::ops::plan::read_host(&sys_root, nic.as_deref());
    let p = crate::ops::plan::plan(&host);
    for r in &p.reasons {
        eprintln!("plan: {r}");
    }
    let text = crate::ops::plan::toml(&p);
    match write {
        Some(f) => std::fs::write(&f, text).with_context(|| format!("cannot write {}", f.display()))?,
        None => print!("{text}"),
    }
    Ok(())
}
