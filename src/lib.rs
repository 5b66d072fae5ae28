//! # flowshard
//!
//! A thread-per-core network-flow telemetry appliance: NetFlow v5/v9, IPFIX and sFlow v5 in,
//! exact 1-second rollups and layer-1 anomaly alerts out.
//!
//! ## The data path
//!
//! ```text
//! exporters ──UDP──▶ shard 0 (pinned) ─┐  partials, once a second   ┌─▶ I/O core: sinks,
//!                    shard 1 (pinned) ─┼──── to the key's owner ────┤   state directory,
//!                    shard N (pinned) ─┘  (hash(key) % shards)      └─▶ status line
//! ```
//!
//! 1. **Receive** ([`shard`]): each shard owns one `SO_REUSEPORT` socket per listener, drains
//!    it in batches (`recvmmsg`), and reads the kernel's drop counter (`SO_MEMINFO`).
//! 2. **Decode** ([`decode`]): the protocol is sniffed per datagram; decoders are sans-I/O,
//!    panic-free (one [`decode::cursor::Cursor`]) and allocation-free per record.
//! 3. **Pre-aggregate** ([`aggregate`]): per second and dimension, bounded tables with
//!    evict-to-`other`, so memory is bounded and sums stay exact.
//! 4. **Exchange** ([`exchange`]): at each second boundary a shard sends each owner its
//!    partials over bounded SPSC channels; the owner merges them ([`pipeline::OwnerCore`]).
//! 5. **Detect** ([`detect`]): on the owner, per (dimension, key, metric), before any top-K cut.
//! 6. **Hand-off** ([`io`]): owners `try_send` finished seconds to the I/O core, which
//!    assembles them ([`pipeline::Assembler`]) and writes the sinks.
//!
//! ## Invariants
//!
//! * A key's state lives on exactly one core (its owner); no locks, no atomics on the hot path.
//! * For every second and dimension, the sum over keys (with `other`) equals the true total.
//! * While per-second cardinality stays under the bounds, rollups are identical for any shard
//!   count (property-tested against an independent reference).
//! * Bad input is an error value and a counter, never a panic.
//! * A shard never waits on a sink: the hand-off is bounded and drops are counted.
//!
//! ## Why this shape
//!
//! The pure layers ([`model`], [`decode`], [`aggregate`], [`detect`], [`pipeline`]) read no
//! clock and touch no socket, so the same code runs on a shard, in `flowshard replay`, in the
//! tests, the fuzzers and the benches. Only [`shard`], [`exchange`] and [`io`] know about
//! threads, glommio and files.
//!
//! ## Limitations (today)
//!
//! * Windows are by arrival time; a shard stalled for more than the exchange depth delays its
//!   owners (the I/O core flushes incomplete seconds after 5 s and counts them).
//! * Sinks: JSON lines (stdout, file). Kafka, Valkey and OpenSearch are separate work.
//! * The top-K cut is per owner (`top_k / shards` each), an approximation of a global top-K.

pub mod aggregate;
pub mod alert;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod http;
pub mod jobs;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod tools;
