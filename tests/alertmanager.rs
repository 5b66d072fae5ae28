//! Incidents against a real Alertmanager (Debian's `prometheus-alertmanager`, started by
//! `scripts/services.sh`): an incident fires, updates in place, and resolves; two incidents on
//! the same key fall into one Alertmanager group. Run by `scripts/test` (feature
//! `service-tests`).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{alertmanager, unique, wait_until};
use flowshard::alert::{AlertDoc, Incidents};
use flowshard::config::AlertmanagerCfg;
use flowshard::sink::alertmanager::AlertmanagerSink;
use flowshard::sink::Sink;

fn doc(second: u64, key: &str, metric: &str, value: f64) -> AlertDoc {
    AlertDoc {
        layer: 1,
        second,
        dimension: "dst_ip".into(),
        key: key.into(),
        metric: metric.into(),
        kind: "spike".into(),
        value,
        expected: 1000.0,
        score: 0.9999,
        z: 9.0,
        reason: format!("{key} {metric} surge"),
    }
}

/// The active alerts of one appliance, as Alertmanager serves them.
fn active(appliance: &str) -> Vec<serde_json::Value> {
    let url = format!("{}/api/v2/alerts?active=true&filter=appliance%3D%22{appliance}%22", alertmanager());
    let v: serde_json::Value = serde_json::from_slice(&reqwest::blocking::get(url).unwrap().bytes().unwrap()).unwrap();
    v.as_array().unwrap().clone()
}

fn groups(appliance: &str) -> Vec<serde_json::Value> {
    let url = format!("{}/api/v2/alerts/groups?filter=appliance%3D%22{appliance}%22", alertmanager());
    let v: serde_json::Value = serde_json::from_slice(&reqwest::blocking::get(url).unwrap().bytes().unwrap()).unwrap();
    v.as_array().unwrap().clone()
}

#[test]
fn incident_fires_updates_and_resolves_grouped_by_key() {
    let app = unique("am");
    let cfg = AlertmanagerCfg { url: alertmanager(), resend_s: 60 };
    let mut sink = AlertmanagerSink::start(&cfg, &app, None).unwrap();
    let mut inc = Incidents::new(&Default::default());
    // the incident opened a while ago, so that its resolve (after the quiet time) is now
    let t0 = flowshard::model::time::now_s() - 310;
    let mut ev = Vec::new();

    // fires
    inc.observe(&[doc(t0, "192.0.2.50", "bytes", 5e6)], t0, &mut ev);
    sink.write_incidents(&ev).unwrap();
    wait_until("the incident firing in Alertmanager", 20, || active(&app).len() == 1);
    let a = &active(&app)[0];
    assert_eq!(a["labels"]["key"], "192.0.2.50");
    assert_eq!(a["labels"]["layer"], "1");
    assert_eq!(a["labels"]["dimension"], "dst_ip");
    assert_eq!(a["status"]["state"], "active");
    let id = a["labels"]["incident"].as_str().unwrap().to_string();

    // updates: escalation (a new metric) — the same alert, new annotations
    ev.clear();
    inc.observe(&[doc(t0 + 2, "192.0.2.50", "packets", 9e4)], t0 + 2, &mut ev);
    assert_eq!(ev.len(), 1);
    sink.write_incidents(&ev).unwrap();
    wait_until("the update in Alertmanager", 20, || {
        let a = active(&app);
        a.len() == 1 && a[0]["annotations"]["metrics"] == "bytes,packets"
    });
    assert_eq!(active(&app)[0]["labels"]["incident"], id.as_str(), "updated in place");

    // a second incident on the same key (another layer): one group, two alerts
    let mut other = doc(t0 + 3, "192.0.2.50", "bytes", 5e6);
    other.layer = 2;
    ev.clear();
    inc.observe(&[other], t0 + 3, &mut ev);
    sink.write_incidents(&ev).unwrap();
    wait_until("both incidents in one group", 20, || {
        let g = groups(&app);
        g.len() == 1 && g[0]["alerts"].as_array().is_some_and(|a| a.len() == 2)
    });
    assert_eq!(groups(&app)[0]["labels"]["key"], "192.0.2.50");

    // resolves: quiet for resolve_after_s
    ev.clear();
    inc.tick(flowshard::model::time::now_s().max(t0 + 3 + 300), &mut ev);
    assert_eq!(ev.len(), 2);
    sink.write_incidents(&ev).unwrap();
    wait_until("both incidents resolved", 20, || active(&app).is_empty());
    sink.close();
    sink.finish();
    let st = sink.stats();
    assert!(st.delivered.load(std::sync::atomic::Ordering::Relaxed) >= 3);
}
