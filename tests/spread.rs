//! One exporter, one source port, two shards: `SO_REUSEPORT` gives every datagram to one shard,
//! and the spread hands them on so that both decode. Totals must stay exact, and templates
//! (updated mid-stream) and sampling rates must be applied on both shards before the data that
//! depends on them. Live `flowshard run` over loopback UDP.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::net::UdpSocket;
use std::time::Duration;

/// An IPFIX message from raw sets (each `(set id, body)`), sequence `seq`, domain 1.
fn ipfix(seq: u32, sets: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, b) in sets {
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&((b.len() + 4) as u16).to_be_bytes());
        body.extend_from_slice(b);
    }
    let mut m = Vec::new();
    m.extend_from_slice(&10u16.to_be_bytes());
    m.extend_from_slice(&((16 + body.len()) as u16).to_be_bytes());
    m.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&1u32.to_be_bytes());
    m.extend_from_slice(&body);
    m
}

/// A template record body: id, then (element id, length) pairs.
fn template(id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (f, l) in fields {
        b.extend_from_slice(&f.to_be_bytes());
        b.extend_from_slice(&l.to_be_bytes());
    }
    b
}

/// Layout A of template 256: src v4, dst v4, octets (8), packets (8), protocol — 25 bytes.
const LAYOUT_A: &[(u16, u16)] = &[(8, 4), (12, 4), (1, 8), (2, 8), (4, 1)];
/// Layout B of the same template id: octets (4), dst v4, src v4, packets (4), protocol — 17.
const LAYOUT_B: &[(u16, u16)] = &[(1, 4), (12, 4), (8, 4), (2, 4), (4, 1)];

fn record(layout: &[(u16, u16)], src: [u8; 4], dst: [u8; 4], octets: u64, packets: u64) -> Vec<u8> {
    let mut r = Vec::new();
    for (f, l) in layout {
        match (f, l) {
            (8, _) => r.extend_from_slice(&src),
            (12, _) => r.extend_from_slice(&dst),
            (1, 8) => r.extend_from_slice(&octets.to_be_bytes()),
            (1, 4) => r.extend_from_slice(&(octets as u32).to_be_bytes()),
            (2, 8) => r.extend_from_slice(&packets.to_be_bytes()),
            (2, 4) => r.extend_from_slice(&(packets as u32).to_be_bytes()),
            (4, 1) => r.push(17),
            _ => unreachable!(),
        }
    }
    r
}

const PER_PHASE: usize = 400;
const PER_DATAGRAM: usize = 20;

/// Sends the three phases from one socket (one source port): layout A; layout B under the same
/// template id; a 1-in-10 sampling rate announced by options data. Template sets are sent alone
/// at each phase start and again, with data, every 50th datagram. Returns datagrams sent.
fn send_phases(sock: &UdpSocket, to: &str) -> u64 {
    let mut seq = 0u32;
    let mut sent = 0u64;
    let mut send = |m: Vec<u8>| {
        sock.send_to(&m, to).unwrap();
        sent += 1;
        if sent % 32 == 0 {
            std::thread::sleep(Duration::from_micros(300));
        }
    };
    let options = {
        // options template 257: scope observationDomainId (149, 4), samplingInterval (34, 4)
        let mut t = Vec::new();
        t.extend_from_slice(&257u16.to_be_bytes());
        t.extend_from_slice(&2u16.to_be_bytes());
        t.extend_from_slice(&1u16.to_be_bytes());
        for (f, l) in [(149u16, 4u16), (34, 4)] {
            t.extend_from_slice(&f.to_be_bytes());
            t.extend_from_slice(&l.to_be_bytes());
        }
        t
    };
    for (phase, layout, octets, packets) in
        [(1u8, LAYOUT_A, 100u64, 1u64), (2, LAYOUT_B, 200, 2), (3, LAYOUT_B, 300, 3)]
    {
        let tmpl = (2u16, template(256, layout));
        if phase == 3 {
            let mut data = Vec::new();
            data.extend_from_slice(&1u32.to_be_bytes());
            data.extend_from_slice(&10u32.to_be_bytes());
            send(ipfix(seq, &[(3, options.clone()), (257, data)]));
        } else {
            send(ipfix(seq, std::slice::from_ref(&tmpl)));
        }
        for d in 0..PER_PHASE {
            let mut body = Vec::new();
            for r in 0..PER_DATAGRAM {
                let n = (d * PER_DATAGRAM + r) % 200;
                body.extend_from_slice(&record(layout, [192, 0, 2, 1], [10, phase, 0, n as u8], octets, packets));
            }
            let mut sets = Vec::new();
            if d % 50 == 49 {
                sets.push(tmpl.clone());
            }
            sets.push((256, body));
            send(ipfix(seq, &sets));
            seq += PER_DATAGRAM as u32;
        }
    }
    sent
}

fn shard_field(s: &serde_json::Value, i: usize, f: &str) -> u64 {
    s["shards"][i][f].as_u64().unwrap_or_else(|| panic!("shards[{i}].{f} in {s}"))
}

#[test]
fn one_exporter_on_two_shards_with_template_updates_mid_stream() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(2, dir.path(), &["--spread", "always"]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = send_phases(&sock, &run.addr);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out, err) = run.stop();
    assert!(ok, "exit status; stderr {err:?}");
    let s = summary(&err);
    assert_eq!(s["datagrams"].as_u64().unwrap(), sent, "every datagram received: {s}");
    assert_eq!(s["kernel_drops"].as_u64().unwrap(), 0);
    assert_eq!(s["decode_errors"].as_u64().unwrap(), 0, "no template missing on either shard: {s}");

    let n = (PER_PHASE * PER_DATAGRAM) as u64;
    assert_eq!(s["records"].as_u64().unwrap(), 3 * n, "{s}");
    let sums = sum_lines(&out);
    // phase 3's records are scaled by the sampling rate announced in options data
    assert_eq!(sums.total_bytes, n * 100 + n * 200 + n * 300 * 10, "{s}");
    assert_eq!(sums.total_packets, n + n * 2 + n * 3 * 10, "{s}");
    // each phase's destinations carry exactly that phase's octets: a record decoded with the
    // old layout after the update would land elsewhere
    for (phase, want) in [(1u8, n * 100), (2, n * 200), (3, n * 3000)] {
        let got: u64 = sums
            .by_key
            .iter()
            .filter(|((d, k), _)| d == "dst_ip" && k.starts_with(&format!("10.{phase}.0.")))
            .map(|(_, b)| b)
            .sum();
        assert_eq!(got, want, "phase {phase} octets by destination");
    }

    // one shard received everything; both decoded a fair share; state went to the other
    let (rx, other) = if shard_field(&s, 0, "datagrams") > 0 { (0, 1) } else { (1, 0) };
    assert_eq!(shard_field(&s, other, "datagrams"), 0, "one source port reaches one socket: {s}");
    for i in [rx, other] {
        let r = shard_field(&s, i, "records");
        assert!(r * 10 >= 3 * n * 3, "shard {i} decoded {r} of {} records: {s}", 3 * n);
    }
    assert!(shard_field(&s, rx, "spread_forwarded") > 0);
    assert_eq!(shard_field(&s, rx, "spread_forwarded"), shard_field(&s, other, "spread_taken"));
    // 2 template datagrams + 1 options datagram + 24 refreshes with data, copied to one shard
    assert_eq!(shard_field(&s, rx, "spread_state_copies"), 27, "{s}");
    assert_eq!(shard_field(&s, rx, "spread_stale"), 0, "{s}");
}

#[test]
fn real_exporter_captures_spread_exactly() {
    let truth = truth();
    for name in ["softflowd-v9.pcap", "pmacct-nfprobe-v10.pcap", "softflowd-v5.pcap", "pmacct-sfprobe-10.pcap"] {
        let t = &truth[name];
        let dir = tempfile::tempdir().unwrap();
        let run = Running::start(2, dir.path(), &["--spread", "always"]);
        let sent = send_capture(&captures().join(name), &run.addr, "127.0.0.2", |_| true);
        std::thread::sleep(Duration::from_millis(500));
        let (ok, out, err) = run.stop();
        assert!(ok, "{name}: exit status, stderr {err:?}");
        let s = summary(&err);
        assert_eq!(s["datagrams"].as_u64().unwrap(), sent, "{name}: datagrams received");
        assert_eq!(s["kernel_drops"].as_u64().unwrap(), 0);
        let sums = sum_lines(&out);
        let records = s["records"].as_u64().unwrap();
        if t["protocol"] == "sflow5" {
            assert_eq!(records, t["flow_samples"].as_u64().unwrap(), "{name}: flow samples");
        } else {
            assert_eq!(records, t["flow_records"].as_u64().unwrap(), "{name}: records");
            assert_eq!(sums.total_bytes, t["octets"].as_u64().unwrap(), "{name}: octets");
            assert_eq!(sums.total_packets, t["packets"].as_u64().unwrap(), "{name}: packets");
        }
        assert_eq!(
            s["decode_errors"].as_u64().unwrap(),
            0,
            "{name}: no datagram reached a shard before its template: {s}"
        );
        if sent >= 4 {
            for i in 0..2 {
                assert!(shard_field(&s, i, "records") > 0, "{name}: shard {i} decoded nothing: {s}");
            }
        }
    }
}

#[test]
fn auto_spreads_only_the_busy_exporter() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("flowshard.toml");
    std::fs::write(&cfg, "[[listener]]\naddress = \"127.0.0.1:0\"\nspread = \"auto\"\nspread_above = 500\n").unwrap();
    let run = Running::start(2, dir.path(), &["--config", cfg.to_str().unwrap()]);
    let http = run.http.clone().unwrap();
    let v5 = std::fs::read(captures().join("softflowd-v5.pcap")).unwrap();
    let mut rd = flowshard::tools::replay::pcap::PcapReader::new(&v5).unwrap();
    let mut payloads = Vec::new();
    while let Some(p) = rd.next_udp().unwrap() {
        payloads.push(p.payload.to_vec());
    }
    let records_in = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]) as u64;
    // a busy exporter at ~2,000 datagrams/s and a small one at ~20/s, for four seconds
    let busy = UdpSocket::bind("127.0.0.3:0").unwrap();
    let small = UdpSocket::bind("127.0.0.4:0").unwrap();
    let (mut sent, mut records, mut gauge) = (0u64, 0u64, 0.0f64);
    for tick in 0..400 {
        for k in 0..20 {
            let p = &payloads[(tick * 20 + k) % payloads.len()];
            busy.send_to(p, &run.addr).unwrap();
            records += records_in(p);
            sent += 1;
        }
        if tick % 5 == 0 {
            let p = &payloads[tick % payloads.len()];
            small.send_to(p, &run.addr).unwrap();
            records += records_in(p);
            sent += 1;
        }
        if tick == 350 {
            gauge = metric_sum(&http, "flowshard_spread_exporters");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ok, _out, err) = run.stop();
    assert!(ok, "exit status; stderr {err:?}");
    let s = summary(&err);
    assert_eq!(s["datagrams"].as_u64().unwrap(), sent, "{s}");
    assert_eq!(s["records"].as_u64().unwrap(), records, "{s}");
    assert_eq!(gauge, 1.0, "only the busy exporter is spread");
    let fwd = shard_field(&s, 0, "spread_forwarded") + shard_field(&s, 1, "spread_forwarded");
    // spreading starts after the first full second above the threshold: most of the rest
    // (half of it handed on) moves
    assert!(fwd * 4 >= sent, "forwarded {fwd} of {sent}: {s}");
}
