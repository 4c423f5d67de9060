//! An island call as steps: native calls queued before a host phase, the host phase
//! (the part that crosses islands, over the representatives' or the shard
//! communicator), native calls after it. A stream-ordered caller (the C ABI) queues
//! the native calls on its own stream at enqueue and stages only the host phase's
//! regions through pinned memory around its hold, as NCCL queues its kernels; the
//! communicator's own host-synchronous path runs the shard form from the same steps,
//! so both paths send the same messages in the same order.
//!
//! [`IslandPlanner`] is this rank's view of its island, cloned out of the
//! communicator once (`Communicator::island_planner`) so that a caller can plan and
//! queue calls without locking the communicator (its progress thread may be running
//! an earlier call); [`Communicator::island_cross`] runs a host phase.

use super::{dev_ref, Call, Group, Islands, NativeComm};
use crate::comm::Communicator;
use crate::config::Collective;
use crate::device::{DeviceMemory, EventHandle, MemRef, Runtimes, StreamHandle, Vendor};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One step on this member's device: a native call of the island's library on
/// device buffers, or a copy between two device buffers (which the runtimes offer
/// only through the host: HCCL broadcasts in place, so a root's input is copied to
/// its output first, and a reduce-scatter across islands takes the rank's block out
/// of the whole result).
#[derive(Debug, Clone, Copy)]
pub struct NativeCall {
    /// `None`: a copy of `count` bytes from `send` to `recv`.
    coll: Option<Collective>,
    send: usize,
    recv: usize,
    /// Elements (per member block for all-gather and reduce-scatter).
    count: usize,
    dtype: DataType,
    op: ReduceOp,
    /// Member index of a broadcast's root.
    root: usize,
}

impl NativeCall {
    /// A copy of `len` bytes from device buffer `src` to `dst`.
    fn copy(src: usize, dst: usize, len: usize) -> NativeCall {
        NativeCall {
            coll: None,
            send: src,
            recv: dst,
            count: len,
            dtype: DataType::U8,
            op: ReduceOp::Sum,
            root: 0,
        }
    }

    /// (source, destination, bytes) when this step is a copy between device
    /// buffers, which the caller makes (the library is not involved).
    pub fn as_copy(&self) -> Option<(usize, usize, usize)> {
        self.coll
            .is_none()
            .then_some((self.send, self.recv, self.count))
    }

    /// Queues it on `stream` of the library's communicator `comm`.
    ///
    /// # Safety
    /// `send` and `recv` are device buffers of the lengths the call implies, valid
    /// until `stream` has run it.
    unsafe fn issue(
        &self,
        ccl: &dyn crate::ccl::Ccl,
        comm: crate::ccl::CommHandle,
        stream: StreamHandle,
    ) -> Result<()> {
        let (s, r, n, t, op) = (self.send, self.recv, self.count, self.dtype, self.op);
        // SAFETY: the caller's contract.
        unsafe {
            match self.coll {
                Some(Collective::AllReduce) => ccl.all_reduce(comm, s, r, n, t, op, stream),
                Some(Collective::ReduceScatter) => ccl.reduce_scatter(comm, s, r, n, t, op, stream),
                Some(Collective::AllGather) => ccl.all_gather(comm, s, r, n, t, stream),
                Some(Collective::Broadcast) => ccl.broadcast(comm, s, r, n, t, self.root, stream),
                Some(other) => Err(Error::Internal(format!(
                    "{other} is not a native island call"
                ))),
                None => Err(Error::Internal(
                    "a device copy is the caller's, not the library's".into(),
                )),
            }
        }
    }
}

/// A device region of a host phase: copied to the host before it (`copy_in`) and
/// back after it (`copy_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossRegion {
    /// Device address.
    pub addr: usize,
    /// Bytes.
    pub len: usize,
    /// The host phase reads it.
    pub copy_in: bool,
    /// The host phase writes it.
    pub copy_out: bool,
}

/// One call of a host phase, on regions by index.
#[derive(Debug, Clone, Copy)]
enum CrossOp {
    /// In-place all-reduce of a region over the shard communicator.
    Shard {
        region: usize,
        dtype: DataType,
        op: ReduceOp,
    },
    /// In-place all-reduce of a region over the representatives.
    RepsAllReduce {
        region: usize,
        dtype: DataType,
        op: ReduceOp,
    },
    /// In-place broadcast of a region over the representatives from group `root`.
    RepsBroadcast {
        region: usize,
        dtype: DataType,
        root: usize,
    },
    /// The representatives' all-gather of each group's blocks: region `from` holds
    /// this island's, region `to` gets every rank's in rank order.
    GatherGroups {
        from: usize,
        to: usize,
        block: usize,
    },
}

/// The host phase of an island call on this rank.
#[derive(Debug, Clone)]
pub struct CrossPhase {
    /// The device regions it reads and writes, in the order
    /// [`Communicator::island_cross`] takes their host copies.
    pub regions: Vec<CrossRegion>,
    ops: Vec<CrossOp>,
}

/// One island call on this member: native calls, a host phase, native calls.
#[derive(Debug, Clone, Default)]
pub struct IslandSteps {
    /// Native calls before the host phase.
    pub pre: Vec<NativeCall>,
    /// The host phase, when this rank has one.
    pub cross: Option<CrossPhase>,
    /// Native calls after it.
    pub post: Vec<NativeCall>,
}

/// Who is where, equal on every rank: enough to plan a call alike everywhere.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub(super) groups: Vec<Group>,
    pub(super) group_of: Vec<usize>,
    pub(super) rank: usize,
    /// Every group an island of one size, with a shard communicator per position.
    pub(super) shard_form: bool,
}

impl Layout {
    /// Does a call of `coll` with `dtype` and `op` go through the islands?
    pub(super) fn routes(&self, coll: Collective, dtype: DataType, op: ReduceOp) -> bool {
        super::routes(&self.groups, coll, dtype, op)
    }

    /// The steps of call `c` on this member, whose send (None: in place) and recv
    /// buffers are device memory of its device; `scratch(slot, len)` gives a device
    /// buffer. None when the call has no form in steps (reduce-scatter across
    /// islands: its last step is a device-to-device copy).
    pub(super) fn steps(
        &self,
        c: Call,
        send: Option<usize>,
        recv: usize,
        mut scratch: impl FnMut(usize, usize) -> Result<usize>,
    ) -> Result<Option<IslandSteps>> {
        let e = c.dtype.size();
        let g = self.group_of[c.rank];
        let members = &self.groups[g].members;
        let m = members.len();
        let index = members.iter().position(|&r| r == c.rank).unwrap_or(0);
        let lead = index == 0;
        let crossing = self.groups.len() > 1;
        let (dtype, op) = (c.dtype, c.op);
        let call = |coll, send, recv, count, root| NativeCall {
            coll: Some(coll),
            send,
            recv,
            count,
            dtype,
            op,
            root,
        };
        let mut s = IslandSteps::default();
        let region = |addr, len, copy_in, copy_out| CrossRegion {
            addr,
            len,
            copy_in,
            copy_out,
        };
        match c.coll {
            Collective::AllReduce if self.shard_form && crossing => {
                // Each member reduces q = count / m elements across islands; the
                // last count % m elements (the tail) are all-reduced in the island
                // and then across islands by the first members only.
                let inp = send.unwrap_or(recv);
                let (q, t) = (c.count / m, c.count % m);
                let main = q * m * e;
                let mut regions = Vec::new();
                let mut ops = Vec::new();
                if q > 0 {
                    let part = scratch(2, q * e)?;
                    s.pre.push(call(Collective::ReduceScatter, inp, part, q, 0));
                    ops.push(CrossOp::Shard {
                        region: regions.len(),
                        dtype,
                        op,
                    });
                    regions.push(region(part, q * e, true, true));
                    s.post.push(call(Collective::AllGather, part, recv, q, 0));
                }
                if t > 0 {
                    let tail = recv + main;
                    s.pre
                        .push(call(Collective::AllReduce, inp + main, tail, t, 0));
                    if lead {
                        ops.push(CrossOp::Shard {
                            region: regions.len(),
                            dtype,
                            op,
                        });
                        regions.push(region(tail, t * e, true, true));
                    }
                    s.post.push(call(Collective::Broadcast, tail, tail, t, 0));
                }
                if !ops.is_empty() {
                    s.cross = Some(CrossPhase { regions, ops });
                }
            }
            Collective::AllReduce => {
                s.pre
                    .push(call(c.coll, send.unwrap_or(recv), recv, c.count, 0));
                if crossing {
                    if lead {
                        s.cross = Some(CrossPhase {
                            regions: vec![region(recv, c.count * e, true, true)],
                            ops: vec![CrossOp::RepsAllReduce {
                                region: 0,
                                dtype,
                                op,
                            }],
                        });
                    }
                    s.post
                        .push(call(Collective::Broadcast, recv, recv, c.count, 0));
                }
            }
            Collective::Broadcast => {
                let root_group = self.group_of[c.root];
                if let (true, Some(from)) = (c.rank == c.root, send) {
                    // HCCL broadcasts in place: the root's input goes to its output.
                    s.pre.push(NativeCall::copy(from, recv, c.count * e));
                }
                if root_group == g {
                    let idx = members.iter().position(|&r| r == c.root).unwrap_or(0);
                    s.pre.push(call(c.coll, recv, recv, c.count, idx));
                }
                if crossing {
                    if lead {
                        s.cross = Some(CrossPhase {
                            regions: vec![region(recv, c.count * e, true, true)],
                            ops: vec![CrossOp::RepsBroadcast {
                                region: 0,
                                dtype,
                                root: root_group,
                            }],
                        });
                    }
                    if root_group != g {
                        s.post.push(call(c.coll, recv, recv, c.count, 0));
                    }
                }
            }
            Collective::AllGather => {
                let block = c.count * e;
                let own = send.unwrap_or(recv + c.rank * block);
                if !crossing {
                    // The island is the communicator: member order is rank order.
                    s.pre.push(call(c.coll, own, recv, c.count, 0));
                } else {
                    let gathered = scratch(2, m * block)?;
                    s.pre.push(call(c.coll, own, gathered, c.count, 0));
                    if lead {
                        s.cross = Some(CrossPhase {
                            regions: vec![
                                region(gathered, m * block, true, false),
                                region(recv, c.nranks * block, false, true),
                            ],
                            ops: vec![CrossOp::GatherGroups {
                                from: 0,
                                to: 1,
                                block,
                            }],
                        });
                    }
                    let all = c.nranks * c.count;
                    s.post.push(call(Collective::Broadcast, recv, recv, all, 0));
                }
            }
            Collective::ReduceScatter => {
                let block = c.count * e;
                let target = if send.is_some() {
                    recv
                } else {
                    recv + c.rank * block
                };
                let inp = send.unwrap_or(recv);
                if !crossing {
                    s.pre.push(call(c.coll, inp, target, c.count, 0));
                    return Ok(Some(s));
                }
                // Leader form on the whole input, then the rank's block out of the
                // whole result.
                let total = c.nranks * c.count;
                let all = scratch(2, total * e)?;
                s.pre.push(call(Collective::AllReduce, inp, all, total, 0));
                if lead {
                    s.cross = Some(CrossPhase {
                        regions: vec![region(all, total * e, true, true)],
                        ops: vec![CrossOp::RepsAllReduce {
                            region: 0,
                            dtype,
                            op,
                        }],
                    });
                }
                s.post.push(call(Collective::Broadcast, all, all, total, 0));
                s.post
                    .push(NativeCall::copy(all + c.rank * block, target, block));
            }
            _ => return Ok(None),
        }
        Ok(Some(s))
    }
}

impl Islands {
    /// Runs the ops of a host phase on `bufs` (one per region, host or device
    /// memory), with errors naming ranks of the whole communicator.
    pub(super) fn cross(&mut self, cross: &CrossPhase, bufs: &[MemRef]) -> Result<()> {
        if bufs.len() != cross.regions.len() {
            return Err(Error::Internal(format!(
                "a host phase of {} regions got {} buffers",
                cross.regions.len(),
                bufs.len()
            )));
        }
        for op in &cross.ops {
            match *op {
                CrossOp::Shard { region, dtype, op } => {
                    let index = self.member.as_ref().map_or(0, |m| m.nc.index);
                    let mut peers: Vec<usize> =
                        self.groups.iter().map(|g| g.members[index]).collect();
                    peers.sort_unstable();
                    let shards = self
                        .shards
                        .as_deref_mut()
                        .ok_or_else(|| Error::Internal("no shard communicator here".into()))?;
                    shards
                        .collective_mem(Collective::AllReduce, dtype, op, 0, None, bufs[region])
                        .map_err(|err| match err {
                            Error::PeerLost { rank, reason } => Error::PeerLost {
                                rank: peers.get(rank).copied().unwrap_or(rank),
                                reason: format!("{reason} (its shard of an island all-reduce)"),
                            },
                            err => err,
                        })?;
                }
                CrossOp::RepsAllReduce { region, dtype, op } => {
                    let b = bufs[region];
                    self.reps(|r| r.collective_mem(Collective::AllReduce, dtype, op, 0, None, b))?;
                }
                CrossOp::RepsBroadcast {
                    region,
                    dtype,
                    root,
                } => {
                    let b = bufs[region];
                    self.reps(|r| {
                        r.collective_mem(Collective::Broadcast, dtype, ReduceOp::Sum, root, None, b)
                    })?;
                }
                CrossOp::GatherGroups { from, to, block } => {
                    let own = super::read(bufs[from])?;
                    let nranks = self.group_of.len();
                    let full = self.gather_groups(own, block, nranks)?;
                    bufs[to].write_from(&full)?;
                }
            }
        }
        Ok(())
    }

    /// Runs `steps` host-synchronously on this member's own stream, the host phase on
    /// the device regions themselves.
    pub(super) fn run_steps(
        &mut self,
        steps: &IslandSteps,
        timeout: Duration,
        abort: &AtomicBool,
    ) -> Result<()> {
        let m = self.member.as_mut().expect("run_steps on a member");
        let (vendor, device) = (m.nc.vendor, m.nc.device);
        for call in &steps.pre {
            m.step(call, timeout, abort)?;
        }
        if let Some(cross) = &steps.cross {
            let bufs: Vec<MemRef> = cross
                .regions
                .iter()
                .map(|r| dev_ref(r.addr, r.len, vendor, device))
                .collect();
            self.cross(cross, &bufs)?;
        }
        let m = self.member.as_mut().expect("run_steps on a member");
        for call in &steps.post {
            m.step(call, timeout, abort)?;
        }
        Ok(())
    }
}

/// Device buffers of stream-ordered island calls, by slot. A buffer outgrown is kept
/// (retired) until the planner goes: calls queued earlier may still use it.
#[derive(Default)]
struct Scratch {
    slots: Vec<Option<DeviceMemory>>,
    retired: Vec<DeviceMemory>,
}

/// This rank's island, for stream-ordered callers: plans a call into steps, queues
/// native calls on a caller's stream, and watches them. Cloned out of the
/// communicator (`Communicator::island_planner`); usable without locking it.
#[derive(Clone)]
pub struct IslandPlanner {
    inner: Arc<PlannerInner>,
}

struct PlannerInner {
    layout: Layout,
    nranks: usize,
    nc: Arc<NativeComm>,
    scratch: Mutex<Scratch>,
    /// Recorded on the last caller stream to order a call on another stream after it.
    order_event: Mutex<Option<EventHandle>>,
}

impl Drop for PlannerInner {
    fn drop(&mut self) {
        if let Some(e) = self.order_event.get_mut().ok().and_then(Option::take) {
            if let Ok(d) = Runtimes::global().get(self.nc.vendor) {
                let _ = d.destroy_event(self.nc.device, e);
            }
        }
    }
}

impl std::fmt::Debug for IslandPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IslandPlanner({} member {} on {}:{})",
            self.inner.nc.ccl.kind(),
            self.inner.nc.index,
            self.inner.nc.vendor,
            self.inner.nc.device
        )
    }
}

impl IslandPlanner {
    /// The device this member's library runs on.
    pub fn device(&self) -> (Vendor, i32) {
        (self.inner.nc.vendor, self.inner.nc.device)
    }

    /// Does a call of `coll` with `dtype` and `op` go through the islands (alike on
    /// every rank)?
    pub fn routes(&self, coll: Collective, dtype: DataType, op: ReduceOp) -> bool {
        self.inner.layout.routes(coll, dtype, op)
    }

    /// The steps of a call whose send (None: in place) and recv buffers are device
    /// memory of [`IslandPlanner::device`]; `count` as the communicator counts it
    /// (per block for all-gather and reduce-scatter). None when the call must run
    /// host-synchronously instead.
    #[allow(clippy::too_many_arguments)]
    pub fn steps(
        &self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        count: usize,
        send: Option<usize>,
        recv: usize,
    ) -> Result<Option<IslandSteps>> {
        let c = Call {
            coll,
            dtype,
            op,
            root,
            count,
            rank: self.inner.layout.rank,
            nranks: self.inner.nranks,
        };
        let (vendor, device) = self.device();
        self.inner.layout.steps(c, send, recv, |slot, len| {
            let mut sc = self.inner.scratch.lock().unwrap_or_else(|e| e.into_inner());
            if sc.slots.len() <= slot {
                sc.slots.resize_with(slot + 1, || None);
            }
            if let Some(d) = sc.slots[slot].as_ref().filter(|d| d.len() >= len) {
                return Ok(d.addr());
            }
            let d = DeviceMemory::new(vendor, Some(device), len.next_power_of_two().max(4096))?;
            let a = d.addr();
            if let Some(old) = sc.slots[slot].replace(d) {
                sc.retired.push(old);
            }
            Ok(a)
        })
    }

    /// Orders the native calls about to be queued on `stream` after those queued on
    /// another stream before (an event recorded there, waited for here).
    pub fn order_on(&self, stream: StreamHandle) -> Result<()> {
        let nc = &self.inner.nc;
        let mut last = nc.last_stream.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(prev) = last.filter(|p| *p != stream) {
            let d = Runtimes::global().get(nc.vendor)?;
            let mut ev = self
                .inner
                .order_event
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let e = match *ev {
                Some(e) => e,
                None => *ev.insert(d.create_event(nc.device)?),
            };
            d.record_event(nc.device, e, prev)?;
            d.stream_wait_event(nc.device, stream, e)?;
        }
        *last = Some(stream);
        Ok(())
    }

    /// Queues native call `call` on `stream`.
    ///
    /// # Safety
    /// The call's buffers (the caller's, from [`IslandPlanner::steps`]) stay valid
    /// until `stream` has run it.
    pub unsafe fn queue(&self, call: &NativeCall, stream: StreamHandle) -> Result<()> {
        let nc = &self.inner.nc;
        let comm = nc.handle()?;
        // SAFETY: the caller's contract.
        unsafe { call.issue(nc.ccl, comm, stream) }
    }

    /// Polls `done` until it says so, watching the island: `aborted()`, a member
    /// process gone or `timeout` aborts the native communicator (queued native
    /// calls then end at once) and is the error.
    pub fn watch(
        &self,
        mut done: impl FnMut() -> Result<bool>,
        timeout: Duration,
        aborted: impl Fn() -> bool,
    ) -> Result<()> {
        let nc = &self.inner.nc;
        let start = Instant::now();
        let mut nap = Duration::from_micros(10);
        loop {
            if done()? {
                // Queued native calls that another member's failure ended early.
                return nc.async_error();
            }
            if let Some(e) = nc.stop_reason(start, timeout, aborted()) {
                if nc.finished_anyway(&e, &mut done) {
                    return nc.async_error();
                }
                nc.abort();
                return Err(e);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }

    /// Aborts the native communicator (the communicator failed or was aborted).
    pub fn abort(&self) {
        self.inner.nc.abort();
    }
}

impl Islands {
    /// The planner of this rank's island (members only).
    pub(super) fn planner(&self, rank: usize, nranks: usize) -> Option<IslandPlanner> {
        let m = self.member.as_ref()?;
        Some(IslandPlanner {
            inner: Arc::new(PlannerInner {
                layout: self.layout(rank),
                nranks,
                nc: m.nc.clone(),
                scratch: Mutex::new(Scratch::default()),
                order_event: Mutex::new(None),
            }),
        })
    }
}

impl Communicator {
    /// This rank's island planner, for a caller that queues island calls on its own
    /// streams; None unless this rank is a member of an island.
    pub fn island_planner(&self) -> Option<IslandPlanner> {
        self.islands.as_deref()?.planner(self.rank, self.nranks)
    }

    /// Runs the host phase of an island call (from [`IslandPlanner::steps`]) on
    /// host copies of its regions, `bufs` in the order of `cross.regions`. A failure
    /// latches as any call's.
    pub fn island_cross(&mut self, cross: &CrossPhase, bufs: &[MemRef]) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.load(std::sync::atomic::Ordering::SeqCst) {
            self.failed = Some(Error::Aborted);
            return Err(Error::Aborted);
        }
        let Some(mut is) = self.islands.take() else {
            return Err(Error::Internal(
                "an island host phase without islands".into(),
            ));
        };
        let r = is.cross(cross, bufs);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            is.reps = None;
            is.shards = None;
        }
        self.islands = Some(is);
        r
    }
}

impl super::Member {
    /// Runs one step host-synchronously: a native call on this member's stream, or a
    /// device copy through the host.
    fn step(&mut self, call: &NativeCall, timeout: Duration, abort: &AtomicBool) -> Result<()> {
        let (vendor, device) = (self.nc.vendor, self.nc.device);
        if let Some((src, dst, len)) = call.as_copy() {
            self.settle()?;
            let from = dev_ref(src, len, vendor, device);
            return super::copy(from, dev_ref(dst, len, vendor, device));
        }
        // SAFETY: the steps' buffers are device memory of this member's device, of
        // the lengths their calls imply (`Layout::steps`).
        self.native(timeout, abort, |ccl, comm, s| unsafe {
            call.issue(ccl, comm, s)
        })
    }
}
