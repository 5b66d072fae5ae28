//! The HTTP routes: health and readiness, the live view page, and the JSON query API over the
//! hot window (top keys, series, alerts, overview, exporters).
//!
//! May depend on: `ops`, `model`, `alert`, `pipeline` (its tests build a second). Lives on: the I/O core (HTTP thread).

use super::{metrics, Published, HOT_SECONDS, RECENT_ALERTS};
use crate::model::{Dimension, Key};
use rustc_hash::FxHashMap;
use std::fmt::Write;

/// `%XX` escapes and `+` decoded (what `encodeURIComponent` and forms write); a malformed
/// escape is kept as written, invalid UTF-8 replaced.
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters of a URL (the few escapes the API's keys need).
pub fn query(url: &str) -> FxHashMap<String, String> {
    let mut m = FxHashMap::default();
    if let Some((_, q)) = url.split_once('?') {
        for kv in q.split('&') {
            if let Some((k, v)) = kv.split_once('=') {
                m.insert(k.to_string(), percent_decode(v));
            }
        }
    }
    m
}

/// The live view (one page, no build step, embedded in the binary).
pub const VIEW: &str = include_str!("view.html");

/// Everything the live view shows, in one JSON document.
pub fn overview(p: &Published) -> String {
    let mut s = String::from("{\"shards\":[");
    for (i, st) in p.board.shards().iter().enumerate() {
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
    s.push_str("},\"dimensions\":[");
    for (i, d) in p.hot.dimensions().iter().enumerate() {
        let _ = write!(s, "{}\"{}\"", if i > 0 { "," } else { "" }, d.name());
    }
    let _ = write!(s, "],\"incidents_open\":{},\"incidents\":{}", p.io.incidents_open, incidents(p, 20));
    let _ = write!(s, ",\"alerts_total\":{},\"alerts\":[", p.io.alerts);
    for (i, a) in p.hot.alerts.iter().rev().take(20).enumerate() {
        if i > 0 {
            s.push(',');
        }
        a.write_json(&mut s, "");
    }
    s.push_str("]}");
    s
}

/// The recent incidents, open ones first, newest first within each state.
pub fn incidents(p: &Published, n: usize) -> String {
    use crate::alert::IncidentState;
    let mut s = String::from("[");
    let open = p.hot.incidents.iter().rev().filter(|e| e.state != IncidentState::Resolve);
    let resolved = p.hot.incidents.iter().rev().filter(|e| e.state == IncidentState::Resolve);
    for (i, e) in open.chain(resolved).take(n).enumerate() {
        if i > 0 {
            s.push(',');
        }
        e.write_json(&mut s, "");
    }
    s.push(']');
    s
}

/// Per-exporter status merged over shards: last seen, datagrams, records, templates, sampling.
pub fn exporters(p: &Published) -> String {
    let mut m: std::collections::BTreeMap<crate::model::Ip, crate::ops::ExporterStatus> = Default::default();
    for st in p.board.shards() {
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

/// Appends `,"as_name":…`.
fn as_name_json(s: &mut String, name: &str) {
    s.push_str(",\"as_name\":");
    crate::model::json::esc(s, name);
}

/// Appends `,"interface":{"name":…,"alias":…,"speed_mbps":…}`.
fn interface_json(s: &mut String, f: &crate::model::Interface) {
    use crate::model::json::esc;
    s.push_str(",\"interface\":{\"name\":");
    esc(s, &f.name);
    s.push_str(",\"alias\":");
    esc(s, &f.alias);
    let _ = write!(s, ",\"speed_mbps\":{}}}", f.speed_mbps);
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
            let ready = p.board.all_reported_within(std::time::Duration::from_secs(5));
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
            let names = if dim.is_interface() { p.hot.interfaces(dim) } else { FxHashMap::default() };
            let as_names = p.hot.as_names(dim);
            let mut s = format!(
                "{{\"dimension\":\"{}\",\"seconds\":{secs},\"newest\":{},\"top\":[",
                dim.name(),
                p.hot.newest().unwrap_or(0)
            );
            for (i, (k, t)) in rows.iter().enumerate() {
                let _ = write!(
                    s,
                    "{}{{\"key\":{:?},\"bytes\":{},\"packets\":{},\"flows\":{}",
                    if i > 0 { "," } else { "" },
                    dim.format_key(k),
                    t[0],
                    t[1],
                    t[2]
                );
                if let Some(f) = names.get(k) {
                    interface_json(&mut s, f);
                }
                if let Some(n) = as_names.get(k) {
                    as_name_json(&mut s, n);
                }
                s.push('}');
            }
            s.push_str("]}");
            (200, json, s)
        }
        "/api/series" => {
            let dim = q.get("dimension").and_then(|d| Dimension::from_name(d));
            let key = dim.zip(q.get("key")).and_then(|(d, k)| d.parse_key(k));
            let (Some(dim), Some(key)) = (dim, key) else {
                return (
                    400,
                    json,
                    "{\"error\":\"give dimension and key, e.g. ?dimension=dst_ip&key=192.0.2.1\"}".into(),
                );
            };
            let secs = q.get("seconds").and_then(|s| s.parse().ok()).unwrap_or(HOT_SECONDS).clamp(1, HOT_SECONDS);
            let mut s = format!("{{\"dimension\":\"{}\",\"key\":{:?}", dim.name(), dim.format_key(&key));
            let iface = if dim.is_interface() { p.hot.interfaces(dim).remove(&key) } else { None };
            if let Some(f) = &iface {
                interface_json(&mut s, f);
            }
            if let Some(n) = p.hot.as_names(dim).get(&key) {
                as_name_json(&mut s, n);
            }
            // with a known speed, each point also gives the link's use: % of its capacity
            let capacity_bps = iface.map_or(0.0, |f| f.speed_mbps as f64 * 1e6);
            s.push_str(",\"series\":[");
            for (i, (sec, t)) in p.hot.series(dim, &key, secs).iter().enumerate() {
                let _ = write!(s, "{}[{sec},{},{},{}", if i > 0 { "," } else { "" }, t[0], t[1], t[2]);
                if capacity_bps > 0.0 {
                    let _ = write!(s, ",{:.3}", t[0] as f64 * 8.0 * 100.0 / capacity_bps);
                }
                s.push(']');
            }
            s.push_str("]}");
            (200, json, s)
        }
        "/api/incidents" => {
            let n = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50usize).min(super::hot::RECENT_INCIDENTS);
            (200, json, incidents(p, n))
        }
        "/api/alerts" => {
            let n = q.get("limit").and_then(|s| s.parse().ok()).unwrap_or(50usize).min(RECENT_ALERTS);
            let mut s = String::from("[");
            for (i, a) in p.hot.alerts.iter().rev().take(n).enumerate() {
                if i > 0 {
                    s.push(',');
                }
                a.write_json(&mut s, "");
            }
            s.push(']');
            (200, json, s)
        }
        _ => (
            404,
            "text/plain",
            "not found: / /metrics /healthz /readyz /api/overview /api/top /api/series /api/alerts /api/incidents /api/exporters\n"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Interface, Ip, Rollup};

    /// Interface rows carry their name in the top list, and with a known speed each series point
    /// gives the link's use in % of its capacity.
    #[test]
    fn interface_names_and_link_use() {
        let s = super::super::shared(1);
        let mut p = s.lock().unwrap_or_else(|e| e.into_inner());
        let f = Interface { name: "xe-0/0/7".into(), alias: "transit \"A\"".into(), speed_mbps: 100 };
        let key = Key::new(Ip::from_v4(0xc000_0201), 7);
        for second in 100..102 {
            let row = Rollup {
                interface: Some(std::sync::Arc::new(f.clone())),
                // 6,250,000 bytes a second: 50 Mbit/s
                ..Rollup::new(second, Dimension::ExporterInIf, key, 6_250_000, 5_000, 10)
            };
            let so = crate::pipeline::SecondOutput { second, rollups: vec![row], alerts: Vec::new() };
            p.hot.push(&so, &[]);
        }
        let (code, _, body) = route(&p, "/api/top?dimension=exporter_in_if&n=5");
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["top"][0]["interface"]["name"], "xe-0/0/7", "{body}");
        assert_eq!(v["top"][0]["interface"]["alias"], "transit \"A\"");
        let (_, _, body) = route(&p, "/api/series?dimension=exporter_in_if&key=192.0.2.1:7&seconds=2");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["interface"]["speed_mbps"], 100, "{body}");
        assert_eq!(v["series"][1][4], 50.0, "50 Mbit/s on a 100 Mbit/s link: {body}");
        let (_, _, body) = route(&p, "/api/series?dimension=dst_ip&key=192.0.2.1&seconds=2");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(v.get("interface").is_none() && v["series"][0].as_array().is_some_and(|a| a.len() == 4), "{body}");
    }

    /// AS rows carry the AS's name in the top list and the series.
    #[test]
    fn as_names_in_top_and_series() {
        let s = super::super::shared(1);
        let mut p = s.lock().unwrap_or_else(|e| e.into_inner());
        let row = Rollup {
            as_name: Some("Example \"Net\" 64500".into()),
            ..Rollup::new(100, Dimension::DstAs, Key::new(Ip::UNSPECIFIED, 64500), 1000, 1, 1)
        };
        let so = crate::pipeline::SecondOutput { second: 100, rollups: vec![row], alerts: Vec::new() };
        p.hot.push(&so, &[]);
        let (_, _, body) = route(&p, "/api/top?dimension=dst_as");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["top"][0]["key"], "AS64500", "{body}");
        assert_eq!(v["top"][0]["as_name"], "Example \"Net\" 64500", "{body}");
        let (_, _, body) = route(&p, "/api/series?dimension=dst_as&key=AS64500&seconds=2");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["as_name"], "Example \"Net\" 64500", "{body}");
    }
}
