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
//! May depend on: `ops`, `sink` (counters), `pipeline`, `model`, `alert`. Lives on: the I/O core.

pub mod api;
pub mod feedback;
pub mod hot;
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
    }))
}

/// Binds `addr` for [`serve`]; port 0 picks a free port (read it from the listener). The bound
/// listener is handed over as it is, so no other process can take the port in between.
pub fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    let a: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    std::net::TcpListener::bind(a)
}

/// Serves on `listener` until `stop` is set. `token`: required bearer token (None = open,
/// loopback only).
pub fn serve(
    listener: std::net::TcpListener,
    token: Option<String>,
    state: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
    cpu: Option<usize>,
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
            let post = *req.method() == tiny_http::Method::Post;
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
        let h = serve(l, None, shared(1), stop.clone(), None).unwrap();
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
