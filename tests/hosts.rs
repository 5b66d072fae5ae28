//! Host metrics and syslog through real clients and a live `flowshard run` (2 shards):
//!
//! * line protocol over UDP, TCP and HTTP (`/api/v2/write`, gzip, `precision=s`): per-series
//!   count, sum, min and max equal what was sent; malformed lines are refused and counted;
//! * Debian's `rsyslog` forwarding over UDP and over TCP (octet-counted): every message
//!   counted, per-(host, severity) sums exact;
//! * Debian's `prometheus` scraping `prometheus-node-exporter` and remote-writing to
//!   flowshard: every sample Prometheus stored is in flowshard's rows with its value and
//!   timestamp;
//! * a CPU burn (`stress-ng`) seen through Prometheus + node_exporter is one `cpu_spike`
//!   incident, and the quiet minute before it raises nothing;
//! * a process whose memory grows steadily, reported Telegraf-style (`procstat`), is one
//!   `memory_leak` incident with a time to exhaustion; a steady process beside it is not.
//!
//! The tests run one at a time (the CPU burn must not share the machine with another test's
//! judgement).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{http_get, wait_until, Running};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A child process killed when dropped.
struct Proc(Child, #[allow(dead_code)] &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &'static str, cmd: &str, args: &[String], log: &Path) -> Proc {
    let f = std::fs::File::create(log).expect("log file");
    let child = Command::new(cmd)
        .args(args)
        .stdout(Stdio::from(f.try_clone().expect("log")))
        .stderr(Stdio::from(f))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({cmd}): {e} — .ci/run installs it from Debian"));
    Proc(child, name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start(dir: &Path, extra_toml: &str) -> (Running, String) {
    let out = dir.join("out.jsonl");
    let cfg = format!(
        "[general]\nstatus_interval_s = 0\n[[sink]]\ntype = \"file\"\npath = \"{}\"\nrollups = true\nalerts = true\n\
         [hosts]\nline_udp = [\"127.0.0.1:0\"]\nline_tcp = [\"127.0.0.1:0\"]\nsyslog_udp = [\"127.0.0.1:0\"]\nsyslog_tcp = [\"127.0.0.1:0\"]\n{extra_toml}",
        out.display()
    );
    let path = dir.join("flowshard.toml");
    std::fs::write(&path, cfg).unwrap();
    let r = Running::start(2, &dir.join("state"), &["--config", path.to_str().unwrap()]);
    assert_eq!(r.addrs.len(), 5, "flows + 4 host sockets: {:?}", r.addrs);
    (r, out.display().to_string())
}

/// Rows of type "host": (host, metric, tags) → (count, sum, min, max), and every row.
type Series = BTreeMap<(String, String, String), (u64, f64, f64, f64)>;

fn host_rows(path: &str) -> (Series, Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut s = Series::new();
    let mut rows = Vec::new();
    let mut incidents = Vec::new();
    for l in text.lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}"));
        match v["type"].as_str() {
            Some("host") => {
                let k = (
                    v["host"].as_str().unwrap().to_string(),
                    v["metric"].as_str().unwrap().to_string(),
                    v["tags"].as_str().unwrap().to_string(),
                );
                let e = s.entry(k).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
                e.0 += v["count"].as_u64().unwrap();
                e.1 += v["sum"].as_f64().unwrap();
                e.2 = e.2.min(v["min"].as_f64().unwrap());
                e.3 = e.3.max(v["max"].as_f64().unwrap());
                rows.push(v);
            }
            Some("incident") => incidents.push(v),
            _ => {}
        }
    }
    (s, rows, incidents)
}

fn add(exp: &mut Series, host: &str, metric: &str, tags: &str, v: f64) {
    let e = exp.entry((host.into(), metric.into(), tags.into())).or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
    e.0 += 1;
    e.1 += v;
    e.2 = e.2.min(v);
    e.3 = e.3.max(v);
}

fn post(addr: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "POST {path} HTTP/1.0\r\nHost: x\r\nContent-Length: {}\r\n{headers}\r\n", body.len()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, resp.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default())
}

/// Sum of `/metrics` rows of `family` whose labels contain `needle`.
fn metric_where(http: &str, family: &str, needle: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn line_protocol_over_udp_tcp_and_http_sums_exactly_and_counts_bad_lines() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (fs, out) = start(dir.path(), "");
    let http = fs.http.clone().unwrap();
    let (udp_addr, tcp_addr) = (fs.addrs[1].clone(), fs.addrs[2].clone());
    let mut exp = Series::new();
    let hosts = ["alpha", "beta", "gamma"];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut lines_sent = 0u64;

    // UDP: 20 lines a datagram, one datagram with 5 bad lines among good ones
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut dgram = String::new();
    for i in 0..1200u64 {
        let h = hosts[(i % 3) as usize];
        let v = (i * 7 % 101) as f64;
        if i % 2 == 0 {
            dgram.push_str(&format!("cpu,host={h},cpu=cpu-total usage_idle={v}\n"));
            add(&mut exp, h, "cpu.usage_idle", "cpu=cpu-total", v);
        } else {
            // a tag outside the allow-list is not part of the series
            dgram.push_str(&format!("cpu,host={h},cpu=cpu0,rack=r{i} usage_user={v}i\n"));
            add(&mut exp, h, "cpu.usage_user", "cpu=cpu0", v);
        }
        lines_sent += 1;
        if i % 20 == 19 {
            sock.send_to(dgram.as_bytes(), &udp_addr).unwrap();
            dgram.clear();
            std::thread::sleep(Duration::from_micros(300));
        }
    }
    sock.send_to(
        b"cpu,host=alpha usage_idle=1\nbad\ncpu,host=alpha usage_idle=x\n,host=a v=1\ncpu v=1 12x\ncpu,host v=1\n",
        &udp_addr,
    )
    .unwrap();
    add(&mut exp, "alpha", "cpu.usage_idle", "", 1.0);
    lines_sent += 1;

    // TCP: nanosecond timestamps, lines split across writes, the last without a newline
    let mut body = String::new();
    for i in 0..900u64 {
        let h = hosts[(i % 3) as usize];
        let v = (i % 1000) as f64 * 1024.0;
        body.push_str(&format!("mem,host={h} used={v}i {}\n", (now - 5) * 1_000_000_000 + i * 1_000_000));
        add(&mut exp, h, "mem.used", "", v);
        lines_sent += 1;
        if i == 450 {
            body.push_str("mem,host=beta used=1i,\nmem used\nmem,host=a used=1 1 2\nmem,host=a =1\nmem,host=a x=1u2\n");
        }
    }
    body.push_str("mem,host=gamma used=77i");
    add(&mut exp, "gamma", "mem.used", "", 77.0);
    lines_sent += 1;
    let mut t = TcpStream::connect(&tcp_addr).unwrap();
    for chunk in body.as_bytes().chunks(997) {
        t.write_all(chunk).unwrap();
    }
    drop(t);

    // HTTP: gzip, seconds precision; one request with bad lines is a partial write (400)
    let mut lp = String::new();
    for i in 0..600u64 {
        let h = hosts[(i % 3) as usize];
        let v = (i % 50) as f64 + 0.5;
        lp.push_str(&format!("disk,host={h},path=/data free={v} {}\n", now - 3));
        add(&mut exp, h, "disk.free", "path=/data", v);
        lines_sent += 1;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lp.as_bytes()).unwrap();
    let (code, text) = post(&http, "/api/v2/write?precision=s", "Content-Encoding: gzip\r\n", &gz.finish().unwrap());
    assert_eq!(code, 204, "{text}");
    let (code, text) = post(
        &http,
        "/api/v2/write",
        "",
        b"net,host=delta rx=5i\nnet,host=delta rx=\nnet rx=1 1 1 1\nnet,host=delta rx=7i\nbad\nx,=y v=1\n",
    );
    assert_eq!(code, 400, "partial write: {text}");
    assert!(text.contains("partial write: 4 line(s) refused"), "{text}");
    add(&mut exp, "delta", "net.rx", "", 5.0);
    add(&mut exp, "delta", "net.rx", "", 7.0);
    lines_sent += 2;
    let (code, text) = post(&http, "/api/v2/write?precision=fortnights", "", b"x v=1\n");
    assert_eq!(code, 400, "{text}");

    wait_until("every good line counted", 30, || {
        metric_where(&http, "flowshard_host_input_total", "what=\"lines\"") as u64 >= lines_sent
    });
    assert_eq!(metric_where(&http, "flowshard_host_input_total", "what=\"lines\"") as u64, lines_sent);
    let refused = metric_where(&http, "flowshard_host_refused_total", "reason=\"line_");
    assert_eq!(refused as u64, 5 + 5 + 4, "malformed lines counted by reason");
    std::thread::sleep(Duration::from_secs(3));
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    let (got, _, _) = host_rows(&out);
    assert_eq!(got.len(), exp.len(), "series: got {:?}", got.keys().collect::<Vec<_>>());
    for (k, e) in &exp {
        let g = got.get(k).unwrap_or_else(|| panic!("series {k:?} missing"));
        assert_eq!((g.0, g.1, g.2, g.3), (e.0, e.1, e.2, e.3), "series {k:?}: (count, sum, min, max)");
    }
    let s = common::summary(&err);
    assert_eq!(
        s["host_lines"].as_u64().unwrap() + 602,
        lines_sent,
        "HTTP lines are counted on the HTTP thread, not shards"
    );
}

#[test]
fn rsyslog_forwarding_over_udp_and_tcp_is_counted_exactly() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (fs, out) = start(dir.path(), "");
    let http = fs.http.clone().unwrap();
    let (syslog_udp, syslog_tcp) = (fs.addrs[3].clone(), fs.addrs[4].clone());
    let port = |a: &str| a.rsplit(':').next().unwrap().to_string();
    let (in_udp, in_tcp) = (free_port(), free_port());
    let work = dir.path().join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let conf = format!(
        "global(workDirectory=\"{w}\")\nmodule(load=\"imudp\")\n\
         input(type=\"imudp\" address=\"127.0.0.1\" port=\"{in_udp}\" ruleset=\"viaudp\")\n\
         input(type=\"imudp\" address=\"127.0.0.1\" port=\"{in_tcp}\" ruleset=\"viatcp\")\n\
         ruleset(name=\"viaudp\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{pu}\" protocol=\"udp\") }}\n\
         ruleset(name=\"viatcp\") {{ action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{pt}\" protocol=\"tcp\" TCP_Framing=\"octet-counted\") }}\n",
        w = work.display(),
        pu = port(&syslog_udp),
        pt = port(&syslog_tcp),
    );
    let conf_path = dir.path().join("rsyslog.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _rs = spawn(
        "rsyslogd",
        "rsyslogd",
        &[
            "-n".into(),
            "-f".into(),
            conf_path.display().to_string(),
            "-i".into(),
            work.join("pid").display().to_string(),
        ],
        &dir.path().join("rsyslog.log"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // (origin host, severity) → messages sent
    let mut exp: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut sent = 0u64;
    for i in 0..3000u64 {
        let via_tcp = i % 2 == 1;
        let host = if via_tcp { "origin-tcp" } else { "origin-udp" };
        let sev = [3u64, 4, 6, 6, 6, 7, 2][(i % 7) as usize];
        let pri = 8 + sev; // facility user
        let msg = format!(
            "<{pri}>Dec  3 12:00:00 {host} app{}[{}]: request {i} took {} ms from 10.0.{}.{}",
            i % 3,
            100 + i % 5,
            i % 97,
            i % 200,
            i % 250
        );
        sock.send_to(msg.as_bytes(), ("127.0.0.1", if via_tcp { in_tcp } else { in_udp })).unwrap();
        *exp.entry((host.to_string(), sev)).or_default() += 1;
        sent += 1;
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    wait_until("every forwarded message counted", 60, || {
        metric_where(&http, "flowshard_host_input_total", "what=\"messages\"") as u64 >= sent
    });
    std::thread::sleep(Duration::from_secs(3));
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    let s = common::summary(&err);
    assert_eq!(s["host_messages"].as_u64(), Some(sent), "every message once");
    assert_eq!(s["host_refused"].as_u64(), Some(0));
    let (_, rows, _) = host_rows(&out);
    let mut got: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut patterns = 0u64;
    let mut pattern_keys = std::collections::BTreeSet::new();
    for r in &rows {
        match r["kind"].as_str() {
            Some("syslog") => {
                *got.entry((r["host"].as_str().unwrap().to_string(), r["severity"].as_u64().unwrap())).or_default() +=
                    r["count"].as_u64().unwrap();
            }
            Some("pattern") => {
                patterns += r["count"].as_u64().unwrap();
                pattern_keys.insert((r["host"].as_str().unwrap().to_string(), r["tags"].as_str().unwrap().to_string()));
            }
            _ => {}
        }
    }
    assert_eq!(got, exp, "per (host, severity) counts");
    assert_eq!(patterns, sent, "every message has a pattern");
    // numbers and addresses masked: 3 apps × 2 origins, one shape each
    assert_eq!(pattern_keys.len(), 6, "{pattern_keys:?}");
    assert!(
        pattern_keys.iter().all(|(_, t)| t.contains("pattern=request <*> took <*> ms from <*>")),
        "{pattern_keys:?}"
    );
}

fn prometheus(dir: &Path, node_port: u16, flowshard_http: &str) -> (Proc, Proc, String) {
    let ne = spawn(
        "node_exporter",
        "prometheus-node-exporter",
        &[
            format!("--web.listen-address=127.0.0.1:{node_port}"),
            "--collector.disable-defaults".into(),
            "--collector.cpu".into(),
            "--collector.meminfo".into(),
            "--collector.loadavg".into(),
        ],
        &dir.join("node_exporter.log"),
    );
    let prom_port = free_port();
    let cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 15s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{node_port}']\n\
         remote_write:\n  - url: http://{flowshard_http}/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      max_samples_per_send: 5000\n"
    );
    std::fs::write(dir.join("prometheus.yml"), cfg).unwrap();
    let p = spawn(
        "prometheus",
        "prometheus",
        &[
            format!("--config.file={}", dir.join("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{prom_port}"),
        ],
        &dir.join("prometheus.log"),
    );
    let api = format!("127.0.0.1:{prom_port}");
    wait_until("prometheus ready", 60, || {
        TcpStream::connect(&api).is_ok() && http_get(&api, "/-/ready", None).0 == 200
    });
    (ne, p, api)
}

/// Raw samples Prometheus stored for `selector` over the last `range_s` at `time`:
/// (labels without __name__/instance/job, ms, value).
fn prom_samples(api: &str, selector: &str, range_s: u64, time: f64) -> Vec<(BTreeMap<String, String>, i64, f64)> {
    let q = format!("/api/v1/query?query={selector}%5B{range_s}s%5D&time={time:.3}");
    let (code, body) = http_get(api, &q, None);
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut out = Vec::new();
    for r in v["data"]["result"].as_array().unwrap() {
        let labels: BTreeMap<String, String> = r["metric"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !["__name__", "instance"].contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        for s in r["values"].as_array().unwrap() {
            let ms = (s[0].as_f64().unwrap() * 1000.0).round() as i64;
            out.push((labels.clone(), ms, s[1].as_str().unwrap().parse().unwrap()));
        }
    }
    out
}

#[test]
fn prometheus_remote_write_of_node_exporter_equals_what_prometheus_stores() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (fs, out) = start(dir.path(), "");
    let http = fs.http.clone().unwrap();
    let node_port = free_port();
    let (ne, prom, api) = prometheus(dir.path(), node_port, &http);
    wait_until("remote-write samples arriving", 60, || {
        metric_where(&http, "flowshard_host_input_total", "input=\"http\",what=\"samples\"") > 1000.0
    });
    std::thread::sleep(Duration::from_secs(15));
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let mut want = Vec::new();
    for sel in ["node_load1", "node_memory_MemAvailable_bytes", "node_cpu_seconds_total"] {
        for (labels, ms, v) in prom_samples(&api, sel, 60, t) {
            want.push((sel.to_string(), labels, ms, v));
        }
    }
    // Prometheus sends within its 1-s batch deadline; give it that, then stop both ends
    std::thread::sleep(Duration::from_secs(4));
    drop(prom);
    drop(ne);
    std::thread::sleep(Duration::from_secs(2));
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    let (_, rows, _) = host_rows(&out);
    let host = format!("127.0.0.1:{node_port}");
    // (metric, tags, second) → (last, last_ms, count)
    let mut have: BTreeMap<(String, String, i64), (f64, i64, u64)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["host"] == host.as_str()) {
        have.insert(
            (r["metric"].as_str().unwrap().into(), r["tags"].as_str().unwrap().into(), r["second"].as_i64().unwrap()),
            (r["last"].as_f64().unwrap(), r["last_ms"].as_i64().unwrap(), r["count"].as_u64().unwrap()),
        );
    }
    assert!(want.len() > 100, "Prometheus stored {} samples", want.len());
    let mut checked = 0;
    for (metric, labels, ms, v) in &want {
        let tags = labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let key = (metric.clone(), tags, ms.div_euclid(1000));
        let got = have
            .get(&key)
            .unwrap_or_else(|| panic!("Prometheus sample {key:?} at {ms} = {v} is not in flowshard's rows"));
        if got.2 == 1 {
            assert_eq!((got.0, got.1), (*v, *ms), "{key:?}");
        }
        checked += 1;
    }
    assert_eq!(checked, want.len());
}

/// flowshard's incident lines with `kinds` containing `kind`.
fn incidents_of(incidents: &[serde_json::Value], kind: &str, state: &str) -> Vec<serde_json::Value> {
    incidents
        .iter()
        .filter(|i| i["state"] == state && i["kinds"].as_array().is_some_and(|k| k.iter().any(|x| x == kind)))
        .cloned()
        .collect()
}

#[test]
fn a_cpu_burn_seen_through_prometheus_is_one_incident_and_the_quiet_minute_is_none() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (fs, out) = start(
        dir.path(),
        "[hosts.detect]\ncpu_high_pct = 80.0\ncpu_sustain_s = 15\ncpu_min_rise_pct = 30.0\n[incidents]\nresolve_after_s = 120\n",
    );
    let http = fs.http.clone().unwrap();
    let node_port = free_port();
    let (_ne, _prom, _api) = prometheus(dir.path(), node_port, &http);
    wait_until("remote-write samples arriving", 60, || {
        metric_where(&http, "flowshard_host_input_total", "input=\"http\",what=\"samples\"") > 100.0
    });
    // a quiet minute: the baseline
    std::thread::sleep(Duration::from_secs(45));
    let (_, _, before) = host_rows(&out);
    assert!(incidents_of(&before, "cpu_spike", "open").is_empty(), "the quiet minute raised {before:?}");
    let burn_start = Instant::now();
    let burn = Command::new("stress-ng")
        .args(["--cpu", "2", "--timeout", "50s", "--quiet"])
        .status()
        .expect("stress-ng (Debian) is needed: .ci/run installs it");
    assert!(burn.success());
    assert!(burn_start.elapsed() >= Duration::from_secs(45));
    std::thread::sleep(Duration::from_secs(8));
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    let (_, _, incidents) = host_rows(&out);
    let host = format!("127.0.0.1:{node_port}");
    let opened = incidents_of(&incidents, "cpu_spike", "open");
    assert_eq!(opened.len(), 1, "one incident for one burn: {opened:?}");
    assert_eq!(opened[0]["key"], host.as_str());
    assert_eq!(opened[0]["dimension"], "host");
    assert!(opened[0]["value"].as_f64().unwrap() >= 80.0, "{:?}", opened[0]);
}

#[test]
fn a_steadily_growing_process_is_a_leak_with_a_time_to_exhaustion_and_a_steady_one_is_not() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (fs, out) = start(
        dir.path(),
        "[hosts.detect]\nleak_step_s = 2\nleak_points = 20\nleak_min_growth = 0.005\n[incidents]\nresolve_after_s = 120\n",
    );
    let tcp = fs.addrs[2].clone();
    // the leaking process: 16 MiB more every second, touched so it is resident
    let leaker = Command::new("python3")
        .args(["-c", "import time\nkeep=[]\nwhile True:\n    keep.append(bytearray(16<<20))\n    time.sleep(1)\n"])
        .spawn()
        .expect("python3");
    let leaker = Proc(leaker, "leaker");
    let steady = Proc(Command::new("sleep").arg("600").spawn().unwrap(), "steady");
    let rss = |pid: u32| -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    let meminfo = |k: &str| -> u64 {
        let s = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kb: u64 = s.lines().find(|l| l.starts_with(k)).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    };
    // Telegraf's procstat and mem inputs, as socket_writer sends them (one connection)
    let mut conn = TcpStream::connect(&tcp).unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(75) {
        let mut lines = String::new();
        for (name, pid) in [("leaker", leaker.0.id()), ("steady", steady.0.id())] {
            if let Some(r) = rss(pid) {
                lines.push_str(&format!("procstat,host=leakhost,process_name={name},pid={pid} memory_rss={r}i\n"));
            }
        }
        lines.push_str(&format!(
            "mem,host=leakhost total={}i,available={}i\n",
            meminfo("MemTotal:"),
            meminfo("MemAvailable:")
        ));
        conn.write_all(lines.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    drop(conn);
    drop(leaker);
    std::thread::sleep(Duration::from_secs(3));
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    let (_, _, incidents) = host_rows(&out);
    // the process's leak and the host's falling available memory are one incident (the same
    // evidence at the same time): the leaking process is its key or a related key
    let leaks = incidents_of(&incidents, "memory_leak", "open");
    assert_eq!(leaks.len(), 1, "one incident: {leaks:?}");
    let keys: Vec<String> =
        std::iter::once(format!("{}:{}", leaks[0]["dimension"].as_str().unwrap(), leaks[0]["key"].as_str().unwrap()))
            .chain(leaks[0]["related"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()))
            .collect();
    assert!(keys.contains(&"process:leakhost/leaker".to_string()), "{keys:?}");
    assert!(!keys.iter().any(|k| k.contains("steady")), "{keys:?}");
    // the process's own alert: its slope and time to exhaustion
    let text = std::fs::read_to_string(&out).unwrap();
    let alert: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "alert" && v["key"] == "leakhost/leaker" && v["kind"] == "memory_leak")
        .expect("an alert for the leaking process");
    let reason = alert["reason"].as_str().unwrap();
    assert!(reason.contains("exhausted in ~"), "{reason}");
    let slope = alert["value"].as_f64().unwrap();
    assert!((slope - 16.0 * 1048576.0).abs() < 4.0 * 1048576.0, "slope {slope} B/s, 16 MiB/s grown");
}

#[test]
fn telegraf_json_from_kafka_sums_exactly_and_counts_bad_messages() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let topic = common::unique("hostsjson");
    let brokers = common::kafka();
    // Telegraf's topic exists before flowshard reads it (the cluster does not auto-create)
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        rdkafka::config::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let made = futures_executor::block_on(admin.create_topics(
        &[rdkafka::admin::NewTopic::new(&topic, 2, rdkafka::admin::TopicReplication::Fixed(1))],
        &rdkafka::admin::AdminOptions::new(),
    ))
    .unwrap();
    assert!(made.iter().all(|r| r.is_ok()), "{made:?}");
    let (fs, out) = start(
        dir.path(),
        &format!(
            "[hosts.kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"{topic}\"\n[hosts.kafka.properties]\n\"auto.offset.reset\" = \"earliest\"\n"
        ),
    );
    let http = fs.http.clone().unwrap();
    let p: BaseProducer = rdkafka::config::ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut exp = Series::new();
    let mut metrics = 0u64;
    let hosts = ["k1", "k2"];
    let metric = |i: u64| {
        let h = hosts[(i % 2) as usize];
        let v = (i % 37) as f64;
        (
            h,
            v,
            format!(
                r#"{{"fields":{{"used":{v},"path_note":"x"}},"name":"disk","tags":{{"host":"{h}","path":"/var","rack":"r{i}"}},"timestamp":{}}}"#,
                now - 2
            ),
        )
    };
    let mut msgs = Vec::new();
    for i in 0..300u64 {
        let (h, v, m) = metric(i);
        add(&mut exp, h, "disk.used", "path=/var", v);
        metrics += 1;
        msgs.push(m);
    }
    for b in 0..20u64 {
        let mut items = Vec::new();
        for j in 0..10 {
            let (h, v, m) = metric(1000 + b * 10 + j);
            add(&mut exp, h, "disk.used", "path=/var", v);
            metrics += 1;
            items.push(m);
        }
        msgs.push(format!(r#"{{"metrics":[{}]}}"#, items.join(",")));
    }
    for bad in ["{not json", r#"{"fields":{"a":1}}"#, "[1,2,3]", r#"{"metrics":[{"name":"x"}]}"#, ""] {
        msgs.push(bad.to_string());
    }
    for m in &msgs {
        p.send(BaseRecord::<(), str>::to(&topic).payload(m.as_str())).unwrap();
        p.poll(Duration::ZERO);
    }
    p.flush(Duration::from_secs(20)).unwrap();
    wait_until("every JSON metric consumed", 90, || {
        metric_where(&http, "flowshard_host_input_total", "input=\"kafka\",what=\"json_metrics\"") as u64 >= metrics
    });
    std::thread::sleep(Duration::from_secs(3));
    let refused = metric_where(&http, "flowshard_host_refused_total", "input=\"kafka\",reason=\"json_bad_message\"");
    let (ok, _, err) = fs.stop();
    assert!(ok, "{err:?}");
    assert_eq!(refused, 5.0, "malformed messages counted");
    let (got, _, _) = host_rows(&out);
    let got: Series = got.into_iter().filter(|(k, _)| k.0.starts_with('k')).collect();
    assert_eq!(got.len(), exp.len(), "{got:?}");
    for (k, e) in &exp {
        let g = &got[k];
        assert_eq!((g.0, g.1, g.2, g.3), (e.0, e.1, e.2, e.3), "series {k:?}");
    }
}
