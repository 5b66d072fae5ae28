//! `flowshard query flows`: the traffic of a slice (a [`Filter`] across dimensions: "from
//! country X", "to tenant Y on port 53") over a time range of the raw-flows topic, summed per key
//! of the dimensions asked for — the drill-down the per-dimension rollups cannot answer (they
//! hold each dimension alone). Exact: every record of the range is read again
//! ([`super::replay::kafka`]), filtered after its recorded enrichment and aggregated by the same
//! shard code as a replay, with no detection.
//!
//! May depend on: `pipeline`, `aggregate`, `sink`, `model`, `enrich`, `alert`, `detect` (their
//! configs). Lives on: the main thread (CLI) or the HTTP query thread (`/api/flows`).

use super::replay::kafka::{KafkaCounts, KafkaSource};
use super::replay::{Downstream, ReplayError};
use crate::alert::AlertDoc;
use crate::model::{Dimension, Key, Rollup};
use crate::pipeline::{PipelineConfig, SecondOutput};
use crate::sink::{Sink, SinkError};
use rustc_hash::FxHashMap;
use serde::Serialize;

/// Keys a query table holds per dimension and second before folding into `other`.
pub const QUERY_KEYS: usize = 262_144;

/// One key's sums over the range.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SliceRow {
    /// Key as the outputs write it.
    pub key: String,
    /// Octets (sampling-scaled).
    pub bytes: u64,
    /// Packets.
    pub packets: u64,
    /// Flow records.
    pub flows: u64,
    /// AS, interface or city name where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The answer.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SliceResult {
    /// The filter as written.
    pub filter: String,
    /// Seconds with traffic in the slice.
    pub seconds: u64,
    /// Records read in the range.
    pub records: u64,
    /// Of those, outside the filter.
    pub filtered_out: u64,
    /// The slice's totals: bytes, packets, flows.
    pub total: [u64; 3],
    /// Per dimension asked for: the top keys by the metric.
    pub top: Vec<(String, Vec<SliceRow>)>,
    /// What the topic gave.
    pub kafka: KafkaCounts,
}

/// A key's bytes, packets and flows, and its name where known.
type Summed = ([u64; 3], Option<String>);

/// Sums every second's rows per (dimension, key).
#[derive(Default)]
struct Sums {
    rows: FxHashMap<(Dimension, Key), Summed>,
    seconds: u64,
}

impl Sink for Sums {
    fn name(&self) -> &'static str {
        "query"
    }
    fn write(&mut self, so: &SecondOutput, _: &[AlertDoc]) -> Result<(), SinkError> {
        self.seconds += u64::from(so.rollups.iter().any(|r| r.dimension == Dimension::Total && r.flows > 0));
        for r in &so.rollups {
            let e = self.rows.entry((r.dimension, r.key)).or_default();
            e.0[0] += r.bytes;
            e.0[1] += r.packets;
            e.0[2] += r.flows;
            if e.1.is_none() {
                e.1 = name_of(r);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    fn write_alerts(&mut self, _: &[AlertDoc]) -> Result<(), SinkError> {
        Ok(())
    }
}

fn name_of(r: &Rollup) -> Option<String> {
    if let Some(i) = &r.interface {
        return Some(i.name.clone());
    }
    r.as_name.as_deref().map(str::to_string)
}

/// Runs the query: `cfg` is the appliance's pipeline (its enrichment names the rows); `by` the
/// dimensions to sum per key; `metric` 0 bytes, 1 packets, 2 flows; `n` keys each.
pub fn query(
    src: &KafkaSource,
    cfg: &PipelineConfig,
    filter: crate::model::filter::Filter,
    by: &[Dimension],
    metric: usize,
    n: usize,
) -> Result<SliceResult, ReplayError> {
    let mut dims = vec![Dimension::Total];
    let mut derived = Vec::new();
    for &d in by {
        match d.derived_from() {
            Some((from, _)) => {
                derived.push(d);
                if !dims.contains(&from) {
                    dims.push(from);
                }
            }
            None if !dims.contains(&d) => dims.push(d),
            None => {}
        }
    }
    let text = filter.text().to_string();
    let pcfg = PipelineConfig {
        agg: crate::aggregate::AggConfig {
            dimensions: dims,
            max_keys: QUERY_KEYS,
            top_k: QUERY_KEYS,
            ..cfg.agg.clone()
        },
        detect: None,
        derived,
        filter: Some(std::sync::Arc::new(filter)),
        ..cfg.clone()
    };
    let l3 = crate::detect::layer3::Layer3 { enabled: false, ..Default::default() };
    let inc = crate::alert::IncidentConfig::default();
    let down = Downstream { incidents: &inc, layer3: &l3, appliance: "query" };
    let mut sums = Sums::default();
    let sum = super::replay::replay_kafka(src, &pcfg, &down, 1, &mut sums)?;
    let mut out = SliceResult {
        filter: text,
        seconds: sums.seconds,
        records: sum.records,
        filtered_out: sum.filtered_out.unwrap_or(0),
        kafka: sum.kafka.unwrap_or_default(),
        ..Default::default()
    };
    let total = Key::new(crate::model::Ip::UNSPECIFIED, 0);
    out.total = sums.rows.get(&(Dimension::Total, total)).map_or([0; 3], |r| r.0);
    for &d in by {
        let mut rows: Vec<(&Key, &Summed)> =
            sums.rows.iter().filter(|((dim, _), _)| *dim == d).map(|((_, k), v)| (k, v)).collect();
        rows.sort_by(|a, b| b.1 .0[metric].cmp(&a.1 .0[metric]).then(a.0.cmp(b.0)));
        let top = rows
            .into_iter()
            .take(n)
            .map(|(k, (c, name))| SliceRow {
                key: d.format_key(k),
                bytes: c[0],
                packets: c[1],
                flows: c[2],
                name: name.clone(),
            })
            .collect();
        out.top.push((d.name().to_string(), top));
    }
    Ok(out)
}
