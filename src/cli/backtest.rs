//! `flowshard backtest`: a `timestamp,value` CSV through the layer-1 detector the shards run, or
//! (`--layer 3`) a `timestamp,v1[,…,v5]` CSV through one layer-3 forest.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Run a `timestamp,value` CSV through the layer-1 detector the shards run; writes
/// `timestamp,value,anomaly_score,alert` (one row per input row) to stdout.
#[derive(clap::Args)]
pub struct Args {
    /// Input CSV (`-` for stdin).
    #[arg(long)]
    pub input: PathBuf,
    /// Configuration file (detector settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Metric whose floor and rules apply: bytes, packets, flows, distinct.
    #[arg(long, default_value = "bytes")]
    pub metric: String,
    /// Override |z| threshold.
    #[arg(long)]
    pub z_threshold: Option<f64>,
    /// Override the metric's minimum value worth an alert (0 for unitless series).
    #[arg(long)]
    pub min_value: Option<f64>,
    /// Override warm-up (rows).
    #[arg(long)]
    pub warmup: Option<u32>,
    /// Override consecutive anomalous rows before a spike alert.
    #[arg(long)]
    pub confirm: Option<u8>,
    /// Detection layer: 1 (the inline detector, one value column) or 3 (the Random Cut Forest,
    /// up to five value columns: bytes, packets, flows, distinct endpoints, distinct ports; settings from `[layer3]`).
    #[arg(long, default_value_t = 1)]
    pub layer: u8,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { input, config, metric, z_threshold, min_value, warmup, confirm, layer } = a;
    let cfg = load(&config)?;
    check(&cfg, &HostInfo::detect())?;
    anyhow::ensure!(layer == 1 || layer == 3, "--layer {layer}: use 1 (inline detector) or 3 (Random Cut Forest)");
    let mut d = cfg.pipeline().detect.unwrap_or_default();
    let m = crate::model::Metric::ALL
        .into_iter()
        .find(|x| x.name() == metric)
        .with_context(|| format!("--metric {metric:?}: use bytes, packets, flows or distinct"))?;
    let mi = crate::model::Metric::ALL.iter().position(|x| *x == m).unwrap_or(0);
    if let Some(z) = z_threshold {
        d.z_threshold = z;
    }
    if let Some(v) = min_value {
        *d.min_value_mut(mi) = v;
    }
    if let Some(w) = warmup {
        d.warmup_s = w;
    }
    if let Some(c) = confirm {
        d.spike_confirm_s = c.max(1);
    }
    let text = if input.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(&input).with_context(|| format!("cannot read {}", input.display()))?
    };
    let out = if layer == 3 {
        crate::tools::backtest::run_layer3(&text, &cfg.layer3)
    } else {
        crate::tools::backtest::run(&text, &d, m)
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
    std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
    Ok(())
}
