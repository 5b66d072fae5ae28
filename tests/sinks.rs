//! Integration tests of the remote sinks against the real Kafka, Valkey and OpenSearch that
//! `scripts/services.sh up` starts on loopback (CI: `.ci/run`). Each test writes under its own
//! topics / key prefix / index prefix. The tests that stop services take a process-wide lock,
//! so no other test in this binary runs while a service is down.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

use common::{kafka, opensearch, services, valkey};

/// Brings every service back up when a test ends, even by panic.
struct Restore;
impl Drop for Restore {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh")).arg("up").status();
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn write_config(dir: &Path, u: &str, sinks: &[&str], extra: &str) -> PathBuf {
    let mut s = format!("[general]\nappliance_id = \"{u}\"\nstatus_interval_s = 1\n[spool]\nmax_mib = 64\n{extra}\n");
    s.push_str("[[sink]]\ntype = \"stdout\"\nalerts = false\n");
    for k in sinks {
        match *k {
            "kafka" => s.push_str(&format!(
                "[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\nrollups_topic = \"{u}.rollups\"\nalerts_topic = \"{u}.alerts\"\nincidents_topic = \"{u}.incidents\"\nanomaly_results_topic = \"{u}.anomaly-results\"\nhosts_topic = \"{u}.hosts\"\npartitions = 3\n",
                kafka()
            )),
            "kafka-flows" => s.push_str(&format!(
                "[[sink]]\ntype = \"kafka\"\nbrokers = \"{}\"\nrollups_topic = \"{u}.rollups\"\nalerts_topic = \"{u}.alerts\"\nincidents_topic = \"{u}.incidents\"\nanomaly_results_topic = \"{u}.anomaly-results\"\nhosts_topic = \"{u}.hosts\"\npartitions = 3\nflows = true\nflows_topic = \"{u}.flows\"\n",
                kafka()
            )),
            "valkey" => s.push_str(&format!("[[sink]]\ntype = \"valkey\"\nurl = \"{}\"\nprefix = \"{u}\"\n", valkey())),
            "valkey-small" => s.push_str(&format!(
                "[[sink]]\ntype = \"valkey\"\nurl = \"{}\"\nprefix = \"{u}\"\nqueue_seconds = 3\n",
                valkey()
            )),
            "opensearch" => s.push_str(&format!("[[sink]]\ntype = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{u}\"\n", opensearch())),
            other => panic!("unknown sink {other}"),
        }
    }
    let p = dir.join("flowshard.toml");
    std::fs::write(&p, s).unwrap();
    p
}

fn tmpdir(u: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flowshard-{u}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every message of a Kafka topic, from its start to its end, handed to `each`.
fn read_topic(topic: &str, mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>)) {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", format!("check-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let parts = md.topics()[0].partitions().len();
    assert!(parts > 0, "topic {topic} has no partitions");
    let mut eof = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while eof.len() < parts {
        assert!(Instant::now() < deadline, "kafka topic {topic} not read to its end within 60 s");
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => each(&m),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(part))) => {
                eof.insert(part);
            }
            Some(Err(e)) => panic!("kafka consumer: {e}"),
            None => {}
        }
    }
}

/// (bytes, packets, flows, messages) of the `total` rollups in a Kafka topic, read to its end.
fn kafka_totals(topic: &str) -> (u64, u64, u64, u64) {
    let (mut b, mut p, mut f, mut n) = (0, 0, 0, 0);
    read_topic(topic, |m| {
        n += 1;
        let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let key = std::str::from_utf8(m.key().unwrap()).unwrap();
        assert_eq!(key, format!("{}:{}", v["dimension"].as_str().unwrap(), v["key"].as_str().unwrap()));
        if v["dimension"] == "total" {
            b += v["bytes"].as_u64().unwrap();
            p += v["packets"].as_u64().unwrap();
            f += v["flows"].as_u64().unwrap();
        }
    });
    (b, p, f, n)
}

fn os_json(method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let c = reqwest::blocking::Client::new();
    let mut r = c.request(method, format!("{}{path}", opensearch()));
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b.to_string());
    }
    let resp = r.send().unwrap();
    let st = resp.status();
    let v: serde_json::Value = serde_json::from_slice(&resp.bytes().unwrap()).unwrap();
    assert!(st.is_success(), "opensearch {path}: {st} {v}");
    v
}

/// (bytes, packets, flows, documents) of the `total` rollups in OpenSearch.
fn os_totals(prefix: &str) -> (u64, u64, u64, u64) {
    os_json(reqwest::Method::POST, &format!("/{prefix}-rollups-*/_refresh"), None);
    let v = os_json(
        reqwest::Method::POST,
        &format!("/{prefix}-rollups-*/_search"),
        Some(serde_json::json!({
            "size": 0, "track_total_hits": true,
            "query": {"term": {"dimension": "total"}},
            "aggs": {"b": {"sum": {"field": "bytes"}}, "p": {"sum": {"field": "packets"}}, "f": {"sum": {"field": "flows"}}}
        })),
    );
    let all = os_json(reqwest::Method::GET, &format!("/{prefix}-rollups-*/_count"), None);
    let g = |k: &str| v["aggregations"][k]["value"].as_f64().unwrap() as u64;
    (g("b"), g("p"), g("f"), all["count"].as_u64().unwrap())
}

fn os_top(prefix: &str, dim: &str, n: usize) -> Vec<(String, u64)> {
    let v = os_json(
        reqwest::Method::POST,
        &format!("/{prefix}-rollups-*/_search"),
        Some(serde_json::json!({
            "size": 0,
            "query": {"bool": {"filter": [{"term": {"dimension": dim}}], "must_not": [{"term": {"key": "other"}}]}},
            "aggs": {"k": {"terms": {"field": "key", "size": n, "order": [{"b": "desc"}, {"_key": "asc"}]},
                           "aggs": {"b": {"sum": {"field": "bytes"}}}}}
        })),
    );
    v["aggregations"]["k"]["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["key"].as_str().unwrap().to_string(), b["b"]["value"].as_f64().unwrap() as u64))
        .collect()
}

fn valkey_con() -> redis::Connection {
    flowshard::sink::valkey::connect(&valkey()).expect("valkey reachable (scripts/services.sh up)")
}

fn truth_of(names: &[&str]) -> (u64, u64, u64) {
    let t = truth();
    names.iter().fold((0, 0, 0), |a, n| {
        let x = &t[*n];
        (
            a.0 + x["octets"].as_u64().unwrap(),
            a.1 + x["packets"].as_u64().unwrap(),
            a.2 + x["flow_records"].as_u64().unwrap(),
        )
    })
}

const CAPS: [&str; 3] = ["softflowd-v9.pcap", "pmacct-nfprobe-v10.pcap", "softflowd-v5.pcap"];

#[test]
fn all_three_sinks_match_the_capture_truth() {
    let _g = lock();
    let u = unique("e");
    let dir = tmpdir(&u);
    let cfg = write_config(&dir, &u, &["kafka", "valkey", "opensearch"], "");
    let run = Running::start(1, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    for (i, c) in CAPS.iter().enumerate() {
        send_capture(&captures().join(c), &run.addr, &format!("127.0.0.{}", 2 + i), |_| true);
    }
    // Valkey is written as soon as each second closes: query it while flowshard runs.
    let want = truth_of(&CAPS);
    let mut con = valkey_con();
    let keys = flowshard::sink::valkey::Keys { prefix: u.clone() };
    wait_until("valkey total", 20, || {
        flowshard::sink::valkey::top(&mut con, &keys, "total", 1).unwrap().first().map(|x| x.1) == Some(want.0)
    });
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    let sums = sum_lines(&out);
    assert_eq!((sums.total_bytes, sums.total_packets, sums.total_flows), want, "stdout vs truth");
    let rollups = out.lines().filter(|l| !l.trim().is_empty()).count() as u64;

    // Valkey: top-N equals the stdout sums; series of the total adds up.
    let top = flowshard::sink::valkey::top(&mut con, &keys, "dst_ip", 5).unwrap();
    assert_eq!(top, common::top(&sums, "dst_ip", 5).into_iter().collect::<Vec<_>>(), "valkey top-5 dst_ip");
    let now = flowshard::model::time::now_s();
    let series = flowshard::sink::valkey::series(&mut con, &keys, "total", "total", now).unwrap();
    assert_eq!(series.len(), 300);
    let s: (u64, u64, u64) = series.iter().fold((0, 0, 0), |a, p| (a.0 + p.bytes, a.1 + p.packets, a.2 + p.flows));
    assert_eq!(s, want, "valkey series of the total");

    // Kafka: every rollup, exactly once.
    let (b, p, f, n) = kafka_totals(&format!("{u}.rollups"));
    assert_eq!((b, p, f), want, "kafka totals");
    assert_eq!(n, rollups, "kafka messages = rollups written");

    // OpenSearch: every rollup, once; a terms aggregation gives the same top.
    let (b, p, f, docs) = os_totals(&u);
    assert_eq!((b, p, f), want, "opensearch totals");
    assert_eq!(docs, rollups, "opensearch documents = rollups written");
    assert_eq!(os_top(&u, "dst_ip", 5), common::top(&sums, "dst_ip", 5), "opensearch top-5 dst_ip");
    // Typed mappings from the template.
    let m = os_json(reqwest::Method::GET, &format!("/{u}-rollups-*/_mapping"), None);
    let props = &m.as_object().unwrap().values().next().unwrap()["mappings"]["properties"];
    assert_eq!(props["ip"]["type"], "ip");
    assert_eq!(props["bytes"]["type"], "long");
    assert_eq!(props["second"]["type"], "date");
    assert_eq!(props["key"]["type"], "keyword");
    let summary = summary(&err);
    for s in ["kafka", "valkey", "opensearch"] {
        assert_eq!(summary["sinks"][s]["dropped"], 0, "{s}: {summary}");
        assert_eq!(summary["sinks"][s]["spooled_seconds"], 0, "{s}: {summary}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
}

/// Sends the captures again and again (as different exporters) until told to stop.
fn keep_sending(addr: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (i, c) in CAPS.iter().enumerate() {
                send_capture(&captures().join(c), &addr, &format!("127.0.0.{}", 2 + i), |_| true);
            }
            n += 1;
            std::thread::sleep(Duration::from_millis(700));
        }
        n
    })
}

#[test]
fn kafka_then_opensearch_killed_and_restarted_lose_nothing() {
    let _g = lock();
    let _restore = Restore;
    let u = unique("o");
    let dir = tmpdir(&u);
    let cfg = write_config(&dir, &u, &["kafka", "opensearch"], "");
    let run = Running::start(1, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = keep_sending(run.addr.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(4));
    services(&["kill", "kafka"]);
    std::thread::sleep(Duration::from_secs(8));
    // Kafka is down: seconds pile up in its spool, ingest goes on.
    let pending = metric(&http, "flowshard_spool_pending_frames", "sink=\"kafka\"");
    assert!(pending >= 1.0, "kafka spool should hold seconds during the outage, has {pending}");
    services(&["up", "kafka"]);
    std::thread::sleep(Duration::from_secs(4));
    services(&["kill", "opensearch"]);
    std::thread::sleep(Duration::from_secs(8));
    let pending = metric(&http, "flowshard_spool_pending_frames", "sink=\"opensearch\"");
    assert!(pending >= 1.0, "opensearch spool should hold seconds during the outage, has {pending}");
    services(&["up", "opensearch"]);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = sender.join().unwrap();
    // Both spools drain.
    wait_until("spools to drain", 120, || {
        std::thread::sleep(Duration::from_secs(1));
        metric(&http, "flowshard_spool_pending_frames", "sink=\"kafka\"") == 0.0
            && metric(&http, "flowshard_spool_pending_frames", "sink=\"opensearch\"") == 0.0
            && metric(&http, "flowshard_spool_frames_total", "sink=\"kafka\",event=\"in\"")
                == metric(&http, "flowshard_spool_frames_total", "sink=\"kafka\",event=\"out\"")
    });
    let retried = metric(&http, "flowshard_sink_records_total", "sink=\"opensearch\",result=\"retried\"");
    let os_fail = metric(&http, "flowshard_sink_failures_total", "sink=\"opensearch\"");
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    let sums = sum_lines(&out);
    let rollups = out.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let t = truth_of(&CAPS);
    assert_eq!(sums.total_bytes, t.0 * rounds, "flowshard accepted every round ({rounds})");
    let accepted = (sums.total_bytes, sums.total_packets, sums.total_flows);
    let (b, p, f, n) = kafka_totals(&format!("{u}.rollups"));
    assert_eq!((b, p, f), accepted, "kafka totals after the outage");
    assert_eq!(n, rollups, "kafka: every rollup exactly once");
    let (b, p, f, docs) = os_totals(&u);
    assert_eq!((b, p, f), accepted, "opensearch totals after the outage");
    assert_eq!(docs, rollups, "opensearch: every rollup exactly once");
    assert!(os_fail > 0.0 && retried > 0.0, "the outage was seen: failures {os_fail}, retried {retried}");
    let s = summary(&err);
    assert_eq!(s["sinks"]["kafka"]["spooled_seconds"], 0, "{s}");
    assert_eq!(s["sinks"]["opensearch"]["spooled_seconds"], 0, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
}

#[test]
fn valkey_outage_counts_drops_and_recovers() {
    let _g = lock();
    let _restore = Restore;
    let u = unique("v");
    let dir = tmpdir(&u);
    let cfg = write_config(&dir, &u, &["valkey-small"], "");
    let run = Running::start(1, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = keep_sending(run.addr.clone(), stop.clone());
    std::thread::sleep(Duration::from_secs(3));
    services(&["kill", "valkey"]);
    let before = metric_sum(&http, "flowshard_records_total");
    std::thread::sleep(Duration::from_secs(8));
    // Ingest goes on; the sink reports down and drops the oldest queued seconds.
    let during = metric_sum(&http, "flowshard_records_total");
    assert!(during > before, "ingest continued during the Valkey outage ({before} → {during})");
    assert_eq!(metric(&http, "flowshard_sink_up", "sink=\"valkey\""), 0.0);
    assert!(metric(&http, "flowshard_sink_failures_total", "sink=\"valkey\"") > 0.0);
    wait_until("queue_full drops", 10, || {
        metric(&http, "flowshard_sink_records_total", "sink=\"valkey\",result=\"dropped_queue_full\"") > 0.0
    });
    services(&["up", "valkey"]);
    // Queries work again with data written after the restart.
    let keys = flowshard::sink::valkey::Keys { prefix: u.clone() };
    // (seen once on 2026-12-02: the data written after the restart was there while `up` still
    // read 0 — cause not established; both are awaited within the same bound)
    wait_until("valkey data after restart, sink up", 30, || {
        flowshard::sink::valkey::connect(&valkey())
            .ok()
            .and_then(|mut c| flowshard::sink::valkey::top(&mut c, &keys, "total", 1).ok())
            .is_some_and(|t| t.first().is_some_and(|x| x.1 > 0))
            && metric(&http, "flowshard_sink_up", "sink=\"valkey\"") == 1.0
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    // Every rollup was either delivered or dropped with a reason.
    let rollups = out.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    let s = summary(&err);
    let v = &s["sinks"]["valkey"];
    assert_eq!(v["delivered"].as_u64().unwrap() + v["dropped"].as_u64().unwrap(), rollups, "{s}");
    assert!(v["dropped"].as_u64().unwrap() > 0, "{s}");
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
}

#[test]
fn two_appliances_merge_in_shared_stores() {
    let _g = lock();
    let u = unique("s");
    let (da, db) = (tmpdir(&format!("{u}a")), tmpdir(&format!("{u}b")));
    // Same topics, key prefix and index prefix; different appliance ids.
    let ca = write_config(&da, &u, &["kafka", "valkey", "opensearch"], "");
    let cb = write_config(&db, &u, &["kafka", "valkey", "opensearch"], "");
    let a = Running::start(1, &da.join("state"), &["--config", ca.to_str().unwrap(), "--appliance", &format!("{u}-a")]);
    let b = Running::start(1, &db.join("state"), &["--config", cb.to_str().unwrap(), "--appliance", &format!("{u}-b")]);
    // Half of the exporters to each appliance.
    send_capture(&captures().join(CAPS[0]), &a.addr, "127.0.0.2", |_| true);
    send_capture(&captures().join(CAPS[2]), &a.addr, "127.0.0.4", |_| true);
    send_capture(&captures().join(CAPS[1]), &b.addr, "127.0.0.3", |_| true);
    let want = truth_of(&CAPS);
    let mut con = valkey_con();
    let keys = flowshard::sink::valkey::Keys { prefix: u.clone() };
    wait_until("merged valkey total", 20, || {
        flowshard::sink::valkey::top(&mut con, &keys, "total", 1).unwrap().first().map(|x| x.1) == Some(want.0)
    });
    let (oka, outa, erra) = a.stop();
    let (okb, outb, errb) = b.stop();
    assert!(oka && okb, "{erra:?} {errb:?}");
    let mut merged = sum_lines(&outa);
    let sb = sum_lines(&outb);
    for (k, v) in sb.by_key {
        *merged.by_key.entry(k).or_default() += v;
    }
    // The whole capture set's truth, from the merged stores.
    assert_eq!(flowshard::sink::valkey::top(&mut con, &keys, "total", 1).unwrap()[0].1, want.0);
    let vtop = flowshard::sink::valkey::top(&mut con, &keys, "dst_ip", 10).unwrap();
    assert_eq!(vtop, common::top(&merged, "dst_ip", 10), "merged valkey top-10");
    let (b_, p_, f_, _) = os_totals(&u);
    assert_eq!((b_, p_, f_), want, "opensearch aggregation over both appliances");
    assert_eq!(os_top(&u, "dst_ip", 10), common::top(&merged, "dst_ip", 10), "opensearch merged top-10");
    let (b_, p_, f_, _) = kafka_totals(&format!("{u}.rollups"));
    assert_eq!((b_, p_, f_), want, "one Kafka topic for both");
    // Exporters of both appliances are in the one hot window.
    let per: BTreeMap<String, u64> = flowshard::sink::valkey::top(&mut con, &keys, "exporter_in_if", 1000)
        .unwrap()
        .into_iter()
        .filter_map(|(k, b)| k.rsplit_once(':').map(|(ip, _)| (ip.to_string(), b)))
        .collect();
    assert_eq!(per.keys().cloned().collect::<Vec<_>>(), ["127.0.0.2", "127.0.0.3", "127.0.0.4"], "{per:?}");
    let _ = std::fs::remove_dir_all(&da);
    opensearch_cleanup(&opensearch(), &u);
    let _ = std::fs::remove_dir_all(&db);
}

#[test]
fn setup_is_idempotent() {
    let _g = lock();
    let u = unique("i");
    let dir = tmpdir(&u);
    let cfg = write_config(&dir, &u, &["kafka", "opensearch"], "");
    let run = |expect_exists: bool| {
        let out = Command::new(bin()).args(["setup", "--config", cfg.to_str().unwrap()]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(&format!("kafka topic {u}.rollups")), "{text}");
        assert!(text.contains(&format!("index template {u}-rollups")), "{text}");
        assert_eq!(text.contains("(exists)"), expect_exists, "{text}");
        text
    };
    run(false);
    let tpl1 = os_json(reqwest::Method::GET, &format!("/_index_template/{u}-rollups"), None);
    let second = run(true);
    assert!(second.contains(&format!("kafka topic {u}.rollups (exists)")), "{second}");
    let tpl2 = os_json(reqwest::Method::GET, &format!("/_index_template/{u}-rollups"), None);
    assert_eq!(tpl1, tpl2, "same template after a second setup");
    // The hot-window search pipeline keeps queries to the last 5 minutes, server-side.
    assert!(second.contains(&format!("search pipeline {u}-hot")), "{second}");
    let now = flowshard::model::time::now_s();
    let c = flowshard::sink::opensearch::Client::new(&match flowshard::config::Config::parse(
        &std::fs::read_to_string(&cfg).unwrap(),
    )
    .unwrap()
    .sink
    .into_iter()
    .find(|s| matches!(s, flowshard::config::Sink::Opensearch(_)))
    .unwrap()
    {
        flowshard::config::Sink::Opensearch(o) => o,
        _ => unreachable!(),
    })
    .unwrap();
    let mut body = Vec::new();
    let mut idx = String::new();
    for (i, sec) in [now - 10, now - 600].into_iter().enumerate() {
        flowshard::sink::opensearch::rollup_index(&u, flowshard::sink::opensearch::Period::Minute, sec, &mut idx);
        c.ensure_index(&idx).unwrap();
        body.extend_from_slice(format!("{{\"index\":{{\"_index\":\"{idx}\",\"_id\":\"{i}\"}}}}\n{{\"second\":{sec},\"dimension\":\"total\",\"key\":\"total\",\"bytes\":1}}\n").as_bytes());
    }
    assert!(c.bulk(&body).unwrap().iter().all(|i| *i == flowshard::sink::opensearch::Item::Ok));
    os_json(reqwest::Method::POST, &format!("/{u}-rollups-*/_refresh"), None);
    let all = os_json(
        reqwest::Method::POST,
        &format!("/{u}-rollups-*/_search"),
        Some(serde_json::json!({"query": {"match_all": {}}})),
    );
    let hot = os_json(
        reqwest::Method::POST,
        &format!("/{u}-rollups-*/_search?search_pipeline={u}-hot"),
        Some(serde_json::json!({"query": {"match_all": {}}})),
    );
    assert_eq!(all["hits"]["total"]["value"], 2);
    assert_eq!(hot["hits"]["total"]["value"], 1, "the pipeline keeps only the last 5 minutes: {hot}");
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
}

#[test]
fn retention_deletes_expired_rollup_indices() {
    let _g = lock();
    let u = unique("r");
    let o: flowshard::config::OpensearchSink = match flowshard::config::Config::parse(&format!(
        "[[sink]]\ntype = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{u}\"\nretention_minutes = 6\n",
        opensearch()
    ))
    .unwrap()
    .sink
    .remove(0)
    {
        flowshard::config::Sink::Opensearch(o) => o,
        _ => unreachable!(),
    };
    let c = flowshard::sink::opensearch::Client::new(&o).unwrap();
    c.setup().unwrap();
    let now = flowshard::model::time::now_s();
    let mut names = Vec::new();
    for age_min in [0u64, 5, 6, 7, 30] {
        let mut s = String::new();
        flowshard::sink::opensearch::rollup_index(
            &u,
            flowshard::sink::opensearch::Period::Minute,
            now - age_min * 60,
            &mut s,
        );
        c.ensure_index(&s).unwrap();
        names.push(s);
    }
    let deleted = c.delete_expired(now).unwrap();
    let left = os_json(reqwest::Method::GET, &format!("/_cat/indices/{u}-rollups-*?format=json&h=index"), None);
    let left: Vec<String> = left.as_array().unwrap().iter().map(|x| x["index"].as_str().unwrap().to_string()).collect();
    // Minutes whose end is more than 6 minutes ago go; the current and the last 6 stay.
    assert_eq!(deleted, 2, "{left:?}");
    for (n, keep) in names.iter().zip([true, true, true, false, false]) {
        assert_eq!(left.contains(n), keep, "{n} in {left:?}");
    }
    opensearch_cleanup(&opensearch(), &u);
}

#[test]
fn spooled_seconds_survive_a_restart_of_flowshard() {
    let _g = lock();
    let u = unique("p");
    let dir = tmpdir(&u);
    // First run: Kafka and OpenSearch unreachable (nothing listens on port 9), so every second
    // stays in the spool; flowshard stops with them undelivered.
    let dead = write_config(&dir, &u, &["kafka", "opensearch"], "")
        .to_str()
        .map(|p| {
            let t = std::fs::read_to_string(p)
                .unwrap()
                .replace(&kafka(), "127.0.0.1:9")
                .replace(&opensearch(), "http://127.0.0.1:9");
            let q = dir.join("dead.toml");
            std::fs::write(&q, t).unwrap();
            q
        })
        .unwrap();
    let run = Running::start(1, &dir.join("state"), &["--config", dead.to_str().unwrap()]);
    for (i, c) in CAPS.iter().enumerate() {
        send_capture(&captures().join(c), &run.addr, &format!("127.0.0.{}", 2 + i), |_| true);
    }
    std::thread::sleep(Duration::from_secs(3));
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    let first = summary(&err);
    let spooled = first["sinks"]["kafka"]["spooled_seconds"].as_u64().unwrap();
    assert!(spooled > 0, "{first}");
    assert_eq!(first["sinks"]["kafka"]["delivered"], 0, "{first}");
    let sums = sum_lines(&out);
    let rollups = out.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    // Second run, same state dir, services reachable: the spool goes out, nothing new arrives.
    let cfg = write_config(&dir, &u, &["kafka", "opensearch"], "");
    let run = Running::start(1, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    wait_until("the spools from the first run to drain", 60, || {
        metric(&http, "flowshard_spool_pending_frames", "sink=\"kafka\"") == 0.0
            && metric(&http, "flowshard_spool_pending_frames", "sink=\"opensearch\"") == 0.0
    });
    let (ok, _, err) = run.stop();
    assert!(ok, "{err:?}");
    let want = (sums.total_bytes, sums.total_packets, sums.total_flows);
    assert_eq!(want, truth_of(&CAPS));
    let (b, p, f, n) = kafka_totals(&format!("{u}.rollups"));
    assert_eq!(((b, p, f), n), (want, rollups), "kafka after the restart");
    let (b, p, f, docs) = os_totals(&u);
    assert_eq!(((b, p, f), docs), (want, rollups), "opensearch after the restart");
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
}

/// Every message of the raw-flows topic, decoded: (records, messages); checks each message's
/// key (the exporter) and timestamp (its arrival second).
fn kafka_flows(topic: &str) -> (Vec<flowshard::model::FlowRecord>, u64) {
    let (mut recs, mut n) = (Vec::new(), 0);
    read_topic(topic, |m| {
        n += 1;
        let before = recs.len();
        let (second, sampling) = flowshard::sink::flows::decode_batch(m.payload().unwrap(), &mut recs).unwrap();
        assert_eq!(sampling, 1);
        assert_eq!(m.timestamp().to_millis(), Some(second as i64 * 1000), "timestamp = arrival second");
        let key = std::str::from_utf8(m.key().unwrap()).unwrap();
        assert!(recs[before..].iter().all(|r| r.exporter.to_string() == key), "key = exporter {key}");
    });
    (recs, n)
}

/// `{key: bytes}` of a JSON array of top rows (`query flows --json`, `/api/flows`).
fn bytes_per_key(rows: &serde_json::Value) -> std::collections::BTreeMap<String, u64> {
    let rows = rows.as_array().unwrap_or_else(|| panic!("not an array: {rows}"));
    rows.iter().map(|r| (r["key"].as_str().unwrap().to_string(), r["bytes"].as_u64().unwrap())).collect()
}

/// The rollup lines of JSON-lines output, sorted (one multiset per run).
fn rollup_lines(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.lines().filter(|l| l.contains("\"type\":\"rollup\"")).map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn raw_flows_topic_holds_every_record_and_replays_to_the_same_rollups() {
    let _g = lock();
    let u = unique("f");
    let dir = tmpdir(&u);
    let cfg = write_config(&dir, &u, &["kafka-flows"], "");
    let run = Running::start(2, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    for (i, c) in CAPS.iter().enumerate() {
        send_capture(&captures().join(c), &run.addr, &format!("127.0.0.{}", 2 + i), |_| true);
    }
    std::thread::sleep(Duration::from_secs(2));
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    let s = summary(&err);
    let decoded = s["records"].as_u64().unwrap();
    assert!(decoded > 0, "{s}");
    assert_eq!(s["flows_encoded"], decoded, "every decoded record encoded: {s}");
    assert_eq!(s["sinks"]["kafka_flows"]["dropped"], 0, "{s}");
    assert_eq!(s["sinks"]["kafka_flows"]["spooled_seconds"], 0, "{s}");

    // records in Kafka = records decoded, with the scaled sums of the capture truth
    let (recs, messages) = kafka_flows(&format!("{u}.flows"));
    assert_eq!(recs.len() as u64, decoded, "records in kafka");
    assert_eq!(messages, s["sinks"]["kafka_flows"]["delivered"].as_u64().unwrap(), "{s}");
    let want = truth_of(&CAPS);
    let bytes: u64 = recs.iter().map(|r| r.bytes).sum();
    let packets: u64 = recs.iter().map(|r| r.packets).sum();
    assert_eq!((bytes, packets, recs.len() as u64), want, "raw flows vs truth");

    // replay from Kafka: exactly the rollups the live run wrote
    let rep = Command::new(bin())
        .args(["replay", "--shards", "2", "--config", cfg.to_str().unwrap(), "--kafka", &kafka(), "--topic"])
        .arg(format!("{u}.flows"))
        .output()
        .unwrap();
    let rerr = String::from_utf8_lossy(&rep.stderr);
    assert!(rep.status.success(), "{rerr}");
    let rs: serde_json::Value = serde_json::from_str(rerr.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(rs["records"], decoded, "{rs}");
    assert_eq!(rs["kafka"]["malformed"], 0, "{rs}");
    assert_eq!(rs["kafka"]["late"], 0, "{rs}");
    let live = rollup_lines(&out);
    let replayed = rollup_lines(&String::from_utf8_lossy(&rep.stdout));
    assert_eq!(live.len(), replayed.len(), "rollups: live {} vs replayed {}", live.len(), replayed.len());
    for (a, b) in live.iter().zip(&replayed) {
        assert_eq!(a, b, "first differing rollup");
    }

    // a range: --from/--to select whole seconds
    let secs: std::collections::BTreeSet<u64> = live
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["second"].as_u64().unwrap())
        .collect();
    if secs.len() >= 3 {
        let mid: Vec<u64> = secs.iter().copied().skip(1).take(1).collect();
        let rep = Command::new(bin())
            .args(["replay", "--quiet", "--config", cfg.to_str().unwrap(), "--kafka", &kafka(), "--topic"])
            .arg(format!("{u}.flows"))
            .args(["--from", &mid[0].to_string(), "--to", &(mid[0] + 1).to_string()])
            .output()
            .unwrap();
        let rerr = String::from_utf8_lossy(&rep.stderr);
        assert!(rep.status.success(), "{rerr}");
        let rs: serde_json::Value =
            serde_json::from_str(rerr.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
        let one: u64 = live
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["dimension"] == "total" && v["second"] == mid[0])
            .map(|v| v["flows"].as_u64().unwrap())
            .sum();
        assert_eq!(rs["records"].as_u64().unwrap(), one, "records of second {}: {rs}", mid[0]);
    }

    // a slice across dimensions (`query flows`): the sources of the busiest service's traffic
    // into one /8, summed per source over the whole topic, equal the records' own sums
    let mut by_port: std::collections::BTreeMap<(u16, u8), u64> = Default::default();
    for r in &recs {
        *by_port.entry((r.dst_port, r.proto)).or_default() += r.bytes;
    }
    let (&(port, proto), _) = by_port.iter().max_by_key(|(k, b)| (**b, std::cmp::Reverse(**k))).unwrap();
    let octet =
        recs.iter().find(|r| r.dst_port == port && r.proto == proto && r.dst.is_v4()).map(|r| (r.dst.0 as u32) >> 24);
    let octet = octet.expect("an IPv4 destination on the busiest port");
    let hit = |r: &&flowshard::model::FlowRecord| {
        r.dst_port == port && r.proto == proto && r.dst.is_v4() && (r.dst.0 as u32) >> 24 == octet
    };
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for r in recs.iter().filter(hit) {
        *want.entry(r.src.to_string()).or_default() += r.bytes;
    }
    let matched = recs.iter().filter(hit).count() as u64;
    let filter = format!("dst_port={port}/{}; dst_ip={octet}.0.0.0/8", flowshard::model::proto_name(proto));
    let q = Command::new(bin())
        .args(["query", "--json", "flows", "--kafka", &kafka(), "--topic"])
        .arg(format!("{u}.flows"))
        .args(["--from", "0", "--where", &filter, "--by", "src_ip", "-n", "100000"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let v: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(v["records"], decoded, "{v}");
    assert_eq!(v["filtered_out"], decoded - matched, "{filter}: {v}");
    assert_eq!(v["total"][2], matched, "{filter}: {v}");
    assert_eq!(v["total"][0], want.values().sum::<u64>(), "{filter}: {v}");
    assert_eq!(bytes_per_key(&v["top"][0][1]), want, "{filter}: bytes per source");
    eprintln!("query flows {filter:?}: {matched} of {decoded} records, {} sources", want.len());

    // the live view's filter: /api/flows of a running appliance reads the same slice (an
    // appliance started again on the same config: the topic holds the first run's records)
    let run = Running::start(1, &dir.join("state2"), &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().expect("http address");
    let enc: String = filter
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let (code, body) = http_get(&http, &format!("/api/flows?by=src_ip&seconds=3600&n=1000&where={enc}"), None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["filtered_out"].as_u64(), v["total"]["flows"].as_u64()),
        (Some(decoded - matched), Some(matched)),
        "{v}"
    );
    assert_eq!(bytes_per_key(&v["top"]), want, "/api/flows: bytes per source");
    let (code, body) = http_get(&http, "/api/flows?by=src_ip&where=dst_port%3Dhttps", None);
    assert!(code == 400 && body.contains("not a key of dst_port"), "{code} {body}");
    let (ok, _, err) = run.stop();
    assert!(ok, "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Interface names reach the Valkey hot window: `<prefix>:names:<dim>` holds each named key's
/// fields, and `flowshard query top` shows them beside the key.
#[test]
fn valkey_window_carries_interface_names() {
    let _g = lock();
    let u = unique("n");
    let dir = tmpdir(&u);
    let statics: String = (2..=4)
        .map(|i| {
            format!(
                "[[enrich.interface]]\nexporter = \"127.0.0.{i}\"\nindex = 0\nname = \"uplink-{i}\"\nalias = \"to \\\"core\\\" {i}\"\nspeed_mbps = {}\n",
                i * 1000
            )
        })
        .collect();
    let cfg = write_config(&dir, &u, &["valkey"], &statics);
    let run = Running::start(1, &dir.join("state"), &["--config", cfg.to_str().unwrap()]);
    for (i, c) in CAPS.iter().enumerate() {
        send_capture(&captures().join(c), &run.addr, &format!("127.0.0.{}", 2 + i), |_| true);
    }
    let mut con = valkey_con();
    let keys = flowshard::sink::valkey::Keys { prefix: u.clone() };
    wait_until("three named interfaces in valkey", 20, || {
        let top = flowshard::sink::valkey::top(&mut con, &keys, "exporter_in_if", 10).unwrap();
        let ks: Vec<String> = top.into_iter().map(|x| x.0).collect();
        flowshard::sink::valkey::names(&mut con, &keys, "exporter_in_if", &ks).unwrap().iter().flatten().count() == 3
    });
    let (ok, _, err) = run.stop();
    assert!(ok, "{err:?}");
    let out = Command::new(bin())
        .args(["query", "--valkey", &valkey(), "--prefix", &u, "--json", "top", "--dim", "exporter_in_if"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for i in 2..=4u64 {
        let row = v["top"].as_array().unwrap().iter().find(|r| r["key"] == format!("127.0.0.{i}:0"));
        let row = row.unwrap_or_else(|| panic!("127.0.0.{i}:0 in {v}"));
        assert_eq!(row["if_name"], format!("uplink-{i}"), "{v}");
        assert_eq!(row["if_alias"], format!("to \"core\" {i}"), "{v}");
        assert_eq!(row["if_speed_mbps"], i * 1000, "{v}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
