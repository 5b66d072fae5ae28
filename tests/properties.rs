//! Property tests: for random flow streams, every dimension sums to the stream's totals, and
//! the results are identical for 1, 2, 3 and 4 shards and for a single-threaded reference
//! aggregator written independently here.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use flowshard::aggregate::AggConfig;
use flowshard::decode::netflow_v5;
use flowshard::model::{Dimension, FlowRecord, Ip};
use flowshard::pipeline::{Engine, PipelineConfig, SecondOutput};
use proptest::prelude::*;
use std::collections::BTreeMap;

#[derive(Clone, Debug)]
struct Flow {
    second: u64,
    exporter: u8,
    src: u16,
    dst: u8,
    dport: u16,
    proto: u8,
    bytes: u32,
    packets: u16,
    in_if: u8,
}

fn flow() -> impl Strategy<Value = Flow> {
    (
        0u64..4,
        0u8..5,
        0u16..300,
        0u8..40,
        prop::sample::select(vec![22u16, 53, 80, 443, 8080]),
        prop::sample::select(vec![6u8, 17, 1]),
        1u32..1_000_000,
        1u16..1000,
        0u8..4,
    )
        .prop_map(|(second, exporter, src, dst, dport, proto, bytes, packets, in_if)| Flow {
            second,
            exporter,
            src,
            dst,
            dport,
            proto,
            bytes,
            packets,
            in_if,
        })
}

fn record(f: &Flow) -> FlowRecord {
    FlowRecord {
        exporter: Ip::from_v4(0x7f00_0002 + f.exporter as u32),
        src: Ip::from_v4(0x0a00_0000 + f.src as u32),
        dst: Ip::from_v4(0xc000_0200 + f.dst as u32),
        src_port: 40000,
        dst_port: f.dport,
        proto: f.proto,
        bytes: f.bytes as u64,
        packets: f.packets as u64,
        in_if: f.in_if as u32,
        sampling_rate: 1,
        ..Default::default()
    }
}

fn all_dims() -> Vec<Dimension> {
    Dimension::ALL.to_vec()
}

fn run(flows: &[Flow], shards: usize, agg: &AggConfig) -> Vec<SecondOutput> {
    let cfg = PipelineConfig { agg: agg.clone(), ..Default::default() };
    let mut e = Engine::new(&cfg, shards);
    let mut out = Vec::new();
    let mut sorted = flows.to_vec();
    sorted.sort_by_key(|f| f.second);
    // one datagram per flow, from its exporter's address
    let mut buf = Vec::new();
    for f in &sorted {
        buf.clear();
        let r = record(f);
        netflow_v5::encode(&mut buf, &[r], 1000, 0, 0, 0);
        e.feed(&buf, r.exporter, 2055, 1_700_000_000 + f.second, &mut out);
    }
    e.finish(&mut out);
    out
}

type Table = BTreeMap<(u64, Dimension, String), (u64, u64, u64)>;

fn table(out: &[SecondOutput]) -> Table {
    let mut t = Table::new();
    for so in out {
        for r in &so.rollups {
            let e = t.entry((r.second, r.dimension, r.dimension.format_key(&r.key))).or_default();
            e.0 += r.bytes;
            e.1 += r.packets;
            e.2 += r.flows;
        }
    }
    t
}

/// The independent reference: a plain map per (second, dimension, key).
fn reference(flows: &[Flow], dims: &[Dimension]) -> Table {
    let mut t = Table::new();
    for f in flows {
        let r = record(f);
        for d in dims {
            let e = t.entry((1_700_000_000 + f.second, *d, d.format_key(&d.key(&r)))).or_default();
            e.0 += r.bytes;
            e.1 += r.packets;
            e.2 += 1;
        }
    }
    t
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn identical_for_any_shard_count_and_equal_to_reference(flows in prop::collection::vec(flow(), 1..400)) {
        let agg = AggConfig { dimensions: all_dims(), max_keys: 4096, top_k: 100_000, long_flow_ms: 2000 };
        let want = reference(&flows, &agg.dimensions);
        for shards in 1..=4 {
            let got = table(&run(&flows, shards, &agg));
            prop_assert_eq!(&got, &want, "shards = {}", shards);
        }
    }

    #[test]
    fn sums_are_exact_even_when_bounds_fold_keys(flows in prop::collection::vec(flow(), 1..400), max_keys in 16usize..64, top_k in 1usize..20) {
        let agg = AggConfig { dimensions: all_dims(), max_keys, top_k, long_flow_ms: 2000 };
        for shards in [1, 3] {
            let out = run(&flows, shards, &agg);
            for so in &out {
                let secs: Vec<&Flow> = flows.iter().filter(|f| 1_700_000_000 + f.second == so.second).collect();
                let (b, p, n) = secs.iter().fold((0u64, 0u64, 0u64), |a, f| (a.0 + f.bytes as u64, a.1 + f.packets as u64, a.2 + 1));
                for d in &agg.dimensions {
                    let rows: Vec<_> = so.rollups.iter().filter(|r| r.dimension == *d).collect();
                    let sum = rows.iter().fold((0, 0, 0), |a, r| (a.0 + r.bytes, a.1 + r.packets, a.2 + r.flows));
                    prop_assert_eq!(sum, (b, p, n), "dimension {} second {}", d, so.second);
                    prop_assert!(rows.iter().filter(|r| r.key.is_other()).count() <= 1, "one `other` row per dimension");
                    prop_assert!(rows.len() <= top_k + shards + 1, "{} rows for top_k {}", rows.len(), top_k);
                }
            }
        }
    }
}
