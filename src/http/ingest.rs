//! Host writes over HTTP: `POST /api/v2/write` (InfluxDB line protocol, as Telegraf's
//! `influxdb_v2` output and InfluxDB clients send it; `precision=` in the query, gzip bodies
//! accepted) and `POST /api/v1/write` (Prometheus remote-write 1.0, snappy + protobuf).
//!
//! The HTTP thread owns one [`HostCore`] (the same code the shards run for UDP/TCP input); each
//! request is parsed into it and its window is handed to the I/O loop as one batch, which
//! merges it with the shards'. Bodies are bounded (`hosts.max_body_bytes`, after
//! decompression); a refused request answers 400 with the reason, a good one 204.
//!
//! May depend on: `pipeline`, `decode`, `ops`. Lives on: the I/O core (HTTP thread).

use crate::decode::lineproto::Precision;
use crate::decode::remote_write;
use crate::pipeline::host::{HostBatch, HostCore, HostPathConfig};
use std::io::Read;

/// Hands a batch to the I/O loop; false if its queue was full.
pub type BatchOut = Box<dyn Fn(HostBatch) -> bool + Send>;

/// The HTTP thread's host input.
pub struct HostIngest {
    core: HostCore,
    send: BatchOut,
    max_body: usize,
    /// Batches the I/O queue had no room for (their rows are lost; counted).
    pub handoff_dropped: u64,
}

/// An HTTP answer: status and text.
pub type Answer = (u16, String);

impl HostIngest {
    /// Host input on the HTTP thread (window source id `source`, after the shards').
    pub fn new(cfg: &HostPathConfig, source: u16, max_body: usize, send: BatchOut) -> HostIngest {
        HostIngest { core: HostCore::new(cfg, source), send, max_body, handoff_dropped: 0 }
    }

    /// The counters, as a shard's host status (no connections).
    pub fn status(&self) -> crate::ops::HostStatus {
        crate::ops::HostStatus {
            input: self.core.counters.clone(),
            window: self.core.window.counters.clone(),
            series: self.core.window.known(),
            handoff_dropped: self.handoff_dropped,
            ..Default::default()
        }
    }

    /// Reads a body of at most `max_body` bytes (gunzipping when `gzip`).
    fn body(&self, r: &mut dyn Read, gzip: bool) -> Result<Vec<u8>, Answer> {
        let mut raw = Vec::new();
        let lim = self.max_body as u64 + 1;
        let n = if gzip {
            flate2::read::GzDecoder::new(r).take(lim).read_to_end(&mut raw)
        } else {
            r.take(lim).read_to_end(&mut raw)
        };
        match n {
            Err(e) => Err((400, format!("cannot read the body: {e}\n"))),
            Ok(n) if n > self.max_body => {
                Err((413, format!("body above {} bytes (hosts.max_body_bytes)\n", self.max_body)))
            }
            Ok(_) => Ok(raw),
        }
    }

    fn hand_off(&mut self, now: u64) {
        let b = self.core.close(now);
        if !(self.send)(b) {
            self.handoff_dropped += 1;
        }
    }

    /// `POST /api/v2/write?precision=…` with `body`; `peer` names hosts that send no `host` tag.
    pub fn line_protocol(&mut self, query: &str, r: &mut dyn Read, gzip: bool, peer: &str, now: u64) -> Answer {
        let mut precision = Precision::Ns;
        for kv in query.split('&') {
            if let Some(p) = kv.strip_prefix("precision=") {
                match Precision::parse(p) {
                    Some(x) => precision = x,
                    None => return (400, format!("precision={p:?} is not one of ns, us, ms, s\n")),
                }
            }
        }
        let body = match self.body(r, gzip) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let before = self.core.counters.line_errors;
        self.core.lines(&body, precision, peer.as_bytes(), now);
        self.hand_off(now);
        let after = self.core.counters.line_errors;
        let refused: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
        if refused > 0 {
            let (i, _) = after.iter().zip(before).enumerate().find(|(_, (a, b))| *a > b).unwrap_or((0, (&0, 0)));
            let reason = crate::decode::lineproto::LineError::ALL[i];
            return (
                400,
                format!("partial write: {refused} line(s) refused (first reason: {reason}); the other lines were accepted\n"),
            );
        }
        (204, String::new())
    }

    /// `POST /api/v1/write` (remote-write).
    pub fn remote_write(&mut self, r: &mut dyn Read, peer: &str, now: u64) -> Answer {
        let body = match self.body(r, false) {
            Ok(b) => b,
            Err(a) => return a,
        };
        let req = match remote_write::decode(&body, self.max_body) {
            Ok(x) => x,
            Err(e) => {
                self.core.counters.remote_write_errors += 1;
                return (400, format!("{e}\n"));
            }
        };
        let mut labels: Vec<(&[u8], &[u8])> = Vec::new();
        for ts in &req.timeseries {
            labels.clear();
            labels.extend(ts.labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes())));
            for s in &ts.samples {
                self.core.sample(&labels, s.value, s.timestamp, peer.as_bytes(), now);
            }
        }
        self.hand_off(now);
        (204, String::new())
    }
}
