//! The root rendezvous: a thread that admits each rank's hello (magic, version,
//! token, rank in range, no duplicate), then hands out the address table (repeated
//! infos sent once, [`encode_table`]) down the tree of its ranks (`tree`: the table
//! to the first few, to every other rank the rank it gets it from) and closes every
//! connection.
//! Strangers are closed and logged; a rank refused (duplicate, other nranks or
//! ids) is told why at once; if ranks are missing at the deadline (timeout after
//! the first hello), every joined rank is told which ones. One of several roots
//! (`scalable`) gathers its slice only: root 0 also takes the other roots' slices
//! and answers them with the table; the others send theirs to root 0 and pass
//! its answer on. The thread, and with it every socket, ends after the table.

use crate::bootstrap::scalable::{
    self, encode_slice, parse_slice, Scale, Slice, FULL_MAGIC, SCALE_EXT, SCALE_HELLO_MAGIC,
    SCALE_TREE_HELLO_MAGIC, SLICE_MAGIC,
};
use crate::bootstrap::{
    self, tree, ADDR_LEN, FAIL_MAGIC, HELLO_HEADER, HELLO_MAGIC, MAX_INFO, REFUSE_MAGIC, REF_MARK,
    TABLE_MAGIC, TREE_HELLO_MAGIC,
};
use crate::config::{Config, TlsPolicy};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::tcp::tls::{self, TlsContext, TlsStream};
use crate::wire::MAX_RANKS;
use crate::UniqueId;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most connections whose hello is still arriving; more are closed at once.
const MAX_PENDING: usize = 1024;
/// How long a connection may take to deliver its hello.
const HELLO_GRACE: Duration = Duration::from_secs(10);

/// Binds `addr` and serves one rendezvous on a background thread; returns the bound address.
/// `config` gives the timeout and `MIXCCL_TLS` with its files: ranks the policy
/// encrypts must come over TLS (`tls::bootstrap_encrypts`).
pub(crate) fn spawn(addr: SocketAddr, token: [u8; 16], config: &Config) -> Result<SocketAddr> {
    let timeout = config.timeout;
    let tls = TlsContext::from_config(config)?.map(|ctx| (ctx, config.tls));
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::io(format!("binding the bootstrap root on {addr}"), e))?;
    sys::widen_backlog(&listener)
        .map_err(|e| Error::io("widening the bootstrap root's accept queue", e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("reading the root address", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("making the root listener non-blocking", e))?;
    std::thread::Builder::new()
        .name("mixccl-root".into())
        .spawn(move || Root::new(token, timeout, tls).serve(listener))
        .map_err(|e| Error::io("starting the bootstrap root thread", e))?;
    log_info!(None, "bootstrap root listening on {bound}");
    Ok(bound)
}

/// A connection whose first message is still arriving (at a root, or at a rank's
/// tree listener).
pub(crate) struct Pending {
    pub stream: TcpStream,
    pub from: SocketAddr,
    pub buf: Vec<u8>,
    since: Instant,
    /// The sender opened TLS: its message arrives through it.
    pub tls: Option<TlsStream>,
}

impl Pending {
    pub(crate) fn new(stream: TcpStream, from: SocketAddr) -> Pending {
        Pending {
            stream,
            from,
            buf: Vec::new(),
            since: Instant::now(),
            tls: None,
        }
    }
}

/// Reads what `p` has sent (without blocking) until `parse` finds a complete
/// message in `p.buf`; `parse` answers `Ok(Err(more))` while at least `more` bytes
/// are missing. A sender that opens TLS is answered with `ctx` (refused when
/// `None`). `Ok(None)`: not complete yet.
pub(crate) fn receive<T>(
    p: &mut Pending,
    ctx: Option<&TlsContext>,
    parse: impl Fn(&[u8]) -> std::result::Result<std::result::Result<T, usize>, String>,
) -> std::result::Result<Option<T>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        let want = match parse(&p.buf)? {
            Ok(m) => return Ok(Some(m)),
            Err(more) => more,
        };
        let take = want.min(chunk.len());
        if let Some(t) = &mut p.tls {
            let fd = p.stream.as_raw_fd();
            t.handshake_step(fd).map_err(|e| e.to_string())?;
            if t.is_handshaking() {
                return Ok(None);
            }
            match t.recv(fd, &mut chunk[..take]).map_err(|e| e.to_string())? {
                None => return Err("closed the TLS connection before its message".into()),
                Some(0) => return Ok(None),
                Some(k) => p.buf.extend_from_slice(&chunk[..k]),
            }
            continue;
        }
        match p.stream.read(&mut chunk[..take]) {
            Ok(0) => return Err("closed before completing its message".into()),
            Ok(k) if p.buf.is_empty() && chunk[0] == tls::TLS_HANDSHAKE_BYTE => {
                let Some(ctx) = ctx else {
                    return Err("opened TLS, but MIXCCL_TLS is off here".into());
                };
                let mut t = TlsStream::new(ctx.server().map_err(|e| e.to_string())?);
                t.feed(&chunk[..k]).map_err(|e| e.to_string())?;
                p.tls = Some(t);
            }
            Ok(k) => p.buf.extend_from_slice(&chunk[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

struct Joined {
    stream: TcpStream,
    info: Vec<u8>,
    tls: Option<TlsStream>,
    /// Its tree listener's port.
    tree: u16,
}

/// Another root's slice, held by root 0 until the table goes back to it.
struct PeerRoot {
    stream: TcpStream,
    tls: Option<TlsStream>,
    infos: Vec<Vec<u8>>,
}

/// What the first hello (or slice) fixed, and every later one must repeat.
struct Mode {
    nranks: usize,
    scale: Scale,
    /// The ranks this root gathers (all of them with one root).
    slice: Range<usize>,
}

struct Root {
    token: [u8; 16],
    /// This rank's certificates and `MIXCCL_TLS`, when not off.
    tls: Option<(Arc<TlsContext>, TlsPolicy)>,
    timeout: Duration,
    /// Why ranks were refused (at most `MAX_REFUSED`), for the failure report.
    refused: Vec<String>,
    mode: Option<Mode>,
    /// This root's slice, by rank - `slice.start`.
    joined: Vec<Option<Joined>>,
    /// Root 0 of several: the other roots' slices, by root index (0 unused).
    peers: Vec<Option<PeerRoot>>,
}

/// What the root makes of a complete hello.
#[derive(Debug)]
struct Hello {
    rank: usize,
    nranks: usize,
    info: Vec<u8>,
    scale: Scale,
    /// The port of the rank's tree listener; `None` from a build before the tree.
    tree: Option<u16>,
}

/// A complete message on a connection to the root.
#[derive(Debug)]
enum Incoming {
    Hello(Hello),
    Slice(Slice),
}

/// Parses what a connection sent so far: `Ok(Err(more))` if at least `more`
/// bytes are still needed.
fn parse(
    buf: &[u8],
    token: &[u8; 16],
) -> std::result::Result<std::result::Result<Incoming, usize>, String> {
    if buf.len() < 8 {
        if !HELLOS.iter().any(|(m, ..)| m.starts_with(buf)) && !SLICE_MAGIC.starts_with(buf) {
            return Err("bad magic".into());
        }
        return Ok(Err(8 - buf.len()));
    }
    if &buf[..8] == SLICE_MAGIC {
        return match parse_slice(buf, token) {
            Err(more) => Ok(Err(more)),
            Ok(Ok(s)) => Ok(Ok(Incoming::Slice(s))),
            Ok(Err(why)) => Err(why),
        };
    }
    Ok(parse_hello(buf, token)?.map(Incoming::Hello))
}

/// The hellos: magic, whether it is to one of several roots, whether it carries
/// a tree port. The two without a port come from builds before the bootstrap tree:
/// parsed, to be refused by name.
const HELLOS: [(&[u8; 8], bool, bool); 4] = [
    (TREE_HELLO_MAGIC, false, true),
    (SCALE_TREE_HELLO_MAGIC, true, true),
    (HELLO_MAGIC, false, false),
    (SCALE_HELLO_MAGIC, true, false),
];

/// Parses a hello (plain or to one of several roots) from `buf`: `Ok(Err(more))`
/// if at least `more` bytes are still needed.
fn parse_hello(
    buf: &[u8],
    token: &[u8; 16],
) -> std::result::Result<std::result::Result<Hello, usize>, String> {
    let opened = &buf[..buf.len().min(8)];
    if !HELLOS.iter().any(|(m, ..)| m.starts_with(opened)) {
        return Err("bad magic".into());
    }
    if buf.len() < 8 {
        return Ok(Err(8 - buf.len()));
    }
    let &(_, scalable, tree) = HELLOS
        .iter()
        .find(|(m, ..)| &m[..] == opened)
        .expect("one magic matches all 8 bytes");
    let ext = HELLO_HEADER + if scalable { SCALE_EXT } else { 0 };
    let header = ext + if tree { 2 } else { 0 };
    if buf.len() < header {
        return Ok(Err(header - buf.len()));
    }
    bootstrap::version_and_token(buf, token)?;
    let u32at = |i: usize| bootstrap::u32_at(buf, i) as usize;
    let (rank, nranks, len) = (u32at(26), u32at(30), u32at(34));
    if nranks == 0 || nranks > MAX_RANKS {
        return Err(format!("nranks {nranks} out of range"));
    }
    if rank >= nranks {
        return Err(format!("rank {rank} >= nranks {nranks}"));
    }
    if len > MAX_INFO {
        return Err(format!("info of {len} bytes exceeds {MAX_INFO}"));
    }
    let scale = match scalable {
        true => {
            Scale::decode(&buf[HELLO_HEADER..ext]).map_err(|why| format!("rank {rank}: {why}"))?
        }
        false => Scale::SINGLE,
    };
    let tree = tree.then(|| u16::from_le_bytes([buf[ext], buf[ext + 1]]));
    if buf.len() < header + len {
        return Ok(Err(header + len - buf.len()));
    }
    Ok(Ok(Hello {
        rank,
        nranks,
        info: buf[header..header + len].to_vec(),
        scale,
        tree,
    }))
}

impl Root {
    fn new(token: [u8; 16], timeout: Duration, tls: Option<(Arc<TlsContext>, TlsPolicy)>) -> Root {
        Root {
            token,
            tls,
            timeout,
            refused: Vec::new(),
            mode: None,
            joined: Vec::new(),
            peers: Vec::new(),
        }
    }

    /// Ranks of this root's slice that have not joined.
    fn missing(&self) -> Vec<usize> {
        let Some(m) = &self.mode else {
            return Vec::new();
        };
        m.slice
            .clone()
            .filter(|r| self.joined[r - m.slice.start].is_none())
            .collect()
    }

    /// Root 0 of several: the roots whose slice has not come.
    fn missing_roots(&self) -> Vec<usize> {
        (1..self.peers.len())
            .filter(|&i| self.peers[i].is_none())
            .collect()
    }

    /// "root i of k", or "the root" with one.
    fn name(&self) -> String {
        match &self.mode {
            Some(m) if m.scale.nroots > 1 => {
                format!("root {} of {}", m.scale.index, m.scale.nroots)
            }
            _ => "the root".into(),
        }
    }

    fn serve(mut self, listener: TcpListener) {
        let mut deadline = Instant::now() + self.timeout;
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            if self.mode.is_some() && self.missing().is_empty() && self.missing_roots().is_empty() {
                match self.mode.as_ref().map_or(0, |m| m.scale.index) {
                    0 => self.send_table(),
                    _ => self.exchange(),
                }
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                self.send_failure();
                return;
            }
            let mut fds = vec![sys::pollfd(listener.as_raw_fd(), libc::POLLIN)];
            fds.extend(pending.iter().map(|p| {
                let events = p.tls.as_ref().map_or(libc::POLLIN, TlsStream::events);
                sys::pollfd(p.stream.as_raw_fd(), events)
            }));
            let wait = (deadline - now).min(Duration::from_millis(500));
            if let Err(e) = sys::poll(&mut fds, wait) {
                log_warn!(None, "bootstrap root: poll failed: {e}");
                return;
            }
            self.accept(&listener, &mut pending);
            let mut i = 0;
            while i < pending.len() {
                match self.progress(&mut pending[i]) {
                    Ok(None) if pending[i].since.elapsed() < HELLO_GRACE => i += 1,
                    Ok(None) => {
                        let p = pending.swap_remove(i);
                        log_warn!(
                            None,
                            "bootstrap root: closed {}: no complete hello within {HELLO_GRACE:?}",
                            p.from
                        );
                    }
                    Ok(Some(incoming)) => {
                        let p = pending.swap_remove(i);
                        let required = self.tls.as_ref().is_some_and(|(_, policy)| {
                            tls::bootstrap_encrypts(*policy, p.from.ip())
                        });
                        let who = match &incoming {
                            Incoming::Hello(h) => format!("rank {}", h.rank),
                            Incoming::Slice(s) => format!("root {} of {}", s.index, s.nroots),
                        };
                        if required && p.tls.is_none() {
                            let why = format!(
                                "{who} at {} was refused: it connected without TLS, but \
                                 MIXCCL_TLS={} at the root encrypts it (is MIXCCL_TLS set on {who}?)",
                                p.from,
                                self.tls.as_ref().map_or("off", |(_, policy)| policy.name()),
                            );
                            log_warn!(None, "bootstrap root: {why}");
                            match &incoming {
                                Incoming::Hello(h) => {
                                    refuse_plain(p.stream, h.rank, &why, self.timeout)
                                }
                                // A root reads refusals (`ask_root0`).
                                Incoming::Slice(_) => {
                                    let mut stream = p.stream;
                                    let _ = send(&mut stream, None, &refusal(&why), self.timeout);
                                }
                            }
                            if self.refused.len() < MAX_REFUSED {
                                self.refused.push(why);
                            }
                            continue;
                        }
                        let admitted = match incoming {
                            Incoming::Hello(h) => self.admit(p.stream, p.tls, h, &mut deadline),
                            Incoming::Slice(s) => {
                                self.admit_slice(p.stream, p.tls, s, &mut deadline)
                            }
                        };
                        if let Err((why, stream, tls)) = admitted {
                            log_warn!(None, "bootstrap root: refused {who} at {}: {why}", p.from);
                            self.refuse(stream, tls, &who, &why);
                        }
                    }
                    Err(why) => {
                        let p = pending.swap_remove(i);
                        log_warn!(None, "bootstrap root: closed {}: {why}", p.from);
                        // A failed TLS handshake (certificate, key, CA) names no rank
                        // yet; the failure report carries it to the ranks that joined.
                        if p.tls.is_some() && self.refused.len() < MAX_REFUSED {
                            self.refused.push(format!("{} failed TLS: {why}", p.from));
                        }
                    }
                }
            }
        }
    }

    fn accept(&self, listener: &TcpListener, pending: &mut Vec<Pending>) {
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if pending.len() >= MAX_PENDING || stream.set_nonblocking(true).is_err() {
                        log_warn!(
                            None,
                            "bootstrap root: dropped {from}: too many pending connections"
                        );
                        continue;
                    }
                    pending.push(Pending::new(stream, from));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn progress(&self, p: &mut Pending) -> std::result::Result<Option<Incoming>, String> {
        let ctx = self.tls.as_ref().map(|(ctx, _)| &**ctx);
        receive(p, ctx, |buf| parse(buf, &self.token))
    }

    /// Fixes this root's mode from the first message, or checks a later one
    /// (`who` sent it) against it.
    fn adopt(
        &mut self,
        who: &str,
        nranks: usize,
        scale: Scale,
        deadline: &mut Instant,
    ) -> std::result::Result<(), String> {
        let Some(m) = &self.mode else {
            let slice = scalable::slice(scale.index, nranks, scale.nroots);
            self.joined = slice.clone().map(|_| None).collect();
            if scale.index == 0 && scale.nroots > 1 {
                self.peers = (0..scale.nroots).map(|_| None).collect();
            }
            self.mode = Some(Mode {
                nranks,
                scale,
                slice,
            });
            // The clock for missing ranks starts with the first rank that arrives.
            *deadline = Instant::now() + self.timeout;
            return Ok(());
        };
        let ids = |n: usize| match n {
            1 => "1 id (ncclCommInitRank, or nId 1)".to_string(),
            n => format!("{n} ids"),
        };
        if m.nranks != nranks {
            return Err(format!(
                "{who} says nranks {nranks}, earlier ranks said {}",
                m.nranks
            ));
        }
        if m.scale.nroots != scale.nroots {
            return Err(format!(
                "{who} came with {}, earlier ranks with {}: every rank must pass the \
                 same ids (nId) in the same order",
                ids(scale.nroots),
                ids(m.scale.nroots)
            ));
        }
        if m.scale.digest != scale.digest {
            return Err(format!(
                "{who}'s {} differ from the earlier ranks' (other ids, or another \
                 order): every rank must pass the same ids in the same order",
                ids(scale.nroots)
            ));
        }
        if m.scale.index != scale.index {
            return Err(format!(
                "{who} came to this root as root {} of {}, earlier ranks as root {}: \
                 is one id listed twice?",
                scale.index, scale.nroots, m.scale.index
            ));
        }
        Ok(())
    }

    #[allow(clippy::result_large_err)]
    fn admit(
        &mut self,
        stream: TcpStream,
        tls: Option<TlsStream>,
        h: Hello,
        deadline: &mut Instant,
    ) -> std::result::Result<(), (String, TcpStream, Option<TlsStream>)> {
        let who = format!("rank {}", h.rank);
        if let Err(why) = self.adopt(&who, h.nranks, h.scale, deadline) {
            return Err((why, stream, tls));
        }
        let m = self.mode.as_ref().expect("adopted");
        if !m.slice.contains(&h.rank) {
            let why = format!(
                "rank {} belongs to root {}, not to {}",
                h.rank,
                scalable::root_of(h.rank, m.nranks, m.scale.nroots),
                self.name()
            );
            return Err((why, stream, tls));
        }
        let Some(tree) = h.tree else {
            let why = format!(
                "rank {} sent a hello without a tree port (an older mixccl): this root \
                 passes the table down a tree of ranks; run one mixccl on every rank",
                h.rank
            );
            return Err((why, stream, tls));
        };
        let at = h.rank - m.slice.start;
        if self.joined[at].is_some() {
            return Err((
                format!("rank {} already joined (duplicate rank)", h.rank),
                stream,
                tls,
            ));
        }
        log_info!(
            None,
            "bootstrap {}: rank {} of {} joined",
            self.name(),
            h.rank,
            h.nranks
        );
        self.joined[at] = Some(Joined {
            stream,
            info: h.info,
            tls,
            tree,
        });
        Ok(())
    }

    /// Root 0 of several takes root `s.index`'s slice.
    #[allow(clippy::result_large_err)]
    fn admit_slice(
        &mut self,
        stream: TcpStream,
        tls: Option<TlsStream>,
        s: Slice,
        deadline: &mut Instant,
    ) -> std::result::Result<(), (String, TcpStream, Option<TlsStream>)> {
        let who = format!("root {} of {}", s.index, s.nroots);
        let scale = Scale {
            nroots: s.nroots,
            index: 0,
            digest: s.digest,
            first: None,
        };
        if let Err(why) = self.adopt(&who, s.nranks, scale, deadline) {
            return Err((why, stream, tls));
        }
        if self.peers[s.index].is_some() {
            return Err((format!("{who} sent its slice twice"), stream, tls));
        }
        log_info!(
            None,
            "bootstrap root 0 of {}: {who} sent its {} ranks",
            s.nroots,
            s.infos.len()
        );
        self.peers[s.index] = Some(PeerRoot {
            stream,
            tls,
            infos: s.infos,
        });
        Ok(())
    }

    /// Tells `who` why it is refused (through its TLS session if it has one), then
    /// closes its connection; the reason is kept for the failure report.
    fn refuse(&mut self, mut stream: TcpStream, mut tls: Option<TlsStream>, who: &str, why: &str) {
        let msg = refusal(why);
        let sent = send(
            &mut stream,
            tls.as_mut(),
            &msg,
            self.timeout.min(Duration::from_secs(5)),
        );
        if let Err(e) = sent {
            log_warn!(None, "bootstrap root: could not tell {who} why: {e}");
        }
        if self.refused.len() < MAX_REFUSED {
            self.refused.push(format!("{who} was refused: {why}"));
        }
    }

    fn broadcast(&mut self, msg: &[u8]) {
        let first = self.mode.as_ref().map_or(0, |m| m.slice.start);
        let timeout = self.timeout;
        for (r, j) in self.joined.iter_mut().enumerate() {
            if let Some(j) = j {
                if let Err(e) = send(&mut j.stream, j.tls.as_mut(), msg, timeout) {
                    log_warn!(
                        None,
                        "bootstrap root: could not send to rank {}: {e}",
                        first + r
                    );
                }
            }
        }
    }

    /// Root 0 (or the only root): the table to its ranks and, framed, to the
    /// other roots.
    fn send_table(&mut self) {
        let n = self.mode.as_ref().map_or(0, |m| m.nranks);
        let infos: Vec<&[u8]> = self
            .joined
            .iter()
            .flatten()
            .map(|j| &j.info[..])
            .chain(
                self.peers
                    .iter()
                    .flatten()
                    .flat_map(|p| p.infos.iter().map(|i| &i[..])),
            )
            .collect();
        let msg = encode_table(&infos);
        let start = Instant::now();
        self.answer_roots(&msg);
        let sent = self.distribute(&msg);
        log_info!(
            None,
            "bootstrap {}: table of {n} ranks ({} bytes) sent down the tree: {sent} bytes \
             to its {} ranks in {:.1} ms",
            self.name(),
            msg.len(),
            self.joined.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    /// Hands `table` (an `MXTABLE` message) to this root's ranks through the tree
    /// (`tree`): the whole tree message to the first `FANOUT`, to each of the others
    /// the rank it gets it from. Returns the bytes sent.
    fn distribute(&mut self, table: &[u8]) -> usize {
        let first = self.mode.as_ref().map_or(0, |m| m.slice.start);
        let ports: Vec<u16> = self
            .joined
            .iter()
            .map(|j| j.as_ref().map_or(0, |j| j.tree))
            .collect();
        let msg = tree::encode(&self.token, first, &ports, table);
        let timeout = self.timeout;
        let mut sent = 0;
        for (pos, j) in self.joined.iter_mut().enumerate() {
            let Some(j) = j else { continue };
            let via;
            let bytes = match tree::parent(pos) {
                None => &msg[..],
                Some(p) => {
                    via = tree::via(first + p);
                    &via[..]
                }
            };
            match send(&mut j.stream, j.tls.as_mut(), bytes, timeout) {
                Ok(()) => sent += bytes.len(),
                Err(e) => log_warn!(
                    None,
                    "bootstrap root: could not send to rank {}: {e}",
                    first + pos
                ),
            }
        }
        sent
    }

    /// Root 0 of several: `msg` (the table or the failure report) to every root
    /// that sent its slice, for its ranks.
    fn answer_roots(&mut self, msg: &[u8]) {
        let framed = frame(msg);
        let timeout = self.timeout;
        for (i, p) in self.peers.iter_mut().enumerate() {
            if let Some(p) = p {
                if let Err(e) = send(&mut p.stream, p.tls.as_mut(), &framed, timeout) {
                    log_warn!(None, "bootstrap root 0: could not send to root {i}: {e}");
                }
            }
        }
    }

    /// Root `i > 0` of several, its slice complete: sends it to root 0 and hands
    /// root 0's answer (the table, or why the rendezvous failed) to its ranks.
    fn exchange(&mut self) {
        let m = self.mode.as_ref().expect("a slice is complete");
        let (index, nroots) = (m.scale.index, m.scale.nroots);
        let first = m
            .scale
            .first
            .expect("a scalable hello carries the first id");
        let slice = Slice {
            digest: m.scale.digest,
            nranks: m.nranks,
            nroots,
            index,
            infos: self
                .joined
                .iter()
                .flatten()
                .map(|j| j.info.clone())
                .collect(),
        };
        let start = Instant::now();
        let msg = match self.ask_root0(&first, &slice) {
            Ok(msg) => msg,
            Err(why) => {
                let why = format!(
                    "root {index} of {nroots} got no table from root 0 at {} (commIds[0]): {why}",
                    first.root_addr()
                );
                log_warn!(None, "bootstrap {why}");
                failure(&[], &why)
            }
        };
        let sent = match msg.starts_with(TABLE_MAGIC) {
            true => self.distribute(&msg),
            false => {
                self.broadcast(&msg);
                msg.len() * self.joined.len()
            }
        };
        log_info!(
            None,
            "bootstrap root {index} of {nroots}: root 0 answered ({} bytes), sent {sent} bytes \
             to {} ranks in {:.1} ms",
            msg.len(),
            self.joined.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    fn ask_root0(&self, first: &UniqueId, slice: &Slice) -> std::result::Result<Vec<u8>, String> {
        let addr = first.root_addr();
        let deadline = Instant::now() + self.timeout;
        let mut s =
            crate::transport::tcp::connect_retry(addr, deadline).map_err(|e| e.to_string())?;
        let mut t = match &self.tls {
            Some((ctx, policy)) if tls::bootstrap_encrypts(*policy, addr.ip()) => Some(
                tls::client_handshake(ctx, &s, deadline, &format!("root 0 at {addr}"))
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        send(
            &mut s,
            t.as_mut(),
            &encode_slice(&first.token(), slice),
            left,
        )
        .map_err(|e| format!("sending the slice: {e}"))?;
        // Root 0 waits for the other roots up to its own deadline; allow it to say so.
        let deadline = deadline + Duration::from_secs(5);
        let fd = s.as_raw_fd();
        let mut read = |s: &mut TcpStream, buf: &mut [u8]| match &mut t {
            Some(t) => tls::read_exact_by(t, fd, buf, deadline),
            None => bootstrap::read_exact_by(s, buf, deadline),
        };
        let mut head = [0u8; 12];
        read(&mut s, &mut head).map_err(|e| format!("waiting for the table: {e}"))?;
        let len = u32::from_le_bytes(head[8..12].try_into().expect("4")) as usize;
        if &head[..8] == REFUSE_MAGIC {
            let mut why = vec![0u8; len.min(MAX_INFO)];
            read(&mut s, &mut why).map_err(|e| format!("reading its refusal: {e}"))?;
            return Err(format!(
                "it refused this root: {}",
                String::from_utf8_lossy(&why)
            ));
        }
        if &head[..8] != FULL_MAGIC || len > scalable::max_full(slice.nranks) {
            return Err(format!("it sent an invalid answer ({len} bytes)"));
        }
        let mut msg = vec![0u8; len];
        read(&mut s, &mut msg).map_err(|e| format!("reading the table: {e}"))?;
        Ok(msg)
    }

    fn send_failure(&mut self) {
        let Some(m) = &self.mode else {
            log_warn!(
                None,
                "bootstrap root: no rank joined within {:?}; giving up",
                self.timeout
            );
            return;
        };
        let (nranks, nroots) = (m.nranks, m.scale.nroots);
        let mut missing = self.missing();
        let roots = self.missing_roots();
        for &i in &roots {
            missing.extend(scalable::slice(i, nranks, nroots));
        }
        log_warn!(
            None,
            "bootstrap {}: ranks {missing:?} did not join within {:?}",
            self.name(),
            self.timeout
        );
        let mut reason = format!("ranks {missing:?} did not join");
        if !roots.is_empty() {
            reason.push_str(&format!(
                " (roots {roots:?} of {nroots} sent no slice to root 0: a rank of theirs \
                 is missing, or the root behind that id is gone)"
            ));
        }
        for why in &self.refused {
            reason.push_str("; ");
            reason.push_str(why);
        }
        let msg = failure(&missing, &reason);
        self.broadcast(&msg);
        self.answer_roots(&msg);
    }
}

/// Writes `msg` to a rank or root by `timeout`, through `tls` when it has a session.
fn send(
    stream: &mut TcpStream,
    tls: Option<&mut TlsStream>,
    msg: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    match tls {
        Some(t) => tls::write_all_by(t, stream.as_raw_fd(), msg, Instant::now() + timeout),
        None => stream
            .set_nonblocking(false)
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .and_then(|_| stream.write_all(msg)),
    }
}

/// `MXFULL len msg`: root 0's answer to another root.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + msg.len());
    b.extend_from_slice(FULL_MAGIC);
    b.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    b.extend_from_slice(msg);
    b
}

/// `why` cut to at most `MAX_INFO` bytes, at a character boundary.
fn reason_bytes(why: &str) -> &[u8] {
    let mut end = why.len().min(MAX_INFO);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    &why.as_bytes()[..end]
}

/// `MXREFUSE len reason`: why this one connection is refused (the rendezvous
/// goes on without it).
fn refusal(why: &str) -> Vec<u8> {
    let why = reason_bytes(why);
    let mut b = REFUSE_MAGIC.to_vec();
    b.extend_from_slice(&(why.len() as u32).to_le_bytes());
    b.extend_from_slice(why);
    b
}

/// Most refusals the root keeps to explain a failed rendezvous.
const MAX_REFUSED: usize = 16;

/// `MXFAIL count missing* len reason`, the reason cut to `MAX_INFO` bytes.
fn failure(missing: &[usize], reason: &str) -> Vec<u8> {
    let reason = reason_bytes(reason);
    let mut msg = Vec::new();
    msg.extend_from_slice(FAIL_MAGIC);
    msg.extend_from_slice(&(missing.len() as u32).to_le_bytes());
    for r in missing {
        msg.extend_from_slice(&(*r as u32).to_le_bytes());
    }
    msg.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    msg.extend_from_slice(reason);
    msg
}

/// Tells a rank that came in plaintext why it is refused (in plaintext: it has no
/// TLS session), then closes its connection.
fn refuse_plain(mut stream: TcpStream, rank: usize, why: &str, timeout: Duration) {
    let limit = timeout.min(Duration::from_secs(5));
    let sent = send(&mut stream, None, &failure(&[rank], why), limit);
    if let Err(e) = sent {
        log_warn!(None, "bootstrap root: could not tell rank {rank} why: {e}");
    }
}

/// The table message: `MXTABLE nranks` and per rank either `len:u32 info:[len]`
/// or, when its info past the address (`ADDR_LEN` bytes) equals an earlier
/// rank's, `REF_MARK ref:u32 address:[ADDR_LEN]`: ranks of one host and settings
/// send the same host, settings and probe, so the table (which every rank
/// receives: n^2 bytes in all, over the tree) shrinks from ~630 to ~27 bytes per rank.
pub(crate) fn encode_table(infos: &[&[u8]]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(12 + infos.len() * 32);
    msg.extend_from_slice(TABLE_MAGIC);
    msg.extend_from_slice(&(infos.len() as u32).to_le_bytes());
    let mut seen: std::collections::HashMap<&[u8], u32> = std::collections::HashMap::new();
    for (r, info) in infos.iter().enumerate() {
        if info.len() >= ADDR_LEN {
            let (addr, rest) = info.split_at(ADDR_LEN);
            if let Some(&first) = seen.get(rest) {
                msg.extend_from_slice(&REF_MARK.to_le_bytes());
                msg.extend_from_slice(&first.to_le_bytes());
                msg.extend_from_slice(addr);
                continue;
            }
            seen.insert(rest, r as u32);
        }
        msg.extend_from_slice(&(info.len() as u32).to_le_bytes());
        msg.extend_from_slice(info);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::PROTOCOL_VERSION;

    fn hello(token: [u8; 16], rank: u32, nranks: u32, info: &[u8]) -> Vec<u8> {
        let mut b = HELLO_MAGIC.to_vec();
        b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        b.extend_from_slice(&token);
        b.extend_from_slice(&rank.to_le_bytes());
        b.extend_from_slice(&nranks.to_le_bytes());
        b.extend_from_slice(&(info.len() as u32).to_le_bytes());
        b.extend_from_slice(info);
        b
    }

    /// Built by hand from the layout in `encode_table`'s comment.
    #[test]
    fn repeated_infos_are_sent_once() {
        let info = |port: u8, rest: &[u8]| {
            let mut b = vec![4, 127, 0, 0, 1];
            b.extend_from_slice(&[0; 12]);
            b.extend_from_slice(&[port, 0]);
            b.extend_from_slice(rest);
            b
        };
        let (a, b, c, short) = (
            info(1, b"host-a"),
            info(2, b"host-b"),
            info(3, b"host-a"),
            vec![7u8; 5],
        );
        let msg = encode_table(&[&a, &b, &c, &short]);
        let mut want = TABLE_MAGIC.to_vec();
        want.extend_from_slice(&4u32.to_le_bytes());
        for x in [&a, &b] {
            want.extend_from_slice(&(x.len() as u32).to_le_bytes());
            want.extend_from_slice(x);
        }
        want.extend_from_slice(&u32::MAX.to_le_bytes());
        want.extend_from_slice(&0u32.to_le_bytes());
        want.extend_from_slice(&c[..19]);
        want.extend_from_slice(&5u32.to_le_bytes());
        want.extend_from_slice(&short);
        assert_eq!(msg, want);
    }

    #[test]
    fn hello_parsing_checks_every_field() {
        let t = [9u8; 16];
        let ok = hello(t, 1, 4, b"abc");
        assert!(parse_hello(&ok[..10], &t).unwrap().is_err());
        assert!(parse_hello(&ok[..HELLO_HEADER + 1], &t).unwrap().is_err());
        let h = parse_hello(&ok, &t).unwrap().unwrap();
        assert_eq!((h.rank, h.nranks, h.info.as_slice()), (1, 4, &b"abc"[..]));
        assert!(parse_hello(b"GET / HTTP/1.1\r\n", &t).is_err());
        assert!(parse_hello(&hello([8; 16], 1, 4, b""), &t)
            .unwrap_err()
            .contains("token"));
        assert!(parse_hello(&hello(t, 4, 4, b""), &t)
            .unwrap_err()
            .contains("rank 4"));
        assert!(parse_hello(&hello(t, 0, 0, b""), &t).is_err());
        let mut big = hello(t, 0, 2, b"");
        big[34..38].copy_from_slice(&(1u32 << 30).to_le_bytes());
        assert!(parse_hello(&big, &t).unwrap_err().contains("exceeds"));
    }

    #[test]
    fn scalable_hellos_carry_their_root_and_slices_parse_beside_hellos() {
        let t = [9u8; 16];
        let first = UniqueId::from_parts([5; 16], "127.0.0.1:9".parse().unwrap());
        let scale = Scale {
            nroots: 3,
            index: 2,
            digest: 0xabc,
            first: Some(first),
        };
        let mut b = hello(t, 4, 5, b"");
        b[..8].copy_from_slice(SCALE_HELLO_MAGIC);
        scale.encode(&mut b);
        b.extend_from_slice(b"info");
        b[34..38].copy_from_slice(&4u32.to_le_bytes());
        for cut in 0..b.len() {
            assert!(
                matches!(parse(&b[..cut], &t), Ok(Err(k)) if k > 0),
                "cut {cut}"
            );
        }
        match parse(&b, &t).unwrap().unwrap() {
            Incoming::Hello(h) => {
                assert_eq!((h.rank, h.nranks, h.scale), (4, 5, scale));
                assert_eq!(h.info, b"info");
            }
            other => panic!("{other:?}"),
        }
        let slice = Slice {
            digest: 1,
            nranks: 5,
            nroots: 3,
            index: 1,
            infos: vec![vec![1], vec![2, 2]],
        };
        assert!(matches!(
            parse(&encode_slice(&t, &slice), &t),
            Ok(Ok(Incoming::Slice(s))) if s.infos == slice.infos
        ));
        // A root index past the count is refused.
        let mut wrong = b.clone();
        wrong[HELLO_HEADER + 4] = 3;
        assert!(parse(&wrong, &t).is_err());
    }

    #[test]
    fn tree_hellos_carry_their_port_and_older_hellos_parse_without() {
        let t = [9u8; 16];
        let old = hello(t, 1, 4, b"abc");
        let mut new = old[..HELLO_HEADER].to_vec();
        new[..8].copy_from_slice(TREE_HELLO_MAGIC);
        new.extend_from_slice(&4321u16.to_le_bytes());
        new.extend_from_slice(b"abc");
        for cut in 0..new.len() {
            assert!(matches!(parse_hello(&new[..cut], &t), Ok(Err(k)) if k > 0));
        }
        let h = parse_hello(&new, &t).unwrap().unwrap();
        assert_eq!(
            (h.rank, h.tree, h.info.as_slice()),
            (1, Some(4321), &b"abc"[..])
        );
        // A build before the tree: parsed, so that the root can say why it refuses it.
        let h = parse_hello(&old, &t).unwrap().unwrap();
        assert_eq!((h.rank, h.tree, h.info.as_slice()), (1, None, &b"abc"[..]));
        assert!(parse_hello(b"MXHELLX\0", &t).is_err());
    }

    #[test]
    fn hello_parsing_survives_mutated_input() {
        let t = [9u8; 16];
        let mut parsed = 0;
        crate::fuzz::mutations(&hello(t, 1, 4, b"listen=1.2.3.4"), 30_000, |b| {
            if let Ok(Ok(h)) = parse_hello(b, &t) {
                assert!(h.rank < h.nranks && h.info.len() <= b.len());
                parsed += 1;
            }
        });
        assert!(parsed > 0, "the valid hello must parse");
    }
}
