//! Shared body of the NetFlow v5/v9 and IPFIX fuzz targets.
use flowshard::decode::{Decoder, DecoderConfig};
use flowshard::model::{FlowRecord, Ip};

/// Splits the input into datagrams at 0xFF bytes (so one run can teach templates and then feed
/// data), forces the version field to `version`, and decodes them all.
pub fn netflow(data: &[u8], version: u8) {
    let mut d = Decoder::new(&DecoderConfig { max_templates: 64, ..DecoderConfig::default() });
    let mut sink = |r: &FlowRecord| {
        std::hint::black_box(r);
    };
    for part in data.split(|&b| b == 0xff).take(16) {
        let mut m = part.to_vec();
        if m.len() >= 2 {
            m[0] = 0;
            m[1] = version;
        }
        let _ = d.decode(&m, Ip::from_v4(0x7f000001), 1_700_000_000, &mut sink);
    }
    assert!(d.templates.len() <= 64);
}
