//! Detection evaluation against the generator's ground truth: per labeled incident, whether the
//! labeled key alerted during the incident and how fast; over the run, precision (alerts that
//! fall in an incident's window) and false alerts per hour (alerts outside every incident).
//!
//! An alert "belongs" to an incident when its second is in `[start, end + grace]`: an attack
//! lights up more than its labeled key (the victim's port, the exporter's interface, the
//! total), and those alerts are true positives too.
//!
//! May depend on: `gen` (labels), `model`. Lives on: the main thread.

use super::gen::{Labels, ScenarioKind};
use crate::model::Alert;
use serde::Serialize;

/// Seconds after an incident during which its alerts still count as its own.
pub const GRACE_S: u64 = 5;

/// The result for one incident.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IncidentResult {
    /// Kind.
    pub kind: ScenarioKind,
    /// Expected layer.
    pub layer: u8,
    /// Labeled dimension and key.
    pub key: String,
    /// Incident length, seconds.
    pub duration_s: u64,
    /// Seconds from the start to the first alert on the labeled key (None = missed).
    pub delay_s: Option<u64>,
    /// Alerts (any key) during the incident window.
    pub alerts: usize,
}

/// The whole evaluation.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Evaluation {
    /// Per incident.
    pub incidents: Vec<IncidentResult>,
    /// Layer-1 incidents detected / layer-1 incidents.
    pub recall: f64,
    /// Alerts inside incident windows / all alerts (1 when there are no alerts).
    pub precision: f64,
    /// Alerts outside every incident window.
    pub false_alerts: usize,
    /// Hours of traffic outside incidents.
    pub clean_hours: f64,
    /// False alerts per clean hour.
    pub false_alerts_per_hour: f64,
}

/// Scores `alerts` against `labels` over `seconds` of traffic.
pub fn evaluate(labels: &Labels, alerts: &[Alert], seconds: u64) -> Evaluation {
    let windows: Vec<(u64, u64)> = labels.incidents.iter().map(|i| (i.start, i.end + GRACE_S)).collect();
    let in_window = |s: u64| windows.iter().any(|(a, b)| s >= *a && s <= *b);
    let incidents: Vec<IncidentResult> = labels
        .incidents
        .iter()
        .map(|inc| {
            let delay_s = alerts
                .iter()
                .filter(|a| {
                    a.dimension.name() == inc.dimension
                        && a.dimension.format_key(&a.key) == inc.key
                        && a.second >= inc.start
                        && a.second <= inc.end
                })
                .map(|a| a.second - inc.start)
                .min();
            IncidentResult {
                kind: inc.kind,
                layer: inc.layer,
                key: format!("{} {}", inc.dimension, inc.key),
                duration_s: inc.end + 1 - inc.start,
                delay_s,
                alerts: alerts.iter().filter(|a| a.second >= inc.start && a.second <= inc.end + GRACE_S).count(),
            }
        })
        .collect();
    let l1: Vec<&IncidentResult> = incidents.iter().filter(|i| i.layer == 1).collect();
    let recall =
        if l1.is_empty() { 1.0 } else { l1.iter().filter(|i| i.delay_s.is_some()).count() as f64 / l1.len() as f64 };
    let inside = alerts.iter().filter(|a| in_window(a.second)).count();
    let false_alerts = alerts.len() - inside;
    let incident_s: u64 = windows.iter().map(|(a, b)| b - a + 1).sum();
    let clean_hours = seconds.saturating_sub(incident_s) as f64 / 3600.0;
    Evaluation {
        recall,
        precision: if alerts.is_empty() { 1.0 } else { inside as f64 / alerts.len() as f64 },
        false_alerts,
        clean_hours,
        false_alerts_per_hour: if clean_hours > 0.0 { false_alerts as f64 / clean_hours } else { 0.0 },
        incidents,
    }
}

/// A markdown table of an evaluation.
pub fn markdown(e: &Evaluation) -> String {
    let mut s = String::from(
        "| incident | labeled key | length | layer | detected after | alerts in window |\n|---|---|---|---|---|---|\n",
    );
    for i in &e.incidents {
        let d = match (i.layer, i.delay_s) {
            (_, Some(d)) => format!("{d} s"),
            (1, None) => "**missed**".to_string(),
            (_, None) => "(layer 2)".to_string(),
        };
        s.push_str(&format!(
            "| {:?} | {} | {} s | {} | {} | {} |\n",
            i.kind, i.key, i.duration_s, i.layer, d, i.alerts
        ));
    }
    s.push_str(&format!(
        "\nrecall (layer 1) {:.0} %, precision {:.1} %, false alerts {} in {:.2} clean hours ({:.2}/h)\n",
        e.recall * 100.0,
        e.precision * 100.0,
        e.false_alerts,
        e.clean_hours,
        e.false_alerts_per_hour
    ));
    s
}
