//! Reloads the `[enrich]` tables without a restart: on SIGHUP, and when any of their files
//! changes (checked every second: one `stat` per file), the tables are rebuilt on this thread
//! and published to the shards' [`Slot`]; a file that fails to load keeps the previous table in
//! service (logged, counted as an error). Counters on the `enrich` row of the sink counters:
//! `delivered` = tables published, `errors` = failed loads, `up` = the last load succeeded.
//!
//! Lives on: the I/O core (its own thread).

use crate::alert::FileVersion;
use crate::enrich::{load::load, EnrichConfig, Slot};
use crate::sink::delivery::{pause, SinkStats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The files of a configuration and their versions now.
fn versions(files: &[PathBuf]) -> Vec<Option<FileVersion>> {
    files.iter().map(|f| FileVersion::of(f)).collect()
}

/// Runs until `stop`: watches the files and SIGHUP, publishes each successful reload.
pub fn run(cfg: &EnrichConfig, slot: &Slot, hup: &AtomicBool, st: &SinkStats, stop: &AtomicBool) {
    let files: Vec<PathBuf> = [&cfg.geoip, &cfg.asn, &cfg.networks].into_iter().flatten().cloned().collect();
    let mut seen = versions(&files);
    st.up.store(true, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        pause(Duration::from_millis(250));
        let now = versions(&files);
        let signalled = hup.swap(false, Ordering::Relaxed);
        if !signalled && now == seen {
            continue;
        }
        // a file being written shows several versions: wait until it holds still for a moment
        pause(Duration::from_millis(200));
        let settled = versions(&files);
        if settled != now && !signalled {
            continue;
        }
        seen = settled;
        match load(cfg) {
            Ok(t) => {
                tracing::info!(
                    ranges = t.stats.ranges,
                    networks = t.stats.networks,
                    load_ms = t.stats.load_ms,
                    why = if signalled { "SIGHUP" } else { "file changed" },
                    "enrichment tables reloaded"
                );
                slot.publish(Arc::new(t));
                st.delivered.fetch_add(1, Ordering::Relaxed);
                st.up.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!("enrichment reload failed, the previous tables stay in service: {e}");
                st.errors.fetch_add(1, Ordering::Relaxed);
                st.up.store(false, Ordering::Relaxed);
            }
        }
    }
}
