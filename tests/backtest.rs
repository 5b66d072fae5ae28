//! The backtest runs the same detector as the live path: a series written as NetFlow v5
//! traffic (the `total` dimension's bytes per second equal the series) and replayed through the
//! pipeline raises bytes alerts on exactly the seconds where `flowshard backtest` on the same
//! series says `alert = 1`.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use flowshard::decode::netflow_v5;
use flowshard::model::{FlowRecord, Ip};
use flowshard::tools::gen::pcapw::PcapWriter;
use std::process::Command;

const T0: u64 = 1_600_000_000;

fn series() -> Vec<u64> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..900u64)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = x % 400_000;
            let base = 3_000_000 + noise;
            match i {
                300..=305 => base * 15, // a surge
                500..=640 => base * 2,  // a level shift
                700..=703 => 0,         // an outage
                _ => base,
            }
        })
        .collect()
}

#[test]
fn backtest_and_live_replay_agree() {
    let dir = tempfile::tempdir().unwrap();
    let s = series();
    // CSV for the backtest
    let mut csv = String::from("timestamp,value\n");
    for (i, v) in s.iter().enumerate() {
        csv.push_str(&format!("{},{v}\n", T0 + i as u64));
    }
    let csv_path = dir.path().join("series.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    let out = Command::new(bin()).args(["backtest", "--input"]).arg(&csv_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(rows.len(), s.len(), "one output row per input row");
    let bt: Vec<u64> =
        rows.iter().filter(|r| r.ends_with(",1")).map(|r| r.split(',').next().unwrap().parse().unwrap()).collect();
    assert!(!bt.is_empty(), "the series has anomalies");

    // The same series as traffic: one v5 datagram per second carrying the second's bytes.
    let pcap = dir.path().join("series.pcap");
    let mut w = PcapWriter::new(std::fs::File::create(&pcap).unwrap()).unwrap();
    for (i, v) in s.iter().enumerate() {
        if *v == 0 {
            continue; // silence: no datagram at all
        }
        let r = FlowRecord {
            src: Ip::from_v4(0x0a00_0001),
            dst: Ip::from_v4(0xc000_0201),
            src_port: 1234,
            dst_port: 443,
            proto: 6,
            bytes: *v,
            packets: 1,
            ..Default::default()
        };
        let mut buf = Vec::new();
        netflow_v5::encode(&mut buf, &[r], 1000, 0, i as u32, 0);
        w.udp((T0 + i as u64) * 1_000_000 + 500_000, 0x7f00_0002, 9995, 0x7f00_0001, 2055, &buf).unwrap();
    }
    w.finish().unwrap();
    let out = Command::new(bin()).args(["replay", "--shards", "2"]).arg(&pcap).output().unwrap();
    assert!(out.status.success());
    let sums = sum_lines(&String::from_utf8_lossy(&out.stdout));
    let mut live: Vec<u64> = sums
        .alerts
        .iter()
        .filter(|a| a["dimension"] == "total" && a["metric"] == "bytes")
        .map(|a| a["second"].as_u64().unwrap())
        .collect();
    live.sort_unstable();
    assert_eq!(live, bt, "live alerts on total bytes vs backtest alert rows");
}
