//! `flowshard replay`: feeds a pcap/pcapng capture, or a time range of the raw-flows Kafka
//! topic, through the pipeline.
//!
//! Lives on: the main thread.

use super::{check, load};
use crate::config::HostInfo;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// Feed a pcap/pcapng capture (or, with --kafka, the raw-flows topic) through the pipeline;
/// JSON lines on stdout, a summary line last on stderr.
#[derive(clap::Args)]
pub struct Args {
    /// Capture file (not with --kafka).
    #[arg(required_unless_present = "kafka", conflicts_with = "kafka")]
    pub file: Option<PathBuf>,
    /// Read the raw-flows topic from these Kafka brokers instead (host:port,...).
    #[arg(long, value_name = "BROKERS")]
    pub kafka: Option<String>,
    /// Raw-flows topic.
    #[arg(long, default_value = "flowshard.flows", requires = "kafka")]
    pub topic: String,
    /// First arrival second replayed: Unix seconds or RFC 3339 (2026-11-25T01:31:39Z).
    #[arg(long, requires = "kafka", value_parser = crate::model::time::parse_time, default_value = "0")]
    pub from: u64,
    /// End of the range (exclusive); default: the end of the topic when the replay starts.
    #[arg(long, requires = "kafka", value_parser = crate::model::time::parse_time)]
    pub to: Option<u64>,
    /// Shards to simulate.
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Pace the replay by the capture's timestamps.
    #[arg(long)]
    pub realtime: bool,
    /// Configuration file (aggregation and detection settings).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Aggregate only the records this filter matches (`;`-separated terms, all must hold:
    /// dimension=key|key, dimension!=key, address prefixes); repeatable. The summary counts
    /// the others as `filtered_out`.
    #[arg(long = "where", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Only print the summary.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { file, kafka, topic, from, to, shards, realtime, config, filter, quiet } = a;
    let cfg = load(&config)?;
    check(&cfg, &HostInfo::detect())?;
    let mut pipeline = cfg.pipeline_loaded()?;
    if !filter.is_empty() {
        let f = crate::enrich::Table::filter(pipeline.enrich.as_deref(), &filter.join(";"))?;
        pipeline.filter = Some(std::sync::Arc::new(f));
    }
    let out: Box<dyn std::io::Write + Send> = if quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()))
    };
    let mut sink = crate::sink::jsonl::JsonLines::new("stdout", out, &cfg.general.appliance_id, true, true);
    let down = super::downstream(&cfg);
    let sum = match (kafka, file) {
        (Some(brokers), _) => {
            anyhow::ensure!(to.is_none_or(|t| t > from), "--to must be after --from");
            anyhow::ensure!(!realtime, "--realtime paces a capture; it does not apply to --kafka");
            // the records carry their enrichment: they are aggregated as recorded (the
            // tables, when configured, only name the AS rollups)
            let props = cfg.flows_sink().map(|k| k.properties.clone()).unwrap_or_default();
            let src = crate::tools::replay::kafka::KafkaSource { brokers, topic, from, to, properties: props };
            crate::tools::replay::replay_kafka(&src, &pipeline, &down, shards, &mut sink)
                .with_context(|| format!("replay of topic {}", src.topic))?
        }
        (None, Some(file)) => {
            let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            crate::tools::replay::replay(&data, &pipeline, &down, shards, realtime, &mut sink)
                .with_context(|| format!("replay of {}", file.display()))?
        }
        (None, None) => anyhow::bail!("give a capture file or --kafka BROKERS"),
    };
    eprintln!("{}", crate::tools::replay::summary_line(&sum));
    Ok(())
}
