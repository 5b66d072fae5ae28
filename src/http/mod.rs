//! The HTTP server of the I/O core: `/metrics` (Prometheus text format, [`mod@metrics`]),
//! `/healthz`, `/readyz`, the live view and a JSON query API ([`api`]) over flowshard's own
//! in-memory hot window ([`hot`]: last 300 s of rollups and the recent alerts), so it works
//! without Valkey.
//!
//! Runs on its own thread pinned to an I/O CPU — never on a shard. Bound to 127.0.0.1 by
//! default; on any other address a bearer token from the config is required (401 otherwise).
//! The state it serves is published by the I/O loop once per second behind a mutex: the lock
//! is taken by the I/O core and the HTTP thread only, never on the ingest path.
//!
//! `/api/flows` (a filtered slice of the raw-flows topic, [`crate::tools::slice`]) reads Kafka:
//! it runs on a thread of its own, one query at a time, never holding the state lock.
//!
//! `/api/v2/write` and `/api/v1/write` take host metrics ([`ingest`]) on this thread.
//!
//! May depend on: `ops`, `sink` (counters), `pipeline`, `model`, `alert`, `tools` (slices), `enrich`
//! (filters), `decode` (host writes). Lives on: the I/O core.

pub mod api;
pub mod feedback;
pub mod hot;
pub mod ingest;
pub mod metrics;

pub use api::{exporters, overview, route, VIEW};
pub use hot::{HotWindow, HOT_SECONDS, RECENT_ALERTS};
pub use metrics::metrics;

use crate::ops::{IoCounters, StatusBoard};
use crate::sink::delivery::SinkStats;
use std::sync::{Arc, Mutex};

/// Everything the server shows, published by the I/O loop.
pub struct Published {
    /// Latest shard statuses (the one copy on the I/O core).
    pub board: StatusBoard,
    /// I/O counters.
    pub io: IoCounters,
    /// Hot window.
    pub hot: HotWindow,
    /// Remote sinks' counters.
    pub sinks: Vec<Arc<SinkStats>>,
    /// Raw-flows topic counters (records and messages encoded), when it is on.
    pub flows: Option<Arc<crate::sink::flows::FlowsStats>>,
    /// Where operator feedback from the API goes (None: read-only API).
    pub feedback: Option<feedback::FeedbackTarget>,
    /// Host writes over HTTP (line protocol, remote-write): their counters.
    pub host_http: Option<crate::ops::HostStatus>,
    /// The host-metrics Kafka consumer's counters.
    pub host_kafka: Option<crate::ops::HostStatus>,
}

/// Shared between the I/O loop and the HTTP thread.
pub type Shared = Arc<Mutex<Published>>;

/// A new shared state for `n` shards.
pub fn shared(n: usize) -> Shared {
    Arc::new(Mutex::new(Published {
        board: StatusBoard::new(n),
        io: IoCounters::default(),
        hot: HotWindow::default(),
        sinks: Vec::new(),
        flows: None,
        feedback: None,
        host_http: None,
        host_kafka: None,
    }))
}

/// Binds `addr` for [`serve`]; port 0 picks a free port (read it from the listener). The bound
/// listener is handed over as it is, so no other process can take the port in between.
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let a: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    std::net::TcpListener::bind(a)
}

/// Where `/api/flows` reads: the raw-flows topic, and the pipeline (its enrichment tables name
/// rows and resolve site/tenant/role filter terms).
pub struct SliceSource {
    /// Bootstrap servers.
    pub brokers: String,
    /// Raw-flows topic.
    pub topic: String,
    /// Extra librdkafka properties.
    pub properties: std::collections::BTreeMap<String, String>,
    /// The appliance's pipeline settings.
    pub pipeline: crate::pipeline::PipelineConfig,
    /// A query is running.
    pub busy: std::sync::atomic::AtomicBool,
}

/// Longest range `/api/flows` reads, seconds.
pub const SLICE_MAX_S: u64 = 3600;

/// Serves on `listener` until `stop` is set. `token`: required bearer token (None = open,
/// loopback only). `slices`: where `/api/flows` reads (None: the raw-flows topic is off).
pub fn serve(
    listener: std::net::TcpListener,
    token: Option<String>,
    state: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
    cpu: Option<usize>,
    slices: Option<Arc<SliceSource>>,
    mut ingest: Option<ingest::HostIngest>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::from_listener(listener, None).map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new().name("flowshard-http".into()).spawn(move || {
        if let Some(c) = cpu {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok(Some(req)) = server.recv_timeout(std::time::Duration::from_millis(200)) else { continue };
            if let Some(t) = &token {
                let ok = req
                    .headers()
                    .iter()
                    .any(|h| h.field.equiv("Authorization") && h.value.as_str() == format!("Bearer {t}"));
                if !ok {
                    let _ = req.respond(
                        tiny_http::Response::from_string("unauthorized: send Authorization: Bearer <http.token>\n")
                            .with_status_code(401),
                    );
                    continue;
                }
            }
            if req.url().split('?').next() == Some("/api/flows") {
                slice(req, slices.as_ref());
                continue;
            }
            let post = *req.method() == tiny_http::Method::Post;
            let (path, query) = req.url().split_once('?').unwrap_or((req.url(), ""));
            if post && (path == "/api/v2/write" || path == "/api/v1/write") {
                let v2 = path == "/api/v2/write";
                let query = query.to_string();
                write(req, ingest.as_mut(), v2, &query);
                if let (Some(i), Ok(mut p)) = (&ingest, state.lock()) {
                    p.host_http = Some(i.status());
                }
                continue;
            }
            let (code, ctype, body) = match state.lock() {
                Ok(p) if post => post_route(&p, req.url()),
                Ok(p) => route(&p, req.url()),
                Err(_) => (500, "text/plain", "state unavailable\n".into()),
            };
            let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes());
            let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
            if let Ok(h) = header {
                resp = resp.with_header(h);
            }
            let _ = req.respond(resp);
        }
    })
}

/// A host write: line protocol (`v2`) or remote-write.
fn write(mut req: tiny_http::Request, ingest: Option<&mut ingest::HostIngest>, v2: bool, query: &str) {
    let Some(ing) = ingest else {
        let _ = req.respond(
            tiny_http::Response::from_string("host writes are off: set hosts.http = true\n").with_status_code(404),
        );
        return;
    };
    let gzip = req.headers().iter().any(|h| h.field.equiv("Content-Encoding") && h.value.as_str() == "gzip");
    let peer = req.remote_addr().map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
    let now = crate::model::time::now_s();
    let (code, text) = if v2 {
        ing.line_protocol(query, req.as_reader(), gzip, &peer, now)
    } else {
        ing.remote_write(req.as_reader(), &peer, now)
    };
    let _ = req.respond(tiny_http::Response::from_string(text).with_status_code(code));
}

fn respond_json(req: tiny_http::Request, code: u16, body: String) {
    let mut resp = tiny_http::Response::from_string(body).with_status_code(code);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..]) {
        resp = resp.with_header(h);
    }
    let _ = req.respond(resp);
}

/// `/api/flows?by=DIM&where=FILTER&seconds=S&n=N&metric=M`: the slice's top keys over the last
/// `seconds` of the raw-flows topic, answered from a thread of its own (429 while another
/// query runs).
fn slice(req: tiny_http::Request, src: Option<&Arc<SliceSource>>) {
    use std::sync::atomic::Ordering;
    let err = |msg: String| serde_json::json!({ "error": msg }).to_string();
    let Some(src) = src.cloned() else {
        let m = "the raw-flows topic is off: set flows = true in a Kafka sink (see README, Raw flows)";
        return respond_json(req, 404, err(m.into()));
    };
    let q = api::query(req.url());
    let by = q.get("by").map(String::as_str).unwrap_or("dst_ip");
    let Some(dim) = crate::model::Dimension::from_name(by) else {
        return respond_json(req, 400, err(format!("by: {by:?} is not a dimension (e.g. dst_ip, dst_port, src_as)")));
    };
    let metric = match q.get("metric").map(String::as_str) {
        None | Some("bytes") => 0,
        Some("packets") => 1,
        Some("flows") => 2,
        Some(m) => return respond_json(req, 400, err(format!("metric: {m:?}: use bytes, packets or flows"))),
    };
    let secs = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(60u64).clamp(1, SLICE_MAX_S);
    let n = q.get("n").and_then(|s| s.parse().ok()).unwrap_or(15usize).clamp(1, 1000);
    let filter =
        match crate::enrich::Table::filter(src.pipeline.enrich.as_deref(), q.get("where").map_or("", String::as_str)) {
            Ok(f) => f,
            Err(e) => return respond_json(req, 400, err(e.to_string())),
        };
    if src.busy.swap(true, Ordering::AcqRel) {
        return respond_json(req, 429, err("another query is running; retry when it ends".into()));
    }
    let from = crate::model::time::now_s().saturating_sub(secs);
    let again = src.clone();
    let spawned = std::thread::Builder::new().name("flowshard-query".into()).spawn(move || {
        let k = crate::tools::replay::kafka::KafkaSource {
            brokers: src.brokers.clone(),
            topic: src.topic.clone(),
            from,
            to: None,
            properties: src.properties.clone(),
        };
        let t = std::time::Instant::now();
        let (code, body) = match crate::tools::slice::query(&k, &src.pipeline, filter, &[dim], metric, n) {
            Ok(r) => {
                let total = r.total[metric].max(1) as f64;
                let top: Vec<serde_json::Value> = r
                    .top
                    .first()
                    .map(|(_, rows)| rows.as_slice())
                    .unwrap_or_default()
                    .iter()
                    .map(|row| {
                        let v = [row.bytes, row.packets, row.flows][metric];
                        let mut o = serde_json::json!({"key": row.key, "bytes": row.bytes, "packets": row.packets,
                            "flows": row.flows, "share": v as f64 / total});
                        if let (Some(name), Some(m)) = (&row.name, o.as_object_mut()) {
                            m.insert("name".into(), name.clone().into());
                        }
                        o
                    })
                    .collect();
                let body = serde_json::json!({
                    "dimension": dim.name(), "where": r.filter, "from": from, "seconds": secs,
                    "records": r.records, "filtered_out": r.filtered_out,
                    "total": {"bytes": r.total[0], "packets": r.total[1], "flows": r.total[2]},
                    "top": top, "took_ms": t.elapsed().as_millis() as u64,
                });
                (200, body.to_string())
            }
            Err(e) => (502, err(format!("reading topic {}: {e}", src.topic))),
        };
        src.busy.store(false, Ordering::Release);
        respond_json(req, code, body);
    });
    if let Err(e) = spawned {
        again.busy.store(false, Ordering::Release);
        tracing::warn!("cannot start a query thread: {e}");
    }
}

/// Answers a POST: operator feedback on incidents.
fn post_route(p: &Published, url: &str) -> (u16, &'static str, String) {
    let json = "application/json";
    let path = url.split('?').next().unwrap_or("");
    let Some(action) = path.strip_prefix("/api/incidents/") else {
        return (
            404,
            "text/plain",
            "POST: /api/incidents/suppress?id=… or /api/incidents/false-positive?id=…\n".into(),
        );
    };
    let Some(target) = &p.feedback else {
        return (503, json, "{\"error\":\"feedback is not enabled on this server\"}".into());
    };
    let q = api::query(url);
    let for_s = q.get("for_s").and_then(|s| s.parse().ok());
    let (code, body) =
        feedback::act(p, target, action, q.get("id").map(String::as_str), for_s, crate::model::time::now_s());
    (code, json, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// The server takes the listener bound at start-up: the port is never released between
    /// choosing it and serving (the old code bound, dropped and bound again, so another
    /// process could take the port in between), and the address reported is the one served.
    #[test]
    fn serves_on_the_listener_it_was_handed() {
        let l = bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let h = serve(l, None, shared(1), stop.clone(), None, None, None).unwrap();
        assert!(std::net::TcpListener::bind(addr).is_err(), "the port stays taken by the server");
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"), "{resp}");
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }

    /// `flowshard_alerts_total{layer="1"}` counts layer-1 alerts only; layers 2 and 3 have
    /// their own rows (it used to count every layer as layer 1).
    #[test]
    fn alerts_total_is_counted_by_layer() {
        let s = shared(1);
        {
            let mut p = s.lock().unwrap();
            p.io.alerts = 7;
            p.io.alerts_by_layer = [0, 5, 2, 0];
        }
        let text = metrics(&s.lock().unwrap());
        let row = |l: &str| {
            text.lines()
                .find(|x| x.starts_with(&format!("flowshard_alerts_total{{layer=\"{l}\"}}")))
                .and_then(|x| x.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        assert_eq!((row("1"), row("2"), row("3")), (Some(5.0), Some(2.0), Some(0.0)), "{text}");
    }
}
