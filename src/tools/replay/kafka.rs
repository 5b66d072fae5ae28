//! `flowshard replay --kafka`: re-runs the raw-flows topic (written by the Kafka sink with
//! `flows = true`, [`crate::sink::flows`]) through the same aggregate → detect path as a
//! capture replay, for a time range: new detector settings on last week's traffic, or rebuilding
//! a store after an outage.
//!
//! The topic is read as it stood when the replay began (each partition up to its high
//! watermark then), from the first message at or after `from` (found by timestamp: the sink
//! stamps each message with its arrival second) to the last before `to`. Partitions are merged
//! by arrival second: a second is fed once every partition still being read has gone
//! [`REORDER_S`] seconds past it (shards hand their batches on independently, so one partition
//! may hold a second's messages slightly out of order). A message later than that, or one that
//! does not decode, is counted in the summary and not fed.
//!
//! May depend on: `pipeline`, `sink` (the raw-flows format), `model`. Lives on: the replay
//! thread.

use super::{ReplayError, Session};
use crate::model::FlowRecord;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Seconds a partition must be past a second before that second is fed.
pub const REORDER_S: u64 = 10;

/// What to read.
#[derive(Clone, Debug)]
pub struct KafkaSource {
    /// Bootstrap servers.
    pub brokers: String,
    /// Raw-flows topic.
    pub topic: String,
    /// First arrival second (Unix) replayed.
    pub from: u64,
    /// End (exclusive; `None`: up to the end of the topic as it stood at the start).
    pub to: Option<u64>,
    /// Extra librdkafka properties (TLS, SASL).
    pub properties: BTreeMap<String, String>,
}

/// The Kafka part of a replay's summary.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct KafkaCounts {
    /// Messages read in the range.
    pub messages: u64,
    /// Messages that did not decode (not fed).
    pub malformed: u64,
    /// Messages for a second already fed (later than the reorder window; not fed).
    pub late: u64,
    /// Partitions read.
    pub partitions: u64,
    /// Largest output sampling seen (1: the topic held every record; the replay is exact).
    pub output_sampling: u32,
}

fn kerr(what: &str) -> impl Fn(rdkafka::error::KafkaError) -> ReplayError + '_ {
    move |e| ReplayError::Kafka(format!("{what}: {e}"))
}

/// Replays the raw-flows topic into `run`; returns the Kafka counts.
pub fn feed(src: &KafkaSource, run: &mut Session<'_>) -> Result<KafkaCounts, ReplayError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &src.brokers)
        .set("group.id", format!("flowshard-replay-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    for (k, v) in &src.properties {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c.create().map_err(kerr("cannot create a consumer"))?;
    let t = Duration::from_secs(20);
    let md = consumer.fetch_metadata(Some(&src.topic), t).map_err(kerr("metadata"))?;
    let parts: Vec<i32> = md
        .topics()
        .iter()
        .filter(|x| x.name() == src.topic && x.error().is_none())
        .flat_map(|x| x.partitions().iter().map(|p| p.id()))
        .collect();
    if parts.is_empty() {
        return Err(ReplayError::Kafka(format!("topic {} does not exist (or has no partitions)", src.topic)));
    }
    // start: the first message stamped at or after from - REORDER_S (a few seconds before,
    // so that a second written slightly out of order is read whole); earlier ones are skipped
    let mut tpl = TopicPartitionList::new();
    for &p in &parts {
        let ms = src.from.saturating_sub(REORDER_S).saturating_mul(1000).min(i64::MAX as u64) as i64;
        tpl.add_partition_offset(&src.topic, p, Offset::Offset(ms)).map_err(kerr("partition list"))?;
    }
    let starts = consumer.offsets_for_times(tpl, t).map_err(kerr("offsets for times"))?;
    let mut assign = TopicPartitionList::new();
    // per partition: (end offset at the start, done, newest second read)
    let mut state: BTreeMap<i32, (i64, bool, u64)> = BTreeMap::new();
    for e in starts.elements() {
        let p = e.partition();
        let (_, high) = consumer.fetch_watermarks(&src.topic, p, t).map_err(kerr("watermarks"))?;
        let (off, done) = match e.offset() {
            Offset::Offset(o) => (o, o >= high),
            _ => (high, true),
        };
        state.insert(p, (high, done, 0));
        if !done {
            assign.add_partition_offset(&src.topic, p, Offset::Offset(off)).map_err(kerr("partition list"))?;
        }
    }
    let mut counts = KafkaCounts { partitions: parts.len() as u64, output_sampling: 1, ..Default::default() };
    consumer.assign(&assign).map_err(kerr("assign"))?;
    let to = src.to.unwrap_or(u64::MAX);
    // seconds read but not fed yet: second → batches of one exporter's records
    let mut pending: BTreeMap<u64, Vec<Vec<FlowRecord>>> = BTreeMap::new();
    let mut fed_up_to: Option<u64> = None;
    let mut idle = Instant::now();
    while state.values().any(|s| !s.1) {
        match consumer.poll(Duration::from_millis(500)) {
            None => {
                if idle.elapsed() > Duration::from_secs(60) {
                    return Err(ReplayError::Kafka("no message and no end of partition for 60 s".into()));
                }
                continue;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                if let Some(s) = state.get_mut(&p) {
                    s.1 = true;
                }
            }
            Some(Err(e)) => return Err(ReplayError::Kafka(format!("consumer: {e}"))),
            Some(Ok(m)) => {
                idle = Instant::now();
                let p = m.partition();
                let Some(st) = state.get_mut(&p) else { continue };
                if m.offset() + 1 >= st.0 {
                    st.1 = true;
                }
                if st.1 && m.offset() >= st.0 {
                    continue; // written after the replay began
                }
                let mut recs = Vec::new();
                match crate::sink::flows::decode_batch(m.payload().unwrap_or_default(), &mut recs) {
                    Err(e) => {
                        counts.malformed += 1;
                        if counts.malformed <= 3 {
                            tracing::warn!("partition {p} offset {}: {e}", m.offset());
                        }
                    }
                    Ok((second, sampling)) => {
                        st.2 = st.2.max(second);
                        if second >= to {
                            st.1 = true; // partitions are near enough in order: past the end
                            continue;
                        }
                        if second < src.from {
                            continue;
                        }
                        counts.messages += 1;
                        counts.output_sampling = counts.output_sampling.max(sampling);
                        if fed_up_to.is_some_and(|f| second <= f) {
                            counts.late += 1;
                            continue;
                        }
                        pending.entry(second).or_default().push(recs);
                    }
                }
            }
        }
        // feed every second all live partitions are REORDER_S past
        let mark = state.values().filter(|s| !s.1).map(|s| s.2).min().unwrap_or(u64::MAX);
        while let Some(e) = pending.first_entry() {
            if *e.key() + REORDER_S > mark {
                break;
            }
            let (second, batches) = e.remove_entry();
            feed_second(run, second, &batches)?;
            fed_up_to = Some(second);
        }
    }
    for (second, batches) in std::mem::take(&mut pending) {
        feed_second(run, second, &batches)?;
    }
    Ok(counts)
}

fn feed_second(run: &mut Session<'_>, second: u64, batches: &[Vec<FlowRecord>]) -> Result<(), ReplayError> {
    for b in batches {
        run.engine.feed_records(b, second, &mut run.done);
    }
    run.write_out()
}
