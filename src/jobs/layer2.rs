//! The layer-2 job: every `interval_s`, the Holt-Winters search of [`crate::detect::layer2`]
//! against the OpenSearch rollups; flagged buckets of the newest `alert_buckets` become alerts
//! (layer 2, kind `seasonal_spike` / `seasonal_drop`, expected = the forecast) and go to the
//! I/O loop's alert gate like every other alert.
//!
//! May depend on: `detect`, `alert`, `sink` (the OpenSearch client), `model`. Lives on: I/O cores (its
//! thread) and the main thread (`flowshard layer2`).

use super::AlertOut;
use crate::alert::AlertDoc;
pub use crate::detect::layer2::{flagged, lookback_buckets, Bucket, Layer2};
use crate::detect::layer2::{query, read_answer};
use crate::sink::delivery::{pause, SinkStats};
use crate::sink::opensearch::{Client, OsError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Evaluates every configured dimension over [from, to): every bucket with its forecast and z.
pub fn evaluate(client: &Client, l2: &Layer2, from: u64, to: u64) -> Result<Vec<Bucket>, OsError> {
    let index = format!("/{}-rollups-*/_search", client.cfg.index_prefix);
    let mut out = Vec::new();
    for dim in l2.dimensions.iter().map(|d| d.name()) {
        let (_, v) = client.json(reqwest::Method::POST, &index, Some(&query(l2, dim, from, to)), &[])?;
        read_answer(dim, &v, &mut out);
    }
    Ok(out)
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

/// How long the first layer-2 run waits for the feedback consumer to apply the feedback queued
/// on its topic (suppressions, false-positive marks) before it runs without.
pub const FEEDBACK_WAIT_S: u64 = 120;

/// The job: every `interval_s`, evaluate [`lookback_buckets`] up to the current bucket and send
/// alerts for the newest `alert_buckets` complete buckets. The first run is `interval_s` after
/// the start and not before `feedback_ready` (the Kafka feedback consumer has read its topic to
/// the end, so that queued feedback is applied first) or [`FEEDBACK_WAIT_S`]. Runs until `stop`
/// or until the I/O loop is gone.
pub fn run(
    client: &Client,
    l2: &Layer2,
    out: &AlertOut,
    stats: &SinkStats,
    feedback_ready: &AtomicBool,
    stop: &AtomicBool,
) {
    let step = l2.bucket_minutes * 60;
    let start = crate::model::time::now_s();
    // queued feedback first (bounded): the first run is not before the consumer caught up
    while !feedback_ready.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
        if crate::model::time::now_s() >= start + FEEDBACK_WAIT_S {
            tracing::warn!(
                job = "layer2",
                "the feedback topic was not read to its end within {FEEDBACK_WAIT_S} s; running without its feedback"
            );
            break;
        }
        pause(Duration::from_millis(250));
    }
    let mut next = start + l2.interval_s;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::model::time::now_s();
        if now < next {
            pause(Duration::from_millis(250));
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
                if !docs.is_empty() && !out(docs) {
                    return;
                }
            }
            Err(e) => {
                stats.up.store(false, Ordering::Relaxed);
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(job = "layer2", "{e}");
            }
        }
    }
}
