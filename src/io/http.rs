//! The HTTP server of the I/O core: `/metrics` (Prometheus text format), `/healthz`,
//! `/readyz`, and a JSON query API over flowshard's own in-memory hot window (last 300 s of
//! rollups and the recent alerts), so it works without Valkey.
//!
//! Runs on its own thread pinned to an I/O CPU — never on a shard. Bound to 127.0.0.1 by
//! default; on any other address a bearer token from the config is required (401 otherwise).
//! The state it serves is published by the I/O loop once per second behind a mutex: the lock
//! is taken by the I/O core and the HTTP thread only, never on the ingest path.
//!
//! Lives on: the I/O core.

use crate::io::IoCounters;
use crate::model::{Alert, Dimension, Key};
use crate::ops::ShardStatus;
use crate::pipeline::SecondOutput;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Seconds the hot window keeps.
pub const HOT_SECONDS: u64 = 300;
/// Alerts kept for `/api/alerts`.
pub const RECENT_ALERTS: usize = 1000;

/// The last 300 s of rollups, with running 300-s totals per (dimension, key).
#[derive(Default)]
pub struct HotWindow {
    seconds: VecDeque<SecondOutput>,
    totals: FxHashMap<(Dimension, Key), [u64; 3]>,
    alerts: VecDeque<Alert>,
}

impl HotWindow {
    /// Adds a finished second (and expires what is older than 300 s).
    pub fn push(&mut self, so: &SecondOutput) {
        for r in &so.rollups {
            let t = self.totals.entry((r.dimension, r.key)).or_default();
            t[0] += r.bytes;
            t[1] += r.packets;
            t[2] += r.flows;
        }
        for a in &so.alerts {
            if self.alerts.len() >= RECENT_ALERTS {
                self.alerts.pop_front();
            }
            self.alerts.push_back(a.clone());
        }
        // kept sorted by dimension, so a query touches only its dimension's rows
        let mut rollups = so.rollups.clone();
        rollups.sort_by_key(|r| r.dimension);
        self.seconds.push_back(SecondOutput { second: so.second, rollups, alerts: Vec::new() });
        while self.seconds.front().is_some_and(|f| f.second + HOT_SECONDS <= so.second) {
            if let Some(old) = self.seconds.pop_front() {
                for r in &old.rollups {
                    if let Some(t) = self.totals.get_mut(&(r.dimension, r.key)) {
                        t[0] -= r.bytes;
                        t[1] -= r.packets;
                        t[2] -= r.flows;
                        if t[2] == 0 && t[0] == 0 {
                            self.totals.remove(&(r.dimension, r.key));
                        }
                    }
                }
            }
        }
    }

    /// Newest second held.
    pub fn newest(&self) -> Option<u64> {
        self.seconds.back().map(|s| s.second)
    }

    /// Top `n` keys of `dim` by `metric` (0 bytes, 1 packets, 2 flows) over the last `secs`.
    pub fn top(&self, dim: Dimension, metric: usize, secs: u64, n: usize) -> Vec<(Key, [u64; 3])> {
        let mut v: Vec<(Key, [u64; 3])> = if secs >= HOT_SECONDS {
            self.totals.iter().filter(|((d, _), _)| *d == dim).map(|((_, k), t)| (*k, *t)).collect()
        } else {
            let from = self.newest().unwrap_or(0).saturating_sub(secs.saturating_sub(1));
            let mut m: FxHashMap<Key, [u64; 3]> = FxHashMap::default();
            for s in self.seconds.iter().filter(|s| s.second >= from) {
                for r in dim_rows(&s.rollups, dim) {
                    let t = m.entry(r.key).or_default();
                    t[0] += r.bytes;
                    t[1] += r.packets;
                    t[2] += r.flows;
                }
            }
            m.into_iter().collect()
        };
        let m = metric.min(2);
        if v.len() > n {
            v.select_nth_unstable_by(n, |a, b| b.1[m].cmp(&a.1[m]).then(a.0.cmp(&b.0)));
            v.truncate(n);
        }
        v.sort_by(|a, b| b.1[m].cmp(&a.1[m]).then(a.0.cmp(&b.0)));
        v
    }

    /// The per-second series of one key over the last `secs` (missing seconds are zero).
    pub fn series(&self, dim: Dimension, key: &Key, secs: u64) -> Vec<(u64, [u64; 3])> {
        let Some(newest) = self.newest() else { return Vec::new() };
        let from = newest.saturating_sub(secs.saturating_sub(1));
        let mut out: Vec<(u64, [u64; 3])> = (from..=newest).map(|s| (s, [0; 3])).collect();
        for s in self.seconds.iter().filter(|s| s.second >= from) {
            if let Some(r) = dim_rows(&s.rollups, dim).iter().find(|r| r.key == *key) {
                out[(s.second - from) as usize].1 = [r.bytes, r.packets, r.flows];
            }
        }
        out
    }
}

/// The rows of one dimension in a second's rollups (sorted by dimension).
fn dim_rows(rows: &[crate::model::Rollup], dim: Dimension) -> &[crate::model::Rollup] {
    let a = rows.partition_point(|r| r.dimension < dim);
    let b = rows.partition_point(|r| r.dimension <= dim);
    &rows[a..b]
}

/// Everything the server shows, published by the I/O loop.
pub struct Published {
    /// Latest shard statuses.
    pub shards: Vec<ShardStatus>,
    /// When each shard last reported.
    pub last_report: Vec<Option<Instant>>,
    /// I/O counters.
    pub io: IoCounters,
    /// Hot window.
    pub hot: HotWindow,
    /// Remote sinks' counters.
    pub sinks: Vec<Arc<super::remote::SinkStats>>,
}

/// Shared between the I/O loop and the HTTP thread.
pub type Shared = Arc<Mutex<Published>>;

/// A new shared state for `n` shards.
pub fn shared(n: usize) -> Shared {
    Arc::new(Mutex::new(Published {
        shards: (0..n).map(|i| ShardStatus { shard: i as u16, ..Default::default() }).collect(),
        last_report: vec![None; n],
        io: IoCounters::default(),
        hot: HotWindow::default(),
        sinks: Vec::new(),
    }))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// `/metrics` in Prometheus text format (labels only from closed sets).
pub fn metrics(p: &Published) -> String {
    let mut s = String::with_capacity(8192);
    let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn Iterator<Item = (String, f64)>| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            if labels.is_empty() {
                let _ = writeln!(s, "{name} {v}");
            } else {
                let _ = writeln!(s, "{name}{{{labels}}} {v}");
            }
        }
    };
    use crate::decode::ErrorReason;
    use crate::model::Protocol;
    let sh = &p.shards;
    family(
        "flowshard_datagrams_total",
        "counter",
        "UDP datagrams decoded, by shard and protocol.",
        &mut sh.iter().flat_map(|st| {
            Protocol::ALL.iter().map(move |pr| {
                (format!("shard=\"{}\",protocol=\"{}\"", st.shard, pr.label()), st.decode.datagrams[pr.index()] as f64)
            })
        }),
    );
    family(
        "flowshard_unknown_datagrams_total",
        "counter",
        "Datagrams of no known protocol, by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.decode.unknown_datagrams as f64)),
    );
    family(
        "flowshard_records_total",
        "counter",
        "Flow records decoded, by shard and protocol.",
        &mut sh.iter().flat_map(|st| {
            Protocol::ALL.iter().map(move |pr| {
                (format!("shard=\"{}\",protocol=\"{}\"", st.shard, pr.label()), st.decode.records[pr.index()] as f64)
            })
        }),
    );
    family(
        "flowshard_decode_errors_total",
        "counter",
        "Decode errors by shard and reason.",
        &mut sh.iter().flat_map(|st| {
            ErrorReason::ALL.iter().map(move |r| {
                (format!("shard=\"{}\",reason=\"{}\"", st.shard, r.label()), st.decode.errors[r.index()] as f64)
            })
        }),
    );
    family(
        "flowshard_bytes_total",
        "counter",
        "Octets of aggregated records (sampling-scaled), by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.ingest.bytes as f64)),
    );
    family(
        "flowshard_packets_total",
        "counter",
        "Packets of aggregated records (sampling-scaled), by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.ingest.packets as f64)),
    );
    family(
        "flowshard_templates",
        "gauge",
        "NetFlow v9/IPFIX templates cached, by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.templates as f64)),
    );
    family(
        "flowshard_template_misses_total",
        "counter",
        "Data sets without a known template, by shard.",
        &mut sh.iter().map(|st| {
            (format!("shard=\"{}\"", st.shard), st.decode.errors[ErrorReason::TemplateMissing.index()] as f64)
        }),
    );
    family(
        "flowshard_kernel_drops_total",
        "counter",
        "Datagrams the kernel dropped on the shard's sockets (SO_MEMINFO).",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.kernel_drops as f64)),
    );
    family(
        "flowshard_window_close_lag_seconds",
        "gauge",
        "Window-close lag over the last status interval, by shard and quantile.",
        &mut sh.iter().flat_map(|st| {
            [("0.5", st.close_lag_p50_us), ("0.99", st.close_lag_p99_us)]
                .into_iter()
                .map(move |(q, v)| (format!("shard=\"{}\",quantile=\"{q}\"", st.shard), v as f64 / 1e6))
        }),
    );
    family(
        "flowshard_handoff_dropped_total",
        "counter",
        "Finished seconds dropped because the I/O queue was full (policy drop_newest).",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.handoff_dropped as f64)),
    );
    family(
        "flowshard_exchange_late_batches_total",
        "counter",
        "Partial batches that arrived after their second was finished.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.owner.late_batches as f64)),
    );
    family(
        "flowshard_evicted_to_other_total",
        "counter",
        "Keys folded into `other` by the bounds, by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.evictions as f64)),
    );
    family(
        "flowshard_tracked_keys",
        "gauge",
        "Keys with detector state, by shard.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.tracked_keys as f64)),
    );
    family(
        "flowshard_alerts_total",
        "counter",
        "Alerts raised, by layer.",
        &mut std::iter::once(("layer=\"1\"".to_string(), p.io.alerts as f64)),
    );
    family(
        "flowshard_rollups_total",
        "counter",
        "Rollups written to the sinks.",
        &mut std::iter::once((String::new(), p.io.rollups as f64)),
    );
    family(
        "flowshard_seconds_total",
        "counter",
        "Seconds written to the sinks.",
        &mut std::iter::once((String::new(), p.io.seconds as f64)),
    );
    family(
        "flowshard_sink_errors_total",
        "counter",
        "Sink write errors.",
        &mut std::iter::once((String::new(), p.io.sink_errors as f64)),
    );
    family(
        "flowshard_incomplete_seconds_total",
        "counter",
        "Seconds flushed before every owner reported.",
        &mut std::iter::once((String::new(), p.io.incomplete_seconds as f64)),
    );
    sink_metrics(&mut family, &p.sinks);
    let g = &p.io.gate;
    family(
        "flowshard_alert_gate_total",
        "counter",
        "Alerts by layer and verdict of the alert gate (passed, suppressed by operator feedback, duplicate or inside the cooldown).",
        &mut (1..=3usize).flat_map(|l| {
            [("passed", g.passed[l]), ("suppressed", g.suppressed[l]), ("duplicate", g.duplicate[l])]
                .into_iter()
                .map(move |(v, n)| (format!("layer=\"{l}\",verdict=\"{v}\""), n as f64))
        }),
    );
    family(
        "flowshard_process_resident_memory_bytes",
        "gauge",
        "Resident memory of the process.",
        &mut std::iter::once((String::new(), rss_bytes() as f64)),
    );
    s
}

type Family<'a> = dyn FnMut(&str, &str, &str, &mut dyn Iterator<Item = (String, f64)>) + 'a;

/// The remote sinks' families: records by result and reason, errors, spool, lag.
fn sink_metrics(family: &mut Family<'_>, sinks: &[Arc<super::remote::SinkStats>]) {
    use super::remote::DropReason;
    use std::sync::atomic::Ordering::Relaxed;
    let lbl = |s: &super::remote::SinkStats| format!("sink=\"{}\"", s.name);
    family(
        "flowshard_sink_records_total",
        "counter",
        "Records handled by each remote sink, by result (delivered, retried, dropped_<reason>).",
        &mut sinks.iter().flat_map(|s| {
            let mut v = vec![
                (format!("{},result=\"delivered\"", lbl(s)), s.delivered.load(Relaxed) as f64),
                (format!("{},result=\"retried\"", lbl(s)), s.retried.load(Relaxed) as f64),
            ];
            for r in DropReason::ALL {
                v.push((format!("{},result=\"dropped_{}\"", lbl(s), r.name()), s.dropped(r) as f64));
            }
            v
        }),
    );
    family(
        "flowshard_sink_failures_total",
        "counter",
        "Failed requests or connection attempts of each remote sink.",
        &mut sinks.iter().map(|s| (lbl(s), s.errors.load(Relaxed) as f64)),
    );
    family(
        "flowshard_sink_up",
        "gauge",
        "1 when the sink's last delivery attempt succeeded.",
        &mut sinks.iter().map(|s| (lbl(s), f64::from(u8::from(s.up.load(Relaxed))))),
    );
    family(
        "flowshard_sink_last_second",
        "gauge",
        "Newest second (Unix) fully delivered to the sink.",
        &mut sinks.iter().map(|s| (lbl(s), s.last_second.load(Relaxed) as f64)),
    );
    family(
        "flowshard_sink_lag_seconds",
        "gauge",
        "Delay from the end of a second to its delivery, p50 and p99 since start.",
        &mut sinks.iter().flat_map(|s| {
            let h = s
                .lag_ms
                .lock()
                .map(|h| (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.len()))
                .unwrap_or((0, 0, 0));
            if h.2 == 0 {
                Vec::new()
            } else {
                vec![
                    (format!("{},quantile=\"0.5\"", lbl(s)), h.0 as f64 / 1000.0),
                    (format!("{},quantile=\"0.99\"", lbl(s)), h.1 as f64 / 1000.0),
                ]
            }
        }),
    );
    let spooled: Vec<_> = sinks.iter().filter_map(|s| s.spool.as_ref().map(|sp| (lbl(s), sp.clone()))).collect();
    family(
        "flowshard_spool_bytes",
        "gauge",
        "Bytes in the sink's on-disk spool.",
        &mut spooled.iter().map(|(l, sp)| (l.clone(), sp.bytes.load(Relaxed) as f64)),
    );
    family(
        "flowshard_spool_pending_frames",
        "gauge",
        "Seconds in the spool not yet delivered.",
        &mut spooled.iter().map(|(l, sp)| (l.clone(), sp.pending.load(Relaxed) as f64)),
    );
    family(
        "flowshard_spool_frames_total",
        "counter",
        "Spool frames (one second each) by event: in, out, dropped_full, corrupt.",
        &mut spooled.iter().flat_map(|(l, sp)| {
            [
                (format!("{l},event=\"in\""), sp.frames_in.load(Relaxed) as f64),
                (format!("{l},event=\"out\""), sp.frames_out.load(Relaxed) as f64),
                (format!("{l},event=\"dropped_full\""), sp.dropped_full.load(Relaxed) as f64),
                (format!("{l},event=\"corrupt\""), sp.corrupt.load(Relaxed) as f64),
            ]
        }),
    );
}

fn query(url: &str) -> FxHashMap<String, String> {
    let mut m = FxHashMap::default();
    if let Some((_, q)) = url.split_once('?') {
        for kv in q.split('&') {
            if let Some((k, v)) = kv.split_once('=') {
                m.insert(k.to_string(), v.replace("%3A", ":").replace("%2F", "/").replace("%20", " "));
            }
        }
    }
    m
}

/// Parses a key as the outputs format it.
pub fn parse_key(dim: Dimension, s: &str) -> Option<Key> {
    use crate::model::Ip;
    if s == "other" {
        return Some(Key::OTHER);
    }
    let proto = |p: &str| -> Option<u32> {
        Some(match p {
            "icmp" => 1,
            "tcp" => 6,
            "udp" => 17,
            "gre" => 47,
            "esp" => 50,
            "icmpv6" => 58,
            "sctp" => 132,
            n => n.parse().ok()?,
        })
    };
    Some(match dim {
        Dimension::Total => Key::new(Ip::UNSPECIFIED, 0),
        Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter => {
            Key::new(Ip::from(s.parse::<std::net::IpAddr>().ok()?), 0)
        }
        Dimension::SrcPort | Dimension::DstPort => {
            let (port, p) = s.split_once('/')?;
            Key::new(Ip::UNSPECIFIED, port.parse::<u32>().ok()? << 8 | proto(p)?)
        }
        Dimension::Proto => Key::new(Ip::UNSPECIFIED, proto(s)?),
        Dimension::ExporterInIf | Dimension::ExporterOutIf => {
            let (ip, i) = s.rsplit_once(':')?;
            Key::new(Ip::from(ip.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok()?), i.parse().ok()?)
        }
        Dimension::SrcAs | Dimension::DstAs => Key::new(Ip::UNSPECIFIED, s.trim_start_matches("AS").parse().ok()?),
    })
}

/// The live view (one page, no build step, embedded in the binary).
pub const VIEW: &str = include_str!("view.html");

/// Everything the live view shows, in one JSON document.
pub fn overview(p: &Published) -> String {
    let mut s = String::from("{\"shards\":[");
    for (i, st) in p.shards.iter().enumerate() {
        let _ = write!(
            s,
            "{}{{\"shard\":{},\"records\":{},\"datagrams\":{},\"kernel_drops\":{},\"decode_errors\":{},\"templates\":{},\"close_lag_p99_us\":{},\"handoff_dropped\":{}}}",
            if i > 0 { "," } else { "" },
            st.shard,
            st.ingest.records,
            st.received,
            st.kernel_drops,
            st.decode.error_total(),
            st.templates,
            st.close_lag_p99_us,
            st.handoff_dropped
        );
    }
    s.push_str("],\"series\":[");
    let total = Key::new(crate::model::Ip::UNSPECIFIED, 0);
    for (i, (sec, t)) in p.hot.series(Dimension::Total, &total, HOT_SECONDS).iter().enumerate() {
        let _ = write!(s, "{}[{sec},{}]", if i > 0 { "," } else { "" }, t[0]);
    }
    s.push_str("],\"top\":{");
    let window_total: u64 = p.hot.series(Dimension::Total, &total, 60).iter().map(|x| x.1[0]).sum();
    for (j, dim) in [Dimension::SrcIp, Dimension::DstIp, Dimension::DstPort].iter().enumerate() {
        let _ = write!(s, "{}\"{}\":[", if j > 0 { "," } else { "" }, dim.name());
        for (i, (k, t)) in p.hot.top(*dim, 0, 60, 10).iter().filter(|(k, _)| !k.is_other()).enumerate() {
            let share = if window_total > 0 { t[0] as f64 / window_total as f64 } else { 0.0 };
            let _ = write!(
                s,
                "{}{{\"key\":{:?},\"bytes\":{},\"share\":{share:.4}}}",
                if i > 0 { "," } else { "" },
                dim.format_key(k),
                t[0]
            );
        }
        s.push(']');
    }
    let _ = write!(s, "}},\"alerts_total\":{},\"alerts\":[", p.io.alerts);
    for (i, a) in p.hot.alerts.iter().rev().take(20).enumerate() {
        if i > 0 {
            s.push(',');
        }
        crate::io::json::alert(&mut s, "", a);
    }
    s.push_str("]}");
    s
}

/// Per-exporter status merged over shards: last seen, datagrams, records, templates, sampling.
pub fn exporters(p: &Published) -> String {
    let mut m: std::collections::BTreeMap<crate::model::Ip, crate::ops::ExporterStatus> = Default::default();
    for st in &p.shards {
        for e in &st.exporters {
            let x = m
                .entry(e.address)
                .or_insert_with(|| crate::ops::ExporterStatus { address: e.address, ..Default::default() });
            x.last_seen = x.last_seen.max(e.last_seen);
            x.datagrams += e.datagrams;
            x.records += e.records;
            x.templates = x.templates.max(e.templates);
            x.sampling = x.sampling.or(e.sampling);
        }
    }
    let mut s = String::from("[");
    for (i, e) in m.values().enumerate() {
        let _ = write!(
            s,
            "{}{{\"exporter\":\"{}\",\"last_seen\":{},\"datagrams\":{},\"records\":{},\"templates\":{},\"sampling_rate\":{}}}",
            if i > 0 { "," } else { "" },
            e.address,
            e.last_seen,
            e.datagrams,
            e.records,
            e.templates,
            e.sampling.map_or("null".to_string(), |r| r.to_string())
        );
    }
    s.push(']');
    s
}

/// Answers one request: (status, content type, body).
pub fn route(p: &Published, url: &str) -> (u16, &'static str, String) {
    let path = url.split('?').next().unwrap_or("");
    let q = query(url);
    let json = "application/json";
    let metric_of = |q: &FxHashMap<String, String>| match q.get("metric").map(String::as_str) {
        Some("packets") => 1,
        Some("flows") => 2,
        _ => 0,
    };
    match path {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", VIEW.to_string()),
        "/favicon.ico" => (204, "image/x-icon", String::new()),
        "/metrics" => (200, "text/plain; version=0.0.4", metrics(p)),
        "/api/overview" => (200, json, overview(p)),
        "/api/exporters" => (200, json, exporters(p)),
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" => {
            let ready = p.last_report.iter().all(|t| t.is_some_and(|t| t.elapsed().as_secs() < 5));
            if ready {
                (200, "text/plain", "ready\n".into())
            } else {
                (503, "text/plain", "shards not reporting yet\n".into())
            }
        }
        "/api/top" => {
            let Some(dim) = q.get("dimension").and_then(|d| Dimension::from_name(d)) else {
                return (
                    400,
                    json,
                    "{\"error\":\"dimension: give one of the aggregated dimensions, e.g. dst_ip\"}".into(),
                );
            };
            let secs = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(HOT_SECONDS).clamp(1, HOT_SECONDS);
            let n = q.get("n").and_then(|s| s.parse().ok()).unwrap_or(10usize).clamp(1, 1000);
            let m = metric_of(&q);
            let rows = p.hot.top(dim, m, secs, n);
            let mut s = format!(
                "{{\"dimension\":\"{}\",\"seconds\":{secs},\"newest\":{},\"top\":[",
                dim.name(),
                p.hot.newest().unwrap_or(0)
            );
            for (i, (k, t)) in rows.iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{{\"key\":{:?},\"bytes\":{},\"packets\":{},\"flows\":{}}}",
                    if i > 0 { "," } else { "" },
                    dim.format_key(k),
                    t[0],
                    t[1],
                    t[2]
                );
            }
            s.push_str("]}");
            (200, json, s)
        }
        "/api/series" => {
            let dim = q.get("dimension").and_then(|d| Dimension::from_name(d));
            let key = dim.zip(q.get("key")).and_then(|(d, k)| parse_key(d, k));
            let (Some(dim), Some(key)) = (dim, key) else {
                return (
                    400,
                    json,
                    "{\"error\":\"give dimension and key, e.g. ?dimension=dst_ip&key=192.0.2.1\"}".into(),
                );
            };
            let secs = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(HOT_SECONDS).clamp(1, HOT_SECONDS);
            let mut s = format!("{{\"dimension\":\"{}\",\"key\":{:?},\"series\":[", dim.name(), dim.format_key(&key));
            for (i, (sec, t)) in p.hot.series(dim, &key, secs).iter().enumerate() {
                let _ = write!(s, "{}[{sec},{},{},{}]", if i > 0 { "," } else { "" }, t[0], t[1], t[2]);
            }
            s.push_str("]}");
            (200, json, s)
        }
        "/api/alerts" => {
            let n = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50usize).min(RECENT_ALERTS);
            let mut s = String::from("[");
            for (i, a) in p.hot.alerts.iter().rev().take(n).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                crate::io::json::alert(&mut s, "", a);
            }
            s.push(']');
            (200, json, s)
        }
        _ => (
            404,
            "text/plain",
            "not found: / /metrics /healthz /readyz /api/overview /api/top /api/series /api/alerts /api/exporters\n"
                .into(),
        ),
    }
}

/// Serves until `stop` is set. `token`: required bearer token (None = open, loopback only).
pub fn serve(
    addr: std::net::SocketAddr,
    token: Option<String>,
    state: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
    cpu: Option<usize>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let server = tiny_http::Server::http(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
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
            let (code, ctype, body) = match state.lock() {
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
