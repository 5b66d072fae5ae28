//! One alert pipeline for every detection layer: one schema ([`AlertDoc`]), one gate
//! ([`AlertGate`]: operator suppressions, de-duplication and a cooldown per (layer, dimension,
//! key)), and the suppression store that operator feedback writes (CLI or Kafka feedback topic),
//! persisted in the state directory so that it survives restarts.
//!
//! The I/O loop runs every alert — layer 1 from the shards, layers 2 and 3 from their jobs —
//! through the gate, then hands the survivors to every sink (Kafka alerts topic, OpenSearch
//! alerts index, Valkey, JSON lines, webhook).
//!
//! May depend on: `model`, `detect` (the layer-3 result an alert is made of). Lives on: I/O cores.

pub mod incident;

pub use incident::{IncidentConfig, IncidentEvent, IncidentState, Incidents};

use crate::model::Alert;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The alerts of confirmed layer-3 anomalies ([`crate::detect::layer3::Layer3Engine::take_confirmed`]).
pub fn layer3_alerts(confirmed: &[crate::detect::layer3::AnomalyResult], interval_s: u64) -> Vec<AlertDoc> {
    confirmed.iter().map(|r| AlertDoc::from_layer3(r, interval_s)).collect()
}

/// An alert of any layer, as every sink sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertDoc {
    /// 1 inline, 2 Holt-Winters in OpenSearch, 3 Random Cut Forest.
    pub layer: u8,
    /// Start of the anomalous interval (Unix seconds).
    pub second: u64,
    /// Dimension name.
    pub dimension: String,
    /// Key as outputs format it.
    pub key: String,
    /// Metric (bytes, packets, flows, distinct).
    pub metric: String,
    /// spike, drop, level_shift, seasonal, rcf.
    pub kind: String,
    /// Observed value.
    pub value: f64,
    /// Expected value (baseline, forecast).
    pub expected: f64,
    /// Score in [0, 1] (layer 1: calibrated; layer 2: from the residual's z; layer 3: grade).
    pub score: f64,
    /// Standardised deviation, where the layer has one (NaN otherwise).
    pub z: f64,
    /// Human-readable reason.
    pub reason: String,
}

impl AlertDoc {
    /// The layer-1 alert in the shared schema.
    pub fn from_layer1(a: &Alert) -> AlertDoc {
        AlertDoc {
            layer: a.layer,
            second: a.second,
            dimension: a.dimension.name().to_string(),
            key: a.dimension.format_key(&a.key),
            metric: a.metric.name().to_string(),
            kind: a.kind.name().to_string(),
            value: a.value,
            expected: a.baseline,
            score: a.score,
            z: a.z,
            reason: a.reason(),
        }
    }

    /// A host detector's alert: layer 1 (inline statistics on the I/O core's merged host rows),
    /// dimension `host` (or `process` for a process's memory, key `host/process`).
    pub fn from_host(a: &crate::detect::host::HostAlert) -> AlertDoc {
        let process = a.metric == "rss_bytes";
        AlertDoc {
            layer: 1,
            second: a.second,
            dimension: if process { "process" } else { "host" }.into(),
            key: if process { format!("{}/{}", a.host, a.subject) } else { a.host.clone() },
            metric: a.metric.into(),
            kind: a.kind.name().into(),
            value: a.value,
            expected: a.expected,
            score: a.score,
            z: f64::NAN,
            reason: a.reason.clone(),
        }
    }

    /// The layer-3 alert of an anomaly result: metric = the feature that drove it (highest
    /// relevant attribution), value and expected = that feature's actual and expected values
    /// over the interval, score = the grade, reason naming every feature.
    pub fn from_layer3(r: &crate::detect::layer3::AnomalyResult, interval_s: u64) -> AlertDoc {
        let i = r.driver();
        let actual = r.judged();
        AlertDoc {
            layer: 3,
            second: r.approx_start(interval_s),
            dimension: "src_ip".into(),
            key: r.entity.to_string(),
            metric: crate::detect::layer3::ALERT_METRICS[i].into(),
            kind: "rcf".into(),
            value: actual[i],
            expected: r.scored.expected.map_or(f64::NAN, |e| e[i]),
            score: r.scored.grade,
            z: f64::NAN,
            reason: r.reason(),
        }
    }

    /// Stable id: `appliance:layer:dimension:key:metric:second` (OpenSearch `_id`, dedup key).
    pub fn id(&self, appliance: &str) -> String {
        format!("{appliance}:{}:{}:{}:{}:{}", self.layer, self.dimension, self.key, self.metric, self.second)
    }

    /// Appends the JSON object (no newline):
    /// `{"type":"alert","appliance","second","time","layer","dimension","key","metric","kind",
    /// "value","expected","baseline","score","z","reason"}` (`baseline` = `expected`, kept for
    /// readers of the first version).
    pub fn write_json(&self, out: &mut String, appliance: &str) {
        out.push_str("{\"type\":\"alert\",\"appliance\":");
        crate::model::json::esc(out, appliance);
        let _ = write!(
            out,
            ",\"second\":{},\"time\":\"{}\",\"layer\":{},\"dimension\":",
            self.second,
            crate::model::time::rfc3339(self.second),
            self.layer
        );
        crate::model::json::esc(out, &self.dimension);
        out.push_str(",\"key\":");
        crate::model::json::esc(out, &self.key);
        out.push_str(",\"metric\":");
        crate::model::json::esc(out, &self.metric);
        out.push_str(",\"kind\":");
        crate::model::json::esc(out, &self.kind);
        out.push_str(",\"value\":");
        crate::model::json::num(out, self.value);
        out.push_str(",\"expected\":");
        crate::model::json::num(out, self.expected);
        out.push_str(",\"baseline\":");
        crate::model::json::num(out, self.expected);
        out.push_str(",\"score\":");
        crate::model::json::num(out, self.score);
        out.push_str(",\"z\":");
        crate::model::json::num(out, self.z);
        out.push_str(",\"reason\":");
        crate::model::json::esc(out, &self.reason);
        out.push('}');
    }
}

/// Operator feedback.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Feedback {
    /// Silence a key (all layers, or one) until a time.
    Suppress {
        /// Dimension, or any.
        #[serde(default)]
        dimension: Option<String>,
        /// Key as outputs print it.
        key: String,
        /// Until (Unix seconds).
        until: u64,
        /// Only this layer.
        #[serde(default)]
        layer: Option<u8>,
        /// Why (free text, for the audit trail).
        #[serde(default)]
        reason: String,
    },
    /// This alert was a false positive: the same (layer, dimension, key, metric) is silenced
    /// for the configured time.
    FalsePositive {
        /// Layer of the alert.
        layer: u8,
        /// Dimension.
        dimension: String,
        /// Key.
        key: String,
        /// Metric.
        metric: String,
        /// Until (Unix seconds).
        until: u64,
        /// Why.
        #[serde(default)]
        reason: String,
    },
    /// Lift every suppression of a key.
    Unsuppress {
        /// Key.
        key: String,
    },
}

/// The suppression store (`<state_dir>/suppressions.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Suppressions {
    /// Active (and recently expired) feedback items.
    pub items: Vec<Feedback>,
}

/// Suppression-store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File-system error.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not our JSON.
    #[error("{path}: {problem}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl Suppressions {
    /// The store's file in a state directory.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("suppressions.json")
    }

    /// Loads the store (empty when missing).
    pub fn load(state_dir: &Path) -> Result<Suppressions, StoreError> {
        let path = Self::path(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| StoreError::Parse { path, problem: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Suppressions::default()),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// Writes the store atomically.
    pub fn save(&self, state_dir: &Path) -> Result<(), StoreError> {
        let path = Self::path(state_dir);
        let io = |source| StoreError::Io { path: path.clone(), source };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let tmp = state_dir.join("suppressions.json.tmp");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| StoreError::Parse { path: path.clone(), problem: e.to_string() })?;
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Applies one feedback item (expired items are pruned).
    pub fn apply(&mut self, f: Feedback, now: u64) {
        self.items.retain(|i| match i {
            Feedback::Suppress { until, .. } | Feedback::FalsePositive { until, .. } => *until > now,
            Feedback::Unsuppress { .. } => false,
        });
        if let Feedback::Unsuppress { key } = &f {
            self.items.retain(|i| match i {
                Feedback::Suppress { key: k, .. } | Feedback::FalsePositive { key: k, .. } => k != key,
                Feedback::Unsuppress { .. } => false,
            });
            return;
        }
        self.items.push(f);
    }

    /// Loads, applies, saves: what the CLI and the feedback consumer do.
    pub fn apply_to_dir(state_dir: &Path, f: Feedback, now: u64) -> Result<(), StoreError> {
        let mut s = Suppressions::load(state_dir)?;
        s.apply(f, now);
        s.save(state_dir)
    }

    /// True when an alert is silenced at `now`.
    pub fn silences(&self, a: &AlertDoc, now: u64) -> bool {
        self.items.iter().any(|i| match i {
            Feedback::Suppress { dimension, key, until, layer, .. } => {
                *until > now
                    && *key == a.key
                    && dimension.as_ref().is_none_or(|d| *d == a.dimension)
                    && layer.is_none_or(|l| l == a.layer)
            }
            Feedback::FalsePositive { layer, dimension, key, metric, until, .. } => {
                *until > now && *key == a.key && *dimension == a.dimension && *metric == a.metric && *layer == a.layer
            }
            Feedback::Unsuppress { .. } => false,
        })
    }
}

/// What the gate decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Goes to the sinks.
    Pass,
    /// An operator suppression or false-positive mark silences it.
    Suppressed,
    /// Already raised (same id), or within the cooldown of the last alert on this key.
    Duplicate,
}

/// Counters of the gate, by layer (index = layer, 0 unused).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateCounters {
    /// Passed.
    pub passed: [u64; 4],
    /// Suppressed by feedback.
    pub suppressed: [u64; 4],
    /// Dropped as duplicates or inside the cooldown.
    pub duplicate: [u64; 4],
    /// Feedback items applied (reloads of the store that changed it).
    pub feedback_reloads: u64,
}

/// What tells one saved version of a file from another (the suppression store, the
/// enrichment tables): modification time, inode and length. A file replaced by a rename gets a
/// new inode, so a change the file system's coarse modification time (one clock tick) would
/// hide is still seen. One `stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion {
    modified: Option<SystemTime>,
    inode: u64,
    len: u64,
}

impl FileVersion {
    /// The version of `path` now (`None`: missing or unreadable).
    pub fn of(path: &Path) -> Option<FileVersion> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| FileVersion { modified: m.modified().ok(), inode: m.ino(), len: m.len() })
    }
}

/// Suppression + de-duplication + cooldown.
#[derive(Debug)]
pub struct AlertGate {
    state_dir: PathBuf,
    cooldown_s: u64,
    store: Suppressions,
    store_version: Option<FileVersion>,
    last: HashMap<(u8, String, String), u64>,
    seen: HashMap<(u8, String, String, String, u64), u64>,
    /// Counters.
    pub counters: GateCounters,
}

impl AlertGate {
    /// A gate reading suppressions from `state_dir`, with a cooldown per (layer, dimension, key).
    pub fn new(state_dir: &Path, cooldown_s: u64) -> AlertGate {
        let mut g = AlertGate {
            state_dir: state_dir.to_path_buf(),
            cooldown_s,
            store: Suppressions::default(),
            store_version: None,
            last: HashMap::new(),
            seen: HashMap::new(),
            counters: GateCounters::default(),
        };
        g.reload();
        g
    }

    /// Re-reads the suppression store when its file changed (cheap: one `stat`; the store is
    /// replaced by a rename on every save, see [`FileVersion`]).
    pub fn reload(&mut self) {
        let m = FileVersion::of(&Suppressions::path(&self.state_dir));
        if m == self.store_version {
            return;
        }
        match Suppressions::load(&self.state_dir) {
            Ok(s) => {
                self.store = s;
                self.store_version = m;
                self.counters.feedback_reloads += 1;
            }
            Err(e) => tracing::warn!("ignoring suppressions: {e}"),
        }
    }

    /// Decides one alert at wall-clock `now`.
    pub fn admit(&mut self, a: &AlertDoc, now: u64) -> Verdict {
        let l = (a.layer as usize).min(3);
        if self.store.silences(a, now) {
            self.counters.suppressed[l] += 1;
            return Verdict::Suppressed;
        }
        let id = (a.layer, a.dimension.clone(), a.key.clone(), a.metric.clone(), a.second);
        if self.seen.contains_key(&id) {
            self.counters.duplicate[l] += 1;
            return Verdict::Duplicate;
        }
        let k = (a.layer, a.dimension.clone(), a.key.clone());
        if let Some(&t) = self.last.get(&k) {
            if a.second >= t && a.second < t + self.cooldown_s {
                self.counters.duplicate[l] += 1;
                return Verdict::Duplicate;
            }
        }
        self.seen.insert(id, now);
        self.last.insert(k, a.second);
        self.counters.passed[l] += 1;
        // Bound memory: forget ids and cooldowns older than a day.
        if self.seen.len() > 100_000 {
            self.seen.retain(|_, t| *t + 86_400 > now);
            let cd = self.cooldown_s;
            self.last.retain(|_, s| *s + cd + 86_400 > now);
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(layer: u8, key: &str, second: u64) -> AlertDoc {
        AlertDoc {
            layer,
            second,
            dimension: "dst_ip".into(),
            key: key.into(),
            metric: "bytes".into(),
            kind: "spike".into(),
            value: 10.0,
            expected: 1.0,
            score: 0.99,
            z: 5.0,
            reason: "r".into(),
        }
    }

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("flowshard-gate-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn dedup_and_cooldown_per_layer_and_key() {
        let mut g = AlertGate::new(&dir("cd"), 300);
        assert_eq!(g.admit(&doc(1, "a", 1000), 1000), Verdict::Pass);
        assert_eq!(g.admit(&doc(1, "a", 1000), 1001), Verdict::Duplicate);
        assert_eq!(g.admit(&doc(1, "a", 1100), 1100), Verdict::Duplicate, "inside the cooldown");
        assert_eq!(g.admit(&doc(2, "a", 1100), 1100), Verdict::Pass, "another layer");
        assert_eq!(g.admit(&doc(1, "b", 1100), 1100), Verdict::Pass, "another key");
        assert_eq!(g.admit(&doc(1, "a", 1300), 1300), Verdict::Pass, "after the cooldown");
        assert_eq!(g.counters.passed[1], 3);
        assert_eq!(g.counters.duplicate[1], 2);
    }

    #[test]
    fn suppressions_persist_and_are_honoured() {
        let d = dir("sup");
        Suppressions::apply_to_dir(
            &d,
            Feedback::Suppress {
                dimension: None,
                key: "a".into(),
                until: 5000,
                layer: None,
                reason: "maintenance".into(),
            },
            1000,
        )
        .unwrap();
        Suppressions::apply_to_dir(
            &d,
            Feedback::FalsePositive {
                layer: 2,
                dimension: "dst_ip".into(),
                key: "b".into(),
                metric: "bytes".into(),
                until: 5000,
                reason: String::new(),
            },
            1000,
        )
        .unwrap();
        let mut g = AlertGate::new(&d, 0);
        assert_eq!(g.admit(&doc(1, "a", 1000), 1000), Verdict::Suppressed);
        assert_eq!(g.admit(&doc(3, "a", 1001), 1001), Verdict::Suppressed, "every layer");
        assert_eq!(g.admit(&doc(2, "b", 1000), 1000), Verdict::Suppressed);
        assert_eq!(g.admit(&doc(1, "b", 1000), 1000), Verdict::Pass, "false positive is per layer");
        assert_eq!(g.admit(&doc(1, "a", 6000), 6000), Verdict::Pass, "expired");
        Suppressions::apply_to_dir(&d, Feedback::Unsuppress { key: "b".into() }, 1000).unwrap();
        assert!(Suppressions::load(&d).unwrap().items.iter().all(|i| !matches!(i, Feedback::FalsePositive { .. })));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_reload_sees_every_save_even_inside_one_clock_tick() {
        let d = dir("tick");
        let fp = |key: &str| Feedback::FalsePositive {
            layer: 2,
            dimension: "dst_ip".into(),
            key: key.into(),
            metric: "bytes".into(),
            until: 5000,
            reason: String::new(),
        };
        Suppressions::apply_to_dir(&d, fp("a"), 1000).unwrap();
        let mut g = AlertGate::new(&d, 0);
        // saves back to back (same length, usually the same modification-time tick)
        for key in ["b", "c", "d"] {
            Suppressions::apply_to_dir(&d, fp(key), 1000).unwrap();
            g.reload();
            assert_eq!(g.admit(&doc(2, key, 1000), 1000), Verdict::Suppressed, "{key}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn json_shape() {
        let mut s = String::new();
        doc(2, "192.0.2.1", 1_795_570_299).write_json(&mut s, "fs1");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["time"], "2026-11-25T01:31:39Z");
        assert_eq!(v["layer"], 2);
        assert_eq!(v["expected"], 1.0);
    }

    #[test]
    fn host_alerts_take_feedback_like_flow_alerts() {
        let a = crate::detect::host::HostAlert {
            second: 100,
            kind: crate::detect::host::HostAlertKind::CpuSpike,
            host: "web1".into(),
            subject: "cpu".into(),
            metric: "cpu_busy_pct",
            value: 99.0,
            expected: 10.0,
            score: 0.9,
            exhaustion_s: None,
            reason: String::new(),
        };
        let d = AlertDoc::from_host(&a);
        assert_eq!((d.layer, d.dimension.as_str(), d.key.as_str(), d.kind.as_str()), (1, "host", "web1", "cpu_spike"));
        let mut s = Suppressions::default();
        s.apply(
            Feedback::Suppress {
                dimension: Some("host".into()),
                key: "web1".into(),
                until: 1000,
                layer: None,
                reason: String::new(),
            },
            50,
        );
        assert!(s.silences(&d, 100));
        assert!(!s.silences(&AlertDoc { key: "web2".into(), ..d.clone() }, 100));
    }
}
