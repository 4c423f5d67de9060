//! Turns one rank's [`Schedule`] into the compact program the engine runs. The
//! schedule is lowered by the executor's own `exec::lower` (call headers first,
//! each op's lane, the dependency graph), so the engine times exactly the ops,
//! lanes and dependencies the executor runs; here each op keeps only what its
//! time depends on. (The executor also gathers small sends that follow each other
//! on a lane into one message; with no per-message cost in the engine that changes
//! no time, so it is not modelled.) Board writes and reads are timed as copies at
//! the host's memory speed; that a read follows its writer's write is not modelled
//! (the byte exchange ahead of them, carrying the headers, lines the ranks up).

use crate::algo::{Op, Schedule};
use crate::error::{Error, Result};
use crate::exec;
use crate::transport::Direction;

/// What an op does, as far as time goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Send,
    Recv,
    RecvReduce,
    /// A local copy, a cross-memory read, or a write to or read from the host's
    /// board, at memory speed (the host's shared-memory bandwidth).
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

/// Compiles one rank's schedule; `lanes(peer)` is the lane count of its link to `peer`.
/// The ops, lanes and dependencies are the executor's own ([`crate::exec::lower`]).
pub(crate) fn compile(
    schedule: &Schedule,
    rank: usize,
    nranks: usize,
    headers: bool,
    lanes: impl Fn(usize) -> usize,
) -> Result<Program> {
    let low = exec::lower(schedule, rank, nranks, headers, |p| Some(lanes(p))).map_err(|peer| {
        Error::invalid(format!(
            "rank {rank}'s schedule transfers with rank {peer} of {nranks}"
        ))
    })?;
    let ops = low
        .ops
        .iter()
        .zip(&low.lane_of)
        .map(|(op, &lane)| {
            let (kind, peer, bytes) = match *op {
                Op::Send { peer, src } => (Kind::Send, peer, src.len),
                Op::Recv { peer, dst } => (Kind::Recv, peer, dst.len),
                Op::RecvReduce { peer, dst, .. } => (Kind::RecvReduce, peer, dst.len),
                Op::Copy { dst, .. } | Op::PeerRead { dst, .. } => (Kind::Copy, 0, dst.len),
                // A board write or read is a copy into or out of shared memory.
                Op::BoardWrite { src } => (Kind::Copy, 0, src.len),
                Op::BoardRead { dst, .. } => (Kind::Copy, 0, dst.len),
                Op::Reduce { dst, .. } | Op::FinishAvg { dst } => (Kind::Reduce, 0, dst.len),
                Op::Describe { .. } => (Kind::Free, 0, 0),
            };
            SimOp {
                kind,
                peer: peer as u32,
                lane: if lane == exec::lower::ON_BOARD {
                    exec::lower::NO_LANE
                } else {
                    lane
                },
                bytes: bytes as u64,
            }
        })
        .collect();
    let lanes = low
        .lanes
        .into_iter()
        .map(|l| LaneOps {
            peer: l.peer as u32,
            send: l.dir == Direction::Send,
            lane: l.lane as u16,
            ops: l.ops,
        })
        .collect();
    Ok(Program {
        ops,
        lanes,
        waits: low.waits,
        succ_at: low.succ_at,
        succ: low.succ,
    })
}
