//! The `flowshard` command line: `run`, `validate`, `replay`.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flowshard::config::{Config, HostInfo};
use flowshard::io::JsonLines;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Thread-per-core network-flow telemetry: NetFlow v5/v9, IPFIX and sFlow v5 into 1-second
/// rollups with inline anomaly detection.
#[derive(Parser)]
#[command(name = "flowshard", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive flows and write rollups and alerts (built-in defaults without --config: listen
    /// on 2055, 4739 and 6343, JSON lines on stdout).
    Run {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Override the listeners (repeatable), e.g. --listen 127.0.0.1:2055.
        #[arg(long)]
        listen: Vec<String>,
        /// Override the number of shards (CPUs 0..N-1; I/O on the next CPU).
        #[arg(long)]
        shards: Option<usize>,
        /// Do not pin threads to CPUs.
        #[arg(long)]
        no_pin: bool,
        /// Override the state directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Write "ready <addr>... [http=<addr>]" to stderr once listening (for scripts).
        #[arg(long)]
        print_ready: bool,
        /// Override the HTTP address (metrics, health, API); port 0 picks one.
        #[arg(long)]
        http: Option<String>,
        /// Do not serve HTTP.
        #[arg(long)]
        no_http: bool,
        /// Also write to Kafka (bootstrap servers; topics flowshard.rollups/alerts).
        #[arg(long)]
        kafka: Option<String>,
        /// Also write the hot window to Valkey/Redis (redis:// URL).
        #[arg(long)]
        valkey: Option<String>,
        /// Also write to OpenSearch (http(s):// URL).
        #[arg(long)]
        opensearch: Option<String>,
        /// Override the appliance id.
        #[arg(long)]
        appliance: Option<String>,
    },
    /// Install what the sinks need, idempotently: Kafka topics, OpenSearch index templates,
    /// alerts index and retention policy. Prints one line per item.
    Setup {
        /// Configuration file (TOML) naming the sinks.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Kafka bootstrap servers (instead of a config file).
        #[arg(long)]
        kafka: Option<String>,
        /// OpenSearch URL (instead of a config file).
        #[arg(long)]
        opensearch: Option<String>,
    },
    /// Operator feedback: suppress a key, mark an alert as a false positive, lift a suppression,
    /// list. Goes to the Kafka feedback topic when a Kafka sink is configured (every appliance
    /// applies it), else straight into the state directory of this host's appliance.
    Feedback {
        /// Configuration file (Kafka sink, feedback topic, state directory).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Kafka bootstrap servers (instead of a config file).
        #[arg(long)]
        kafka: Option<String>,
        /// State directory (when not using Kafka).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        #[command(subcommand)]
        what: FeedbackCmd,
    },
    /// Layer 2 over a time range (backtest): every bucket far from its Holt-Winters forecast.
    Layer2 {
        /// Configuration file (OpenSearch sink and [layer2] settings).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// OpenSearch URL (instead of a config file).
        #[arg(long)]
        opensearch: Option<String>,
        /// Start (Unix seconds).
        #[arg(long)]
        from: u64,
        /// End (Unix seconds, exclusive).
        #[arg(long)]
        to: u64,
    },
    /// Query the Valkey hot window (merged over every appliance writing to it).
    Query {
        /// Configuration file (its valkey sink gives URL and prefix).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Valkey URL (instead of a config file).
        #[arg(long)]
        valkey: Option<String>,
        /// Key prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        what: QueryCmd,
    },
    /// Send the UDP payloads of a capture to a collector (loopback tests, demos).
    Send {
        /// Capture file.
        file: PathBuf,
        /// Destination, e.g. 127.0.0.1:2055.
        #[arg(long)]
        to: String,
        /// Source address to send from (e.g. 127.0.0.2 to look like another exporter).
        #[arg(long, default_value = "0.0.0.0")]
        from: String,
        /// Datagrams per second (0 = as fast as possible).
        #[arg(long, default_value_t = 20000)]
        rate: u64,
        /// Send the capture this many times.
        #[arg(long, default_value_t = 1)]
        repeat: u32,
    },
    /// Generate realistic flow traffic with labeled incidents: to a pcap (simulated time) or
    /// live over UDP (sendmmsg, paced).
    Gen(GenArgs),
    /// Run a `timestamp,value` CSV through the layer-1 detector the shards run; writes
    /// `timestamp,value,anomaly_score,alert` (one row per input row) to stdout.
    Backtest {
        /// Input CSV (`-` for stdin).
        #[arg(long)]
        input: PathBuf,
        /// Configuration file (detector settings).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Metric whose floor and rules apply: bytes, packets, flows, distinct.
        #[arg(long, default_value = "bytes")]
        metric: String,
        /// Override |z| threshold.
        #[arg(long)]
        z_threshold: Option<f64>,
        /// Override the metric's minimum value worth an alert (0 for unitless series).
        #[arg(long)]
        min_value: Option<f64>,
        /// Override warm-up (rows).
        #[arg(long)]
        warmup: Option<u32>,
        /// Override consecutive anomalous rows before a spike alert.
        #[arg(long)]
        confirm: Option<u8>,
    },
    /// Score layer-1 alerts on a generated capture against its labels (recall, delay,
    /// precision, false alerts per hour).
    Evaluate {
        /// Generated capture (`flowshard gen --pcap`).
        #[arg(long)]
        pcap: PathBuf,
        /// Its labels (default: next to the capture).
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Shards to simulate.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Configuration file (detector settings).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print JSON instead of a markdown table.
        #[arg(long)]
        json: bool,
    },
    /// A newcomer's tour: runs flowshard with built-in defaults, feeds it generated traffic with a
    /// DDoS and a port scan after ~35 s, prints each alert as it fires and serves the live view;
    /// stops on Ctrl-C or after --duration.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Live view and API address.
        #[arg(long, default_value = "127.0.0.1:9280")]
        http: String,
        /// Generated records per second.
        #[arg(long, default_value_t = 3000)]
        rate: u64,
    },
    /// Propose a core layout from the host's CPUs, NUMA nodes and NIC; prints the reasoning and
    /// the config's [cores] section.
    Plan {
        /// The capture NIC (default: the first interface with a device).
        #[arg(long)]
        nic: Option<String>,
        /// Read this /sys tree instead of /sys.
        #[arg(long, default_value = "/sys")]
        sys_root: PathBuf,
        /// Write the [cores] section to this file instead of stdout.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Check the host against flowshard's recommendations (the same checks as tuning/tune.sh);
    /// exit status 1 if a check fails.
    Doctor {
        /// Configuration file (listener buffers, shard count).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Read this /proc tree instead of /proc.
        #[arg(long, default_value = "/proc")]
        proc_root: PathBuf,
        /// Read this /sys tree instead of /sys.
        #[arg(long, default_value = "/sys")]
        sys_root: PathBuf,
    },
    /// Check a configuration file; prints each problem with its field and fix.
    Validate {
        /// Configuration file (TOML).
        config: PathBuf,
    },
    /// Feed a pcap/pcapng capture through the pipeline; JSON lines on stdout, a summary line
    /// last on stderr.
    Replay {
        /// Capture file.
        file: PathBuf,
        /// Shards to simulate.
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Pace the replay by the capture's timestamps.
        #[arg(long)]
        realtime: bool,
        /// Configuration file (aggregation and detection settings).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only print the summary.
        #[arg(long)]
        quiet: bool,
    },
}

/// `flowshard query` subcommands.
#[derive(Subcommand)]
enum QueryCmd {
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
    /// The newest alerts.
    Alerts {
        /// How many.
        #[arg(long, short, default_value_t = 20)]
        n: usize,
    },
}

/// `flowshard feedback` subcommands.
#[derive(Subcommand)]
enum FeedbackCmd {
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

fn feedback(
    config: Option<PathBuf>,
    kafka: Option<String>,
    state_dir: Option<PathBuf>,
    what: FeedbackCmd,
) -> Result<()> {
    use flowshard::io::alerts::{Feedback, Suppressions};
    let mut cfg = load(&config)?;
    add_sinks(&mut cfg, kafka, None, None);
    if let Some(d) = state_dir {
        cfg.general.state_dir = d;
    }
    let now = flowshard::io::remote::now_ms() / 1000;
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
        cfg.sink.iter().find_map(|s| if let flowshard::config::Sink::Kafka(k) = s { Some(k.clone()) } else { None });
    match kafka {
        Some(k) if !cfg.alerts.feedback_topic.is_empty() => {
            flowshard::io::kafka::publish_feedback(&k, &cfg.alerts.feedback_topic, &f)
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

/// Adds remote sinks named on the command line.
fn add_sinks(cfg: &mut Config, kafka: Option<String>, valkey: Option<String>, opensearch: Option<String>) {
    use flowshard::config::{KafkaSink, OpensearchSink, Sink, ValkeySink};
    let base = Config::parse(
        "[[sink]]\ntype = \"kafka\"\nbrokers = \"x:1\"\n[[sink]]\ntype = \"valkey\"\nurl = \"redis://x\"\n[[sink]]\ntype = \"opensearch\"\nurl = \"http://x\"\n",
    )
    .ok();
    let defaults = |i: usize| base.as_ref().and_then(|b| b.sink.get(i).cloned());
    if let Some(b) = kafka {
        if let Some(Sink::Kafka(k)) = defaults(0) {
            cfg.sink.push(Sink::Kafka(KafkaSink { brokers: b, ..k }));
        }
    }
    if let Some(u) = valkey {
        if let Some(Sink::Valkey(v)) = defaults(1) {
            cfg.sink.push(Sink::Valkey(ValkeySink { url: u, ..v }));
        }
    }
    if let Some(u) = opensearch {
        if let Some(Sink::Opensearch(o)) = defaults(2) {
            cfg.sink.push(Sink::Opensearch(OpensearchSink { url: u, ..o }));
        }
    }
}

fn load(config: &Option<PathBuf>) -> Result<Config> {
    match config {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{e}")),
        None => Ok(Config::default()),
    }
}

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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Validate { config } => {
            let cfg = Config::load(&config).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
            let host = HostInfo::detect();
            check(&cfg, &host)?;
            let l = cfg.layout(&host);
            println!("{}: valid (shards on CPUs {:?}, I/O on CPUs {:?})", config.display(), l.shards, l.io);
            Ok(())
        }
        Cmd::Gen(a) => gen(a),
        Cmd::Backtest { input, config, metric, z_threshold, min_value, warmup, confirm } => {
            let cfg = load(&config)?;
            check(&cfg, &HostInfo::detect())?;
            let mut d = cfg.pipeline().detect.unwrap_or_default();
            let m = flowshard::model::Metric::ALL
                .into_iter()
                .find(|x| x.name() == metric)
                .with_context(|| format!("--metric {metric:?}: use bytes, packets, flows or distinct"))?;
            let mi = flowshard::model::Metric::ALL.iter().position(|x| *x == m).unwrap_or(0);
            if let Some(z) = z_threshold {
                d.z_threshold = z;
            }
            if let Some(v) = min_value {
                d.min_value[mi] = v;
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
            let out =
                flowshard::backtest::run(&text, &d, m).map_err(|e| anyhow::anyhow!("{}: {e}", input.display()))?;
            std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
            Ok(())
        }
        Cmd::Evaluate { pcap, labels, shards, config, json } => {
            let cfg = load(&config)?;
            check(&cfg, &HostInfo::detect())?;
            let lp = labels.unwrap_or_else(|| pcap.with_extension("labels.json"));
            let labels: flowshard::gen::Labels = serde_json::from_slice(
                &std::fs::read(&lp).with_context(|| format!("cannot read labels {}", lp.display()))?,
            )
            .with_context(|| format!("{}: not a labels file", lp.display()))?;
            let data = std::fs::read(&pcap).with_context(|| format!("cannot read {}", pcap.display()))?;
            let mut sink = flowshard::replay::Collect::default();
            let sum = flowshard::replay::replay(&data, &cfg.pipeline(), shards, false, &mut sink)?;
            let alerts: Vec<_> = sink.seconds.iter().flat_map(|s| s.alerts.iter().cloned()).collect();
            let e = flowshard::eval::evaluate(&labels, &alerts, sum.seconds);
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print!("{}", flowshard::eval::markdown(&e));
            }
            Ok(())
        }
        Cmd::Demo { duration, http, rate } => demo(duration, http, rate),
        Cmd::Plan { nic, sys_root, write } => {
            let host = flowshard::ops::plan::read_host(&sys_root, nic.as_deref());
            let p = flowshard::ops::plan::plan(&host);
            for r in &p.reasons {
                eprintln!("plan: {r}");
            }
            let text = flowshard::ops::plan::toml(&p);
            match write {
                Some(f) => std::fs::write(&f, text).with_context(|| format!("cannot write {}", f.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Cmd::Doctor { config, proc_root, sys_root } => {
            let cfg = load(&config)?;
            let host = HostInfo::detect();
            let layout = cfg.layout(&host);
            let rcvbuf = cfg.listener.iter().map(|l| l.recv_buffer_bytes).max().unwrap_or(0);
            let roots = flowshard::ops::doctor::Roots { proc_root, sys_root };
            let checks = flowshard::ops::doctor::run(
                &roots,
                rcvbuf,
                flowshard::ops::doctor::memlock_limit(),
                layout.shards.len(),
            );
            for c in &checks {
                println!("{c}");
            }
            for e in cfg.validate(&host) {
                println!("FAIL  config {e}");
            }
            if checks.iter().any(|c| c.level == flowshard::ops::doctor::Level::Fail) || !cfg.validate(&host).is_empty()
            {
                bail!("host checks failed");
            }
            Ok(())
        }
        Cmd::Send { file, to, from, rate, repeat } => {
            let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let sock = std::net::UdpSocket::bind((from.as_str(), 0)).with_context(|| format!("cannot bind {from}"))?;
            let start = std::time::Instant::now();
            let mut sent = 0u64;
            for _ in 0..repeat {
                let mut rd = flowshard::replay::pcap::PcapReader::new(&data)?;
                while let Some(p) = rd.next_udp()? {
                    if rate > 0 {
                        let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
                        if let Some(w) = due.checked_sub(start.elapsed()) {
                            #[allow(clippy::disallowed_methods)] // a plain sender thread
                            std::thread::sleep(w);
                        }
                    }
                    sock.send_to(p.payload, to.as_str()).with_context(|| format!("cannot send to {to}"))?;
                    sent += 1;
                }
            }
            eprintln!("sent {sent} datagrams in {:.3}s", start.elapsed().as_secs_f64());
            Ok(())
        }
        Cmd::Replay { file, shards, realtime, config, quiet } => {
            let cfg = load(&config)?;
            check(&cfg, &HostInfo::detect())?;
            let data = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let out: Box<dyn std::io::Write + Send> = if quiet {
                Box::new(std::io::sink())
            } else {
                Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()))
            };
            let mut sink = JsonLines::new("stdout", out, &cfg.general.appliance_id, true, true);
            let sum = flowshard::replay::replay(&data, &cfg.pipeline(), shards, realtime, &mut sink)
                .with_context(|| format!("replay of {}", file.display()))?;
            eprintln!("{}", flowshard::replay::summary_line(&sum));
            Ok(())
        }
        Cmd::Setup { config, kafka, opensearch } => {
            let mut cfg = load(&config)?;
            add_sinks(&mut cfg, kafka, None, opensearch);
            check(&cfg, &HostInfo::detect())?;
            let mut n = 0;
            for s in &cfg.sink {
                let lines = match s {
                    flowshard::config::Sink::Kafka(k) => {
                        flowshard::io::kafka::create_topics(k, &cfg.general.appliance_id, &[])
                            .map_err(|e| anyhow::anyhow!("kafka {}: {e}", k.brokers))?
                    }
                    flowshard::config::Sink::Opensearch(o) => flowshard::io::opensearch::Client::new(o)
                        .and_then(|c| c.setup())
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                    _ => continue,
                };
                for l in lines {
                    println!("{l}");
                }
                n += 1;
            }
            if n == 0 {
                bail!("no kafka or opensearch sink configured (use --config, --kafka or --opensearch)");
            }
            Ok(())
        }
        Cmd::Query { config, valkey, prefix, json, what } => query(config, valkey, prefix, json, what),
        Cmd::Feedback { config, kafka, state_dir, what } => feedback(config, kafka, state_dir, what),
        Cmd::Layer2 { config, opensearch, from, to } => {
            let mut cfg = load(&config)?;
            add_sinks(&mut cfg, None, None, opensearch);
            let o = cfg
                .sink
                .iter()
                .find_map(|s| if let flowshard::config::Sink::Opensearch(o) = s { Some(o.clone()) } else { None })
                .context("no OpenSearch: give --opensearch URL or a config with an opensearch sink")?;
            let client = flowshard::io::opensearch::Client::new(&o).map_err(|e| anyhow::anyhow!("{e}"))?;
            let buckets =
                flowshard::io::layer2::evaluate(&client, &cfg.layer2, from, to).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut out = String::new();
            for b in flowshard::io::layer2::flagged(&cfg.layer2, &buckets) {
                out.clear();
                flowshard::io::layer2::alert(&cfg.layer2, b).write_json(&mut out, &cfg.general.appliance_id);
                println!("{out}");
            }
            eprintln!("layer 2: {} buckets evaluated", buckets.len());
            Ok(())
        }
        Cmd::Run {
            config,
            listen,
            shards,
            no_pin,
            state_dir,
            print_ready,
            http,
            no_http,
            kafka,
            valkey,
            opensearch,
            appliance,
        } => {
            let mut cfg = load(&config)?;
            add_sinks(&mut cfg, kafka, valkey, opensearch);
            if let Some(a) = appliance {
                cfg.general.appliance_id = a;
            }
            if !listen.is_empty() {
                let buf = cfg.listener.first().map_or(32 << 20, |l| l.recv_buffer_bytes);
                cfg.listener = listen
                    .into_iter()
                    .map(|address| flowshard::config::Listener { address, recv_buffer_bytes: buf })
                    .collect();
            }
            let host = HostInfo::detect();
            if let Some(n) = shards {
                let n = n.max(1);
                cfg.cores.shards = host.cpus.iter().copied().cycle().take(n).collect();
                cfg.cores.io = vec![host.cpus.get(n).copied().unwrap_or(*host.cpus.last().unwrap_or(&0))];
                if n >= host.cpus.len() {
                    cfg.cores.pin = Some(false);
                }
            }
            if no_pin {
                cfg.cores.pin = Some(false);
            }
            if let Some(d) = state_dir {
                cfg.general.state_dir = d;
            }
            if let Some(h) = http {
                cfg.http.address = h;
            }
            if no_http {
                cfg.http.enabled = false;
            }
            check(&cfg, &host)?;
            let layout = cfg.layout(&host);
            let rcvbuf = cfg.listener.iter().map(|l| l.recv_buffer_bytes).max().unwrap_or(0);
            let checks = flowshard::ops::doctor::run(
                &flowshard::ops::doctor::Roots::default(),
                rcvbuf,
                flowshard::ops::doctor::memlock_limit(),
                layout.shards.len(),
            );
            for c in checks.iter().filter(|c| c.level == flowshard::ops::doctor::Level::Fail) {
                eprintln!("flowshard: warning: {c}");
            }
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
            }
            eprintln!(
                "flowshard: starting {} shard(s) on CPUs {:?}, I/O on {:?}{}",
                layout.shards.len(),
                layout.shards,
                layout.io,
                if layout.pin { "" } else { " (not pinned)" }
            );
            let report = flowshard::shard::run(&cfg, &layout, stop.clone(), |bound, http| {
                let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
                if print_ready {
                    let h = http.map(|a| format!(" http={a}")).unwrap_or_default();
                    eprintln!("ready {}{h}", addrs.join(" "));
                }
                if let Err(e) =
                    flowshard::ops::notify::notify(&format!("READY=1\nSTATUS=listening on {}", addrs.join(" ")))
                {
                    eprintln!("flowshard: warning: cannot notify systemd: {e}");
                }
            })?;
            let _ = flowshard::ops::notify::notify("STOPPING=1");
            let recs: u64 = report.shards.iter().map(|s| s.ingest.records).sum();
            let bytes: u64 = report.shards.iter().map(|s| s.ingest.bytes).sum();
            let packets: u64 = report.shards.iter().map(|s| s.ingest.packets).sum();
            let dgrams: u64 = report.shards.iter().map(|s| s.received).sum();
            let errors: u64 = report.shards.iter().map(|s| s.decode.error_total()).sum();
            let kdrops: u64 = report.shards.iter().map(|s| s.kernel_drops).sum();
            let hdrops: u64 = report.shards.iter().map(|s| s.handoff_dropped).sum();
            let sinks: Vec<String> = report
                .sinks
                .iter()
                .map(|s| {
                    use std::sync::atomic::Ordering::Relaxed;
                    let dropped: u64 = flowshard::io::remote::DropReason::ALL.iter().map(|r| s.dropped(*r)).sum();
                    let pending = s.spool.as_ref().map_or(0, |sp| sp.pending.load(Relaxed));
                    format!(
                        "\"{}\":{{\"delivered\":{},\"retried\":{},\"dropped\":{dropped},\"spooled_seconds\":{pending}}}",
                        s.name,
                        s.delivered.load(Relaxed),
                        s.retried.load(Relaxed)
                    )
                })
                .collect();
            eprintln!(
                "{{\"sinks\":{{{}}},\"datagrams\":{dgrams},\"records\":{recs},\"bytes\":{bytes},\"packets\":{packets},\"decode_errors\":{errors},\"kernel_drops\":{kdrops},\"handoff_drops\":{hdrops},\"seconds\":{},\"rollups\":{},\"alerts\":{},\"sink_errors\":{}}}",
                sinks.join(","),
                report.io.seconds, report.io.rollups, report.io.alerts, report.io.sink_errors
            );
            Ok(())
        }
    }
}

fn query(
    config: Option<PathBuf>,
    valkey: Option<String>,
    prefix: Option<String>,
    json: bool,
    what: QueryCmd,
) -> Result<()> {
    use flowshard::io::valkey;
    let cfg = load(&config)?;
    let from_cfg = cfg.sink.iter().find_map(|s| match s {
        flowshard::config::Sink::Valkey(v) => Some((v.url.clone(), v.prefix.clone())),
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
            anyhow::ensure!(flowshard::model::Dimension::from_name(&dim).is_some(), "unknown dimension {dim:?}");
            let rows = valkey::top(&mut con, &keys, &dim, n)?;
            let took = t.elapsed();
            if json {
                let v: Vec<_> = rows.iter().map(|(k, b)| serde_json::json!({"key": k, "bytes": b})).collect();
                println!("{}", serde_json::json!({"dimension": dim, "window_s": valkey::WINDOW_S, "top": v}));
            } else {
                println!("top {n} {dim} by bytes, last {} s ({} µs):", valkey::WINDOW_S, took.as_micros());
                for (k, b) in rows {
                    println!("{b:>16}  {k}");
                }
            }
        }
        QueryCmd::Series { dim, key } => {
            let now = flowshard::io::remote::now_ms() / 1000;
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
        QueryCmd::Alerts { n } => {
            let v: Vec<String> = redis::cmd("LRANGE").arg(keys.alerts()).arg(0).arg(n as isize - 1).query(&mut con)?;
            for a in v {
                println!("{a}");
            }
        }
    }
    Ok(())
}

/// Arguments of `flowshard gen`.
#[derive(clap::Args)]
struct GenArgs {
    /// Export protocol: v5, v9, ipfix, sflow.
    #[arg(long, default_value = "ipfix")]
    protocol: String,
    /// Base records per second (the diurnal curve and noise apply on top).
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds to generate.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seed (same seed, same traffic).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simulated exporters (sent from 127.0.0.2, 127.0.0.3, … when live).
    #[arg(long, default_value_t = 4)]
    exporters: u32,
    /// Incident, repeatable: KIND@START+DURATION in seconds, KIND one of ddos, scan,
    /// link_failure, exfil, offhours. E.g. --scenario ddos@300+60.
    #[arg(long)]
    scenario: Vec<String>,
    /// Steady elephant flows (one record per 60 s).
    #[arg(long, default_value_t = 3)]
    elephants: u32,
    /// sFlow sampling rate (1 in N packets).
    #[arg(long, default_value_t = 100)]
    sflow_rate: u32,
    /// Diurnal amplitude (0 = flat).
    #[arg(long, default_value_t = 0.3)]
    diurnal: f64,
    /// First simulated second (Unix; default a midnight UTC). Live mode uses the clock.
    #[arg(long)]
    start: Option<u64>,
    /// Write a pcap instead of sending.
    #[arg(long)]
    pcap: Option<PathBuf>,
    /// Write the ground-truth labels (JSON) here.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Send live to this collector address.
    #[arg(long)]
    to: Option<String>,
    /// Live capacity mode: pre-build this many seconds of traffic and replay them in a loop
    /// at --rate records/s (0 = as fast as possible) for --duration seconds.
    #[arg(long)]
    pool: Option<u64>,
    /// Records per simulated second of the pool (capacity mode).
    #[arg(long, default_value_t = 50_000)]
    pool_rate: u64,
}

fn gen(a: GenArgs) -> Result<()> {
    use flowshard::gen::{self, wire, GenConfig, Model};
    let proto = wire::GenProtocol::from_name(&a.protocol)
        .with_context(|| format!("--protocol {:?}: use v5, v9, ipfix or sflow", a.protocol))?;
    let scenarios = a
        .scenario
        .iter()
        .map(|s| {
            gen::parse_scenario(s)
                .with_context(|| format!("--scenario {s:?}: use KIND@START+DURATION, e.g. ddos@300+60"))
        })
        .collect::<Result<Vec<_>>>()?;
    let live = a.to.is_some();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let start = if live { now + 1 } else { a.start.unwrap_or(GenConfig::default().start) };
    let cfg = GenConfig {
        seed: a.seed,
        start,
        rate: if a.pool.is_some() { a.pool_rate.max(1) } else { a.rate.max(1) },
        exporters: a.exporters.max(1),
        elephants: a.elephants,
        diurnal: a.diurnal,
        scenarios,
        ..GenConfig::default()
    };
    let mut model = Model::new(cfg);
    let mut exp = wire::Exporters::new(proto, a.exporters.max(1), a.sflow_rate, a.seed);
    let mut labels_out = model.labels();
    labels_out.duration_s = a.duration;
    let labels_path = a.labels.clone().or_else(|| a.pcap.as_ref().map(|p| p.with_extension("labels.json")));
    if let Some(p) = &labels_path {
        std::fs::write(p, serde_json::to_vec_pretty(&labels_out)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    let mut recs = Vec::new();
    let mut dgrams = Vec::new();
    if let Some(path) = a.pcap {
        let f = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = gen::pcapw::PcapWriter::new(std::io::BufWriter::with_capacity(1 << 20, f))?;
        let (mut n_dg, mut n_rec) = (0u64, 0u64);
        for t in start..start + a.duration {
            recs.clear();
            dgrams.clear();
            model.second(t, &mut recs);
            exp.encode_second(t, &recs, &mut dgrams);
            let k = dgrams.len().max(1) as u64;
            for (i, d) in dgrams.iter().enumerate() {
                let ts = t * 1_000_000 + (i as u64 * 1_000_000) / k;
                let src = u32::try_from(gen::exporter_ip(d.exporter).0 & 0xffff_ffff).unwrap_or(0x7f00_0002);
                w.udp(ts, src, 9995, 0x7f00_0001, 2055, &d.bytes)?;
                n_dg += 1;
                n_rec += d.records as u64;
            }
        }
        w.finish()?;
        eprintln!(
            "{{\"datagrams\":{n_dg},\"records\":{n_rec},\"seconds\":{},\"pcap\":{:?}}}",
            a.duration,
            path.display().to_string()
        );
        return Ok(());
    }
    let Some(to) = a.to else { bail!("say where the traffic goes: --pcap FILE or --to ADDR") };
    let addr: std::net::SocketAddr =
        to.parse().with_context(|| format!("--to {to:?}: write IP:port, e.g. 127.0.0.1:2055"))?;
    let sender = gen::send::Sender::new(a.exporters.max(1), addr)?;
    let mut stats = gen::send::SendStats::default();
    let t0 = std::time::Instant::now();
    if let Some(pool_s) = a.pool {
        // capacity mode: pre-built datagrams, replayed in a loop at the target rate
        let mut pool = Vec::new();
        for t in start..start + pool_s.max(1) {
            recs.clear();
            model.second(t, &mut recs);
            exp.encode_second(t, &recs, &mut pool);
        }
        let pool_records: u64 = pool.iter().map(|d| d.records as u64).sum();
        eprintln!("pool: {} datagrams, {} records", pool.len(), pool_records);
        let end = std::time::Duration::from_secs(a.duration);
        while t0.elapsed() < end {
            sender.send(&pool, a.rate, t0, Some(end), &mut stats);
        }
    } else {
        let never = std::sync::atomic::AtomicBool::new(false);
        stats = gen::send::run_live(&mut model, &mut exp, &sender, start, a.duration, &never);
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{{\"datagrams\":{},\"records\":{},\"octets\":{},\"send_errors\":{},\"seconds\":{secs:.3},\"records_per_s\":{:.0}}}",
        stats.datagrams,
        stats.records,
        stats.octets,
        stats.errors,
        stats.records as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn demo(duration: Option<u64>, http: String, rate: u64) -> Result<()> {
    use flowshard::gen::{self, wire, GenConfig, Model};
    let mut cfg = Config {
        listener: vec![flowshard::config::Listener { address: "127.0.0.1:0".into(), recv_buffer_bytes: 8 << 20 }],
        ..Config::default()
    };
    cfg.http.address = http;
    cfg.cores.pin = Some(false);
    cfg.cores.shards = vec![0];
    cfg.general.status_interval_s = 0;
    cfg.general.state_dir = std::env::temp_dir().join(format!("flowshard-demo-{}", std::process::id()));
    cfg.detect.warmup_s = 20;
    cfg.sink = vec![flowshard::config::Sink::Stdout { rollups: false, alerts: true }];
    let host = HostInfo::detect();
    check(&cfg, &host)?;
    let layout = cfg.layout(&host);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    if let Some(d) = duration {
        let stop = stop.clone();
        std::thread::spawn(move || {
            #[allow(clippy::disallowed_methods)] // a timer thread
            std::thread::sleep(std::time::Duration::from_secs(d));
            stop.store(true, Ordering::Relaxed);
        });
    }
    let gen_stop = stop.clone();
    let mut gen_thread = None;
    let report = flowshard::shard::run(&cfg, &layout, stop.clone(), |bound, http| {
        let Some(udp) = bound.first().copied() else { return };
        eprintln!(
            "flowshard demo: collecting on {udp}; live view: http://{}/",
            http.map_or("(no http)".to_string(), |a| a.to_string())
        );
        eprintln!("flowshard demo: generating {rate} records/s from 4 exporters; a DDoS at +35 s and a port scan at +40 s; alerts print below as JSON lines; Ctrl-C stops");
        let stop = gen_stop.clone();
        gen_thread = Some(std::thread::spawn(move || {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs() + 1;
            let scenarios = ["ddos@35+25", "scan@40+20"].iter().filter_map(|s| gen::parse_scenario(s)).collect();
            let mut model = Model::new(GenConfig { start: now, rate, scenarios, ..GenConfig::default() });
            let mut exp = wire::Exporters::new(wire::GenProtocol::Ipfix, 4, 100, 7);
            match gen::send::Sender::new(4, udp) {
                Ok(sender) => {
                    gen::send::run_live(&mut model, &mut exp, &sender, now, u64::MAX / 2, &stop);
                }
                Err(e) => eprintln!("flowshard demo: generator cannot bind: {e}"),
            }
        }));
    })?;
    stop.store(true, Ordering::Relaxed);
    if let Some(g) = gen_thread {
        let _ = g.join();
    }
    let recs: u64 = report.shards.iter().map(|s| s.ingest.records).sum();
    eprintln!(
        "flowshard demo: stopped: {recs} records, {} seconds, {} rollups, {} alerts",
        report.io.seconds, report.io.rollups, report.io.alerts
    );
    let _ = std::fs::remove_dir_all(&cfg.general.state_dir);
    Ok(())
}
