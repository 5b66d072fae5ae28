//! The generator's labeled scenarios drive detection: a short run with a DDoS, a SYN port scan
//! and a link failure, written to a pcap by `flowshard gen` and replayed through
//! `flowshard replay`, raises layer-1 alerts on the labeled keys within two seconds of each
//! incident's start, and none outside the incidents.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::process::Command;

const GRACE_S: u64 = 5;

fn generate(dir: &std::path::Path, protocol: &str, seed: u64) -> (std::path::PathBuf, serde_json::Value) {
    let pcap = dir.join(format!("scenario-{protocol}-{seed}.pcap"));
    let out = Command::new(bin())
        .args(["gen", "--protocol", protocol, "--duration", "420", "--rate", "800", "--seed", &seed.to_string()])
        .args(["--scenario", "ddos@200+30", "--scenario", "scan@280+20", "--scenario", "link_failure@340+40"])
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "gen: {}", String::from_utf8_lossy(&out.stderr));
    let labels: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pcap.with_extension("labels.json")).unwrap()).unwrap();
    (pcap, labels)
}

#[test]
fn labeled_incidents_alert_and_quiet_periods_do_not() {
    let dir = tempfile::tempdir().unwrap();
    for (protocol, seed) in [("ipfix", 7), ("v9", 11)] {
        let (pcap, labels) = generate(dir.path(), protocol, seed);
        let out = Command::new(bin()).args(["replay", "--shards", "2"]).arg(&pcap).output().unwrap();
        assert!(out.status.success());
        let sums = sum_lines(&String::from_utf8_lossy(&out.stdout));
        let incidents = labels["incidents"].as_array().unwrap();
        assert_eq!(incidents.len(), 3);
        for inc in incidents {
            let start = inc["start"].as_u64().unwrap();
            let (dim, key) = (inc["dimension"].as_str().unwrap(), inc["key"].as_str().unwrap());
            let end = inc["end"].as_u64().unwrap();
            let hit = sums
                .alerts
                .iter()
                .filter(|a| a["dimension"] == dim && a["key"] == key)
                .map(|a| a["second"].as_u64().unwrap())
                .filter(|s| (start..=end).contains(s))
                .min();
            let hit = hit.unwrap_or_else(|| panic!("{protocol}: no alert for {inc}"));
            assert!(
                hit >= start && hit <= start + 2,
                "{protocol}: {} detected at +{}s",
                inc["kind"],
                hit as i64 - start as i64
            );
        }
        let in_incident = |s: u64| {
            incidents.iter().any(|i| s >= i["start"].as_u64().unwrap() && s <= i["end"].as_u64().unwrap() + GRACE_S)
        };
        let stray: Vec<_> = sums.alerts.iter().filter(|a| !in_incident(a["second"].as_u64().unwrap())).collect();
        assert!(stray.is_empty(), "{protocol}: {} alerts outside incidents, e.g. {}", stray.len(), stray[0]["reason"]);
    }
}

#[test]
fn generator_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = std::fs::read(generate(dir.path(), "sflow", 3).0).unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let b = std::fs::read(generate(b_dir.path(), "sflow", 3).0).unwrap();
    assert_eq!(a, b);
    assert!(a.len() > 100_000);
}
