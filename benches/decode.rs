//! Decode throughput per protocol, records per second on one core (criterion, in memory):
//! real captures from softflowd/pmacct, and synthetic IPFIX/v9 datagrams of 30 records.

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::decode::{Decoder, DecoderConfig};
use flowshard::model::{FlowRecord, Ip};
use flowshard::tools::gen::encode::Flavor;
use flowshard::tools::replay::pcap::PcapReader;
use std::hint::black_box;

mod common;

fn capture(name: &str) -> Vec<(Ip, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/captures");
    let data = std::fs::read(dir.join(name)).unwrap_or_default();
    let mut out = Vec::new();
    if let Ok(mut rd) = PcapReader::new(&data) {
        while let Ok(Some(p)) = rd.next_udp() {
            out.push((p.src, p.payload.to_vec()));
        }
    }
    out
}

fn bench_set(c: &mut Criterion, label: &str, dgrams: &[(Ip, Vec<u8>)]) {
    if dgrams.is_empty() {
        return;
    }
    // Learn templates once, count records per pass.
    let mut d = Decoder::new(&DecoderConfig::default());
    let mut n = 0u64;
    for (src, g) in dgrams {
        let mut sink = |_: &FlowRecord| n += 1;
        let _ = d.decode(g, *src, 1_700_000_000, &mut sink);
    }
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(n));
    group.bench_function(label, |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for (src, g) in dgrams {
                let mut sink = |r: &FlowRecord| sum = sum.wrapping_add(r.bytes);
                let _ = d.decode(black_box(g), *src, 1_700_000_000, &mut sink);
            }
            black_box(sum)
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    for (label, file) in [
        ("netflow_v5_softflowd", "softflowd-v5.pcap"),
        ("netflow_v9_softflowd", "softflowd-v9.pcap"),
        ("ipfix_pmacct", "pmacct-nfprobe-v10.pcap"),
        ("sflow_v5_pmacct", "pmacct-sfprobe-1.pcap"),
    ] {
        bench_set(c, label, &capture(file));
    }
    let exporter = Ip::from_v4(0x7f00_0002);
    for (label, flavor) in [("ipfix_synthetic_30rec", Flavor::Ipfix), ("netflow_v9_synthetic_30rec", Flavor::V9)] {
        let d: Vec<(Ip, Vec<u8>)> = common::ipfix_datagrams(1000, flavor).into_iter().map(|g| (exporter, g)).collect();
        bench_set(c, label, &d);
    }
}

criterion_group!(decode, benches);
criterion_main!(decode);
