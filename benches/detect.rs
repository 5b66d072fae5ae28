//! Layer-1 detector throughput on one core: single metric updates (`MetricState::update`, what
//! `backtest` runs) and whole keys (all metrics of 10,000 tracked keys per second, what an
//! owner shard runs at the end of each second).
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
    g.throughput(Throughput::Elements(keys as u64 * 4));
    g.bench_function("dim_detector_second_10k_keys_4_metrics", |b| {
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
    g.finish();
}

criterion_group!(detect, benches);
criterion_main!(detect);
