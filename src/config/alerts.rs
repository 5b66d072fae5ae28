//! `[alerts]` (the one alert gate: cooldown, false-positive silence, feedback topic) and its
//! optional webhook.
//!
//! May depend on: nothing outside `config`. Lives on: the main thread at start-up.

use super::{err, Config, ConfigError};
use serde::{Deserialize, Serialize};

/// `[alerts]`: de-duplication, cooldown, feedback, webhook.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// After an alert on (layer, dimension, key), further alerts on it are held back this long.
    pub cooldown_s: u64,
    /// `flowshard feedback false-positive` silences the same alert this long.
    pub false_positive_silence_s: u64,
    /// Kafka topic read for operator feedback (when a Kafka sink is configured; "" = off).
    pub feedback_topic: String,
    /// Optional webhook.
    pub webhook: Option<Webhook>,
    /// Optional Alertmanager.
    pub alertmanager: Option<AlertmanagerCfg>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            cooldown_s: 60,
            false_positive_silence_s: 86_400,
            feedback_topic: "flowshard.feedback".into(),
            webhook: None,
            alertmanager: None,
        }
    }
}

/// `[alerts.webhook]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// URL to POST each alert to.
    pub url: String,
    /// Payload format.
    #[serde(default)]
    pub format: WebhookFormat,
    /// PagerDuty integration (routing) key.
    #[serde(default)]
    pub routing_key: String,
    /// Only alerts with at least this score.
    #[serde(default)]
    pub min_score: f64,
}

/// `[alerts.alertmanager]`: incidents to a Prometheus Alertmanager (`POST /api/v2/alerts`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerCfg {
    /// Base URL, e.g. "http://127.0.0.1:9093".
    pub url: String,
    /// Open incidents are re-sent this often (keep it well under Alertmanager's
    /// `resolve_timeout`, 5 min by default), seconds.
    #[serde(default = "resend_s")]
    pub resend_s: u64,
}

fn resend_s() -> u64 {
    60
}

/// What a webhook receives.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// The alert JSON document.
    #[default]
    Generic,
    /// A Slack incoming-webhook message (`{"text": …}`).
    Slack,
    /// PagerDuty Events v2 (`trigger`, deduplicated by the alert id).
    Pagerduty,
}

impl Config {
    /// Checks `[alerts]`.
    pub(super) fn validate_alerts(&self, e: &mut Vec<ConfigError>) {
        let inc = &self.incidents;
        if inc.resolve_after_s == 0 || inc.correlate_s >= inc.resolve_after_s {
            e.push(err(
                "incidents.resolve_after_s",
                format!(
                    "{} s must be above zero and above incidents.correlate_s ({} s)",
                    inc.resolve_after_s, inc.correlate_s
                ),
                "use e.g. resolve_after_s = 300 and correlate_s = 10",
            ));
        }
        if inc.max_open == 0 {
            e.push(err("incidents.max_open", "0 incidents could never open", "use e.g. max_open = 10000"));
        }
        if let Some(a) = &self.alerts.alertmanager {
            if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
                e.push(err(
                    "alerts.alertmanager.url",
                    format!("{:?} is not an http(s):// URL", a.url),
                    "use e.g. \"http://127.0.0.1:9093\"",
                ));
            }
            if a.resend_s == 0 || a.resend_s >= 300 {
                e.push(err(
                    "alerts.alertmanager.resend_s",
                    format!("{} s: Alertmanager resolves alerts it has not heard of for 5 min", a.resend_s),
                    "use e.g. resend_s = 60",
                ));
            }
        }
        if let Some(w) = &self.alerts.webhook {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                e.push(err(
                    "alerts.webhook.url",
                    format!("{:?} is not an http(s):// URL", w.url),
                    "use e.g. \"https://hooks.slack.com/services/…\"",
                ));
            }
            if w.format == WebhookFormat::Pagerduty && w.routing_key.is_empty() {
                e.push(err(
                    "alerts.webhook.routing_key",
                    "PagerDuty needs the integration's routing key",
                    "set routing_key = \"…\"",
                ));
            }
        }
    }
}
