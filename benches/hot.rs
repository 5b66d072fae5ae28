//! Query latency of the in-memory hot window behind the HTTP API: 300 s of 5,000 rollups/s
//! (six dimensions, heavy-tailed keys), top-10 over 300 s and over 60 s, and a 300-point series.
#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion};
use flowshard::http::HotWindow;
use flowshard::model::{Dimension, Ip, Key, Rollup};
use flowshard::pipeline::SecondOutput;
use std::hint::black_box;

fn window() -> HotWindow {
    // the default dimensions (total, src_ip, dst_ip, dst_port, proto, exporter_in_if)
    let dims = flowshard::aggregate::AggConfig::default().dimensions;
    let mut h = HotWindow::default();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for s in 0..300u64 {
        let mut so = SecondOutput { second: 1_700_000_000 + s, ..Default::default() };
        for i in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = dims[i as usize % dims.len()];
            let rank = (x % 1000) * (x % 1000) / 1000; // skewed
            let key = Key::new(Ip::from_v4(0x0a00_0000 + rank as u32), 0);
            so.rollups.push(Rollup::new(so.second, d, key, 1000 + x % 100_000, 10, 1));
        }
        h.push(&so, &[]);
    }
    h
}

fn benches(c: &mut Criterion) {
    let h = window();
    let mut g = c.benchmark_group("hot_window");
    g.bench_function("top10_dst_ip_300s", |b| b.iter(|| black_box(h.top(Dimension::DstIp, 0, 300, 10))));
    g.bench_function("top10_dst_ip_60s", |b| b.iter(|| black_box(h.top(Dimension::DstIp, 0, 60, 10))));
    let k = Key::new(Ip::from_v4(0x0a00_0001), 0);
    g.bench_function("series_300_points", |b| b.iter(|| black_box(h.series(Dimension::DstIp, &k, 300))));
    g.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);
