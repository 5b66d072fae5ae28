//! Bad input never panics: every capture datagram truncated, bit-flipped and given hostile
//! lengths, plus template floods. Errors are counted, the template cache stays bounded.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use flowshard::decode::{Decoder, DecoderConfig, ErrorReason};
use flowshard::model::{FlowRecord, Ip};
use flowshard::pipeline::{Engine, PipelineConfig};
use flowshard::tools::replay::pcap::PcapReader;

fn datagrams() -> Vec<(Ip, Vec<u8>)> {
    let mut v = Vec::new();
    for name in capture_names() {
        let data = std::fs::read(captures().join(&name)).unwrap();
        let mut rd = PcapReader::new(&data).unwrap();
        while let Some(p) = rd.next_udp().unwrap() {
            v.push((p.src, p.payload.to_vec()));
        }
    }
    v
}

#[test]
fn mutated_captures_never_panic_and_errors_are_counted() {
    let all = datagrams();
    assert!(all.len() > 2000);
    let cfg = PipelineConfig::default();
    let mut e = Engine::new(&cfg, 2);
    let mut out = Vec::new();
    let mut rng = flowshard::tools::gen::Rng::new(0x1234_5678_9abc_def1);
    let mut fed = 0u64;
    // Learn the templates first, so mutations reach the data-record paths too.
    for (src, d) in &all {
        e.feed(d, *src, 9995, 1000, &mut out);
    }
    let clean_errors = e.decode_errors;
    assert_eq!(clean_errors, 0);
    for (i, (src, d)) in all.iter().enumerate() {
        // truncations: every length for the first datagrams, a few random ones after
        let cuts: Vec<usize> = if i < 40 {
            (0..d.len()).collect()
        } else {
            (0..4).map(|_| rng.next_u64() as usize % d.len().max(1)).collect()
        };
        for n in cuts {
            e.feed(&d[..n], *src, 9995, 1001, &mut out);
            fed += 1;
        }
        // bit flips
        for _ in 0..8 {
            let mut m = d.clone();
            let pos = rng.next_u64() as usize % m.len();
            m[pos] ^= 1 << (rng.next_u64() % 8);
            e.feed(&m, *src, 9995, 1002, &mut out);
            fed += 1;
        }
        // hostile lengths and counts: overwrite aligned u16/u32 words with extreme values
        for _ in 0..4 {
            let mut m = d.clone();
            let pos = (rng.next_u64() as usize % m.len()) & !1;
            let v: &[u8] = if rng.next_u64() % 2 == 0 { &[0xff, 0xff, 0xff, 0xff] } else { &[0, 0, 0, 0] };
            for (k, b) in v.iter().enumerate() {
                if let Some(x) = m.get_mut(pos + k) {
                    *x = *b;
                }
            }
            e.feed(&m, *src, 9995, 1003, &mut out);
            fed += 1;
        }
    }
    e.finish(&mut out);
    assert!(e.decode_errors > 1000, "mutations should be counted as decode errors, got {}", e.decode_errors);
    let mut by_reason = [0u64; 8];
    for s in &e.shards {
        for r in ErrorReason::ALL {
            by_reason[r.index()] += s.decoder.counters.errors[r.index()];
        }
        assert!(s.decoder.templates.len() <= 8192);
    }
    assert!(by_reason[ErrorReason::Truncated.index()] > 0);
    assert!(by_reason[ErrorReason::UnknownVersion.index()] > 0);
    assert!(fed > 20_000);
    // Totals still add up: every dimension of every second sums to the `total` row.
    for so in &out {
        let total: u64 =
            so.rollups.iter().filter(|r| r.dimension == flowshard::model::Dimension::Total).map(|r| r.bytes).sum();
        for d in &cfg.agg.dimensions {
            let s: u64 = so.rollups.iter().filter(|r| r.dimension == *d).map(|r| r.bytes).sum();
            assert_eq!(s, total, "dimension {d} at {}", so.second);
        }
    }
}

fn ipfix_template_flood(first_id: u16, count: u16, domain: u32) -> Vec<u8> {
    let mut set = Vec::new();
    for id in first_id..first_id + count {
        set.extend_from_slice(&id.to_be_bytes());
        set.extend_from_slice(&2u16.to_be_bytes());
        set.extend_from_slice(&[0, 8, 0, 4, 0, 1, 0, 8]); // srcIPv4, octetDeltaCount
    }
    let mut m = Vec::new();
    let len = 16 + 4 + set.len();
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&(len as u16).to_be_bytes());
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&domain.to_be_bytes());
    m.extend_from_slice(&2u16.to_be_bytes());
    m.extend_from_slice(&((4 + set.len()) as u16).to_be_bytes());
    m.extend_from_slice(&set);
    m
}

#[test]
fn template_flood_is_bounded_and_counted() {
    let mut d = Decoder::new(&DecoderConfig { max_templates: 1000, ..DecoderConfig::default() });
    let mut n = 0;
    let mut sink = |_: &FlowRecord| n += 1;
    // 200 exporters x 5 domains x 50 templates = 50,000 templates offered
    for exp in 0..200u32 {
        for dom in 0..5 {
            let m = ipfix_template_flood(256, 50, dom);
            let _ = d.decode(&m, Ip::from_v4(0x0a00_0000 + exp), 0, &mut sink);
        }
    }
    assert_eq!(d.templates.len(), 1000);
    assert_eq!(d.counters.errors[ErrorReason::TemplateLimit.index()], 49_000);
    // refreshes of known templates still work when the cache is full
    let m = ipfix_template_flood(256, 50, 0);
    let before = d.counters.errors[ErrorReason::TemplateLimit.index()];
    let _ = d.decode(&m, Ip::from_v4(0x0a00_0000), 0, &mut sink);
    assert_eq!(d.counters.errors[ErrorReason::TemplateLimit.index()], before);
}

#[test]
fn hostile_template_shapes_are_rejected() {
    let mut d = Decoder::new(&DecoderConfig::default());
    let mut sink = |_: &FlowRecord| {};
    // a template that claims 65535 fields in a tiny set
    let mut m = ipfix_template_flood(300, 1, 0);
    m[22] = 0xff;
    m[23] = 0xff;
    assert!(d.decode(&m, Ip::UNSPECIFIED, 0, &mut sink).is_err());
    assert_eq!(d.counters.errors[ErrorReason::HostileCount.index()], 1);
    // a set length shorter than its header
    let mut m = ipfix_template_flood(300, 1, 0);
    m[18] = 0;
    m[19] = 2;
    assert!(d.decode(&m, Ip::UNSPECIFIED, 0, &mut sink).is_err());
    // a message length longer than the datagram
    let mut m = ipfix_template_flood(300, 1, 0);
    m[2] = 0xff;
    assert!(d.decode(&m, Ip::UNSPECIFIED, 0, &mut sink).is_err());
    assert_eq!(d.templates.len(), 0);
}

#[test]
fn data_without_template_is_counted_and_withdrawal_works() {
    let mut d = Decoder::new(&DecoderConfig::default());
    let mut n = 0u32;
    let mut sink = |_: &FlowRecord| n += 1;
    // data set 256 with 8 bytes, before any template
    let mut data = Vec::new();
    data.extend_from_slice(&10u16.to_be_bytes());
    data.extend_from_slice(&(16u16 + 4 + 8).to_be_bytes());
    data.extend_from_slice(&[0; 12]);
    data.extend_from_slice(&256u16.to_be_bytes());
    data.extend_from_slice(&12u16.to_be_bytes());
    data.extend_from_slice(&[192, 0, 2, 1, 0, 0, 0, 100]);
    d.decode(&data, Ip::UNSPECIFIED, 0, &mut sink).unwrap();
    assert_eq!(d.counters.errors[ErrorReason::TemplateMissing.index()], 1);
    // learn template 256 (srcIPv4 4 bytes + octets 4 bytes... the flood helper uses 8-byte
    // octets; build one with 4-byte octets instead)
    let mut t = ipfix_template_flood(256, 1, 0);
    let l = t.len();
    t[l - 1] = 4;
    d.decode(&t, Ip::UNSPECIFIED, 0, &mut sink).unwrap();
    d.decode(&data, Ip::UNSPECIFIED, 0, &mut sink).unwrap();
    let _ = &mut sink;
    assert_eq!(n, 1);
    // withdraw template 256 (field count 0)
    let mut w = Vec::new();
    w.extend_from_slice(&10u16.to_be_bytes());
    w.extend_from_slice(&24u16.to_be_bytes());
    w.extend_from_slice(&[0; 12]);
    w.extend_from_slice(&[0, 2, 0, 8, 1, 0, 0, 0]);
    let mut sink = |_: &FlowRecord| {};
    d.decode(&w, Ip::UNSPECIFIED, 0, &mut sink).unwrap();
    assert_eq!(d.templates.len(), 0);
    assert_eq!(d.counters.templates_withdrawn, 1);
}
