//! Sans-I/O InfluxDB line protocol (what Telegraf's `socket_writer`, `influxdb_v2` output and
//! many agents send): `measurement[,tag=v…] field=v[,field=v…] [timestamp]`, one per line.
//!
//! Nothing is allocated: a parsed [`Line`] borrows the input with its escapes still in place;
//! [`Line::tags`] and [`Line::fields`] iterate over it, and [`unescape`] renders a name only
//! when a caller needs the text (once per new series). A line is validated whole before any
//! of it is used, so a malformed line is counted once by reason ([`LineError`]) and contributes
//! nothing.
//!
//! May depend on: nothing outside `decode`. Lives on: shard cores (and the HTTP ingest thread,
//! tests, benches).

/// Why a line was refused (each reason is a counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No measurement name before the first comma or space.
    #[error("no measurement name")]
    NoMeasurement,
    /// A tag without `=` or with an empty key or value.
    #[error("malformed tag (want key=value)")]
    BadTag,
    /// No field set, or a field without `=` / with an empty key.
    #[error("no field, or a malformed field (want key=value)")]
    BadField,
    /// A field value that is no float, integer (`i`), unsigned (`u`), boolean or quoted string.
    #[error("field value is not a number, boolean or quoted string")]
    BadValue,
    /// A timestamp that is not a (signed) integer.
    #[error("timestamp is not an integer")]
    BadTimestamp,
    /// Text after the timestamp.
    #[error("text after the timestamp")]
    Trailing,
}

impl LineError {
    /// Every reason, in counter order.
    pub const ALL: [LineError; 6] = [
        LineError::NoMeasurement,
        LineError::BadTag,
        LineError::BadField,
        LineError::BadValue,
        LineError::BadTimestamp,
        LineError::Trailing,
    ];

    /// Stable snake_case name (metrics label).
    pub const fn name(self) -> &'static str {
        match self {
            LineError::NoMeasurement => "no_measurement",
            LineError::BadTag => "bad_tag",
            LineError::BadField => "bad_field",
            LineError::BadValue => "bad_value",
            LineError::BadTimestamp => "bad_timestamp",
            LineError::Trailing => "trailing",
        }
    }

    /// Index into a counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A field's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A float (no suffix).
    Float(f64),
    /// `123i`.
    Int(i64),
    /// `123u`.
    UInt(u64),
    /// `t`, `true`, `F`, …
    Bool(bool),
    /// A quoted string (not a sample; counted, not aggregated).
    Str,
}

impl Value {
    /// The value as a sample, where it is one (strings are not).
    pub fn number(self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(v),
            Value::Int(v) => Some(v as f64),
            Value::UInt(v) => Some(v as f64),
            Value::Bool(b) => Some(if b { 1.0 } else { 0.0 }),
            Value::Str => None,
        }
    }
}

/// One parsed line, borrowing the input (escapes not yet removed).
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// Measurement name, escaped.
    pub measurement: &'a [u8],
    tags: &'a [u8],
    fields: &'a [u8],
    /// Timestamp as sent (its unit is the sender's precision; nanoseconds by default).
    pub timestamp: Option<i64>,
}

/// Position of the first byte in `b` equal to one of `stops` that is not escaped by `\`.
fn find_unescaped(b: &[u8], stops: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if stops.contains(&c) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// End of the field set: the first unescaped space outside a quoted string.
fn field_set_end(b: &[u8]) -> usize {
    let mut i = 0;
    let mut quoted = false;
    while i < b.len() {
        let c = b[i];
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == b'"' {
            quoted = !quoted;
        } else if c == b' ' && !quoted {
            return i;
        }
        i += 1;
    }
    b.len()
}

/// Parses one line (without its newline; a trailing `\r` is ignored). Comment and blank lines
/// are `Ok(None)`.
pub fn parse_line(line: &[u8]) -> Result<Option<Line<'_>>, LineError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(line.len());
    let line = &line[start..];
    if line.is_empty() || line[0] == b'#' {
        return Ok(None);
    }
    let key_end = find_unescaped(line, b" ").ok_or(LineError::BadField)?;
    let key = &line[..key_end];
    let (measurement, tags) = match find_unescaped(key, b",") {
        Some(p) => (&key[..p], &key[p + 1..]),
        None => (key, &key[key.len()..]),
    };
    if measurement.is_empty() {
        return Err(LineError::NoMeasurement);
    }
    if !tags.is_empty() {
        for t in Pairs(tags) {
            let (k, v) = t.ok_or(LineError::BadTag)?;
            if k.is_empty() || v.is_empty() {
                return Err(LineError::BadTag);
            }
        }
    }
    let rest = &line[key_end + 1..];
    let fend = field_set_end(rest);
    let fields = &rest[..fend];
    if fields.is_empty() {
        return Err(LineError::BadField);
    }
    let mut it = Fields(fields);
    while let Some(f) = it.next_checked() {
        f?;
    }
    let tail = rest.get(fend + 1..).unwrap_or(&[]);
    let tail = tail.strip_suffix(b" ").unwrap_or(tail);
    let timestamp = if tail.is_empty() {
        None
    } else {
        if tail.contains(&b' ') {
            return Err(LineError::Trailing);
        }
        Some(parse_i64(tail).ok_or(LineError::BadTimestamp)?)
    };
    Ok(Some(Line { measurement, tags, fields, timestamp }))
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_value(v: &[u8]) -> Result<Value, LineError> {
    let Some(&last) = v.last() else { return Err(LineError::BadValue) };
    if v[0] == b'"' {
        return if v.len() >= 2 && last == b'"' { Ok(Value::Str) } else { Err(LineError::BadValue) };
    }
    let s = std::str::from_utf8(v).map_err(|_| LineError::BadValue)?;
    match s {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(Value::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let body = &s[..s.len() - 1];
    match last {
        b'i' => body.parse().map(Value::Int).map_err(|_| LineError::BadValue),
        b'u' => body.parse().map(Value::UInt).map_err(|_| LineError::BadValue),
        _ => {
            let x: f64 = s.parse().map_err(|_| LineError::BadValue)?;
            // "inf"/"nan" parse in Rust but are not line protocol floats
            if x.is_finite() {
                Ok(Value::Float(x))
            } else {
                Err(LineError::BadValue)
            }
        }
    }
}

impl<'a> Line<'a> {
    /// The tags, escaped (`None` never occurs on a parsed line).
    pub fn tags(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        Pairs(self.tags).flatten()
    }

    /// The fields (already validated).
    pub fn fields(&self) -> impl Iterator<Item = (&'a [u8], Value)> {
        let mut f = Fields(self.fields);
        std::iter::from_fn(move || f.next_checked().and_then(Result::ok))
    }
}

/// `k=v,k=v` tag pairs; `None` for a pair without `=`.
struct Pairs<'a>(&'a [u8]);

impl<'a> Iterator for Pairs<'a> {
    type Item = Option<(&'a [u8], &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let end = find_unescaped(self.0, b",").unwrap_or(self.0.len());
        let pair = &self.0[..end];
        self.0 = self.0.get(end + 1..).unwrap_or(&[]);
        Some(find_unescaped(pair, b"=").map(|p| (&pair[..p], &pair[p + 1..])))
    }
}

struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn next_checked(&mut self) -> Option<Result<(&'a [u8], Value), LineError>> {
        if self.0.is_empty() {
            return None;
        }
        let b = self.0;
        let Some(eq) = find_unescaped(b, b"=") else {
            self.0 = &[];
            return Some(Err(LineError::BadField));
        };
        let key = &b[..eq];
        // the value ends at the first comma outside quotes
        let mut i = eq + 1;
        let mut quoted = false;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        let i = i.min(b.len());
        let v = &b[eq + 1..i];
        self.0 = b.get(i + 1..).unwrap_or(&[]);
        // a comma must be followed by another field
        if key.is_empty() || (i < b.len() && self.0.is_empty()) {
            self.0 = &[];
            return Some(Err(LineError::BadField));
        }
        Some(parse_value(v).map(|v| (key, v)))
    }
}

/// Appends `b` to `out` with line-protocol escapes (`\,` `\=` `\ ` `\"` `\\`) removed.
pub fn unescape(b: &[u8], out: &mut String) {
    let mut i = 0;
    let mut bytes = Vec::with_capacity(b.len());
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() && matches!(b[i + 1], b',' | b'=' | b' ' | b'"' | b'\\') {
            i += 1;
        }
        bytes.push(b[i]);
        i += 1;
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
}

/// Converts a timestamp in the given precision to milliseconds.
pub fn to_millis(ts: i64, precision: Precision) -> i64 {
    match precision {
        Precision::Ns => ts.div_euclid(1_000_000),
        Precision::Us => ts.div_euclid(1_000),
        Precision::Ms => ts,
        Precision::S => ts.saturating_mul(1000),
    }
}

/// Unit of line-protocol timestamps (a listener setting; `precision=` on HTTP writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Nanoseconds (the protocol's default).
    #[default]
    Ns,
    /// Microseconds.
    Us,
    /// Milliseconds.
    Ms,
    /// Seconds.
    S,
}

impl Precision {
    /// From `ns`, `us`, `ms`, `s` (InfluxDB's names).
    pub fn parse(s: &str) -> Option<Precision> {
        Some(match s {
            "ns" | "n" => Precision::Ns,
            "us" | "u" => Precision::Us,
            "ms" => Precision::Ms,
            "s" => Precision::S,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Parts = (String, Vec<(String, String)>, Vec<(String, Value)>);

    fn names(l: &Line<'_>) -> Parts {
        let mut m = String::new();
        unescape(l.measurement, &mut m);
        let tags = l
            .tags()
            .map(|(k, v)| {
                let (mut a, mut b) = (String::new(), String::new());
                unescape(k, &mut a);
                unescape(v, &mut b);
                (a, b)
            })
            .collect();
        let fields = l
            .fields()
            .map(|(k, v)| {
                let mut a = String::new();
                unescape(k, &mut a);
                (a, v)
            })
            .collect();
        (m, tags, fields)
    }

    #[test]
    fn telegraf_lines_parse() {
        let l = parse_line(b"cpu,cpu=cpu-total,host=web1 usage_idle=97.5,usage_user=1.25 1700000000000000000")
            .unwrap()
            .unwrap();
        let (m, tags, fields) = names(&l);
        assert_eq!(m, "cpu");
        assert_eq!(tags, vec![("cpu".into(), "cpu-total".into()), ("host".into(), "web1".into())]);
        assert_eq!(fields, vec![("usage_idle".into(), Value::Float(97.5)), ("usage_user".into(), Value::Float(1.25))]);
        assert_eq!(l.timestamp, Some(1_700_000_000_000_000_000));
        let l = parse_line(b"mem,host=a available=123i,total=456u,ok=true,note=\"x, y=z\"").unwrap().unwrap();
        let (_, _, f) = names(&l);
        assert_eq!(
            f,
            vec![
                ("available".into(), Value::Int(123)),
                ("total".into(), Value::UInt(456)),
                ("ok".into(), Value::Bool(true)),
                ("note".into(), Value::Str)
            ]
        );
        assert_eq!(l.timestamp, None);
    }

    #[test]
    fn escapes_are_kept_until_rendered() {
        let l = parse_line(br"disk\ io,path=/var\,log,dev\=x=sda free=1").unwrap().unwrap();
        let (m, tags, _) = names(&l);
        assert_eq!(m, "disk io");
        assert_eq!(tags, vec![("path".into(), "/var,log".into()), ("dev=x".into(), "sda".into())]);
    }

    #[test]
    fn comments_and_blank_lines_are_nothing() {
        assert!(parse_line(b"# a comment").unwrap().is_none());
        assert!(parse_line(b"   ").unwrap().is_none());
        assert!(parse_line(b"\r").unwrap().is_none());
    }

    #[test]
    fn malformed_lines_name_their_reason() {
        assert_eq!(parse_line(b",host=a v=1").unwrap_err(), LineError::NoMeasurement);
        assert_eq!(parse_line(b"cpu,host v=1").unwrap_err(), LineError::BadTag);
        assert_eq!(parse_line(b"cpu,host= v=1").unwrap_err(), LineError::BadTag);
        assert_eq!(parse_line(b"cpu").unwrap_err(), LineError::BadField);
        assert_eq!(parse_line(b"cpu v").unwrap_err(), LineError::BadField);
        assert_eq!(parse_line(b"cpu =1").unwrap_err(), LineError::BadField);
        assert_eq!(parse_line(b"cpu v=1,").unwrap_err(), LineError::BadField);
        assert_eq!(parse_line(b"cpu v=1, 12").unwrap_err(), LineError::BadField);
        assert_eq!(parse_line(b"cpu v=abc").unwrap_err(), LineError::BadValue);
        assert_eq!(parse_line(b"cpu v=1x").unwrap_err(), LineError::BadValue);
        assert_eq!(parse_line(b"cpu v=nan").unwrap_err(), LineError::BadValue);
        assert_eq!(parse_line(b"cpu v=\"open").unwrap_err(), LineError::BadValue);
        assert_eq!(parse_line(b"cpu v=1 12x").unwrap_err(), LineError::BadTimestamp);
        assert_eq!(parse_line(b"cpu v=1 12 13").unwrap_err(), LineError::Trailing);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"ab=, \\\"i0.9-#\r\nTt";
        for _ in 0..20_000 {
            let mut b = Vec::new();
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            if let Ok(Some(l)) = parse_line(&b) {
                let _ = l.tags().count() + l.fields().count();
            }
        }
    }

    #[test]
    fn timestamps_convert_to_millis() {
        assert_eq!(to_millis(1_700_000_000_123_456_789, Precision::Ns), 1_700_000_000_123);
        assert_eq!(to_millis(1_700_000_000, Precision::S), 1_700_000_000_000);
        assert_eq!(to_millis(-1, Precision::Ns), -1);
    }
}
