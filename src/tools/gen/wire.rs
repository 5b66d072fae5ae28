//! Simulated exporters: turn a second's records into datagrams, per exporter, the way real
//! exporters do — NetFlow v5 (30 records, IPv4 only), NetFlow v9 and IPFIX (templates in the
//! first datagram and refreshed every 20 datagrams or 60 s, IPv4 and IPv6 data sets), sFlow v5
//! (packet sampling 1-in-N with raw headers).
//!
//! Lives on: the generator's thread.

use super::encode::{message, sflow_datagram, Export, Flavor, SflowSample};
use super::{exporter_ip, Emitted, Rng};
use crate::decode::netflow_v5;
use crate::model::FlowRecord;

/// Export protocol of the simulated exporters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GenProtocol {
    /// NetFlow v5.
    V5,
    /// NetFlow v9.
    V9,
    /// IPFIX.
    Ipfix,
    /// sFlow v5.
    Sflow,
}

impl GenProtocol {
    /// Parses `v5`, `v9`, `ipfix`, `sflow`.
    pub fn from_name(s: &str) -> Option<GenProtocol> {
        Some(match s {
            "v5" | "netflow5" | "netflow_v5" => GenProtocol::V5,
            "v9" | "netflow9" | "netflow_v9" => GenProtocol::V9,
            "ipfix" | "v10" => GenProtocol::Ipfix,
            "sflow" | "sflow5" | "sflow_v5" => GenProtocol::Sflow,
            _ => return None,
        })
    }
}

#[derive(Default, Clone)]
struct ExporterState {
    seq: u32,
    since_template: u32,
    template_at: Option<u64>,
}

/// One generated datagram.
#[derive(Clone, Debug)]
pub struct Datagram {
    /// Exporter index.
    pub exporter: u32,
    /// Records it carries (sFlow: samples).
    pub records: u32,
    /// Octets the records account for (sFlow: frame length × sampling rate).
    pub octets: u64,
    /// Payload.
    pub bytes: Vec<u8>,
}

/// The simulated exporters' export state.
pub struct Exporters {
    proto: GenProtocol,
    state: Vec<ExporterState>,
    sflow_rate: u32,
    rng: Rng,
    /// Records not exportable by the protocol (IPv6 on NetFlow v5).
    pub unexportable: u64,
}

impl Exporters {
    /// `n` exporters speaking `proto`; sFlow samples 1 in `sflow_rate` packets.
    pub fn new(proto: GenProtocol, n: u32, sflow_rate: u32, seed: u64) -> Exporters {
        Exporters {
            proto,
            state: vec![ExporterState::default(); n.max(1) as usize],
            sflow_rate: sflow_rate.max(1),
            rng: Rng::new(seed ^ 0x5f5f),
            unexportable: 0,
        }
    }

    /// Encodes the records of second `t` into datagrams (appended to `out`).
    pub fn encode_second(&mut self, t: u64, recs: &[Emitted], out: &mut Vec<Datagram>) {
        let n = self.state.len();
        let mut by_exp: Vec<Vec<FlowRecord>> = vec![Vec::new(); n];
        for (e, r) in recs {
            let mut r = *r;
            r.exporter = exporter_ip(*e % n as u32);
            by_exp[(*e as usize) % n].push(r);
        }
        for (e, recs) in by_exp.into_iter().enumerate() {
            match self.proto {
                GenProtocol::V5 => self.v5(e, t, &recs, out),
                GenProtocol::V9 => self.templated(e, t, Flavor::V9, &recs, out),
                GenProtocol::Ipfix => self.templated(e, t, Flavor::Ipfix, &recs, out),
                GenProtocol::Sflow => self.sflow(e, t, &recs, out),
            }
        }
    }

    fn v5(&mut self, e: usize, t: u64, recs: &[FlowRecord], out: &mut Vec<Datagram>) {
        let v4: Vec<FlowRecord> = recs.iter().filter(|r| r.src.is_v4() && r.dst.is_v4()).copied().collect();
        self.unexportable += (recs.len() - v4.len()) as u64;
        for chunk in v4.chunks(30) {
            let st = &mut self.state[e];
            let mut b = Vec::with_capacity(24 + 48 * chunk.len());
            netflow_v5::encode(&mut b, chunk, (t % 4_000_000) as u32 * 1000, t as u32, st.seq, 0);
            st.seq = st.seq.wrapping_add(chunk.len() as u32);
            out.push(Datagram { exporter: e as u32, records: chunk.len() as u32, octets: octets(chunk), bytes: b });
        }
    }

    fn templated(&mut self, e: usize, t: u64, flavor: Flavor, recs: &[FlowRecord], out: &mut Vec<Datagram>) {
        for v6 in [false, true] {
            let fam: Vec<FlowRecord> =
                recs.iter().filter(|r| (r.src.is_v4() && r.dst.is_v4()) != v6).copied().collect();
            for chunk in fam.chunks(if v6 { 12 } else { 24 }) {
                let st = &mut self.state[e];
                let refresh = st.template_at.is_none_or(|at| t >= at + 60) || st.since_template >= 20;
                if refresh {
                    st.template_at = Some(t);
                    st.since_template = 0;
                }
                st.since_template += 1;
                let mut b = Vec::with_capacity(1400);
                let h = Export { flavor, domain: 1, seq: st.seq, now_ms: t * 1000 + 500 };
                message(&mut b, &h, refresh, v6, chunk);
                st.seq = st.seq.wrapping_add(if flavor == Flavor::V9 { 1 } else { chunk.len() as u32 });
                out.push(Datagram { exporter: e as u32, records: chunk.len() as u32, octets: octets(chunk), bytes: b });
            }
        }
    }

    fn sflow(&mut self, e: usize, t: u64, recs: &[FlowRecord], out: &mut Vec<Datagram>) {
        let rate = self.sflow_rate;
        let mut samples = Vec::new();
        for r in recs {
            // each packet is sampled with probability 1/rate
            let expect = r.packets as f64 / rate as f64;
            let mut k = expect.floor() as u64;
            if self.rng.unit() < expect - expect.floor() {
                k += 1;
            }
            let frame = ((r.bytes / r.packets.max(1)) as u32 + 18).clamp(64, 1518);
            for _ in 0..k.min(10_000) {
                samples.push(SflowSample { r: *r, frame_len: frame, rate });
            }
        }
        let agent = 0x7f00_0002 + e as u32;
        for chunk in samples.chunks(10) {
            let st = &mut self.state[e];
            let mut b = Vec::with_capacity(1400);
            sflow_datagram(&mut b, agent, st.seq, (t % 4_000_000) as u32 * 1000, chunk);
            st.seq = st.seq.wrapping_add(1);
            let octets = chunk.iter().map(|s| s.frame_len as u64 * s.rate as u64).sum();
            out.push(Datagram { exporter: e as u32, records: chunk.len() as u32, octets, bytes: b });
        }
    }
}

fn octets(recs: &[FlowRecord]) -> u64 {
    recs.iter().map(|r| r.bytes).sum()
}
