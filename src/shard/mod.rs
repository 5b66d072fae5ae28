//! The per-core runtime: one glommio `LocalExecutor` per shard CPU (pinned), each owning its
//! sockets, its [`ShardCore`] (decode + pre-aggregate) and its [`OwnerCore`] (merge + detect),
//! plus one pinned I/O thread. No locks, no shared mutable state: a shard's state is built on its
//! core inside the executor and never moves (`Rc<RefCell<_>>`, `!Send`).
//!
//! Per shard, cooperative tasks:
//! * one receive loop per listener socket: wait for a datagram (io_uring `recv_from`), then
//!   drain up to a batch with `recvmmsg(MSG_DONTWAIT)`, decoding into the open window;
//! * one exchange task per other shard: receive partial batches and merge them as owner;
//! * the tick loop: at each wall-clock second boundary, close the window, send partials to
//!   their owners, hand finished seconds to the I/O core; every second, a status snapshot; when
//!   templates changed, a snapshot for the state directory.
//!
//! Shutdown order (explicit, tested): stop flag → receive loops end → each shard closes its
//! open window and sends it → senders close → owners finish every second they hold → shards
//! send final status and templates → executors end → the I/O thread drains, flushes the sinks
//! and returns.
//!
//! Lives on: shard cores (executors) and the I/O core (thread); `run` itself on the main thread.

pub mod socket;

use crate::config::{Config, Layout};
use crate::decode::templates::Snapshot;
use crate::decode::ErrorReason;
use crate::exchange::{self, Endpoints};
use crate::io::{self, IoCounters, IoMsg};
use crate::model::Ip;
use crate::ops::{ShardStatus, StatusBoard};
use crate::pipeline::{Assembler, OwnerCore, OwnerOutput, PipelineConfig, ShardCore};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;

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
    /// A sink could not be opened.
    #[error(transparent)]
    Sink(#[from] io::SinkError),
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
    pub sinks: Vec<Arc<io::remote::SinkStats>>,
}

/// Unix second now.
fn unix_now() -> (u64, Duration) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d)
}

struct Shared {
    core: ShardCore,
    owner: OwnerCore,
    out: Vec<OwnerOutput>,
    lag: Histogram<u64>,
    handoff_dropped: u64,
    received: u64,
}

impl Shared {
    /// Hands finished owner outputs to the I/O core (never waits).
    fn hand_off(&mut self, to_io: &crossbeam_channel::Sender<IoMsg>) {
        let (_, now) = unix_now();
        for o in self.out.drain(..) {
            let end = Duration::from_secs(o.second + 1);
            let lag = now.saturating_sub(end).as_micros() as u64;
            let _ = self.lag.record(lag.clamp(1, 60_000_000));
            if to_io.try_send(IoMsg::Output(o)).is_err() {
                self.handoff_dropped += 1;
            }
        }
    }
}

/// Binds every listener for every shard; returns per shard its sockets.
/// Sockets per shard, the receive buffer granted per socket, and the bound addresses.
type Bound = (Vec<Vec<socket2::Socket>>, Vec<usize>, Vec<SocketAddr>);

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
    let pcfg = cfg.pipeline();
    let n = layout.shards.len().max(1);
    let (sockets, granted, bound) = bind_all(cfg, n)?;
    for (l, g) in cfg.listener.iter().zip(granted.iter().step_by(n)) {
        if *g < l.recv_buffer_bytes {
            eprintln!(
                "flowshard: warning: {} got a {} KiB receive buffer, asked {} KiB: raise net.core.rmem_max (see tuning/) or bursts will be dropped",
                l.address,
                g / 1024,
                l.recv_buffer_bytes / 1024
            );
        }
    }
    let (snapshot, problems) = io::read_snapshots(&cfg.general.state_dir);
    for p in problems {
        eprintln!("flowshard: warning: ignoring corrupt template snapshot {p}");
    }
    let snapshot = Arc::new(snapshot);
    let mut sinks = io::JsonLines::from_config(cfg)?;
    let io_pin = layout.io.first().copied().filter(|_| layout.pin);
    let (remote, mut sink_stats) = io::remote::from_config(cfg, io_pin)?;
    sinks.extend(remote);
    let (endpoints, io_rx) = exchange::build(n, cfg.handoff.queue_seconds * n + 16);
    let jobs_stop = Arc::new(AtomicBool::new(false));
    let jobs = io::remote::start_jobs(cfg, io_pin, endpoints[0].to_io.clone(), &jobs_stop, &mut sink_stats)?;
    let assembler = Assembler::new(&pcfg.agg.dimensions, n);
    let state_dir = cfg.general.state_dir.clone();
    let gate = io::alerts::AlertGate::new(&state_dir, cfg.alerts.cooldown_s);
    let status_every = Duration::from_secs(cfg.general.status_interval_s);
    let io_cpu = layout.io.first().copied();
    let pin = layout.pin;
    // HTTP server on the I/O core (its own thread, pinned there too).
    let http_stop = Arc::new(AtomicBool::new(false));
    let mut http_addr = None;
    let mut http_thread = None;
    let published = if cfg.http.enabled {
        let shared = io::http::shared(n);
        if let Ok(mut p) = shared.lock() {
            p.sinks = sink_stats.clone();
        }
        match cfg.http.address.parse::<SocketAddr>().map_err(std::io::Error::other).and_then(|a| {
            let l = std::net::TcpListener::bind(a)?;
            let bound = l.local_addr()?;
            drop(l);
            let token = (!cfg.http.token.is_empty()).then(|| cfg.http.token.clone());
            Ok((bound, io::http::serve(bound, token, shared.clone(), http_stop.clone(), io_cpu.filter(|_| pin))?))
        }) {
            Ok((a, h)) => {
                http_addr = Some(a);
                http_thread = Some(h);
                Some(shared)
            }
            Err(e) => {
                eprintln!(
                    "flowshard: warning: HTTP server not started on {}: {e} (collection goes on)",
                    cfg.http.address
                );
                None
            }
        }
    } else {
        None
    };
    let io_thread = std::thread::Builder::new()
        .name("flowshard-io".into())
        .spawn(move || {
            if let (true, Some(cpu)) = (pin, io_cpu) {
                core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
            }
            io::run_io(io_rx, assembler, sinks, state_dir, status_every, StatusBoard::new(n), published, gate)
        })
        .map_err(|e| RunError::Executor { shard: usize::MAX, cpu: io_cpu.unwrap_or(0), reason: e.to_string() })?;

    let (status_tx, status_rx) = std::sync::mpsc::channel::<ShardStatus>();
    let mut handles = Vec::new();
    for ((ep, socks), shard) in endpoints.into_iter().zip(sockets).zip(0..n) {
        let cpu = layout.shards.get(shard).copied().unwrap_or(shard);
        let placement = if layout.pin { Placement::Fixed(cpu) } else { Placement::Unbound };
        let fds: Vec<i32> = socks.into_iter().map(|s| s.into_raw_fd()).collect();
        let pcfg = pcfg.clone();
        let stop = stop.clone();
        let snapshot = snapshot.clone();
        let status_tx = status_tx.clone();
        let h = LocalExecutorBuilder::new(placement)
            .name(&format!("shard{shard}"))
            .io_memory(2 << 20)
            // the window tick must not wait behind a busy receive loop
            .preempt_timer(Duration::from_millis(5))
            .spawn(move || async move {
                let last = shard_main(shard, n, pcfg, ep, fds, stop, snapshot).await;
                let _ = status_tx.send(last);
            })
            .map_err(|e| RunError::Executor { shard, cpu, reason: e.to_string() })?;
        handles.push(h);
    }
    drop(status_tx);
    ready(&bound, http_addr);
    for h in handles {
        let _ = h.join();
    }
    let mut shards: Vec<ShardStatus> = status_rx.iter().collect();
    shards.sort_by_key(|s| s.shard);
    // The jobs hold a sender to the I/O loop: stop them before waiting for it.
    jobs_stop.store(true, Ordering::Relaxed);
    for j in jobs {
        let _ = j.join();
    }
    let io = io_thread.join().unwrap_or_default();
    http_stop.store(true, Ordering::Relaxed);
    if let Some(h) = http_thread {
        let _ = h.join();
    }
    Ok(RunReport { io, shards, granted_rcvbuf: granted, bound, sinks: sink_stats })
}

fn status_of(sh: &Shared, shard: usize, fds: &[i32]) -> ShardStatus {
    ShardStatus {
        shard: shard as u16,
        decode: sh.core.decoder.counters.clone(),
        ingest: sh.core.counters.clone(),
        owner: sh.owner.counters.clone(),
        kernel_drops: fds.iter().filter_map(|&fd| socket::kernel_drops(fd)).sum(),
        received: sh.received,
        templates: sh.core.decoder.templates.len(),
        tracked_keys: sh.owner.tracked(),
        evictions: sh.core.evictions() + sh.owner.counters.late_batches,
        handoff_dropped: sh.handoff_dropped,
        close_lag_p50_us: sh.lag.value_at_quantile(0.5),
        close_lag_p99_us: sh.lag.value_at_quantile(0.99),
        exporters: {
            let tmpl = sh.core.decoder.templates.exporters();
            sh.core
                .exporters()
                .map(|(ip, e)| {
                    let t = tmpl.iter().find(|x| x.0 == *ip);
                    crate::ops::ExporterStatus {
                        address: *ip,
                        last_seen: e.last_seen,
                        datagrams: e.datagrams,
                        records: e.records,
                        templates: t.map_or(0, |x| x.1),
                        sampling: t.and_then(|x| x.2),
                    }
                })
                .collect()
        },
    }
}

async fn shard_main(
    shard: usize,
    n: usize,
    pcfg: PipelineConfig,
    ep: Endpoints,
    fds: Vec<i32>,
    stop: Arc<AtomicBool>,
    snapshot: Arc<Snapshot>,
) -> ShardStatus {
    let mut core = ShardCore::new(&pcfg, shard as u16, n);
    core.decoder.templates.restore(&snapshot);
    core.decoder.templates.take_dirty();
    let sh = Rc::new(RefCell::new(Shared {
        core,
        owner: OwnerCore::new(&pcfg, shard as u16, n),
        out: Vec::new(),
        lag: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static histogram bounds are valid"),
        handoff_dropped: 0,
        received: 0,
    }));
    let now_s = Rc::new(Cell::new(unix_now().0));
    let to_io = ep.to_io.clone();

    // Connect the exchange on this core. Receivers connect inside their own tasks, so that
    // every pair of shards can complete its handshake whatever order the cores start in.
    let mut receivers = Vec::new();
    for rx in ep.from_shards {
        let sh = sh.clone();
        let to_io = to_io.clone();
        receivers.push(glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(b) = rx.recv().await {
                let mut s = sh.borrow_mut();
                let s = &mut *s;
                s.owner.accept(b, &mut s.out);
                s.hand_off(&to_io);
            }
        }));
    }
    let mut senders = Vec::new();
    for (owner, tx) in ep.to_owner.into_iter().enumerate() {
        if let Some(tx) = tx {
            senders.push((owner, tx.connect().await));
        }
    }

    // Receive loops.
    let mut loops = Vec::new();
    for &fd in &fds {
        // SAFETY: fd came from into_raw_fd of a socket we own; ownership moves to glommio.
        let sock = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let sh = sh.clone();
        let stop = stop.clone();
        let now_s = now_s.clone();
        loops.push(glommio::spawn_local(async move {
            let mut first = vec![0u8; socket::MAX_DATAGRAM];
            let mut batch = socket::RecvBatch::new(RECV_BATCH);
            while !stop.load(Ordering::Relaxed) {
                // An error is the read timeout: loop to check the stop flag.
                if let Ok((len, from)) = sock.recv_from(&mut first).await {
                    {
                        let mut s = sh.borrow_mut();
                        s.received += 1;
                        let now = now_s.get();
                        let _ = s.core.ingest(&first[..len.min(first.len())], Ip::from(from.ip()), now);
                        // Drain what else is queued, a batch at a time, at most 16 batches
                        // before giving the tick and exchange tasks a chance to run.
                        for _ in 0..16 {
                            let got = batch.recv(sock.as_raw_fd()).unwrap_or(0);
                            for i in 0..got {
                                let (data, from, truncated) = batch.get(i);
                                s.received += 1;
                                if truncated {
                                    s.core.decoder.counters.errors[ErrorReason::Truncated.index()] += 1;
                                    continue;
                                }
                                let src = from.map_or(Ip::UNSPECIFIED, |a| Ip::from(a.ip()));
                                let _ = s.core.ingest(data, src, now);
                            }
                            if got < RECV_BATCH {
                                break;
                            }
                        }
                    }
                }
                glommio::yield_if_needed().await;
            }
            sock
        }));
    }

    // Tick loop.
    let mut open = now_s.get();
    let mut last_status = 0u64;
    let close_and_send = |second: u64| {
        let mut s = sh.borrow_mut();
        let mut batches = s.core.close(second);
        let own = std::mem::take(&mut batches[shard]);
        let s = &mut *s;
        s.owner.accept(own, &mut s.out);
        s.hand_off(&to_io);
        batches
    };
    loop {
        let (_, now) = unix_now();
        let to_boundary = Duration::from_secs(now.as_secs() + 1).saturating_sub(now);
        glommio::timer::sleep(to_boundary.min(Duration::from_millis(100)) + Duration::from_micros(200)).await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let cur = unix_now().0;
        now_s.set(cur);
        if cur > open {
            let mut batches = close_and_send(open);
            for (owner, tx) in &senders {
                let b = batches.get_mut(*owner).map(std::mem::take).unwrap_or_default();
                let _ = tx.send(b).await;
            }
            open = cur;
        }
        if cur > last_status {
            last_status = cur;
            let mut s = sh.borrow_mut();
            if s.core.decoder.templates.take_dirty() {
                let _ = to_io.try_send(IoMsg::Templates(shard as u16, s.core.decoder.templates.snapshot()));
            }
            if !s.core.decoder.templates.is_empty() && cur % 10 == 0 {
                let n = s.core.decoder.templates.expire(cur);
                s.core.decoder.counters.templates_expired += n as u64;
            }
            let st = status_of(&s, shard, &fds);
            // the close-lag percentiles in a status are those of the last interval
            s.lag.reset();
            let _ = to_io.try_send(IoMsg::Status(Box::new(st)));
        }
    }

    // Shutdown: receive loops end on the stop flag.
    let mut socks = Vec::new();
    for l in loops {
        socks.push(l.await);
    }
    let mut batches = close_and_send(open);
    for (owner, tx) in &senders {
        let b = batches.get_mut(*owner).map(std::mem::take).unwrap_or_default();
        let _ = tx.send(b).await;
    }
    for (_, tx) in senders {
        tx.close();
    }
    for r in receivers {
        r.await;
    }
    let mut s = sh.borrow_mut();
    {
        let s = &mut *s;
        s.owner.drain(&mut s.out);
        s.hand_off(&to_io);
    }
    let _ =
        to_io.send_timeout(IoMsg::Templates(shard as u16, s.core.decoder.templates.snapshot()), Duration::from_secs(1));
    let st = status_of(&s, shard, &fds);
    let _ = to_io.send_timeout(IoMsg::Status(Box::new(st.clone())), Duration::from_secs(1));
    drop(socks);
    st
}
