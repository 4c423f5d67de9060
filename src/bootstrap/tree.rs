//! The bootstrap tree: how the address table reaches the ranks of a root's slice
//! without the root sending it to each of them. The slice's ranks, in rank order,
//! form a heap of fan-out [`FANOUT`] below the root: the root sends the table to the
//! first `FANOUT` ranks only, and each rank, once it has the table, passes the very
//! same bytes on to its own children. The root's egress is `FANOUT` tables plus a
//! 12-byte notice per rank, instead of one table per rank (n^2 bytes); the last rank
//! has the table after about `log_FANOUT(n)` hops of `FANOUT` tables each.
//!
//! A child learns the table from its parent over a listener of its own (the tree
//! listener), bound with the data listener and announced in its hello (`tree:u16`,
//! same address as the data listener): the parent dials it. The data listener is
//! not used, because a peer that already has the table may dial it for a first call
//! before this rank has the table, and those connections belong to the data path.
//! The tree listener is closed as soon as the table has come; the root keeps no
//! socket once its notices are sent.
//!
//! Wire (little-endian): the root sends each of the first `FANOUT` ranks of its
//! slice `"MXTREE\0\0" version:u16 token:[16] first:u32 count:u32 len:u32
//! port:[u16; count] table:[len]` (`table` the `MXTABLE` message, `port[i]` the tree
//! port of rank `first + i`, `token` that of the root's id), which every rank
//! forwards unchanged, and every other rank `"MXVIA\0\0\0" parent:u32`: the table
//! comes from rank `parent`. A rank waits for its parent until its timeout, then
//! fails naming the parent (and the parent's own ancestors); a parent that cannot
//! reach a child passes the table on to its other children, then fails naming it.
//! The shape is [`parent`] and [`children`]; the sockets are [`from_parent`] and
//! [`forward`].

use crate::bootstrap::root::{receive, Pending};
use crate::bootstrap::{self, MAX_INFO};
use crate::config::TlsPolicy;
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::tcp::tls::{self, TlsContext, TlsStream};
use crate::wire::{MAX_RANKS, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Children per rank (and ranks the root sends the table to). A level costs
/// `FANOUT` table sends and the tree has `log_FANOUT(n)` levels: 2 and 4 cost the
/// same bytes in series (`F / ln F` is flat there), 4 takes half the hops.
pub(crate) const FANOUT: usize = 4;
/// Opens the table as it travels down the tree.
pub(crate) const TREE_MAGIC: &[u8; 8] = b"MXTREE\0\0";
/// Opens the root's notice to a rank that gets the table from a parent.
pub(crate) const VIA_MAGIC: &[u8; 8] = b"MXVIA\0\0\0";
/// Bytes of a tree message before its ports.
pub(crate) const TREE_HEADER: usize = 8 + 2 + 16 + 4 + 4 + 4;
/// Most connections a rank holds open on its tree listener while it waits.
const MAX_PENDING: usize = 64;

/// The parent of the rank at position `pos` of its slice, as a position; `None`:
/// the root.
pub(crate) fn parent(pos: usize) -> Option<usize> {
    (pos >= FANOUT).then(|| pos / FANOUT - 1)
}

/// The children of position `pos` in a slice of `count` ranks, as positions.
pub(crate) fn children(pos: usize, count: usize) -> Range<usize> {
    let first = FANOUT * (pos + 1);
    first.min(count)..(first + FANOUT).min(count)
}

/// The parent of `pos`, its parent, and so on up to a rank the root serves.
fn ancestors(pos: usize) -> Vec<usize> {
    std::iter::successors(parent(pos), |&p| parent(p)).collect()
}

/// The tree message for the slice that starts at rank `first`, whose ranks listen
/// for the tree on `ports`, carrying `table` (an `MXTABLE` message).
pub(crate) fn encode(token: &[u8; 16], first: usize, ports: &[u16], table: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(TREE_HEADER + 2 * ports.len() + table.len());
    b.extend_from_slice(TREE_MAGIC);
    b.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    b.extend_from_slice(token);
    for v in [first, ports.len(), table.len()] {
        b.extend_from_slice(&(v as u32).to_le_bytes());
    }
    for p in ports {
        b.extend_from_slice(&p.to_le_bytes());
    }
    b.extend_from_slice(table);
    b
}

/// `MXVIA parent`: the root's notice that the table comes from rank `parent`.
pub(crate) fn via(parent: usize) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(VIA_MAGIC);
    b[8..].copy_from_slice(&(parent as u32).to_le_bytes());
    b
}

/// The most bytes the table of `nranks` ranks may take: every info in full.
pub(crate) fn max_table(nranks: usize) -> usize {
    12 + nranks * (4 + MAX_INFO)
}

/// How many bytes the tree message in `buf` (for a communicator of `nranks`) has
/// in all, once its header is in: `Ok(Err(more))` while at least `more` are
/// missing from the header, `Err` if it is not one for `token`.
pub(crate) fn length(
    buf: &[u8],
    token: &[u8; 16],
    nranks: usize,
) -> std::result::Result<std::result::Result<usize, usize>, String> {
    if !buf.starts_with(&TREE_MAGIC[..buf.len().min(8)]) {
        return Err("bad magic (not a bootstrap tree message)".into());
    }
    if buf.len() < TREE_HEADER {
        return Ok(Err(TREE_HEADER - buf.len()));
    }
    bootstrap::version_and_token(buf, token)?;
    let u32at = |i: usize| bootstrap::u32_at(buf, i) as usize;
    let (first, count, len) = (u32at(26), u32at(30), u32at(34));
    if count == 0 || count > MAX_RANKS || first + count > nranks {
        return Err(format!(
            "a tree message for ranks {first}..{} of {nranks}",
            first + count
        ));
    }
    if len > max_table(nranks) {
        return Err(format!("a table of {len} bytes for {nranks} ranks"));
    }
    Ok(Ok(TREE_HEADER + 2 * count + len))
}

/// A complete tree message, kept whole to be forwarded as it came.
pub(crate) struct TreeMsg {
    pub bytes: Vec<u8>,
    /// The first rank of the slice and its ranks' tree ports.
    pub first: usize,
    pub ports: Vec<u16>,
}

impl TreeMsg {
    /// `bytes` holds exactly the message [`length`] measured.
    pub(crate) fn new(bytes: Vec<u8>) -> TreeMsg {
        let first = bootstrap::u32_at(&bytes, 26) as usize;
        let count = bootstrap::u32_at(&bytes, 30) as usize;
        let ports = bytes[TREE_HEADER..TREE_HEADER + 2 * count]
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        TreeMsg {
            bytes,
            first,
            ports,
        }
    }

    /// The `MXTABLE` message it carries.
    pub(crate) fn table(&self) -> &[u8] {
        &self.bytes[TREE_HEADER + 2 * self.ports.len()..]
    }
}

/// Reads the rest of a tree message whose first 12 bytes (`head`) came from the
/// root on `read`'s connection; a message that is not one for `token` and `nranks`
/// is `Error::Bootstrap` saying why.
pub(crate) fn read_rest(
    head: &[u8; 12],
    token: &[u8; 16],
    nranks: usize,
    mut read: impl FnMut(&mut [u8]) -> Result<()>,
) -> Result<TreeMsg> {
    let mut bytes = head.to_vec();
    bytes.resize(TREE_HEADER, 0);
    read(&mut bytes[12..])?;
    let total = match length(&bytes, token, nranks) {
        Ok(Ok(total)) => total,
        Ok(Err(_)) => unreachable!("the header is complete"),
        Err(why) => return Err(Error::Bootstrap(format!("a bad tree message: {why}"))),
    };
    // Grown as it arrives, so a bad length cannot make us allocate it up front.
    while bytes.len() < total {
        let at = bytes.len();
        bytes.resize(total.min(at + (1 << 20)), 0);
        read(&mut bytes[at..])?;
    }
    Ok(TreeMsg::new(bytes))
}

/// What a rank waiting for its parent needs to admit the connection.
pub(crate) struct Inbox<'a> {
    pub rank: usize,
    pub nranks: usize,
    /// The token of the root this rank joined (the tree message carries it).
    pub token: [u8; 16],
    /// This rank's certificates and `MIXCCL_TLS`, when not off: a parent the policy
    /// encrypts must come over TLS.
    pub tls: Option<(&'a TlsContext, TlsPolicy)>,
}

/// Waits on `listener` (this rank's tree listener) for the tree message from its
/// parent until `deadline`. Connections that send anything else are closed and
/// logged. `None`: nothing came in time.
pub(crate) fn from_parent(
    listener: &TcpListener,
    inbox: &Inbox,
    deadline: Instant,
) -> Result<Option<TreeMsg>> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("making the tree listener non-blocking", e))?;
    let me = Some(inbox.rank);
    let ctx = inbox.tls.map(|(ctx, _)| ctx);
    let mut pending: Vec<Pending> = Vec::new();
    loop {
        loop {
            match listener.accept() {
                Ok((stream, from)) => {
                    if pending.len() >= MAX_PENDING || stream.set_nonblocking(true).is_err() {
                        log_warn!(me, "bootstrap tree: dropped {from}: too many connections");
                        continue;
                    }
                    pending.push(Pending::new(stream, from));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let mut i = 0;
        while i < pending.len() {
            let got = receive(&mut pending[i], ctx, |b| {
                length(b, &inbox.token, inbox.nranks).map(|l| {
                    l.and_then(|total| match total.checked_sub(b.len()) {
                        Some(0) | None => Ok(()),
                        Some(more) => Err(more),
                    })
                })
            });
            match got {
                Ok(None) => i += 1,
                Ok(Some(())) => {
                    let p = pending.swap_remove(i);
                    let required = inbox
                        .tls
                        .is_some_and(|(_, policy)| tls::bootstrap_encrypts(policy, p.from.ip()));
                    if required && p.tls.is_none() {
                        log_warn!(
                            me,
                            "bootstrap tree: refused the table from {}: it came without TLS, \
                             but MIXCCL_TLS encrypts it",
                            p.from
                        );
                        continue;
                    }
                    return Ok(Some(TreeMsg::new(p.buf)));
                }
                Err(why) => {
                    let p = pending.swap_remove(i);
                    log_warn!(me, "bootstrap tree: closed {}: {why}", p.from);
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let mut fds = vec![sys::pollfd(listener.as_raw_fd(), libc::POLLIN)];
        fds.extend(pending.iter().map(|p| {
            let events = p.tls.as_ref().map_or(libc::POLLIN, TlsStream::events);
            sys::pollfd(p.stream.as_raw_fd(), events)
        }));
        sys::poll(&mut fds, (deadline - now).min(Duration::from_millis(500)))
            .map_err(|e| Error::io("waiting for the table from the tree parent", e))?;
    }
}

/// The error of a rank whose parent (at position `parent` of the slice that
/// starts at `first`) sent no table by its deadline.
pub(crate) fn parent_silent(rank: usize, first: usize, pos: usize, after: Duration) -> Error {
    let chain: Vec<usize> = ancestors(pos).into_iter().map(|p| first + p).collect();
    let above = match &chain[1..] {
        [] => String::new(),
        up => format!(", or one of its own parents {up:?}"),
    };
    Error::Timeout {
        op: format!(
            "init: rank {rank} waiting for the address table from rank {}, its parent in \
             the bootstrap tree (is rank {} alive{above}?)",
            chain[0], chain[0]
        ),
        waiting_for: vec![chain[0]],
        after,
    }
}

/// Passes `msg` on to the children of `rank` (position `rank - msg.first` of its
/// slice), each at its data listener's address with its tree port, by `deadline`.
/// Every child that can be reached gets it; then a child that could not fails this
/// rank, named.
pub(crate) fn forward(
    rank: usize,
    msg: &TreeMsg,
    table: &[bootstrap::RankInfo],
    tls: Option<(&TlsContext, TlsPolicy)>,
    deadline: Instant,
) -> Result<()> {
    let pos = rank - msg.first;
    let kids = children(pos, msg.ports.len());
    if kids.is_empty() {
        return Ok(());
    }
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    for c in kids.clone() {
        let child = msg.first + c;
        let addr = SocketAddr::new(table[child].listen.ip(), msg.ports[c]);
        match send_to_child(&msg.bytes, addr, child, tls, deadline) {
            Ok(s) => sent.push((child, s)),
            Err(e) => failed.push(format!("rank {child} at {addr}: {e}")),
        }
    }
    // Wait for each child to close: it has read the message. A close with bytes
    // unread (a TLS ticket) could otherwise reset the connection under it.
    for (child, mut s) in sent {
        if let Err(e) = drain(&mut s, deadline) {
            failed.push(format!("rank {child}: {e}"));
        }
    }
    let ranks: Vec<usize> = kids.map(|c| msg.first + c).collect();
    log_info!(
        Some(rank),
        "bootstrap tree: passed the table ({} bytes) to ranks {ranks:?} in {:.1} ms",
        msg.bytes.len(),
        start.elapsed().as_secs_f64() * 1e3
    );
    if failed.is_empty() {
        return Ok(());
    }
    Err(Error::Bootstrap(format!(
        "rank {rank} could not pass the address table to its children in the bootstrap \
         tree (are they alive?): {}",
        failed.join("; ")
    )))
}

/// Dials `child`'s tree listener at `addr` and writes `bytes` (through TLS when the
/// policy encrypts that address). A refusal is final: the child bound the listener
/// before its hello, so it is gone.
fn send_to_child(
    bytes: &[u8],
    addr: SocketAddr,
    child: usize,
    tls: Option<(&TlsContext, TlsPolicy)>,
    deadline: Instant,
) -> std::result::Result<TcpStream, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("no time left".into());
    }
    let mut s = TcpStream::connect_timeout(&addr, left).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    match tls.filter(|(_, policy)| tls::bootstrap_encrypts(*policy, addr.ip())) {
        Some((ctx, _)) => {
            let what = format!("rank {child}'s tree listener at {addr}");
            let mut t =
                tls::client_handshake(ctx, &s, deadline, &what).map_err(|e| e.to_string())?;
            tls::write_all_by(&mut t, s.as_raw_fd(), bytes, deadline).map_err(|e| e.to_string())?;
            s.set_nonblocking(false).map_err(|e| e.to_string())?;
        }
        None => {
            s.set_write_timeout(Some(left)).map_err(|e| e.to_string())?;
            s.write_all(bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(s)
}

/// Reads and drops whatever `s` still sends until its end, by `deadline`.
fn drain(s: &mut TcpStream, deadline: Instant) -> std::result::Result<(), String> {
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("it did not close the connection after the table".into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            // Reset after reading: it has what it needed, or it is gone.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_but_the_heads_has_one_parent_that_lists_it() {
        for count in 1..200 {
            let mut seen = vec![0; count];
            for (pos, seen) in seen.iter_mut().enumerate().take(FANOUT) {
                assert_eq!(parent(pos), None);
                *seen += 1;
            }
            for pos in 0..count {
                for c in children(pos, count) {
                    assert_eq!(parent(c), Some(pos), "{count} ranks");
                    assert!(c > pos);
                    seen[c] += 1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "{count} ranks: {seen:?}");
        }
        // 33 ranks: 0-3 from the root, 4-7 from 0, ..., 32 from 7.
        assert_eq!(children(0, 33), 4..8);
        assert_eq!(children(6, 33), 28..32);
        assert_eq!(children(7, 33), 32..33);
        assert_eq!(ancestors(32), vec![7, 0]);
        // The depth at 65,536 ranks: log4, not n.
        let mut deepest = 65_535;
        let mut depth = 1;
        while let Some(p) = parent(deepest) {
            deepest = p;
            depth += 1;
        }
        assert_eq!(depth, 8);
    }

    #[test]
    fn tree_messages_measure_and_carry_their_table() {
        let token = [7u8; 16];
        let table = crate::bootstrap::root::encode_table(&[b"abc", b"de"]);
        let msg = encode(&token, 3, &[10, 20], &table);
        for cut in 0..TREE_HEADER {
            assert!(matches!(length(&msg[..cut], &token, 5), Ok(Err(k)) if k > 0));
        }
        assert_eq!(length(&msg, &token, 5), Ok(Ok(msg.len())));
        let t = TreeMsg::new(msg.clone());
        assert_eq!(
            (t.first, t.ports.as_slice(), t.table()),
            (3, &[10u16, 20][..], &table[..])
        );
        assert!(length(&msg, &[8; 16], 5).unwrap_err().contains("token"));
        // Ranks 3..5 of 4 do not exist.
        assert!(length(&msg, &token, 4).is_err());
        assert!(length(b"GET / HT", &token, 5).is_err());
        let mut big = msg.clone();
        big[34..38].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(length(&big, &token, 5).unwrap_err().contains("bytes"));
        let mut head = [0u8; 12];
        head.copy_from_slice(&msg[..12]);
        let mut rest = &msg[12..];
        let got = read_rest(&head, &token, 5, |buf| {
            rest.read_exact(buf).map_err(|e| Error::io("reading", e))
        })
        .unwrap();
        assert_eq!(got.bytes, msg);
    }

    use crate::bootstrap::{join, Joined, RankInfo, HELLO_HEADER, TREE_HELLO_MAGIC};
    use crate::config::Config;
    use crate::UniqueId;

    fn config(timeout_s: u64) -> Config {
        Config {
            timeout: Duration::from_secs(timeout_s),
            shm_disable: true,
            ..Config::default()
        }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    type Outcome = (Result<Joined>, Duration);

    /// Joins every rank of `n` but `fake` through `ids` at once, one thread each;
    /// `fake` runs `stand_in` instead (`None` in the outcomes).
    fn join_all(
        n: usize,
        ids: &[UniqueId],
        config: &Config,
        fake: Option<(usize, &(dyn Fn() + Sync))>,
    ) -> Vec<Option<Outcome>> {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..n)
                .map(|rank| {
                    s.spawn(move || match fake {
                        Some((f, stand_in)) if f == rank => {
                            stand_in();
                            None
                        }
                        _ => {
                            let start = Instant::now();
                            Some((join(rank, n, ids, config), start.elapsed()))
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn thirty_three_ranks_get_one_table_through_one_or_three_roots() {
        let config = config(30);
        for nroots in [1, 3] {
            let ids: Vec<UniqueId> = (0..nroots)
                .map(|_| UniqueId::bind_with(loopback(), &config).unwrap())
                .collect();
            let joined: Vec<Joined> = join_all(33, &ids, &config, None)
                .into_iter()
                .enumerate()
                .map(|(r, o)| {
                    o.unwrap()
                        .0
                        .unwrap_or_else(|e| panic!("{nroots} roots, rank {r}: {e}"))
                })
                .collect();
            let table = &joined[0].rejoin.table;
            assert_eq!(table.len(), 33);
            for (r, j) in joined.iter().enumerate() {
                assert_eq!(&j.rejoin.table, table, "{nroots} roots: rank {r}'s table");
                assert_eq!(
                    j.probes, joined[0].probes,
                    "{nroots} roots: rank {r}'s probes"
                );
            }
            let mut addrs: Vec<SocketAddr> = table.iter().map(|t| t.listen).collect();
            addrs.sort();
            addrs.dedup();
            assert_eq!(
                addrs.len(),
                33,
                "{nroots} roots: every rank its own address"
            );
        }
    }

    #[test]
    fn the_table_goes_down_the_tree_over_tls_when_the_policy_says_so() {
        let pem = crate::transport::tcp::tls::tests::certs().good[0].clone();
        let dir = std::env::temp_dir().join(format!("mixccl-tree-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            Some(path)
        };
        let config = Config {
            tls: TlsPolicy::All,
            tls_cert: file("cert.pem", &pem.cert),
            tls_key: file("key.pem", &pem.key),
            tls_ca: file("ca.pem", &pem.ca),
            ..config(20)
        };
        let id = UniqueId::bind_with(loopback(), &config).unwrap();
        // 9 ranks: 4..8 get the table from ranks 0 and 1, over TLS (loopback included).
        let outcomes = join_all(9, std::slice::from_ref(&id), &config, None);
        let _ = std::fs::remove_dir_all(&dir);
        let tables: Vec<Vec<RankInfo>> = outcomes
            .into_iter()
            .enumerate()
            .map(|(r, o)| match o.unwrap().0 {
                Ok(j) => j.rejoin.table.clone(),
                Err(e) => panic!("rank {r}: {e}"),
            })
            .collect();
        assert!(tables.iter().all(|t| t == &tables[0] && t.len() == 9));
    }

    /// Stands in for rank `rank` of `nranks`: its hello names a data listener and a
    /// tree listener of its own, it reads the root's first answer, then it is gone
    /// (every socket closed) without passing anything on. `dead_listener`: its tree
    /// listener is closed even before the hello.
    fn dies_after_the_root(
        id: &UniqueId,
        rank: usize,
        nranks: usize,
        config: &Config,
        dead_listener: bool,
    ) {
        let data = TcpListener::bind(loopback()).unwrap();
        let tree = TcpListener::bind(loopback()).unwrap();
        let port = tree.local_addr().unwrap().port();
        if dead_listener {
            drop(tree);
        }
        let info = RankInfo {
            listen: data.local_addr().unwrap(),
            host: crate::bootstrap::host::host_id(),
            agree: config.must_agree(),
            probe: String::new(),
        }
        .encode();
        let mut hello = TREE_HELLO_MAGIC.to_vec();
        hello.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        hello.extend_from_slice(&id.token());
        for v in [rank, nranks, info.len()] {
            hello.extend_from_slice(&(v as u32).to_le_bytes());
        }
        assert_eq!(hello.len(), HELLO_HEADER);
        hello.extend_from_slice(&port.to_le_bytes());
        hello.extend_from_slice(&info);
        let mut s = TcpStream::connect(id.root_addr()).unwrap();
        s.write_all(&hello).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
    }

    /// What rank `r` of a 33-rank job gets when rank `dead` is gone after the root
    /// answered it: its subtree fails naming each rank's parent, the rest join.
    fn check_subtree_of_the_dead(outcomes: Vec<Option<Outcome>>, dead: usize, bound: Duration) {
        let below_dead = |mut r: usize| {
            while let Some(p) = parent(r) {
                if p == dead {
                    return true;
                }
                r = p;
            }
            false
        };
        for (r, o) in outcomes.into_iter().enumerate() {
            let Some((result, took)) = o else { continue };
            assert!(took < bound, "rank {r} took {took:?}");
            match (below_dead(r), result) {
                (false, Ok(_)) => {}
                (
                    true,
                    Err(Error::Timeout {
                        op, waiting_for, ..
                    }),
                ) => {
                    let p = parent(r).unwrap();
                    assert_eq!(waiting_for, vec![p], "rank {r}: {op}");
                    assert!(
                        op.contains(&format!("from rank {p}, its parent")),
                        "rank {r}: {op}"
                    );
                    if p != dead {
                        assert!(op.contains(&format!("[{dead}]")), "rank {r}: {op}");
                    }
                }
                (below, other) => panic!(
                    "rank {r} ({}below the dead rank {dead}): {:?}",
                    if below { "" } else { "not " },
                    other.err()
                ),
            }
        }
    }

    #[test]
    fn a_forwarding_rank_that_dies_fails_its_subtree_by_name_within_the_timeout() {
        let config = config(2);
        let id = UniqueId::bind_with(loopback(), &config).unwrap();
        // Rank 0 forwards to 4..7, which forward to 20..32.
        let stand_in = || dies_after_the_root(&id, 0, 33, &config, false);
        let outcomes = join_all(33, std::slice::from_ref(&id), &config, Some((0, &stand_in)));
        check_subtree_of_the_dead(outcomes, 0, Duration::from_secs(2 + 3));
    }

    #[test]
    fn a_child_that_is_gone_fails_its_parent_by_name() {
        let config = config(2);
        let id = UniqueId::bind_with(loopback(), &config).unwrap();
        // Rank 5 is rank 0's child, and parent of 24..27.
        let stand_in = || dies_after_the_root(&id, 5, 33, &config, true);
        let mut outcomes = join_all(33, std::slice::from_ref(&id), &config, Some((5, &stand_in)));
        let (zero, took) = outcomes[0].take().unwrap();
        match zero {
            Err(Error::Bootstrap(why)) => assert!(
                why.contains("rank 0 could not pass") && why.contains("rank 5 at"),
                "{why}"
            ),
            other => panic!("rank 0: {:?}", other.err()),
        }
        assert!(took < Duration::from_secs(2), "rank 0 took {took:?}");
        check_subtree_of_the_dead(outcomes, 5, Duration::from_secs(2 + 3));
    }

    #[test]
    fn tree_message_lengths_survive_mutated_input() {
        let token = [7u8; 16];
        let table = crate::bootstrap::root::encode_table(&[b"abc", b"de"]);
        crate::fuzz::mutations(&encode(&token, 0, &[1, 2], &table), 30_000, |b| {
            if let Ok(Ok(total)) = length(b, &token, 2) {
                assert!(total <= TREE_HEADER + 4 + max_table(2));
            }
        });
    }
}
