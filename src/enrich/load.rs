//! Building a [`Table`]: every network of each `.mmdb` (read once with the `maxminddb` crate,
//! one decode per distinct record) and every line of the networks file become address ranges;
//! the sources are layered into one sorted, non-overlapping range list (each range carries the
//! country, AS, network and boundary that hold over all of it) and adjacent ranges with equal
//! answers are merged.
//!
//! Errors name the file, the line (networks file) and the fix. Runs off the shards.

use super::{Answer, EnrichConfig, LoadStats, Network, Table};
use crate::model::{country_code, names, prefix_range};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a table could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A file could not be read.
    #[error("{path}: cannot read: {source} (fix: point enrich.{field} at a readable file)")]
    Read {
        /// Config field.
        field: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A `.mmdb` file is not a MaxMind DB.
    #[error("{path}: not a MaxMind DB file: {msg} (fix: point enrich.{field} at a .mmdb file)")]
    Mmdb {
        /// Config field.
        field: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        msg: String,
    },
    /// City dimensions are configured and the GeoIP database names no city.
    #[error("{path}: no city in this database (fix: point enrich.geoip at a City database, e.g. GeoLite2-City, or remove src_city/dst_city from aggregate.dimensions)")]
    NoCities {
        /// File.
        path: PathBuf,
    },
    /// A line of the networks file is wrong.
    #[error("{path}:{line}: {msg} (fix: {fix})")]
    Networks {
        /// File.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
        /// What to do.
        fix: &'static str,
    },
}

/// One source's answer over a range (inclusive bounds on the `u128` address space).
#[derive(Clone, Copy, Debug)]
struct Span<T> {
    start: u128,
    end: u128,
    val: T,
}

/// Reads `[enrich]`'s files into one table.
pub fn load(cfg: &EnrichConfig) -> Result<Table, LoadError> {
    let t0 = Instant::now();
    let mut stats = LoadStats::default();
    let mut sources: Vec<Vec<Span<Answer>>> = Vec::new();
    let mut as_names = rustc_hash::FxHashMap::default();
    if let Some(p) = &cfg.geoip {
        let mut cities = cfg.cities.then(rustc_hash::FxHashMap::default);
        let spans = read_mmdb(p, "geoip", &mut as_names, cities.as_mut())?;
        stats.geoip_networks = spans.len() as u64;
        sources.push(spans);
        if let Some(c) = cities {
            if c.is_empty() {
                return Err(LoadError::NoCities { path: p.clone() });
            }
            stats.cities = c.len() as u64;
            names::set_cities(c);
        }
    }
    if let Some(p) = &cfg.asn {
        let spans = read_mmdb(p, "asn", &mut as_names, None)?;
        stats.asn_networks = spans.len() as u64;
        sources.push(spans);
    }
    let mut networks = Vec::new();
    if let Some(p) = &cfg.networks {
        let text = std::fs::read_to_string(p).map_err(|e| LoadError::Read {
            field: "networks",
            path: p.clone(),
            source: e,
        })?;
        let (nets, spans) = parse_networks(&text, p)?;
        stats.networks = nets.len() as u64;
        networks = nets;
        sources.push(spans);
    }
    let ranges = layer(&sources);
    let mut t = Table::from_ranges(&ranges, cfg.networks.is_some());
    for n in &networks {
        let Some(id) = names::id_of(&n.name) else { continue };
        if !(n.role.is_empty() && n.site.is_empty() && n.tenant.is_empty()) {
            // the derived dimensions key on these by id
            for v in [&n.role, &n.site, &n.tenant].into_iter().filter(|v| !v.is_empty()) {
                names::intern(v);
            }
            t.net_info.entry(id).or_insert_with(|| {
                std::sync::Arc::new(crate::model::NetInfo {
                    role: n.role.clone(),
                    site: n.site.clone(),
                    tenant: n.tenant.clone(),
                })
            });
        }
    }
    t.networks = networks;
    stats.as_names = as_names.len() as u64;
    t.as_names = as_names;
    stats.ranges = t.stats.ranges;
    stats.load_ms = t0.elapsed().as_millis() as u64;
    t.stats = stats;
    Ok(t)
}

/// Every network of a `.mmdb` with a country or an AS number (or a city, when `cities` is
/// given), as spans (adjacent spans with the same answer merged); each AS's
/// `autonomous_system_organization` goes into `as_names`, each city's label (`Paris, FR`) into
/// `cities`.
fn read_mmdb(
    path: &Path,
    field: &'static str,
    as_names: &mut rustc_hash::FxHashMap<u32, std::sync::Arc<str>>,
    mut cities: Option<&mut rustc_hash::FxHashMap<u32, std::sync::Arc<str>>>,
) -> Result<Vec<Span<Answer>>, LoadError> {
    use maxminddb::{PathElement, Reader, WithinOptions};
    let bytes = std::fs::read(path).map_err(|e| LoadError::Read { field, path: path.into(), source: e })?;
    let bad = |e: maxminddb::MaxMindDbError| LoadError::Mmdb { field, path: path.into(), msg: e.to_string() };
    let reader = Reader::from_source(bytes).map_err(bad)?;
    let mut roots: Vec<ipnetwork::IpNetwork> = vec!["0.0.0.0/0".parse().expect("literal")];
    if reader.metadata().ip_version == 6 {
        roots.push("::/0".parse().expect("literal"));
    }
    let mut cache: rustc_hash::FxHashMap<usize, Answer> = Default::default();
    let mut out: Vec<Span<Answer>> = Vec::new();
    for root in roots {
        for item in reader.within(root, WithinOptions::default()).map_err(bad)? {
            let item = item.map_err(bad)?;
            let net = item.network().map_err(bad)?;
            // the IPv4 subtree is read through 0.0.0.0/0; skip it (and its aliases) under ::/0
            if let (ipnetwork::IpNetwork::V6(n), true) = (net, root.is_ipv6()) {
                let a = u128::from(n.network());
                if a >> 32 == 0 || a >> 32 == 0xffff {
                    continue;
                }
            }
            let off = item.offset();
            let answer = match off.and_then(|o| cache.get(&o)) {
                Some(&a) => a,
                None => {
                    let cc: Option<&str> =
                        item.decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")]).map_err(bad)?;
                    // GeoLite2 stores it as uint32; other writers pick the smallest type
                    let at = [PathElement::Key("autonomous_system_number")];
                    let asn = match item.decode_path::<u32>(&at) {
                        Ok(a) => a,
                        Err(_) => item
                            .decode_path::<u16>(&at)
                            .map(|a| a.map(u32::from))
                            .or_else(|_| item.decode_path::<u64>(&at).map(|a| a.and_then(|a| u32::try_from(a).ok())))
                            .map_err(bad)?,
                    };
                    let mut a =
                        Answer { country: cc.map_or(0, country_code), asn: asn.unwrap_or(0), ..Default::default() };
                    if let Some(cities) = cities.as_deref_mut() {
                        let id: Option<u32> = item
                            .decode_path(&[PathElement::Key("city"), PathElement::Key("geoname_id")])
                            .map_err(bad)?;
                        if let Some(id) = id.filter(|&id| id != 0) {
                            a.city = id;
                            if let std::collections::hash_map::Entry::Vacant(v) = cities.entry(id) {
                                let name: Option<&str> = item
                                    .decode_path(&[
                                        PathElement::Key("city"),
                                        PathElement::Key("names"),
                                        PathElement::Key("en"),
                                    ])
                                    .map_err(bad)?;
                                let name = name.map(str::trim).filter(|n| !n.is_empty()).unwrap_or("city");
                                let label = match cc {
                                    Some(cc) => format!("{name}, {cc}"),
                                    None => name.to_string(),
                                };
                                v.insert(std::sync::Arc::from(label));
                            }
                        }
                    }
                    if a.asn != 0 && !as_names.contains_key(&a.asn) {
                        let org: Option<&str> =
                            item.decode_path(&[PathElement::Key("autonomous_system_organization")]).map_err(bad)?;
                        if let Some(o) = org.map(str::trim).filter(|o| !o.is_empty()) {
                            as_names.insert(a.asn, std::sync::Arc::from(o));
                        }
                    }
                    if let Some(off) = off {
                        cache.insert(off, a);
                    }
                    a
                }
            };
            if answer == Answer::default() {
                continue;
            }
            let Some((start, end)) = prefix_range(net.network(), net.prefix()) else { continue };
            match out.last_mut() {
                Some(l) if l.val == answer && l.end.checked_add(1) == Some(start) => l.end = end,
                _ => out.push(Span { start, end, val: answer }),
            }
        }
    }
    out.sort_by_key(|s| s.start);
    Ok(out)
}

/// Parses a networks file: `prefix,name[,boundary[,role[,site[,tenant]]]]` per line, `#`
/// comments and blank lines ignored, an optional header line starting with `prefix`. Nested
/// prefixes are allowed: the longest match wins. `boundary` is `internal` (default) or
/// `external`.
fn parse_networks(text: &str, path: &Path) -> Result<(Vec<Network>, Vec<Span<Answer>>), LoadError> {
    let err = |line: usize, msg: String, fix: &'static str| LoadError::Networks { path: path.into(), line, msg, fix };
    let mut nets = Vec::new();
    let mut prefixes: Vec<(u128, u128, Answer)> = Vec::new();
    let mut seen: rustc_hash::FxHashMap<(u128, u128), usize> = Default::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || (nets.is_empty() && prefixes.is_empty() && l.starts_with("prefix")) {
            continue;
        }
        let f: Vec<&str> = l.split(',').map(str::trim).collect();
        if f.len() < 2 || f.len() > 6 {
            return Err(err(
                line,
                format!("{} fields", f.len()),
                "write prefix,name[,boundary[,role[,site[,tenant]]]]",
            ));
        }
        let (addr, len) = f[0].split_once('/').unwrap_or((f[0], ""));
        let ip: IpAddr = addr.parse().map_err(|_| {
            err(line, format!("{:?} is not an address", f[0]), "write a prefix like 10.0.0.0/8 or 2001:db8::/32")
        })?;
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        let len: u8 = if len.is_empty() {
            bits
        } else {
            len.parse().map_err(|_| {
                err(line, format!("bad prefix length in {:?}", f[0]), "write /0 to /32 (IPv4) or /0 to /128 (IPv6)")
            })?
        };
        let (start, end) = prefix_range(ip, len).ok_or_else(|| {
            err(
                line,
                format!("prefix length {len} is too long in {:?}", f[0]),
                "write /0 to /32 (IPv4) or /0 to /128 (IPv6)",
            )
        })?;
        if let Some(first) = seen.insert((start, end), line) {
            return Err(err(
                line,
                format!("{} is listed twice (first on line {first})", f[0]),
                "keep one line per prefix",
            ));
        }
        if f[1].is_empty() {
            return Err(err(line, "empty name".into(), "give every network a name"));
        }
        let internal = match f.get(2).copied().unwrap_or("") {
            "" | "internal" => true,
            "external" => false,
            other => return Err(err(line, format!("boundary {other:?}"), "write internal or external")),
        };
        let id = names::intern(f[1])
            .ok_or_else(|| err(line, "too many distinct network names".into(), "use at most 65,535 names"))?;
        let get = |k: usize| f.get(k).map_or(String::new(), |s| s.to_string());
        nets.push(Network {
            prefix: f[0].to_string(),
            name: f[1].to_string(),
            internal,
            role: get(3),
            site: get(4),
            tenant: get(5),
        });
        prefixes.push((start, end, Answer { net: id, internal, ..Default::default() }));
    }
    Ok((nets, flatten_nested(prefixes)))
}

/// Nested prefixes (CIDR ranges are either nested or disjoint) as non-overlapping spans where
/// each address has its longest matching prefix's answer.
fn flatten_nested(mut p: Vec<(u128, u128, Answer)>) -> Vec<Span<Answer>> {
    // outer before inner at equal starts
    p.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut out: Vec<Span<Answer>> = Vec::new();
    let mut stack: Vec<(u128, Answer)> = Vec::new(); // (end, answer)
    let mut cur: u128 = 0; // next address not yet emitted
    let mut done = false; // emitted up to u128::MAX
    let emit = |out: &mut Vec<Span<Answer>>, from: u128, to: u128, val: Answer| {
        if from <= to {
            out.push(Span { start: from, end: to, val });
        }
    };
    for (start, end, val) in p {
        while let Some(&(top_end, top)) = stack.last() {
            if top_end >= start {
                break;
            }
            if !done {
                emit(&mut out, cur, top_end, top);
            }
            match top_end.checked_add(1) {
                Some(n) => cur = cur.max(n),
                None => done = true,
            }
            stack.pop();
        }
        if let Some(&(_, top)) = stack.last() {
            if !done && cur < start {
                emit(&mut out, cur, start - 1, top);
            }
        }
        cur = start;
        stack.push((end, val));
    }
    while let Some((top_end, top)) = stack.pop() {
        if !done {
            emit(&mut out, cur, top_end, top);
        }
        match top_end.checked_add(1) {
            Some(n) => cur = cur.max(n),
            None => done = true,
        }
    }
    out
}

/// Layers the sources (each sorted and non-overlapping) into one range list over the whole
/// address space: per elementary range, the first non-zero country, city and AS over the sources in
/// order (GeoIP, then ASN) and the network of the networks file; adjacent equal answers merged.
fn layer(sources: &[Vec<Span<Answer>>]) -> Vec<(u128, Answer)> {
    let mut bounds: Vec<u128> = vec![0];
    for s in sources {
        for sp in s {
            bounds.push(sp.start);
            if let Some(n) = sp.end.checked_add(1) {
                bounds.push(n);
            }
        }
    }
    bounds.sort_unstable();
    bounds.dedup();
    let mut at = vec![0usize; sources.len()];
    let mut out: Vec<(u128, Answer)> = Vec::with_capacity(bounds.len());
    for p in bounds {
        let mut a = Answer::default();
        for (si, s) in sources.iter().enumerate() {
            while at[si] < s.len() && s[at[si]].end < p {
                at[si] += 1;
            }
            if let Some(sp) = s.get(at[si]).filter(|sp| sp.start <= p) {
                let v = sp.val;
                if a.country == 0 {
                    a.country = v.country;
                }
                if a.asn == 0 {
                    a.asn = v.asn;
                }
                if a.city == 0 {
                    a.city = v.city;
                }
                if v.net != 0 {
                    a.net = v.net;
                    a.internal = v.internal;
                }
            }
        }
        match out.last() {
            Some(&(_, last)) if last == a => {}
            _ => out.push((p, a)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Ip;

    fn ip(s: &str) -> Ip {
        Ip::from(s.parse::<IpAddr>().unwrap())
    }

    fn table(text: &str) -> Table {
        let (nets, spans) = parse_networks(text, Path::new("nets.csv")).unwrap();
        let mut t = Table::from_ranges(&layer(&[spans]), true);
        t.networks = nets;
        t
    }

    #[test]
    fn the_longest_prefix_wins_in_both_families() {
        let t = table(
            "prefix,name,boundary\n10.0.0.0/8,corp\n10.1.0.0/16,lab\n10.1.2.0/24,dmz,external\n\
             # comment\n2001:db8::/32,v6corp\n2001:db8:1::/48,v6lab\n192.0.2.7,one-host\n",
        );
        let net = |s: &str| names::name(t.lookup(ip(s)).net).map(|n| n.to_string());
        assert_eq!(net("10.0.0.1").as_deref(), Some("corp"));
        assert_eq!(net("10.1.0.1").as_deref(), Some("lab"));
        assert_eq!(net("10.1.2.200").as_deref(), Some("dmz"));
        assert!(!t.lookup(ip("10.1.2.200")).internal);
        assert_eq!(net("10.1.3.0").as_deref(), Some("lab"));
        assert_eq!(net("10.2.0.0").as_deref(), Some("corp"));
        assert_eq!(net("10.255.255.255").as_deref(), Some("corp"));
        assert_eq!(net("11.0.0.0"), None);
        assert_eq!(net("9.255.255.255"), None);
        assert_eq!(net("192.0.2.7").as_deref(), Some("one-host"));
        assert_eq!(net("192.0.2.8"), None);
        assert_eq!(net("2001:db8:1:ffff::1").as_deref(), Some("v6lab"));
        assert_eq!(net("2001:db8:2::1").as_deref(), Some("v6corp"));
        assert_eq!(net("2001:db9::1"), None);
        assert_eq!(t.networks.len(), 6);
    }

    #[test]
    fn bad_lines_name_the_line_and_the_fix() {
        let e = |text: &str| parse_networks(text, Path::new("n.csv")).unwrap_err().to_string();
        assert!(
            e("10.0.0.0/8,a\n10.0.0.0/33,b\n").contains("n.csv:2: prefix length 33"),
            "{}",
            e("10.0.0.0/8,a\n10.0.0.0/33,b\n")
        );
        assert!(e("10.0.0.0/8\n").contains("n.csv:1: 1 fields"));
        assert!(e("banana/8,a\n").contains("is not an address"));
        assert!(e("10.0.0.0/8,a,sideways\n").contains("boundary \"sideways\""));
        assert!(e("10.0.0.0/8,a\n10.0.0.0/8,b\n").contains("listed twice (first on line 1)"));
    }

    #[test]
    fn whole_space_and_edges_flatten() {
        let t = table("0.0.0.0/0,world4\n::/0,world6\n255.255.255.255/32,last\n");
        assert_eq!(names::name(t.lookup(ip("255.255.255.255")).net).as_deref(), Some("last"));
        assert_eq!(names::name(t.lookup(ip("255.255.255.254")).net).as_deref(), Some("world4"));
        assert_eq!(names::name(t.lookup(ip("::1")).net).as_deref(), Some("world6"));
        assert_eq!(names::name(t.lookup(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).net).as_deref(), Some("world6"));
    }
}
