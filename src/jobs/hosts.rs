//! The host-metrics Kafka consumer: Telegraf JSON metrics (its Kafka output's format, single or
//! batched) read from a topic into a [`HostCore`] of its own, handed to the I/O loop as one
//! batch a second, like a shard's. Appliances share the consumer group, so each message is
//! read by one of them. Refused messages are counted (`json_errors`), never a panic.
//!
//! May depend on: `pipeline` (the host core), `config`, `sink` (thread helpers, stats), `model`,
//! `ops` (the status type). Lives on: I/O cores (thread `flowshard-hosts-kafka`).

use crate::config::hosts::HostsKafka;
use crate::pipeline::host::{HostBatch, HostCore, HostPathConfig};
use crate::sink::delivery::{pause, SinkStats};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where the consumer's batches go; false if the I/O queue was full.
pub type BatchOut = Box<dyn Fn(HostBatch) -> bool + Send>;
/// Where its counters go, once a second.
pub type StatusOut = Box<dyn Fn(crate::ops::HostStatus) + Send>;

/// Consumes `k.topic` until `stop`.
#[allow(clippy::too_many_arguments)]
pub fn consume(
    k: &HostsKafka,
    path: &HostPathConfig,
    source: u16,
    out: &BatchOut,
    status: &StatusOut,
    stats: &SinkStats,
    stop: &AtomicBool,
) {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers)
        .set("group.id", &k.group_id)
        .set("auto.offset.reset", "latest")
        .set("enable.auto.commit", "true")
        .set("client.id", "flowshard-hosts");
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let consumer: BaseConsumer = match c.create() {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(job = "hosts-kafka", "kafka consumer: {e}");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&k.topic]) {
        tracing::warn!(job = "hosts-kafka", "kafka consumer: {e}");
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut core = HostCore::new(path, source);
    let mut buf = Vec::with_capacity(64 << 10);
    let mut open = crate::model::time::now_s();
    let mut handoff_dropped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                stats.up.store(true, Ordering::Relaxed);
                stats.delivered.fetch_add(1, Ordering::Relaxed);
                buf.clear();
                buf.extend_from_slice(m.payload().unwrap_or_default());
                core.json(&mut buf, b"unknown", crate::model::time::now_s());
            }
            Some(Err(e)) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                stats.up.store(false, Ordering::Relaxed);
                tracing::debug!(job = "hosts-kafka", "kafka consumer: {e}");
                pause(Duration::from_millis(500));
            }
            None => {}
        }
        let now = crate::model::time::now_s();
        if now > open {
            if !out(core.close(open)) {
                handoff_dropped += 1;
            }
            open = now;
            status(crate::ops::HostStatus {
                input: core.counters.clone(),
                window: core.window.counters.clone(),
                series: core.window.known(),
                handoff_dropped,
                ..Default::default()
            });
        }
    }
    let _ = out(core.close(open));
}
