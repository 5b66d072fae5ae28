//! Detection layer 2, the pure half: the Holt-Winters pattern search against the OpenSearch
//! rollups and the reading of its answer. The job that sends it every `interval_s` and turns
//! flagged buckets into alerts is [`crate::jobs::layer2`].
//!
//! One search per dimension does the work server-side: a `date_histogram` of the rollups
//! (bucket `bucket_minutes`, default 1 minute) summing bytes — for `total` one series, for
//! other dimensions one per top key (`terms`) — then `moving_fn` with
//! `MovingFunctions.holtWinters` (additive season of `season_buckets`, window two seasons, so
//! the forecast of a bucket uses only the buckets before it), the residual by `bucket_script`,
//! and `extended_stats_bucket` of the residuals for their spread. Buckets whose residual is more
//! than `threshold` standard deviations from the mean are flagged here (a second pass: a
//! `bucket_selector` inside the histogram cannot see the sibling statistics). This catches
//! what a per-second baseline adapts to: traffic at 3 a.m. that would be normal at 3 p.m.,
//! and slow multi-host shifts visible in the total.
//!
//! May depend on: `model` (and `serde_json` for the query bodies). Lives on: I/O cores (the
//! job) and the main thread (`flowshard layer2`).

use crate::model::Dimension;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `[layer2]`: the Holt-Winters pattern job, run every `interval_s` against the OpenSearch sink.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Layer2 {
    /// Run the job (needs an OpenSearch sink).
    pub enabled: bool,
    /// Seconds between runs.
    pub interval_s: u64,
    /// Bucket width in minutes (1 = the reference's 1-minute date histogram).
    pub bucket_minutes: u64,
    /// Season length in buckets (1440 one-minute buckets = one day).
    pub season_buckets: u64,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Seasonal smoothing.
    pub gamma: f64,
    /// Flag buckets whose residual is more than this many standard deviations from the mean.
    pub threshold: f64,
    /// Dimensions: `total` is one series; others use their top keys.
    pub dimensions: Vec<Dimension>,
    /// Top keys per non-total dimension.
    pub top_keys: usize,
    /// Only the newest this many buckets raise alerts on each run.
    pub alert_buckets: u64,
    /// Buckets smaller than this (bytes) never alert.
    pub min_bytes: f64,
}

impl Default for Layer2 {
    fn default() -> Self {
        Layer2 {
            enabled: false,
            interval_s: 60,
            bucket_minutes: 1,
            season_buckets: 1440,
            alpha: 0.3,
            beta: 0.05,
            gamma: 0.3,
            threshold: 4.0,
            dimensions: vec![Dimension::Total, Dimension::DstIp],
            top_keys: 5,
            alert_buckets: 2,
            min_bytes: 1e6,
        }
    }
}

/// One evaluated bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Dimension.
    pub dimension: String,
    /// Key (`total` for the total).
    pub key: String,
    /// Bucket start (Unix seconds).
    pub start: u64,
    /// Observed bytes in the bucket.
    pub value: f64,
    /// Holt-Winters forecast (NaN during the first two seasons).
    pub forecast: f64,
    /// Residual in standard deviations of the series' residuals (NaN without a forecast).
    pub z: f64,
}

/// The histogram with forecast and residual, and the residual statistics beside it.
fn series_aggs(l2: &Layer2, from: u64, to: u64) -> Value {
    let p = l2.season_buckets;
    let script = format!(
        "values.length >= {} ? MovingFunctions.holtWinters(values, {}, {}, {}, {p}, false) : Double.NaN",
        2 * p,
        l2.alpha,
        l2.beta,
        l2.gamma
    );
    json!({
        "h": {
            "date_histogram": {
                "field": "second",
                "fixed_interval": format!("{}m", l2.bucket_minutes),
                "format": "epoch_second",
                "min_doc_count": 0,
                "extended_bounds": {"min": from.to_string(), "max": (to - 1).to_string()}
            },
            "aggs": {
                "v": {"sum": {"field": "bytes"}},
                "f": {"moving_fn": {"buckets_path": "v", "window": 2 * p, "script": script}},
                "r": {"bucket_script": {"buckets_path": {"v": "v", "f": "f"}, "script": "params.v - params.f"}}
            }
        },
        "s": {"extended_stats_bucket": {"buckets_path": "h>r"}}
    })
}

/// The search body for one dimension over [from, to).
pub fn query(l2: &Layer2, dim: &str, from: u64, to: u64) -> Value {
    let filter = json!([
        {"term": {"dimension": dim}},
        {"range": {"second": {"gte": from.to_string(), "lt": to.to_string(), "format": "epoch_second"}}}
    ]);
    if dim == "total" {
        json!({"size": 0, "query": {"bool": {"filter": filter}}, "aggs": series_aggs(l2, from, to)})
    } else {
        let mut inner = series_aggs(l2, from, to);
        inner["tot"] = json!({"sum": {"field": "bytes"}});
        json!({
            "size": 0,
            "query": {"bool": {"filter": filter, "must_not": [{"term": {"key": "other"}}]}},
            "aggs": {"k": {"terms": {"field": "key", "size": l2.top_keys.max(1), "order": {"tot": "desc"}}, "aggs": inner}}
        })
    }
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// Reads one series (a `h` histogram and its `s` statistics) into buckets.
fn read_series(dim: &str, key: &str, aggs: &Value, out: &mut Vec<Bucket>) {
    let avg = num(&aggs["s"]["avg"]);
    let std = num(&aggs["s"]["std_deviation"]);
    for b in aggs["h"]["buckets"].as_array().into_iter().flatten() {
        let start = b["key"].as_u64().unwrap_or(0) / 1000;
        let value = num(&b["v"]["value"]);
        let forecast = num(&b["f"]["value"]);
        let r = num(&b["r"]["value"]);
        let z = if r.is_finite() && std.is_finite() && std > 0.0 { (r - avg) / std } else { f64::NAN };
        out.push(Bucket { dimension: dim.to_string(), key: key.to_string(), start, value, forecast, z });
    }
}

/// The buckets that are anomalous.
pub fn flagged<'a>(l2: &'a Layer2, buckets: &'a [Bucket]) -> impl Iterator<Item = &'a Bucket> + 'a {
    buckets
        .iter()
        .filter(move |b| b.z.is_finite() && b.z.abs() >= l2.threshold && b.value.max(b.forecast) >= l2.min_bytes)
}

/// Buckets evaluated by each run: two seasons to warm the forecast up, then at least a season
/// (and at least 120 buckets) of residuals so that their spread is not set by the newest
/// buckets alone.
pub fn lookback_buckets(l2: &Layer2) -> u64 {
    2 * l2.season_buckets + l2.season_buckets.max(120)
}

/// Reads one dimension's search answer into buckets.
pub fn read_answer(dim: &str, answer: &Value, out: &mut Vec<Bucket>) {
    if dim == "total" {
        read_series(dim, "total", &answer["aggregations"], out);
    } else {
        for k in answer["aggregations"]["k"]["buckets"].as_array().into_iter().flatten() {
            let key = k["key"].as_str().unwrap_or_default();
            read_series(dim, key, k, out);
        }
    }
}
