//! `flowshard demo --duration 90` runs unattended (the injected events start at +35 s and +40 s; the
//! rest leaves a loaded machine time to see them): the injected DDoS and port scan raise their
//! alerts, and the live view, loaded in headless Chromium (Playwright) while traffic flows,
//! shows the ingest rate, top talkers and an alert; a screenshot goes to test-output/view.png.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn demo_raises_injected_alerts_and_live_view_shows_them() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let node_modules = repo.join(".cache/node/node_modules");
    let browser = node_modules.join("playwright-core").exists() && std::path::Path::new("/usr/bin/chromium").exists();
    if !browser {
        assert!(
            std::env::var("FLOWSHARD_SKIP_BROWSER").is_ok(),
            "the browser test needs Debian's chromium and `npm install --prefix .cache/node playwright-core` (.ci/run does both), or FLOWSHARD_SKIP_BROWSER=1"
        );
    }
    let mut child = Command::new(bin())
        .args(["demo", "--duration", "90", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in err.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut BufReader::new(out), &mut s).unwrap();
        s
    });
    let url = loop {
        let l = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("demo did not start");
        if let Some(i) = l.find("live view: ") {
            break l[i + "live view: ".len()..].trim().to_string();
        }
    };
    let view = if browser {
        let outdir = repo.join("test-output");
        std::fs::create_dir_all(&outdir).unwrap();
        let shot = outdir.join("view.png");
        let o = Command::new("node")
            .arg(repo.join("tests/browser/view.mjs"))
            .arg(&url)
            .arg(&shot)
            .env("NODE_PATH", &node_modules)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "browser: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
        Some(serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap())
    } else {
        None
    };
    assert!(child.wait().unwrap().success(), "demo exits 0 after --duration");
    let sums = sum_lines(&stdout.join().unwrap());
    let hit = |dim: &str, key: &str| sums.alerts.iter().any(|a| a["dimension"] == dim && a["key"] == key);
    assert!(
        hit("dst_ip", "10.0.0.4"),
        "DDoS victim alert; got {:?}",
        sums.alerts.iter().map(|a| a["reason"].clone()).collect::<Vec<_>>()
    );
    assert!(
        hit("src_ip", "198.51.100.66"),
        "scanner alert; got {:?}",
        sums.alerts.iter().map(|a| a["reason"].clone()).collect::<Vec<_>>()
    );
    if let Some(v) = view {
        assert!(!v["top_dst"].as_array().unwrap().is_empty());
        // the explore panel switched to dst_port and drew the series of the key clicked
        assert!(v["explore"].as_str().unwrap().starts_with("dst_port "), "{v}");
        assert!(v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().contains("10.0.0.4") || a.as_str().unwrap().contains("198.51.100.66")));
    }
}
