//! Plain data that crosses cores: [`FlowRecord`], addresses, [`Dimension`] keys, [`Rollup`] and
//! [`Alert`].
//!
//! May depend on: nothing (but `std` and `serde`); reads no clock (the one clock function,
//! [`time::now_ms`], is called by the runtime, sinks and tools only). Every type here is `Copy` or owns
//! plain vectors, so batches of them can be moved between shard cores and I/O cores.
//!
//! Lives on: every core.

pub mod filter;
pub mod hll;
pub mod json;
pub mod names;
pub mod time;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv4 or IPv6 address as one `u128`: IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so keys
/// hash and compare as one integer and v4/v6 share one code path.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Ip(pub u128);

const V4_MAPPED_PREFIX: u128 = 0xffff_0000_0000;

impl Ip {
    /// The unspecified address (`::`), used where a record carries no address.
    pub const UNSPECIFIED: Ip = Ip(0);

    /// An IPv4 address from its big-endian `u32` value.
    #[inline]
    pub const fn from_v4(v: u32) -> Ip {
        Ip(V4_MAPPED_PREFIX | v as u128)
    }

    /// An IPv6 address from its 16 network-order bytes.
    #[inline]
    pub const fn from_v6(b: [u8; 16]) -> Ip {
        Ip(u128::from_be_bytes(b))
    }

    /// Whether this is an IPv4 (mapped) address.
    #[inline]
    pub const fn is_v4(self) -> bool {
        self.0 >> 32 == 0xffff
    }

    /// The address as `std::net::IpAddr`.
    pub fn to_std(self) -> IpAddr {
        if self.is_v4() {
            IpAddr::V4(Ipv4Addr::from(self.0 as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(self.0))
        }
    }
}

impl From<IpAddr> for Ip {
    fn from(a: IpAddr) -> Ip {
        match a {
            IpAddr::V4(v4) => Ip::from_v4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Ip::from_v4(u32::from(v4)),
                None => Ip(u128::from(v6)),
            },
        }
    }
}

/// A prefix as an inclusive range of the `u128` address space [`Ip`] uses (IPv4 as
/// `::ffff:a.b.c.d`); `None` when the length is longer than the family allows. One place for
/// the networks file, the mmdb loader and filters.
pub fn prefix_range(net: IpAddr, len: u8) -> Option<(u128, u128)> {
    let (base, bits) = match net {
        IpAddr::V4(v4) => (Ip::from_v4(u32::from(v4)).0, 32u32),
        IpAddr::V6(v6) => (u128::from(v6), 128u32),
    };
    let len = u32::from(len);
    if len > bits {
        return None;
    }
    let host_bits = bits - len;
    let mask = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let start = base & !mask;
    Some((start, start | mask))
}

impl fmt::Display for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_std().fmt(f)
    }
}

impl fmt::Debug for Ip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The flow protocol a datagram was sniffed as.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Cisco NetFlow version 5.
    NetflowV5,
    /// Cisco NetFlow version 9 (RFC 3954).
    NetflowV9,
    /// IPFIX (RFC 7011).
    Ipfix,
    /// sFlow version 5.
    Sflow5,
}

impl Protocol {
    /// All protocols, in counter order.
    pub const ALL: [Protocol; 4] = [Protocol::NetflowV5, Protocol::NetflowV9, Protocol::Ipfix, Protocol::Sflow5];
    /// Stable label (used in counters and logs).
    pub const fn label(self) -> &'static str {
        match self {
            Protocol::NetflowV5 => "netflow_v5",
            Protocol::NetflowV9 => "netflow_v9",
            Protocol::Ipfix => "ipfix",
            Protocol::Sflow5 => "sflow_v5",
        }
    }
    /// Index into per-protocol counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One decoded flow, fixed-size and `Copy`: what every decoder produces and every aggregator
/// consumes. Byte and packet counts are already multiplied by the sampling rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRecord {
    /// Address the datagram came from (NetFlow/IPFIX) or the sFlow agent address.
    pub exporter: Ip,
    /// Source address.
    pub src: Ip,
    /// Destination address.
    pub dst: Ip,
    /// Source transport port (0 where none).
    pub src_port: u16,
    /// Destination transport port (0 where none; ICMP type/code for ICMP when exported so).
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// OR of the TCP flags seen.
    pub tcp_flags: u8,
    /// IP type of service / traffic class.
    pub tos: u8,
    /// Octets, scaled by the sampling rate.
    pub bytes: u64,
    /// Packets, scaled by the sampling rate.
    pub packets: u64,
    /// Input interface index (SNMP ifIndex).
    pub in_if: u32,
    /// Output interface index.
    pub out_if: u32,
    /// Source autonomous system.
    pub src_as: u32,
    /// Destination autonomous system.
    pub dst_as: u32,
    /// Sampling rate applied (1 = unsampled).
    pub sampling_rate: u32,
    /// Flow duration in milliseconds (last - first switched); 0 for packet samples.
    pub duration_ms: u32,
    /// Source country ([`country_code`]; 0 = unknown or no GeoIP database). Filled by
    /// enrichment, like the four fields after it.
    pub src_country: u16,
    /// Destination country.
    pub dst_country: u16,
    /// Source network's name id ([`names`]; 0 = in no listed network).
    pub src_net: u16,
    /// Destination network's name id.
    pub dst_net: u16,
    /// Which way the flow crosses the networks file's internal/external boundary
    /// ([`Boundary`] as `u8`; 0 = no networks file).
    pub boundary: u8,
    /// Source city: the GeoIP database's GeoNames id (`city.geoname_id`; 0 = unknown, or no
    /// city dimension configured). Filled by enrichment.
    pub src_city: u32,
    /// Destination city.
    pub dst_city: u32,
}

/// Two upper-case ASCII letters (an ISO 3166 code) as one number; 0 for anything else.
pub fn country_code(s: &str) -> u16 {
    match s.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            u16::from(a.to_ascii_uppercase()) << 8 | u16::from(b.to_ascii_uppercase())
        }
        _ => 0,
    }
}

/// The letters of a [`country_code`] (`unknown` for 0).
pub fn country_name(c: u16) -> String {
    if c == 0 {
        return "unknown".into();
    }
    let b = c.to_be_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

/// Which way a flow crosses the boundary between the networks file's internal networks and the
/// rest (an address in no listed network, or in one marked external, is external).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Boundary {
    /// No networks file: not known.
    Unknown = 0,
    /// Both ends internal.
    Internal = 1,
    /// From outside to inside.
    In = 2,
    /// From inside to outside.
    Out = 3,
    /// Neither end internal (transit).
    Transit = 4,
}

impl Boundary {
    /// The boundary of a flow whose source and destination are internal or not.
    #[inline]
    pub const fn of(src_internal: bool, dst_internal: bool) -> Boundary {
        match (src_internal, dst_internal) {
            (true, true) => Boundary::Internal,
            (false, true) => Boundary::In,
            (true, false) => Boundary::Out,
            (false, false) => Boundary::Transit,
        }
    }

    /// Stable name in outputs.
    pub const fn name_of(v: u32) -> &'static str {
        match v {
            1 => "internal",
            2 => "in",
            3 => "out",
            4 => "transit",
            _ => "unknown",
        }
    }
}

/// A rollup dimension: what a 1-second aggregate is keyed by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// One key for all traffic.
    Total,
    /// Source address.
    SrcIp,
    /// Destination address.
    DstIp,
    /// Source port with protocol.
    SrcPort,
    /// Destination port with protocol (the service).
    DstPort,
    /// IP protocol.
    Proto,
    /// Exporter address.
    Exporter,
    /// Exporter address with input interface.
    ExporterInIf,
    /// Exporter address with output interface.
    ExporterOutIf,
    /// Source AS.
    SrcAs,
    /// Destination AS.
    DstAs,
    /// Source country (GeoIP enrichment).
    SrcCountry,
    /// Destination country.
    DstCountry,
    /// Source network by name (networks file).
    SrcNet,
    /// Destination network by name.
    DstNet,
    /// Direction across the internal/external boundary (networks file).
    Boundary,
    /// Source city (GeoIP City database; loaded only when a city dimension is configured).
    SrcCity,
    /// Destination city.
    DstCity,
    /// Source network's site (networks file): the sum of the `src_net` rows of the second by
    /// their site, made on the I/O core (see [`Dimension::derived_from`]).
    SrcSite,
    /// Destination network's site.
    DstSite,
    /// Source network's tenant.
    SrcTenant,
    /// Destination network's tenant.
    DstTenant,
    /// Source network's role.
    SrcRole,
    /// Destination network's role.
    DstRole,
}

impl Dimension {
    /// Every dimension, in a stable order.
    pub const ALL: [Dimension; 24] = [
        Dimension::Total,
        Dimension::SrcIp,
        Dimension::DstIp,
        Dimension::SrcPort,
        Dimension::DstPort,
        Dimension::Proto,
        Dimension::Exporter,
        Dimension::ExporterInIf,
        Dimension::ExporterOutIf,
        Dimension::SrcAs,
        Dimension::DstAs,
        Dimension::SrcCountry,
        Dimension::DstCountry,
        Dimension::SrcNet,
        Dimension::DstNet,
        Dimension::Boundary,
        Dimension::SrcCity,
        Dimension::DstCity,
        Dimension::SrcSite,
        Dimension::DstSite,
        Dimension::SrcTenant,
        Dimension::DstTenant,
        Dimension::SrcRole,
        Dimension::DstRole,
    ];

    /// Stable name, as in the config file and in every output.
    pub const fn name(self) -> &'static str {
        match self {
            Dimension::Total => "total",
            Dimension::SrcIp => "src_ip",
            Dimension::DstIp => "dst_ip",
            Dimension::SrcPort => "src_port",
            Dimension::DstPort => "dst_port",
            Dimension::Proto => "proto",
            Dimension::Exporter => "exporter",
            Dimension::ExporterInIf => "exporter_in_if",
            Dimension::ExporterOutIf => "exporter_out_if",
            Dimension::SrcAs => "src_as",
            Dimension::DstAs => "dst_as",
            Dimension::SrcCountry => "src_country",
            Dimension::DstCountry => "dst_country",
            Dimension::SrcNet => "src_net",
            Dimension::DstNet => "dst_net",
            Dimension::Boundary => "boundary",
            Dimension::SrcCity => "src_city",
            Dimension::DstCity => "dst_city",
            Dimension::SrcSite => "src_site",
            Dimension::DstSite => "dst_site",
            Dimension::SrcTenant => "src_tenant",
            Dimension::DstTenant => "dst_tenant",
            Dimension::SrcRole => "src_role",
            Dimension::DstRole => "dst_role",
        }
    }

    /// Whether the keys are exporter interfaces (`exporter:ifIndex`), which SNMP or the config
    /// can name.
    pub const fn is_interface(self) -> bool {
        matches!(self, Dimension::ExporterInIf | Dimension::ExporterOutIf)
    }

    /// Whether this dimension's keys come from enrichment, and which table it needs
    /// (`"geoip"` or `"networks"`).
    pub const fn needs_table(self) -> Option<&'static str> {
        match self {
            Dimension::SrcCountry | Dimension::DstCountry | Dimension::SrcCity | Dimension::DstCity => Some("geoip"),
            Dimension::SrcNet | Dimension::DstNet | Dimension::Boundary => Some("networks"),
            d if d.derived_from().is_some() => Some("networks"),
            _ => None,
        }
    }

    /// For the dimensions the I/O core derives from another's rows instead of aggregating
    /// records on the shards: the source dimension and which of the network's attributes
    /// becomes the key. A network has one role, site and tenant, so the sum of a second's
    /// `src_net` rows by site is exactly the second's traffic by source site (a network row
    /// folded into `other` by a full table sums into the site `other`).
    pub const fn derived_from(self) -> Option<(Dimension, NetAttr)> {
        match self {
            Dimension::SrcSite => Some((Dimension::SrcNet, NetAttr::Site)),
            Dimension::DstSite => Some((Dimension::DstNet, NetAttr::Site)),
            Dimension::SrcTenant => Some((Dimension::SrcNet, NetAttr::Tenant)),
            Dimension::DstTenant => Some((Dimension::DstNet, NetAttr::Tenant)),
            Dimension::SrcRole => Some((Dimension::SrcNet, NetAttr::Role)),
            Dimension::DstRole => Some((Dimension::DstNet, NetAttr::Role)),
            _ => None,
        }
    }

    /// Whether the keys are cities (whose GeoIP load reads the city records).
    pub const fn is_city(self) -> bool {
        matches!(self, Dimension::SrcCity | Dimension::DstCity)
    }

    /// Parses a dimension name.
    pub fn from_name(s: &str) -> Option<Dimension> {
        Dimension::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// The key of a record in this dimension.
    #[inline]
    pub fn key(self, r: &FlowRecord) -> Key {
        match self {
            Dimension::Total => Key::new(Ip::UNSPECIFIED, 0),
            Dimension::SrcIp => Key::new(r.src, 0),
            Dimension::DstIp => Key::new(r.dst, 0),
            Dimension::SrcPort => Key::new(Ip::UNSPECIFIED, (r.src_port as u32) << 8 | r.proto as u32),
            Dimension::DstPort => Key::new(Ip::UNSPECIFIED, (r.dst_port as u32) << 8 | r.proto as u32),
            Dimension::Proto => Key::new(Ip::UNSPECIFIED, r.proto as u32),
            Dimension::Exporter => Key::new(r.exporter, 0),
            Dimension::ExporterInIf => Key::new(r.exporter, r.in_if),
            Dimension::ExporterOutIf => Key::new(r.exporter, r.out_if),
            Dimension::SrcAs => Key::new(Ip::UNSPECIFIED, r.src_as),
            Dimension::DstAs => Key::new(Ip::UNSPECIFIED, r.dst_as),
            Dimension::SrcCountry => Key::new(Ip::UNSPECIFIED, r.src_country as u32),
            Dimension::DstCountry => Key::new(Ip::UNSPECIFIED, r.dst_country as u32),
            Dimension::SrcNet => Key::new(Ip::UNSPECIFIED, r.src_net as u32),
            Dimension::DstNet => Key::new(Ip::UNSPECIFIED, r.dst_net as u32),
            Dimension::Boundary => Key::new(Ip::UNSPECIFIED, r.boundary as u32),
            Dimension::SrcCity => Key::new(Ip::UNSPECIFIED, r.src_city),
            Dimension::DstCity => Key::new(Ip::UNSPECIFIED, r.dst_city),
            // derived on the I/O core ([`Dimension::derived_from`]); shards never aggregate them
            Dimension::SrcSite
            | Dimension::DstSite
            | Dimension::SrcTenant
            | Dimension::DstTenant
            | Dimension::SrcRole
            | Dimension::DstRole => Key::OTHER,
        }
    }

    /// The items whose distinct counts this dimension tracks per key, if any (one per
    /// [`Sketch`](crate::model::hll::Sketch) lane): destination endpoints (address, port and
    /// protocol) and destination ports per source address (scans; a host's port mix), sources
    /// and destination ports per destination address (fan-in; ports served or probed).
    #[inline]
    pub fn distinct_items(self, r: &FlowRecord) -> Option<[u128; 2]> {
        let port = (r.dst_port as u128) << 8 | r.proto as u128;
        match self {
            // destination endpoints: many ports (vertical scan) or many addresses on one port
            // (horizontal scan) both show
            Dimension::SrcIp => Some([r.dst.0 ^ port.rotate_left(64), port]),
            // sources of an address (fan-in)
            Dimension::DstIp => Some([r.src.0, port]),
            _ => None,
        }
    }

    /// Names of the distinct-count fields in outputs (per lane), if this dimension has them.
    pub const fn distinct_names(self) -> Option<[&'static str; 2]> {
        match self {
            Dimension::SrcIp => Some(["distinct_dst_endpoints", "distinct_dst_ports"]),
            Dimension::DstIp => Some(["distinct_src_ips", "distinct_dst_ports"]),
            _ => None,
        }
    }

    /// Formats a key of this dimension for humans and outputs.
    pub fn format_key(self, k: &Key) -> String {
        if k.is_other() {
            return "other".to_string();
        }
        match self {
            Dimension::Total => "total".to_string(),
            Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter => k.ip.to_string(),
            Dimension::SrcPort | Dimension::DstPort => {
                format!("{}/{}", k.num >> 8, proto_name((k.num & 0xff) as u8))
            }
            Dimension::Proto => proto_name(k.num as u8).to_string(),
            Dimension::ExporterInIf | Dimension::ExporterOutIf => format!("{}:{}", k.ip, k.num),
            Dimension::SrcAs | Dimension::DstAs => format!("AS{}", k.num),
            Dimension::SrcCountry | Dimension::DstCountry => country_name(k.num as u16),
            Dimension::SrcNet | Dimension::DstNet => match names::name(k.num as u16) {
                Some(n) => n.to_string(),
                None if k.num == 0 => "unknown".into(),
                None => format!("net#{}", k.num),
            },
            Dimension::Boundary => Boundary::name_of(k.num).to_string(),
            Dimension::SrcCity | Dimension::DstCity => match (k.num, names::city(k.num)) {
                (0, _) => "unknown".into(),
                (id, Some(label)) => format!("{label} ({id})"),
                (id, None) => format!("city ({id})"),
            },
            Dimension::SrcSite
            | Dimension::DstSite
            | Dimension::SrcTenant
            | Dimension::DstTenant
            | Dimension::SrcRole
            | Dimension::DstRole => match names::name(k.num as u16) {
                Some(n) => n.to_string(),
                None if k.num == 0 => "unknown".into(),
                None => format!("#{}", k.num),
            },
        }
    }

    /// Parses a key as [`Dimension::format_key`] writes it (`None`: not a key of this
    /// dimension, or a name no table gave an id).
    pub fn parse_key(self, s: &str) -> Option<Key> {
        if s == "other" {
            return Some(Key::OTHER);
        }
        let num = |n: u32| Some(Key::new(Ip::UNSPECIFIED, n));
        let proto = |p: &str| -> Option<u32> {
            Some(match p {
                "icmp" => 1,
                "tcp" => 6,
                "udp" => 17,
                "gre" => 47,
                "esp" => 50,
                "icmpv6" => 58,
                "sctp" => 132,
                n => n.parse().ok()?,
            })
        };
        let named = |s: &str| match s {
            "unknown" => num(0),
            n => num(u32::from(names::id_of(n)?)),
        };
        match self {
            Dimension::Total => num(0),
            Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter => {
                Some(Key::new(Ip::from(s.parse::<std::net::IpAddr>().ok()?), 0))
            }
            Dimension::SrcPort | Dimension::DstPort => {
                let (port, p) = s.split_once('/')?;
                num(port.parse::<u32>().ok()? << 8 | proto(p)?)
            }
            Dimension::Proto => num(proto(s)?),
            Dimension::ExporterInIf | Dimension::ExporterOutIf => {
                let (ip, i) = s.rsplit_once(':')?;
                Some(Key::new(Ip::from(ip.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok()?), i.parse().ok()?))
            }
            Dimension::SrcAs | Dimension::DstAs => num(s.trim_start_matches("AS").parse().ok()?),
            Dimension::SrcCountry | Dimension::DstCountry => match s {
                "unknown" => num(0),
                c => match country_code(c) {
                    0 => None,
                    code => num(u32::from(code)),
                },
            },
            Dimension::Boundary => num((0..=4).find(|&v| Boundary::name_of(v) == s)?),
            // "Paris, FR (2988507)", or the bare GeoNames id
            Dimension::SrcCity | Dimension::DstCity => match s {
                "unknown" => num(0),
                _ => {
                    let id = s.rsplit_once('(').map_or(s, |(_, id)| id.trim_end_matches(')'));
                    num(id.trim().parse().ok()?)
                }
            },
            Dimension::SrcNet
            | Dimension::DstNet
            | Dimension::SrcSite
            | Dimension::DstSite
            | Dimension::SrcTenant
            | Dimension::DstTenant
            | Dimension::SrcRole
            | Dimension::DstRole => named(s),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A short protocol name for the common protocols, else the number.
pub fn proto_name(p: u8) -> std::borrow::Cow<'static, str> {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        n => n.to_string().into(),
    }
}

/// A dimension key: an address and a number, interpreted per [`Dimension`]. The `other` key
/// collects everything a bounded table folded away.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct Key {
    /// Address part (unspecified where the dimension has none).
    pub ip: Ip,
    /// Number part (port<<8|proto, interface, AS, protocol).
    pub num: u32,
    /// 1 for the `other` key, else 0.
    pub other: u8,
}

impl Key {
    /// A regular key.
    #[inline]
    pub const fn new(ip: Ip, num: u32) -> Key {
        Key { ip, num, other: 0 }
    }
    /// The `other` key of every dimension.
    pub const OTHER: Key = Key { ip: Ip(0), num: 0, other: 1 };
    /// Whether this is the `other` key.
    #[inline]
    pub const fn is_other(&self) -> bool {
        self.other != 0
    }
    /// A 64-bit hash, stable across processes and shard counts (decides the owner shard).
    #[inline]
    pub fn stable_hash(&self) -> u64 {
        let a = mix64((self.ip.0 as u64) ^ mix64((self.ip.0 >> 64) as u64));
        mix64(a ^ ((self.num as u64) << 8 | self.other as u64))
    }
}

/// Advances a xorshift64 state and returns it (cheap sampling randomness; `state` ≠ 0).
#[inline]
pub fn xorshift64(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A strong 64-bit finaliser (splitmix64/murmur3 fmix).
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One finished 1-second aggregate of one key of one dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollup {
    /// Window start, Unix seconds (arrival time).
    pub second: u64,
    /// Dimension.
    pub dimension: Dimension,
    /// Key within the dimension.
    pub key: Key,
    /// Octets (sampling-scaled).
    pub bytes: u64,
    /// Packets (sampling-scaled).
    pub packets: u64,
    /// Flow records.
    pub flows: u64,
    /// Distinct count (destination endpoints per source, sources per destination address), if
    /// tracked.
    pub distinct: Option<u64>,
    /// Distinct destination ports (with protocol) of the key, where `distinct` is tracked.
    pub distinct_ports: Option<u64>,
    /// The second's distinct-count sketch (`src_ip` rows only): layer 3 unions them over its
    /// interval, and the OpenSearch rollups keep it so a range read back counts the same way.
    pub sketch: Option<Box<hll::Sketch>>,
    /// The interface's name, description and speed (`exporter_in_if` / `exporter_out_if` rows,
    /// set on the I/O core where SNMP or the config knows them).
    pub interface: Option<std::sync::Arc<Interface>>,
    /// The AS's name (`src_as` / `dst_as` rows, set on the I/O core from the ASN database's
    /// `autonomous_system_organization`).
    pub as_name: Option<std::sync::Arc<str>>,
    /// The network's role, site and tenant from the networks file (`src_net` / `dst_net` rows,
    /// set on the I/O core).
    pub net: Option<std::sync::Arc<NetInfo>>,
}

/// Which attribute of a named network a derived dimension keys on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetAttr {
    /// [`NetInfo::role`].
    Role,
    /// [`NetInfo::site`].
    Site,
    /// [`NetInfo::tenant`].
    Tenant,
}

/// Role, site and tenant of a named network (the networks file's free-form columns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetInfo {
    /// Role (e.g. `servers`).
    pub role: String,
    /// Site (e.g. `dc1`).
    pub site: String,
    /// Tenant (e.g. a customer).
    pub tenant: String,
}

impl NetInfo {
    /// One attribute ("" where the file left it empty).
    pub fn get(&self, a: NetAttr) -> &str {
        match a {
            NetAttr::Role => &self.role,
            NetAttr::Site => &self.site,
            NetAttr::Tenant => &self.tenant,
        }
    }
}

impl Rollup {
    /// A row of counts only: no distinct counts, sketch or names (those are set where known).
    pub fn new(second: u64, dimension: Dimension, key: Key, bytes: u64, packets: u64, flows: u64) -> Rollup {
        Rollup {
            second,
            dimension,
            key,
            bytes,
            packets,
            flows,
            distinct: None,
            distinct_ports: None,
            sketch: None,
            interface: None,
            as_name: None,
            net: None,
        }
    }

    /// A copy without the sketch, for what keeps rollups and only sums them (the HTTP hot
    /// window holds 300 s of them: 160 bytes a `src_ip` row it does not need).
    pub fn without_sketch(&self) -> Rollup {
        Rollup {
            second: self.second,
            dimension: self.dimension,
            key: self.key,
            bytes: self.bytes,
            packets: self.packets,
            flows: self.flows,
            distinct: self.distinct,
            distinct_ports: self.distinct_ports,
            sketch: None,
            interface: self.interface.clone(),
            as_name: self.as_name.clone(),
            net: self.net.clone(),
        }
    }
}

/// What is known of one exporter interface (SNMP IF-MIB or the config).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Interface {
    /// `ifName` (or the configured name).
    pub name: String,
    /// `ifAlias`: the operator's description.
    pub alias: String,
    /// `ifHighSpeed`, Mbit/s (0 = unknown).
    pub speed_mbps: u64,
}

/// The metric a detector watches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Octets per second.
    Bytes,
    /// Packets per second.
    Packets,
    /// Flow records per second.
    Flows,
    /// Distinct count per second (destination endpoints per source, sources per destination).
    Distinct,
    /// TCP connection attempts nobody answered (SYN without ACK) per second, per source.
    Unanswered,
}

impl Metric {
    /// Every metric, in state order.
    pub const ALL: [Metric; 5] = [Metric::Bytes, Metric::Packets, Metric::Flows, Metric::Distinct, Metric::Unanswered];
    /// Stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Metric::Bytes => "bytes",
            Metric::Packets => "packets",
            Metric::Flows => "flows",
            Metric::Distinct => "distinct",
            Metric::Unanswered => "unanswered",
        }
    }
}

/// What kind of deviation an alert reports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Far above the baseline in one second.
    Spike,
    /// Far below the baseline (e.g. an interface went silent).
    Drop,
    /// A sustained shift found by CUSUM.
    LevelShift,
    /// A key never seen before that stays active (a host serving a port it never used).
    NewKey,
}

impl AlertKind {
    /// Stable name, as in every output.
    pub const fn name(self) -> &'static str {
        match self {
            AlertKind::Spike => "spike",
            AlertKind::Drop => "drop",
            AlertKind::LevelShift => "level_shift",
            AlertKind::NewKey => "new_key",
        }
    }
}

/// One anomaly, from any detection layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Second the anomaly was seen (Unix seconds).
    pub second: u64,
    /// Detection layer (1 = inline on the shards).
    pub layer: u8,
    /// Dimension of the key.
    pub dimension: Dimension,
    /// The key.
    pub key: Key,
    /// Metric.
    pub metric: Metric,
    /// Kind of deviation.
    pub kind: AlertKind,
    /// Observed value (per second, on the detector's signal).
    pub value: f64,
    /// Baseline (expected) value per second.
    pub baseline: f64,
    /// Calibrated anomaly score in [0, 1].
    pub score: f64,
    /// Standardised deviation on the transformed scale.
    pub z: f64,
}

impl Alert {
    /// A human-readable reason.
    pub fn reason(&self) -> String {
        let dir = match self.kind {
            AlertKind::Spike => "above",
            AlertKind::Drop => "below",
            AlertKind::LevelShift => "shifted from",
            AlertKind::NewKey => {
                return format!(
                    "{} is new (never seen before) and stays active: {} {}/s on average (score={:.3})",
                    self.dimension.format_key(&self.key),
                    fmt_num(self.value),
                    self.metric.name(),
                    self.score
                )
            }
        };
        format!(
            "{} {} {}/s is {} baseline {:.0}/s (z={:.1}, score={:.3})",
            self.dimension.format_key(&self.key),
            self.metric.name(),
            fmt_num(self.value),
            dir,
            self.baseline,
            self.z,
            self.score
        )
    }
}

/// A number for humans: 1.2k, 3.40M, 1.05G.
pub fn fmt_num(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_roundtrip_v4_v6() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let ip = Ip::from(a);
        assert!(ip.is_v4());
        assert_eq!(ip.to_std(), a);
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let ip6 = Ip::from(b);
        assert!(!ip6.is_v4());
        assert_eq!(ip6.to_string(), "2001:db8::1");
    }

    #[test]
    fn key_formats() {
        let r = FlowRecord { dst_port: 443, proto: 6, ..Default::default() };
        assert_eq!(Dimension::DstPort.format_key(&Dimension::DstPort.key(&r)), "443/tcp");
        assert_eq!(Dimension::DstPort.format_key(&Key::OTHER), "other");
        assert_eq!(Dimension::from_name("exporter_in_if"), Some(Dimension::ExporterInIf));
    }
}
