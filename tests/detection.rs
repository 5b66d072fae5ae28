//! Layer-1 detection on synthetic NetFlow v5 traffic replayed through the real pipeline:
//! an injected surge is flagged in the second it happens (or the next), and a steady elephant
//! flow exported once every 60 s (the exporter's active timeout) raises nothing in 30 minutes.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use flowshard::decode::netflow_v5;
use flowshard::model::{AlertKind, Dimension, FlowRecord, Ip};
use flowshard::pipeline::{Engine, PipelineConfig, SecondOutput};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() % 1_000_000) as f64 / 1_000_000.0
    }
}

const T0: u64 = 1_700_000_000;

/// Background: ~300 short flows a second among 60 sources and 25 destinations, with noise.
fn background(rng: &mut Rng, out: &mut Vec<FlowRecord>) {
    let n = 250 + rng.next() % 100;
    for _ in 0..n {
        let size = (2_000.0 * (1.0 + 4.0 * rng.unit() * rng.unit())) as u64;
        out.push(FlowRecord {
            src: Ip::from_v4(0x0a01_0000 + (rng.next() % 60) as u32),
            dst: Ip::from_v4(0xc000_0200 + (rng.next() % 25) as u32),
            src_port: 1024 + (rng.next() % 60000) as u16,
            dst_port: [80, 443, 53, 22][(rng.next() % 4) as usize],
            proto: 6,
            bytes: size,
            packets: size / 500 + 1,
            in_if: 1 + (rng.next() % 2) as u32,
            duration_ms: (rng.next() % 1500) as u32,
            ..Default::default()
        });
    }
}

/// Sends records as NetFlow v5 datagrams; a record's exporter is decided by its input
/// interface's router (in_if 1 → 127.0.0.2, else 127.0.0.3), as on a real network.
fn feed(e: &mut Engine, second: u64, recs: &[FlowRecord], out: &mut Vec<SecondOutput>) {
    let mut buf = Vec::new();
    for router in [1u32, 2] {
        let mine: Vec<FlowRecord> = recs.iter().filter(|r| (r.in_if == 1) == (router == 1)).copied().collect();
        for chunk in mine.chunks(30) {
            buf.clear();
            netflow_v5::encode(&mut buf, chunk, 10_000_000, 0, 0, 0);
            let exporter = Ip::from_v4(0x7f00_0001 + router);
            e.feed(&buf, exporter, 2055, second, out);
        }
    }
}

fn alerts(out: &[SecondOutput]) -> Vec<&flowshard::model::Alert> {
    out.iter().flat_map(|s| s.alerts.iter()).collect()
}

fn elephant_run(shards: usize, spread: bool, confirm_s: u8) -> Vec<SecondOutput> {
    let detect = flowshard::detect::DetectConfig { spike_confirm_s: confirm_s, ..Default::default() };
    let mut cfg = PipelineConfig { detect: Some(detect), ..Default::default() };
    if !spread {
        cfg.agg.long_flow_ms = u32::MAX;
    }
    let mut e = Engine::new(&cfg, shards);
    {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut out = Vec::new();
        let mut recs = Vec::new();
        for s in 0..1800u64 {
            recs.clear();
            background(&mut rng, &mut recs);
            if s % 60 == 10 {
                // 60 s of a 40 Mbit/s elephant, in one record: 300 MB — 300x the background
                // bytes of the second it lands in. The flow was already running when the
                // collector started (its first record lands during warm-up): it is steady.
                recs.push(FlowRecord {
                    src: Ip::from_v4(0x0a09_0001),
                    dst: Ip::from_v4(0xc000_0263),
                    src_port: 50000,
                    dst_port: 443,
                    proto: 6,
                    bytes: 300_000_000,
                    packets: 200_000,
                    in_if: 1,
                    duration_ms: 60_000,
                    ..Default::default()
                });
            }
            feed(&mut e, T0 + s, &recs, &mut out);
        }
        e.finish(&mut out);
        out
    }
}

#[test]
fn steady_elephant_exported_every_60s_raises_nothing() {
    for shards in [1, 2] {
        // the default detector, and a single-second one (the reference design's rule)
        let out = elephant_run(shards, true, 2);
        assert!(alerts(&out).is_empty());
        let out = elephant_run(shards, true, 1);
        let a = alerts(&out);
        assert!(
            a.is_empty(),
            "{shards} shard(s): {} false alerts, first: {:?}",
            a.len(),
            a.first().map(|x| x.reason())
        );
        // and the rollups are still exact by arrival: the elephant's bytes appear in full
        let total: u64 =
            out.iter().flat_map(|s| &s.rollups).filter(|r| r.dimension == Dimension::Total).map(|r| r.bytes).sum();
        assert!(total > 30 * 300_000_000);
    }
    // Control: without spreading long records, the same traffic is a sawtooth that alerts.
    let naive = elephant_run(1, false, 1);
    assert!(alerts(&naive).len() > 10, "the naive detector should be fooled by the sawtooth");
}

#[test]
fn injected_surge_is_flagged_in_its_second() {
    for (shards, confirm) in [(1, 2u8), (3, 2), (2, 1)] {
        let detect = flowshard::detect::DetectConfig { spike_confirm_s: confirm, ..Default::default() };
        let mut e = Engine::new(&PipelineConfig { detect: Some(detect), ..Default::default() }, shards);
        let mut rng = Rng(0x1234_5678);
        let mut out = Vec::new();
        let mut recs = Vec::new();
        let victim = Ip::from_v4(0xc000_0205);
        let surge_at = 400u64;
        for s in 0..460u64 {
            recs.clear();
            background(&mut rng, &mut recs);
            if (surge_at..surge_at + 20).contains(&s) {
                // a volumetric burst: 500 sources, 20x the usual bytes, toward one destination
                for i in 0..500u32 {
                    recs.push(FlowRecord {
                        src: Ip::from_v4(0xc633_6400 + i),
                        dst: victim,
                        src_port: 1024 + i as u16,
                        dst_port: 53,
                        proto: 17,
                        bytes: 40_000,
                        packets: 40,
                        in_if: 2,
                        ..Default::default()
                    });
                }
            }
            feed(&mut e, T0 + s, &recs, &mut out);
        }
        e.finish(&mut out);
        let a = alerts(&out);
        let before: Vec<_> = a.iter().filter(|x| x.second < T0 + surge_at).collect();
        assert!(
            before.is_empty(),
            "false alerts before the surge: {:?}",
            before.iter().map(|x| x.reason()).collect::<Vec<_>>()
        );
        let hit = |dim: Dimension| {
            a.iter().any(|x| {
                x.dimension == dim
                    && x.kind == AlertKind::Spike
                    && (T0 + surge_at..=T0 + surge_at + confirm as u64 - 1).contains(&x.second)
                    && (dim != Dimension::DstIp || x.key.ip == victim)
            })
        };
        assert!(
            hit(Dimension::Total),
            "{shards} shard(s): total not flagged; alerts: {:?}",
            a.iter().map(|x| (x.second - T0, x.reason())).collect::<Vec<_>>()
        );
        assert!(hit(Dimension::DstIp), "{shards} shard(s): victim not flagged");
        // Spikes need two anomalous seconds (spike_confirm_s = 2): the surge is flagged in
        // the second after it starts. With spike_confirm_s = 1 it is flagged in its own second.
        let first = a.iter().filter(|x| x.dimension == Dimension::DstIp).map(|x| x.second).min().unwrap();
        assert_eq!(
            first,
            T0 + surge_at + confirm as u64 - 1,
            "flagged in the second (confirm 1) or the next (confirm 2)"
        );
    }
}

/// The elephant of one run: `rate` bytes/s on in_if 1 (which it dominates: ~40x the
/// background of the interface), exported once per `active_s` by `flavor`; it starts
/// `started` seconds after the collector does (negative: it was already running).
fn elephants_run(
    active_s: u64,
    flavor: Option<flowshard::tools::gen::encode::Flavor>,
    started: i64,
) -> Vec<SecondOutput> {
    use flowshard::tools::gen::encode::{message, Export};
    let cfg = PipelineConfig { detect: Some(Default::default()), ..Default::default() };
    let mut e = Engine::new(&cfg, 2);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ active_s);
    let (mut out, mut recs, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    let rate = 25_000_000u64;
    let run = 2 * 3600u64;
    for s in 0..run {
        recs.clear();
        background(&mut rng, &mut recs);
        // records of the elephant end on its active-timeout boundaries (since it started)
        let age = s as i64 - started;
        let last_export = if age > 0 && age as u64 % active_s == 0 { Some(active_s.min(age as u64)) } else { None };
        let mut big = Vec::new();
        if let Some(d) = last_export {
            big.push(FlowRecord {
                src: Ip::from_v4(0x0a09_0001),
                dst: Ip::from_v4(0xc000_0263),
                src_port: 50000,
                dst_port: 873,
                proto: 6,
                tcp_flags: 0x18,
                bytes: rate * d,
                packets: rate * d / 1400,
                in_if: 1,
                duration_ms: (d * 1000) as u32,
                ..Default::default()
            });
        }
        match flavor {
            None => {
                recs.extend(big);
                feed(&mut e, T0 + s, &recs, &mut out);
            }
            Some(flavor) => {
                feed(&mut e, T0 + s, &recs, &mut out);
                if !big.is_empty() {
                    buf.clear();
                    let h = Export { flavor, domain: 1, seq: s as u32, now_ms: (T0 + s) * 1000 };
                    message(&mut buf, &h, true, false, &big);
                    e.feed(&buf, Ip::from_v4(0x7f00_0002), 2055, T0 + s, &mut out);
                }
            }
        }
    }
    e.finish(&mut out);
    out
}

#[test]
fn elephants_of_every_active_timeout_raise_nothing() {
    use flowshard::tools::gen::encode::Flavor;
    // 10 s to 30 min (Cisco's default); v5 (sysuptime-relative times), v9 and IPFIX; running
    // before start-up (first export after it) and starting after the warm-up (first export
    // 2 min later and beyond), for two hours.
    for active_s in [10u64, 60, 120, 300, 1800] {
        for (flavor, name) in [(None, "v5"), (Some(Flavor::V9), "v9"), (Some(Flavor::Ipfix), "ipfix")] {
            for started in [-7i64, 0] {
                let out = elephants_run(active_s, flavor, started);
                let a = alerts(&out);
                assert!(
                    a.is_empty(),
                    "{name}, active timeout {active_s} s, started {started}: {} alerts, first {:?}",
                    a.len(),
                    a.first().map(|x| (x.second - T0, x.reason()))
                );
            }
        }
    }
}

#[test]
fn an_upload_ending_beside_a_steady_elephant_pages_nothing_on_the_elephant() {
    // A steady 25 MB/s elephant exported every 60 s, and beside it a host that uploads four
    // times as much for 30 minutes. The upload is the incident; when it stops, the dimension's
    // total falls to a fifth — which must not rescale the elephant's (or any other host's) slow
    // baseline into a drift (it once paged on a real exporter's elephant).
    let cfg = PipelineConfig { detect: Some(Default::default()), ..Default::default() };
    let mut e = Engine::new(&cfg, 2);
    let mut rng = Rng(0x51f1_5eed);
    let (mut out, mut recs) = (Vec::new(), Vec::new());
    let elephant = (Ip::from_v4(0x0a09_0001), Ip::from_v4(0xc000_0263));
    let uploader = (Ip::from_v4(0x0a05_0005), Ip::from_v4(0xc633_64c8));
    let (up_from, up_to) = (1200u64, 3000u64);
    for s in 0..4800u64 {
        recs.clear();
        background(&mut rng, &mut recs);
        if s % 60 == 10 {
            recs.push(FlowRecord {
                src: elephant.0,
                dst: elephant.1,
                src_port: 50000,
                dst_port: 873,
                proto: 6,
                bytes: 25_000_000 * 60,
                packets: 25_000_000 * 60 / 1400,
                in_if: 1,
                duration_ms: 60_000,
                ..Default::default()
            });
        }
        // the uploader: a few KB/s of its own, then 100 MB/s in short flows
        let rate = if (up_from..up_to).contains(&s) { 100_000_000 } else { 4_000 };
        for k in 0..5u16 {
            recs.push(FlowRecord {
                src: uploader.0,
                dst: uploader.1,
                src_port: 40000 + k,
                dst_port: 443,
                proto: 6,
                bytes: rate / 5,
                packets: rate / 5 / 1400 + 1,
                in_if: 2,
                duration_ms: 900,
                ..Default::default()
            });
        }
        feed(&mut e, T0 + s, &recs, &mut out);
    }
    e.finish(&mut out);
    let a = alerts(&out);
    assert!(
        a.iter().any(|x| x.key.ip == uploader.0 && x.second - T0 >= up_from),
        "the upload itself is flagged: {:?}",
        a.iter().map(|x| x.reason()).collect::<Vec<_>>()
    );
    let wrong: Vec<_> = a
        .iter()
        .filter(|x| x.key.ip == elephant.0 || x.key.ip == elephant.1)
        .chain(a.iter().filter(|x| x.dimension == Dimension::SrcIp && x.key.ip != uploader.0))
        .map(|x| (x.second - T0, x.reason()))
        .collect();
    assert!(wrong.is_empty(), "alerts on hosts other than the uploader: {wrong:?}");
}
