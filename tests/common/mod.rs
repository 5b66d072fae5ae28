//! Helpers shared by the integration tests: where the captures are, their truth, and a
//! running `flowshard` process.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The capture folder (`../shared/data/captures`, or `$FLOWSHARD_CAPTURES`).
pub fn captures() -> PathBuf {
    if let Ok(p) = std::env::var("FLOWSHARD_CAPTURES") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/captures")
}

/// `truth.json`.
pub fn truth() -> serde_json::Value {
    let p = captures().join("truth.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).expect("truth.json parses")
}

/// The flow captures named in truth.json.
pub fn capture_names() -> Vec<String> {
    truth().as_object().expect("object").keys().cloned().collect()
}

/// The built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_flowshard")
}

/// Sums JSON-lines rollups: (dimension, key) → bytes, plus total bytes/packets/flows of the
/// `total` dimension.
#[derive(Default, Debug)]
pub struct Sums {
    pub by_key: BTreeMap<(String, String), u64>,
    pub total_bytes: u64,
    pub total_packets: u64,
    pub total_flows: u64,
    pub alerts: Vec<serde_json::Value>,
    pub incidents: Vec<serde_json::Value>,
    pub results: Vec<serde_json::Value>,
}

pub fn sum_lines(text: &str) -> Sums {
    let mut s = Sums::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}"));
        match v["type"].as_str() {
            Some("rollup") => {
                let dim = v["dimension"].as_str().unwrap_or_default().to_string();
                let key = v["key"].as_str().unwrap_or_default().to_string();
                let b = v["bytes"].as_u64().unwrap_or(0);
                if dim == "total" {
                    s.total_bytes += b;
                    s.total_packets += v["packets"].as_u64().unwrap_or(0);
                    s.total_flows += v["flows"].as_u64().unwrap_or(0);
                }
                *s.by_key.entry((dim, key)).or_default() += b;
            }
            Some("alert") => s.alerts.push(v),
            Some("incident") => s.incidents.push(v),
            Some("anomaly_result") => s.results.push(v),
            Some("host") => {}
            _ => panic!("unknown line {line}"),
        }
    }
    s
}

/// The top `n` keys of a dimension by bytes (ties by key).
pub fn top(s: &Sums, dim: &str, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> =
        s.by_key.iter().filter(|((d, k), _)| d == dim && k != "other").map(|((_, k), b)| (k.clone(), *b)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// A running `flowshard run`.
pub struct Running {
    pub child: Child,
    pub addr: String,
    /// Every bound address of the ready line (flow listeners, then `[hosts]` sockets).
    pub addrs: Vec<String>,
    pub http: Option<String>,
    stderr_lines: std::sync::mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
}

impl Running {
    /// Starts `flowshard run` on an ephemeral loopback port with `shards` shards.
    pub fn start(shards: usize, state_dir: &std::path::Path, extra: &[&str]) -> Running {
        let mut child = Command::new(bin())
            .args(["run", "--listen", "127.0.0.1:0", "--print-ready", "--no-pin", "--shards", &shards.to_string()])
            .args(if extra.contains(&"--http") { &[][..] } else { &["--http", "127.0.0.1:0"][..] })
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flowshard");
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut BufReader::new(out), &mut s).expect("read stdout");
            s
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (addr, http, addrs) = loop {
            let l = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("flowshard did not become ready");
            if let Some(a) = l.strip_prefix("ready ") {
                let udp = a.split_whitespace().next().expect("address").to_string();
                let http = a.split_whitespace().find_map(|w| w.strip_prefix("http=")).map(str::to_string);
                let all = a.split_whitespace().filter(|w| !w.starts_with("http=")).map(str::to_string).collect();
                break (udp, http, all);
            }
        };
        // Executors connect their exchange right after binding; give them a moment.
        std::thread::sleep(Duration::from_millis(300));
        Running { child, addr, addrs, http, stderr_lines: rx, stdout }
    }

    /// Sends SIGINT, waits for exit; returns (exit ok, stdout, stderr lines).
    pub fn stop(self) -> (bool, String, Vec<String>) {
        // SAFETY: plain kill(2) on our child's pid.
        unsafe {
            libc_kill(self.child.id() as i32, 2);
        }
        let mut child = self.child;
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let stacks = flowshard_frames(child.id());
                let _ = child.kill();
                let err: Vec<String> = self.stderr_lines.try_iter().collect();
                panic!(
                    "flowshard did not stop within 30 s of SIGINT; its threads:\n{stacks}\nits log:\n{}",
                    err.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = self.stdout.join().expect("stdout thread");
        let err: Vec<String> = self.stderr_lines.try_iter().collect();
        (status.success(), out, err)
    }
}

/// Where each thread of a hung process is, for the failure message: thread names and their
/// flowshard frames, from gdb when it is installed.
pub fn flowshard_frames(pid: u32) -> String {
    let Ok(o) = Command::new("gdb").args(["-p", &pid.to_string(), "-batch", "-ex", "thread apply all bt 30"]).output()
    else {
        return "(gdb not installed)".into();
    };
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("Thread ") || l.contains(" flowshard::"))
        .map(|l| l.chars().take(200).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends the UDP payloads of a capture from a loopback source address.
pub fn send_capture(path: &std::path::Path, to: &str, from: &str, filter: impl Fn(&[u8]) -> bool) -> u64 {
    let data = std::fs::read(path).expect("read capture");
    let mut rd = flowshard::tools::replay::pcap::PcapReader::new(&data).expect("pcap");
    let sock = std::net::UdpSocket::bind((from, 0)).expect("bind sender");
    let mut n = 0;
    while let Some(p) = rd.next_udp().expect("pcap") {
        if !filter(p.payload) {
            continue;
        }
        sock.send_to(p.payload, to).expect("send");
        n += 1;
        if n % 32 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    n
}

/// The JSON summary line of a run (last line starting with '{').
pub fn summary(err: &[String]) -> serde_json::Value {
    let l = err.iter().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no summary line in {err:?}"));
    serde_json::from_str(l).expect("summary JSON")
}

/// A plain HTTP/1.0 GET: (status, body).
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect http");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status: u16 = resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
    (status, body)
}

/// A unique name for this test's topics, keys and indices.
pub fn unique(tag: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("t{tag}{}x{t}", std::process::id())
}

/// One row of a metric family (`labels` as written inside the braces; "" for none).
pub fn metric(http: &str, name: &str, labels: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics", None);
    body.lines()
        .find(|l| {
            l.starts_with(&format!("{name}{{{labels}}} ")) || (labels.is_empty() && l.starts_with(&format!("{name} ")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Sum of every row of a metric family.
pub fn metric_sum(http: &str, name: &str) -> f64 {
    let (_, body) = http_get(http, "/metrics", None);
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Polls `f` until it holds; panics naming `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Deletes a test's OpenSearch indices (`<prefix>-*`), so that repeated runs do not pile up
/// shards.
pub fn opensearch_cleanup(url: &str, prefix: &str) {
    let _ = reqwest::blocking::Client::new().delete(format!("{url}/{prefix}-*")).send();
}

/// The local services of `scripts/services.sh` (or the addresses in the environment). The
/// suites that use them (`sinks`, `layers`) are built only with `--features service-tests`,
/// which `scripts/test` turns on after `scripts/services.sh up`.
fn env_or(name: &str, dflt: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| dflt.to_string())
}

/// Kafka bootstrap servers (`FLOWSHARD_KAFKA`).
pub fn kafka() -> String {
    env_or("FLOWSHARD_KAFKA", "127.0.0.1:19092")
}

/// Valkey URL (`FLOWSHARD_VALKEY`).
pub fn valkey() -> String {
    env_or("FLOWSHARD_VALKEY", "redis://127.0.0.1:16379")
}

/// OpenSearch URL (`FLOWSHARD_OPENSEARCH`).
pub fn opensearch() -> String {
    env_or("FLOWSHARD_OPENSEARCH", "http://127.0.0.1:19200")
}

/// Runs `scripts/services.sh ARGS` (kill, up, …) and asserts it succeeded.
pub fn services(args: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh");
    let st = Command::new(script).args(args).status().unwrap();
    assert!(st.success(), "scripts/services.sh {args:?} failed");
}

/// Alertmanager URL (`FLOWSHARD_ALERTMANAGER`).
pub fn alertmanager() -> String {
    env_or("FLOWSHARD_ALERTMANAGER", "http://127.0.0.1:19393")
}
