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

/// Non-blocking send of the concatenation of `bufs` in one `sendmsg` (at most
/// [`MAX_GATHER`] pieces are used); as `send_nosignal`, `Ok(0)` means "not now".
pub(crate) fn send_gather(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_GATHER];
    let mut n = 0;
    for b in bufs.iter().filter(|b| !b.is_empty()).take(MAX_GATHER) {
        iov[n] = libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        n += 1;
    }
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: a zeroed msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = n as _;
    // The first `n` iovecs point at readable slices that outlive the call; the kernel
    // only reads through them.
    match syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// The most pieces one gathered send takes.
pub(crate) const MAX_GATHER: usize = 8;

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

/// Connections a listener queues before it accepts them: `listen` again with the
/// kernel's cap (`net.core.somaxconn`, 4096 by default), where the standard library
/// asks for 128. A thousand ranks dialling one bootstrap root at once overflow 128,
/// and each refused SYN is retried after 1, 3, 7 s.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Raises the accept queue of a listening socket to [`LISTEN_BACKLOG`] (the kernel
/// caps it at `net.core.somaxconn`).
pub(crate) fn widen_backlog(listener: &impl AsRawFd) -> io::Result<()> {
    // A second listen on a listening socket only changes its backlog (listen(2)).
    syscall!(listen(listener.as_raw_fd(), LISTEN_BACKLOG)).map(|_| ())
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

/// Sets the congestion control algorithm of a TCP socket (TCP_CONGESTION) by name.
pub(crate) fn set_congestion(fd: &impl AsRawFd, name: &str) -> io::Result<()> {
    // `name` lives for the duration of the call and its length is passed.
    syscall!(setsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_CONGESTION,
        name.as_ptr().cast(),
        name.len() as libc::socklen_t
    ))
    .map(|_| ())
}

/// The kernel's smoothed round-trip time of a connected TCP socket (TCP_INFO), set
/// from the connection's handshake before any data moves.
pub(crate) fn tcp_rtt(fd: &impl AsRawFd) -> io::Result<std::time::Duration> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // `info` and `len` are valid out-pointers sized by `len` for the call.
    syscall!(getsockopt(
        fd.as_raw_fd(),
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        (&mut info as *mut libc::tcp_info).cast(),
        &mut len
    ))?;
    Ok(std::time::Duration::from_micros(u64::from(info.tcpi_rtt)))
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

    /// Wraps an eventfd received from another process.
    pub(crate) fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd(fd)
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

/// Sends `data` with the descriptors `fds` attached (SCM_RIGHTS) on a Unix socket.
pub(crate) fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call,
    // and the control buffer is large enough for one cmsg of `fd_bytes` (CMSG_SPACE).
    let msg = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
        std::ptr::copy_nonoverlapping(
            fds.as_ptr(),
            libc::CMSG_DATA(cmsg).cast::<RawFd>(),
            fds.len(),
        );
        msg
    };
    let n = syscall!(sendmsg(sock, &msg, libc::MSG_NOSIGNAL))?;
    if (n as usize) != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"));
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and up to `max_fds` descriptors (SCM_RIGHTS).
/// Returns the byte count and the descriptors, owned.
pub(crate) fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let fd_bytes = max_fds * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: as in send_with_fds; the kernel writes at most `space` control bytes, and
    // each received descriptor is fresh and owned by this process from here on.
    // SAFETY: msghdr is plain data; the pointers set here outlive the recvmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = syscall!(recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC))? as usize;
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for k in 0..payload / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(k))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Ok((n, fds))
    }
}

/// An anonymous shared memory file (memfd) of `len` bytes: never has a name in
/// /dev/shm, so nothing is left behind whatever happens to the process.
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname =
        std::ffi::CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // `cname` is a valid NUL-terminated string for the call.
    let fd = syscall!(memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC))?;
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    syscall!(ftruncate(fd.as_raw_fd(), len as libc::off_t))?;
    Ok(fd)
}

/// A shared, read-write mapping of a whole file; unmapped on drop.
#[derive(Debug)]
pub(crate) struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through atomics or the
// single-producer/single-consumer protocol of transport::shm.
unsafe impl Send for SharedMap {}

impl SharedMap {
    /// Maps `len` bytes of `fd` shared.
    pub(crate) fn new(fd: &OwnedFd, len: usize) -> io::Result<SharedMap> {
        // Populate now: first-touch faults on ring pages would otherwise cost
        // microseconds per page inside collectives.
        SharedMap::map(fd, len, libc::MAP_SHARED | libc::MAP_POPULATE)
    }

    /// Maps `len` bytes of `fd` shared without populating them: each page is faulted
    /// in on first touch. For a region most of which a rank may never touch (the
    /// host's board: every rank's ring, mapped by every rank).
    pub(crate) fn on_demand(fd: &OwnedFd, len: usize) -> io::Result<SharedMap> {
        SharedMap::map(fd, len, libc::MAP_SHARED)
    }

    /// Maps `len` bytes of `fd` read-write with mmap `flags` (MAP_SHARED and more).
    fn map(fd: &OwnedFd, len: usize, flags: libc::c_int) -> io::Result<SharedMap> {
        // SAFETY: a fresh mapping of a file we own; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; nothing uses them afterwards.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Copies `dst.len()` bytes from address `addr` of process `pid` into `dst`
/// (cross-memory attach, process_vm_readv): one copy, no intermediate buffer.
pub(crate) fn read_process(pid: i32, addr: u64, dst: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < dst.len() {
        let local = libc::iovec {
            iov_base: dst[done..].as_mut_ptr().cast(),
            iov_len: dst.len() - done,
        };
        let remote = libc::iovec {
            iov_base: (addr as usize + done) as *mut libc::c_void,
            iov_len: dst.len() - done,
        };
        // `local` covers writable memory we own; the kernel checks `remote` against
        // the other process's address space and fails (EFAULT/EPERM) rather than fault.
        let n = syscall!(process_vm_readv(pid, &local, 1, &remote, 1, 0))? as usize;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        done += n;
    }
    Ok(())
}

/// The process id at the other end of a Unix socket (SO_PEERCRED).
pub(crate) fn peer_pid(fd: RawFd) -> io::Result<i32> {
    // SAFETY: ucred is plain data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // `cred` and `len` are valid out-parameters of the sizes given.
    syscall!(getsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PEERCRED,
        (&mut cred as *mut libc::ucred).cast(),
        &mut len
    ))?;
    Ok(cred.pid)
}

/// Can this process read `[addr, addr + len)`? Checked on the first and last byte
/// with process_vm_readv on itself, which fails with EFAULT instead of faulting on
/// unmapped or PROT_NONE memory.
pub(crate) fn readable(addr: usize, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut byte = [0u8; 1];
    [addr, addr + (len - 1)]
        .iter()
        .all(|a| read_process(pid, *a as u64, &mut byte).is_ok())
}

/// Sleeps while the shared word `word` still holds `expected`, at most `timeout`
/// (FUTEX_WAIT, not private: the word lives in memory shared between processes).
/// Returns on a wake-up, a changed word, the timeout or a signal alike; callers
/// re-check what they wait for.
pub(crate) fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `word` is a live, aligned u32 for the whole call and `ts` outlives it;
    // FUTEX_WAIT only reads the word. Errors (EAGAIN: the word changed, ETIMEDOUT,
    // EINTR) all mean "look again", so the result is ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes every process sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a live, aligned u32; FUTEX_WAKE does not access memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// The (soft, hard) RLIMIT_NOFILE of this process.
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // `lim` is a valid, exclusively borrowed rlimit for the call.
    syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut lim))?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft RLIMIT_NOFILE to `soft` (at most the hard limit).
pub(crate) fn raise_nofile(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // `lim` is a valid rlimit that outlives the call.
    syscall!(setrlimit(libc::RLIMIT_NOFILE, &lim))?;
    Ok(())
}

/// How many descriptors this process has open (entries of /proc/self/fd), if known.
pub(crate) fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::time::Instant;

    #[test]
    fn a_widened_listener_queues_hundreds_of_connections_before_accepting() {
        let cap: i32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cap < 400 {
            eprintln!("skipped: net.core.somaxconn is {cap}");
            return;
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        widen_backlog(&listener).expect("listen again");
        let addr = listener.local_addr().unwrap();
        // The standard library's 128 would drop SYNs past about 129 unaccepted
        // connections, and the kernel retries those only after a second.
        let start = Instant::now();
        let conns: Vec<TcpStream> = (0..300)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"))
            })
            .collect();
        assert_eq!(conns.len(), 300);
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "300 connections took {:?}: some waited for a SYN retry",
            start.elapsed()
        );
    }
}
