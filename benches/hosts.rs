//! Host-input cost per core (criterion, in memory, the shards' and the ingest threads' own
//! code): line-protocol samples (Telegraf-shaped lines, 200 hosts × 8 metrics), Prometheus
//! remote-write samples (snappy + protobuf decode included; node_exporter-shaped series),
//! syslog messages (RFC 3164 and 5424, pattern hashing included), and Telegraf JSON messages
//! parsed with simd-json vs serde_json. Each into a [`HostCore`] whose window is closed every
//! iteration, as a shard does once a second.

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::decode::lineproto::Precision;
use flowshard::decode::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use flowshard::pipeline::host::{HostCore, HostPathConfig};

const NOW: u64 = 1_700_000_000;

fn lines() -> (Vec<u8>, u64) {
    let mut s = String::new();
    let mut n = 0;
    for h in 0..200 {
        for (m, f) in [
            ("cpu", "usage_idle"),
            ("cpu", "usage_user"),
            ("mem", "available"),
            ("mem", "used"),
            ("disk", "free"),
            ("net", "bytes_recv"),
            ("net", "bytes_sent"),
            ("system", "load1"),
        ] {
            let tags = match m {
                "cpu" => ",cpu=cpu-total",
                "disk" => ",path=/,device=sda1,fstype=ext4",
                "net" => ",interface=eth0",
                _ => "",
            };
            s.push_str(&format!("{m},host=web{h:03}{tags} {f}={}.5 {}000000000\n", h * 7 % 100, NOW));
            n += 1;
        }
    }
    (s.into_bytes(), n)
}

fn remote() -> (Vec<u8>, u64) {
    let mut req = WriteRequest::default();
    for h in 0..50 {
        for cpu in 0..8 {
            for mode in ["idle", "user", "system", "iowait"] {
                req.timeseries.push(TimeSeries {
                    labels: vec![
                        Label { name: "__name__".into(), value: "node_cpu_seconds_total".into() },
                        Label { name: "cpu".into(), value: cpu.to_string() },
                        Label { name: "instance".into(), value: format!("node{h}:9100") },
                        Label { name: "job".into(), value: "node".into() },
                        Label { name: "mode".into(), value: mode.into() },
                    ],
                    samples: vec![Sample { value: 12345.67 + f64::from(cpu), timestamp: NOW as i64 * 1000 }],
                });
            }
        }
    }
    let n = req.timeseries.len() as u64;
    (remote_write::encode(&req), n)
}

fn syslog() -> Vec<Vec<u8>> {
    (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                format!(
                    "<38>Dec  3 12:00:00 host{} sshd[{}]: Failed password for user{} from 10.0.{}.{} port {} ssh2",
                    i % 50,
                    1000 + i,
                    i % 7,
                    i % 200,
                    i % 250,
                    30000 + i
                )
            } else {
                format!(
                    "<14>1 2026-12-03T12:00:00.123Z host{} app - ID47 - request {} served in {} ms",
                    i % 50,
                    i,
                    i % 97
                )
            }
            .into_bytes()
        })
        .collect()
}

fn json() -> Vec<Vec<u8>> {
    (0..1000)
        .map(|i| {
            format!(
                r#"{{"fields":{{"usage_idle":{}.5,"usage_user":1.25,"usage_system":0.5}},"name":"cpu","tags":{{"cpu":"cpu-total","host":"web{}"}},"timestamp":{NOW}}}"#,
                i % 100,
                i % 200
            )
            .into_bytes()
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let cfg = HostPathConfig::default();
    let mut g = c.benchmark_group("hosts");
    let (lp, n) = lines();
    g.throughput(Throughput::Elements(n));
    g.bench_function("line_protocol_samples", |b| {
        let mut core = HostCore::new(&cfg, 0);
        b.iter(|| {
            core.lines(&lp, Precision::Ns, b"127.0.0.1", NOW);
            core.close(NOW)
        })
    });
    let (rw, n) = remote();
    g.throughput(Throughput::Elements(n));
    g.bench_function("remote_write_samples", |b| {
        let mut core = HostCore::new(&cfg, 0);
        b.iter(|| {
            let req = remote_write::decode(&rw, 32 << 20).expect("valid");
            let mut labels: Vec<(&[u8], &[u8])> = Vec::new();
            for ts in &req.timeseries {
                labels.clear();
                labels.extend(ts.labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())));
                for s in &ts.samples {
                    core.sample(&labels, s.value, s.timestamp, b"127.0.0.1", NOW);
                }
            }
            core.close(NOW)
        })
    });
    let msgs = syslog();
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("syslog_messages", |b| {
        let mut core = HostCore::new(&cfg, 0);
        b.iter(|| {
            for m in &msgs {
                core.syslog(m, b"127.0.0.1", NOW);
            }
            core.close(NOW)
        })
    });
    let js = json();
    g.throughput(Throughput::Elements(js.len() as u64));
    g.bench_function("json_messages_simd_json_into_core", |b| {
        let mut core = HostCore::new(&cfg, 0);
        let mut buf = Vec::new();
        b.iter(|| {
            for m in &js {
                buf.clear();
                buf.extend_from_slice(m);
                core.json(&mut buf, b"127.0.0.1", NOW);
            }
            core.close(NOW)
        })
    });
    // one metric a message (Telegraf's default) and 100 a message (batch format)
    let batches: Vec<Vec<u8>> = js
        .chunks(100)
        .map(|c| {
            let items: Vec<&str> = c.iter().map(|m| std::str::from_utf8(m).expect("utf8")).collect();
            format!(r#"{{"metrics":[{}]}}"#, items.join(",")).into_bytes()
        })
        .collect();
    for (label, set) in [("single", &js), ("batch100", &batches)] {
        g.bench_function(format!("json_{label}_simd_json"), |b| {
            let mut buf = Vec::new();
            b.iter(|| {
                let mut n = 0;
                for m in set.iter() {
                    buf.clear();
                    buf.extend_from_slice(m);
                    let _ = flowshard::decode::json_metrics::parse(&mut buf, |m| n += m.fields.len() + m.tags.len());
                }
                n
            })
        });
        g.bench_function(format!("json_{label}_serde_json"), |b| {
            b.iter(|| {
                let mut n = 0;
                for m in set.iter() {
                    let _ = flowshard::decode::json_metrics::parse_serde(m, |m| n += m.fields.len() + m.tags.len());
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(hosts, benches);
criterion_main!(hosts);
