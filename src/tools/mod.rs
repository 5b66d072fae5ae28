//! The tools around the appliance, each usable from the CLI and from tests: the traffic
//! generator with labeled incidents and the encoders it needs ([`gen`]), pcap replay through the
//! same pipeline ([`replay`]; also of the raw-flows Kafka topic), slices of that topic summed per
//! key ([`slice`]: `query flows`), the layer-1 backtest over a CSV series ([`backtest`]) and the
//! scoring of alerts against labels ([`eval`]).
//!
//! May depend on: `pipeline`, `decode`, `detect`, `sink`, `alert`, `model`, `enrich` (AS names
//! on replayed rollups). Lives
//! on: the main thread (and the generator's sender threads).

pub mod backtest;
pub mod eval;
pub mod gen;
pub mod replay;
pub mod slice;
