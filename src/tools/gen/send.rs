//! Sends generated datagrams over UDP with `sendmmsg`, one socket per simulated exporter bound
//! to its own loopback address (127.0.0.2, 127.0.0.3, …), paced to a target record rate.
//!
//! Lives on: the generator's thread (may block; never a flowshard shard).

use super::wire::Datagram;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams per `sendmmsg` call.
pub const BATCH: usize = 64;

/// What a send run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct SendStats {
    /// Datagrams sent.
    pub datagrams: u64,
    /// Records in them.
    pub records: u64,
    /// Octets the records account for.
    pub octets: u64,
    /// Send errors (e.g. ENOBUFS), datagrams not sent.
    pub errors: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// The UDP payloads of a capture as a send pool (`gen --capture`: a real exporter's stream
/// looped at a steady rate), each with the data records and octets flowshard's decoder finds in
/// it; decoded in capture order, so templates are known before the data that needs them, and
/// template and options records count 0 (a collector's data-record counter is compared with it).
pub fn capture_pool(data: &[u8]) -> Result<Vec<Datagram>, crate::tools::replay::pcap::PcapError> {
    use crate::decode::{Decoder, DecoderConfig};
    let mut rd = crate::tools::replay::pcap::PcapReader::new(data)?;
    let mut dec = Decoder::new(&DecoderConfig::default());
    let mut out = Vec::new();
    while let Some(p) = rd.next_udp()? {
        let (mut records, mut octets) = (0u32, 0u64);
        let mut count = |r: &crate::model::FlowRecord| {
            records += 1;
            octets += r.bytes;
        };
        // a datagram that does not decode is still sent (a collector sees the same stream)
        let _ = dec.decode(p.payload, p.src, 0, &mut count);
        out.push(Datagram { exporter: 0, records, octets, bytes: p.payload.to_vec() });
    }
    Ok(out)
}

/// One socket per exporter.
pub struct Sender {
    socks: Vec<UdpSocket>,
    to: SocketAddr,
}

impl Sender {
    /// Binds one UDP socket per exporter on 127.0.0.(2+e) (or `0.0.0.0` for non-loopback
    /// targets).
    pub fn new(exporters: u32, to: SocketAddr) -> io::Result<Sender> {
        let socks = (0..exporters.max(1))
            .map(|e| {
                let ip = if to.ip().is_loopback() && to.is_ipv4() {
                    std::net::IpAddr::from(std::net::Ipv4Addr::from(0x7f00_0002 + e))
                } else if to.is_ipv4() {
                    std::net::IpAddr::from([0, 0, 0, 0])
                } else {
                    std::net::IpAddr::from([0u16; 8])
                };
                // A fixed source port per exporter, like a real router: collectors that scope
                // templates by address and port keep them across generator runs. Falls back to
                // an ephemeral port when taken (e.g. two generators at once).
                let s = UdpSocket::bind((ip, 9995)).or_else(|_| UdpSocket::bind((ip, 0)))?;
                let _ = socket2::SockRef::from(&s).set_send_buffer_size(4 << 20);
                Ok(s)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Sender { socks, to })
    }

    /// Sends `dgrams` (in order, batched per exporter), pacing to `records_per_s` (0 = as
    /// fast as possible) measured from `start` (counting what `stats` already holds), and
    /// stopping at `deadline` after `start` if given.
    pub fn send(
        &self,
        dgrams: &[Datagram],
        records_per_s: u64,
        start: Instant,
        deadline: Option<Duration>,
        stats: &mut SendStats,
    ) {
        let addr = socket2::SockAddr::from(self.to);
        let mut i = 0;
        while i < dgrams.len() {
            if deadline.is_some_and(|d| start.elapsed() >= d) {
                break;
            }
            // a run of datagrams of the same exporter, up to BATCH
            let e = dgrams[i].exporter as usize % self.socks.len();
            let mut j = i;
            while j < dgrams.len() && j - i < BATCH && dgrams[j].exporter as usize % self.socks.len() == e {
                j += 1;
            }
            if records_per_s > 0 {
                let due = Duration::from_secs_f64(stats.records as f64 / records_per_s as f64);
                let el = start.elapsed();
                if due > el {
                    #[allow(clippy::disallowed_methods)] // the generator's own thread
                    std::thread::sleep(due - el);
                }
            }
            let sent = sendmmsg(&self.socks[e], &addr, &dgrams[i..j]);
            for d in &dgrams[i..i + sent] {
                stats.datagrams += 1;
                stats.records += d.records as u64;
                stats.octets += d.octets;
            }
            if sent < j - i {
                stats.errors += (j - i - sent) as u64;
            }
            i = j;
        }
        stats.seconds = start.elapsed().as_secs_f64();
    }
}

fn sendmmsg(sock: &UdpSocket, addr: &socket2::SockAddr, dgrams: &[Datagram]) -> usize {
    let n = dgrams.len();
    let mut iovs: Vec<libc::iovec> = dgrams
        .iter()
        .map(|d| libc::iovec { iov_base: d.bytes.as_ptr() as *mut libc::c_void, iov_len: d.bytes.len() })
        .collect();
    // SAFETY: zeroed mmsghdr is valid; every pointer set below outlives the call.
    let mut hdrs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in hdrs.iter_mut().zip(iovs.iter_mut()) {
        h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        h.msg_hdr.msg_namelen = addr.len();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    let mut tries = 0;
    while done < n && tries < 1000 {
        // SAFETY: hdrs[done..] are initialised and point at live buffers.
        let rc = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs[done..].as_mut_ptr(), (n - done) as u32, 0) };
        if rc <= 0 {
            tries += 1;
            std::hint::spin_loop();
            continue;
        }
        done += rc as usize;
    }
    done
}

/// Live mode: generates second after second from `start` and sends each second's datagrams
/// paced over that second, for `seconds` or until `stop` is set.
pub fn run_live(
    model: &mut super::Model,
    exp: &mut super::wire::Exporters,
    sender: &Sender,
    start: u64,
    seconds: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> SendStats {
    let mut stats = SendStats::default();
    let t0 = Instant::now();
    let mut recs = Vec::new();
    let mut dgrams = Vec::new();
    for t in start..start.saturating_add(seconds) {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        recs.clear();
        dgrams.clear();
        model.second(t, &mut recs);
        exp.encode_second(t, &recs, &mut dgrams);
        let n: u64 = dgrams.iter().map(|d| d.records as u64).sum();
        let sec_start = Instant::now();
        let mut s = SendStats::default();
        sender.send(&dgrams, n.max(1), sec_start, None, &mut s);
        stats.datagrams += s.datagrams;
        stats.records += s.records;
        stats.octets += s.octets;
        stats.errors += s.errors;
        let el = sec_start.elapsed();
        if el < Duration::from_secs(1) {
            #[allow(clippy::disallowed_methods)] // the generator's own thread
            std::thread::sleep(Duration::from_secs(1) - el);
        }
    }
    stats.seconds = t0.elapsed().as_secs_f64();
    stats
}
