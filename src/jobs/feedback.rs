//! Operator feedback over Kafka: the consumer job that applies every appliance's feedback
//! topic to this appliance's suppression store (which the alert gate re-reads), and the
//! publisher `flowshard feedback` uses.
//!
//! May depend on: `alert`, `sink` (Kafka client settings), `config`, `model`. Lives on: I/O cores (the
//! consumer's thread) and the main thread (publishing).

use crate::alert::Feedback;
use crate::config::KafkaSink;
use crate::sink::delivery::{pause, DropReason, SinkStats};
use crate::sink::kafka::{client_config, create_topics, Reports};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Reads operator feedback (JSON [`Feedback`](crate::alert::Feedback) messages) from the
/// feedback topic and applies it to the suppression store in `state_dir`, which the alert gate
/// re-reads. Every appliance reads the whole topic (its own consumer group). `caught_up` is set
/// once every assigned partition has been read to its end (feedback queued while the appliance
/// was down is applied), or at once when the consumer cannot start; the layer-2 job waits for it
/// before its first run. Runs until `stop`.
pub fn consume(
    k: &KafkaSink,
    appliance: &str,
    topic: &str,
    state_dir: &std::path::Path,
    stats: &SinkStats,
    caught_up: &std::sync::atomic::AtomicBool,
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
    // end-of-partition events tell when the backlog is applied (set after the user's properties)
    c.set("enable.partition.eof", "true");
    let mut at_end = std::collections::BTreeSet::new();
    let consumer: BaseConsumer = match c.create() {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(job = "feedback", "kafka consumer: {e}");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            caught_up.store(true, Ordering::Relaxed);
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        tracing::warn!(job = "feedback", "kafka consumer: {e}");
        stats.errors.fetch_add(1, Ordering::Relaxed);
        caught_up.store(true, Ordering::Relaxed);
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(250)) {
            Some(Ok(m)) => {
                let now = crate::model::time::now_s();
                match m.payload().map(serde_json::from_slice::<crate::alert::Feedback>) {
                    Some(Ok(f)) => match crate::alert::Suppressions::apply_to_dir(state_dir, f, now) {
                        Ok(()) => {
                            stats.delivered.fetch_add(1, Ordering::Relaxed);
                            stats.up.store(true, Ordering::Relaxed);
                        }
                        Err(e) => {
                            stats.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(job = "feedback", "{e}");
                        }
                    },
                    _ => {
                        stats.drop_n(DropReason::Rejected, 1);
                        tracing::warn!(job = "feedback", "topic {topic}: ignoring a message that is not feedback JSON");
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                stats.up.store(true, Ordering::Relaxed);
                at_end.insert(p);
                let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(usize::MAX);
                if at_end.len() >= assigned {
                    caught_up.store(true, Ordering::Relaxed);
                }
            }
            Some(Err(e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.up.store(false, Ordering::Relaxed);
                tracing::debug!(job = "feedback", "kafka consumer: {e}");
                pause(Duration::from_millis(500));
            }
            None => {}
        }
    }
}

/// Publishes one feedback item to the feedback topic (used by `flowshard feedback`).
pub fn publish(k: &KafkaSink, topic: &str, f: &Feedback) -> Result<(), KafkaError> {
    let _ = create_topics(k, "cli", &[topic]);
    let mut c = client_config(k, "cli");
    c.set("message.timeout.ms", "15000");
    let p: BaseProducer<Reports> = c.create_with_context(Reports::default())?;
    let body = serde_json::to_string(f).unwrap_or_default();
    let key = match f {
        crate::alert::Feedback::Suppress { key, .. }
        | crate::alert::Feedback::FalsePositive { key, .. }
        | crate::alert::Feedback::Unsuppress { key } => key.clone(),
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
