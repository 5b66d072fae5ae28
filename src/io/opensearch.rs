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
//! Lives on: I/O cores.

use super::frame::{self, Kind, Record};
use super::remote::{backoff, now_ms, pause, DropReason, SinkStats, SHUTDOWN_GRACE};
use super::spool::SpoolReader;
use crate::config::OpensearchSink;
use crate::model::time::utc;
use flate2::write::GzEncoder;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
    /// The sink's settings.
    pub cfg: OpensearchSink,
}

/// Index period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// One index per minute.
    Minute,
    /// One index per hour.
    Hour,
}

impl Period {
    /// From the settings (default: minute when retention is under 3 hours).
    pub fn of(o: &OpensearchSink) -> Period {
        match o.index_period.as_deref() {
            Some("hour") => Period::Hour,
            Some("minute") => Period::Minute,
            _ if o.retention_minutes < 180 => Period::Minute,
            _ => Period::Hour,
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
            "distinct_dst_ports": {"type": "long"},
            "distinct_src_ips": {"type": "long"}
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
        ] {
            let t = serde_json::json!({
                "index_patterns": [pattern],
                "priority": 100,
                "template": {"settings": settings, "mappings": mappings},
                "_meta": {"managed_by": "flowshard"}
            });
            self.json(Method::PUT, &format!("/_index_template/{p}-{name}"), Some(&t), &[])?;
            done.push(format!("index template {p}-{name}"));
        }
        let exists = self.json(Method::HEAD, &format!("/{p}-alerts"), None, &[404])?.0 == 200;
        self.ensure_index(&format!("{p}-alerts"))?;
        done.push(format!("index {p}-alerts{}", if exists { " (exists)" } else { "" }));
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
    }
    out.extend_from_slice(b"{\"index\":{\"_index\":\"");
    out.extend_from_slice(index.as_bytes());
    out.extend_from_slice(b"\",\"_id\":");
    // ids are built from names, addresses and numbers; escape anyway
    let mut id = String::with_capacity(r.key.len() + 2);
    super::json::esc(&mut id, r.key);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"}}\n");
    out.extend_from_slice(r.value.as_bytes());
    out.push(b'\n');
}

/// Delivers the spool to OpenSearch until the spool is closed and empty (or the shutdown grace
/// period ends). Runs `setup` first (retried until it succeeds) and retention every 30 s.
pub fn deliver(o: &OpensearchSink, mut reader: SpoolReader, stats: &Arc<SinkStats>) {
    let client = match Client::new(o) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("flowshard: {e}; the opensearch sink is off (its spool keeps filling)");
            stats.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let period = Period::of(o);
    let mut set_up = false;
    let mut attempt = 0u32;
    let mut last_retention = Instant::now() - Duration::from_secs(3600);
    let mut closing: Option<Instant> = None;
    let mut body = Vec::with_capacity(1 << 20);
    let mut index = String::new();
    let mut logged = 0u32;
    // Rollup indices known to exist (created ahead of the first bulk into them, so that a
    // cluster with automatic index creation turned off needs no retry per new period).
    let mut known: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    loop {
        if closing.is_none() && reader.is_closed() {
            closing = Some(Instant::now());
        }
        if closing.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
            return;
        }
        if !set_up {
            match client.setup() {
                Ok(_) => {
                    set_up = true;
                    attempt = 0;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    if attempt == 0 {
                        eprintln!("flowshard: opensearch setup failed (retrying): {e}");
                    }
                    pause(backoff(attempt));
                    attempt += 1;
                    continue;
                }
            }
        }
        if last_retention.elapsed() > Duration::from_secs(30) {
            last_retention = Instant::now();
            if let Err(e) = client.delete_expired(now_ms() / 1000) {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("flowshard: opensearch retention: {e}");
            }
        }
        let buf = match super::remote::next_frame(&mut reader, stats) {
            super::remote::Step::Frame(b) => b,
            super::remote::Step::Idle => continue,
            super::remote::Step::Closed => return,
        };
        let Ok(recs) = frame::decode(&buf) else { continue };
        let newest = recs.iter().map(|r| r.second).max().unwrap_or(0);
        for r in recs.iter().filter(|r| r.kind == Kind::Rollup) {
            rollup_index(&o.index_prefix, period, r.second, &mut index);
            if !known.contains(&index) && client.ensure_index(&index).is_ok() {
                known.push_back(index.clone());
                if known.len() > 16 {
                    known.pop_front();
                }
            }
        }
        let mut pending: Vec<usize> = (0..recs.len()).collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            if closing.is_none() && reader.is_closed() {
                closing = Some(Instant::now());
            }
            if closing.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
                return; // the frame stays in the spool
            }
            body.clear();
            for &i in &pending {
                bulk_lines(&mut body, &o.index_prefix, period, &recs[i], &mut index);
            }
            match client.bulk(&body) {
                Ok(items) if items.len() == pending.len() => {
                    let mut again = Vec::new();
                    let mut ok = 0u64;
                    for (&i, item) in pending.iter().zip(items) {
                        match item {
                            Item::Ok => ok += 1,
                            Item::Retry => again.push(i),
                            Item::NoIndex(name) => {
                                let _ = client.ensure_index(&name);
                                again.push(i);
                            }
                            Item::Rejected(status, ty) => {
                                stats.drop_n(DropReason::Rejected, 1);
                                if logged < 10 {
                                    logged += 1;
                                    eprintln!(
                                        "flowshard: opensearch refused document {}: HTTP {status} {ty}",
                                        recs[i].key
                                    );
                                }
                            }
                        }
                    }
                    stats.delivered.fetch_add(ok, Ordering::Relaxed);
                    stats.up.store(true, Ordering::Relaxed);
                    if !again.is_empty() {
                        stats.retried.fetch_add(again.len() as u64, Ordering::Relaxed);
                        pause(backoff(attempt));
                        attempt += 1;
                    }
                    pending = again;
                }
                Ok(items) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!(
                        "flowshard: opensearch bulk answered {} items for {}; sending again",
                        items.len(),
                        pending.len()
                    );
                    pause(backoff(attempt));
                    attempt += 1;
                }
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    stats.up.store(false, Ordering::Relaxed);
                    stats.retried.fetch_add(pending.len() as u64, Ordering::Relaxed);
                    if attempt == 0 {
                        eprintln!("flowshard: opensearch bulk failed (frame kept, retrying): {e}");
                    }
                    pause(backoff(attempt));
                    attempt += 1;
                }
            }
        }
        stats.delivered_second(newest, 0);
        if let Err(e) = reader.commit() {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            eprintln!("flowshard: opensearch: {e}");
        }
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
