//! Fuzz target: the sFlow v5 decoder (version forced to 5).
#![no_main]
use flowshard::decode::{Decoder, DecoderConfig};
use flowshard::model::{FlowRecord, Ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(&DecoderConfig::default());
    let mut sink = |r: &FlowRecord| {
        std::hint::black_box(r);
    };
    let mut m = data.to_vec();
    if m.len() >= 4 {
        m[..4].copy_from_slice(&[0, 0, 0, 5]);
    }
    let _ = d.decode(&m, Ip::from_v4(0x7f000001), 1_700_000_000, &mut sink);
});
