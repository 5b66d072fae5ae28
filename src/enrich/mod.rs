//! Flow enrichment: country and AS of both ends (MaxMind/DB-IP/IPinfo `.mmdb` files), the
//! network each end belongs to and the internal/external boundary (a networks file), as one
//! read-only [`Table`] that shards apply to every decoded record before it is aggregated.
//!
//! The table is built off the shards ([`load`]: start-up, reloads) by flattening every source
//! into one sorted list of address ranges, each with its combined answer, so a lookup is an
//! index probe plus a short binary search over `u32`s for IPv4 (a binary search over `u128`s for
//! IPv6) — no allocation, no lock, no tree walk or record decoding per record. Shards hold it
//! behind an `Arc` and swap it between datagrams ([`pipeline::ShardCore`](crate::pipeline)).
//!
//! May depend on: `model`. Lives on: shard cores (lookups), the main thread and the I/O core
//! (loading).

pub mod load;
pub mod snmp;

use crate::model::{Boundary, FlowRecord, Ip};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[enrich]`: where the tables come from (every file optional).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// A GeoIP `.mmdb` with `country.iso_code` (GeoLite2/GeoIP2 Country or City, DB-IP,
    /// IPinfo); its `autonomous_system_number` is read too where present.
    pub geoip: Option<PathBuf>,
    /// An ASN `.mmdb` (`autonomous_system_number`, e.g. GeoLite2-ASN).
    pub asn: Option<PathBuf>,
    /// A networks file: CSV `prefix,name[,boundary[,role[,site[,tenant]]]]` (see the README).
    pub networks: Option<PathBuf>,
    /// `[enrich.snmp]`: interface names, descriptions and speeds from the exporters' agents.
    pub snmp: snmp::SnmpConfig,
    /// `[[enrich.interface]]`: static interface entries (win over SNMP).
    pub interface: Vec<snmp::StaticInterface>,
    /// Whether the GeoIP load reads city records (set from `[aggregate] dimensions`: only
    /// when `src_city` or `dst_city` is aggregated, as a City database has several times the
    /// ranges of its countries).
    #[serde(skip)]
    pub cities: bool,
}

impl EnrichConfig {
    /// Whether interface names are wanted (SNMP polling or static entries).
    pub fn interfaces(&self) -> bool {
        self.snmp.enabled || !self.interface.is_empty()
    }

    /// Whether any table the shards apply is configured.
    pub fn any(&self) -> bool {
        self.geoip.is_some() || self.asn.is_some() || self.networks.is_some()
    }
}

/// Where a reloaded table is published for the shards: a generation number they compare once
/// per tick (one atomic load) and the table behind a mutex taken only when the generation
/// moved — never per record or per datagram. A shard swaps the table between datagrams, so
/// every record of a datagram, and every record of a second's window, is counted once.
#[derive(Debug, Default)]
pub struct Slot {
    generation: std::sync::atomic::AtomicU64,
    table: std::sync::Mutex<Option<std::sync::Arc<Table>>>,
}

impl Slot {
    /// Publishes a new table (generation + 1).
    pub fn publish(&self, t: std::sync::Arc<Table>) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The current generation (0: nothing published since start).
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The table last published.
    pub fn current(&self) -> Option<std::sync::Arc<Table>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Names the `src_as` / `dst_as` rollups of a second from the current table's AS names, gives
/// the `src_net` / `dst_net` rollups their network's role, site and tenant, and adds the rows
/// of the dimensions derived from those (`src_site`, `dst_tenant`, …: see
/// [`Dimension::derived_from`](crate::model::Dimension::derived_from)). Runs on the I/O core
/// and in replays on each finished second; follows reloads through the slot.
pub struct Namer {
    slot: Option<std::sync::Arc<Slot>>,
    generation: u64,
    table: Option<std::sync::Arc<Table>>,
    derived: Vec<crate::model::Dimension>,
}

impl Namer {
    /// A namer reading `slot` (which starts with the table loaded at start, `initial`) that
    /// adds the `derived` dimensions' rows.
    pub fn new(
        slot: std::sync::Arc<Slot>,
        initial: Option<std::sync::Arc<Table>>,
        derived: &[crate::model::Dimension],
    ) -> Namer {
        Namer { generation: slot.generation(), slot: Some(slot), table: initial, derived: derived.to_vec() }
    }

    /// A namer of one table that is never reloaded (replay).
    pub fn fixed(table: std::sync::Arc<Table>, derived: &[crate::model::Dimension]) -> Namer {
        Namer { slot: None, generation: 0, table: Some(table), derived: derived.to_vec() }
    }

    /// Sets [`crate::model::Rollup::as_name`] on the AS rows the database names and
    /// [`crate::model::Rollup::net`] on the network rows, then appends the derived rows of the
    /// second (one row per site, tenant or role present, `unknown` for networks without one).
    pub fn annotate(&mut self, rollups: &mut Vec<crate::model::Rollup>) {
        if let Some(slot) = &self.slot {
            let g = slot.generation();
            if g != self.generation {
                self.generation = g;
                self.table = slot.current();
            }
        }
        use crate::model::Dimension as D;
        let Some(t) = &self.table else { return };
        if !(t.as_names.is_empty() && t.net_info.is_empty()) {
            for r in rollups.iter_mut() {
                match r.dimension {
                    D::SrcAs | D::DstAs => r.as_name = t.as_names.get(&r.key.num).cloned(),
                    D::SrcNet | D::DstNet => {
                        r.net = u16::try_from(r.key.num).ok().and_then(|id| t.net_info.get(&id)).cloned()
                    }
                    _ => {}
                }
            }
        }
        for &dim in &self.derived {
            derive(dim, rollups);
        }
    }
}

/// Appends `dim`'s rows: the sums of its source dimension's rows by the network attribute.
fn derive(dim: crate::model::Dimension, rollups: &mut Vec<crate::model::Rollup>) {
    use crate::model::{names, Ip, Key, Rollup};
    let Some((from, attr)) = dim.derived_from() else { return };
    let Some(second) = rollups.first().map(|r| r.second) else { return };
    let mut sums: std::collections::BTreeMap<Key, [u64; 3]> = Default::default();
    for r in rollups.iter().filter(|r| r.dimension == from) {
        let key = if r.key.is_other() {
            Key::OTHER
        } else {
            let v = r.net.as_deref().map_or("", |n| n.get(attr));
            Key::new(Ip::UNSPECIFIED, if v.is_empty() { 0 } else { names::id_of(v).map_or(0, u32::from) })
        };
        let s = sums.entry(key).or_default();
        s[0] += r.bytes;
        s[1] += r.packets;
        s[2] += r.flows;
    }
    rollups.extend(sums.into_iter().map(|(k, [b, p, f])| Rollup::new(second, dim, k, b, p, f)));
}

/// What the table knows about one address range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// Country ([`crate::model::country_code`]; 0 = unknown).
    pub country: u16,
    /// Network name id ([`crate::model::names`]; 0 = in no listed network).
    pub net: u16,
    /// AS number (0 = unknown).
    pub asn: u32,
    /// City: GeoNames id (0 = unknown or not loaded).
    pub city: u32,
    /// In an internal network of the networks file.
    pub internal: bool,
}

/// One network of the networks file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    /// Prefix as written.
    pub prefix: String,
    /// Name (the `src_net`/`dst_net` key).
    pub name: String,
    /// Inside the operator's boundary.
    pub internal: bool,
    /// Free-form role, site and tenant (on the `src_net`/`dst_net` rollups as `net_role`,
    /// `net_site`, `net_tenant`; not keys of their own).
    pub role: String,
    /// Site.
    pub site: String,
    /// Tenant.
    pub tenant: String,
}

/// An [`Answer`] as the table stores it: without the city, which lives in an array of its own
/// only when cities are loaded, so a table without them probes 12-byte entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stored {
    country: u16,
    net: u16,
    asn: u32,
    internal: bool,
}

impl Stored {
    fn of(a: Answer) -> Stored {
        Stored { country: a.country, net: a.net, asn: a.asn, internal: a.internal }
    }
}

/// The flattened, read-only enrichment table.
#[derive(Default)]
pub struct Table {
    /// IPv4: range starts (ascending, the first is 0) and their answers.
    v4_starts: Vec<u32>,
    v4_answers: Vec<Stored>,
    /// Cities of the IPv4 ranges (empty: no city loaded).
    v4_cities: Vec<u32>,
    /// `v4_index[h]`: the range holding address `h << 16` (65,537 entries).
    v4_index: Vec<u32>,
    /// Every other address (IPv6): range starts (ascending, the first is 0) and answers.
    v6_starts: Vec<u128>,
    v6_answers: Vec<Stored>,
    /// Cities of the IPv6 ranges (empty: no city loaded).
    v6_cities: Vec<u32>,
    /// Whether a networks file is loaded (the boundary is known).
    has_networks: bool,
    /// The networks file's entries, in file order.
    pub networks: Vec<Network>,
    /// AS names (`autonomous_system_organization`) of the ASN and GeoIP databases, by number.
    pub as_names: rustc_hash::FxHashMap<u32, std::sync::Arc<str>>,
    /// Role, site and tenant of each network name that has any (the first line with the name
    /// gives them).
    pub net_info: rustc_hash::FxHashMap<u16, std::sync::Arc<crate::model::NetInfo>>,
    /// What was loaded, for logs and counters.
    pub stats: LoadStats,
}

impl std::fmt::Debug for Table {
    /// A summary: what was loaded, not the hundreds of thousands of ranges.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("stats", &self.stats).field("networks", &self.networks.len()).finish()
    }
}

/// What a load read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Networks read from the GeoIP database.
    pub geoip_networks: u64,
    /// Cities named by the GeoIP database (when a city dimension is configured).
    pub cities: u64,
    /// Networks read from the ASN database.
    pub asn_networks: u64,
    /// AS names read (distinct AS numbers with an organization).
    pub as_names: u64,
    /// Entries of the networks file.
    pub networks: u64,
    /// Ranges of the flattened table (IPv4 + IPv6).
    pub ranges: u64,
    /// Milliseconds the load took.
    pub load_ms: u64,
}

impl Table {
    /// The network ids (`src_net` / `dst_net` keys) whose role, site or tenant is `value`:
    /// what a filter on `src_site=dc1` matches.
    pub fn nets_with(&self, attr: crate::model::NetAttr, value: &str) -> Vec<u16> {
        let mut v: Vec<u16> = self.net_info.iter().filter(|(_, i)| i.get(attr) == value).map(|(&id, _)| id).collect();
        v.sort_unstable();
        v
    }

    /// Where an address's range is: (IPv4, index).
    #[inline]
    fn locate(&self, ip: Ip) -> (bool, usize) {
        if ip.is_v4() {
            let a = ip.0 as u32;
            let h = (a >> 16) as usize;
            let (lo, hi) = (self.v4_index[h] as usize, self.v4_index[h + 1] as usize);
            // the last start ≤ a among [lo, hi]: lo's start ≤ h << 16 ≤ a
            (true, lo + self.v4_starts[lo + 1..=hi].partition_point(|&s| s <= a))
        } else {
            (false, self.v6_starts.partition_point(|&s| s <= ip.0) - 1)
        }
    }

    /// The stored answer and city at a location.
    #[inline]
    fn at(&self, (v4, i): (bool, usize)) -> (Stored, u32) {
        let (answers, cities) =
            if v4 { (&self.v4_answers, &self.v4_cities) } else { (&self.v6_answers, &self.v6_cities) };
        (answers[i], cities.get(i).copied().unwrap_or(0))
    }

    /// Parses a record filter whose site, tenant and role terms resolve through this table's
    /// networks (`table` `None`: no networks file, such terms match no network).
    pub fn filter(
        table: Option<&Table>,
        text: &str,
    ) -> Result<crate::model::filter::Filter, crate::model::filter::FilterError> {
        crate::model::filter::Filter::parse(text, &|attr, v| table.map_or_else(Vec::new, |t| t.nets_with(attr, v)))
    }

    /// The answer for one address.
    #[inline]
    pub fn lookup(&self, ip: Ip) -> Answer {
        let (a, city) = self.at(self.locate(ip));
        Answer { country: a.country, net: a.net, asn: a.asn, city, internal: a.internal }
    }

    /// Fills a record's enrichment fields: countries, cities, networks, the boundary, and the
    /// AS numbers where the exporter sent 0 (an exporter's own AS fields win).
    #[inline]
    pub fn apply(&self, r: &mut FlowRecord) {
        let (s, s_city) = self.at(self.locate(r.src));
        let (d, d_city) = self.at(self.locate(r.dst));
        r.src_country = s.country;
        r.dst_country = d.country;
        r.src_city = s_city;
        r.dst_city = d_city;
        r.src_net = s.net;
        r.dst_net = d.net;
        if r.src_as == 0 {
            r.src_as = s.asn;
        }
        if r.dst_as == 0 {
            r.dst_as = d.asn;
        }
        r.boundary = if self.has_networks { Boundary::of(s.internal, d.internal) as u8 } else { 0 };
    }

    /// Builds the lookup structures from flattened ranges over the `u128` address space
    /// (IPv4 as `::ffff:a.b.c.d`): `ranges` ascending by start, non-overlapping, the first at 0,
    /// together covering everything.
    pub(crate) fn from_ranges(ranges: &[(u128, Answer)], has_networks: bool) -> Table {
        const V4_LO: u128 = 0xffff_0000_0000;
        const V4_HI: u128 = 0xffff_ffff_ffff;
        let answer_at = |p: u128| ranges[ranges.partition_point(|r| r.0 <= p) - 1].1;
        // IPv4: the ranges inside ::ffff:0:0/96, starting with the one that holds 0.0.0.0
        let mut v4_starts = vec![0u32];
        let mut v4: Vec<Answer> = vec![answer_at(V4_LO)];
        for &(s, a) in ranges.iter().filter(|r| r.0 > V4_LO && r.0 <= V4_HI) {
            v4_starts.push((s - V4_LO) as u32);
            v4.push(a);
        }
        let has_cities = ranges.iter().any(|r| r.1.city != 0);
        let cities = |v: &[Answer]| if has_cities { v.iter().map(|a| a.city).collect() } else { Vec::new() };
        let v6: Vec<Answer> = ranges.iter().map(|r| r.1).collect();
        let mut v4_index = Vec::with_capacity(65_537);
        for h in 0..65_536u32 {
            v4_index.push((v4_starts.partition_point(|&s| s <= h << 16) - 1) as u32);
        }
        v4_index.push((v4_starts.len() - 1) as u32);
        Table {
            v4_starts,
            v4_answers: v4.iter().copied().map(Stored::of).collect(),
            v4_cities: cities(&v4),
            v4_index,
            v6_starts: ranges.iter().map(|r| r.0).collect(),
            v6_answers: v6.iter().copied().map(Stored::of).collect(),
            v6_cities: cities(&v6),
            has_networks,
            networks: Vec::new(),
            as_names: Default::default(),
            net_info: Default::default(),
            stats: LoadStats { ranges: ranges.len() as u64, ..Default::default() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ip {
        Ip::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    #[test]
    fn lookups_find_the_range_on_both_sides_of_every_boundary() {
        let base = 0xffff_0000_0000u128;
        let a = |c: u16| Answer { country: c, ..Default::default() };
        let ranges = vec![
            (0, a(0)),
            (base + 0x0a00_0000, a(1)),   // 10.0.0.0
            (base + 0x0a00_0100, a(2)),   // 10.0.1.0
            (base + 0x0a01_0000, a(0)),   // 10.1.0.0
            (base + 0xffff_ffff, a(3)),   // 255.255.255.255 alone
            (base + 0x1_0000_0000, a(4)), // past IPv4
        ];
        let t = Table::from_ranges(&ranges, false);
        assert_eq!(t.lookup(v4("9.255.255.255")).country, 0);
        assert_eq!(t.lookup(v4("10.0.0.0")).country, 1);
        assert_eq!(t.lookup(v4("10.0.0.255")).country, 1);
        assert_eq!(t.lookup(v4("10.0.1.0")).country, 2);
        assert_eq!(t.lookup(v4("10.0.255.255")).country, 2);
        assert_eq!(t.lookup(v4("10.1.0.0")).country, 0);
        assert_eq!(t.lookup(v4("255.255.255.254")).country, 0);
        assert_eq!(t.lookup(v4("255.255.255.255")).country, 3);
        assert_eq!(t.lookup(v4("0.0.0.0")).country, 0);
        assert_eq!(t.lookup(v4("2001:db8::1")).country, 4);
        assert_eq!(t.lookup(v4("::1")).country, 0);
    }

    #[test]
    fn derived_rows_sum_the_network_rows_by_attribute_and_keep_other() {
        use crate::model::{names, Dimension as D, Key, NetInfo, Rollup};
        let info = |site: &str| Some(std::sync::Arc::new(NetInfo { site: site.into(), ..Default::default() }));
        names::intern("derive-test-site").unwrap();
        let net = |n: u32, b: u64, site: &str| Rollup {
            net: info(site),
            ..Rollup::new(9, D::SrcNet, Key::new(Ip::UNSPECIFIED, n), b, 1, 1)
        };
        let mut rows = vec![
            net(1, 10, "derive-test-site"),
            net(2, 20, "derive-test-site"),
            net(3, 5, ""),
            Rollup::new(9, D::SrcNet, Key::OTHER, 7, 1, 1),
            Rollup::new(9, D::DstNet, Key::new(Ip::UNSPECIFIED, 1), 1000, 1, 1),
        ];
        let mut n = Namer::fixed(std::sync::Arc::new(Table::default()), &[D::SrcSite]);
        n.annotate(&mut rows);
        let got: Vec<(String, u64, u64)> = rows[5..]
            .iter()
            .map(|r| {
                assert_eq!((r.second, r.dimension), (9, D::SrcSite));
                (D::SrcSite.format_key(&r.key), r.bytes, r.flows)
            })
            .collect();
        assert_eq!(
            got,
            vec![("unknown".into(), 5, 1), ("other".into(), 7, 1), ("derive-test-site".into(), 30, 2)],
            "one row per site; networks without one are unknown; the folded row stays other"
        );
    }

    #[test]
    fn the_exporters_as_wins_and_the_boundary_follows_the_networks() {
        let base = 0xffff_0000_0000u128;
        let ranges = vec![
            (0, Answer { asn: 64_500, ..Default::default() }),
            (base + 0x0a00_0000, Answer { net: 1, internal: true, asn: 64_501, ..Default::default() }),
            (base + 0x0b00_0000, Answer { asn: 64_500, ..Default::default() }),
        ];
        let t = Table::from_ranges(&ranges, true);
        let mut r = FlowRecord { src: v4("10.1.2.3"), dst: v4("192.0.2.1"), dst_as: 7, ..Default::default() };
        t.apply(&mut r);
        assert_eq!((r.src_as, r.dst_as, r.src_net, r.dst_net), (64_501, 7, 1, 0));
        assert_eq!(r.boundary, Boundary::Out as u8);
        std::mem::swap(&mut r.src, &mut r.dst);
        t.apply(&mut r);
        assert_eq!(r.boundary, Boundary::In as u8);
    }
}
