//! `/metrics`: every counter in the Prometheus text format, labels from closed sets only
//! (never an address).
//!
//! May depend on: `ops`, `sink` (counters), `decode`, `model`. Lives on: the I/O core (HTTP
//! thread).

use super::Published;
use crate::sink::delivery::SinkStats;
use std::fmt::Write;
use std::sync::Arc;

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
    let sh = p.board.shards();
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
        "flowshard_spread_datagrams_total",
        "counter",
        "Exporter spread, by shard: datagrams handed to another shard (forwarded), decoded for another shard (taken), template/options datagrams copied to every shard (state_copy).",
        &mut sh.iter().flat_map(|st| {
            [("forwarded", st.spread.forwarded), ("taken", st.spread.taken), ("state_copy", st.spread.state_copies)]
                .into_iter()
                .map(move |(k, v)| (format!("shard=\"{}\",kind=\"{k}\"", st.shard), v as f64))
        }),
    );
    family(
        "flowshard_spread_events_total",
        "counter",
        "Exporter spread, by shard: template syncs sent (sync), turns lost to a full queue (busy), state copies that found a full queue (stale; that shard is synced before it gets more).",
        &mut sh.iter().flat_map(|st| {
            [("sync", st.spread.syncs), ("busy", st.spread.busy), ("stale", st.spread.stale)]
                .into_iter()
                .map(move |(k, v)| (format!("shard=\"{}\",event=\"{k}\"", st.shard), v as f64))
        }),
    );
    family(
        "flowshard_spread_exporters",
        "gauge",
        "Exporters a shard spreads over every shard now.",
        &mut sh.iter().map(|st| (format!("shard=\"{}\"", st.shard), st.spread.exporters as f64)),
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
        "Alerts written to the sinks (after the alert gate), by layer.",
        &mut (1..=3).map(|l| (format!("layer=\"{l}\""), p.io.alerts_by_layer[l] as f64)),
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
    if let Some(f) = &p.flows {
        use std::sync::atomic::Ordering::Relaxed;
        family(
            "flowshard_flows_encoded_total",
            "counter",
            "Raw-flows topic: records and Kafka messages encoded (drops: flowshard_sink_records_total{sink=\"kafka_flows\"}).",
            &mut [
                ("unit=\"records\"".to_string(), f.records.load(Relaxed) as f64),
                ("unit=\"messages\"".to_string(), f.messages.load(Relaxed) as f64),
            ]
            .into_iter(),
        );
    }
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
    let inc = &p.io.incidents;
    family(
        "flowshard_incident_events_total",
        "counter",
        "Incident events: opened, updated (escalations), resolved (quiet), forced (resolved early at incidents.max_open); evidence (alerts taken) and correlated (evidence that joined another key's incident).",
        &mut [
            ("opened", inc.opened),
            ("updated", inc.updated),
            ("resolved", inc.resolved),
            ("forced", inc.forced),
            ("evidence", inc.evidence),
            ("correlated", inc.correlated),
        ]
        .into_iter()
        .map(|(e, n)| (format!("event=\"{e}\""), n as f64)),
    );
    family(
        "flowshard_incidents_open",
        "gauge",
        "Incidents open now.",
        &mut std::iter::once((String::new(), p.io.incidents_open as f64)),
    );
    let l3 = &p.io.layer3;
    family(
        "flowshard_layer3_entities",
        "gauge",
        "Layer 3 (Random Cut Forest per source): entities with a model (state=modelled), of them in cold start (cold_starting), models the memory budget holds (capacity).",
        &mut [("modelled", l3.entities), ("cold_starting", l3.cold_starting), ("capacity", l3.capacity)]
            .into_iter()
            .map(|(k, n)| (format!("state=\"{k}\""), n as f64)),
    );
    family(
        "flowshard_layer3_events_total",
        "counter",
        "Layer 3: models admitted, sightings kept out by the door-keeper, newcomers refused (budget full), evictions (priority, idle), results, anomalies, confirmed anomalies (alerts), library errors, intervals closed, points learnt from the OpenSearch history at a cold start (history_points).",
        &mut [
            ("admitted", l3.admitted),
            ("door_kept_out", l3.door_kept_out),
            ("refused_full", l3.refused_full),
            ("evicted_priority", l3.evicted_priority),
            ("evicted_idle", l3.evicted_idle),
            ("results", l3.results),
            ("anomalies", l3.anomalies),
            ("confirmed", l3.confirmed),
            ("errors", l3.errors),
            ("intervals", l3.intervals),
            ("history_points", l3.history_points),
        ]
        .into_iter()
        .map(|(e, n)| (format!("event=\"{e}\""), n as f64)),
    );
    family(
        "flowshard_layer3_model_bytes",
        "gauge",
        "Layer 3: memory held by models (the forest library's estimate).",
        &mut std::iter::once((String::new(), l3.model_bytes as f64)),
    );
    family(
        "flowshard_interfaces",
        "gauge",
        "Exporter interfaces with a name from SNMP or the config (state=named), and interfaces seen in the flows that nothing names (unresolved).",
        &mut [("named", p.io.interfaces_named), ("unresolved", p.io.interfaces_unresolved)]
            .into_iter()
            .map(|(k, n)| (format!("state=\"{k}\""), n as f64)),
    );
    // host inputs: every shard's and the HTTP ingest's (input="http")
    let hs: Vec<(String, crate::ops::HostStatus)> = sh
        .iter()
        .filter_map(|st| st.hosts.clone().map(|h| (format!("input=\"shard{}\"", st.shard), h)))
        .chain(p.host_http.clone().map(|h| ("input=\"http\"".to_string(), h)))
        .chain(p.host_kafka.clone().map(|h| ("input=\"kafka\"".to_string(), h)))
        .collect();
    family(
        "flowshard_host_input_total",
        "counter",
        "Host input accepted: line-protocol lines, metric samples, syslog messages, datagrams; by input (shard or http).",
        &mut hs.iter().flat_map(|(l, h)| {
            [
                ("lines", h.input.lines),
                ("samples", h.window.samples),
                ("messages", h.window.messages),
                ("json_metrics", h.input.json_metrics),
                ("datagrams", h.datagrams),
            ]
            .into_iter()
            .map(move |(w, n)| (format!("{l},what=\"{w}\""), n as f64))
        }),
    );
    family(
        "flowshard_host_refused_total",
        "counter",
        "Host input refused or dropped, by input and reason (line_*: line-protocol errors; syslog_*: syslog errors).",
        &mut hs.iter().flat_map(|(l, h)| {
            let i = &h.input;
            let w = &h.window;
            let lines = crate::decode::lineproto::LineError::ALL
                .iter()
                .map(move |r| (format!("line_{}", r.name()), i.line_errors[r.index()]));
            let sys = crate::decode::syslog::SyslogError::ALL
                .iter()
                .enumerate()
                .map(move |(k, r)| (format!("syslog_{}", r.label()), i.syslog_errors[k]));
            lines
                .chain(sys)
                .chain([
                    ("remote_write_bad_body".to_string(), i.remote_write_errors),
                    ("json_bad_message".to_string(), i.json_errors),
                    ("non_finite_sample".to_string(), i.non_finite),
                    ("string_field".to_string(), i.string_fields),
                    ("oversize_frame".to_string(), i.oversize_frames),
                    ("pattern_overflow".to_string(), i.pattern_overflow),
                    ("series_overflow".to_string(), w.series_overflow),
                    ("cell_overflow".to_string(), w.cell_overflow),
                    ("out_of_range_timestamp".to_string(), w.out_of_range),
                    ("handoff_full".to_string(), h.handoff_dropped),
                    ("connection_limit".to_string(), h.connections_refused),
                ])
                .map(move |(r, n)| (format!("{l},reason=\"{r}\""), n as f64))
        }),
    );
    family(
        "flowshard_host_series",
        "gauge",
        "Host series known, per input window (shards, http) and merged on the I/O core (input=\"io\").",
        &mut hs
            .iter()
            .map(|(l, h)| (l.clone(), h.series as f64))
            .chain(std::iter::once(("input=\"io\"".to_string(), p.io.host_series as f64))),
    );
    family(
        "flowshard_host_connections",
        "gauge",
        "Open host-input TCP connections, by shard.",
        &mut hs.iter().filter(|(l, _)| l.starts_with("input=\"shard")).map(|(l, h)| (l.clone(), h.connections as f64)),
    );
    family(
        "flowshard_host_rows_total",
        "counter",
        "Host rows (series-seconds) written to the sinks.",
        &mut std::iter::once((String::new(), p.io.host_rows as f64)),
    );
    family(
        "flowshard_hosts_tracked",
        "gauge",
        "Hosts the host detectors track.",
        &mut std::iter::once((String::new(), p.io.host_detect.hosts as f64)),
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
fn sink_metrics(family: &mut Family<'_>, sinks: &[Arc<SinkStats>]) {
    use crate::sink::delivery::DropReason;
    use std::sync::atomic::Ordering::Relaxed;
    let lbl = |s: &SinkStats| format!("sink=\"{}\"", s.name);
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
