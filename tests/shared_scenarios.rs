//! Detection on traffic flowshard did not write: the labeled one-hour IPFIX captures of
//! `../shared/data/scenarios/mkdev.py` (two exporters, steady elephants with 30-s, 120-s and
//! 300-s active timeouts, a swell, bursts; five incidents in the second hour), replayed through
//! `flowshard replay` (decode → aggregate → detect → incidents, as the appliance runs them).
//! What an operator would be paged for is an incident: the clean hour must open at most one,
//! and each labeled incident must be an incident (open or update naming its key) within its
//! `max_delay_s`, with no more than one other incident outside the labeled windows. Run twice:
//! with the defaults, and with layer 3 at its most sensitive interval (10 s instead of 60 s),
//! so every layer is held to the same budget of false incidents.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{bin, sum_lines};
use std::path::{Path, PathBuf};
use std::process::Command;

fn scenarios() -> Option<PathBuf> {
    let mk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/scenarios/mkdev.py");
    if !mk.exists() {
        assert!(
            std::env::var("FLOWSHARD_SKIP_SHARED").is_ok(),
            "{} is missing (set FLOWSHARD_SKIP_SHARED=1 to skip)",
            mk.display()
        );
        return None;
    }
    let out = std::env::temp_dir().join(format!("flowshard-shared-scenarios-{}", std::process::id()));
    let st = Command::new("python3").arg(&mk).arg(&out).output().unwrap();
    assert!(st.status.success(), "mkdev.py: {}", String::from_utf8_lossy(&st.stderr));
    Some(out)
}

fn keys(e: &serde_json::Value) -> Vec<String> {
    let mut k = vec![format!("{}:{}", e["dimension"].as_str().unwrap(), e["key"].as_str().unwrap())];
    k.extend(e["related"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()));
    k
}

#[test]
fn shared_scenarios_page_once_per_incident_and_never_on_the_clean_hour() {
    let Some(dir) = scenarios() else { return };
    let fast = dir.join("layer3-10s.toml");
    std::fs::write(&fast, "[layer3]\ninterval_s = 10\n").unwrap();
    // the four replays run at once (each is single-threaded)
    let runs: Vec<_> = [
        ("clean-60min", None),
        ("incidents-60min", None),
        ("clean-60min", Some(&fast)),
        ("incidents-60min", Some(&fast)),
    ]
    .into_iter()
    .map(|(name, config)| {
        let mut cmd = Command::new(bin());
        cmd.args(["replay", "--shards", "2"]).arg(dir.join(format!("{name}.pcap")));
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        (name, config, child)
    })
    .collect();
    for (name, config, child) in runs {
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.pcap.labels.json"))).unwrap())
                .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let sums = sum_lines(&String::from_utf8_lossy(&out.stdout));
        let incs = labels["incidents"].as_array().unwrap();
        let window = |i: &serde_json::Value| {
            let (s, e, d) =
                (i["start"].as_u64().unwrap(), i["end"].as_u64().unwrap(), i["max_delay_s"].as_u64().unwrap());
            (s, e + d.max(60))
        };
        let opens: Vec<&serde_json::Value> = sums.incidents.iter().filter(|e| e["state"] == "open").collect();
        let false_opens: Vec<String> = opens
            .iter()
            .filter(|e| {
                let t = e["opened"].as_u64().unwrap();
                !incs.iter().any(|i| (window(i).0..=window(i).1).contains(&t))
            })
            .map(|e| e["reason"].to_string())
            .collect();
        assert!(false_opens.len() <= 1, "{name} {config:?}: {} false incidents: {false_opens:?}", false_opens.len());
        for i in incs {
            let want = format!("{}:{}", i["dimension"].as_str().unwrap(), i["key"].as_str().unwrap());
            let start = i["start"].as_u64().unwrap();
            let first = sums
                .incidents
                .iter()
                .filter(|e| e["state"] != "resolve" && keys(e).contains(&want))
                .map(|e| e["second"].as_u64().unwrap())
                .filter(|&t| t >= start)
                .min();
            let delay = first.map(|t| t - start);
            assert!(
                delay.is_some_and(|d| d <= i["max_delay_s"].as_u64().unwrap()),
                "{name}: {} ({want}) detected after {delay:?} s, allowed {}",
                i["name"],
                i["max_delay_s"]
            );
        }
        // the steady elephants never page
        for k in labels["must_not_alert"].as_array().unwrap() {
            assert!(
                !opens.iter().any(|e| keys(e).iter().any(|x| x.ends_with(&format!(":{}", k.as_str().unwrap())))),
                "{name}: an incident on the elephant key {k}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
