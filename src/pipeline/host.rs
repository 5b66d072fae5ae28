//! The host-telemetry data path, sans I/O: [`HostCore`] turns line-protocol lines, syslog
//! messages and remote-write samples into series samples of a [`HostWindow`]; the I/O core
//! merges the windows' batches ([`HostMerge`]) and runs the host detectors on the merged rows.
//!
//! Per input unit (a line, a message, a sample) the cost is a parse over borrowed bytes, a
//! 64-bit hash and one table probe; text is rendered only for a series the window has not seen.
//! Bad input is counted by reason ([`HostCore::counters`]), never a panic.
//!
//! May depend on: `model`, `decode`, `aggregate`. Lives on: shard cores (listeners), the HTTP
//! ingest thread (remote-write, `/api/v2/write`), the I/O core (merge), replay and tests.

pub use crate::aggregate::host::{
    Agg, HostBatch, HostCounters, HostMerge, HostRow, HostSecond, HostWindow, SeriesHasher, SeriesKind, SeriesName,
};
use crate::decode::lineproto::{self, Precision};
use crate::decode::syslog::{self, SyslogError, SEVERITIES};
use rustc_hash::FxHashSet;
use serde::Serialize;

/// Host-input settings the shards need.
#[derive(Clone, Debug, PartialEq)]
pub struct HostPathConfig {
    /// Tags (labels) kept in series keys besides the host; every other tag is ignored.
    pub tags: Vec<String>,
    /// Series a window may know.
    pub max_series: usize,
    /// Message patterns a window may know; beyond it a message counts in its (host, app)'s
    /// `<other>` pattern.
    pub max_patterns: usize,
}

impl Default for HostPathConfig {
    fn default() -> Self {
        HostPathConfig {
            tags: ["cpu", "device", "path", "fstype", "interface", "mode", "process_name", "pattern", "name", "job"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            max_series: 100_000,
            max_patterns: 10_000,
        }
    }
}

/// Counters of bad or skipped host input, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostInputCounters {
    /// Line-protocol lines accepted.
    pub lines: u64,
    /// Refused lines, by [`LineError`] (index order of [`LineError::ALL`]).
    pub line_errors: [u64; 6],
    /// String fields (not samples; skipped).
    pub string_fields: u64,
    /// Syslog messages refused, by [`SyslogError`] (index order of [`SyslogError::ALL`]).
    pub syslog_errors: [u64; 4],
    /// Messages counted under `<other>` because the pattern table was full.
    pub pattern_overflow: u64,
    /// Remote-write requests refused (bad snappy or protobuf, or too large).
    pub remote_write_errors: u64,
    /// Remote-write samples that were NaN or ±Inf (Prometheus' stale markers included; skipped).
    pub non_finite: u64,
    /// TCP frames longer than the limit (skipped).
    pub oversize_frames: u64,
    /// JSON metric messages refused (not JSON, or not a metric).
    pub json_errors: u64,
    /// JSON metrics accepted.
    pub json_metrics: u64,
}

impl HostInputCounters {
    /// Total of refused input units (lines, messages, requests).
    pub fn refused(&self) -> u64 {
        self.line_errors.iter().sum::<u64>()
            + self.syslog_errors.iter().sum::<u64>()
            + self.remote_write_errors
            + self.json_errors
    }
}

/// Name of the pattern bucket used when the pattern table is full.
pub const OTHER_PATTERN: &str = "<other>";
/// Longest pattern text kept, bytes.
pub const PATTERN_TEXT_MAX: usize = 160;

/// Decode + pre-aggregate of host input on one core.
#[derive(Debug)]
pub struct HostCore {
    cfg: HostPathConfig,
    /// The open second.
    pub window: HostWindow,
    /// Bad input by reason.
    pub counters: HostInputCounters,
    patterns: FxHashSet<u64>,
    id: u16,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Is this message an authentication failure? (auth/authpriv facility, or an app that logs
/// them, with a failure word.)
fn auth_failure(m: &syslog::Message<'_>) -> bool {
    let authish = matches!(m.facility, 4 | 10) || m.app.eq_ignore_ascii_case(b"sshd") || m.app.starts_with(b"sudo");
    if !authish {
        return false;
    }
    let has = |w: &[u8]| m.msg.windows(w.len()).any(|x| x.eq_ignore_ascii_case(w));
    has(b"failed") || has(b"failure") || has(b"invalid user") || has(b"authentication fail")
}

fn allowed(allow: &[String], k: &[u8]) -> bool {
    allow.iter().any(|t| t.as_bytes() == k)
}

/// The allowed tags, sorted, as `k=v,k=v` (unescaping line-protocol escapes when `escaped`).
fn tags_text<'a>(allow: &[String], tags: impl Iterator<Item = (&'a [u8], &'a [u8])>, escaped: bool) -> String {
    let mut v: Vec<(String, String)> = tags
        .filter(|(k, _)| allowed(allow, k))
        .map(|(k, val)| {
            if escaped {
                let (mut a, mut b) = (String::new(), String::new());
                lineproto::unescape(k, &mut a);
                lineproto::unescape(val, &mut b);
                (a, b)
            } else {
                (text(k), text(val))
            }
        })
        .collect();
    v.sort();
    v.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

impl HostCore {
    /// A core numbered `id` (its batches' source).
    pub fn new(cfg: &HostPathConfig, id: u16) -> HostCore {
        HostCore {
            cfg: cfg.clone(),
            window: HostWindow::new(cfg.max_series),
            counters: HostInputCounters::default(),
            patterns: FxHashSet::default(),
            id,
        }
    }

    /// Adds a buffer of line-protocol lines (a datagram, an HTTP body, TCP frames) received
    /// from `fallback_host` (used when a line has no `host` tag) at Unix second `now`.
    pub fn lines(&mut self, buf: &[u8], precision: Precision, fallback_host: &[u8], now: u64) {
        for l in buf.split(|&c| c == b'\n') {
            self.line(l, precision, fallback_host, now);
        }
    }

    /// Adds one line-protocol line.
    pub fn line(&mut self, l: &[u8], precision: Precision, fallback_host: &[u8], now: u64) {
        let line = match lineproto::parse_line(l) {
            Ok(Some(x)) => x,
            Ok(None) => return,
            Err(e) => {
                self.counters.line_errors[e.index()] += 1;
                return;
            }
        };
        self.counters.lines += 1;
        let host = line.tags().find(|(k, _)| *k == b"host").map_or(fallback_host, |(_, v)| v);
        let ms = line.timestamp.map_or(now as i64 * 1000, |t| lineproto::to_millis(t, precision));
        let allow = &self.cfg.tags;
        let mut base = SeriesHasher::new(0, host);
        base.part(line.measurement);
        for (k, v) in line.tags() {
            if k != b"host" && allowed(allow, k) {
                base.tag(k, v);
            }
        }
        for (field, value) in line.fields() {
            let Some(x) = value.number() else {
                self.counters.string_fields += 1;
                continue;
            };
            let mut h = base;
            h.part(field);
            let name = || {
                let mut metric = String::new();
                lineproto::unescape(line.measurement, &mut metric);
                metric.push('.');
                lineproto::unescape(field, &mut metric);
                let mut hs = String::new();
                lineproto::unescape(host, &mut hs);
                SeriesName {
                    host: hs,
                    metric,
                    tags: tags_text(allow, line.tags().filter(|(k, _)| *k != b"host"), true),
                    kind: SeriesKind::Metric,
                }
            };
            if self.window.add(h.finish(), name, ms, x, now) {
                self.window.counters.samples += 1;
            }
        }
    }

    /// Adds one syslog message (a datagram or one TCP frame) from `fallback_host` (used when the
    /// message names no host) at Unix second `now`.
    pub fn syslog(&mut self, data: &[u8], fallback_host: &[u8], now: u64) {
        let m = match syslog::parse(data) {
            Ok(m) => m,
            Err(e) => {
                let i = SyslogError::ALL.iter().position(|x| *x == e).unwrap_or(0);
                self.counters.syslog_errors[i] += 1;
                return;
            }
        };
        let host = if m.host.is_empty() || m.host == b"-" { fallback_host } else { m.host };
        let app: &[u8] = if m.app.is_empty() { b"-" } else { m.app };
        let ms = now as i64 * 1000;
        let sev = SEVERITIES[usize::from(m.severity.min(7))];
        // (host, app, facility, severity)
        let mut h = SeriesHasher::new(1, host);
        h.part(app);
        h.part(&[m.facility, m.severity]);
        self.window.add(
            h.finish(),
            || SeriesName {
                host: text(host),
                metric: "syslog.messages".into(),
                tags: format!("app={},facility={},severity={sev}", text(app), m.facility),
                kind: SeriesKind::Syslog { severity: m.severity, facility: m.facility },
            },
            ms,
            1.0,
            now,
        );
        self.window.counters.messages += 1;
        if auth_failure(&m) {
            let mut h = SeriesHasher::new(2, host);
            h.part(app);
            self.window.add(
                h.finish(),
                || SeriesName {
                    host: text(host),
                    metric: "syslog.auth_failures".into(),
                    tags: format!("app={}", text(app)),
                    kind: SeriesKind::AuthFailure,
                },
                ms,
                1.0,
                now,
            );
        }
        // (host, app, pattern), bounded
        let ph = syslog::pattern_hash(m.msg);
        let mut h = SeriesHasher::new(3, host);
        h.part(app);
        let known = self.patterns.contains(&ph);
        let full = !known && self.patterns.len() >= self.cfg.max_patterns;
        if full {
            self.counters.pattern_overflow += 1;
            h.part(OTHER_PATTERN.as_bytes());
        } else {
            if !known {
                self.patterns.insert(ph);
            }
            h.part(&ph.to_le_bytes());
        }
        self.window.add(
            h.finish(),
            || SeriesName {
                host: text(host),
                metric: "syslog.pattern".into(),
                tags: format!(
                    "app={},pattern={}",
                    text(app),
                    if full { OTHER_PATTERN.to_string() } else { syslog::pattern_text(m.msg, PATTERN_TEXT_MAX) }
                ),
                kind: SeriesKind::Pattern,
            },
            ms,
            1.0,
            now,
        );
    }

    /// Adds one labelled sample (Prometheus remote-write, JSON metrics): `labels` are
    /// (name, value) pairs, `__name__` the metric; the host is the `host` label, else
    /// `instance`, else `fallback_host`.
    pub fn sample<'a>(&mut self, labels: &[(&'a [u8], &'a [u8])], value: f64, ms: i64, fallback_host: &[u8], now: u64) {
        if !value.is_finite() {
            self.counters.non_finite += 1;
            return;
        }
        let find = |k: &[u8]| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let metric = find(b"__name__").unwrap_or(b"");
        let host = find(b"host").or_else(|| find(b"instance")).unwrap_or(fallback_host);
        let kept = |k: &[u8]| k != b"__name__" && k != b"host" && k != b"instance";
        let allow = &self.cfg.tags;
        let mut h = SeriesHasher::new(0, host);
        h.part(metric);
        for (k, v) in labels {
            if kept(k) && allowed(allow, k) {
                h.tag(k, v);
            }
        }
        let name = || SeriesName {
            host: text(host),
            metric: text(metric),
            tags: tags_text(allow, labels.iter().copied().filter(|(k, _)| kept(k)), false),
            kind: SeriesKind::Metric,
        };
        if self.window.add(h.finish(), name, ms, value, now) {
            self.window.counters.samples += 1;
        }
    }

    /// Adds one Telegraf JSON message (a metric or a batch; `buf` is rewritten by the parser)
    /// received at Unix second `now`; a metric without a `host` tag is named `fallback_host`.
    pub fn json(&mut self, buf: &mut [u8], fallback_host: &[u8], now: u64) {
        let r = crate::decode::json_metrics::parse_best(buf, |m| {
            self.counters.json_metrics += 1;
            self.counters.string_fields += m.strings;
            let host = m.tags.iter().find(|(k, _)| *k == "host").map_or(fallback_host, |(_, v)| v.as_bytes());
            let ms = m.ms.unwrap_or(now as i64 * 1000);
            let allow = &self.cfg.tags;
            let mut base = SeriesHasher::new(0, host);
            base.part(m.name.as_bytes());
            for (k, v) in &m.tags {
                if *k != "host" && allowed(allow, k.as_bytes()) {
                    base.tag(k.as_bytes(), v.as_bytes());
                }
            }
            for (field, x) in &m.fields {
                let mut h = base;
                h.part(field.as_bytes());
                let name = || SeriesName {
                    host: text(host),
                    metric: format!("{}.{field}", m.name),
                    tags: tags_text(
                        allow,
                        m.tags.iter().filter(|(k, _)| *k != "host").map(|(k, v)| (k.as_bytes(), v.as_bytes())),
                        false,
                    ),
                    kind: SeriesKind::Metric,
                };
                if x.is_finite() && self.window.add(h.finish(), name, ms, *x, now) {
                    self.window.counters.samples += 1;
                }
            }
        });
        if r.is_err() {
            self.counters.json_errors += 1;
        }
    }

    /// Closes arrival second `now`.
    pub fn close(&mut self, now: u64) -> HostBatch {
        self.window.close(self.id, now)
    }
}
