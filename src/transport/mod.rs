//! Transports: a [`Link`] moves bytes between this rank and one peer, nothing else.
//! It never knows which collective it serves.
//!
//! A link has one or more *lanes*: independent, ordered byte streams (one TCP socket
//! each). Both ends see the same sequence of messages per link, and the executor puts
//! message `k` on lane `k % lanes`, so a long message split into chunks spreads over
//! all lanes. Every call is non-blocking; [`Link::wait_handle`] says which descriptor
//! to poll, so one thread drives all links of a rank with bounded waits.

pub(crate) mod board;
#[cfg(test)]
mod conformance;
pub(crate) mod filter;
pub(crate) mod hello;
pub mod mem;
pub(crate) mod rdma;
pub mod shm;
pub mod tcp;

use crate::error::Result;
use std::os::fd::RawFd;
use std::sync::Arc;

/// What carries a link: the transport class that logs name, the topology model costs
/// and the planner weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkClass {
    /// Shared memory inside a host.
    Shm,
    /// TCP sockets.
    Tcp,
    /// RDMA (verbs).
    Rdma,
    /// The in-process transport of tests.
    Mem,
}

impl LinkClass {
    /// Every class, in declaration order.
    pub const ALL: [LinkClass; 4] = [
        LinkClass::Shm,
        LinkClass::Tcp,
        LinkClass::Rdma,
        LinkClass::Mem,
    ];

    /// Lower-case name, as in logs, topology files and `MIXCCL_*` settings.
    pub fn name(self) -> &'static str {
        match self {
            LinkClass::Shm => "shm",
            LinkClass::Tcp => "tcp",
            LinkClass::Rdma => "rdma",
            LinkClass::Mem => "mem",
        }
    }

    /// The class called `name` ([`LinkClass::name`]), if any.
    pub fn from_name(name: &str) -> Option<LinkClass> {
        LinkClass::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl std::fmt::Display for LinkClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A rank's links, indexed by peer rank (`None` for itself).
pub type Links = Vec<Option<Box<dyn Link>>>;

/// Which way bytes flow on a lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Towards the peer.
    Send,
    /// From the peer.
    Recv,
}

/// A descriptor to poll while waiting for a lane to make progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitHandle {
    /// The descriptor.
    pub fd: RawFd,
    /// `libc::POLLIN` or `libc::POLLOUT`.
    pub events: i16,
    /// The descriptor is an eventfd doorbell that must be drained after it fires.
    pub doorbell: bool,
}

/// A point-to-point connection to one peer rank.
pub trait Link: Send {
    /// The peer's rank.
    fn peer(&self) -> usize;

    /// Number of independent ordered byte streams to the peer (at least 1).
    fn lanes(&self) -> usize;

    /// Writes a prefix of `buf` to `lane` without blocking; `Ok(0)` means "not now".
    /// Errors are `Error::PeerLost` or `Error::Io` naming the peer.
    fn send_some(&mut self, lane: usize, buf: &[u8]) -> Result<usize>;

    /// Writes a prefix of the concatenation of `bufs` to `lane` without blocking, in
    /// one go where the link can (small transfers that follow each other, such as a
    /// call header and the first data, then travel as one message). The default sends
    /// from the first non-empty piece only.
    fn send_gather(&mut self, lane: usize, bufs: &[&[u8]]) -> Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(b) => self.send_some(lane, b),
            None => Ok(0),
        }
    }

    /// Reads up to `buf.len()` bytes from `lane` without blocking; `Ok(0)` means "not now".
    /// A closed peer is `Error::PeerLost` once its last bytes are read; a link whose
    /// lanes cannot see the peer's end (rdma: idle queue pairs say nothing) reports it
    /// through [`Link::recv_control`] only. `conformance.rs` checks this contract on
    /// every transport.
    fn recv_some(&mut self, lane: usize, buf: &mut [u8]) -> Result<usize>;

    /// Zero-copy receive: where the link can show received bytes in place, calls `f`
    /// with a contiguous run of up to `max` of them on `lane` and consumes as many as
    /// `f` returns (`f` may be called with an empty slice when nothing has arrived).
    /// `Ok(None)` means the link cannot, and the caller uses `recv_some`.
    fn recv_with(
        &mut self,
        lane: usize,
        max: usize,
        f: &mut dyn FnMut(&[u8]) -> usize,
    ) -> Result<Option<usize>> {
        let _ = (lane, max, f);
        Ok(None)
    }

    /// Copies `dst.len()` bytes at address `addr` of the peer's memory into `dst` (single
    /// copy, cross-memory attach). `Ok(false)`: this link cannot.
    fn read_remote(&mut self, addr: u64, dst: &mut [u8]) -> Result<bool> {
        let _ = (addr, dst);
        Ok(false)
    }

    /// Sends a control message (see `header`) outside the lanes' byte streams: best
    /// effort, never blocks. `Ok(false)`: this link has no control channel.
    fn send_control(&mut self, msg: &[u8]) -> Result<bool> {
        let _ = msg;
        Ok(false)
    }

    /// A control message from the peer if a whole one has arrived, never blocking.
    /// `Err(PeerLost)` when the peer's end closed without saying goodbye (its process
    /// died); after a goodbye (a normal close) this is `Ok(None)`.
    fn recv_control(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// What to poll for control messages and for the peer's death, if anything.
    fn control_handle(&self) -> Option<WaitHandle> {
        None
    }

    /// Appends what to poll until `lane` may make progress in `dir` (a doorbell, a
    /// socket, a liveness channel).
    fn wait_handles(&self, lane: usize, dir: Direction, out: &mut Vec<WaitHandle>);

    /// The transport that carries this link.
    fn class(&self) -> LinkClass;

    /// The board of this rank's host ([`board::Board`]), shared by all its links that
    /// have one: shared-memory links of a communicator whose ranks are all on one host.
    fn board(&self) -> Option<Arc<board::Board>> {
        None
    }
}
