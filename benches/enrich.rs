//! Enrichment cost (criterion, in memory): one `Table::apply` (two lookups) per record on a
//! real GeoLite2-City database (from `.cache/py`, where `.ci/run` puts it) with a networks file
//! of 1,000 prefixes (and the same with the city records read), on random public IPv4 addresses (every lookup lands in a populated part of
//! the table); and the pipeline bench's per-record path without enrichment, with it on the same
//! six dimensions, and with it plus the five enrichment dimensions.

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::enrich::{load::load, EnrichConfig};
use flowshard::model::{Dimension, FlowRecord, Ip};
use flowshard::pipeline::{Engine, PipelineConfig};
use flowshard::tools::gen::encode::Flavor;
use std::sync::Arc;

mod common;

fn table(cities: bool) -> Option<flowshard::enrich::Table> {
    let db = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/py/_maxminddb_geolite2/GeoLite2-City.mmdb");
    if !db.is_file() {
        eprintln!(
            "enrich bench: {} missing (pip install --target .cache/py maxminddb-geolite2); skipped",
            db.display()
        );
        return None;
    }
    let dir = std::env::temp_dir().join(format!("flowshard-enrich-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let mut nets = String::from("prefix,name,boundary\n");
    let mut rng = common::Rng(0x1234_5678_9abc_def1);
    for i in 0..1000 {
        let a = std::net::Ipv4Addr::from((rng.next_u64() as u32) & 0xffff_ff00);
        nets.push_str(&format!("{a}/24,net{i},{}\n", if i % 3 == 0 { "external" } else { "internal" }));
    }
    nets.push_str("10.0.0.0/8,corp\n");
    let np = dir.join("networks.csv");
    std::fs::write(&np, nets).ok()?;
    let t = load(&EnrichConfig { geoip: Some(db), networks: Some(np), cities, ..EnrichConfig::default() }).ok()?;
    eprintln!("enrich bench: {} ranges ({} cities), loaded in {} ms", t.stats.ranges, t.stats.cities, t.stats.load_ms);
    Some(t)
}

fn benches(c: &mut Criterion) {
    let Some(t) = table(false) else { return };
    let t = Arc::new(t);
    let with_cities = table(true).map(Arc::new);
    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let mut recs: Vec<FlowRecord> = (0..4096)
        .map(|_| FlowRecord {
            src: Ip::from_v4(rng.next_u64() as u32 | 0x0100_0000),
            dst: Ip::from_v4(rng.next_u64() as u32 | 0x0100_0000),
            ..Default::default()
        })
        .collect();
    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(recs.len() as u64));
    group.bench_function("apply_random_public_v4", |b| {
        b.iter(|| {
            for r in recs.iter_mut() {
                t.apply(r);
            }
        })
    });
    if let Some(tc) = &with_cities {
        group.bench_function("apply_random_public_v4_with_cities", |b| {
            b.iter(|| {
                for r in recs.iter_mut() {
                    tc.apply(r);
                }
            })
        });
    }
    group.finish();

    let dgrams = common::ipfix_datagrams(2000, Flavor::Ipfix);
    let exporter = Ip::from_v4(0x7f00_0002);
    let mut group = c.benchmark_group("enrich_pipeline");
    group.throughput(Throughput::Elements(2000 * 30));
    group.sample_size(20);
    let six = PipelineConfig::default().agg.dimensions;
    let mut eleven = six.clone();
    eleven.extend([
        Dimension::SrcCountry,
        Dimension::DstCountry,
        Dimension::SrcNet,
        Dimension::DstNet,
        Dimension::Boundary,
    ]);
    for (label, enrich, dims) in [
        ("per_record_path_plain", false, six.clone()),
        ("per_record_path_enriched", true, six),
        ("per_record_path_enriched_11_dimensions", true, eleven),
    ] {
        let mut cfg = PipelineConfig { detect: Some(Default::default()), ..Default::default() };
        cfg.agg.dimensions = dims;
        cfg.enrich = enrich.then(|| t.clone());
        let mut e = Engine::new(&cfg, 1);
        let mut out = Vec::new();
        let second = 1_700_000_000u64;
        for g in &dgrams {
            e.feed(g, exporter, 4739, second, &mut out);
        }
        group.bench_function(label, |b| {
            b.iter(|| {
                for g in &dgrams {
                    e.feed(g, exporter, 4739, second, &mut out);
                }
                out.clear();
            })
        });
    }
    group.finish();
}

criterion_group!(enrich, benches);
criterion_main!(enrich);
