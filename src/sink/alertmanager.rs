//! The Alertmanager sink: incidents as Prometheus-style alerts, `POST <url>/api/v2/alerts`.
//! An open incident is an alert with `startsAt` = its opening; it is re-sent every
//! `resend_s` while open (Alertmanager resolves an alert it stops hearing about after its
//! `resolve_timeout`), and a resolved incident is sent once more with `endsAt`. Labels come
//! from closed sets (`alertname`, `appliance`, `layer`, `dimension`, `kind`, `direction`) plus
//! the key and the incident id, so Alertmanager groups by key; the reason, related keys and
//! values are annotations.
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`. Lives on: I/O cores (its thread).

use super::webhook::Poster;
use super::{Sink, SinkError};
use crate::alert::{AlertDoc, IncidentEvent, IncidentState};
use crate::config::AlertmanagerCfg;
use crate::model::json::{esc, num};
use crate::model::time::{now_s, rfc3339};
use crate::pipeline::SecondOutput;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// One incident as an Alertmanager alert object (`endsAt` only once resolved).
pub fn alert(appliance: &str, e: &IncidentEvent) -> String {
    let mut s = String::from("{\"labels\":{\"alertname\":\"FlowshardIncident\",\"appliance\":");
    esc(&mut s, appliance);
    let _ = write!(s, ",\"layer\":\"{}\",\"dimension\":", e.layer);
    esc(&mut s, &e.dimension);
    s.push_str(",\"key\":");
    esc(&mut s, &e.key);
    s.push_str(",\"kind\":");
    esc(&mut s, e.kinds.first().map_or("", String::as_str));
    let _ = write!(s, ",\"direction\":\"{}\",\"incident\":", if e.direction < 0 { "down" } else { "up" });
    esc(&mut s, &e.full_id(appliance));
    s.push_str("},\"annotations\":{\"summary\":");
    esc(&mut s, &e.reason);
    s.push_str(",\"related\":");
    esc(&mut s, &e.related.join(", "));
    s.push_str(",\"kinds\":");
    esc(&mut s, &e.kinds.join(","));
    s.push_str(",\"metrics\":");
    esc(&mut s, &e.metrics.join(","));
    s.push_str(",\"value\":\"");
    num(&mut s, e.value);
    s.push_str("\",\"expected\":\"");
    num(&mut s, e.expected);
    s.push_str("\",\"score\":\"");
    num(&mut s, e.score);
    let _ = write!(s, "\"}},\"startsAt\":\"{}\"", rfc3339(e.opened));
    if e.state == IncidentState::Resolve {
        let _ = write!(s, ",\"endsAt\":\"{}\"", rfc3339(e.second.max(e.opened + 1)));
    }
    s.push('}');
    s
}

/// The Alertmanager sink.
pub struct AlertmanagerSink {
    appliance: String,
    resend_s: u64,
    poster: Poster,
    /// Open incidents' alert objects, by id (re-sent while open).
    open: BTreeMap<String, String>,
    last_resend: u64,
}

impl AlertmanagerSink {
    /// Starts the sender thread.
    pub fn start(cfg: &AlertmanagerCfg, appliance: &str, cpu: Option<usize>) -> Result<AlertmanagerSink, SinkError> {
        let url = format!("{}/api/v2/alerts", cfg.url.trim_end_matches('/'));
        Ok(AlertmanagerSink {
            appliance: appliance.to_string(),
            resend_s: cfg.resend_s.max(1),
            poster: Poster::start("alertmanager", &url, cpu)?,
            open: BTreeMap::new(),
            last_resend: 0,
        })
    }

    /// Counters.
    pub fn stats(&self) -> Arc<super::delivery::SinkStats> {
        self.poster.stats()
    }

    fn send(&mut self, alerts: Vec<&String>) {
        if alerts.is_empty() {
            return;
        }
        let mut body = String::from("[");
        for (i, a) in alerts.into_iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(a);
        }
        body.push(']');
        self.poster.post(body);
    }
}

impl Sink for AlertmanagerSink {
    fn name(&self) -> &'static str {
        "alertmanager"
    }
    fn write(&mut self, _so: &SecondOutput, _alerts: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_alerts(&mut self, _alerts: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_incidents(&mut self, events: &[IncidentEvent]) -> Result<(), SinkError> {
        let mut now = Vec::with_capacity(events.len());
        for e in events {
            let a = alert(&self.appliance, e);
            let id = e.full_id(&self.appliance);
            if e.state == IncidentState::Resolve {
                self.open.remove(&id);
            } else {
                self.open.insert(id, a.clone());
            }
            now.push(a);
        }
        self.send(now.iter().collect());
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        let t = now_s();
        if t >= self.last_resend + self.resend_s {
            self.last_resend = t;
            let open: Vec<String> = self.open.values().cloned().collect();
            self.send(open.iter().collect());
        }
        Ok(())
    }
    fn close(&mut self) {
        self.poster.close();
    }
    fn finish(&mut self) {
        self.poster.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_shape() {
        let ev = crate::alert::incident::fixture("r");
        let open: serde_json::Value = serde_json::from_str(&alert("fs1", &ev[0])).unwrap();
        assert_eq!(open["labels"]["key"], "192.0.2.1");
        assert_eq!(open["labels"]["layer"], "1");
        assert_eq!(open["startsAt"], "2026-11-25T01:31:39Z");
        assert!(open.get("endsAt").is_none());
        let done: serde_json::Value = serde_json::from_str(&alert("fs1", &ev[1])).unwrap();
        assert_eq!(done["endsAt"], "2026-11-25T01:36:39Z");
        assert_eq!(done["labels"], open["labels"], "the same alert, resolved");
    }
}
