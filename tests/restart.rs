//! Templates survive a restart: after `flowshard run` has learned NetFlow v9 / IPFIX templates and
//! stopped, a new process with the same state directory decodes data that arrives before the
//! exporter's next template refresh. A fresh state directory, as control, cannot.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;
use common::*;

/// Whether a v9/IPFIX datagram carries a template or options-template set.
fn has_templates(d: &[u8]) -> bool {
    let (hdr, tmpl) = match d.get(..2) {
        Some([0, 9]) => (20, [0u16, 1]),
        Some([0, 10]) => (16, [2u16, 3]),
        _ => return false,
    };
    let mut pos = hdr;
    while pos + 4 <= d.len() {
        let id = u16::from_be_bytes([d[pos], d[pos + 1]]);
        let len = u16::from_be_bytes([d[pos + 2], d[pos + 3]]) as usize;
        if tmpl.contains(&id) {
            return true;
        }
        if len < 4 {
            return false;
        }
        pos += len;
    }
    false
}

fn data_only_run(state: &std::path::Path, capture: &str) -> (u64, serde_json::Value) {
    let run = Running::start(1, state, &[]);
    let sent = send_capture(&captures().join(capture), &run.addr, "127.0.0.2", |d| !has_templates(d));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ok, _out, err) = run.stop();
    assert!(ok);
    (sent, summary(&err))
}

#[test]
fn templates_persist_across_restart() {
    for capture in ["softflowd-v10.pcap", "pmacct-nfprobe-v9.pcap"] {
        let state = tempfile::tempdir().unwrap();
        // First life: learn the templates.
        let run = Running::start(1, state.path(), &[]);
        send_capture(&captures().join(capture), &run.addr, "127.0.0.2", |_| true);
        std::thread::sleep(std::time::Duration::from_millis(300));
        let (ok, _, err) = run.stop();
        assert!(ok, "{err:?}");
        assert!(state.path().join("templates-shard0.json").exists());

        // Second life: data only, before any template refresh.
        let (sent, s) = data_only_run(state.path(), capture);
        assert!(sent > 0);
        assert_eq!(s["decode_errors"].as_u64().unwrap(), 0, "{capture}: {s}");
        assert!(s["records"].as_u64().unwrap() > 0, "{capture}: {s}");

        // Control: without the state directory the same data cannot be decoded.
        let fresh = tempfile::tempdir().unwrap();
        let (_, c) = data_only_run(fresh.path(), capture);
        assert_eq!(c["records"].as_u64().unwrap(), 0, "{capture}: {c}");
        assert!(c["decode_errors"].as_u64().unwrap() > 0);
    }
}
