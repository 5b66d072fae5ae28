//! Layer 3's input read back from the OpenSearch rollups, the pure half: the search and the
//! reading of its answer. The layer-3 job uses it to cold-start models from history instead of
//! waiting `warmup_points` intervals of live data, and `flowshard layer3 --from --to` to run
//! layer 3 over a stored time range.
//!
//! One paged `composite` aggregation does the work server-side: its sources are the interval
//! (`date_histogram` of `second`, `fixed_interval` = the layer-3 interval, so buckets align as
//! the live clock aligns) and then the `src_ip` key, so pages arrive in time order and a caller
//! can feed intervals as they complete without holding the range. Each bucket sums bytes,
//! packets and flows, takes the largest per-second distinct counts, and merges the rows'
//! distinct-count sketches (field `hll`, [`Sketch::write_text`]) with a Painless
//! `scripted_metric` ([`MERGE_SCRIPT`]) — exactly what the live engine accumulates from the
//! per-second rollups, so a range read back scores as it scored live. Rollups written before
//! the sketches were kept have none: their distinct counts are then the per-second maxima (lower
//! bounds of the interval's). The `other` row (sources past the top-K) becomes the unspecified address: it counts in
//! the interval's totals, never as an entity, as it does live.
//!
//! May depend on: `model`, `detect` (layer 3's point layout; `serde_json` for the bodies).
//! Lives on: the layer-3 job thread and the main thread (`flowshard layer3`).

use crate::detect::layer3::SourceRow;
use crate::model::hll::{Sketch, MERGE_SCRIPT};
use crate::model::Ip;
use serde_json::{json, Value};

/// Buckets per page.
pub const PAGE: usize = 5000;

/// The search body for [from, to) of `appliance`'s `src_ip` rollups, one bucket per
/// (interval, source), continuing after `after` (the previous page's `after_key`).
pub fn query(appliance: &str, from: u64, to: u64, interval_s: u64, after: Option<&Value>) -> Value {
    let mut composite = json!({
        "size": PAGE,
        "sources": [
            {"t": {"date_histogram": {"field": "second", "fixed_interval": format!("{interval_s}s")}}},
            {"k": {"terms": {"field": "key"}}}
        ]
    });
    if let Some(a) = after {
        composite["after"] = a.clone();
    }
    let merge: serde_json::Map<String, Value> =
        MERGE_SCRIPT.iter().map(|(k, v)| ((*k).to_string(), Value::from(*v))).collect();
    json!({
        "size": 0,
        "track_total_hits": false,
        "query": {"bool": {"filter": [
            {"term": {"dimension": "src_ip"}},
            {"term": {"appliance": appliance}},
            {"range": {"second": {"gte": from, "lt": to, "format": "epoch_second"}}}
        ]}},
        "aggs": {"h": {
            "composite": composite,
            "aggs": {
                "bytes": {"sum": {"field": "bytes"}},
                "packets": {"sum": {"field": "packets"}},
                "flows": {"sum": {"field": "flows"}},
                "distinct": {"max": {"field": "distinct_dst_endpoints"}},
                "ports": {"max": {"field": "distinct_dst_ports"}},
                "hll": {"scripted_metric": merge}
            }
        }}
    })
}

/// One page of the answer.
#[derive(Debug, Default)]
pub struct Page {
    /// (interval start, the source's interval), in time order.
    pub rows: Vec<(u64, SourceRow)>,
    /// Merged sketches that were not a sketch's text (counted; the row keeps its maxima).
    pub bad_sketches: u64,
    /// Keys that are neither an address nor `other` (counted, skipped).
    pub bad_keys: u64,
    /// Where the next page starts; `None` on the last page.
    pub after: Option<Value>,
}

/// Reads one page of the answer; `Err` names what is missing.
pub fn read_page(v: &Value) -> Result<Page, String> {
    let agg = &v["aggregations"]["h"];
    let buckets =
        agg["buckets"].as_array().ok_or_else(|| format!("no composite buckets in the answer: {}", short(v)))?;
    let mut page = Page::default();
    for b in buckets {
        let t = b["key"]["t"].as_u64().ok_or_else(|| format!("bucket without an interval: {}", short(b)))? / 1000;
        let key = b["key"]["k"].as_str().unwrap_or_default();
        let ip = if key == "other" {
            Ip::UNSPECIFIED
        } else if let Ok(a) = key.parse::<std::net::IpAddr>() {
            Ip::from(a)
        } else {
            page.bad_keys += 1;
            continue;
        };
        let val = |f: &str| b[f]["value"].as_f64().unwrap_or(0.0);
        let sketch = match b["hll"]["value"].as_str() {
            None => None,
            Some(text) => {
                let s = Sketch::from_text(text);
                page.bad_sketches += u64::from(s.is_none());
                s
            }
        };
        let v = [val("bytes"), val("packets"), val("flows"), val("distinct"), val("ports")];
        page.rows.push((t, SourceRow { ip, v, sketch }));
    }
    if buckets.len() == PAGE {
        page.after = agg.get("after_key").cloned();
    }
    Ok(page)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    s.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_pages_are_read_in_time_order() {
        let mut sk = Sketch::default();
        sk.add([1, 2]);
        let mut text = String::new();
        sk.write_text(&mut text);
        let v = json!({"aggregations": {"h": {"after_key": {"t": 120_000, "k": "10.0.0.2"}, "buckets": [
            {"key": {"t": 60_000, "k": "10.0.0.1"}, "bytes": {"value": 100.0}, "packets": {"value": 2.0},
             "flows": {"value": 1.0}, "distinct": {"value": 30.0}, "ports": {"value": 4.0}, "hll": {"value": text}},
            {"key": {"t": 60_000, "k": "other"}, "bytes": {"value": 5.0}, "packets": {"value": 1.0},
             "flows": {"value": 1.0}, "distinct": {"value": 0.0}, "hll": {"value": "zz"}},
            {"key": {"t": 120_000, "k": "not an address"}, "bytes": {"value": 1.0}}
        ]}}});
        let p = read_page(&v).unwrap();
        assert_eq!(p.rows.len(), 2);
        let want = SourceRow { ip: Ip::from_v4(0x0a00_0001), v: [100.0, 2.0, 1.0, 30.0, 4.0], sketch: Some(sk) };
        assert_eq!(p.rows[0], (60, want));
        assert_eq!(p.rows[1].1.ip, Ip::UNSPECIFIED);
        assert_eq!(p.rows[1].1.sketch, None, "not a sketch's text: counted, the maxima kept");
        assert_eq!(p.bad_sketches, 1);
        assert_eq!(p.bad_keys, 1);
        assert!(p.after.is_none(), "a short page is the last");
        assert!(read_page(&json!({"error": "x"})).is_err());
        let q = query("a", 0, 600, 60, Some(&json!({"t": 1, "k": "x"})));
        assert_eq!(q["aggs"]["h"]["composite"]["sources"][0]["t"]["date_histogram"]["fixed_interval"], "60s");
        assert_eq!(q["aggs"]["h"]["composite"]["after"]["k"], "x");
        assert!(q["aggs"]["h"]["aggs"]["hll"]["scripted_metric"]["reduce_script"].is_string());
    }
}
