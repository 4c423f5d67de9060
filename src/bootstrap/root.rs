//! The root rendezvous: a thread that admits each rank's hello (magic, version,
//! token, rank in range, no duplicate), then sends every rank the address table
//! (repeated infos sent once, [`encode_table`]) and closes every connection.
//! Strangers are closed and logged; if ranks are missing at the deadline (timeout
//! after the first hello), every joined rank is told which ones.

use crate::bootstrap::{
    ADDR_LEN, FAIL_MAGIC, HELLO_HEADER, HELLO_MAGIC, MAX_INFO, REF_MARK, TABLE_MAGIC,
};
use crate::config::{Config, TlsPolicy};
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::tcp::tls::{self, TlsContext, TlsStream};
use crate::wire::{MAX_RANKS, PROTOCOL_VERSION};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

struct Pending {
    stream: TcpStream,
    from: SocketAddr,
    buf: Vec<u8>,
    since: Instant,
    /// The rank opened TLS: its hello arrives through it.
    tls: Option<TlsStream>,
}

struct Joined {
    stream: TcpStream,
    info: Vec<u8>,
    tls: Option<TlsStream>,
}

struct Root {
    token: [u8; 16],
    /// This rank's certificates and `MIXCCL_TLS`, when not off.
    tls: Option<(Arc<TlsContext>, TlsPolicy)>,
    timeout: Duration,
    /// Why ranks were refused (at most `MAX_REFUSED`), for the failure report.
    refused: Vec<String>,
    nranks: Option<usize>,
    joined: Vec<Option<Joined>>,
}

/// What the root makes of a complete hello.
#[derive(Debug)]
struct Hello {
    rank: usize,
    nranks: usize,
    info: Vec<u8>,
}

/// Parses a hello from `buf`: `Ok(None)` if more bytes are needed.
fn parse_hello(buf: &[u8], token: &[u8; 16]) -> std::result::Result<Option<Hello>, String> {
    if buf.len() < HELLO_HEADER {
        if !HELLO_MAGIC.starts_with(&buf[..buf.len().min(8)]) {
            return Err("bad magic".into());
        }
        return Ok(None);
    }
    if &buf[..8] != HELLO_MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_le_bytes([buf[8], buf[9]]);
    if version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {version}, expected {PROTOCOL_VERSION}"
        ));
    }
    if &buf[10..26] != token {
        return Err("wrong token (not this communicator)".into());
    }
    let u32at = |i: usize| u32::from_le_bytes(buf[i..i + 4].try_into().expect("4 bytes")) as usize;
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
    if buf.len() < HELLO_HEADER + len {
        return Ok(None);
    }
    Ok(Some(Hello {
        rank,
        nranks,
        info: buf[HELLO_HEADER..HELLO_HEADER + len].to_vec(),
    }))
}

impl Root {
    fn new(token: [u8; 16], timeout: Duration, tls: Option<(Arc<TlsContext>, TlsPolicy)>) -> Root {
        Root {
            token,
            tls,
            timeout,
            refused: Vec::new(),
            nranks: None,
            joined: Vec::new(),
        }
    }

    fn missing(&self) -> Vec<usize> {
        (0..self.nranks.unwrap_or(0))
            .filter(|r| self.joined[*r].is_none())
            .collect()
    }

    fn serve(mut self, listener: TcpListener) {
        let mut deadline = Instant::now() + self.timeout;
        let mut pending: Vec<Pending> = Vec::new();
        loop {
            if self.nranks.is_some() && self.missing().is_empty() {
                self.send_table();
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
                    Ok(Some(hello)) => {
                        let p = pending.swap_remove(i);
                        let required = self.tls.as_ref().is_some_and(|(_, policy)| {
                            tls::bootstrap_encrypts(*policy, p.from.ip())
                        });
                        if required && p.tls.is_none() {
                            let why = format!(
                                "rank {} at {} was refused: it connected without TLS, but \
                                 MIXCCL_TLS={} at the root encrypts it (is MIXCCL_TLS set on rank {}?)",
                                hello.rank,
                                p.from,
                                self.tls.as_ref().map_or("off", |(_, policy)| policy.name()),
                                hello.rank
                            );
                            log_warn!(None, "bootstrap root: {why}");
                            refuse_plain(p.stream, hello.rank, &why, self.timeout);
                            if self.refused.len() < MAX_REFUSED {
                                self.refused.push(why);
                            }
                            continue;
                        }
                        if let Err(why) = self.admit(p.stream, p.tls, hello, &mut deadline) {
                            log_warn!(None, "bootstrap root: refused {}: {why}", p.from);
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
                    pending.push(Pending {
                        stream,
                        from,
                        buf: Vec::new(),
                        since: Instant::now(),
                        tls: None,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn progress(&self, p: &mut Pending) -> std::result::Result<Option<Hello>, String> {
        let mut chunk = [0u8; 1024];
        loop {
            let want = match parse_hello(&p.buf, &self.token)? {
                Some(h) => return Ok(Some(h)),
                None if p.buf.len() < HELLO_HEADER => HELLO_HEADER - p.buf.len(),
                None => {
                    HELLO_HEADER + u32::from_le_bytes(p.buf[34..38].try_into().expect("4")) as usize
                        - p.buf.len()
                }
            };
            let take = want.min(chunk.len());
            if let Some(t) = &mut p.tls {
                let fd = p.stream.as_raw_fd();
                t.handshake_step(fd).map_err(|e| e.to_string())?;
                if t.is_handshaking() {
                    return Ok(None);
                }
                match t.recv(fd, &mut chunk[..take]).map_err(|e| e.to_string())? {
                    None => return Err("closed the TLS connection before its hello".into()),
                    Some(0) => return Ok(None),
                    Some(k) => p.buf.extend_from_slice(&chunk[..k]),
                }
                continue;
            }
            match p.stream.read(&mut chunk[..take]) {
                Ok(0) => return Err("closed before completing its hello".into()),
                Ok(k) if p.buf.is_empty() && chunk[0] == tls::TLS_HANDSHAKE_BYTE => {
                    let Some((ctx, _)) = &self.tls else {
                        return Err("opened TLS, but MIXCCL_TLS is off at the root".into());
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

    fn admit(
        &mut self,
        stream: TcpStream,
        tls: Option<TlsStream>,
        h: Hello,
        deadline: &mut Instant,
    ) -> std::result::Result<(), String> {
        match self.nranks {
            None => {
                self.nranks = Some(h.nranks);
                self.joined = (0..h.nranks).map(|_| None).collect();
                // The clock for missing ranks starts with the first rank that arrives.
                *deadline = Instant::now() + self.timeout;
            }
            Some(n) if n != h.nranks => {
                return Err(format!(
                    "rank {} says nranks {}, earlier ranks said {n}",
                    h.rank, h.nranks
                ))
            }
            Some(_) => {}
        }
        if self.joined[h.rank].is_some() {
            return Err(format!("rank {} already joined (duplicate rank)", h.rank));
        }
        log_info!(
            None,
            "bootstrap root: rank {} of {} joined",
            h.rank,
            h.nranks
        );
        self.joined[h.rank] = Some(Joined {
            stream,
            info: h.info,
            tls,
        });
        Ok(())
    }

    fn broadcast(&mut self, msg: &[u8]) {
        for (r, j) in self.joined.iter_mut().enumerate() {
            if let Some(j) = j {
                let sent = match &mut j.tls {
                    Some(t) => tls::write_all_by(
                        t,
                        j.stream.as_raw_fd(),
                        msg,
                        Instant::now() + self.timeout,
                    ),
                    None => j
                        .stream
                        .set_nonblocking(false)
                        .and_then(|_| j.stream.set_write_timeout(Some(self.timeout)))
                        .and_then(|_| j.stream.write_all(msg)),
                };
                if let Err(e) = sent {
                    log_warn!(None, "bootstrap root: could not send to rank {r}: {e}");
                }
            }
        }
    }

    fn send_table(&mut self) {
        let n = self.joined.len();
        let infos: Vec<&[u8]> = self.joined.iter().flatten().map(|j| &j.info[..]).collect();
        let msg = encode_table(&infos);
        let start = Instant::now();
        self.broadcast(&msg);
        log_info!(
            None,
            "bootstrap root: sent the table ({} bytes) to {n} ranks in {:.1} ms",
            msg.len(),
            start.elapsed().as_secs_f64() * 1e3
        );
    }

    fn send_failure(&mut self) {
        let missing = self.missing();
        if self.nranks.is_none() {
            log_warn!(
                None,
                "bootstrap root: no rank joined within {:?}; giving up",
                self.timeout
            );
            return;
        }
        log_warn!(
            None,
            "bootstrap root: ranks {missing:?} did not join within {:?}",
            self.timeout
        );
        let mut reason = format!("ranks {missing:?} did not join");
        for why in &self.refused {
            reason.push_str("; ");
            reason.push_str(why);
        }
        self.broadcast(&failure(&missing, &reason));
    }
}

/// Most refusals the root keeps to explain a failed rendezvous.
const MAX_REFUSED: usize = 16;

/// `MXFAIL count missing* len reason`, the reason cut to `MAX_INFO` bytes.
fn failure(missing: &[usize], reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(MAX_INFO);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
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
    let sent = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_write_timeout(Some(timeout.min(Duration::from_secs(5)))))
        .and_then(|_| stream.write_all(&failure(&[rank], why)));
    if let Err(e) = sent {
        log_warn!(None, "bootstrap root: could not tell rank {rank} why: {e}");
    }
}

/// The table message: `MXTABLE nranks` and per rank either `len:u32 info:[len]`
/// or, when its info past the address (`ADDR_LEN` bytes) equals an earlier
/// rank's, `REF_MARK ref:u32 address:[ADDR_LEN]`: ranks of one host and settings
/// send the same host, settings and probe, so the table (which the root sends
/// to every rank: n^2 bytes in all) shrinks from ~630 to ~27 bytes per rank.
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
        assert!(parse_hello(&ok[..10], &t).unwrap().is_none());
        assert!(parse_hello(&ok[..HELLO_HEADER + 1], &t).unwrap().is_none());
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
    fn hello_parsing_survives_mutated_input() {
        let t = [9u8; 16];
        let mut parsed = 0;
        crate::fuzz::mutations(&hello(t, 1, 4, b"listen=1.2.3.4"), 30_000, |b| {
            if let Ok(Some(h)) = parse_hello(b, &t) {
                assert!(h.rank < h.nranks && h.info.len() <= b.len());
                parsed += 1;
            }
        });
        assert!(parsed > 0, "the valid hello must parse");
    }
}
