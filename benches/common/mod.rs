//! Shared bench inputs: realistic IPFIX datagrams (30 records each) with a heavy-tailed key
//! distribution.
#![allow(dead_code)]

use flowshard::model::{FlowRecord, Ip};
use flowshard::tools::gen::encode::{message, Export, Flavor};

/// xorshift64: deterministic and fast.
pub struct Rng(pub u64);
impl Rng {
    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Roughly Zipf(1) over 0..n: heavy hitters and a long tail.
    pub fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() % 1_000_000 + 1) as f64 / 1_000_001.0;
        ((n as f64).powf(u) - 1.0) as u64 % n
    }
}

/// One random record.
pub fn record(rng: &mut Rng) -> FlowRecord {
    FlowRecord {
        src: Ip::from_v4(0x0a00_0000 + rng.zipf(50_000) as u32),
        dst: Ip::from_v4(0xc000_0000 + rng.zipf(20_000) as u32),
        src_port: 1024 + (rng.next_u64() % 60_000) as u16,
        dst_port: [80, 443, 53, 22, 8080, 25][rng.zipf(6) as usize],
        proto: if rng.next_u64() % 4 == 0 { 17 } else { 6 },
        tcp_flags: 0x1b,
        bytes: 64 + rng.next_u64() % 100_000,
        packets: 1 + rng.next_u64() % 100,
        in_if: 1 + (rng.next_u64() % 8) as u32,
        out_if: 1 + (rng.next_u64() % 8) as u32,
        duration_ms: (rng.next_u64() % 5000) as u32,
        ..Default::default()
    }
}

/// `n` datagrams of 30 records; the first carries the templates.
pub fn ipfix_datagrams(n: usize, flavor: Flavor) -> Vec<Vec<u8>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let recs: Vec<FlowRecord> = (0..30).map(|_| record(&mut rng)).collect();
            let mut buf = Vec::with_capacity(1500);
            message(
                &mut buf,
                &Export { flavor, domain: 1, seq: i as u32, now_ms: 1_700_000_000_000 },
                i == 0,
                false,
                &recs,
            );
            buf
        })
        .collect()
}
