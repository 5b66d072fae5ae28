//! The I/O core's HTTP server: `/metrics` scraped while a capture is replayed over loopback
//! matches the replayed totals and parses as Prometheus text; the query API's top-N and series
//! match the capture's truth; health endpoints; a bearer token is required off loopback.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;

fn scrape(http: &str) -> std::collections::BTreeMap<String, f64> {
    let (code, body) = http_get(http, "/metrics", None);
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let mut m = std::collections::BTreeMap::new();
    for s in parsed.samples {
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        };
        *m.entry(s.metric).or_insert(0.0) += v;
    }
    m
}

#[test]
fn metrics_and_api_during_a_live_replay() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(2, dir.path(), &[]);
    let http = run.http.clone().expect("http address in the ready line");
    assert_eq!(http_get(&http, "/healthz", None).0, 200);
    let mut sent = 0;
    for i in 2..6 {
        sent += send_capture(&captures().join("softflowd-v9.pcap"), &run.addr, &format!("127.0.0.{i}"), |_| true);
    }
    // shards report every second; windows close every second
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let m = loop {
        let m = scrape(&http);
        if m.get("flowshard_records_total").copied().unwrap_or(0.0) >= 4.0 * 2699.0
            || std::time::Instant::now() > deadline
        {
            break m;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(m["flowshard_records_total"], 4.0 * 2699.0);
    assert_eq!(m["flowshard_datagrams_total"], sent as f64);
    assert_eq!(m["flowshard_bytes_total"], 4.0 * 5_318_584.0);
    assert_eq!(m["flowshard_decode_errors_total"], 0.0);
    assert_eq!(m["flowshard_kernel_drops_total"], 0.0);
    assert!(m["flowshard_templates"] >= 2.0);
    assert!(m["flowshard_process_resident_memory_bytes"] > 1e6);
    assert_eq!(http_get(&http, "/readyz", None).0, 200);

    // query API: the hot window holds the whole replay (once the I/O core has assembled and
    // published the last seconds: polled, not a fixed sleep, so a loaded machine only waits)
    let truth = truth();
    let want: Vec<(String, u64)> = truth["softflowd-v5.pcap"]["octets_by_dst_top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_u64().unwrap()))
        .collect();
    let top = || {
        let (code, body) = http_get(&http, "/api/top?dimension=dst_ip&n=5", None);
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["key"].as_str().unwrap().to_string(), r["bytes"].as_u64().unwrap() / 4))
            .collect::<Vec<(String, u64)>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut got = top();
    while got != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(300));
        got = top();
    }
    assert_eq!(got, want);
    let (_, body) = http_get(&http, "/api/series?dimension=dst_ip&key=192.0.2.99&seconds=300", None);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let s = v["series"].as_array().unwrap();
    assert_eq!(s.len(), 300);
    assert_eq!(s.iter().map(|p| p[1].as_u64().unwrap()).sum::<u64>(), 4 * 184_000);
    let (_, body) = http_get(&http, "/api/top?dimension=dst_port&metric=flows&n=3&seconds=60", None);
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["top"].as_array().unwrap().len() == 3);
    assert_eq!(http_get(&http, "/api/top?dimension=nope", None).0, 400);
    assert_eq!(http_get(&http, "/nope", None).0, 404);
    let (code, body) = http_get(&http, "/api/alerts", None);
    assert_eq!(code, 200);
    assert!(body.starts_with('['));
    let (ok, _, _) = run.stop();
    assert!(ok);
}

#[test]
fn token_required_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // off loopback without a token: refused by validation, naming the field
    let out = std::process::Command::new(bin())
        .args(["run", "--listen", "127.0.0.1:0", "--no-pin", "--shards", "1", "--http", "0.0.0.0:0", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.token"));
    // with a token: 401 without it, 200 with it
    let cfg = dir.path().join("t.toml");
    std::fs::write(&cfg, "[http]\naddress = \"0.0.0.0:0\"\ntoken = \"s3cret-token\"\n[[sink]]\ntype = \"stdout\"\n")
        .unwrap();
    let run = Running::start(1, dir.path(), &["--config", cfg.to_str().unwrap(), "--http", "0.0.0.0:0"]);
    let port = run.http.clone().unwrap().rsplit(':').next().unwrap().to_string();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(http_get(&local, "/metrics", None).0, 401);
    assert_eq!(http_get(&local, "/metrics", Some("wrong")).0, 401);
    assert_eq!(http_get(&local, "/metrics", Some("s3cret-token")).0, 200);
    let (ok, _, _) = run.stop();
    assert!(ok);
}
