//! Lowering: one rank's [`Schedule`] made ready to run, as a pure function of the
//! schedule, of whether call headers are on and of the lane count of each link.
//! The executor runs the result and the simulator times it, so both see the same
//! ops, lanes and dependencies.
//!
//! - Call headers: with headers on, a header sent to and one received from every
//!   peer the call exchanges data with (either direction), ahead of the data, in
//!   order of `peer - rank` (mod n), so that rotated ranks get rotated calls (the
//!   simulator folds on that). Each goes first on lane 0 of its (peer, direction).
//! - Dependencies: op `j` may start once every earlier op whose regions conflict
//!   with its own (read-after-write, write-after-read, write-after-write) has
//!   finished. Each buffer keeps, per byte range, its last writer and the readers
//!   since that write, and `j` waits only for those (see [`dependencies`]).
//! - Lanes: per (peer, direction), the k-th data transfer goes on lane
//!   `k % lanes`; each lane runs its ops in order.
//! - Staging: one buffer per lane that receives-and-reduces.
//! - The host's board: this rank's board writes run in order on one board lane,
//!   its reads of each peer on one per peer; with headers on, every board op waits
//!   for every header received (it reads the whole header buffer), so a peer that
//!   called something else is a mismatch, not a wrong read of the board.
//!
//! Touches no link, buffer or clock.

use crate::algo::{Buf, Op, Schedule};
use crate::header::HEADER_BYTES;
use crate::transport::Direction;
use std::collections::{BTreeMap, HashMap};

/// Marks an op that is on no lane (a local op).
pub(crate) const NO_LANE: u32 = u32::MAX;
/// Marks an op on a board lane (see [`Lowered::board`]).
pub(crate) const ON_BOARD: u32 = u32::MAX - 1;

/// Bytes of the header buffer per peer: the header sent, then the one received.
pub(crate) const HEADER_SLOT: usize = 2 * HEADER_BYTES;

/// The header transfers with `peer` that run ahead of a call's ops: this rank's
/// header out of its slot, the peer's into the slot's second half.
pub(crate) fn header_ops(peer: usize) -> [Op; 2] {
    use crate::algo::Region;
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

/// A peer this call exchanges headers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderPeer {
    pub peer: usize,
    /// Bytes of data this rank sends the peer in this call.
    pub to: u64,
    /// Bytes of data this rank expects from the peer.
    pub from: u64,
}

/// One ordered stream of transfers on a (peer, direction, lane).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lane {
    pub peer: usize,
    pub dir: Direction,
    pub lane: usize,
    /// Indices into [`Lowered::ops`], in the order they run.
    pub ops: Vec<u32>,
    /// Index of this lane's receive-and-reduce staging buffer, if it needs one.
    pub staging: Option<usize>,
}

/// One ordered stream of board ops: this rank's writes (`peer` is this rank), or
/// its reads of one peer's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BoardLane {
    pub peer: usize,
    /// Indices into [`Lowered::ops`], in the order they run.
    pub ops: Vec<u32>,
}

/// A schedule lowered for one rank (see the module doc).
#[derive(Debug, Clone)]
pub(crate) struct Lowered {
    /// The header transfers (the first `nheader`), then the schedule's ops.
    pub ops: Vec<Op>,
    pub nheader: usize,
    /// Peers exchanging headers, in the order their header ops come.
    pub peers: Vec<HeaderPeer>,
    /// Number of ops each op waits for.
    pub waits: Vec<u32>,
    /// `succ[succ_at[i]..succ_at[i + 1]]`: the ops waiting for op `i`, ascending.
    pub succ_at: Vec<u32>,
    pub succ: Vec<u32>,
    pub lanes: Vec<Lane>,
    /// Board lanes: this rank's writes first (if any), then its reads by peer.
    pub board: Vec<BoardLane>,
    /// Per op, its index in `lanes`, [`ON_BOARD`] for board ops or [`NO_LANE`] for
    /// local ops.
    pub lane_of: Vec<u32>,
    /// The local ops, ascending.
    pub local: Vec<u32>,
    /// Staging buffers the receive-and-reduce lanes need.
    pub nstaging: usize,
    /// Bytes sent plus received by this rank (headers included).
    pub moved: usize,
    /// Bytes this rank writes to and reads from the board.
    pub board_moved: usize,
}

impl Lowered {
    /// The ops waiting for op `i`.
    pub(crate) fn dependents(&self, i: usize) -> &[u32] {
        &self.succ[self.succ_at[i] as usize..self.succ_at[i + 1] as usize]
    }
}

/// A transfer's peer, direction and length in bytes; `None` for local ops.
pub(crate) fn transfer(op: &Op) -> Option<(usize, Direction, usize)> {
    match *op {
        Op::Send { peer, src } => Some((peer, Direction::Send, src.len)),
        Op::Recv { peer, dst } | Op::RecvReduce { peer, dst, .. } => {
            Some((peer, Direction::Recv, dst.len))
        }
        _ => None,
    }
}

/// A board op's lane (this rank for its writes, the peer for reads) and length.
pub(crate) fn board_op(op: &Op, rank: usize) -> Option<(usize, usize)> {
    match *op {
        Op::BoardWrite { src } => Some((rank, src.len)),
        Op::BoardRead { peer, dst } => Some((peer, dst.len)),
        _ => None,
    }
}

/// The region every board op reads when headers are on: the whole header buffer,
/// so it waits for every header received.
fn header_gate(nranks: usize) -> crate::algo::Region {
    crate::algo::Region::new(Buf::Header, 0, HEADER_SLOT * nranks)
}

/// `op`'s (regions read, region written) for dependencies: its own, and for a
/// board op also `gate`.
fn access(
    op: &Op,
    gate: Option<crate::algo::Region>,
) -> (
    [Option<crate::algo::Region>; 2],
    Option<crate::algo::Region>,
) {
    let (mut reads, write) = op.access();
    if op.on_board() {
        reads[1] = gate;
    }
    (reads, write)
}

/// Lowers `rank`'s `schedule` in a call of `nranks` ranks. `lanes(peer)` is the lane
/// count of the link to `peer`, `None` where there is none. Errors with the first
/// peer the schedule transfers with that has no link (or is out of range).
pub(crate) fn lower(
    schedule: &Schedule,
    rank: usize,
    nranks: usize,
    headers: bool,
    lanes: impl Fn(usize) -> Option<usize>,
) -> Result<Lowered, usize> {
    // The peers the schedule talks to, ascending; per-peer tables below are indexed
    // by a peer's place here (not by rank: lowering every rank of a large call with
    // tables of `nranks` entries each cost the simulator O(nranks^2)).
    let mut known: Vec<usize> = schedule
        .ops
        .iter()
        .filter_map(transfer)
        .map(|(peer, _, _)| peer)
        .collect();
    known.sort_unstable();
    known.dedup();
    let place = |peer: usize| known.binary_search(&peer).expect("a known peer");
    // Lane counts, looked up once per peer the schedule talks to, in op order.
    let mut looked: Vec<Option<usize>> = vec![None; known.len()];
    for (peer, _, _) in schedule.ops.iter().filter_map(transfer) {
        if peer >= nranks {
            return Err(peer);
        }
        let i = place(peer);
        if looked[i].is_none() {
            looked[i] = Some(lanes(peer).ok_or(peer)?.max(1));
        }
    }
    let lane_count: Vec<usize> = looked.into_iter().map(|c| c.unwrap_or(1)).collect();
    let mut ops =
        Vec::with_capacity(schedule.ops.len() + if headers { 2 * known.len() } else { 0 });
    let mut peers = Vec::new();
    if headers {
        // Bytes this call sends to and expects from each peer.
        let (mut to, mut from) = (vec![0u64; known.len()], vec![0u64; known.len()]);
        for (peer, dir, len) in schedule.ops.iter().filter_map(transfer) {
            let total = if dir == Direction::Send {
                &mut to
            } else {
                &mut from
            };
            total[place(peer)] += len as u64;
        }
        // Headers go both ways between every pair that exchanges data in either
        // direction, so a rank that only sends (a broadcast root) checks too. In
        // rank order from this rank on, wrapping round.
        let first = known.partition_point(|&p| p < rank.min(nranks));
        for i in (first..known.len()).chain(0..first) {
            let p = known[i];
            peers.push(HeaderPeer {
                peer: p,
                to: to[i],
                from: from[i],
            });
            ops.extend(header_ops(p));
        }
    }
    let nheader = ops.len();
    ops.extend_from_slice(&schedule.ops);
    let gate = (nheader > 0).then(|| header_gate(nranks));
    let (waits, succ_at, succ) = dependencies(&ops, gate);

    let mut lane_list: Vec<Lane> = Vec::new();
    let mut lane_of = vec![NO_LANE; ops.len()];
    let mut local = Vec::new();
    let mut moved = 0;
    // Per (peer, direction): data ops seen so far, and the index in `lane_list` of
    // each of its lanes.
    let mut counters = vec![0usize; 2 * known.len()];
    let mut slots: Vec<Vec<u32>> = vec![Vec::new(); 2 * known.len()];
    let mut board: Vec<BoardLane> = Vec::new();
    let mut board_moved = 0;
    for (i, op) in ops.iter().enumerate() {
        if let Some((peer, len)) = board_op(op, rank) {
            board_moved += len;
            lane_of[i] = ON_BOARD;
            match board.iter_mut().find(|b| b.peer == peer) {
                Some(b) => b.ops.push(i as u32),
                None => board.push(BoardLane {
                    peer,
                    ops: vec![i as u32],
                }),
            }
            continue;
        }
        let Some((peer, dir, len)) = transfer(op) else {
            local.push(i as u32);
            continue;
        };
        moved += len;
        let key = 2 * place(peer) + usize::from(dir == Direction::Send);
        // Headers go first on lane 0 and are not counted, so the first data op
        // follows its header on the same lane and a small one can travel with it.
        let lane = if i < nheader {
            0
        } else {
            counters[key] += 1;
            (counters[key] - 1) % lane_count[key / 2]
        };
        let slot = &mut slots[key];
        if slot.len() <= lane {
            slot.resize(lane + 1, NO_LANE);
        }
        if slot[lane] == NO_LANE {
            slot[lane] = lane_list.len() as u32;
            lane_list.push(Lane {
                peer,
                dir,
                lane,
                ops: Vec::new(),
                staging: None,
            });
        }
        lane_of[i] = slot[lane];
        lane_list[slot[lane] as usize].ops.push(i as u32);
    }
    let mut nstaging = 0;
    for l in lane_list.iter_mut() {
        if l.ops
            .iter()
            .any(|&i| matches!(ops[i as usize], Op::RecvReduce { .. }))
        {
            l.staging = Some(nstaging);
            nstaging += 1;
        }
    }
    Ok(Lowered {
        ops,
        nheader,
        peers,
        waits,
        succ_at,
        succ,
        lanes: lane_list,
        board,
        lane_of,
        local,
        nstaging,
        moved,
        board_moved,
    })
}

/// Marks a byte range no op has written yet.
const NONE: u32 = u32::MAX;

#[derive(Clone)]
struct Seg {
    end: usize,
    writer: u32,
    readers: Vec<u32>,
}

/// Last writer and readers since it, per byte range of one buffer.
#[derive(Default)]
struct Tracker {
    segs: BTreeMap<usize, Seg>,
}

impl Tracker {
    /// Splits the segment containing `x` (if any) so that a segment starts at `x`.
    fn split(&mut self, x: usize) {
        let Some((&start, seg)) = self.segs.range(..x).next_back() else {
            return;
        };
        if seg.end > x {
            let tail = seg.clone();
            self.segs.get_mut(&start).expect("present").end = x;
            self.segs.insert(x, tail);
        }
    }

    /// Every op a read (or, with `write`, a write) of `[a, b)` must wait for.
    fn conflicts(&self, a: usize, b: usize, write: bool, out: &mut Vec<u32>) {
        let first = self
            .segs
            .range(..=a)
            .next_back()
            .filter(|(_, s)| s.end > a)
            .map(|(&k, _)| k)
            .unwrap_or(a);
        for (_, s) in self.segs.range(first..b) {
            if s.writer != NONE {
                out.push(s.writer);
            }
            if write {
                out.extend_from_slice(&s.readers);
            }
        }
    }

    /// Applies `f` to segments covering exactly `[a, b)`, creating empty ones in gaps.
    fn update(&mut self, a: usize, b: usize, mut f: impl FnMut(&mut Seg)) {
        self.split(a);
        self.split(b);
        let mut gaps = Vec::new();
        let mut at = a;
        for (&k, s) in self.segs.range(a..b) {
            if k > at {
                gaps.push((at, k));
            }
            at = s.end;
        }
        if at < b {
            gaps.push((at, b));
        }
        for (x, y) in gaps {
            self.segs.insert(
                x,
                Seg {
                    end: y,
                    writer: NONE,
                    readers: Vec::new(),
                },
            );
        }
        for (_, s) in self.segs.range_mut(a..b) {
            f(s);
        }
    }
}

fn buf_key(b: Buf) -> u32 {
    match b {
        Buf::Input => 0,
        Buf::Output => 1,
        Buf::Scratch => 2,
        Buf::Header => 3,
        Buf::GroupIn(i) => 4 + 2 * u32::from(i),
        Buf::GroupOut(i) => 5 + 2 * u32::from(i),
    }
}

/// Each op's wait count and its dependents (CSR, ascending).
///
/// Op `j` waits for the last writer of every byte it reads or writes and, for
/// bytes it writes, for the readers since that write. Every other earlier op `i`
/// whose regions conflict with `j`'s (the full, quadratic relation) is an ancestor
/// of one of those: if `i` wrote a byte `j` touches, the byte's last writer `w`
/// after `i` conflicts with `i`; if `i` read a byte `j` writes, either `i` is among
/// the readers kept or a later writer `w` of it conflicts with `i`; and `w`'s own
/// waits reach `i` by induction. So both relations have the same transitive
/// closure. An op finishes only after its waits, hence the finished ops are always
/// closed under ancestors, and an op's waits under either relation are all finished
/// at the same moment: when an op finishes, the same ops become ready (in the same
/// order, as both list dependents ascending). Regions of no bytes conflict with
/// nothing.
fn dependencies(ops: &[Op], gate: Option<crate::algo::Region>) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let mut trackers: HashMap<u32, Tracker> = HashMap::new();
    let mut preds: Vec<u32> = Vec::new();
    let mut waits = Vec::with_capacity(ops.len());
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (j, op) in ops.iter().enumerate() {
        let j = j as u32;
        let (reads, write) = access(op, gate);
        let reads = reads.into_iter().flatten().filter(|r| r.len > 0);
        let write = write.filter(|w| w.len > 0);
        preds.clear();
        for r in reads.clone() {
            if let Some(t) = trackers.get(&buf_key(r.buf)) {
                t.conflicts(r.off, r.off + r.len, false, &mut preds);
            }
        }
        if let Some(w) = write {
            if let Some(t) = trackers.get(&buf_key(w.buf)) {
                t.conflicts(w.off, w.off + w.len, true, &mut preds);
            }
        }
        preds.sort_unstable();
        preds.dedup();
        waits.push(preds.len() as u32);
        edges.extend(preds.iter().map(|&i| (i, j)));
        for r in reads {
            trackers
                .entry(buf_key(r.buf))
                .or_default()
                .update(r.off, r.off + r.len, |s| {
                    if s.readers.last() != Some(&j) {
                        s.readers.push(j)
                    }
                });
        }
        if let Some(w) = write {
            trackers
                .entry(buf_key(w.buf))
                .or_default()
                .update(w.off, w.off + w.len, |s| {
                    s.writer = j;
                    s.readers.clear();
                });
        }
    }
    // Successor lists in CSR form; `edges` is ordered by `j`, so each list ascends.
    let mut succ_at = vec![0u32; ops.len() + 1];
    for &(i, _) in &edges {
        succ_at[i as usize + 1] += 1;
    }
    for i in 0..ops.len() {
        succ_at[i + 1] += succ_at[i];
    }
    let mut fill = succ_at.clone();
    let mut succ = vec![0u32; edges.len()];
    for &(i, j) in &edges {
        succ[fill[i as usize] as usize] = j;
        fill[i as usize] += 1;
    }
    (waits, succ_at, succ)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::{build, group, Call};
    use crate::config::{Algorithm, Collective};
    use crate::element::DataType;
    use crate::reduce::ReduceOp;

    /// The full conflict relation, quadratic (the executor's rule before lowering
    /// kept only the last writer and readers): op `j` waits for every earlier op
    /// whose regions conflict with its own.
    fn naive(ops: &[Op], headers: bool) -> Vec<Vec<u32>> {
        // Board ops wait for the whole header buffer (any length covering it).
        let gate = headers.then(|| crate::algo::Region::new(Buf::Header, 0, usize::MAX / 4));
        let access: Vec<_> = ops.iter().map(|op| access(op, gate)).collect();
        let mut preds = vec![Vec::new(); ops.len()];
        for (j, (rj, wj)) in access.iter().enumerate() {
            for (i, (ri, wi)) in access[..j].iter().enumerate() {
                let hit = |a: &Option<crate::algo::Region>, b: &Option<crate::algo::Region>| matches!((a, b), (Some(a), Some(b)) if a.overlaps(b));
                if rj.iter().any(|r| hit(wi, r)) || hit(wi, wj) || ri.iter().any(|r| hit(r, wj)) {
                    preds[j].push(i as u32);
                }
            }
        }
        preds
    }

    /// Checks `low`'s dependencies against the full relation: a subset of it with
    /// the same transitive closure, and, replaying completions in several orders,
    /// the same ops becoming ready in the same order at every completion.
    fn check_dependencies(low: &Lowered, what: &str) {
        let n = low.ops.len();
        let full = naive(&low.ops, low.nheader > 0);
        let mut mine = vec![Vec::new(); n];
        for i in 0..n {
            for &j in low.dependents(i) {
                mine[j as usize].push(i as u32);
            }
        }
        for j in 0..n {
            assert_eq!(
                low.waits[j] as usize,
                mine[j].len(),
                "{what}: op {j}'s wait count"
            );
            for i in &mine[j] {
                assert!(
                    full[j].contains(i),
                    "{what}: op {j} waits for op {i}, which it does not conflict with"
                );
            }
        }
        // Ancestors under the kept relation, as bitsets; every edge of the full
        // relation must be among them.
        let words = n.div_ceil(64);
        let mut anc = vec![0u64; n * words];
        for j in 0..n {
            for &i in &mine[j] {
                let i = i as usize;
                for w in 0..words {
                    anc[j * words + w] |= anc[i * words + w];
                }
                anc[j * words + i / 64] |= 1 << (i % 64);
            }
        }
        for j in 0..n {
            for &i in &full[j] {
                let i = i as usize;
                assert!(
                    anc[j * words + i / 64] & (1 << (i % 64)) != 0,
                    "{what}: op {j} conflicts with op {i} but does not come after it"
                );
            }
        }
        // Replay: pick the next op to finish among the ready ones, pseudo-randomly.
        let mut full_succ = vec![Vec::new(); n];
        for (j, preds) in full.iter().enumerate() {
            for &i in preds {
                full_succ[i as usize].push(j as u32);
            }
        }
        for seed in [1u64, 7, 12345] {
            let mut x = seed;
            let mut wf: Vec<usize> = full.iter().map(Vec::len).collect();
            let mut wm = low.waits.clone();
            let mut ready: Vec<usize> = (0..n).filter(|&j| wf[j] == 0).collect();
            assert_eq!(
                ready,
                (0..n).filter(|&j| wm[j] == 0).collect::<Vec<_>>(),
                "{what}: ops ready at the start"
            );
            let mut done = 0;
            while !ready.is_empty() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = ready.swap_remove(x as usize % ready.len());
                done += 1;
                let mut a = Vec::new();
                for &d in &full_succ[i] {
                    wf[d as usize] -= 1;
                    if wf[d as usize] == 0 {
                        a.push(d as usize);
                    }
                }
                let mut b = Vec::new();
                for &d in low.dependents(i) {
                    wm[d as usize] -= 1;
                    if wm[d as usize] == 0 {
                        b.push(d as usize);
                    }
                }
                assert_eq!(a, b, "{what}: ops made ready by op {i} finishing");
                ready.extend(a);
            }
            assert_eq!(done, n, "{what}: every op runs");
        }
    }

    /// Checks lanes: every transfer on exactly one lane of its peer and direction,
    /// in program order, headers first on lane 0; data round-robin over `lanes`.
    fn check_lanes(low: &Lowered, lanes: usize, what: &str) {
        let mut seen = vec![false; low.ops.len()];
        for (li, l) in low.lanes.iter().enumerate() {
            assert!(l.ops.windows(2).all(|w| w[0] < w[1]), "{what}: lane order");
            for &i in &l.ops {
                let i = i as usize;
                let (peer, dir, _) = transfer(&low.ops[i]).expect("a transfer");
                assert_eq!((peer, dir), (l.peer, l.dir), "{what}: op {i}'s lane");
                assert_eq!(low.lane_of[i] as usize, li, "{what}: op {i}'s lane index");
                assert!(!seen[i], "{what}: op {i} on two lanes");
                seen[i] = true;
            }
            assert_eq!(
                l.staging.is_some(),
                l.ops
                    .iter()
                    .any(|&i| matches!(low.ops[i as usize], Op::RecvReduce { .. })),
                "{what}: staging"
            );
        }
        for b in &low.board {
            assert!(b.ops.windows(2).all(|w| w[0] < w[1]), "{what}: board order");
            for &i in &b.ops {
                let i = i as usize;
                let peer_ok = match low.ops[i] {
                    Op::BoardRead { peer, .. } => peer == b.peer,
                    Op::BoardWrite { .. } => true,
                    _ => false,
                };
                assert!(
                    peer_ok && low.lane_of[i] == ON_BOARD,
                    "{what}: board op {i}"
                );
                assert!(!seen[i], "{what}: op {i} on two lanes");
                seen[i] = true;
            }
        }
        let mut k = HashMap::new();
        for (i, op) in low.ops.iter().enumerate() {
            if op.on_board() {
                assert!(seen[i], "{what}: board op {i} on no board lane");
                continue;
            }
            match transfer(op) {
                None => {
                    assert!(
                        !seen[i] && low.local.contains(&(i as u32)),
                        "{what}: local op {i}"
                    );
                }
                Some((peer, dir, _)) => {
                    assert!(seen[i], "{what}: op {i} on no lane");
                    let lane = low.lanes[low.lane_of[i] as usize].lane;
                    if i < low.nheader {
                        assert_eq!(lane, 0, "{what}: header {i}");
                    } else {
                        let k = k.entry((peer, dir == Direction::Send)).or_insert(0usize);
                        assert_eq!(lane, *k % lanes, "{what}: op {i}'s lane");
                        *k += 1;
                    }
                }
            }
        }
        let staged = low.lanes.iter().filter(|l| l.staging.is_some()).count();
        assert_eq!(low.nstaging, staged, "{what}: staging count");
    }

    /// Checks the header ops: one send and one receive per peer the schedule
    /// exchanges data with, in order of `peer - rank`, with that peer's byte counts.
    fn check_headers(s: &Schedule, low: &Lowered, rank: usize, nranks: usize, what: &str) {
        let mut to = vec![None::<u64>; nranks];
        let mut from = vec![None::<u64>; nranks];
        for op in &s.ops {
            match *op {
                Op::Send { peer, src } => *to[peer].get_or_insert(0) += src.len as u64,
                Op::Recv { peer, dst } | Op::RecvReduce { peer, dst, .. } => {
                    *from[peer].get_or_insert(0) += dst.len as u64
                }
                _ => {}
            }
        }
        let want: Vec<HeaderPeer> = (1..=nranks)
            .map(|k| (rank + k) % nranks)
            .filter(|&p| to[p].is_some() || from[p].is_some())
            .map(|p| HeaderPeer {
                peer: p,
                to: to[p].unwrap_or(0),
                from: from[p].unwrap_or(0),
            })
            .collect();
        assert_eq!(low.peers, want, "{what}: header peers");
        assert_eq!(low.nheader, 2 * want.len(), "{what}: header ops");
        for (k, hp) in want.iter().enumerate() {
            assert_eq!(
                low.ops[2 * k..2 * k + 2],
                header_ops(hp.peer),
                "{what}: header {k}"
            );
        }
        assert_eq!(
            low.ops[low.nheader..],
            s.ops[..],
            "{what}: the schedule's ops follow"
        );
        let moved: usize = low.ops.iter().filter_map(transfer).map(|t| t.2).sum();
        assert_eq!(low.moved, moved, "{what}: bytes moved");
        let board: usize = low
            .ops
            .iter()
            .filter_map(|op| board_op(op, rank))
            .map(|b| b.1)
            .sum();
        assert_eq!(low.board_moved, board, "{what}: board bytes");
    }

    fn hosts(n: usize) -> Vec<Vec<usize>> {
        (0..n)
            .collect::<Vec<_>>()
            .chunks(2)
            .map(<[usize]>::to_vec)
            .collect()
    }

    #[test]
    fn lowering_keeps_the_full_dependency_relation_for_every_algorithm() {
        let mut checked = 0;
        for coll in Collective::ALL {
            for algo in Algorithm::ALL {
                for nranks in [1usize, 2, 3, 4, 5, 8] {
                    for count in [0usize, 1, 1031, 1 << 14] {
                        for in_place in [false, true] {
                            for rank in 0..nranks {
                                let call = Call {
                                    coll,
                                    dtype: DataType::F32,
                                    op: ReduceOp::Avg,
                                    count,
                                    root: 1 % nranks,
                                    rank,
                                    nranks,
                                    in_place,
                                    chunk: 1024,
                                };
                                let s = match build(&call, algo, &hosts(nranks)) {
                                    Ok(s) => s,
                                    Err(e) => {
                                        assert!(
                                            e.to_string().contains("does not implement"),
                                            "{coll} {algo} on {nranks} ranks: {e}"
                                        );
                                        continue;
                                    }
                                };
                                for headers in [false, true] {
                                    let what = format!(
                                        "{coll} {algo}, {count} elements, rank {rank} of \
                                         {nranks}, in place {in_place}, headers {headers}"
                                    );
                                    let low = lower(&s, rank, nranks, headers, |_| Some(3))
                                        .expect("every peer has a link");
                                    if headers {
                                        check_headers(&s, &low, rank, nranks, &what);
                                    } else {
                                        assert_eq!(low.ops, s.ops, "{what}");
                                    }
                                    check_lanes(&low, 3, &what);
                                    check_dependencies(&low, &what);
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        // Every collective x algorithm pair the library implements.
        assert!(
            checked >= 18 * 2 * 4 * 2 * 23,
            "only {checked} lowerings checked"
        );
    }

    #[test]
    fn lowering_a_group_of_point_to_point_transfers() {
        for nranks in [1usize, 2, 3, 5] {
            for rank in 0..nranks {
                let (next, prev) = ((rank + 1) % nranks, (rank + nranks - 1) % nranks);
                let mut t = vec![
                    (true, next, 0, 3000),
                    (false, prev, 0, 3000),
                    (true, rank, 1, 40),
                    (false, rank, 1, 40),
                ];
                if nranks > 1 {
                    t.extend([(true, next, 2, 10), (false, prev, 2, 10)]);
                }
                let s = group(rank, 1024, &t).unwrap();
                for headers in [false, true] {
                    let what = format!("group, rank {rank} of {nranks}, headers {headers}");
                    let low = lower(&s, rank, nranks, headers, |_| Some(2)).unwrap();
                    check_lanes(&low, 2, &what);
                    check_dependencies(&low, &what);
                }
            }
        }
    }

    #[test]
    fn a_peer_without_a_link_is_named() {
        let call = Call {
            coll: Collective::AllReduce,
            dtype: DataType::F32,
            op: ReduceOp::Sum,
            count: 100,
            root: 0,
            rank: 0,
            nranks: 4,
            in_place: false,
            chunk: 1024,
        };
        let s = build(&call, Algorithm::Ring, &hosts(4)).unwrap();
        let got = lower(&s, 0, 4, true, |p| (p != 3).then_some(1)).unwrap_err();
        assert_eq!(got, 3);
        assert_eq!(lower(&s, 0, 2, false, |_| Some(1)).unwrap_err(), 3);
    }
}
