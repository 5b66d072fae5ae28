//! Raw-flows topic cost (criterion, in memory): what it adds on the shard (the 1-in-1 copy of
//! every record after decoding, `ShardCore::ingest` with the tap off vs on, IPFIX datagrams of
//! 30 records), and what the I/O core's encoder spends per record (`encode_batch` of a
//! 4,096-record batch with countries and network names) and a replay spends decoding it.
//!
//! `cargo bench --bench flows`

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::model::{country_code, names, FlowRecord, Ip};
use flowshard::pipeline::{PipelineConfig, ShardCore, TapBatch};
use flowshard::sink::flows::{decode_batch, encode_batch, NameCache};
use flowshard::sink::frame::FrameBuilder;
use flowshard::tools::gen::encode::Flavor;

mod common;

fn benches(c: &mut Criterion) {
    let dgrams = common::ipfix_datagrams(2000, Flavor::Ipfix);
    let exporter = Ip::from_v4(0x7f00_0002);
    let mut group = c.benchmark_group("flows_shard");
    group.throughput(Throughput::Elements(2000 * 30));
    group.sample_size(20);
    for (label, tap) in [("ingest_tap_off", 0u32), ("ingest_tap_every_record", 1)] {
        let cfg = PipelineConfig::default();
        let mut core = ShardCore::new(&cfg, 0, 1);
        core.set_tap(tap);
        let mut taken = Vec::new();
        group.bench_function(label, |b| {
            b.iter(|| {
                for g in &dgrams {
                    let _ = core.ingest(g, exporter, 1_700_000_000);
                    core.take_tapped(false, &mut taken);
                    for b in taken.drain(..) {
                        core.recycle_tapped(b.records); // as the encoder hands them back
                    }
                }
                core.take_tapped(true, &mut taken);
                for b in taken.drain(..) {
                    core.recycle_tapped(b.records);
                }
            })
        });
    }
    group.finish();

    let mut rng = common::Rng(0x9e37_79b9_7f4a_7c15);
    let net = names::intern("bench-net").unwrap_or(0);
    let records: Vec<FlowRecord> = (0..4096)
        .map(|i| FlowRecord {
            exporter,
            src: Ip::from_v4(rng.next_u64() as u32),
            dst: Ip::from_v4(rng.next_u64() as u32),
            src_port: rng.next_u64() as u16,
            dst_port: 443,
            proto: 6,
            tcp_flags: 0x1b,
            bytes: rng.next_u64() % 1_000_000,
            packets: rng.next_u64() % 1000,
            in_if: 3,
            out_if: 7,
            src_as: 64500,
            dst_as: 15169,
            sampling_rate: 1,
            duration_ms: 30_000,
            src_country: country_code("DE"),
            dst_country: country_code("US"),
            src_net: if i % 2 == 0 { net } else { 0 },
            boundary: 3,
            ..Default::default()
        })
        .collect();
    let batch = TapBatch { shard: 0, second: 1_700_000_000, sampling: 1, records };
    let mut group = c.benchmark_group("flows_io");
    group.throughput(Throughput::Elements(batch.records.len() as u64));
    let mut bufs = Default::default();
    let mut cache = NameCache::default();
    group.bench_function("encode_batch", |b| {
        b.iter(|| {
            let mut fb = FrameBuilder::new();
            encode_batch(&mut fb, &batch, "bench", &mut bufs, &mut cache);
            fb.finish()
        })
    });
    let mut fb = FrameBuilder::new();
    encode_batch(&mut fb, &batch, "bench", &mut bufs, &mut cache);
    let frame = fb.finish();
    let msgs = flowshard::sink::frame::decode(&frame).unwrap_or_default();
    let bytes: usize = msgs.iter().map(|m| m.value.len()).sum();
    eprintln!("flows bench: {} messages, {:.1} bytes per record", msgs.len(), bytes as f64 / 4096.0);
    let mut out = Vec::with_capacity(4096);
    group.bench_function("decode_batch", |b| {
        b.iter(|| {
            out.clear();
            for m in &msgs {
                let _ = decode_batch(m.value, &mut out);
            }
        })
    });
    group.finish();
}

criterion_group!(flows, benches);
criterion_main!(flows);
