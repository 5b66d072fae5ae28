//! sFlow v5: flow samples (compact format 1 and expanded format 3) with their raw packet
//! header, sampled IPv4/IPv6 and extended gateway (AS) records; counter samples (formats 2 and 4)
//! with generic interface counters. Bytes and packets are the frame length and 1 packet, scaled
//! by each sample's own sampling rate. The exporter is the agent address in the datagram.
//!
//! A malformed sample is skipped (its length bounds it) and counted; the datagram goes on.
//!
//! Lives on: shard cores.

use super::cursor::{Cursor, Truncated};
use super::packet::parse_header;
use super::{Ctx, DecodeError, ErrorReason, FlowSink, InterfaceCounters};
use crate::model::{FlowRecord, Ip, Protocol};

const P: Protocol = Protocol::Sflow5;

fn address(c: &mut Cursor<'_>) -> Result<Option<Ip>, Truncated> {
    Ok(match c.u32()? {
        1 => Some(Ip::from_v4(c.u32()?)),
        2 => Some(Ip::from_v6(c.array()?)),
        _ => None,
    })
}

pub(crate) fn decode<S: FlowSink>(data: &[u8], ctx: &mut Ctx<'_, S>) -> Result<(), DecodeError> {
    let mut c = Cursor::new(data);
    let t = DecodeError::truncated(P, "datagram header");
    let _version = c.u32().map_err(&t)?;
    let Some(agent) = address(&mut c).map_err(&t)? else {
        return Err(DecodeError::BadSample { agent: Ip::UNSPECIFIED, why: "unknown agent address type" });
    };
    let _sub_agent = c.u32().map_err(&t)?;
    let _seq = c.u32().map_err(&t)?;
    let _uptime = c.u32().map_err(&t)?;
    let n = c.u32().map_err(&t)?;
    if n as usize > c.remaining() / 8 {
        return Err(DecodeError::HostileCount { proto: P, what: "sample", count: n, remaining: c.remaining() });
    }
    for _ in 0..n {
        let ts = DecodeError::truncated(P, "sample");
        let format = c.u32().map_err(&ts)?;
        let len = c.u32().map_err(&ts)? as usize;
        let body = c.sub(len).map_err(&ts)?;
        let ok = match format {
            1 | 3 => flow_sample(body, format == 3, agent, ctx),
            2 | 4 => counter_sample(body, format == 4, agent, ctx),
            _ => Ok(()), // other enterprises/formats: skipped by length
        };
        if ok.is_err() {
            ctx.count(ErrorReason::BadSample);
        }
    }
    Ok(())
}

/// Why a sample was skipped (counted as `bad_sample`).
#[derive(Debug)]
struct BadSample;

impl From<Truncated> for BadSample {
    fn from(_: Truncated) -> Self {
        BadSample
    }
}

fn flow_sample<S: FlowSink>(
    mut c: Cursor<'_>,
    expanded: bool,
    agent: Ip,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), BadSample> {
    let _seq = c.u32()?;
    if expanded {
        c.skip(8)?; // source id type, index
    } else {
        c.skip(4)?;
    }
    let rate = c.u32()?;
    let _pool = c.u32()?;
    let _drops = c.u32()?;
    let (in_if, out_if) = if expanded {
        let _f = c.u32()?;
        let i = c.u32()?;
        let _f = c.u32()?;
        let o = c.u32()?;
        (i, o)
    } else {
        (c.u32()? & 0x3fff_ffff, c.u32()? & 0x3fff_ffff)
    };
    let n = c.u32()?;
    if n as usize > c.remaining() / 8 {
        return Err(BadSample);
    }
    let mut r = FlowRecord { exporter: agent, in_if, out_if, packets: 1, ..Default::default() };
    let mut have_packet = false;
    for _ in 0..n {
        let format = c.u32()?;
        let len = c.u32()? as usize;
        let mut b = c.sub(len)?;
        match format {
            1 => {
                let proto = b.u32()?;
                let frame_len = b.u32()?;
                let _stripped = b.u32()?;
                let hlen = b.u32()? as usize;
                let header = b.bytes(hlen)?;
                parse_header(proto, header, &mut r);
                r.bytes = frame_len as u64;
                have_packet = true;
            }
            3 if !have_packet => {
                r.bytes = b.u32()? as u64;
                r.proto = b.u32()? as u8;
                r.src = Ip::from_v4(b.u32()?);
                r.dst = Ip::from_v4(b.u32()?);
                r.src_port = b.u32()? as u16;
                r.dst_port = b.u32()? as u16;
                r.tcp_flags = b.u32()? as u8;
                r.tos = b.u32()? as u8;
                have_packet = true;
            }
            4 if !have_packet => {
                r.bytes = b.u32()? as u64;
                r.proto = b.u32()? as u8;
                r.src = Ip::from_v6(b.array()?);
                r.dst = Ip::from_v6(b.array()?);
                r.src_port = b.u32()? as u16;
                r.dst_port = b.u32()? as u16;
                r.tcp_flags = b.u32()? as u8;
                r.tos = b.u32()? as u8;
                have_packet = true;
            }
            1003 => {
                let _next_hop = address(&mut b)?;
                let _router_as = b.u32()?;
                r.src_as = b.u32()?;
                let _peer_as = b.u32()?;
                let segments = b.u32()?;
                for _ in 0..segments.min(64) {
                    let _type = b.u32()?;
                    let count = b.u32()? as usize;
                    if count > b.remaining() / 4 {
                        return Err(BadSample);
                    }
                    for _ in 0..count {
                        r.dst_as = b.u32()?;
                    }
                }
            }
            _ => {}
        }
    }
    if have_packet {
        ctx.emit(r, rate.max(1));
    }
    Ok(())
}

fn counter_sample<S: FlowSink>(
    mut c: Cursor<'_>,
    expanded: bool,
    agent: Ip,
    ctx: &mut Ctx<'_, S>,
) -> Result<(), BadSample> {
    let _seq = c.u32()?;
    c.skip(if expanded { 8 } else { 4 })?;
    let n = c.u32()?;
    if n as usize > c.remaining() / 8 {
        return Err(BadSample);
    }
    for _ in 0..n {
        let format = c.u32()?;
        let len = c.u32()? as usize;
        let mut b = c.sub(len)?;
        if format == 1 {
            let if_index = b.u32()?;
            let _if_type = b.u32()?;
            let if_speed = b.u64()?;
            let _dir = b.u32()?;
            let if_status = b.u32()?;
            let in_octets = b.u64()?;
            b.skip(12)?; // in ucast, mcast, bcast
            let in_errors = b.u32()? as u64 + b.u32()? as u64;
            let _unknown = b.u32()?;
            let out_octets = b.u64()?;
            b.skip(12)?;
            let out_errors = b.u32()? as u64 + b.u32()? as u64;
            let c = InterfaceCounters {
                agent,
                if_index,
                if_speed,
                if_status,
                in_octets,
                out_octets,
                in_errors,
                out_errors,
            };
            ctx.dec.counters.counter_records += 1;
            ctx.sink.counters(&c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::decode::{Decoder, DecoderConfig, FlowSink, InterfaceCounters};
    use crate::model::{FlowRecord, Ip};

    #[derive(Default)]
    struct Both {
        flows: usize,
        counters: Vec<InterfaceCounters>,
    }
    impl FlowSink for Both {
        fn flow(&mut self, _r: &FlowRecord) {
            self.flows += 1;
        }
        fn counters(&mut self, c: &InterfaceCounters) {
            self.counters.push(*c);
        }
    }

    #[test]
    fn counter_sample_generic_interface() {
        let w = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
        let w64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_be_bytes());
        let mut rec = Vec::new();
        w(&mut rec, 7); // ifIndex
        w(&mut rec, 6); // ifType
        w64(&mut rec, 10_000_000_000); // ifSpeed
        w(&mut rec, 1); // direction
        w(&mut rec, 3); // status up/up
        w64(&mut rec, 123_456); // in octets
        for x in [1, 2, 3, 4, 5, 6] {
            w(&mut rec, x); // in ucast, mcast, bcast, discards, errors, unknown
        }
        w64(&mut rec, 654_321); // out octets
        for x in [1, 2, 3, 7, 8, 0] {
            w(&mut rec, x); // out ucast, mcast, bcast, discards, errors, promisc
        }
        assert_eq!(rec.len(), 88);
        let mut sample = Vec::new();
        w(&mut sample, 1); // seq
        w(&mut sample, 7); // source id
        w(&mut sample, 1); // one record
        w(&mut sample, 1); // generic interface counters
        w(&mut sample, rec.len() as u32);
        sample.extend_from_slice(&rec);
        let mut d = Vec::new();
        for x in [5, 1, 0xc000_0201, 0, 1, 1000, 1] {
            w(&mut d, x);
        }
        w(&mut d, 2); // counter sample
        w(&mut d, sample.len() as u32);
        d.extend_from_slice(&sample);
        let mut dec = Decoder::new(&DecoderConfig::default());
        let mut both = Both::default();
        dec.decode(&d, Ip::from_v4(0x7f000001), 0, &mut both).unwrap();
        assert_eq!(both.flows, 0);
        assert_eq!(both.counters.len(), 1);
        let c = both.counters[0];
        assert_eq!(
            (c.agent, c.if_index, c.in_octets, c.out_octets, c.in_errors, c.out_errors),
            (Ip::from_v4(0xc000_0201), 7, 123_456, 654_321, 9, 15)
        );
        assert_eq!(dec.counters.counter_records, 1);
        // truncated anywhere: never a panic
        for n in 0..d.len() {
            let _ = dec.decode(&d[..n], Ip::UNSPECIFIED, 0, &mut both);
        }
    }
}
