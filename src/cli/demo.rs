//! `flowshard demo`: a newcomer's tour with generated traffic, printed alerts and the live view.
//!
//! Lives on: the main thread.

use super::check;
use crate::config::{Config, HostInfo};
use anyhow::Result;
use std::sync::atomic::Ordering;

/// A newcomer's tour: runs flowshard with built-in defaults, feeds it generated traffic with a
/// DDoS and a port scan after ~35 s, prints each alert as it fires and serves the live view;
/// stops on Ctrl-C or after --duration.
#[derive(clap::Args)]
pub struct Args {
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Live view and API address.
    #[arg(long, default_value = "127.0.0.1:9280")]
    pub http: String,
    /// Generated records per second.
    #[arg(long, default_value_t = 3000)]
    pub rate: u64,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    let Args { duration, http, rate } = a;
    use crate::tools::gen::{self, wire, GenConfig, Model};
    let mut cfg = Config {
        listener: vec![crate::config::Listener {
            recv_buffer_bytes: 8 << 20,
            ..crate::config::Listener::new("127.0.0.1:0")
        }],
        ..Config::default()
    };
    cfg.http.address = http;
    cfg.cores.pin = Some(false);
    cfg.cores.shards = vec![0];
    cfg.general.status_interval_s = 0;
    cfg.general.state_dir = std::env::temp_dir().join(format!("flowshard-demo-{}", std::process::id()));
    cfg.detect.warmup_s = 20;
    cfg.sink = vec![crate::config::Sink::Stdout { rollups: false, alerts: true }];
    let host = HostInfo::detect();
    check(&cfg, &host)?;
    let layout = cfg.layout(&host);
    let stop = super::stop_on_signals()?;
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
    let report = crate::runtime::run(&cfg, &layout, stop.clone(), |bound, http| {
        let Some(udp) = bound.first().copied() else { return };
        eprintln!(
            "flowshard demo: collecting on {udp}; live view: http://{}/",
            http.map_or("(no http)".to_string(), |a| a.to_string())
        );
        eprintln!("flowshard demo: generating {rate} records/s from 4 exporters; a DDoS at +35 s and a port scan at +40 s; alerts print below as JSON lines; Ctrl-C stops");
        let stop = gen_stop.clone();
        gen_thread = Some(std::thread::spawn(move || {
            let now = crate::model::time::now_s() + 1;
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
