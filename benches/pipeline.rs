//! Decode + aggregate + detect on one core (criterion, in memory): synthetic IPFIX datagrams
//! with heavy-tailed keys through the same `Engine` the replay uses (1 shard), with the default
//! six dimensions and layer-1 detection, closing a window every 10,000 records (≈100:1
//! reduction on the busiest dimensions).

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::model::Ip;
use flowshard::pipeline::{Engine, PipelineConfig};
use flowshard::tools::gen::encode::Flavor;

mod common;

fn benches(c: &mut Criterion) {
    let dgrams = common::ipfix_datagrams(2000, Flavor::Ipfix);
    let records = 2000 * 30u64;
    let exporter = Ip::from_v4(0x7f00_0002);
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records));
    group.sample_size(20);
    // (label, detection on, datagrams per window): 333 datagrams ≈ 10k records per second
    // (a window close every 10k records: the close, merge and detector costs dominate);
    // 1,000,000 = the per-record path alone (no window closes inside the measurement).
    for (label, detect, per_window) in [
        ("decode_aggregate_detect_10k_per_s", true, 333usize),
        ("decode_aggregate_10k_per_s", false, 333),
        ("per_record_path", true, 1_000_000),
    ] {
        let cfg = PipelineConfig { detect: detect.then(Default::default), ..Default::default() };
        let mut e = Engine::new(&cfg, 1);
        let mut out = Vec::new();
        let mut second = 1_700_000_000u64;
        // warm up templates and detector tables
        for g in &dgrams {
            e.feed(g, exporter, 4739, second, &mut out);
        }
        group.bench_function(label, |b| {
            b.iter(|| {
                for (i, g) in dgrams.iter().enumerate() {
                    if i % per_window == 0 && per_window < 1_000_000 {
                        second += 1;
                    }
                    e.feed(g, exporter, 4739, second, &mut out);
                }
                out.clear();
            })
        });
    }
    group.finish();
}

criterion_group!(pipeline, benches);
criterion_main!(pipeline);
