//! Incidents: what an operator sees. Alerts of every layer are evidence; an incident per
//! (layer, primary key) *opens* on the first evidence, *updates* only when it escalates (a new
//! related key, metric or kind, or a peak at least twice the last one reported), and
//! *resolves* after a quiet time without evidence. Evidence that the same traffic explains —
//! the same direction within a few seconds of an incident's opening (the destination, the
//! port, the interface carrying it and `total` during one surge) — joins that incident as
//! related keys, so one surge is one page.
//!
//! Pure bookkeeping: the caller passes the time (the newest second of data; evidence of layers
//! 2 and 3 is about minutes past, so the quiet time counts from when evidence *arrived*). The
//! I/O loop and `replay` run the same code. Bounded: at most `max_open` incidents are open; beyond that the
//! oldest is resolved early (counted).
//!
//! May depend on: `model`. Lives on: the I/O core (and replay).

use super::AlertDoc;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;

/// `[incidents]`: how evidence becomes incidents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentConfig {
    /// An incident resolves after this long without evidence, seconds.
    pub resolve_after_s: u64,
    /// Evidence on a new key joins an open incident of the same layer and direction that
    /// opened at most this long before, seconds.
    pub correlate_s: u64,
    /// Incidents open at once; beyond it the oldest is resolved early (counted).
    pub max_open: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig { resolve_after_s: 300, correlate_s: 10, max_open: 10_000 }
    }
}

/// The lifecycle step an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// First evidence.
    Open,
    /// Escalated.
    Update,
    /// Quiet for `resolve_after_s`.
    Resolve,
}

impl IncidentState {
    /// Stable name.
    pub const fn name(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Update => "update",
            IncidentState::Resolve => "resolve",
        }
    }
}

/// One incident as a sink sees it at one step of its life.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentEvent {
    /// What happened.
    pub state: IncidentState,
    /// Stable id: `<layer>:<dimension>:<key>:<opened>` (the appliance prefixes it).
    pub id: String,
    /// Detection layer.
    pub layer: u8,
    /// Second of the first evidence.
    pub opened: u64,
    /// Second of this event (the evidence's, or the resolve's).
    pub second: u64,
    /// Data time at which this event was raised (the newest second of data then). Equals
    /// `second` for layer 1; a layer-3 alert is raised when the interval after the anomaly
    /// confirms it, up to two intervals after the evidence's `second` (the anomaly's start).
    pub raised: u64,
    /// Second of the latest evidence.
    pub last_evidence: u64,
    /// Primary dimension.
    pub dimension: String,
    /// Primary key.
    pub key: String,
    /// Other keys the same traffic explains, as `dimension:key`.
    pub related: Vec<String>,
    /// Kinds of evidence seen (spike, drop, …).
    pub kinds: Vec<String>,
    /// Metrics involved.
    pub metrics: Vec<String>,
    /// +1 above the baseline, −1 below.
    pub direction: i8,
    /// Highest score of the evidence.
    pub score: f64,
    /// The strongest evidence's value and expected value.
    pub value: f64,
    /// Expected value of the strongest evidence.
    pub expected: f64,
    /// Alerts that fed it.
    pub evidence: u32,
    /// The strongest evidence's reason.
    pub reason: String,
}

impl IncidentEvent {
    /// The id with the appliance: OpenSearch `_id`, PagerDuty `dedup_key`, Alertmanager label.
    pub fn full_id(&self, appliance: &str) -> String {
        format!("{appliance}:{}", self.id)
    }

    /// Appends the JSON object (no newline): `{"type":"incident","appliance","id","state",
    /// "layer","opened","opened_time","second","time","raised","last_evidence","dimension","key",
    /// "related","kinds","metrics","direction","score","value","expected","evidence","reason"}`.
    pub fn write_json(&self, out: &mut String, appliance: &str) {
        use crate::model::json::{esc, num};
        use crate::model::time::rfc3339;
        out.push_str("{\"type\":\"incident\",\"appliance\":");
        esc(out, appliance);
        out.push_str(",\"id\":");
        esc(out, &self.full_id(appliance));
        let _ = write!(
            out,
            ",\"state\":\"{}\",\"layer\":{},\"opened\":{},\"opened_time\":\"{}\",\"second\":{},\"time\":\"{}\",\"raised\":{},\"last_evidence\":{},\"dimension\":",
            self.state.name(),
            self.layer,
            self.opened,
            rfc3339(self.opened),
            self.second,
            rfc3339(self.second),
            self.raised,
            self.last_evidence
        );
        esc(out, &self.dimension);
        out.push_str(",\"key\":");
        esc(out, &self.key);
        for (name, list) in [("related", &self.related), ("kinds", &self.kinds), ("metrics", &self.metrics)] {
            let _ = write!(out, ",\"{name}\":[");
            for (i, s) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                esc(out, s);
            }
            out.push(']');
        }
        let _ = write!(out, ",\"direction\":{},\"score\":", self.direction);
        num(out, self.score);
        out.push_str(",\"value\":");
        num(out, self.value);
        out.push_str(",\"expected\":");
        num(out, self.expected);
        let _ = write!(out, ",\"evidence\":{},\"reason\":", self.evidence);
        esc(out, &self.reason);
        out.push('}');
    }
}

/// Counters of the incident tracker.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentCounters {
    /// Incidents opened.
    pub opened: u64,
    /// Update events (escalations).
    pub updated: u64,
    /// Incidents resolved (quiet).
    pub resolved: u64,
    /// Incidents resolved early because `max_open` were open.
    pub forced: u64,
    /// Alerts taken as evidence.
    pub evidence: u64,
    /// Evidence that joined another key's incident (correlated).
    pub correlated: u64,
}

struct Open {
    ev: IncidentEvent,
    /// Something to report at the end of this batch (opened, or escalated).
    dirty: bool,
    /// When evidence last arrived (the caller's time).
    heard: u64,
    /// |value − expected| of the primary evidence and its metric (magnitude check).
    delta: f64,
    metric: String,
    /// value / expected of the peak last reported.
    peak_ratio: f64,
}

/// The open incidents.
pub struct Incidents {
    cfg: IncidentConfig,
    open: Vec<Open>,
    /// (layer, dimension, key) of the primary and every related key → index into `open`.
    index: HashMap<(u8, String, String), usize>,
    /// Counters.
    pub counters: IncidentCounters,
}

/// Most specific first: an address explains a port, a port an interface, all of them `total`.
fn specificity(dimension: &str) -> u8 {
    match dimension {
        "src_ip" | "dst_ip" => 0,
        "dst_port" | "src_port" => 1,
        "exporter_in_if" | "exporter_out_if" | "src_as" | "dst_as" | "src_net" | "dst_net" => 2,
        "total" => 4,
        _ => 3,
    }
}

fn direction(a: &AlertDoc) -> i8 {
    if a.kind.contains("drop") || (a.kind == "level_shift" && a.value < a.expected) {
        -1
    } else {
        1
    }
}

fn ratio(a: &AlertDoc) -> f64 {
    let (v, e) = (a.value.abs().max(1.0), a.expected.abs().max(1.0));
    if v >= e {
        v / e
    } else {
        e / v
    }
}

fn push_unique(list: &mut Vec<String>, s: &str) -> bool {
    if list.iter().any(|x| x == s) {
        false
    } else {
        list.push(s.to_string());
        true
    }
}

impl Incidents {
    /// An empty tracker.
    pub fn new(cfg: &IncidentConfig) -> Incidents {
        Incidents { cfg: cfg.clone(), open: Vec::new(), index: HashMap::new(), counters: IncidentCounters::default() }
    }

    /// Incidents open now.
    pub fn open(&self) -> impl Iterator<Item = &IncidentEvent> {
        self.open.iter().map(|o| &o.ev)
    }

    /// Takes alerts (of one second, or one job run) arriving at `now` as evidence; appends
    /// open/update events, at most one per incident for the batch.
    pub fn observe(&mut self, alerts: &[AlertDoc], now: u64, out: &mut Vec<IncidentEvent>) {
        self.take(alerts, now, out);
        for o in self.open.iter_mut().filter(|o| o.dirty) {
            o.dirty = false;
            out.push(o.ev.clone());
            if o.ev.state == IncidentState::Update {
                self.counters.updated += 1;
            }
        }
    }

    fn take(&mut self, alerts: &[AlertDoc], now: u64, out: &mut Vec<IncidentEvent>) {
        let mut order: Vec<&AlertDoc> = alerts.iter().collect();
        // primaries first: the most specific keys, then the strongest evidence
        order.sort_by(|a, b| {
            (a.second, specificity(&a.dimension))
                .cmp(&(b.second, specificity(&b.dimension)))
                .then(b.score.total_cmp(&a.score))
        });
        for a in order {
            self.counters.evidence += 1;
            let k = (a.layer, a.dimension.clone(), a.key.clone());
            if let Some(&i) = self.index.get(&k) {
                self.escalate(i, a, None, now);
                continue;
            }
            let dir = direction(a);
            let delta = (a.value - a.expected).abs();
            let joined = self.open.iter().position(|o| {
                o.ev.layer == a.layer
                    && o.ev.direction == dir
                    && a.second >= o.ev.opened
                    && a.second - o.ev.opened <= self.cfg.correlate_s
                    && (o.metric != a.metric || (delta <= 4.0 * o.delta && o.delta <= 4.0 * delta))
            });
            if let Some(i) = joined {
                self.index.insert(k, i);
                self.counters.correlated += 1;
                let related = format!("{}:{}", a.dimension, a.key);
                self.escalate(i, a, Some(related), now);
                continue;
            }
            if self.open.len() >= self.cfg.max_open.max(1) {
                let oldest = (0..self.open.len()).min_by_key(|&i| self.open[i].heard).unwrap_or(0);
                self.close(oldest, now, out);
                self.counters.forced += 1;
            }
            let ev = IncidentEvent {
                state: IncidentState::Open,
                id: format!("{}:{}:{}:{}", a.layer, a.dimension, a.key, a.second),
                layer: a.layer,
                opened: a.second,
                second: a.second,
                raised: now,
                last_evidence: a.second,
                dimension: a.dimension.clone(),
                key: a.key.clone(),
                related: Vec::new(),
                kinds: vec![a.kind.clone()],
                metrics: vec![a.metric.clone()],
                direction: dir,
                score: a.score,
                value: a.value,
                expected: a.expected,
                evidence: 1,
                reason: a.reason.clone(),
            };
            self.counters.opened += 1;
            self.index.insert(k, self.open.len());
            self.open.push(Open { ev, dirty: true, heard: now, delta, metric: a.metric.clone(), peak_ratio: ratio(a) });
        }
    }

    /// Adds evidence to incident `i`; marks it for an update event when it escalates.
    fn escalate(&mut self, i: usize, a: &AlertDoc, related: Option<String>, now: u64) {
        let o = &mut self.open[i];
        o.heard = o.heard.max(now);
        o.ev.evidence += 1;
        o.ev.last_evidence = o.ev.last_evidence.max(a.second);
        let mut up = false;
        if let Some(r) = related {
            up |= push_unique(&mut o.ev.related, &r);
        }
        up |= push_unique(&mut o.ev.kinds, &a.kind);
        up |= push_unique(&mut o.ev.metrics, &a.metric);
        let r = ratio(a);
        if a.score > o.ev.score {
            o.ev.score = a.score;
        }
        if r >= 2.0 * o.peak_ratio {
            o.peak_ratio = r;
            o.ev.value = a.value;
            o.ev.expected = a.expected;
            o.ev.reason = a.reason.clone();
            up = true;
        }
        if up && !o.dirty {
            o.ev.state = IncidentState::Update;
            o.ev.second = a.second;
            o.ev.raised = now;
            o.dirty = true;
        }
    }

    /// Resolves the incidents without evidence since `now - resolve_after_s`; appends events.
    pub fn tick(&mut self, now: u64, out: &mut Vec<IncidentEvent>) {
        let mut i = 0;
        while i < self.open.len() {
            if self.open[i].heard + self.cfg.resolve_after_s <= now {
                self.close(i, now, out);
                self.counters.resolved += 1;
            } else {
                i += 1;
            }
        }
    }

    /// Resolves every open incident (end of a replay, shutdown).
    pub fn resolve_all(&mut self, now: u64, out: &mut Vec<IncidentEvent>) {
        while !self.open.is_empty() {
            self.close(self.open.len() - 1, now, out);
            self.counters.resolved += 1;
        }
    }

    fn close(&mut self, i: usize, now: u64, out: &mut Vec<IncidentEvent>) {
        let mut o = self.open.swap_remove(i);
        if o.dirty {
            // opened or escalated in this very batch: say so before resolving
            out.push(o.ev.clone());
        }
        self.index.retain(|_, j| *j != i);
        if i < self.open.len() {
            // the last incident moved to `i`
            let moved = self.open.len();
            for j in self.index.values_mut() {
                if *j == moved {
                    *j = i;
                }
            }
        }
        o.ev.state = IncidentState::Resolve;
        o.ev.second = now;
        o.ev.raised = now;
        out.push(o.ev);
    }
}

/// Test fixture for the paging sinks: the open and resolve events of an incident that one
/// layer-1 `spike` on `dst_ip` 192.0.2.1 (second 1,795,570,299, score 0.9999) opened.
#[cfg(test)]
pub(crate) fn fixture(reason: &str) -> Vec<IncidentEvent> {
    let a = AlertDoc {
        layer: 1,
        second: 1_795_570_299,
        dimension: "dst_ip".into(),
        key: "192.0.2.1".into(),
        metric: "bytes".into(),
        kind: "spike".into(),
        value: 9.0,
        expected: 1.0,
        score: 0.9999,
        z: 9.0,
        reason: reason.into(),
    };
    let mut inc = Incidents::new(&IncidentConfig::default());
    let mut ev = Vec::new();
    inc.observe(&[a], 1_795_570_299, &mut ev);
    inc.tick(1_795_570_299 + 300, &mut ev);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(second: u64, dimension: &str, key: &str, metric: &str, kind: &str, value: f64, expected: f64) -> AlertDoc {
        AlertDoc {
            layer: 1,
            second,
            dimension: dimension.into(),
            key: key.into(),
            metric: metric.into(),
            kind: kind.into(),
            value,
            expected,
            score: 0.9,
            z: 5.0,
            reason: format!("{key} {kind}"),
        }
    }

    #[test]
    fn one_surge_is_one_incident_with_related_keys() {
        let mut inc = Incidents::new(&IncidentConfig::default());
        let mut ev = Vec::new();
        inc.observe(
            &[
                a(100, "total", "total", "bytes", "spike", 30e6, 10e6),
                a(100, "dst_ip", "192.0.2.9", "bytes", "spike", 20e6, 1e3),
                a(100, "exporter_in_if", "192.0.2.1:3", "bytes", "spike", 21e6, 1e6),
                a(101, "dst_port", "123/udp", "packets", "spike", 5e4, 10.0),
            ],
            101,
            &mut ev,
        );
        assert_eq!(ev.iter().filter(|e| e.state == IncidentState::Open).count(), 1, "{ev:?}");
        assert_eq!(ev[0].dimension, "dst_ip", "the most specific key is primary");
        let last = ev.last().unwrap();
        assert_eq!(last.related.len(), 3, "{last:?}");
        // the same keys alerting again later: no new page, and nothing new to say
        ev.clear();
        inc.observe(&[a(150, "dst_ip", "192.0.2.9", "bytes", "spike", 21e6, 2e6)], 150, &mut ev);
        assert!(ev.is_empty(), "{ev:?}");
        // quiet for the resolve time: resolved once
        inc.tick(150 + 299, &mut ev);
        assert!(ev.is_empty());
        inc.tick(150 + 300, &mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].state, IncidentState::Resolve);
        assert_eq!(inc.open().count(), 0);
    }

    #[test]
    fn unrelated_evidence_opens_separate_incidents() {
        let mut inc = Incidents::new(&IncidentConfig::default());
        let mut ev = Vec::new();
        inc.observe(&[a(100, "dst_ip", "192.0.2.9", "bytes", "spike", 20e6, 1e3)], 100, &mut ev);
        // opposite direction at the same time, and the same direction much later
        inc.observe(&[a(101, "exporter_in_if", "192.0.2.2:11", "bytes", "drop", 0.0, 5e6)], 101, &mut ev);
        inc.observe(&[a(400, "src_ip", "10.0.0.1", "flows", "spike", 900.0, 10.0)], 400, &mut ev);
        // same direction and time, same metric, but a magnitude the surge cannot explain
        inc.observe(&[a(102, "dst_ip", "192.0.2.10", "bytes", "spike", 2e9, 1e3)], 102, &mut ev);
        assert_eq!(ev.iter().filter(|e| e.state == IncidentState::Open).count(), 4, "{ev:?}");
        let ids: std::collections::HashSet<_> = ev.iter().map(|e| e.id.clone()).collect();
        assert_eq!(ids.len(), 4, "stable distinct ids");
    }

    #[test]
    fn escalation_updates_and_json_shape() {
        let mut inc = Incidents::new(&IncidentConfig::default());
        let mut ev = Vec::new();
        inc.observe(&[a(100, "src_ip", "10.0.0.1", "flows", "spike", 100.0, 10.0)], 100, &mut ev);
        inc.observe(&[a(110, "src_ip", "10.0.0.1", "flows", "spike", 150.0, 10.0)], 110, &mut ev);
        assert_eq!(ev.len(), 1, "not an escalation");
        inc.observe(&[a(120, "src_ip", "10.0.0.1", "flows", "spike", 1000.0, 10.0)], 120, &mut ev);
        inc.observe(&[a(121, "src_ip", "10.0.0.1", "distinct", "spike", 500.0, 3.0)], 121, &mut ev);
        assert_eq!(ev.len(), 3);
        assert!(ev[1..].iter().all(|e| e.state == IncidentState::Update && e.id == ev[0].id));
        let mut s = String::new();
        ev[2].write_json(&mut s, "fs1");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["type"], "incident");
        assert_eq!(v["id"], "fs1:1:src_ip:10.0.0.1:100");
        assert_eq!(v["state"], "update");
        assert_eq!(v["metrics"], serde_json::json!(["flows", "distinct"]));
    }

    #[test]
    fn bounded() {
        let mut inc = Incidents::new(&IncidentConfig { max_open: 3, ..Default::default() });
        let mut ev = Vec::new();
        for i in 0..10u64 {
            inc.observe(
                &[a(100 + 100 * i, "src_ip", &format!("10.0.0.{i}"), "flows", "spike", 1e3, 1.0)],
                100 + 100 * i,
                &mut ev,
            );
        }
        assert_eq!(inc.open().count(), 3);
        assert_eq!(inc.counters.forced, 7);
        // every other key still maps to an open incident of its own
        let mut ev = Vec::new();
        inc.observe(&[a(1000, "src_ip", "10.0.0.9", "flows", "spike", 1e3, 1.0)], 1000, &mut ev);
        assert!(ev.is_empty());
    }
}
