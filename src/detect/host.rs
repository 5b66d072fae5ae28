//! Host detectors on merged host rollups ([`HostSecond`]): CPU spikes, memory leaks, bursts of
//! error or authentication-failure messages, and hosts going silent.
//!
//! **Signals.** Agents name things differently, so rows are first mapped to a few per-host
//! signals ([`Signal`]): CPU busy % (Telegraf `cpu.usage_active`, else 100 − `usage_idle` −
//! `usage_iowait`, of `cpu-total`; or node_exporter's `node_cpu_seconds_total` idle and iowait
//! counters turned into a busy fraction over all CPUs — time waiting for I/O is idle time), available and total memory (Telegraf `mem.*`, node_exporter
//! `node_memory_Mem{Available,Total}_bytes`) and per-process resident memory (Telegraf
//! `procstat.memory_rss`).
//!
//! * **CPU spike** — busy at or above `cpu_high_pct` for `cpu_sustain_s` (one busy second or
//!   scrape is never enough), at least `cpu_min_rise_pct` above the host's own slow baseline,
//!   *and* above what previous days reached in the same quarter hour (± one): a nightly batch
//!   job that ran at this time on an earlier day is normal for that host. One incident per
//!   episode (the alert repeats each minute while it lasts, under the same key).
//! * **Memory leak** — the signal decimated to `leak_step_s` means, the last `leak_points` of
//!   them; a leak is a Mann–Kendall trend with |z| ≥ `leak_min_z` over the whole window *and*
//!   over each half of it (a steady climb, not one step or a batch job's ramp at the end), a
//!   Theil–Sen slope whose growth over the window is at least `leak_min_growth` of total memory,
//!   and memory exhausted at that slope within `leak_horizon_s`. The incident carries the time
//!   to exhaustion.
//! * **Error / auth-failure burst** — per host, messages of severity err or worse (and, apart,
//!   authentication failures) over the last `burst_window_s`, against a Poisson with the host's
//!   own slow rate: at least `burst_min` messages and a tail probability below `burst_p`.
//! * **Silent host** — a host that reported metrics regularly for `silent_min_seen_s` and has
//!   sent nothing for max(`silent_after_s`, 5 × its usual gap).
//!
//! Pure: time is the caller's (the arrival second; sample seconds inside rows). Bounded: at
//! most `max_hosts` hosts are tracked; hosts silent for a day are forgotten.
//!
//! May depend on: `model`, `aggregate`. Lives on: the I/O core (and tests, replay).

use crate::aggregate::host::{HostRow, HostSecond, SeriesKind};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// `[hosts.detect]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostDetectConfig {
    /// Run the host detectors.
    pub enabled: bool,
    /// CPU busy % that counts as high.
    pub cpu_high_pct: f64,
    /// Seconds the CPU must stay high before it is a spike.
    pub cpu_sustain_s: u64,
    /// A spike is at least this many points above the host's own baseline.
    pub cpu_min_rise_pct: f64,
    /// Time constant of the CPU baseline, seconds.
    pub cpu_baseline_s: u64,
    /// Seconds per decimated point of the leak test.
    pub leak_step_s: u64,
    /// Points in the leak window (window = step × points).
    pub leak_points: usize,
    /// |Mann–Kendall z| a leak needs (whole window; each half needs z / √2).
    pub leak_min_z: f64,
    /// Growth over the window, as a fraction of total memory, a leak needs.
    pub leak_min_growth: f64,
    /// A leak pages only if memory runs out within this many seconds at its slope.
    pub leak_horizon_s: u64,
    /// Seconds over which error and auth-failure messages are counted.
    pub burst_window_s: u64,
    /// Fewest messages in the window that can be a burst.
    pub burst_min: u64,
    /// Poisson tail probability below which the window is a burst.
    pub burst_p: f64,
    /// A regular host is silent after this many seconds without metrics (at least 5× its
    /// usual gap).
    pub silent_after_s: u64,
    /// Seconds a host must have reported before its silence is news.
    pub silent_min_seen_s: u64,
    /// Hosts tracked at most.
    pub max_hosts: usize,
}

impl Default for HostDetectConfig {
    fn default() -> Self {
        HostDetectConfig {
            enabled: true,
            cpu_high_pct: 85.0,
            cpu_sustain_s: 120,
            cpu_min_rise_pct: 30.0,
            cpu_baseline_s: 6 * 3600,
            leak_step_s: 60,
            leak_points: 120,
            leak_min_z: 4.0,
            leak_min_growth: 0.02,
            leak_horizon_s: 7 * 86_400,
            burst_window_s: 60,
            burst_min: 20,
            burst_p: 1e-6,
            silent_after_s: 120,
            silent_min_seen_s: 600,
            max_hosts: 100_000,
        }
    }
}

impl HostDetectConfig {
    /// Problems as (field, message, fix).
    pub fn check(&self) -> Vec<(&'static str, String, String)> {
        let mut e = Vec::new();
        if !(0.0..=100.0).contains(&self.cpu_high_pct) {
            e.push(("cpu_high_pct", format!("{} is not a percentage", self.cpu_high_pct), "set 0–100, e.g. 85".into()));
        }
        if self.leak_points < 8 {
            e.push((
                "leak_points",
                format!("{} points cannot show a trend", self.leak_points),
                "set at least 8 (default 120)".into(),
            ));
        }
        if self.leak_step_s == 0 || self.burst_window_s == 0 || self.cpu_sustain_s == 0 {
            e.push((
                "leak_step_s/burst_window_s/cpu_sustain_s",
                "zero".into(),
                "set a positive number of seconds".into(),
            ));
        }
        if !(self.burst_p > 0.0 && self.burst_p < 1.0) {
            e.push(("burst_p", format!("{} is not a probability", self.burst_p), "set e.g. 1e-6".into()));
        }
        e
    }
}

/// What a host alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAlertKind {
    /// Sustained high CPU, above the host's baseline and its usual time-of-day load.
    CpuSpike,
    /// Memory growing steadily toward exhaustion.
    MemoryLeak,
    /// Error-or-worse syslog messages far above the host's rate.
    ErrorBurst,
    /// Authentication failures far above the host's rate.
    AuthFailureBurst,
    /// A regular host stopped reporting.
    Silent,
}

impl HostAlertKind {
    /// Stable name.
    pub const fn name(self) -> &'static str {
        match self {
            HostAlertKind::CpuSpike => "cpu_spike",
            HostAlertKind::MemoryLeak => "memory_leak",
            HostAlertKind::ErrorBurst => "error_burst",
            HostAlertKind::AuthFailureBurst => "auth_failure_burst",
            HostAlertKind::Silent => "silent",
        }
    }
}

/// One host alert.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostAlert {
    /// Start of the anomalous interval (Unix seconds).
    pub second: u64,
    /// Kind.
    pub kind: HostAlertKind,
    /// Host.
    pub host: String,
    /// What on the host (`cpu`, `memory`, a process name, `syslog`).
    pub subject: String,
    /// Metric (`cpu_busy_pct`, `mem_available_bytes`, `rss_bytes`, `error_messages`, …).
    pub metric: &'static str,
    /// Observed value (busy %, slope in bytes/s, messages in the window, seconds silent).
    pub value: f64,
    /// Expected value (baseline, 0, the Poisson mean, the usual gap).
    pub expected: f64,
    /// Score in [0, 1].
    pub score: f64,
    /// Seconds until memory is exhausted at the current slope (leaks only).
    pub exhaustion_s: Option<f64>,
    /// Human-readable reason.
    pub reason: String,
}

/// A per-host signal value at one sample second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// CPU busy, % of all CPUs.
    CpuBusy(f64),
    /// Memory available, bytes.
    MemAvailable(f64),
    /// Memory total, bytes.
    MemTotal(f64),
}

/// Samples a host's CPU baseline needs before a spike can be judged against it.
const MIN_BASELINE_SAMPLES: u64 = 30;
const SLOTS: usize = 96;
const DAYS: usize = 7;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cpu {
    last: u64,
    learnt: u64,
    baseline: Option<f64>,
    run_start: Option<u64>,
    run_sum: f64,
    run_n: u64,
    alerted_at: u64,
    /// per quarter hour and day (day number, highest busy mean of any minute)
    profile: Vec<[(u32, f32); DAYS]>,
    minute: (u64, f64, u32),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Trend {
    step: (u64, f64, u32),
    points: VecDeque<(f64, f64)>,
    last_alert: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Burst {
    /// per second counts of the last window (second, count)
    recent: VecDeque<(u64, u64)>,
    in_window: u64,
    rate: f64,
    rate_at: u64,
    since: u64,
    alerted_at: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Host {
    first: u64,
    last: u64,
    arrivals: u64,
    gap: f64,
    silent_alerted: u64,
    cpu: Cpu,
    /// node_exporter idle and iowait counters: (cpu, is iowait, last value, last ms)
    idle: Vec<(String, bool, f64, i64)>,
    mem_total: Option<f64>,
    mem_available: Option<f64>,
    mem_trend: Trend,
    procs: Vec<(String, Trend)>,
    errors: Burst,
    auth: Burst,
}

/// Counters of the host detectors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostDetectCounters {
    /// Hosts tracked now.
    pub hosts: u64,
    /// Hosts not tracked because `max_hosts` were.
    pub hosts_overflow: u64,
    /// Alerts raised.
    pub alerts: u64,
}

/// The host detectors.
#[derive(Debug)]
pub struct HostDetectors {
    cfg: HostDetectConfig,
    hosts: FxHashMap<String, Host>,
    /// Counters.
    pub counters: HostDetectCounters,
}

/// ln Γ(x) (Lanczos), for Poisson tails.
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 6] = [
        76.18009172947146,
        -86.50532032941677,
        24.01409824083091,
        -1.231739572450155,
        0.1208650973866179e-2,
        -0.5395239384953e-5,
    ];
    let mut y = x;
    let tmp = x + 5.5;
    let tmp = tmp - (x + 0.5) * tmp.ln();
    let mut ser = 1.000000000190015;
    for g in G {
        y += 1.0;
        ser += g / y;
    }
    -tmp + (2.5066282746310005 * ser / x).ln()
}

/// P(X ≥ n) for X ~ Poisson(mu), n > mu (upper bound by a geometric series over the terms).
pub fn poisson_tail(n: u64, mu: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let n = n as f64;
    let mu = mu.max(1e-9);
    if n <= mu {
        return 1.0;
    }
    let ln_pmf = n * mu.ln() - mu - ln_gamma(n + 1.0);
    (ln_pmf.exp() / (1.0 - mu / (n + 1.0))).min(1.0)
}

/// Mann–Kendall z of a series (no tie correction; ties count 0).
pub fn mann_kendall_z(x: &[f64]) -> f64 {
    let n = x.len();
    if n < 3 {
        return 0.0;
    }
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            s += (x[j] - x[i]).partial_cmp(&0.0).map_or(0, |o| o as i64);
        }
    }
    let nf = n as f64;
    let var = nf * (nf - 1.0) * (2.0 * nf + 5.0) / 18.0;
    let s = s as f64;
    if s > 0.0 {
        (s - 1.0) / var.sqrt()
    } else if s < 0.0 {
        (s + 1.0) / var.sqrt()
    } else {
        0.0
    }
}

/// Theil–Sen slope of (t, x) points: the median of pairwise slopes.
pub fn theil_sen(p: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(p.len() * p.len() / 2);
    for i in 0..p.len() {
        for j in i + 1..p.len() {
            let dt = p[j].0 - p[i].0;
            if dt > 0.0 {
                slopes.push((p[j].1 - p[i].1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    let m = slopes.len() / 2;
    let (_, v, _) = slopes.select_nth_unstable_by(m, f64::total_cmp);
    *v
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / 1_048_576.0)
}

fn duration(s: f64) -> String {
    if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    }
}

impl Trend {
    /// Adds a sample at second `t`; returns true when a decimated point was completed.
    fn add(&mut self, t: u64, v: f64, step: u64, keep: usize) -> bool {
        let b = t / step;
        let mut done = false;
        if self.step.2 > 0 && b != self.step.0 {
            let mean = self.step.1 / f64::from(self.step.2);
            self.points.push_back(((self.step.0 * step) as f64, mean));
            while self.points.len() > keep {
                self.points.pop_front();
            }
            self.step = (b, 0.0, 0);
            done = true;
        }
        if self.step.2 == 0 {
            self.step.0 = b;
        }
        self.step.1 += v;
        self.step.2 += 1;
        done
    }

    /// (slope per second, whole-window z) when the window holds a steady trend in direction
    /// `up`.
    fn steady(&self, cfg: &HostDetectConfig, up: bool) -> Option<(f64, f64)> {
        if self.points.len() < cfg.leak_points {
            return None;
        }
        let x: Vec<f64> = self.points.iter().map(|p| p.1).collect();
        let sign = if up { 1.0 } else { -1.0 };
        let z = sign * mann_kendall_z(&x);
        let half = x.len() / 2;
        let zh = cfg.leak_min_z / std::f64::consts::SQRT_2;
        if z < cfg.leak_min_z || sign * mann_kendall_z(&x[..half]) < zh || sign * mann_kendall_z(&x[half..]) < zh {
            return None;
        }
        let pts: Vec<(f64, f64)> = self.points.iter().copied().collect();
        let slope = theil_sen(&pts);
        (sign * slope > 0.0).then_some((slope, z))
    }

    fn span(&self, step: u64) -> f64 {
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) => b.0 - a.0 + step as f64,
            _ => 0.0,
        }
    }
}

impl Burst {
    fn add(&mut self, sec: u64, n: u64, window: u64) {
        match self.recent.back_mut() {
            Some(b) if b.0 == sec => b.1 += n,
            _ => self.recent.push_back((sec, n)),
        }
        self.in_window += n;
        self.expire(sec, window);
    }

    fn expire(&mut self, now: u64, window: u64) {
        while let Some(&(s, n)) = self.recent.front() {
            if s + window <= now {
                self.recent.pop_front();
                self.in_window -= n;
            } else {
                break;
            }
        }
    }

    /// Advances the slow per-second rate to `now` (seconds without messages count as zero),
    /// adding `n` messages at `now`.
    fn learn(&mut self, now: u64, n: u64, tau: f64) {
        if self.rate_at == 0 {
            self.rate_at = now;
            self.since = now;
        }
        if now > self.rate_at {
            let gap = (now - self.rate_at) as f64;
            self.rate *= (-gap / tau).exp();
            self.rate_at = now;
        }
        self.rate += n as f64 / tau;
    }
}

impl HostDetectors {
    /// Detectors with these settings.
    pub fn new(cfg: &HostDetectConfig) -> HostDetectors {
        HostDetectors { cfg: cfg.clone(), hosts: FxHashMap::default(), counters: HostDetectCounters::default() }
    }

    fn host(&mut self, name: &str, now: u64) -> Option<&mut Host> {
        if !self.hosts.contains_key(name) {
            if self.hosts.len() >= self.cfg.max_hosts {
                self.counters.hosts_overflow += 1;
                return None;
            }
            self.hosts.insert(name.to_string(), Host { first: now, ..Host::default() });
            self.counters.hosts = self.hosts.len() as u64;
        }
        self.hosts.get_mut(name)
    }

    /// Observes one merged second of host rows (arrival second `so.arrival`); alerts go to `out`.
    pub fn observe(&mut self, so: &HostSecond, out: &mut Vec<HostAlert>) {
        if !self.cfg.enabled {
            return;
        }
        let now = so.arrival;
        let cfg = self.cfg.clone();
        // group by host: rows are sorted by (second, id), so collect per host first
        let mut by_host: FxHashMap<&str, Vec<&HostRow>> = FxHashMap::default();
        for r in &so.rows {
            by_host.entry(r.name.host.as_str()).or_default().push(r);
        }
        for (name, rows) in by_host {
            let Some(h) = self.host(name, now) else { continue };
            let before = out.len();
            observe_host(&cfg, name, h, &rows, now, out);
            self.counters.alerts += (out.len() - before) as u64;
        }
    }

    /// Checks silences and expires quiet bursts at arrival second `now` (call once a second).
    pub fn tick(&mut self, now: u64, out: &mut Vec<HostAlert>) {
        if !self.cfg.enabled {
            return;
        }
        let cfg = &self.cfg;
        let before = out.len();
        self.hosts.retain(|name, h| {
            if h.arrivals >= 10 {
                let quiet = now.saturating_sub(h.last);
                let limit = (cfg.silent_after_s as f64).max(5.0 * h.gap);
                let seen_long = h.last.saturating_sub(h.first) >= cfg.silent_min_seen_s;
                if seen_long && quiet as f64 >= limit && now >= h.silent_alerted + 60 {
                    let second = if h.silent_alerted > h.last { now } else { h.last + 1 };
                    h.silent_alerted = now;
                    out.push(HostAlert {
                        second,
                        kind: HostAlertKind::Silent,
                        host: name.clone(),
                        subject: "metrics".into(),
                        metric: "seconds_silent",
                        value: quiet as f64,
                        expected: h.gap,
                        score: 1.0,
                        exhaustion_s: None,
                        reason: format!(
                            "{name} sent no metrics for {quiet} s (it reported every {:.0} s for {} s before)",
                            h.gap,
                            h.last - h.first
                        ),
                    });
                }
            }
            h.errors.expire(now, cfg.burst_window_s);
            h.auth.expire(now, cfg.burst_window_s);
            now.saturating_sub(h.last) < 86_400
        });
        self.counters.hosts = self.hosts.len() as u64;
        self.counters.alerts += (out.len() - before) as u64;
    }

    /// Hosts tracked.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// What the detectors have learnt (baselines, time-of-day profiles, leak windows, message
    /// rates, reporting gaps), to survive a restart ([`HostDetectors::restore`]).
    pub fn save(&self) -> Vec<u8> {
        bincode::serialize(&self.hosts).unwrap_or_default()
    }

    /// Restores what [`HostDetectors::save`] wrote, at Unix second `now`; returns the hosts
    /// restored. The time the appliance was down is not silence: every host counts as heard
    /// at `now`. An unreadable snapshot is an error and changes nothing.
    pub fn restore(&mut self, bytes: &[u8], now: u64) -> Result<usize, String> {
        let mut hosts: FxHashMap<String, Host> = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        hosts.retain(|_, h| now.saturating_sub(h.last) < 86_400);
        for h in hosts.values_mut() {
            h.last = h.last.max(now);
            h.silent_alerted = 0;
        }
        while hosts.len() > self.cfg.max_hosts {
            let Some(k) = hosts.keys().next().cloned() else { break };
            hosts.remove(&k);
        }
        self.hosts = hosts;
        self.counters.hosts = self.hosts.len() as u64;
        Ok(self.hosts.len())
    }
}

fn observe_host(
    cfg: &HostDetectConfig,
    name: &str,
    h: &mut Host,
    rows: &[&HostRow],
    now: u64,
    out: &mut Vec<HostAlert>,
) {
    let mut metrics = false;
    let (mut errors, mut auth) = (0u64, 0u64);
    // per sample second: (idle + iowait rate summed over CPUs, CPUs) from node_exporter's
    // counters, and Telegraf's cpu-total percentages (active, idle, iowait)
    let mut node: BTreeMap<u64, (f64, u32)> = BTreeMap::new();
    let mut telegraf: BTreeMap<u64, [Option<f64>; 3]> = BTreeMap::new();
    let mut signals: Vec<(u64, Signal)> = Vec::new();
    let mut rss: Vec<(u64, &str, f64)> = Vec::new();
    for r in rows {
        let n = &r.name;
        match n.kind {
            SeriesKind::Syslog { severity, .. } => {
                if severity <= 3 {
                    errors += r.agg.count;
                }
                continue;
            }
            SeriesKind::AuthFailure => {
                auth += r.agg.count;
                continue;
            }
            SeriesKind::Pattern => continue,
            SeriesKind::Metric => metrics = true,
        }
        let total_cpu = n.tag("cpu").is_none_or(|c| c == "cpu-total");
        let tel =
            |i: usize, t: &mut BTreeMap<u64, [Option<f64>; 3]>| t.entry(r.second).or_default()[i] = Some(r.agg.mean());
        match n.metric.as_str() {
            "cpu.usage_active" if total_cpu => tel(0, &mut telegraf),
            "cpu.usage_idle" if total_cpu => tel(1, &mut telegraf),
            "cpu.usage_iowait" if total_cpu => tel(2, &mut telegraf),
            "mem.available" | "node_memory_MemAvailable_bytes" => {
                signals.push((r.second, Signal::MemAvailable(r.agg.last)));
            }
            "mem.total" | "node_memory_MemTotal_bytes" => signals.push((r.second, Signal::MemTotal(r.agg.last))),
            "procstat.memory_rss" => rss.push((r.second, n.tag("process_name").unwrap_or("?"), r.agg.last)),
            "node_cpu_seconds_total" => {
                let mode = n.tag("mode").unwrap_or("");
                if mode != "idle" && mode != "iowait" {
                    continue;
                }
                // waiting for I/O is idle time (what Telegraf's usage_active leaves out too;
                // some kernels account idle time as iowait)
                let (cpu, iowait) = (n.tag("cpu").unwrap_or(""), mode == "iowait");
                let (v, ms) = (r.agg.last, r.agg.last_ms);
                let Some(slot) = h.idle.iter_mut().find(|x| x.0 == cpu && x.1 == iowait) else {
                    if h.idle.len() < 4096 {
                        h.idle.push((cpu.to_string(), iowait, v, ms));
                    }
                    continue;
                };
                let dt = (ms - slot.3) as f64 / 1000.0;
                let dv = v - slot.2;
                if dt <= 0.0 {
                    continue;
                }
                slot.2 = v;
                slot.3 = ms;
                if dv >= 0.0 {
                    let e = node.entry(r.second).or_default();
                    e.0 += dv / dt;
                    e.1 += u32::from(mode == "idle");
                }
            }
            _ => {}
        }
    }
    for (s, (rate, cpus)) in node {
        if cpus > 0 {
            signals.push((s, Signal::CpuBusy(100.0 * (1.0 - rate / f64::from(cpus)))));
        }
    }
    for (s, [active, idle, iowait]) in telegraf {
        let busy = active.or_else(|| idle.map(|i| 100.0 - i - iowait.unwrap_or(0.0)));
        if let Some(b) = busy {
            signals.push((s, Signal::CpuBusy(b)));
        }
    }
    if metrics {
        if h.arrivals > 0 && now > h.last {
            let gap = (now - h.last) as f64;
            h.gap = if h.arrivals == 1 { gap } else { 0.9 * h.gap + 0.1 * gap };
        }
        if now > h.last || h.arrivals == 0 {
            h.arrivals += 1;
        }
        h.last = now;
        h.silent_alerted = 0;
    }
    signals.sort_by_key(|s| s.0);
    for (sec, s) in signals {
        match s {
            Signal::CpuBusy(b) => cpu(cfg, name, &mut h.cpu, sec, b.clamp(0.0, 100.0), out),
            Signal::MemTotal(t) => h.mem_total = Some(t),
            Signal::MemAvailable(a) => {
                h.mem_available = Some(a);
                if h.mem_trend.add(sec, a, cfg.leak_step_s, cfg.leak_points) {
                    leak(
                        cfg,
                        name,
                        "memory",
                        "mem_available_bytes",
                        false,
                        &mut h.mem_trend,
                        h.mem_total,
                        Some(a),
                        sec,
                        out,
                    );
                }
            }
        }
    }
    for (sec, proc_name, v) in rss {
        let i = match h.procs.iter().position(|p| p.0 == proc_name) {
            Some(i) => i,
            None if h.procs.len() < 256 => {
                h.procs.push((proc_name.to_string(), Trend::default()));
                h.procs.len() - 1
            }
            None => continue,
        };
        let t = &mut h.procs[i].1;
        if t.add(sec, v, cfg.leak_step_s, cfg.leak_points) {
            leak(cfg, name, proc_name, "rss_bytes", true, t, h.mem_total, h.mem_available, sec, out);
        }
    }
    let tau = cfg.cpu_baseline_s.max(1) as f64;
    for (b, n, kind, metric) in [
        (&mut h.errors, errors, HostAlertKind::ErrorBurst, "error_messages"),
        (&mut h.auth, auth, HostAlertKind::AuthFailureBurst, "auth_failures"),
    ] {
        if n == 0 && b.recent.is_empty() {
            continue;
        }
        b.add(now, n, cfg.burst_window_s);
        // the expectation from the rate learnt before this second; a host's first hour uses a
        // floor of one message an hour
        let rate = b.rate.max(1.0 / 3600.0);
        let mu = rate * cfg.burst_window_s as f64;
        let p = poisson_tail(b.in_window, mu);
        if b.in_window >= cfg.burst_min && p < cfg.burst_p && now >= b.alerted_at + 10 {
            b.alerted_at = now;
            out.push(HostAlert {
                second: b.recent.front().map_or(now, |x| x.0),
                kind,
                host: name.to_string(),
                subject: "syslog".into(),
                metric,
                value: b.in_window as f64,
                expected: mu,
                score: (1.0 - p).clamp(0.0, 1.0),
                exhaustion_s: None,
                reason: format!(
                    "{name}: {} {} in {} s where its rate predicts {mu:.2} (p = {p:.1e})",
                    b.in_window,
                    if kind == HostAlertKind::ErrorBurst {
                        "error-or-worse messages"
                    } else {
                        "authentication failures"
                    },
                    cfg.burst_window_s
                ),
            });
        }
        b.learn(now, n, tau);
    }
}

fn cpu(cfg: &HostDetectConfig, name: &str, c: &mut Cpu, sec: u64, busy: f64, out: &mut Vec<HostAlert>) {
    if sec <= c.last {
        return;
    }
    let dt = if c.last == 0 { 1.0 } else { (sec - c.last) as f64 };
    c.last = sec;
    // time-of-day profile: highest one-minute mean per quarter hour and day
    if c.profile.is_empty() {
        c.profile = vec![[(u32::MAX, 0.0); DAYS]; SLOTS];
    }
    let minute = sec / 60;
    if c.minute.2 > 0 && c.minute.0 != minute {
        let m = c.minute.1 / f64::from(c.minute.2);
        let t = c.minute.0 * 60;
        let day = (t / 86_400) as u32;
        let slot = &mut c.profile[((t % 86_400) / 900) as usize][day as usize % DAYS];
        if slot.0 != day {
            *slot = (day, m as f32);
        } else {
            slot.1 = slot.1.max(m as f32);
        }
        c.minute = (minute, 0.0, 0);
    }
    if c.minute.2 == 0 {
        c.minute.0 = minute;
    }
    c.minute.1 += busy;
    c.minute.2 += 1;

    let base = *c.baseline.get_or_insert(busy);
    let high = busy >= cfg.cpu_high_pct || (c.run_start.is_some() && busy >= cfg.cpu_high_pct - 5.0);
    if high {
        if c.run_start.is_none() {
            c.run_start = Some(sec);
            c.run_sum = 0.0;
            c.run_n = 0;
        }
        c.run_sum += busy;
        c.run_n += 1;
    } else {
        c.run_start = None;
    }
    // the baseline learns slowly, and not from a run in progress: a running mean of the first
    // samples, then an exponential average with the configured time constant
    if c.run_start.is_none() {
        c.learnt += 1;
        let a = (1.0 - (-dt / cfg.cpu_baseline_s.max(1) as f64).exp()).max(1.0 / c.learnt as f64);
        c.baseline = Some(base + a * (busy - base));
    }
    let Some(start) = c.run_start else { return };
    if c.learnt < MIN_BASELINE_SAMPLES || sec - start < cfg.cpu_sustain_s || sec < c.alerted_at + 60 {
        return;
    }
    let mean = c.run_sum / c.run_n.max(1) as f64;
    if mean - base < cfg.cpu_min_rise_pct {
        return;
    }
    // what previous days reached at this time of day (± one quarter hour)
    let today = (sec / 86_400) as u32;
    let slot = ((sec % 86_400) / 900) as usize;
    let mut usual = f64::NAN;
    for s in [(slot + SLOTS - 1) % SLOTS, slot, (slot + 1) % SLOTS] {
        for &(day, v) in &c.profile[s] {
            if day != u32::MAX && day < today && today - day <= DAYS as u32 {
                usual = if usual.is_nan() { f64::from(v) } else { usual.max(f64::from(v)) };
            }
        }
    }
    if !usual.is_nan() && usual >= mean - cfg.cpu_min_rise_pct / 2.0 {
        return;
    }
    // the first alert of an episode is dated at its start; repeats (one a minute, evidence that
    // keeps the incident open) at their own second
    let second = if c.alerted_at >= start { sec } else { start };
    c.alerted_at = sec;
    let expected = if usual.is_nan() { base } else { base.max(usual) };
    out.push(HostAlert {
        second,
        kind: HostAlertKind::CpuSpike,
        host: name.to_string(),
        subject: "cpu".into(),
        metric: "cpu_busy_pct",
        value: mean,
        expected,
        score: ((mean - expected) / 100.0 + 0.5).clamp(0.5, 1.0),
        exhaustion_s: None,
        reason: format!(
            "{name}: CPU {mean:.0} % busy for {} s (baseline {base:.0} %{})",
            sec - start + 1,
            if usual.is_nan() { String::new() } else { format!(", at most {usual:.0} % at this time on earlier days") }
        ),
    });
}

#[allow(clippy::too_many_arguments)]
fn leak(
    cfg: &HostDetectConfig,
    name: &str,
    subject: &str,
    metric: &'static str,
    up: bool,
    t: &mut Trend,
    total: Option<f64>,
    available: Option<f64>,
    sec: u64,
    out: &mut Vec<HostAlert>,
) {
    let Some((slope, z)) = t.steady(cfg, up) else { return };
    let span = t.span(cfg.leak_step_s);
    let growth = slope.abs() * span;
    let Some(total) = total.filter(|x| *x > 0.0) else { return };
    if growth < cfg.leak_min_growth * total {
        return;
    }
    let Some(avail) = available else { return };
    let tte = avail.max(0.0) / slope.abs();
    if tte > cfg.leak_horizon_s as f64 || sec < t.last_alert + cfg.leak_step_s * 5 {
        return;
    }
    let second = if t.last_alert > 0 { sec } else { t.points.front().map_or(sec, |p| p.0 as u64) };
    t.last_alert = sec;
    let what = if up { format!("resident memory of {subject}") } else { "available memory".to_string() };
    out.push(HostAlert {
        second,
        kind: HostAlertKind::MemoryLeak,
        host: name.to_string(),
        subject: subject.to_string(),
        metric,
        value: slope,
        expected: 0.0,
        score: (z / 10.0).clamp(0.5, 1.0),
        exhaustion_s: Some(tte),
        reason: format!(
            "{name}: {what} {} {}/min steadily for {} (Theil-Sen; Mann-Kendall z = {z:.1}); {} available, exhausted in ~{} at this rate",
            if up { "grows" } else { "falls" },
            mib(slope.abs() * 60.0),
            duration(span),
            mib(avail),
            duration(tte)
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::host::{Agg, SeriesName};
    use std::sync::Arc;

    fn second(arrival: u64, rows: &[(&str, &str, &str, SeriesKind, f64, u64)]) -> HostSecond {
        HostSecond {
            arrival,
            rows: rows
                .iter()
                .enumerate()
                .map(|(i, (h, m, tags, kind, v, n))| {
                    let mut agg = Agg::one(*v, arrival as i64 * 1000);
                    for _ in 1..*n {
                        agg.add(*v, arrival as i64 * 1000);
                    }
                    HostRow {
                        id: i as u64,
                        second: arrival,
                        name: Arc::new(SeriesName {
                            host: h.to_string(),
                            metric: m.to_string(),
                            tags: tags.to_string(),
                            kind: *kind,
                        }),
                        agg,
                    }
                })
                .collect(),
        }
    }

    fn cpu_day(d: &mut HostDetectors, start: u64, secs: u64, busy: impl Fn(u64) -> f64) -> Vec<HostAlert> {
        let mut out = Vec::new();
        for t in (start..start + secs).step_by(10) {
            let b = busy(t);
            d.observe(
                &second(t, &[("web1", "cpu.usage_idle", "cpu=cpu-total", SeriesKind::Metric, 100.0 - b, 1)]),
                &mut out,
            );
            d.tick(t, &mut out);
        }
        out
    }

    #[test]
    fn statistics_are_right() {
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-9);
        // P(X >= 10 | mu = 1) = 1.1142e-7
        let p = poisson_tail(10, 1.0);
        assert!(p > 1.1e-7 && p < 1.3e-7, "{p}");
        assert!(poisson_tail(1, 5.0) == 1.0);
        let up: Vec<f64> = (0..30).map(f64::from).collect();
        assert!(mann_kendall_z(&up) > 7.0);
        let down: Vec<f64> = up.iter().map(|x| -x).collect();
        assert!(mann_kendall_z(&down) < -7.0);
        let pts: Vec<(f64, f64)> =
            (0..20).map(|i| (f64::from(i), 3.0 * f64::from(i) + if i == 5 { 1000.0 } else { 0.0 })).collect();
        assert!((theil_sen(&pts) - 3.0).abs() < 1e-9, "one outlier does not move Theil-Sen");
    }

    #[test]
    fn a_sustained_burn_is_one_spike_and_a_busy_minute_is_not() {
        let mut d = HostDetectors::new(&HostDetectConfig::default());
        let t0 = 1_700_000_000 - 1_700_000_000 % 86_400;
        let quiet = |_t: u64| 12.0;
        assert!(cpu_day(&mut d, t0, 3600, quiet).is_empty());
        // one busy minute: nothing
        assert!(cpu_day(&mut d, t0 + 3600, 60, |_| 100.0).is_empty());
        assert!(cpu_day(&mut d, t0 + 3660, 600, quiet).is_empty());
        // ten busy minutes: one kind of alert, repeated for one incident
        let a = cpu_day(&mut d, t0 + 4260, 600, |_| 99.0);
        assert!(!a.is_empty());
        assert!(a.iter().all(|x| x.kind == HostAlertKind::CpuSpike && x.host == "web1"));
        assert_eq!(a[0].second, t0 + 4260, "dated at the start of the episode");
        assert!(a.len() >= 7 && a.windows(2).all(|w| w[1].second >= w[0].second + 60), "repeats once a minute: {a:?}");
    }

    #[test]
    fn what_was_learnt_survives_a_restart_and_downtime_is_not_silence() {
        let mut d = HostDetectors::new(&HostDetectConfig::default());
        let t0 = 1_700_000_000 - 1_700_000_000 % 86_400;
        let busy = |t: u64| if (7200..9600).contains(&(t % 86_400)) { 95.0 } else { 10.0 };
        assert!(!cpu_day(&mut d, t0, 86_400, busy).is_empty());
        let saved = d.save();
        // ten minutes down, then the same host on its second day: the batch job is known
        let mut e = HostDetectors::new(&HostDetectConfig::default());
        assert_eq!(e.restore(&saved, t0 + 86_400 + 600).unwrap(), 1);
        let mut out = Vec::new();
        e.tick(t0 + 86_400 + 601, &mut out);
        assert!(out.is_empty(), "downtime is not silence: {out:?}");
        assert!(cpu_day(&mut e, t0 + 86_400 + 600, 86_400 - 600, busy).is_empty());
        assert!(e.restore(b"not a snapshot", t0).is_err());
        assert_eq!(e.hosts(), 1, "a bad snapshot changes nothing");
    }

    #[test]
    fn a_daily_batch_job_is_learnt() {
        let mut d = HostDetectors::new(&HostDetectConfig::default());
        let t0 = 1_700_000_000 - 1_700_000_000 % 86_400;
        // 02:00-02:40 every day at 95 %
        let busy = |t: u64| if (7200..9600).contains(&(t % 86_400)) { 95.0 } else { 10.0 };
        let first = cpu_day(&mut d, t0, 86_400, busy);
        assert!(!first.is_empty(), "the first run of a batch job is news");
        for day in 1..4 {
            let a = cpu_day(&mut d, t0 + day * 86_400, 86_400, busy);
            assert!(a.is_empty(), "day {day}: {a:?}");
        }
        // the same load at another hour is a spike
        let other = |t: u64| if (43_200..45_600).contains(&(t % 86_400)) { 95.0 } else { 10.0 };
        assert!(!cpu_day(&mut d, t0 + 4 * 86_400, 86_400, other).is_empty());
    }

    fn mem(d: &mut HostDetectors, t: u64, avail: f64, rss: f64) -> Vec<HostAlert> {
        let mut out = Vec::new();
        d.observe(
            &second(
                t,
                &[
                    ("db1", "mem.total", "", SeriesKind::Metric, 16e9, 1),
                    ("db1", "mem.available", "", SeriesKind::Metric, avail, 1),
                    ("db1", "procstat.memory_rss", "process_name=leaker", SeriesKind::Metric, rss, 1),
                ],
            ),
            &mut out,
        );
        out
    }

    #[test]
    fn a_steady_leak_is_found_with_its_time_to_exhaustion() {
        let cfg = HostDetectConfig { leak_step_s: 10, leak_points: 30, ..HostDetectConfig::default() };
        let mut d = HostDetectors::new(&cfg);
        let t0 = 1_700_000_000;
        let mut x = 1u64;
        let mut noise = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((x >> 33) % 1000) as f64 * 1e5
        };
        let mut alerts = Vec::new();
        for i in 0..600u32 {
            // 10 MB/s growth with ±50 MB noise
            let rss = 1e9 + 1e7 * f64::from(i) + noise();
            let avail = 8e9 - 1e7 * f64::from(i) + noise();
            alerts.extend(mem(&mut d, t0 + u64::from(i), avail, rss));
        }
        let proc_alert = alerts.iter().find(|a| a.subject == "leaker").expect("the process leak is found");
        assert_eq!(proc_alert.kind, HostAlertKind::MemoryLeak);
        assert!((proc_alert.value - 1e7).abs() < 1e6, "slope {}", proc_alert.value);
        let tte = proc_alert.exhaustion_s.unwrap();
        assert!(tte > 100.0 && tte < 900.0, "{tte}");
        assert!(alerts.iter().any(|a| a.subject == "memory"), "available memory falls too");
    }

    #[test]
    fn flat_noisy_memory_and_a_batch_ramp_are_not_leaks() {
        let cfg = HostDetectConfig { leak_step_s: 10, leak_points: 30, ..HostDetectConfig::default() };
        let mut d = HostDetectors::new(&cfg);
        let t0 = 1_700_000_000;
        let mut x = 7u64;
        let mut noise = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((x >> 33) % 1000) as f64 * 1e6
        };
        for i in 0..3000u64 {
            // flat with ±500 MB noise, and a 2 GB ramp in the last 60 s of each 300 s, then freed
            let ramp = if i % 300 >= 240 { (i % 300 - 240) as f64 * 3e7 } else { 0.0 };
            let a = mem(&mut d, t0 + i, 8e9 - ramp + noise(), 1e9 + ramp + noise());
            assert!(a.is_empty(), "{a:?}");
        }
    }

    #[test]
    fn an_error_burst_is_found_and_a_steady_trickle_is_not() {
        let mut d = HostDetectors::new(&HostDetectConfig::default());
        let t0 = 1_700_000_000;
        let mut out = Vec::new();
        let err = SeriesKind::Syslog { severity: 3, facility: 1 };
        // one error every 30 s for two hours: its own normal
        for t in (t0..t0 + 7200).step_by(30) {
            d.observe(&second(t, &[("app1", "syslog.messages", "app=x", err, 1.0, 1)]), &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        // 100 errors in 20 s
        for t in t0 + 7200..t0 + 7220 {
            d.observe(&second(t, &[("app1", "syslog.messages", "app=x", err, 1.0, 5)]), &mut out);
        }
        assert!(out.iter().any(|a| a.kind == HostAlertKind::ErrorBurst && a.host == "app1"), "{out:?}");
        let mut out = Vec::new();
        for t in t0 + 7200..t0 + 7220 {
            d.observe(
                &second(t, &[("app2", "syslog.auth_failures", "app=sshd", SeriesKind::AuthFailure, 1.0, 3)]),
                &mut out,
            );
        }
        assert!(out.iter().all(|a| a.kind == HostAlertKind::AuthFailureBurst) && !out.is_empty());
    }

    #[test]
    fn a_regular_host_going_silent_is_found_once_a_minute() {
        let cfg = HostDetectConfig { silent_min_seen_s: 300, ..HostDetectConfig::default() };
        let mut d = HostDetectors::new(&cfg);
        let t0 = 1_700_000_000;
        let mut out = Vec::new();
        for t in t0..t0 + 900 {
            if t % 10 == 0 {
                d.observe(&second(t, &[("h", "mem.total", "", SeriesKind::Metric, 1.0, 1)]), &mut out);
            }
            d.tick(t, &mut out);
        }
        assert!(out.is_empty());
        for t in t0 + 900..t0 + 1200 {
            d.tick(t, &mut out);
        }
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out.iter().all(|a| a.kind == HostAlertKind::Silent));
        assert!(out[0].second == t0 + 891);
    }
}
