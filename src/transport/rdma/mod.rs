//! RDMA transport over libibverbs, loaded at run time (`ibv.rs`; nothing links
//! against rdma-core, so the crate builds and runs where it is absent).
//!
//! Owns: finding a port (`verbs::probe`, `MIXCCL_IB_HCA`), negotiating with each
//! peer on another host over the TCP connection the mesh already built
//! ([`upgrade`], `wire.rs`), and the link protocol (`link.rs`: RC queue pairs,
//! one per lane, RDMA WRITE with immediate into registered staging slots,
//! credit-based flow control). Must not touch: collectives, the bootstrap wire.
//!
//! Selection happens per peer and both ends always agree: each sends the other
//! an offer (port, fabric, queue pairs) or a decline (why not), and both apply
//! the same rule to the same two messages: RDMA when both offered on the same
//! fabric, else the TCP link stays. `MIXCCL_NET=IB` turns every "else" into an
//! error; `MIXCCL_NET=Socket` skips all of this. After an upgrade the replaced
//! TCP link is kept for its control channel (error reports, goodbye): a peer
//! process that dies is `PeerLost` at once instead of after the verbs retry
//! timeout. Its data sockets stay idle.

mod hca;
mod ibv;
mod link;
mod verbs;
mod wire;

use crate::config::{Config, NetTransport};
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::sys;
use crate::transport::tcp::TcpLink;
use crate::transport::Link;
use hca::HcaFilter;
use link::RdmaLink;
use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use verbs::{HcaVerbs, Port};
use wire::Message;

/// Staging slots per lane and direction; `MIXCCL_IB_BUFFER` is split into this many.
const SLOTS: usize = 8;

/// What [`upgrade`] needs from the bootstrap.
pub(crate) struct RdmaSpec<'a> {
    pub rank: usize,
    /// `same_host[p]`: rank p shares this host (never RDMA).
    pub same_host: &'a [bool],
    pub config: &'a Config,
    pub deadline: Instant,
}

fn lib_path(config: &Config) -> &str {
    config.ibverbs_lib.as_deref().unwrap_or(ibv::DEFAULT_LIB)
}

fn probe(config: &Config) -> std::result::Result<Port, String> {
    let filter = HcaFilter::parse(config.ib_hca.as_deref())?;
    verbs::probe(lib_path(config), &filter, config.ib_gid_index)
}

fn unavailable(why: &str) -> Error {
    Error::io(
        "choosing the transport between hosts (MIXCCL_NET=IB)",
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "RDMA is unavailable: {why} (set MIXCCL_NET=Socket or unset it to use TCP; \
                 MIXCCL_IBVERBS_LIB names the library, MIXCCL_IB_HCA the devices)"
            ),
        ),
    )
}

/// With `MIXCCL_NET=IB`, fails at once (before the rendezvous) if this rank has no
/// usable RDMA port; otherwise does nothing.
pub(crate) fn require(config: &Config) -> Result<()> {
    if config.net != NetTransport::Ib {
        return Ok(());
    }
    probe(config).map(drop).map_err(|why| unavailable(&why))
}

/// How a pair of ranks decided.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Rdma,
    /// Stay on TCP, because ...
    Tcp(String),
    /// Settings that must agree do not: an error whatever `MIXCCL_NET` says.
    Mismatch(String),
}

/// The rule both ends apply to the same two messages (so they always agree).
fn decide(rank: usize, peer: usize, mine: &Message, theirs: &Message) -> Verdict {
    match (mine, theirs) {
        (Message::Decline(why), _) => {
            Verdict::Tcp(format!("RDMA unavailable on rank {rank}: {why}"))
        }
        (_, Message::Decline(why)) => {
            Verdict::Tcp(format!("RDMA unavailable on rank {peer}: {why}"))
        }
        (Message::Offer(a), Message::Offer(b)) => {
            if a.qps.len() != b.qps.len() {
                Verdict::Mismatch(format!(
                    "MIXCCL_IB_QPS differs: rank {rank} has {} but rank {peer} has {}",
                    a.qps.len(),
                    b.qps.len()
                ))
            } else if (a.slots, a.slot_bytes) != (b.slots, b.slot_bytes) {
                Verdict::Mismatch(format!(
                    "MIXCCL_IB_BUFFER differs: rank {rank} has {} but rank {peer} has {}",
                    a.slots as usize * a.slot_bytes as usize,
                    b.slots as usize * b.slot_bytes as usize
                ))
            } else if a.fabric() != b.fabric() {
                Verdict::Tcp(format!(
                    "no common fabric (rank {rank} on {}, rank {peer} on {})",
                    a.fabric(),
                    b.fabric()
                ))
            } else {
                Verdict::Rdma
            }
        }
    }
}

/// Replaces TCP links to peers on other hosts by RDMA links where both ends can;
/// returns every link boxed. See the module doc for the rule.
pub(crate) fn upgrade(
    spec: &RdmaSpec<'_>,
    tcp: Vec<Option<TcpLink>>,
) -> Result<Vec<Option<Box<dyn Link>>>> {
    let rank = spec.rank;
    let cfg = spec.config;
    let peers: Vec<usize> = (0..tcp.len())
        .filter(|&p| tcp[p].is_some() && !spec.same_host.get(p).copied().unwrap_or(true))
        .collect();
    let boxed = |tcp: Vec<Option<TcpLink>>| {
        tcp.into_iter()
            .map(|t| t.map(|t| Box::new(t) as Box<dyn Link>))
            .collect()
    };
    if cfg.net == NetTransport::Socket || peers.is_empty() {
        return Ok(boxed(tcp));
    }
    let port = probe(cfg).map(Arc::new);
    if let Err(why) = &port {
        if cfg.net == NetTransport::Ib {
            return Err(unavailable(why));
        }
        log_info!(Some(rank), "RDMA unavailable ({why}), using TCP");
    }
    let slot_bytes = cfg.ib_buffer / SLOTS;
    let sock = |tcp: &[Option<TcpLink>], p: usize| -> Result<TcpStream> {
        tcp[p]
            .as_ref()
            .and_then(|t| t.socket(0))
            .and_then(|s| s.try_clone().ok())
            .ok_or_else(|| Error::Internal(format!("no TCP socket to rank {p}")))
    };

    // 1. Offer (or decline) to every peer; the messages are small, so all are
    //    written before any is read and nobody waits on anybody in a cycle.
    let mut mine = Vec::with_capacity(peers.len());
    for &p in &peers {
        let (v, msg) = match &port {
            // The link posts its receives now, in INIT, so that none is missing
            // when the peer's first write arrives.
            Ok(port) => match HcaVerbs::create(port.clone(), cfg.ib_qps, SLOTS, slot_bytes)
                .map_err(|e| Error::io(format!("creating queue pairs for rank {p}"), e))
                .and_then(|v| {
                    RdmaLink::new(p, v, cfg.ib_qps, SLOTS, slot_bytes, None, port.name.clone())
                }) {
                Ok(link) => {
                    let offer = Message::Offer(link.verbs().offer());
                    (Some(link), offer)
                }
                Err(e) => (
                    None,
                    Message::Decline(format!("setting up queue pairs on {}: {e}", port.name)),
                ),
            },
            Err(why) => (None, Message::Decline(why.clone())),
        };
        let s = sock(&tcp, p)?;
        send_frame(&s, &msg.encode(), spec.deadline, p)?;
        mine.push((p, s, v, msg));
    }

    // 2. Read each peer's message, apply the rule, connect, and say whether it worked.
    let mut ready = Vec::with_capacity(peers.len());
    let mut first_err = None;
    for (p, s, mut v, msg) in mine {
        let body = recv_frame(&s, wire::MAX_MESSAGE, spec.deadline, p)?;
        let theirs = Message::decode(&body).map_err(|error| Error::Transport { peer: p, error })?;
        let mut verdict = decide(rank, p, &msg, &theirs);
        if verdict == Verdict::Rdma {
            if let (Some(v), Message::Offer(o)) = (v.as_mut(), &theirs) {
                if let Err(e) = v.verbs_mut().connect(o) {
                    verdict = Verdict::Tcp(format!("connecting queue pairs on rank {rank}: {e}"));
                }
            }
        }
        if let Verdict::Mismatch(why) = &verdict {
            return Err(Error::invalid(format!(
                "settings must be the same on every rank: {why}"
            )));
        }
        send_all(&s, &[u8::from(verdict == Verdict::Rdma)], spec.deadline, p)?;
        ready.push((p, s, v, msg, theirs, verdict));
    }

    // 3. Both connected: RDMA. Otherwise the TCP link stays (or, with IB, an error).
    let mut tcp = tcp;
    let mut out: Vec<Option<Box<dyn Link>>> = (0..tcp.len()).map(|_| None).collect();
    for (p, s, v, msg, theirs, mut verdict) in ready {
        let mut ok = [0u8; 1];
        recv_exact(&s, &mut ok, spec.deadline, p)?;
        if verdict == Verdict::Rdma && ok[0] != 1 {
            verdict = Verdict::Tcp(format!("rank {p} could not connect its queue pairs"));
        }
        match (verdict, v, &port, &msg, &theirs) {
            (Verdict::Rdma, Some(mut link), Ok(port), Message::Offer(a), Message::Offer(b)) => {
                drop(s);
                if let Some(t) = tcp[p].take() {
                    link.set_control(Box::new(t));
                }
                log_info!(
                    Some(rank),
                    "rank {rank} -> rank {p} via rdma: {}, {}, {} QPs, MTU {} B",
                    port.name,
                    a.fabric(),
                    cfg.ib_qps,
                    128u32 << a.mtu.min(b.mtu)
                );
                out[p] = Some(Box::new(link));
            }
            (Verdict::Tcp(why) | Verdict::Mismatch(why), ..) => {
                if cfg.net == NetTransport::Ib {
                    first_err.get_or_insert_with(|| unavailable(&format!("to rank {p}: {why}")));
                }
                log_info!(Some(rank), "rank {rank} -> rank {p} via tcp: {why}");
            }
            _ => {
                return Err(Error::Internal(format!(
                    "RDMA verdict for rank {p} without an offer"
                )))
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    for (p, t) in tcp.into_iter().enumerate() {
        if let Some(t) = t {
            out[p] = Some(Box::new(t));
        }
    }
    Ok(out)
}

fn timeout(p: usize, what: &str) -> Error {
    Error::Timeout {
        op: format!("init: {what} rank {p} (RDMA negotiation)"),
        waiting_for: vec![p],
        after: Duration::ZERO,
    }
}

/// Waits for `events` on `s` until `deadline`.
fn wait(s: &TcpStream, events: i16, deadline: Instant, p: usize, what: &str) -> Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(timeout(p, what));
    }
    let mut fds = [sys::pollfd(s.as_raw_fd(), events)];
    sys::poll(&mut fds, left.min(Duration::from_millis(100)))
        .map_err(|e| Error::io(format!("polling the connection to rank {p}"), e))?;
    Ok(())
}

fn send_all(s: &TcpStream, mut b: &[u8], deadline: Instant, p: usize) -> Result<()> {
    while !b.is_empty() {
        match sys::send_nosignal(s.as_raw_fd(), b) {
            Ok(0) => wait(s, libc::POLLOUT, deadline, p, "sending to")?,
            Ok(n) => b = &b[n..],
            Err(e) => {
                return Err(Error::PeerLost {
                    rank: p,
                    reason: format!("sending RDMA connection data: {e}"),
                })
            }
        }
    }
    Ok(())
}

fn recv_exact(s: &TcpStream, buf: &mut [u8], deadline: Instant, p: usize) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match sys::recv_nowait(s.as_raw_fd(), &mut buf[got..]) {
            Ok(Some(0)) => {
                return Err(Error::PeerLost {
                    rank: p,
                    reason: "closed the connection during RDMA negotiation (EOF)".into(),
                })
            }
            Ok(Some(n)) => got += n,
            Ok(None) => wait(s, libc::POLLIN, deadline, p, "waiting for")?,
            Err(e) => {
                return Err(Error::PeerLost {
                    rank: p,
                    reason: format!("reading RDMA connection data: {e}"),
                })
            }
        }
    }
    Ok(())
}

/// `len:u16 body`.
fn send_frame(s: &TcpStream, body: &[u8], deadline: Instant, p: usize) -> Result<()> {
    let mut b = Vec::with_capacity(2 + body.len());
    b.extend_from_slice(&(body.len().min(u16::MAX as usize) as u16).to_le_bytes());
    b.extend_from_slice(body);
    send_all(s, &b, deadline, p)
}

/// Reads one frame, refusing a length above `max` before allocating.
fn recv_frame(s: &TcpStream, max: usize, deadline: Instant, p: usize) -> Result<Vec<u8>> {
    let mut len = [0u8; 2];
    recv_exact(s, &mut len, deadline, p)?;
    let len = u16::from_le_bytes(len) as usize;
    if len > max {
        return Err(Error::Bootstrap(format!(
            "rank {p} announced {len} bytes of RDMA connection data (at most {max})"
        )));
    }
    let mut body = vec![0u8; len];
    recv_exact(s, &mut body, deadline, p)?;
    Ok(body)
}

#[cfg(test)]
pub(crate) mod tests;
