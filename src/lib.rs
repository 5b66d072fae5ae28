//! # flowshard
//!
//! A thread-per-core network-flow telemetry appliance: NetFlow v5/v9, IPFIX and sFlow v5 in,
//! exact 1-second rollups and alerts out, to JSON lines, Kafka, Valkey and OpenSearch.
//!
//! ## Thread model
//!
//! ```text
//! exporters ──UDP──▶ shard 0 (pinned) ─┐  partials, once a second   ┌─▶ I/O loop ─▶ sinks (own threads)
//!                    shard 1 (pinned) ─┼──── to the key's owner ────┤   gate, HTTP state, state dir
//!                    shard N (pinned) ─┘  (hash(key) % shards)      └─▶ jobs (layer 2, feedback), HTTP
//! ```
//!
//! * **Shard cores** run one glommio executor each ([`runtime::shard`]): their own
//!   `SO_REUSEPORT` sockets, decoder, window and detectors, built on the core and never moved.
//!   No locks, no atomics, no allocation per record on this path.
//! * **The I/O core** runs the I/O loop ([`runtime::io_loop`]), one delivery thread per remote
//!   sink ([`sink`]), the jobs ([`jobs`]) and the HTTP server ([`http`]), all pinned there.
//!   Everything that may block lives here.
//! * **The main thread** parses the command line ([`cli`]), validates the configuration
//!   ([`config`]) and wires the appliance ([`runtime::app`]).
//!
//! ## The data path, module by module
//!
//! 1. **Receive** ([`runtime::socket`]): batched receive (`recvmmsg`), the kernel's drop
//!    counter (`SO_MEMINFO`). A busy exporter that the kernel's hash puts on one shard is
//!    spread: that shard hands its datagrams to every shard in turn, templates and sampling
//!    copied ahead of the data in the same ordered queue ([`runtime::spread`]).
//! 2. **Decode** ([`decode`]): the protocol is sniffed per datagram; decoders are sans-I/O,
//!    panic-free (one [`decode::cursor::Cursor`]) and allocation-free per record.
//! 3. **Pre-aggregate** ([`aggregate`]): per second and dimension, bounded tables with
//!    evict-to-`other`, so memory is bounded and sums stay exact.
//! 4. **Exchange** ([`runtime::exchange`]): at each second boundary a shard sends each owner its
//!    partials over bounded SPSC channels; the owner merges them ([`pipeline::OwnerCore`]).
//! 5. **Detect** ([`detect`]): layer 1 on the owner, per (dimension, key, metric), before any
//!    top-K cut; layer 2 (Holt-Winters in OpenSearch) as an I/O-core job.
//! 6. **Hand-off and alerts** ([`runtime::io_loop`], [`alert`]): owners `try_send` finished
//!    seconds to the I/O core, which assembles them ([`pipeline::Assembler`]), runs every
//!    alert of every layer through one gate, and writes the sinks.
//!
//! ## Layering
//!
//! The pure layers — [`model`], [`decode`], [`aggregate`], [`detect`], [`pipeline`] — import
//! no runtime, client or logging crate and read no clock (time is passed in), so the same code
//! runs on a shard, in `flowshard replay`/`backtest`, in the tests, the fuzzers and the benches.
//! Above them: [`alert`] (schema and gate), [`config`], [`ops`] (counters, status board, host
//! checks), [`sink`], [`jobs`], [`http`], [`runtime`], [`tools`], [`cli`]. Each module's doc
//! says what it may depend on; `scripts/check-layers` (run by `scripts/test`) fails when the
//! code and those headers disagree or when top-level modules form a cycle.
//!
//! ## Invariants
//!
//! * A key's state lives on exactly one core (its owner).
//! * A shard decodes an exporter's data only with the templates and sampling rate the exporter
//!   had sent before that data, whichever shard received it.
//! * For every second and dimension, the sum over keys (with `other`) equals the true total.
//! * While per-second cardinality stays under the bounds, rollups are identical for any shard
//!   count (property-tested against an independent reference).
//! * Bad input is an error value and a counter, never a panic.
//! * A shard never waits on a sink: the hand-off is bounded and drops are counted; Kafka and
//!   OpenSearch are fronted by an on-disk spool, Valkey and the webhook by a drop-oldest queue.
//!
//! ## Limitations (today)
//!
//! * Windows are by arrival time; a shard stalled for more than the exchange depth delays its
//!   owners (the I/O core flushes incomplete seconds after 5 s and counts them).
//! * The top-K cut is per owner (`top_k / shards` each), an approximation of a global top-K.
//! * Layer 3 (Random Cut Forest per source) cold-starts from live data only (not from the
//!   OpenSearch history), and its features see no port mix beyond the count of destination
//!   endpoints.

pub mod aggregate;
pub mod alert;
pub mod cli;
pub mod config;
pub mod decode;
pub mod detect;
pub mod enrich;
pub mod http;
pub mod jobs;
pub mod model;
pub mod ops;
pub mod pipeline;
pub mod runtime;
pub mod sink;
pub mod tools;
