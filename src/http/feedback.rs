//! Operator feedback from the HTTP API and the live view: `POST /api/incidents/suppress?id=…
//! [&for_s=3600]` silences every key of an incident (its layer only) for a while, and
//! `POST /api/incidents/false-positive?id=…` marks its evidence false for
//! `alerts.false_positive_silence_s`. Both write the suppression store in the state
//! directory — the same store `flowshard feedback` writes and the gate re-reads within 2 s.
//!
//! May depend on: `alert`, `model`. Lives on: the I/O core (HTTP thread).

use super::Published;
use crate::alert::{Feedback, IncidentEvent, Suppressions};
use std::path::Path;

/// Where feedback goes and how long a false-positive mark lasts.
#[derive(Clone, Debug)]
pub struct FeedbackTarget {
    /// The state directory holding `suppressions.json`.
    pub state_dir: std::path::PathBuf,
    /// `alerts.false_positive_silence_s`.
    pub false_positive_silence_s: u64,
}

/// The keys of an incident as (dimension, key).
fn keys(e: &IncidentEvent) -> Vec<(String, String)> {
    let mut v = vec![(e.dimension.clone(), e.key.clone())];
    v.extend(e.related.iter().filter_map(|r| r.split_once(':')).map(|(d, k)| (d.to_string(), k.to_string())));
    v
}

/// Applies one action (`suppress` or `false-positive`) to the incident named by `id` (with or
/// without the appliance prefix); returns (status, JSON body).
pub fn act(
    p: &Published,
    target: &FeedbackTarget,
    action: &str,
    id: Option<&str>,
    for_s: Option<u64>,
    now: u64,
) -> (u16, String) {
    let Some(id) = id else {
        return (400, "{\"error\":\"give the incident: ?id=<id from /api/incidents>\"}".into());
    };
    // ids are `<layer>:…`; the appliance's prefix (`<appliance>:<layer>:…`) is optional
    let bare = id.split_once(':').map_or(id, |(_, rest)| rest);
    let Some(e) = p.hot.incident(id).or_else(|| p.hot.incident(bare)) else {
        return (404, format!("{{\"error\":\"no recent incident {id:?}\"}}"));
    };
    let reason = format!("{action} from the HTTP API, incident {}", e.id);
    let items: Vec<Feedback> = match action {
        "suppress" => keys(e)
            .into_iter()
            .map(|(dimension, key)| Feedback::Suppress {
                dimension: Some(dimension),
                key,
                until: now + for_s.unwrap_or(3600),
                layer: Some(e.layer),
                reason: reason.clone(),
            })
            .collect(),
        "false-positive" => keys(e)
            .into_iter()
            .flat_map(|(dimension, key)| e.metrics.iter().map(move |m| (dimension.clone(), key.clone(), m.clone())))
            .map(|(dimension, key, metric)| Feedback::FalsePositive {
                layer: e.layer,
                dimension,
                key,
                metric,
                until: now + target.false_positive_silence_s,
                reason: reason.clone(),
            })
            .collect(),
        _ => return (404, "{\"error\":\"actions: suppress, false-positive\"}".into()),
    };
    match apply(&target.state_dir, items, now) {
        Ok(n) => (200, format!("{{\"incident\":{:?},\"action\":{action:?},\"items\":{n}}}", e.id)),
        Err(err) => (500, format!("{{\"error\":{:?}}}", err.to_string())),
    }
}

fn apply(dir: &Path, items: Vec<Feedback>, now: u64) -> Result<usize, crate::alert::StoreError> {
    let mut s = Suppressions::load(dir)?;
    let n = items.len();
    for f in items {
        s.apply(f, now);
    }
    s.save(dir)?;
    Ok(n)
}
