//! NetFlow v5: a 24-byte header and up to 30 fixed 48-byte records, IPv4 only. The header's
//! `sampling_interval` (low 14 bits) scales bytes and packets.
//!
//! Lives on: shard cores.

use super::cursor::Cursor;
use super::{Ctx, DecodeError, FlowSink};
use crate::model::{FlowRecord, Ip, Protocol};

/// Header length.
pub const HEADER_LEN: usize = 24;
/// Record length.
pub const RECORD_LEN: usize = 48;
const P: Protocol = Protocol::NetflowV5;

pub(crate) fn decode<S: FlowSink>(data: &[u8], source: Ip, ctx: &mut Ctx<'_, S>) -> Result<(), DecodeError> {
    let mut c = Cursor::new(data);
    let t = DecodeError::truncated(P, "header");
    let _version = c.u16().map_err(&t)?;
    let count = c.u16().map_err(&t)?;
    let _uptime = c.u32().map_err(&t)?;
    let _secs = c.u32().map_err(&t)?;
    let _nsecs = c.u32().map_err(&t)?;
    let _seq = c.u32().map_err(&t)?;
    let _engine = c.u16().map_err(&t)?;
    let sampling = c.u16().map_err(&t)?;
    let rate = match sampling & 0x3fff {
        0 => 1,
        n => n as u32,
    };
    let need = count as usize * RECORD_LEN;
    if need > c.remaining() {
        return Err(DecodeError::HostileCount {
            proto: P,
            what: "record",
            count: count as u32,
            remaining: c.remaining(),
        });
    }
    for _ in 0..count {
        let mut r = c.sub(RECORD_LEN).map_err(DecodeError::truncated(P, "record"))?;
        let rec = record(&mut r, source).map_err(DecodeError::truncated(P, "record"))?;
        ctx.emit(rec, rate);
    }
    Ok(())
}

#[inline]
fn record(r: &mut Cursor<'_>, exporter: Ip) -> Result<FlowRecord, super::cursor::Truncated> {
    let src = Ip::from_v4(r.u32()?);
    let dst = Ip::from_v4(r.u32()?);
    let _nexthop = r.u32()?;
    let in_if = r.u16()? as u32;
    let out_if = r.u16()? as u32;
    let packets = r.u32()? as u64;
    let bytes = r.u32()? as u64;
    let first = r.u32()?;
    let last = r.u32()?;
    let src_port = r.u16()?;
    let dst_port = r.u16()?;
    let _pad = r.u8()?;
    let tcp_flags = r.u8()?;
    let proto = r.u8()?;
    let tos = r.u8()?;
    let src_as = r.u16()? as u32;
    let dst_as = r.u16()? as u32;
    Ok(FlowRecord {
        exporter,
        src,
        dst,
        src_port,
        dst_port,
        proto,
        tcp_flags,
        tos,
        bytes,
        packets,
        in_if,
        out_if,
        src_as,
        dst_as,
        sampling_rate: 1,
        duration_ms: last.wrapping_sub(first).min(u32::MAX / 2),
        ..FlowRecord::default()
    })
}

/// Encodes records as one NetFlow v5 datagram (for the generator and tests). At most 30
/// records are written.
pub fn encode(out: &mut Vec<u8>, records: &[FlowRecord], uptime_ms: u32, unix_secs: u32, seq: u32, sampling: u16) {
    let n = records.len().min(30);
    out.extend_from_slice(&5u16.to_be_bytes());
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&uptime_ms.to_be_bytes());
    out.extend_from_slice(&unix_secs.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&sampling.to_be_bytes());
    for r in &records[..n] {
        out.extend_from_slice(&(r.src.0 as u32).to_be_bytes());
        out.extend_from_slice(&(r.dst.0 as u32).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(r.in_if as u16).to_be_bytes());
        out.extend_from_slice(&(r.out_if as u16).to_be_bytes());
        out.extend_from_slice(&(r.packets as u32).to_be_bytes());
        out.extend_from_slice(&(r.bytes as u32).to_be_bytes());
        let first = uptime_ms.wrapping_sub(r.duration_ms);
        out.extend_from_slice(&first.to_be_bytes());
        out.extend_from_slice(&uptime_ms.to_be_bytes());
        out.extend_from_slice(&r.src_port.to_be_bytes());
        out.extend_from_slice(&r.dst_port.to_be_bytes());
        out.extend_from_slice(&[0, r.tcp_flags, r.proto, r.tos]);
        out.extend_from_slice(&(r.src_as as u16).to_be_bytes());
        out.extend_from_slice(&(r.dst_as as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoder, DecoderConfig, ErrorReason};

    fn rec(i: u32) -> FlowRecord {
        FlowRecord {
            exporter: Ip::from_v4(0x7f000001),
            src: Ip::from_v4(0x0a000000 + i),
            dst: Ip::from_v4(0xc0000201),
            src_port: 1000 + i as u16,
            dst_port: 443,
            proto: 6,
            tcp_flags: 0x18,
            bytes: 1500 * i as u64,
            packets: i as u64,
            in_if: 3,
            out_if: 4,
            sampling_rate: 1,
            duration_ms: 2000,
            ..Default::default()
        }
    }

    #[test]
    fn roundtrip_and_sampling() {
        let recs: Vec<_> = (1..=5).map(rec).collect();
        let mut buf = Vec::new();
        encode(&mut buf, &recs, 100_000, 1_700_000_000, 1, 0x4000 | 10);
        let mut d = Decoder::new(&DecoderConfig::default());
        let mut got = Vec::new();
        let mut sink = |r: &FlowRecord| got.push(*r);
        d.decode(&buf, Ip::from_v4(0x7f000001), 0, &mut sink).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[1].bytes, 3000 * 10);
        assert_eq!(got[1].packets, 20);
        assert_eq!(got[1].sampling_rate, 10);
        assert_eq!(got[1].src, recs[1].src);
        assert_eq!(got[1].duration_ms, 2000);
    }

    #[test]
    fn hostile_count_rejected() {
        let mut buf = Vec::new();
        encode(&mut buf, &[rec(1)], 0, 0, 0, 0);
        buf[3] = 200; // count = 200 records in a 72-byte datagram
        let mut d = Decoder::new(&DecoderConfig::default());
        let mut sink = |_: &FlowRecord| panic!("no record expected");
        assert!(d.decode(&buf, Ip::UNSPECIFIED, 0, &mut sink).is_err());
        assert_eq!(d.counters.errors[ErrorReason::HostileCount.index()], 1);
    }
}
