//! The executor: runs one rank's [`Schedule`] over its links.
//!
//! Ops run as soon as the ops they depend on have finished; dependencies come from
//! program order and region overlap (read-after-write, write-after-read,
//! write-after-write), so algorithms only state what moves where. Per link, the
//! k-th send (or receive) goes on lane `k % lanes`, and each lane runs its ops in
//! order. One thread drives everything with non-blocking calls and sleeps in
//! `poll` when nothing can move; a wait that sees no progress for `timeout`
//! becomes `Error::Timeout` naming the peers waited on.
//!
//! Received data to reduce lands in a small per-lane staging buffer and is reduced
//! into place while later bytes are still in flight, so reduction overlaps transfer.

use crate::algo::{Buf, Op, Region, Schedule};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::header::{decode_control, encode_control, CallHeader, HEADER_BYTES};
use crate::reduce::{self, ReduceOp};
use crate::sys;
use crate::transport::{Direction, Link};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of staging per lane for receive-and-reduce (fits in L2 with its destination).
const STAGING_BYTES: usize = 256 << 10;
/// How long a rank that lost a peer waits for that peer's mismatch report.
const CONTROL_GRACE: Duration = Duration::from_millis(100);
/// Longest single sleep, so an abort is noticed quickly.
const MAX_SLEEP: Duration = Duration::from_millis(100);

/// The caller's buffers and the library's scratch for one call.
pub(crate) struct Buffers<'a, 'g> {
    pub input: &'a [u8],
    pub output: &'a mut [u8],
    pub scratch: &'a mut [u8],
    /// Send and receive buffers of a group call.
    pub group_in: &'a [&'g [u8]],
    pub group_out: &'a mut [&'g mut [u8]],
    /// Call headers, [`HEADER_SLOT`] bytes per peer (see `Buf::Header`).
    pub header: &'a mut [u8],
}

/// Bytes of `Buffers::header` per peer: the header sent, then the one received.
pub(crate) const HEADER_SLOT: usize = 2 * HEADER_BYTES;

impl Buffers<'_, '_> {
    fn get(&self, r: Region) -> &[u8] {
        let b: &[u8] = match r.buf {
            Buf::Input => self.input,
            Buf::Output => self.output,
            Buf::Scratch => self.scratch,
            Buf::GroupIn(i) => self.group_in[i as usize],
            Buf::GroupOut(i) => self.group_out[i as usize],
            Buf::Header => self.header,
        };
        &b[r.off..r.off + r.len]
    }

    fn get_mut(&mut self, r: Region) -> &mut [u8] {
        let b: &mut [u8] = match r.buf {
            Buf::Input | Buf::GroupIn(_) => unreachable!("schedules never write send buffers"),
            Buf::Output => self.output,
            Buf::Scratch => self.scratch,
            Buf::GroupOut(i) => self.group_out[i as usize],
            Buf::Header => self.header,
        };
        &mut b[r.off..r.off + r.len]
    }

    /// `src` for reading and `dst` for writing at once; they must not overlap.
    fn pair(&mut self, src: Region, dst: Region) -> (&[u8], &mut [u8]) {
        debug_assert!(!src.overlaps(&dst));
        if src.buf == dst.buf {
            let whole: &mut [u8] = match dst.buf {
                Buf::Output => self.output,
                Buf::Scratch => self.scratch,
                Buf::GroupOut(i) => self.group_out[i as usize],
                Buf::Header => self.header,
                Buf::Input | Buf::GroupIn(_) => unreachable!("schedules never write send buffers"),
            };
            if src.off < dst.off {
                let (a, b) = whole.split_at_mut(dst.off);
                (&a[src.off..src.off + src.len], &mut b[..dst.len])
            } else {
                let (a, b) = whole.split_at_mut(src.off);
                (&b[..src.len], &mut a[dst.off..dst.off + dst.len])
            }
        } else {
            let (s, d): (&[u8], &mut [u8]) = match (src.buf, dst.buf) {
                (Buf::Input, Buf::Output) => (self.input, self.output),
                (Buf::Input, Buf::Scratch) => (self.input, self.scratch),
                (Buf::Output, Buf::Scratch) => (self.output, self.scratch),
                (Buf::Scratch, Buf::Output) => (self.scratch, self.output),
                (Buf::GroupIn(i), Buf::GroupOut(j)) => {
                    (self.group_in[i as usize], self.group_out[j as usize])
                }
                _ => unreachable!("no schedule pairs these buffers"),
            };
            (
                &s[src.off..src.off + src.len],
                &mut d[dst.off..dst.off + dst.len],
            )
        }
    }
}

/// Per-call facts the executor needs.
pub(crate) struct Context<'a> {
    pub dtype: DataType,
    pub op: ReduceOp,
    pub nranks: usize,
    /// This rank (for error messages).
    pub rank: usize,
    pub timeout: Duration,
    /// How long to poll without sleeping before blocking.
    pub spin: Duration,
    /// Names the call in errors, e.g. "allreduce #12 on rank 3" (formatted only on error).
    pub label: &'a dyn std::fmt::Display,
    pub abort: &'a AtomicBool,
    /// This rank's call, sent ahead of the data to every peer it sends to and
    /// checked against what every peer it receives from sent (None: no headers).
    pub header: Option<CallHeader>,
    /// The algorithm's name, for mismatch messages.
    pub algo: &'a str,
    /// Point-to-point calls are not collective: their headers carry, per peer, how
    /// many earlier point-to-point calls exchanged data with it (`p2p_seq[p]`)
    /// instead of the collective sequence number. Updated here.
    pub p2p_seq: Option<&'a std::cell::RefCell<Vec<u64>>>,
}

/// Reusable per-communicator executor memory.
#[derive(Default)]
pub(crate) struct Workspace {
    staging: Vec<Vec<u64>>,
    /// What the last schedule run derived from it alone (with or without headers);
    /// a loop of equal calls (see `Communicator`'s plan memo) prepares once.
    prepared: Option<(Arc<Schedule>, bool, Prepared)>,
    /// Per-call copy of `Prepared::waits`.
    waits: Vec<u32>,
    ready_local: Vec<usize>,
}

/// A schedule made ready to run: the header transfers ahead of its ops, each op's
/// dependencies, and its transfers placed on lanes. A function of the schedule, of
/// whether headers are on and of the links' lane counts, which never change.
struct Prepared {
    ops: Vec<Op>,
    /// The first `nheader` ops are header transfers.
    nheader: usize,
    /// Peers exchanging headers, with the bytes this rank sends to and expects from
    /// each.
    peers: Vec<(usize, u64, u64)>,
    /// Unfinished dependencies per op before anything ran.
    waits: Vec<u32>,
    dependents: Vec<Vec<u32>>,
    lanes: Vec<Lane>,
    local: Vec<usize>,
    /// Staging buffers the receive-and-reduce lanes need.
    nstaging: usize,
    /// Bytes sent plus received by this rank.
    moved: usize,
}

/// One ordered stream of ops on a (peer, direction, lane).
struct Lane {
    peer: usize,
    lane: usize,
    dir: Direction,
    ops: Vec<usize>,
    next: usize,
    /// Bytes of the current op done (for receive-and-reduce: bytes reduced).
    done: usize,
    /// Received bytes waiting in staging (less than one element).
    staged: usize,
    staging: usize,
}

fn dependencies(ops: &[Op]) -> (Vec<u32>, Vec<Vec<u32>>) {
    let mut waits = vec![0u32; ops.len()];
    let mut dependents: Vec<Vec<u32>> = vec![Vec::new(); ops.len()];
    let access: Vec<_> = ops.iter().map(Op::access).collect();
    for j in 0..ops.len() {
        let (rj, wj) = &access[j];
        for i in 0..j {
            let (ri, wi) = &access[i];
            let hit = |a: &Option<Region>, b: &Option<Region>| matches!((a, b), (Some(a), Some(b)) if a.overlaps(b));
            let conflict =
                rj.iter().any(|r| hit(wi, r)) || hit(wi, wj) || ri.iter().any(|r| hit(r, wj));
            if conflict {
                waits[j] += 1;
                dependents[i].push(j as u32);
            }
        }
    }
    (waits, dependents)
}

/// Calls that move more bytes than this (sent plus received, this rank) sleep as
/// soon as nothing moves, whatever `MIXCCL_SPIN_US` says.
const SPIN_MAX_BYTES: usize = 1 << 20;

/// Bytes of local copies and reductions run between two sweeps of the lanes.
const LOCAL_BUDGET: usize = 1 << 20;

/// Sends up to this size that follow each other on a lane are gathered into one.
const GATHER_BYTES: usize = 16 << 10;

/// Bytes per step of an out-of-place receive-and-reduce.
const REDUCE_BLOCK: usize = 16 << 10;

/// `dst = acc op incoming` for one piece of a receive-and-reduce.
fn reduce_into(
    bufs: &mut Buffers<'_, '_>,
    cx: &Context<'_>,
    acc: Region,
    dst: Region,
    incoming: &[u8],
) {
    if acc == dst {
        reduce::reduce_bytes(cx.dtype, cx.op, bufs.get_mut(dst), incoming);
        return;
    }
    // Copy `acc` and reduce into `dst` a block at a time, so the block stays in L1
    // between the two passes.
    let (a, d) = bufs.pair(acc, dst);
    let block = REDUCE_BLOCK - REDUCE_BLOCK % cx.dtype.size();
    for ((a, d), x) in a
        .chunks(block)
        .zip(d.chunks_mut(block))
        .zip(incoming.chunks(block))
    {
        d.copy_from_slice(a);
        reduce::reduce_bytes(cx.dtype, cx.op, d, x);
    }
}

/// Runs `schedule` to completion, behind per-call headers when `cx.header` is set.
/// A mismatch found here is reported to every peer on the control channels.
pub(crate) fn run(
    schedule: &Arc<Schedule>,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    ws: &mut Workspace,
    cx: &Context<'_>,
) -> Result<()> {
    let headers = cx.header.is_some();
    let mut prepared = match ws.prepared.take() {
        Some((s, h, p)) if Arc::ptr_eq(&s, schedule) && h == headers => p,
        _ => prepare(schedule, headers, links, cx)?,
    };
    let result = run_prepared(&mut prepared, bufs, links, ws, cx);
    ws.prepared = Some((schedule.clone(), headers, prepared));
    result
}

/// The header transfers with `peer` that run ahead of a call's ops: this rank's
/// header out of its slot, the peer's into the slot's second half.
pub(crate) fn header_ops(peer: usize) -> [Op; 2] {
    let at = peer * HEADER_SLOT;
    [
        Op::Send {
            peer,
            src: Region::new(Buf::Header, at, HEADER_BYTES),
        },
        Op::Recv {
            peer,
            dst: Region::new(Buf::Header, at + HEADER_BYTES, HEADER_BYTES),
        },
    ]
}

/// A transfer's peer, direction and length in bytes; `None` for local ops.
fn transfer(op: &Op) -> Option<(usize, Direction, usize)> {
    match *op {
        Op::Send { peer, src } => Some((peer, Direction::Send, src.len)),
        Op::Recv { peer, dst } | Op::RecvReduce { peer, dst, .. } => {
            Some((peer, Direction::Recv, dst.len))
        }
        _ => None,
    }
}

/// Derives what `run` needs from `schedule` alone (see [`Prepared`]).
fn prepare(
    schedule: &Schedule,
    headers: bool,
    links: &[Option<Box<dyn Link>>],
    cx: &Context<'_>,
) -> Result<Prepared> {
    let n = links.len();
    let mut ops = Vec::with_capacity(schedule.ops.len() + 2 * n);
    let mut peers = Vec::new();
    if headers {
        // Bytes this call sends to and expects from each peer.
        let (mut to, mut from) = (vec![None::<u64>; n], vec![None::<u64>; n]);
        for (peer, dir, len) in schedule.ops.iter().filter_map(transfer) {
            let total = if dir == Direction::Send {
                &mut to
            } else {
                &mut from
            };
            *total[peer].get_or_insert(0) += len as u64;
        }
        // Headers go both ways between every pair that exchanges data in either
        // direction, so a rank that only sends (a broadcast root) checks too.
        for p in (0..n).filter(|&p| to[p].is_some() || from[p].is_some()) {
            peers.push((p, to[p].unwrap_or(0), from[p].unwrap_or(0)));
            ops.extend(header_ops(p));
        }
    }
    let nheader = ops.len();
    ops.extend_from_slice(&schedule.ops);
    let (waits, dependents) = dependencies(&ops);
    let moved = ops.iter().filter_map(transfer).map(|(_, _, len)| len).sum();

    // Assign transfers to lanes: per (peer, direction), the k-th op goes on lane k % lanes.
    let mut lanes: Vec<Lane> = Vec::new();
    // Per (peer, direction): ops seen so far; per (peer, direction, lane): index in `lanes`.
    let mut counters = vec![0usize; 2 * n];
    let mut lane_of: Vec<Vec<usize>> = vec![Vec::new(); 2 * n];
    let mut local = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some((peer, dir, _)) = transfer(op) else {
            local.push(i);
            continue;
        };
        let link = links
            .get(peer)
            .and_then(|l| l.as_ref())
            .ok_or_else(|| Error::invalid(format!("{}: no link to rank {peer}", cx.label)))?;
        let key = 2 * peer + usize::from(dir == Direction::Send);
        // Headers go first on lane 0 and are not counted, so the first data op follows
        // its header on the same lane and a small one can travel with it (see below).
        let lane = if i < nheader {
            0
        } else {
            counters[key] += 1;
            (counters[key] - 1) % link.lanes()
        };
        let slots = &mut lane_of[key];
        if slots.len() <= lane {
            slots.resize(lane + 1, usize::MAX);
        }
        if slots[lane] == usize::MAX {
            slots[lane] = lanes.len();
            lanes.push(Lane {
                peer,
                lane,
                dir,
                ops: Vec::new(),
                next: 0,
                done: 0,
                staged: 0,
                staging: usize::MAX,
            });
        }
        lanes[slots[lane]].ops.push(i);
    }
    // Staging buffers for lanes that receive-and-reduce.
    let mut nstaging = 0;
    for l in lanes.iter_mut() {
        if l.ops
            .iter()
            .any(|&i| matches!(ops[i], Op::RecvReduce { .. }))
        {
            l.staging = nstaging;
            nstaging += 1;
        }
    }
    Ok(Prepared {
        ops,
        nheader,
        peers,
        waits,
        dependents,
        lanes,
        local,
        nstaging,
        moved,
    })
}

/// Runs a prepared schedule: this call's headers, then its ops.
fn run_prepared(
    prepared: &mut Prepared,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    ws: &mut Workspace,
    cx: &Context<'_>,
) -> Result<()> {
    let Some(mine) = cx.header else {
        return run_ops(prepared, bufs, links, ws, cx);
    };
    let n = links.len();
    let mut p2p = cx.p2p_seq.map(|c| c.borrow_mut());
    if let Some(seq) = p2p.as_deref_mut() {
        seq.resize(n, 0);
    }
    for &(p, to, from) in &prepared.peers {
        let seq = match p2p.as_deref_mut() {
            Some(seq) => {
                seq[p] += 1;
                seq[p] - 1
            }
            None => mine.seq,
        };
        let at = p * HEADER_SLOT;
        let h = CallHeader {
            bytes_to_you: to,
            bytes_from_you: from,
            seq,
            ..mine
        };
        bufs.header[at..at + HEADER_BYTES].copy_from_slice(&h.encode());
    }
    drop(p2p);
    let mut result = run_ops(prepared, bufs, links, ws, cx);
    if let Err(Error::PeerLost { .. }) = &result {
        // A peer that failed reports why, then may close its links: its report (on
        // another channel) can trail the close. Prefer the report, which names the
        // first cause (a mismatch, or the rank that died first).
        let until = Instant::now() + CONTROL_GRACE;
        loop {
            match control_report(links) {
                Some(e @ Error::Mismatch { .. }) => {
                    result = Err(e);
                    break;
                }
                Some(e @ Error::PeerLost { .. }) if !matches!(e, Error::PeerLost { rank, .. } if rank == cx.rank) =>
                {
                    result = Err(e);
                    break;
                }
                _ => {}
            }
            if Instant::now() >= until {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Err(e @ (Error::Mismatch { .. } | Error::PeerLost { .. })) = &result {
        // Everyone stops with the same report, also ranks that never talk to the culprit.
        if let Some(msg) = encode_control(e) {
            for l in links.iter_mut().flatten() {
                let _ = l.send_control(&msg);
            }
        }
    }
    result
}

/// Checks the header received from `peer` against the one this rank sent it.
/// Formats nothing unless they differ: this runs for every peer of every call.
fn check_header(bufs: &Buffers<'_, '_>, peer: usize, cx: &Context<'_>) -> Result<()> {
    let at = peer * HEADER_SLOT;
    let Some(mine) = CallHeader::decode(&bufs.header[at..at + HEADER_BYTES]) else {
        return Err(Error::Internal("own call header does not decode".into()));
    };
    let ours = || {
        format!(
            "{} sending {} bytes, expecting {}",
            mine.describe(Some(cx.algo)),
            mine.bytes_to_you,
            mine.bytes_from_you
        )
    };
    let Some(theirs) = CallHeader::decode(&bufs.header[at + HEADER_BYTES..at + 2 * HEADER_BYTES])
    else {
        return Err(Error::Mismatch {
            rank: cx.rank,
            theirs: ours(),
            peer,
            ours: "something that is not a mixccl call (unrecognised header bytes)".into(),
        });
    };
    match mine.conflict(&theirs) {
        None => Ok(()),
        Some(what) => Err(Error::Mismatch {
            rank: cx.rank,
            theirs: ours(),
            peer,
            ours: format!(
                "{} sending {} bytes, expecting {} (differs in {what})",
                theirs.describe(None),
                theirs.bytes_to_you,
                theirs.bytes_from_you
            ),
        }),
    }
}

/// An error a peer among `peers` reported on its control channel, else such a peer's
/// death (its control channel closed without a goodbye), if either came.
pub(crate) fn control_error(
    links: &mut [Option<Box<dyn Link>>],
    peers: impl Fn(usize) -> bool,
) -> Result<()> {
    let mut dead = None;
    for (p, l) in links.iter_mut().enumerate().filter(|(p, _)| peers(*p)) {
        if let Some(l) = l {
            match l.recv_control() {
                Ok(Some(msg)) => return Err(decode_control(p, &msg)),
                Ok(None) => {}
                Err(e) => {
                    dead.get_or_insert(e);
                }
            }
        }
    }
    dead.map_or(Ok(()), Err)
}

/// Only what peers reported on their control channels (not deaths seen here).
fn control_report(links: &mut [Option<Box<dyn Link>>]) -> Option<Error> {
    for (p, l) in links.iter_mut().enumerate() {
        if let Some(l) = l {
            if let Ok(Some(msg)) = l.recv_control() {
                return Some(decode_control(p, &msg));
            }
        }
    }
    None
}

/// Runs a prepared schedule's ops, whose first `nheader` are header transfers (each
/// received header is checked against the one sent to that peer).
fn run_ops(
    prepared: &mut Prepared,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    ws: &mut Workspace,
    cx: &Context<'_>,
) -> Result<()> {
    let Prepared {
        ops,
        nheader,
        waits: waits0,
        dependents,
        lanes,
        local,
        nstaging,
        moved,
        ..
    } = prepared;
    let (ops, nheader, dependents) = (&ops[..], *nheader, &dependents[..]);
    if ops.is_empty() {
        return Ok(());
    }
    let esize = cx.dtype.size();
    // Poll before sleeping only for small calls: there a wake-up is a large part of
    // the call; in a large one it is not, and polling ranks take the cores that ranks
    // copying data need when ranks outnumber cores.
    let spin = if *moved > SPIN_MAX_BYTES {
        Duration::ZERO
    } else {
        cx.spin
    };
    for l in lanes.iter_mut() {
        l.next = 0;
        l.done = 0;
        l.staged = 0;
    }
    while ws.staging.len() < *nstaging {
        ws.staging.push(vec![0u64; STAGING_BYTES / 8]);
    }
    let mut waits = std::mem::take(&mut ws.waits);
    waits.clear();
    waits.extend_from_slice(waits0);
    let mut finished = 0usize;
    let mut ready_local = std::mem::take(&mut ws.ready_local);
    ready_local.clear();
    ready_local.extend(local.iter().copied().filter(|&i| waits[i] == 0));
    let mut last_progress = Instant::now();
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut doorbells: Vec<bool> = Vec::new();
    let mut handles = Vec::new();

    let complete = |i: usize, waits: &mut Vec<u32>, ready_local: &mut Vec<usize>| {
        for &d in &dependents[i] {
            let d = d as usize;
            waits[d] -= 1;
            if waits[d] == 0
                && matches!(
                    ops[d],
                    Op::Copy { .. }
                        | Op::Reduce { .. }
                        | Op::FinishAvg { .. }
                        | Op::Describe { .. }
                        | Op::PeerRead { .. }
                )
            {
                ready_local.push(d);
            }
        }
    };

    while finished < ops.len() {
        let mut progressed = false;
        // Local work in slices of LOCAL_BUDGET bytes between sweeps of the lanes, so
        // a long copy or reduction does not hold up transfers peers wait for.
        let mut budget = LOCAL_BUDGET;
        while budget > 0 {
            let Some(i) = ready_local.pop() else { break };
            budget = budget.saturating_sub(match ops[i] {
                Op::Copy { dst, .. } | Op::Reduce { dst, .. } | Op::PeerRead { dst, .. } => dst.len,
                _ => 0,
            });
            match ops[i] {
                Op::Copy { src, dst } => {
                    let (s, d) = bufs.pair(src, dst);
                    d.copy_from_slice(s);
                }
                Op::Reduce { src, dst } => {
                    let (s, d) = bufs.pair(src, dst);
                    reduce::reduce_bytes(cx.dtype, cx.op, d, s);
                }
                Op::FinishAvg { dst } => reduce::finish_avg(cx.dtype, bufs.get_mut(dst), cx.nranks),
                Op::Describe { src, dst } => {
                    let at = bufs.get(src).as_ptr() as u64;
                    let d = bufs.get_mut(dst);
                    d[..8].copy_from_slice(&at.to_le_bytes());
                    d[8..16].copy_from_slice(&(src.len as u64).to_le_bytes());
                }
                Op::PeerRead {
                    peer,
                    desc,
                    offset,
                    dst,
                } => {
                    let d = bufs.get(desc);
                    let at = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
                    let len = u64::from_le_bytes(d[8..16].try_into().expect("8 bytes")) as usize;
                    // Never read past what the peer described: a mismatch is an error.
                    if offset.checked_add(dst.len).map_or(true, |end| end > len) {
                        return Err(Error::Mismatch {
                            rank: cx.rank,
                            theirs: format!(
                                "{} with {} bytes to read at offset {offset}",
                                cx.label, dst.len
                            ),
                            peer,
                            ours: format!("a buffer of {len} bytes"),
                        });
                    }
                    let link = links[peer].as_mut().ok_or_else(|| {
                        Error::Internal(format!("{}: no link to rank {peer}", cx.label))
                    })?;
                    if !link.read_remote(at + offset as u64, bufs.get_mut(dst))? {
                        return Err(Error::Internal(format!(
                            "{}: the link to rank {peer} cannot read remote memory",
                            cx.label
                        )));
                    }
                }
                _ => unreachable!("only local ops are queued here"),
            }
            finished += 1;
            progressed = true;
            complete(i, &mut waits, &mut ready_local);
        }
        for l in lanes.iter_mut() {
            while l.next < l.ops.len() {
                let i = l.ops[l.next];
                if waits[i] != 0 {
                    break;
                }
                let link = links[l.peer].as_mut().expect("checked above");
                let moved = match ops[i] {
                    Op::Send { src, .. } if src.len - l.done <= GATHER_BYTES => {
                        // Small sends that are ready and follow each other on this lane
                        // leave in one message (one syscall, one wake-up of the peer).
                        let mut pieces: [&[u8]; sys::MAX_GATHER] = [&[]; sys::MAX_GATHER];
                        pieces[0] = &bufs.get(src)[l.done..];
                        let (mut k, mut total) = (1, pieces[0].len());
                        for &j in &l.ops[l.next + 1..] {
                            match ops[j] {
                                Op::Send { src, .. }
                                    if k < sys::MAX_GATHER
                                        && waits[j] == 0
                                        && total + src.len <= GATHER_BYTES =>
                                {
                                    pieces[k] = bufs.get(src);
                                    k += 1;
                                    total += src.len;
                                }
                                _ => break,
                            }
                        }
                        let n = link.send_gather(l.lane, &pieces[..k])?;
                        // Finish the ops the bytes covered whole, except the last one
                        // reached, which the common code below finishes (or leaves
                        // current with its offset).
                        let mut left = n;
                        loop {
                            let j = l.ops[l.next];
                            let Op::Send { src, .. } = ops[j] else {
                                unreachable!("only sends are gathered")
                            };
                            let take = left.min(src.len - l.done);
                            l.done += take;
                            left -= take;
                            if left == 0 {
                                break;
                            }
                            l.next += 1;
                            l.done = 0;
                            finished += 1;
                            complete(j, &mut waits, &mut ready_local);
                        }
                        n
                    }
                    Op::Send { src, .. } => {
                        let n = link.send_some(l.lane, &bufs.get(src)[l.done..])?;
                        l.done += n;
                        n
                    }
                    Op::Recv { dst, .. } => {
                        let n = link.recv_some(l.lane, &mut bufs.get_mut(dst)[l.done..])?;
                        l.done += n;
                        n
                    }
                    Op::RecvReduce { acc, dst, .. } => {
                        // Reduce straight out of the link's buffer where it offers one
                        // (shared memory); whole elements only.
                        let mut seen = 0;
                        let direct = if l.staged == 0 {
                            let done = l.done;
                            link.recv_with(l.lane, dst.len - done, &mut |view: &[u8]| {
                                seen = view.len();
                                let whole = view.len() - view.len() % esize;
                                if whole > 0 {
                                    reduce_into(
                                        bufs,
                                        cx,
                                        acc.sub(done, whole),
                                        dst.sub(done, whole),
                                        &view[..whole],
                                    );
                                }
                                whole
                            })?
                        } else {
                            None
                        };
                        match direct {
                            Some(n) if n > 0 || seen == 0 => {
                                l.done += n;
                                n
                            }
                            // No view, or only part of an element before the ring wraps:
                            // receive into staging and reduce from there.
                            _ => {
                                let stage =
                                    bytemuck::cast_slice_mut::<u64, u8>(&mut ws.staging[l.staging]);
                                let want =
                                    (dst.len - l.done - l.staged).min(stage.len() - l.staged);
                                let n =
                                    link.recv_some(l.lane, &mut stage[l.staged..l.staged + want])?;
                                let have = l.staged + n;
                                let whole = have - have % esize;
                                if whole > 0 {
                                    reduce_into(
                                        bufs,
                                        cx,
                                        acc.sub(l.done, whole),
                                        dst.sub(l.done, whole),
                                        &stage[..whole],
                                    );
                                    stage.copy_within(whole..have, 0);
                                }
                                l.staged = have - whole;
                                l.done += whole;
                                n
                            }
                        }
                    }
                    _ => unreachable!("only transfers are on lanes"),
                };
                if moved > 0 {
                    progressed = true;
                }
                // A gathered send may have moved on to a later op.
                let i = l.ops[l.next];
                let (_, _, len) = transfer(&ops[i]).expect("only transfers are on lanes");
                if l.done == len {
                    if i < nheader && l.dir == Direction::Recv {
                        check_header(bufs, l.peer, cx)?;
                    }
                    l.next += 1;
                    l.done = 0;
                    finished += 1;
                    complete(i, &mut waits, &mut ready_local);
                } else if moved == 0 {
                    break;
                }
            }
        }
        if finished == ops.len() {
            break;
        }
        if cx.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        let now = Instant::now();
        if progressed || !ready_local.is_empty() {
            last_progress = now;
            continue;
        }
        // Nothing moved. For a short while, yield the core and sweep again: a wake-up
        // through poll costs tens of microseconds when ranks outnumber cores, and a
        // sweep of shared-memory lanes is a few loads.
        let idle = now - last_progress;
        if idle < spin {
            std::thread::yield_now();
            continue;
        }
        // Before sleeping: has a peer reported an error, or died, anywhere?
        control_error(links, |_| true)?;
        // Then sleep until a lane that could move becomes ready, or a control
        // channel speaks.
        pollfds.clear();
        doorbells.clear();
        handles.clear();
        handles.extend(links.iter().flatten().filter_map(|l| l.control_handle()));
        let mut waiting_for = Vec::new();
        for l in lanes.iter() {
            if l.next < l.ops.len() && waits[l.ops[l.next]] == 0 {
                links[l.peer].as_ref().expect("checked above").wait_handles(
                    l.lane,
                    l.dir,
                    &mut handles,
                );
                waiting_for.push(l.peer);
            }
        }
        for h in &handles {
            pollfds.push(sys::pollfd(h.fd, h.events));
            doorbells.push(h.doorbell);
        }
        waiting_for.sort_unstable();
        waiting_for.dedup();
        if pollfds.is_empty() {
            return Err(Error::Internal(format!(
                "{}: schedule cannot progress ({finished} of {} ops done)",
                cx.label,
                ops.len()
            )));
        }
        if idle >= cx.timeout {
            return Err(Error::Timeout {
                op: format!("{}", cx.label),
                waiting_for,
                after: idle,
            });
        }
        sys::poll(&mut pollfds, (cx.timeout - idle).min(MAX_SLEEP))
            .map_err(|e| Error::io(format!("{}: poll", cx.label), e))?;
        for (p, &bell) in pollfds.iter().zip(&doorbells) {
            if bell && p.revents != 0 {
                // A doorbell fd is the link's own eventfd; drain through a fresh read.
                sys::drain_eventfd(p.fd);
            }
        }
    }
    ws.waits = waits;
    ws.ready_local = ready_local;
    Ok(())
}
