//! Layer-1 detector throughput on one core: single metric updates (`MetricState::update`, what
//! `backtest` runs), whole keys (all five metrics of 10,000 tracked sources per second, what an
//! owner shard runs at the end of each second), and the incident bookkeeping of the I/O core
//! (1,000 alerts of one second correlated into incidents, then resolved).
#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::aggregate::Row;
use flowshard::detect::{DetectConfig, DimDetector, MetricState};
use flowshard::model::{Dimension, Ip, Key};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let cfg = DetectConfig::default();
    let mut g = c.benchmark_group("detect");
    let n = 100_000u64;
    g.throughput(Throughput::Elements(n));
    g.bench_function("metric_update", |b| {
        let mut states = vec![MetricState::default(); 1000];
        let mut second = 0u64;
        b.iter(|| {
            for i in 0..n {
                let s = &mut states[(i % 1000) as usize];
                second += 1;
                let x = 1e6 + ((i * 7919) % 100_000) as f64;
                black_box(s.update(&cfg, 0, x, second / 1000, Default::default()));
            }
        })
    });
    let keys = 10_000u32;
    g.throughput(Throughput::Elements(keys as u64 * 5));
    g.bench_function("dim_detector_second_10k_keys_5_metrics", |b| {
        let mut d = DimDetector::new(Dimension::SrcIp, &cfg);
        let mut alerts = Vec::new();
        let mut second = 1_700_000_000u64;
        b.iter(|| {
            second += 1;
            d.begin_second(second);
            for k in 0..keys {
                let row = Row {
                    key: Key::new(Ip::from_v4(0x0a00_0000 + k), 0),
                    bytes: 100_000 + (k as u64 * 31 + second) % 5000,
                    packets: 100,
                    flows: 10,
                    ..Default::default()
                };
                d.observe(&row, Some(3), second, &cfg);
            }
            d.end_second(second, &cfg, &mut alerts);
            alerts.clear();
        })
    });
    let alerts: Vec<flowshard::alert::AlertDoc> = (0..1000u32)
        .map(|i| flowshard::alert::AlertDoc {
            layer: 1,
            second: 1_700_000_000,
            dimension: ["src_ip", "dst_ip", "dst_port", "total"][(i % 4) as usize].into(),
            key: format!("10.0.{}.{}", i / 250, i % 250),
            metric: "bytes".into(),
            kind: "spike".into(),
            value: 1e6 * (1 + i % 7) as f64,
            expected: 1e3,
            score: 0.99,
            z: 6.0,
            reason: String::new(),
        })
        .collect();
    g.throughput(Throughput::Elements(alerts.len() as u64));
    g.bench_function("incidents_1000_alerts_open_and_resolve", |b| {
        let cfg = flowshard::alert::IncidentConfig::default();
        let mut ev = Vec::new();
        b.iter(|| {
            let mut inc = flowshard::alert::Incidents::new(&cfg);
            ev.clear();
            inc.observe(&alerts, 1_700_000_000, &mut ev);
            inc.tick(1_700_000_000 + 300, &mut ev);
            black_box(ev.len())
        })
    });
    g.finish();
}

criterion_group!(detect, benches);
criterion_main!(detect);
