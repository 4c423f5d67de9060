//! Connecting the shared-memory links of a host: each rank's listener in the
//! abstract namespace, the lower rank's offer (region, doorbells, and the host's
//! board) behind a hello naming the communicator and both ranks, and its checks.

use super::link::{ShmLink, HEADER};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys::{self, EventFd, SharedMap};
use crate::transport::board::{self, Board};
use crate::transport::hello::{Hello, HELLO_LEN};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HELLO_MAGIC: &[u8; 8] = b"MXSHM\0\0\0";
/// Bytes of an offer: the hello, then the ring capacity (u64).
const OFFER_LEN: usize = HELLO_LEN + 8;

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

/// The offer's fixed bytes (`transport::hello`), then the ring capacity.
fn hello(spec: &ShmSpec<'_>, to: usize) -> [u8; OFFER_LEN] {
    let mut b = [0u8; OFFER_LEN];
    let who = Hello {
        token: spec.token,
        from: spec.rank as u32,
        to: to as u32,
    };
    who.encode(HELLO_MAGIC, &mut b);
    b[HELLO_LEN..].copy_from_slice(&(spec.capacity as u64).to_le_bytes());
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
    hello: [u8; OFFER_LEN],
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
    Ok(p.have == OFFER_LEN)
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
    let who = Hello::decode(HELLO_MAGIC, &b).map_err(|e| format!("{e} in the offer"))?;
    if who.token != spec.token {
        return Err("wrong communicator token".into());
    }
    let (from, to) = (who.from as usize, who.to as usize);
    let cap = u64::from_le_bytes(b[HELLO_LEN..].try_into().expect("8")) as usize;
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
                        hello: [0u8; OFFER_LEN],
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
