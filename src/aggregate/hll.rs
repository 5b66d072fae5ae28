//! HyperLogLog: a bounded, mergeable distinct counter. With 128 registers ≈9 % standard error,
//! exact enough below a few hundred items thanks to the linear-counting range; with 32
//! registers ≈18 %, exact enough below ~80. Merging is a register max, so the result is the
//! same however the items were split across shards.
//!
//! [`Sketch`] is what a table row carries: one counter per distinct item of the dimension (see
//! [`Dimension::distinct_items`](crate::model::Dimension::distinct_items)) — the main item in
//! 128 registers, destination ports in 32 (160 bytes a row).
//!
//! Lives on: shard cores.

use crate::model::mix64;

/// Registers of the main counter.
pub const REGISTERS: usize = 128;
/// Registers of the destination-port counter (ports per key are few; a scan's many ports need
/// an order of magnitude, not the exact count).
pub const PORT_REGISTERS: usize = 32;

/// A HyperLogLog sketch of `N` (a power of two, 16..=256) one-byte registers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Hll<const N: usize = REGISTERS> {
    regs: [u8; N],
}

impl<const N: usize> Default for Hll<N> {
    fn default() -> Self {
        Hll { regs: [0; N] }
    }
}

impl<const N: usize> Hll<N> {
    /// Index bits (log2 of the register count).
    const BITS: u32 = N.trailing_zeros();

    /// Adds an item.
    #[inline]
    pub fn add(&mut self, item: u128) {
        let h = mix64((item as u64) ^ mix64((item >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15));
        let idx = (h >> (64 - Self::BITS)) as usize; // top bits
        let rank = ((h << Self::BITS) | (1 << (Self::BITS - 1))).leading_zeros() as u8 + 1;
        let r = &mut self.regs[idx];
        if rank > *r {
            *r = rank;
        }
    }

    /// Merges another sketch into this one.
    #[inline]
    pub fn merge(&mut self, o: &Hll<N>) {
        for (a, b) in self.regs.iter_mut().zip(o.regs.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.regs.iter().all(|&r| r == 0)
    }

    /// Estimated number of distinct items.
    pub fn estimate(&self) -> u64 {
        let m = N as f64;
        let mut sum = 0.0;
        let mut zeros = 0;
        for &r in &self.regs {
            // 2^-r from its exponent bits (ranks are at most 65)
            sum += f64::from_bits((1023 - u64::from(r)) << 52);
            zeros += usize::from(r == 0);
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        let est = if raw <= 2.5 * m && zeros > 0 { m * (m / zeros as f64).ln() } else { raw };
        est.round() as u64
    }
}

/// Distinct items counted per row: the dimension's main item (destination endpoints of a
/// source, sources of a destination), then destination ports (with protocol).
pub const LANES: usize = 2;

/// The distinct-count sketches of one row (160 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Sketch {
    main: Hll<REGISTERS>,
    ports: Hll<PORT_REGISTERS>,
}

impl Sketch {
    /// Adds one item per lane.
    #[inline]
    pub fn add(&mut self, [main, port]: [u128; LANES]) {
        self.main.add(main);
        self.ports.add(port);
    }

    /// Merges another row's sketches (lane by lane).
    #[inline]
    pub fn merge(&mut self, o: &Sketch) {
        self.main.merge(&o.main);
        self.ports.merge(&o.ports);
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.main.is_empty()
    }

    /// Estimated distinct main items (what layer 1 judges).
    pub fn main_estimate(&self) -> u64 {
        self.main.estimate()
    }

    /// Estimated distinct items per lane.
    pub fn estimates(&self) -> [u64; LANES] {
        [self.main.estimate(), self.ports.estimate()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_counts_are_close_and_merge_is_union() {
        let mut a = Hll::<REGISTERS>::default();
        let mut b = Hll::<REGISTERS>::default();
        for i in 0..300u128 {
            if i % 2 == 0 {
                a.add(i)
            } else {
                b.add(i)
            }
            a.add(i % 7);
        }
        a.merge(&b);
        let e = a.estimate() as f64;
        assert!((e - 300.0).abs() / 300.0 < 0.1, "estimate {e}");
        let mut one = Hll::<REGISTERS>::default();
        one.add(5);
        one.add(5);
        assert_eq!(one.estimate(), 1);
    }

    #[test]
    fn lanes_count_apart() {
        let mut s = Sketch::default();
        for i in 0..200u128 {
            s.add([i, i % 3]);
        }
        let mut o = Sketch::default();
        o.add([1000, 7]);
        s.merge(&o);
        let [a, b] = s.estimates();
        assert!((a as f64 - 201.0).abs() / 201.0 < 0.15, "{a} (≈9 % standard error)");
        assert_eq!(b, 4);
        let mut p = Hll::<PORT_REGISTERS>::default();
        for i in 0..1000u128 {
            p.add(i);
        }
        let e = p.estimate() as f64;
        assert!((e - 1000.0).abs() / 1000.0 < 0.4, "32 registers: {e}");
    }

    #[test]
    fn large_counts_within_error() {
        let mut a = Hll::<REGISTERS>::default();
        for i in 0..100_000u128 {
            a.add(i << 3);
        }
        let e = a.estimate() as f64;
        assert!((e - 100_000.0).abs() / 100_000.0 < 0.3, "estimate {e}");
    }
}
