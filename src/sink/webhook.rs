//! The paging webhook: every incident event (open, update, resolve) is POSTed as JSON — generic
//! (the incident document), Slack incoming-webhook text, or PagerDuty Events v2 (`trigger` on
//! open and update, `resolve` on resolve, `dedup_key` the incident id) — from its own thread,
//! with retries; a bounded queue drops the oldest event when the receiver is down (counted).
//! Alerts themselves are evidence and are not paged.
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`. Lives on: I/O cores (its thread).

use super::delivery::{backoff, pause, DropOldest, DropReason, SinkStats, Worker};
use super::{Sink, SinkError};
use crate::alert::{AlertDoc, IncidentEvent, IncidentState};
use crate::config::{Webhook as Cfg, WebhookFormat};
use crate::model::json;
use crate::pipeline::SecondOutput;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Alerts queued while the receiver is slow or down.
pub const QUEUE: usize = 1000;
/// Attempts per alert before it is dropped (counted `rejected`).
pub const ATTEMPTS: u32 = 5;

/// The request body for one incident event in the configured format.
pub fn body(cfg: &Cfg, appliance: &str, e: &IncidentEvent) -> String {
    let mut doc = String::new();
    e.write_json(&mut doc, appliance);
    let related = if e.related.is_empty() { String::new() } else { format!(" (+ {})", e.related.join(", ")) };
    match cfg.format {
        WebhookFormat::Slack => {
            let mut s = String::from("{\"text\":");
            json::esc(
                &mut s,
                &format!(
                    "[flowshard {appliance}] {} layer {} {} {} {}{related}: {}",
                    e.state.name(),
                    e.layer,
                    e.kinds.join(","),
                    e.dimension,
                    e.key,
                    e.reason
                ),
            );
            s.push('}');
            s
        }
        WebhookFormat::Pagerduty => {
            let severity = if e.score >= 0.999 {
                "critical"
            } else if e.score >= 0.99 {
                "error"
            } else {
                "warning"
            };
            let summary: String =
                format!("layer {} {} on {} {}{related}: {}", e.layer, e.kinds.join(","), e.dimension, e.key, e.reason)
                    .chars()
                    .take(1000)
                    .collect();
            let action = if e.state == IncidentState::Resolve { "resolve" } else { "trigger" };
            let mut s = String::from("{\"routing_key\":");
            json::esc(&mut s, &cfg.routing_key);
            s.push_str(&format!(",\"event_action\":\"{action}\",\"dedup_key\":"));
            json::esc(&mut s, &e.full_id(appliance));
            s.push_str(",\"payload\":{\"summary\":");
            json::esc(&mut s, &summary);
            s.push_str(",\"source\":");
            json::esc(&mut s, appliance);
            s.push_str(&format!(
                ",\"severity\":\"{severity}\",\"timestamp\":\"{}\",\"component\":",
                crate::model::time::rfc3339(e.second)
            ));
            json::esc(&mut s, &e.dimension);
            s.push_str(",\"class\":");
            json::esc(&mut s, e.kinds.first().map_or("", String::as_str));
            s.push_str(",\"custom_details\":");
            s.push_str(&doc);
            s.push_str("}}");
            s
        }
        WebhookFormat::Generic => doc,
    }
}

/// A bounded queue of JSON bodies POSTed to one URL by a thread of its own, with retries: the
/// sender behind the webhook and the Alertmanager sinks.
pub struct Poster {
    queue: DropOldest<String>,
    stats: Arc<SinkStats>,
    worker: Worker,
}

impl Poster {
    /// Starts the sender thread for `url`; counters under `name`.
    pub fn start(name: &'static str, url: &str, cpu: Option<usize>) -> Result<Poster, SinkError> {
        let stats = SinkStats::new(name, None);
        let queue = DropOldest::new(QUEUE, stats.clone(), |_| 1);
        let (rx, st, url) = (queue.receiver(), stats.clone(), url.to_string());
        let worker = Worker::spawn(name, cpu, move |stop| deliver(name, &url, &rx, &st, &stop))?;
        Ok(Poster { queue, stats, worker })
    }

    /// Queues one body (the oldest is dropped, counted, when the queue is full).
    pub fn post(&mut self, body: String) {
        self.queue.push(body);
    }

    /// Counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Shutdown begins.
    pub fn close(&mut self) {
        self.worker.stop();
    }

    /// Shutdown ends: what is queued goes out (bounded), then the thread is joined.
    pub fn finish(&mut self) {
        self.worker.stop_and_join();
    }
}

/// The webhook sink.
pub struct WebhookSink {
    cfg: Cfg,
    appliance: String,
    poster: Poster,
}

impl WebhookSink {
    /// Starts the sender thread.
    pub fn start(cfg: &Cfg, appliance: &str, cpu: Option<usize>) -> Result<WebhookSink, SinkError> {
        Ok(WebhookSink {
            cfg: cfg.clone(),
            appliance: appliance.to_string(),
            poster: Poster::start("webhook", &cfg.url, cpu)?,
        })
    }

    /// Counters.
    pub fn stats(&self) -> Arc<SinkStats> {
        self.poster.stats()
    }

    fn push(&mut self, e: &IncidentEvent) {
        // a resolve always goes out, so nothing stays open at the receiver
        if e.score >= self.cfg.min_score || e.state == IncidentState::Resolve {
            self.poster.post(body(&self.cfg, &self.appliance, e));
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }
    fn write(&mut self, _so: &SecondOutput, _alerts: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_alerts(&mut self, _alerts: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_incidents(&mut self, events: &[IncidentEvent]) -> Result<(), SinkError> {
        for e in events {
            self.push(e);
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn close(&mut self) {
        self.poster.close();
    }

    fn finish(&mut self) {
        self.poster.finish();
    }
}

fn deliver(name: &'static str, url: &str, rx: &Receiver<String>, stats: &SinkStats, stop: &AtomicBool) {
    let client = match reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(sink = name, "cannot build the HTTP client: {e}");
            return;
        }
    };
    loop {
        let b = match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut attempt = 0;
        loop {
            let r = client.post(url).header("content-type", "application/json").body(b.clone()).send();
            match r {
                Ok(resp) if resp.status().is_success() => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(true, Ordering::Relaxed);
                    break;
                }
                Ok(resp) if resp.status().is_client_error() && resp.status().as_u16() != 429 => {
                    stats.drop_n(DropReason::Rejected, 1);
                    tracing::warn!(sink = name, "{url} refused a request: HTTP {}", resp.status());
                    break;
                }
                other => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    attempt += 1;
                    if attempt >= ATTEMPTS || stop.load(Ordering::Relaxed) {
                        stats.drop_n(DropReason::Rejected, 1);
                        if let Err(e) = other {
                            tracing::warn!(sink = name, "{url}: {e} (request dropped after {attempt} attempts)");
                        }
                        break;
                    }
                    stats.retried.fetch_add(1, Ordering::Relaxed);
                    pause(backoff(attempt));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shapes() {
        let ev = crate::alert::incident::fixture("a \"quoted\" reason");
        let (open, resolve) = (&ev[0], &ev[1]);
        let cfg = |format| Cfg { url: "http://x".into(), format, routing_key: "rk".into(), min_score: 0.0 };
        let g: serde_json::Value = serde_json::from_str(&body(&cfg(WebhookFormat::Generic), "fs1", open)).unwrap();
        assert_eq!(g["key"], "192.0.2.1");
        assert_eq!(g["state"], "open");
        let s: serde_json::Value = serde_json::from_str(&body(&cfg(WebhookFormat::Slack), "fs1", open)).unwrap();
        assert!(s["text"].as_str().unwrap().contains("a \"quoted\" reason"));
        let p: serde_json::Value = serde_json::from_str(&body(&cfg(WebhookFormat::Pagerduty), "fs1", open)).unwrap();
        assert_eq!(p["routing_key"], "rk");
        assert_eq!(p["event_action"], "trigger");
        assert_eq!(p["dedup_key"], "fs1:1:dst_ip:192.0.2.1:1795570299");
        assert_eq!(p["payload"]["severity"], "critical");
        assert_eq!(p["payload"]["timestamp"], "2026-11-25T01:31:39Z");
        assert_eq!(p["payload"]["custom_details"]["layer"], 1);
        let r: serde_json::Value = serde_json::from_str(&body(&cfg(WebhookFormat::Pagerduty), "fs1", resolve)).unwrap();
        assert_eq!(r["event_action"], "resolve");
        assert_eq!(r["dedup_key"], p["dedup_key"], "resolve closes the same PagerDuty alert");
    }
}
