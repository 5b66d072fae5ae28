//! Encoders for NetFlow v9 and IPFIX (template + data sets) with one standard template, for the
//! generator, tests, fuzz seeds and benches. The decoders never use this module.
//!
//! Lives on: wherever datagrams are generated (generator threads, tests, benches).

use crate::model::FlowRecord;

/// Template id of the IPv4 template.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of the IPv6 template.
pub const TEMPLATE_V6: u16 = 257;

/// (IPFIX element id, length) of the standard template; addresses first.
fn fields(v6: bool) -> [(u16, u16); 13] {
    let (s, d, l) = if v6 { (27, 28, 16) } else { (8, 12, 4) };
    [(s, l), (d, l), (7, 2), (11, 2), (4, 1), (6, 1), (5, 1), (10, 4), (14, 4), (1, 8), (2, 8), (152, 8), (153, 8)]
}

/// Bytes of one data record of the standard template.
pub fn record_len(v6: bool) -> usize {
    fields(v6).iter().map(|f| f.1 as usize).sum()
}

/// Which flavour of template-based export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// NetFlow v9.
    V9,
    /// IPFIX.
    Ipfix,
}

/// The header fields of one export message.
#[derive(Clone, Copy, Debug)]
pub struct Export {
    /// v9 or IPFIX.
    pub flavor: Flavor,
    /// Source id / observation domain.
    pub domain: u32,
    /// Sequence number.
    pub seq: u32,
    /// Export time, Unix milliseconds (record times end at it).
    pub now_ms: u64,
}

/// Writes one message: header, optionally the two templates, then one data set of `records`
/// (all of one address family, `v6`).
pub fn message(out: &mut Vec<u8>, h: &Export, with_templates: bool, v6: bool, records: &[FlowRecord]) {
    let Export { flavor, domain, seq, now_ms } = *h;
    let start = out.len();
    match flavor {
        Flavor::V9 => {
            out.extend_from_slice(&9u16.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes()); // count, patched below
            out.extend_from_slice(&((now_ms % (1 << 32)) as u32).to_be_bytes()); // uptime = now
            out.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&domain.to_be_bytes());
        }
        Flavor::Ipfix => {
            out.extend_from_slice(&10u16.to_be_bytes());
            out.extend_from_slice(&0u16.to_be_bytes()); // length, patched below
            out.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&domain.to_be_bytes());
        }
    }
    let mut count = 0u16;
    if with_templates {
        let set_start = out.len();
        out.extend_from_slice(&(if flavor == Flavor::V9 { 0u16 } else { 2 }).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        for (tid, fam) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
            out.extend_from_slice(&tid.to_be_bytes());
            out.extend_from_slice(&(fields(fam).len() as u16).to_be_bytes());
            for (id, len) in fields(fam) {
                // v9 has no millisecond timestamps: use FIRST/LAST_SWITCHED (uptime ms)
                let id = match (flavor, id) {
                    (Flavor::V9, 152) => 22,
                    (Flavor::V9, 153) => 21,
                    _ => id,
                };
                let len = if flavor == Flavor::V9 && (id == 21 || id == 22) { 4 } else { len };
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&len.to_be_bytes());
            }
            count += 1;
        }
        let l = (out.len() - set_start) as u16;
        out[set_start + 2..set_start + 4].copy_from_slice(&l.to_be_bytes());
    }
    if !records.is_empty() {
        let set_start = out.len();
        out.extend_from_slice(&(if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 }).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        for r in records {
            if v6 {
                out.extend_from_slice(&r.src.0.to_be_bytes());
                out.extend_from_slice(&r.dst.0.to_be_bytes());
            } else {
                out.extend_from_slice(&(r.src.0 as u32).to_be_bytes());
                out.extend_from_slice(&(r.dst.0 as u32).to_be_bytes());
            }
            out.extend_from_slice(&r.src_port.to_be_bytes());
            out.extend_from_slice(&r.dst_port.to_be_bytes());
            out.extend_from_slice(&[r.proto, r.tcp_flags, r.tos]);
            out.extend_from_slice(&r.in_if.to_be_bytes());
            out.extend_from_slice(&r.out_if.to_be_bytes());
            out.extend_from_slice(&r.bytes.to_be_bytes());
            out.extend_from_slice(&r.packets.to_be_bytes());
            let first = now_ms.saturating_sub(r.duration_ms as u64);
            match flavor {
                Flavor::Ipfix => {
                    out.extend_from_slice(&first.to_be_bytes());
                    out.extend_from_slice(&now_ms.to_be_bytes());
                }
                Flavor::V9 => {
                    out.extend_from_slice(&((first % (1 << 32)) as u32).to_be_bytes());
                    out.extend_from_slice(&((now_ms % (1 << 32)) as u32).to_be_bytes());
                }
            }
            count += 1;
        }
        let l = (out.len() - set_start) as u16;
        out[set_start + 2..set_start + 4].copy_from_slice(&l.to_be_bytes());
    }
    match flavor {
        Flavor::V9 => out[start + 2..start + 4].copy_from_slice(&count.to_be_bytes()),
        Flavor::Ipfix => {
            let l = (out.len() - start) as u16;
            out[start + 2..start + 4].copy_from_slice(&l.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, DecoderConfig};
    use crate::model::Ip;

    #[test]
    fn roundtrip_v9_and_ipfix_v4_v6() {
        for flavor in [Flavor::V9, Flavor::Ipfix] {
            for v6 in [false, true] {
                let src = if v6 {
                    Ip::from_v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9])
                } else {
                    Ip::from_v4(0x0a000001)
                };
                let r = FlowRecord {
                    exporter: Ip::from_v4(0x7f000002),
                    src,
                    dst: if v6 { src } else { Ip::from_v4(0xc0000201) },
                    src_port: 1234,
                    dst_port: 443,
                    proto: 6,
                    tcp_flags: 0x1b,
                    tos: 0,
                    bytes: 123_456,
                    packets: 100,
                    in_if: 7,
                    out_if: 9,
                    sampling_rate: 1,
                    duration_ms: 60_000,
                    ..Default::default()
                };
                let mut buf = Vec::new();
                message(&mut buf, &Export { flavor, domain: 3, seq: 1, now_ms: 1_700_000_000_000 }, true, v6, &[r, r]);
                let mut d = Decoder::new(&DecoderConfig::default());
                let mut got = Vec::new();
                let mut sink = |x: &FlowRecord| got.push(*x);
                d.decode(&buf, r.exporter, 1_700_000_000, &mut sink).unwrap();
                assert_eq!(got, vec![r, r], "{flavor:?} v6={v6}");
            }
        }
    }
}
