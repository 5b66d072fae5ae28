//! The JSON shapes of rollups and alerts — written once here and used by every sink.
//!
//! Rollup: `{"type":"rollup","appliance":…,"second":…,"dimension":…,"key":…,"bytes":…,
//! "packets":…,"flows":…[,"distinct_dst_endpoints"|"distinct_src_ips":…,"distinct_dst_ports":…]
//! [,"if_name":…,"if_alias":…,"if_speed_mbps":…][,"as_name":…][,"net_role":…,"net_site":…,
//! "net_tenant":…]}` (interface fields on named interface rows, the AS name on `src_as`/`dst_as`
//! rows the ASN database names, a network's role/site/tenant on `src_net`/`dst_net` rows)
//!
//! Alert (every layer): `{"type":"alert","appliance":…,"second":…,"time":…,"layer":…,
//! "dimension":…,"key":…,"metric":…,"kind":…,"value":…,"expected":…,"baseline":…,"score":…,
//! "z":…,"reason":…}`
//!
//! Host row: `{"type":"host","appliance":…,"second":…,"host":…,"metric":…,"tags":…,
//! "kind":…,"count":…,"sum":…,"min":…,"max":…,"last":…,"last_ms":…}` (`tags` as `k=v,k=v`;
//! syslog rows also carry `"severity"` and `"facility"`)
//!
//! May depend on: `model`, `pipeline` (host rows). Lives on: I/O cores.

use crate::model::json::esc;
use crate::model::Rollup;
use std::fmt::Write;

/// Appends one rollup as a JSON object (no newline).
pub fn rollup(out: &mut String, appliance: &str, r: &Rollup) {
    out.push_str("{\"type\":\"rollup\",\"appliance\":");
    esc(out, appliance);
    let _ = write!(out, ",\"second\":{},\"dimension\":\"{}\",\"key\":", r.second, r.dimension.name());
    esc(out, &r.dimension.format_key(&r.key));
    let _ = write!(out, ",\"bytes\":{},\"packets\":{},\"flows\":{}", r.bytes, r.packets, r.flows);
    if let Some([name, ports]) = r.dimension.distinct_names() {
        if let Some(d) = r.distinct {
            let _ = write!(out, ",\"{name}\":{d}");
        }
        if let Some(d) = r.distinct_ports {
            let _ = write!(out, ",\"{ports}\":{d}");
        }
    }
    if let Some(i) = &r.interface {
        out.push_str(",\"if_name\":");
        esc(out, &i.name);
        out.push_str(",\"if_alias\":");
        esc(out, &i.alias);
        let _ = write!(out, ",\"if_speed_mbps\":{}", i.speed_mbps);
    }
    if let Some(n) = &r.as_name {
        out.push_str(",\"as_name\":");
        esc(out, n);
    }
    if let Some(n) = &r.net {
        net_fields(out, n);
    }
    out.push('}');
}

/// Appends one host row as a JSON object (no newline).
pub fn host_row(out: &mut String, appliance: &str, r: &crate::pipeline::host::HostRow) {
    use crate::pipeline::host::SeriesKind;
    out.push_str("{\"type\":\"host\",\"appliance\":");
    esc(out, appliance);
    let _ = write!(out, ",\"second\":{},\"host\":", r.second);
    esc(out, &r.name.host);
    out.push_str(",\"metric\":");
    esc(out, &r.name.metric);
    out.push_str(",\"tags\":");
    esc(out, &r.name.tags);
    let kind = match r.name.kind {
        SeriesKind::Metric => "metric",
        SeriesKind::Syslog { severity, facility } => {
            let _ = write!(out, ",\"severity\":{severity},\"facility\":{facility}");
            "syslog"
        }
        SeriesKind::AuthFailure => "auth_failure",
        SeriesKind::Pattern => "pattern",
    };
    let a = &r.agg;
    let num = |out: &mut String, k: &str, v: f64| {
        // JSON has no NaN/Inf; inputs refuse them, so this is a guard only
        let v = if v.is_finite() { v } else { 0.0 };
        let _ = write!(out, ",\"{k}\":{v}");
    };
    let _ = write!(out, ",\"kind\":\"{kind}\",\"count\":{}", a.count);
    num(out, "sum", a.sum);
    num(out, "min", a.min);
    num(out, "max", a.max);
    num(out, "last", a.last);
    let _ = write!(out, ",\"last_ms\":{}}}", a.last_ms);
}

/// The document id of a host row: appliance, series and second (stable across retries).
pub fn host_row_id(appliance: &str, r: &crate::pipeline::host::HostRow) -> String {
    format!("{appliance}-h{:016x}-{}", r.id, r.second)
}

/// Appends `,"net_role":…,"net_site":…,"net_tenant":…` (the non-empty ones).
pub fn net_fields(out: &mut String, n: &crate::model::NetInfo) {
    for (f, v) in [("net_role", &n.role), ("net_site", &n.site), ("net_tenant", &n.tenant)] {
        if !v.is_empty() {
            let _ = write!(out, ",\"{f}\":");
            esc(out, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dimension, Ip, Key};

    #[test]
    fn rollup_is_valid_json() {
        let r = Rollup {
            distinct: Some(3),
            distinct_ports: Some(1),
            ..Rollup::new(5, Dimension::DstIp, Key::new(Ip::from_v4(0xc0000263), 0), 10, 2, 1)
        };
        let mut s = String::new();
        rollup(&mut s, "a\"b", &r);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["key"], "192.0.2.99");
        assert_eq!(v["distinct_src_ips"], 3);
        assert_eq!(v["distinct_dst_ports"], 1);
        assert_eq!(v["appliance"], "a\"b");
    }
}
