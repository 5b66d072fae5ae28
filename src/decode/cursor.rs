//! The one panic-free reader for untrusted wire bytes. Every read checks what remains and
//! returns [`Truncated`] instead of panicking; there is no slice indexing on datagram bytes
//! anywhere else in the decoders.
//!
//! Lives on: shard cores (and tests, fuzzers, replay).

/// A read went past the end of the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// Bytes the read needed.
    pub needed: usize,
    /// Bytes that were left.
    pub remaining: usize,
}

/// A big-endian reader over a byte slice.
#[derive(Clone, Copy, Debug)]
pub struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor over `buf`.
    #[inline]
    pub const fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }
    /// Bytes not yet read.
    #[inline]
    pub const fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Whether everything was read.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The unread bytes.
    #[inline]
    pub const fn rest(&self) -> &'a [u8] {
        self.buf
    }
    /// Takes the next `n` bytes.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Truncated> {
        if n > self.buf.len() {
            return Err(Truncated { needed: n, remaining: self.buf.len() });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// Takes a sub-cursor over the next `n` bytes.
    #[inline]
    pub fn sub(&mut self, n: usize) -> Result<Cursor<'a>, Truncated> {
        self.bytes(n).map(Cursor::new)
    }
    /// Skips `n` bytes.
    #[inline]
    pub fn skip(&mut self, n: usize) -> Result<(), Truncated> {
        self.bytes(n).map(|_| ())
    }
    /// Takes `N` bytes as an array.
    #[inline]
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let b = self.bytes(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }
    /// Reads a `u8`.
    #[inline]
    pub fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a big-endian `u16`.
    #[inline]
    pub fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_be_bytes)
    }
    /// Reads a big-endian `u32`.
    #[inline]
    pub fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_be_bytes)
    }
    /// Reads a big-endian `u64`.
    #[inline]
    pub fn u64(&mut self) -> Result<u64, Truncated> {
        self.array().map(u64::from_be_bytes)
    }
    /// Reads a big-endian unsigned integer of 1 to 8 bytes (IPFIX reduced-size encoding);
    /// longer fields keep their low 8 bytes.
    #[inline]
    pub fn uint(&mut self, len: usize) -> Result<u64, Truncated> {
        Ok(be_uint(self.bytes(len)?))
    }
}

/// A big-endian unsigned integer from up to 8 bytes (longer slices keep their last 8 bytes).
#[inline]
pub fn be_uint(b: &[u8]) -> u64 {
    let tail = if b.len() > 8 { &b[b.len() - 8..] } else { b };
    let mut v = 0u64;
    for &x in tail {
        v = v << 8 | x as u64;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_truncates() {
        let mut c = Cursor::new(&[0, 5, 0, 0, 0, 9, 1]);
        assert_eq!(c.u16(), Ok(5));
        assert_eq!(c.u32(), Ok(9));
        assert_eq!(c.u16(), Err(Truncated { needed: 2, remaining: 1 }));
        assert_eq!(c.u8(), Ok(1));
        assert!(c.is_empty());
        assert!(c.skip(usize::MAX).is_err());
    }

    #[test]
    fn reduced_size_ints() {
        assert_eq!(be_uint(&[1, 0]), 256);
        assert_eq!(be_uint(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 7]), 7);
        assert_eq!(be_uint(&[]), 0);
    }
}
