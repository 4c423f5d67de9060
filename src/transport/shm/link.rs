//! The shared-memory link: two single-producer, single-consumer byte rings in one
//! mapping, two eventfd doorbells, and the Unix socket kept as liveness channel.

use crate::error::{Error, Result};
use crate::header::{ControlFrames, ControlReader, GOODBYE};
use crate::sys::{self, EventFd, SharedMap};
use crate::transport::{Direction, Link, LinkClass, WaitHandle};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of a ring's control words ([`RingHeader`]), before its data.
pub(super) const HEADER: usize = 128;
/// How often an idle side checks that its peer process is still there.
pub(super) const LIVENESS_EVERY: Duration = Duration::from_millis(2);

/// The control words at the start of each ring, one cache line each side.
#[repr(C, align(64))]
struct RingHeader {
    /// Bytes consumed so far (written by the consumer).
    head: AtomicU64,
    /// Set when either side drops its end.
    closed: AtomicU32,
    _pad: [u8; 52],
    /// Bytes produced so far (written by the producer).
    tail: AtomicU64,
    _pad2: [u8; 56],
}

const _: () = assert!(std::mem::size_of::<RingHeader>() == HEADER);

/// One direction: header plus `cap` data bytes inside the shared mapping.
struct Ring {
    hdr: *const RingHeader,
    data: *mut u8,
    cap: usize,
}

impl Ring {
    /// # Safety
    /// `base` must point at `HEADER + cap` bytes of a live shared mapping, 64-aligned.
    unsafe fn at(base: *mut u8, cap: usize) -> Ring {
        Ring {
            hdr: base as *const RingHeader,
            data: base.add(HEADER),
            cap,
        }
    }

    fn hdr(&self) -> &RingHeader {
        // SAFETY: `hdr` points into the mapping the link owns for its whole life.
        unsafe { &*self.hdr }
    }

    /// Copies `len` bytes between the ring at stream position `pos` and `buf`.
    fn copy(&self, pos: u64, buf: *mut u8, len: usize, into_ring: bool) {
        let at = (pos % self.cap as u64) as usize;
        let first = len.min(self.cap - at);
        // SAFETY: [at, at+first) and [0, len-first) lie inside the ring's data area; the
        // SPSC protocol guarantees the other side does not touch these bytes now.
        unsafe {
            if into_ring {
                std::ptr::copy_nonoverlapping(buf, self.data.add(at), first);
                std::ptr::copy_nonoverlapping(buf.add(first), self.data, len - first);
            } else {
                std::ptr::copy_nonoverlapping(self.data.add(at), buf, first);
                std::ptr::copy_nonoverlapping(self.data, buf.add(first), len - first);
            }
        }
    }
}

/// A link to a peer on the same host through shared memory.
pub struct ShmLink {
    pub(super) peer: usize,
    tx: Ring,
    rx: Ring,
    my_bell: EventFd,
    peer_bell: EventFd,
    pub(super) alive: UnixStream,
    /// Control messages arriving on `alive`, the end of it, and whether the peer
    /// said goodbye before closing.
    ctl: ControlReader,
    last_check: Instant,
    pub(super) zero_copy: bool,
    /// The peer's process id (SO_PEERCRED), for cross-memory reads.
    pub(super) peer_pid: Option<i32>,
    // Keeps the rings mapped; declared last so it is dropped after them.
    _map: SharedMap,
}

// SAFETY: the raw pointers refer into `_map`, which the link owns and moves with it.
unsafe impl Send for ShmLink {}

impl ShmLink {
    pub(super) fn new(
        peer: usize,
        map: SharedMap,
        cap: usize,
        lower: bool,
        my_bell: EventFd,
        peer_bell: EventFd,
        alive: UnixStream,
    ) -> ShmLink {
        // SAFETY: the mapping holds two rings of HEADER + cap bytes each; cap is a
        // multiple of 64, so both headers are 64-aligned (mmap is page-aligned).
        let (a, b) = unsafe {
            (
                Ring::at(map.ptr(), cap),
                Ring::at(map.ptr().add(HEADER + cap), cap),
            )
        };
        let (tx, rx) = if lower { (a, b) } else { (b, a) };
        ShmLink {
            peer,
            tx,
            rx,
            my_bell,
            peer_bell,
            alive,
            ctl: ControlReader::default(),
            last_check: Instant::now(),
            zero_copy: true,
            peer_pid: None,
            _map: map,
        }
    }

    fn lost(&self, why: &str) -> Error {
        Error::PeerLost {
            rank: self.peer,
            reason: format!("shared-memory peer {why}"),
        }
    }

    /// Errors if the peer has closed its end or its process is gone (rate-limited).
    fn check_alive(&mut self, ring_closed: bool) -> Result<()> {
        if ring_closed {
            return Err(self.lost("closed its link"));
        }
        if self.last_check.elapsed() < LIVENESS_EVERY {
            return Ok(());
        }
        self.last_check = Instant::now();
        self.pump()?;
        if self.ctl.ended() {
            return Err(self.lost("process exited (liveness socket closed)"));
        }
        Ok(())
    }

    /// `check_alive` for a receive that found the ring empty. A peer that wrote its
    /// last bytes and then exited is not lost until those bytes are read: its stores to
    /// the ring come before its socket closes, so the ring is looked at again after the
    /// end was seen.
    pub(super) fn check_rx_alive(&mut self) -> Result<()> {
        let closed = self.rx.hdr().closed.load(Ordering::Acquire) != 0;
        match self.check_alive(closed) {
            Err(_) if self.rx_pending() => Ok(()),
            r => r,
        }
    }

    /// Are there published bytes in the receive ring not read yet?
    fn rx_pending(&self) -> bool {
        let h = self.rx.hdr();
        h.tail.load(Ordering::Acquire) != h.head.load(Ordering::Relaxed)
    }

    /// Reads what has arrived on the liveness socket: control messages or its end.
    fn pump(&mut self) -> Result<()> {
        let fd = self.alive.as_raw_fd();
        self.ctl
            .pump(fd)
            .map_err(|e| self.lost(&format!("liveness socket failed: {e}")))
    }
}

impl Link for ShmLink {
    fn peer(&self) -> usize {
        self.peer
    }

    fn lanes(&self) -> usize {
        1
    }

    fn send_some(&mut self, lane: usize, buf: &[u8]) -> Result<usize> {
        self.send_gather(lane, &[buf])
    }

    fn send_gather(&mut self, _lane: usize, bufs: &[&[u8]]) -> Result<usize> {
        let h = self.tx.hdr();
        let tail = h.tail.load(Ordering::Relaxed);
        let head = h.head.load(Ordering::Acquire);
        let mut free = self.tx.cap - (tail - head) as usize;
        if free == 0 || bufs.iter().all(|b| b.is_empty()) {
            if free == 0 {
                let closed = h.closed.load(Ordering::Acquire) != 0;
                self.check_alive(closed)?;
            }
            return Ok(0);
        }
        // Copy as many pieces as fit, then publish them with one store (and at most
        // one doorbell).
        let mut n = 0usize;
        for b in bufs {
            let k = b.len().min(free);
            self.tx
                .copy(tail + n as u64, b.as_ptr() as *mut u8, k, true);
            n += k;
            free -= k;
            if free == 0 {
                break;
            }
        }
        self.tx.hdr().tail.store(tail + n as u64, Ordering::SeqCst);
        // The consumer can only be asleep on this ring if it last saw it empty, and then
        // it cannot have moved `head` past our old tail: ring only in that case.
        if self.tx.hdr().head.load(Ordering::SeqCst) == tail {
            self.peer_bell.ring();
        }
        Ok(n)
    }

    fn recv_some(&mut self, _lane: usize, buf: &mut [u8]) -> Result<usize> {
        let h = self.rx.hdr();
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Acquire);
        let n = buf.len().min((tail - head) as usize);
        if n == 0 {
            if !buf.is_empty() {
                self.check_rx_alive()?;
            }
            return Ok(0);
        }
        self.rx.copy(head, buf.as_mut_ptr(), n, false);
        self.rx.hdr().head.store(head + n as u64, Ordering::SeqCst);
        // The producer only waits on a full ring; wake it only if it was full.
        if self.rx.hdr().tail.load(Ordering::SeqCst) - head == self.rx.cap as u64 {
            self.peer_bell.ring();
        }
        Ok(n)
    }

    fn recv_with(
        &mut self,
        _lane: usize,
        max: usize,
        f: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<Option<usize>> {
        if !self.zero_copy {
            return Ok(None);
        }
        let h = self.rx.hdr();
        let head = h.head.load(Ordering::Relaxed);
        let tail = h.tail.load(Ordering::Acquire);
        let at = (head % self.rx.cap as u64) as usize;
        let n = max.min((tail - head) as usize).min(self.rx.cap - at);
        if n == 0 && max > 0 {
            self.check_rx_alive()?;
        }
        // SAFETY: [at, at+n) lies in the data area and holds published bytes that the
        // producer will not touch until `head` moves past them, which happens below.
        let view = unsafe { std::slice::from_raw_parts(self.rx.data.add(at), n) };
        let used = f(view).min(n);
        if used > 0 {
            self.rx
                .hdr()
                .head
                .store(head + used as u64, Ordering::SeqCst);
            // As in recv_some: wake the producer only if the ring was full.
            if self.rx.hdr().tail.load(Ordering::SeqCst) - head == self.rx.cap as u64 {
                self.peer_bell.ring();
            }
        }
        Ok(Some(used))
    }

    fn read_remote(&mut self, addr: u64, dst: &mut [u8]) -> Result<bool> {
        let Some(pid) = self.peer_pid else {
            return Ok(false);
        };
        sys::read_process(pid, addr, dst).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => self.lost("process exited during a cross-memory read"),
            _ => Error::io(
                format!("reading {} bytes of rank {}'s memory", dst.len(), self.peer),
                e,
            ),
        })?;
        Ok(true)
    }

    fn send_control(&mut self, msg: &[u8]) -> Result<bool> {
        // Best effort: a few bytes on an idle socket; a peer that is gone is not news.
        let _ = sys::send_nosignal(self.alive.as_raw_fd(), &ControlFrames::frame(msg));
        Ok(true)
    }

    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        self.pump()?;
        if let Some(m) = self.ctl.next() {
            return Ok(Some(m));
        }
        if self.ctl.died() {
            return Err(self.lost("process exited (liveness socket closed)"));
        }
        Ok(None)
    }

    fn control_handle(&self) -> Option<WaitHandle> {
        Some(WaitHandle {
            fd: self.alive.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: false,
        })
    }

    fn wait_handles(&self, _lane: usize, _dir: Direction, out: &mut Vec<WaitHandle>) {
        out.push(WaitHandle {
            fd: self.my_bell.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: true,
        });
        out.push(WaitHandle {
            fd: self.alive.as_raw_fd(),
            events: libc::POLLIN,
            doorbell: false,
        });
    }

    fn class(&self) -> LinkClass {
        LinkClass::Shm
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        let _ = self.send_control(GOODBYE);
        self.tx.hdr().closed.store(1, Ordering::Release);
        self.rx.hdr().closed.store(1, Ordering::Release);
        self.peer_bell.ring();
    }
}
