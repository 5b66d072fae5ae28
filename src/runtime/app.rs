//! App wiring: binds the listeners, reads the state directory, builds the sinks, the jobs,
//! the HTTP server and the I/O loop, starts one pinned glommio executor per shard, and shuts
//! everything down in order: stop flag → shards close their windows and drain → jobs stop →
//! the I/O loop drains, flushes and finishes the sinks → HTTP stops.
//!
//! May depend on: everything below the CLI (`config`, `enrich`, `pipeline`, `sink`, `alert`, `jobs`,
//! `http`, `ops`). Lives on: the main thread (it spawns the shard executors and the I/O-core
//! threads).

use super::exchange::{self, IoMsg};
use super::io_loop::IoLoop;
use super::{shard, socket, state};
use crate::alert::{AlertGate, Incidents};
use crate::config::{Config, Layout};
use crate::ops::{IoCounters, ShardStatus};
use crate::pipeline::Assembler;
use crate::sink::delivery::SinkStats;
use crate::{http, jobs, sink};
use glommio::{LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Errors that stop `run` before it starts.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound.
    #[error("cannot bind listener {addr}: {source} (is another collector using the port? lower ports need CAP_NET_BIND_SERVICE)")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// An executor could not be started.
    #[error("cannot start shard {shard} on CPU {cpu}: {reason}")]
    Executor {
        /// Shard.
        shard: usize,
        /// CPU.
        cpu: usize,
        /// Cause.
        reason: String,
    },
    /// An enrichment table could not be loaded.
    #[error("enrichment: {0}")]
    Enrich(#[from] crate::enrich::load::LoadError),
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
}

/// What `run` reports when it returns.
#[derive(Debug, Default)]
pub struct RunReport {
    /// I/O-core counters.
    pub io: IoCounters,
    /// Final status of each shard.
    pub shards: Vec<ShardStatus>,
    /// Receive buffer the kernel granted per socket (bytes).
    pub granted_rcvbuf: Vec<usize>,
    /// Listener addresses actually bound (with real ports when 0 was asked).
    pub bound: Vec<SocketAddr>,
    /// Remote sinks' final counters.
    pub sinks: Vec<Arc<SinkStats>>,
    /// Raw-flows topic counters, when it was on.
    pub flows: Option<Arc<crate::sink::flows::FlowsStats>>,
}

/// Binds every listener for every shard; returns per shard its sockets.
/// Sockets per shard, the receive buffer granted per socket, and the bound addresses.
type Bound = (Vec<Vec<socket2::Socket>>, Vec<usize>, Vec<SocketAddr>);
/// Host-input sockets per shard: (socket, TCP, syslog).
type HostBound = Vec<Vec<(socket2::Socket, bool, bool)>>;

fn bind_tcp_reuseport(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s)
}

/// Binds every `[hosts]` socket for every shard (UDP: one `SO_REUSEPORT` socket per shard;
/// TCP: one `SO_REUSEPORT` listener per shard, so the kernel spreads connections); appends the
/// bound addresses to `bound` in configuration order.
fn bind_hosts(cfg: &Config, shards: usize, bound: &mut Vec<SocketAddr>) -> Result<HostBound, RunError> {
    let mut per_shard: HostBound = (0..shards).map(|_| Vec::new()).collect();
    for (_, a, tcp, syslog) in cfg.hosts.sockets() {
        let mut addr: SocketAddr = a.parse().map_err(|_| RunError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::other(format!("bad address {a:?}")),
        })?;
        for socks in per_shard.iter_mut() {
            let s = if tcp { bind_tcp_reuseport(addr) } else { socket::bind_reuseport(addr, HOST_RCVBUF).map(|x| x.0) }
                .map_err(|source| RunError::Bind { addr, source })?;
            if addr.port() == 0 {
                if let Some(x) = s.local_addr().ok().and_then(|x| x.as_socket()) {
                    addr = x;
                }
            }
            socks.push((s, tcp, syslog));
        }
        bound.push(addr);
    }
    Ok(per_shard)
}

/// Receive buffer asked for host UDP sockets (capped by `net.core.rmem_max`).
const HOST_RCVBUF: usize = 8 << 20;

fn bind_all(cfg: &Config, shards: usize) -> Result<Bound, RunError> {
    let mut per_shard: Vec<Vec<socket2::Socket>> = (0..shards).map(|_| Vec::new()).collect();
    let mut granted = Vec::new();
    let mut bound = Vec::new();
    for l in &cfg.listener {
        let mut addr: SocketAddr = l.address.parse().map_err(|_| RunError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source: std::io::Error::other(format!("bad address {:?}", l.address)),
        })?;
        for sockets in per_shard.iter_mut() {
            let (s, g) =
                socket::bind_reuseport(addr, l.recv_buffer_bytes).map_err(|source| RunError::Bind { addr, source })?;
            if addr.port() == 0 {
                // Port 0: the first shard picks a port, the others join it.
                if let Some(a) = s.local_addr().ok().and_then(|a| a.as_socket()) {
                    addr = a;
                }
            }
            granted.push(g);
            sockets.push(s);
        }
        bound.push(addr);
    }
    Ok((per_shard, granted, bound))
}

/// Runs flowshard until `stop` is set, then shuts down in order and returns the counters.
/// `ready` is called once every socket is bound and every executor started.
pub fn run(
    cfg: &Config,
    layout: &Layout,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&[SocketAddr], Option<SocketAddr>),
) -> Result<RunReport, RunError> {
    let pcfg = cfg.pipeline_loaded()?;
    let n = layout.shards.len().max(1);
    let (sockets, granted, mut bound) = bind_all(cfg, n)?;
    let host_sockets = bind_hosts(cfg, n, &mut bound)?;
    for (l, g) in cfg.listener.iter().zip(granted.iter().step_by(n)) {
        if *g < l.recv_buffer_bytes {
            tracing::warn!(
                "{} got a {} KiB receive buffer, asked {} KiB: raise net.core.rmem_max (see tuning/) or bursts will be dropped",
                l.address,
                g / 1024,
                l.recv_buffer_bytes / 1024
            );
        }
    }
    let (snapshot, problems) = state::read_snapshots(&cfg.general.state_dir);
    for p in problems {
        tracing::warn!("ignoring corrupt template snapshot {p}");
    }
    let snapshot = Arc::new(snapshot);
    let io_cpu = layout.io.first().copied();
    let io_pin = io_cpu.filter(|_| layout.pin);
    let (sinks, mut sink_stats) = sink::from_config(cfg, io_pin)?;
    // raw flows: their own encoder thread and spool, fed by the shards directly
    let mut flows_sink = None;
    let mut flows_tx = None;
    if let Some(k) = cfg.flows_sink() {
        let dir = cfg.spool.dir.clone().unwrap_or_else(|| cfg.general.state_dir.join("spool"));
        let (fs, tx) =
            sink::flows::FlowsSink::start(k, &cfg.general.appliance_id, &dir, cfg.spool.max_mib << 20, io_pin)?;
        sink_stats.push(fs.delivery.clone());
        flows_tx = Some((tx, k.flows_sample));
        flows_sink = Some(fs);
    }
    let spread = cfg.listener.iter().any(|l| l.spread != crate::config::SpreadMode::Off);
    let (endpoints, io_rx) = exchange::build(n, cfg.handoff.queue_seconds * n + 16, spread);
    let listeners: Vec<_> = cfg.listener.iter().map(|l| (l.spread, l.spread_above)).collect();
    let jobs_stop = Arc::new(AtomicBool::new(false));
    let to_io = endpoints[0].to_io.clone();
    let to_io3 = to_io.clone();
    // the HTTP thread's host writes reach the I/O loop through this sender, let go before the
    // I/O loop is waited for (it ends when every sender is gone)
    let host_tx = Arc::new(std::sync::Mutex::new(Some(to_io.clone())));
    let job_alerts: jobs::AlertOut = Box::new(move |docs| to_io.send(IoMsg::Alerts(docs)).is_ok());
    let job_results: jobs::layer3::ResultsOut =
        Box::new(move |batch| to_io3.send(IoMsg::Layer3(Box::new(batch))).is_ok());
    // reloaded enrichment tables reach the shards through this slot (they start with pcfg's)
    let enrich_slot = cfg.enrich.any().then(|| Arc::new(crate::enrich::Slot::default()));
    let jobs::Started { jobs, layer3, interfaces } =
        jobs::start(cfg, io_pin, job_alerts, job_results, enrich_slot.clone(), &jobs_stop, &mut sink_stats)?;
    let published = http::shared(n);
    let mut jobs = jobs;
    if let Some(k) = &cfg.hosts.kafka {
        let st = SinkStats::new("hosts-kafka", None);
        sink_stats.push(st.clone());
        let tx = host_tx.clone();
        let out: jobs::hosts::BatchOut = Box::new(move |b| {
            tx.lock().ok().and_then(|t| t.as_ref().map(|t| t.try_send(IoMsg::Host(b)).is_ok())) == Some(true)
        });
        let p2 = published.clone();
        let status: jobs::hosts::StatusOut = Box::new(move |h| {
            if let Ok(mut p) = p2.lock() {
                p.host_kafka = Some(h);
            }
        });
        let (k, path, stop) = (k.clone(), cfg.hosts.path(), jobs_stop.clone());
        let source = n as u16 + 1;
        jobs.push(crate::sink::delivery::spawn_on("hosts-kafka", io_pin, move || {
            jobs::hosts::consume(&k, &path, source, &out, &status, &st, &stop)
        })?);
    }
    if let Ok(mut p) = published.lock() {
        p.feedback = Some(http::feedback::FeedbackTarget {
            state_dir: cfg.general.state_dir.clone(),
            false_positive_silence_s: cfg.alerts.false_positive_silence_s,
        });
    }
    let flows_stats = flows_sink.as_ref().map(|f| f.stats.clone());
    if let Ok(mut p) = published.lock() {
        p.sinks = sink_stats.clone();
        p.flows = flows_stats.clone();
    }
    // HTTP server on the I/O core (its own thread, pinned there too), on the listener bound
    // here: the port is never released in between.
    let http_stop = Arc::new(AtomicBool::new(false));
    let mut http_addr = None;
    let mut http_thread = None;
    if cfg.http.enabled {
        let started = http::bind(&cfg.http.address).and_then(|l| {
            let addr = l.local_addr()?;
            let token = (!cfg.http.token.is_empty()).then(|| cfg.http.token.clone());
            let slices = cfg.flows_sink().map(|k| {
                Arc::new(http::SliceSource {
                    brokers: k.brokers.clone(),
                    topic: k.flows_topic.clone(),
                    properties: k.properties.clone(),
                    pipeline: pcfg.clone(),
                    busy: AtomicBool::new(false),
                })
            });
            let to_io = host_tx.clone();
            let ingest = cfg.hosts.http.then(|| {
                http::ingest::HostIngest::new(
                    &cfg.hosts.path(),
                    n as u16,
                    cfg.hosts.max_body_bytes,
                    Box::new(move |b| {
                        to_io.lock().ok().and_then(|t| t.as_ref().map(|t| t.try_send(IoMsg::Host(b)).is_ok()))
                            == Some(true)
                    }),
                )
            });
            Ok((addr, http::serve(l, token, published.clone(), http_stop.clone(), io_pin, slices, ingest)?))
        });
        match started {
            Ok((a, h)) => {
                http_addr = Some(a);
                http_thread = Some(h);
            }
            Err(e) => tracing::warn!("HTTP server not started on {}: {e} (collection goes on)", cfg.http.address),
        }
    }
    let io = IoLoop {
        rx: io_rx,
        assembler: Assembler::new(&pcfg.agg.dimensions, n),
        sinks,
        state_dir: cfg.general.state_dir.clone(),
        status_every: Duration::from_secs(cfg.general.status_interval_s),
        published,
        gate: AlertGate::new(&cfg.general.state_dir, cfg.alerts.cooldown_s),
        incidents: Incidents::new(&cfg.incidents),
        layer3,
        layer3_cfg: cfg.layer3.clone(),
        interfaces,
        namer: enrich_slot.clone().map(|slot| crate::enrich::Namer::new(slot, pcfg.enrich.clone(), &pcfg.derived)),
        appliance: cfg.general.appliance_id.clone(),
        hosts: super::io_loop::HostIo::new(&cfg.hosts.detect)
            .with_state(cfg.general.state_dir.join("host-detectors.bin")),
    };
    let io_thread = std::thread::Builder::new()
        .name("flowshard-io".into())
        .spawn(move || {
            if let Some(cpu) = io_pin {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            io.run()
        })
        .map_err(|e| RunError::Executor { shard: usize::MAX, cpu: io_cpu.unwrap_or(0), reason: e.to_string() })?;

    let (status_tx, status_rx) = std::sync::mpsc::channel::<ShardStatus>();
    let mut handles = Vec::new();
    for (((ep, socks), hsocks), shard) in endpoints.into_iter().zip(sockets).zip(host_sockets).zip(0..n) {
        let cpu = layout.shards.get(shard).copied().unwrap_or(shard);
        let placement = if layout.pin { Placement::Fixed(cpu) } else { Placement::Unbound };
        let fds: Vec<i32> = socks.into_iter().map(|s| s.into_raw_fd()).collect();
        let pcfg = pcfg.clone();
        let stop = stop.clone();
        let snapshot = snapshot.clone();
        let slot = enrich_slot.clone();
        let status_tx = status_tx.clone();
        let flows = flows_tx.clone();
        let listeners = listeners.clone();
        let hosts = (!hsocks.is_empty()).then(|| shard::HostInputs {
            socks: hsocks
                .into_iter()
                .map(|(s, tcp, syslog)| shard::HostSock { fd: s.into_raw_fd(), tcp, syslog })
                .collect(),
            path: cfg.hosts.path(),
            precision: cfg.hosts.precision,
            max_frame: cfg.hosts.max_frame_bytes,
            max_connections: cfg.hosts.max_connections,
        });
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard{shard}"))
            .io_memory(2 << 20)
            // the window tick must not wait behind a busy receive loop
            .preempt_timer(Duration::from_millis(5))
            .spawn(move || async move {
                let last = shard::shard_main(
                    shard,
                    n,
                    pcfg,
                    ep,
                    fds,
                    stop,
                    shard::Handed { snapshot, enrich: slot, flows, hosts, listeners },
                )
                .await;
                let _ = status_tx.send(last);
            })
            .map_err(|e| RunError::Executor { shard, cpu, reason: e.to_string() })?;
        handles.push(h);
    }
    drop(status_tx);
    drop(flows_tx);
    ready(&bound, http_addr);
    for h in handles {
        let _ = h.join();
    }
    if let Some(f) = flows_sink {
        f.finish();
    }
    let mut shards: Vec<ShardStatus> = status_rx.iter().collect();
    shards.sort_by_key(|s| s.shard);
    // The jobs and the HTTP ingest hold senders to the I/O loop: let go before waiting for it.
    if let Ok(mut t) = host_tx.lock() {
        t.take();
    }
    jobs_stop.store(true, Ordering::Relaxed);
    for j in jobs {
        let _ = j.join();
    }
    let io = io_thread.join().unwrap_or_default();
    http_stop.store(true, Ordering::Relaxed);
    if let Some(h) = http_thread {
        let _ = h.join();
    }
    Ok(RunReport { io, shards, granted_rcvbuf: granted, bound, sinks: sink_stats, flows: flows_stats })
}

impl RunReport {
    /// The one-line JSON summary `flowshard run` prints last: per-sink delivery, and the
    /// totals of every shard and of the I/O core.
    pub fn summary_json(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let sum = |f: fn(&ShardStatus) -> u64| self.shards.iter().map(f).sum::<u64>();
        let sinks: serde_json::Map<String, serde_json::Value> = self
            .sinks
            .iter()
            .map(|s| {
                let dropped: u64 = crate::sink::delivery::DropReason::ALL.iter().map(|r| s.dropped(*r)).sum();
                let pending = s.spool.as_ref().map_or(0, |sp| sp.pending.load(Relaxed));
                let v = serde_json::json!({
                    "delivered": s.delivered.load(Relaxed),
                    "retried": s.retried.load(Relaxed),
                    "dropped": dropped,
                    "spooled_seconds": pending,
                });
                (s.name.to_string(), v)
            })
            .collect();
        serde_json::json!({
            "sinks": sinks,
            "datagrams": sum(|s| s.received),
            "records": sum(|s| s.ingest.records),
            "bytes": sum(|s| s.ingest.bytes),
            "packets": sum(|s| s.ingest.packets),
            "decode_errors": sum(|s| s.decode.error_total()),
            "kernel_drops": sum(|s| s.kernel_drops),
            "handoff_drops": sum(|s| s.handoff_dropped),
            "seconds": self.io.seconds,
            "rollups": self.io.rollups,
            "alerts": self.io.alerts,
            "sink_errors": self.io.sink_errors,
            "flows_encoded": self.flows.as_ref().map_or(0, |f| f.records.load(Relaxed)),
            "host_lines": sum(|s| s.hosts.as_ref().map_or(0, |h| h.input.lines)),
            "host_samples": sum(|s| s.hosts.as_ref().map_or(0, |h| h.window.samples)),
            "host_messages": sum(|s| s.hosts.as_ref().map_or(0, |h| h.window.messages)),
            "host_refused": sum(|s| s.hosts.as_ref().map_or(0, |h| h.input.refused())),
            "host_rows": self.io.host_rows,
            "shards": self.shards.iter().map(|s| serde_json::json!({
                "shard": s.shard,
                "datagrams": s.received,
                "records": s.ingest.records,
                "decode_errors": s.decode.error_total(),
                "spread_forwarded": s.spread.forwarded,
                "spread_taken": s.spread.taken,
                "spread_state_copies": s.spread.state_copies,
                "spread_syncs": s.spread.syncs,
                "spread_busy": s.spread.busy,
                "spread_stale": s.spread.stale,
            })).collect::<Vec<_>>(),
        })
        .to_string()
    }
}
