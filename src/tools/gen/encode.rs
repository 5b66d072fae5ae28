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

/// One sFlow flow sample to encode: the sampled packet's addresses/ports come from `r`.
#[derive(Clone, Copy, Debug)]
pub struct SflowSample {
    /// Flow fields (addresses, ports, protocol, flags, interfaces).
    pub r: FlowRecord,
    /// Frame length of the sampled packet, bytes (including the 14-byte Ethernet header).
    pub frame_len: u32,
    /// Sampling rate (1 in N).
    pub rate: u32,
}

/// Writes an sFlow v5 datagram with compact flow samples carrying raw Ethernet/IP/L4 headers.
pub fn sflow_datagram(out: &mut Vec<u8>, agent_v4: u32, seq: u32, uptime_ms: u32, samples: &[SflowSample]) {
    let w32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_be_bytes());
    w32(out, 5);
    w32(out, 1);
    w32(out, agent_v4);
    w32(out, 0); // sub-agent
    w32(out, seq);
    w32(out, uptime_ms);
    w32(out, samples.len() as u32);
    for (i, s) in samples.iter().enumerate() {
        let hdr = raw_header(&s.r, s.frame_len);
        let padded = (hdr.len() + 3) & !3;
        let rec_len = 16 + padded;
        let sample_len = 32 + 8 + rec_len;
        w32(out, 1); // flow sample
        w32(out, sample_len as u32);
        w32(out, seq.wrapping_mul(64).wrapping_add(i as u32));
        w32(out, s.r.in_if); // source id: ifIndex
        w32(out, s.rate);
        w32(out, 0); // sample pool
        w32(out, 0); // drops
        w32(out, s.r.in_if & 0x3fff_ffff);
        w32(out, s.r.out_if & 0x3fff_ffff);
        w32(out, 1); // one record
        w32(out, 1); // raw packet header
        w32(out, rec_len as u32);
        w32(out, 1); // ethernet
        w32(out, s.frame_len);
        w32(out, 4); // stripped (FCS)
        w32(out, hdr.len() as u32);
        out.extend_from_slice(&hdr);
        out.resize(out.len() + padded - hdr.len(), 0);
    }
}

/// Ethernet + IPv4/IPv6 + TCP/UDP header for a sampled packet.
fn raw_header(r: &FlowRecord, frame_len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
    let l4_len = if r.proto == 6 { 20 } else { 8 };
    if r.src.is_v4() && r.dst.is_v4() {
        h.extend_from_slice(&[0x08, 0x00]);
        let total = (frame_len.saturating_sub(14 + 4)).clamp(20 + l4_len, 65535) as u16;
        h.extend_from_slice(&[0x45, r.tos]);
        h.extend_from_slice(&total.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0x40, 0, 64, r.proto, 0, 0]);
        h.extend_from_slice(&(r.src.0 as u32).to_be_bytes());
        h.extend_from_slice(&(r.dst.0 as u32).to_be_bytes());
    } else {
        h.extend_from_slice(&[0x86, 0xdd]);
        let plen = (frame_len.saturating_sub(14 + 4 + 40)).clamp(l4_len, 65535) as u16;
        h.extend_from_slice(&[0x60, 0, 0, 0]);
        h.extend_from_slice(&plen.to_be_bytes());
        h.extend_from_slice(&[r.proto, 64]);
        h.extend_from_slice(&r.src.0.to_be_bytes());
        h.extend_from_slice(&r.dst.0.to_be_bytes());
    }
    h.extend_from_slice(&r.src_port.to_be_bytes());
    h.extend_from_slice(&r.dst_port.to_be_bytes());
    if r.proto == 6 {
        h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, r.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        h.extend_from_slice(&[0, 8, 0, 0]);
    }
    h
}

#[cfg(test)]
mod sflow_tests {
    use super::*;
    use crate::decode::{Decoder, DecoderConfig};
    use crate::model::Ip;

    #[test]
    fn sflow_roundtrip() {
        let r = FlowRecord {
            src: Ip::from_v4(0x0a000001),
            dst: Ip::from_v4(0xc0000201),
            src_port: 5555,
            dst_port: 53,
            proto: 17,
            in_if: 3,
            out_if: 4,
            ..Default::default()
        };
        let mut buf = Vec::new();
        sflow_datagram(&mut buf, 0x7f000002, 1, 1000, &[SflowSample { r, frame_len: 200, rate: 100 }]);
        let mut d = Decoder::new(&DecoderConfig::default());
        let mut got = Vec::new();
        let mut sink = |x: &FlowRecord| got.push(*x);
        d.decode(&buf, Ip::from_v4(0x7f000002), 0, &mut sink).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].bytes, got[0].packets, got[0].dst_port, got[0].src, got[0].in_if),
            (20_000, 100, 53, r.src, 3)
        );
        assert_eq!(got[0].exporter, Ip::from_v4(0x7f000002));
    }
}
