//! Connections on demand: a rank connects to a peer the first time one of its
//! calls needs that peer, never before. Of each pair the higher rank connects and
//! the lower one accepts (as in `mesh`, same handshake), each when its own schedule
//! first names the other; the peer's schedule names us in the same call, so both
//! ends agree without any extra message. Connections that arrive before the
//! accepting rank needs them wait, admitted, in the [`Acceptor`], which the
//! communicators sharing one listener (a communicator and those shrunk from it)
//! share. Those that name a communicator the listener does not know yet (shrunk
//! on the sender first) wait there too, for a while (`hello::Admission`).

use super::link::TlsSessions;
use super::mesh::{
    open_lane, read_hello, remaining, tune_socket, DataHello, Pending, SocketTuning, DATA_HELLO_LEN,
};
use super::tls::{self, TlsContext, TlsStream};
use super::{connect_retry, TcpLink};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::header::{encode_control, ControlReader};
use crate::sys;
use crate::transport::hello::{stranger_hold, Admission, TokenState};
use crate::transport::Link;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most connections whose handshake is still arriving; more are dropped (and their
/// sender retries nothing: it is a stranger or it will time out naming us).
const MAX_PENDING: usize = 1024;

/// Most connections held for a token not registered yet (`hello::Admission`): a
/// rank of 128 may be dialed by 127 peers of a shrunk communicator, a few lanes
/// each, before it shrinks; more are refused.
const MAX_STRANGERS: usize = 1024;

/// A listener and the data connections it admitted that no call has taken yet.
pub(crate) struct Acceptor {
    listener: TcpListener,
    state: Mutex<AcceptState>,
}

#[derive(Default)]
struct AcceptState {
    pending: Vec<Pending>,
    /// Admitted sockets by (token, sender rank): the rank addressed and one slot per
    /// lane, with its TLS session where the sender opened one.
    arrived: HashMap<([u8; 16], u32), ArrivedLanes>,
    /// Tokens of the communicators using this listener, and the whole hellos whose
    /// token is not registered yet (`hello::Admission`).
    admission: Admission<(DataHello, Arrived, SocketAddr)>,
}

impl Acceptor {
    /// Takes over `listener` (made non-blocking).
    pub(crate) fn new(listener: TcpListener) -> Result<Acceptor> {
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("making the data listener non-blocking", e))?;
        Ok(Acceptor {
            listener,
            state: Mutex::new(AcceptState::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AcceptState> {
        // A panic elsewhere cannot leave the map half-updated in a way that matters.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits connections carrying `token` from now on.
    pub(crate) fn register(&self, token: [u8; 16]) {
        self.state().admission.register(token);
    }

    /// Refuses `token` from now on and closes what arrived for it.
    pub(crate) fn forget(&self, token: [u8; 16]) {
        let mut st = self.state();
        st.admission.forget(token);
        st.arrived.retain(|k, _| k.0 != token);
    }

    /// Accepts what the listener has and reads the handshakes that have arrived,
    /// without blocking; `ctx` answers senders that open TLS. A whole handshake for
    /// a token not registered yet is held for `hold`; those held before are admitted
    /// once their token is registered.
    fn pump(&self, me: usize, ctx: Option<&TlsContext>, hold: Duration) -> Result<()> {
        let mut guard = self.state();
        let st = &mut *guard;
        let (ready, dropped) = st.admission.settle(Instant::now());
        for (h, arrived, from) in ready {
            if let Err(why) = st.admit(&h, arrived) {
                log_warn!(Some(me), "rejected connection from {from}: {why}");
            }
        }
        for ((_, _, from), why) in dropped {
            log_warn!(Some(me), "rejected connection from {from}: {why}");
        }
        loop {
            match self.listener.accept() {
                Ok((stream, from)) => {
                    if st.pending.len() >= MAX_PENDING {
                        log_warn!(
                            Some(me),
                            "dropping connection from {from}: too many pending handshakes"
                        );
                        continue;
                    }
                    stream
                        .set_nonblocking(true)
                        .map_err(|e| Error::io("configuring an accepted socket", e))?;
                    st.pending.push(Pending {
                        stream,
                        from,
                        buf: Vec::with_capacity(DATA_HELLO_LEN),
                        tls: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if fd_exhausted(&e) => {
                    return Err(Error::io(
                        format!("accepting a connection: {}", fd_limit_text()),
                        e,
                    ))
                }
                Err(e) => return Err(Error::io("accepting a connection", e)),
            }
        }
        let mut i = 0;
        while i < st.pending.len() {
            match read_hello(&mut st.pending[i], ctx) {
                Ok(None) => i += 1,
                Ok(Some(h)) => {
                    let mut p = st.pending.swap_remove(i);
                    if let Some(t) = &mut p.tls {
                        // The connecting rank waits for this before going on; whether
                        // the link had to be encrypted is checked when a call takes it.
                        let fd = p.stream.as_raw_fd();
                        if let Err(e) = t.queue(&[tls::ADMITTED]).and_then(|_| t.flush(fd)) {
                            log_warn!(
                                Some(me),
                                "rejected connection from {}: sending the TLS ack: {e}",
                                p.from
                            );
                            continue;
                        }
                    }
                    let arrived = Arrived {
                        stream: p.stream,
                        tls: p.tls,
                    };
                    if st.admission.state(&h.token) == TokenState::Unknown {
                        let held = (h, arrived, p.from);
                        if let Err((_, _, from)) =
                            st.admission.hold(h.token, hold, MAX_STRANGERS, held)
                        {
                            log_warn!(
                                Some(me),
                                "rejected connection from {from}: wrong communicator token \
                                 ({MAX_STRANGERS} connections of unknown tokens held already)"
                            );
                        } else {
                            log_info!(
                                Some(me),
                                "holding connection from {} (rank {} lane {}): its \
                                 communicator is not registered here yet",
                                p.from,
                                h.from,
                                h.lane
                            );
                        }
                    } else if let Err(why) = st.admit(&h, arrived) {
                        log_warn!(Some(me), "rejected connection from {}: {why}", p.from);
                    }
                }
                Err(why) => {
                    let p = st.pending.swap_remove(i);
                    log_warn!(Some(me), "rejected connection from {}: {why}", p.from);
                }
            }
        }
        Ok(())
    }

    /// The lanes `from` opened to rank `to` for `token` once all have arrived.
    fn take(&self, token: [u8; 16], from: usize, to: usize) -> Option<Vec<Arrived>> {
        let mut st = self.state();
        let key = (token, from as u32);
        let (addressed, lanes) = st.arrived.get(&key)?;
        if *addressed as usize != to || lanes.iter().any(Option::is_none) {
            return None;
        }
        let (_, lanes) = st.arrived.remove(&key)?;
        Some(lanes.into_iter().flatten().collect())
    }

    fn poll_fds(&self) -> Vec<libc::pollfd> {
        let st = self.state();
        let mut fds = vec![sys::pollfd(self.listener.as_raw_fd(), libc::POLLIN)];
        fds.extend(st.pending.iter().map(|p| {
            let events = p.tls.as_ref().map_or(libc::POLLIN, TlsStream::events);
            sys::pollfd(p.stream.as_raw_fd(), events)
        }));
        fds
    }
}

/// The rank a sender addressed and its lanes, one slot each, as they arrive.
type ArrivedLanes = (u32, Vec<Option<Arrived>>);

/// An admitted socket and its TLS session, if the sender opened one.
struct Arrived {
    stream: TcpStream,
    tls: Option<TlsStream>,
}

impl AcceptState {
    fn admit(&mut self, h: &DataHello, stream: Arrived) -> std::result::Result<(), String> {
        if !self.admission.contains(&h.token) {
            return Err("wrong communicator token".into());
        }
        if h.lanes == 0 || h.lane >= h.lanes {
            return Err(format!("lane {} of {}", h.lane, h.lanes));
        }
        let slot = self
            .arrived
            .entry((h.token, h.from))
            .or_insert_with(|| (h.to, (0..h.lanes).map(|_| None).collect()));
        if slot.0 != h.to || slot.1.len() != usize::from(h.lanes) {
            return Err(format!(
                "rank {} changed its handshake (to rank {}, {} lanes)",
                h.from, h.to, h.lanes
            ));
        }
        let lane = &mut slot.1[usize::from(h.lane)];
        if lane.is_some() {
            return Err(format!(
                "duplicate connection for rank {} lane {}",
                h.from, h.lane
            ));
        }
        *lane = Some(stream);
        Ok(())
    }
}

/// What a rank needs to connect to peers on demand.
pub(crate) struct LazySpec<'a> {
    pub rank: usize,
    /// Every rank's data listener, by rank.
    pub addrs: &'a [SocketAddr],
    pub token: [u8; 16],
    pub nsocks: usize,
    /// `MIXCCL_SOCKET_BUFFER` (0: automatic, as in `MeshSpec`).
    pub socket_buffer: usize,
    /// `same_host[p]`: rank p has this rank's host identity.
    pub same_host: &'a [bool],
    /// This rank's TLS certificates (`MIXCCL_TLS` not off).
    pub tls: Option<&'a TlsContext>,
    /// `encrypt[p]`: the link to rank p must carry TLS (`tls::encrypted_peers`).
    pub encrypt: &'a [bool],
    pub deadline: Instant,
    /// Set from another thread to give up (`AbortHandle`).
    pub abort: &'a AtomicBool,
}

impl LazySpec<'_> {
    /// How socket `s` to `peer` is set up (`mesh::socket_buffer_for`).
    fn tuning_for(&self, peer: usize, s: &TcpStream) -> SocketTuning {
        let local = self.same_host.get(peer).copied().unwrap_or(false);
        SocketTuning {
            buffer: super::mesh::socket_buffer_for(self.socket_buffer, local, self.nsocks, s),
            local,
        }
    }

    /// Whether the link to `peer` must carry TLS.
    fn encrypts(&self, peer: usize) -> bool {
        self.encrypt.get(peer).copied().unwrap_or(false)
    }
}

/// Whether `e` says this process ran out of file descriptors.
pub(crate) fn fd_exhausted(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Names the descriptor limit, for errors about running out of descriptors.
pub(crate) fn fd_limit_text() -> String {
    match sys_nofile() {
        Some(lim) => format!(
            "out of file descriptors (RLIMIT_NOFILE soft limit {lim}; raise it with `ulimit -n`)"
        ),
        None => "out of file descriptors".into(),
    }
}

/// The soft RLIMIT_NOFILE.
fn sys_nofile() -> Option<u64> {
    crate::sys::nofile_limit().ok().map(|(soft, _)| soft)
}

/// A lower peer this rank has yet to reach, and when to try it again.
struct Dial {
    peer: usize,
    next: Instant,
    pause: Duration,
}

/// Whether a failed connect may succeed later (the network is slow or dropped the
/// attempt).
fn retry_later(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::TimedOut
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::Interrupted
    )
}

/// The longest one connect attempt may block the others (a peer behind a network
/// that drops the attempt instead of refusing it).
const DIAL_ATTEMPT: Duration = Duration::from_secs(1);

/// Tries once to open `peer`'s first lane; `None`: not now, try again later. Once
/// the peer answers, its other lanes follow ([`open_lanes`]). A refused connection
/// is `PeerLost`: every rank's data listener is up before the rendezvous and open
/// while the process keeps a communicator of it, so a refusal means the peer is
/// gone.
fn dial_once(spec: &LazySpec<'_>, peer: usize) -> Result<Option<TcpLink>> {
    let addr = spec.addrs[peer];
    let left = remaining(spec.deadline).min(DIAL_ATTEMPT);
    match TcpStream::connect_timeout(&addr, left) {
        Ok(first) => open_lanes(spec, peer, first).map(Some),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Err(Error::PeerLost {
            rank: peer,
            reason: format!("its listener at {addr} refused the connection (first use)"),
        }),
        Err(e) if retry_later(&e) => Ok(None),
        Err(e) if fd_exhausted(&e) => Err(Error::io(
            format!("connecting to rank {peer}: {}", fd_limit_text()),
            e,
        )),
        Err(e) => Err(Error::io(format!("connecting to rank {peer} at {addr}"), e)),
    }
}

/// Sends the handshakes on `first` and on the other lanes to `peer`, which answered.
fn open_lanes(spec: &LazySpec<'_>, peer: usize, first: TcpStream) -> Result<TcpLink> {
    let me = spec.rank;
    let addr = spec.addrs[peer];
    let lanes = spec.nsocks + 1;
    let mut socks = Vec::with_capacity(lanes);
    let mut sessions = Vec::new();
    let mut first = Some(first);
    for lane in 0..lanes {
        let conn = match first.take() {
            Some(s) => Ok(s),
            None => connect_retry(addr, spec.deadline),
        };
        let s = conn.map_err(|e| match e {
            Error::Timeout { after, .. } => Error::Timeout {
                op: format!("connecting to rank {peer} at {addr} (first use)"),
                waiting_for: vec![peer],
                after,
            },
            Error::Io { source, .. } if fd_exhausted(&source) => Error::Io {
                context: format!("connecting to rank {peer}: {}", fd_limit_text()),
                source,
            },
            e => e,
        })?;
        let hello = DataHello {
            token: spec.token,
            from: me as u32,
            to: peer as u32,
            lane: lane as u16,
            lanes: lanes as u16,
        };
        sessions.push(open_lane(
            &s,
            &hello,
            spec.tls.filter(|_| spec.encrypts(peer)),
            addr,
            spec.deadline,
            |s| spec.tuning_for(peer, s),
        )?);
        socks.push(s);
    }
    let tls_lanes: Option<Vec<TlsStream>> = sessions.into_iter().collect();
    log_info!(
        Some(me),
        "connected rank {peer} over tcp{} on first use",
        if tls_lanes.is_some() { " with TLS" } else { "" }
    );
    Ok(link(peer, socks, tls_lanes))
}

/// Connects to each of `peers` (distinct, none of them `spec.rank`): dials the
/// lower ranks and takes the higher ranks' connections from `acceptor` as they
/// arrive, side by side, so that no peer waits on this rank for another one.
///
/// A lower peer whose listener refuses is gone: the call fails with
/// `Error::PeerLost` naming it, but only once the other peers are connected (or
/// `spec.deadline`), and the loss is reported on their new links before those
/// close, since they wait on this rank in the same call and would otherwise blame
/// it. Waiting for the dead one to time out instead would keep this rank out of
/// its communicator's shrink while the survivors that saw it die at once wait for
/// this rank in the shrunk one. A peer that does not answer by `spec.deadline` (a
/// higher one dead before it was ever connected) is named in `Error::Timeout`.
pub(crate) fn connect_peers(
    spec: &LazySpec<'_>,
    acceptor: &Acceptor,
    peers: &[usize],
) -> Result<Vec<TcpLink>> {
    let me = spec.rank;
    let start = Instant::now();
    let lanes = spec.nsocks + 1;
    // Connections of a communicator this rank has not joined yet are held as long
    // as this call may wait.
    let hold = stranger_hold(spec.deadline.saturating_duration_since(start));
    let mut out = Vec::with_capacity(peers.len());
    let mut dials: Vec<Dial> = peers
        .iter()
        .filter(|&&p| p < me)
        .map(|&peer| Dial {
            peer,
            next: start,
            pause: Duration::from_millis(1),
        })
        .collect();
    let mut waiting: Vec<usize> = peers.iter().copied().filter(|&p| p > me).collect();
    // The first peer found gone.
    let mut lost: Option<Error> = None;
    loop {
        let mut i = 0;
        while i < dials.len() {
            let d = &mut dials[i];
            if d.next > Instant::now() {
                i += 1;
                continue;
            }
            match dial_once(spec, d.peer) {
                Ok(Some(l)) => {
                    out.push(l);
                    dials.swap_remove(i);
                }
                Err(e @ Error::PeerLost { .. }) => {
                    log_warn!(Some(me), "{e}");
                    lost.get_or_insert(e);
                    dials.swap_remove(i);
                }
                Err(e) => return Err(e),
                Ok(None) => {
                    d.next = Instant::now() + d.pause;
                    d.pause = (d.pause * 2).min(Duration::from_millis(100));
                    i += 1;
                }
            }
        }
        acceptor.pump(me, spec.tls, hold)?;
        let mut i = 0;
        while i < waiting.len() {
            let peer = waiting[i];
            match acceptor.take(spec.token, peer, me) {
                Some(arrived) if arrived.len() != lanes => {
                    return Err(Error::invalid(format!(
                        "rank {peer} uses MIXCCL_NSOCKS={} but rank {me} uses {}",
                        arrived.len().saturating_sub(1),
                        spec.nsocks
                    )));
                }
                Some(arrived) => {
                    out.push(accepted(spec, peer, arrived)?);
                    waiting.swap_remove(i);
                }
                None => i += 1,
            }
        }
        if waiting.is_empty() && dials.is_empty() {
            return match lost {
                Some(e) => Err(report(e, &mut out)),
                None => Ok(out),
            };
        }
        if spec.abort.load(Ordering::SeqCst) {
            return Err(Error::Aborted);
        }
        if let (Some(e), true) = (&lost, Instant::now() >= spec.deadline) {
            return Err(report(e.clone(), &mut out));
        }
        if Instant::now() >= spec.deadline {
            let mut missing: Vec<usize> = dials.iter().map(|d| d.peer).collect();
            let op = match (missing.as_slice(), waiting.is_empty()) {
                ([peer], true) => format!(
                    "connecting to rank {peer} at {} (first use)",
                    spec.addrs[*peer]
                ),
                _ => format!("rank {me} waiting for peers to connect on first use"),
            };
            missing.extend(waiting);
            missing.sort_unstable();
            return Err(Error::Timeout {
                op,
                waiting_for: missing,
                after: start.elapsed(),
            });
        }
        let retry = dials
            .iter()
            .map(|d| d.next.saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::from_millis(100));
        let mut fds = acceptor.poll_fds();
        sys::poll(
            &mut fds,
            remaining(spec.deadline)
                .min(Duration::from_millis(100))
                .min(retry.max(Duration::from_millis(1))),
        )
        .map_err(|e| Error::io("polling the data listener", e))?;
    }
}

/// Sends `e` (a peer found gone) on `links`, made in the call it fails, before they
/// close: their peers wait on this rank in that call and learn the cause instead of
/// blaming this rank. Best effort.
fn report(e: Error, links: &mut [TcpLink]) -> Error {
    if let Some(msg) = encode_control(&e) {
        for l in links {
            let _ = l.send_control(&msg);
        }
    }
    e
}

/// The link made of the lanes `peer` opened to this rank, checked against this
/// rank's settings.
fn accepted(spec: &LazySpec<'_>, peer: usize, arrived: Vec<Arrived>) -> Result<TcpLink> {
    let me = spec.rank;
    let over_tls = arrived.iter().all(|a| a.tls.is_some());
    if spec.encrypts(peer) && !over_tls {
        return Err(Error::invalid(format!(
            "rank {peer} connected to rank {me} without TLS, but MIXCCL_TLS \
             encrypts this link (is MIXCCL_TLS set on rank {peer}?)"
        )));
    }
    let (mut socks, mut sessions) = (Vec::new(), Vec::new());
    for a in arrived {
        tune_socket(&a.stream, spec.tuning_for(peer, &a.stream))
            .map_err(|e| Error::io(format!("configuring the socket from rank {peer}"), e))?;
        socks.push(a.stream);
        sessions.push(a.tls);
    }
    let tls_lanes: Option<Vec<TlsStream>> = sessions.into_iter().collect();
    log_info!(
        Some(me),
        "accepted rank {peer} over tcp{} on first use",
        if tls_lanes.is_some() { " with TLS" } else { "" }
    );
    Ok(link(peer, socks, tls_lanes))
}

fn link(peer: usize, mut socks: Vec<TcpStream>, tls: Option<Vec<TlsStream>>) -> TcpLink {
    let control = socks.pop().expect("nsocks + 1 sockets");
    let tls = tls.map(|mut lanes| {
        let control = lanes.pop().expect("nsocks + 1 sessions");
        Box::new(TlsSessions { lanes, control })
    });
    TcpLink {
        peer,
        socks,
        control,
        ctl: ControlReader::default(),
        tls,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An acceptor on a loopback port of its own, admitting `token`.
    fn acceptor(token: [u8; 16]) -> (Acceptor, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let a = Acceptor::new(listener).unwrap();
        a.register(token);
        (a, addr)
    }

    /// Rank `from`'s lanes to rank 0 of `token`, handshakes sent.
    fn dial(addr: SocketAddr, token: [u8; 16], from: u32, lanes: u16) -> Vec<TcpStream> {
        (0..lanes)
            .map(|lane| {
                let mut s = TcpStream::connect(addr).unwrap();
                let hello = DataHello {
                    token,
                    from,
                    to: 0,
                    lane,
                    lanes,
                };
                s.write_all(&hello.encode()).unwrap();
                s
            })
            .collect()
    }

    /// Pumps `a` (holding strangers for `hold`) until `done` or 5 s.
    fn pump_until(a: &Acceptor, hold: Duration, done: impl Fn(&AcceptState) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            a.pump(0, None, hold).unwrap();
            if done(&a.state()) || Instant::now() > end {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the far end closed `s`, waiting up to `wait` for it (`false`: still
    /// open then).
    fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
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
    fn a_connection_for_a_token_registered_later_is_held_then_admitted() {
        let (a, addr) = acceptor([1; 16]);
        let shrunk = [2; 16];
        let mut socks = dial(addr, shrunk, 3, 2);
        let hold = Duration::from_secs(30);
        pump_until(&a, hold, |st| st.admission.held() == 2);
        assert_eq!(a.state().admission.held(), 2, "both lanes held");
        assert!(
            a.take(shrunk, 3, 0).is_none(),
            "not admitted before its token"
        );
        assert!(
            !socks
                .iter_mut()
                .any(|s| closed_within(s, Duration::from_millis(50))),
            "held, not closed"
        );
        a.register(shrunk);
        a.pump(0, None, hold).unwrap();
        let lanes = a.take(shrunk, 3, 0).expect("admitted once registered");
        assert_eq!(lanes.len(), 2);
        assert_eq!(a.state().admission.held(), 0);
    }

    #[test]
    fn strangers_are_dropped_when_their_time_is_up_or_their_token_is_forgotten() {
        let (a, addr) = acceptor([1; 16]);
        // Held for 100 ms, then closed by the next pump.
        let mut late = dial(addr, [3; 16], 1, 1);
        pump_until(&a, Duration::from_millis(100), |st| {
            st.admission.held() == 1
        });
        assert_eq!(a.state().admission.held(), 1);
        std::thread::sleep(Duration::from_millis(150));
        a.pump(0, None, Duration::from_millis(100)).unwrap();
        assert_eq!(a.state().admission.held(), 0);
        assert!(
            closed_within(&mut late[0], Duration::from_secs(2)),
            "dropped when its time was up"
        );
        // Held, then its communicator is destroyed here before it registered.
        let mut held = dial(addr, [4; 16], 1, 1);
        pump_until(&a, Duration::from_secs(30), |st| st.admission.held() == 1);
        assert_eq!(a.state().admission.held(), 1);
        a.forget([4; 16]);
        assert_eq!(a.state().admission.held(), 0);
        assert!(
            closed_within(&mut held[0], Duration::from_secs(2)),
            "dropped when its token was forgotten"
        );
        // A token forgotten before its connection arrives is refused at once.
        a.register([5; 16]);
        a.forget([5; 16]);
        let mut gone = dial(addr, [5; 16], 1, 1);
        pump_until(&a, Duration::from_secs(30), |st| {
            st.pending.is_empty() && st.admission.held() == 0
        });
        assert_eq!(
            a.state().admission.held(),
            0,
            "a forgotten token is not held"
        );
        assert!(closed_within(&mut gone[0], Duration::from_secs(2)));
        // The token the listener serves is admitted as before.
        let _live = dial(addr, [1; 16], 2, 1);
        pump_until(&a, Duration::from_secs(30), |st| st.arrived.len() == 1);
        assert!(a.take([1; 16], 2, 0).is_some());
    }
}
