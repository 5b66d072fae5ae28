//! The payload of a spool frame: one second of records for one remote sink, already rendered
//! (key and JSON value), so that delivery after an outage or a restart sends exactly what would
//! have been sent at the time.
//!
//! Encoding: `[u32 count]` then per record `[u8 kind][u64 second][u16 key len][key][u32 value
//! len][value]`, little endian. Values are JSON text, except raw-flow batches (protobuf bytes).
//! Decoding is bounds-checked and never panics.
//!
//! Lives on: I/O cores.

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A rollup.
    Rollup = 0,
    /// An alert.
    Alert = 1,
    /// An incident event (open, update, resolve).
    Incident = 2,
    /// A layer-3 anomaly result (the anomaly-detection plugin's result schema).
    AnomalyResult = 3,
    /// A batch of raw flow records (protobuf `FlowBatch`, [`super::flows`]).
    Flows = 4,
    /// A host row (metric series or syslog counts of one second).
    Host = 5,
}

/// One record of a frame, borrowed from the frame's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Rollup or alert.
    pub kind: Kind,
    /// Its second (Unix).
    pub second: u64,
    /// Kafka message key or OpenSearch document id.
    pub key: &'a str,
    /// JSON document (protobuf bytes for [`Kind::Flows`]).
    pub value: &'a [u8],
}

/// A frame that does not decode (should not happen: frames are CRC-checked).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spool frame is malformed at byte {0}")]
pub struct Malformed(pub usize);

/// Builds a frame.
#[derive(Debug, Default)]
pub struct FrameBuilder {
    buf: Vec<u8>,
    count: u32,
}

impl FrameBuilder {
    /// An empty frame.
    pub fn new() -> Self {
        FrameBuilder { buf: vec![0; 4], count: 0 }
    }

    /// Appends a record. Keys longer than 65,535 bytes are cut (keys are short by construction).
    pub fn push(&mut self, kind: Kind, second: u64, key: &str, value: &str) {
        self.push_bytes(kind, second, key, value.as_bytes());
    }

    /// Appends a record whose value is bytes (protobuf).
    pub fn push_bytes(&mut self, kind: Kind, second: u64, key: &str, value: &[u8]) {
        let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
        self.buf.push(kind as u8);
        self.buf.extend_from_slice(&second.to_le_bytes());
        self.buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
    }

    /// Records so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Encoded size so far, in bytes.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded frame.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[..4].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Decodes a frame.
pub fn decode(b: &[u8]) -> Result<Vec<Record<'_>>, Malformed> {
    let mut p = 0usize;
    let take = |p: &mut usize, n: usize| -> Result<&[u8], Malformed> {
        let s = b.get(*p..*p + n).ok_or(Malformed(*p))?;
        *p += n;
        Ok(s)
    };
    let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| Malformed(0))?) as usize;
    let mut out = Vec::with_capacity(n.min(b.len() / 16));
    for _ in 0..n {
        let kind = match take(&mut p, 1)?[0] {
            0 => Kind::Rollup,
            1 => Kind::Alert,
            2 => Kind::Incident,
            3 => Kind::AnomalyResult,
            4 => Kind::Flows,
            5 => Kind::Host,
            _ => return Err(Malformed(p - 1)),
        };
        let second = u64::from_le_bytes(take(&mut p, 8)?.try_into().map_err(|_| Malformed(p))?);
        let kl = u16::from_le_bytes(take(&mut p, 2)?.try_into().map_err(|_| Malformed(p))?) as usize;
        let key = std::str::from_utf8(take(&mut p, kl)?).map_err(|_| Malformed(p))?;
        let vl = u32::from_le_bytes(take(&mut p, 4)?.try_into().map_err(|_| Malformed(p))?) as usize;
        let value = take(&mut p, vl)?;
        out.push(Record { kind, second, key, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut f = FrameBuilder::new();
        f.push(Kind::Rollup, 7, "dst_ip:192.0.2.1", "{\"bytes\":1}");
        f.push(Kind::Alert, 8, "a", "{}");
        let b = f.finish();
        let r = decode(&b).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].key, "dst_ip:192.0.2.1");
        assert_eq!(r[1].kind, Kind::Alert);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }
}
