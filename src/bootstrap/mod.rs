//! Bootstrap: the unique id, the root rendezvous that hands out the address table,
//! and [`join`], which takes a rank from "I have an id" to "I can reach every
//! peer": every link, shared memory or network, is made when a call first needs it
//! ([`Rejoin::connect`]); at init only the host's board is handed out, when all
//! ranks share one host. Nothing here runs a collective.
//!
//! Wire (all integers little-endian): a rank sends the root
//! `"MXHELLT\0" version:u16 token:[16] rank:u32 nranks:u32 len:u32 tree:u16 info:[len]`
//! (`tree`: the port of its tree listener, `tree.rs`; builds before the tree sent
//! `"MXHELLO\0"` without it, refused by name); once all ranks are in, the table
//! `"MXTABLE\0" nranks:u32 entry*`, an entry being `len:u32 info:[len]` or, for a rank
//! whose info past its 19-byte address equals rank `ref`'s (ref earlier),
//! `0xffffffff ref:u32 address:[19]`, goes down a tree of the ranks (`tree`: the
//! root sends it to a few ranks, tells the others which rank it comes from, and
//! each rank passes it on to its children); or, at its deadline, the root answers
//! each with `"MXFAIL\0\0" count:u32 missing:u32* len:u32 reason:[len]`; a rank the root
//! refuses (duplicate, other nranks, other ids) gets `"MXREFUSE" len:u32
//! reason:[len]` at once. With several ids (`ncclCommInitRankScalable`) a rank
//! joins root `scalable::root_of(rank)` and the roots exchange their slices of the
//! table (`scalable`). Every length is bounded before anything is allocated.

pub(crate) mod host;
pub mod launcher;
pub(crate) mod limits;
pub(crate) use launcher::LaunchEnv;
pub(crate) mod root;
pub(crate) mod scalable;
pub(crate) mod tree;
pub mod unique_id;

use crate::config::{Config, TlsPolicy};
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::topo::RankProbe;
use crate::transport::board::Board;
use crate::transport::rdma::{self, RdmaSpec};
use crate::transport::shm::{self, ShmAcceptor, ShmSpec};
use crate::transport::tcp::{self, tls, LazySpec};
use crate::transport::{Link, Links};
use crate::wire::{MAX_RANKS, PROTOCOL_VERSION};
use crate::UniqueId;
use scalable::Scale;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rank's hello as builds before the bootstrap tree sent it (refused by name).
pub(crate) const HELLO_MAGIC: &[u8; 8] = b"MXHELLO\0";
/// A rank's hello with the port of its tree listener (`tree`).
pub(crate) const TREE_HELLO_MAGIC: &[u8; 8] = b"MXHELLT\0";
pub(crate) const TABLE_MAGIC: &[u8; 8] = b"MXTABLE\0";
pub(crate) const FAIL_MAGIC: &[u8; 8] = b"MXFAIL\0\0";
pub(crate) const REFUSE_MAGIC: &[u8; 8] = b"MXREFUSE";
pub(crate) const HELLO_HEADER: usize = 8 + 2 + 16 + 4 + 4 + 4;
/// Bytes of the listen address that open every encoded [`RankInfo`].
pub(crate) const ADDR_LEN: usize = 19;
/// In the table, "this rank's info is rank `ref`'s with another address".
pub(crate) const REF_MARK: u32 = u32::MAX;
/// Upper bound on one rank's info blob; anything longer is refused.
pub(crate) const MAX_INFO: usize = 4096;

/// What each rank publishes about itself through the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RankInfo {
    /// Where the rank accepts data connections.
    pub listen: SocketAddr,
    /// Its host identity (`host::host_id`): equal ids share memory.
    pub host: String,
    /// The settings that must agree across ranks, as `NAME=value` lines
    /// (`Config::must_agree`): schedules built from different values would desynchronise.
    pub agree: String,
    /// Its topology probe as compact JSON (`topo::RankProbe`); empty from older peers.
    pub probe: String,
}

impl RankInfo {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        match self.listen.ip() {
            IpAddr::V4(ip) => {
                b.push(4);
                b.extend_from_slice(&ip.octets());
                b.extend_from_slice(&[0; 12]);
            }
            IpAddr::V6(ip) => {
                b.push(6);
                b.extend_from_slice(&ip.octets());
            }
        }
        b.extend_from_slice(&self.listen.port().to_le_bytes());
        for (text, max) in [(&self.host, 1024), (&self.agree, 1024), (&self.probe, 2000)] {
            let t = &text.as_bytes()[..text.len().min(max)];
            b.extend_from_slice(&(t.len() as u16).to_le_bytes());
            b.extend_from_slice(t);
        }
        b
    }

    pub(crate) fn decode(b: &[u8]) -> std::result::Result<RankInfo, String> {
        if b.len() < 21 {
            return Err(format!("rank info of {} bytes is too short", b.len()));
        }
        let ip = match b[0] {
            4 => IpAddr::V4(Ipv4Addr::new(b[1], b[2], b[3], b[4])),
            6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&b[1..17]).expect("16"))),
            f => return Err(format!("unknown address family {f}")),
        };
        let port = u16::from_le_bytes([b[17], b[18]]);
        let mut at = 19;
        let mut text = || -> std::result::Result<String, String> {
            if at == b.len() {
                return Ok(String::new());
            }
            let len = b.get(at..at + 2).ok_or("truncated rank info")?;
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            let t = b.get(at + 2..at + 2 + len).ok_or("truncated rank info")?;
            at += 2 + len;
            Ok(String::from_utf8_lossy(t).into_owned())
        };
        let host = text()?;
        let agree = text()?;
        // Absent from peers that predate the topology probe.
        let probe = text()?;
        Ok(RankInfo {
            listen: SocketAddr::new(ip, port),
            host,
            agree,
            probe,
        })
    }
}

/// Fails if any rank's must-agree settings differ from ours, naming the variable,
/// both ranks and both values.
fn check_agreement(rank: usize, ours: &str, table: &[RankInfo]) -> Result<()> {
    for (r, t) in table.iter().enumerate() {
        if t.agree == ours {
            continue;
        }
        let theirs: Vec<&str> = t.agree.lines().collect();
        let diff = ours
            .lines()
            .zip(theirs.iter().chain(std::iter::repeat(&"?")))
            .find(|(a, b)| a != *b)
            .map(|(a, b)| format!("rank {rank} has {a} but rank {r} has {b}"))
            .unwrap_or_else(|| format!("rank {r} sent settings {:?}", t.agree));
        return Err(Error::invalid(format!(
            "settings must be the same on every rank: {diff} (host {})",
            t.host
        )));
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes or fails once `deadline` passes.
pub(crate) fn read_exact_by(
    s: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(k) => got += k,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Checks the version and token that follow the 8-byte magic of every message to a
/// root (a rank's hello, a root's slice): `Err` says which is wrong.
fn version_and_token(buf: &[u8], token: &[u8; 16]) -> std::result::Result<(), String> {
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {version}, expected {PROTOCOL_VERSION}"
        ));
    }
    if &buf[10..26] != token {
        return Err("wrong token (not this communicator)".into());
    }
    Ok(())
}

/// The little-endian `u32` at byte `i` of `b`.
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"))
}

/// A grow id's root listened from the moment the id was made (`grow_id`), so a
/// refused connection means that grow is over (complete, or failed): this rank came
/// late or claimed a rank someone else took. Said at once rather than retried until
/// the timeout, as a first-time root that may not be up yet is.
/// `None`: not refused, but not connected either; the ordinary retrying connect
/// takes over.
fn grow_root_connect(root: SocketAddr, timeout: Duration) -> Result<Option<TcpStream>> {
    match TcpStream::connect_timeout(&root, timeout) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(Error::Bootstrap(format!(
                "the root of this grow at {root} refused the connection: that grow is \
                 over (complete or failed); was this rank late, or a duplicate rank? \
                 get a new id with grow_id (ncclCommGetUniqueId) for another grow"
            )))
        }
        Err(_) => Ok(None),
    }
}

/// How a rank reaches the root and takes the table in: TLS to the root (when
/// the policy encrypts its address), and its tree listener with the certificates
/// and policy it answers a parent with (`tree`).
struct Ends<'a> {
    root_tls: Option<&'a tls::TlsContext>,
    tree: &'a TcpListener,
    tree_tls: Option<(&'a tls::TlsContext, TlsPolicy)>,
}

/// Sends our hello to the root (`scale.index` of `scale.nroots`) and waits for the
/// table (or the root's verdict): from the root itself, or from this rank's parent
/// in the tree of the root's slice; then passes it on to this rank's children.
fn rendezvous(
    id: &UniqueId,
    scale: &Scale,
    rank: usize,
    nranks: usize,
    info: &[u8],
    timeout: Duration,
    ends: &Ends,
) -> Result<Vec<RankInfo>> {
    let addr = id.root_addr();
    // Errors name the root: its address, and which id when there are several.
    let root = match scale.nroots {
        1 => addr.to_string(),
        k => format!(
            "{addr} (root {} of {k}, commIds[{}])",
            scale.index, scale.index
        ),
    };
    let start = Instant::now();
    let first = match id.grow_parent() {
        Some(_) => grow_root_connect(addr, timeout)?,
        None => None,
    };
    let mut s = match first {
        Some(s) => s,
        None => tcp::connect_retry(addr, start + timeout).map_err(|e| match e {
            Error::Timeout { after, .. } => Error::Timeout {
                op: format!("init: reaching the bootstrap root at {root}"),
                waiting_for: vec![],
                after,
            },
            e => e,
        })?,
    };
    let tree_port = ends
        .tree
        .local_addr()
        .map_err(|e| Error::io("reading the tree listener address", e))?
        .port();
    let mut hello = Vec::with_capacity(HELLO_HEADER + scalable::SCALE_EXT + 2 + info.len());
    let several = scale.nroots > 1;
    hello.extend_from_slice(match several {
        true => scalable::SCALE_TREE_HELLO_MAGIC,
        false => TREE_HELLO_MAGIC,
    });
    hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    hello.extend_from_slice(&id.token());
    hello.extend_from_slice(&(rank as u32).to_le_bytes());
    hello.extend_from_slice(&(nranks as u32).to_le_bytes());
    hello.extend_from_slice(&(info.len() as u32).to_le_bytes());
    if several {
        scale.encode(&mut hello);
    }
    hello.extend_from_slice(&tree_port.to_le_bytes());
    hello.extend_from_slice(info);
    // MIXCCL_TLS covers this connection too (`tls::bootstrap_encrypts`).
    let mut session = match ends.root_tls {
        Some(ctx) => Some(tls::client_handshake(
            ctx,
            &s,
            start + timeout,
            &format!("the bootstrap root at {root}"),
        )?),
        None => None,
    };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
    match &mut session {
        Some(t) => tls::write_all_by(t, fd, &hello, start + timeout),
        None => s
            .set_write_timeout(Some(timeout))
            .and_then(|_| s.write_all(&hello)),
    }
    .map_err(|e| {
        Error::io(
            format!("sending the hello to the bootstrap root at {root}"),
            e,
        )
    })?;
    let mut read_exact_by =
        |s: &mut TcpStream, buf: &mut [u8], deadline: Instant| match &mut session {
            Some(t) => tls::read_exact_by(t, fd, buf, deadline),
            None => read_exact_by(s, buf, deadline),
        };
    // The root gives up `timeout` after the first hello; allow it time to say so
    // (with several roots, root 0 answers the others after its own deadline).
    let slack = Duration::from_secs(if several { 10 } else { 5 });
    let deadline = Instant::now() + timeout + slack;
    let lost = |e: std::io::Error| -> Error {
        if e.kind() == std::io::ErrorKind::TimedOut {
            Error::Timeout {
                op: format!("init: waiting for the address table from the root at {root}"),
                waiting_for: vec![],
                after: start.elapsed(),
            }
        } else {
            Error::Bootstrap(format!("the root at {root} closed the connection before sending the table ({e}); was this rank refused? (wrong rank, nranks or a duplicate rank)"))
        }
    };
    let mut head = [0u8; 12];
    read_exact_by(&mut s, &mut head, deadline).map_err(lost)?;
    let count = u32_at(&head, 8) as usize;
    if &head[..8] == REFUSE_MAGIC {
        let mut why = vec![0u8; count.min(MAX_INFO)];
        read_exact_by(&mut s, &mut why, deadline).map_err(lost)?;
        return Err(Error::Bootstrap(format!(
            "the bootstrap root at {root} refused rank {rank}: {}",
            String::from_utf8_lossy(&why)
        )));
    }
    if &head[..8] == FAIL_MAGIC {
        if count > MAX_RANKS {
            return Err(Error::Bootstrap(
                "root sent an oversized failure report".into(),
            ));
        }
        let mut body = vec![0u8; 4 * count + 4];
        read_exact_by(&mut s, &mut body, deadline).map_err(lost)?;
        let missing: Vec<usize> = (0..count).map(|i| u32_at(&body, 4 * i) as usize).collect();
        let len = (u32_at(&body, 4 * count) as usize).min(MAX_INFO);
        let mut reason = vec![0u8; len];
        read_exact_by(&mut s, &mut reason, deadline).map_err(lost)?;
        let reason = String::from_utf8_lossy(&reason);
        return Err(Error::Timeout {
            op: format!("init: rendezvous (the root says: {reason})"),
            waiting_for: missing,
            after: start.elapsed(),
        });
    }
    // This rank's place in the tree of its root's slice.
    let ours = scalable::slice(scale.index, nranks, scale.nroots);
    let pos = rank - ours.start;
    let token = id.token();
    let (msg, from) = if &head[..8] == tree::TREE_MAGIC {
        let msg = tree::read_rest(&head, &token, nranks, |buf| {
            read_exact_by(&mut s, buf, deadline).map_err(lost)
        })
        .map_err(|e| match e {
            Error::Bootstrap(why) => Error::Bootstrap(format!("the root at {root}: {why}")),
            e => e,
        })?;
        (msg, format!("the root at {root}"))
    } else if &head[..8] == tree::VIA_MAGIC {
        let expected = tree::parent(pos).map(|p| ours.start + p);
        if expected != Some(count) {
            return Err(Error::Bootstrap(format!(
                "the root at {root} named rank {count} as rank {rank}'s parent in the \
                 bootstrap tree, not {expected:?}"
            )));
        }
        // The root is done with this rank; the table comes from its parent.
        drop(session);
        drop(s);
        let inbox = tree::Inbox {
            rank,
            nranks,
            token,
            tls: ends.tree_tls,
        };
        let msg = tree::from_parent(ends.tree, &inbox, Instant::now() + timeout)?
            .ok_or_else(|| tree::parent_silent(rank, ours.start, pos, start.elapsed()))?;
        (msg, format!("rank {count}"))
    } else {
        return Err(Error::Bootstrap(format!(
            "root at {root} sent an invalid answer ({:?}, expected the table for {nranks} \
             ranks)",
            String::from_utf8_lossy(&head[..8])
        )));
    };
    if msg.first != ours.start || msg.ports.len() != ours.len() {
        return Err(Error::Bootstrap(format!(
            "{from} sent the tree of ranks {}..{}, expected {ours:?}",
            msg.first,
            msg.first + msg.ports.len()
        )));
    }
    let (table, whole) = decode_table(msg.table(), nranks)
        .map_err(|why| Error::Bootstrap(format!("{from} sent a bad table: {why}")))?;
    log_info!(
        Some(rank),
        "bootstrap table: {nranks} ranks in {} bytes ({whole} whole entries, {} \
         copies of an earlier one with another address), from {from} after {:.1} ms",
        msg.table().len(),
        nranks - whole,
        start.elapsed().as_secs_f64() * 1e3
    );
    tree::forward(rank, &msg, &table, ends.tree_tls, Instant::now() + timeout)?;
    Ok(table)
}

/// Decodes an `MXTABLE` message of `nranks` entries (`root::encode_table`), and
/// says how many entries came whole rather than as copies of an earlier one.
fn decode_table(b: &[u8], nranks: usize) -> std::result::Result<(Vec<RankInfo>, usize), String> {
    if b.len() < 12 || &b[..8] != TABLE_MAGIC || u32_at(b, 8) as usize != nranks {
        return Err(format!("an invalid table header (expected {nranks} ranks)"));
    }
    let mut at = 12;
    let mut take = |n: usize| -> std::result::Result<&[u8], String> {
        let part = b
            .get(at..at + n)
            .ok_or_else(|| format!("the table ends after {} bytes", b.len()))?;
        at += n;
        Ok(part)
    };
    let mut table = Vec::with_capacity(nranks);
    let mut blobs: Vec<Vec<u8>> = Vec::with_capacity(nranks);
    let mut whole = 0;
    for r in 0..nranks {
        let len = u32_at(take(4)?, 0);
        let blob = if len == REF_MARK {
            // Same as an earlier rank's info but for the address.
            let head = take(4 + ADDR_LEN)?;
            let first = u32_at(head, 0) as usize;
            let Some(earlier) = blobs.get(first).filter(|b| b.len() >= ADDR_LEN) else {
                return Err(format!(
                    "rank {r}'s info is a copy of rank {first}'s, which it has not sent"
                ));
            };
            let mut blob = head[4..].to_vec();
            blob.extend_from_slice(&earlier[ADDR_LEN..]);
            blob
        } else {
            let len = len as usize;
            if len > MAX_INFO {
                return Err(format!("{len} bytes of info for rank {r}"));
            }
            whole += 1;
            take(len)?.to_vec()
        };
        table.push(RankInfo::decode(&blob).map_err(|why| format!("rank {r}: {why}"))?);
        blobs.push(blob);
    }
    if at != b.len() {
        return Err(format!("{} bytes after the last rank", b.len() - at));
    }
    Ok((table, whole))
}

/// Takes rank `rank` of `nranks` from its unique ids to a link with every peer:
/// one id (one root), or several (`ncclCommInitRankScalable`: every rank passes
/// the same ids in the same order; rank `r` joins the root of
/// `ids[scalable::root_of(r)]`). `ids[0]` names the communicator (its token).
pub(crate) fn join(
    rank: usize,
    nranks: usize,
    ids: &[UniqueId],
    config: &Config,
) -> Result<Joined> {
    let start = Instant::now();
    let (id, scale) = match ids {
        [] => return Err(Error::invalid("init: no unique id")),
        [id] => (id, Scale::SINGLE),
        [first, ..] => {
            let nroots = ids.len();
            let index = scalable::root_of(rank, nranks, nroots);
            let scale = Scale {
                nroots,
                index,
                digest: scalable::digest(ids),
                first: Some(*first),
            };
            (&ids[index], scale)
        }
    };
    let token = ids[0].token();
    // MIXCCL_NET=IB on a rank without RDMA, or too few descriptors, fail here,
    // before anyone waits for this rank.
    rdma::require(config)?;
    limits::check_fds(rank, nranks, config)?;
    let local_ip = match config.socket_ifname.as_deref() {
        Some(spec) => tcp::pick_interface(Some(spec))?,
        None => tcp::local_ip_towards(id.root_addr())?,
    };
    let listener = TcpListener::bind(SocketAddr::new(local_ip, 0))
        .map_err(|e| Error::io(format!("binding a data listener on {local_ip}"), e))?;
    crate::sys::widen_backlog(&listener)
        .map_err(|e| Error::io("widening the data listener's accept queue", e))?;
    let listen = listener
        .local_addr()
        .map_err(|e| Error::io("reading the data listener address", e))?;
    // Bound before the rendezvous, so peers that learn we exist can reach us.
    let shm = if config.shm_disable {
        None
    } else {
        Some(shm::listen(&token, rank)?)
    };
    let host = host::host_id();
    let info = RankInfo {
        listen,
        probe: crate::topo::probe::probe(host.clone(), Some(local_ip)).encode(),
        host,
        agree: config.must_agree(),
    };
    let tls_ctx = tls::TlsContext::from_config(config)?;
    // The table comes down the tree to this listener; closed once it has.
    let tree_listener = TcpListener::bind(SocketAddr::new(local_ip, 0)).map_err(|e| {
        Error::io(
            format!("binding the bootstrap tree listener on {local_ip}"),
            e,
        )
    })?;
    let ends = Ends {
        root_tls: tls_ctx
            .as_deref()
            .filter(|_| tls::bootstrap_encrypts(config.tls, id.root_addr().ip())),
        tree: &tree_listener,
        tree_tls: tls_ctx.as_deref().map(|ctx| (ctx, config.tls)),
    };
    let table = rendezvous(
        id,
        &scale,
        rank,
        nranks,
        &info.encode(),
        config.timeout,
        &ends,
    )?;
    drop(tree_listener);
    check_agreement(rank, &info.agree, &table)?;
    let probes = table
        .iter()
        .enumerate()
        .map(|(r, t)| {
            if t.probe.is_empty() {
                return Ok(RankProbe::bare(&t.host));
            }
            let mut p = RankProbe::decode(&t.probe)
                .map_err(|why| Error::Bootstrap(format!("rank {r}: {why}")))?;
            // The host identity decides shared memory; the model must follow it.
            p.host.clone_from(&t.host);
            Ok(p)
        })
        .collect::<Result<Vec<_>>>()?;
    log_info!(
        Some(rank),
        "bootstrap done in {:.1} ms: {nranks} ranks, listening on {listen}, host {}",
        start.elapsed().as_secs_f64() * 1e3,
        info.host
    );
    let acceptor = Arc::new(tcp::Acceptor::new(listener)?);
    acceptor.register(token);
    // What stays of the table is what links and shrinks need: addresses and hosts.
    // The probes (now in `probes`) and settings (checked) were most of its bytes.
    let mut table = table;
    for t in &mut table {
        t.agree = String::new();
        t.probe = String::new();
    }
    let rejoin = Rejoin {
        acceptor,
        shm: shm.map(Arc::new),
        table,
        host: info.host,
        token,
        name_token: token,
        names: (0..nranks).collect(),
        generation: 0,
        tls: tls::TlsContext::from_config(config)?,
    };
    let board = rejoin.share_board(rank, config)?;
    Ok(Joined {
        links: (0..nranks).map(|_| None).collect(),
        board,
        local_ip,
        rejoin,
        probes,
    })
}

/// What [`join`] hands the communicator: no links yet (each is made on first use),
/// the host's board when every rank shares this host, the address this rank
/// listens on, what it keeps to connect and shrink, and every rank's probe.
pub(crate) struct Joined {
    pub links: Links,
    pub board: Option<Arc<Board>>,
    pub local_ip: IpAddr,
    pub rejoin: Rejoin,
    pub probes: Vec<RankProbe>,
}

/// Each rank's pod from `MIXCCL_TOPO_FILE` when `MIXCCL_TLS=cross-pod` and the model
/// has pods for these `nranks` ranks; otherwise `None` (every host its own pod).
fn tls_pods(config: &Config, nranks: usize) -> Option<Vec<usize>> {
    if config.tls != crate::config::TlsPolicy::CrossPod {
        return None;
    }
    let t = crate::topo::Topology::load(config.topo_file.as_deref()?).ok()?;
    if t.pods.is_none() || t.nranks() != nranks {
        crate::debug::log_warn!(
            None,
            "MIXCCL_TLS=cross-pod: the model has no pods for {nranks} ranks; encrypting \
             every link between hosts"
        );
        return None;
    }
    Some((0..nranks).map(|r| t.pod_of(t.host_of(r))).collect())
}

/// What a rank keeps after init so the survivors of a failure can build a smaller
/// communicator without a new rendezvous (`Communicator::shrink`): its listeners
/// (kept open; they admit only this job's token) and every rank's bootstrap info.
pub(crate) struct Rejoin {
    /// The data listener and the connections it admitted ahead of their first use,
    /// shared with the communicators shrunk from this one.
    acceptor: Arc<tcp::Acceptor>,
    /// The shared-memory listener and the offers it admitted (shared likewise);
    /// `None` with `MIXCCL_SHM_DISABLE`.
    shm: Option<Arc<ShmAcceptor>>,
    /// Rank info of this communicator's ranks, by rank.
    table: Vec<RankInfo>,
    host: String,
    /// This communicator's token (new connections must carry it).
    token: [u8; 16],
    /// The first communicator's token and ranks, which name the shm listeners.
    name_token: [u8; 16],
    names: Vec<usize>,
    /// How many shrinks led here.
    generation: u64,
    /// This rank's TLS certificates (`MIXCCL_TLS` not off), loaded at init so a bad
    /// file fails init rather than a first call.
    tls: Option<Arc<tls::TlsContext>>,
}

impl Rejoin {
    /// This communicator's token: names it (and only it) to a grow id.
    pub(crate) fn token(&self) -> [u8; 16] {
        self.token
    }

    /// Whether every rank of this communicator is on this rank's host and reached
    /// through shared memory (the links it would make, made or not).
    pub(crate) fn all_on_shm(&self) -> bool {
        self.shm.is_some() && self.table.iter().all(|t| t.host == self.host)
    }

    /// `same_host[p]`: rank `p` (not `rank`) is reached through shared memory.
    fn shm_peers(&self, rank: usize) -> Vec<bool> {
        self.table
            .iter()
            .enumerate()
            .map(|(p, t)| p != rank && self.shm.is_some() && t.host == self.host)
            .collect()
    }

    /// The shared-memory spec of `rank` with `same_host` (from [`Rejoin::shm_peers`]).
    fn shm_spec<'a>(
        &'a self,
        rank: usize,
        same_host: &'a [bool],
        config: &Config,
        deadline: Instant,
    ) -> ShmSpec<'a> {
        ShmSpec {
            rank,
            token: self.token,
            name_token: self.name_token,
            names: &self.names,
            same_host,
            capacity: config.shm_buffer,
            zero_copy: config.shm_zero_copy,
            board_bytes: config
                .board_bytes
                .unwrap_or_else(|| crate::cpu::tuning().board_bytes),
            deadline,
        }
    }

    /// The host's board, when every rank of this communicator is on this host with
    /// shared memory, 2 to 64 of them, and `MIXCCL_BOARD_BYTES` is not 0: rank 0
    /// hands it to every rank (`shm::share_board`). Collective, at init and shrink.
    fn share_board(&self, rank: usize, config: &Config) -> Result<Option<Arc<Board>>> {
        let Some(shm) = &self.shm else {
            return Ok(None);
        };
        let same_host = self.shm_peers(rank);
        let spec = self.shm_spec(rank, &same_host, config, Instant::now() + config.timeout);
        shm::share_board(&spec, shm, &AtomicBool::new(false))
    }

    /// Connects `rank` to those of `peers` it has no link to yet, the first time a
    /// call needs them: over shared memory to this host's peers (unless
    /// `MIXCCL_SHM_DISABLE`), over TCP (moved to RDMA where both ends can) to the
    /// others. The peers' schedules name this rank in the same call, so they connect
    /// at the same time; one that never answers (dead, never connected) is named in
    /// `Error::Timeout` once `config.timeout` has passed.
    pub(crate) fn connect(
        &self,
        rank: usize,
        peers: &[usize],
        links: &mut Links,
        config: &Config,
        abort: &AtomicBool,
    ) -> Result<()> {
        let mut new: Vec<usize> = peers
            .iter()
            .copied()
            .filter(|&p| p != rank && p < links.len() && links[p].is_none())
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        new.sort_unstable();
        new.dedup();
        let deadline = Instant::now() + config.timeout;
        // Shared memory first: every offer is sent before this rank waits for
        // anything, so no rank's wait for an offer depends on its TCP peers.
        let shm_peer = self.shm_peers(rank);
        if let Some(shm) = &self.shm {
            let local: Vec<usize> = new.iter().copied().filter(|&p| shm_peer[p]).collect();
            if !local.is_empty() {
                let spec = self.shm_spec(rank, &shm_peer, config, deadline);
                let (made, result) = shm::connect_peers(&spec, shm, &local, abort);
                for l in made {
                    let p = l.peer();
                    log_info!(
                        Some(rank),
                        "rank {rank} -> rank {p} via shm (1 lane), connected on first use"
                    );
                    links[p] = Some(Box::new(l));
                }
                result?;
                new.retain(|&p| !shm_peer[p]);
                if new.is_empty() {
                    return Ok(());
                }
            }
        }
        let addrs: Vec<SocketAddr> = self.table.iter().map(|t| t.listen).collect();
        let host_peer: Vec<bool> = self.table.iter().map(|t| t.host == self.host).collect();
        let encrypt = tls::encrypted_peers(
            config.tls,
            rank,
            &host_peer,
            tls_pods(config, self.table.len()).as_deref(),
        );
        let made = tcp::connect_peers(
            &LazySpec {
                rank,
                addrs: &addrs,
                token: self.token,
                nsocks: config.nsocks,
                socket_buffer: config.socket_buffer,
                same_host: &host_peer,
                tls: self.tls.as_deref(),
                encrypt: &encrypt,
                deadline,
                abort,
            },
            &self.acceptor,
            &new,
        )?;
        let mut tcp_links: Vec<Option<tcp::TcpLink>> = (0..links.len()).map(|_| None).collect();
        for l in made {
            let p = l.peer();
            tcp_links[p] = Some(l);
        }
        // Peers on other hosts move to RDMA where both ends can (negotiated over TCP;
        // both ends upgrade this link in the same call); encrypted links stay on TCP
        // (RDMA would carry their bytes in the clear).
        let no_rdma: Vec<bool> = (0..links.len())
            .map(|p| host_peer[p] || encrypt[p])
            .collect();
        let net_links = rdma::upgrade(
            &RdmaSpec {
                rank,
                same_host: &no_rdma,
                config,
                deadline,
            },
            tcp_links,
        )?;
        for (p, l) in net_links.into_iter().enumerate() {
            if let Some(l) = l {
                log_info!(
                    Some(rank),
                    "rank {rank} -> rank {p} via {} ({} lanes), connected on first use",
                    l.class(),
                    l.lanes()
                );
                links[p] = Some(l);
            }
        }
        Ok(())
    }

    /// The links (none yet: each is made on first use), host board and rejoin state
    /// of the communicator of every rank but `excluded` (sorted, without `rank`), in
    /// which `rank` becomes its index among the survivors. Every survivor must call
    /// this with the same list.
    pub(crate) fn shrink(
        &self,
        rank: usize,
        excluded: &[usize],
        config: &Config,
    ) -> Result<(usize, Links, Option<Arc<Board>>, Rejoin)> {
        let survivors: Vec<usize> = (0..self.table.len())
            .filter(|r| !excluded.contains(r))
            .collect();
        let new_rank = survivors
            .iter()
            .position(|&r| r == rank)
            .ok_or_else(|| Error::invalid(format!("rank {rank} cannot shrink itself out")))?;
        // A token of its own, so no connection of the parent can be taken for one of
        // the child; equal on every survivor.
        let mut seed = self.token.to_vec();
        seed.extend_from_slice(&(self.generation + 1).to_le_bytes());
        for r in excluded {
            seed.extend_from_slice(&(*r as u64).to_le_bytes());
        }
        let fnv = |salt: u64| {
            seed.iter().fold(0xcbf2_9ce4_8422_2325u64 ^ salt, |h, b| {
                (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let mut token = [0u8; 16];
        token[..8].copy_from_slice(&fnv(1).to_le_bytes());
        token[8..].copy_from_slice(&fnv(2).to_le_bytes());
        self.acceptor.register(token);
        if let Some(shm) = &self.shm {
            shm.register(token);
        }
        let child = Rejoin {
            acceptor: self.acceptor.clone(),
            shm: self.shm.clone(),
            table: survivors.iter().map(|&r| self.table[r].clone()).collect(),
            host: self.host.clone(),
            token,
            name_token: self.name_token,
            names: survivors.iter().map(|&r| self.names[r]).collect(),
            generation: self.generation + 1,
            tls: self.tls.clone(),
        };
        let board = child.share_board(new_rank, config)?;
        let links = (0..child.table.len()).map(|_| None).collect();
        Ok((new_rank, links, board, child))
    }
}

impl Drop for Rejoin {
    fn drop(&mut self) {
        // Connections and offers for this communicator that no call took are closed.
        self.acceptor.forget(self.token);
        if let Some(shm) = &self.shm {
            shm.forget(self.token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_pod_takes_the_pods_of_the_model_file() {
        use crate::config::TlsPolicy;
        use crate::topo::{Pods, Topology};
        let t = Topology::from_json(include_str!("../../tests/topos/2x4.json")).unwrap();
        let uplink = t.hosts[0].net;
        let t = t
            .with_pods(Pods {
                hosts: vec![vec![0], vec![1]],
                uplink,
            })
            .unwrap();
        let path = std::env::temp_dir().join(format!("mixccl-pods-{}.json", std::process::id()));
        std::fs::write(&path, t.to_json()).unwrap();
        let mut config = Config {
            tls: TlsPolicy::CrossPod,
            topo_file: Some(path.clone()),
            ..Config::default()
        };
        assert_eq!(tls_pods(&config, 8), Some(vec![0, 0, 0, 0, 1, 1, 1, 1]));
        // A model of other ranks, or another policy: no pods (every host its own).
        assert_eq!(tls_pods(&config, 4), None);
        config.tls = TlsPolicy::CrossHost;
        assert_eq!(tls_pods(&config, 8), None);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn rank_info_round_trips() {
        for addr in ["10.0.0.7:4000", "[::1]:5"] {
            let i = RankInfo {
                listen: addr.parse().unwrap(),
                host: "node-1".into(),
                agree: "MIXCCL_NSOCKS=2\nMIXCCL_ALGO=auto".into(),
                probe: "{}".into(),
            };
            assert_eq!(RankInfo::decode(&i.encode()).unwrap(), i);
        }
        assert!(RankInfo::decode(&[4, 1, 2]).is_err());
    }

    #[test]
    fn rank_info_decoding_survives_mutated_input() {
        let probe = crate::topo::probe::probe("node-1".into(), None).encode();
        let i = RankInfo {
            listen: "10.0.0.7:4000".parse().unwrap(),
            host: "node-1".into(),
            agree: "MIXCCL_NSOCKS=2".into(),
            probe: probe.clone(),
        };
        crate::fuzz::mutations(&i.encode(), 30_000, |b| {
            let _ = RankInfo::decode(b);
        });
        crate::fuzz::mutations(probe.as_bytes(), 30_000, |b| {
            let _ = RankProbe::decode(&String::from_utf8_lossy(b));
        });
    }

    #[test]
    fn disagreeing_settings_are_named() {
        let info = |agree: &str| RankInfo {
            listen: "127.0.0.1:1".parse().unwrap(),
            host: "h".into(),
            agree: agree.into(),
            probe: String::new(),
        };
        let ours = "MIXCCL_NSOCKS=2\nMIXCCL_CHUNK_SIZE=512";
        let table = [info(ours), info("MIXCCL_NSOCKS=2\nMIXCCL_CHUNK_SIZE=64")];
        let e = check_agreement(0, ours, &table).unwrap_err().to_string();
        assert!(
            e.contains("rank 0 has MIXCCL_CHUNK_SIZE=512 but rank 1 has MIXCCL_CHUNK_SIZE=64"),
            "{e}"
        );
        assert!(check_agreement(0, ours, &table[..1]).is_ok());
    }
}
