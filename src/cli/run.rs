//! `flowshard run`: receives flows and writes rollups and alerts until SIGINT/SIGTERM.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::{HostInfo, Overrides};
use crate::ops::{doctor, notify};
use anyhow::Result;
use std::path::PathBuf;

/// Receive flows and write rollups and alerts (built-in defaults without --config: listen
/// on 2055, 4739 and 6343, JSON lines on stdout).
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override the listeners (repeatable), e.g. --listen 127.0.0.1:2055.
    #[arg(long)]
    pub listen: Vec<String>,
    /// Override the number of shards (CPUs 0..N-1; I/O on the next CPU).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// Override the state directory.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Write "ready <addr>... [http=<addr>]" to stderr once listening (for scripts).
    #[arg(long)]
    pub print_ready: bool,
    /// Override the HTTP address (metrics, health, API); port 0 picks one.
    #[arg(long)]
    pub http: Option<String>,
    /// Do not serve HTTP.
    #[arg(long)]
    pub no_http: bool,
    /// Also write to Kafka (bootstrap servers; topics flowshard.rollups/alerts).
    #[arg(long)]
    pub kafka: Option<String>,
    /// Also write the hot window to Valkey/Redis (redis:// URL).
    #[arg(long)]
    pub valkey: Option<String>,
    /// Also write to OpenSearch (http(s):// URL).
    #[arg(long)]
    pub opensearch: Option<String>,
    /// Override the appliance id.
    #[arg(long)]
    pub appliance: Option<String>,
    /// Override every listener's exporter spread: off, auto or always.
    #[arg(long)]
    pub spread: Option<crate::config::SpreadMode>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let mut cfg = load(&a.config)?;
    let host = HostInfo::detect();
    let overrides = Overrides {
        listen: a.listen,
        shards: a.shards,
        no_pin: a.no_pin,
        state_dir: a.state_dir,
        http: a.http,
        no_http: a.no_http,
        kafka: a.kafka,
        valkey: a.valkey,
        opensearch: a.opensearch,
        appliance: a.appliance,
        spread: a.spread,
    };
    overrides.apply(&mut cfg, &host);
    check(&cfg, &host)?;
    let layout = cfg.layout(&host);
    let rcvbuf = cfg.listener.iter().map(|l| l.recv_buffer_bytes).max().unwrap_or(0);
    let checks = doctor::run(&doctor::Roots::default(), rcvbuf, doctor::memlock_limit(), layout.shards.len());
    for c in checks.iter().filter(|c| c.level == doctor::Level::Fail) {
        tracing::warn!("{c}");
    }
    let stop = super::stop_on_signals()?;
    tracing::info!(
        "starting {} shard(s) on CPUs {:?}, I/O on {:?}{}",
        layout.shards.len(),
        layout.shards,
        layout.io,
        if layout.pin { "" } else { " (not pinned)" }
    );
    let print_ready = a.print_ready;
    let report = crate::runtime::run(&cfg, &layout, stop, |bound, http| {
        let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
        if print_ready {
            let h = http.map(|a| format!(" http={a}")).unwrap_or_default();
            eprintln!("ready {}{h}", addrs.join(" "));
        }
        if let Err(e) = notify::notify(&format!("READY=1\nSTATUS=listening on {}", addrs.join(" "))) {
            tracing::warn!("cannot notify systemd: {e}");
        }
    })?;
    let _ = notify::notify("STOPPING=1");
    // The summary is the command's output (scripts read it): one JSON line, last on stderr.
    eprintln!("{}", report.summary_json());
    Ok(())
}
