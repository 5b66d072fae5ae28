//! Layer-3 cost on one core: one entity-interval (score + update of one thresholded forest, the
//! defaults: shingle 8, 50 trees, sample 256, 4 features) with no bounding boxes cached (the
//! default, as the plugin runs entity models) and with all cached; and the bytes one model holds
//! (printed once), from which entities per GiB and the entities one core keeps current at a 60-s
//! and a 10-s interval follow (README); and a checkpoint and a restore of 200 warm models (the
//! layer-3 thread pauses for them; printed: bytes on disk per model).
#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::detect::layer3::{Forest, Layer3, Layer3Engine, SourceRow, FEATURES};
use flowshard::model::Ip;
use std::hint::black_box;

fn warm(cfg: &Layer3) -> (Forest, u64) {
    let mut f = Forest::new(cfg, 7).expect("forest");
    let mut t = 0u64;
    for _ in 0..600 {
        t += 1;
        f.process(&point(t), t, cfg).expect("process");
    }
    (f, t)
}

fn point(t: u64) -> [f32; FEATURES] {
    let w = ((t * 7919) % 101) as f32 / 101.0;
    [1e6 * (1.0 + 0.2 * w), 900.0 + 50.0 * w, 40.0 + 5.0 * w, 6.0 + w, 1.0 + w / 4.0]
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("layer3");
    g.throughput(Throughput::Elements(1));
    for (name, cache) in [("entity_interval_no_box_cache", 0.0), ("entity_interval_full_box_cache", 1.0)] {
        let cfg = Layer3 { bounding_box_cache: cache, ..Layer3::default() };
        let (mut f, mut t) = warm(&cfg);
        eprintln!("layer3 {name}: {} bytes per model (the crate's estimate)", f.size());
        g.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                black_box(f.process(&point(t), t, &cfg).expect("process"));
            })
        });
    }
    g.finish();
    checkpoints(c);
}

/// 200 source addresses, 50 intervals each (past warm-up), then checkpoint and restore.
fn checkpoints(c: &mut Criterion) {
    const MODELS: u128 = 200;
    let cfg = Layer3::default();
    let mut eng = Layer3Engine::new(&cfg);
    let mut out = Vec::new();
    for i in 0..50u64 {
        let rows: Vec<SourceRow> = (0..MODELS)
            .map(|h| {
                let p = point(i * 131 + h as u64);
                SourceRow::new(Ip(0xc000_0200 + h), p.map(f64::from))
            })
            .collect();
        eng.observe_interval(1_800_000_000 + i * cfg.interval_s, &rows, 0, &mut out).expect("observe");
        out.clear();
    }
    let bytes = eng.checkpoint().expect("checkpoint");
    eprintln!(
        "layer3 checkpoint: {} models, {} bytes, {} bytes per model on disk",
        eng.entities(),
        bytes.len(),
        bytes.len() / eng.entities().max(1)
    );
    let mut g = c.benchmark_group("layer3_checkpoint");
    g.sample_size(10);
    g.throughput(Throughput::Elements(eng.entities() as u64));
    g.bench_function("checkpoint_200_models", |b| b.iter(|| black_box(eng.checkpoint().expect("checkpoint").len())));
    g.bench_function("restore_200_models", |b| {
        b.iter(|| black_box(Layer3Engine::new(&cfg).restore(&bytes).expect("restore")))
    });
    g.finish();
}

criterion_group!(layer3, benches);
criterion_main!(layer3);
