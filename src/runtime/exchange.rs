//! The only cross-core code: the channels between shards (partials to owners) and from shards to
//! the I/O core. All channels are bounded and created once at start-up, before any executor
//! runs; each end is connected on its own core and kept for the life of the process.
//!
//! * shard → owner: one glommio shared (SPSC) channel per ordered pair of distinct shards,
//!   carrying one [`PartialBatch`] per second. A shard's own keys never cross a channel. A
//!   sender closes its channel after its final batch; the owner finishes when all have closed.
//! * shard → I/O: one crossbeam bounded MPSC channel of [`IoMsg`]; shards only `try_send`
//!   (policy `drop_newest`, every drop counted), so a slow sink never stalls a shard.
//!
//! * shard → shard, exporter spread: one glommio shared channel of [`Fwd`] per ordered pair
//!   (only when a listener spreads and there are several shards), each with a crossbeam queue
//!   that returns the emptied batches to their sender.
//!
//! The one other cross-core queue, shards → the raw-flows encoder, is
//! [`crate::sink::flows::FlowsTx`] (bounded, `try_send`, drops counted in records).
//!
//! Lives on: created on the main thread; ends live on shard cores and the I/O core.

use super::spread::{Fwd, FwdBatch};
use crate::aggregate::PartialBatch;
use crate::alert::AlertDoc;
use crate::decode::templates::Snapshot;
use crate::detect::layer3::Layer3Batch;
use crate::ops::ShardStatus;
use crate::pipeline::OwnerOutput;
use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};

/// What shards (and the I/O-core jobs) send to the I/O loop.
#[derive(Debug)]
pub enum IoMsg {
    /// One owner's output of one second.
    Output(OwnerOutput),
    /// A shard's template cache changed.
    Templates(u16, Snapshot),
    /// A shard's counters.
    Status(Box<ShardStatus>),
    /// Alerts of layer 2 (from its job on the I/O core).
    Alerts(Vec<AlertDoc>),
    /// Results of the layer-3 job (one interval's, or none) and its counters.
    Layer3(Box<Layer3Batch>),
    /// One host-input window's second (a shard's, or the HTTP ingest's).
    Host(crate::pipeline::host::HostBatch),
}

/// Seconds of partials a shard may be ahead of an owner before it waits.
pub const EXCHANGE_DEPTH: usize = 8;

/// One shard's ends of the exchange.
pub struct Endpoints {
    /// Shard index.
    pub shard: usize,
    /// To every other owner (index = owner; `None` for this shard itself).
    pub to_owner: Vec<Option<SharedSender<PartialBatch>>>,
    /// From every other shard.
    pub from_shards: Vec<SharedReceiver<PartialBatch>>,
    /// To the I/O core.
    pub to_io: crossbeam_channel::Sender<IoMsg>,
    /// Exporter spread, when on: to every other shard (index = shard).
    pub fwd_to: Vec<Option<SharedSender<Fwd>>>,
    /// From every other shard, with the queue its emptied batches go back on.
    pub fwd_from: Vec<(SharedReceiver<Fwd>, crossbeam_channel::Sender<Box<FwdBatch>>)>,
    /// Where this shard's handed-on batches come back.
    pub fwd_returns: Option<crossbeam_channel::Receiver<Box<FwdBatch>>>,
}

/// Creates all channels for `n` shards (with the spread channels when `spread`); returns each
/// shard's endpoints and the I/O receiver.
pub fn build(n: usize, io_capacity: usize, spread: bool) -> (Vec<Endpoints>, crossbeam_channel::Receiver<IoMsg>) {
    let (io_tx, io_rx) = crossbeam_channel::bounded(io_capacity.max(1));
    let mut eps: Vec<Endpoints> = (0..n)
        .map(|i| Endpoints {
            shard: i,
            to_owner: (0..n).map(|_| None).collect(),
            from_shards: Vec::new(),
            to_io: io_tx.clone(),
            fwd_to: (0..n).map(|_| None).collect(),
            fwd_from: Vec::new(),
            fwd_returns: None,
        })
        .collect();
    if spread && n > 1 {
        // every batch a shard can have out: DEPTH queued per peer, one pending, one spare
        let returns: Vec<_> = (0..n).map(|_| crossbeam_channel::bounded((super::spread::DEPTH + 2) * n)).collect();
        for from in 0..n {
            eps[from].fwd_returns = Some(returns[from].1.clone());
            for to in 0..n {
                if from != to {
                    let (tx, rx) = shared_channel::new_bounded(super::spread::DEPTH);
                    eps[from].fwd_to[to] = Some(tx);
                    eps[to].fwd_from.push((rx, returns[from].0.clone()));
                }
            }
        }
    }
    for from in 0..n {
        for to in 0..n {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(EXCHANGE_DEPTH);
                eps[from].to_owner[to] = Some(tx);
                eps[to].from_shards.push(rx);
            }
        }
    }
    (eps, io_rx)
}
