//! The `flowshard` command line: one module per subcommand, each owning its `Args` and its
//! `run()`; this module only names them, sets up logging, and holds the helpers they share
//! (loading and checking a configuration, signals).
//!
//! May depend on: every module. Lives on: the main thread.

pub mod backtest;
pub mod demo;
pub mod doctor;
pub mod enrich;
pub mod evaluate;
pub mod feedback;
pub mod gen;
pub mod layer2;
pub mod layer3;
pub mod plan;
pub mod query;
pub mod replay;
pub mod run;
pub mod send;
pub mod setup;
pub mod validate;

use crate::config::{Config, HostInfo};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Thread-per-core network-flow telemetry: NetFlow v5/v9, IPFIX and sFlow v5 into 1-second
/// rollups with inline anomaly detection.
#[derive(Parser)]
#[command(name = "flowshard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive flows and write rollups and alerts (built-in defaults without --config: listen
    /// on 2055, 4739 and 6343, JSON lines on stdout).
    Run(run::Args),
    /// Install what the sinks need, idempotently: Kafka topics, OpenSearch index templates,
    /// alerts index and retention policy. Prints one line per item.
    Setup(setup::Args),
    /// Operator feedback: suppress a key, mark an alert as a false positive, lift a suppression,
    /// list. Goes to the Kafka feedback topic when a Kafka sink is configured (every appliance
    /// applies it), else straight into the state directory of this host's appliance.
    Feedback(feedback::Args),
    /// Layer 2 over a time range (backtest): every bucket far from its Holt-Winters forecast.
    Layer2(layer2::Args),
    /// Layer 3 over a time range (backtest on history): the OpenSearch `src_ip` rollups through
    /// the per-source Random Cut Forests; anomalies as result documents, alerts, a summary.
    Layer3(layer3::Args),
    /// Query the Valkey hot window (merged over every appliance writing to it).
    Query(query::Args),
    /// Send the UDP payloads of a capture to a collector (loopback tests, demos).
    Send(send::Args),
    /// Generate realistic flow traffic with labeled incidents: to a pcap (simulated time) or
    /// live over UDP (sendmmsg, paced).
    Gen(gen::Args),
    /// Run a `timestamp,value` CSV through the layer-1 detector the shards run; writes
    /// `timestamp,value,anomaly_score,alert` (one row per input row) to stdout.
    Backtest(backtest::Args),
    /// Score layer-1 alerts on a generated capture against its labels (recall, delay,
    /// precision, false alerts per hour).
    Evaluate(evaluate::Args),
    /// A newcomer's tour: runs flowshard with built-in defaults, feeds it generated traffic with a
    /// DDoS and a port scan after ~35 s, prints each alert as it fires and serves the live view;
    /// stops on Ctrl-C or after --duration.
    Demo(demo::Args),
    /// Propose a core layout from the host's CPUs, NUMA nodes and NIC; prints the reasoning and
    /// the config's [cores] section.
    Plan(plan::Args),
    /// Check the host against flowshard's recommendations (the same checks as tuning/tune.sh);
    /// exit status 1 if a check fails.
    Doctor(doctor::Args),
    /// Check a configuration file; prints each problem with its field and fix.
    Validate(validate::Args),
    /// Feed a pcap/pcapng capture through the pipeline; JSON lines on stdout, a summary line
    /// last on stderr.
    Replay(replay::Args),
    /// Load the `[enrich]` tables (GeoIP, ASN, networks file) and look addresses up: one JSON
    /// line per address.
    Enrich(enrich::Args),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    crate::ops::log::init();
    match cli.cmd {
        Cmd::Run(a) => run::run(a),
        Cmd::Setup(a) => setup::run(a),
        Cmd::Feedback(a) => feedback::run(a),
        Cmd::Layer2(a) => layer2::run(a),
        Cmd::Layer3(a) => layer3::run(a),
        Cmd::Query(a) => query::run(a),
        Cmd::Send(a) => send::run(a),
        Cmd::Gen(a) => gen::run(a),
        Cmd::Backtest(a) => backtest::run(a),
        Cmd::Evaluate(a) => evaluate::run(a),
        Cmd::Demo(a) => demo::run(a),
        Cmd::Plan(a) => plan::run(a),
        Cmd::Doctor(a) => doctor::run(a),
        Cmd::Validate(a) => validate::run(a),
        Cmd::Replay(a) => replay::run(a),
        Cmd::Enrich(a) => enrich::run(a),
    }
}

/// The configuration file, or the built-in defaults without one.
fn load(config: &Option<PathBuf>) -> Result<Config> {
    match config {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(Config::default()),
    }
}

/// What replays run after the pipeline, from the configuration.
fn downstream(cfg: &Config) -> crate::tools::replay::Downstream<'_> {
    crate::tools::replay::Downstream {
        incidents: &cfg.incidents,
        layer3: &cfg.layer3,
        appliance: &cfg.general.appliance_id,
    }
}

/// The OpenSearch client of the configuration's OpenSearch sink (the history subcommands).
fn opensearch_client(cfg: &Config) -> Result<crate::sink::opensearch::Client> {
    let o = cfg
        .sink
        .iter()
        .find_map(|s| if let crate::config::Sink::Opensearch(o) = s { Some(o) } else { None })
        .context("no OpenSearch: give --opensearch URL or a config with an opensearch sink")?;
    crate::sink::opensearch::Client::new(o).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Validates; prints every problem (field and fix) and fails when there is one.
fn check(cfg: &Config, host: &HostInfo) -> Result<()> {
    let errs = cfg.validate(host);
    if errs.is_empty() {
        return Ok(());
    }
    for e in &errs {
        eprintln!("config error: {e}");
    }
    bail!("{} configuration error(s)", errs.len())
}

/// A flag set by SIGINT or SIGTERM.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    Ok(stop)
}
