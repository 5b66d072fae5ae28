//! `flowshard layer3`: layer 3 over a stored time range (backtest on history): the `src_ip`
//! rollups of [from, to) read back from OpenSearch, interval by interval, through the same
//! engine the live job runs.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::Result;
use std::path::PathBuf;

/// Layer 3 over a time range of the OpenSearch rollups.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (OpenSearch sink and [layer3] settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// OpenSearch URL (instead of a config file).
    #[arg(long)]
    pub opensearch: Option<String>,
    /// Whose rollups (default: the configuration's appliance id).
    #[arg(long)]
    pub appliance: Option<String>,
    /// Start (Unix seconds).
    #[arg(long)]
    pub from: u64,
    /// End (Unix seconds, exclusive).
    #[arg(long)]
    pub to: u64,
    /// Print every result, not only anomalies (grade > 0).
    #[arg(long)]
    pub all: bool,
}

/// Runs the subcommand: prints each anomaly as a result document in the anomaly-detection
/// plugin's schema, each confirmed anomaly (what would have alerted) as an alert line, and a
/// summary on stderr.
pub fn run(a: Args) -> Result<()> {
    let Args { config, opensearch, appliance, from, to, all } = a;
    anyhow::ensure!(from < to, "--from {from} must be before --to {to}");
    let mut cfg = load(&config)?;
    crate::config::Overrides { opensearch, ..Default::default() }.add_sinks(&mut cfg);
    check(&cfg, &HostInfo::detect())?;
    let client = super::opensearch_client(&cfg)?;
    let app = appliance.unwrap_or_else(|| cfg.general.appliance_id.clone());
    let l3 = &cfg.layer3;
    let mut eng = crate::detect::layer3::Layer3Engine::new(l3);
    let (mut results, mut line) = (Vec::new(), String::new());
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut print = |eng: &mut crate::detect::layer3::Layer3Engine, results: &mut Vec<_>| -> std::io::Result<()> {
        for r in results.drain(..) {
            let r: crate::detect::layer3::AnomalyResult = r;
            if all || r.is_anomaly() {
                std::io::Write::write_all(&mut out, format!("{}\n", r.to_json(&app, l3.interval_s)).as_bytes())?;
            }
        }
        for a in crate::alert::layer3_alerts(&eng.take_confirmed(), l3.interval_s) {
            line.clear();
            a.write_json(&mut line, &app);
            line.push('\n');
            std::io::Write::write_all(&mut out, line.as_bytes())?;
        }
        Ok(())
    };
    let t = std::time::Instant::now();
    let now_ms = crate::model::time::now_ms();
    let mut io_err = None;
    let read = crate::jobs::layer3::history(&client, &app, l3.interval_s, from, to, |start, rows| {
        eng.observe_interval(start, rows, now_ms, &mut results)?;
        if let Err(e) = print(&mut eng, &mut results) {
            io_err.get_or_insert(e);
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    eng.close_last(to, now_ms, &mut results).map_err(|e| anyhow::anyhow!("{e}"))?;
    print(&mut eng, &mut results)?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    std::io::Write::flush(&mut out)?;
    let c = &eng.counters;
    eprintln!(
        "layer 3: {} intervals with data ({} rows, {} searches, {} bad keys, {} unreadable sketches) of {app} \
         in [{from}, {to}); {} entities, {} results, {} anomalies, {} alerts; {:.1} s",
        read.intervals,
        read.rows,
        read.pages,
        read.bad_keys,
        read.bad_sketches,
        eng.entities(),
        c.results,
        c.anomalies,
        c.confirmed,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
