//! The Kafka sink (rdkafka, bundled librdkafka): protocol code only; retry, back-off, counters
//! and the spool are [`super::delivery`]'s.
//!
//! Each spooled frame (one second) is produced to the rollups and alerts topics and committed
//! only when every message in it is acknowledged. The producer is idempotent with `acks=all`
//! and an unlimited message timeout, so a broker outage of any length is ridden out by
//! librdkafka's retries with the same producer id and sequence numbers (the broker drops
//! duplicates), while the frames behind it wait on disk. Permanently refused messages (too
//! large, not authorised) are counted as `rejected`.
//!
//! Records: rollups keyed `dimension:key` (one partition per key's history), alerts keyed
//! `dimension:key` too; the value is the rollup/alert JSON of [`super::format`].
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`. Lives on: I/O cores (its thread).

use super::delivery::{self, Attempt, AttemptError, Backend, Outcome, SinkStats, Spooled};
use super::format;
use super::frame::{FrameBuilder, Kind, Record};
use super::SinkError;
use crate::alert::{AlertDoc, IncidentEvent};
use crate::config::KafkaSink;
use crate::pipeline::SecondOutput;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Collects delivery reports for the frame in flight.
#[derive(Default)]
pub struct Reports {
    pub(crate) done: Mutex<Vec<(usize, Option<RDKafkaErrorCode>)>>,
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
        .set("compression.type", k.compression.name())
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
    let mut names: Vec<&str> =
        vec![&k.rollups_topic, &k.alerts_topic, &k.incidents_topic, &k.anomaly_results_topic, &k.hosts_topic];
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
                tracing::warn!(sink = "kafka", "cannot create topic {t}: {code:?}");
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

/// Starts a Kafka sink's delivery: a spool `dir/name` and a thread producing its frames
/// (`kafka` for rollups, alerts and incidents; `kafka_flows` for the raw-flows topic).
pub fn start(
    name: &'static str,
    k: &KafkaSink,
    appliance: &str,
    dir: &Path,
    max_bytes: u64,
    cpu: Option<usize>,
) -> Result<Spooled, SinkError> {
    let (k, a) = (k.clone(), appliance.to_string());
    Spooled::start(
        name,
        appliance,
        dir,
        max_bytes,
        (render, render_alert, render_incident),
        cpu,
        move |reader, stats| {
            let mut b = KafkaBackend { k, appliance: a, producer: None, topic_tries: 0 };
            delivery::drive(&mut b, reader, &stats)
        },
    )
}

/// Kafka records of one second: key `dimension:key`, value the rollup/alert JSON.
pub fn render(appliance: &str, so: &SecondOutput, alerts: &[AlertDoc], fb: &mut FrameBuilder, s: &mut String) {
    let mut key = String::new();
    for r in &so.rollups {
        s.clear();
        format::rollup(s, appliance, r);
        key.clear();
        key.push_str(r.dimension.name());
        key.push(':');
        key.push_str(&r.dimension.format_key(&r.key));
        fb.push(Kind::Rollup, r.second, &key, s);
    }
    for a in alerts {
        render_alert(appliance, a, fb, s);
    }
}

/// One alert record of any layer: key `dimension:key`.
pub fn render_alert(appliance: &str, a: &AlertDoc, fb: &mut FrameBuilder, s: &mut String) {
    s.clear();
    a.write_json(s, appliance);
    fb.push(Kind::Alert, a.second, &format!("{}:{}", a.dimension, a.key), s);
}

/// One incident event: key the incident id (one partition per incident's history).
pub fn render_incident(appliance: &str, e: &IncidentEvent, fb: &mut FrameBuilder, s: &mut String) {
    s.clear();
    e.write_json(s, appliance);
    fb.push(Kind::Incident, e.second, &e.full_id(appliance), s);
}

/// The Kafka side of the delivery driver.
struct KafkaBackend {
    k: KafkaSink,
    appliance: String,
    producer: Option<BaseProducer<Reports>>,
    topic_tries: u32,
}

impl Backend for KafkaBackend {
    fn prepare(&mut self, closing: bool) -> Result<(), String> {
        if self.producer.is_none() {
            let p = client_config(&self.k, &self.appliance)
                .create_with_context(Reports::default())
                .map_err(|e| format!("cannot create the producer: {e}"))?;
            self.producer = Some(p);
        }
        // Missing topics are created (best effort: a cluster may forbid it; then an operator
        // creates them and the messages wait).
        if closing || self.topic_tries > 5 {
            return Ok(());
        }
        self.topic_tries += 1;
        let flows: &[&str] = if self.k.flows { &[&self.k.flows_topic] } else { &[] };
        create_topics(&self.k, &self.appliance, flows)
            .map(|_| ())
            .map_err(|e| format!("cannot check/create topics: {e}"))
    }

    fn tick(&mut self, _stats: &SinkStats) {
        if let Some(p) = &self.producer {
            p.poll(Duration::ZERO);
        }
    }

    fn send(&mut self, recs: &[Record<'_>], pending: &[usize], at: &Attempt<'_>) -> Result<Vec<Outcome>, AttemptError> {
        let Some(p) = &self.producer else { return Err(AttemptError::Failed("no producer".into())) };
        if let Ok(mut d) = p.context().done.lock() {
            d.clear();
        }
        let mut sent = 0usize;
        for &i in pending {
            let r = &recs[i];
            let topic = match r.kind {
                Kind::Rollup => &self.k.rollups_topic,
                Kind::Alert => &self.k.alerts_topic,
                Kind::Incident => &self.k.incidents_topic,
                Kind::AnomalyResult => &self.k.anomaly_results_topic,
                Kind::Flows => &self.k.flows_topic,
                Kind::Host => &self.k.hosts_topic,
            };
            let mut rec = BaseRecord::with_opaque_to(topic, Box::new(i)).key(r.key).payload(r.value);
            if r.kind == Kind::Flows {
                // data time, so that consumers (and `replay --kafka --from`) seek by it
                rec = rec.timestamp((r.second * 1000).min(i64::MAX as u64) as i64);
            }
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        rec = back;
                        p.poll(Duration::from_millis(50));
                    }
                    Err((e, _)) => {
                        let code = e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
                        if let Ok(mut d) = p.context().done.lock() {
                            d.push((i, Some(code)));
                        }
                        break;
                    }
                }
            }
            sent += 1;
        }
        // Wait for every report of this attempt.
        let waiting = Instant::now();
        loop {
            if waiting.elapsed() > Duration::from_secs(5) {
                at.stats.up.store(false, Ordering::Relaxed);
            }
            if p.context().done.lock().map_or(0, |d| d.len()) >= sent {
                break;
            }
            p.poll(Duration::from_millis(100));
            if p.client().fatal_error().is_some() {
                break;
            }
            if at.abandon() {
                return Err(AttemptError::Abandoned);
            }
        }
        if let Some((code, reason)) = p.client().fatal_error() {
            // An idempotent producer that hit a fatal error must be replaced; the records are
            // sent again from the start of the failed part.
            self.producer = None;
            if let Ok(np) = client_config(&self.k, &self.appliance).create_with_context(Reports::default()) {
                self.producer = Some(np);
            }
            return Err(AttemptError::Failed(format!("fatal producer error {code:?}: {reason}; producer recreated")));
        }
        let reports = p.context().done.lock().map(|mut d| std::mem::take(&mut *d)).unwrap_or_default();
        let mut out = vec![Outcome::Retry; pending.len()];
        for (i, code) in reports {
            let Ok(pos) = pending.binary_search(&i) else { continue };
            out[pos] = match code {
                None => Outcome::Delivered,
                Some(c) if permanent(c) => Outcome::Rejected(format!("{c:?}")),
                Some(_) => Outcome::Retry,
            };
        }
        Ok(out)
    }

    fn close(&mut self, abandoned: bool) {
        if let Some(p) = &self.producer {
            p.flush(Duration::from_secs(if abandoned { 1 } else { 5 })).ok();
        }
    }
}
