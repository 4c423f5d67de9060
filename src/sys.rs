//! The few raw system calls mixccl makes, each wrapped once: `syscall!` turns
//! `libc::f(..) < 0` into `io::Error::last_os_error()`, as mio does. All `unsafe`
//! for sockets, poll and eventfd lives here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Calls a libc function and maps a negative return to the thread's last OS error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: the caller passes valid descriptors and buffers that outlive the call;
        // each use site below states why its arguments are valid.
        let res = unsafe { libc::$fn($($arg),*) };
        if res < 0 { Err(io::Error::last_os_error()) } else { Ok(res) }
    }};
}

/// Waits until one of `fds` is ready or `timeout` passes; retries on EINTR.
/// Returns the number of ready descriptors (0 on timeout).
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // Round sub-millisecond waits up so a short wait does not turn into a busy loop.
    let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
    loop {
        // `fds` is a valid, exclusively borrowed slice of pollfd for the whole call.
        match syscall!(poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms)) {
            Ok(n) => return Ok(n as usize),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A pollfd asking for `events` on `fd`.
pub(crate) fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Non-blocking send that never raises SIGPIPE (a C host process may not ignore it).
/// Returns `Ok(0)` when the socket buffer is full.
pub(crate) fn send_nosignal(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    // `buf` is a valid readable slice for its length.
    match syscall!(send(
        fd,
        buf.as_ptr().cast(),
        buf.len(),
        libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT
    )) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// Non-blocking receive. `Ok(None)` means nothing is available yet; `Ok(Some(0))` is EOF.
pub(crate) fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // `buf` is a valid writable slice for its length.
    match syscall!(recv(
        fd,
        buf.as_mut_ptr().cast(),
        buf.len(),
        libc::MSG_DONTWAIT
    )) {
        Ok(n) => Ok(Some(n as usize)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: &impl AsRawFd,
    level: i32,
    name: i32,
    value: i32,
) -> io::Result<()> {
    // `value` lives on the stack for the duration of the call and its size is passed.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        level,
        name,
        (&value as *const i32).cast(),
        std::mem::size_of::<i32>() as libc::socklen_t
    ))
    .map(|_| ())
}

/// A non-blocking eventfd used as a doorbell: `ring` adds one, `drain` resets it.
#[derive(Debug)]
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub(crate) fn new() -> io::Result<EventFd> {
        let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
        // SAFETY: eventfd returned a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wakes whoever polls this descriptor.
    pub(crate) fn ring(&self) {
        let one: u64 = 1;
        // A full counter (EAGAIN) already means "readable", so a failed write loses nothing.
        let _ = syscall!(write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8));
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// One address of a network interface.
#[derive(Debug, Clone)]
pub(crate) struct InterfaceAddr {
    /// Interface name (`eth0`, `lo`, ...).
    pub name: String,
    /// The address.
    pub ip: std::net::IpAddr,
    /// IFF_UP is set.
    pub up: bool,
    /// IFF_LOOPBACK is set.
    pub loopback: bool,
}

/// Lists the IPv4 and IPv6 addresses of all interfaces (getifaddrs).
pub(crate) fn interfaces() -> io::Result<Vec<InterfaceAddr>> {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // `head` is a valid out-pointer; the list is freed below.
    syscall!(getifaddrs(&mut head))?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` walks the list getifaddrs returned, which stays valid until
        // freeifaddrs; each sockaddr is read according to its sa_family.
        unsafe {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            let ip = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))
                }
                _ => continue,
            };
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            out.push(InterfaceAddr {
                name,
                ip,
                up: ifa.ifa_flags & libc::IFF_UP as u32 != 0,
                loopback: ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0,
            });
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// Resets an eventfd's counter given only its descriptor (the executor's view of a doorbell).
pub(crate) fn drain_eventfd(fd: RawFd) {
    let mut v: u64 = 0;
    // `v` is a valid 8-byte buffer; the fd is non-blocking, so this never waits.
    let _ = syscall!(read(fd, (&mut v as *mut u64).cast(), 8));
}
