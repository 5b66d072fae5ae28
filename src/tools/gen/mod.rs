//! The traffic generator (`flowshard gen`): realistic, deterministic (seeded) flow traffic from
//! many simulated exporters, with injectable scenarios and ground-truth labels.
//!
//! * [`Model`] produces the flow records of each simulated second: internal hosts and remote
//!   peers drawn from heavy-tailed (Zipf) distributions, a diurnal curve and per-second noise,
//!   steady elephant flows exported once per active timeout (60 s), and the [`Scenario`]s.
//! * [`wire::Exporters`] turns records into datagrams per exporter and protocol (NetFlow v5,
//!   v9 and IPFIX with templates sent and refreshed as real exporters do, sFlow v5 sampled).
//! * Output goes to a pcap file ([`pcapw`], for `replay` and tests) or over UDP with `sendmmsg`
//!   at a controlled rate ([`send`]).
//!
//! The model is sans-I/O: time is a parameter, randomness comes from the seed.
//!
//! Lives on: the generator's thread (never inside flowshard's shards).

pub mod encode;
pub mod pcapw;
pub mod send;
pub mod wire;

use crate::model::{Dimension, FlowRecord, Ip};
use serde::{Deserialize, Serialize};

/// A small deterministic PRNG (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(crate::model::mix64(seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Zipf(s) over 0..n by inverse CDF on a precomputed table.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// A Zipf distribution with exponent `s` over `n` ranks.
    pub fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += 1.0 / (k as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    /// A rank (0 = most popular).
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// An injectable incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScenarioKind {
    /// Volumetric DDoS: many spoofed sources toward one internal host.
    Ddos,
    /// TCP SYN port scan of one internal host by one remote source.
    Scan,
    /// One exporter interface goes silent.
    LinkFailure,
    /// One internal host sends a little more to one remote peer every minute.
    Exfil,
    /// A normally day-only host talks at night (needs a seasonal baseline: layer 2).
    OffHours,
}

impl ScenarioKind {
    /// Parses a scenario name.
    pub fn from_name(s: &str) -> Option<ScenarioKind> {
        Some(match s {
            "ddos" => ScenarioKind::Ddos,
            "scan" => ScenarioKind::Scan,
            "link_failure" | "link-failure" => ScenarioKind::LinkFailure,
            "exfil" => ScenarioKind::Exfil,
            "offhours" | "off_hours" | "off-hours" => ScenarioKind::OffHours,
            _ => return None,
        })
    }
}

/// A scheduled incident.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scenario {
    /// What.
    pub kind: ScenarioKind,
    /// Seconds after the start of the run.
    pub at_s: u64,
    /// How long.
    pub duration_s: u64,
}

/// Ground truth of one incident: which key should alert, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Incident kind.
    pub kind: ScenarioKind,
    /// First second (Unix).
    pub start: u64,
    /// Last second (Unix, inclusive).
    pub end: u64,
    /// Dimension of the key expected to alert.
    pub dimension: String,
    /// The key, formatted as in outputs.
    pub key: String,
    /// The detection layer expected to catch it (1 inline, 2 seasonal).
    pub layer: u8,
}

/// The labels file written next to a generated capture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    /// Seed.
    pub seed: u64,
    /// First simulated second.
    pub start: u64,
    /// Simulated seconds.
    pub duration_s: u64,
    /// Base records per second.
    pub rate: u64,
    /// Incidents.
    pub incidents: Vec<Label>,
}

/// Generator settings.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Seed.
    pub seed: u64,
    /// First simulated second (Unix). Default: a midnight UTC.
    pub start: u64,
    /// Base records per second (before the diurnal curve and noise).
    pub rate: u64,
    /// Simulated exporters.
    pub exporters: u32,
    /// Interfaces per exporter.
    pub interfaces: u32,
    /// Internal hosts.
    pub hosts: usize,
    /// Remote peers.
    pub remotes: usize,
    /// Zipf exponent of host and peer popularity.
    pub zipf_s: f64,
    /// Diurnal amplitude (0 = flat; 0.3 = ±30 % over the day).
    pub diurnal: f64,
    /// Per-second multiplicative noise (standard deviation).
    pub noise: f64,
    /// Steady elephant flows (exported every 60 s).
    pub elephants: u32,
    /// Share of IPv6 hosts.
    pub ipv6_share: f64,
    /// Incidents.
    pub scenarios: Vec<Scenario>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 7,
            start: 1_700_006_400, // 2023-11-15 00:00:00 UTC
            rate: 2000,
            exporters: 4,
            interfaces: 4,
            hosts: 2000,
            remotes: 20_000,
            zipf_s: 1.1,
            diurnal: 0.3,
            noise: 0.03,
            elephants: 3,
            ipv6_share: 0.1,
            scenarios: Vec::new(),
        }
    }
}

/// The address of internal host `i` (10.0.0.0/8, or 2001:db8:1::/64 for the IPv6 share).
pub fn host_ip(i: usize, v6: bool) -> Ip {
    if v6 {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 1]);
        b[12..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
        Ip::from_v6(b)
    } else {
        Ip::from_v4(0x0a00_0000 + 1 + i as u32)
    }
}

/// The address of remote peer `j` (198.18.0.0/15, benchmark space).
pub fn remote_ip(j: usize) -> Ip {
    Ip::from_v4(0xc612_0000 + 1 + (j as u32 % 131_000))
}

/// The loopback address of simulated exporter `e` (127.0.0.2, 127.0.0.3, …).
pub fn exporter_ip(e: u32) -> Ip {
    Ip::from_v4(0x7f00_0002 + e)
}

/// Where a host sits: (exporter, input interface).
pub fn host_port(cfg: &GenConfig, host: usize) -> (u32, u32) {
    let e = host as u32 % cfg.exporters.max(1);
    let i = 1 + (host as u32 / cfg.exporters.max(1)) % cfg.interfaces.max(1);
    (e, i)
}

const SERVICES: [(u16, u8, u32); 10] = [
    (443, 6, 40),
    (80, 6, 18),
    (53, 17, 15),
    (22, 6, 5),
    (25, 6, 4),
    (123, 17, 4),
    (8080, 6, 5),
    (3389, 6, 3),
    (993, 6, 3),
    (5060, 17, 3),
];

/// One simulated record with the exporter that sends it.
pub type Emitted = (u32, FlowRecord);

/// The traffic model.
pub struct Model {
    cfg: GenConfig,
    rng: Rng,
    hosts: Zipf,
    remotes: Zipf,
    service_total: u32,
    elephants: Vec<(usize, usize, u64, u64)>, // host, remote, bytes per 60 s, phase
    victim: usize,
    scan_target: usize,
    failed: (u32, u32),
    exfil_host: usize,
    offhours_host: usize,
}

impl Model {
    /// A model for `cfg`.
    pub fn new(cfg: GenConfig) -> Model {
        let mut rng = Rng::new(cfg.seed);
        let hosts = Zipf::new(cfg.hosts, cfg.zipf_s);
        let remotes = Zipf::new(cfg.remotes, cfg.zipf_s);
        let elephants = (0..cfg.elephants)
            .map(|k| {
                let host = 10 + rng.below(cfg.hosts.max(11) as u64 - 10) as usize;
                let remote = rng.below(cfg.remotes as u64) as usize;
                let mbit = 20 + rng.below(60);
                (host, remote, mbit * 1_000_000 / 8 * 60, 5 + (k as u64 * 7) % 20)
            })
            .collect();
        Model {
            service_total: SERVICES.iter().map(|s| s.2).sum(),
            victim: 3,
            scan_target: 5,
            failed: (2, 3),
            exfil_host: 40.min(cfg.hosts.saturating_sub(1)),
            offhours_host: 60.min(cfg.hosts.saturating_sub(1)),
            cfg,
            rng,
            hosts,
            remotes,
            elephants,
        }
    }

    /// The settings.
    pub fn config(&self) -> &GenConfig {
        &self.cfg
    }

    fn is_v6(&self, host: usize) -> bool {
        (crate::model::mix64(host as u64) % 1000) < (self.cfg.ipv6_share * 1000.0) as u64
    }

    /// Ground truth for the configured scenarios.
    pub fn labels(&self) -> Labels {
        let incidents = self
            .cfg
            .scenarios
            .iter()
            .map(|s| {
                let start = self.cfg.start + s.at_s;
                let end = start + s.duration_s.max(1) - 1;
                let (dim, key, layer) = match s.kind {
                    ScenarioKind::Ddos => {
                        (Dimension::DstIp, host_ip(self.victim, self.is_v6(self.victim)).to_string(), 1)
                    }
                    ScenarioKind::Scan => (Dimension::SrcIp, scanner().to_string(), 1),
                    ScenarioKind::LinkFailure => {
                        (Dimension::ExporterInIf, format!("{}:{}", exporter_ip(self.failed.0), self.failed.1), 1)
                    }
                    ScenarioKind::Exfil => {
                        (Dimension::SrcIp, host_ip(self.exfil_host, self.is_v6(self.exfil_host)).to_string(), 1)
                    }
                    ScenarioKind::OffHours => {
                        (Dimension::SrcIp, host_ip(self.offhours_host, self.is_v6(self.offhours_host)).to_string(), 2)
                    }
                };
                Label { kind: s.kind, start, end, dimension: dim.name().to_string(), key, layer }
            })
            .collect();
        Labels { seed: self.cfg.seed, start: self.cfg.start, duration_s: 0, rate: self.cfg.rate, incidents }
    }

    fn active(&self, kind: ScenarioKind, t: u64) -> Option<(u64, u64)> {
        self.cfg.scenarios.iter().find_map(|s| {
            let a = self.cfg.start + s.at_s;
            (s.kind == kind && t >= a && t < a + s.duration_s).then_some((t - a, s.duration_s))
        })
    }

    /// Appends the records of simulated second `t`.
    pub fn second(&mut self, t: u64, out: &mut Vec<Emitted>) {
        let day = ((t % 86_400) as f64) / 86_400.0;
        // low at 04:00, high at 16:00
        let diurnal = 1.0 + self.cfg.diurnal * (std::f64::consts::TAU * (day - 0.42)).sin();
        let noise = (1.0 + self.cfg.noise * self.rng.normal()).max(0.1);
        let n = (self.cfg.rate as f64 * diurnal * noise).round() as u64;
        for _ in 0..n {
            let r = self.normal_record();
            out.push(r);
        }
        for k in 0..self.elephants.len() {
            let (host, remote, bytes, phase) = self.elephants[k];
            if (t + 60 - phase % 60) % 60 == 0 {
                let (e, i) = host_port(&self.cfg, host);
                out.push((
                    e,
                    FlowRecord {
                        exporter: exporter_ip(e),
                        src: host_ip(host, self.is_v6(host)),
                        dst: remote_ip(remote),
                        src_port: 40_000 + k as u16,
                        dst_port: 443,
                        proto: 6,
                        tcp_flags: 0x18,
                        bytes,
                        packets: bytes / 1400,
                        in_if: i,
                        out_if: 100,
                        sampling_rate: 1,
                        duration_ms: 60_000,
                        ..Default::default()
                    },
                ));
            }
        }
        self.incidents(t, out);
        if let Some(_x) = self.active(ScenarioKind::LinkFailure, t) {
            let (fe, fi) = self.failed;
            out.retain(|(e, r)| !(*e == fe && r.in_if == fi));
        }
    }

    fn normal_record(&mut self) -> Emitted {
        let host = self.hosts.sample(&mut self.rng);
        let remote = self.remotes.sample(&mut self.rng);
        let (e, i) = host_port(&self.cfg, host);
        let mut w = self.rng.below(self.service_total as u64) as u32;
        let mut svc = SERVICES[0];
        for s in SERVICES {
            if w < s.2 {
                svc = s;
                break;
            }
            w -= s.2;
        }
        let v6 = self.is_v6(host);
        let outbound = self.rng.below(2) == 0;
        let local = host_ip(host, v6);
        let peer = if v6 {
            let mut b = [0u8; 16];
            b[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 2]);
            b[12..].copy_from_slice(&(remote as u32 + 1).to_be_bytes());
            Ip::from_v6(b)
        } else {
            remote_ip(remote)
        };
        let eph = 1024 + self.rng.below(60_000) as u16;
        let (src, dst, sp, dp) = if outbound { (local, peer, eph, svc.0) } else { (peer, local, svc.0, eph) };
        let bytes = (7.0 + 1.4 * self.rng.normal()).exp().clamp(40.0, 5.0e6) as u64;
        let avg = 200 + self.rng.below(1200);
        let long = self.rng.below(20) == 0;
        (
            e,
            FlowRecord {
                exporter: exporter_ip(e),
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                proto: svc.1,
                tcp_flags: if svc.1 == 6 { 0x1b } else { 0 },
                bytes,
                packets: (bytes / avg).max(1),
                in_if: i,
                out_if: 100,
                sampling_rate: 1,
                duration_ms: if long { 2_000 + self.rng.below(28_000) as u32 } else { self.rng.below(1_500) as u32 },
                ..Default::default()
            },
        )
    }

    fn incidents(&mut self, t: u64, out: &mut Vec<Emitted>) {
        let base = self.cfg.rate.max(100);
        if self.active(ScenarioKind::Ddos, t).is_some() {
            let (e, i) = host_port(&self.cfg, self.victim);
            let dst = host_ip(self.victim, self.is_v6(self.victim));
            for _ in 0..base {
                let src = Ip::from_v4(0x6440_0000 + self.rng.below(1 << 22) as u32);
                out.push((
                    e,
                    FlowRecord {
                        exporter: exporter_ip(e),
                        src,
                        dst,
                        src_port: 1024 + self.rng.below(60_000) as u16,
                        dst_port: [53, 123, 0][self.rng.below(3) as usize],
                        proto: 17,
                        bytes: 20 * 1400,
                        packets: 20,
                        in_if: i,
                        out_if: 100,
                        sampling_rate: 1,
                        duration_ms: self.rng.below(1000) as u32,
                        ..Default::default()
                    },
                ));
            }
        }
        if let Some((k, _)) = self.active(ScenarioKind::Scan, t) {
            let (e, i) = host_port(&self.cfg, self.scan_target);
            let dst = host_ip(self.scan_target, self.is_v6(self.scan_target));
            for p in 0..200u64 {
                out.push((
                    e,
                    FlowRecord {
                        exporter: exporter_ip(e),
                        src: scanner(),
                        dst,
                        src_port: 40_000,
                        dst_port: (1 + (k * 200 + p) % 65_535) as u16,
                        proto: 6,
                        tcp_flags: 0x02,
                        bytes: 44,
                        packets: 1,
                        in_if: i,
                        out_if: 100,
                        sampling_rate: 1,
                        ..Default::default()
                    },
                ));
            }
        }
        if let Some((k, _)) = self.active(ScenarioKind::Exfil, t) {
            let host = self.exfil_host;
            let (e, i) = host_port(&self.cfg, host);
            // +200 kB/s more every minute
            let bytes = 200_000 * (1 + k / 60);
            out.push((
                e,
                FlowRecord {
                    exporter: exporter_ip(e),
                    src: host_ip(host, self.is_v6(host)),
                    dst: remote_ip(4242),
                    src_port: 50_123,
                    dst_port: 443,
                    proto: 6,
                    tcp_flags: 0x18,
                    bytes,
                    packets: bytes / 1400 + 1,
                    in_if: i,
                    out_if: 100,
                    sampling_rate: 1,
                    duration_ms: 900,
                    ..Default::default()
                },
            ));
        }
        if self.active(ScenarioKind::OffHours, t).is_some() {
            let host = self.offhours_host;
            let (e, i) = host_port(&self.cfg, host);
            for _ in 0..20 {
                out.push((
                    e,
                    FlowRecord {
                        exporter: exporter_ip(e),
                        src: host_ip(host, self.is_v6(host)),
                        dst: remote_ip(self.rng.below(50) as usize),
                        src_port: 1024 + self.rng.below(60_000) as u16,
                        dst_port: 443,
                        proto: 6,
                        tcp_flags: 0x1b,
                        bytes: 50_000,
                        packets: 40,
                        in_if: i,
                        out_if: 100,
                        sampling_rate: 1,
                        duration_ms: 500,
                        ..Default::default()
                    },
                ));
            }
        }
    }
}

/// The scanning source of the scan scenario.
pub fn scanner() -> Ip {
    Ip::from_v4(0xc633_6442) // 198.51.100.66
}

/// Parses `kind@start+duration` (seconds), e.g. `ddos@300+60`.
pub fn parse_scenario(s: &str) -> Option<Scenario> {
    let (kind, rest) = s.split_once('@')?;
    let (at, dur) = rest.split_once('+')?;
    Some(Scenario { kind: ScenarioKind::from_name(kind)?, at_s: at.parse().ok()?, duration_s: dur.parse().ok()? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_heavy_tailed() {
        let mut a = Model::new(GenConfig::default());
        let mut b = Model::new(GenConfig::default());
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.second(1_700_006_400, &mut x);
        b.second(1_700_006_400, &mut y);
        assert_eq!(x.len(), y.len());
        assert!(x.iter().zip(&y).all(|(p, q)| p.1 == q.1));
        let z = Zipf::new(1000, 1.1);
        let mut rng = Rng::new(1);
        let top = (0..10_000).filter(|_| z.sample(&mut rng) < 10).count();
        assert!(top > 2500, "top-10 share {top}");
    }

    #[test]
    fn scenarios_parse_and_label() {
        let s = parse_scenario("ddos@300+60").unwrap();
        assert_eq!((s.kind, s.at_s, s.duration_s), (ScenarioKind::Ddos, 300, 60));
        let m = Model::new(GenConfig { scenarios: vec![s], ..GenConfig::default() });
        let l = m.labels();
        assert_eq!(l.incidents[0].dimension, "dst_ip");
        assert_eq!(l.incidents[0].start, 1_700_006_700);
    }
}
