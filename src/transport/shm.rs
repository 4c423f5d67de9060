//! Shared-memory transport for peers on the same host.
//!
//! Per pair of ranks, the lower rank creates one memfd holding two single-producer,
//! single-consumer byte rings (one per direction) and two eventfd doorbells, and
//! hands all three to the higher rank over a Unix socket in the abstract namespace
//! (SCM_RIGHTS). Nothing ever has a name in /dev/shm, so a normal exit, an error
//! and a SIGKILL all leave nothing behind. The Unix socket stays open as a liveness
//! channel: when the peer process dies, it reads EOF, which becomes `PeerLost`.
//!
//! Ring protocol: `tail` is written only by the producer, `head` only by the
//! consumer; data is published with a store of `tail` and freed with a store of
//! `head`. A side rings the other's doorbell only when the other may be asleep on
//! this ring: the producer when the ring was empty before its write, the consumer
//! when it was full before its read (a waiting side always saw exactly that state
//! last). A waiting side polls its doorbell; the executor spins briefly first.

use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::header::{ControlFrames, ControlReader, GOODBYE};
use crate::sys::{self, EventFd, SharedMap};
use crate::transport::board::{self, Board};
use crate::transport::{Direction, Link, WaitHandle};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HEADER: usize = 128;
const HELLO_MAGIC: &[u8; 8] = b"MXSHM\0\0\0";
const HELLO_LEN: usize = 8 + 2 + 16 + 4 + 4 + 8;
/// How often an idle side checks that its peer process is still there.
const LIVENESS_EVERY: Duration = Duration::from_millis(2);

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
    peer: usize,
    tx: Ring,
    rx: Ring,
    my_bell: EventFd,
    peer_bell: EventFd,
    alive: UnixStream,
    /// Control messages arriving on `alive`, the end of it, and whether the peer
    /// said goodbye before closing.
    ctl: ControlReader,
    last_check: Instant,
    zero_copy: bool,
    /// The peer's process id (SO_PEERCRED), for cross-memory reads.
    peer_pid: Option<i32>,
    /// The host's board, when every rank of the communicator is on this host.
    board: Option<Arc<Board>>,
    // Keeps the rings mapped; declared last so it is dropped after them.
    _map: SharedMap,
}

// SAFETY: the raw pointers refer into `_map`, which the link owns and moves with it.
unsafe impl Send for ShmLink {}

impl ShmLink {
    fn new(
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
            board: None,
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
    fn check_rx_alive(&mut self) -> Result<()> {
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

    fn class(&self) -> crate::transport::LinkClass {
        crate::transport::LinkClass::Shm
    }

    fn board(&self) -> Option<Arc<Board>> {
        self.board.clone()
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

/// The abstract Unix socket name of `rank`'s shm listener for the communicator `token`.
fn listener_name(token: &[u8; 16], rank: usize) -> Vec<u8> {
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    format!("mixccl/{hex}/{rank}").into_bytes()
}

/// Binds this rank's shm listener (abstract namespace: per network namespace, gone
/// with the process).
pub(crate) fn listen(token: &[u8; 16], rank: usize) -> Result<UnixListener> {
    let addr = UnixAddr::from_abstract_name(listener_name(token, rank))
        .map_err(|e| Error::io("naming the shared-memory listener", e))?;
    UnixListener::bind_addr(&addr).map_err(|e| {
        Error::io(
            format!(
                "binding the shared-memory listener of rank {rank} (is rank {rank} running twice?)"
            ),
            e,
        )
    })
}

/// What a rank needs to build its shm links.
pub(crate) struct ShmSpec<'a> {
    pub rank: usize,
    pub token: [u8; 16],
    /// The token and ranks the peers' listeners are named by (those of the first
    /// communicator of these processes: a shrunk one reuses its listeners).
    pub name_token: [u8; 16],
    pub names: &'a [usize],
    /// `same_host[p]`: rank p is reached through shared memory.
    pub same_host: &'a [bool],
    /// Ring bytes per direction (a multiple of 64).
    pub capacity: usize,
    /// Offer `recv_with` (zero-copy reduction out of the ring).
    pub zero_copy: bool,
    /// Bytes of each rank's ring in the host's board (0: no board).
    pub board_bytes: usize,
    pub deadline: Instant,
}

fn hello(spec: &ShmSpec<'_>, to: usize) -> [u8; HELLO_LEN] {
    let mut b = [0u8; HELLO_LEN];
    b[0..8].copy_from_slice(HELLO_MAGIC);
    b[8..10].copy_from_slice(&crate::wire::PROTOCOL_VERSION.to_le_bytes());
    b[10..26].copy_from_slice(&spec.token);
    b[26..30].copy_from_slice(&(spec.rank as u32).to_le_bytes());
    b[30..34].copy_from_slice(&(to as u32).to_le_bytes());
    b[34..42].copy_from_slice(&(spec.capacity as u64).to_le_bytes());
    b
}

/// Creates the shared region for `peer` (> this rank) and sends it over, with the
/// host's board when this rank created one.
fn offer(spec: &ShmSpec<'_>, peer: usize, board: Option<&OwnedFd>) -> Result<ShmLink> {
    let cap = spec.capacity;
    let ctx = |what: &str| format!("{what} for the shared-memory link to rank {peer}");
    let fd = sys::memfd("mixccl", 2 * (HEADER + cap))
        .map_err(|e| Error::io(ctx("creating memory"), e))?;
    let map =
        SharedMap::new(&fd, 2 * (HEADER + cap)).map_err(|e| Error::io(ctx("mapping memory"), e))?;
    let (mine, theirs) = match (EventFd::new(), EventFd::new()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return Err(Error::io(ctx("creating doorbells"), e)),
    };
    let addr = UnixAddr::from_abstract_name(listener_name(&spec.name_token, spec.names[peer]))
        .map_err(|e| Error::io(ctx("naming the listener"), e))?;
    let mut pause = Duration::from_millis(1);
    let sock = loop {
        match UnixStream::connect_addr(&addr) {
            Ok(s) => break s,
            Err(e)
                if Instant::now() < spec.deadline
                    && matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                    ) =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) if Instant::now() >= spec.deadline => {
                log_warn!(Some(spec.rank), "shm connect to rank {peer}: {e}");
                return Err(Error::Timeout {
                    op: format!("init: connecting shared memory to rank {peer}"),
                    waiting_for: vec![peer],
                    after: Duration::ZERO,
                });
            }
            Err(e) => return Err(Error::io(ctx("connecting"), e)),
        }
    };
    let mut fds = vec![fd.as_raw_fd(), mine.as_raw_fd(), theirs.as_raw_fd()];
    fds.extend(board.map(|b| b.as_raw_fd()));
    sys::send_with_fds(sock.as_raw_fd(), &hello(spec, peer), &fds)
        .map_err(|e| Error::io(ctx("sending the region"), e))?;
    log_info!(
        Some(spec.rank),
        "connected rank {peer} over shm ({cap} B rings)"
    );
    let mut link = ShmLink::new(peer, map, cap, true, mine, theirs, sock);
    link.zero_copy = spec.zero_copy;
    link.peer_pid = sys::peer_pid(link.alive.as_raw_fd()).ok();
    Ok(link)
}

/// An accepted connection whose offer has not all arrived yet.
struct Pending {
    sock: UnixStream,
    hello: [u8; HELLO_LEN],
    have: usize,
    fds: Vec<OwnedFd>,
    since: Instant,
}

/// How long an accepted connection may take to deliver its offer. A real peer sends
/// the whole offer in one message right after connecting.
const OFFER_WAIT: Duration = Duration::from_secs(5);

/// At most this many connections wait for their offers at once; beyond it the oldest
/// is dropped (an intruder cannot make the listener hold unbounded descriptors).
const MAX_PENDING: usize = 256;

/// Reads what has arrived of `p`'s offer without blocking. `Ok(true)`: all of it.
fn read_offer(p: &mut Pending) -> std::result::Result<bool, String> {
    let (n, fds) = match sys::recv_with_fds(p.sock.as_raw_fd(), &mut p.hello[p.have..], 4) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(false),
        Err(e) => return Err(format!("read failed: {e}")),
    };
    if n == 0 {
        return Err(format!("closed after {} bytes", p.have));
    }
    if p.fds.len() + fds.len() > 4 {
        return Err("more than 4 descriptors".into());
    }
    p.fds.extend(fds);
    p.have += n;
    Ok(p.have == HELLO_LEN)
}

/// Checks a whole offer and maps the region it brought.
fn take_offer(
    spec: &ShmSpec<'_>,
    p: Pending,
    have: &[Option<ShmLink>],
) -> std::result::Result<(ShmLink, Option<Board>), String> {
    let Pending {
        sock,
        hello: b,
        mut fds,
        ..
    } = p;
    // The offer's descriptors travel with its bytes; the socket stays open as the
    // link's liveness channel.
    let _ = sock.set_nonblocking(false);
    if &b[0..8] != HELLO_MAGIC || u16::from_le_bytes([b[8], b[9]]) != crate::wire::PROTOCOL_VERSION
    {
        return Err("bad magic or version".into());
    }
    if b[10..26] != spec.token {
        return Err("wrong communicator token".into());
    }
    let from = u32::from_le_bytes(b[26..30].try_into().expect("4")) as usize;
    let to = u32::from_le_bytes(b[30..34].try_into().expect("4")) as usize;
    let cap = u64::from_le_bytes(b[34..42].try_into().expect("8")) as usize;
    if to != spec.rank || from >= spec.rank || !spec.same_host.get(from).copied().unwrap_or(false) {
        return Err(format!("unexpected offer from rank {from} to rank {to}"));
    }
    if have[from].is_some() {
        return Err(format!("duplicate offer from rank {from}"));
    }
    // Rank 0 hands out the host's board with its offers when every rank is here.
    let with_board = from == 0 && board_ranks(spec).is_some();
    let want = if with_board { 4 } else { 3 };
    if cap == 0 || cap % 64 != 0 || cap > 1 << 30 || fds.len() != want {
        return Err(format!(
            "bad ring size {cap} or {} descriptors (expected {want})",
            fds.len()
        ));
    }
    let board = match with_board.then(|| fds.pop()).flatten() {
        Some(b) => Some(
            Board::open(&b, spec.same_host.len(), spec.rank)
                .map_err(|e| format!("the host board: {e}"))?,
        ),
        None => None,
    };
    let theirs = EventFd::from_owned(fds.pop().expect("3 fds"));
    let mine = EventFd::from_owned(fds.pop().expect("3 fds"));
    let fd: OwnedFd = fds.pop().expect("3 fds");
    // The region must be as large as the rings it claims to hold.
    let len = 2 * (HEADER + cap);
    let stat_len = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
        .metadata()
        .map_err(|e| e.to_string())?
        .len() as usize;
    if stat_len < len {
        return Err(format!("region of {stat_len} bytes is smaller than {len}"));
    }
    let map = SharedMap::new(&fd, len).map_err(|e| format!("mapping failed: {e}"))?;
    log_info!(
        Some(spec.rank),
        "connected rank {from} over shm ({cap} B rings)"
    );
    let mut link = ShmLink::new(from, map, cap, false, theirs, mine, sock);
    link.zero_copy = spec.zero_copy;
    link.peer_pid = sys::peer_pid(link.alive.as_raw_fd()).ok();
    Ok((link, board))
}

/// The number of ranks sharing a board, when there is one: every rank of the
/// communicator is on this host, and there are 2 to `board::MAX_RANKS` of them.
fn board_ranks(spec: &ShmSpec<'_>) -> Option<usize> {
    let n = spec.same_host.len();
    (spec.board_bytes > 0
        && (2..=board::MAX_RANKS).contains(&n)
        && (0..n).all(|p| p == spec.rank || spec.same_host[p]))
    .then_some(n)
}

/// Builds shm links to every same-host peer: offers regions to higher ranks, accepts
/// offers from lower ones on `listener`. Bad offers are closed and logged.
pub(crate) fn connect_host_peers(
    spec: &ShmSpec<'_>,
    listener: &UnixListener,
) -> Result<Vec<Option<ShmLink>>> {
    let n = spec.same_host.len();
    let mut links: Vec<Option<ShmLink>> = (0..n).map(|_| None).collect();
    // Rank 0 creates the host's board and offers it along.
    let mut board: Option<Board> = None;
    let mut board_fd = None;
    if let (Some(nb), 0) = (board_ranks(spec), spec.rank) {
        let (b, fd) = Board::create(nb, spec.board_bytes, 0)
            .map_err(|e| Error::io("creating the host's shared board", e))?;
        board = Some(b);
        board_fd = Some(fd);
    }
    for (peer, slot) in links.iter_mut().enumerate().skip(spec.rank + 1) {
        if spec.same_host[peer] {
            *slot = Some(offer(spec, peer, board_fd.as_ref())?);
        }
    }
    drop(board_fd);
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("shm listener", e))?;
    let start = Instant::now();
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let missing: Vec<usize> = (0..spec.rank)
            .filter(|&p| spec.same_host[p] && links[p].is_none())
            .collect();
        if missing.is_empty() {
            if let Some(b) = &board {
                log_info!(
                    Some(spec.rank),
                    "host board: {} rings of {} B (all-gather writes each block once)",
                    n,
                    b.ring_bytes()
                );
            }
            if let Some(b) = board.map(Arc::new) {
                for l in links.iter_mut().flatten() {
                    l.board = Some(b.clone());
                }
            }
            return Ok(links);
        }
        if Instant::now() >= spec.deadline {
            return Err(Error::Timeout {
                op: "init: waiting for shared-memory offers".into(),
                waiting_for: missing,
                after: start.elapsed(),
            });
        }
        // Take every waiting connection; none is read until it has something to say,
        // so silent or slow intruders cannot hold up the real offers.
        loop {
            match listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if pending.len() >= MAX_PENDING {
                        pending.remove(0);
                        log_warn!(Some(spec.rank), "dropped the oldest of {MAX_PENDING} connections waiting to offer shared memory");
                    }
                    pending.push(Pending {
                        sock,
                        hello: [0u8; HELLO_LEN],
                        have: 0,
                        fds: Vec::new(),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("accepting a shared-memory connection", e)),
            }
        }
        let mut fds = vec![sys::pollfd(listener.as_raw_fd(), libc::POLLIN)];
        fds.extend(
            pending
                .iter()
                .map(|p| sys::pollfd(p.sock.as_raw_fd(), libc::POLLIN)),
        );
        let left = spec.deadline.saturating_duration_since(Instant::now());
        sys::poll(&mut fds, left.min(Duration::from_millis(100)))
            .map_err(|e| Error::io("polling the shm listener", e))?;
        let mut k = 0;
        for f in &fds[1..] {
            let p = &mut pending[k];
            let verdict = if f.revents != 0 {
                read_offer(p)
            } else if p.since.elapsed() > OFFER_WAIT {
                Err(format!("no offer after {OFFER_WAIT:?}"))
            } else {
                Ok(false)
            };
            match verdict {
                Ok(false) => k += 1,
                Ok(true) => match take_offer(spec, pending.remove(k), &links) {
                    Ok((link, b)) => {
                        let p = link.peer;
                        links[p] = Some(link);
                        board = board.or(b);
                    }
                    Err(why) => log_warn!(Some(spec.rank), "rejected a shared-memory offer: {why}"),
                },
                Err(why) => {
                    pending.remove(k);
                    log_warn!(Some(spec.rank), "rejected a shared-memory offer: {why}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair of links between "rank 0" and "rank 1" of this process.
    fn pair() -> (ShmLink, ShmLink) {
        // Listener names are per token: one token per pair, also across test processes.
        static PAIRS: AtomicU32 = AtomicU32::new(0);
        let mut token = [0u8; 16];
        token[..4].copy_from_slice(&std::process::id().to_le_bytes());
        token[4..8].copy_from_slice(&PAIRS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let spec = move |rank| ShmSpec {
            rank,
            token,
            name_token: token,
            names: &[0, 1],
            same_host: &[true, true],
            capacity: 4096,
            zero_copy: true,
            board_bytes: 64 << 10,
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let l1 = listen(&token, 1).expect("listener of rank 1");
        let l0 = listen(&token, 0).expect("listener of rank 0");
        let one = std::thread::spawn(move || connect_host_peers(&spec(1), &l1));
        let mut zero = connect_host_peers(&spec(0), &l0).expect("rank 0 links");
        let mut one = one.join().expect("rank 1 thread").expect("rank 1 links");
        (zero[1].take().expect("0->1"), one[0].take().expect("1->0"))
    }

    #[test]
    fn a_peer_that_wrote_and_left_is_lost_only_once_its_bytes_are_read() {
        let (mut zero, mut one) = pair();
        assert_eq!(zero.send_some(0, b"last words").expect("send"), 10);
        drop(zero);
        std::thread::sleep(LIVENESS_EVERY * 2);
        // The end is known (ring closed, goodbye on the socket), but bytes remain.
        one.check_rx_alive()
            .expect("bytes left to read: not lost yet");
        let mut got = [0u8; 10];
        assert_eq!(one.recv_some(0, &mut got).expect("read the last bytes"), 10);
        assert_eq!(&got, b"last words");
        std::thread::sleep(LIVENESS_EVERY * 2);
        let err = one
            .recv_some(0, &mut got)
            .expect_err("nothing more can come");
        assert!(
            matches!(err, Error::PeerLost { rank: 0, .. }),
            "wrong error: {err}"
        );
    }

    #[test]
    fn gathered_pieces_arrive_in_order_and_stop_where_the_ring_is_full() {
        let (mut zero, mut one) = pair();
        let a: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        // 4096-byte ring: all of `a` and the first 1096 bytes of `b` fit.
        assert_eq!(zero.send_gather(0, &[&a, &[], &b]).expect("send"), 4096);
        assert_eq!(zero.send_gather(0, &[&b[1096..]]).expect("full"), 0);
        let mut got = vec![0u8; 5000];
        let mut have = 0;
        while have < 4096 {
            have += one.recv_some(0, &mut got[have..4096]).expect("recv");
        }
        assert_eq!(zero.send_gather(0, &[&b[1096..]]).expect("rest"), 904);
        while have < 5000 {
            have += one.recv_some(0, &mut got[have..]).expect("recv");
        }
        assert_eq!(&got[..3000], &a[..]);
        assert_eq!(&got[3000..], &b[..]);
    }
}
