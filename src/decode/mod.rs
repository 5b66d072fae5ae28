//! Sans-I/O flow decoders: NetFlow v5, NetFlow v9, IPFIX and sFlow v5 into fixed-size
//! [`FlowRecord`]s.
//!
//! * The protocol is sniffed from the first bytes ([`sniff`]), so any listener takes any
//!   protocol.
//! * All wire reads go through [`cursor::Cursor`]; malformed input becomes a [`DecodeError`]
//!   and a counter in [`DecodeCounters`], never a panic.
//! * No allocation per record: records are handed to a [`FlowSink`] by reference. Templates are
//!   allocated once when they are learned.
//! * Template state ([`templates::TemplateStore`]) is passed in by the owner of the decoder; the
//!   decoder knows nothing about sockets, shards or clocks (time is a parameter).
//!
//! May depend on: `model`. Lives on: shard cores (and replay, tests, fuzzers, benches).

pub mod cursor;
pub mod ipfix;
pub mod json_metrics;
pub mod lineproto;
pub mod netflow_v5;
pub mod netflow_v9;
pub mod packet;
pub mod remote_write;
pub mod sflow;
pub mod syslog;
pub mod templates;

use crate::model::{FlowRecord, Ip, Protocol};
use cursor::Truncated;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use templates::TemplateStore;

/// Receives decoded records (and sFlow interface counters). Implemented by the aggregator.
pub trait FlowSink {
    /// One decoded flow record.
    fn flow(&mut self, r: &FlowRecord);
    /// One sFlow generic interface counter record.
    fn counters(&mut self, _c: &InterfaceCounters) {}
}

impl<F: FnMut(&FlowRecord)> FlowSink for F {
    fn flow(&mut self, r: &FlowRecord) {
        self(r)
    }
}

/// sFlow generic interface counters (counter sample record format 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// sFlow agent address.
    pub agent: Ip,
    /// ifIndex.
    pub if_index: u32,
    /// ifSpeed, bits/s.
    pub if_speed: u64,
    /// ifOperStatus/ifAdminStatus bits.
    pub if_status: u32,
    /// ifInOctets.
    pub in_octets: u64,
    /// ifOutOctets.
    pub out_octets: u64,
    /// ifInDiscards + ifInErrors.
    pub in_errors: u64,
    /// ifOutDiscards + ifOutErrors.
    pub out_errors: u64,
}

/// Why a datagram (or part of it) could not be decoded: a closed set, used as counter label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// A read ran past the end of the datagram or of a set/sample.
    Truncated,
    /// The header names a version no decoder handles.
    UnknownVersion,
    /// A header or set/sample length field is inconsistent with the datagram.
    BadLength,
    /// A count field promises more items than the bytes can hold.
    HostileCount,
    /// A template is malformed (no fields, too many fields, zero-length records).
    BadTemplate,
    /// A data set referred to a template this exporter has not sent (or that expired).
    TemplateMissing,
    /// The template cache is full; the template was refused.
    TemplateLimit,
    /// An sFlow sample or record is malformed or of an unsupported address type.
    BadSample,
}

impl ErrorReason {
    /// All reasons, in counter order.
    pub const ALL: [ErrorReason; 8] = [
        ErrorReason::Truncated,
        ErrorReason::UnknownVersion,
        ErrorReason::BadLength,
        ErrorReason::HostileCount,
        ErrorReason::BadTemplate,
        ErrorReason::TemplateMissing,
        ErrorReason::TemplateLimit,
        ErrorReason::BadSample,
    ];
    /// Stable label.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorReason::Truncated => "truncated",
            ErrorReason::UnknownVersion => "unknown_version",
            ErrorReason::BadLength => "bad_length",
            ErrorReason::HostileCount => "hostile_count",
            ErrorReason::BadTemplate => "bad_template",
            ErrorReason::TemplateMissing => "template_missing",
            ErrorReason::TemplateLimit => "template_limit",
            ErrorReason::BadSample => "bad_sample",
        }
    }
    /// Index into counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A decode failure, with the protocol context an operator needs to find the exporter's fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Ran past the end of the data.
    #[error("{proto:?}: truncated {what}: needed {needed} bytes, {remaining} left")]
    Truncated {
        /// Protocol.
        proto: Option<Protocol>,
        /// Which structure.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes left.
        remaining: usize,
    },
    /// Not NetFlow v5/v9, IPFIX or sFlow v5.
    #[error("unknown flow protocol version {version} (expected NetFlow 5/9, IPFIX 10 or sFlow 5)")]
    UnknownVersion {
        /// The version-like value found.
        version: u32,
    },
    /// A length field disagrees with the data.
    #[error("{proto:?}: bad {what} length {value}")]
    BadLength {
        /// Protocol.
        proto: Protocol,
        /// Which field.
        what: &'static str,
        /// Its value.
        value: usize,
    },
    /// A count field promises more than the bytes can hold.
    #[error("{proto:?}: {what} count {count} cannot fit in {remaining} bytes")]
    HostileCount {
        /// Protocol.
        proto: Protocol,
        /// Which count.
        what: &'static str,
        /// Its value.
        count: u32,
        /// Bytes left.
        remaining: usize,
    },
    /// A malformed template.
    #[error("{proto:?}: bad template {template} from {exporter} domain {domain}: {why}")]
    BadTemplate {
        /// Protocol.
        proto: Protocol,
        /// Exporter.
        exporter: Ip,
        /// Source id / observation domain.
        domain: u32,
        /// Template id.
        template: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// The template cache is full.
    #[error("template cache full ({limit} templates): refused template {template} from {exporter} domain {domain}")]
    TemplateLimit {
        /// Exporter.
        exporter: Ip,
        /// Domain.
        domain: u32,
        /// Template id.
        template: u16,
        /// Configured limit.
        limit: usize,
    },
    /// A malformed sFlow sample.
    #[error("sflow: bad sample from agent {agent}: {why}")]
    BadSample {
        /// Agent address.
        agent: Ip,
        /// What is wrong.
        why: &'static str,
    },
}

impl DecodeError {
    /// The counter label of this error.
    pub fn reason(&self) -> ErrorReason {
        match self {
            DecodeError::Truncated { .. } => ErrorReason::Truncated,
            DecodeError::UnknownVersion { .. } => ErrorReason::UnknownVersion,
            DecodeError::BadLength { .. } => ErrorReason::BadLength,
            DecodeError::HostileCount { .. } => ErrorReason::HostileCount,
            DecodeError::BadTemplate { .. } => ErrorReason::BadTemplate,
            DecodeError::TemplateLimit { .. } => ErrorReason::TemplateLimit,
            DecodeError::BadSample { .. } => ErrorReason::BadSample,
        }
    }

    pub(crate) fn truncated(proto: Protocol, what: &'static str) -> impl Fn(Truncated) -> DecodeError {
        move |t| DecodeError::Truncated { proto: Some(proto), what, needed: t.needed, remaining: t.remaining }
    }
}

/// Plain per-decoder counters (one decoder per shard; snapshotted off the hot path).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeCounters {
    /// Datagrams by protocol (index [`Protocol::index`]).
    pub datagrams: [u64; 4],
    /// Records by protocol.
    pub records: [u64; 4],
    /// Errors by reason (index [`ErrorReason::index`]).
    pub errors: [u64; 8],
    /// Datagrams not recognised as any protocol.
    pub unknown_datagrams: u64,
    /// Templates learned or replaced.
    pub templates_learned: u64,
    /// Templates withdrawn by the exporter.
    pub templates_withdrawn: u64,
    /// Templates expired by timeout.
    pub templates_expired: u64,
    /// Options records that set a sampling rate.
    pub sampling_updates: u64,
    /// sFlow counter records decoded.
    pub counter_records: u64,
}

impl DecodeCounters {
    /// Total decode errors.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
    /// Adds another counter set (for totals across shards).
    pub fn add(&mut self, o: &DecodeCounters) {
        for i in 0..4 {
            self.datagrams[i] += o.datagrams[i];
            self.records[i] += o.records[i];
        }
        for i in 0..self.errors.len() {
            self.errors[i] += o.errors[i];
        }
        self.unknown_datagrams += o.unknown_datagrams;
        self.templates_learned += o.templates_learned;
        self.templates_withdrawn += o.templates_withdrawn;
        self.templates_expired += o.templates_expired;
        self.sampling_updates += o.sampling_updates;
        self.counter_records += o.counter_records;
    }
}

/// Recognises the protocol from the first bytes of a datagram.
#[inline]
pub fn sniff(data: &[u8]) -> Option<Protocol> {
    match data {
        [0, 5, ..] => Some(Protocol::NetflowV5),
        [0, 9, ..] => Some(Protocol::NetflowV9),
        [0, 10, ..] => Some(Protocol::Ipfix),
        [0, 0, 0, 5, ..] => Some(Protocol::Sflow5),
        _ => None,
    }
}

/// Decoder settings: the `[decode]` section of the configuration file (serde defaults are
/// [`DecoderConfig::default`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderConfig {
    /// NetFlow v9/IPFIX templates cached per shard; more are refused and counted.
    pub max_templates: usize,
    /// A template not refreshed for this long expires, seconds.
    pub template_timeout_s: u64,
    /// Sampling rates forced per exporter (overrides what the exporter announces).
    pub sampling_override: Vec<SamplingOverride>,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig { max_templates: 8192, template_timeout_s: 3600, sampling_override: Vec::new() }
    }
}

/// A forced sampling rate for one exporter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingOverride {
    /// Exporter address (NetFlow/IPFIX source, sFlow agent); checked by `validate()`.
    pub exporter: String,
    /// 1-in-N rate.
    pub rate: u32,
}

/// One decoder: the template store, sampling state, overrides and counters of one shard.
///
/// Lives on: one shard core (never shared).
pub struct Decoder {
    /// Templates and options-derived sampling rates.
    pub templates: TemplateStore,
    /// Counters.
    pub counters: DecodeCounters,
    overrides: FxHashMap<Ip, u32>,
}

/// What one successful `decode` call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Protocol sniffed.
    pub protocol: Protocol,
    /// Records handed to the sink.
    pub records: u32,
}

impl Decoder {
    /// A decoder with empty template state.
    pub fn new(cfg: &DecoderConfig) -> Decoder {
        Decoder {
            templates: TemplateStore::new(cfg.max_templates, cfg.template_timeout_s),
            counters: DecodeCounters::default(),
            overrides: cfg
                .sampling_override
                .iter()
                .filter_map(|o| o.exporter.parse::<std::net::IpAddr>().ok().map(|a| (Ip::from(a), o.rate)))
                .collect(),
        }
    }

    /// The configured sampling override for an exporter, if any.
    #[inline]
    pub fn sampling_override(&self, exporter: Ip) -> Option<u32> {
        if self.overrides.is_empty() {
            None
        } else {
            self.overrides.get(&exporter).copied()
        }
    }

    /// Decodes one datagram from `source` received at Unix second `now`, handing each record to
    /// `sink`. Counters are updated here, errors included.
    pub fn decode<S: FlowSink>(
        &mut self,
        data: &[u8],
        source: Ip,
        now: u64,
        sink: &mut S,
    ) -> Result<Decoded, DecodeError> {
        let Some(protocol) = sniff(data) else {
            self.counters.unknown_datagrams += 1;
            self.counters.errors[ErrorReason::UnknownVersion.index()] += 1;
            let version = data.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            return Err(DecodeError::UnknownVersion { version });
        };
        self.counters.datagrams[protocol.index()] += 1;
        let mut ctx = Ctx { dec: self, sink, records: 0, learn_only: false };
        let res = match protocol {
            Protocol::NetflowV5 => netflow_v5::decode(data, source, &mut ctx),
            Protocol::NetflowV9 => netflow_v9::decode(data, source, now, &mut ctx),
            Protocol::Ipfix => ipfix::decode(data, source, now, &mut ctx),
            Protocol::Sflow5 => sflow::decode(data, &mut ctx),
        };
        let records = ctx.records;
        self.counters.records[protocol.index()] += records as u64;
        match res {
            Ok(()) => Ok(Decoded { protocol, records }),
            Err(e) => {
                self.counters.errors[e.reason().index()] += 1;
                Err(e)
            }
        }
    }

    /// Applies the state a NetFlow v9 / IPFIX datagram carries — its templates, withdrawals
    /// and options data (sampling rates) — without decoding its flow records and without
    /// touching any counter: the shard that received the datagram decoded and counted it, and
    /// hands this copy on so that every shard decodes the exporter's later data alike.
    pub fn learn(&mut self, data: &[u8], source: Ip, now: u64) {
        let saved = self.counters.clone();
        let mut none = |_: &FlowRecord| {};
        let mut ctx = Ctx { dec: self, sink: &mut none, records: 0, learn_only: true };
        let _ = match sniff(data) {
            Some(Protocol::NetflowV9) => netflow_v9::decode(data, source, now, &mut ctx),
            Some(Protocol::Ipfix) => ipfix::decode(data, source, now, &mut ctx),
            _ => Ok(()),
        };
        self.counters = saved;
    }

    /// Whether a datagram carries state that every shard decoding this exporter needs: a
    /// NetFlow v9 / IPFIX template or options-template set, or a data set of an options
    /// template (sampling). One pass over the set headers, one template lookup per data set.
    pub fn carries_state(&self, data: &[u8], source: Ip) -> bool {
        let (family, header, domain_at) = match sniff(data) {
            Some(Protocol::NetflowV9) => (templates::Family::V9, netflow_v9::HEADER_LEN, 16),
            Some(Protocol::Ipfix) => (templates::Family::Ipfix, ipfix::HEADER_LEN, 12),
            _ => return false,
        };
        let Some(d) = data.get(domain_at..domain_at + 4) else { return false };
        let domain = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let end = match family {
            // the IPFIX message length bounds the sets
            templates::Family::Ipfix => usize::from(u16::from_be_bytes([data[2], data[3]])).min(data.len()),
            templates::Family::V9 => data.len(),
        };
        let mut at = header;
        while at + 4 <= end {
            let id = u16::from_be_bytes([data[at], data[at + 1]]);
            let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
            if id < 256 {
                if matches!((family, id), (templates::Family::V9, 0 | 1) | (templates::Family::Ipfix, 2 | 3)) {
                    return true;
                }
            } else if self.templates.is_options(&templates::TemplateKey { exporter: source, domain, id, family }) {
                return true;
            }
            if len < 4 {
                break;
            }
            at += len;
        }
        false
    }
}

/// What the protocol modules see: the decoder state and the sink, with the record count.
pub(crate) struct Ctx<'a, S: FlowSink> {
    pub(crate) dec: &'a mut Decoder,
    pub(crate) sink: &'a mut S,
    pub(crate) records: u32,
    /// Apply templates and options data (sampling) only: flow data sets are skipped.
    pub(crate) learn_only: bool,
}

impl<S: FlowSink> Ctx<'_, S> {
    /// Applies the sampling rate (override first) and emits the record.
    #[inline]
    pub(crate) fn emit(&mut self, mut r: FlowRecord, rate_from_exporter: u32) {
        let rate = self.dec.sampling_override(r.exporter).unwrap_or(rate_from_exporter).max(1);
        if rate > 1 {
            r.bytes = r.bytes.saturating_mul(rate as u64);
            r.packets = r.packets.saturating_mul(rate as u64);
        }
        r.sampling_rate = rate;
        self.records += 1;
        self.sink.flow(&r);
    }

    /// Counts a non-fatal problem (e.g. one data set without template) and goes on.
    #[inline]
    pub(crate) fn count(&mut self, reason: ErrorReason) {
        self.dec.counters.errors[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_protocol() {
        assert_eq!(sniff(&[0, 5, 0, 1]), Some(Protocol::NetflowV5));
        assert_eq!(sniff(&[0, 9, 0, 1]), Some(Protocol::NetflowV9));
        assert_eq!(sniff(&[0, 10, 0, 1]), Some(Protocol::Ipfix));
        assert_eq!(sniff(&[0, 0, 0, 5, 0, 0, 0, 1]), Some(Protocol::Sflow5));
        assert_eq!(sniff(&[0, 0, 0, 4]), None);
        assert_eq!(sniff(&[]), None);
    }

    #[test]
    fn unknown_is_counted_not_panicking() {
        let mut d = Decoder::new(&DecoderConfig::default());
        let mut n = 0;
        let mut sink = |_: &FlowRecord| n += 1;
        assert!(d.decode(&[1, 2, 3], Ip::UNSPECIFIED, 0, &mut sink).is_err());
        assert_eq!(d.counters.unknown_datagrams, 1);
        assert_eq!(n, 0);
    }
}
