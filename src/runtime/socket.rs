//! UDP sockets for shards: built with socket2 (`SO_REUSEPORT`, a large `SO_RCVBUF`,
//! non-blocking), drained in batches with `recvmmsg`, and watched for kernel drops with
//! `SO_MEMINFO`.
//!
//! Lives on: shard cores.

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;

/// Largest datagram a slot holds; longer datagrams are truncated by the kernel and counted.
pub const MAX_DATAGRAM: usize = 9216;

/// Binds one `SO_REUSEPORT` UDP socket with the requested receive buffer. Returns the socket
/// and the receive buffer the kernel actually granted (it caps at `net.core.rmem_max`).
pub fn bind_reuseport(addr: SocketAddr, rcvbuf: usize) -> io::Result<(Socket, usize)> {
    let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s = Socket::new(domain, Type::DGRAM, Some(SockProto::UDP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // "[::]" takes IPv4 too, like most daemons.
        let _ = s.set_only_v6(false);
    }
    // Try the privileged variant first (ignores rmem_max when we have CAP_NET_ADMIN).
    let _ = set_rcvbuf_force(&s, rcvbuf);
    if s.recv_buffer_size().unwrap_or(0) < rcvbuf {
        s.set_recv_buffer_size(rcvbuf)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    // Linux reports twice the value set (bookkeeping overhead).
    let granted = s.recv_buffer_size().unwrap_or(0) / 2;
    Ok((s, granted))
}

fn set_rcvbuf_force(s: &Socket, size: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v: libc::c_int = size.min(i32::MAX as usize) as libc::c_int;
    // SAFETY: valid fd, pointer to a c_int that lives for the call, correct length.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

const SO_MEMINFO: libc::c_int = 55;
const SK_MEMINFO_DROPS: usize = 8;

/// Datagrams the kernel dropped on this socket (receive buffer full), from `SO_MEMINFO`.
pub fn kernel_drops(fd: RawFd) -> Option<u64> {
    let mut info = [0u32; 16];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes for the duration of the call.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, SO_MEMINFO, info.as_mut_ptr().cast(), &mut len) };
    if rc == 0 && len as usize > SK_MEMINFO_DROPS * 4 {
        Some(info[SK_MEMINFO_DROPS] as u64)
    } else {
        None
    }
}

/// Pre-allocated buffers for one `recvmmsg` call of up to `batch` datagrams.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    hdrs: Box<[libc::mmsghdr]>,
    got: usize,
}

impl RecvBatch {
    /// Buffers for `batch` datagrams of up to [`MAX_DATAGRAM`] bytes.
    pub fn new(batch: usize) -> RecvBatch {
        let batch = batch.max(1);
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        RecvBatch {
            bufs: vec![0u8; batch * MAX_DATAGRAM].into_boxed_slice(),
            iovs: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; batch].into_boxed_slice(),
            addrs: vec![zero_addr; batch].into_boxed_slice(),
            hdrs: vec![zero_hdr; batch].into_boxed_slice(),
            got: 0,
        }
    }

    /// Receives up to a batch without blocking; `Ok(0)` when nothing is queued.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.hdrs.len();
        let base = self.bufs.as_mut_ptr();
        for i in 0..n {
            // SAFETY: i * MAX_DATAGRAM < bufs.len(); the boxes are never resized, so the
            // pointers stay valid for the recvmmsg call below.
            self.iovs[i] =
                libc::iovec { iov_base: unsafe { base.add(i * MAX_DATAGRAM) }.cast(), iov_len: MAX_DATAGRAM };
            let h = &mut self.hdrs[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs holds n initialised headers pointing into live buffers.
        let rc = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.got = 0;
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        self.got = rc as usize;
        Ok(self.got)
    }

    /// Datagram `i` of the last call: payload, source, and whether the kernel truncated it.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        let h = &self.hdrs[i];
        let len = (h.msg_len as usize).min(MAX_DATAGRAM);
        let data = &self.bufs[i * MAX_DATAGRAM..i * MAX_DATAGRAM + len];
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (data, sockaddr_to_std(&self.addrs[i]), truncated)
    }
}

/// Converts a C socket address.
pub fn sockaddr_to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match a.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let s: &libc::sockaddr_in = unsafe { &*(a as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr))), u16::from_be(s.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let s: &libc::sockaddr_in6 = unsafe { &*(a as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)), u16::from_be(s.sin6_port)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_receive_on_loopback() {
        let (s, granted) = bind_reuseport("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(granted > 0);
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            tx.send_to(&[i; 100], addr).unwrap();
        }
        #[allow(clippy::disallowed_methods)] // test thread
        std::thread::sleep(std::time::Duration::from_millis(50));
        use std::os::fd::AsRawFd;
        let mut b = RecvBatch::new(64);
        let n = b.recv(s.as_raw_fd()).unwrap();
        assert_eq!(n, 10);
        let (d, from, trunc) = b.get(3);
        assert_eq!((d.len(), d[0], trunc), (100, 3, false));
        assert_eq!(from, Some(tx.local_addr().unwrap()));
        assert_eq!(b.recv(s.as_raw_fd()).unwrap(), 0);
        assert_eq!(kernel_drops(s.as_raw_fd()), Some(0));
    }
}
