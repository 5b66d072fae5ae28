//! Telegraf's JSON metric format, as its Kafka output (`data_format = "json"`) writes it: one
//! metric `{"name":"cpu","tags":{"host":"web1","cpu":"cpu-total"},"fields":{"usage_idle":97.5},
//! "timestamp":1700000000}` or a batch `{"metrics":[…]}`. Timestamps are in the unit Telegraf
//! was told (`json_timestamp_units`, seconds by default): read by magnitude (seconds,
//! milliseconds, microseconds or nanoseconds since the epoch).
//!
//! Two parsers give the same [`Metric`]s: simd-json (borrowed values over the message's own
//! buffer, which it rewrites in place) and serde_json. [`parse_best`] picks by size, as
//! `benches/hosts.rs` measured on this VM: one Telegraf metric a message (~200 bytes) parses
//! at 839 k/s with serde_json vs 639 k/s with simd-json; batches of 100 at 1.12 M metrics/s
//! with simd-json vs 587 k/s with serde_json. Messages of [`SIMD_MIN_BYTES`] or more go to
//! simd-json.
//!
//! May depend on: nothing outside `decode`. Lives on: the host Kafka consumer's thread (I/O
//! core), tests and benches.

use simd_json::prelude::*;
use simd_json::BorrowedValue;

/// Why a message was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonMetricError {
    /// Not JSON.
    #[error("not JSON: {0}")]
    Syntax(String),
    /// JSON, but not a metric or a batch of metrics (no `name` or no `fields` object).
    #[error("not a Telegraf JSON metric (want name, fields, tags, timestamp)")]
    Shape,
}

/// One metric: name, tags, numeric fields and its time in Unix milliseconds.
pub struct Metric<'a> {
    /// Measurement name.
    pub name: &'a str,
    /// Tags with string values.
    pub tags: Vec<(&'a str, &'a str)>,
    /// Numeric (and boolean) fields; string fields are counted in `strings`.
    pub fields: Vec<(&'a str, f64)>,
    /// String fields skipped.
    pub strings: u64,
    /// Unix milliseconds, when the metric carries a timestamp.
    pub ms: Option<i64>,
}

/// A timestamp in s, ms, µs or ns since the epoch, in milliseconds (read by magnitude).
pub fn millis_by_magnitude(t: f64) -> i64 {
    let a = t.abs();
    let ms = if a >= 1e17 {
        t / 1e6
    } else if a >= 1e14 {
        t / 1e3
    } else if a >= 1e11 {
        t
    } else {
        t * 1e3
    };
    ms as i64
}

fn metric<'a>(v: &'a BorrowedValue<'a>) -> Option<Metric<'a>> {
    let name = v.get("name")?.as_str()?;
    let fields_obj = v.get("fields")?.as_object()?;
    let mut fields = Vec::with_capacity(fields_obj.len());
    let mut strings = 0;
    for (k, x) in fields_obj.iter() {
        if let Some(f) = x.cast_f64() {
            fields.push((k.as_ref(), f));
        } else if let Some(b) = x.as_bool() {
            fields.push((k.as_ref(), if b { 1.0 } else { 0.0 }));
        } else {
            strings += 1;
        }
    }
    let tags = v
        .get("tags")
        .and_then(|t| t.as_object())
        .map(|t| t.iter().filter_map(|(k, x)| Some((k.as_ref(), x.as_str()?))).collect())
        .unwrap_or_default();
    let ms = v.get("timestamp").and_then(|t| t.cast_f64()).map(millis_by_magnitude);
    Some(Metric { name, tags, fields, strings, ms })
}

/// Parses one message (rewriting `buf` in place, as simd-json does) and calls `f` per metric;
/// returns the number of metrics.
pub fn parse(buf: &mut [u8], mut f: impl FnMut(&Metric<'_>)) -> Result<usize, JsonMetricError> {
    let v = simd_json::to_borrowed_value(buf).map_err(|e| JsonMetricError::Syntax(e.to_string()))?;
    if let Some(list) = v.get("metrics").and_then(|m| m.as_array()) {
        let mut n = 0;
        for m in list {
            let m = metric(m).ok_or(JsonMetricError::Shape)?;
            f(&m);
            n += 1;
        }
        return Ok(n);
    }
    let m = metric(&v).ok_or(JsonMetricError::Shape)?;
    f(&m);
    Ok(1)
}

/// Messages at least this long are parsed with simd-json, shorter ones with serde_json.
pub const SIMD_MIN_BYTES: usize = 2048;

/// Parses with the faster parser for the message's size ([`SIMD_MIN_BYTES`]).
pub fn parse_best(buf: &mut [u8], f: impl FnMut(&Metric<'_>)) -> Result<usize, JsonMetricError> {
    if buf.len() >= SIMD_MIN_BYTES {
        parse(buf, f)
    } else {
        parse_serde(buf, f)
    }
}

fn metric_serde(v: &serde_json::Value) -> Option<Metric<'_>> {
    let name = v.get("name")?.as_str()?;
    let fields_obj = v.get("fields")?.as_object()?;
    let mut fields = Vec::with_capacity(fields_obj.len());
    let mut strings = 0;
    for (k, x) in fields_obj {
        if let Some(f) = x.as_f64() {
            fields.push((k.as_str(), f));
        } else if let Some(b) = x.as_bool() {
            fields.push((k.as_str(), if b { 1.0 } else { 0.0 }));
        } else {
            strings += 1;
        }
    }
    let tags = v
        .get("tags")
        .and_then(|t| t.as_object())
        .map(|t| t.iter().filter_map(|(k, x)| Some((k.as_str(), x.as_str()?))).collect())
        .unwrap_or_default();
    let ms = v.get("timestamp").and_then(|t| t.as_f64()).map(millis_by_magnitude);
    Some(Metric { name, tags, fields, strings, ms })
}

/// [`parse`] with serde_json (generic values) instead of simd-json: the same metrics, for the
/// benchmark that decides which one the consumer uses.
pub fn parse_serde(buf: &[u8], mut f: impl FnMut(&Metric<'_>)) -> Result<usize, JsonMetricError> {
    let v: serde_json::Value = serde_json::from_slice(buf).map_err(|e| JsonMetricError::Syntax(e.to_string()))?;
    if let Some(list) = v.get("metrics").and_then(|m| m.as_array()) {
        for m in list {
            f(&metric_serde(m).ok_or(JsonMetricError::Shape)?);
        }
        return Ok(list.len());
    }
    f(&metric_serde(&v).ok_or(JsonMetricError::Shape)?);
    Ok(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telegraf_single_and_batch() {
        let mut one = br#"{"fields":{"usage_idle":97.5,"n":3,"note":"x","up":true},"name":"cpu","tags":{"cpu":"cpu-total","host":"web1"},"timestamp":1700000000}"#.to_vec();
        let mut seen = Vec::new();
        assert_eq!(
            parse(&mut one, |m| seen.push((m.name.to_string(), m.tags.len(), m.fields.clone().len(), m.strings, m.ms)))
                .unwrap(),
            1
        );
        assert_eq!(seen, vec![("cpu".to_string(), 2, 3, 1, Some(1_700_000_000_000))], "integers are numbers");
        let mut batch = br#"{"metrics":[{"fields":{"a":1},"name":"m","tags":{},"timestamp":1700000000123},{"fields":{"b":2},"name":"n","timestamp":1700000000123456789}]}"#.to_vec();
        let mut ms = Vec::new();
        assert_eq!(parse(&mut batch, |m| ms.push(m.ms)).unwrap(), 2);
        assert_eq!(ms, vec![Some(1_700_000_000_123), Some(1_700_000_000_123)]);
        // serde_json reads the same
        let mut batch = br#"{"metrics":[{"fields":{"a":1,"s":"x"},"name":"m","tags":{"h":"a"},"timestamp":1700000000123},{"fields":{"b":2},"name":"n","timestamp":1700000000123456789}]}"#.to_vec();
        let mut a = Vec::new();
        parse_serde(&batch, |m| a.push((m.name.to_string(), m.tags.len(), m.fields.len(), m.strings, m.ms))).unwrap();
        let mut b = Vec::new();
        parse(&mut batch, |m| b.push((m.name.to_string(), m.tags.len(), m.fields.len(), m.strings, m.ms))).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn bad_messages_are_errors() {
        assert!(matches!(parse(&mut b"{not json".to_vec(), |_| {}), Err(JsonMetricError::Syntax(_))));
        assert_eq!(parse(&mut br#"{"fields":{"a":1}}"#.to_vec(), |_| {}), Err(JsonMetricError::Shape));
        assert_eq!(parse(&mut br#"{"metrics":[{"name":"x"}]}"#.to_vec(), |_| {}), Err(JsonMetricError::Shape));
        assert_eq!(parse(&mut b"[1,2]".to_vec(), |_| {}), Err(JsonMetricError::Shape));
    }

    #[test]
    fn timestamps_by_magnitude() {
        assert_eq!(millis_by_magnitude(1.7e9), 1_700_000_000_000);
        assert_eq!(millis_by_magnitude(1.7e12), 1_700_000_000_000);
        assert_eq!(millis_by_magnitude(1.7e15), 1_700_000_000_000);
        assert_eq!(millis_by_magnitude(1.7e18), 1_700_000_000_000);
    }
}
