//! Fuzz target: arbitrary datagrams through decode → aggregate → exchange → detect with two
//! shards; the sum of every dimension must equal the `total` row.
#![no_main]
use flowshard::model::{Dimension, Ip};
use flowshard::pipeline::{Engine, PipelineConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let cfg = PipelineConfig { detect: Some(Default::default()), ..Default::default() };
    let mut e = Engine::new(&cfg, 2);
    let mut out = Vec::new();
    for (i, part) in data.split(|&b| b == 0xff).take(32).enumerate() {
        e.feed(part, Ip::from_v4(0x7f000001 + (i % 3) as u32), 9995, 1_700_000_000 + (i / 4) as u64, &mut out);
    }
    e.finish(&mut out);
    for so in &out {
        let total: u64 = so.rollups.iter().filter(|r| r.dimension == Dimension::Total).map(|r| r.bytes).sum();
        for d in &cfg.agg.dimensions {
            let s: u64 = so.rollups.iter().filter(|r| r.dimension == *d).map(|r| r.bytes).sum();
            assert_eq!(s, total);
        }
    }
});
