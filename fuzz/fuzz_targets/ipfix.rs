//! Fuzz target: the ipfix decoder. The input is split into datagrams at 0xFFFF markers so one
//! run can teach templates and then feed data; the version bytes are forced to 10.
#![no_main]
use flowshard::decode::{Decoder, DecoderConfig};
use flowshard::model::{FlowRecord, Ip};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new(&DecoderConfig { max_templates: 64, ..DecoderConfig::default() });
    let mut sink = |r: &FlowRecord| {
        std::hint::black_box(r);
    };
    for part in data.split(|&b| b == 0xff).take(16) {
        let mut m = part.to_vec();
        if m.len() >= 2 {
            m[0] = 0;
            m[1] = 10;
        }
        let _ = d.decode(&m, Ip::from_v4(0x7f000001), 1_700_000_000, &mut sink);
    }
    assert!(d.templates.len() <= 64);
});
