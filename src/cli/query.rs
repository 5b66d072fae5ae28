//! `flowshard query`: the Valkey hot window, merged over every appliance writing to it; and
//! `query flows`, a filtered slice of the raw-flows Kafka topic summed per key
//! ([`crate::tools::slice`]).
//!
//! Lives on: the main thread.

use super::load;
use anyhow::{Context, Result};
use clap::Subcommand;
use std::path::PathBuf;

/// Query the Valkey hot window (merged over every appliance writing to it).
#[derive(clap::Args)]
pub struct Args {
    /// Configuration file (its valkey sink gives URL and prefix).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Valkey URL (instead of a config file).
    #[arg(long)]
    pub valkey: Option<String>,
    /// Key prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// What to ask.
    #[command(subcommand)]
    pub what: QueryCmd,
}

/// `flowshard query` subcommands.
#[derive(Subcommand)]
pub enum QueryCmd {
    /// Top keys of a dimension by bytes over the last 300 s.
    Top {
        /// Dimension (src_ip, dst_ip, dst_port, exporter, …).
        #[arg(long, default_value = "dst_ip")]
        dim: String,
        /// How many.
        #[arg(long, short, default_value_t = 10)]
        n: usize,
    },
    /// The 300-point per-second series of one key.
    Series {
        /// Dimension.
        #[arg(long)]
        dim: String,
        /// Key, as the outputs print it (e.g. 192.0.2.7, 443/tcp, AS64500).
        #[arg(long)]
        key: String,
    },
    /// Traffic of a slice across dimensions over a time range of the raw-flows Kafka topic,
    /// summed per key (e.g. --where "src_country=CN" --by dst_ip): exact, read from every record.
    Flows {
        /// Kafka brokers (default: the config's Kafka sink with `flows = true`).
        #[arg(long, value_name = "BROKERS")]
        kafka: Option<String>,
        /// Raw-flows topic (default: the config's, else flowshard.flows).
        #[arg(long)]
        topic: Option<String>,
        /// Start: Unix seconds or RFC 3339; default: 5 minutes ago.
        #[arg(long, value_parser = crate::model::time::parse_time)]
        from: Option<u64>,
        /// End (exclusive); default: the end of the topic now.
        #[arg(long, value_parser = crate::model::time::parse_time)]
        to: Option<u64>,
        /// Filter terms, `;`-separated, all must hold: dimension=key|key, dimension!=key,
        /// address prefixes (src_ip=10.0.0.0/8); repeatable.
        #[arg(long = "where", value_name = "FILTER")]
        filter: Vec<String>,
        /// Dimensions to sum per key (repeatable; e.g. dst_ip, dst_port, src_as, dst_site).
        #[arg(long, default_value = "dst_ip")]
        by: Vec<String>,
        /// Rank by bytes, packets or flows.
        #[arg(long, default_value = "bytes")]
        metric: String,
        /// Keys per dimension.
        #[arg(long, short, default_value_t = 10)]
        n: usize,
    },
    /// The newest alerts.
    Alerts {
        /// How many.
        #[arg(long, short, default_value_t = 20)]
        n: usize,
    },
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { config, valkey, prefix, json, what } = a;
    use crate::sink::valkey;
    let cfg = load(&config)?;
    if let QueryCmd::Flows { kafka, topic, from, to, filter, by, metric, n } = what {
        return flows(&cfg, FlowsArgs { kafka, topic, from, to, filter, by, metric, n, json });
    }
    let from_cfg = cfg.sink.iter().find_map(|s| match s {
        crate::config::Sink::Valkey(v) => Some((v.url.clone(), v.prefix.clone())),
        _ => None,
    });
    let url = valkey
        .or(from_cfg.as_ref().map(|x| x.0.clone()))
        .context("no Valkey: give --valkey redis://host:port or a config with a valkey sink")?;
    let keys = valkey::Keys { prefix: prefix.or(from_cfg.map(|x| x.1)).unwrap_or_else(|| "fs".into()) };
    let mut con = valkey::connect(&url).with_context(|| format!("cannot connect to {url}"))?;
    let t = std::time::Instant::now();
    match what {
        QueryCmd::Top { dim, n } => {
            anyhow::ensure!(crate::model::Dimension::from_name(&dim).is_some(), "unknown dimension {dim:?}");
            let rows = valkey::top(&mut con, &keys, &dim, n)?;
            let took = t.elapsed();
            let ks: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
            let names: Vec<Option<serde_json::Value>> = valkey::names(&mut con, &keys, &dim, &ks)?
                .into_iter()
                .map(|n| n.and_then(|n| serde_json::from_str(&n).ok()))
                .collect();
            if json {
                let v: Vec<_> = rows
                    .iter()
                    .zip(names.iter().chain(std::iter::repeat(&None)))
                    .map(|((k, b), name)| {
                        let mut o = serde_json::json!({"key": k, "bytes": b});
                        if let (Some(obj), Some(serde_json::Value::Object(n))) = (o.as_object_mut(), name) {
                            obj.extend(n.clone());
                        }
                        o
                    })
                    .collect();
                println!("{}", serde_json::json!({"dimension": dim, "window_s": valkey::WINDOW_S, "top": v}));
            } else {
                println!("top {n} {dim} by bytes, last {} s ({} µs):", valkey::WINDOW_S, took.as_micros());
                for ((k, b), name) in rows.iter().zip(names.iter().chain(std::iter::repeat(&None))) {
                    let label = name.as_ref().and_then(|v| v.get("if_name").or_else(|| v.get("as_name")));
                    match label.and_then(|l| l.as_str()) {
                        Some(l) => println!("{b:>16}  {k}  ({l})"),
                        None => println!("{b:>16}  {k}"),
                    }
                }
            }
        }
        QueryCmd::Series { dim, key } => {
            let now = crate::model::time::now_s();
            let pts = valkey::series(&mut con, &keys, &dim, &key, now)?;
            let took = t.elapsed();
            if json {
                let v: Vec<_> =
                    pts.iter().map(|p| serde_json::json!([p.second, p.bytes, p.packets, p.flows])).collect();
                println!(
                    "{}",
                    serde_json::json!({"dimension": dim, "key": key, "columns": ["second", "bytes", "packets", "flows"], "points": v})
                );
            } else {
                println!("{dim} {key}: {} points ({} µs); non-zero seconds:", pts.len(), took.as_micros());
                for p in pts.iter().filter(|p| p.bytes + p.packets + p.flows > 0) {
                    println!("{}  bytes {}  packets {}  flows {}", p.second, p.bytes, p.packets, p.flows);
                }
            }
        }
        QueryCmd::Flows { .. } => unreachable!("answered above"),
        QueryCmd::Alerts { n } => {
            let v: Vec<String> = redis::cmd("LRANGE").arg(keys.alerts()).arg(0).arg(n as isize - 1).query(&mut con)?;
            for a in v {
                println!("{a}");
            }
        }
    }
    Ok(())
}

struct FlowsArgs {
    kafka: Option<String>,
    topic: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    filter: Vec<String>,
    by: Vec<String>,
    metric: String,
    n: usize,
    json: bool,
}

/// `query flows`.
fn flows(cfg: &crate::config::Config, a: FlowsArgs) -> Result<()> {
    use crate::model::Dimension;
    super::check(cfg, &crate::config::HostInfo::detect())?;
    let sink = cfg.flows_sink();
    let brokers = a
        .kafka
        .or(sink.map(|k| k.brokers.clone()))
        .context("no Kafka: give --kafka BROKERS or a config whose Kafka sink has flows = true")?;
    let topic = a.topic.or(sink.map(|k| k.flows_topic.clone())).unwrap_or_else(|| "flowshard.flows".into());
    let from = a.from.unwrap_or_else(|| crate::model::time::now_s().saturating_sub(300));
    anyhow::ensure!(a.to.is_none_or(|t| t > from), "--to must be after --from");
    let metric = match a.metric.as_str() {
        "bytes" => 0,
        "packets" => 1,
        "flows" => 2,
        m => anyhow::bail!("--metric {m:?}: use bytes, packets or flows"),
    };
    let mut by = Vec::new();
    for d in &a.by {
        let dim = Dimension::from_name(d)
            .with_context(|| format!("--by {d:?} is not a dimension (e.g. dst_ip, dst_port, src_as)"))?;
        by.push(dim);
    }
    let pipeline = cfg.pipeline_loaded()?;
    let filter = crate::enrich::Table::filter(pipeline.enrich.as_deref(), &a.filter.join(";"))?;
    let props = sink.map(|k| k.properties.clone()).unwrap_or_default();
    let src = crate::tools::replay::kafka::KafkaSource { brokers, topic, from, to: a.to, properties: props };
    let t = std::time::Instant::now();
    let r = crate::tools::slice::query(&src, &pipeline, filter, &by, metric, a.n)
        .with_context(|| format!("query of topic {}", src.topic))?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let share = |v: u64| if r.total[metric] == 0 { 0.0 } else { 100.0 * v as f64 / r.total[metric] as f64 };
    println!(
        "slice {:?}: {} records of {} read in the range ({} s with traffic; {:.1} s): {} bytes, {} packets, {} flows",
        r.filter,
        r.records - r.filtered_out,
        r.records,
        r.seconds,
        t.elapsed().as_secs_f64(),
        r.total[0],
        r.total[1],
        r.total[2]
    );
    for (dim, rows) in &r.top {
        println!("top {} {dim} by {}:", a.n, a.metric);
        for row in rows {
            let v = [row.bytes, row.packets, row.flows][metric];
            match &row.name {
                Some(n) => println!("{v:>16} {:>6.2} %  {}  ({n})", share(v), row.key),
                None => println!("{v:>16} {:>6.2} %  {}", share(v), row.key),
            }
        }
    }
    Ok(())
}
