//! The JSON-lines sink: rollups, alerts and incident events, one object per line, to standard output or a file
//! (appended). Also what `flowshard replay` writes.
//!
//! May depend on: `model`, `pipeline`, `alert`. Lives on: I/O cores (and the tools).

use super::{format, Sink, SinkError};
use crate::alert::{AlertDoc, IncidentEvent};
use crate::pipeline::SecondOutput;
use std::io::Write;
use std::path::Path;

/// JSON lines to stdout or a file.
pub struct JsonLines {
    name: &'static str,
    out: Box<dyn Write + Send>,
    appliance: String,
    rollups: bool,
    alerts: bool,
    buf: String,
}

impl JsonLines {
    /// A JSON-lines sink over `out`.
    pub fn new(
        name: &'static str,
        out: Box<dyn Write + Send>,
        appliance: &str,
        rollups: bool,
        alerts: bool,
    ) -> JsonLines {
        JsonLines { name, out, appliance: appliance.to_string(), rollups, alerts, buf: String::with_capacity(1 << 16) }
    }

    /// Buffered standard output.
    pub fn stdout(appliance: &str, rollups: bool, alerts: bool) -> JsonLines {
        let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()));
        JsonLines::new("stdout", out, appliance, rollups, alerts)
    }

    /// A file, opened for appending (created when missing).
    pub fn file(path: &Path, appliance: &str, rollups: bool, alerts: bool) -> Result<JsonLines, SinkError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| SinkError::Io { sink: "file", source })?;
        let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, f));
        Ok(JsonLines::new("file", out, appliance, rollups, alerts))
    }

    /// Writes already rendered documents, one a line.
    fn write_docs(&mut self, docs: &[super::Doc]) -> Result<(), SinkError> {
        if docs.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for d in docs {
            self.buf.push_str(&d.json);
            self.buf.push('\n');
        }
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }

    fn push_alerts(&mut self, alerts: &[AlertDoc]) {
        for a in alerts {
            a.write_json(&mut self.buf, &self.appliance);
            self.buf.push('\n');
        }
    }
}

impl Sink for JsonLines {
    fn name(&self) -> &'static str {
        self.name
    }
    fn write(&mut self, so: &SecondOutput, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        self.buf.clear();
        if self.rollups {
            for r in &so.rollups {
                format::rollup(&mut self.buf, &self.appliance, r);
                self.buf.push('\n');
            }
        }
        if self.alerts {
            self.push_alerts(alerts);
        }
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }
    fn write_alerts(&mut self, alerts: &[AlertDoc]) -> Result<(), SinkError> {
        if !self.alerts || alerts.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        self.push_alerts(alerts);
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }
    fn write_incidents(&mut self, events: &[IncidentEvent]) -> Result<(), SinkError> {
        if !self.alerts || events.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        for e in events {
            e.write_json(&mut self.buf, &self.appliance);
            self.buf.push('\n');
        }
        self.out.write_all(self.buf.as_bytes()).map_err(|source| SinkError::Io { sink: self.name, source })
    }
    fn write_results(&mut self, docs: &[super::Doc]) -> Result<(), SinkError> {
        if !self.alerts {
            return Ok(());
        }
        self.write_docs(docs)
    }
    fn write_hosts(&mut self, docs: &[super::Doc]) -> Result<(), SinkError> {
        if !self.rollups {
            return Ok(());
        }
        self.write_docs(docs)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Io { sink: self.name, source })
    }
}
