//! `flowshard feedback`: operator feedback (suppress, false positive, unsuppress, list).
//!
//! Lives on: the main thread.

use super::load;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

/// Operator feedback: suppress a key, mark an alert as a false positive, lift a suppression,
/// list. Goes to the Kafka feedback topic when a Kafka sink is configured (every appliance
/// applies it), else straight into the state directory of this host's appliance.
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (Kafka sink, feedback topic, state directory).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (instead of a config file).
    #[arg(long)]
    pub kafka: Option<String>,
    /// State directory (when not using Kafka).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub what: FeedbackCmd,
}

/// `flowshard feedback` subcommands.
#[derive(Subcommand)]
pub enum FeedbackCmd {
    /// Silence alerts on a key (every layer unless --layer) for a while.
    Suppress {
        /// Key as outputs print it.
        #[arg(long)]
        key: String,
        /// Only this dimension.
        #[arg(long)]
        dim: Option<String>,
        /// Only this layer.
        #[arg(long)]
        layer: Option<u8>,
        /// For how long: 90s, 30m, 2h, 7d.
        #[arg(long = "for")]
        duration: String,
        /// Why (kept with the suppression).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Mark an alert as a false positive: the same (layer, dimension, key, metric) is silenced
    /// for [alerts] false_positive_silence_s.
    FalsePositive {
        /// Layer of the alert.
        #[arg(long)]
        layer: u8,
        /// Dimension.
        #[arg(long)]
        dim: String,
        /// Key.
        #[arg(long)]
        key: String,
        /// Metric.
        #[arg(long, default_value = "bytes")]
        metric: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lift every suppression of a key.
    Unsuppress {
        /// Key.
        #[arg(long)]
        key: String,
    },
    /// Print the suppressions in force in the state directory.
    List,
}

fn parse_duration(s: &str) -> Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("{s:?} is not a duration such as 90s, 30m, 2h or 7d"))?;
    Ok(n * match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("{s:?}: unknown unit {unit:?} (use s, m, h or d)"),
    })
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, kafka, state_dir, what } = a;
    use crate::alert::{Feedback, Suppressions};
    let mut cfg = load(&config)?;
    crate::config::Overrides { kafka, ..Default::default() }.add_sinks(&mut cfg);
    if let Some(d) = state_dir {
        cfg.general.state_dir = d;
    }
    let now = crate::model::time::now_s();
    let f = match what {
        FeedbackCmd::List => {
            let s = Suppressions::load(&cfg.general.state_dir)?;
            for i in s.items {
                println!("{}", serde_json::to_string(&i)?);
            }
            return Ok(());
        }
        FeedbackCmd::Suppress { key, dim, layer, duration, reason } => {
            Feedback::Suppress { dimension: dim, key, until: now + parse_duration(&duration)?, layer, reason }
        }
        FeedbackCmd::FalsePositive { layer, dim, key, metric, reason } => Feedback::FalsePositive {
            layer,
            dimension: dim,
            key,
            metric,
            until: now + cfg.alerts.false_positive_silence_s,
            reason,
        },
        FeedbackCmd::Unsuppress { key } => Feedback::Unsuppress { key },
    };
    let kafka =
        cfg.sink.iter().find_map(|s| if let crate::config::Sink::Kafka(k) = s { Some(k.clone()) } else { None });
    match kafka {
        Some(k) if !cfg.alerts.feedback_topic.is_empty() => {
            crate::jobs::feedback::publish(&k, &cfg.alerts.feedback_topic, &f)
                .map_err(|e| anyhow::anyhow!("kafka {}: {e}", k.brokers))?;
            println!("published to {} on {}: {}", cfg.alerts.feedback_topic, k.brokers, serde_json::to_string(&f)?);
        }
        _ => {
            Suppressions::apply_to_dir(&cfg.general.state_dir, f.clone(), now)?;
            println!(
                "written to {}: {}",
                Suppressions::path(&cfg.general.state_dir).display(),
                serde_json::to_string(&f)?
            );
        }
    }
    Ok(())
}
