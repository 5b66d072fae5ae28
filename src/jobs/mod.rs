//! Periodic work on the I/O core, each job on a thread of its own pinned there: the layer-2
//! Holt-Winters job ([`layer2`]), the layer-3 Random Cut Forest ([`layer3`], on `[cores]
//! layer3` when set), the Kafka feedback consumer ([`feedback`]), the enrichment tables'
//! reloader ([`enrich`]) and the SNMP interface poller ([`snmp`]). Jobs hand the
//! alerts they raise to the I/O loop through an [`AlertOut`] the runtime gives them, so they do
//! not know the runtime's message type.
//!
//! May depend on: `detect`, `enrich`, `alert`, `sink`, `config`, `model`, `pipeline` (the host
//! core), `ops` (status type). Lives on: I/O cores.

pub mod enrich;
pub mod feedback;
pub mod hosts;
pub mod layer2;
pub mod layer3;
pub mod snmp;

use crate::alert::AlertDoc;
use crate::config::{Config, Sink as S};
use crate::sink::delivery::{spawn_on, spawn_sized, SinkStats};
use crate::sink::SinkError;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Where a job's alerts go (to the I/O loop's alert gate); false once the loop is gone.
pub type AlertOut = Box<dyn Fn(Vec<AlertDoc>) -> bool + Send>;

/// Starts the jobs a configuration asks for: the layer-2 job (when enabled), the layer-3 job
/// (when enabled; its feed is returned for the I/O loop), the Kafka feedback consumer (when
/// a Kafka sink and a feedback topic are configured), the enrichment reloader and the SNMP
/// poller (its [`Annotator`](crate::enrich::snmp::Annotator) is returned for the I/O loop;
/// with static interface entries only, the annotator alone). Their counters are appended to
/// `stats`; they run until `stop`.
pub fn start(
    cfg: &Config,
    cpu: Option<usize>,
    alerts: AlertOut,
    results: layer3::ResultsOut,
    enrich_slot: Option<Arc<crate::enrich::Slot>>,
    stop: &Arc<AtomicBool>,
    stats: &mut Vec<Arc<SinkStats>>,
) -> Result<Started, SinkError> {
    let mut jobs = Vec::new();
    let mut feed = None;
    let kafka = cfg.sink.iter().find_map(|s| if let S::Kafka(k) = s { Some(k.clone()) } else { None });
    let feedback = kafka.filter(|_| !cfg.alerts.feedback_topic.is_empty());
    // set by the feedback consumer once its topic is read to the end; no consumer: nothing to wait for
    let feedback_ready = Arc::new(AtomicBool::new(feedback.is_none()));
    let os = cfg.sink.iter().find_map(|s| if let S::Opensearch(o) = s { Some(o.clone()) } else { None });
    if cfg.layer3.enabled {
        let st = SinkStats::new("layer3", None);
        stats.push(st.clone());
        let (f, rx) = layer3::channel(st.clone());
        feed = Some(f);
        let (l3, dir, stop) = (cfg.layer3.clone(), cfg.general.state_dir.clone(), stop.clone());
        let history = match &os {
            Some(o) if l3.history_intervals > 0 => {
                Some((crate::sink::opensearch::Client::new(o)?, cfg.general.appliance_id.clone()))
            }
            _ => None,
        };
        let l3cpu = cfg.cores.layer3.or(cpu);
        jobs.push(spawn_on("layer3", l3cpu, move || layer3::run(&l3, &dir, history, &rx, &results, &st, &stop))?);
    }
    if let (true, Some(o)) = (cfg.layer2.enabled, os) {
        let client = crate::sink::opensearch::Client::new(&o)?;
        let st = SinkStats::new("layer2", None);
        stats.push(st.clone());
        let (l2, ready, stop) = (cfg.layer2.clone(), feedback_ready.clone(), stop.clone());
        jobs.push(spawn_on("layer2", cpu, move || layer2::run(&client, &l2, &alerts, &st, &ready, &stop))?);
    }
    // SIGHUP (`systemctl reload`) re-reads the enrichment tables; without any it is caught
    // and ignored rather than ending the process (the signal's default)
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| SinkError::Io { sink: "enrich", source: e })?;
    if let Some(slot) = enrich_slot {
        let st = SinkStats::new("enrich", None);
        stats.push(st.clone());
        let (ecfg, stop) = (cfg.enrich.clone(), stop.clone());
        jobs.push(spawn_on("enrich", cpu, move || enrich::run(&ecfg, &slot, &hup, &st, &stop))?);
    }
    if let Some(k) = feedback {
        let st = SinkStats::new("feedback", None);
        stats.push(st.clone());
        let (topic, dir, app, ready, stop) = (
            cfg.alerts.feedback_topic.clone(),
            cfg.general.state_dir.clone(),
            cfg.general.appliance_id.clone(),
            feedback_ready,
            stop.clone(),
        );
        jobs.push(spawn_on("feedback", cpu, move || feedback::consume(&k, &app, &topic, &dir, &st, &ready, &stop))?);
    }
    let mut interfaces = None;
    if cfg.enrich.interfaces() {
        let slot = Arc::new(crate::enrich::snmp::IfSlot::default());
        let e = &cfg.enrich;
        if e.snmp.enabled {
            let st = SinkStats::new("snmp", None);
            stats.push(st.clone());
            let (tx, rx) = snmp::channel();
            let (ecfg, dir, slot2, stop) = (e.clone(), cfg.general.state_dir.clone(), slot.clone(), stop.clone());
            // the persisted names are there from the first second, before the first poll
            let learnt = snmp::restore(&dir, &e.interface, &slot);
            // snmp2's sessions hold 64-KB buffers on the stack, and v3 decrypts beside them: the
            // default 2 MiB overflowed in a debug build
            let poll = move || snmp::run(learnt, &ecfg, &dir, &rx, &slot2, &st, &stop);
            jobs.push(spawn_sized("snmp", cpu, Some(16 << 20), poll)?);
            interfaces = Some(crate::enrich::snmp::Annotator::new(slot, Some(tx)));
        } else {
            snmp::restore(&cfg.general.state_dir, &e.interface, &slot);
            interfaces = Some(crate::enrich::snmp::Annotator::new(slot, None));
        }
    }
    Ok(Started { jobs, layer3: feed, interfaces })
}

/// What [`start`] started.
pub struct Started {
    /// The job threads.
    pub jobs: Vec<JoinHandle<()>>,
    /// The layer-3 job's input.
    pub layer3: Option<layer3::Feed>,
    /// Names the interface rollups (SNMP or static entries configured).
    pub interfaces: Option<crate::enrich::snmp::Annotator>,
}
