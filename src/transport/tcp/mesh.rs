//! The TCP handshake: every rank listens; a rank connects `nsocks` sockets (plus a
//! control socket) to a lower rank, which admits them after checking their hello
//! (magic, version, token, ranks, lane; TLS first where `MIXCCL_TLS` says). Communicators
//! connect on first use (`lazy`); the eager mesh of every pair at once is kept for the
//! transport tests.

#[cfg(test)]
use super::link::TlsSessions;
use super::tls::{self, TlsContext, TlsStream};
#[cfg(test)]
use super::TcpLink;
#[cfg(test)]
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result, TransportError};
#[cfg(test)]
use crate::header::ControlReader;
use crate::sys;
use crate::transport::hello::{Hello, HELLO_LEN};
use std::io::{self, Read, Write};
#[cfg(test)]
use std::net::TcpListener;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How a data socket to one peer is set up ([`tune_socket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketTuning {
    /// SO_SNDBUF/SO_RCVBUF in bytes, 0 for the kernel's autotuning.
    pub buffer: usize,
    /// The peer has this rank's host identity: the bytes go through loopback.
    pub local: bool,
}

/// Congestion control of sockets to peers on this host. The default may pace
/// (`bbr` does, through a timer per burst when the qdisc is not `fq`); on loopback
/// nothing is congested, and the pacing timers cost about 6% of a 32 MiB TCP
/// all-reduce's CPU time on 4 ranks of a 2-core EPYC (docs/performance.md). Reno is
/// built into every kernel and allowed to unprivileged processes by default.
pub(crate) const LOCAL_CONGESTION: &str = "reno";

/// Applies the per-socket settings: TCP_NODELAY, optional fixed buffers, congestion
/// control without pacing to a peer on this host (best effort), non-blocking.
pub(crate) fn tune_socket(s: &TcpStream, t: SocketTuning) -> io::Result<()> {
    s.set_nodelay(true)?;
    if t.buffer > 0 {
        let b = t.buffer.min(i32::MAX as usize) as i32;
        // SO_*BUFFORCE exceeds net.core.{w,r}mem_max when privileged; fall back otherwise.
        if sys::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, b).is_err() {
            sys::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_SNDBUF, b)?;
        }
        if sys::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, b).is_err() {
            sys::setsockopt_int(s, libc::SOL_SOCKET, libc::SO_RCVBUF, b)?;
        }
    }
    if t.local {
        if let Err(e) = sys::set_congestion(s, LOCAL_CONGESTION) {
            crate::debug::log_info!(
                None,
                "TCP: congestion control {LOCAL_CONGESTION} refused on a socket to this host \
                 ({e}); keeping the default"
            );
        }
    }
    s.set_nonblocking(true)
}

/// Opens data lane `hello.lane` to rank `hello.to` at `addr` on the connected `s`:
/// sends the hello (inside a TLS session where `tls` is given, which comes back),
/// then applies `tuning(s)`. Both dialers use it: the lazy one on first use, and the
/// whole mesh of the tests.
pub(super) fn open_lane(
    s: &TcpStream,
    hello: &DataHello,
    tls: Option<&TlsContext>,
    addr: SocketAddr,
    deadline: Instant,
    tuning: impl FnOnce(&TcpStream) -> SocketTuning,
) -> Result<Option<TlsStream>> {
    let peer = hello.to;
    let session = match tls {
        Some(ctx) => {
            let what = format!("rank {peer} at {addr}");
            Some(tls::connect(ctx, s, &hello.encode(), deadline, &what)?)
        }
        None => {
            let mut w = s;
            w.set_write_timeout(Some(remaining(deadline)))
                .and_then(|_| w.write_all(&hello.encode()))
                .map_err(|e| Error::io(format!("sending the handshake to rank {peer}"), e))?;
            None
        }
    };
    tune_socket(s, tuning(s))
        .map_err(|e| Error::io(format!("configuring the socket to rank {peer}"), e))?;
    Ok(session)
}

const DATA_MAGIC: &[u8; 8] = b"MXDATA\0\0";
pub(super) const DATA_HELLO_LEN: usize = HELLO_LEN + 2 + 2;

/// The first bytes on every data connection (`transport::hello`): who is calling,
/// for which lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DataHello {
    pub token: [u8; 16],
    pub from: u32,
    pub to: u32,
    pub lane: u16,
    pub lanes: u16,
}

impl DataHello {
    pub(super) fn encode(&self) -> [u8; DATA_HELLO_LEN] {
        let mut b = [0u8; DATA_HELLO_LEN];
        let who = Hello {
            token: self.token,
            from: self.from,
            to: self.to,
        };
        who.encode(DATA_MAGIC, &mut b);
        b[HELLO_LEN..HELLO_LEN + 2].copy_from_slice(&self.lane.to_le_bytes());
        b[HELLO_LEN + 2..].copy_from_slice(&self.lanes.to_le_bytes());
        b
    }

    fn decode(b: &[u8; DATA_HELLO_LEN]) -> std::result::Result<DataHello, TransportError> {
        let who = Hello::decode(DATA_MAGIC, b)?;
        let u16at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(DataHello {
            token: who.token,
            from: who.from,
            to: who.to,
            lane: u16at(HELLO_LEN),
            lanes: u16at(HELLO_LEN + 2),
        })
    }
}

#[cfg(test)]
/// What a rank needs to join the data mesh.
pub(crate) struct MeshSpec<'a> {
    pub rank: usize,
    pub addrs: &'a [SocketAddr],
    /// `use_tcp[p]`: rank p is reached over TCP (others use another transport).
    pub use_tcp: &'a [bool],
    pub token: [u8; 16],
    pub nsocks: usize,
    /// `MIXCCL_SOCKET_BUFFER` (0: automatic, see [`MeshSpec::buffer_for`]).
    pub socket_buffer: usize,
    /// `same_host[p]`: rank p has this rank's host identity (over TCP only when shared
    /// memory is off).
    pub same_host: &'a [bool],
    /// This rank's TLS certificates (`MIXCCL_TLS` not off).
    pub tls: Option<&'a TlsContext>,
    /// `encrypt[p]`: the link to rank p must carry TLS (`tls::encrypted_peers`).
    pub encrypt: &'a [bool],
    pub deadline: Instant,
}

#[cfg(test)]
impl MeshSpec<'_> {
    /// Sockets per peer: the data lanes and the control connection.
    fn sockets(&self) -> usize {
        self.nsocks + 1
    }

    /// Whether the link to `peer` must carry TLS.
    fn encrypts(&self, peer: usize) -> bool {
        self.encrypt.get(peer).copied().unwrap_or(false)
    }

    /// How socket `s` to `peer` is set up ([`socket_buffer_for`]).
    fn tuning_for(&self, peer: usize, s: &TcpStream) -> SocketTuning {
        let local = self.same_host.get(peer).copied().unwrap_or(false);
        SocketTuning {
            buffer: socket_buffer_for(self.socket_buffer, local, self.nsocks, s),
            local,
        }
    }
}

/// SO_SNDBUF/SO_RCVBUF for socket `s`: `setting` (`MIXCCL_SOCKET_BUFFER`) if not 0,
/// else a core's L2 to a peer on this host (`local`; `cpu::Tuning::local_socket_buffer`,
/// whose doc has the measurements), and to other hosts
/// the kernel's autotuning (0) unless the bandwidth-delay product of `nsocks`
/// streams needs more (`bdp`).
pub(super) fn socket_buffer_for(
    setting: usize,
    local: bool,
    nsocks: usize,
    s: &TcpStream,
) -> usize {
    match setting {
        0 if local => crate::cpu::tuning().local_socket_buffer,
        0 => super::bdp::buffer_for_socket(s, nsocks),
        b => b,
    }
}

#[cfg(test)]
/// Connects `nsocks` sockets to every lower rank and accepts them from every higher
/// rank on `listener`. Connections that fail the handshake are closed and logged;
/// ranks still missing at the deadline are named in `Error::Timeout`.
pub(crate) fn connect_mesh(
    spec: &MeshSpec<'_>,
    listener: &TcpListener,
) -> Result<Vec<Option<TcpLink>>> {
    let n = spec.addrs.len();
    let me = spec.rank;
    let mut socks: Vec<Vec<Option<TcpStream>>> = (0..n)
        .map(|_| (0..spec.sockets()).map(|_| None).collect())
        .collect();
    let mut tls_slots: Vec<Vec<Option<TlsStream>>> = (0..n)
        .map(|_| (0..spec.sockets()).map(|_| None).collect())
        .collect();
    for (peer, lanes) in socks
        .iter_mut()
        .enumerate()
        .take(me)
        .filter(|(p, _)| spec.use_tcp[*p])
    {
        for (lane, slot) in lanes.iter_mut().enumerate() {
            let s = connect_retry(spec.addrs[peer], spec.deadline).map_err(|e| match e {
                Error::Timeout { after, .. } => Error::Timeout {
                    op: format!("init: connecting to rank {peer} at {}", spec.addrs[peer]),
                    waiting_for: vec![peer],
                    after,
                },
                e => e,
            })?;
            let hello = DataHello {
                token: spec.token,
                from: me as u32,
                to: peer as u32,
                lane: lane as u16,
                lanes: spec.sockets() as u16,
            };
            tls_slots[peer][lane] = open_lane(
                &s,
                &hello,
                spec.tls.filter(|_| spec.encrypts(peer)),
                spec.addrs[peer],
                spec.deadline,
                |s| spec.tuning_for(peer, s),
            )?;
            *slot = Some(s);
        }
    }
    accept_peers(spec, listener, &mut socks, &mut tls_slots)?;
    Ok(socks
        .into_iter()
        .zip(tls_slots)
        .enumerate()
        .map(|(peer, (lanes, tls_lanes))| {
            (spec.use_tcp[peer]).then(|| {
                let tls = tls_lanes
                    .into_iter()
                    .collect::<Option<Vec<TlsStream>>>()
                    .map(|mut lanes| {
                        let control = lanes.pop().expect("sockets() is nsocks + 1");
                        Box::new(TlsSessions { lanes, control })
                    });
                let mut socks: Vec<TcpStream> = lanes
                    .into_iter()
                    .map(|s| s.expect("every lane connected"))
                    .collect();
                let control = socks.pop().expect("sockets() is nsocks + 1");
                TcpLink {
                    peer,
                    socks,
                    control,
                    ctl: ControlReader::default(),
                    tls,
                }
            })
        })
        .collect())
}

pub(super) fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Connects to `addr`, retrying refused or reset connections (the listener may not be
/// up yet, or its backlog may be full) until `deadline`.
pub(crate) fn connect_retry(addr: SocketAddr, deadline: Instant) -> Result<TcpStream> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout {
                op: format!("connecting to {addr}"),
                waiting_for: vec![],
                after: start.elapsed(),
            });
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(Error::io(format!("connecting to {addr}"), e)),
        }
    }
}

/// A connection whose handshake is still arriving.
pub(super) struct Pending {
    pub stream: TcpStream,
    pub from: SocketAddr,
    pub buf: Vec<u8>,
    /// The caller opened with a TLS ClientHello: the hello arrives through it.
    pub tls: Option<TlsStream>,
}

#[cfg(test)]
fn accept_peers(
    spec: &MeshSpec<'_>,
    listener: &TcpListener,
    socks: &mut [Vec<Option<TcpStream>>],
    tls_slots: &mut [Vec<Option<TlsStream>>],
) -> Result<()> {
    let me = spec.rank;
    // Why connections were refused, for the timeout's message (TLS failures name no
    // rank: the hello comes after the handshake).
    let mut refused: Vec<String> = Vec::new();
    let n = spec.addrs.len();
    let missing = |socks: &[Vec<Option<TcpStream>>]| -> Vec<usize> {
        (me + 1..n)
            .filter(|p| spec.use_tcp[*p] && socks[*p].iter().any(Option::is_none))
            .collect()
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("making the listener non-blocking", e))?;
    let start = Instant::now();
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        let left = missing(socks);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() >= spec.deadline {
            return Err(Error::Timeout {
                op: if refused.is_empty() {
                    "init: waiting for connections from higher ranks".into()
                } else {
                    format!(
                        "init: waiting for connections from higher ranks (refused: {})",
                        refused.join("; ")
                    )
                },
                waiting_for: left,
                after: start.elapsed(),
            });
        }
        let mut fds = vec![sys::pollfd(listener.as_raw_fd(), libc::POLLIN)];
        fds.extend(pending.iter().map(|p| {
            let events = p.tls.as_ref().map_or(libc::POLLIN, TlsStream::events);
            sys::pollfd(p.stream.as_raw_fd(), events)
        }));
        sys::poll(
            &mut fds,
            remaining(spec.deadline).min(Duration::from_millis(200)),
        )
        .map_err(|e| Error::io("polling the listener", e))?;
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if pending.len() >= 1024 {
                        log_warn!(
                            Some(me),
                            "dropping connection from {from}: too many pending handshakes"
                        );
                        continue;
                    }
                    stream
                        .set_nonblocking(true)
                        .map_err(|e| Error::io("configuring an accepted socket", e))?;
                    pending.push(Pending {
                        stream,
                        from,
                        buf: Vec::with_capacity(DATA_HELLO_LEN),
                        tls: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("accepting a connection", e)),
            }
        }
        let mut i = 0;
        while i < pending.len() {
            match read_hello(&mut pending[i], spec.tls) {
                Ok(None) => i += 1,
                Ok(Some(hello)) => {
                    let mut p = pending.swap_remove(i);
                    match admit(spec, &hello, socks, p.tls.is_some()) {
                        Ok(()) => {
                            if let Some(t) = &mut p.tls {
                                // The connecting rank waits for this before going on.
                                let fd = p.stream.as_raw_fd();
                                if let Err(e) = t.queue(&[tls::ADMITTED]).and_then(|_| t.flush(fd))
                                {
                                    refuse(
                                        &mut refused,
                                        me,
                                        p.from,
                                        format!("sending the TLS ack: {e}"),
                                    );
                                    continue;
                                }
                            }
                            tune_socket(&p.stream, spec.tuning_for(hello.from as usize, &p.stream))
                                .map_err(|e| {
                                    Error::io(
                                        format!("configuring the socket from rank {}", hello.from),
                                        e,
                                    )
                                })?;
                            socks[hello.from as usize][hello.lane as usize] = Some(p.stream);
                            tls_slots[hello.from as usize][hello.lane as usize] = p.tls;
                        }
                        Err(why) => refuse(&mut refused, me, p.from, why),
                    }
                }
                Err(why) => {
                    let p = pending.swap_remove(i);
                    let who = rank_hint(spec, p.from);
                    refuse(&mut refused, me, p.from, format!("{who}{why}"));
                }
            }
        }
    }
}

/// Logs a refused connection and keeps the first few reasons for the timeout.
#[cfg(test)]
fn refuse(refused: &mut Vec<String>, me: usize, from: SocketAddr, why: String) {
    log_warn!(Some(me), "rejected connection from {from}: {why}");
    if refused.len() < 4 {
        refused.push(format!("{from}: {why}"));
    }
}

/// "(rank r) " when the address is a higher rank's host, for messages about
/// connections refused before their hello named the rank.
#[cfg(test)]
fn rank_hint(spec: &MeshSpec<'_>, from: SocketAddr) -> String {
    let ranks: Vec<String> = (spec.rank + 1..spec.addrs.len())
        .filter(|&r| spec.addrs[r].ip() == from.ip())
        .map(|r| r.to_string())
        .collect();
    match ranks.len() {
        0 => String::new(),
        1 => format!("(rank {}) ", ranks[0]),
        _ => format!("(one of ranks {}) ", ranks.join(", ")),
    }
}

pub(super) fn read_hello(
    p: &mut Pending,
    ctx: Option<&TlsContext>,
) -> std::result::Result<Option<DataHello>, String> {
    let mut chunk = [0u8; DATA_HELLO_LEN];
    let want = DATA_HELLO_LEN - p.buf.len();
    if let Some(t) = &mut p.tls {
        let fd = p.stream.as_raw_fd();
        t.handshake_step(fd).map_err(|e| e.to_string())?;
        if t.is_handshaking() {
            return Ok(None);
        }
        return match t.recv(fd, &mut chunk[..want]).map_err(|e| e.to_string())? {
            None => Err("closed the TLS connection before its hello".into()),
            Some(k) => {
                p.buf.extend_from_slice(&chunk[..k]);
                if p.buf.len() < DATA_HELLO_LEN {
                    return Ok(None);
                }
                let b: &[u8; DATA_HELLO_LEN] = p.buf[..].try_into().expect("full hello");
                DataHello::decode(b).map(Some).map_err(|e| e.to_string())
            }
        };
    }
    match p.stream.read(&mut chunk[..want]) {
        Ok(0) => Err("closed before completing the handshake".into()),
        Ok(k) if p.buf.is_empty() && chunk[0] == tls::TLS_HANDSHAKE_BYTE => {
            let Some(ctx) = ctx else {
                return Err("opened TLS, but MIXCCL_TLS is off on this rank".into());
            };
            let mut t = TlsStream::new(ctx.server().map_err(|e| e.to_string())?);
            t.feed(&chunk[..k]).map_err(|e| e.to_string())?;
            p.tls = Some(t);
            read_hello(p, Some(ctx))
        }
        Ok(k) => {
            p.buf.extend_from_slice(&chunk[..k]);
            if p.buf.len() < DATA_HELLO_LEN {
                return Ok(None);
            }
            let b: &[u8; DATA_HELLO_LEN] = p.buf[..].try_into().expect("full hello");
            DataHello::decode(b).map(Some).map_err(|e| e.to_string())
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(format!("read failed: {e}")),
    }
}

#[cfg(test)]
fn admit(
    spec: &MeshSpec<'_>,
    h: &DataHello,
    socks: &[Vec<Option<TcpStream>>],
    over_tls: bool,
) -> std::result::Result<(), String> {
    let n = spec.addrs.len();
    if h.token != spec.token {
        return Err("wrong communicator token".into());
    }
    if h.to as usize != spec.rank {
        return Err(format!(
            "addressed to rank {}, this is rank {}",
            h.to, spec.rank
        ));
    }
    let from = h.from as usize;
    if from >= n || from <= spec.rank || !spec.use_tcp[from] {
        return Err(format!(
            "claims rank {from}, expected one of {}..{n}",
            spec.rank + 1
        ));
    }
    if spec.encrypts(from) && !over_tls {
        return Err(format!(
            "rank {from} connected without TLS, but MIXCCL_TLS encrypts this link \
             (is MIXCCL_TLS set on rank {from}?)"
        ));
    }
    if h.lanes as usize != spec.sockets() {
        return Err(format!(
            "rank {from} uses MIXCCL_NSOCKS={} but this rank uses {}",
            usize::from(h.lanes).saturating_sub(1),
            spec.nsocks
        ));
    }
    if h.lane as usize >= spec.sockets() {
        return Err(format!("lane {} out of range", h.lane));
    }
    if socks[from][h.lane as usize].is_some() {
        return Err(format!(
            "duplicate connection for rank {from} lane {}",
            h.lane
        ));
    }
    log_info!(
        Some(spec.rank),
        "connected rank {from} lane {} over tcp{}",
        h.lane,
        if over_tls { " with TLS" } else { "" }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_hello_round_trips() {
        let h = DataHello {
            token: [3; 16],
            from: 5,
            to: 2,
            lane: 1,
            lanes: 2,
        };
        assert_eq!(DataHello::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[0] = b'X';
        assert!(DataHello::decode(&b).is_err());
        crate::fuzz::mutations(&h.encode(), 30_000, |b| {
            if let Ok(b) = <&[u8; DATA_HELLO_LEN]>::try_from(b) {
                let _ = DataHello::decode(b);
            }
        });
    }
}
