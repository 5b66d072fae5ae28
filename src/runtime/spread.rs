//! Exporter spread: one busy exporter's datagrams decoded on every shard, not only on the one
//! the kernel chose.
//!
//! `SO_REUSEPORT` picks a socket by hashing the 4-tuple, so one router with a fixed source port
//! lands on one shard however many there are. Steering in the kernel cannot fix that: the NIC's
//! RSS hash puts the one 4-tuple on one queue, so steering by CPU picks one socket too, and
//! steering at random would let a NetFlow v9 / IPFIX data datagram reach a shard before the
//! template it depends on (or before a template *update*) — a wrong decode, not only a miss.
//!
//! So the shard that receives an exporter's datagram hands it on. Per spread exporter, in the
//! order the socket delivered them:
//! * a datagram that carries state (a template or options-template set, or options data with a
//!   sampling rate; [`crate::decode::Decoder::carries_state`]) is decoded here, and a copy goes
//!   to every other shard, which applies only its state ([`crate::decode::Decoder::learn`]);
//! * any other datagram goes to the next shard in turn (this one included) and is decoded
//!   there like a datagram of its own socket.
//!
//! Each ordered pair of shards has one bounded FIFO queue of [`Fwd`] messages, so a template
//! always reaches a shard ahead of the data that depends on it: nothing needs to be held. When
//! spreading of an exporter starts, a [`Fwd::Sync`] with everything this shard knows of the
//! exporters it spreads goes first. Never a drop, never a wait on the receive path:
//! * a shard whose queue is full loses its turn (the datagram goes to the next shard, or is
//!   decoded here), counted as `busy`;
//! * a state copy that finds the queue full marks that shard stale: it gets no more data from
//!   this shard until a new sync has reached it (`stale`).
//!
//! Modes, per listener ([`SpreadMode`]): `auto` (default) spreads an exporter while it sends at
//! least `spread_above` datagrams/s to one shard, and stops after it stayed below half that
//! for ten seconds; `always`; `off`. One shard: nothing is spread.
//!
//! Cost on the receiving shard: one set-header walk per v9/IPFIX datagram and one copy into a
//! batch; no allocation (batches are returned and reused), no lock, and at most one cross-core
//! wake-up per batch: a batch goes when it holds 32 datagrams, when its oldest datagram has
//! waited 1 ms (checked after each receive wake-up), and at every tick (≤ 100 ms).
//!
//! May depend on: `decode`, `model`, `config`, `ops`. Lives on: shard cores (one spreader per
//! shard, built on its core).

use crate::config::SpreadMode;
use crate::decode::templates::{Snapshot, TemplateStore};
use crate::model::Ip;
use crate::ops::SpreadCounters;
use rustc_hash::{FxHashMap, FxHashSet};

/// Datagrams a handed-on batch holds at most.
pub const BATCH_DATAGRAMS: usize = 128;
/// Payload bytes a batch holds at most.
pub const BATCH_BYTES: usize = 256 << 10;
/// A batch this full is sent at the end of a receive wake-up.
pub const FLUSH_AT: usize = 32;
/// A less full batch waits at most this long (or until the next tick, when nothing arrives).
pub const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(1);
/// Batches in flight from one shard to another.
pub const DEPTH: usize = 32;
/// Seconds an `auto` exporter stays spread while below half the threshold.
const QUIET_S: u32 = 10;
/// Exporters one shard spreads at most (more are decoded where they land).
const MAX_EXPORTERS: usize = 65_536;

/// Datagrams handed from one shard to another, in arrival order.
#[derive(Debug, Default)]
pub struct FwdBatch {
    buf: Vec<u8>,
    items: Vec<Item>,
}

#[derive(Clone, Copy, Debug)]
struct Item {
    at: u32,
    len: u32,
    src: Ip,
    state: bool,
}

impl FwdBatch {
    fn allocate() -> Box<FwdBatch> {
        Box::new(FwdBatch { buf: Vec::with_capacity(BATCH_BYTES), items: Vec::with_capacity(BATCH_DATAGRAMS) })
    }
    fn fits(&self, len: usize) -> bool {
        self.items.len() < BATCH_DATAGRAMS && self.buf.len() + len <= BATCH_BYTES
    }
    fn push(&mut self, data: &[u8], src: Ip, state: bool) {
        let at = self.buf.len() as u32;
        self.buf.extend_from_slice(data);
        self.items.push(Item { at, len: data.len() as u32, src, state });
    }
    /// Datagrams held.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Each datagram: payload, exporter, and whether it is a state copy (apply its templates
    /// and sampling only; the sender decoded its records).
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Ip, bool)> {
        self.items.iter().map(|i| (&self.buf[i.at as usize..(i.at + i.len) as usize], i.src, i.state))
    }
    /// Empties it for reuse (keeps the capacity).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.items.clear();
    }
}

/// What one shard sends another.
#[derive(Debug)]
pub enum Fwd {
    /// Datagrams to decode (or, for state copies, to learn from).
    Batch(Box<FwdBatch>),
    /// Templates and sampling rates of the exporters the sender spreads, to take as they are.
    Sync(Box<Snapshot>),
}

/// One shard's sending end towards another (a bounded FIFO; `try_send` never waits).
pub trait Link {
    /// Queues `m`, or gives it back when the queue is full (or closed).
    fn try_send(&self, m: Fwd) -> Result<(), Fwd>;
}

impl Link for glommio::channels::shared_channel::ConnectedSender<Fwd> {
    fn try_send(&self, m: Fwd) -> Result<(), Fwd> {
        use glommio::{GlommioError, ResourceType};
        match glommio::channels::shared_channel::ConnectedSender::try_send(self, m) {
            Ok(()) => Ok(()),
            Err(
                GlommioError::WouldBlock(ResourceType::Channel(m)) | GlommioError::Closed(ResourceType::Channel(m)),
            ) => Err(m),
            // try_send reports nothing else; a message it does not give back is lost to it
            Err(_) => Ok(()),
        }
    }
}

/// One shard's spreading state: its links to the other shards, the batches being filled, and
/// for `auto` listeners the per-exporter rates and the exporters spread now.
pub struct Spreader<L: Link> {
    me: usize,
    links: Vec<Option<L>>,
    pending: Vec<Option<Box<FwdBatch>>>,
    needs_sync: Vec<bool>,
    // boxed: batches travel between cores as one pointer
    #[allow(clippy::vec_box)]
    spare: Vec<Box<FwdBatch>>,
    returns: Option<crossbeam_channel::Receiver<Box<FwdBatch>>>,
    next: usize,
    /// When the oldest pending datagram was queued (as of a receive wake-up).
    since: Option<std::time::Instant>,
    /// Mode and `spread_above` per listener.
    listeners: Vec<(SpreadMode, u32)>,
    /// Datagrams this second per (listener, exporter), `auto` listeners only.
    counts: FxHashMap<(u16, Ip), u32>,
    last: Option<(u16, Ip)>,
    last_n: u32,
    last_spread: bool,
    /// `auto` exporters spread now, with the seconds they have been quiet.
    spread: FxHashMap<(u16, Ip), u32>,
    /// Every exporter this shard has spread (what a sync carries).
    mine: FxHashSet<Ip>,
    /// Exporters of `always` listeners seen here.
    always: FxHashSet<Ip>,
    /// Counters.
    pub counters: SpreadCounters,
}

impl<L: Link> Spreader<L> {
    /// A spreader for shard `me`: `links[i]` reaches shard `i` (`None` for `me`); `listeners`
    /// gives each listener's mode and `spread_above`; handed-on batches come back through
    /// `returns`.
    pub fn new(
        me: usize,
        links: Vec<Option<L>>,
        listeners: Vec<(SpreadMode, u32)>,
        returns: Option<crossbeam_channel::Receiver<Box<FwdBatch>>>,
    ) -> Spreader<L> {
        let n = links.len();
        Spreader {
            me,
            links,
            pending: (0..n).map(|_| None).collect(),
            needs_sync: vec![false; n],
            spare: Vec::new(),
            returns,
            next: me,
            since: None,
            listeners,
            counts: FxHashMap::default(),
            last: None,
            last_n: 0,
            last_spread: false,
            spread: FxHashMap::default(),
            mine: FxHashSet::default(),
            always: FxHashSet::default(),
            counters: SpreadCounters::default(),
        }
    }

    /// Whether a datagram from `src` on listener `l` is spread. Counts it for `auto`; one
    /// comparison when the exporter is the previous datagram's.
    #[inline]
    pub fn spreads(&mut self, l: u16, src: Ip) -> bool {
        let mode = self.listeners.get(l as usize).map_or(SpreadMode::Off, |x| x.0);
        if mode == SpreadMode::Off {
            return false;
        }
        if self.last == Some((l, src)) {
            self.last_n += 1;
            return self.last_spread;
        }
        self.settle();
        self.last = Some((l, src));
        self.last_n = 1;
        self.last_spread = match mode {
            SpreadMode::Auto => self.spread.contains_key(&(l, src)),
            SpreadMode::Always => self.always.contains(&src) || self.adopt(src),
            SpreadMode::Off => false,
        };
        self.last_spread
    }

    fn adopt(&mut self, src: Ip) -> bool {
        if self.always.len() >= MAX_EXPORTERS || !self.claim(src) {
            return false;
        }
        self.always.insert(src);
        true
    }

    /// Adds `src` to the exporters a sync carries; false when that set is full.
    fn claim(&mut self, src: Ip) -> bool {
        if self.mine.len() >= MAX_EXPORTERS && !self.mine.contains(&src) {
            return false;
        }
        self.mine.insert(src);
        true
    }

    fn settle(&mut self) {
        if let Some(k) = self.last.take() {
            if self.listeners.get(k.0 as usize).is_some_and(|x| x.0 == SpreadMode::Auto) {
                // bounded: a flood of spoofed sources is many small exporters, none to spread
                if let Some(n) = self.counts.get_mut(&k) {
                    *n += self.last_n;
                } else if self.counts.len() < MAX_EXPORTERS {
                    self.counts.insert(k, self.last_n);
                }
            }
        }
        self.last_n = 0;
    }

    /// Once a second: starts spreading `auto` exporters at or above their listener's
    /// threshold (the other shards are synced first), stops those quiet for ten seconds.
    pub fn tick(&mut self) {
        self.settle();
        for q in self.spread.values_mut() {
            *q += 1;
        }
        let mut started = false;
        // taken out while it is drained (its memory is kept for the next second)
        let mut counts = std::mem::take(&mut self.counts);
        for ((l, src), n) in counts.drain() {
            let above = self.listeners.get(l as usize).map_or(u32::MAX, |x| x.1);
            if n >= above {
                if !self.spread.contains_key(&(l, src)) && self.claim(src) {
                    started = true;
                }
                if self.mine.contains(&src) {
                    self.spread.insert((l, src), 0);
                }
            } else if n >= above / 2 {
                if let Some(q) = self.spread.get_mut(&(l, src)) {
                    *q = 0;
                }
            }
        }
        self.counts = counts;
        self.spread.retain(|_, q| *q < QUIET_S);
        if started {
            for (t, s) in self.needs_sync.iter_mut().enumerate() {
                *s = t != self.me;
            }
        }
        self.counters.exporters = self.spread.len() as u64 + self.always.len() as u64;
    }

    fn take_spare(&mut self) -> Box<FwdBatch> {
        if let Some(r) = &self.returns {
            while let Ok(mut b) = r.try_recv() {
                b.clear();
                self.spare.push(b);
            }
        }
        self.spare.pop().unwrap_or_else(FwdBatch::allocate)
    }

    /// Sends shard `t`'s pending batch; false when its queue is full (the batch stays).
    fn flush_one(&mut self, t: usize) -> bool {
        let Some(p) = self.pending[t].take() else { return true };
        if p.is_empty() {
            self.pending[t] = Some(p);
            return true;
        }
        let Some(link) = &self.links[t] else { return true };
        match link.try_send(Fwd::Batch(p)) {
            Ok(()) => true,
            Err(Fwd::Batch(p)) => {
                self.pending[t] = Some(p);
                false
            }
            Err(Fwd::Sync(_)) => false,
        }
    }

    /// Brings shard `t` up to date: what is pending first, then a sync.
    fn sync_to(&mut self, t: usize, store: &TemplateStore) -> bool {
        if !self.flush_one(t) {
            return false;
        }
        let Some(link) = &self.links[t] else { return true };
        let mine: Vec<Ip> = self.mine.iter().copied().collect();
        match link.try_send(Fwd::Sync(Box::new(store.snapshot_of(&mine)))) {
            Ok(()) => {
                self.needs_sync[t] = false;
                self.counters.syncs += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Hands a spread exporter's datagram (one that carries no state) to the next shard in
    /// turn. False when it is this shard's turn, or every other shard is busy: decode it here.
    #[inline]
    pub fn forward(&mut self, data: &[u8], src: Ip, store: &TemplateStore) -> bool {
        let n = self.links.len();
        for _ in 0..n {
            let t = self.next;
            self.next = if t + 1 == n { 0 } else { t + 1 };
            if t == self.me {
                return false;
            }
            if self.needs_sync[t] && !self.sync_to(t, store) {
                self.counters.busy += 1;
                continue;
            }
            if !self.append(t, data, src, false) {
                self.counters.busy += 1;
                continue;
            }
            self.counters.forwarded += 1;
            return true;
        }
        false
    }

    /// Appends a datagram to shard `t`'s pending batch, sending the batch first when it is
    /// full; false when there is no room (the batch is full and its queue too).
    fn append(&mut self, t: usize, data: &[u8], src: Ip, state: bool) -> bool {
        if self.pending[t].as_ref().is_some_and(|p| !p.fits(data.len())) && !self.flush_one(t) {
            return false;
        }
        if self.pending[t].is_none() {
            self.pending[t] = Some(self.take_spare());
        }
        if let Some(p) = self.pending[t].as_mut() {
            p.push(data, src, state);
        }
        true
    }

    /// Copies a datagram that carries state (already decoded here) to every other shard.
    pub fn copy_state(&mut self, data: &[u8], src: Ip) {
        for t in 0..self.links.len() {
            if t == self.me || self.links[t].is_none() || self.needs_sync[t] {
                // a shard waiting for a sync gets this state with it
                continue;
            }
            if !self.append(t, data, src, true) {
                self.needs_sync[t] = true;
                self.counters.stale += 1;
                continue;
            }
            self.counters.state_copies += 1;
        }
    }

    /// After a receive wake-up: sends the batches worth a cross-core wake-up of their shard —
    /// those holding [`FLUSH_AT`] datagrams, or all once the oldest waited [`FLUSH_AFTER`].
    /// Sending every few datagrams would cost the receiving shard an inter-processor
    /// interrupt each time.
    pub fn flush_due(&mut self, now: std::time::Instant) {
        let any = self.pending.iter().flatten().any(|p| !p.is_empty());
        if !any {
            self.since = None;
            return;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= FLUSH_AFTER {
            self.flush();
            return;
        }
        for t in 0..self.pending.len() {
            if self.pending[t].as_ref().is_some_and(|p| p.len() >= FLUSH_AT) {
                let _ = self.flush_one(t);
            }
        }
    }

    /// Sends every pending batch it can (the rest wait for the next call).
    pub fn flush(&mut self) {
        self.since = None;
        for t in 0..self.pending.len() {
            if self.pending[t].as_ref().is_some_and(|p| !p.is_empty()) {
                let _ = self.flush_one(t);
            }
        }
    }

    /// At shutdown: the batches still pending, with the links to send them on (then close).
    pub fn finish(&mut self) -> Vec<(Option<Box<FwdBatch>>, L)> {
        let mut out = Vec::new();
        for (t, l) in self.links.iter_mut().enumerate() {
            if let Some(l) = l.take() {
                out.push((self.pending[t].take().filter(|p| !p.is_empty()), l));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A bounded in-memory queue standing in for the glommio channel (the plumbing under test
    /// is the spreader's, not the channel's).
    #[derive(Clone, Default)]
    struct Queue(Rc<RefCell<(Vec<Fwd>, usize)>>);
    impl Link for Queue {
        fn try_send(&self, m: Fwd) -> Result<(), Fwd> {
            let mut q = self.0.borrow_mut();
            if q.0.len() >= q.1 {
                return Err(m);
            }
            q.0.push(m);
            Ok(())
        }
    }
    fn queue(cap: usize) -> Queue {
        Queue(Rc::new(RefCell::new((Vec::new(), cap))))
    }

    fn ip(n: u8) -> Ip {
        Ip::from_v4(u32::from_be_bytes([10, 0, 0, n]))
    }

    #[test]
    fn auto_starts_at_threshold_and_stops_after_quiet() {
        let mut s: Spreader<Queue> =
            Spreader::new(0, vec![None, Some(queue(8))], vec![(SpreadMode::Auto, 100), (SpreadMode::Off, 0)], None);
        for _ in 0..99 {
            assert!(!s.spreads(0, ip(1)));
        }
        s.tick();
        assert!(!s.spreads(0, ip(1)), "99/s is below 100/s");
        for i in 0..120 {
            s.spreads(0, ip(1));
            if i % 3 == 0 {
                s.spreads(0, ip(2)); // interleaved with a small one (40/s)
            }
        }
        s.tick();
        assert!(s.spreads(0, ip(1)));
        assert_eq!(s.counters.exporters, 1);
        // at 60/s (above half) it stays; silent for ten seconds it goes
        for _ in 0..60 {
            s.spreads(0, ip(1));
        }
        s.tick();
        for _ in 0..9 {
            s.tick();
        }
        assert!(s.spreads(0, ip(1)));
        s.tick();
        assert!(!s.spreads(0, ip(1)), "quiet for ten seconds");
        assert_eq!(s.counters.exporters, 0);
        assert!(!s.spreads(1, ip(2)), "an off listener spreads nothing");
    }

    #[test]
    fn round_robin_keeps_order_and_syncs_first() {
        let q1 = queue(64);
        let q2 = queue(64);
        let mut s =
            Spreader::new(1, vec![Some(q1.clone()), None, Some(q2.clone())], vec![(SpreadMode::Auto, 10)], None);
        for _ in 0..10 {
            s.spreads(0, ip(7));
        }
        s.tick();
        let store = TemplateStore::new(16, 3600);
        let mut here = 0;
        for i in 0..9u8 {
            assert!(s.spreads(0, ip(7)));
            if !s.forward(&[i], ip(7), &store) {
                here += 1;
            }
            if i == 4 {
                s.copy_state(&[100], ip(7));
            }
        }
        s.flush();
        assert_eq!(here, 3, "every third datagram is this shard's");
        for q in [&q1, &q2] {
            let q = q.0.borrow();
            assert!(matches!(q.0[0], Fwd::Sync(_)), "a sync precedes the first data");
            let mut seen = Vec::new();
            for m in &q.0[1..] {
                if let Fwd::Batch(b) = m {
                    seen.extend(b.iter().map(|(d, _, st)| (d[0], st)));
                }
            }
            // the state copy sits between the data that came before and after it
            let at = seen.iter().position(|x| *x == (100, true)).unwrap();
            assert!(seen[..at].iter().all(|x| x.0 <= 4) && seen[at + 1..].iter().all(|x| x.0 > 4), "{seen:?}");
        }
        assert_eq!(s.counters.forwarded, 6);
        assert_eq!(s.counters.state_copies, 2);
        assert_eq!(s.counters.syncs, 2);
    }

    #[test]
    fn batches_go_when_full_enough_or_old_enough() {
        let q = queue(64);
        let mut s = Spreader::new(0, vec![None, Some(q.clone())], vec![(SpreadMode::Always, 0)], None);
        let store = TemplateStore::new(16, 3600);
        let t0 = std::time::Instant::now();
        let mut handed = 0;
        while handed < 5 {
            handed += usize::from(s.forward(&[1], ip(1), &store));
        }
        s.flush_due(t0);
        s.flush_due(t0 + std::time::Duration::from_micros(500));
        assert!(q.0.borrow().0.is_empty(), "5 datagrams younger than 1 ms wait");
        s.flush_due(t0 + FLUSH_AFTER);
        assert_eq!(q.0.borrow().0.len(), 1, "the oldest waited 1 ms");
        while handed < 5 + FLUSH_AT {
            handed += usize::from(s.forward(&[1], ip(1), &store));
        }
        s.flush_due(t0 + FLUSH_AFTER);
        assert_eq!(q.0.borrow().0.len(), 2, "a batch of FLUSH_AT goes at once");
    }

    #[test]
    fn full_queue_loses_its_turn_and_a_lost_copy_forces_a_sync() {
        let q1 = queue(1);
        let mut s = Spreader::new(0, vec![None, Some(q1.clone())], vec![(SpreadMode::Always, 0)], None);
        let store = TemplateStore::new(16, 3600);
        assert!(s.spreads(0, ip(3)));
        // fill batches until the one-slot queue is full and the pending batch too
        let big = vec![0u8; 9000];
        let mut forwarded = 0;
        let mut here = 0;
        for _ in 0..200 {
            if s.forward(&big, ip(3), &store) {
                forwarded += 1;
            } else {
                here += 1;
            }
        }
        assert_eq!(forwarded + here, 200, "nothing is lost");
        assert!(s.counters.busy > 0);
        s.copy_state(&big, ip(3));
        assert_eq!(s.counters.stale, 1);
        // shard 1 now gets nothing until its queue drains and a sync is through
        assert!(!s.forward(&big, ip(3), &store) && !s.forward(&big, ip(3), &store));
        q1.0.borrow_mut().0.clear();
        s.flush();
        q1.0.borrow_mut().0.clear();
        let mut got = false;
        for _ in 0..2 {
            got |= s.forward(&[1], ip(3), &store);
        }
        assert!(got);
        assert_eq!(s.counters.syncs, 1);
        assert!(matches!(q1.0.borrow().0.last(), Some(Fwd::Sync(_))));
    }
}
