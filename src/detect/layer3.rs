//! Detection layer 3, the pure half: a thresholded Random Cut Forest per source address, the
//! algorithm the OpenSearch anomaly-detection plugin runs per entity (`category_field`), run in
//! process with the `krcflib` crate (a port of AWS's random-cut-forest-by-aws Rust library).
//!
//! **Input.** The per-second `src_ip` rollups the owners already produce; each interval
//! (`interval_s`, default 60 s like the plugin, down to 10 s) becomes one point per tracked
//! source: bytes, packets and flows summed over the interval, and the numbers of distinct
//! destination endpoints (address:port) and of distinct destination ports *over the interval*
//! — the union of the rows' per-second HyperLogLog sketches, as the plugin's `cardinality`
//! feature counts over its interval. So a host whose port mix changes at the same volume and the
//! same number of connections shows even when it opens one connection a second (each second
//! then has one endpoint and one port, before and during the change). A row without a sketch
//! contributes its per-second count as a lower bound. A tracked source absent from an interval
//! sent nothing: its point is zeros.
//!
//! **Model.** Per entity one forest (shingle 8, 50 trees, sample 256 by default) behind the
//! crate's thresholder and predictor-corrector (`core_process`, the engine of its `BasicTRCF`).
//! `BasicTRCF` itself is not serialisable, so [`Forest`] holds the two serialisable building
//! blocks the crate exposes (`RCFLarge` and the thresholder `State`) and runs the same two
//! steps. What the crate leaves out is computed here as the plugin does: **confidence** from
//! time decay and points seen, and the **relevant attribution** by normalising the forest's
//! `DiVector` (high + low) over the slot of the shingle the anomaly sits in.
//!
//! **Bounded.** Models live within `memory_mb`: the per-model size is measured on the first
//! model built; entities are admitted only on their second sighting in distinct intervals (a
//! pair of Bloom filters, the door-keeper, so one-off scanners and spoofed sources never get a
//! model), and when the budget is full a newcomer replaces the entity of lowest time-decayed
//! priority only if its own priority is higher. Idle entities are dropped after `idle_ttl_s`.
//!
//! **Restart.** [`Layer3Engine::checkpoint`] / [`Layer3Engine::restore`] serialise every model,
//! accumulator and priority (bincode, deflate), so a restart is not a second cold start.
//!
//! May depend on: `model`. Lives on: the layer-3 job thread (on the I/O core unless `[cores]
//! layer3` names one), replay and backtest (main thread).

use crate::model::hll::Sketch;
use crate::model::Ip;
use rcflib::common::descriptor::Descriptor;
use rcflib::rcf::{AugmentedRCF, RCFLarge, RCFOptionsBuilder};
use rcflib::trcf::basictrcf::{core_process, State};
use rcflib::trcf::errorhandler::ErrorHandler;
use rcflib::trcf::rcfcaster::{RCFCasterBuilder, RCFCasterOptionsBuilder};
use rcflib::trcf::types::Calibration;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// Number of features per point.
pub const FEATURES: usize = 5;
/// Feature names, in point order (also the `feature_id`s of result documents).
pub const FEATURE_NAMES: [&str; FEATURES] =
    ["bytes", "packets", "flows", "distinct_dst_endpoints", "distinct_dst_ports"];
/// The alert `metric` of each feature when it drives an anomaly: layer 1's metric names for the
/// four it shares with layer 1, `distinct_ports` for the fifth.
pub const ALERT_METRICS: [&str; FEATURES] = ["bytes", "packets", "flows", "distinct", "distinct_ports"];
/// The features that are distinct counts over the interval (the union of the rows' sketches,
/// at least the largest per-second count), in the order of the sketch's lanes.
const DISTINCT_FEATURES: [usize; 2] = [3, 4];

/// One source's row as layer 3 takes it: a second of `src_ip` rollup live, an interval read
/// back from history.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceRow {
    /// The source (`::` for `other`: it counts in the interval's totals, never as an entity).
    pub ip: Ip,
    /// Bytes, packets, flows, distinct destination endpoints, distinct destination ports.
    pub v: [f64; FEATURES],
    /// The sketch behind the two distinct counts, when the row has one.
    pub sketch: Option<Sketch>,
}

impl SourceRow {
    /// A row without a sketch (its distinct counts are lower bounds of the interval's).
    pub fn new(ip: Ip, v: [f64; FEATURES]) -> SourceRow {
        SourceRow { ip, v, sketch: None }
    }
}

impl From<(Ip, [f64; FEATURES])> for SourceRow {
    fn from((ip, v): (Ip, [f64; FEATURES])) -> SourceRow {
        SourceRow::new(ip, v)
    }
}

/// Adds a row's values to an interval's: counters are summed, distinct counts keep the
/// largest (the union of the sketches is taken at the close, [`union_distinct`]).
fn accumulate(acc: &mut [f64; FEATURES], v: &[f64; FEATURES]) {
    for (i, (a, x)) in acc.iter_mut().zip(v).enumerate() {
        if DISTINCT_FEATURES.contains(&i) {
            *a = a.max(*x);
        } else {
            *a += x;
        }
    }
}

/// Raises an interval's distinct counts to the estimates of its sketches' union.
fn union_distinct(f: &mut [f64; FEATURES], s: &Sketch) {
    if s.is_empty() {
        return;
    }
    for (&i, e) in DISTINCT_FEATURES.iter().zip(s.estimates()) {
        f[i] = f[i].max(e as f64);
    }
}

/// `[layer3]`: the per-source Random Cut Forest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Layer3 {
    /// Run layer 3.
    pub enabled: bool,
    /// Seconds per point (the plugin's detector interval; 10–3600).
    pub interval_s: u64,
    /// Points per shingle.
    pub shingle: usize,
    /// Trees per forest.
    pub trees: usize,
    /// Points each tree keeps (the plugin's sample size).
    pub sample: usize,
    /// Points a model needs before it scores (the plugin's cold start: shingle + 32).
    pub warmup_points: usize,
    /// Seconds of its entity a model must have seen (points × `interval_s`, history included)
    /// before its anomalies raise alerts; results are written from the first score. Keeps a
    /// short interval as cautious in time as the default one (40 points of 60 s): a young
    /// model has not yet seen an exporter's export cycle (an active timeout of 300 s lands a
    /// long flow's bytes in one 10-s interval) often enough to know it.
    pub min_history_s: u64,
    /// Memory for all models, MiB (the plugin: 10 % of the heap).
    pub memory_mb: u64,
    /// Fraction of tree bounding boxes cached: 0 saves ~80 % of a model's memory at ~3× the CPU
    /// per update (the plugin caches none for entity models).
    pub bounding_box_cache: f64,
    /// An entity unseen this long is dropped (its model freed).
    pub idle_ttl_s: u64,
    /// Half-life of an entity's priority, seconds.
    pub priority_half_life_s: u64,
    /// Seconds between checkpoints of every model to the state directory (0 = only at shutdown).
    pub checkpoint_s: u64,
    /// Anomalies below this grade raise no alert (results are still written).
    pub min_grade: f64,
    /// An anomaly raises an alert only when its driving feature's distance from the expected
    /// value is at least this share of all sources' total of that feature in the interval
    /// (the forest judges each host against itself; this says whether it matters).
    pub min_share: f64,
    /// Write every result (grade 0 included), like the plugin; false = anomalies only.
    pub all_results: bool,
    /// Intervals of history to learn from at a cold start (no checkpoint restored) when an
    /// OpenSearch sink is configured: the newest this many intervals of this appliance's
    /// `src_ip` rollups (0 = learn from live data only).
    pub history_intervals: u64,
}

impl Default for Layer3 {
    fn default() -> Self {
        Layer3 {
            enabled: true,
            interval_s: 60,
            shingle: 8,
            trees: 50,
            sample: 256,
            warmup_points: 40,
            min_history_s: 2_400,
            memory_mb: 1024,
            bounding_box_cache: 0.0,
            idle_ttl_s: 86_400,
            priority_half_life_s: 3_600,
            checkpoint_s: 600,
            min_grade: 0.0,
            min_share: 0.01,
            all_results: true,
            history_intervals: 96,
        }
    }
}

impl Layer3 {
    /// Problems with the settings, as (field, problem, fix).
    pub fn problems(&self) -> Vec<(&'static str, String, &'static str)> {
        let mut p = Vec::new();
        if !(10..=3600).contains(&self.interval_s) {
            p.push((
                "layer3.interval_s",
                format!("{} out of range", self.interval_s),
                "use 10..=3600 (60 like the plugin)",
            ));
        }
        if !(1..=64).contains(&self.shingle) {
            p.push(("layer3.shingle", format!("{} out of range", self.shingle), "use 1..=64 (8 like the plugin)"));
        }
        if !(1..=1000).contains(&self.trees) {
            p.push(("layer3.trees", format!("{} out of range", self.trees), "use 1..=1000 (50)"));
        }
        if !(16..=4096).contains(&self.sample) {
            p.push(("layer3.sample", format!("{} out of range", self.sample), "use 16..=4096 (256)"));
        }
        if self.warmup_points < self.shingle || self.warmup_points > 100_000 {
            p.push((
                "layer3.warmup_points",
                format!("{} out of range", self.warmup_points),
                "use at least the shingle (40 = 8 + 32)",
            ));
        }
        if self.memory_mb == 0 {
            p.push(("layer3.memory_mb", "must be at least 1".into(), "use e.g. 1024"));
        }
        if !(0.0..=1.0).contains(&self.bounding_box_cache) {
            p.push(("layer3.bounding_box_cache", format!("{} out of range", self.bounding_box_cache), "use 0..=1"));
        }
        if !(0.0..=1.0).contains(&self.min_share) {
            p.push((
                "layer3.min_share",
                format!("{} out of range", self.min_share),
                "use 0..=1 (0.01 = 1 % of all sources' traffic)",
            ));
        }
        if !(0.0..=1.0).contains(&self.min_grade) {
            p.push(("layer3.min_grade", format!("{} out of range", self.min_grade), "use 0..=1"));
        }
        if self.min_history_s > 30 * 86_400 {
            p.push((
                "layer3.min_history_s",
                format!("{} out of range", self.min_history_s),
                "use 0..=2592000 (2400 = 40 points of 60 s)",
            ));
        }
        if self.history_intervals > 100_000 {
            p.push((
                "layer3.history_intervals",
                format!("{} out of range", self.history_intervals),
                "use 0..=100000 (96: twice the cold start of 48 intervals)",
            ));
        }
        if self.priority_half_life_s == 0 {
            p.push(("layer3.priority_half_life_s", "must be positive".into(), "use e.g. 3600"));
        }
        p
    }

    /// The forest's time decay (the crate's and the plugin's default: 0.1 / sample).
    fn time_decay(&self) -> f64 {
        0.1 / self.sample as f64
    }
}

/// Layer-3 errors.
#[derive(Debug, thiserror::Error)]
pub enum Layer3Error {
    /// The forest library refused an operation.
    #[error("random cut forest: {0}")]
    Rcf(String),
    /// A checkpoint could not be written or read.
    #[error("layer-3 checkpoint: {0}")]
    Checkpoint(String),
}

fn rcf_err<E: std::fmt::Debug>(e: E) -> Layer3Error {
    Layer3Error::Rcf(format!("{e:?}"))
}

/// The crate's `RCFCaster`, field by field, to take its serialisable parts out of a fresh one
/// (the builder of the parts themselves is private to the crate).
#[derive(Deserialize)]
#[allow(dead_code)] // read by serde only
struct CasterParts {
    forecast_horizon: usize,
    rcf: RCFLarge<u64, u64>,
    state: State,
    error_handler: ErrorHandler,
    calibration_method: Calibration,
}

/// One thresholded forest: the serialisable parts of the crate's `BasicTRCF`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Forest {
    rcf: RCFLarge<u64, u64>,
    state: State,
    /// Input values per point (the first `width` of [`FEATURES`]; the rest are not modelled).
    width: usize,
}

/// What one point gave.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// Anomaly grade in [0, 1] (0 = normal).
    pub grade: f64,
    /// The forest's score of the point.
    pub score: f64,
    /// The thresholder's current threshold.
    pub threshold: f64,
    /// The plugin's confidence: time decay and points seen.
    pub confidence: f64,
    /// Relevant attribution per feature (sums to 1), for anomalies.
    pub attribution: Option<[f64; FEATURES]>,
    /// Expected values per feature, for anomalies.
    pub expected: Option<[f64; FEATURES]>,
    /// The values the anomaly was judged on (the slot of the shingle it sits in).
    pub past: Option<[f64; FEATURES]>,
    /// Where in the shingle the anomaly started (0 = this point, -k = k points earlier).
    pub relative_index: i32,
}

impl Forest {
    /// A fresh forest with the settings of `cfg` and a seed of its own, over all [`FEATURES`].
    pub fn new(cfg: &Layer3, seed: u64) -> Result<Forest, Layer3Error> {
        Forest::with_width(cfg, seed, FEATURES)
    }

    /// A forest over the first `width` (1..=[`FEATURES`]) values of each point: a series with
    /// fewer columns (`backtest --layer 3`) is not modelled with constant zero columns.
    pub fn with_width(cfg: &Layer3, seed: u64, width: usize) -> Result<Forest, Layer3Error> {
        let width = width.clamp(1, FEATURES);
        let caster = RCFCasterBuilder::new(seed, width, cfg.shingle, 1)
            .tree_capacity(cfg.sample)
            .number_of_trees(cfg.trees)
            .random_seed(seed)
            .time_decay(cfg.time_decay())
            .bounding_box_cache_fraction(cfg.bounding_box_cache)
            .output_after(cfg.warmup_points.saturating_sub(cfg.shingle).max(1))
            .error_horizon(1)
            .build()
            .map_err(rcf_err)?;
        let bytes = bincode::serialize(&caster).map_err(rcf_err)?;
        let parts: CasterParts = bincode::deserialize(&bytes).map_err(rcf_err)?;
        Ok(Forest { rcf: parts.rcf, state: parts.state, width })
    }

    /// Bytes the model holds (the crate's own estimate).
    pub fn size(&self) -> usize {
        self.rcf.size() + std::mem::size_of::<State>()
    }

    /// Points seen.
    pub fn points(&self) -> u64 {
        self.rcf.entries_seen()
    }

    /// Scores one point, then learns it (the crate's `BasicTRCF::process`).
    pub fn process(&mut self, point: &[f32; FEATURES], timestamp: u64, cfg: &Layer3) -> Result<Scored, Layer3Error> {
        let d = core_process(Some(&self.rcf), &mut self.state, &point[..self.width], timestamp).map_err(rcf_err)?;
        match d.rcf_point.as_ref() {
            Some(x) => {
                let dim = x.len();
                let s = self.state.preprocessor.shingle_size().max(1);
                self.rcf.update(&x[dim - dim / s..], timestamp).map_err(rcf_err)?;
            }
            None => self.state.preprocessor.drain(Some(&mut self.rcf)).map_err(rcf_err)?,
        }
        Ok(self.read(&d, cfg))
    }

    fn read(&self, d: &Descriptor, cfg: &Layer3) -> Scored {
        let mut s = Scored {
            grade: f64::from(d.anomaly_grade),
            score: f64::from(d.score),
            threshold: f64::from(d.threshold),
            confidence: confidence(self.rcf.entries_seen(), cfg.time_decay(), cfg.sample),
            relative_index: d.relative_index.min(0),
            ..Scored::default()
        };
        if s.grade <= 0.0 {
            return s;
        }
        if let Some(a) = &d.attribution {
            s.attribution = relevant_attribution(&a.high, &a.low, cfg.shingle, self.width, d.relative_index);
        }
        if let Some(l) = &d.last_anomaly {
            s.expected = l.expected_values_list.first().and_then(|v| self.array(v));
            s.past = self.array(&l.past_values);
        }
        s
    }

    /// A point's values as [`FEATURES`] values (zeros past the width).
    fn array(&self, v: &[f32]) -> Option<[f64; FEATURES]> {
        (v.len() == self.width).then(|| std::array::from_fn(|i| v.get(i).map_or(0.0, |x| f64::from(*x))))
    }
}

/// The plugin's confidence of a forest: the share of its samples' weight that comes from
/// after its cold start, given `total` updates at time decay `lambda` and `sample` points per
/// tree (1 once `total · lambda` ≥ 18.43, where that share exceeds 1 − 1e-8).
pub fn confidence(total: u64, lambda: f64, sample: usize) -> f64 {
    let x = total as f64 * lambda;
    if x >= 18.43 {
        return 1.0;
    }
    if total == 0 || lambda <= 0.0 {
        return 0.0;
    }
    let e = x.exp();
    let cold = (lambda * total.min(sample as u64) as f64).exp();
    ((e - cold) / (e - 1.0)).max(0.0)
}

/// The relevant attribution: the forest's attribution (high + low per coordinate of the
/// shingled point) over the `width` (≤ [`FEATURES`]) coordinates of the shingle slot the
/// anomaly sits in (`relative_index` ≤ 0 points back from the newest slot), normalised to sum 1.
pub fn relevant_attribution(
    high: &[f64],
    low: &[f64],
    shingle: usize,
    width: usize,
    relative_index: i32,
) -> Option<[f64; FEATURES]> {
    let width = width.min(FEATURES);
    let slot = (shingle as i64 - 1 + i64::from(relative_index.min(0))).max(0) as usize;
    let base = slot * width;
    if high.len() < base + width || low.len() < base + width {
        return None;
    }
    let raw: [f64; FEATURES] = std::array::from_fn(|i| if i < width { high[base + i] + low[base + i] } else { 0.0 });
    let sum: f64 = raw.iter().sum();
    (sum > 0.0 && sum.is_finite()).then(|| raw.map(|x| x / sum))
}

/// One layer-3 result, in the shape of the plugin's anomaly-result documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyResult {
    /// The entity (source address).
    pub entity: Ip,
    /// Interval start, Unix seconds.
    pub data_start: u64,
    /// Interval end (exclusive), Unix seconds.
    pub data_end: u64,
    /// Wall clock when the interval was scored, Unix ms (the document's execution start and end:
    /// scoring one entity takes microseconds).
    pub executed_ms: u64,
    /// The point.
    pub features: [f64; FEATURES],
    /// Points the model has seen (this one included).
    pub points: u64,
    /// All sources' totals of each feature in the interval (`other` included).
    pub totals: [f64; FEATURES],
    /// Grade, score, confidence, attribution and expectations.
    pub scored: Scored,
}

impl AnomalyResult {
    /// Whether the plugin would call it an anomaly.
    pub fn is_anomaly(&self) -> bool {
        self.scored.grade > 0.0
    }

    /// Approximate start of the anomaly (the slot of the shingle it sits in), Unix seconds.
    pub fn approx_start(&self, interval_s: u64) -> u64 {
        let back = u64::from(self.scored.relative_index.unsigned_abs()) * interval_s;
        self.data_start.saturating_sub(back)
    }

    /// The driving feature's distance from its expected value as a share of all sources'
    /// total of that feature in the interval (0 without expected values).
    pub fn share(&self) -> f64 {
        let i = self.driver();
        let (Some(e), total) = (self.scored.expected, self.totals[i]) else { return 0.0 };
        let actual = self.judged()[i];
        if total <= 0.0 {
            return 0.0;
        }
        (actual - e[i]).abs() / total
    }

    /// Whether it may raise an alert: an anomaly of at least `min_grade` that matters
    /// ([`AnomalyResult::share`] ≥ `min_share`), where the source does *more* of its driving
    /// feature than expected, from a model that has seen `min_history_s` of its entity. It does
    /// once the next interval confirms it ([`AnomalyResult::persists`]). A source doing less
    /// than usual (fewer flows while a long flow waits for its next export) is written as a
    /// result but pages nobody: what layer 3 is for (uploads, scans, new port mixes) is more;
    /// an outage shows in layer 1's drop alerts on its interface, port and destination.
    pub fn alerts(&self, cfg: &Layer3) -> bool {
        self.is_anomaly()
            && self.scored.grade >= cfg.min_grade
            && self.share() >= cfg.min_share
            && self.rises()
            && self.points.saturating_mul(cfg.interval_s) >= cfg.min_history_s
    }

    /// Whether the driving feature is above its expected value.
    pub fn rises(&self) -> bool {
        let i = self.driver();
        self.scored.expected.is_some_and(|e| self.judged()[i] > e[i])
    }

    /// Whether the next interval's point `next` confirms this anomaly: its driving feature is
    /// still off the expected value in the same direction by at least half as much. One large
    /// flow of a small host is a one-interval blip; a scan, a new port mix or an upload
    /// persist.
    pub fn persists(&self, next: &[f64; FEATURES]) -> bool {
        let i = self.driver();
        let Some(e) = self.scored.expected else { return false };
        let was = self.judged()[i] - e[i];
        let now = next[i] - e[i];
        was != 0.0 && now * was > 0.0 && now.abs() >= 0.5 * was.abs()
    }

    /// The point the forest judged anomalous: the shingle's past point it located the anomaly
    /// in (`relative_index` < 0), else this interval's features.
    pub fn judged(&self) -> [f64; FEATURES] {
        self.scored.past.unwrap_or(self.features)
    }

    /// The feature that drove the anomaly (highest attribution; bytes without one).
    pub fn driver(&self) -> usize {
        let Some(a) = self.scored.attribution else { return 0 };
        (0..FEATURES).fold(0, |best, i| if a[i] > a[best] { i } else { best })
    }

    /// Document id (idempotent across retries): `appliance:layer3:entity:data_start`.
    pub fn doc_id(&self, appliance: &str) -> String {
        format!("{appliance}:layer3:{}:{}", self.entity, self.data_start)
    }

    /// The plugin's detector id for flowshard's layer 3 of an appliance.
    pub fn detector_id(appliance: &str) -> String {
        format!("flowshard-{appliance}-layer3")
    }

    /// Human-readable reason: grade, score vs threshold, and per feature (most attributed
    /// first) actual vs expected and share of the attribution.
    pub fn reason(&self) -> String {
        let s = &self.scored;
        let mut r = format!(
            "random cut forest: grade {:.2} (score {:.2} > threshold {:.2}, confidence {:.2})",
            s.grade, s.score, s.threshold, s.confidence
        );
        let mut order: Vec<usize> = (0..FEATURES).collect();
        if let Some(a) = s.attribution {
            order.sort_by(|&x, &y| a[y].total_cmp(&a[x]));
        }
        let actual = self.judged();
        for i in order {
            let _ = write!(r, "; {} {}", FEATURE_NAMES[i], crate::model::fmt_num(actual[i]));
            if let Some(e) = s.expected {
                let _ = write!(r, " vs expected {}", crate::model::fmt_num(e[i]));
            }
            if let Some(a) = s.attribution {
                let _ = write!(r, " ({:.0} %)", a[i] * 100.0);
            }
        }
        r
    }

    /// The result document, field for field the plugin's anomaly-result schema (version 5):
    /// `detector_id`, `model_id`, `entity`, `feature_data`, the four times (epoch ms),
    /// `anomaly_grade`, `anomaly_score`, `confidence`, `threshold`, `is_anomaly`, and for
    /// anomalies `relevant_attribution`, `expected_values`, `past_values`,
    /// `approx_anomaly_start_time`.
    pub fn to_json(&self, appliance: &str, interval_s: u64) -> serde_json::Value {
        use serde_json::json;
        let detector = AnomalyResult::detector_id(appliance);
        let entity = self.entity.to_string();
        let list = |v: &[f64; FEATURES]| -> Vec<serde_json::Value> {
            (0..FEATURES)
                .map(|i| json!({"feature_id": FEATURE_NAMES[i], "feature_name": FEATURE_NAMES[i], "data": v[i]}))
                .collect()
        };
        let s = &self.scored;
        let mut doc = json!({
            "type": "anomaly_result",
            "detector_id": detector,
            "model_id": format!("{detector}_entity_{entity}"),
            "schema_version": 5,
            "entity": [{"name": "src_ip", "value": entity}],
            "feature_data": list(&self.features),
            "data_start_time": self.data_start * 1000,
            "data_end_time": self.data_end * 1000,
            "execution_start_time": self.executed_ms,
            "execution_end_time": self.executed_ms,
            "anomaly_grade": s.grade,
            "anomaly_score": s.score,
            "confidence": s.confidence,
            "threshold": s.threshold,
            "is_anomaly": self.is_anomaly(),
            "appliance": appliance,
            "points_seen": self.points,
            "share": self.share(),
        });
        if self.is_anomaly() {
            if let Some(a) = &s.attribution {
                doc["relevant_attribution"] =
                    (0..FEATURES).map(|i| json!({"feature_id": FEATURE_NAMES[i], "data": a[i]})).collect();
            }
            if let Some(e) = &s.expected {
                doc["expected_values"] = json!([{"likelihood": 1.0, "value_list": list(e)}]);
            }
            if let Some(p) = &s.past {
                doc["past_values"] = list(p).into();
            }
            doc["approx_anomaly_start_time"] = (self.approx_start(interval_s) * 1000).into();
        }
        doc
    }
}

/// What the layer-3 job hands the I/O loop: an interval's results (every entity's, or the
/// anomalies only), the anomalies confirmed since (alerts), and the counters.
#[derive(Clone, Debug, Default)]
pub struct Layer3Batch {
    /// Results (result documents).
    pub results: Vec<AnomalyResult>,
    /// Confirmed anomalies (alerts).
    pub confirmed: Vec<AnomalyResult>,
    /// Counters after them.
    pub counters: Layer3Counters,
}

/// Layer-3 counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer3Counters {
    /// Entities with a model now.
    pub entities: u64,
    /// Of those, still in their cold start (not scoring yet).
    pub cold_starting: u64,
    /// Models built.
    pub admitted: u64,
    /// Sightings kept out by the door-keeper (first sighting of a source).
    pub door_kept_out: u64,
    /// Newcomers refused because the budget was full of higher-priority entities.
    pub refused_full: u64,
    /// Entities evicted for a newcomer of higher priority.
    pub evicted_priority: u64,
    /// Entities dropped after `idle_ttl_s` without traffic.
    pub evicted_idle: u64,
    /// Results produced.
    pub results: u64,
    /// Anomalies that mattered and persisted into the next interval (alerts).
    pub confirmed: u64,
    /// Of those, anomalies (grade > 0).
    pub anomalies: u64,
    /// Points the forest library refused (counted, the entity is reset).
    pub errors: u64,
    /// Bytes held by models (the crate's estimate).
    pub model_bytes: u64,
    /// Models the budget holds.
    pub capacity: u64,
    /// Intervals closed.
    pub intervals: u64,
    /// Points models learnt from the OpenSearch history at a cold start.
    pub history_points: u64,
}

/// One source's state.
#[derive(Clone, Serialize, Deserialize)]
struct Entity {
    forest: Forest,
    /// This interval's values so far ([`accumulate`]).
    acc: [f64; FEATURES],
    /// The union of this interval's sketches.
    sketch: Sketch,
    /// Last second with traffic.
    last_seen: u64,
    /// ln of the time-decayed priority (Σ e^{λ (t − landmark)} over intervals seen).
    log_priority: f64,
    /// Whether it was seen in the current interval (priority counts once per interval).
    seen_now: bool,
    /// An anomaly that matters, waiting for the next interval to confirm it persists
    /// (checkpointed: a restart between an anomaly and its confirmation does not lose it).
    pending: Option<Box<AnomalyResult>>,
}

const DOOR_BITS: usize = 1 << 23;

/// The door-keeper: Bloom filters of sources seen in earlier intervals (`prior`) and this one.
#[derive(Clone, Serialize, Deserialize)]
struct Door {
    prior: Vec<u64>,
    current: Vec<u64>,
    /// Intervals since `prior` was last cleared.
    age: u64,
}

impl Door {
    fn new() -> Door {
        Door { prior: vec![0; DOOR_BITS / 64], current: vec![0; DOOR_BITS / 64], age: 0 }
    }
    fn bits(ip: Ip) -> [usize; 3] {
        let h = crate::model::Key::new(ip, 0x13).stable_hash();
        let g = h.rotate_left(21) ^ 0x9e37_79b9_7f4a_7c15;
        [(h as usize) % DOOR_BITS, (g as usize) % DOOR_BITS, ((h ^ g.rotate_left(43)) as usize) % DOOR_BITS]
    }
    fn in_prior(&self, ip: Ip) -> bool {
        Door::bits(ip).iter().all(|&b| self.prior[b / 64] >> (b % 64) & 1 == 1)
    }
    fn mark(&mut self, ip: Ip) {
        for b in Door::bits(ip) {
            self.current[b / 64] |= 1 << (b % 64);
        }
    }
    /// Interval closed: this interval's sightings become prior ones; every `reset` intervals
    /// the prior filter starts over (a source must be seen twice within that time).
    fn rotate(&mut self, reset: u64) {
        self.age += 1;
        if self.age >= reset {
            self.age = 0;
            std::mem::swap(&mut self.prior, &mut self.current);
        } else {
            for (p, c) in self.prior.iter_mut().zip(&self.current) {
                *p |= *c;
            }
        }
        self.current.iter_mut().for_each(|w| *w = 0);
    }
}

/// What a checkpoint holds (read back).
#[derive(Deserialize)]
struct Snapshot {
    version: u32,
    settings: (usize, usize, usize, u64),
    interval_start: u64,
    landmark: u64,
    entities: Vec<(u128, Entity)>,
    door: Door,
    counters: Layer3Counters,
    totals: [f64; FEATURES],
    totals_sketch: Sketch,
}

/// The same, written from borrowed models (the same bytes: serde writes `&T` as `T`), so that a
/// checkpoint does not copy every model first.
#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    settings: (usize, usize, usize, u64),
    interval_start: u64,
    landmark: u64,
    entities: Vec<(u128, &'a Entity)>,
    door: &'a Door,
    counters: &'a Layer3Counters,
    totals: [f64; FEATURES],
    totals_sketch: Sketch,
}

/// Buffer between the serialiser's many small writes and the deflater (each write into the
/// deflater costs a call over its whole working buffer).
const CHECKPOINT_BUFFER: usize = 1 << 20;

const SNAPSHOT_VERSION: u32 = 4;

/// Layer 3 for one appliance: entities, the door-keeper and the interval clock.
pub struct Layer3Engine {
    cfg: Layer3,
    entities: FxHashMap<Ip, Entity>,
    door: Door,
    /// Start of the open interval (0 = none yet).
    interval_start: u64,
    /// Restored from a checkpoint and not fed since: the time flowshard was down is not an
    /// interval without traffic.
    resumed: bool,
    /// Time origin of the priorities.
    landmark: u64,
    /// Bytes per model (measured on the first one built).
    model_bytes: usize,
    /// Anomalies confirmed by the interval after them, not yet taken.
    confirmed: Vec<AnomalyResult>,
    /// Eviction candidates when the budget is full: the lowest-priority entities (priority,
    /// address), lowest last; rebuilt when used up and after every interval, so a newcomer
    /// costs O(1), not a scan of every model.
    victims: Vec<(f64, Ip)>,
    /// All sources' values of the open interval: counters summed, distinct counts the largest
    /// per-second sum over the sources.
    totals: [f64; FEATURES],
    /// The union of all sources' sketches of the open interval (`other` included).
    totals_sketch: Sketch,
    /// Counters.
    pub counters: Layer3Counters,
}

impl Layer3Engine {
    /// An engine with no entities.
    pub fn new(cfg: &Layer3) -> Layer3Engine {
        Layer3Engine {
            cfg: cfg.clone(),
            entities: FxHashMap::default(),
            door: Door::new(),
            interval_start: 0,
            resumed: false,
            landmark: 0,
            model_bytes: 0,
            confirmed: Vec::new(),
            victims: Vec::new(),
            totals: [0.0; FEATURES],
            totals_sketch: Sketch::default(),
            counters: Layer3Counters::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Layer3 {
        &self.cfg
    }

    /// Entities with a model.
    pub fn entities(&self) -> usize {
        self.entities.len()
    }

    /// Whether `ip` has a model.
    pub fn tracks(&self, ip: Ip) -> bool {
        self.entities.contains_key(&ip)
    }

    /// Models the memory budget holds (known once one model was built).
    pub fn capacity(&self) -> usize {
        if self.model_bytes == 0 {
            return usize::MAX;
        }
        ((self.cfg.memory_mb as usize) << 20) / self.model_bytes
    }

    /// Feeds one second of `src_ip` rows, closing every interval that ended before `second`
    /// first (its results appended to `out`; `now_ms` stamps their execution times).
    pub fn observe(
        &mut self,
        second: u64,
        rows: &[SourceRow],
        now_ms: u64,
        out: &mut Vec<AnomalyResult>,
    ) -> Result<(), Layer3Error> {
        if std::mem::take(&mut self.resumed) && second >= self.interval_start + 2 * self.cfg.interval_s {
            // a whole interval passed while flowshard was down: that is not an interval
            // without traffic; the checkpoint's open interval is dropped, not scored
            self.interval_start = second - second % self.cfg.interval_s;
            self.entities.values_mut().for_each(|e| {
                e.acc = [0.0; FEATURES];
                e.sketch = Sketch::default();
                e.seen_now = false;
            });
            self.totals = [0.0; FEATURES];
            self.totals_sketch = Sketch::default();
        }
        self.advance(second, now_ms, out)?;
        if self.interval_start == 0 {
            self.interval_start = second - second % self.cfg.interval_s;
            if self.landmark == 0 {
                self.landmark = self.interval_start;
            }
        }
        let mut sums = [0.0; FEATURES];
        for r in rows {
            for (t, x) in sums.iter_mut().zip(r.v) {
                *t += x;
            }
            if let Some(s) = &r.sketch {
                self.totals_sketch.merge(s);
            }
            let ip = r.ip;
            if ip == Ip::UNSPECIFIED {
                continue;
            }
            if !self.entities.contains_key(&ip) && !self.admit(ip, second)? {
                continue;
            }
            if let Some(e) = self.entities.get_mut(&ip) {
                accumulate(&mut e.acc, &r.v);
                if let Some(s) = &r.sketch {
                    e.sketch.merge(s);
                }
                e.last_seen = second;
                if !e.seen_now {
                    e.seen_now = true;
                    let t = (self.interval_start.saturating_sub(self.landmark)) as f64;
                    let lam = std::f64::consts::LN_2 / self.cfg.priority_half_life_s as f64;
                    e.log_priority = log_add(e.log_priority, lam * t);
                }
            }
        }
        accumulate(&mut self.totals, &sums);
        Ok(())
    }

    /// Feeds one whole interval read back from history (each source's rows summed over the
    /// interval, its distinct counts the largest per-second ones and its sketch their union, as
    /// the live accumulators hold them).
    /// An interval that does not follow the open one restarts the clock after closing the open
    /// one: a hole in the history (the appliance was down) is not an interval without traffic.
    pub fn observe_interval(
        &mut self,
        start: u64,
        rows: &[SourceRow],
        now_ms: u64,
        out: &mut Vec<AnomalyResult>,
    ) -> Result<(), Layer3Error> {
        let iv = self.cfg.interval_s;
        let start = start - start % iv;
        if self.interval_start != 0 && start >= self.interval_start + 2 * iv {
            self.advance(self.interval_start + iv, now_ms, out)?;
            self.interval_start = start;
        }
        self.observe(start, rows, now_ms, out)
    }

    /// Closes the open interval if it ends by `end` — and only it: the intervals after it up
    /// to `end` had no data in the history read (a hole, not silence).
    pub fn close_last(&mut self, end: u64, now_ms: u64, out: &mut Vec<AnomalyResult>) -> Result<(), Layer3Error> {
        let iv = self.cfg.interval_s;
        if self.interval_start != 0 && self.interval_start + iv <= end {
            self.advance(self.interval_start + iv, now_ms, out)?;
        }
        Ok(())
    }

    /// Ends a cold start from history that ran up to `end` (exclusive): closes the last
    /// interval if it is complete, then forgets what was pending or confirmed (history raises no
    /// alerts; it was judged when it was live) and treats the next live second like the first
    /// after a restart (a gap of a whole interval is dropped, not scored as silence). `before`
    /// are the counters from before the history: its points count as `history_points`, not
    /// as results, anomalies or alerts.
    pub fn finish_history(&mut self, end: u64, before: &Layer3Counters) -> Result<(), Layer3Error> {
        if self.interval_start == 0 {
            return Ok(());
        }
        self.close_last(end, 0, &mut Vec::new())?;
        let c = &mut self.counters;
        c.history_points += c.results - before.results;
        (c.results, c.anomalies, c.confirmed) = (before.results, before.anomalies, before.confirmed);
        self.entities.values_mut().for_each(|e| e.pending = None);
        self.confirmed.clear();
        self.resumed = true;
        Ok(())
    }

    /// Takes the anomalies confirmed since the last call (each raises one layer-3 alert).
    pub fn take_confirmed(&mut self) -> Vec<AnomalyResult> {
        std::mem::take(&mut self.confirmed)
    }

    /// Closes every interval that ends at or before `second` (data time).
    pub fn advance(&mut self, second: u64, now_ms: u64, out: &mut Vec<AnomalyResult>) -> Result<(), Layer3Error> {
        let iv = self.cfg.interval_s;
        // a jump of more than a shingle of intervals: close one, then restart the clock
        let mut closed = 0;
        while self.interval_start != 0 && second >= self.interval_start + iv {
            self.close(now_ms, out)?;
            self.interval_start += iv;
            closed += 1;
            if closed > self.cfg.shingle as u64 + 1 {
                self.interval_start = second - second % iv;
                break;
            }
        }
        Ok(())
    }

    /// Whether `ip` gets a model now (door-keeper, then budget and priority).
    fn admit(&mut self, ip: Ip, second: u64) -> Result<bool, Layer3Error> {
        if !self.door.in_prior(ip) {
            self.door.mark(ip);
            self.counters.door_kept_out += 1;
            return Ok(false);
        }
        if self.entities.len() >= self.capacity() {
            // a newcomer's priority is one sighting now; it replaces the lowest entity only if
            // that one's decayed priority is under half of it (idle for a half-life or more),
            // so a stream of one-off sources cannot churn the models
            let lam = std::f64::consts::LN_2 / self.cfg.priority_half_life_s as f64;
            let mine = lam * (self.interval_start.saturating_sub(self.landmark)) as f64;
            match self.lowest() {
                Some((p, victim)) if p + std::f64::consts::LN_2 <= mine => {
                    self.victims.pop();
                    self.entities.remove(&victim);
                    self.counters.evicted_priority += 1;
                }
                _ => {
                    self.counters.refused_full += 1;
                    return Ok(false);
                }
            }
        }
        let seed = crate::model::Key::new(ip, 0x3).stable_hash();
        let forest = Forest::new(&self.cfg, seed)?;
        if self.model_bytes == 0 {
            self.model_bytes = forest.size();
        }
        self.entities.insert(
            ip,
            Entity {
                forest,
                acc: [0.0; FEATURES],
                sketch: Sketch::default(),
                last_seen: second,
                log_priority: f64::NEG_INFINITY,
                seen_now: false,
                pending: None,
            },
        );
        self.counters.admitted += 1;
        Ok(true)
    }

    /// The entity of lowest priority (ties: lowest address), from [`Layer3Engine::victims`].
    fn lowest(&mut self) -> Option<(f64, Ip)> {
        const CANDIDATES: usize = 64;
        let mut refilled = false;
        loop {
            if let Some(&(p, ip)) = self.victims.last() {
                // still current unless evicted or seen since (its priority rose)
                if self.entities.get(&ip).is_some_and(|e| e.log_priority == p) {
                    return Some((p, ip));
                }
                self.victims.pop();
                continue;
            }
            if refilled || self.entities.is_empty() {
                return None;
            }
            refilled = true;
            let mut all: Vec<(f64, Ip)> = self.entities.iter().map(|(&ip, e)| (e.log_priority, ip)).collect();
            let order = |a: &(f64, Ip), b: &(f64, Ip)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
            if all.len() > CANDIDATES {
                all.select_nth_unstable_by(CANDIDATES, order);
                all.truncate(CANDIDATES);
            }
            all.sort_unstable_by(|a, b| order(b, a));
            self.victims = all;
        }
    }

    /// Scores the open interval for every entity.
    fn close(&mut self, now_ms: u64, out: &mut Vec<AnomalyResult>) -> Result<(), Layer3Error> {
        let (start, iv) = (self.interval_start, self.cfg.interval_s);
        let ttl = self.cfg.idle_ttl_s;
        let before = self.entities.len();
        self.victims.clear();
        self.entities.retain(|_, e| start + iv <= e.last_seen + ttl);
        self.counters.evicted_idle += (before - self.entities.len()) as u64;
        let mut ips: Vec<Ip> = self.entities.keys().copied().collect();
        ips.sort_unstable(); // deterministic order
        let mut cold = 0;
        let mut errors = Vec::new();
        let mut totals = std::mem::take(&mut self.totals);
        union_distinct(&mut totals, &std::mem::take(&mut self.totals_sketch));
        for ip in ips {
            let Some(e) = self.entities.get_mut(&ip) else { continue };
            let mut f = e.acc;
            union_distinct(&mut f, &std::mem::take(&mut e.sketch));
            let point: [f32; FEATURES] = f.map(|x| x as f32);
            match e.forest.process(&point, start, &self.cfg) {
                Ok(scored) => {
                    let points = e.forest.points();
                    if points < self.cfg.warmup_points as u64 {
                        cold += 1;
                    }
                    self.counters.results += 1;
                    if scored.grade > 0.0 {
                        self.counters.anomalies += 1;
                    }
                    let r = AnomalyResult {
                        entity: ip,
                        data_start: start,
                        data_end: start + iv,
                        executed_ms: now_ms,
                        features: f,
                        points,
                        totals,
                        scored,
                    };
                    if let Some(p) = confirm(&mut e.pending, &r, &self.cfg) {
                        self.counters.confirmed += 1;
                        self.confirmed.push(p);
                    }
                    if self.cfg.all_results || r.is_anomaly() {
                        out.push(r);
                    }
                }
                Err(_) => errors.push(ip),
            }
            e.acc = [0.0; FEATURES];
            e.seen_now = false;
        }
        for ip in errors {
            self.entities.remove(&ip);
            self.counters.errors += 1;
        }
        self.door.rotate((self.cfg.idle_ttl_s / iv).max(2));
        self.counters.intervals += 1;
        self.counters.entities = self.entities.len() as u64;
        self.counters.cold_starting = cold;
        self.counters.model_bytes = (self.entities.len() * self.model_bytes) as u64;
        self.counters.capacity = if self.model_bytes == 0 { 0 } else { self.capacity() as u64 };
        Ok(())
    }

    /// Every model, accumulator and priority, serialised and deflated.
    pub fn checkpoint(&self) -> Result<Vec<u8>, Layer3Error> {
        let err = |e: &dyn std::fmt::Display| Layer3Error::Checkpoint(e.to_string());
        let mut entities: Vec<(u128, &Entity)> = self.entities.iter().map(|(k, v)| (k.0, v)).collect();
        entities.sort_unstable_by_key(|e| e.0);
        let snap = SnapshotRef {
            version: SNAPSHOT_VERSION,
            settings: (self.cfg.shingle, self.cfg.trees, self.cfg.sample, self.cfg.interval_s),
            interval_start: self.interval_start,
            landmark: self.landmark,
            entities,
            door: &self.door,
            counters: &self.counters,
            totals: self.totals,
            totals_sketch: self.totals_sketch,
        };
        let enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut buf = std::io::BufWriter::with_capacity(CHECKPOINT_BUFFER, enc);
        bincode::serialize_into(&mut buf, &snap).map_err(|e| err(&e))?;
        buf.into_inner().map_err(|e| err(&e))?.finish().map_err(|e| err(&e))
    }

    /// Restores a checkpoint written with the same shingle, trees, sample and interval.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, Layer3Error> {
        let dec = std::io::BufReader::with_capacity(CHECKPOINT_BUFFER, flate2::read::DeflateDecoder::new(bytes));
        let snap: Snapshot = bincode::deserialize_from(dec).map_err(|e| Layer3Error::Checkpoint(e.to_string()))?;
        let want = (self.cfg.shingle, self.cfg.trees, self.cfg.sample, self.cfg.interval_s);
        if snap.version != SNAPSHOT_VERSION || snap.settings != want {
            return Err(Layer3Error::Checkpoint(format!(
                "written with version {} and (shingle, trees, sample, interval) {:?}, configured {:?}: start cold \
                 (delete the checkpoint)",
                snap.version, snap.settings, want
            )));
        }
        self.interval_start = snap.interval_start;
        self.landmark = snap.landmark;
        self.door = snap.door;
        self.counters = snap.counters;
        self.totals = snap.totals;
        self.totals_sketch = snap.totals_sketch;
        self.entities = snap.entities.into_iter().map(|(k, v)| (Ip(k), v)).collect();
        self.model_bytes = self.entities.values().next().map(|e| e.forest.size()).unwrap_or(0);
        self.resumed = true;
        Ok(self.entities.len())
    }
}

/// The one confirmation rule: the pending anomaly (if any) is returned when the new result's
/// point confirms it ([`AnomalyResult::persists`]); the new result becomes pending when it may
/// alert ([`AnomalyResult::alerts`]) — unless it continues the anomaly it just confirmed (same
/// driving feature): one change, one alert.
pub fn confirm(pending: &mut Option<Box<AnomalyResult>>, r: &AnomalyResult, cfg: &Layer3) -> Option<AnomalyResult> {
    let done = pending.take().filter(|p| p.persists(&r.features)).map(|p| *p);
    let continues = done.as_ref().is_some_and(|d| d.driver() == r.driver());
    if r.alerts(cfg) && !continues {
        *pending = Some(Box::new(r.clone()));
    }
    done
}

/// ln(e^a + e^b), stable.
fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

/// A `src_ip` rollup as layer 3 takes it.
pub fn row_of(r: &crate::model::Rollup) -> SourceRow {
    let d = |x: Option<u64>| x.unwrap_or(0) as f64;
    SourceRow {
        ip: r.key.ip,
        v: [r.bytes as f64, r.packets as f64, r.flows as f64, d(r.distinct), d(r.distinct_ports)],
        sketch: r.sketch.as_deref().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Layer3 {
        Layer3 { interval_s: 10, trees: 30, sample: 128, ..Layer3::default() }
    }

    fn feed(
        e: &mut Layer3Engine,
        from: u64,
        to: u64,
        f: impl Fn(u64) -> Vec<(Ip, [f64; FEATURES])>,
    ) -> Vec<AnomalyResult> {
        feed_rows(e, from, to, |s| f(s).into_iter().map(|(ip, v)| SourceRow::new(ip, v)).collect())
    }

    fn feed_rows(e: &mut Layer3Engine, from: u64, to: u64, f: impl Fn(u64) -> Vec<SourceRow>) -> Vec<AnomalyResult> {
        let mut out = Vec::new();
        for s in from..to {
            e.observe(s, &f(s), 0, &mut out).expect("observe");
        }
        out
    }

    fn noise(s: u64, k: u64) -> f64 {
        let mut x = s.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k;
        crate::model::xorshift64(&mut x) as f64 / u64::MAX as f64
    }

    fn host(s: u64, ip: Ip, distinct: f64) -> (Ip, [f64; FEATURES]) {
        host_ports(s, ip, distinct, 1.0)
    }

    /// A steady host with `distinct` destination endpoints on `ports` destination ports.
    fn host_ports(s: u64, ip: Ip, distinct: f64, ports: f64) -> (Ip, [f64; FEATURES]) {
        let b = 50_000.0 * (1.0 + 0.2 * noise(s, 1));
        (ip, [b, b / 1000.0, 20.0 + 4.0 * noise(s, 2), distinct + noise(s, 3), ports + 0.3 * noise(s, 4)])
    }

    #[test]
    fn door_keeper_admits_on_second_interval_only() {
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0001);
        feed(&mut e, 1000, 1005, |s| vec![host(s, a, 3.0)]);
        assert!(!e.tracks(a), "first interval: kept out");
        feed(&mut e, 1005, 1012, |s| vec![host(s, a, 3.0)]);
        assert!(e.tracks(a), "seen again in the next interval: admitted");
    }

    #[test]
    fn confidence_grows_with_points() {
        let l = 0.1 / 256.0;
        assert_eq!(confidence(0, l, 256), 0.0);
        assert_eq!(confidence(100, l, 256), 0.0, "within the first sample: all cold start");
        let (a, b) = (confidence(1000, l, 256), confidence(5000, l, 256));
        assert!(a > 0.5 && a < b && b < 1.0, "{a} {b}");
        assert_eq!(confidence(100_000, l, 256), 1.0);
    }

    #[test]
    fn relevant_attribution_reads_the_anomalys_slot() {
        let shingle = 3;
        let mut high = vec![0.0; shingle * FEATURES];
        let low = vec![0.0; shingle * FEATURES];
        high[2 * FEATURES + 3] = 3.0; // newest slot, distinct
        high[2 * FEATURES] = 1.0;
        high[FEATURES + 1] = 5.0; // one slot back, packets
        let a = relevant_attribution(&high, &low, shingle, FEATURES, 0).expect("attribution");
        assert_eq!(a, [0.25, 0.0, 0.0, 0.75, 0.0]);
        let b = relevant_attribution(&high, &low, shingle, FEATURES, -1).expect("attribution");
        assert_eq!(b, [0.0, 1.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn port_fanout_at_similar_volume_is_flagged_on_distinct() {
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0002);
        // (past `min_history_s`: 250 points of 10 s)
        let out = feed(&mut e, 10_000, 10_000 + 10 * 250, |s| vec![host(s, a, 3.0)]);
        assert!(out.iter().all(|r| !r.is_anomaly()), "steady host: {:?}", out.iter().find(|r| r.is_anomaly()));
        // same bytes, packets and flows; many more destination endpoints
        let out = feed(&mut e, 12_500, 12_500 + 10 * 6, |s| vec![host(s, a, 60.0)]);
        let hit = out.iter().find(|r| r.is_anomaly()).expect("flagged");
        assert_eq!(FEATURE_NAMES[hit.driver()], "distinct_dst_endpoints", "{}", hit.reason());
        let exp = hit.scored.expected.expect("expected values");
        assert!(exp[3] < 20.0, "expected distinct near 3: {exp:?}");
        let confirmed = e.take_confirmed();
        assert_eq!(confirmed.len(), 1, "one alert for one change");
        assert_eq!(FEATURE_NAMES[confirmed[0].driver()], "distinct_dst_endpoints");
    }

    #[test]
    fn a_port_mix_change_at_the_same_volume_and_peer_count_is_flagged_on_ports() {
        // 40 web servers on one port, then 40 ports of one server: the same bytes, packets,
        // flows and destination endpoints; only the port mix moves
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0003);
        let out = feed(&mut e, 30_000, 30_000 + 10 * 250, |s| vec![host_ports(s, a, 40.0, 1.0)]);
        assert!(out.iter().all(|r| !r.is_anomaly()), "steady host: {:?}", out.iter().find(|r| r.is_anomaly()));
        let out = feed(&mut e, 32_500, 32_500 + 10 * 6, |s| vec![host_ports(s, a, 40.0, 40.0)]);
        let hit = out.iter().find(|r| r.is_anomaly()).expect("flagged");
        assert_eq!(FEATURE_NAMES[hit.driver()], "distinct_dst_ports", "{}", hit.reason());
        let confirmed = e.take_confirmed();
        assert_eq!(confirmed.len(), 1, "one alert for one change");
        assert_eq!(FEATURE_NAMES[confirmed[0].driver()], "distinct_dst_ports", "{}", confirmed[0].reason());
        // the alert's metric (`AlertDoc::from_layer3` once indexed layer 1's four metric
        // names with the fifth feature's index: a panic on the I/O core)
        assert_eq!(ALERT_METRICS[confirmed[0].driver()], "distinct_ports");
    }

    #[test]
    fn a_port_mix_change_at_one_connection_a_second_is_flagged_on_ports() {
        // one connection a second, to 40 servers on 443 in turn, then to 40 ports of one
        // server: every second has one endpoint and one port before and during the change;
        // only the interval's union of the sketches shows the port mix moving
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0006);
        let poll = |s: u64, by_port: bool| {
            let (server, port) = if by_port { (7u128, 8000 + (s % 40) as u128) } else { ((s % 40) as u128, 443) };
            let mut sk = Sketch::default();
            sk.add([(server << 16) | port, (6 << 16) | port]);
            let b = 5_000.0 * (1.0 + 0.2 * noise(s, 1));
            vec![SourceRow { ip: a, v: [b, 8.0 + noise(s, 2), 1.0, 1.0, 1.0], sketch: Some(sk) }]
        };
        let out = feed_rows(&mut e, 50_000, 50_000 + 10 * 250, |s| poll(s, false));
        assert!(out.iter().all(|r| !r.is_anomaly()), "steady poller: {:?}", out.iter().find(|r| r.is_anomaly()));
        let f = out.last().expect("results").features;
        assert!((8.0..=12.0).contains(&f[3]) && f[4] == 1.0, "≈10 servers on one port an interval: {f:?}");
        let out = feed_rows(&mut e, 52_500, 52_500 + 10 * 6, |s| poll(s, true));
        let f = out.iter().find(|r| r.data_start == 52_500).expect("the first changed interval").features;
        assert!((8.0..=12.0).contains(&f[3]) && f[4] >= 7.0, "≈10 ports of one server: {f:?}");
        let hit = out.iter().find(|r| r.is_anomaly()).expect("flagged");
        assert_eq!(FEATURE_NAMES[hit.driver()], "distinct_dst_ports", "{}", hit.reason());
        let confirmed = e.take_confirmed();
        assert_eq!(confirmed.len(), 1, "one alert for one change");
        assert_eq!(ALERT_METRICS[confirmed[0].driver()], "distinct_ports", "{}", confirmed[0].reason());
    }

    #[test]
    fn a_young_model_scores_but_does_not_alert() {
        // 120 points of 10 s (1,200 s < min_history_s): the jump is scored as an anomaly and
        // written, but pages nobody
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0005);
        feed(&mut e, 40_000, 40_000 + 10 * 120, |s| vec![host(s, a, 3.0)]);
        let out = feed(&mut e, 41_200, 41_200 + 10 * 6, |s| vec![host(s, a, 60.0)]);
        assert!(out.iter().any(|r| r.is_anomaly()), "scored as an anomaly");
        assert!(e.take_confirmed().is_empty(), "no alert from a model younger than min_history_s");
        let old = Layer3 { min_history_s: 0, ..cfg() };
        let mut e = Layer3Engine::new(&old);
        feed(&mut e, 40_000, 40_000 + 10 * 120, |s| vec![host(s, a, 3.0)]);
        feed(&mut e, 41_200, 41_200 + 10 * 6, |s| vec![host(s, a, 60.0)]);
        assert_eq!(e.take_confirmed().len(), 1, "control: the same model without the rule alerts");
    }

    #[test]
    fn an_upload_ramp_on_a_host_with_history_is_confirmed_on_bytes() {
        let mut e = Layer3Engine::new(&cfg());
        let a = Ip::from_v4(0x0a00_0004);
        let quiet = feed(&mut e, 20_000, 20_000 + 10 * 250, |s| vec![host(s, a, 3.0)]);
        assert!(e.take_confirmed().is_empty(), "{:?}", quiet.iter().find(|r| r.is_anomaly()));
        // the same connections, each carrying ever more bytes (an upload ramp to 12x in 10 min)
        let t0 = 22_500;
        let out = feed(&mut e, t0, t0 + 600, |s| {
            let mut h = host(s, a, 3.0);
            h.1[0] *= 1.0 + 11.0 * (s - t0) as f64 / 600.0;
            h.1[1] *= 1.0 + 2.0 * (s - t0) as f64 / 600.0;
            vec![h]
        });
        let confirmed = e.take_confirmed();
        let first = confirmed
            .first()
            .unwrap_or_else(|| panic!("not confirmed; anomalies {:?}", out.iter().filter(|r| r.is_anomaly()).count()));
        assert!(["bytes", "packets"].contains(&FEATURE_NAMES[first.driver()]), "{}", first.reason());
        assert!(first.data_start < t0 + 400, "confirmed at {} s into the ramp", first.data_start - t0);
    }

    #[test]
    fn checkpoint_restores_the_same_grades() {
        let c = cfg();
        let a = Ip::from_v4(0x0a00_0003);
        let f = |s: u64| {
            let mut h = host(s, a, 3.0);
            if (12_000..12_030).contains(&s) {
                h.1[0] *= 20.0;
            }
            vec![h]
        };
        let mut straight = Layer3Engine::new(&c);
        let mut first = feed(&mut straight, 10_000, 11_000, f);
        first.extend(feed(&mut straight, 11_000, 12_500, f));
        let mut before = Layer3Engine::new(&c);
        let mut second = feed(&mut before, 10_000, 11_000, f);
        let bytes = before.checkpoint().expect("checkpoint");
        drop(before);
        let mut after = Layer3Engine::new(&c);
        assert_eq!(after.restore(&bytes).expect("restore"), 1);
        second.extend(feed(&mut after, 11_000, 12_500, f));
        let grades =
            |v: &[AnomalyResult]| v.iter().map(|r| (r.data_start, r.scored.grade, r.scored.score)).collect::<Vec<_>>();
        let (g1, g2) = (grades(&first), grades(&second));
        let diff = g1.iter().zip(&g2).position(|(a, b)| a != b);
        assert_eq!(diff, None, "first difference: {:?} vs {:?}", diff.map(|i| g1[i]), diff.map(|i| g2[i]));
        assert_eq!(g1.len(), g2.len());
        assert!(first.iter().any(|r| r.is_anomaly()), "the surge is flagged");
    }

    #[test]
    fn a_pending_anomaly_survives_a_restart() {
        // the checkpoint is taken between the anomalous interval and the one that confirms it
        let c = cfg();
        let a = Ip::from_v4(0x0a00_0007);
        let f = |s: u64| vec![host(s, a, if s >= 12_500 { 60.0 } else { 3.0 })];
        let mut straight = Layer3Engine::new(&c);
        feed(&mut straight, 10_000, 12_600, f);
        let want = straight.take_confirmed();
        assert_eq!(want.len(), 1, "control: confirmed without a restart");
        let mut before = Layer3Engine::new(&c);
        let out = feed(&mut before, 10_000, 12_511, f);
        assert!(out.last().is_some_and(|r| r.data_start == 12_500 && r.is_anomaly()), "pending at the checkpoint");
        assert!(before.take_confirmed().is_empty());
        let bytes = before.checkpoint().expect("checkpoint");
        let mut after = Layer3Engine::new(&c);
        after.restore(&bytes).expect("restore");
        feed(&mut after, 12_511, 12_600, f);
        assert_eq!(after.take_confirmed(), want, "the same alert after the restart");
    }

    #[test]
    fn a_flood_of_new_sources_stays_within_budget_and_keeps_real_hosts() {
        let c = Layer3 { memory_mb: 8, ..cfg() };
        let mut e = Layer3Engine::new(&c);
        let real: Vec<Ip> = (0..4).map(|i| Ip::from_v4(0x0a00_0100 + i)).collect();
        feed(&mut e, 10_000, 10_100, |s| real.iter().map(|&ip| host(s, ip, 2.0)).collect());
        assert!(real.iter().all(|&ip| e.tracks(ip)));
        // 1 M spoofed sources, each seen once, over 100 s (10 000 per second)
        let mut n = 0u32;
        for s in 10_100..10_200 {
            let mut rows: Vec<SourceRow> = real.iter().map(|&ip| host(s, ip, 2.0).into()).collect();
            for _ in 0..10_000 {
                n += 1;
                rows.push(SourceRow::new(Ip::from_v4(0x6400_0000 + n), [60.0, 1.0, 1.0, 1.0, 1.0]));
            }
            e.observe(s, &rows, 0, &mut Vec::new()).expect("observe");
        }
        let cap = e.capacity();
        assert!(cap > 4 && cap < 100, "8 MiB holds a few dozen small models: {cap}");
        assert!(e.entities() <= cap);
        assert!(e.counters.model_bytes <= 8 << 20, "{}", e.counters.model_bytes);
        assert!(real.iter().all(|&ip| e.tracks(ip)), "real hosts kept");
        assert!(e.counters.door_kept_out >= 950_000, "{:?}", e.counters);
    }
}
