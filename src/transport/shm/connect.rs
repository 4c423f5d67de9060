//! Connecting shared-memory links on first use: each rank's listener in the abstract
//! namespace and the offers it admitted ([`ShmAcceptor`]); the lower rank's offer of
//! a pair (region and doorbells) behind a hello naming the communicator and both
//! ranks, and its checks; and the host's board, which rank 0 hands to every rank at
//! init (a message of its own, not a link).
//!
//! As over TCP (`transport::tcp::lazy`), a pair connects when a call first names
//! it on both ends: the lower rank offers as soon as its call needs the higher one,
//! the higher rank takes the offer from its acceptor when its own call needs the
//! lower one. Both schedules name each other in the same call, so neither end sends
//! anything extra. Offers that arrive before the higher rank needs them wait,
//! admitted, in the acceptor, which the communicators sharing one listener (a
//! communicator and those shrunk from it) share; those for a communicator the
//! listener does not know yet (shrunk on the sender first) wait there too, for a
//! while (`hello::Admission`).

use super::link::{ShmLink, HEADER};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys::{self, EventFd, SharedMap};
use crate::transport::board::{self, Board};
use crate::transport::hello::{stranger_hold, Admission, Hello, TokenState, HELLO_LEN};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pair's ring offer.
const HELLO_MAGIC: &[u8; 8] = b"MXSHM\0\0\0";
/// Rank 0's hand-out of the host's board.
const BOARD_MAGIC: &[u8; 8] = b"MXSHMBRD";
/// Bytes of an offer: the hello, then the ring capacity (a board: its ring bytes),
/// as a u64.
const OFFER_LEN: usize = HELLO_LEN + 8;

/// The abstract Unix socket name of `rank`'s shm listener for the communicator `token`.
fn listener_name(token: &[u8; 16], rank: usize) -> Vec<u8> {
    let hex: String = token.iter().map(|b| format!("{b:02x}")).collect();
    format!("mixccl/{hex}/{rank}").into_bytes()
}

/// Binds this rank's shm listener (abstract namespace: per network namespace, gone
/// with the process) and admits offers for `token` on it.
pub(crate) fn listen(token: &[u8; 16], rank: usize) -> Result<ShmAcceptor> {
    let addr = UnixAddr::from_abstract_name(listener_name(token, rank))
        .map_err(|e| Error::io("naming the shared-memory listener", e))?;
    let listener = UnixListener::bind_addr(&addr).map_err(|e| {
        Error::io(
            format!(
                "binding the shared-memory listener of rank {rank} (is rank {rank} running twice?)"
            ),
            e,
        )
    })?;
    // Up to a host's every peer offers at once (the direct algorithm's first call).
    sys::widen_backlog(&listener).map_err(|e| Error::io("widening the shm listener", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("shm listener", e))?;
    let acceptor = ShmAcceptor {
        listener,
        state: Mutex::new(AcceptState::default()),
    };
    acceptor.register(*token);
    Ok(acceptor)
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

/// The offer's fixed bytes (`transport::hello`) with `magic`, then `size`.
fn hello(spec: &ShmSpec<'_>, magic: &[u8; 8], to: usize, size: usize) -> [u8; OFFER_LEN] {
    let mut b = [0u8; OFFER_LEN];
    let who = Hello {
        token: spec.token,
        from: spec.rank as u32,
        to: to as u32,
    };
    who.encode(magic, &mut b);
    b[HELLO_LEN..].copy_from_slice(&(size as u64).to_le_bytes());
    b
}

/// Tries once to connect to `peer`'s listener; `None`: not there (a rank that has
/// not bound it yet, or one that died).
fn dial_once(spec: &ShmSpec<'_>, peer: usize) -> Result<Option<UnixStream>> {
    let addr = UnixAddr::from_abstract_name(listener_name(&spec.name_token, spec.names[peer]))
        .map_err(|e| Error::io(format!("naming rank {peer}'s shared-memory listener"), e))?;
    match UnixStream::connect_addr(&addr) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::io(
            format!("connecting shared memory to rank {peer}"),
            e,
        )),
    }
}

/// The timeout naming `peer`, whose listener did not answer since `start`.
fn unanswered(spec: &ShmSpec<'_>, peer: usize, start: Instant) -> Error {
    log_warn!(
        Some(spec.rank),
        "shm connect to rank {peer}: its listener is not there"
    );
    Error::Timeout {
        op: format!("connecting shared memory to rank {peer}"),
        waiting_for: vec![peer],
        after: start.elapsed(),
    }
}

/// Connects to `peer`'s listener, retrying while it is not there yet (a rank that
/// has not bound it) until `spec.deadline`; a peer that died before it was ever
/// connected is named in the timeout.
fn dial(spec: &ShmSpec<'_>, peer: usize, abort: &AtomicBool) -> Result<UnixStream> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = dial_once(spec, peer)? {
            return Ok(s);
        }
        if Instant::now() >= spec.deadline {
            return Err(unanswered(spec, peer, start));
        }
        if abort.load(Ordering::SeqCst) {
            return Err(Error::Aborted);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Creates the shared region for `peer` (> this rank) and sends it over, once its
/// listener answers.
#[cfg(test)]
fn offer(spec: &ShmSpec<'_>, peer: usize, abort: &AtomicBool) -> Result<ShmLink> {
    let sock = dial(spec, peer, abort)?;
    offer_on(spec, peer, sock)
}

/// Creates the shared region for `peer` (> this rank) and sends it over `sock`,
/// connected to the peer's listener.
fn offer_on(spec: &ShmSpec<'_>, peer: usize, sock: UnixStream) -> Result<ShmLink> {
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
    let fds = [fd.as_raw_fd(), mine.as_raw_fd(), theirs.as_raw_fd()];
    sys::send_with_fds(sock.as_raw_fd(), &hello(spec, HELLO_MAGIC, peer, cap), &fds).map_err(
        |e| {
            // The peer died between its listener's accept and this offer (a kill
            // during a call that makes the link on first use): name it as lost.
            if crate::error::peer_gone(&e) {
                Error::PeerLost {
                    rank: peer,
                    reason: format!("{}: {e}", ctx("sending the region")),
                }
            } else {
                Error::io(ctx("sending the region"), e)
            }
        },
    )?;
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

/// At most this many whole offers wait for a token not registered yet
/// (`hello::Admission`, four descriptors each): one from each of a host's peers,
/// twice over; more are refused.
const MAX_STRANGERS: usize = 256;

/// What an offer brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    /// A pair's rings.
    Ring,
    /// The host's board.
    Board,
}

/// A whole offer, its hello checked for a live token, not yet taken by a call.
struct Arrived {
    sock: UnixStream,
    hello: Hello,
    size: usize,
    fds: Vec<OwnedFd>,
}

/// A rank's shared-memory listener and the offers it admitted that no call has
/// taken yet.
pub(crate) struct ShmAcceptor {
    listener: UnixListener,
    state: Mutex<AcceptState>,
}

#[derive(Default)]
struct AcceptState {
    pending: Vec<Pending>,
    /// Admitted offers by (kind, token, sender rank).
    arrived: HashMap<(Kind, [u8; 16], u32), Arrived>,
    /// Tokens of the communicators using this listener, and the whole hellos whose
    /// token is not registered yet (`hello::Admission`).
    admission: Admission<Pending>,
}

impl ShmAcceptor {
    fn state(&self) -> std::sync::MutexGuard<'_, AcceptState> {
        // A panic elsewhere cannot leave the map half-updated in a way that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits offers carrying `token` from now on.
    pub(crate) fn register(&self, token: [u8; 16]) {
        self.state().admission.register(token);
    }

    /// Refuses `token` from now on and closes what arrived for it.
    pub(crate) fn forget(&self, token: [u8; 16]) {
        let mut st = self.state();
        st.admission.forget(token);
        st.arrived.retain(|k, _| k.1 != token);
    }

    /// Accepts what the listener has and reads the offers that have arrived, without
    /// blocking. Bad offers are closed and logged; none is read until it has
    /// something to say, so silent or slow intruders cannot hold up the real ones.
    /// A whole offer for a token not registered yet is held for `hold`; those held
    /// before are admitted once their token is registered.
    fn pump(&self, me: usize, hold: Duration) -> Result<()> {
        let mut guard = self.state();
        let st = &mut *guard;
        let (ready, dropped) = st.admission.settle(Instant::now());
        for p in ready {
            if let Err(why) = st.admit(p) {
                log_warn!(Some(me), "rejected a shared-memory offer: {why}");
            }
        }
        for (_, why) in dropped {
            log_warn!(Some(me), "rejected a shared-memory offer: {why}");
        }
        loop {
            match self.listener.accept() {
                Ok((sock, _)) => {
                    if sock.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if st.pending.len() >= MAX_PENDING {
                        st.pending.remove(0);
                        log_warn!(Some(me), "dropped the oldest of {MAX_PENDING} connections waiting to offer shared memory");
                    }
                    st.pending.push(Pending {
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
        let mut k = 0;
        while k < st.pending.len() {
            let verdict = match read_offer(&mut st.pending[k]) {
                Ok(false) if st.pending[k].since.elapsed() > OFFER_WAIT => {
                    Err(format!("no offer after {OFFER_WAIT:?}"))
                }
                v => v,
            };
            match verdict {
                Ok(false) => k += 1,
                Ok(true) => {
                    let p = st.pending.swap_remove(k);
                    match decode_offer(&p.hello).map(|(who, _)| who.token) {
                        Ok(t) if st.admission.state(&t) == TokenState::Unknown => {
                            if st.admission.hold(t, hold, MAX_STRANGERS, p).is_err() {
                                log_warn!(
                                    Some(me),
                                    "rejected a shared-memory offer: wrong communicator \
                                     token ({MAX_STRANGERS} offers of unknown tokens held \
                                     already)"
                                );
                            } else {
                                log_info!(
                                    Some(me),
                                    "holding a shared-memory offer: its communicator is \
                                     not registered here yet"
                                );
                            }
                        }
                        _ => {
                            if let Err(why) = st.admit(p) {
                                log_warn!(Some(me), "rejected a shared-memory offer: {why}");
                            }
                        }
                    }
                }
                Err(why) => {
                    st.pending.swap_remove(k);
                    log_warn!(Some(me), "rejected a shared-memory offer: {why}");
                }
            }
        }
        Ok(())
    }

    /// The offer of `kind` that rank `from` sent for `token`, once all of it is here.
    fn take(&self, kind: Kind, token: [u8; 16], from: usize) -> Option<Arrived> {
        self.state().arrived.remove(&(kind, token, from as u32))
    }

    fn poll_fds(&self) -> Vec<libc::pollfd> {
        let st = self.state();
        let mut fds = vec![sys::pollfd(self.listener.as_raw_fd(), libc::POLLIN)];
        fds.extend(
            st.pending
                .iter()
                .map(|p| sys::pollfd(p.sock.as_raw_fd(), libc::POLLIN)),
        );
        fds
    }

    /// Waits until each of `from` has sent its offer of `kind` for `spec.token` and
    /// hands each to `take` as it arrives; names those still missing at
    /// `spec.deadline`.
    fn wait_for(
        &self,
        spec: &ShmSpec<'_>,
        kind: Kind,
        from: &[usize],
        abort: &AtomicBool,
        mut take: impl FnMut(usize, Arrived) -> Result<()>,
    ) -> Result<()> {
        let start = Instant::now();
        // Offers of a communicator this rank has not joined yet are held as long as
        // this wait may last.
        let hold = stranger_hold(spec.deadline.saturating_duration_since(start));
        let mut waiting = from.to_vec();
        loop {
            self.pump(spec.rank, hold)?;
            let mut i = 0;
            while i < waiting.len() {
                match self.take(kind, spec.token, waiting[i]) {
                    Some(a) => take(waiting.swap_remove(i), a)?,
                    None => i += 1,
                }
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if abort.load(Ordering::SeqCst) {
                return Err(Error::Aborted);
            }
            if Instant::now() >= spec.deadline {
                waiting.sort_unstable();
                return Err(Error::Timeout {
                    op: format!(
                        "rank {} waiting for {}",
                        spec.rank,
                        match kind {
                            Kind::Ring => "shared-memory offers on first use",
                            Kind::Board => "the host's board from rank 0",
                        }
                    ),
                    waiting_for: waiting,
                    after: start.elapsed(),
                });
            }
            let mut fds = self.poll_fds();
            let left = spec.deadline.saturating_duration_since(Instant::now());
            sys::poll(&mut fds, left.min(Duration::from_millis(100)))
                .map_err(|e| Error::io("polling the shm listener", e))?;
        }
    }
}

impl AcceptState {
    /// Files a whole offer under its sender, if its token is live.
    fn admit(&mut self, p: Pending) -> std::result::Result<(), String> {
        let (who, kind) = decode_offer(&p.hello)?;
        if !self.admission.contains(&who.token) {
            return Err("wrong communicator token".into());
        }
        let key = (kind, who.token, who.from);
        if self.arrived.contains_key(&key) {
            return Err(format!("duplicate offer from rank {}", who.from));
        }
        let size = u64::from_le_bytes(p.hello[HELLO_LEN..].try_into().expect("8")) as usize;
        let arrived = Arrived {
            sock: p.sock,
            hello: who,
            size,
            fds: p.fds,
        };
        self.arrived.insert(key, arrived);
        Ok(())
    }
}

/// The hello of a whole offer and what it offers.
fn decode_offer(b: &[u8; OFFER_LEN]) -> std::result::Result<(Hello, Kind), String> {
    match Hello::decode(HELLO_MAGIC, b) {
        Ok(h) => Ok((h, Kind::Ring)),
        Err(_) => Hello::decode(BOARD_MAGIC, b)
            .map(|h| (h, Kind::Board))
            .map_err(|e| format!("{e} in the offer")),
    }
}

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

/// Checks a lower rank's whole ring offer and maps the region it brought.
fn take_offer(spec: &ShmSpec<'_>, a: Arrived) -> std::result::Result<ShmLink, String> {
    let Arrived {
        sock,
        hello: who,
        size: cap,
        mut fds,
    } = a;
    // The offer's descriptors travel with its bytes; the socket stays open as the
    // link's liveness channel.
    let _ = sock.set_nonblocking(false);
    let (from, to) = (who.from as usize, who.to as usize);
    if to != spec.rank || from >= spec.rank || !spec.same_host.get(from).copied().unwrap_or(false) {
        return Err(format!("unexpected offer from rank {from} to rank {to}"));
    }
    if cap == 0 || cap % 64 != 0 || cap > 1 << 30 || fds.len() != 3 {
        return Err(format!(
            "bad ring size {cap} or {} descriptors (expected 3)",
            fds.len()
        ));
    }
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
    Ok(link)
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

/// Connects the shared-memory links to `peers` (same-host ranks this rank has no
/// link to yet): offers regions to the higher ones, then takes the lower ones'
/// offers as they arrive. Every peer's call names this rank too, so each lower peer
/// offers without being asked; one that never does (dead, or never calling) is
/// named in `Error::Timeout` at `spec.deadline`.
///
/// A higher peer whose listener is gone is gone itself (every rank's listener is
/// bound before the rendezvous and kept while its process keeps a communicator of
/// it): the call fails with `Error::PeerLost` naming it, once the other peers are
/// linked, whose calls wait on this rank. Waiting for it to time out instead would
/// keep this rank out of its communicator's shrink while the survivors that saw it
/// die at once wait for this rank in the shrunk one. The links made come back even
/// when connecting fails: they are how the peers get told (of a loss, or after an
/// abort, a revoke).
pub(crate) fn connect_peers(
    spec: &ShmSpec<'_>,
    acceptor: &ShmAcceptor,
    peers: &[usize],
    abort: &AtomicBool,
) -> (Vec<ShmLink>, Result<()>) {
    let mut links = Vec::with_capacity(peers.len());
    let mut lost = None;
    for &peer in peers.iter().filter(|&&p| p > spec.rank) {
        match dial_once(spec, peer) {
            Ok(Some(sock)) => match offer_on(spec, peer, sock) {
                Ok(l) => links.push(l),
                Err(e) => return (links, Err(e)),
            },
            Ok(None) => {
                let e = Error::PeerLost {
                    rank: peer,
                    reason: "its shared-memory listener is gone (first use)".into(),
                };
                log_warn!(Some(spec.rank), "{e}");
                lost.get_or_insert(e);
            }
            Err(e) => return (links, Err(e)),
        }
    }
    let lower: Vec<usize> = peers.iter().copied().filter(|&p| p < spec.rank).collect();
    let mut made = acceptor.wait_for(spec, Kind::Ring, &lower, abort, |from, a| {
        links.push(take_lower(spec, from, a)?);
        Ok(())
    });
    if let (Some(e), Ok(()) | Err(Error::Timeout { .. })) = (lost, &made) {
        made = Err(e);
    }
    if made.is_err() {
        // The offers already here become links too (the peers that sent them wait on
        // this rank now).
        for &from in &lower {
            // Those taken already are no longer there.
            if let Some(a) = acceptor.take(Kind::Ring, spec.token, from) {
                if let Ok(l) = take_lower(spec, from, a) {
                    links.push(l);
                }
            }
        }
    }
    (links, made)
}

/// A lower peer's offer, taken: the link it brought.
fn take_lower(spec: &ShmSpec<'_>, from: usize, a: Arrived) -> Result<ShmLink> {
    take_offer(spec, a).map_err(|why| {
        Error::Bootstrap(format!(
            "rank {from}'s shared-memory offer to rank {}: {why}",
            spec.rank
        ))
    })
}

/// Links to every same-host peer at once, by rank (for tests of the links).
#[cfg(test)]
pub(crate) fn connect_host_peers(
    spec: &ShmSpec<'_>,
    acceptor: &ShmAcceptor,
) -> Result<Vec<Option<ShmLink>>> {
    let peers: Vec<usize> = (0..spec.same_host.len())
        .filter(|&p| p != spec.rank && spec.same_host[p])
        .collect();
    let mut out: Vec<Option<ShmLink>> = (0..spec.same_host.len()).map(|_| None).collect();
    let (links, made) = connect_peers(spec, acceptor, &peers, &AtomicBool::new(false));
    made?;
    for l in links {
        let p = l.peer;
        out[p] = Some(l);
    }
    Ok(out)
}

/// The host's board, when every rank of the communicator is on this host (2 to
/// `board::MAX_RANKS` of them) and the board is on: rank 0 creates it and hands it
/// to each rank over that rank's listener; the others wait for it. Collective: every
/// rank calls it at init, none of them with links yet.
pub(crate) fn share_board(
    spec: &ShmSpec<'_>,
    acceptor: &ShmAcceptor,
    abort: &AtomicBool,
) -> Result<Option<Arc<Board>>> {
    let Some(n) = board_ranks(spec) else {
        return Ok(None);
    };
    if spec.rank == 0 {
        let (b, fd) = Board::create(n, spec.board_bytes, 0)
            .map_err(|e| Error::io("creating the host's shared board", e))?;
        for peer in 1..n {
            // The message and its descriptor wait in the peer's socket after we close.
            let sock = dial(spec, peer, abort)?;
            sys::send_with_fds(
                sock.as_raw_fd(),
                &hello(spec, BOARD_MAGIC, peer, spec.board_bytes),
                &[fd.as_raw_fd()],
            )
            .map_err(|e| Error::io(format!("handing the host's board to rank {peer}"), e))?;
        }
        log_info!(
            Some(spec.rank),
            "host board: {n} rings of {} B (all-gather writes each block once)",
            b.ring_bytes()
        );
        return Ok(Some(Arc::new(b)));
    }
    let mut board = None;
    acceptor.wait_for(spec, Kind::Board, &[0], abort, |_, a| {
        let bad = |why: String| Error::Bootstrap(format!("rank 0's host board: {why}"));
        if a.hello.to as usize != spec.rank || a.size != spec.board_bytes || a.fds.len() != 1 {
            return Err(bad(format!(
                "sent to rank {} with rings of {} B and {} descriptors (expected rank {}, \
                 {} B, 1)",
                a.hello.to,
                a.size,
                a.fds.len(),
                spec.rank,
                spec.board_bytes
            )));
        }
        board = Some(Board::open(&a.fds[0], n, spec.rank).map_err(bad)?);
        Ok(())
    })?;
    Ok(board.map(Arc::new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::sync::atomic::AtomicU32;

    /// A token no other test (in this process or another) uses.
    fn fresh_token() -> [u8; 16] {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mut t = [0x5a; 16];
        t[..4].copy_from_slice(&std::process::id().to_le_bytes());
        t[4..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        t
    }

    /// Rank `rank` of a pair on one host, of the communicator `token`, whose
    /// listeners are named by `name_token`.
    fn spec(rank: usize, token: [u8; 16], name_token: [u8; 16]) -> ShmSpec<'static> {
        ShmSpec {
            rank,
            token,
            name_token,
            names: &[0, 1],
            same_host: &[true, true],
            capacity: 4096,
            zero_copy: false,
            board_bytes: 0,
            deadline: Instant::now() + Duration::from_secs(10),
        }
    }

    /// Rank 0's offer to rank 1 for `token`, through the listener named `name`.
    fn offer_for(token: [u8; 16], name: [u8; 16]) -> ShmLink {
        offer(&spec(0, token, name), 1, &AtomicBool::new(false)).expect("offer")
    }

    #[test]
    fn an_offer_to_a_peer_gone_after_its_accept_names_it_lost() {
        let (mine, theirs) = UnixStream::pair().unwrap();
        drop(theirs);
        match offer_on(&spec(0, fresh_token(), fresh_token()), 1, mine) {
            Err(Error::PeerLost { rank: 1, reason }) => {
                assert!(reason.contains("sending the region"), "{reason}")
            }
            other => panic!("expected rank 1 lost, got {:?}", other.map(|_| ())),
        }
    }

    /// Pumps `a` (holding strangers for `hold`) until `done` or 5 s.
    fn pump_until(a: &ShmAcceptor, hold: Duration, done: impl Fn(&AcceptState) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            a.pump(1, hold).unwrap();
            if done(&a.state()) || Instant::now() > end {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the acceptor closed the offering end's socket within `wait`.
    fn closed_within(link: &ShmLink, wait: Duration) -> bool {
        let mut s = &link.alive;
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        match s.read(&mut [0u8; 1]) {
            Ok(n) => n == 0,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn an_offer_for_a_token_registered_later_is_held_then_admitted() {
        let name = fresh_token();
        let shrunk = fresh_token();
        let l1 = listen(&name, 1).unwrap();
        let zero = offer_for(shrunk, name);
        pump_until(&l1, Duration::from_secs(30), |st| st.admission.held() == 1);
        assert_eq!(l1.state().admission.held(), 1, "held");
        assert!(l1.take(Kind::Ring, shrunk, 0).is_none());
        assert!(
            !closed_within(&zero, Duration::from_millis(50)),
            "held open"
        );
        // Rank 1 shrinks too: the offer becomes its link to rank 0.
        l1.register(shrunk);
        let one = spec(1, shrunk, name);
        let (links, made) = connect_peers(&one, &l1, &[0], &AtomicBool::new(false));
        made.expect("the held offer is taken");
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].peer, 0);
        assert_eq!(l1.state().admission.held(), 0);
    }

    #[test]
    fn offers_of_unknown_tokens_are_dropped_in_time_and_of_forgotten_ones_at_once() {
        let name = fresh_token();
        let l1 = listen(&name, 1).unwrap();
        // Held for 100 ms, then closed by the next pump.
        let late = offer_for(fresh_token(), name);
        pump_until(&l1, Duration::from_millis(100), |st| {
            st.admission.held() == 1
        });
        assert_eq!(l1.state().admission.held(), 1);
        std::thread::sleep(Duration::from_millis(150));
        l1.pump(1, Duration::from_millis(100)).unwrap();
        assert_eq!(l1.state().admission.held(), 0);
        assert!(closed_within(&late, Duration::from_secs(2)), "time up");
        // Held, then its communicator is destroyed here before it registered.
        let token = fresh_token();
        let held = offer_for(token, name);
        pump_until(&l1, Duration::from_secs(30), |st| st.admission.held() == 1);
        assert_eq!(l1.state().admission.held(), 1);
        l1.forget(token);
        assert_eq!(l1.state().admission.held(), 0);
        assert!(closed_within(&held, Duration::from_secs(2)), "forgotten");
        // A token forgotten before its offer arrives is refused at once.
        let token = fresh_token();
        l1.register(token);
        l1.forget(token);
        let gone = offer_for(token, name);
        pump_until(&l1, Duration::from_secs(30), |st| st.pending.is_empty());
        assert_eq!(
            l1.state().admission.held(),
            0,
            "a forgotten token is not held"
        );
        assert!(closed_within(&gone, Duration::from_secs(2)), "refused");
    }
}
