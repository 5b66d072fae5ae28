//! The anomaly likelihood: a score that means the same on every series.
//!
//! A detector's raw verdict (a z-score against the key's baseline) is not comparable across
//! series: a heavy-tailed or quantised series produces large |z| all the time, a smooth one
//! never. The likelihood re-reads each point's surprise against that key's own history of
//! surprises, so that "how unusual is this, for this series" is what the number says.
//!
//! Per point, with `z` from the detector:
//!
//! 1. raw surprise `s = −ln P(|Z| > |z|)` (nats; 0 for an ordinary point, ≈ 12 at z = 5);
//! 2. calibrated surprise `u = −ln Ŝ(s)`, where `Ŝ` is the survival function of the key's past
//!    raw surprises, read from a decayed histogram with log-spaced bins ([`BINS`]; counts halve
//!    every [`HALF_LIFE`] points) and mixed with an `Exp(1)` prior of weight [`PRIOR`]:
//!    `Ŝ(s) = (#past ≥ s + PRIOR · e^(−s)) / (N + PRIOR)`. Under the null (the key behaves as
//!    it has) `u` is `Exp(1)` whatever the series' own distribution;
//! 3. the short-window sum `U` of the last [`WINDOW`] calibrated surprises, and its tail
//!    probability under the null, `T = P(Gamma(WINDOW, 1) ≥ U) = e^(−U) Σ_{i<WINDOW} U^i / i!`;
//! 4. `anomaly_score = min(1, −log10(T) / 10)`: 0.5 means `T = 10⁻⁵`, 1.0 means `T ≤ 10⁻¹⁰`.
//!    Almost every point scores near 0 (an ordinary point: `T` ≈ 0.5, score ≈ 0.03).
//! 5. Once per run: after a point above 0.5, the following points of the same run report 0
//!    until the score has fallen below [`RUN_END`]; a long anomaly is reported once, at its
//!    start, not on every point of it.
//!
//! Property-tested below: on stationary noise (Gaussian, Poisson, Laplace, Student-t, Pareto,
//! quantised, flat) fewer than 1 point in 10,000 scores above 0.5; a step, a drop or a single
//! spike of a smooth series scores above 0.5 within its first few points.
//!
//! May depend on: nothing. Lives on: owner shard cores (inside the detector state), and the
//! tools (`backtest`).

/// Histogram bins (log-spaced: bin = ⌊3·log2(1 + s)⌋, the last one open-ended at s ≈ 1,600).
pub const BINS: usize = 32;
/// Points after which the histogram's counts halve (its memory).
pub const HALF_LIFE: u32 = 4096;
/// Weight of the `Exp(1)` prior, in points.
pub const PRIOR: f64 = 20.0;
/// Points in the short window.
pub const WINDOW: usize = 3;
/// A run ends when the score falls below this.
pub const RUN_END: f64 = 0.1;

/// One series' likelihood state (a fixed 148 bytes: no allocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Likelihood {
    hist: [f32; BINS],
    n: f32,
    recent: [f32; WINDOW],
    next: u8,
    in_run: bool,
}

#[inline]
fn bin_of(s: f64) -> f64 {
    3.0 * (1.0 + s).log2()
}

/// `−ln P(|Z| > |z|)` for a standard normal `Z`, computed in the log domain (no underflow in
/// the far tail): Numerical Recipes' `erfcc`, `erfc(x) = t·exp(−x² + poly(t))`
/// (|relative error| < 1.2e-7).
#[inline]
pub fn surprise(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    (x * x - poly - t.ln()).max(0.0)
}

/// `P(|Z| > |z|)` for a standard normal `Z`.
#[inline]
pub fn two_sided_tail(z: f64) -> f64 {
    (-surprise(z)).exp()
}

/// `−log10 P(Gamma(k, 1) ≥ x)` for integer `k` (the Poisson sum, in the log domain).
#[inline]
fn gamma_tail_log10(k: usize, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let (mut sum, mut term) = (0.0, 1.0);
    for i in 0..k {
        if i > 0 {
            term *= x / i as f64;
        }
        sum += term;
    }
    ((x - sum.ln()) / std::f64::consts::LN_10).max(0.0)
}

impl Likelihood {
    /// Feeds one point's standardised deviation; returns its anomaly score in [0, 1].
    pub fn update(&mut self, z: f64) -> f64 {
        let z = if z.is_finite() { z } else { 0.0 };
        let s = surprise(z);
        // calibrated surprise against this series' own history
        let f = bin_of(s);
        let b = (f as usize).min(BINS - 1);
        let frac = (f - b as f64).clamp(0.0, 1.0);
        let above: f32 = self.hist[b + 1..].iter().sum();
        let ge = f64::from(above) + (1.0 - frac) * f64::from(self.hist[b]);
        let surv = (ge + PRIOR * (-s).exp()) / (f64::from(self.n) + PRIOR);
        let u = -surv.max(1e-300).ln();
        // learn it
        self.hist[b] += 1.0;
        self.n += 1.0;
        if self.n >= HALF_LIFE as f32 {
            for c in &mut self.hist {
                *c *= 0.5;
            }
            self.n *= 0.5;
        }
        // the short window
        self.recent[usize::from(self.next) % WINDOW] = u as f32;
        self.next = ((usize::from(self.next) + 1) % WINDOW) as u8;
        let sum: f64 = self.recent.iter().map(|&x| f64::from(x)).sum();
        let score = (gamma_tail_log10(WINDOW, sum) / 10.0).clamp(0.0, 1.0);
        // once per run
        if score > 0.5 {
            if self.in_run {
                return 0.0;
            }
            self.in_run = true;
        } else if score < RUN_END {
            self.in_run = false;
        }
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::{DetectConfig, MetricState};

    /// xorshift + Box-Muller: a deterministic noise source for the properties.
    struct Rng(u64);
    impl Rng {
        fn u(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f64 {
            let (a, b) = (self.u().max(1e-12), self.u());
            (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
        }
    }

    /// The score of every point of a series through the layer-1 detector (as `backtest` runs it).
    fn scores(mut f: impl FnMut(usize) -> f64, n: usize) -> Vec<f64> {
        let cfg = DetectConfig { min_bytes_per_s: 0.0, ..DetectConfig::default() };
        let mut st = MetricState::default();
        (0..n).map(|i| st.update(&cfg, 0, f(i), i as u64, Default::default()).score).collect()
    }

    #[test]
    fn stationary_noise_almost_never_scores_above_one_half() {
        let n = 100_000;
        type Series = Box<dyn FnMut(usize) -> f64>;
        let mut cases: Vec<(&str, Series)> = Vec::new();
        let mut r1 = Rng(1);
        cases.push(("gaussian", Box::new(move |_| 1000.0 + 100.0 * r1.gauss())));
        let mut r2 = Rng(2);
        cases.push(("poisson(5)", Box::new(move |_| (0..20).filter(|_| r2.u() < 0.25).count() as f64)));
        let mut r3 = Rng(3);
        cases.push((
            "laplace",
            Box::new(move |_| {
                let e = -r3.u().max(1e-12).ln();
                1000.0 + 100.0 * if r3.u() < 0.5 { e } else { -e }
            }),
        ));
        let mut r4 = Rng(4);
        cases.push((
            "student-t(3)",
            Box::new(move |_| {
                let c: f64 = (0..3).map(|_| r4.gauss().powi(2)).sum::<f64>() / 3.0;
                1000.0 + 50.0 * r4.gauss() / c.sqrt()
            }),
        ));
        let mut r5 = Rng(5);
        cases.push(("pareto(1.5)", Box::new(move |_| 100.0 / r5.u().max(1e-12).powf(1.0 / 1.5))));
        let mut r6 = Rng(6);
        cases.push(("quantised", Box::new(move |_| (r6.u() * 3.0).floor())));
        cases.push(("flat", Box::new(|_| 42.0)));
        for (name, f) in cases {
            let s = scores(f, n);
            let above = s.iter().filter(|&&x| x > 0.5).count();
            assert!(above * 10_000 < n, "{name}: {above} of {n} points above 0.5");
            let median = {
                let mut v = s.clone();
                v.sort_by(f64::total_cmp);
                v[n / 2]
            };
            assert!(median < 0.1, "{name}: median score {median}");
        }
    }

    #[test]
    fn steps_drops_and_spikes_score_above_one_half_within_a_few_points() {
        for (name, f) in [
            (
                "step",
                Box::new(|i: usize, g: f64| 1000.0 + 100.0 * g + if i >= 4000 { 1500.0 } else { 0.0 })
                    as Box<dyn Fn(usize, f64) -> f64>,
            ),
            ("small step", Box::new(|i, g| 1000.0 + 100.0 * g + if i >= 4000 { 500.0 } else { 0.0 })),
            ("drop", Box::new(|i, g| if i >= 4000 { 100.0 } else { 1000.0 + 100.0 * g })),
            ("spike", Box::new(|i, g| if i == 4000 { 5000.0 } else { 1000.0 + 100.0 * g })),
        ] {
            let mut r = Rng(7);
            let s = scores(|i| f(i, r.gauss()), 4100);
            let first = s[4000..].iter().position(|&x| x > 0.5);
            assert!(first.is_some_and(|p| p <= 3), "{name}: first point above 0.5 at {first:?}");
            let later = s[4000 + first.unwrap_or(0) + 1..].iter().filter(|&&x| x > 0.5).count();
            if name != "spike" {
                assert_eq!(later, 0, "{name}: a run is reported once");
            }
        }
    }

    #[test]
    fn tails_are_accurate() {
        assert!((two_sided_tail(0.0) - 1.0).abs() < 1e-6);
        assert!((two_sided_tail(1.96) - 0.05).abs() < 1e-4);
        assert!((two_sided_tail(5.0) / 5.733e-7 - 1.0).abs() < 1e-3);
        assert!(gamma_tail_log10(3, 0.0).abs() < 1e-12);
        assert!((gamma_tail_log10(1, 2.0) - 2.0 / std::f64::consts::LN_10).abs() < 1e-12);
        assert!((surprise(40.0) - 800.0).abs() < 10.0, "no underflow far in the tail");
    }
}
