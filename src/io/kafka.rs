//! The Kafka sink's delivery thread (rdkafka, bundled librdkafka).
//!
//! Reads frames from the spool in order; each frame (one second) is produced to the rollups
//! and alerts topics and committed only when every message in it is acknowledged. The
//! producer is idempotent with `acks=all` and an unlimited message timeout, so a broker outage
//! of any length is ridden out by librdkafka's retries with the same producer id and sequence
//! numbers (the broker drops duplicates), while the frames behind it wait on disk.
//! Permanently refused messages (too large, not authorised) are counted as `rejected`.
//!
//! Lives on: I/O cores.

use super::frame::{self, Kind};
use super::remote::{backoff, pause, DropReason, SinkStats, SHUTDOWN_GRACE};
use super::spool::SpoolReader;
use crate::config::KafkaSink;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Collects delivery reports for the frame in flight.
#[derive(Default)]
pub struct Reports {
    done: Mutex<Vec<(usize, Option<RDKafkaErrorCode>)>>,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, opaque: Box<usize>) {
        let code = match r {
            Ok(_) => None,
            Err((KafkaError::MessageProduction(c), _)) => Some(*c),
            Err((e, _)) => Some(e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail)),
        };
        if let Ok(mut d) = self.done.lock() {
            d.push((*opaque, code));
        }
    }
}

/// The producer configuration flowshard uses (plus the user's extra properties).
pub fn client_config(k: &KafkaSink, appliance: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("client.id", format!("flowshard-{appliance}"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &k.compression)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("message.timeout.ms", "0")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "262144")
        .set("reconnect.backoff.max.ms", "2000");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    c
}

/// Creates the rollups and alerts topics when they are missing (idempotent). Returns one line
/// per topic.
pub fn create_topics(k: &KafkaSink, appliance: &str, extra: &[&str]) -> Result<Vec<String>, KafkaError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers).set("client.id", format!("flowshard-{appliance}-admin"));
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let admin: AdminClient<DefaultClientContext> = c.create()?;
    let mut names: Vec<&str> = vec![&k.rollups_topic, &k.alerts_topic];
    names.extend_from_slice(extra);
    let topics: Vec<NewTopic<'_>> =
        names.iter().map(|n| NewTopic::new(n, k.partitions, TopicReplication::Fixed(k.replication_factor))).collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let res = futures_executor::block_on(admin.create_topics(&topics, &opts))?;
    let mut out = Vec::new();
    for r in res {
        match r {
            Ok(t) => out.push(format!("kafka topic {t} created")),
            Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => out.push(format!("kafka topic {t} (exists)")),
            Err((t, code)) => {
                eprintln!("flowshard: kafka: cannot create topic {t}: {code:?}");
                return Err(KafkaError::AdminOp(code));
            }
        }
    }
    Ok(out)
}

fn permanent(c: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as E;
    matches!(
        c,
        E::MessageSizeTooLarge
            | E::InvalidMessageSize
            | E::InvalidMessage
            | E::InvalidRecord
            | E::TopicAuthorizationFailed
            | E::InvalidTopic
            | E::UnknownTopic
            | E::MessageTimedOut
    )
}

fn producer(k: &KafkaSink, appliance: &str, stats: &SinkStats) -> Option<BaseProducer<Reports>> {
    match client_config(k, appliance).create_with_context(Reports::default()) {
        Ok(p) => Some(p),
        Err(e) => {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("flowshard: kafka: cannot create the producer: {e}");
            None
        }
    }
}

/// Delivers the spool to Kafka until the spool is closed and empty (or the shutdown grace
/// period ends).
pub fn deliver(k: &KafkaSink, appliance: &str, mut reader: SpoolReader, stats: &Arc<SinkStats>) {
    let mut p = None;
    let mut attempt = 0u32;
    while p.is_none() {
        p = producer(k, appliance, stats);
        if p.is_none() {
            pause(backoff(attempt));
            attempt += 1;
        }
    }
    let Some(mut p) = p else { return };
    // Missing topics are created (best effort: a cluster may forbid it; then an operator
    // creates them and the messages wait).
    let mut attempt = 0u32;
    while let Err(e) = create_topics(k, appliance, &[]) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        if attempt == 0 {
            eprintln!("flowshard: kafka: cannot check/create topics yet: {e} (retrying)");
        }
        if reader.is_closed() || attempt > 5 {
            break;
        }
        pause(backoff(attempt));
        attempt += 1;
    }
    let mut closing: Option<Instant> = None;
    loop {
        let buf = match super::remote::next_frame(&mut reader, stats) {
            super::remote::Step::Frame(b) => b,
            super::remote::Step::Idle => {
                p.poll(Duration::ZERO);
                continue;
            }
            super::remote::Step::Closed => break,
        };
        let Ok(recs) = frame::decode(&buf) else { continue };
        let mut pending: Vec<usize> = (0..recs.len()).collect();
        let mut attempt = 0u32;
        let mut newest = 0;
        loop {
            if let Some(t) = closing {
                if t.elapsed() > SHUTDOWN_GRACE {
                    // Leave the frame in the spool: it is sent again at the next start.
                    p.flush(Duration::from_secs(1)).ok();
                    return;
                }
            } else if reader.is_closed() {
                closing = Some(Instant::now());
            }
            if let Ok(mut d) = p.context().done.lock() {
                d.clear();
            }
            let mut sent = 0usize;
            for &i in &pending {
                let r = &recs[i];
                newest = newest.max(r.second);
                let topic = match r.kind {
                    Kind::Rollup => &k.rollups_topic,
                    Kind::Alert => &k.alerts_topic,
                };
                let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i)).key(r.key).payload(r.value);
                loop {
                    match p.send(rec) {
                        Ok(()) => {
                            sent += 1;
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            rec = back;
                            p.poll(Duration::from_millis(50));
                        }
                        Err((e, _)) => {
                            let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                            if let Ok(mut d) = p.context().done.lock() {
                                d.push((i, Some(code)));
                            }
                            sent += 1;
                            break;
                        }
                    }
                }
            }
            // Wait for every report of this attempt.
            let waiting = Instant::now();
            loop {
                if waiting.elapsed() > Duration::from_secs(5) {
                    stats.up.store(false, Ordering::Relaxed);
                }
                let n = p.context().done.lock().map_or(0, |d| d.len());
                if n >= sent {
                    break;
                }
                p.poll(Duration::from_millis(100));
                if p.client().fatal_error().is_some() {
                    break;
                }
                if closing.is_none() && reader.is_closed() {
                    closing = Some(Instant::now());
                }
                if closing.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
                    return;
                }
            }
            if let Some((code, reason)) = p.client().fatal_error() {
                // An idempotent producer that hit a fatal error must be replaced; the frame is
                // sent again from the start of its failed part.
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("flowshard: kafka: fatal producer error {code:?}: {reason}; recreating the producer");
                if let Some(np) = producer(k, appliance, stats) {
                    p = np;
                }
                stats.retried.fetch_add(pending.len() as u64, Ordering::Relaxed);
                pause(backoff(attempt));
                attempt += 1;
                continue;
            }
            let reports = p.context().done.lock().map(|mut d| std::mem::take(&mut *d)).unwrap_or_default();
            let mut failed = Vec::new();
            let mut ok = 0u64;
            for (i, code) in reports {
                match code {
                    None => ok += 1,
                    Some(c) if permanent(c) => {
                        stats.drop_n(DropReason::Rejected, 1);
                        eprintln!("flowshard: kafka: message {} refused: {c:?}", recs[i].key);
                    }
                    Some(_) => failed.push(i),
                }
            }
            stats.delivered.fetch_add(ok, Ordering::Relaxed);
            if failed.is_empty() {
                break;
            }
            stats.up.store(false, Ordering::Relaxed);
            stats.errors.fetch_add(1, Ordering::Relaxed);
            stats.retried.fetch_add(failed.len() as u64, Ordering::Relaxed);
            failed.sort_unstable();
            pending = failed;
            pause(backoff(attempt));
            attempt += 1;
        }
        stats.delivered_second(newest, 0);
        if let Err(e) = reader.commit() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("flowshard: kafka: {e}");
        }
    }
    p.flush(Duration::from_secs(5)).ok();
}

/// Reads operator feedback (JSON [`Feedback`](super::alerts::Feedback) messages) from the
/// feedback topic and applies it to the suppression store in `state_dir`, which the alert gate
/// re-reads. Every appliance reads the whole topic (its own consumer group). Runs until `stop`.
pub fn consume_feedback(
    k: &KafkaSink,
    appliance: &str,
    topic: &str,
    state_dir: &std::path::Path,
    stats: &SinkStats,
    stop: &std::sync::atomic::AtomicBool,
) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let _ = create_topics(k, appliance, &[topic]);
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", format!("flowshard-feedback-{appliance}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("client.id", format!("flowshard-{appliance}-feedback"));
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer = match c.create() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("flowshard: kafka feedback consumer: {e}");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        eprintln!("flowshard: kafka feedback consumer: {e}");
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(250)) {
            Some(Ok(m)) => {
                let now = super::remote::now_ms() / 1000;
                match m.payload().map(serde_json::from_slice::<super::alerts::Feedback>) {
                    Some(Ok(f)) => match super::alerts::Suppressions::apply_to_dir(state_dir, f, now) {
                        Ok(()) => {
                            stats.delivered.fetch_add(1, Ordering::Relaxed);
                            stats.up.store(true, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("flowshard: feedback: {e}");
                        }
                    },
                    _ => {
                        stats.drop_n(DropReason::Rejected, 1);
                        eprintln!("flowshard: feedback topic {topic}: ignoring a message that is not feedback JSON");
                    }
                }
            }
            Some(Err(e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.up.store(false, Ordering::Relaxed);
                if !matches!(e, KafkaError::PartitionEOF(_)) {
                    pause(Duration::from_millis(500));
                }
            }
            None => {}
        }
    }
}

/// Publishes one feedback item to the feedback topic (used by `flowshard feedback`).
pub fn publish_feedback(k: &KafkaSink, topic: &str, f: &super::alerts::Feedback) -> Result<(), KafkaError> {
    let _ = create_topics(k, "cli", &[topic]);
    let mut c = client_config(k, "cli");
    c.set("message.timeout.ms", "15000");
    let p: BaseProducer<Reports> = c.create_with_context(Reports::default())?;
    let body = serde_json::to_string(f).unwrap_or_default();
    let key = match f {
        super::alerts::Feedback::Suppress { key, .. }
        | super::alerts::Feedback::FalsePositive { key, .. }
        | super::alerts::Feedback::Unsuppress { key } => key.clone(),
    };
    p.send(BaseRecord::<String, String, Box<usize>>::with_opaque_to(topic, Box::new(0)).key(&key).payload(&body))
        .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(16))?;
    let reports = p.context().done.lock().map(|d| d.clone()).unwrap_or_default();
    match reports.first() {
        Some((_, None)) => Ok(()),
        Some((_, Some(code))) => Err(KafkaError::MessageProduction(*code)),
        None => Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)),
    }
}
