//! Layer 3 against a real OpenSearch (`scripts/services.sh`): results of the in-process Random
//! Cut Forest go through the real OpenSearch sink (spool, `_bulk`) into
//! `<prefix>-anomaly-results`, whose mapping — read back from the cluster — must be the
//! anomaly-detection plugin's `anomaly-results` mapping (schema version 5) field by field, and
//! whose anomaly documents carry the plugin's fields (grade, score, confidence, threshold,
//! nested feature data, entity, the four times, relevant attribution, expected values).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{opensearch, opensearch_cleanup, unique, wait_until};
use flowshard::config::{Layer3, OpensearchSink};
use flowshard::detect::layer3::{Layer3Engine, SourceRow, FEATURES};
use flowshard::model::hll::Sketch;
use flowshard::model::Ip;
use flowshard::sink::Sink;

fn os(method: reqwest::Method, path: &str) -> serde_json::Value {
    let resp = reqwest::blocking::Client::new().request(method, format!("{}{path}", opensearch())).send().unwrap();
    let st = resp.status();
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap_or_default();
    assert!(st.is_success(), "opensearch {path}: {st} {v}");
    v
}

/// The plugin's `anomaly-results.json` (schema version 5), as (dotted field path, type).
const PLUGIN_FIELDS: &[(&str, &str)] = &[
    ("detector_id", "keyword"),
    ("is_anomaly", "boolean"),
    ("anomaly_score", "double"),
    ("anomaly_grade", "double"),
    ("confidence", "double"),
    ("feature_data", "nested"),
    ("feature_data.feature_id", "keyword"),
    ("feature_data.data", "double"),
    ("data_start_time", "date"),
    ("data_end_time", "date"),
    ("execution_start_time", "date"),
    ("execution_end_time", "date"),
    ("error", "text"),
    ("user", "nested"),
    ("user.name", "text"),
    ("user.backend_roles", "text"),
    ("user.roles", "text"),
    ("user.custom_attribute_names", "text"),
    ("entity", "nested"),
    ("entity.name", "keyword"),
    ("entity.value", "keyword"),
    ("schema_version", "integer"),
    ("task_id", "keyword"),
    ("model_id", "keyword"),
    ("start_of_anomaly", "boolean"),
    ("in_high_score_region", "boolean"),
    ("approx_anomaly_start_time", "date"),
    ("relevant_attribution", "nested"),
    ("relevant_attribution.feature_id", "keyword"),
    ("relevant_attribution.data", "double"),
    ("past_values", "nested"),
    ("past_values.feature_id", "keyword"),
    ("past_values.data", "double"),
    ("expected_values", "nested"),
    ("expected_values.likelihood", "double"),
    ("expected_values.value_list", "nested"),
    ("expected_values.value_list.feature_id", "keyword"),
    ("expected_values.value_list.data", "double"),
    ("threshold", "double"),
];

fn field<'a>(props: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    let mut v = props;
    for (i, part) in path.split('.').enumerate() {
        if i > 0 {
            v = &v["properties"];
        }
        v = &v[part];
    }
    v
}

#[test]
fn results_reach_opensearch_in_the_plugins_schema() {
    let prefix = unique("l3");
    let mut o = OpensearchSink::new(&opensearch());
    o.index_prefix = prefix.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut sink = flowshard::sink::opensearch::start(&o, "test", dir.path(), 64 << 20, None).unwrap();

    // a host with a steady history whose destination endpoints jump at the same volume
    let cfg = Layer3 { interval_s: 10, trees: 30, sample: 128, ..Layer3::default() };
    let mut eng = Layer3Engine::new(&cfg);
    let ip = Ip::from_v4(0x0a14_0009);
    let mut results = Vec::new();
    for s in 30_000u64..31_500 {
        let wobble = ((s * 7919) % 13) as f64 / 13.0;
        let distinct = if s >= 31_400 { 80.0 } else { 3.0 + wobble };
        let rows = [SourceRow::new(ip, [40_000.0 * (1.0 + 0.1 * wobble), 40.0, 12.0, distinct, 1.0 + wobble / 4.0])];
        eng.observe(s, &rows, s * 1000, &mut results).unwrap();
    }
    let anomalies: Vec<_> = results.iter().filter(|r| r.is_anomaly()).cloned().collect();
    assert!(!anomalies.is_empty(), "the jump is an anomaly");
    let docs = flowshard::sink::result_docs(&results, "test", cfg.interval_s);
    sink.write_results(&docs).unwrap();
    sink.flush().unwrap();
    let index = format!("{prefix}-anomaly-results");
    let count = || {
        let r = reqwest::blocking::Client::new().get(format!("{}/{index}/_count", opensearch())).send().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap_or_default();
        v["count"].as_u64().unwrap_or(0)
    };
    wait_until("results indexed", 60, || {
        let _ = reqwest::blocking::Client::new().post(format!("{}/{index}/_refresh", opensearch())).send();
        count() == docs.len() as u64
    });
    sink.close();
    sink.finish();

    // the mapping, read back from the cluster, is the plugin's field by field
    let m = os(reqwest::Method::GET, &format!("/{index}/_mapping"));
    let mapping = &m[&index]["mappings"];
    assert_eq!(mapping["dynamic"], "false", "{mapping}");
    assert_eq!(mapping["_meta"]["schema_version"], 5);
    let props = &mapping["properties"];
    for (path, ty) in PLUGIN_FIELDS {
        assert_eq!(field(props, path)["type"], *ty, "{path} in {props}");
    }
    assert_eq!(field(props, "data_start_time")["format"], "strict_date_time||epoch_millis");

    // an anomaly document: the plugin's fields, nested queries work on them
    let q = serde_json::json!({"query": {"bool": {"filter": [
        {"range": {"anomaly_grade": {"gt": 0}}},
        {"nested": {"path": "entity", "query": {"term": {"entity.value": ip.to_string()}}}},
        {"nested": {"path": "relevant_attribution", "query": {"term": {"relevant_attribution.feature_id": "distinct_dst_endpoints"}}}}
    ]}}, "sort": [{"data_start_time": "asc"}]});
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}/{index}/_search", opensearch()))
        .header("content-type", "application/json")
        .body(q.to_string())
        .send()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    let hits = v["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), anomalies.len(), "{v}");
    let d = &hits[0]["_source"];
    for f in ["anomaly_score", "confidence", "threshold", "anomaly_grade"] {
        assert!(d[f].is_number(), "{f}: {d}");
    }
    assert_eq!(d["detector_id"], "flowshard-test-layer3");
    assert_eq!(d["entity"][0]["name"], "src_ip");
    assert_eq!(d["feature_data"].as_array().unwrap().len(), FEATURES);
    assert_eq!(d["expected_values"][0]["value_list"].as_array().unwrap().len(), FEATURES);
    let attr: f64 = d["relevant_attribution"].as_array().unwrap().iter().map(|a| a["data"].as_f64().unwrap()).sum();
    assert!((attr - 1.0).abs() < 1e-6, "attribution sums to 1: {d}");
    let top = d["relevant_attribution"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|a, b| a["data"].as_f64().unwrap().total_cmp(&b["data"].as_f64().unwrap()))
        .unwrap();
    assert_eq!(top["feature_id"], "distinct_dst_endpoints", "{d}");
    assert!(d["data_end_time"].as_u64().unwrap() - d["data_start_time"].as_u64().unwrap() == 10_000);
    assert!(d["approx_anomaly_start_time"].as_u64().unwrap() <= d["data_start_time"].as_u64().unwrap());
    opensearch_cleanup(&opensearch(), &prefix);
}

/// Per-second `src_ip` rollups of a few steady hosts (and the `other` row), with their
/// sketches as the owners hand them on: each host reaches a few of its 8 usual endpoints a
/// second; host 0 reaches 90 new ones a second from `jump` on, at the same volume.
fn second_of(s: u64, jump: u64) -> flowshard::pipeline::SecondOutput {
    use flowshard::model::{Dimension, Key, Rollup};
    let mut rollups = Vec::new();
    for h in 0..5u64 {
        let wobble = ((s * 7919 + h * 104_729) % 13) as f64 / 13.0;
        let bytes = (20_000.0 * (h + 1) as f64 * (1.0 + 0.1 * wobble)) as u64;
        let jumped = h == 0 && s >= jump;
        let n = if jumped { 90 } else { 3 + (wobble * 3.0) as u64 };
        let mut sk = Sketch::default();
        for i in 0..n as u128 {
            let endpoint = if jumped { ((s as u128) << 20) | i } else { ((h as u128) << 20) | ((s as u128 + i) % 8) };
            sk.add([endpoint, 6 << 16 | 443]);
        }
        let [distinct, ports] = sk.estimates();
        rollups.push(Rollup {
            distinct: Some(distinct),
            distinct_ports: Some(ports),
            sketch: Some(Box::new(sk)),
            ..Rollup::new(
                s,
                Dimension::SrcIp,
                Key::new(Ip::from_v4(0x0a14_0100 + h as u32), 0),
                bytes,
                bytes / 700 + 1,
                6 + h,
            )
        });
    }
    let mut other = Sketch::default();
    other.add([s as u128, 17 << 16 | 53]);
    other.add([s as u128 + 1, 17 << 16 | 123]);
    rollups.push(Rollup {
        distinct: Some(2),
        distinct_ports: Some(2),
        sketch: Some(Box::new(other)),
        ..Rollup::new(s, Dimension::SrcIp, Key::OTHER, 5_000, 9, 4)
    });
    flowshard::pipeline::SecondOutput { second: s, rollups, alerts: Vec::new() }
}

#[test]
fn history_in_opensearch_scores_as_live_and_cold_starts_models() {
    let prefix = unique("l3h");
    let mut o = OpensearchSink::new(&opensearch());
    o.index_prefix = prefix.clone();
    o.retention_minutes = 100_000; // the data is up to 40 minutes old
    let dir = tempfile::tempdir().unwrap();
    let mut sink = flowshard::sink::opensearch::start(&o, "hist", dir.path(), 64 << 20, None).unwrap();
    let cfg = Layer3 { interval_s: 10, trees: 30, sample: 128, history_intervals: 60, ..Layer3::default() };
    let now = flowshard::model::time::now_s();
    let s0 = now - now % 10 - 2400;
    let (end, cut, jump) = (s0 + 2000, s0 + 1500, s0 + 1800);

    // live: every second through the real sink into OpenSearch, and through one engine
    let mut live = Layer3Engine::new(&cfg);
    let mut live_results = Vec::new();
    let mut live_alerts = 0;
    for s in s0..end {
        let so = second_of(s, jump);
        sink.write(&so, &[]).unwrap();
        let (_, rows) = flowshard::pipeline::layer3_rows(&so);
        live.observe(s, &rows, 0, &mut live_results).unwrap();
        live_alerts += live.take_confirmed().len();
    }
    live.advance(end, 0, &mut live_results).unwrap();
    live_alerts += live.take_confirmed().len();
    sink.flush().unwrap();
    let docs = (end - s0) * 6;
    wait_until("rollups indexed", 120, || {
        let c = reqwest::blocking::Client::new();
        let _ = c.post(format!("{}/{prefix}-rollups-*/_refresh", opensearch())).send();
        let r = c.get(format!("{}/{prefix}-rollups-*/_count", opensearch())).send().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap_or_default();
        v["count"].as_u64() == Some(docs)
    });
    sink.close();
    sink.finish();
    let live_anomalies: Vec<_> = live_results.iter().filter(|r| r.is_anomaly()).collect();
    assert!(
        live_anomalies.iter().any(|r| r.entity == Ip::from_v4(0x0a14_0100) && r.data_start >= jump),
        "the live engine flags the jump"
    );

    // the range read back from OpenSearch scores exactly as it scored live
    let client = flowshard::sink::opensearch::Client::new(&o).unwrap();
    let mut hist = Layer3Engine::new(&cfg);
    let mut hist_results = Vec::new();
    let read = flowshard::jobs::layer3::history(&client, "hist", 10, s0, end, |t, rows| {
        hist.observe_interval(t, rows, 0, &mut hist_results)
    })
    .unwrap();
    hist.close_last(end, 0, &mut hist_results).unwrap();
    assert_eq!(read.intervals, (end - s0) / 10);
    assert_eq!(read.rows, read.intervals * 6);
    assert!(read.pages >= 1 && read.bad_keys == 0, "{read:?}");
    let key = |r: &flowshard::detect::layer3::AnomalyResult| (r.entity, r.data_start, r.scored.grade, r.scored.score);
    assert_eq!(hist_results.len(), live_results.len());
    assert!(hist_results.iter().map(key).eq(live_results.iter().map(key)), "same grades as live");

    // the CLI prints the same anomalies and alerts
    let cfg_path = dir.path().join("l3.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "[[sink]]\ntype = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{prefix}\"\nretention_minutes = 100000\n\
             [layer3]\ninterval_s = 10\ntrees = 30\nsample = 128\n",
            opensearch()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["layer3", "--config", cfg_path.to_str().unwrap(), "--appliance", "hist"])
        .args(["--from", &s0.to_string(), "--to", &end.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |t: &str| lines.iter().filter(|v| v["type"] == t).count();
    assert_eq!(of("anomaly_result"), live_anomalies.len(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(of("alert"), live_alerts);
    assert!(lines.iter().all(|v| v["type"] != "anomaly_result" || v["anomaly_grade"].as_f64().unwrap() > 0.0));

    // cold start at `cut` from the history before it: models exist and score at once, and
    // the jump 300 s later is flagged on the right feature; a cold start from live data only
    // would still be warming up then
    let mut cold = Layer3Engine::new(&cfg);
    let read = flowshard::jobs::layer3::cold_start(&mut cold, &client, "hist", cut).unwrap();
    assert_eq!(read.intervals, 60);
    assert_eq!(cold.entities(), 5, "every host modelled, `other` never");
    assert!(cold.counters.history_points > 0 && cold.counters.results == 0, "{:?}", cold.counters);
    let (mut warm_results, mut fresh_results) = (Vec::new(), Vec::new());
    let mut fresh = Layer3Engine::new(&cfg);
    for s in cut..end {
        let (_, rows) = flowshard::pipeline::layer3_rows(&second_of(s, jump));
        cold.observe(s, &rows, 0, &mut warm_results).unwrap();
        fresh.observe(s, &rows, 0, &mut fresh_results).unwrap();
    }
    let first = warm_results.first().unwrap();
    assert!(first.points >= cfg.warmup_points as u64, "scores from the first live interval: {}", first.points);
    let hit = warm_results
        .iter()
        .find(|r| r.entity == Ip::from_v4(0x0a14_0100) && r.data_start >= jump && r.is_anomaly())
        .expect("the cold-started model flags the jump");
    assert_eq!(hit.driver(), 3, "driven by distinct_dst_endpoints: {}", hit.reason());
    let at_jump = fresh_results.iter().find(|r| r.entity == Ip::from_v4(0x0a14_0100) && r.data_start == jump);
    assert!(at_jump.unwrap().points < cfg.warmup_points as u64, "without history the model is still cold then");
    opensearch_cleanup(&opensearch(), &prefix);
}
