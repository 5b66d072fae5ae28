//! Record filters across dimensions: `src_country=CN; dst_port=443/tcp|80/tcp; src_ip=10.0.0.0/8;
//! dst_site!=dc1` — the slice of traffic an operator asks about ("the destinations of traffic
//! from one country", "one tenant's DNS"), applied to records before they are aggregated, so
//! every dimension's rows are those of the slice (`flowshard query flows`, `replay --where`).
//!
//! Terms are separated by `;` and all must hold; a term is `dimension=key` (or `!=`), with
//! alternatives separated by `|`; keys are written as the outputs write them
//! ([`Dimension::format_key`]); address dimensions also take prefixes (`10.0.0.0/8`,
//! `2001:db8::/32`). Site, tenant and role terms become sets of network ids when the filter is
//! built (a network's attributes come from the networks file, which the caller passes as a
//! resolver), so matching a record is a few integer compares.
//!
//! May depend on: nothing outside `model`. Lives on: the replay and query threads (the shard
//! code path it runs in there), the HTTP query thread.

use super::{Dimension, FlowRecord, Ip, Key, NetAttr};

/// Why a filter did not parse; the message names the term and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("filter term {term:?}: {msg} (fix: {fix})")]
pub struct FilterError {
    /// The term as written.
    pub term: String,
    /// What is wrong.
    pub msg: String,
    /// What to write instead.
    pub fix: String,
}

/// One alternative of a term.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Alt {
    /// The record's key in the dimension equals this one.
    Key(Key),
    /// The record's address is in `[start, end]` (address dimensions).
    Range(u128, u128),
}

/// One `dimension=key|key` term.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    dim: Dimension,
    negate: bool,
    alts: Vec<Alt>,
}

/// A parsed filter: every term must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
    text: String,
}

impl Filter {
    /// Parses `text`; `nets(attr, value)` gives the network ids (the `src_net` / `dst_net`
    /// keys) whose site, tenant or role is `value` (an empty list: no network has it).
    pub fn parse(text: &str, nets: &dyn Fn(NetAttr, &str) -> Vec<u16>) -> Result<Filter, FilterError> {
        let mut terms = Vec::new();
        for raw in text.split(';').map(str::trim).filter(|t| !t.is_empty()) {
            let bad = |msg: String, fix: &str| FilterError { term: raw.to_string(), msg, fix: fix.to_string() };
            let (lhs, rhs, negate) = match raw.split_once("!=") {
                Some((l, r)) => (l, r, true),
                None => match raw.split_once('=') {
                    Some((l, r)) => (l, r, false),
                    None => return Err(bad("no '='".into(), "write dimension=key, e.g. src_country=DE")),
                },
            };
            let lhs = lhs.trim();
            let dim = Dimension::from_name(lhs).ok_or_else(|| {
                bad(format!("{lhs:?} is not a dimension"), "use a dimension name, e.g. src_ip, dst_port, src_country")
            })?;
            if dim == Dimension::Total {
                return Err(bad("total has one key".into(), "filter on another dimension"));
            }
            let (dim, lookup) = match dim.derived_from() {
                Some((from, attr)) => (from, Some(attr)),
                None => (dim, None),
            };
            let mut alts = Vec::new();
            for v in rhs.split('|').map(str::trim) {
                if let Some(attr) = lookup {
                    let ids = if v == "unknown" { vec![0] } else { nets(attr, v) };
                    alts.extend(ids.into_iter().map(|id| Alt::Key(Key::new(Ip::UNSPECIFIED, u32::from(id)))));
                    continue;
                }
                let is_addr = matches!(dim, Dimension::SrcIp | Dimension::DstIp | Dimension::Exporter);
                if let (true, Some((a, len))) = (is_addr, v.split_once('/')) {
                    let ip: std::net::IpAddr = a
                        .parse()
                        .map_err(|_| bad(format!("{a:?} is not an address"), "write a prefix like 10.0.0.0/8"))?;
                    let (lo, hi) = len.parse().ok().and_then(|l| super::prefix_range(ip, l)).ok_or_else(|| {
                        bad(format!("bad prefix length {len:?}"), "write /0 to /32 (IPv4) or /0 to /128 (IPv6)")
                    })?;
                    alts.push(Alt::Range(lo, hi));
                    continue;
                }
                let key = dim.parse_key(v).ok_or_else(|| {
                    bad(
                        format!("{v:?} is not a key of {}", dim.name()),
                        "write the key as the outputs show it (e.g. 443/tcp, AS64500, DE, a network name)",
                    )
                })?;
                alts.push(Alt::Key(key));
            }
            terms.push(Term { dim, negate, alts });
        }
        Ok(Filter { terms, text: text.trim().to_string() })
    }

    /// Whether nothing is filtered out.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The filter as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether a record (enriched, where the terms need it) is in the slice.
    #[inline]
    pub fn matches(&self, r: &FlowRecord) -> bool {
        self.terms.iter().all(|t| {
            let k = t.dim.key(r);
            let hit = t.alts.iter().any(|a| match *a {
                Alt::Key(want) => k == want,
                Alt::Range(lo, hi) => k.ip.0 >= lo && k.ip.0 <= hi,
            });
            hit != t.negate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ip {
        Ip::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    fn none(_: NetAttr, _: &str) -> Vec<u16> {
        Vec::new()
    }

    #[test]
    fn terms_and_alternatives_prefixes_and_negation() {
        let r = FlowRecord {
            src: ip("10.1.2.3"),
            dst: ip("2001:db8::1"),
            dst_port: 443,
            proto: 6,
            src_country: super::super::country_code("DE"),
            src_net: 7,
            ..Default::default()
        };
        let m = |f: &str, nets: &dyn Fn(NetAttr, &str) -> Vec<u16>| Filter::parse(f, nets).unwrap().matches(&r);
        assert!(m("", &none));
        assert!(m("src_country=DE", &none));
        assert!(!m("src_country=FR", &none));
        assert!(m("src_country=FR|DE; dst_port=443/tcp", &none));
        assert!(!m("src_country=DE; dst_port=80/tcp", &none));
        assert!(m("src_ip=10.0.0.0/8; dst_ip=2001:db8::/32", &none));
        assert!(!m("src_ip=10.2.0.0/16", &none));
        assert!(m("src_ip!=10.2.0.0/16", &none));
        assert!(!m("src_country!=DE", &none));
        let sites = |a: NetAttr, v: &str| if a == NetAttr::Site && v == "dc1" { vec![3, 7] } else { vec![] };
        assert!(m("src_site=dc1", &sites));
        assert!(!m("src_site=dc2", &sites));
        assert!(m("dst_site=unknown", &sites), "dst_net 0 is in no network");
    }

    #[test]
    fn bad_terms_name_the_term_and_the_fix() {
        let e = |f: &str| Filter::parse(f, &none).unwrap_err();
        assert_eq!(e("src_country").fix, "write dimension=key, e.g. src_country=DE");
        assert!(e("srcip=1.2.3.4").msg.contains("not a dimension"));
        assert!(e("dst_port=https").msg.contains("not a key of dst_port"));
        assert!(e("src_ip=10.0.0.0/33").msg.contains("prefix length"));
        assert_eq!(e("a=1; src_ip=x").term, "a=1");
    }
}
