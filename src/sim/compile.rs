//! Turns one rank's [`Schedule`] into the compact program the engine runs: the ops
//! the executor would run (call headers first, as `exec::run` prepends them), each
//! op's lane, and the dependency graph the executor derives from program order and
//! region overlap. (The executor also gathers small sends that follow each other on
//! a lane into one message; with no per-message cost in the engine that changes no
//! time, so it is not modelled.)
//!
//! The executor makes op `j` wait for every earlier op whose regions conflict with
//! its own (read-after-write, write-after-read, write-after-write), a quadratic
//! pass. Here each buffer keeps, per byte range, its last writer and the readers
//! since that write, and `j` waits only for those. That is the same readiness: any
//! other conflicting op `i` is one the kept ops themselves waited for (a later
//! write of the same bytes conflicts with `i`), so they cannot finish before it.

use crate::algo::{Buf, Op, Schedule};
use std::collections::{BTreeMap, HashMap};

/// What an op does, as far as time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Send,
    Recv,
    RecvReduce,
    /// A local copy (or a cross-memory read) at memory speed.
    Copy,
    /// A local reduction or `Avg`'s division at reduction speed.
    Reduce,
    /// Free (a 16-byte description of a buffer).
    Free,
}

/// One op of a compiled program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SimOp {
    pub kind: Kind,
    /// Peer rank (true rank numbers) of a transfer; 0 for local ops.
    pub peer: u32,
    /// Index of the op's lane in `Program::lanes` (transfers only).
    pub lane: u32,
    pub bytes: u64,
}

/// One ordered stream of transfers on a (peer, direction, lane).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct LaneOps {
    pub peer: u32,
    pub send: bool,
    pub lane: u16,
    pub ops: Vec<u32>,
}

/// A rank's program: ops, lanes and dependencies (successor lists in CSR form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Program {
    pub ops: Vec<SimOp>,
    pub lanes: Vec<LaneOps>,
    /// Number of ops each op waits for.
    pub waits: Vec<u32>,
    /// `succ[succ_at[i]..succ_at[i+1]]`: the ops waiting for op `i`.
    pub succ_at: Vec<u32>,
    pub succ: Vec<u32>,
}

impl Program {
    /// Ops and structure with every peer shifted back by `shift` ranks (mod `n`), for
    /// comparing the programs of two ranks that a rotation maps onto each other.
    pub(crate) fn shifted(&self, shift: usize, n: usize) -> Program {
        let back = |p: u32| ((p as usize + n - shift % n) % n) as u32;
        let mut p = self.clone();
        for op in &mut p.ops {
            if matches!(op.kind, Kind::Send | Kind::Recv | Kind::RecvReduce) {
                op.peer = back(op.peer);
            }
        }
        for l in &mut p.lanes {
            l.peer = back(l.peer);
        }
        p
    }

    /// Bytes of memory this program holds (for the engine's budget).
    pub(crate) fn footprint(&self) -> usize {
        self.ops.len() * std::mem::size_of::<SimOp>()
            + self.waits.len() * 4
            + self.succ_at.len() * 4
            + self.succ.len() * 4
            + self
                .lanes
                .iter()
                .map(|l| l.ops.len() * 4 + 32)
                .sum::<usize>()
    }
}

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
            let mut tail = seg.clone();
            tail.end = seg.end;
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

/// The executor's op list for `schedule`: with `headers`, a 48-byte header sent to
/// and received from every peer the call exchanges data with, ahead of the data.
/// The executor orders them by peer; here they go in order of `peer - rank` (mod
/// n), so that rotated ranks get rotated programs. Their order does not change
/// their timing: they wait for nothing and each is the first op of its own lane.
fn with_headers(schedule: &Schedule, rank: usize, nranks: usize, headers: bool) -> Vec<Op> {
    if !headers {
        return schedule.ops.clone();
    }
    let mut talks = vec![false; nranks];
    for op in &schedule.ops {
        match *op {
            Op::Send { peer, .. } | Op::Recv { peer, .. } | Op::RecvReduce { peer, .. } => {
                talks[peer] = true
            }
            _ => {}
        }
    }
    let mut ops = Vec::with_capacity(schedule.ops.len() + 2 * nranks.min(64));
    for p in (rank..nranks).chain(0..rank).filter(|&p| talks[p]) {
        ops.extend(crate::exec::header_ops(p));
    }
    ops.extend_from_slice(&schedule.ops);
    ops
}

/// Compiles one rank's schedule; `lanes(peer)` is the lane count of its link to `peer`.
pub(crate) fn compile(
    schedule: &Schedule,
    rank: usize,
    nranks: usize,
    headers: bool,
    lanes: impl Fn(usize) -> usize,
) -> Program {
    let ops = with_headers(schedule, rank, nranks, headers);
    let nheader = ops.len() - schedule.ops.len();
    let mut out = Vec::with_capacity(ops.len());
    let mut lane_list: Vec<LaneOps> = Vec::new();
    let mut lane_index: HashMap<(u32, bool, u16), u32> = HashMap::new();
    let mut counters: HashMap<(u32, bool), usize> = HashMap::new();
    let mut trackers: HashMap<u32, Tracker> = HashMap::new();
    let mut preds: Vec<u32> = Vec::new();
    let mut waits = Vec::with_capacity(ops.len());
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for (j, op) in ops.iter().enumerate() {
        let j = j as u32;
        let (kind, peer, bytes) = match *op {
            Op::Send { peer, src } => (Kind::Send, peer, src.len),
            Op::Recv { peer, dst } => (Kind::Recv, peer, dst.len),
            Op::RecvReduce { peer, dst, .. } => (Kind::RecvReduce, peer, dst.len),
            Op::Copy { dst, .. } | Op::PeerRead { dst, .. } => (Kind::Copy, 0, dst.len),
            Op::Reduce { dst, .. } | Op::FinishAvg { dst } => (Kind::Reduce, 0, dst.len),
            Op::Describe { .. } => (Kind::Free, 0, 0),
        };
        let mut lane = NONE;
        if matches!(kind, Kind::Send | Kind::Recv | Kind::RecvReduce) {
            let send = kind == Kind::Send;
            // As the executor: headers go first on lane 0 and are not counted, so
            // the first data op follows its header on the same lane.
            let l = if (j as usize) < nheader {
                0
            } else {
                let k = counters.entry((peer as u32, send)).or_insert(0);
                *k += 1;
                ((*k - 1) % lanes(peer).max(1)) as u16
            };
            lane = *lane_index.entry((peer as u32, send, l)).or_insert_with(|| {
                lane_list.push(LaneOps {
                    peer: peer as u32,
                    send,
                    lane: l,
                    ops: Vec::new(),
                });
                (lane_list.len() - 1) as u32
            });
            lane_list[lane as usize].ops.push(j);
        }
        out.push(SimOp {
            kind,
            peer: peer as u32,
            lane,
            bytes: bytes as u64,
        });
        // Dependencies.
        let (reads, write) = op.access();
        preds.clear();
        for r in reads.iter().flatten() {
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
        for r in reads.iter().flatten().filter(|r| r.len > 0) {
            trackers
                .entry(buf_key(r.buf))
                .or_default()
                .update(r.off, r.off + r.len, |s| {
                    if s.readers.last() != Some(&j) {
                        s.readers.push(j)
                    }
                });
        }
        if let Some(w) = write.filter(|w| w.len > 0) {
            trackers
                .entry(buf_key(w.buf))
                .or_default()
                .update(w.off, w.off + w.len, |s| {
                    s.writer = j;
                    s.readers.clear();
                });
        }
    }
    // Successor lists, in CSR form.
    let mut succ_at = vec![0u32; out.len() + 1];
    for &(i, _) in &edges {
        succ_at[i as usize + 1] += 1;
    }
    for i in 0..out.len() {
        succ_at[i + 1] += succ_at[i];
    }
    let mut fill = succ_at.clone();
    let mut succ = vec![0u32; edges.len()];
    for &(i, j) in &edges {
        succ[fill[i as usize] as usize] = j;
        fill[i as usize] += 1;
    }
    Program {
        ops: out,
        lanes: lane_list,
        waits,
        succ_at,
        succ,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::Region;

    /// The executor's quadratic rule, for comparison.
    fn naive(ops: &[Op]) -> Vec<Vec<u32>> {
        let access: Vec<_> = ops.iter().map(Op::access).collect();
        let mut preds = vec![Vec::new(); ops.len()];
        for j in 0..ops.len() {
            for i in 0..j {
                let (ri, wi) = &access[i];
                let (rj, wj) = &access[j];
                let hit = |a: &Option<Region>, b: &Option<Region>| matches!((a, b), (Some(a), Some(b)) if a.overlaps(b));
                if rj.iter().any(|r| hit(wi, r)) || hit(wi, wj) || ri.iter().any(|r| hit(r, wj)) {
                    preds[j].push(i as u32);
                }
            }
        }
        preds
    }

    /// Earliest finish of every op when op i takes `cost(i)` and waits for `preds`.
    fn finish(preds: &[Vec<u32>], cost: &[f64]) -> Vec<f64> {
        let mut f = vec![0.0f64; preds.len()];
        for j in 0..preds.len() {
            let start = preds[j].iter().map(|&i| f[i as usize]).fold(0.0, f64::max);
            f[j] = start + cost[j];
        }
        f
    }

    #[test]
    fn reduced_dependencies_give_the_executors_readiness() {
        use crate::algo::{build, Call};
        use crate::config::{Algorithm, Collective};
        use crate::element::DataType;
        use crate::reduce::ReduceOp;
        let hosts = vec![vec![0, 1, 2], vec![3, 4, 5]];
        for (coll, algo) in [
            (Collective::AllReduce, Algorithm::Ring),
            (Collective::AllReduce, Algorithm::Tree),
            (Collective::AllReduce, Algorithm::Hier),
            (Collective::AllReduce, Algorithm::Direct),
            (Collective::AllGather, Algorithm::Hier),
            (Collective::ReduceScatter, Algorithm::Ring),
        ] {
            for in_place in [false, true] {
                let call = Call {
                    coll,
                    dtype: DataType::F32,
                    op: ReduceOp::Avg,
                    count: 1031,
                    root: 0,
                    rank: 4,
                    nranks: 6,
                    in_place,
                    chunk: 256,
                };
                let s = build(&call, algo, &hosts).unwrap();
                let p = compile(&s, 4, 6, false, |_| 2);
                let preds = naive(&s.ops);
                // Same finish times under arbitrary op costs.
                let cost: Vec<f64> = (0..s.ops.len()).map(|i| 1.0 + (i * 7 % 5) as f64).collect();
                let mut mine = vec![Vec::new(); s.ops.len()];
                for i in 0..s.ops.len() {
                    for &j in &p.succ[p.succ_at[i] as usize..p.succ_at[i + 1] as usize] {
                        mine[j as usize].push(i as u32);
                    }
                }
                assert_eq!(finish(&mine, &cost), finish(&preds, &cost), "{coll} {algo}");
                for (j, m) in mine.iter().enumerate() {
                    assert!(
                        m.iter().all(|i| preds[j].contains(i)),
                        "{coll} {algo} op {j}"
                    );
                }
            }
        }
    }
}
