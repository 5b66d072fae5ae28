//! `flowshard gen`: realistic flow traffic with labeled incidents, to a pcap or live over UDP.
//!
//! Lives on: the main thread.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Arguments of `flowshard gen`.
#[derive(clap::Args)]
pub struct Args {
    /// Export protocol: v5, v9, ipfix, sflow.
    #[arg(long, default_value = "ipfix")]
    pub protocol: String,
    /// Base records per second (the diurnal curve and noise apply on top).
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    /// Seconds to generate.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Seed (same seed, same traffic).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Simulated exporters (sent from 127.0.0.2, 127.0.0.3, … when live).
    #[arg(long, default_value_t = 4)]
    pub exporters: u32,
    /// Incident, repeatable: KIND@START+DURATION in seconds, KIND one of ddos, scan,
    /// link_failure, exfil, offhours. E.g. --scenario ddos@300+60.
    #[arg(long)]
    pub scenario: Vec<String>,
    /// Steady elephant flows (one record per 60 s).
    #[arg(long, default_value_t = 3)]
    pub elephants: u32,
    /// sFlow sampling rate (1 in N packets).
    #[arg(long, default_value_t = 100)]
    pub sflow_rate: u32,
    /// Diurnal amplitude (0 = flat).
    #[arg(long, default_value_t = 0.3)]
    pub diurnal: f64,
    /// First simulated second (Unix; default a midnight UTC). Live mode uses the clock.
    #[arg(long)]
    pub start: Option<u64>,
    /// Write a pcap instead of sending.
    #[arg(long)]
    pub pcap: Option<PathBuf>,
    /// Write the ground-truth labels (JSON) here.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Send live to this collector address.
    #[arg(long)]
    pub to: Option<String>,
    /// Live capacity mode: pre-build this many seconds of traffic and replay them in a loop
    /// at --rate records/s (0 = as fast as possible) for --duration seconds.
    #[arg(long)]
    pub pool: Option<u64>,
    /// Records per simulated second of the pool (capacity mode).
    #[arg(long, default_value_t = 50_000)]
    pub pool_rate: u64,
    /// Live capacity mode on a real exporter's stream: the UDP payloads of this capture, looped
    /// at --rate records/s for --duration seconds (records counted as flowshard decodes them:
    /// data records only). Needs --to.
    #[arg(long, conflicts_with_all = ["pool", "pcap"], requires = "to")]
    pub capture: Option<PathBuf>,
}

/// Runs the subcommand.
pub fn run(a: Args) -> Result<()> {
    use crate::tools::gen::{self, wire, GenConfig, Model};
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
    let now = crate::model::time::now_s();
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
    if a.pool.is_some() || a.capture.is_some() {
        // capacity mode: pre-built datagrams (or a capture's), replayed in a loop at the rate
        let mut pool = Vec::new();
        if let Some(c) = &a.capture {
            let data = std::fs::read(c).with_context(|| format!("cannot read {}", c.display()))?;
            pool = gen::send::capture_pool(&data).with_context(|| format!("--capture {}", c.display()))?;
            anyhow::ensure!(pool.iter().any(|d| d.records > 0), "--capture {}: no flow record decodes", c.display());
        }
        for t in start..start + a.pool.map_or(0, |p| p.max(1)) {
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
