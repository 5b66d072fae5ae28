//! Quick check: decode totals of a capture.
use flowshard::decode::{Decoder, DecoderConfig};
use flowshard::model::FlowRecord;
use flowshard::replay::pcap::PcapReader;
fn main() {
    for f in std::env::args().skip(1) {
        let data = std::fs::read(&f).unwrap();
        let mut rd = PcapReader::new(&data).unwrap();
        let mut d = Decoder::new(&DecoderConfig::default());
        let (mut n, mut b, mut p) = (0u64, 0u64, 0u64);
        let mut dg = 0;
        let mut first = 0;
        let mut last = 0;
        while let Some(pk) = rd.next_udp().unwrap() {
            dg += 1;
            if first == 0 {
                first = pk.ts_ns;
            }
            last = pk.ts_ns;
            let mut sink = |r: &FlowRecord| {
                n += 1;
                b += r.bytes;
                p += r.packets;
            };
            let _ = d.decode(pk.payload, pk.src, pk.ts_ns / 1_000_000_000, &mut sink);
        }
        println!(
            "{f}: dgrams={dg} records={n} bytes={b} packets={p} errors={:?} dur={}s",
            d.counters.errors,
            (last - first) / 1_000_000_000
        );
    }
}
