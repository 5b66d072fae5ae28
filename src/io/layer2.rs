//! Detection layer 2: the Holt-Winters pattern job, run on the I/O core every `interval_s`
//! against the OpenSearch rollups.
//!
//! One search per dimension does the work server-side: a `date_histogram` of the rollups
//! (bucket `bucket_minutes`, default 1 minute) summing bytes — for `total` one series, for
//! other dimensions one per top key (`terms`) — then `moving_fn` with
//! `MovingFunctions.holtWinters` (additive season of `season_buckets`, window two seasons, so
//! the forecast of a bucket uses only the buckets before it), the residual by `bucket_script`,
//! and `extended_stats_bucket` of the residuals for their spread. flowshard then flags buckets
//! whose residual is more than `threshold` standard deviations from the mean (a second pass: a
//! `bucket_selector` inside the histogram cannot see the sibling statistics). This catches
//! what a per-second baseline adapts to: traffic at 3 a.m. that would be normal at 3 p.m.,
//! and slow multi-host shifts visible in the total.
//!
//! Alerts (layer 2, kind `seasonal_spike` / `seasonal_drop`, expected = the forecast) go to the
//! I/O loop's alert gate like every other alert.
//!
//! Lives on: I/O cores.

use super::alerts::AlertDoc;
use super::opensearch::{Client, OsError};
use crate::config::Layer2;
use serde_json::{json, Value};

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

/// Evaluates every configured dimension over [from, to): every bucket with its forecast and z.
pub fn evaluate(client: &Client, l2: &Layer2, from: u64, to: u64) -> Result<Vec<Bucket>, OsError> {
    let index = format!("/{}-rollups-*/_search", client.cfg.index_prefix);
    let mut out = Vec::new();
    for dim in &l2.dimensions {
        let (_, v) = client.json(reqwest::Method::POST, &index, Some(&query(l2, dim, from, to)), &[])?;
        if dim == "total" {
            read_series(dim, "total", &v["aggregations"], &mut out);
        } else {
            for k in v["aggregations"]["k"]["buckets"].as_array().into_iter().flatten() {
                let key = k["key"].as_str().unwrap_or_default();
                read_series(dim, key, k, &mut out);
            }
        }
    }
    Ok(out)
}

/// The buckets that are anomalous.
pub fn flagged<'a>(l2: &'a Layer2, buckets: &'a [Bucket]) -> impl Iterator<Item = &'a Bucket> + 'a {
    buckets
        .iter()
        .filter(move |b| b.z.is_finite() && b.z.abs() >= l2.threshold && b.value.max(b.forecast) >= l2.min_bytes)
}

/// The alert of a flagged bucket.
pub fn alert(l2: &Layer2, b: &Bucket) -> AlertDoc {
    let up = b.value > b.forecast;
    let per = l2.bucket_minutes;
    AlertDoc {
        layer: 2,
        second: b.start,
        dimension: b.dimension.clone(),
        key: b.key.clone(),
        metric: "bytes".into(),
        kind: if up { "seasonal_spike" } else { "seasonal_drop" }.into(),
        value: b.value,
        expected: b.forecast,
        score: crate::detect::score_of(b.z),
        z: b.z,
        reason: format!(
            "{} {} bytes {:.3e} per {per} min is {} the Holt-Winters forecast {:.3e} (residual z={:.1}, season {} buckets)",
            b.dimension,
            b.key,
            b.value,
            if up { "above" } else { "below" },
            b.forecast,
            b.z,
            l2.season_buckets
        ),
    }
}

/// Buckets evaluated by each run: two seasons to warm the forecast up, then at least a season
/// (and at least 120 buckets) of residuals so that their spread is not set by the newest
/// buckets alone.
pub fn lookback_buckets(l2: &Layer2) -> u64 {
    2 * l2.season_buckets + l2.season_buckets.max(120)
}

/// The job: every `interval_s`, evaluate [`lookback_buckets`] up to the current bucket and send
/// alerts for the newest `alert_buckets` complete buckets; the first run is `interval_s` after
/// the start (so that feedback queued on the Kafka topic is applied first). Runs until `stop`.
pub fn run(
    client: &Client,
    l2: &Layer2,
    tx: &crossbeam_channel::Sender<super::IoMsg>,
    stats: &super::remote::SinkStats,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    let step = l2.bucket_minutes * 60;
    let mut next = super::remote::now_ms() / 1000 + l2.interval_s;
    while !stop.load(Ordering::Relaxed) {
        let now = super::remote::now_ms() / 1000;
        if now < next {
            super::remote::pause(std::time::Duration::from_millis(250));
            continue;
        }
        next = now + l2.interval_s;
        let to = now / step * step; // current (incomplete) bucket excluded
        let from = to.saturating_sub(lookback_buckets(l2) * step);
        match evaluate(client, l2, from, to) {
            Ok(buckets) => {
                stats.up.store(true, Ordering::Relaxed);
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                let newest = to.saturating_sub(l2.alert_buckets * step);
                let docs: Vec<AlertDoc> =
                    flagged(l2, &buckets).filter(|b| b.start >= newest).map(|b| alert(l2, b)).collect();
                if !docs.is_empty() && tx.send(super::IoMsg::Alerts(docs)).is_err() {
                    return;
                }
            }
            Err(e) => {
                stats.up.store(false, Ordering::Relaxed);
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("flowshard: layer 2: {e}");
            }
        }
    }
}
