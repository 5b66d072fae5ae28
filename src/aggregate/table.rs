//! [`KeyTable`]: the bounded per-second table of one dimension — an open-addressing hash table
//! (linear probing, one control byte per slot) with the row stored *in* the slot, so an update
//! costs one cache miss, and a `prefetch` to overlap the misses of a batch of records.
//!
//! Bounded with evict-to-`other`: at most `capacity` keys; a new key in a full table evicts the
//! smallest of 8 sampled rows, whose counts are added to the `other` row, so the sum over all
//! rows (with `other`) is always exact. Deletion is by backward shift (no tombstones). The
//! table grows by doubling up to twice its capacity in slots (load ≤ 1/2) and keeps its memory
//! between seconds.
//!
//! Lives on: shard cores.

use super::Row;
use crate::model::hll::{Sketch, LANES};
use crate::model::{FlowRecord, Key};

const EMPTY: u8 = 0;
/// TCP FIN | RST: the flow ended itself, so a long record of it is history, not a flow that
/// goes on (an exporter's active timeout cuts a continuing flow without these flags).
const TCP_ENDED: u8 = 0x01 | 0x04;
/// TCP SYN and ACK: a flow that saw SYN but never ACK is an attempt nobody answered.
const TCP_SYN: u8 = 0x02;
const TCP_SYN_ACK: u8 = 0x12;
const MIN_SLOTS: usize = 1024;

/// A cheap, well-mixed 64-bit hash of a key (the table's own; owners use `Key::stable_hash`).
#[inline]
pub fn key_hash(k: &Key) -> u64 {
    let lo = k.ip.0 as u64;
    let hi = (k.ip.0 >> 64) as u64;
    let a = (lo ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let b = (hi ^ ((k.num as u64) << 8 | k.other as u64)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let h = a ^ b.rotate_left(29);
    h ^ (h >> 32)
}

/// The bounded table of one dimension for one second.
pub struct KeyTable {
    ctrl: Vec<u8>,
    slots: Vec<Row>,
    sketches: Vec<Sketch>,
    len: usize,
    other: Row,
    other_sketch: Sketch,
    capacity: usize,
    distinct: bool,
    rng: u64,
    /// Rows folded into `other` to make room (counter).
    pub evictions: u64,
}

impl KeyTable {
    /// A table of at most `capacity` keys; `distinct` keeps a sketch per row.
    pub fn new(capacity: usize, distinct: bool) -> KeyTable {
        let capacity = capacity.max(1);
        let n = (capacity * 2).next_power_of_two().min(MIN_SLOTS);
        let mut t = KeyTable {
            ctrl: Vec::new(),
            slots: Vec::new(),
            sketches: Vec::new(),
            len: 0,
            other: Row { key: Key::OTHER, ..Row::default() },
            other_sketch: Sketch::default(),
            capacity,
            distinct,
            rng: 0x853c_49e6_748f_ea9b,
            evictions: 0,
        };
        t.alloc(n);
        t
    }

    fn alloc(&mut self, n: usize) {
        self.ctrl = vec![EMPTY; n];
        self.slots = vec![Row::default(); n];
        self.sketches = if self.distinct { vec![Sketch::default(); n] } else { Vec::new() };
    }

    /// Keys held (not counting `other`).
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the table holds nothing (not even `other`).
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.other.flows == 0 && self.other.bytes == 0
    }

    #[inline]
    fn mask(&self) -> usize {
        self.ctrl.len() - 1
    }

    #[inline]
    fn tag(h: u64) -> u8 {
        (h >> 57) as u8 | 0x80
    }

    /// Hints the CPU to load the slot of `hash` (call for a batch of keys before updating).
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let i = hash as usize & self.mask();
            // SAFETY: prefetch is a hint; the pointers are in bounds of live allocations.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(self.ctrl.as_ptr().add(i).cast());
                // a row is two cache lines (and may straddle a third): the update touches both
                let row = self.slots.as_ptr().add(i).cast::<i8>();
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(std::mem::size_of::<Row>() - 1));
                if self.distinct {
                    let sk = self.sketches.as_ptr().add(i).cast::<i8>();
                    _mm_prefetch::<_MM_HINT_T0>(sk);
                    _mm_prefetch::<_MM_HINT_T0>(sk.wrapping_add(64));
                    _mm_prefetch::<_MM_HINT_T0>(sk.wrapping_add(std::mem::size_of::<Sketch>() - 1));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The slot of `key` (hash `h`), inserting (and evicting or growing) as needed.
    #[inline]
    fn slot(&mut self, key: &Key, h: u64) -> usize {
        let tag = Self::tag(h);
        let mask = self.mask();
        let mut i = h as usize & mask;
        loop {
            let c = self.ctrl[i];
            if c == EMPTY {
                break;
            }
            if c == tag && self.slots[i].key == *key {
                return i;
            }
            i = (i + 1) & mask;
        }
        // Not found: make room, then insert (positions may have moved).
        if self.len >= self.capacity {
            self.evict_one();
        } else if (self.len + 1) * 2 > self.ctrl.len() {
            self.grow();
        } else {
            return self.insert_at(i, key, tag);
        }
        let mask = self.mask();
        let mut i = h as usize & mask;
        while self.ctrl[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.insert_at(i, key, tag)
    }

    #[inline]
    fn insert_at(&mut self, i: usize, key: &Key, tag: u8) -> usize {
        self.ctrl[i] = tag;
        self.slots[i] = Row { key: *key, ..Row::default() };
        if self.distinct {
            self.sketches[i] = Sketch::default();
        }
        self.len += 1;
        i
    }

    fn grow(&mut self) {
        let n = self.ctrl.len() * 2;
        let old_ctrl = std::mem::take(&mut self.ctrl);
        let old_slots = std::mem::take(&mut self.slots);
        let old_sk = std::mem::take(&mut self.sketches);
        self.alloc(n);
        let mask = n - 1;
        for (j, c) in old_ctrl.iter().enumerate() {
            if *c == EMPTY {
                continue;
            }
            let h = key_hash(&old_slots[j].key);
            let mut i = h as usize & mask;
            while self.ctrl[i] != EMPTY {
                i = (i + 1) & mask;
            }
            self.ctrl[i] = *c;
            self.slots[i] = old_slots[j];
            if self.distinct {
                self.sketches[i] = old_sk[j];
            }
        }
    }

    /// Folds the smallest of 8 sampled rows into `other` and removes it.
    fn evict_one(&mut self) {
        let mask = self.mask();
        let mut victim = usize::MAX;
        let mut least = u64::MAX;
        let mut tries = 0;
        let mut found = 0;
        while found < 8 && tries < 1024 {
            tries += 1;
            let i = crate::model::xorshift64(&mut self.rng) as usize & mask;
            if self.ctrl[i] == EMPTY {
                continue;
            }
            found += 1;
            if self.slots[i].bytes < least {
                least = self.slots[i].bytes;
                victim = i;
            }
        }
        if victim == usize::MAX {
            // cannot happen when len > 0 (load ≥ 1/4 when full); scan as a fallback
            match self.ctrl.iter().position(|&c| c != EMPTY) {
                Some(i) => victim = i,
                None => return,
            }
        }
        let row = self.slots[victim];
        self.other.absorb(&row);
        if self.distinct {
            let s = self.sketches[victim];
            self.other_sketch.merge(&s);
        }
        self.remove_at(victim);
        self.evictions += 1;
    }

    /// Backward-shift deletion.
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.mask();
        self.ctrl[i] = EMPTY;
        self.len -= 1;
        let mut j = (i + 1) & mask;
        while self.ctrl[j] != EMPTY {
            let home = key_hash(&self.slots[j].key) as usize & mask;
            // move j to i if its home is not in the cyclic range (i, j]
            let dist_home = j.wrapping_sub(home) & mask;
            let dist_hole = j.wrapping_sub(i) & mask;
            if dist_home >= dist_hole {
                self.ctrl[i] = self.ctrl[j];
                self.slots[i] = self.slots[j];
                if self.distinct {
                    self.sketches[i] = self.sketches[j];
                }
                self.ctrl[j] = EMPTY;
                i = j;
            }
            j = (j + 1) & mask;
        }
    }

    /// Adds one record under `key` (hash `h` from [`key_hash`]).
    #[inline]
    pub fn add(&mut self, key: &Key, h: u64, r: &FlowRecord, long_ms: u32, items: Option<[u128; LANES]>) {
        let (row, sk) = if key.is_other() {
            (&mut self.other, &mut self.other_sketch)
        } else {
            let i = self.slot(key, h);
            let sk = if self.distinct { &mut self.sketches[i] } else { &mut self.other_sketch };
            (&mut self.slots[i], sk)
        };
        row.bytes += r.bytes;
        row.packets += r.packets;
        row.flows += 1;
        let samples = if r.sampling_rate > 1 { (r.packets / r.sampling_rate as u64).max(1) } else { 0 };
        row.samples += samples;
        if r.duration_ms > long_ms && r.tcp_flags & TCP_ENDED == 0 {
            row.long_bytes += r.bytes;
            row.long_packets += r.packets;
            row.long_flows += 1;
            row.long_samples += samples;
            let dur_s = (r.duration_ms / 1000).max(1);
            row.long_rate += r.bytes / u64::from(dur_s);
            row.long_max_s = row.long_max_s.max(dur_s);
        }
        row.syn_only += u64::from(r.proto == 6 && r.tcp_flags & TCP_SYN_ACK == TCP_SYN);
        if let (true, Some(it)) = (self.distinct, items) {
            sk.add(it);
        }
    }

    /// Merges a partial row (and its sketch).
    #[inline]
    pub fn merge(&mut self, row: &Row, sketch: Option<&Sketch>) {
        if row.key.is_other() {
            self.other.absorb(row);
            if let Some(s) = sketch {
                self.other_sketch.merge(s);
            }
            return;
        }
        let i = self.slot(&row.key, key_hash(&row.key));
        self.slots[i].absorb(row);
        if let (true, Some(s)) = (self.distinct, sketch) {
            self.sketches[i].merge(s);
        }
    }

    /// Visits every regular row with its sketch (not `other`).
    pub fn for_each(&self, mut f: impl FnMut(&Row, Option<&Sketch>)) {
        for (i, c) in self.ctrl.iter().enumerate() {
            if *c != EMPTY {
                f(&self.slots[i], self.sketches.get(i));
            }
        }
    }

    /// Visits every row (regular rows, then `other` if non-empty) with its sketch, then empties
    /// the table, keeping its memory.
    pub fn drain(&mut self, mut f: impl FnMut(&Row, Option<&Sketch>)) {
        if self.len > 0 {
            self.for_each(&mut f);
        }
        if self.other.flows > 0 || self.other.bytes > 0 || self.other.packets > 0 {
            f(&self.other, self.distinct.then_some(&self.other_sketch));
        }
        self.clear();
    }

    fn clear(&mut self) {
        if self.len > 0 {
            self.ctrl.fill(EMPTY);
        }
        self.len = 0;
        self.other = Row { key: Key::OTHER, ..Row::default() };
        self.other_sketch = Sketch::default();
    }

    /// Keeps the `k` rows with most bytes (ties broken by key, so the choice is deterministic)
    /// and folds the rest into `other`.
    pub fn truncate_top(&mut self, k: usize) {
        if self.len <= k {
            return;
        }
        let mut occ: Vec<u32> = (0..self.ctrl.len() as u32).filter(|&i| self.ctrl[i as usize] != EMPTY).collect();
        let slots = &self.slots;
        occ.select_nth_unstable_by(k, |&a, &b| {
            let (ra, rb) = (&slots[a as usize], &slots[b as usize]);
            rb.bytes.cmp(&ra.bytes).then(ra.key.cmp(&rb.key))
        });
        for &i in &occ[k..] {
            let i = i as usize;
            let row = self.slots[i];
            self.other.absorb(&row);
            if self.distinct {
                let s = self.sketches[i];
                self.other_sketch.merge(&s);
            }
            // mark for removal; rebuilt below
            self.ctrl[i] = EMPTY;
            self.evictions += 1;
        }
        // Re-insert the kept rows so probe chains are intact.
        let kept: Vec<(Row, Option<Sketch>)> =
            occ[..k].iter().map(|&i| (self.slots[i as usize], self.sketches.get(i as usize).copied())).collect();
        self.ctrl.fill(EMPTY);
        self.len = 0;
        for (row, sk) in kept {
            let h = key_hash(&row.key);
            let i = self.slot(&row.key, h);
            self.slots[i] = row;
            if let Some(s) = sk {
                self.sketches[i] = s;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Dimension, Ip};

    fn rec(src: u32, bytes: u64) -> FlowRecord {
        FlowRecord { src: Ip::from_v4(src), dst: Ip::from_v4(1), bytes, packets: 1, proto: 6, ..Default::default() }
    }

    #[test]
    fn insert_find_grow_remove_keep_every_row() {
        let mut t = KeyTable::new(5000, false);
        for round in 0..3u64 {
            for i in 0..5000u32 {
                let r = rec(i, 1 + round);
                let k = Dimension::SrcIp.key(&r);
                t.add(&k, key_hash(&k), &r, 2000, None);
            }
        }
        assert_eq!(t.len(), 5000);
        assert_eq!(t.evictions, 0);
        let mut n = 0;
        let mut sum = 0;
        t.drain(|r, _| {
            n += 1;
            sum += r.bytes;
            assert_eq!(r.flows, 3);
        });
        assert_eq!((n, sum), (5000, 5000 * 6));
        assert!(t.is_empty());
    }

    #[test]
    fn eviction_and_truncation_keep_lookups_consistent() {
        let mut t = KeyTable::new(100, true);
        let mut total = 0;
        for i in 0..20_000u32 {
            let r = rec(i % 3000, (i % 7) as u64 + 1);
            let k = Dimension::SrcIp.key(&r);
            t.add(&k, key_hash(&k), &r, 2000, Some([i as u128, 0]));
            total += r.bytes;
        }
        assert!(t.len() <= 100);
        // every key present can be found again (no broken probe chains)
        let mut keys = Vec::new();
        t.for_each(|r, _| keys.push(r.key));
        for k in &keys {
            let before = t.len();
            let i = t.slot(k, key_hash(k));
            assert_eq!(t.slots[i].key, *k);
            assert_eq!(t.len(), before);
        }
        t.truncate_top(10);
        assert_eq!(t.len(), 10);
        let mut sum = 0;
        t.drain(|r, _| sum += r.bytes);
        assert_eq!(sum, total);
    }
}
