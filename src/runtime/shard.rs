//! One shard's executor body: one glommio `LocalExecutor` per shard CPU (pinned), each owning its
//! sockets, its [`ShardCore`] (decode + pre-aggregate) and its [`OwnerCore`] (merge + detect),
//! plus one pinned I/O thread. No locks, no shared mutable state: a shard's state is built on its
//! core inside the executor and never moves (`Rc<RefCell<_>>`, `!Send`).
//!
//! Per shard, cooperative tasks:
//! * one receive loop per listener socket: wait for a datagram (io_uring `recv_from`), then
//!   drain up to a batch with `recvmmsg(MSG_DONTWAIT)`, decoding into the open window;
//! * one exchange task per other shard: receive partial batches and merge them as owner;
//! * when a listener spreads exporters (`runtime::spread`), one task per other shard that
//!   decodes the datagrams that shard handed on, in the order it sent them;
//! * the tick loop: at each wall-clock second boundary, close the window, send partials to
//!   their owners, hand finished seconds to the I/O core; every second, a status snapshot; when
//!   templates changed, a snapshot for the state directory.
//!
//! Shutdown order (explicit, tested): stop flag → receive loops end → each shard sends what it
//! still has to hand on and closes those channels → it decodes what the others handed it until
//! they have all closed → it closes its open window and sends it → senders close → owners
//! finish every second they hold → shards send final status and templates → executors end →
//! the I/O thread drains, flushes the sinks and returns.
//!
//! May depend on: `pipeline`, `decode`, `enrich`, `model`, `ops`, `config` (listener spread modes), `sink` (only the raw-flows hand-off,
//! `sink::flows::FlowsTx`). Lives on: shard cores (one executor
//! each; everything here is built on its core and never moves).

use super::exchange::{Endpoints, IoMsg};
use super::socket;
use super::spread::{Fwd, Spreader};
use crate::decode::lineproto::Precision;
use crate::decode::syslog::Framer;
use crate::decode::templates::Snapshot;
use crate::decode::ErrorReason;
use crate::model::Ip;
use crate::ops::ShardStatus;
use crate::pipeline::host::HostCore;
use crate::pipeline::{OwnerCore, OwnerOutput, PipelineConfig, ShardCore};
use glommio::channels::shared_channel::ConnectedSender;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Datagrams per `recvmmsg` call.
pub const RECV_BATCH: usize = 64;

/// Unix second now, and the time since the epoch.
fn unix_now() -> (u64, Duration) {
    let d = crate::model::time::since_epoch();
    (d.as_secs(), d)
}

struct Shared {
    core: ShardCore,
    /// The raw-flows queue, when a Kafka sink writes flows.
    flows: Option<crate::sink::flows::FlowsTx>,
    tapped: Vec<crate::pipeline::TapBatch>,
    owner: OwnerCore,
    out: Vec<OwnerOutput>,
    lag: Histogram<u64>,
    handoff_dropped: u64,
    received: u64,
    host: Option<HostState>,
    spread: Option<Spreader<ConnectedSender<Fwd>>>,
}

/// A shard's host inputs: the core that parses and rolls up, and the connection counters.
struct HostState {
    core: HostCore,
    precision: Precision,
    connections: usize,
    refused: u64,
    datagrams: u64,
    handoff_dropped: u64,
}

/// One host-input socket of a shard (bound on the main thread).
pub(super) struct HostSock {
    /// The socket (UDP bound, or TCP listening, non-blocking).
    pub fd: i32,
    /// TCP (else UDP).
    pub tcp: bool,
    /// Syslog (else line protocol).
    pub syslog: bool,
}

/// What a shard needs for host inputs.
pub(super) struct HostInputs {
    /// Its sockets.
    pub socks: Vec<HostSock>,
    /// Series bounds and tag allow-list.
    pub path: crate::pipeline::host::HostPathConfig,
    /// Line-protocol timestamp unit.
    pub precision: Precision,
    /// Longest TCP frame.
    pub max_frame: usize,
    /// Open connections at most.
    pub max_connections: usize,
}

/// Writes `ip` as text into `buf` (no allocation); returns the text.
fn ip_text(ip: std::net::IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    use std::io::Write as _;
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "{ip}");
    let n = c.position() as usize;
    &buf[..n]
}

impl HostState {
    /// One datagram or frame of host input from `from`.
    fn input(&mut self, data: &[u8], syslog: bool, from: Option<std::net::SocketAddr>, now: u64) {
        let mut buf = [0u8; 48];
        let host = from.map_or(&b"unknown"[..], |a| ip_text(a.ip(), &mut buf));
        if syslog {
            self.core.syslog(data, host, now);
        } else {
            self.core.lines(data, self.precision, host, now);
        }
    }
}

impl Shared {
    /// One flow datagram from `src` on listener `listener`: decoded here, or handed on when its
    /// exporter is spread (a datagram that carries templates or sampling is decoded here and
    /// copied to every shard).
    #[inline]
    fn datagram(&mut self, listener: u16, data: &[u8], src: Ip, now: u64) {
        if let Some(sp) = self.spread.as_mut() {
            if sp.spreads(listener, src) {
                if self.core.decoder.carries_state(data, src) {
                    let _ = self.core.ingest(data, src, now);
                    sp.copy_state(data, src);
                    return;
                }
                if sp.forward(data, src, &self.core.decoder.templates) {
                    return;
                }
            }
        }
        let _ = self.core.ingest(data, src, now);
    }

    /// One message another shard handed on: its datagrams decoded here (state copies only
    /// learnt from), or a template sync; the emptied batch goes back to its sender.
    fn take(&mut self, m: Fwd, now: u64, back: &crossbeam_channel::Sender<Box<super::spread::FwdBatch>>) {
        match m {
            Fwd::Batch(b) => {
                let mut taken = 0;
                for (data, src, state) in b.iter() {
                    if state {
                        self.core.decoder.learn(data, src, now);
                    } else {
                        let _ = self.core.ingest(data, src, now);
                        taken += 1;
                    }
                }
                if let Some(sp) = self.spread.as_mut() {
                    sp.counters.taken += taken;
                }
                let _ = back.try_send(b);
                self.hand_off_flows(false);
            }
            Fwd::Sync(snap) => {
                self.core.decoder.templates.sync(&snap);
            }
        }
    }

    /// Hands the raw-flow batches on (never waits); `all` includes the open one.
    fn hand_off_flows(&mut self, all: bool) {
        if let Some(f) = &self.flows {
            while let Some(v) = f.spare() {
                self.core.recycle_tapped(v);
            }
            self.core.take_tapped(all, &mut self.tapped);
            for b in self.tapped.drain(..) {
                f.send(b);
            }
        }
    }

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

fn status_of(sh: &Shared, shard: usize, fds: &[i32], host_fds: &[i32]) -> ShardStatus {
    ShardStatus {
        shard: shard as u16,
        decode: sh.core.decoder.counters.clone(),
        ingest: sh.core.counters.clone(),
        owner: sh.owner.counters.clone(),
        kernel_drops: fds.iter().chain(host_fds).filter_map(|&fd| socket::kernel_drops(fd)).sum(),
        received: sh.received,
        templates: sh.core.decoder.templates.len(),
        tracked_keys: sh.owner.tracked(),
        evictions: sh.core.evictions() + sh.owner.counters.late_batches,
        handoff_dropped: sh.handoff_dropped,
        hosts: sh.host.as_ref().map(|h| crate::ops::HostStatus {
            input: h.core.counters.clone(),
            window: h.core.window.counters.clone(),
            series: h.core.window.known(),
            connections: h.connections,
            connections_refused: h.refused,
            datagrams: h.datagrams,
            handoff_dropped: h.handoff_dropped,
        }),
        spread: sh.spread.as_ref().map(|s| s.counters.clone()).unwrap_or_default(),
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

/// What a shard starts from besides its sockets: the state directory's template snapshot, and
/// the slot reloaded enrichment tables arrive through (when `[enrich]` is configured).
pub(super) struct Handed {
    /// Templates to restore.
    pub snapshot: Arc<Snapshot>,
    /// Enrichment reloads.
    pub enrich: Option<Arc<crate::enrich::Slot>>,
    /// The raw-flows queue and its 1-in-N sampling, when a Kafka sink writes flows.
    pub flows: Option<(crate::sink::flows::FlowsTx, u32)>,
    /// Host inputs, when `[hosts]` configures sockets.
    pub hosts: Option<HostInputs>,
    /// Spread mode and threshold of each flow listener (in the order of the sockets).
    pub listeners: Vec<(crate::config::SpreadMode, u32)>,
}

/// One shard's life: connect the exchange, receive and decode until `stop`, close a window
/// every second, then shut down in order; returns the final status.
pub(super) async fn shard_main(
    shard: usize,
    n: usize,
    pcfg: PipelineConfig,
    ep: Endpoints,
    fds: Vec<i32>,
    stop: Arc<AtomicBool>,
    handed: Handed,
) -> ShardStatus {
    let Handed { snapshot, enrich, flows, hosts, listeners } = handed;
    let (host_socks, host_cfg) = match hosts {
        Some(h) => {
            let state = HostState {
                core: HostCore::new(&h.path, shard as u16),
                precision: h.precision,
                connections: 0,
                refused: 0,
                datagrams: 0,
                handoff_dropped: 0,
            };
            (h.socks, Some((state, h.max_frame, h.max_connections)))
        }
        None => (Vec::new(), None),
    };
    let (host_state, max_frame, max_conns) = match host_cfg {
        Some((s, f, c)) => (Some(s), f, c),
        None => (None, 0, 0),
    };
    let mut core = ShardCore::new(&pcfg, shard as u16, n);
    if let Some((_, every)) = &flows {
        core.set_tap(*every);
    }
    core.decoder.templates.restore(&snapshot);
    core.decoder.templates.take_dirty();
    let sh = Rc::new(RefCell::new(Shared {
        core,
        flows: flows.map(|f| f.0),
        tapped: Vec::new(),
        owner: OwnerCore::new(&pcfg, shard as u16, n),
        out: Vec::new(),
        lag: Histogram::new_with_bounds(1, 60_000_000, 2).expect("static histogram bounds are valid"),
        handoff_dropped: 0,
        received: 0,
        host: host_state,
        spread: None,
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
    // Exporter spread: decode what the other shards hand on, in their order. Like the
    // exchange receivers, these connect in their own tasks, spawned before this shard connects
    // any sender, so that every shard's receivers are waiting before anyone sends.
    let mut takers = Vec::new();
    for (rx, back) in ep.fwd_from {
        let sh = sh.clone();
        let now_s = now_s.clone();
        takers.push(glommio::spawn_local(async move {
            let rx = rx.connect().await;
            while let Some(m) = rx.recv().await {
                sh.borrow_mut().take(m, now_s.get(), &back);
                glommio::yield_if_needed().await;
            }
        }));
    }
    // For the first seconds, while the channels connect, keep this executor's reactor
    // turning: a peer's connect notification that arrives while it sleeps is then seen within
    // 5 ms (under load, a shard was seen to sleep through one and never start receiving).
    glommio::spawn_local(async move {
        for _ in 0..600 {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    })
    .detach();
    let mut senders = Vec::new();
    for (owner, tx) in ep.to_owner.into_iter().enumerate() {
        if let Some(tx) = tx {
            senders.push((owner, tx.connect().await));
        }
    }
    // The spread links connect in a task of their own: receiving never waits for them, and
    // this shard spreads once they are up.
    let linker = (ep.fwd_to.iter().any(Option::is_some)).then(|| {
        let sh = sh.clone();
        let (fwd_to, returns) = (ep.fwd_to, ep.fwd_returns);
        glommio::spawn_local(async move {
            let mut links = Vec::new();
            for tx in fwd_to {
                links.push(match tx {
                    Some(tx) => Some(tx.connect().await),
                    None => None,
                });
            }
            sh.borrow_mut().spread = Some(Spreader::new(shard, links, listeners, returns));
        })
    });

    // Receive loops.
    let mut loops = Vec::new();
    for (listener, &fd) in fds.iter().enumerate() {
        let listener = listener as u16;
        // SAFETY: fd came from into_raw_fd of a socket we own; ownership moves to glommio.
        let sock = unsafe { glommio::net::UdpSocket::from_raw_fd(fd) };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let sh = sh.clone();
        let stop = stop.clone();
        let now_s = now_s.clone();
        let sh2 = sh.clone();
        loops.push(glommio::spawn_local(receive_loop(
            sock,
            stop,
            move |data, from, truncated| {
                let mut s = sh.borrow_mut();
                s.received += 1;
                if truncated {
                    s.core.decoder.counters.errors[ErrorReason::Truncated.index()] += 1;
                    return;
                }
                let src = from.map_or(Ip::UNSPECIFIED, |a| Ip::from(a.ip()));
                s.datagram(listener, data, src, now_s.get());
            },
            move || {
                let mut s = sh2.borrow_mut();
                if let Some(sp) = s.spread.as_mut() {
                    sp.flush_due(std::time::Instant::now());
                }
                s.hand_off_flows(false);
            },
        )));
    }

    // Host inputs: UDP receive loops and TCP accept loops.
    let mut host_fds = Vec::new();
    let mut tcp_tasks = Vec::new();
    for hs in host_socks {
        host_fds.push(hs.fd);
        let sh = sh.clone();
        let stop = stop.clone();
        let now_s = now_s.clone();
        if hs.tcp {
            tcp_tasks.push(tcp_loop(hs, sh, stop, now_s, max_frame, max_conns));
            continue;
        }
        // SAFETY: fd came from into_raw_fd of a socket we own; ownership moves to glommio.
        let sock = unsafe { glommio::net::UdpSocket::from_raw_fd(hs.fd) };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let syslog = hs.syslog;
        loops.push(glommio::spawn_local(receive_loop(
            sock,
            stop,
            move |data, from, truncated| {
                let mut s = sh.borrow_mut();
                if let Some(h) = s.host.as_mut() {
                    h.datagrams += 1;
                    if truncated {
                        h.core.counters.oversize_frames += 1;
                    } else {
                        h.input(data, syslog, from, now_s.get());
                    }
                }
            },
            || {},
        )));
    }

    // Tick loop.
    let mut open = now_s.get();
    let mut enrich_seen = 0u64;
    let mut last_status = 0u64;
    let close_and_send = |second: u64| {
        let mut s = sh.borrow_mut();
        if let Some(h) = s.host.as_mut() {
            let b = h.core.close(second);
            if to_io.try_send(IoMsg::Host(b)).is_err() {
                h.handoff_dropped += 1;
            }
        }
        s.hand_off_flows(true);
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
        // what the receive loops left pending (a quiet exporter) waits at most one tick
        if let Some(sp) = sh.borrow_mut().spread.as_mut() {
            sp.flush();
        }
        // a reloaded enrichment table: swapped between datagrams (one atomic load per tick)
        if let Some(slot) = &enrich {
            let g = slot.generation();
            if g != enrich_seen {
                enrich_seen = g;
                sh.borrow_mut().core.set_enrichment(slot.current());
            }
        }
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
            if let Some(sp) = s.spread.as_mut() {
                sp.tick();
            }
            if s.core.decoder.templates.take_dirty() {
                let _ = to_io.try_send(IoMsg::Templates(shard as u16, s.core.decoder.templates.snapshot()));
            }
            if !s.core.decoder.templates.is_empty() && cur % 10 == 0 {
                let n = s.core.decoder.templates.expire(cur);
                s.core.decoder.counters.templates_expired += n as u64;
            }
            let st = status_of(&s, shard, &fds, &host_fds);
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
    for t in tcp_tasks {
        t.await;
    }
    // the links are up by now (a peer's takers connect at its start); then what is still to
    // hand on goes (waiting for room), the links close, and this shard takes what the others
    // hand on until they have all closed
    if let Some(l) = linker {
        // bounded: a link that never connected has nothing to hand on
        let _ = glommio::timer::timeout(Duration::from_secs(2), async {
            l.await;
            Ok(())
        })
        .await;
    }
    let rest = sh.borrow_mut().spread.as_mut().map(|sp| sp.finish()).unwrap_or_default();
    for (batch, link) in rest {
        if let Some(b) = batch {
            let _ = link.send(Fwd::Batch(b)).await;
        }
        link.close();
    }
    for t in takers {
        // a peer whose link never connected never closes it: wait for it only so long
        let _ = glommio::timer::timeout(Duration::from_secs(5), async {
            t.await;
            Ok(())
        })
        .await;
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
    let st = status_of(&s, shard, &fds, &host_fds);
    let _ = to_io.send_timeout(IoMsg::Status(Box::new(st.clone())), Duration::from_secs(1));
    // the raw-flows encoder ends once every shard has let go of its queue
    s.flows = None;
    drop(socks);
    st
}

/// One UDP socket's receive loop until `stop`: wait for a datagram (io_uring `recv_from`), then
/// drain what else is queued with `recvmmsg(MSG_DONTWAIT)`, a batch at a time, at most 16
/// batches before giving the tick and exchange tasks a chance to run. `each` sees every
/// datagram (payload, source, truncated); `after` runs once per wake-up. Returns the socket.
async fn receive_loop(
    sock: glommio::net::UdpSocket,
    stop: Arc<AtomicBool>,
    mut each: impl FnMut(&[u8], Option<std::net::SocketAddr>, bool),
    mut after: impl FnMut(),
) -> glommio::net::UdpSocket {
    let mut first = vec![0u8; socket::MAX_DATAGRAM];
    let mut batch = socket::RecvBatch::new(RECV_BATCH);
    while !stop.load(Ordering::Relaxed) {
        // An error is the read timeout: loop to check the stop flag.
        if let Ok((len, from)) = sock.recv_from(&mut first).await {
            each(&first[..len.min(first.len())], Some(from), false);
            for _ in 0..16 {
                let got = batch.recv(sock.as_raw_fd()).unwrap_or(0);
                for i in 0..got {
                    let (data, from, truncated) = batch.get(i);
                    each(data, from, truncated);
                }
                if got < RECV_BATCH {
                    break;
                }
            }
            after();
        }
        glommio::yield_if_needed().await;
    }
    sock
}

/// Spawns the accept loop of one host TCP listener: connections are accepted without blocking
/// (polled every 50 ms, so the stop flag is seen), each read on a task of its own with a
/// per-connection framer (syslog: RFC 6587 octet counting or newlines; line protocol:
/// newlines), at most `max_conns` open per shard (the rest closed and counted).
fn tcp_loop(
    hs: HostSock,
    sh: Rc<RefCell<Shared>>,
    stop: Arc<AtomicBool>,
    now_s: Rc<Cell<u64>>,
    max_frame: usize,
    max_conns: usize,
) -> glommio::Task<()> {
    glommio::spawn_local(async move {
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: accept4 on a listening socket we own; a null address is allowed.
            let fd = unsafe {
                libc::accept4(
                    hs.fd,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
            // SAFETY: fd is a connected socket just accepted; ownership moves to glommio.
            let stream = unsafe { glommio::net::TcpStream::from_raw_fd(fd) };
            {
                let mut s = sh.borrow_mut();
                let Some(h) = s.host.as_mut() else { break };
                if h.connections >= max_conns {
                    h.refused += 1;
                    continue;
                }
                h.connections += 1;
            }
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let peer = stream.peer_addr().ok();
            let (sh, stop, now_s) = (sh.clone(), stop.clone(), now_s.clone());
            let syslog = hs.syslog;
            glommio::spawn_local(async move {
                use futures_lite::AsyncReadExt;
                let mut stream = stream;
                let mut buf = vec![0u8; 64 << 10];
                let mut framer = if syslog { Framer::new(max_frame) } else { Framer::lines(max_frame) };
                let mut frames: Vec<(usize, usize)> = Vec::new();
                let mut store: Vec<u8> = Vec::new();
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let n = match stream.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e)
                            if e.kind() == std::io::ErrorKind::TimedOut
                                || e.kind() == std::io::ErrorKind::WouldBlock =>
                        {
                            continue
                        }
                        Err(_) => break,
                    };
                    store.clear();
                    frames.clear();
                    framer.push(&buf[..n], &mut |f| {
                        frames.push((store.len(), f.len()));
                        store.extend_from_slice(f);
                    });
                    {
                        let mut s = sh.borrow_mut();
                        let now = now_s.get();
                        if let Some(h) = s.host.as_mut() {
                            h.core.counters.oversize_frames += framer.take_dropped();
                            for &(at, len) in &frames {
                                h.input(&store[at..at + len], syslog, peer, now);
                            }
                        }
                    }
                    glommio::yield_if_needed().await;
                }
                // a last line without its newline still counts
                framer.finish(&mut |f| {
                    let mut s = sh.borrow_mut();
                    let now = now_s.get();
                    if let Some(h) = s.host.as_mut() {
                        h.input(f, syslog, peer, now);
                    }
                });
                if let Some(h) = sh.borrow_mut().host.as_mut() {
                    h.connections -= 1;
                }
            })
            .detach();
        }
        // SAFETY: hs.fd is the listening socket this loop owned.
        unsafe { libc::close(hs.fd) };
        // connection tasks end on the stop flag (within one read timeout): wait for them, so
        // what they read is in the shard's last window
        for _ in 0..100 {
            if sh.borrow().host.as_ref().is_none_or(|h| h.connections == 0) {
                break;
            }
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    })
}
