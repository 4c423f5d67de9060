//! Progress: running a [`Lowered`] call over the links, one non-blocking sweep at a
//! time ([`Progress::step`]), and the blocking loop around it ([`drive`]) that
//! sleeps in `poll` when nothing moves and turns a wait without progress into
//! `Error::Timeout`.
//!
//! A step moves every board lane a step of the board's ring (`transport::board`),
//! runs ready local ops within a byte budget, then every lane as far as its link
//! takes or gives bytes without blocking. Steps never wait, so one thread can
//! drive several ranks by stepping each in turn (the deterministic tests do).
//! Received data to reduce lands in a small per-lane staging buffer and is reduced
//! into place while later bytes are still in flight.

use super::control::{check_header, control_error};
use super::lower::{transfer, Lowered, NO_LANE};
use super::{Buffers, Context};
use crate::algo::{Op, Region};
use crate::error::{Error, Result};
use crate::reduce;
use crate::sys;
use crate::transport::board::Board;
use crate::transport::{Direction, Link};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Longest single sleep, so an abort is noticed quickly.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Longest single sleep on the board's bell: the peers' control channels (which do
/// not ring it) are looked at between.
const BOARD_NAP: Duration = Duration::from_millis(10);
/// Longest sleep in `poll` while a board op also waits (a peer's board progress
/// rings the bell, not an fd).
const MIXED_NAP: Duration = Duration::from_millis(1);
/// Calls that move more bytes than this (sent plus received, this rank) sleep as
/// soon as nothing moves, whatever `MIXCCL_SPIN_US` says.
const SPIN_MAX_BYTES: usize = 1 << 20;
/// Bytes of local copies and reductions run between two sweeps of the lanes.
const LOCAL_BUDGET: usize = 1 << 20;
/// Sends up to this size that follow each other on a lane are gathered into one.
const GATHER_BYTES: usize = 16 << 10;

/// What one [`Progress::step`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Every op has finished.
    Done,
    /// Some op ran or some bytes moved, or local work is ready: step again.
    Progressed,
    /// Nothing could move: wait for a link (or a peer) before stepping again.
    Idle,
}

/// Where a lane is in its ops.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    next: usize,
    /// Bytes of the current op done (for receive-and-reduce: bytes reduced).
    done: usize,
    /// Received bytes waiting in staging (less than one element).
    staged: usize,
}

/// A call's progress memory, kept between calls so a loop of calls allocates nothing.
#[derive(Default)]
pub(crate) struct State {
    cursors: Vec<Cursor>,
    /// Per board lane: (next op, bytes of it done).
    board: Vec<(usize, usize)>,
    /// Unfinished dependencies per op.
    waits: Vec<u32>,
    /// Local ops whose dependencies have finished.
    ready_local: Vec<u32>,
    staging: Vec<Vec<u64>>,
    finished: usize,
}

/// One call in progress: a lowered call and the state of its run.
pub(crate) struct Progress<'a> {
    low: &'a Lowered,
    st: &'a mut State,
}

impl<'a> Progress<'a> {
    /// Starts `low` from the beginning, reusing `st`'s memory.
    pub(crate) fn new(low: &'a Lowered, st: &'a mut State) -> Progress<'a> {
        st.cursors.clear();
        st.cursors.resize(low.lanes.len(), Cursor::default());
        st.board.clear();
        st.board.resize(low.board.len(), (0, 0));
        while st.staging.len() < low.nstaging {
            st.staging
                .push(vec![0u64; crate::cpu::tuning().staging_bytes / 8]);
        }
        st.waits.clear();
        st.waits.extend_from_slice(&low.waits);
        st.ready_local.clear();
        let waits = &st.waits;
        st.ready_local.extend(
            low.local
                .iter()
                .copied()
                .filter(|&i| waits[i as usize] == 0),
        );
        st.finished = 0;
        Progress { low, st }
    }

    /// Ops finished so far.
    pub(crate) fn finished(&self) -> usize {
        self.st.finished
    }

    /// Has every op finished?
    pub(crate) fn is_done(&self) -> bool {
        self.st.finished == self.low.ops.len()
    }

    /// Lanes whose next op is ready to move bytes (what an idle call waits on).
    pub(crate) fn ready_lanes(&self) -> impl Iterator<Item = &super::lower::Lane> + '_ {
        self.low
            .lanes
            .iter()
            .zip(&self.st.cursors)
            .filter(|(l, c)| c.next < l.ops.len() && self.st.waits[l.ops[c.next] as usize] == 0)
            .map(|(l, _)| l)
    }

    /// Board lanes whose next op is ready but could not move: the peers it waits
    /// for (a reader: the writer; this rank's writes: the readers holding its ring
    /// full) go to `waiting_for`. Returns whether any board op waits.
    pub(crate) fn board_waits(&self, board: Option<&Board>, waiting_for: &mut Vec<usize>) -> bool {
        let mut any = false;
        for (b, &(next, _)) in self.low.board.iter().zip(&self.st.board) {
            if next >= b.ops.len() || self.st.waits[b.ops[next] as usize] != 0 {
                continue;
            }
            any = true;
            match (board, self.low.ops[b.ops[next] as usize]) {
                (Some(bd), Op::BoardWrite { .. }) => {
                    waiting_for.extend((0..bd.ranks()).filter(|&j| bd.holds_full(j)))
                }
                (_, Op::BoardRead { peer, .. }) => waiting_for.push(peer),
                _ => {}
            }
        }
        any
    }

    /// Is a board op ready to run (its dependencies done, itself not)?
    fn board_busy(&self) -> bool {
        self.low
            .board
            .iter()
            .zip(&self.st.board)
            .any(|(b, &(next, _))| next < b.ops.len() && self.st.waits[b.ops[next] as usize] == 0)
    }

    /// Could a board lane move now (checked just before sleeping on the bell)?
    fn board_ready(&self, board: &Board) -> bool {
        self.low
            .board
            .iter()
            .zip(&self.st.board)
            .any(|(b, &(next, _))| {
                next < b.ops.len()
                    && self.st.waits[b.ops[next] as usize] == 0
                    && match self.low.ops[b.ops[next] as usize] {
                        Op::BoardWrite { .. } => board.can_write(),
                        Op::BoardRead { peer, .. } => board.can_read(peer),
                        _ => false,
                    }
            })
    }

    /// Where each unfinished lane stands, for a test's failure message.
    #[cfg(test)]
    pub(crate) fn describe(&self) -> String {
        let mut out = format!("{} of {} ops done;", self.st.finished, self.low.ops.len());
        for (l, c) in self.low.lanes.iter().zip(&self.st.cursors) {
            if c.next < l.ops.len() {
                let i = l.ops[c.next] as usize;
                out += &format!(
                    " [{:?} peer {} lane {}: op {} of {}, {} bytes done, waits for {}]",
                    l.dir,
                    l.peer,
                    l.lane,
                    c.next,
                    l.ops.len(),
                    c.done,
                    self.st.waits[i]
                );
            }
        }
        out
    }

    /// One non-blocking sweep: ready local ops up to a byte budget, so a long copy
    /// or reduction does not hold up transfers peers wait for, then every lane as
    /// far as its link moves bytes without blocking. A received header is checked
    /// against the one sent to that peer as it completes.
    pub(crate) fn step(
        &mut self,
        bufs: &mut Buffers<'_, '_>,
        links: &mut [Option<Box<dyn Link>>],
        cx: &Context<'_>,
    ) -> Result<Step> {
        let low = self.low;
        let ops = &low.ops[..];
        let State {
            cursors,
            board,
            waits,
            ready_local,
            staging,
            finished,
        } = &mut *self.st;
        if *finished == ops.len() {
            return Ok(Step::Done);
        }
        let esize = cx.dtype.size();
        let mut progressed = false;
        // Board lanes first (a writer publishes before it copies its own block, so
        // readers start early): a step of the ring each per sweep (as the links'
        // lanes, a long block does not hold up the others).
        for (b, (next, done)) in low.board.iter().zip(board.iter_mut()) {
            while *next < b.ops.len() {
                let i = b.ops[*next] as usize;
                if waits[i] != 0 {
                    break;
                }
                let bd = cx.board.ok_or_else(|| {
                    Error::Internal(format!("{}: board op without the host's board", cx.label))
                })?;
                let (k, len) = match ops[i] {
                    Op::BoardWrite { src } => (bd.write_some(&bufs.get(src)[*done..]), src.len),
                    Op::BoardRead { peer, dst } => {
                        (bd.read_some(peer, &mut bufs.get_mut(dst)[*done..]), dst.len)
                    }
                    _ => unreachable!("only board ops are on board lanes"),
                };
                *done += k;
                progressed |= k > 0;
                if *done < len {
                    break;
                }
                *next += 1;
                *done = 0;
                *finished += 1;
                complete(low, i, waits, ready_local);
            }
        }
        let mut budget = LOCAL_BUDGET;
        while budget > 0 {
            let Some(i) = ready_local.pop() else { break };
            let i = i as usize;
            budget = budget.saturating_sub(match ops[i] {
                Op::Copy { dst, .. } | Op::Reduce { dst, .. } | Op::PeerRead { dst, .. } => dst.len,
                _ => 0,
            });
            run_local(&ops[i], bufs, links, cx)?;
            *finished += 1;
            progressed = true;
            complete(low, i, waits, ready_local);
        }
        for (l, c) in low.lanes.iter().zip(cursors.iter_mut()) {
            while c.next < l.ops.len() {
                let i = l.ops[c.next] as usize;
                if waits[i] != 0 {
                    break;
                }
                let link = links[l.peer].as_mut().expect("lowered against these links");
                let moved = match ops[i] {
                    Op::Send { src, .. } if src.len - c.done <= GATHER_BYTES => {
                        // Small sends that are ready and follow each other on this lane
                        // leave in one message (one syscall, one wake-up of the peer).
                        let mut pieces: [&[u8]; sys::MAX_GATHER] = [&[]; sys::MAX_GATHER];
                        pieces[0] = &bufs.get(src)[c.done..];
                        let (mut k, mut total) = (1, pieces[0].len());
                        for &j in &l.ops[c.next + 1..] {
                            match ops[j as usize] {
                                Op::Send { src, .. }
                                    if k < sys::MAX_GATHER
                                        && waits[j as usize] == 0
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
                            let j = l.ops[c.next] as usize;
                            let Op::Send { src, .. } = ops[j] else {
                                unreachable!("only sends are gathered")
                            };
                            let take = left.min(src.len - c.done);
                            c.done += take;
                            left -= take;
                            if left == 0 {
                                break;
                            }
                            c.next += 1;
                            c.done = 0;
                            *finished += 1;
                            complete(low, j, waits, ready_local);
                        }
                        n
                    }
                    Op::Send { src, .. } => {
                        let n = link.send_some(l.lane, &bufs.get(src)[c.done..])?;
                        c.done += n;
                        n
                    }
                    Op::Recv { dst, .. } => {
                        let n = link.recv_some(l.lane, &mut bufs.get_mut(dst)[c.done..])?;
                        c.done += n;
                        n
                    }
                    Op::RecvReduce { acc, dst, .. } => {
                        // Reduce straight out of the link's buffer where it offers one
                        // (shared memory); whole elements only.
                        let mut seen = 0;
                        let direct = if c.staged == 0 {
                            let done = c.done;
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
                                c.done += n;
                                n
                            }
                            // No view, or only part of an element before the ring wraps:
                            // receive into staging and reduce from there.
                            _ => {
                                let stage = bytemuck::cast_slice_mut::<u64, u8>(
                                    &mut staging[l.staging.expect("a staging buffer")],
                                );
                                let want =
                                    (dst.len - c.done - c.staged).min(stage.len() - c.staged);
                                let n =
                                    link.recv_some(l.lane, &mut stage[c.staged..c.staged + want])?;
                                let have = c.staged + n;
                                let whole = have - have % esize;
                                if whole > 0 {
                                    reduce_into(
                                        bufs,
                                        cx,
                                        acc.sub(c.done, whole),
                                        dst.sub(c.done, whole),
                                        &stage[..whole],
                                    );
                                    stage.copy_within(whole..have, 0);
                                }
                                c.staged = have - whole;
                                c.done += whole;
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
                let i = l.ops[c.next] as usize;
                let (_, _, len) = transfer(&ops[i]).expect("only transfers are on lanes");
                if c.done == len {
                    if i < low.nheader && l.dir == Direction::Recv {
                        check_header(bufs, l.peer, cx)?;
                    }
                    c.next += 1;
                    c.done = 0;
                    *finished += 1;
                    complete(low, i, waits, ready_local);
                } else if moved == 0 {
                    break;
                }
            }
        }
        Ok(if *finished == ops.len() {
            Step::Done
        } else if progressed || !ready_local.is_empty() {
            Step::Progressed
        } else {
            Step::Idle
        })
    }
}

/// Marks op `i` finished: its dependents wait for one op less, and local ones that
/// wait for nothing more become ready.
fn complete(low: &Lowered, i: usize, waits: &mut [u32], ready_local: &mut Vec<u32>) {
    for &d in low.dependents(i) {
        let d = d as usize;
        waits[d] -= 1;
        if waits[d] == 0 && low.lane_of[d] == NO_LANE {
            ready_local.push(d as u32);
        }
    }
}

/// Runs one local op.
fn run_local(
    op: &Op,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    cx: &Context<'_>,
) -> Result<()> {
    match *op {
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
            let link = links[peer]
                .as_mut()
                .ok_or_else(|| Error::Internal(format!("{}: no link to rank {peer}", cx.label)))?;
            if !link.read_remote(at + offset as u64, bufs.get_mut(dst))? {
                return Err(Error::Internal(format!(
                    "{}: the link to rank {peer} cannot read remote memory",
                    cx.label
                )));
            }
        }
        _ => unreachable!("only local ops are queued here"),
    }
    Ok(())
}

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
    let block = crate::cpu::tuning().reduce_block;
    let block = block - block % cx.dtype.size();
    for ((a, d), x) in a
        .chunks(block)
        .zip(d.chunks_mut(block))
        .zip(incoming.chunks(block))
    {
        d.copy_from_slice(a);
        reduce::reduce_bytes(cx.dtype, cx.op, d, x);
    }
}

/// Steps `progress` to the end, blocking: after a step that moved nothing, yields
/// for up to `cx.spin` (small calls only), then checks the control channels (only
/// every `BOARD_NAP` while only board ops wait) and sleeps in `poll` on the ready lanes and the control channels, at most
/// `MAX_SLEEP` at a time so an abort is seen; when only board ops wait, it sleeps
/// on the board's bell instead (at most `BOARD_NAP`), and when both wait, polls
/// for at most `MIXED_NAP`. No progress for `cx.timeout` is `Error::Timeout`
/// naming the peers waited on (for the board: the writers a read waits for, the
/// readers holding this rank's ring full).
pub(crate) fn drive(
    progress: &mut Progress<'_>,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    cx: &Context<'_>,
) -> Result<()> {
    if progress.is_done() {
        return Ok(());
    }
    // Poll before sleeping only for small calls: there a wake-up is a large part of
    // the call; in a large one it is not, and polling ranks take the cores that ranks
    // copying data need when ranks outnumber cores. The links' bytes and the board's
    // count apart: a large board call still polls for the small header exchange
    // ahead of it, and the board's wait polls by the board's bytes.
    let spin_for = |bytes: usize| {
        if bytes > SPIN_MAX_BYTES {
            Duration::ZERO
        } else {
            cx.spin
        }
    };
    let (link_spin, board_spin) = (
        spin_for(progress.low.moved),
        spin_for(progress.low.board_moved),
    );
    let mut last_progress = Instant::now();
    let mut last_control = last_progress;
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let mut doorbells: Vec<bool> = Vec::new();
    let mut handles = Vec::new();
    loop {
        let step = progress.step(bufs, links, cx)?;
        if step == Step::Done {
            return Ok(());
        }
        if cx.abort.load(Ordering::Relaxed) {
            return Err(Error::Aborted);
        }
        let now = Instant::now();
        if step == Step::Progressed {
            last_progress = now;
            continue;
        }
        // Nothing moved. For a short while, yield the core and sweep again: a wake-up
        // through poll costs tens of microseconds when ranks outnumber cores, and a
        // sweep of shared-memory lanes is a few loads.
        let idle = now - last_progress;
        let spin = if progress.board_busy() {
            board_spin
        } else {
            link_spin
        };
        if idle < spin {
            std::thread::yield_now();
            continue;
        }
        // Then sleep until a lane that could move becomes ready, or a control
        // channel speaks.
        pollfds.clear();
        doorbells.clear();
        handles.clear();
        handles.extend(links.iter().flatten().filter_map(|l| l.control_handle()));
        let mut waiting_for = Vec::new();
        let mut on_lanes = false;
        for l in progress.ready_lanes() {
            links[l.peer]
                .as_ref()
                .expect("lowered against these links")
                .wait_handles(l.lane, l.dir, &mut handles);
            waiting_for.push(l.peer);
            on_lanes = true;
        }
        let on_board = progress.board_waits(cx.board, &mut waiting_for);
        for h in &handles {
            pollfds.push(sys::pollfd(h.fd, h.events));
            doorbells.push(h.doorbell);
        }
        waiting_for.sort_unstable();
        waiting_for.dedup();
        // Before sleeping: has a peer reported an error, or died, anywhere? (Where
        // only the board waits, every `BOARD_NAP`: its sleeps are short and many.)
        let board_only = on_board && !on_lanes && cx.board.is_some();
        if !board_only || now - last_control >= BOARD_NAP {
            control_error(links, |_| true)?;
            last_control = now;
        }
        if pollfds.is_empty() && !on_board {
            return Err(Error::Internal(format!(
                "{}: schedule cannot progress ({} of {} ops done)",
                cx.label,
                progress.finished(),
                progress.low.ops.len()
            )));
        }
        if idle >= cx.timeout {
            return Err(Error::Timeout {
                op: format!("{}", cx.label),
                waiting_for,
                after: idle,
            });
        }
        let left = cx.timeout - idle;
        if let (true, false, Some(board)) = (on_board, on_lanes, cx.board) {
            // Only the board can move: sleep on its bell, which a peer's write or
            // free rings.
            board.sleep(|| progress.board_ready(board), left.min(BOARD_NAP));
            continue;
        }
        let nap = if on_board { MIXED_NAP } else { MAX_SLEEP };
        sys::poll(&mut pollfds, left.min(nap))
            .map_err(|e| Error::io(format!("{}: poll", cx.label), e))?;
        for (p, &bell) in pollfds.iter().zip(&doorbells) {
            if bell && p.revents != 0 {
                // A doorbell fd is the link's own eventfd; drain through a fresh read.
                sys::drain_eventfd(p.fd);
            }
        }
    }
}
