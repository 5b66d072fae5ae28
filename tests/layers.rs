//! Layer 2 (Holt-Winters in OpenSearch) and the one alert pipeline (gate, webhook, Kafka and
//! OpenSearch alert outputs, operator feedback), against the real services of
//! `scripts/services.sh up`.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use flowshard::config::{Config, Layer2, OpensearchSink, Sink};
use flowshard::sink::opensearch::Client;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{kafka, opensearch};

fn os_sink(prefix: &str, period: &str) -> OpensearchSink {
    let c = Config::parse(&format!(
        "[[sink]]\ntype = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{prefix}\"\nindex_period = \"{period}\"\nretention_minutes = 100000\n",
        opensearch()
    ))
    .unwrap();
    match c.sink.into_iter().next().unwrap() {
        Sink::Opensearch(o) => o,
        _ => unreachable!(),
    }
}

/// Bulk-loads per-bucket `total` (and one dst_ip key) rollups with past timestamps.
fn load(client: &Client, prefix: &str, period: flowshard::sink::opensearch::Period, points: &[(u64, &str, &str, u64)]) {
    let mut body = Vec::new();
    let mut index = String::new();
    let mut made = std::collections::HashSet::new();
    for (sec, ..) in points {
        flowshard::sink::opensearch::rollup_index(prefix, period, *sec, &mut index);
        if made.insert(index.clone()) {
            client.ensure_index(&index).unwrap();
        }
    }
    for chunk in points.chunks(5000) {
        body.clear();
        for (sec, dim, key, bytes) in chunk {
            flowshard::sink::opensearch::rollup_index(prefix, period, *sec, &mut index);
            writeln!(body, "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"t:{dim}:{key}:{sec}\"}}}}").unwrap();
            writeln!(
                body,
                "{{\"type\":\"rollup\",\"appliance\":\"t\",\"second\":{sec},\"dimension\":\"{dim}\",\"key\":\"{key}\",\"bytes\":{bytes},\"packets\":{},\"flows\":{}}}",
                bytes / 800 + 1,
                bytes / 50_000 + 1
            )
            .unwrap();
        }
        let items = client.bulk(&body).unwrap();
        assert!(items.iter().all(|i| *i == flowshard::sink::opensearch::Item::Ok), "bulk load failed: {items:?}");
    }
    let c = reqwest::blocking::Client::new();
    c.post(format!("{}/{prefix}-rollups-*/_refresh", opensearch())).send().unwrap();
}

/// A daily pattern (night 2e8, afternoon peak 1.7e9 bytes/min) with ±3 % noise.
fn daily(sec: u64, rng: &mut flowshard::tools::gen::Rng) -> u64 {
    let h = (sec % 86_400) as f64 / 3600.0;
    let day = ((h - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0);
    let base = 2e8 + 1.5e9 * day;
    (base * (1.0 + 0.03 * (rng.unit() * 2.0 - 1.0))) as u64
}

#[test]
fn layer2_flags_an_off_hours_surge_and_not_ordinary_days() {
    let u = unique("hw");
    let o = os_sink(&u, "hour");
    let client = Client::new(&o).unwrap();
    client.setup().unwrap();
    let now = flowshard::model::time::now_s();
    let start = now / 86_400 * 86_400 - 5 * 86_400; // midnight UTC five days ago
    let days = 4u64;
    let surge = (start + 3 * 86_400 + 3 * 3600, start + 3 * 86_400 + 3 * 3600 + 10 * 60); // day 4, 03:00–03:10
    let mut rng = flowshard::tools::gen::Rng::new(42);
    let mut pts = Vec::new();
    for m in 0..days * 1440 {
        let sec = start + m * 60;
        let mut v = daily(sec, &mut rng);
        if sec >= surge.0 && sec < surge.1 {
            v *= 8; // 1.6e9 at 3 a.m.: an afternoon's volume, at night
        }
        pts.push((sec, "total", "total", v));
    }
    load(&client, &u, flowshard::sink::opensearch::Period::Hour, &pts);
    let l2 = Layer2 { enabled: true, dimensions: vec![flowshard::model::Dimension::Total], ..Layer2::default() };
    let t = Instant::now();
    let buckets = flowshard::jobs::layer2::evaluate(&client, &l2, start, start + days * 86_400).unwrap();
    let took = t.elapsed();
    assert_eq!(buckets.len() as u64, days * 1440, "one bucket per minute");
    // The first two days have no forecast (two seasons are needed), the rest do.
    assert!(buckets.iter().take(2 * 1440).all(|b| b.forecast.is_nan()));
    assert!(buckets.iter().skip(2 * 1440 + 1).all(|b| b.forecast.is_finite()));
    let flagged: Vec<_> = flowshard::jobs::layer2::flagged(&l2, &buckets).collect();
    let incident = surge.0..surge.1 + 3600; // the surge and the forecast's recovery after it
    let inside = flagged.iter().filter(|b| incident.contains(&b.start)).count();
    let outside: Vec<_> = flagged.iter().filter(|b| !incident.contains(&b.start)).collect();
    assert!(
        flagged.iter().any(|b| b.start >= surge.0 && b.start < surge.1 && b.value > b.forecast),
        "the 3 a.m. surge is flagged"
    );
    assert!(outside.is_empty(), "ordinary days raise nothing: {outside:?}");
    let a = flowshard::jobs::layer2::alert(&l2, flagged[0]);
    assert_eq!(a.layer, 2);
    assert_eq!(a.kind, "seasonal_spike");
    assert!(a.reason.contains("Holt-Winters"), "{}", a.reason);
    eprintln!("layer 2: {} buckets in {took:?}; {inside} flagged in the incident, 0 outside", buckets.len());
    // The CLI prints the same flags.
    let cfg_path = std::env::temp_dir().join(format!("{u}.toml"));
    std::fs::write(
        &cfg_path,
        format!(
            "[[sink]]\ntype = \"opensearch\"\nurl = \"{}\"\nindex_prefix = \"{u}\"\nindex_period = \"hour\"\n[layer2]\nenabled = true\ndimensions = [\"total\"]\n",
            opensearch()
        ),
    )
    .unwrap();
    let out = Command::new(bin())
        .args([
            "layer2",
            "--config",
            cfg_path.to_str().unwrap(),
            "--from",
            &start.to_string(),
            "--to",
            &(start + days * 86_400).to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), flagged.len());
    opensearch_cleanup(&opensearch(), &u);
}

/// A local webhook receiver: collects request bodies.
fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap().to_string();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let mut b = String::new();
            let _ = req.as_reader().read_to_string(&mut b);
            g.lock().unwrap().push(b);
            let _ = req.respond(tiny_http::Response::from_string("ok"));
        }
    });
    (format!("http://{addr}/hook"), got)
}

#[test]
fn one_alert_pipeline_dedups_cools_down_suppresses_and_delivers() {
    let u = unique("ap");
    let dir = std::env::temp_dir().join(format!("flowshard-{u}"));
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    // A short season (10 one-minute buckets) so that three seasons fit in the last half hour;
    // the two newest complete buckets surge on `total`, on dst_ip 192.0.2.1 (suppressed by the
    // operator before the start) and on dst_ip 192.0.2.2 (marked false positive through Kafka
    // while running).
    let o = os_sink(&u, "minute");
    let client = Client::new(&o).unwrap();
    client.setup().unwrap();
    // Start early in a minute so that the first runs see the same newest buckets.
    while flowshard::model::time::now_s() % 60 > 20 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let now = flowshard::model::time::now_s();
    let to = now / 60 * 60;
    let mut rng = flowshard::tools::gen::Rng::new(9);
    let mut pts = Vec::new();
    // (the surge continues 10 minutes into the future, so that whenever the job runs during
    // the test its newest complete buckets surge)
    for m in 0..170u64 {
        let sec = to + m * 60 - 160 * 60;
        let season = 1.0 + 0.5 * ((m % 10) as f64 / 10.0 * std::f64::consts::TAU).sin();
        let surge = if m >= 158 { 10.0 } else { 1.0 };
        let noise = 1.0 + 0.02 * (rng.unit() * 2.0 - 1.0);
        pts.push((sec, "total", "total", (5e8 * season * noise * surge) as u64));
        pts.push((sec, "dst_ip", "192.0.2.1", (3e8 * season * noise * surge) as u64));
        pts.push((sec, "dst_ip", "192.0.2.2", (2e8 * season * noise * surge) as u64));
    }
    load(&client, &u, flowshard::sink::opensearch::Period::Minute, &pts);
    let l2 = Layer2 {
        enabled: true,
        interval_s: 6,
        alpha: 0.1,
        season_buckets: 10,
        alert_buckets: 2,
        threshold: 3.0,
        dimensions: vec![flowshard::model::Dimension::Total, flowshard::model::Dimension::DstIp],
        ..Layer2::default()
    };
    let b =
        flowshard::jobs::layer2::evaluate(&client, &l2, to - flowshard::jobs::layer2::lookback_buckets(&l2) * 60, to)
            .unwrap();
    let f: Vec<_> = flowshard::jobs::layer2::flagged(&l2, &b).map(|b| (b.key.clone(), b.start, b.z)).collect();
    assert!(
        f.iter().filter(|x| x.1 >= to - 120).count() >= 6,
        "precondition: the newest buckets are flagged: {f:?} of {b:?}"
    );
    // Operator suppression written before the start: it must be loaded from the state dir.
    let sup = Command::new(bin())
        .args([
            "feedback",
            "--state-dir",
            state.to_str().unwrap(),
            "suppress",
            "--key",
            "192.0.2.1",
            "--for",
            "1h",
            "--reason",
            "maintenance",
        ])
        .output()
        .unwrap();
    assert!(sup.status.success(), "{}", String::from_utf8_lossy(&sup.stderr));
    // A false-positive mark for 192.0.2.2 through the Kafka feedback topic, before the start:
    // the appliance's feedback consumer applies it before the first layer-2 run.
    let cfg = dir.join("flowshard.toml");
    let (hook, got) = receiver();
    std::fs::write(
        &cfg,
        format!(
            r#"[general]
appliance_id = "{u}"
[alerts]
cooldown_s = 600
feedback_topic = "{u}.feedback"
[alerts.webhook]
url = "{hook}"
format = "pagerduty"
routing_key = "R0UT1NG"
[layer2]
enabled = true
interval_s = 6
alpha = 0.1
season_buckets = 10
alert_buckets = 2
dimensions = ["total", "dst_ip"]
threshold = 3.0
[[sink]]
type = "stdout"
rollups = false
[[sink]]
type = "opensearch"
url = "{os}"
index_prefix = "{u}"
retention_minutes = 100000
[[sink]]
type = "kafka"
brokers = "{kafka}"
rollups_topic = "{u}.rollups"
alerts_topic = "{u}.alerts"
incidents_topic = "{u}.incidents"
anomaly_results_topic = "{u}.anomaly-results"
hosts_topic = "{u}.hosts"
"#,
            os = opensearch(),
            kafka = kafka()
        ),
    )
    .unwrap();
    let fp = Command::new(bin())
        .args([
            "feedback",
            "--config",
            cfg.to_str().unwrap(),
            "false-positive",
            "--layer",
            "2",
            "--dim",
            "dst_ip",
            "--key",
            "192.0.2.2",
        ])
        .output()
        .unwrap();
    assert!(fp.status.success(), "{}", String::from_utf8_lossy(&fp.stderr));
    assert!(String::from_utf8_lossy(&fp.stdout).contains("published to"), "{}", String::from_utf8_lossy(&fp.stdout));
    let run = Running::start(1, &state, &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    wait_until("the Kafka feedback applied to the state dir", 30, || {
        std::fs::read_to_string(state.join("suppressions.json")).is_ok_and(|t| t.contains("192.0.2.2"))
    });
    // total: two flagged buckets but one alert (the second is inside the cooldown; later runs
    // flag the same buckets again: duplicates); both dst_ip keys suppressed on every run.
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.lock().unwrap().is_empty() {
        if Instant::now() > deadline {
            let (_, m) = http_get(&http, "/metrics", None);
            let m: Vec<&str> =
                m.lines().filter(|l| l.contains("gate") || l.contains("layer2") || l.contains("webhook")).collect();
            let (_, out, err) = run.stop();
            panic!("no layer-2 alert on the webhook within 40 s\n{m:#?}\n{out}\n{err:#?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_until("repeated runs counted as duplicates", 40, || {
        metric(&http, "flowshard_alert_gate_total", "layer=\"2\",verdict=\"duplicate\"") >= 2.0
    });
    // the counters move with each asynchronous layer-2 run: wait for the same bound
    wait_until("both keys suppressed on two runs", 40, || {
        metric(&http, "flowshard_alert_gate_total", "layer=\"2\",verdict=\"suppressed\"") >= 4.0
    });
    assert_eq!(metric(&http, "flowshard_sink_records_total", "sink=\"feedback\",result=\"delivered\""), 1.0);
    let (ok, out, err) = run.stop();
    assert!(ok, "{err:?}");
    let hooks = got.lock().unwrap().clone();
    let docs: Vec<serde_json::Value> = hooks.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    // Exactly one alert: total; never the suppressed keys.
    let mut keys: Vec<String> =
        docs.iter().map(|d| d["payload"]["custom_details"]["key"].as_str().unwrap().to_string()).collect();
    keys.sort();
    assert_eq!(keys, ["total"], "{hooks:?}");
    for d in &docs {
        assert_eq!(d["routing_key"], "R0UT1NG");
        assert_eq!(d["event_action"], "trigger");
        assert_eq!(d["payload"]["custom_details"]["layer"], 2);
        assert!(d["dedup_key"].as_str().unwrap().starts_with(&format!("{u}:2:")));
    }
    // The same alerts, once each, on stdout, in the Kafka alerts topic and the OpenSearch index.
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("\"alert\"")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let c = reqwest::blocking::Client::new();
    c.post(format!("{}/{u}-alerts/_refresh", opensearch())).send().unwrap();
    let n: serde_json::Value =
        serde_json::from_slice(&c.get(format!("{}/{u}-alerts/_count", opensearch())).send().unwrap().bytes().unwrap())
            .unwrap();
    assert_eq!(n["count"], 1, "{n}");
    let kc: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka())
        .set("group.id", format!("check-{u}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    kc.subscribe(&[&format!("{u}.alerts")]).unwrap();
    let parts = kc.fetch_metadata(Some(&format!("{u}.alerts")), Duration::from_secs(10)).unwrap().topics()[0]
        .partitions()
        .len();
    let (mut eof, mut msgs) = (std::collections::HashSet::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while eof.len() < parts && Instant::now() < deadline {
        match kc.poll(Duration::from_millis(300)) {
            Some(Ok(_)) => msgs += 1,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                eof.insert(p);
            }
            _ => {}
        }
    }
    assert_eq!(msgs, 1, "alerts in Kafka");
    // Suppressions persist: a new gate over the same state dir still silences both keys.
    let mut gate = flowshard::alert::AlertGate::new(&state, 0);
    let mut d = flowshard::jobs::layer2::alert(
        &Layer2::default(),
        &flowshard::jobs::layer2::Bucket {
            dimension: "dst_ip".into(),
            key: "192.0.2.1".into(),
            start: now,
            value: 1.0,
            forecast: 0.0,
            z: 9.0,
        },
    );
    assert_eq!(gate.admit(&d, now), flowshard::alert::Verdict::Suppressed);
    d.key = "192.0.2.2".into();
    assert_eq!(gate.admit(&d, now), flowshard::alert::Verdict::Suppressed);
    let _ = std::fs::remove_dir_all(&dir);
    opensearch_cleanup(&opensearch(), &u);
    let _: PathBuf = dir;
}
