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
        /// Write "ready <addr>..." to stderr once listening (for scripts).
        #[arg(long)]
        print_ready: bool,
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
        Cmd::Run { config, listen, shards, no_pin, state_dir, print_ready } => {
            let mut cfg = load(&config)?;
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
            check(&cfg, &host)?;
            let layout = cfg.layout(&host);
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
            let report = flowshard::shard::run(&cfg, &layout, stop.clone(), |bound| {
                if print_ready {
                    let addrs: Vec<String> = bound.iter().map(|a| a.to_string()).collect();
                    eprintln!("ready {}", addrs.join(" "));
                }
            })?;
            let _ = stop.load(Ordering::Relaxed);
            let recs: u64 = report.shards.iter().map(|s| s.ingest.records).sum();
            let bytes: u64 = report.shards.iter().map(|s| s.ingest.bytes).sum();
            let packets: u64 = report.shards.iter().map(|s| s.ingest.packets).sum();
            let dgrams: u64 = report.shards.iter().map(|s| s.received).sum();
            let errors: u64 = report.shards.iter().map(|s| s.decode.error_total()).sum();
            let kdrops: u64 = report.shards.iter().map(|s| s.kernel_drops).sum();
            let hdrops: u64 = report.shards.iter().map(|s| s.handoff_dropped).sum();
            eprintln!(
                "{{\"datagrams\":{dgrams},\"records\":{recs},\"bytes\":{bytes},\"packets\":{packets},\"decode_errors\":{errors},\"kernel_drops\":{kdrops},\"handoff_drops\":{hdrops},\"seconds\":{},\"rollups\":{},\"alerts\":{},\"sink_errors\":{}}}",
                report.io.seconds, report.io.rollups, report.io.alerts, report.io.sink_errors
            );
            Ok(())
        }
    }
}
