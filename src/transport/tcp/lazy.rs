//! Connections on demand: a rank connects to a peer the first time one of its
//! calls needs that peer, never before. Of each pair the higher rank connects and
//! the lower one accepts (as in `mesh`, same handshake), each when its own schedule
//! first names the other; the peer's schedule names us in the same call, so both
//! ends agree without any extra message. Connections that arrive before the
//! accepting rank needs them wait, admitted, in the [`Acceptor`], which the
//! communicators sharing one listener (a communicator and those shrunk from it)
//! share.

use super::link::TlsSessions;
use super::mesh::{read_hello, remaining, tune_socket, DataHello, Pending, DATA_HELLO_LEN};
use super::tls::{self, TlsContext, TlsStream};
use super::{connect_retry, TcpLink};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::header::ControlReader;
use crate::sys;
use crate::transport::hello::LiveTokens;
use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most connections whose handshake is still arriving; more are dropped (and their
/// sender retries nothing: it is a stranger or it will time out naming us).
const MAX_PENDING: usize = 1024;

/// A listener and the data connections it admitted that no call has taken yet.
pub(crate) struct Acceptor {
    listener: TcpListener,
    state: Mutex<AcceptState>,
}

#[derive(Default)]
struct AcceptState {
    pending: Vec<Pending>,
    /// Tokens of the communicators using this listener; others are refused.
    live: LiveTokens,
    /// Admitted sockets by (token, sender rank): the rank addressed and one slot per
    /// lane, with its TLS session where the sender opened one.
    arrived: HashMap<([u8; 16], u32), ArrivedLanes>,
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
        self.state().live.register(token);
    }

    /// Refuses `token` from now on and closes what arrived for it.
    pub(crate) fn forget(&self, token: [u8; 16]) {
        let mut st = self.state();
        st.live.forget(token);
        st.arrived.retain(|k, _| k.0 != token);
    }

    /// Accepts what the listener has and reads the handshakes that have arrived,
    /// without blocking; `ctx` answers senders that open TLS.
    fn pump(&self, me: usize, ctx: Option<&TlsContext>) -> Result<()> {
        let mut st = self.state();
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
                    if let Err(why) = st.admit(&h, arrived) {
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
        if !self.live.contains(&h.token) {
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
    /// SO_SNDBUF/SO_RCVBUF for socket `s` to `peer` (`mesh::socket_buffer_for`).
    fn buffer_for(&self, peer: usize, s: &TcpStream) -> usize {
        let local = self.same_host.get(peer).copied().unwrap_or(false);
        super::mesh::socket_buffer_for(self.socket_buffer, local, self.nsocks, s)
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

/// Connects to each of `peers` (distinct, none of them `spec.rank`): dials the
/// lower ranks, then takes the higher ranks' connections from `acceptor` as they
/// arrive. A peer that does not answer by `spec.deadline` (dead before it was ever
/// connected) is named in `Error::Timeout`.
pub(crate) fn connect_peers(
    spec: &LazySpec<'_>,
    acceptor: &Acceptor,
    peers: &[usize],
) -> Result<Vec<TcpLink>> {
    let me = spec.rank;
    let start = Instant::now();
    let lanes = spec.nsocks + 1;
    let mut out = Vec::with_capacity(peers.len());
    for &peer in peers.iter().filter(|&&p| p < me) {
        let mut socks = Vec::with_capacity(lanes);
        let mut sessions = Vec::new();
        for lane in 0..lanes {
            let addr = spec.addrs[peer];
            let mut s = connect_retry(addr, spec.deadline).map_err(|e| match e {
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
            match spec.tls.filter(|_| spec.encrypts(peer)) {
                Some(ctx) => {
                    let what = format!("rank {peer} at {addr}");
                    let t = tls::connect(ctx, &s, &hello.encode(), spec.deadline, &what)?;
                    sessions.push(Some(t));
                }
                None => {
                    s.set_write_timeout(Some(remaining(spec.deadline)))
                        .and_then(|_| s.write_all(&hello.encode()))
                        .map_err(|e| {
                            Error::io(format!("sending the handshake to rank {peer}"), e)
                        })?;
                    sessions.push(None);
                }
            }
            tune_socket(&s, spec.buffer_for(peer, &s))
                .map_err(|e| Error::io(format!("configuring the socket to rank {peer}"), e))?;
            socks.push(s);
        }
        let tls_lanes: Option<Vec<TlsStream>> = sessions.into_iter().collect();
        log_info!(
            Some(me),
            "connected rank {peer} over tcp{} on first use",
            if tls_lanes.is_some() { " with TLS" } else { "" }
        );
        out.push(link(peer, socks, tls_lanes));
    }
    let mut waiting: Vec<usize> = peers.iter().copied().filter(|&p| p > me).collect();
    loop {
        acceptor.pump(me, spec.tls)?;
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
                    let over_tls = arrived.iter().all(|a| a.tls.is_some());
                    if spec.encrypts(peer) && !over_tls {
                        return Err(Error::invalid(format!(
                            "rank {peer} connected to rank {me} without TLS, but MIXCCL_TLS \
                             encrypts this link (is MIXCCL_TLS set on rank {peer}?)"
                        )));
                    }
                    let (mut socks, mut sessions) = (Vec::new(), Vec::new());
                    for a in arrived {
                        tune_socket(&a.stream, spec.buffer_for(peer, &a.stream)).map_err(|e| {
                            Error::io(format!("configuring the socket from rank {peer}"), e)
                        })?;
                        socks.push(a.stream);
                        sessions.push(a.tls);
                    }
                    let tls_lanes: Option<Vec<TlsStream>> = sessions.into_iter().collect();
                    log_info!(
                        Some(me),
                        "accepted rank {peer} over tcp{} on first use",
                        if tls_lanes.is_some() { " with TLS" } else { "" }
                    );
                    out.push(link(peer, socks, tls_lanes));
                    waiting.swap_remove(i);
                }
                None => i += 1,
            }
        }
        if waiting.is_empty() {
            return Ok(out);
        }
        if spec.abort.load(Ordering::SeqCst) {
            return Err(Error::Aborted);
        }
        if Instant::now() >= spec.deadline {
            waiting.sort_unstable();
            return Err(Error::Timeout {
                op: format!("rank {me} waiting for peers to connect on first use"),
                waiting_for: waiting,
                after: start.elapsed(),
            });
        }
        let mut fds = acceptor.poll_fds();
        sys::poll(
            &mut fds,
            remaining(spec.deadline).min(Duration::from_millis(100)),
        )
        .map_err(|e| Error::io("polling the data listener", e))?;
    }
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
