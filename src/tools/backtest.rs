//! `flowshard backtest`: runs a `timestamp,value` series through the *same* layer-1 detector
//! the shards run ([`crate::detect::MetricState::update`]) and writes
//! `timestamp,value,anomaly_score,alert`, one row per input row, in order.
//!
//! Timestamps: `2014-04-01 00:00:00`, RFC 3339 (`2014-04-01T00:00:00Z`, offsets, fractions) or
//! epoch seconds; any regular interval (each row is one detector step; the timestamp in seconds
//! drives the cooldown). A header line is recognised and skipped.
//!
//! `backtest --layer 3` runs a `timestamp,v1[,…,v5]` series (bytes, packets, flows,
//! distinct destination endpoints, distinct destination ports; a forest over as many values as
//! the header has columns) through one layer-3 forest with the
//! same scoring and confirmation as the live engine, one row per interval, and writes
//! `timestamp,values…,anomaly_score,alert` (score = the anomaly grade; alert = 1 on the row of
//! an anomaly the next row confirmed).
//!
//! May depend on: `detect`, `model`. Lives on: the main thread.

use crate::detect::layer3::{confirm, AnomalyResult, Forest, Layer3, FEATURES};
use crate::detect::{DetectConfig, MetricState};
use crate::model::Metric;
use std::fmt::Write;

/// Backtest input errors (line numbers are 1-based).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BacktestError {
    /// A line without two comma-separated fields.
    #[error("line {line}: expected `timestamp,value`, got {text:?}")]
    Shape {
        /// Line.
        line: usize,
        /// The line.
        text: String,
    },
    /// A timestamp in no known format.
    #[error("line {line}: cannot read timestamp {text:?} (use 2014-04-01 00:00:00, RFC 3339 or epoch seconds)")]
    Time {
        /// Line.
        line: usize,
        /// The field.
        text: String,
    },
    /// A value that is not a number.
    #[error("line {line}: value {text:?} is not a number")]
    Value {
        /// Line.
        line: usize,
        /// The field.
        text: String,
    },
}

/// Parses a timestamp to Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('"');
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v as i64);
    }
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b' ' || b[10] == b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(|c| c.is_ascii_digit()).count();
        rest = &r[digits..];
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        r if (r.starts_with('+') || r.starts_with('-')) && r.len() == 6 && &r[3..4] == ":" => {
            let sign = if r.starts_with('-') { -1 } else { 1 };
            let oh: i64 = r[1..3].parse().ok()?;
            let om: i64 = r[4..6].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(crate::model::time::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

/// Runs the series through one detector for `metric` and returns the output CSV.
pub fn run(input: &str, cfg: &DetectConfig, metric: Metric) -> Result<String, BacktestError> {
    let m = Metric::ALL.iter().position(|x| *x == metric).unwrap_or(0);
    let mut state = MetricState::default();
    let mut out = String::with_capacity(input.len() * 2);
    out.push_str("timestamp,value,anomaly_score,alert\n");
    let mut first = true;
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let l = line.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        let Some((ts, val)) = l.split_once(',') else {
            return Err(BacktestError::Shape { line: line_no, text: l.to_string() });
        };
        let Some(t) = parse_time(ts) else {
            if first {
                first = false;
                continue; // header
            }
            return Err(BacktestError::Time { line: line_no, text: ts.to_string() });
        };
        first = false;
        let v: f64 = val
            .trim()
            .trim_matches('"')
            .parse()
            .map_err(|_| BacktestError::Value { line: line_no, text: val.to_string() })?;
        let verdict = state.update(cfg, m, v, t.max(0) as u64, Default::default());
        let _ =
            writeln!(out, "{},{},{:.6},{}", ts.trim(), val.trim(), verdict.score, u8::from(verdict.alert.is_some()));
    }
    Ok(out)
}

/// Runs a multi-column series through one layer-3 forest; returns the output CSV.
pub fn run_layer3(input: &str, cfg: &Layer3) -> Result<String, BacktestError> {
    // built on the first data row: a forest over as many values as the series has columns
    let mut forest: Option<Forest> = None;
    let mut rows: Vec<(String, Vec<String>, f64, bool)> = Vec::new();
    let mut pending: Option<Box<AnomalyResult>> = None;
    let mut header = String::from("timestamp");
    let mut width = 0;
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let l = line.trim_end_matches('\r');
        if l.trim().is_empty() {
            continue;
        }
        let mut cols = l.split(',');
        let ts = cols.next().unwrap_or_default();
        let vals: Vec<&str> = cols.collect();
        if vals.is_empty() || vals.len() > FEATURES {
            return Err(BacktestError::Shape { line: line_no, text: l.to_string() });
        }
        let Some(t) = parse_time(ts) else {
            if rows.is_empty() && width == 0 {
                width = vals.len();
                header = l.to_string();
                continue; // header
            }
            return Err(BacktestError::Time { line: line_no, text: ts.to_string() });
        };
        if width == 0 {
            width = vals.len();
            header = std::iter::once("timestamp".to_string())
                .chain((1..=width).map(|k| format!("v{k}")))
                .collect::<Vec<_>>()
                .join(",");
        }
        if vals.len() > width {
            return Err(BacktestError::Shape { line: line_no, text: l.to_string() });
        }
        let forest = match &mut forest {
            Some(f) => f,
            None => forest.insert(
                Forest::with_width(cfg, 0x1f5a_7d3c, width)
                    .map_err(|e| BacktestError::Value { line: 0, text: e.to_string() })?,
            ),
        };
        let mut f = [0.0f64; FEATURES];
        for (k, v) in vals.iter().enumerate() {
            f[k] = v
                .trim()
                .trim_matches('"')
                .parse()
                .map_err(|_| BacktestError::Value { line: line_no, text: v.to_string() })?;
        }
        let point = f.map(|x| x as f32);
        let t = t.max(0) as u64;
        let scored = forest
            .process(&point, rows.len() as u64, cfg)
            .map_err(|e| BacktestError::Value { line: line_no, text: e.to_string() })?;
        // one series is its own population: a feature matters relative to its own size
        let totals = std::array::from_fn(|k| f[k].abs().max(scored.expected.map_or(0.0, |e| e[k].abs())));
        let r = AnomalyResult {
            entity: crate::model::Ip::UNSPECIFIED,
            data_start: t,
            data_end: t + cfg.interval_s,
            executed_ms: 0,
            features: f,
            points: forest.points(),
            totals,
            scored,
        };
        if confirm(&mut pending, &r, cfg).is_some() {
            if let Some(row) = rows.last_mut() {
                row.3 = true; // what is confirmed is always the previous row's anomaly
            }
        }
        rows.push((ts.trim().to_string(), vals.iter().map(|v| v.trim().to_string()).collect(), r.scored.grade, false));
    }
    let mut out = String::with_capacity(input.len() * 2);
    let _ = writeln!(out, "{header},anomaly_score,alert");
    for (t, vals, grade, alert) in rows {
        let _ = writeln!(out, "{t},{},{grade:.6},{}", vals.join(","), u8::from(alert));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer3_rows_in_order_and_a_fanout_is_confirmed() {
        let mut csv = String::from("timestamp,bytes,packets,flows,distinct\n");
        for i in 0..300u64 {
            let w = (i * 7919 % 13) as f64 / 13.0;
            let d = if i >= 250 { 70.0 } else { 3.0 + w };
            csv.push_str(&format!("{},{},{},{},{d}\n", 1_700_000_000 + i * 60, 50_000.0 * (1.0 + 0.1 * w), 50, 12));
        }
        let cfg = Layer3 { trees: 30, sample: 128, ..Layer3::default() };
        let out = run_layer3(&csv, &cfg).unwrap();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows[0], "timestamp,bytes,packets,flows,distinct,anomaly_score,alert");
        assert_eq!(rows.len(), 301);
        let alerts: Vec<usize> =
            rows[1..].iter().enumerate().filter(|(_, r)| r.ends_with(",1")).map(|(i, _)| i).collect();
        assert_eq!(alerts, vec![250], "{}", &out[out.len().saturating_sub(3000)..]);
        assert!(run_layer3("t,a,b,c,d,e,f\n1,1,2,3,4,5,6\n", &cfg).is_err(), "six values");
        assert!(run_layer3("t,a\n1,1\n2,1,2\n", &cfg).is_err(), "more values than the header");
    }

    #[test]
    fn time_formats() {
        assert_eq!(parse_time("2014-04-01 00:00:00"), Some(1_396_310_400));
        assert_eq!(parse_time("2014-04-01T00:00:00Z"), Some(1_396_310_400));
        assert_eq!(parse_time("2014-04-01T02:00:00.250+02:00"), Some(1_396_310_400));
        assert_eq!(parse_time("1396310400"), Some(1_396_310_400));
        assert_eq!(parse_time("timestamp"), None);
        assert_eq!(parse_time("2014-13-01 00:00:00"), None);
    }

    #[test]
    fn one_row_per_input_row_in_order() {
        let mut csv = String::from("timestamp,value\n");
        for i in 0..400 {
            let v = if i == 300 || i == 301 { 50e6 } else { 2e6 + (i % 7) as f64 * 1e4 };
            csv.push_str(&format!("2014-04-01 00:{:02}:{:02},{v}\n", i / 60, i % 60));
        }
        let out = run(&csv, &DetectConfig::default(), Metric::Bytes).unwrap();
        let rows: Vec<&str> = out.lines().collect();
        assert_eq!(rows[0], "timestamp,value,anomaly_score,alert");
        assert_eq!(rows.len(), 401);
        assert!(rows[1].starts_with("2014-04-01 00:00:00,2000000,"));
        let alerts: Vec<usize> =
            rows[1..].iter().enumerate().filter(|(_, r)| r.ends_with(",1")).map(|(i, _)| i).collect();
        assert_eq!(alerts, vec![301]);
        for r in &rows[1..] {
            let score: f64 = r.split(',').nth(2).unwrap().parse().unwrap();
            assert!((0.0..=1.0).contains(&score));
        }
        assert!(run("a,b\nx,1\n", &DetectConfig::default(), Metric::Bytes).is_err());
    }
}
