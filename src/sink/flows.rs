//! The raw-flows topic: every decoded and enriched flow record on Kafka (`flowshard.flows` by
//! default), in the protobuf schema of `proto/flow.proto`, so that other consumers can read the
//! flows and `flowshard replay --kafka` can re-run history through the same pipeline.
//!
//! * The shards copy a 1-in-N sample of their records after enrichment
//!   ([`crate::pipeline::ShardCore::set_tap`]; a `memcpy` per record, nothing else) into
//!   batches of one second and `try_send` them on a bounded channel. A full channel drops the
//!   batch, counted as `dropped_handoff` in records: a slow topic never stalls a shard.
//! * [`FlowsSink`]'s encoder thread (on the I/O core) writes each batch as Kafka messages —
//!   one per run of one exporter's records (at most [`MAX_PER_MESSAGE`]), key the exporter's
//!   address so one exporter's records keep their order — by hand ([`encode_batch`]: no
//!   allocation per record), into spool frames of up to [`FRAME_BYTES`] or [`FRAME_AGE`]. The frames go through a spool of their own
//!   (`<spool>/kafka_flows`) to a producer of their own, so a backlog of raw flows never delays
//!   the rollups and alerts; a full spool drops its oldest frames, counted (`spool_full`).
//! * [`decode_batch`] reads a message back into [`FlowRecord`]s (prost types [`FlowBatchPb`],
//!   [`FlowPb`]), for the replay and the tests.
//!
//! May depend on: `model`, `pipeline`, `config`. Lives on: I/O cores (the encoder thread and
//! the delivery thread); the replay thread (decoding).

use super::delivery::{spawn_on, DropReason, SinkStats, Spooled};
use super::frame::{FrameBuilder, Kind};
use super::{Sink, SinkError};
use crate::config::KafkaSink;
use crate::model::{country_code, names, FlowRecord, Ip};
use crate::pipeline::TapBatch;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Flows per Kafka message at most (≈ 70 bytes each: messages stay far below Kafka's 1 MB).
pub const MAX_PER_MESSAGE: usize = 1000;

/// Batches the shards may have queued for the encoder (≈ 64 × 4,096 records, ≈ 30 MB).
pub const QUEUE_BATCHES: usize = 64;

/// `FlowBatch` of `proto/flow.proto` (decoding side).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowBatchPb {
    /// Arrival second.
    #[prost(uint64, tag = "1")]
    pub arrival_second: u64,
    /// Exporter, 16 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub exporter: Vec<u8>,
    /// Appliance id.
    #[prost(string, tag = "3")]
    pub appliance: String,
    /// Shard.
    #[prost(uint32, tag = "4")]
    pub shard: u32,
    /// 1-in-N output sampling.
    #[prost(uint32, tag = "5")]
    pub output_sampling: u32,
    /// Records.
    #[prost(message, repeated, tag = "6")]
    pub flows: Vec<FlowPb>,
}

/// `Flow` of `proto/flow.proto` (decoding side; field comments are in the `.proto`).
#[allow(missing_docs)]
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowPb {
    #[prost(bytes = "vec", tag = "1")]
    pub src_addr: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub dst_addr: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub src_port: u32,
    #[prost(uint32, tag = "4")]
    pub dst_port: u32,
    #[prost(uint32, tag = "5")]
    pub proto: u32,
    #[prost(uint32, tag = "6")]
    pub tcp_flags: u32,
    #[prost(uint32, tag = "7")]
    pub tos: u32,
    #[prost(uint64, tag = "8")]
    pub bytes: u64,
    #[prost(uint64, tag = "9")]
    pub packets: u64,
    #[prost(uint64, tag = "10")]
    pub raw_bytes: u64,
    #[prost(uint64, tag = "11")]
    pub raw_packets: u64,
    #[prost(uint32, tag = "12")]
    pub sampling_rate: u32,
    #[prost(uint32, tag = "13")]
    pub in_if: u32,
    #[prost(uint32, tag = "14")]
    pub out_if: u32,
    #[prost(uint32, tag = "15")]
    pub src_as: u32,
    #[prost(uint32, tag = "16")]
    pub dst_as: u32,
    #[prost(uint32, tag = "17")]
    pub duration_ms: u32,
    #[prost(string, tag = "18")]
    pub src_country: String,
    #[prost(string, tag = "19")]
    pub dst_country: String,
    #[prost(string, tag = "20")]
    pub src_net: String,
    #[prost(string, tag = "21")]
    pub dst_net: String,
    #[prost(uint32, tag = "22")]
    pub boundary: u32,
    #[prost(uint32, tag = "23")]
    pub src_city_geoname_id: u32,
    #[prost(uint32, tag = "24")]
    pub dst_city_geoname_id: u32,
}

fn varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn uint(b: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        varint(b, u64::from(field << 3));
        varint(b, v);
    }
}

fn bytes(b: &mut Vec<u8>, field: u32, v: &[u8]) {
    if !v.is_empty() {
        varint(b, u64::from(field << 3 | 2));
        varint(b, v.len() as u64);
        b.extend_from_slice(v);
    }
}

/// Network names by id, read from the interner once per id (names never change meaning).
#[derive(Default)]
pub struct NameCache(Vec<Option<Arc<str>>>);

impl NameCache {
    fn get(&mut self, id: u16) -> Option<&str> {
        if id == 0 {
            return None;
        }
        let i = usize::from(id);
        if self.0.len() <= i {
            self.0.resize(i + 1, None);
        }
        if self.0[i].is_none() {
            self.0[i] = names::name(id);
        }
        self.0[i].as_deref()
    }
}

fn flow(b: &mut Vec<u8>, r: &FlowRecord, names: &mut NameCache) {
    bytes(b, 1, &r.src.0.to_be_bytes());
    bytes(b, 2, &r.dst.0.to_be_bytes());
    uint(b, 3, u64::from(r.src_port));
    uint(b, 4, u64::from(r.dst_port));
    uint(b, 5, u64::from(r.proto));
    uint(b, 6, u64::from(r.tcp_flags));
    uint(b, 7, u64::from(r.tos));
    uint(b, 8, r.bytes);
    uint(b, 9, r.packets);
    let rate = u64::from(r.sampling_rate.max(1));
    uint(b, 10, r.bytes / rate);
    uint(b, 11, r.packets / rate);
    uint(b, 12, u64::from(r.sampling_rate));
    uint(b, 13, u64::from(r.in_if));
    uint(b, 14, u64::from(r.out_if));
    uint(b, 15, u64::from(r.src_as));
    uint(b, 16, u64::from(r.dst_as));
    uint(b, 17, u64::from(r.duration_ms));
    if r.src_country != 0 {
        bytes(b, 18, &r.src_country.to_be_bytes());
    }
    if r.dst_country != 0 {
        bytes(b, 19, &r.dst_country.to_be_bytes());
    }
    if let Some(n) = names.get(r.src_net) {
        bytes(b, 20, n.as_bytes());
    }
    if let Some(n) = names.get(r.dst_net) {
        bytes(b, 21, n.as_bytes());
    }
    uint(b, 22, u64::from(r.boundary));
    uint(b, 23, u64::from(r.src_city));
    uint(b, 24, u64::from(r.dst_city));
}

/// Encodes one `FlowBatch` message: `recs` (all of one exporter) of `batch`.
pub fn encode_message(
    out: &mut Vec<u8>,
    batch: &TapBatch,
    recs: &[FlowRecord],
    appliance: &str,
    scratch: &mut Vec<u8>,
    names: &mut NameCache,
) {
    out.clear();
    uint(out, 1, batch.second);
    if let Some(r) = recs.first() {
        bytes(out, 2, &r.exporter.0.to_be_bytes());
    }
    bytes(out, 3, appliance.as_bytes());
    uint(out, 4, u64::from(batch.shard));
    uint(out, 5, u64::from(batch.sampling.max(1)));
    for r in recs {
        scratch.clear();
        flow(scratch, r, names);
        varint(out, 6 << 3 | 2);
        varint(out, scratch.len() as u64);
        out.extend_from_slice(scratch);
    }
}

/// Encodes a shard's batch as Kafka messages into a spool frame: one message per run of one
/// exporter's records (at most [`MAX_PER_MESSAGE`]), key the exporter. Returns the messages.
pub fn encode_batch(
    fb: &mut FrameBuilder,
    batch: &TapBatch,
    appliance: &str,
    bufs: &mut (Vec<u8>, Vec<u8>, String),
    names: &mut NameCache,
) -> usize {
    let (msg, scratch, key) = bufs;
    let mut n = 0;
    let mut rest = &batch.records[..];
    while let Some(first) = rest.first() {
        let run = rest.iter().take(MAX_PER_MESSAGE).take_while(|r| r.exporter == first.exporter).count();
        let (this, tail) = rest.split_at(run);
        encode_message(msg, batch, this, appliance, scratch, names);
        key.clear();
        let _ = write!(key, "{}", first.exporter);
        fb.push_bytes(Kind::Flows, batch.second, key, msg);
        n += 1;
        rest = tail;
    }
    n
}

/// Why a raw-flows message could not be read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlowsDecodeError {
    /// Not a `FlowBatch` protobuf message.
    #[error("not a FlowBatch message: {0}")]
    Protobuf(String),
    /// A field has a value the schema does not allow.
    #[error("field {field}: {why}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

fn addr(b: &[u8], field: &'static str) -> Result<Ip, FlowsDecodeError> {
    match b.len() {
        0 => Ok(Ip::UNSPECIFIED),
        16 => Ok(Ip(u128::from_be_bytes(b.try_into().unwrap_or([0; 16])))),
        4 => Ok(Ip::from_v4(u32::from_be_bytes(b.try_into().unwrap_or([0; 4])))),
        _ => Err(FlowsDecodeError::Field { field, why: "an address is 16 bytes (or 4)" }),
    }
}

fn small<T: TryFrom<u32>>(v: u32, field: &'static str) -> Result<T, FlowsDecodeError> {
    T::try_from(v).map_err(|_| FlowsDecodeError::Field { field, why: "value out of range" })
}

fn net(name: &str) -> Result<u16, FlowsDecodeError> {
    if name.is_empty() {
        return Ok(0);
    }
    names::intern(name).ok_or(FlowsDecodeError::Field { field: "src_net/dst_net", why: "too many distinct names" })
}

/// Decodes one message: its arrival second, output sampling and records (appended to `out`,
/// scaled back up by the output sampling so that sums estimate the unsampled totals).
pub fn decode_batch(msg: &[u8], out: &mut Vec<FlowRecord>) -> Result<(u64, u32), FlowsDecodeError> {
    use prost::Message;
    let b = FlowBatchPb::decode(msg).map_err(|e| FlowsDecodeError::Protobuf(e.to_string()))?;
    let exporter = addr(&b.exporter, "exporter")?;
    let n = b.output_sampling.max(1);
    for f in &b.flows {
        if f.boundary > 4 {
            return Err(FlowsDecodeError::Field { field: "boundary", why: "not a Boundary value (0-4)" });
        }
        out.push(FlowRecord {
            exporter,
            src: addr(&f.src_addr, "src_addr")?,
            dst: addr(&f.dst_addr, "dst_addr")?,
            src_port: small(f.src_port, "src_port")?,
            dst_port: small(f.dst_port, "dst_port")?,
            proto: small(f.proto, "proto")?,
            tcp_flags: small(f.tcp_flags, "tcp_flags")?,
            tos: small(f.tos, "tos")?,
            bytes: f.bytes.saturating_mul(u64::from(n)),
            packets: f.packets.saturating_mul(u64::from(n)),
            in_if: f.in_if,
            out_if: f.out_if,
            src_as: f.src_as,
            dst_as: f.dst_as,
            sampling_rate: f.sampling_rate,
            duration_ms: f.duration_ms,
            src_country: country_code(&f.src_country),
            dst_country: country_code(&f.dst_country),
            src_net: net(&f.src_net)?,
            dst_net: net(&f.dst_net)?,
            boundary: f.boundary as u8,
            src_city: f.src_city_geoname_id,
            dst_city: f.dst_city_geoname_id,
        });
    }
    Ok((b.arrival_second, n))
}

/// Counters of the raw-flows path besides the delivery's.
#[derive(Debug, Default)]
pub struct FlowsStats {
    /// Records encoded into messages.
    pub records: AtomicU64,
    /// Messages encoded.
    pub messages: AtomicU64,
}

/// The shards' end of the raw-flows path: the channel and the counter of what it dropped.
#[derive(Clone, Debug)]
pub struct FlowsTx {
    tx: Sender<TapBatch>,
    back: Receiver<Vec<FlowRecord>>,
    stats: Arc<SinkStats>,
}

impl FlowsTx {
    /// An emptied buffer of an encoded batch, for the shard to fill again (none: allocate).
    pub fn spare(&self) -> Option<Vec<FlowRecord>> {
        self.back.try_recv().ok()
    }

    /// Hands a batch on without waiting; a full queue drops it, counted in records.
    pub fn send(&self, b: TapBatch) {
        match self.tx.try_send(b) {
            Ok(()) => {}
            Err(TrySendError::Full(b) | TrySendError::Disconnected(b)) => {
                self.stats.drop_n(DropReason::Handoff, b.records.len() as u64)
            }
        }
    }
}

/// The raw-flows sink: the encoder thread and the spooled Kafka delivery behind it.
pub struct FlowsSink {
    encoder: Option<JoinHandle<()>>,
    /// Delivery counters (sink `kafka_flows`: Kafka messages).
    pub delivery: Arc<SinkStats>,
    /// Records and messages encoded.
    pub stats: Arc<FlowsStats>,
}

impl FlowsSink {
    /// Starts the encoder and the delivery threads (pinned to `cpu`); returns the sink and
    /// the shards' end of its queue.
    pub fn start(
        k: &KafkaSink,
        appliance: &str,
        dir: &Path,
        max_bytes: u64,
        cpu: Option<usize>,
    ) -> Result<(FlowsSink, FlowsTx), SinkError> {
        let spooled = super::kafka::start("kafka_flows", k, appliance, dir, max_bytes, cpu)?;
        let delivery = spooled.stats();
        let stats = Arc::new(FlowsStats::default());
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (back_tx, back) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (st, app) = (stats.clone(), appliance.to_string());
        let encoder = spawn_on("flows-encode", cpu, move || encode_loop(rx, &back_tx, spooled, &app, &st))?;
        let sink = FlowsSink { encoder: Some(encoder), delivery: delivery.clone(), stats };
        Ok((sink, FlowsTx { tx, back, stats: delivery }))
    }

    /// Waits for the encoder (it ends when every shard has dropped its [`FlowsTx`]) and the
    /// delivery (bounded by the shutdown grace period; the rest stays spooled).
    pub fn finish(mut self) {
        if let Some(h) = self.encoder.take() {
            let _ = h.join();
        }
    }
}

/// A spool frame of raw flows is appended once it holds this many bytes, or [`FRAME_AGE`]
/// after its first batch: the delivery commits a frame when Kafka acknowledged all of it, so
/// frames must be big for the producer to batch well.
pub const FRAME_BYTES: usize = 4 << 20;
/// See [`FRAME_BYTES`].
pub const FRAME_AGE: std::time::Duration = std::time::Duration::from_millis(250);

fn encode_loop(
    rx: Receiver<TapBatch>,
    back: &Sender<Vec<FlowRecord>>,
    mut spooled: Spooled,
    appliance: &str,
    st: &FlowsStats,
) {
    use crossbeam_channel::RecvTimeoutError;
    use std::time::Instant;
    let mut bufs = (Vec::with_capacity(1 << 16), Vec::with_capacity(256), String::new());
    let mut names = NameCache::default();
    let mut fb = FrameBuilder::new();
    let mut opened: Option<Instant> = None;
    let mut closed = false;
    while !closed {
        let wait = opened.map_or(FRAME_AGE, |t| FRAME_AGE.saturating_sub(t.elapsed()));
        match rx.recv_timeout(wait) {
            Ok(b) => {
                let n = encode_batch(&mut fb, &b, appliance, &mut bufs, &mut names);
                st.records.fetch_add(b.records.len() as u64, Ordering::Relaxed);
                st.messages.fetch_add(n as u64, Ordering::Relaxed);
                opened.get_or_insert_with(Instant::now);
                // the buffer goes back to a shard (any: they are all alike); none wants it: freed
                let _ = back.try_send(b.records);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => closed = true,
        }
        let due = opened.is_some_and(|t| t.elapsed() >= FRAME_AGE);
        if fb.bytes() >= FRAME_BYTES || due || closed {
            let n = fb.len();
            if let Err(e) = spooled.append(std::mem::replace(&mut fb, FrameBuilder::new())) {
                // counted like a refused record: the spool could not take it
                spooled.stats().drop_n(DropReason::Rejected, n as u64);
                tracing::warn!(sink = "kafka_flows", "{e}");
            }
            opened = None;
        }
    }
    spooled.close();
    spooled.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u32, exporter: Ip) -> FlowRecord {
        FlowRecord {
            exporter,
            src: Ip::from_v4(0x0a00_0001 + i),
            dst: "2001:db8::1".parse::<std::net::IpAddr>().map(Ip::from).unwrap_or_default(),
            src_port: 40000 + i as u16,
            dst_port: 443,
            proto: 6,
            tcp_flags: 0x1b,
            tos: 8,
            bytes: 1500 * 100 * u64::from(i + 1),
            packets: 100 * u64::from(i + 1),
            in_if: 3,
            out_if: 7,
            src_as: 64500,
            dst_as: 0,
            sampling_rate: 100,
            duration_ms: 1234,
            src_country: country_code("DE"),
            dst_country: 0,
            src_net: names::intern("flows-test-net").unwrap_or(0),
            dst_net: 0,
            boundary: 3,
            src_city: 2_950_159,
            dst_city: 0,
        }
    }

    #[test]
    fn hand_encoding_reads_back_with_prost_field_by_field() {
        let (a, b) = (Ip::from_v4(0xc000_0201), Ip::from_v4(0xc000_0202));
        let recs: Vec<FlowRecord> = (0..5).map(|i| rec(i, if i < 3 { a } else { b })).collect();
        let batch = TapBatch { shard: 1, second: 1_700_000_000, sampling: 1, records: recs.clone() };
        let mut fb = FrameBuilder::new();
        let mut bufs = Default::default();
        let mut names = NameCache::default();
        assert_eq!(encode_batch(&mut fb, &batch, "app1", &mut bufs, &mut names), 2, "one message per exporter run");
        let frame = fb.finish();
        let msgs = super::super::frame::decode(&frame).unwrap();
        assert_eq!(msgs[0].key, "192.0.2.1");
        assert_eq!(msgs[1].key, "192.0.2.2");
        let mut back = Vec::new();
        for m in &msgs {
            assert_eq!(m.kind, Kind::Flows);
            assert_eq!(m.second, 1_700_000_000);
            use prost::Message;
            let pb = FlowBatchPb::decode(m.value).unwrap();
            assert_eq!((pb.appliance.as_str(), pb.shard, pb.output_sampling), ("app1", 1, 1));
            let f = &pb.flows[0];
            assert_eq!((f.raw_bytes * 100, f.raw_packets * 100), (f.bytes, f.packets), "raw = unscaled counts");
            assert_eq!(pb.flows[0].src_country, "DE");
            assert_eq!(pb.flows[0].src_net, "flows-test-net");
            assert_eq!((f.src_city_geoname_id, f.dst_city_geoname_id), (2_950_159, 0));
            assert_eq!(decode_batch(m.value, &mut back), Ok((1_700_000_000, 1)));
        }
        assert_eq!(back, recs, "every field survives the round trip");
    }

    #[test]
    fn runs_are_cut_at_the_message_cap_and_sampling_scales_back() {
        let a = Ip::from_v4(1);
        let recs: Vec<FlowRecord> = (0..2500).map(|i| rec(i % 7, a)).collect();
        let batch = TapBatch { shard: 0, second: 5, sampling: 10, records: recs };
        let mut fb = FrameBuilder::new();
        let n = encode_batch(&mut fb, &batch, "x", &mut Default::default(), &mut NameCache::default());
        assert_eq!(n, 3);
        let frame = fb.finish();
        let mut back = Vec::new();
        for m in super::super::frame::decode(&frame).unwrap() {
            assert_eq!(decode_batch(m.value, &mut back).map(|x| x.1), Ok(10));
        }
        assert_eq!(back.len(), 2500);
        assert_eq!(back[0].bytes, batch.records[0].bytes * 10);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        for junk in [&b"\xff\xff\xff"[..], b"\x12\x03abc", b"\x0a\x05"] {
            assert!(decode_batch(junk, &mut out).is_err(), "{junk:?}");
        }
        // an address of the wrong length is named
        let mut m = Vec::new();
        bytes(&mut m, 2, &[1, 2, 3]);
        assert_eq!(
            decode_batch(&m, &mut out),
            Err(FlowsDecodeError::Field { field: "exporter", why: "an address is 16 bytes (or 4)" })
        );
    }
}
