//! Hot-window benchmarks against a real Valkey (`scripts/services.sh up`; address from
//! `FLOWSHARD_VALKEY`, default redis://127.0.0.1:16379). Skips with a message when none is
//! reachable.
//!
//! 1. Writes 300 s of 5,000 rollups/s (six dimensions, Zipf keys, each key once per second and
//!    dimension) with the sink's own pipelined writer, timing each second's write.
//! 2. Queries the two hot-window questions 2,000 times each: top 10 of `dst_ip` by bytes over
//!    300 s, and the 300-point series of one key; p50/p99/max.
//! 3. Time from a flow's arrival at `flowshard run` to its rollup being visible in Valkey: one
//!    IPFIX record with a fresh destination per sample, polled every 0.5 ms.
//!
//! `cargo bench --bench sinks`
#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use flowshard::model::time::now_ms;
use flowshard::model::{FlowRecord, Ip};
use flowshard::sink::valkey::HotBatch;
use flowshard::sink::valkey::{self, Keys};
use flowshard::tools::gen::encode::{message, Export, Flavor};
use flowshard::tools::gen::{Rng, Zipf};
use hdrhistogram::Histogram;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pct(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (n={})",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

fn main() {
    // `cargo test --all-targets` runs bench binaries without `--bench`: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("sinks bench: run with `cargo bench --bench sinks`");
        return;
    }
    let url = std::env::var("FLOWSHARD_VALKEY").unwrap_or_else(|_| "redis://127.0.0.1:16379".into());
    let Ok(mut con) = valkey::connect(&url) else {
        println!("sinks bench: no Valkey at {url} (scripts/services.sh up): skipped");
        return;
    };
    let keys = Keys { prefix: format!("bench{}", std::process::id()) };
    let dims = ["total", "src_ip", "dst_ip", "dst_port", "proto", "exporter_in_if"];
    let zipf = Zipf::new(20_000, 1.1);
    let mut rng = Rng::new(7);
    let now = now_ms() / 1000;
    let mut write = Histogram::<u64>::new(3).unwrap();
    let t0 = Instant::now();
    let mut rows_total = 0u64;
    for s in now - 299..=now {
        let mut b = HotBatch {
            second: s,
            rows: Vec::with_capacity(5000),
            alerts: Vec::new(),
            incidents: Vec::new(),
            names: Vec::new(),
        };
        for (di, d) in dims.iter().enumerate() {
            let want = if di == 0 { 1 } else { 999 };
            let mut seen = HashSet::new();
            while seen.len() < want {
                let k = zipf.sample(&mut rng);
                if seen.insert(k) {
                    let key = match *d {
                        "total" => "total".to_string(),
                        "dst_port" => format!("{}/tcp", k % 65536),
                        "proto" => format!("{}", k % 256),
                        "exporter_in_if" => format!("10.0.0.{}:{}", k % 200, k / 200),
                        _ => format!("10.{}.{}.{}", k >> 16 & 255, k >> 8 & 255, k & 255),
                    };
                    let bytes = 1_000_000 / (k as u64 + 1) + rng.next_u64() % 1000;
                    b.rows.push((d, key, bytes, bytes / 800 + 1, 1));
                }
            }
        }
        rows_total += b.rows.len() as u64;
        let t = Instant::now();
        valkey::write_batch(&mut con, &keys, &b).unwrap();
        write.record(t.elapsed().as_micros() as u64).unwrap();
    }
    let el = t0.elapsed();
    println!(
        "valkey write: 300 s x {} rollups/s in {:.2} s ({:.0} rollups/s written); per-second batch {}",
        rows_total / 300,
        el.as_secs_f64(),
        rows_total as f64 / el.as_secs_f64(),
        pct(&write)
    );
    let card: u64 = redis::cmd("ZCARD").arg(keys.top("dst_ip")).query(&mut con).unwrap();
    println!("keys in the 300-s dst_ip index: {card}");
    let mut top = Histogram::<u64>::new(3).unwrap();
    let mut series = Histogram::<u64>::new(3).unwrap();
    for i in 0..2000 {
        let t = Instant::now();
        let r = valkey::top(&mut con, &keys, "dst_ip", 10).unwrap();
        top.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        assert_eq!(r.len(), 10);
        let key = &r[i % 10].0;
        let t = Instant::now();
        let pts = valkey::series(&mut con, &keys, "dst_ip", key, now).unwrap();
        series.record(t.elapsed().as_micros().max(1) as u64).unwrap();
        assert_eq!(pts.len(), 300);
    }
    println!("query top-10 dst_ip over 300 s: {}", pct(&top));
    println!("query 300-point series:         {}", pct(&series));
    // Clean up the bench keys.
    let ks: Vec<String> = redis::cmd("KEYS").arg(format!("{}:*", keys.prefix)).query(&mut con).unwrap();
    for c in ks.chunks(1000) {
        redis::cmd("DEL").arg(c).query::<()>(&mut con).unwrap();
    }
    visibility(&url);
}

/// Arrival → visible in Valkey, through a real `flowshard run`.
fn visibility(url: &str) {
    let prefix = format!("vis{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowshard"))
        .args(["run", "--listen", "127.0.0.1:0", "--print-ready", "--no-pin", "--shards", "1", "--no-http"])
        .args(["--state-dir", &std::env::temp_dir().join(&prefix).to_string_lossy()])
        .args(["--valkey", url, "--appliance", &prefix])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let mut lines = err.lines();
    let addr = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(a) = l.strip_prefix("ready ") {
            break a.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    std::thread::sleep(Duration::from_millis(500));
    let mut con = valkey::connect(url).unwrap();
    let keys = Keys { prefix: "fs".into() };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    let mut rng = Rng::new(now_ms());
    let mut buf = Vec::new();
    for i in 0..30u32 {
        // Arrive at a random point within a second.
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 1000));
        let dst = Ip::from_v4(0xC612_0000 | i << 8 | (rng.next_u64() as u32 & 0xff)); // 198.18.i.x
        let r = FlowRecord {
            src: Ip::from_v4(0x0A00_0001),
            dst,
            proto: 6,
            bytes: 1000,
            packets: 1,
            dst_port: 443,
            ..Default::default()
        };
        buf.clear();
        let ms = now_ms();
        message(&mut buf, &Export { flavor: Flavor::Ipfix, domain: 1, seq: i, now_ms: ms }, true, false, &[r]);
        let key = dst.to_string();
        let t = Instant::now();
        sock.send_to(&buf, &addr).unwrap();
        loop {
            let s: Option<f64> = redis::cmd("ZSCORE").arg(keys.top("dst_ip")).arg(&key).query(&mut con).unwrap();
            if s.is_some() {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                panic!("{key} not visible in Valkey after 10 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        h.record(t.elapsed().as_micros() as u64).unwrap();
    }
    println!("arrival -> visible in Valkey (flowshard run, 1 shard): {}", pct(&h));
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}
