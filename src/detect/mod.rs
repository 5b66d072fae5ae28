//! Sans-I/O layer-1 anomaly detection: per (dimension, key, metric) exponentially weighted mean
//! and variance (Welford-style update) on `ln(1 + value)`, an anomaly likelihood
//! ([`likelihood`]: the score that means the same on every series), a |z| threshold,
//! warm-up, cooldown, and CUSUM for sustained level shifts.
//!
//! **Why the log scale.** Per-second traffic counts are heavy-tailed and multiplicative; on raw
//! values a doubling of a big key and a blip of a tiny key look alike to a z-score. On
//! `ln(1 + x)` a z of 3.5 means "several times the usual", whatever the key's size.
//!
//! **Why spreading.** Exporters emit a long flow once per active timeout (often 60 s): on
//! arrival time, a steady elephant is a sawtooth. Rollups stay exact by arrival, but the detector
//! sees each long record (duration > `long_flow_ms`) spread evenly over its own duration: the
//! rate `bytes / duration` is added now and removed `duration` seconds later (a 256-slot timing
//! wheel whose entries carry their due second, so spreads of any length up to
//! [`MAX_SPREAD_S`] — 30-minute active timeouts included — stay whole). A steady elephant becomes a flat line; a surge of short flows still shows in the
//! second it arrives.
//!
//! **Robustness.** An anomalous value moves the baseline only as far as the threshold (clamped
//! update), so an attack does not teach the detector that attacks are normal.
//!
//! **Bounded.** State exists only for tracked keys: at most `max_tracked` per dimension per
//! owner shard; idle keys are evicted, and when full the least active of 8 sampled keys is
//! replaced. Activity counts presence and log-scale flows and bytes, and a new key starts from
//! its first row, so a flood of spoofed one-record sources cannot churn out a host that is busy
//! every second (a scanner beside a DDoS).
//!
//! May depend on: `model`, `aggregate`. Lives on: owner shard cores (and replay, backtest).

pub mod host;
pub mod layer2;
pub mod layer3;
pub mod layer3_history;
pub mod likelihood;

use crate::aggregate::Row;
use crate::model::{Alert, AlertKind, Dimension, Key, Metric};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Timing-wheel slots. A spread longer than the wheel stays in its slot for several turns (each
/// entry carries the second it is due), so any duration up to [`MAX_SPREAD_S`] is spread whole.
pub const WHEEL: usize = 256;
/// The longest spread, seconds: Cisco's default active timeout is 30 minutes; longer (or
/// hostile) durations are spread over two hours.
pub const MAX_SPREAD_S: u64 = 7200;
/// A drop needs a baseline of at least this share of the metric's floor: silence of a
/// steady key matters even when the key is small (a quiet interface going dark).
pub const DROP_FLOOR_RATIO: f64 = 0.2;
/// Seconds of history before a key's drop matters: silence of a key that only existed during
/// an incident (an attack's port, say) is not an outage.
pub const DROP_MIN_HISTORY_S: u32 = 300;
/// After an upward alert, a return to the old level within this many seconds is recovery,
/// not a new anomaly (no downward alert) — unless the key went completely silent.
pub const RECOVERY_S: u64 = 900;
/// How far (in standard deviations, beyond the threshold) a key in warm-up must be above the
/// dimension's population to alert.
pub const COLD_MARGIN: f64 = 2.0;

/// Fewest warm keys a dimension needs before what most of them share counts as a common swell.
pub const COMMON_MIN_KEYS: usize = 5;

/// A key counts towards the common shift while it was seen within this many seconds.
pub const COMMON_ACTIVE_S: u64 = 60;
/// Metrics with cold-start (population) scoring: flows, distinct counts and unanswered
/// attempts — what scans and fan-outs show. Bytes of a new key are not judged: a new big
/// transfer is ordinary.
const COLD_METRICS: [bool; METRICS] = [false, false, true, true, true];
/// Metric slots per key: bytes, packets, flows, distinct, unanswered (as [`Metric::ALL`]).
pub const METRICS: usize = 5;

/// The metric slots a dimension's keys are judged on: the distinct count where the dimension
/// has one, unanswered connection attempts for sources (scanners).
fn metrics_of(dim: Dimension) -> &'static [usize] {
    match (dim, dim.distinct_names().is_some()) {
        (Dimension::SrcIp, _) => &[0, 1, 2, 3, 4],
        (_, true) => &[0, 1, 2, 3],
        _ => &[0, 1, 2],
    }
}

/// EWMA mean/variance of `ln(1 + x)` over all keys of a dimension (the population).
#[derive(Clone, Copy, Debug, Default)]
struct Population {
    n: u64,
    mean: f64,
    var: f64,
}

impl Population {
    fn add(&mut self, x: f64) {
        let y = x.ln_1p();
        self.n += 1;
        let a = (1.0 / self.n as f64).max(0.002);
        let d = y - self.mean;
        self.mean += a * d;
        self.var = (1.0 - a) * (self.var + a * d * d);
    }
    fn get(&self) -> Option<(f64, f64)> {
        (self.n >= 100).then(|| (self.mean, self.var.sqrt()))
    }
}

/// Layer-1 detector settings: the `[detect]` section of the configuration file, as the
/// detectors use it (one field list; serde defaults are [`DetectConfig::default`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Run layer-1 detection.
    pub enabled: bool,
    /// Dimensions whose keys get detectors; unset = every aggregated dimension of
    /// [`DEFAULT_DIMENSIONS`] (each one set must also be aggregated).
    pub dimensions: Option<Vec<Dimension>>,
    /// EWMA weight of a new second (0 < alpha < 1).
    pub alpha: f64,
    /// Seconds of history before a key may alert.
    pub warmup_s: u32,
    /// |z| above which a second is anomalous.
    pub z_threshold: f64,
    /// Floor for the standard deviation on the log scale.
    pub min_std: f64,
    /// Seconds after an alert during which the same (key, metric) stays quiet.
    pub cooldown_s: u64,
    /// CUSUM slack (in standard deviations).
    pub cusum_k: f64,
    /// CUSUM decision threshold.
    pub cusum_h: f64,
    /// EWMA weight of the slow baseline (minutes-scale drifts such as slow exfiltration).
    pub slow_alpha: f64,
    /// The slow CUSUM only accumulates while the key is above this multiple of its long-run
    /// level (a slow drift worth a page has at least doubled, say).
    pub slow_min_ratio: f64,
    /// Decision threshold of the CUSUM against the slow baseline (≈ seconds of sustained
    /// maximal deviation × (threshold − k)).
    pub slow_cusum_h: f64,
    /// Alert when a key drops far below its baseline (e.g. an interface goes silent).
    pub drop_alerts: bool,
    /// Consecutive low seconds before a drop alert.
    #[serde(skip)]
    pub drop_confirm_s: u8,
    /// Consecutive high seconds before a spike alert (1 = alert in the second itself). One
    /// big transfer of a small host lasts one second; attacks and scans last longer.
    pub spike_confirm_s: u8,
    /// Smallest bytes/s worth an alert.
    pub min_bytes_per_s: f64,
    /// Smallest packets/s worth an alert.
    pub min_packets_per_s: f64,
    /// Smallest flows/s worth an alert.
    pub min_flows_per_s: f64,
    /// Smallest distinct count worth an alert.
    pub min_distinct: f64,
    /// A sustained drift (slow baseline) of a host (`src_ip`, `dst_ip`) also matters below the
    /// absolute floors when it carries at least this share of its dimension's bytes or packets:
    /// the floors are sized for big networks, a share is not.
    pub min_share: f64,
    /// Tracked keys per dimension per owner shard.
    #[serde(rename = "max_tracked_keys")]
    pub max_tracked: usize,
    /// A tracked key unseen this long is forgotten, seconds.
    pub idle_evict_s: u64,
    /// Dimensions whose brand-new keys are reported when they stay active (`new_key`): a port
    /// nobody served before (a new service), and so on.
    pub new_key_dimensions: Vec<Dimension>,
    /// A dimension must have been watched this long before its new keys count as new, seconds
    /// (before that every key is new).
    pub new_key_after_s: u64,
    /// A new key is reported when it was active in at least 90 % of its first this-many
    /// seconds with at least `new_key_min_flows` short flows a second on average.
    pub new_key_window_s: u32,
    /// Flows a second (records that are not a long flow's active-timeout export) a new key
    /// needs on average: a service takes new connections; a client's ephemeral port carries
    /// one long connection.
    pub new_key_min_flows: f64,
}

/// The dimensions with detectors when `[detect] dimensions` is not set (those of them that are
/// aggregated).
pub const DEFAULT_DIMENSIONS: [Dimension; 5] =
    [Dimension::Total, Dimension::SrcIp, Dimension::DstIp, Dimension::DstPort, Dimension::ExporterInIf];

impl DetectConfig {
    /// Whether keys of `d` get detectors.
    pub fn detects(&self, d: Dimension) -> bool {
        self.dimensions.as_deref().unwrap_or(&DEFAULT_DIMENSIONS).contains(&d)
    }

    /// The smallest value worth an alert for metric index `metric` (bytes, packets, flows,
    /// distinct, unanswered attempts — counted like flows).
    pub fn min_value(&self, metric: usize) -> f64 {
        match metric {
            0 => self.min_bytes_per_s,
            1 => self.min_packets_per_s,
            2 | 4 => self.min_flows_per_s,
            _ => self.min_distinct,
        }
    }

    /// The same, to change it (`flowshard backtest --min-value`).
    pub fn min_value_mut(&mut self, metric: usize) -> &mut f64 {
        match metric {
            0 => &mut self.min_bytes_per_s,
            1 => &mut self.min_packets_per_s,
            2 | 4 => &mut self.min_flows_per_s,
            _ => &mut self.min_distinct,
        }
    }
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            dimensions: None,
            alpha: 0.02,
            warmup_s: 60,
            z_threshold: 3.5,
            min_std: 0.3,
            cooldown_s: 30,
            cusum_k: 1.0,
            cusum_h: 12.0,
            slow_alpha: 0.001,
            slow_cusum_h: 150.0,
            slow_min_ratio: 2.0,
            drop_alerts: true,
            drop_confirm_s: 2,
            spike_confirm_s: 2,
            min_bytes_per_s: 1_000_000.0,
            min_packets_per_s: 1000.0,
            min_flows_per_s: 50.0,
            min_distinct: 50.0,
            min_share: 0.01,
            max_tracked: 10_000,
            idle_evict_s: 900,
            new_key_dimensions: vec![Dimension::DstPort],
            new_key_after_s: 600,
            new_key_window_s: 60,
            new_key_min_flows: 2.0,
        }
    }
}

/// One metric's streaming state (40 bytes, plus the 148-byte [`likelihood::Likelihood`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricState {
    lik: likelihood::Likelihood,
    n: u32,
    low_run: u8,
    high_run: u8,
    cold_run: u8,
    mean: f64,
    var: f64,
    cpos: f64,
    cneg: f64,
    smean: f64,
    svar: f64,
    scpos: f64,
    last_alert: u64,
    last_up: u64,
    /// The baseline (on `ln(1 + x)`) before the last upward alert.
    before_up: f64,
    /// Counts seen and expected over the current run of seconds below the baseline.
    run_k: f64,
    run_lambda: f64,
}

/// What the detector knows about one second's value besides the value itself.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Context {
    /// For a key seen through 1-in-N sampling, how many samples one unit of the value rests on
    /// (so `value × samples_per_unit` samples this second); `None` for unsampled traffic.
    pub samples_per_unit: Option<f64>,
    /// The dimension's total of the metric this second (`min_share`); `None` for a lone
    /// series (backtest).
    pub dim_total: Option<f64>,
    /// The dimension's common shift this second, in `ln(1 + x)`: the median over its warm keys
    /// of (fast baseline − slow baseline). The slow-drift rule judges the value less this, so
    /// a swell most keys share (time of day) is not a drift of each, and one key's surge or
    /// its end (an upload beside an elephant) moves no other key (0 = none).
    pub common_shift: f64,
}

/// The result of one update.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    /// The anomaly likelihood in [0, 1] ([`likelihood`]): how improbable the recent surprise
    /// is against this key's own history of surprises; sparse, and reported once per run.
    pub score: f64,
    /// Standardised deviation.
    pub z: f64,
    /// Baseline on the original scale (`exp(mean) - 1`).
    pub baseline: f64,
    /// An alert, if one fires this second.
    pub alert: Option<AlertKind>,
}

/// `erf` (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
fn erf(x: f64) -> f64 {
    let s = x.signum();
    let x = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t + 0.254_829_592)
            * t
            * (-x * x).exp();
    s * y
}

/// The deviation of a count (or a sampled estimate): `z` (on the log scale against the key's
/// own variability) unless the counts themselves do not support it — `now` events against an
/// expected `expected`, judged as a Poisson count ([`poisson_z`]). The weaker of the two, or 0
/// when they disagree in direction. A key seen through 3 samples a second is not "5σ above"
/// because a 4th arrived, and 11 flows a second dropping to 2 is not an outage.
#[inline]
pub fn sampled_z(z: f64, now: f64, expected: f64) -> f64 {
    let zp = poisson_z(now, expected);
    if zp * z <= 0.0 {
        0.0
    } else {
        z.signum() * z.abs().min(zp.abs())
    }
}

/// The standard-normal deviate of `k` events where `lambda` were expected, for a Poisson count,
/// conservatively: the smaller of two approximations. Wilson–Hilferty's cube root of the
/// chi-square that gives Poisson tails exactly (P(X ≤ k) = P(χ²₂₍ₖ₊₁₎ ≥ 2λ)) is accurate in
/// the far tails; Anscombe's square root, `2(√(k+3/8) − √(λ+3/8))`, understates the upper tail
/// of small counts. Real counts are overdispersed (a flow's packets are sampled in trains, a
/// burst of flows comes together), so the milder verdict is the honest one. Negative below
/// `lambda`, positive above.
pub fn poisson_z(k: f64, lambda: f64) -> f64 {
    let wh = wilson_hilferty(k, lambda);
    let anscombe = 2.0 * ((k.max(0.0) + 0.375).sqrt() - (lambda.max(0.0) + 0.375).sqrt());
    if wh * anscombe <= 0.0 {
        0.0
    } else {
        wh.signum() * wh.abs().min(anscombe.abs())
    }
}

/// Wilson–Hilferty's normal deviate of a Poisson count (see [`poisson_z`]).
fn wilson_hilferty(k: f64, lambda: f64) -> f64 {
    let (k, lambda) = (k.max(0.0), lambda.max(1e-9));
    if k < lambda {
        let n = k + 1.0;
        let c = 1.0 / (9.0 * n);
        if lambda <= n {
            return 0.0;
        }
        -(((lambda / n).cbrt() - (1.0 - c)) / c.sqrt())
    } else {
        if k <= 0.0 {
            return 0.0;
        }
        let c = 1.0 / (9.0 * k);
        ((1.0 - c) - (lambda / k).cbrt()) / c.sqrt()
    }
}

/// Calibrated score for a standardised deviation: `P(|Z| < |z|)` under the baseline.
#[inline]
pub fn score_of(z: f64) -> f64 {
    erf(z.abs() / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

impl MetricState {
    /// Feeds one second's value; `second` drives the cooldown, `ctx` says what else is known
    /// about the value (sampling, the dimension's total).
    pub fn update(&mut self, cfg: &DetectConfig, metric: usize, x: f64, second: u64, ctx: Context) -> Verdict {
        let y = x.max(0.0).ln_1p();
        // The slow-drift rule judges the value with the dimension's common swell taken out: a
        // swell of all traffic (time of day) moves most keys, a drift moves one.
        let c = ctx.common_shift;
        let samples_per_unit = ctx.samples_per_unit;
        if self.n == 0 {
            self.n = 1;
            self.mean = y;
            self.var = 0.0;
            self.smean = y;
            return Verdict { score: 0.0, z: 0.0, baseline: x, alert: None };
        }
        let std = self.var.sqrt().max(cfg.min_std);
        let z_raw = (y - self.mean) / std;
        let baseline = self.mean.exp_m1();
        // Counting noise: a sampled estimate is only as good as its samples. The deviation is
        // also judged on the samples themselves (Anscombe's transform makes a Poisson count's
        // standard deviation 1), and the weaker of the two is the evidence.
        let z = match samples_per_unit {
            Some(q) => sampled_z(z_raw, x * q, baseline * q),
            None => z_raw,
        };
        // Counts below the baseline accumulate: a few seconds of silence where a handful of
        // samples a second were expected is as improbable as one second of silence where
        // many were — the evidence of the whole low run, judged as one count.
        let run_z = match samples_per_unit {
            Some(q) if z < 0.0 => {
                self.run_k += x * q;
                self.run_lambda += baseline * q;
                sampled_z(z_raw, self.run_k, self.run_lambda)
            }
            _ => {
                self.run_k = 0.0;
                self.run_lambda = 0.0;
                0.0
            }
        };
        let warm = self.n >= cfg.warmup_s;
        let thr = cfg.z_threshold;
        let floor = cfg.min_value(metric);
        let mut alert = None;
        if warm {
            let cooled = second >= self.last_alert.saturating_add(cfg.cooldown_s) || self.last_alert == 0;
            if z > thr && x >= floor {
                self.high_run = self.high_run.saturating_add(1);
                self.low_run = 0;
                if self.high_run >= cfg.spike_confirm_s {
                    alert = Some(AlertKind::Spike);
                }
            } else if (z < -thr || run_z < -thr)
                && cfg.drop_alerts
                && baseline >= floor * DROP_FLOOR_RATIO
                && self.n >= DROP_MIN_HISTORY_S
            {
                self.low_run = self.low_run.saturating_add(1);
                if self.low_run >= cfg.drop_confirm_s {
                    alert = Some(AlertKind::Drop);
                }
                self.high_run = 0;
            } else {
                self.low_run = 0;
                self.high_run = 0;
            }
            // Winsorised CUSUM: one huge second adds at most `thr - k`, so only sustained
            // shifts accumulate (single spikes are the spike rule's business).
            let zc = z.clamp(-thr, thr);
            self.cpos = (self.cpos + zc - cfg.cusum_k).max(0.0);
            self.cneg = (self.cneg - zc - cfg.cusum_k).max(0.0);
            // Upward shifts on the fast baseline only for keys already carrying material
            // traffic; a quiet key rising is the spike rule's or the slow CUSUM's business.
            let material = baseline >= floor * DROP_FLOOR_RATIO;
            let up_shift = self.cpos > cfg.cusum_h && x >= floor && material;
            let down_shift = self.cneg > cfg.cusum_h && cfg.drop_alerts && material && self.n >= DROP_MIN_HISTORY_S;
            if alert.is_none() && (up_shift || down_shift) {
                alert = Some(AlertKind::LevelShift);
            }
            // Slow drift: CUSUM against a baseline with a half-life of minutes.
            let sstd = self.svar.sqrt().max(cfg.min_std);
            let mut zs = (y - c - self.smean) / sstd;
            if let Some(q) = samples_per_unit {
                zs = sampled_z(zs, x * q, (self.smean + c).exp_m1() * q);
            }
            let zs = zs.clamp(-thr, thr);
            // A drift counts once the key is beyond `slow_min_ratio` times its long-run level:
            // on a quiet key a few standard deviations are a small change.
            let slack = cfg.cusum_k.max(cfg.slow_min_ratio.max(1.0).ln() / sstd);
            self.scpos = (self.scpos + zs - slack).max(0.0);
            let by_share = metric < 2 && ctx.dim_total.is_some_and(|t| x >= cfg.min_share * t);
            let material = x >= floor || by_share;
            if alert.is_none() && self.scpos > cfg.slow_cusum_h && material {
                alert = Some(AlertKind::LevelShift);
            }
            // Direction of this second's alert. A downward one is recovery, not an anomaly,
            // right after an upward alert, or when the value is back at its long-run
            // (slow-baseline) level (an incident the fast baseline had adapted to ended).
            let upward = z > 0.0;
            let back_to_long_run = zs > -1.0;
            let silent = x == 0.0;
            // Back where the key was before its last upward alert: the end of that anomaly (an
            // exfiltration stopping, a new service going away), silence included when the key
            // carried nothing material before it.
            let back_to_before = self.last_up != 0
                && y <= self.before_up + thr * std
                && (!silent || self.before_up < (floor * DROP_FLOOR_RATIO).ln_1p());
            if alert.is_some()
                && !upward
                && (back_to_before
                    || !silent
                        && (back_to_long_run || self.last_up != 0 && second < self.last_up.saturating_add(RECOVERY_S)))
            {
                alert = None;
                self.cneg = 0.0;
                self.low_run = 0;
            }
            if alert.is_some() && upward {
                if self.last_up == 0 || second >= self.last_up.saturating_add(RECOVERY_S) {
                    // the level before this rise (not one already raised by it): the lower
                    // of the short- and long-run baselines, since a slow rise has already
                    // lifted the short one
                    self.before_up = self.mean.min(self.smean);
                }
                self.last_up = second;
            }
            if alert.is_some() {
                self.cpos = 0.0;
                self.cneg = 0.0;
                self.scpos = 0.0;
                self.low_run = 0;
                self.high_run = 0;
                if cooled {
                    self.last_alert = second;
                } else {
                    alert = None;
                }
            }
        }
        // Clamped (robust) Welford-style EWMA update.
        let alpha = if warm { cfg.alpha } else { cfg.alpha.max(1.0 / (self.n as f64 + 1.0)) };
        let yc = if warm { self.mean + z_raw.clamp(-thr, thr) * std } else { y };
        let diff = yc - self.mean;
        let incr = alpha * diff;
        self.mean += incr;
        self.var = (1.0 - alpha) * (self.var + diff * incr);
        // The slow baseline, clamped the same way.
        let sa = if warm { cfg.slow_alpha } else { cfg.slow_alpha.max(1.0 / (self.n as f64 + 1.0)) };
        let sstd = self.svar.sqrt().max(cfg.min_std);
        let ysc = if warm { self.smean + ((y - self.smean) / sstd).clamp(-thr, thr) * sstd } else { y };
        let sd = ysc - self.smean;
        self.smean += sa * sd;
        self.svar = (1.0 - sa) * (self.svar + sa * sd * sd);
        // A level shift is a change point: the new level is the baseline from now on (both the
        // fast and the slow one), so one change is one alert, not a train of alerts while the
        // clamped baselines catch up.
        if alert == Some(AlertKind::LevelShift) {
            self.mean = y;
            self.smean = y;
        }
        self.n = self.n.saturating_add(1);
        Verdict { score: self.lik.update(z), z, baseline, alert }
    }

    /// Corrects the baselines for traffic this key carried during its whole history but
    /// that the detector never saw: a long record whose flow started before the key's first
    /// second (typically flows already running when flowshard started, revealed by their
    /// first active-timeout export). `rate` is that traffic per second.
    fn reveal(&mut self, rate: f64) {
        if self.n == 0 || rate <= 0.0 {
            return;
        }
        self.mean = (self.mean.exp() + rate).ln();
        self.smean = (self.smean.exp() + rate).ln();
    }

    /// Cold-start check for a key still in warm-up: scores `x` against the dimension's
    /// population of keys (`pop_mean`, `pop_std` of `ln(1 + x)` over keys seen), so a brand-new
    /// key that is far outside what any key usually does (a scanner's hundreds of ports or
    /// flows) alerts without waiting for its own history. Returns (z, baseline) on alert.
    pub fn cold_check(
        &mut self,
        cfg: &DetectConfig,
        metric: usize,
        x: f64,
        pop: (f64, f64),
        second: u64,
    ) -> Option<(f64, f64)> {
        if self.n >= cfg.warmup_s || x < cfg.min_value(metric) {
            self.cold_run = 0;
            return None;
        }
        let z = (x.ln_1p() - pop.0) / pop.1.max(cfg.min_std);
        if z <= cfg.z_threshold + COLD_MARGIN {
            self.cold_run = 0;
            return None;
        }
        self.cold_run = self.cold_run.saturating_add(1);
        let cooled = self.last_alert == 0 || second >= self.last_alert.saturating_add(cfg.cooldown_s);
        if self.cold_run >= cfg.spike_confirm_s && cooled {
            self.last_alert = second;
            return Some((z, pop.0.exp_m1()));
        }
        None
    }

    /// Seconds of history.
    pub fn samples(&self) -> u32 {
        self.n
    }
}

/// Weight of one second in a key's eviction priority ([`Tracked::activity`]).
const ACTIVITY_WEIGHT: f64 = 0.05;

/// One second's contribution to a key's eviction priority: presence first, then flows and
/// bytes on a log scale.
fn presence(bytes: f64, flows: f64) -> f64 {
    1.0 + flows.ln_1p() + bytes.ln_1p() / 4.0
}

/// Bytes of detector state per tracked key (all five metric slots, spreads, counting-noise
/// sums, new-key watch), plus its index entry; wheel entries (32 bytes per spreading record)
/// come on top.
pub const TRACKED_KEY_BYTES: usize =
    std::mem::size_of::<Tracked>() + std::mem::size_of::<(Key, u32)>() + std::mem::size_of::<u64>();

#[derive(Clone, Copy, Debug)]
struct Tracked {
    key: Key,
    gen: u32,
    /// The key's first second (its history starts here).
    first_seen: u64,
    last_seen: u64,
    /// Detector input this second from short records, per metric slot (bytes, packets,
    /// flows, distinct, unanswered), and the samples behind them.
    cur: [f64; METRICS],
    cur_samples: f64,
    /// Current spread rate of long records: bytes, packets, flows, samples.
    spread: [f64; 4],
    /// Spreads that ended but are held until `held_until`: an exporter's next record of the
    /// same flow arrives a little after the previous one's span ends (timer jitter, a mean
    /// duration over several records), and replaces it without a dip.
    held: [f64; 4],
    held_until: u64,
    /// Decayed sums of samples and of bytes, packets, flows (the counting-noise model).
    samples: f64,
    units: [f64; 3],
    m: [MetricState; METRICS],
    /// Eviction priority: a decayed sum of [`presence`] per busy second — persistence first,
    /// size on a log scale (a spoofed one-off source cannot outrank a host busy every second).
    activity: f64,
    /// First seen after the dimension's own warm-up: a newcomer, judged against the
    /// population until it has history.
    newcomer: bool,
    /// Seconds active and short flows summed over the key's first `new_key_window_s` seconds
    /// (new-key watch; only for keys born after `new_key_after_s`).
    new_active: u32,
    new_flows: f64,
}

#[derive(Clone, Copy, Debug)]
struct Decrement {
    slot: u32,
    gen: u32,
    /// The second the spread ends (only its low 32 bits: seconds are compared exactly).
    due: u32,
    /// How long the ended spread is held for the flow's next record, seconds.
    hold_s: u16,
    amt: [f32; 4],
}

/// Detectors for the keys of one dimension on one owner shard.
pub struct DimDetector {
    dim: Dimension,
    index: FxHashMap<Key, u32>,
    keys: Vec<Tracked>,
    pop: [Population; METRICS],
    born: Option<u64>,
    wheel: Vec<Vec<Decrement>>,
    next_gen: u32,
    rng: u64,
    /// Watch new keys of this dimension.
    new_keys: bool,
    /// Keys forgotten (idle or replaced).
    pub evicted: u64,
    /// Long records whose spread did not fit the wheel (applied at once).
    pub spread_overflow: u64,
    /// Long records that revealed traffic older than their key's history (baselines corrected).
    pub revealed: u64,
    /// Scratch for the common shift's median (reused: no allocation per second once grown).
    shifts: Vec<f64>,
}

impl DimDetector {
    /// Detectors for one dimension.
    pub fn new(dim: Dimension, cfg: &DetectConfig) -> DimDetector {
        DimDetector {
            dim,
            index: FxHashMap::default(),
            keys: Vec::with_capacity(cfg.max_tracked.min(1 << 16)),
            pop: [Population::default(); METRICS],
            born: None,
            wheel: (0..WHEEL).map(|_| Vec::new()).collect(),
            next_gen: 1,
            rng: 0x2545_f491_4f6c_dd1d,
            new_keys: cfg.new_key_dimensions.contains(&dim),
            evicted: 0,
            spread_overflow: 0,
            revealed: 0,
            shifts: Vec::new(),
        }
    }

    /// Keys tracked.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    fn slot_for(&mut self, key: Key, cfg: &DetectConfig, second: u64) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i as usize;
        }
        if self.keys.len() >= cfg.max_tracked.max(1) {
            // Replace the least active of 8 sampled keys.
            let n = self.keys.len();
            let mut victim = 0;
            let mut least = f64::MAX;
            for _ in 0..8 {
                let i = (crate::model::xorshift64(&mut self.rng) % n as u64) as usize;
                if self.keys[i].activity < least {
                    least = self.keys[i].activity;
                    victim = i;
                }
            }
            self.remove(victim);
        }
        let i = self.keys.len();
        self.next_gen = self.next_gen.wrapping_add(1);
        self.keys.push(Tracked {
            key,
            gen: self.next_gen,
            first_seen: second,
            last_seen: 0,
            cur: [0.0; METRICS],
            cur_samples: 0.0,
            spread: [0.0; 4],
            held: [0.0; 4],
            held_until: 0,
            samples: 0.0,
            units: [0.0; 3],
            m: [MetricState::default(); METRICS],
            activity: 0.0,
            newcomer: self.born.is_some_and(|b| second >= b + cfg.warmup_s as u64),
            new_active: 0,
            new_flows: 0.0,
        });
        self.index.insert(key, i as u32);
        i
    }

    fn remove(&mut self, i: usize) {
        let t = self.keys.swap_remove(i);
        self.index.remove(&t.key);
        if i < self.keys.len() {
            let moved = self.keys[i].key;
            self.index.insert(moved, i as u32);
        }
        self.evicted += 1;
    }

    /// Applies the wheel slot of `second` (spreads that end now are held) and releases held
    /// spreads whose grace ran out.
    pub fn begin_second(&mut self, second: u64) {
        let slot = (second % WHEEL as u64) as usize;
        let mut decs = std::mem::take(&mut self.wheel[slot]);
        let now = second as u32;
        decs.retain(|d| {
            // entries of a later turn of the wheel stay; only what is due now applies
            if d.due != now {
                return true;
            }
            if let Some(t) = self.keys.get_mut(d.slot as usize) {
                if t.gen == d.gen {
                    for m in 0..4 {
                        t.held[m] += d.amt[m] as f64;
                    }
                    t.held_until = t.held_until.max(second + u64::from(d.hold_s));
                }
            }
            false
        });
        self.wheel[slot] = decs;
        for t in self.keys.iter_mut() {
            if t.held_until != 0 && second >= t.held_until {
                t.release_held();
            }
        }
    }

    /// Feeds one merged row of this second (before any top-K cut).
    pub fn observe(&mut self, row: &Row, distinct: Option<u64>, second: u64, cfg: &DetectConfig) {
        if row.key.is_other() {
            return;
        }
        let i = self.slot_for(row.key, cfg, second);
        let gen = self.keys[i].gen;
        let t = &mut self.keys[i];
        t.last_seen = second;
        t.cur = [
            (row.bytes - row.long_bytes) as f64,
            (row.packets - row.long_packets) as f64,
            (row.flows - row.long_flows) as f64,
            distinct.unwrap_or(0) as f64,
            row.syn_only as f64,
        ];
        t.cur_samples = (row.samples - row.long_samples) as f64;
        if t.activity == 0.0 {
            // a new key ranks by its first row, not below every key already judged
            t.activity = ACTIVITY_WEIGHT * presence(row.bytes as f64, row.flows as f64);
        }
        if row.long_flows > 0 {
            // Rate-weighted mean duration: the biggest flows are spread over their own
            // duration even when smaller long flows share the row.
            let dur_s = row.long_bytes.checked_div(row.long_rate).unwrap_or(u64::from(row.long_max_s));
            let dur_s = dur_s.clamp(1, MAX_SPREAD_S);
            let rate = [
                row.long_bytes as f64 / dur_s as f64,
                row.long_packets as f64 / dur_s as f64,
                row.long_flows as f64 / dur_s as f64,
                row.long_samples as f64 / dur_s as f64,
            ];
            // A new record of a flow whose previous span just ended takes its place.
            let continued = t.held;
            t.release_held();
            // Traffic that flowed since before this key's history began was never seen:
            // the baselines learn it now instead of calling its arrival a surge.
            if second.saturating_sub(u64::from(row.long_max_s)) <= t.first_seen {
                for m in 0..3 {
                    let r = rate[m] - continued[m];
                    t.m[m].reveal(r);
                }
                self.revealed += 1;
            }
            let slot = ((second + dur_s) % WHEEL as u64) as usize;
            let w = &mut self.wheel[slot];
            if w.len() < cfg.max_tracked.max(1024) * 2 {
                for (s, r) in t.spread.iter_mut().zip(rate) {
                    *s += r;
                }
                let due = (second + dur_s) as u32;
                let amt = [rate[0] as f32, rate[1] as f32, rate[2] as f32, rate[3] as f32];
                // held for an eighth of the span, 2 s to 1 min
                let hold_s = (dur_s / 8).clamp(2, 60) as u16;
                w.push(Decrement { slot: i as u32, gen, due, hold_s, amt });
            } else {
                for (c, l) in t.cur.iter_mut().zip([row.long_bytes, row.long_packets, row.long_flows]) {
                    *c += l as f64;
                }
                t.cur_samples += row.long_samples as f64;
                self.spread_overflow += 1;
            }
        }
    }

    /// Updates every tracked key for `second` (absent keys see 0) and emits alerts.
    pub fn end_second(&mut self, second: u64, cfg: &DetectConfig, alerts: &mut Vec<Alert>) {
        let born = *self.born.get_or_insert(second);
        // First pass: forget idle keys, add the spreads, and sum the dimension's totals.
        let mut totals = [0.0; METRICS];
        let mut i = 0;
        while i < self.keys.len() {
            let t = &mut self.keys[i];
            let seen = t.last_seen == second;
            let spreading = t.spread.iter().chain(t.held.iter()).any(|&s| s > 0.0);
            if !seen && !spreading && second.saturating_sub(t.last_seen) > cfg.idle_evict_s {
                self.remove(i);
                continue;
            }
            for m in 0..3 {
                t.cur[m] += t.spread[m];
            }
            t.cur_samples += t.spread[3];
            for (tot, v) in totals.iter_mut().zip(t.cur) {
                *tot += v;
            }
            i += 1;
        }
        // The common shift of bytes, packets and flows: what most warm keys share, the median
        // of their fast-over-slow baseline gaps (a key's own surge moves only its own gap).
        // Both baselines average the same values, so with no swell the gaps centre on zero.
        // Only keys seen in the last `COMMON_ACTIVE_S` count (a crowd of keys gone quiet after
        // a scan is not a swell down); with fewer than `COMMON_MIN_KEYS` of them there is no
        // "most keys" and no shift.
        let mut shift = [0.0; 3];
        for (m, sh) in shift.iter_mut().enumerate() {
            self.shifts.clear();
            let active = |t: &&Tracked| t.m[m].n >= cfg.warmup_s && second <= t.last_seen + COMMON_ACTIVE_S;
            self.shifts.extend(self.keys.iter().filter(active).map(|t| t.m[m].mean - t.m[m].smean));
            let n = self.shifts.len();
            if n >= COMMON_MIN_KEYS {
                *sh = *self.shifts.select_nth_unstable_by(n / 2, f64::total_cmp).1;
            }
        }
        let watch_new = self.new_keys;
        let metrics = metrics_of(self.dim);
        let a = cfg.alpha;
        for t in self.keys.iter_mut() {
            let seen = t.last_seen == second;
            let vals = t.cur;
            // Counting noise: decayed sums of samples per unit of each metric.
            t.samples = t.samples * (1.0 - a) + t.cur_samples;
            for (u, v) in t.units.iter_mut().zip(vals) {
                *u = *u * (1.0 - a) + v;
            }
            // Recovery is per key: an upward alert on any metric covers the key's return.
            let key_up = t.m.iter().map(|m| m.last_up).max().unwrap_or(0);
            for m in t.m.iter_mut() {
                if m.last_up < key_up {
                    if m.last_up == 0 || key_up >= m.last_up.saturating_add(RECOVERY_S) {
                        m.before_up = m.mean.min(m.smean);
                    }
                    m.last_up = key_up;
                }
            }
            for &m in metrics {
                let x = vals[m];
                if COLD_METRICS[m] {
                    if let (true, Some(pop)) = (t.newcomer, self.pop[m].get()) {
                        if let Some((z, baseline)) = t.m[m].cold_check(cfg, m, x, pop, second) {
                            let v = Verdict { score: score_of(z), z, baseline, alert: Some(AlertKind::Spike) };
                            alerts.extend(alert_of(self.dim, t.key, m, x, second, &v));
                        }
                    }
                    // every key seen this second, zeros included: where no key ever shows a
                    // metric (unanswered attempts), the first that does stands out
                    if seen {
                        self.pop[m].add(x);
                    }
                }
                // counts: flows, distinct peers and unanswered attempts are events themselves;
                // bytes and packets are counts only through the samples behind them (1-in-N
                // sampling)
                let sampled = (m < 3 && t.samples > 0.0 && t.units[m] > 0.0).then(|| t.samples / t.units[m]);
                let ctx = Context {
                    samples_per_unit: if m >= 2 { sampled.or(Some(1.0)) } else { sampled },
                    // a host's drift may be material by its share of traffic (a slow
                    // upload in a small network); ports and interfaces need the floors
                    dim_total: matches!(self.dim, Dimension::SrcIp | Dimension::DstIp).then_some(totals[m]),
                    common_shift: if m < 3 { shift[m] } else { 0.0 },
                };
                let v = t.m[m].update(cfg, m, x, second, ctx);
                alerts.extend(alert_of(self.dim, t.key, m, x, second, &v));
            }
            // New keys: born after the dimension was watched long enough, then active (short
            // records every second, several a second) through their first window.
            if watch_new && t.first_seen >= born + cfg.new_key_after_s {
                let age = second - t.first_seen;
                let w = u64::from(cfg.new_key_window_s.max(1));
                if age < w {
                    if seen && vals[2] > t.spread[2] {
                        t.new_active += 1;
                        t.new_flows += vals[2] - t.spread[2];
                    }
                    if age + 1 == w
                        && f64::from(t.new_active) >= 0.9 * w as f64
                        && t.new_flows / f64::from(t.new_active.max(1)) >= cfg.new_key_min_flows
                    {
                        let flows = t.units[2] * a / (1.0 - (1.0 - a).powi(w as i32));
                        let v = Verdict { score: 1.0, z: f64::NAN, baseline: 0.0, alert: Some(AlertKind::NewKey) };
                        alerts.extend(alert_of(self.dim, t.key, 2, flows, second, &v));
                    }
                }
            }
            // busy: a row this second, or a long flow's spread still flowing (an elephant
            // exported every 5 min is busy every second)
            let present = if seen || vals[0] > 0.0 { presence(vals[0], vals[2]) } else { 0.0 };
            t.activity = t.activity * (1.0 - ACTIVITY_WEIGHT) + present * ACTIVITY_WEIGHT;
            t.cur = [0.0; METRICS];
            t.cur_samples = 0.0;
        }
    }
}

impl Tracked {
    /// Applies the held (ended) spreads now.
    fn release_held(&mut self) {
        for m in 0..4 {
            self.spread[m] = (self.spread[m] - self.held[m]).max(0.0);
        }
        self.held = [0.0; 4];
        self.held_until = 0;
    }
}

/// The layer-1 alert a verdict carries, if any.
fn alert_of(dimension: Dimension, key: Key, m: usize, value: f64, second: u64, v: &Verdict) -> Option<Alert> {
    Some(Alert {
        second,
        layer: 1,
        dimension,
        key,
        metric: Metric::ALL[m],
        kind: v.alert?,
        value,
        baseline: v.baseline,
        score: v.score,
        z: v.z,
    })
}

/// All detectors of one owner shard, one per detected dimension.
pub struct Detectors {
    cfg: DetectConfig,
    /// Per aggregation-dimension index: the detector, if this dimension is detected.
    per_dim: Vec<Option<DimDetector>>,
}

impl Detectors {
    /// Detectors for the aggregation dimensions `agg_dims` that `cfg` names.
    pub fn new(cfg: &DetectConfig, agg_dims: &[Dimension]) -> Detectors {
        Detectors {
            per_dim: agg_dims.iter().map(|d| cfg.detects(*d).then(|| DimDetector::new(*d, cfg))).collect(),
            cfg: cfg.clone(),
        }
    }

    /// Starts a second.
    pub fn begin_second(&mut self, second: u64) {
        for d in self.per_dim.iter_mut().flatten() {
            d.begin_second(second);
        }
    }

    /// Feeds one merged row of aggregation dimension index `dim`.
    #[inline]
    pub fn observe(&mut self, dim: u8, row: &Row, distinct: Option<u64>, second: u64) {
        if let Some(Some(d)) = self.per_dim.get_mut(dim as usize) {
            d.observe(row, distinct, second, &self.cfg);
        }
    }

    /// Ends a second, appending alerts.
    pub fn end_second(&mut self, second: u64, alerts: &mut Vec<Alert>) {
        for d in self.per_dim.iter_mut().flatten() {
            d.end_second(second, &self.cfg, alerts);
        }
    }

    /// Keys tracked over all dimensions.
    pub fn tracked(&self) -> usize {
        self.per_dim.iter().flatten().map(|d| d.tracked()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ip;

    #[test]
    fn steady_series_is_quiet_and_spike_alerts() {
        let cfg = DetectConfig::default();
        let mut m = MetricState::default();
        let mut x = 1.0e6;
        for s in 1..600u64 {
            x = 1.0e6 * (1.0 + 0.1 * ((s as f64) * 0.7).sin());
            assert_eq!(m.update(&cfg, 0, x, s, Context::default()).alert, None, "second {s}");
        }
        // one anomalous second is not enough (spike_confirm_s = 2): the second one alerts
        let v = m.update(&cfg, 0, x * 20.0, 600, Context::default());
        assert_eq!(v.alert, None);
        assert!(v.score > 0.999);
        let v = m.update(&cfg, 0, x * 20.0, 601, Context::default());
        assert_eq!(v.alert, Some(AlertKind::Spike));
    }

    #[test]
    fn poisson_z_matches_exact_tails() {
        // exact: P(X <= 2 | 11) = 1.2e-3 (z -3.03); P(X >= 4 | 3) = 0.35 (z 0.38); P(X >= 20 | 5) = 3.5e-7 (z 4.96)
        assert!((wilson_hilferty(2.0, 11.0) + 3.03).abs() < 0.1, "{}", wilson_hilferty(2.0, 11.0));
        assert!((wilson_hilferty(4.0, 3.0) - 0.38).abs() < 0.1, "{}", wilson_hilferty(4.0, 3.0));
        assert!((wilson_hilferty(20.0, 5.0) - 4.96).abs() < 0.15, "{}", wilson_hilferty(20.0, 5.0));
        // the conservative deviate is never stronger than either approximation
        for (k, l) in [(2.0, 11.0), (3.0, 0.01), (20.0, 5.0), (0.0, 20.0)] {
            let z = poisson_z(k, l);
            assert!(z.abs() <= wilson_hilferty(k, l).abs() + 1e-12);
        }
        assert!(poisson_z(3.0, 0.01) < 3.0, "three samples where none were expected: not 5 sigma");
        // silence where 20 were expected is an outage; where 3 were, it is not
        assert!(poisson_z(0.0, 20.0) < -3.5);
        assert!(poisson_z(0.0, 3.0) > -3.5);
        assert!(sampled_z(5.0, 4.0, 3.0).abs() < 1.0);
    }

    #[test]
    fn state_per_key_is_bounded() {
        // 10,000 keys per dimension per owner stay within tens of MB
        const { assert!(TRACKED_KEY_BYTES < 2048) };
        println!("detector state per tracked key: {TRACKED_KEY_BYTES} bytes");
    }

    #[test]
    fn a_scanner_beside_a_spoofed_flood_keeps_its_place_and_alerts() {
        // 1,000 tracked keys; 3,000 spoofed one-record sources a second (28 kB each) and, from
        // second 60, a scanner with 200 one-packet probes a second (44 bytes each: fewer bytes
        // than any flood source).
        let cfg = DetectConfig { max_tracked: 1000, warmup_s: 20, ..DetectConfig::default() };
        let mut d = DimDetector::new(Dimension::SrcIp, &cfg);
        let scanner = Key::new(Ip::from_v4(0xc633_6442), 0);
        let hosts: Vec<Key> = (0..50).map(|h| Key::new(Ip::from_v4(0x0a00_0000 + h), 0)).collect();
        let mut rng = 7u64;
        let mut alerts = Vec::new();
        let mut first = None;
        for s in 1..=120u64 {
            d.begin_second(s);
            for (h, &k) in hosts.iter().enumerate() {
                let f = 3 + (s + h as u64) % 4;
                d.observe(
                    &Row { key: k, bytes: f * 1500, packets: f * 3, flows: f, ..Row::default() },
                    Some(2),
                    s,
                    &cfg,
                );
            }
            if s >= 40 {
                for _ in 0..3000 {
                    let k =
                        Key::new(Ip::from_v4(0x6440_0000 + (crate::model::xorshift64(&mut rng) % (1 << 22)) as u32), 0);
                    d.observe(
                        &Row { key: k, bytes: 28_000, packets: 20, flows: 1, ..Row::default() },
                        Some(1),
                        s,
                        &cfg,
                    );
                }
            }
            if s >= 60 {
                let r =
                    Row { key: scanner, bytes: 200 * 44, packets: 200, flows: 200, syn_only: 200, ..Row::default() };
                d.observe(&r, Some(200), s, &cfg);
            }
            alerts.clear();
            d.end_second(s, &cfg, &mut alerts);
            if first.is_none() && alerts.iter().any(|a| a.key == scanner) {
                first = Some(s);
            }
            assert!(d.tracked() <= 1000);
        }
        let first = first.expect("the scanner is flagged while the flood goes on");
        assert!(first <= 63, "flagged at second {first}, the scan began at 60");
    }

    #[test]
    fn score_is_calibrated() {
        assert!((score_of(1.96) - 0.95).abs() < 1e-3);
        assert!(score_of(0.0) < 1e-9);
    }
}
