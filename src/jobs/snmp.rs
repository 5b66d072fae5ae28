//! The SNMP job: polls the interface table (ifName, ifAlias, ifHighSpeed) of every exporter the
//! I/O loop has seen in the flows ([`Exporters`]), every `poll_s` (after a failure every
//! `retry_s`), lays the static `[[enrich.interface]]` entries over it, publishes it to the
//! [`IfSlot`] the I/O loop reads, and persists it to the state directory. A failed poll keeps
//! what was known of the exporter (names stay while its agent is down). Counters on the `snmp`
//! row of the sink counters: `delivered` = successful polls, `errors` = failed ones, `up` = the
//! last poll succeeded.
//!
//! Lives on: the I/O core (its own thread; the polls block only it).

use crate::enrich::snmp::{agent_of, poll, state_path, IfSlot, Interfaces, StaticInterface};
use crate::enrich::EnrichConfig;
use crate::model::Ip;
use crate::sink::delivery::{pause, SinkStats};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Exporters the job should poll (the I/O loop names each once).
pub type Exporters = Sender<Ip>;

/// Exporters tracked at most (each new one beyond is ignored, logged once).
const MAX_EXPORTERS: usize = 10_000;

/// A channel for [`Exporters`].
pub fn channel() -> (Exporters, Receiver<Ip>) {
    crossbeam_channel::bounded(MAX_EXPORTERS)
}

/// The table a run starts with: the persisted one (static entries over it), published at once.
pub fn restore(state_dir: &Path, statics: &[StaticInterface], slot: &IfSlot) -> Interfaces {
    let learnt = match Interfaces::load(&state_path(state_dir)) {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            tracing::warn!("interface names not restored ({e}); polling afresh");
            Interfaces::default()
        }
    };
    slot.publish(learnt.with_static(statics));
    learnt
}

/// Runs until `stop`, from the table [`restore`] read (`learnt`: what SNMP gave, without
/// the static entries).
pub fn run(
    mut learnt: Interfaces,
    enrich: &EnrichConfig,
    state_dir: &Path,
    exporters: &Receiver<Ip>,
    slot: &IfSlot,
    st: &SinkStats,
    stop: &AtomicBool,
) {
    let (cfg, statics) = (&enrich.snmp, &enrich.interface[..]);
    let mut due: HashMap<Ip, Instant> = HashMap::new();
    let mut full_logged = false;
    st.up.store(true, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        for e in exporters.try_iter() {
            if due.len() >= MAX_EXPORTERS && !due.contains_key(&e) {
                if !std::mem::replace(&mut full_logged, true) {
                    tracing::warn!("SNMP: {MAX_EXPORTERS} exporters tracked; more are not polled");
                }
                continue;
            }
            due.entry(e).or_insert_with(Instant::now);
        }
        let now = Instant::now();
        let mut changed = false;
        let ready: Vec<Ip> = due.iter().filter(|(_, t)| **t <= now).map(|(e, _)| *e).collect();
        for e in ready {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let result = agent_of(cfg, e).and_then(|a| poll(cfg, a));
            let next = match result {
                Ok(ifaces) => {
                    tracing::info!(exporter = %e, interfaces = ifaces.len(), "SNMP: interfaces polled");
                    learnt.set_exporter(e, ifaces);
                    changed = true;
                    st.delivered.fetch_add(1, Ordering::Relaxed);
                    st.up.store(true, Ordering::Relaxed);
                    cfg.poll_s
                }
                Err(err) => {
                    tracing::warn!(exporter = %e, "SNMP poll failed, the names known stay in use: {err}");
                    st.errors.fetch_add(1, Ordering::Relaxed);
                    st.up.store(false, Ordering::Relaxed);
                    cfg.retry_s
                }
            };
            due.insert(e, Instant::now() + Duration::from_secs(next.max(1)));
        }
        if changed {
            slot.publish(learnt.with_static(statics));
            if let Err(e) = learnt.save(&state_path(state_dir)) {
                tracing::warn!("cannot persist interface names to {}: {e}", state_dir.display());
            }
        }
        pause(Duration::from_millis(250));
    }
}
