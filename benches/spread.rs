//! What spreading costs the shard that receives a busy exporter (criterion, in memory, one
//! core): per datagram, decoding and aggregating it here (`ShardCore::ingest`) against handing
//! it on (`Decoder::carries_state` + `Spreader::forward`: the copy into a batch, the batch
//! sent when full; the bench's link gives batches straight back, as a keeping-up shard does).
//! The ratio bounds how many shards one receiving shard can keep busy; the end-to-end figures
//! are `scripts/capacity.sh --shards 2 --spread off|always`.

#![allow(missing_docs)] // criterion macros generate undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowshard::config::SpreadMode;
use flowshard::model::Ip;
use flowshard::pipeline::{PipelineConfig, ShardCore};
use flowshard::runtime::spread::{Fwd, FwdBatch, Link, Spreader};
use flowshard::tools::gen::encode::Flavor;

mod common;

/// A link whose far end keeps up: every batch comes straight back for reuse.
struct Back(crossbeam_channel::Sender<Box<FwdBatch>>);
impl Link for Back {
    fn try_send(&self, m: Fwd) -> Result<(), Fwd> {
        if let Fwd::Batch(b) = m {
            let _ = self.0.try_send(b);
        }
        Ok(())
    }
}

fn benches(c: &mut Criterion) {
    let exporter = Ip::from_v4(0x7f00_0002);
    let mut group = c.benchmark_group("spread");
    group.sample_size(20);
    for (name, flavor) in [("ipfix", Flavor::Ipfix), ("v9", Flavor::V9)] {
        let dgrams = common::ipfix_datagrams(2000, flavor);
        group.throughput(Throughput::Elements(dgrams.len() as u64 * 30));
        let pcfg = PipelineConfig { detect: None, ..Default::default() };
        let mut core = ShardCore::new(&pcfg, 0, 1);
        for g in &dgrams {
            let _ = core.ingest(g, exporter, 1_700_000_000);
        }
        group.bench_function(format!("{name}_decode_here"), |b| {
            b.iter(|| {
                for g in &dgrams {
                    let _ = core.ingest(g, exporter, 1_700_000_000);
                }
            })
        });
        let (tx, rx) = crossbeam_channel::bounded(64);
        // two shards, measured as if every datagram went to the other one
        let mut sp = Spreader::new(1, vec![Some(Back(tx)), None], vec![(SpreadMode::Always, 0)], Some(rx));
        group.bench_function(format!("{name}_hand_on"), |b| {
            b.iter(|| {
                for g in &dgrams {
                    if sp.spreads(0, exporter) && !core.decoder.carries_state(g, exporter) {
                        // every other turn is this shard's: hand it on all the same
                        if !sp.forward(g, exporter, &core.decoder.templates) {
                            sp.forward(g, exporter, &core.decoder.templates);
                        }
                    }
                }
                sp.flush();
            })
        });
    }
    group.finish();
}

criterion_group!(spread, benches);
criterion_main!(spread);
