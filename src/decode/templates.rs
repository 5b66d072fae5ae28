//! NetFlow v9 / IPFIX template cache and the shared data-record decoder.
//!
//! Templates are scoped by (exporter address, source id / observation domain, template id,
//! family) and compiled once into a list of field actions, so decoding a data record is one pass
//! over its fields with no lookups and no allocation. Options templates feed a sampling table
//! (per exporter and domain, and per sampler id) that scales later data records.
//!
//! Bounded: at most `max_templates` entries (more are refused and counted); a template not
//! refreshed within `timeout_s` expires. The cache is snapshotted ([`TemplateStore::snapshot`])
//! to the state directory and restored at start, so data that arrives after a restart but
//! before the next template refresh still decodes.
//!
//! Lives on: shard cores (one store per shard; never shared).

use super::cursor::{be_uint, Cursor, Truncated};
use super::{Ctx, DecodeError, ErrorReason, FlowSink};
use crate::model::{FlowRecord, Ip, Protocol};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::rc::Rc;

/// Length value that marks an IPFIX variable-length field.
pub const VARLEN: u16 = 0xffff;
/// Most fields a template may have (more is hostile).
pub const MAX_FIELDS: usize = 512;
/// Sampler id used for the exporter/domain-wide sampling rate.
const ANY_SAMPLER: u32 = u32::MAX;

/// Which protocol family a template belongs to (ids may collide between v9 and IPFIX).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// NetFlow v9.
    V9,
    /// IPFIX.
    Ipfix,
}

impl Family {
    fn proto(self) -> Protocol {
        match self {
            Family::V9 => Protocol::NetflowV9,
            Family::Ipfix => Protocol::Ipfix,
        }
    }
}

/// The scope of a template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// Exporter address.
    pub exporter: Ip,
    /// Source id (v9) or observation domain (IPFIX).
    pub domain: u32,
    /// Template id.
    pub id: u16,
    /// Protocol family.
    pub family: Family,
}

/// A field as the exporter described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawField {
    /// Information element id (enterprise bit cleared).
    pub id: u16,
    /// Enterprise number (0 = IANA).
    pub enterprise: u32,
    /// Length in bytes, or [`VARLEN`].
    pub len: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Skip,
    InBytes,
    InPackets,
    OutBytes,
    OutPackets,
    TotalBytes,
    TotalPackets,
    Proto,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    InIf,
    OutIf,
    SrcAs,
    DstAs,
    StartUptime,
    EndUptime,
    StartSec,
    EndSec,
    StartMs,
    EndMs,
    StartNtp,
    EndNtp,
    StartDeltaUs,
    EndDeltaUs,
    SamplingInterval,
    SamplerId,
    PacketInterval,
    PacketSpace,
    IcmpTypeCode,
}

fn kind_of(f: &RawField) -> Kind {
    if f.enterprise != 0 {
        return Kind::Skip;
    }
    let fixed = f.len != VARLEN;
    match (f.id, f.len) {
        (1, _) if fixed => Kind::InBytes,
        (2, _) if fixed => Kind::InPackets,
        (23, _) if fixed => Kind::OutBytes,
        (24, _) if fixed => Kind::OutPackets,
        (85, _) if fixed => Kind::TotalBytes,
        (86, _) if fixed => Kind::TotalPackets,
        (4, 1) => Kind::Proto,
        (5, 1) => Kind::Tos,
        (6, 1..=2) => Kind::TcpFlags,
        (7, 2) => Kind::SrcPort,
        (11, 2) => Kind::DstPort,
        (8, 4) => Kind::SrcV4,
        (12, 4) => Kind::DstV4,
        (27, 16) => Kind::SrcV6,
        (28, 16) => Kind::DstV6,
        (10, 1..=4) => Kind::InIf,
        (14, 1..=4) => Kind::OutIf,
        (16, 1..=4) => Kind::SrcAs,
        (17, 1..=4) => Kind::DstAs,
        (22, 4) => Kind::StartUptime,
        (21, 4) => Kind::EndUptime,
        (150, 4) => Kind::StartSec,
        (151, 4) => Kind::EndSec,
        (152, 8) => Kind::StartMs,
        (153, 8) => Kind::EndMs,
        (154, 8) | (156, 8) => Kind::StartNtp,
        (155, 8) | (157, 8) => Kind::EndNtp,
        (158, 4) => Kind::StartDeltaUs,
        (159, 4) => Kind::EndDeltaUs,
        (34, 1..=4) | (50, 1..=4) => Kind::SamplingInterval,
        (48, 1..=4) | (302, 1..=8) => Kind::SamplerId,
        (305, 1..=4) => Kind::PacketInterval,
        (306, 1..=4) => Kind::PacketSpace,
        (32, 2) | (139, 2) => Kind::IcmpTypeCode,
        _ => Kind::Skip,
    }
}

#[derive(Clone, Copy, Debug)]
struct Field {
    kind: Kind,
    len: u16,
}

/// A compiled template.
#[derive(Debug)]
pub struct Template {
    fields: Box<[Field]>,
    raw: Box<[RawField]>,
    scope_fields: u16,
    options: bool,
    /// Smallest possible record (variable-length fields count 1 byte).
    min_len: usize,
    refreshed: u64,
}

impl Template {
    fn compile(raw: &[RawField], scope_fields: u16, options: bool, now: u64) -> Option<Template> {
        let min_len: usize = raw.iter().map(|f| if f.len == VARLEN { 1 } else { f.len as usize }).sum();
        if raw.is_empty() || raw.len() > MAX_FIELDS || min_len == 0 {
            return None;
        }
        let fields = raw
            .iter()
            .enumerate()
            .map(|(i, f)| Field {
                // scope fields of options templates are not flow fields
                kind: if options && i < scope_fields as usize { Kind::Skip } else { kind_of(f) },
                len: f.len,
            })
            .collect();
        Some(Template { fields, raw: raw.into(), scope_fields, options, min_len, refreshed: now })
    }

    /// Number of fields.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }
    /// Whether this is an options template.
    pub fn is_options(&self) -> bool {
        self.options
    }
}

/// A template as written to the state directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PersistedTemplate {
    /// Exporter address.
    pub exporter: std::net::IpAddr,
    /// Source id / observation domain.
    pub domain: u32,
    /// Template id.
    pub id: u16,
    /// Family.
    pub family: Family,
    /// Options template?
    pub options: bool,
    /// Scope field count (options templates).
    pub scope_fields: u16,
    /// Fields.
    pub fields: Vec<RawField>,
    /// Last refresh, Unix seconds.
    pub refreshed: u64,
}

/// A sampling rate learned from options data, as persisted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PersistedSampling {
    /// Exporter address.
    pub exporter: std::net::IpAddr,
    /// Domain.
    pub domain: u32,
    /// Sampler id (`4294967295` = domain-wide).
    pub sampler: u32,
    /// Rate (1 in N).
    pub rate: u32,
}

/// Everything the template cache persists.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Templates.
    pub templates: Vec<PersistedTemplate>,
    /// Sampling rates.
    pub sampling: Vec<PersistedSampling>,
}

/// The bounded template and sampling cache of one shard.
pub struct TemplateStore {
    map: FxHashMap<TemplateKey, Rc<Template>>,
    sampling: FxHashMap<(Ip, u32, u32), u32>,
    max: usize,
    timeout_s: u64,
    dirty: bool,
    scratch: Vec<RawField>,
}

impl TemplateStore {
    /// An empty cache.
    pub fn new(max: usize, timeout_s: u64) -> TemplateStore {
        TemplateStore {
            map: FxHashMap::default(),
            sampling: FxHashMap::default(),
            max,
            timeout_s,
            dirty: false,
            scratch: Vec::with_capacity(MAX_FIELDS),
        }
    }

    /// Templates cached.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether no template is cached.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// Whether the cache changed since the last [`TemplateStore::take_dirty`].
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Looks a template up, expiring it if it is too old.
    fn get(&mut self, key: &TemplateKey, now: u64, expired: &mut u64) -> Option<Rc<Template>> {
        let t = self.map.get(key)?;
        if now > t.refreshed.saturating_add(self.timeout_s) {
            self.map.remove(key);
            *expired += 1;
            self.dirty = true;
            return None;
        }
        Some(Rc::clone(t))
    }

    /// Drops every template older than the timeout; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let timeout = self.timeout_s;
        self.map.retain(|_, t| now <= t.refreshed.saturating_add(timeout));
        let n = before - self.map.len();
        if n > 0 {
            self.dirty = true;
        }
        n
    }

    fn learn(&mut self, key: TemplateKey, scope_fields: u16, options: bool, now: u64) -> Result<bool, DecodeError> {
        if let Some(old) = self.map.get_mut(&key) {
            if *old.raw == *self.scratch && old.options == options && old.scope_fields == scope_fields {
                if let Some(t) = Rc::get_mut(old) {
                    t.refreshed = now;
                } else {
                    let fresh = Template::compile(&self.scratch, scope_fields, options, now);
                    if let Some(f) = fresh {
                        *old = Rc::new(f);
                    }
                }
                return Ok(false);
            }
        } else if self.map.len() >= self.max {
            return Err(DecodeError::TemplateLimit {
                exporter: key.exporter,
                domain: key.domain,
                template: key.id,
                limit: self.max,
            });
        }
        let t = Template::compile(&self.scratch, scope_fields, options, now).ok_or(DecodeError::BadTemplate {
            proto: key.family.proto(),
            exporter: key.exporter,
            domain: key.domain,
            template: key.id,
            why: "no fields, too many fields, or zero-length records",
        })?;
        self.map.insert(key, Rc::new(t));
        self.dirty = true;
        Ok(true)
    }

    fn withdraw(&mut self, key: &TemplateKey) -> bool {
        let removed = self.map.remove(key).is_some();
        self.dirty |= removed;
        removed
    }

    fn withdraw_all(&mut self, exporter: Ip, domain: u32, family: Family, options: bool) -> usize {
        let before = self.map.len();
        self.map.retain(|k, t| {
            !(k.exporter == exporter && k.domain == domain && k.family == family && t.options == options)
        });
        let n = before - self.map.len();
        self.dirty |= n > 0;
        n
    }

    fn set_sampling(&mut self, exporter: Ip, domain: u32, sampler: u32, rate: u32) {
        if rate == 0 {
            return;
        }
        if self.sampling.len() >= self.max && !self.sampling.contains_key(&(exporter, domain, sampler)) {
            return;
        }
        if self.sampling.insert((exporter, domain, sampler), rate) != Some(rate) {
            self.dirty = true;
        }
    }

    /// The sampling rate an exporter announced through options data (domain-wide).
    pub fn sampling(&self, exporter: Ip, domain: u32) -> Option<u32> {
        self.sampling.get(&(exporter, domain, ANY_SAMPLER)).copied()
    }

    /// Per-exporter summary: (exporter, templates cached, domain-wide sampling rate if known).
    pub fn exporters(&self) -> Vec<(Ip, usize, Option<u32>)> {
        let mut m: FxHashMap<Ip, (usize, Option<u32>)> = FxHashMap::default();
        for k in self.map.keys() {
            m.entry(k.exporter).or_default().0 += 1;
        }
        for ((e, _, s), r) in &self.sampling {
            if *s == ANY_SAMPLER {
                m.entry(*e).or_default().1 = Some(*r);
            }
        }
        let mut v: Vec<_> = m.into_iter().map(|(e, (n, r))| (e, n, r)).collect();
        v.sort();
        v
    }

    /// Whether `key` names a cached options template.
    pub fn is_options(&self, key: &TemplateKey) -> bool {
        self.map.get(key).is_some_and(|t| t.options)
    }

    /// Everything cached, for the state directory.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot_where(|_| true)
    }

    /// What is cached for these exporters (templates and sampling rates).
    pub fn snapshot_of(&self, exporters: &[Ip]) -> Snapshot {
        self.snapshot_where(|e| exporters.contains(&e))
    }

    fn snapshot_where(&self, keep: impl Fn(Ip) -> bool) -> Snapshot {
        let mut templates: Vec<_> = self
            .map
            .iter()
            .filter(|(k, _)| keep(k.exporter))
            .map(|(k, t)| PersistedTemplate {
                exporter: k.exporter.to_std(),
                domain: k.domain,
                id: k.id,
                family: k.family,
                options: t.options,
                scope_fields: t.scope_fields,
                fields: t.raw.to_vec(),
                refreshed: t.refreshed,
            })
            .collect();
        templates.sort_by_key(|t| (t.exporter, t.domain, t.id));
        let mut sampling: Vec<_> = self
            .sampling
            .iter()
            .filter(|((e, _, _), _)| keep(*e))
            .map(|((e, d, s), r)| PersistedSampling { exporter: e.to_std(), domain: *d, sampler: *s, rate: *r })
            .collect();
        sampling.sort_by_key(|s| (s.exporter, s.domain, s.sampler));
        Snapshot { templates, sampling }
    }

    /// Loads a snapshot (entries over the limit or malformed are skipped); returns templates loaded.
    pub fn restore(&mut self, snap: &Snapshot) -> usize {
        self.load(snap, false)
    }

    /// Takes what another shard holds for some exporters as it is, whatever this store holds
    /// for them (the other shard received the exporter's datagrams in order, so its state is
    /// the current one); returns templates loaded.
    pub fn sync(&mut self, snap: &Snapshot) -> usize {
        self.load(snap, true)
    }

    fn load(&mut self, snap: &Snapshot, overwrite: bool) -> usize {
        let mut n = 0;
        for p in &snap.templates {
            if self.map.len() >= self.max {
                break;
            }
            if let Some(t) = Template::compile(&p.fields, p.scope_fields, p.options, p.refreshed) {
                let key = TemplateKey { exporter: Ip::from(p.exporter), domain: p.domain, id: p.id, family: p.family };
                let newer = overwrite || self.map.get(&key).is_none_or(|old| old.refreshed <= p.refreshed);
                if newer {
                    self.map.insert(key, Rc::new(t));
                    n += 1;
                }
            }
        }
        for s in &snap.sampling {
            self.set_sampling(Ip::from(s.exporter), s.domain, s.sampler, s.rate);
        }
        n
    }
}

/// Parses a v9 (`family = V9`) or IPFIX template set body into the store.
pub(crate) fn template_set<S: FlowSink>(
    ctx: &mut Ctx<'_, S>,
    family: Family,
    exporter: Ip,
    domain: u32,
    options: bool,
    mut c: Cursor<'_>,
    now: u64,
) -> Result<(), DecodeError> {
    let proto = family.proto();
    let tr = DecodeError::truncated(proto, "template");
    // Each template record needs at least 4 bytes; less is padding.
    while c.remaining() >= 4 {
        let id = c.u16().map_err(&tr)?;
        let (count, scope) = match (family, options) {
            (Family::V9, false) => (c.u16().map_err(&tr)? as usize, 0usize),
            (Family::V9, true) => {
                let scope_len = c.u16().map_err(&tr)? as usize;
                let opt_len = c.u16().map_err(&tr)? as usize;
                if scope_len % 4 != 0 || opt_len % 4 != 0 {
                    return Err(DecodeError::BadLength {
                        proto,
                        what: "options template scope/option",
                        value: scope_len,
                    });
                }
                ((scope_len + opt_len) / 4, scope_len / 4)
            }
            (Family::Ipfix, false) => (c.u16().map_err(&tr)? as usize, 0),
            (Family::Ipfix, true) => {
                let count = c.u16().map_err(&tr)? as usize;
                let scope = if count == 0 { 0 } else { c.u16().map_err(&tr)? as usize };
                (count, scope)
            }
        };
        let key = TemplateKey { exporter, domain, id, family };
        if count == 0 {
            if family == Family::Ipfix {
                // RFC 7011 8.1: withdrawal; template id 2 / 3 withdraws all of the set's kind.
                let n = if id == 2 || id == 3 {
                    ctx.dec.templates.withdraw_all(exporter, domain, family, options)
                } else {
                    usize::from(ctx.dec.templates.withdraw(&key))
                };
                ctx.dec.counters.templates_withdrawn += n as u64;
                continue;
            }
            return Err(DecodeError::BadTemplate { proto, exporter, domain, template: id, why: "zero fields" });
        }
        if count > MAX_FIELDS || count * 4 > c.remaining() {
            return Err(DecodeError::HostileCount {
                proto,
                what: "template field",
                count: count as u32,
                remaining: c.remaining(),
            });
        }
        if id < 256 || (options && scope == 0 && family == Family::Ipfix) || scope > count {
            return Err(DecodeError::BadTemplate {
                proto,
                exporter,
                domain,
                template: id,
                why: "reserved id or bad scope count",
            });
        }
        let store = &mut ctx.dec.templates;
        store.scratch.clear();
        for _ in 0..count {
            let raw_id = c.u16().map_err(&tr)?;
            let len = c.u16().map_err(&tr)?;
            let (id, enterprise) = if family == Family::Ipfix && raw_id & 0x8000 != 0 {
                (raw_id & 0x7fff, c.u32().map_err(&tr)?)
            } else {
                (raw_id, 0)
            };
            if family == Family::V9 && len == VARLEN {
                return Err(DecodeError::BadTemplate {
                    proto,
                    exporter,
                    domain,
                    template: key.id,
                    why: "v9 has no variable-length fields",
                });
            }
            store.scratch.push(RawField { id, enterprise, len });
        }
        match store.learn(key, scope as u16, options, now) {
            Ok(true) => ctx.dec.counters.templates_learned += 1,
            Ok(false) => {}
            Err(e @ DecodeError::TemplateLimit { .. }) => {
                // Keep going: other templates in the set may be refreshes of known ones.
                ctx.count(ErrorReason::TemplateLimit);
                let _refused = e;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Values collected from one data record before it becomes a [`FlowRecord`].
#[derive(Default)]
struct Acc {
    r: FlowRecord,
    in_bytes: Option<u64>,
    in_packets: Option<u64>,
    out_bytes: u64,
    out_packets: u64,
    total_bytes: Option<u64>,
    total_packets: Option<u64>,
    start: Option<u64>,
    end: Option<u64>,
    rate: u32,
    sampler: Option<u32>,
    pkt_interval: u32,
    pkt_space: u32,
}

#[inline]
fn ntp_ms(v: u64) -> u64 {
    let secs = v >> 32;
    let frac = v & 0xffff_ffff;
    secs * 1000 + ((frac * 1000) >> 32)
}

#[inline]
fn read_record(t: &Template, c: &mut Cursor<'_>, family: Family, a: &mut Acc) -> Result<(), Truncated> {
    for f in t.fields.iter() {
        let len = if f.len == VARLEN && family == Family::Ipfix {
            match c.u8()? {
                255 => c.u16()? as usize,
                n => n as usize,
            }
        } else {
            f.len as usize
        };
        let b = c.bytes(len)?;
        match f.kind {
            Kind::Skip => {}
            Kind::InBytes => a.in_bytes = Some(be_uint(b)),
            Kind::InPackets => a.in_packets = Some(be_uint(b)),
            Kind::OutBytes => a.out_bytes = be_uint(b),
            Kind::OutPackets => a.out_packets = be_uint(b),
            Kind::TotalBytes => a.total_bytes = Some(be_uint(b)),
            Kind::TotalPackets => a.total_packets = Some(be_uint(b)),
            Kind::Proto => a.r.proto = be_uint(b) as u8,
            Kind::Tos => a.r.tos = be_uint(b) as u8,
            Kind::TcpFlags => a.r.tcp_flags = be_uint(b) as u8,
            Kind::SrcPort => a.r.src_port = be_uint(b) as u16,
            Kind::DstPort => a.r.dst_port = be_uint(b) as u16,
            Kind::SrcV4 => a.r.src = Ip::from_v4(be_uint(b) as u32),
            Kind::DstV4 => a.r.dst = Ip::from_v4(be_uint(b) as u32),
            Kind::SrcV6 | Kind::DstV6 => {
                let mut x = [0u8; 16];
                x.copy_from_slice(b);
                let ip = Ip::from(std::net::IpAddr::from(x));
                if f.kind == Kind::SrcV6 {
                    a.r.src = ip;
                } else {
                    a.r.dst = ip;
                }
            }
            Kind::InIf => a.r.in_if = be_uint(b) as u32,
            Kind::OutIf => a.r.out_if = be_uint(b) as u32,
            Kind::SrcAs => a.r.src_as = be_uint(b) as u32,
            Kind::DstAs => a.r.dst_as = be_uint(b) as u32,
            Kind::StartUptime | Kind::StartMs | Kind::StartDeltaUs => a.start = Some(time_ms(f.kind, be_uint(b))),
            Kind::EndUptime | Kind::EndMs | Kind::EndDeltaUs => a.end = Some(time_ms(f.kind, be_uint(b))),
            Kind::StartSec => a.start = Some(be_uint(b) * 1000),
            Kind::EndSec => a.end = Some(be_uint(b) * 1000),
            Kind::StartNtp => a.start = Some(ntp_ms(be_uint(b))),
            Kind::EndNtp => a.end = Some(ntp_ms(be_uint(b))),
            Kind::SamplingInterval => a.rate = be_uint(b) as u32,
            Kind::SamplerId => a.sampler = Some(be_uint(b) as u32),
            Kind::PacketInterval => a.pkt_interval = be_uint(b) as u32,
            Kind::PacketSpace => a.pkt_space = be_uint(b) as u32,
            Kind::IcmpTypeCode => {
                if a.r.dst_port == 0 {
                    a.r.dst_port = be_uint(b) as u16;
                }
            }
        }
    }
    Ok(())
}

#[inline]
fn time_ms(kind: Kind, v: u64) -> u64 {
    match kind {
        // delta-microseconds count backwards from export time: larger = earlier
        Kind::StartDeltaUs | Kind::EndDeltaUs => u64::MAX / 2 - v / 1000,
        _ => v,
    }
}

impl Acc {
    fn rate(&self) -> Option<u32> {
        if self.rate > 0 {
            Some(self.rate)
        } else if self.pkt_interval > 0 {
            Some(((self.pkt_interval as u64 + self.pkt_space as u64) / self.pkt_interval as u64) as u32)
        } else {
            None
        }
    }
}

/// Decodes one data set with the template `set_id` from (exporter, domain).
#[allow(clippy::too_many_arguments)]
pub(crate) fn data_set<S: FlowSink>(
    ctx: &mut Ctx<'_, S>,
    family: Family,
    exporter: Ip,
    domain: u32,
    set_id: u16,
    mut c: Cursor<'_>,
    now: u64,
) -> Result<(), DecodeError> {
    let key = TemplateKey { exporter, domain, id: set_id, family };
    let Some(t) = ctx.dec.templates.get(&key, now, &mut ctx.dec.counters.templates_expired) else {
        ctx.count(ErrorReason::TemplateMissing);
        return Ok(());
    };
    if ctx.learn_only && !t.options {
        return Ok(());
    }
    let domain_rate = ctx.dec.templates.sampling.get(&(exporter, domain, ANY_SAMPLER)).copied();
    // Anything shorter than the smallest record is padding.
    while c.remaining() >= t.min_len {
        let mut a = Acc::default();
        if let Err(e) = read_record(&t, &mut c, family, &mut a) {
            return Err(DecodeError::truncated(family.proto(), "data record")(e));
        }
        if t.options {
            if let Some(rate) = a.rate() {
                let sampler = a.sampler.unwrap_or(ANY_SAMPLER);
                ctx.dec.templates.set_sampling(exporter, domain, sampler, rate);
                if sampler != ANY_SAMPLER && domain_rate.is_none() {
                    // A single sampler is the usual case: make it the domain default too.
                    ctx.dec.templates.set_sampling(exporter, domain, ANY_SAMPLER, rate);
                }
                ctx.dec.counters.sampling_updates += 1;
            }
            continue;
        }
        let mut r = a.r;
        r.exporter = exporter;
        r.bytes = a.in_bytes.or(a.total_bytes).unwrap_or(a.out_bytes);
        r.packets = a.in_packets.or(a.total_packets).unwrap_or(a.out_packets);
        if let (Some(s), Some(e)) = (a.start, a.end) {
            // sysUpTime values are 32-bit and wrap: subtract modulo 2^32 when both fit.
            let d = if s <= u32::MAX as u64 && e <= u32::MAX as u64 {
                (e as u32).wrapping_sub(s as u32) as u64
            } else {
                e.saturating_sub(s)
            };
            r.duration_ms = d.min(u32::MAX as u64 / 2) as u32;
        }
        let rate = a
            .rate()
            .or_else(|| a.sampler.and_then(|s| ctx.dec.templates.sampling.get(&(exporter, domain, s)).copied()))
            .or(domain_rate)
            .unwrap_or(1);
        ctx.emit(r, rate);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::decode::{Decoder, DecoderConfig, ErrorReason};
    use crate::model::{FlowRecord, Ip};

    /// An IPFIX message from raw sets (each `(set id, body)`).
    fn ipfix(domain: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (id, b) in sets {
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&((b.len() + 4) as u16).to_be_bytes());
            body.extend_from_slice(b);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&10u16.to_be_bytes());
        m.extend_from_slice(&((16 + body.len()) as u16).to_be_bytes());
        m.extend_from_slice(&[0; 8]);
        m.extend_from_slice(&domain.to_be_bytes());
        m.extend_from_slice(&body);
        m
    }

    fn fields(f: &[(u16, u16, Option<u32>)]) -> Vec<u8> {
        let mut v = Vec::new();
        for (id, len, pen) in f {
            let raw = if pen.is_some() { id | 0x8000 } else { *id };
            v.extend_from_slice(&raw.to_be_bytes());
            v.extend_from_slice(&len.to_be_bytes());
            if let Some(p) = pen {
                v.extend_from_slice(&p.to_be_bytes());
            }
        }
        v
    }

    fn decode_all(d: &mut Decoder, exporter: Ip, msgs: &[Vec<u8>]) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for m in msgs {
            let mut sink = |r: &FlowRecord| out.push(*r);
            d.decode(m, exporter, 1000, &mut sink).unwrap();
        }
        out
    }

    #[test]
    fn ipfix_varlen_enterprise_and_options_sampling() {
        let exporter = Ip::from_v4(0xc0000201);
        // template 300: srcIPv4, an enterprise field (PEN 29305, 4 bytes), a variable-length
        // field (applicationName, IE 96), octets (4), packets (4)
        let mut t = vec![1, 44, 0, 5];
        t.extend(fields(&[(8, 4, None), (1, 4, Some(29305)), (96, 0xffff, None), (1, 4, None), (2, 4, None)]));
        // options template 400: scope observationDomainId (149, 4), samplingInterval (34, 4)
        let mut o = vec![1, 144, 0, 2, 0, 1];
        o.extend(fields(&[(149, 4, None), (34, 4, None)]));
        let opt_data = [0, 0, 0, 7, 0, 0, 0, 100].to_vec(); // domain 7, 1 in 100
                                                            // two records: a short and a long (255-escaped) variable-length field
        let mut data = Vec::new();
        data.extend_from_slice(&[10, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 3, b'w', b'e', b'b', 0, 0, 0, 50, 0, 0, 0, 2]);
        data.extend_from_slice(&[10, 0, 0, 2, 1, 2, 3, 4, 255, 1, 44]);
        data.extend(std::iter::repeat_n(b'x', 300));
        data.extend_from_slice(&[0, 0, 0, 60, 0, 0, 0, 3]);
        let msgs = vec![ipfix(7, &[(2, t), (3, o)]), ipfix(7, &[(400, opt_data)]), ipfix(7, &[(300, data)])];
        let mut d = Decoder::new(&DecoderConfig::default());
        let recs = decode_all(&mut d, exporter, &msgs);
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].bytes, recs[0].packets, recs[0].sampling_rate), (5000, 200, 100));
        assert_eq!((recs[1].bytes, recs[1].packets), (6000, 300));
        assert_eq!(recs[1].src.to_string(), "10.0.0.2");
        assert_eq!(d.templates.sampling(exporter, 7), Some(100));
        assert_eq!(d.counters.sampling_updates, 1);

        // a per-exporter override in the config wins over the options data
        let mut d = Decoder::new(&DecoderConfig {
            sampling_override: vec![crate::decode::SamplingOverride { exporter: exporter.to_string(), rate: 10 }],
            ..DecoderConfig::default()
        });
        let recs = decode_all(&mut d, exporter, &msgs);
        assert_eq!((recs[0].bytes, recs[0].sampling_rate), (500, 10));

        // the same data from another exporter or domain has no template
        let mut d = Decoder::new(&DecoderConfig::default());
        decode_all(&mut d, exporter, &msgs[..2]);
        let mut n = 0;
        let mut sink = |_: &FlowRecord| n += 1;
        d.decode(&msgs[2], Ip::from_v4(0xc0000202), 1000, &mut sink).unwrap();
        assert_eq!(n, 0);
        assert_eq!(d.counters.errors[ErrorReason::TemplateMissing.index()], 1);
    }

    #[test]
    fn learning_from_a_copy_applies_state_without_counting() {
        let exporter = Ip::from_v4(0xc0000201);
        let mut t = vec![1, 44, 0, 2];
        t.extend(fields(&[(8, 4, None), (1, 4, None)]));
        let mut o = vec![1, 144, 0, 2, 0, 1];
        o.extend(fields(&[(149, 4, None), (34, 4, None)]));
        let state = ipfix(7, &[(2, t), (3, o)]);
        let data = ipfix(7, &[(300, vec![10, 0, 0, 1, 0, 0, 0, 9])]);
        let opt_data = ipfix(7, &[(400, vec![0, 0, 0, 7, 0, 0, 0, 10]), (300, vec![10, 0, 0, 1, 0, 0, 0, 9])]);
        let mut rx = Decoder::new(&DecoderConfig::default());
        // what carries state is told apart from plain data (options data needs the template)
        assert!(rx.carries_state(&state, exporter));
        assert!(!rx.carries_state(&data, exporter));
        assert!(!rx.carries_state(&opt_data, exporter), "options template not known yet");
        decode_all(&mut rx, exporter, std::slice::from_ref(&state));
        assert!(rx.carries_state(&opt_data, exporter));
        assert!(!rx.carries_state(&data, exporter));
        assert!(!rx.carries_state(&[0, 10, 0, 16], exporter), "short input is not state");

        // another shard learns from copies: templates and sampling, no records, no counters
        let mut other = Decoder::new(&DecoderConfig::default());
        other.learn(&state, exporter, 1000);
        other.learn(&opt_data, exporter, 1000);
        assert_eq!(other.counters, crate::decode::DecodeCounters::default());
        assert_eq!(other.templates.len(), 2);
        assert_eq!(other.templates.sampling(exporter, 7), Some(10));
        let recs = decode_all(&mut other, exporter, &[data]);
        assert_eq!((recs.len(), recs[0].bytes, recs[0].sampling_rate), (1, 90, 10));

        // a sync takes the sender's state even over a newer-looking one
        let mut third = Decoder::new(&DecoderConfig::default());
        let mut t2 = vec![1, 44, 0, 1];
        t2.extend(fields(&[(8, 4, None)]));
        decode_all(&mut third, exporter, &[ipfix(7, &[(2, t2)])]);
        let snap = other.templates.snapshot_of(&[exporter]);
        assert!(other.templates.snapshot_of(&[Ip::from_v4(1)]).templates.is_empty());
        assert_eq!(third.templates.sync(&snap), 2);
        let recs = decode_all(&mut third, exporter, &[ipfix(7, &[(300, vec![10, 0, 0, 1, 0, 0, 0, 9])])]);
        assert_eq!((recs.len(), recs[0].bytes), (1, 90));
    }

    #[test]
    fn templates_expire_and_snapshots_restore() {
        let exporter = Ip::from_v4(0xc0000201);
        let mut t = vec![1, 44, 0, 2];
        t.extend(fields(&[(8, 4, None), (1, 4, None)]));
        let data = ipfix(1, &[(300, vec![10, 0, 0, 1, 0, 0, 0, 9])]);
        let mut d = Decoder::new(&DecoderConfig { template_timeout_s: 60, ..DecoderConfig::default() });
        let mut sink = |_: &FlowRecord| {};
        d.decode(&ipfix(1, &[(2, t)]), exporter, 1000, &mut sink).unwrap();
        let snap = d.templates.snapshot();
        // 61 s later the template has expired
        d.decode(&data, exporter, 1061, &mut sink).unwrap();
        assert_eq!(d.counters.templates_expired, 1);
        assert_eq!(d.counters.errors[ErrorReason::TemplateMissing.index()], 1);
        // a fresh decoder restored from the snapshot decodes the data
        let mut d2 = Decoder::new(&DecoderConfig { template_timeout_s: 60, ..DecoderConfig::default() });
        assert_eq!(d2.templates.restore(&snap), 1);
        let mut n = 0;
        let mut sink = |r: &FlowRecord| {
            n += 1;
            assert_eq!(r.bytes, 9);
        };
        d2.decode(&data, exporter, 1010, &mut sink).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn v9_options_template_sets_sampling() {
        let exporter = Ip::from_v4(0x0a000001);
        let v9 = |sets: &[(u16, Vec<u8>)]| {
            let mut m = vec![0, 9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5];
            for (id, b) in sets {
                m.extend_from_slice(&id.to_be_bytes());
                m.extend_from_slice(&((b.len() + 4) as u16).to_be_bytes());
                m.extend_from_slice(b);
            }
            m
        };
        // template 256: IPV4_SRC_ADDR, IN_BYTES, IN_PKTS
        let mut t = vec![1, 0, 0, 3];
        t.extend(fields(&[(8, 4, None), (1, 4, None), (2, 4, None)]));
        // options template 257: scope System (1, 4); option SAMPLING_INTERVAL (34, 4)
        let mut o = vec![1, 1, 0, 4, 0, 4];
        o.extend(fields(&[(1, 4, None), (34, 4, None)]));
        let msgs = vec![
            v9(&[(0, t), (1, o)]),
            v9(&[(257, vec![0, 0, 0, 0, 0, 0, 0, 64])]),
            v9(&[(256, vec![10, 0, 0, 9, 0, 0, 0, 100, 0, 0, 0, 1])]),
        ];
        let mut d = Decoder::new(&DecoderConfig::default());
        let recs = decode_all(&mut d, exporter, &msgs);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].bytes, recs[0].packets, recs[0].sampling_rate), (6400, 64, 64));
    }
}
