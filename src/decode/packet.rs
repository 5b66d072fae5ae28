//! Parses the raw packet header an sFlow flow sample carries: Ethernet, up to two 802.1Q/802.1ad
//! tags, IPv4 or IPv6 (with extension headers), then TCP, UDP or ICMP. A header cut short by the
//! sampler's snap length yields what could be read; it is not an error.
//!
//! Lives on: shard cores.

use super::cursor::{Cursor, Truncated};
use crate::model::{FlowRecord, Ip};

/// Header protocol values of sFlow's `sampled_header` (ethernet-iso88023 = 1, ipv4 = 11, ipv6 = 12).
pub const HEADER_ETHERNET: u32 = 1;
/// Raw IPv4.
pub const HEADER_IPV4: u32 = 11;
/// Raw IPv6.
pub const HEADER_IPV6: u32 = 12;

/// Fills address, port, protocol, flag and ToS fields of `r` from a sampled header. Returns
/// `false` when the header is not IP (e.g. ARP) or the protocol is unknown.
pub fn parse_header(proto: u32, header: &[u8], r: &mut FlowRecord) -> bool {
    let mut c = Cursor::new(header);
    let res = match proto {
        HEADER_ETHERNET => ethernet(&mut c, r),
        HEADER_IPV4 => ipv4(&mut c, r),
        HEADER_IPV6 => ipv6(&mut c, r),
        _ => return false,
    };
    // Truncated by the snap length after the addresses is still a usable record.
    res.unwrap_or(r.src != Ip::UNSPECIFIED)
}

fn ethernet(c: &mut Cursor<'_>, r: &mut FlowRecord) -> Result<bool, Truncated> {
    c.skip(12)?;
    let mut ethertype = c.u16()?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            c.skip(2)?; // TCI
            ethertype = c.u16()?;
        }
    }
    match ethertype {
        0x0800 => ipv4(c, r),
        0x86dd => ipv6(c, r),
        _ => Ok(false),
    }
}

fn ipv4(c: &mut Cursor<'_>, r: &mut FlowRecord) -> Result<bool, Truncated> {
    let vihl = c.u8()?;
    if vihl >> 4 != 4 {
        return Ok(false);
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Ok(false);
    }
    r.tos = c.u8()?;
    c.skip(2)?; // total length
    c.skip(2)?; // id
    let frag = c.u16()?;
    c.skip(1)?; // ttl
    r.proto = c.u8()?;
    c.skip(2)?; // checksum
    r.src = Ip::from_v4(c.u32()?);
    r.dst = Ip::from_v4(c.u32()?);
    c.skip(ihl - 20)?;
    if frag & 0x1fff != 0 {
        return Ok(true); // non-first fragment: no transport header
    }
    transport(c, r)
}

fn ipv6(c: &mut Cursor<'_>, r: &mut FlowRecord) -> Result<bool, Truncated> {
    let first = c.u32()?;
    if first >> 28 != 6 {
        return Ok(false);
    }
    r.tos = (first >> 20) as u8;
    c.skip(2)?; // payload length
    let mut next = c.u8()?;
    c.skip(1)?; // hop limit
    r.src = Ip::from_v6(c.array()?);
    r.dst = Ip::from_v6(c.array()?);
    // Extension headers: hop-by-hop, routing, destination options; fragment ends parsing
    // unless it is the first fragment.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                next = c.u8()?;
                let len = (c.u8()? as usize + 1) * 8;
                c.skip(len - 2)?;
            }
            44 => {
                next = c.u8()?;
                c.skip(1)?;
                let off = c.u16()?;
                c.skip(4)?;
                if off >> 3 != 0 {
                    r.proto = next;
                    return Ok(true);
                }
            }
            _ => break,
        }
    }
    r.proto = next;
    transport(c, r)
}

fn transport(c: &mut Cursor<'_>, r: &mut FlowRecord) -> Result<bool, Truncated> {
    match r.proto {
        6 => {
            r.src_port = c.u16()?;
            r.dst_port = c.u16()?;
            c.skip(9)?; // seq, ack, data offset
            r.tcp_flags = c.u8()?;
        }
        17 | 132 => {
            r.src_port = c.u16()?;
            r.dst_port = c.u16()?;
        }
        1 | 58 => {
            // ICMP type/code in the destination port, as NetFlow exporters do.
            let t = c.u8()?;
            let code = c.u8()?;
            r.dst_port = (t as u16) << 8 | code as u16;
        }
        _ => {}
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth_ipv4_tcp(vlan: bool) -> Vec<u8> {
        let mut p = vec![0u8; 12];
        if vlan {
            p.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        p.extend_from_slice(&[0x08, 0x00]);
        p.extend_from_slice(&[0x45, 0x10, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 9]);
        p.extend_from_slice(&[0x30, 0x39, 0x01, 0xbb, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0]);
        p
    }

    #[test]
    fn ethernet_vlan_ipv4_tcp() {
        for vlan in [false, true] {
            let mut r = FlowRecord::default();
            assert!(parse_header(HEADER_ETHERNET, &eth_ipv4_tcp(vlan), &mut r));
            assert_eq!(r.src.to_string(), "10.0.0.1");
            assert_eq!(r.dst.to_string(), "192.0.2.9");
            assert_eq!((r.src_port, r.dst_port, r.proto, r.tcp_flags, r.tos), (12345, 443, 6, 2, 0x10));
        }
    }

    #[test]
    fn truncated_headers_never_panic() {
        let p = eth_ipv4_tcp(true);
        for n in 0..p.len() {
            let mut r = FlowRecord::default();
            let _ = parse_header(HEADER_ETHERNET, &p[..n], &mut r);
        }
    }

    #[test]
    fn ipv6_udp_with_hop_by_hop() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop, next = UDP
        p.extend_from_slice(&[0, 53, 0x13, 0x88, 0, 8, 0, 0]);
        let mut r = FlowRecord::default();
        assert!(parse_header(HEADER_IPV6, &p, &mut r));
        assert_eq!(r.dst.to_string(), "2001:db8::2");
        assert_eq!((r.proto, r.src_port, r.dst_port), (17, 53, 5000));
    }
}
