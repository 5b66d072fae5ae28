//! The OpenSearch sink: index templates and retention (`setup`), and the `_bulk` delivery
//! thread.
//!
//! Rollups go to per-period indices `<prefix>-rollups-YYYYMMDD-HHMM` (per minute, the default
//! when retention is under 3 h) or `…-YYYYMMDD-HH` (per hour), so that retention is exact to
//! one period: flowshard deletes an index once its period ended more than `retention_minutes`
//! ago (ISM cannot do this exactly: it runs at most once a minute, with jitter, one step per
//! run; when the ISM plugin is installed a policy with the same age is installed as a safety
//! net). Alerts go to `<prefix>-alerts`. Document ids are deterministic
//! (`appliance:dimension:key:second`), so a retried bulk never duplicates a document.
//!
//! Bulk bodies are NDJSON, gzip-compressed; per-item results are read (simd-json): 429 and 5xx
//! items are retried, index-not-found creates the index and retries, other 4xx are counted as
//! `rejected` with their error type.
//!
//! Protocol code only: retry, back-off, counters and the spool are [`super::delivery`]'s; the
//! `Client` is also used by `flowshard setup` and the layer-2 job.
//!
//! May depend on: `model`, `pipeline`, `alert`, `config`. Lives on: I/O cores (its thread).

use super::delivery::{self, Attempt, AttemptError, Backend, Outcome, SinkStats, Spooled};
use super::format;
use super::frame::{FrameBuilder, Kind, Record};
use super::SinkError;
use crate::alert::{AlertDoc, IncidentEvent};
use crate::config::OpensearchSink;
use crate::model::time::utc;
use crate::model::Dimension;
use crate::pipeline::SecondOutput;
use flate2::write::GzEncoder;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// OpenSearch client errors.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// Transport (connect, TLS, timeout).
    #[error("opensearch {url}: {source}")]
    Http {
        /// Request URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// A non-success status.
    #[error("opensearch {method} {path}: HTTP {status}: {body}")]
    Status {
        /// Method.
        method: &'static str,
        /// Path.
        path: String,
        /// Status code.
        status: u16,
        /// Response body (cut).
        body: String,
    },
    /// An answer that does not parse.
    #[error("opensearch {path}: unexpected answer: {problem}")]
    Answer {
        /// Path.
        path: String,
        /// What was wrong.
        problem: String,
    },
    /// Bad client settings (CA file).
    #[error("opensearch settings: {0}")]
    Settings(String),
}

/// A small blocking OpenSearch client.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    auth: Option<(String, String)>,
    /// When set (shutdown), every request ends by then: its timeout is what is left.
    deadline: Option<Instant>,
    /// The sink's settings.
    pub cfg: OpensearchSink,
}

/// The rollup index period ([`crate::config::IndexPeriod`] of the settings, resolved).
pub use crate::config::IndexPeriod as Period;

impl Period {
    /// From the settings (default: minute when retention is under 3 hours).
    pub fn of(o: &OpensearchSink) -> Period {
        match o.index_period {
            Some(p) => p,
            None if o.retention_minutes < 180 => Period::Minute,
            None => Period::Hour,
        }
    }
    /// Seconds per index.
    pub const fn secs(self) -> u64 {
        match self {
            Period::Minute => 60,
            Period::Hour => 3600,
        }
    }
}

/// Index of the rollups of `second`.
pub fn rollup_index(prefix: &str, period: Period, second: u64, out: &mut String) {
    let (y, m, d, h, mi) = utc(second);
    out.clear();
    let _ = match period {
        Period::Minute => write!(out, "{prefix}-rollups-{y:04}{m:02}{d:02}-{h:02}{mi:02}"),
        Period::Hour => write!(out, "{prefix}-rollups-{y:04}{m:02}{d:02}-{h:02}"),
    };
}

/// Name of the host-rows index holding `second`: `<prefix>-hosts-YYYYMMDD[-HH[MM]]`, the
/// rollups' period, so retention treats both alike.
pub fn host_index(prefix: &str, period: Period, second: u64, out: &mut String) {
    rollup_index(prefix, period, second, out);
    let at = prefix.len();
    out.replace_range(at..at + "-rollups-".len(), "-hosts-");
}

/// Start second of a rollup index from its name (None if it is not one of ours).
pub fn index_start(prefix: &str, name: &str) -> Option<(u64, Period)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix("-rollups-")?;
    let (date, time) = rest.split_once('-')?;
    if date.len() != 8
        || !(time.len() == 4 || time.len() == 2)
        || !rest.bytes().all(|b| b.is_ascii_digit() || b == b'-')
    {
        return None;
    }
    let n = |s: &str| s.parse::<i64>().ok();
    let days = crate::model::time::days_from_civil(n(&date[..4])?, n(&date[4..6])?, n(&date[6..])?);
    let h = n(&time[..2])?;
    let mi = if time.len() == 4 { n(&time[2..])? } else { 0 };
    let start = days * 86_400 + h * 3600 + mi * 60;
    Some((start.max(0) as u64, if time.len() == 4 { Period::Minute } else { Period::Hour }))
}

/// Mappings of the fields rollups and alerts share, plus `extra`.
fn mappings(extra: serde_json::Value) -> serde_json::Value {
    let mut props = serde_json::json!({
        "type": {"type": "keyword"},
        "appliance": {"type": "keyword"},
        "second": {"type": "date", "format": "epoch_second"},
        "dimension": {"type": "keyword"},
        "key": {"type": "keyword"}
    });
    if let (Some(p), Some(e)) = (props.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    serde_json::json!({"dynamic": false, "properties": props})
}

/// Mappings of the rollups.
pub fn rollup_mappings() -> serde_json::Value {
    mappings(serde_json::json!({
            "ip": {"type": "ip"},
            "bytes": {"type": "long"},
            "packets": {"type": "long"},
            "flows": {"type": "long"},
            "distinct_dst_endpoints": {"type": "long"},
            "distinct_src_ips": {"type": "long"},
            "distinct_dst_ports": {"type": "long"},
            "hll": {"type": "keyword", "index": false, "doc_values": false},
            "if_name": {"type": "keyword"},
            "if_alias": {"type": "keyword", "ignore_above": 512},
            "if_speed_mbps": {"type": "long"},
            "as_name": {"type": "keyword", "ignore_above": 512},
            "net_role": {"type": "keyword"},
            "net_site": {"type": "keyword"},
            "net_tenant": {"type": "keyword"}
    }))
}

/// Mappings of the alerts.
pub fn alert_mappings() -> serde_json::Value {
    mappings(serde_json::json!({
            "layer": {"type": "integer"},
            "metric": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "value": {"type": "double"},
            "baseline": {"type": "double"},
            "expected": {"type": "double"},
            "score": {"type": "double"},
            "z": {"type": "double"},
            "reason": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}}
    }))
}

/// Mappings of host rows ([`crate::sink::format::host_row`]).
pub fn host_mappings() -> serde_json::Value {
    serde_json::json!({
        "dynamic": false,
        "properties": {
            "type": {"type": "keyword"},
            "appliance": {"type": "keyword"},
            "second": {"type": "date", "format": "epoch_second"},
            "host": {"type": "keyword"},
            "metric": {"type": "keyword"},
            "tags": {"type": "keyword"},
            "kind": {"type": "keyword"},
            "severity": {"type": "byte"},
            "facility": {"type": "byte"},
            "count": {"type": "long"},
            "sum": {"type": "double"},
            "min": {"type": "double"},
            "max": {"type": "double"},
            "last": {"type": "double"},
            "last_ms": {"type": "date", "format": "epoch_millis"}
        }
    })
}

/// Mappings of the layer-3 anomaly results: the OpenSearch anomaly-detection plugin's
/// `anomaly-results` mapping (schema version 5), field for field, so the plugin's queries and
/// dashboards read flowshard's results, plus flowshard's `appliance` and `points_seen`.
pub fn anomaly_result_mappings() -> serde_json::Value {
    let fd = serde_json::json!({"type": "nested", "properties": {"feature_id": {"type": "keyword"}, "data": {"type": "double"}}});
    let date = serde_json::json!({"type": "date", "format": "strict_date_time||epoch_millis"});
    let text_kw = serde_json::json!({"type": "text", "fields": {"keyword": {"type": "keyword"}}});
    serde_json::json!({
        "dynamic": false,
        "_meta": {"schema_version": 5},
        "properties": {
            "detector_id": {"type": "keyword"},
            "is_anomaly": {"type": "boolean"},
            "anomaly_score": {"type": "double"},
            "anomaly_grade": {"type": "double"},
            "confidence": {"type": "double"},
            "feature_data": fd,
            "data_start_time": date,
            "data_end_time": date,
            "execution_start_time": date,
            "execution_end_time": date,
            "error": {"type": "text"},
            "user": {"type": "nested", "properties": {
                "name": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
                "backend_roles": text_kw,
                "roles": text_kw,
                "custom_attribute_names": text_kw
            }},
            "entity": {"type": "nested", "properties": {"name": {"type": "keyword"}, "value": {"type": "keyword"}}},
            "schema_version": {"type": "integer"},
            "task_id": {"type": "keyword"},
            "model_id": {"type": "keyword"},
            "start_of_anomaly": {"type": "boolean"},
            "in_high_score_region": {"type": "boolean"},
            "approx_anomaly_start_time": date,
            "relevant_attribution": fd,
            "past_values": fd,
            "expected_values": {"type": "nested", "properties": {"likelihood": {"type": "double"}, "value_list": fd}},
            "threshold": {"type": "double"},
            "appliance": {"type": "keyword"},
            "points_seen": {"type": "long"}
        }
    })
}

/// Mappings of the incidents (one document per incident, its latest state).
pub fn incident_mappings() -> serde_json::Value {
    mappings(serde_json::json!({
            "id": {"type": "keyword"},
            "state": {"type": "keyword"},
            "layer": {"type": "integer"},
            "opened": {"type": "date", "format": "epoch_second"},
            "raised": {"type": "date", "format": "epoch_second"},
            "last_evidence": {"type": "date", "format": "epoch_second"},
            "related": {"type": "keyword"},
            "kinds": {"type": "keyword"},
            "metrics": {"type": "keyword"},
            "direction": {"type": "integer"},
            "score": {"type": "double"},
            "value": {"type": "double"},
            "expected": {"type": "double"},
            "evidence": {"type": "long"},
            "reason": {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 512}}}
    }))
}

impl Client {
    /// A client for the sink's cluster.
    pub fn new(o: &OpensearchSink) -> Result<Client, OsError> {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(2);
        if let Some(ca) = &o.ca_file {
            let pem = std::fs::read(ca).map_err(|e| OsError::Settings(format!("ca_file {}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| OsError::Settings(format!("ca_file {}: {e}", ca.display())))?;
            b = b.add_root_certificate(cert);
        }
        let http = b.build().map_err(|source| OsError::Http { url: o.url.clone(), source })?;
        Ok(Client {
            http,
            base: o.url.trim_end_matches('/').to_string(),
            auth: (!o.username.is_empty()).then(|| (o.username.clone(), o.password.clone())),
            deadline: None,
            cfg: o.clone(),
        })
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>, bool)>,
    ) -> Result<(u16, Vec<u8>), OsError> {
        let url = format!("{}{path}", self.base);
        let mut r = self.http.request(method, &url);
        if let Some(d) = self.deadline {
            // at least a moment, so that a request at the very end still gets its answer or a timeout
            r = r.timeout(d.saturating_duration_since(Instant::now()).max(Duration::from_millis(100)));
        }
        if let Some((u, p)) = &self.auth {
            r = r.basic_auth(u, Some(p));
        }
        if let Some((ct, b, gz)) = body {
            r = r.header("content-type", ct).body(b);
            if gz {
                r = r.header("content-encoding", "gzip");
            }
        }
        let resp = r.send().map_err(|source| OsError::Http { url: url.clone(), source })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|source| OsError::Http { url, source })?;
        Ok((status, bytes.to_vec()))
    }

    /// A JSON request; non-2xx statuses other than those in `ok` are errors.
    pub fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        ok: &[u16],
    ) -> Result<(u16, serde_json::Value), OsError> {
        let m: &'static str = match method.as_str() {
            "GET" => "GET",
            "PUT" => "PUT",
            "POST" => "POST",
            "DELETE" => "DELETE",
            _ => "HEAD",
        };
        let (status, bytes) =
            self.send(method, path, body.map(|b| ("application/json", b.to_string().into_bytes(), false)))?;
        if !(200..300).contains(&status) && !ok.contains(&status) {
            return Err(OsError::Status {
                method: m,
                path: path.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(800)]).into_owned(),
            });
        }
        let v = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        };
        Ok((status, v))
    }

    /// Installs templates, the alerts index and (when the ISM plugin is present) a retention
    /// policy. Idempotent. Returns what it did, one line per item.
    pub fn setup(&self) -> Result<Vec<String>, OsError> {
        use reqwest::Method;
        let o = &self.cfg;
        let p = &o.index_prefix;
        let mut done = Vec::new();
        let settings =
            serde_json::json!({"number_of_shards": 1, "number_of_replicas": o.replicas, "refresh_interval": "1s"});
        for (name, pattern, mappings) in [
            ("rollups", format!("{p}-rollups-*"), rollup_mappings()),
            ("alerts", format!("{p}-alerts*"), alert_mappings()),
            ("incidents", format!("{p}-incidents*"), incident_mappings()),
            ("anomaly-results", format!("{p}-anomaly-results*"), anomaly_result_mappings()),
            ("hosts", format!("{p}-hosts-*"), host_mappings()),
        ] {
            let t = serde_json::json!({
                "index_patterns": [pattern],
                "priority": 100,
                "template": {"settings": settings, "mappings": mappings},
                "_meta": {"managed_by": "flowshard"}
            });
            self.json(Method::PUT, &format!("/_index_template/{p}-{name}"), Some(&t), &[])?;
            done.push(format!("index template {p}-{name}"));
            // fields added since an existing index was created are indexed from now on there too
            // (additive; a field an operator re-typed by hand is left as it is and reported)
            let (status, v) = self.json(
                Method::PUT,
                &format!("/{pattern}/_mapping?allow_no_indices=true&ignore_unavailable=true"),
                Some(&mappings),
                &[400, 404],
            )?;
            match status {
                200..=299 => done.push(format!("mappings of existing {pattern} indices")),
                404 => {}
                _ => done.push(format!(
                    "mappings of existing {pattern} indices NOT updated ({status}: {})",
                    v["error"]["reason"].as_str().unwrap_or("see OpenSearch's log")
                )),
            }
        }
        for name in ["alerts", "incidents", "anomaly-results"] {
            let exists = self.json(Method::HEAD, &format!("/{p}-{name}"), None, &[404])?.0 == 200;
            self.ensure_index(&format!("{p}-{name}"))?;
            done.push(format!("index {p}-{name}{}", if exists { " (exists)" } else { "" }));
        }
        // Hot dashboard queries: `?search_pipeline=<prefix>-hot` restricts any query to the
        // last 5 minutes on the server, whatever the client asks.
        let pipe = serde_json::json!({
            "description": "flowshard hot window: only the last 5 minutes of rollups, enforced server-side",
            "request_processors": [{"filter_query": {
                "tag": "hot-window",
                "description": "restrict to the last 5 minutes",
                "query": {"range": {"second": {"gte": "now-5m"}}}
            }}]
        });
        self.json(Method::PUT, &format!("/_search/pipeline/{p}-hot"), Some(&pipe), &[])?;
        done.push(format!("search pipeline {p}-hot"));
        let (_, plugins) = self.json(Method::GET, "/_cat/plugins?format=json", None, &[])?;
        let has = |name: &str| plugins.as_array().is_some_and(|a| a.iter().any(|x| x["component"] == name));
        if has("opensearch-index-management") {
            let age = format!("{}m", o.retention_minutes + Period::of(o).secs() / 60);
            let pol = serde_json::json!({"policy": {
                "description": "flowshard rollups retention (flowshard deletes on time; this is a safety net)",
                "default_state": "hot",
                "states": [
                    {"name": "hot", "actions": [], "transitions": [{"state_name": "delete", "conditions": {"min_index_age": age}}]},
                    {"name": "delete", "actions": [{"delete": {}}], "transitions": []}
                ],
                "ism_template": [{"index_patterns": [format!("{p}-rollups-*")], "priority": 100}]
            }});
            let (st, _) =
                self.json(Method::PUT, &format!("/_plugins/_ism/policies/{p}-rollups-retention"), Some(&pol), &[409])?;
            done.push(format!("ISM policy {p}-rollups-retention{}", if st == 409 { " (exists)" } else { "" }));
        } else {
            done.push("ISM plugin not installed: flowshard deletes expired rollup indices itself".to_string());
        }
        Ok(done)
    }

    /// Deletes rollup indices whose period ended more than the retention ago. Returns how many.
    pub fn delete_expired(&self, now: u64) -> Result<usize, OsError> {
        let p = &self.cfg.index_prefix;
        let (_, v) =
            self.json(reqwest::Method::GET, &format!("/_cat/indices/{p}-rollups-*?format=json&h=index"), None, &[404])?;
        let keep_after = now.saturating_sub(self.cfg.retention_minutes * 60);
        let mut n = 0;
        for name in v.as_array().into_iter().flatten().filter_map(|x| x["index"].as_str()) {
            if let Some((start, per)) = index_start(p, name) {
                if start + per.secs() <= keep_after {
                    self.json(reqwest::Method::DELETE, &format!("/{name}"), None, &[404])?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Creates an index if it is missing (for clusters with automatic creation turned off).
    pub fn ensure_index(&self, name: &str) -> Result<(), OsError> {
        let (st, v) = self.json(reqwest::Method::PUT, &format!("/{name}"), None, &[400])?;
        let ty = v["error"]["type"].as_str().unwrap_or_default();
        if st == 400 && ty != "resource_already_exists_exception" {
            return Err(OsError::Status { method: "PUT", path: format!("/{name}"), status: st, body: v.to_string() });
        }
        Ok(())
    }

    /// Sends one bulk body; returns the per-item outcome in request order.
    pub fn bulk(&self, ndjson: &[u8]) -> Result<Vec<Item>, OsError> {
        let mut gz = GzEncoder::new(Vec::with_capacity(ndjson.len() / 6), flate2::Compression::fast());
        let _ = gz.write_all(ndjson);
        let body = gz.finish().map_err(|e| OsError::Settings(e.to_string()))?;
        let (status, mut bytes) =
            self.send(reqwest::Method::POST, "/_bulk", Some(("application/x-ndjson", body, true)))?;
        if status != 200 {
            return Err(OsError::Status {
                method: "POST",
                path: "/_bulk".into(),
                status,
                body: String::from_utf8_lossy(&bytes[..bytes.len().min(800)]).into_owned(),
            });
        }
        parse_bulk(&mut bytes)
    }
}

/// One bulk item's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Stored.
    Ok,
    /// 429 / 5xx: send again.
    Retry,
    /// The index does not exist (automatic creation is off): create it and send again.
    NoIndex(String),
    /// Refused for good (status, error type).
    Rejected(u16, String),
}

/// Reads a `_bulk` response with simd-json.
pub fn parse_bulk(bytes: &mut [u8]) -> Result<Vec<Item>, OsError> {
    use simd_json::prelude::*;
    let bad = |problem: &str| OsError::Answer { path: "/_bulk".into(), problem: problem.to_string() };
    let v = simd_json::to_borrowed_value(bytes).map_err(|e| bad(&e.to_string()))?;
    let items = v.get("items").and_then(|i| i.as_array()).ok_or_else(|| bad("no items"))?;
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let inner = it.as_object().and_then(|o| o.values().next()).ok_or_else(|| bad("empty item"))?;
        let status = inner.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16;
        out.push(match status {
            200..=299 => Item::Ok,
            429 | 500..=599 => Item::Retry,
            _ => {
                let ty = inner.get("error").and_then(|e| e.get("type")).and_then(|t| t.as_str()).unwrap_or("unknown");
                if ty == "index_not_found_exception" {
                    Item::NoIndex(inner.get("_index").and_then(|i| i.as_str()).unwrap_or_default().to_string())
                } else {
                    Item::Rejected(status, ty.to_string())
                }
            }
        });
    }
    Ok(out)
}

/// Appends the bulk lines of one record.
pub fn bulk_lines(out: &mut Vec<u8>, prefix: &str, period: Period, r: &Record<'_>, index: &mut String) {
    match r.kind {
        Kind::Rollup => rollup_index(prefix, period, r.second, index),
        Kind::Alert => {
            index.clear();
            let _ = write!(index, "{prefix}-alerts");
        }
        Kind::Incident => {
            index.clear();
            let _ = write!(index, "{prefix}-incidents");
        }
        Kind::AnomalyResult => {
            index.clear();
            let _ = write!(index, "{prefix}-anomaly-results");
        }
        Kind::Host => host_index(prefix, period, r.second, index),
        // raw flows go to Kafka only; an OpenSearch spool never holds them
        Kind::Flows => return,
    }
    out.extend_from_slice(b"{\"index\":{\"_index\":\"");
    out.extend_from_slice(index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":");
    // ids are built from names, addresses and numbers; escape anyway
    let mut id = String::with_capacity(r.key.len() + 2);
    crate::model::json::esc(&mut id, r.key);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"}}\n");
    out.extend_from_slice(r.value);
    out.push(b'\n');
}

/// Starts the OpenSearch sink: its spool and its delivery thread.
pub fn start(
    o: &OpensearchSink,
    appliance: &str,
    dir: &Path,
    max_bytes: u64,
    cpu: Option<usize>,
) -> Result<Spooled, SinkError> {
    let o = o.clone();
    Spooled::start(
        "opensearch",
        appliance,
        dir,
        max_bytes,
        (render, render_alert, render_incident),
        cpu,
        move |reader, stats| match Client::new(&o) {
            Ok(client) => {
                let mut b = OsBackend {
                    period: Period::of(&o),
                    o,
                    client,
                    last_retention: None,
                    body: Vec::with_capacity(1 << 20),
                    index: String::new(),
                    known: VecDeque::new(),
                };
                delivery::drive(&mut b, reader, &stats)
            }
            Err(e) => {
                tracing::error!(sink = "opensearch", "{e}; the opensearch sink is off (its spool keeps filling)");
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        },
    )
}

/// OpenSearch documents of one second: id `appliance:dimension:key:second` (alerts:
/// [`AlertDoc::id`]), value the rollup/alert JSON plus an `ip` field for address keys and, on
/// `src_ip` rows, the second's distinct-count sketch as text (`hll`, kept in `_source` only): layer
/// 3 reads a range back and unions them per interval as it does live.
pub fn render(appliance: &str, so: &SecondOutput, alerts: &[AlertDoc], fb: &mut FrameBuilder, s: &mut String) {
    let mut id = String::new();
    let mut text = String::new();
    for r in &so.rollups {
        s.clear();
        format::rollup(s, appliance, r);
        let key = r.dimension.format_key(&r.key);
        if matches!(r.dimension, Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter) && !r.key.is_other() {
            s.pop();
            s.push_str(",\"ip\":\"");
            s.push_str(&key);
            s.push_str("\"}");
        }
        if let Some(sk) = &r.sketch {
            s.pop();
            s.push_str(",\"hll\":");
            text.clear();
            sk.write_text(&mut text);
            crate::model::json::esc(s, &text);
            s.push('}');
        }
        id.clear();
        let _ = write!(id, "{appliance}:{}:{key}:{}", r.dimension.name(), r.second);
        fb.push(Kind::Rollup, r.second, &id, s);
    }
    for a in alerts {
        render_alert(appliance, a, fb, s);
    }
}

/// One incident document, id the incident's: every event overwrites it, so the index holds
/// each incident's latest state (updated in place).
pub fn render_incident(appliance: &str, e: &IncidentEvent, fb: &mut FrameBuilder, s: &mut String) {
    s.clear();
    e.write_json(s, appliance);
    fb.push(Kind::Incident, e.second, &e.full_id(appliance), s);
}

/// One alert document of any layer: id [`AlertDoc::id`].
pub fn render_alert(appliance: &str, a: &AlertDoc, fb: &mut FrameBuilder, s: &mut String) {
    s.clear();
    a.write_json(s, appliance);
    fb.push(Kind::Alert, a.second, &a.id(appliance), s);
}

/// The OpenSearch side of the delivery driver.
struct OsBackend {
    o: OpensearchSink,
    client: Client,
    period: Period,
    last_retention: Option<Instant>,
    body: Vec<u8>,
    index: String,
    /// Rollup indices known to exist (created ahead of the first bulk into them, so that a
    /// cluster with automatic index creation turned off needs no retry per new period).
    known: VecDeque<String>,
}

impl Backend for OsBackend {
    fn prepare(&mut self, _closing: bool) -> Result<(), String> {
        self.client.setup().map(|_| ()).map_err(|e| format!("setup: {e}"))
    }

    fn closing(&mut self, until: Instant) {
        self.client.deadline = Some(until);
        // retention can wait for the next start
        self.last_retention = Some(Instant::now());
    }

    /// Retention every 30 s.
    fn tick(&mut self, stats: &SinkStats) {
        if self.last_retention.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
            return;
        }
        self.last_retention = Some(Instant::now());
        if let Err(e) = self.client.delete_expired(crate::model::time::now_s()) {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(sink = "opensearch", "retention: {e}");
        }
    }

    fn begin_frame(&mut self, recs: &[Record<'_>]) {
        for r in recs.iter().filter(|r| r.kind == Kind::Rollup) {
            rollup_index(&self.o.index_prefix, self.period, r.second, &mut self.index);
            if !self.known.contains(&self.index) && self.client.ensure_index(&self.index).is_ok() {
                self.known.push_back(self.index.clone());
                if self.known.len() > 16 {
                    self.known.pop_front();
                }
            }
        }
    }

    fn send(
        &mut self,
        recs: &[Record<'_>],
        pending: &[usize],
        _at: &Attempt<'_>,
    ) -> Result<Vec<Outcome>, AttemptError> {
        self.body.clear();
        for &i in pending {
            bulk_lines(&mut self.body, &self.o.index_prefix, self.period, &recs[i], &mut self.index);
        }
        let items = self.client.bulk(&self.body).map_err(|e| AttemptError::Failed(e.to_string()))?;
        Ok(items
            .into_iter()
            .map(|item| match item {
                Item::Ok => Outcome::Delivered,
                Item::Retry => Outcome::Retry,
                Item::NoIndex(name) => {
                    let _ = self.client.ensure_index(&name);
                    Outcome::Retry
                }
                Item::Rejected(status, ty) => Outcome::Rejected(format!("HTTP {status} {ty}")),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_round_trip() {
        let mut s = String::new();
        rollup_index("fs", Period::Minute, 1_795_570_299, &mut s);
        assert_eq!(s, "fs-rollups-20261125-0131");
        assert_eq!(index_start("fs", &s), Some((1_795_570_260, Period::Minute)));
        rollup_index("fs", Period::Hour, 1_795_570_299, &mut s);
        assert_eq!(s, "fs-rollups-20261125-01");
        assert_eq!(index_start("fs", &s), Some((1_795_568_400, Period::Hour)));
        assert_eq!(index_start("fs", "fs-rollups-2026112x-01"), None);
        assert_eq!(index_start("fs", "other-rollups-20261125-01"), None);
    }

    #[test]
    fn bulk_items_are_classified() {
        let mut b = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"a","_id":"1","status":201}},
            {"index":{"_index":"a","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception"}}},
            {"index":{"_index":"b","_id":"3","status":404,"error":{"type":"index_not_found_exception"}}},
            {"index":{"_index":"a","_id":"4","status":400,"error":{"type":"mapper_parsing_exception"}}},
            {"index":{"_index":"a","_id":"5","status":503}}]}"#
            .to_vec();
        let items = parse_bulk(&mut b).unwrap();
        assert_eq!(
            items,
            vec![
                Item::Ok,
                Item::Retry,
                Item::NoIndex("b".into()),
                Item::Rejected(400, "mapper_parsing_exception".into()),
                Item::Retry
            ]
        );
        assert!(parse_bulk(&mut b"{}".to_vec()).is_err());
        assert!(parse_bulk(&mut b"nonsense".to_vec()).is_err());
    }
}
