//! The communicator: rank, size, config, links to peers, the error latch and the
//! collective calls. It validates arguments, asks `plan` and `algo` for a schedule
//! and hands it to `exec`; it never touches sockets or reduction loops itself.
//!
//! - `mod.rs` (this file): the [`Communicator`] and its public collective calls.
//! - `construct`: init, the launch environment, custom and in-process links, shrink, split.
//! - `lazy`: network links made the first time a call needs them.
//! - `elastic`: revoke, grow (grow id, members and joiners), shrink by host or vendor.
//! - `measure`: the topology model built at init and refined by a short measurement.
//! - `validate`: argument checks (buffer lengths, ranks, roots, peers).
//! - `run`: a call's plan (memoised), its pieces and its run through the executor.
//! - `board`: adopting the host's board and the cross-memory read probe.
//! - `fp8`: fp8 reductions, run in f32 and rounded once.
//! - `stage`: collectives on buffers in any memory, staged through pinned host memory.
//! - `uneven`: the uneven ("v") collectives, whose blocks differ in size by rank.
//! - `island`: islands of one host and vendor, whose phases run in the vendor's own
//!   collective library (`ccl`).

mod board;
mod construct;
mod elastic;
mod fp8;
mod island;
mod lazy;
mod measure;
mod run;
mod stage;
mod uneven;
mod validate;

pub use elastic::{Island, RevokeHandle};
pub use island::{CrossPhase, CrossRegion, IslandPlanner, IslandSteps, NativeCall};
pub use stage::TransferMem;
pub use uneven::{displacements, split_by_weight};

use crate::algo::{self, Call};
use crate::bootstrap;
use crate::config::{Algorithm, Collective, Config};
use crate::element::{DataType, Element};
use crate::error::{Error, Result};
use crate::exec::Workspace;
use crate::plan;
use crate::reduce::ReduceOp;
use crate::transport::{Link, LinkClass};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use validate::check_rank;

/// A group of ranks that run collectives together. Calls on one communicator must
/// be made in the same order on every rank; a communicator is used by one thread
/// at a time (`&mut self`), and [`AbortHandle`] stops it from any thread.
pub struct Communicator {
    rank: usize,
    nranks: usize,
    config: Config,
    links: Vec<Option<Box<dyn Link>>>,
    scratch: Vec<u64>,
    workspace: Workspace,
    seq: u64,
    failed: Option<Error>,
    abort: Arc<AtomicBool>,
    /// Set with `abort` by a revoke: the stopped call reports `Revoked` and tells peers.
    revoked: Arc<AtomicBool>,
    /// The address this rank's TCP listener used (None for in-process links).
    local_ip: Option<std::net::IpAddr>,
    /// What the planner may use beyond links (agreed by all ranks at init).
    caps: plan::Capabilities,
    /// Listeners and peers' addresses kept from init, for `shrink`.
    rejoin: Option<bootstrap::Rejoin>,
    /// Call headers sent and received (see `exec::HEADER_SLOT`).
    header_buf: Vec<u8>,
    /// Point-to-point calls so far, per peer (see `exec::Context::p2p_seq`).
    p2p_seq: std::cell::RefCell<Vec<u64>>,
    /// Host staging buffers for device memory, kept between calls (`stage`).
    staging: stage::Staging,
    /// The last call's plan and schedule: a loop of equal calls (the common case)
    /// plans and builds once. Both are pure functions of the call and of what the
    /// communicator fixed at init.
    last_plan: Option<(Call, Algorithm, std::sync::Arc<algo::Schedule>)>,
    /// The host's board, when every rank is on this host (`transport::board`).
    board: Option<Arc<crate::transport::board::Board>>,
    /// The type call headers name while an fp8 reduction runs widened to f32
    /// (`fp8`), so ranks passing different fp8 formats still mismatch.
    header_dtype: Option<DataType>,
    /// The islands formed at init, when any did (`island`).
    islands: Option<Box<island::Islands>>,
}

/// One transfer of a [`Communicator::group`] call.
#[derive(Debug)]
pub enum Transfer<'a> {
    /// Send `buf` to rank `peer`.
    Send {
        /// Destination rank.
        peer: usize,
        /// Bytes to send.
        buf: &'a [u8],
    },
    /// Receive `buf.len()` bytes from rank `peer`.
    Recv {
        /// Source rank.
        peer: usize,
        /// Where the bytes land.
        buf: &'a mut [u8],
    },
}

/// What a call's header says about it.
#[derive(Debug, Clone, Copy)]
struct Meta {
    coll: Collective,
    dtype: DataType,
    op: ReduceOp,
    count: usize,
    root: usize,
    algo: &'static str,
}

/// Names a call in errors; formatted only when an error needs it.
struct CallLabel {
    coll: Collective,
    seq: u64,
    rank: usize,
}

impl std::fmt::Display for CallLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} #{} on rank {}", self.coll, self.seq, self.rank)
    }
}

/// Aborts a communicator from another thread: in-flight and later calls fail with
/// `Error::Aborted`.
#[derive(Clone, Debug)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// Requests the abort; returns at once.
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Communicator {
    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.nranks
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport to each peer: `None` for this rank and for peers not connected
    /// (yet): network links are made the first time a call needs them.
    pub fn link_classes(&self) -> Vec<Option<LinkClass>> {
        self.links
            .iter()
            .map(|l| l.as_ref().map(|l| l.class()))
            .collect()
    }

    /// The topology model this communicator plans with.
    pub fn topology(&self) -> Option<&crate::topo::Topology> {
        self.caps.topo.as_deref()
    }

    /// Replaces the model the planner uses (init, once every rank holds the same one).
    fn set_topology(&mut self, t: crate::topo::Topology) {
        self.caps.set_topology(t);
    }

    /// A handle that aborts this communicator from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.abort.clone())
    }

    /// The error that stopped this communicator, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Validates and runs a byte-level collective (`send: None` = in place).
    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        let count = self.count_of(coll, dtype, root, send.map(<[u8]>::len), recv.len())?;
        if let Some(fmt) = dtype.fp8().filter(|_| fp8::reduces(coll)) {
            return self.widened(coll, dtype, fmt, op, root, send, recv);
        }
        if self.island_route(coll, dtype, op) {
            let host = crate::device::MemoryKind::Host;
            // SAFETY: host slices, borrowed for the call (recv exclusively).
            let (s, r) = unsafe {
                (
                    send.map(|s| crate::MemRef::with_kind(s.as_ptr(), s.len(), host)),
                    crate::MemRef::with_kind(recv.as_ptr(), recv.len(), host),
                )
            };
            return self.island_call(coll, dtype, op, root, count, s, r);
        }
        self.launch(coll, dtype, op, count, root, send, recv)
    }

    /// Byte-level all-reduce of `dtype` elements; `send: None` means in place in `recv`.
    /// The typed methods and the C ABI call this.
    pub fn all_reduce_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllReduce, dtype, op, 0, send, recv)
    }

    /// Byte-level all-gather: `recv` holds `nranks` blocks of `send`'s size; `send: None`
    /// means this rank's block is already in place in `recv`.
    pub fn all_gather_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllGather, dtype, ReduceOp::Sum, 0, send, recv)
    }

    /// Byte-level broadcast of `recv.len()` bytes from `root`; `send` is read on the root
    /// only (`None` there means in place).
    pub fn broadcast_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
        root: usize,
    ) -> Result<()> {
        self.raw(
            Collective::Broadcast,
            dtype,
            ReduceOp::Sum,
            root,
            send,
            recv,
        )
    }

    /// Byte-level reduce to `root`. Out of place, `recv` is written on the root only (may
    /// be empty elsewhere); `send: None` reduces `recv` in place (non-root buffers are read only).
    pub fn reduce_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
        root: usize,
    ) -> Result<()> {
        self.raw(Collective::Reduce, dtype, op, root, send, recv)
    }

    /// Byte-level reduce-scatter. Out of place, `send` holds `nranks` blocks of `recv`'s
    /// size; with `send: None`, `recv` holds all blocks and the result lands in block `rank`.
    pub fn reduce_scatter_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::ReduceScatter, dtype, op, 0, send, recv)
    }

    /// Byte-level all-to-all over `nranks` equal blocks; `send: None` means in place.
    pub fn all_to_all_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllToAll, dtype, ReduceOp::Sum, 0, send, recv)
    }

    /// Runs every send and receive in `transfers` together, like sends and receives
    /// between `ncclGroupStart` and `ncclGroupEnd`: any pattern completes without deadlock
    /// as long as every rank posts matching transfers. Several transfers to one peer are
    /// matched in order; a send to and a receive from this rank itself become a copy.
    pub fn group(&mut self, transfers: Vec<Transfer<'_>>) -> Result<()> {
        let mut ins: Vec<&[u8]> = Vec::new();
        let mut outs: Vec<&mut [u8]> = Vec::new();
        let mut plan = Vec::with_capacity(transfers.len());
        for t in transfers {
            match t {
                Transfer::Send { peer, buf } => {
                    check_rank("send peer", peer, self.nranks)?;
                    plan.push((true, peer, ins.len(), buf.len()));
                    ins.push(buf);
                }
                Transfer::Recv { peer, buf } => {
                    check_rank("recv peer", peer, self.nranks)?;
                    plan.push((false, peer, outs.len(), buf.len()));
                    outs.push(buf);
                }
            }
        }
        let chunk = self.config.chunk_bytes;
        let schedule = algo::group(self.rank, chunk, &plan)?;
        let meta = Meta {
            coll: Collective::SendRecv,
            dtype: DataType::U8,
            op: ReduceOp::Sum,
            count: 0,
            root: 0,
            algo: "group",
        };
        self.run_schedule(
            meta,
            &std::sync::Arc::new(schedule),
            &[],
            &mut [],
            &ins,
            &mut outs,
        )
    }

    /// `recv[i] = op over ranks of send[i]`; `recv.len()` must equal `send.len()`.
    pub fn all_reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.all_reduce_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place [`Communicator::all_reduce`].
    pub fn all_reduce_in_place<T: Element>(&mut self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.all_reduce_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf))
    }

    /// Gathers every rank's `send` into `recv` in rank order; `recv.len() == nranks * send.len()`.
    pub fn all_gather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.all_gather_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-gather: `buf` holds `nranks` blocks and this rank's block is
    /// already at `buf[rank * count..][..count]`.
    pub fn all_gather_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        self.all_gather_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf))
    }

    /// Copies `root`'s `send` into every rank's `recv`; `send` is read on the root only
    /// (others may pass an empty slice) and must there be as long as `recv`.
    pub fn broadcast<T: Element>(&mut self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.broadcast_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            root,
        )
    }

    /// In-place broadcast from `root`.
    pub fn broadcast_in_place<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<()> {
        self.broadcast_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf), root)
    }

    /// Reduces every rank's `send` into `recv` on `root`; `recv` is written on the root
    /// only (others may pass an empty slice) and must there be as long as `send`.
    pub fn reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.reduce_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            root,
        )
    }

    /// In-place reduce to `root`; non-root buffers are only read.
    pub fn reduce_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.reduce_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf), root)
    }

    /// Reduces `send` (`nranks * recv.len()` elements) over ranks and leaves block
    /// `rank` of the result in `recv`.
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place reduce-scatter: the result lands in `buf[rank * count..][..count]`.
    pub fn reduce_scatter_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf))
    }

    /// Block `j` of `send` goes to rank `j`; block `j` of `recv` comes from rank `j`.
    /// Both hold `nranks` blocks of equal size.
    pub fn all_to_all<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.all_to_all_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-to-all.
    pub fn all_to_all_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        self.all_to_all_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf))
    }

    /// Sends `buf` to `peer`, which must call [`Communicator::recv`] with the same length.
    pub fn send<T: Element>(&mut self, buf: &[T], peer: usize) -> Result<()> {
        self.no_self("send to", peer)?;
        self.group(vec![Transfer::Send {
            peer,
            buf: bytemuck::cast_slice(buf),
        }])
    }

    /// Receives `buf.len()` elements from `peer`.
    pub fn recv<T: Element>(&mut self, buf: &mut [T], peer: usize) -> Result<()> {
        self.no_self("receive from", peer)?;
        self.group(vec![Transfer::Recv {
            peer,
            buf: bytemuck::cast_slice_mut(buf),
        }])
    }

    /// Sends `send` to rank `to` while receiving `recv` (same length) from rank `from`,
    /// without deadlock whatever the size.
    pub fn send_recv<T: Element>(
        &mut self,
        send: &[T],
        to: usize,
        recv: &mut [T],
        from: usize,
    ) -> Result<()> {
        if send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "send_recv on rank {}: send has {} elements but recv has {}",
                self.rank,
                send.len(),
                recv.len()
            )));
        }
        self.group(vec![
            Transfer::Send {
                peer: to,
                buf: bytemuck::cast_slice(send),
            },
            Transfer::Recv {
                peer: from,
                buf: bytemuck::cast_slice_mut(recv),
            },
        ])
    }

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<()> {
        let call = self.call(
            Collective::Barrier,
            DataType::U8,
            ReduceOp::Sum,
            0,
            0,
            false,
        );
        self.run(call, &[], &mut [])
    }
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.rank)
            .field("nranks", &self.nranks)
            .field("seq", &self.seq)
            .field("failed", &self.failed)
            .finish()
    }
}
