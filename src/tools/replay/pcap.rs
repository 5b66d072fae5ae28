//! A small pcap / pcapng reader that yields the UDP payloads of a capture with their capture
//! timestamps and source addresses — what `flowshard replay` feeds to the pipeline.
//!
//! Supports classic pcap (both byte orders, micro- and nanosecond timestamps) and pcapng
//! (section header, interface description, enhanced and simple packet blocks), link types
//! Ethernet, raw IP, Linux cooked (SLL, SLL2) and BSD loopback. IPv4 and IPv6 (extension
//! headers skipped); IP fragments are counted and skipped.
//!
//! Lives on: the replay thread; pure parsing, no I/O (the caller supplies the bytes).

use crate::decode::cursor::Cursor;
use crate::model::Ip;

/// One UDP datagram from a capture.
#[derive(Clone, Copy, Debug)]
pub struct UdpPacket<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Source address.
    pub src: Ip,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// UDP payload.
    pub payload: &'a [u8],
}

/// Problems reading a capture file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PcapError {
    /// Not a pcap or pcapng file.
    #[error("not a pcap or pcapng file (magic {0:#010x})")]
    BadMagic(u32),
    /// The file ends inside a header or block.
    #[error("capture truncated at byte {0}")]
    Truncated(usize),
    /// A block length is impossible.
    #[error("bad pcapng block length {len} at byte {at}")]
    BadBlock {
        /// Length found.
        len: usize,
        /// Offset.
        at: usize,
    },
}

/// Counters of what the reader skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Frames read.
    pub frames: u64,
    /// UDP datagrams yielded.
    pub udp: u64,
    /// Frames that were not UDP over IP (or of an unsupported link type).
    pub not_udp: u64,
    /// IP fragments skipped.
    pub fragments: u64,
}

#[derive(Clone, Copy)]
enum Format {
    Pcap { big: bool, nanos: bool, linktype: u32 },
    PcapNg { big: bool },
}

/// Iterates over the UDP datagrams of a capture held in memory.
pub struct PcapReader<'a> {
    data: &'a [u8],
    pos: usize,
    format: Format,
    /// pcapng interfaces: (link type, timestamp units per second).
    ifaces: Vec<(u32, u64)>,
    /// What was skipped so far.
    pub stats: ReadStats,
}

fn rd32(b: &[u8], big: bool) -> u32 {
    let a = [b[0], b[1], b[2], b[3]];
    if big {
        u32::from_be_bytes(a)
    } else {
        u32::from_le_bytes(a)
    }
}

fn rd16(b: &[u8], big: bool) -> u16 {
    if big {
        u16::from_be_bytes([b[0], b[1]])
    } else {
        u16::from_le_bytes([b[0], b[1]])
    }
}

impl<'a> PcapReader<'a> {
    /// Opens a capture held in memory.
    pub fn new(data: &'a [u8]) -> Result<PcapReader<'a>, PcapError> {
        let magic = data.get(..4).ok_or(PcapError::Truncated(0))?;
        let m = u32::from_le_bytes([magic[0], magic[1], magic[2], magic[3]]);
        let format = match m {
            0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
                let big = m == 0xd4c3_b2a1 || m == 0x4d3c_b2a1;
                let nanos = m == 0xa1b2_3c4d || m == 0x4d3c_b2a1;
                let hdr = data.get(..24).ok_or(PcapError::Truncated(0))?;
                Format::Pcap { big, nanos, linktype: rd32(&hdr[20..], big) & 0x0fff_ffff }
            }
            0x0a0d_0d0a => {
                let bom = data.get(8..12).ok_or(PcapError::Truncated(0))?;
                let big = u32::from_le_bytes([bom[0], bom[1], bom[2], bom[3]]) != 0x1a2b_3c4d;
                Format::PcapNg { big }
            }
            other => return Err(PcapError::BadMagic(other)),
        };
        let pos = match format {
            Format::Pcap { .. } => 24,
            Format::PcapNg { .. } => 0,
        };
        Ok(PcapReader { data, pos, format, ifaces: Vec::new(), stats: ReadStats::default() })
    }

    /// The next UDP datagram, `Ok(None)` at the end of the capture.
    pub fn next_udp(&mut self) -> Result<Option<UdpPacket<'a>>, PcapError> {
        loop {
            let Some((linktype, ts_ns, frame)) = self.next_frame()? else {
                return Ok(None);
            };
            self.stats.frames += 1;
            match udp_of_frame(linktype, frame, &mut self.stats) {
                Some((src, sp, dp, payload)) => {
                    self.stats.udp += 1;
                    return Ok(Some(UdpPacket { ts_ns, src, src_port: sp, dst_port: dp, payload }));
                }
                None => self.stats.not_udp += 1,
            }
        }
    }

    /// The next frame as (link type, timestamp ns, bytes).
    #[allow(clippy::type_complexity)]
    fn next_frame(&mut self) -> Result<Option<(u32, u64, &'a [u8])>, PcapError> {
        match self.format {
            Format::Pcap { big, nanos, linktype } => {
                if self.pos >= self.data.len() {
                    return Ok(None);
                }
                let h = self.data.get(self.pos..self.pos + 16).ok_or(PcapError::Truncated(self.pos))?;
                let sec = rd32(h, big) as u64;
                let frac = rd32(&h[4..], big) as u64;
                let incl = rd32(&h[8..], big) as usize;
                let start = self.pos + 16;
                let frame = self.data.get(start..start + incl).ok_or(PcapError::Truncated(start))?;
                self.pos = start + incl;
                let ts = sec * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
                Ok(Some((linktype, ts, frame)))
            }
            Format::PcapNg { big } => loop {
                if self.pos >= self.data.len() {
                    return Ok(None);
                }
                let at = self.pos;
                let h = self.data.get(at..at + 8).ok_or(PcapError::Truncated(at))?;
                let btype = rd32(h, big);
                let len = rd32(&h[4..], big) as usize;
                if len < 12 || len % 4 != 0 {
                    return Err(PcapError::BadBlock { len, at });
                }
                let block = self.data.get(at..at + len).ok_or(PcapError::Truncated(at))?;
                self.pos = at + len;
                let body = &block[8..len - 4];
                match btype {
                    0x0a0d_0d0a => self.ifaces.clear(),
                    1 if body.len() >= 8 => {
                        let lt = rd16(body, big) as u32;
                        let tsres = if_tsresol(&body[8..], big);
                        self.ifaces.push((lt, tsres));
                    }
                    6 if body.len() >= 20 => {
                        let iface = rd32(body, big) as usize;
                        let (lt, res) = self.ifaces.get(iface).copied().unwrap_or((1, 1_000_000));
                        let ts = ((rd32(&body[4..], big) as u64) << 32) | rd32(&body[8..], big) as u64;
                        let cap = rd32(&body[12..], big) as usize;
                        let frame = body.get(20..20 + cap).ok_or(PcapError::Truncated(at))?;
                        let ts_ns = (ts as u128 * 1_000_000_000 / res.max(1) as u128) as u64;
                        return Ok(Some((lt, ts_ns, frame)));
                    }
                    3 if body.len() >= 4 => {
                        let (lt, _) = self.ifaces.first().copied().unwrap_or((1, 1_000_000));
                        let frame = &body[4..];
                        return Ok(Some((lt, 0, frame)));
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Timestamp resolution (units per second) from an IDB's options.
fn if_tsresol(mut opts: &[u8], big: bool) -> u64 {
    while opts.len() >= 4 {
        let code = rd16(opts, big);
        let len = rd16(&opts[2..], big) as usize;
        let padded = (len + 3) & !3;
        if code == 0 {
            break;
        }
        if code == 9 && len >= 1 && opts.len() > 4 {
            let v = opts[4];
            return if v & 0x80 != 0 { 1u64 << (v & 0x7f).min(63) } else { 10u64.saturating_pow((v & 0x7f) as u32) };
        }
        if opts.len() < 4 + padded {
            break;
        }
        opts = &opts[4 + padded..];
    }
    1_000_000
}

/// Extracts (source address, source port, destination port, payload) of a UDP frame.
fn udp_of_frame<'a>(linktype: u32, frame: &'a [u8], stats: &mut ReadStats) -> Option<(Ip, u16, u16, &'a [u8])> {
    let mut c = Cursor::new(frame);
    let ethertype = match linktype {
        1 => {
            c.skip(12).ok()?;
            let mut et = c.u16().ok()?;
            while et == 0x8100 || et == 0x88a8 {
                c.skip(2).ok()?;
                et = c.u16().ok()?;
            }
            et
        }
        113 => {
            c.skip(14).ok()?;
            c.u16().ok()?
        }
        276 => {
            let et = c.u16().ok()?;
            c.skip(18).ok()?;
            et
        }
        0 | 108 => {
            let fam = c.array::<4>().ok()?;
            let f = u32::from_le_bytes(fam).min(u32::from_be_bytes(fam));
            if f == 2 {
                0x0800
            } else {
                0x86dd
            }
        }
        101 | 12 | 14 | 228 | 229 => match c.rest().first()? >> 4 {
            4 => 0x0800,
            6 => 0x86dd,
            _ => return None,
        },
        _ => return None,
    };
    let (src, l4) = match ethertype {
        0x0800 => {
            let vihl = c.u8().ok()?;
            let ihl = (vihl & 0xf) as usize * 4;
            c.skip(1).ok()?;
            let total = c.u16().ok()? as usize;
            c.skip(2).ok()?;
            let frag = c.u16().ok()?;
            c.skip(1).ok()?;
            let proto = c.u8().ok()?;
            c.skip(2).ok()?;
            let src = Ip::from_v4(c.u32().ok()?);
            c.skip(4).ok()?;
            c.skip(ihl.checked_sub(20)?).ok()?;
            if frag & 0x3fff != 0 {
                stats.fragments += 1;
                return None;
            }
            if proto != 17 {
                return None;
            }
            let payload_len = total.checked_sub(ihl)?.min(c.remaining());
            (src, c.sub(payload_len).ok()?)
        }
        0x86dd => {
            c.skip(4).ok()?;
            let plen = c.u16().ok()? as usize;
            let mut next = c.u8().ok()?;
            c.skip(1).ok()?;
            let src = Ip::from(std::net::IpAddr::from(c.array::<16>().ok()?));
            c.skip(16).ok()?;
            let mut body = c.sub(plen.min(c.remaining())).ok()?;
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 => {
                        next = body.u8().ok()?;
                        let l = (body.u8().ok()? as usize + 1) * 8;
                        body.skip(l - 2).ok()?;
                    }
                    44 => {
                        stats.fragments += 1;
                        return None;
                    }
                    _ => break,
                }
            }
            if next != 17 {
                return None;
            }
            (src, body)
        }
        _ => return None,
    };
    let mut u = l4;
    let sp = u.u16().ok()?;
    let dp = u.u16().ok()?;
    let ulen = u.u16().ok()? as usize;
    u.skip(2).ok()?;
    let n = ulen.checked_sub(8)?.min(u.remaining());
    Some((src, sp, dp, u.bytes(n).ok()?))
}
