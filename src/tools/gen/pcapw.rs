//! Writes generated datagrams as a classic pcap (Ethernet/IPv4/UDP, exporter → 127.0.0.1:2055)
//! with simulated timestamps, so `flowshard replay` and the tests can use them.
//!
//! Lives on: the generator's thread.

use std::io::{self, Write};

/// A pcap writer over any `Write`.
pub struct PcapWriter<W: Write> {
    w: W,
    ip_id: u16,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (microsecond timestamps, Ethernet).
    pub fn new(mut w: W) -> io::Result<PcapWriter<W>> {
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&[0; 8])?;
        w.write_all(&65_535u32.to_le_bytes())?;
        w.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { w, ip_id: 0 })
    }

    /// Writes one UDP datagram from `src` (IPv4, host order) at `ts_us` (Unix microseconds).
    pub fn udp(
        &mut self,
        ts_us: u64,
        src: u32,
        src_port: u16,
        dst: u32,
        dst_port: u16,
        payload: &[u8],
    ) -> io::Result<()> {
        let ip_len = 20 + 8 + payload.len();
        let frame_len = 14 + ip_len;
        self.w.write_all(&((ts_us / 1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&(frame_len as u32).to_le_bytes())?;
        self.w.write_all(&(frame_len as u32).to_le_bytes())?;
        self.w.write_all(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x08, 0x00])?;
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&self.ip_id.to_be_bytes());
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.to_be_bytes());
        ip[16..20].copy_from_slice(&dst.to_be_bytes());
        let mut sum = 0u32;
        for c in ip.chunks(2) {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        self.w.write_all(&ip)?;
        self.w.write_all(&src_port.to_be_bytes())?;
        self.w.write_all(&dst_port.to_be_bytes())?;
        self.w.write_all(&((8 + payload.len()) as u16).to_be_bytes())?;
        self.w.write_all(&[0, 0])?;
        self.w.write_all(payload)
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.w.flush()?;
        Ok(self.w)
    }
}
