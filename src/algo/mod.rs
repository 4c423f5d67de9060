//! Algorithms turn one collective call into this rank's [`Schedule`]: a program of
//! sends, receives, receive-and-reduce, copies and local reductions over byte
//! regions. They never touch a link or a device; the executor (`exec`) runs the
//! program, overlapping whatever the regions let it overlap.
//!
//! Contract between ranks: for every pair of ranks, the sequence of sends one
//! schedules to the other equals, in order and length, the receives the other
//! schedules from it.

mod chain;
mod direct;
mod hier;
mod host;
mod pairwise;
mod ring;
pub(crate) use ring::owned_blocks;
pub(crate) mod tree;
pub(crate) mod uneven;

use crate::config::{Algorithm, Collective};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;

/// Which buffer a region lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Buf {
    /// The caller's send buffer (never used by in-place calls).
    Input,
    /// The caller's receive buffer.
    Output,
    /// Library-owned scratch space of `Schedule::scratch` bytes.
    Scratch,
    /// Send buffer `i` of a group call.
    GroupIn(u16),
    /// Receive buffer `i` of a group call.
    GroupOut(u16),
    /// Per-call headers (the executor's, not the algorithms'): for peer p, the
    /// header sent at `96p`, the one received at `96p + 48`.
    Header,
}

/// A byte range of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub buf: Buf,
    pub off: usize,
    pub len: usize,
}

impl Region {
    pub(crate) fn new(buf: Buf, off: usize, len: usize) -> Region {
        Region { buf, off, len }
    }

    /// Do the two regions share a byte?
    pub(crate) fn overlaps(&self, o: &Region) -> bool {
        self.buf == o.buf && self.off < o.off + o.len && o.off < self.off + self.len
    }

    /// Bytes `[from, from+len)` of this region.
    pub(crate) fn sub(&self, from: usize, len: usize) -> Region {
        debug_assert!(from + len <= self.len);
        Region::new(self.buf, self.off + from, len)
    }
}

/// One step of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Send `src` to `peer`.
    Send { peer: usize, src: Region },
    /// Receive `dst.len` bytes from `peer` into `dst`.
    Recv { peer: usize, dst: Region },
    /// Receive `dst.len` bytes from `peer` and store `acc op incoming` into `dst`
    /// (`acc` has the same length; it may be `dst` itself).
    RecvReduce {
        peer: usize,
        acc: Region,
        dst: Region,
    },
    /// Copy `src` to `dst` (same length, no overlap).
    Copy { src: Region, dst: Region },
    /// `dst = dst op src` locally.
    Reduce { src: Region, dst: Region },
    /// Second half of `Avg`: divide `dst` by the number of ranks.
    FinishAvg { dst: Region },
    /// Write where `src` lives in this process (address and length, 16 bytes LE) into
    /// `dst`, for a peer to read it directly.
    Describe { src: Region, dst: Region },
    /// Read `dst.len` bytes of `peer`'s memory, starting `offset` bytes into the region
    /// its 16-byte description `desc` names, straight into `dst` (cross-memory attach).
    PeerRead {
        peer: usize,
        desc: Region,
        offset: usize,
        dst: Region,
    },
    /// Publish `src` on this rank's ring of the host's board (`transport::board`), for
    /// every other rank of the host to copy out with [`Op::BoardRead`]. The board ops
    /// of a schedule run in program order (this rank's writes, and its reads of each
    /// peer), after the call's headers have been checked.
    BoardWrite { src: Region },
    /// Copy the next `dst.len` bytes `peer` published on the host's board into `dst`.
    BoardRead { peer: usize, dst: Region },
}

impl Op {
    /// (regions read, regions written).
    pub(crate) fn access(&self) -> ([Option<Region>; 2], Option<Region>) {
        match *self {
            Op::Send { src, .. } => ([Some(src), None], None),
            Op::Recv { dst, .. } => ([None, None], Some(dst)),
            Op::RecvReduce { acc, dst, .. } => ([Some(acc), None], Some(dst)),
            Op::Copy { src, dst } => ([Some(src), None], Some(dst)),
            Op::Reduce { src, dst } => ([Some(src), Some(dst)], Some(dst)),
            Op::FinishAvg { dst } => ([Some(dst), None], Some(dst)),
            Op::Describe { src, dst } => ([Some(src), None], Some(dst)),
            Op::PeerRead { desc, dst, .. } => ([Some(desc), None], Some(dst)),
            Op::BoardWrite { src } => ([Some(src), None], None),
            Op::BoardRead { dst, .. } => ([None, None], Some(dst)),
        }
    }

    /// Is this an op on the host's board?
    pub(crate) fn on_board(&self) -> bool {
        matches!(self, Op::BoardWrite { .. } | Op::BoardRead { .. })
    }
}

/// A rank's program for one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    pub ops: Vec<Op>,
    /// Scratch bytes the program uses.
    pub scratch: usize,
}

impl Schedule {
    /// Appends `op`, dropping empty transfers (both ends drop them alike).
    pub(crate) fn push(&mut self, op: Op) {
        let len = match op {
            Op::Send { src, .. } => src.len,
            Op::Recv { dst, .. } | Op::RecvReduce { dst, .. } => dst.len,
            Op::Copy { src, dst } | Op::Reduce { src, dst } => {
                if src == dst {
                    0
                } else {
                    dst.len
                }
            }
            Op::FinishAvg { dst } => dst.len,
            Op::Describe { dst, .. } => dst.len,
            Op::PeerRead { dst, .. } => dst.len,
            Op::BoardWrite { src } => src.len,
            Op::BoardRead { dst, .. } => dst.len,
        };
        if len > 0 {
            self.ops.push(op);
        }
    }

    /// Pushes `make(piece)` for each chunk-sized, element-aligned piece of `[0, len)`.
    pub(crate) fn sliced(
        &mut self,
        len: usize,
        chunk: usize,
        mut make: impl FnMut(usize, usize) -> Op,
    ) {
        let mut off = 0;
        while off < len {
            let n = chunk.min(len - off);
            self.push(make(off, n));
            off += n;
        }
    }
}

/// Everything an algorithm needs to know about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Call {
    pub coll: Collective,
    pub dtype: DataType,
    pub op: ReduceOp,
    /// Elements, in the collective's own sense (per rank block for gather/scatter/all-to-all).
    pub count: usize,
    pub root: usize,
    pub rank: usize,
    pub nranks: usize,
    pub in_place: bool,
    /// Pipelining unit in bytes (a multiple of the element size).
    pub chunk: usize,
}

impl Call {
    pub(crate) fn esize(&self) -> usize {
        self.dtype.size()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.count * self.esize()
    }

    /// The caller's own contribution: `Input`, or where in-place calls keep it in `Output`.
    pub(crate) fn own(&self, off: usize, len: usize) -> Region {
        if self.in_place {
            Region::new(Buf::Output, off, len)
        } else {
            Region::new(Buf::Input, off, len)
        }
    }
}

/// The all-gather prologue shared by every algorithm: this rank's block (`Input`, or
/// its place in `Output` when in place), copied into `Output` block `rank` when it is
/// not already there. Returns where the block is read from.
pub(crate) fn own_block_in_place(c: &Call, s: &mut Schedule) -> Region {
    let b = c.bytes();
    let placed = Region::new(Buf::Output, c.rank * b, b);
    if c.in_place {
        return placed;
    }
    let own = Region::new(Buf::Input, 0, b);
    // In chunks, so the executor can interleave the copy with the transfers.
    s.sliced(b, c.chunk, |o, l| Op::Copy {
        src: own.sub(o, l),
        dst: placed.sub(o, l),
    });
    own
}

/// Byte range `[start, end)` of block `b` when `count` elements are cut into `parts`
/// blocks as evenly as element boundaries allow.
pub(crate) fn block(count: usize, parts: usize, b: usize, esize: usize) -> (usize, usize) {
    let base = count / parts;
    let extra = count % parts;
    let start = b * base + b.min(extra);
    let len = base + usize::from(b < extra);
    (start * esize, (start + len) * esize)
}

/// The schedule of a group of point-to-point transfers: `(is_send, peer, buffer index,
/// bytes)` in call order. Every transfer is posted at once, so any pattern whose
/// transfers match across ranks completes; transfers with this rank itself pair up
/// in order (k-th send with k-th receive) and become copies.
pub(crate) fn group(
    rank: usize,
    chunk: usize,
    transfers: &[(bool, usize, usize, usize)],
) -> Result<Schedule> {
    let mut s = Schedule::default();
    let self_sends: Vec<_> = transfers.iter().filter(|t| t.0 && t.1 == rank).collect();
    let self_recvs: Vec<_> = transfers.iter().filter(|t| !t.0 && t.1 == rank).collect();
    if self_sends.len() != self_recvs.len() {
        return Err(Error::invalid(format!(
            "rank {rank} posts {} sends to itself but {} receives from itself",
            self_sends.len(),
            self_recvs.len()
        )));
    }
    for (snd, rcv) in self_sends.iter().zip(&self_recvs) {
        if snd.3 != rcv.3 {
            return Err(Error::invalid(format!(
                "rank {rank} sends {} bytes to itself but receives {} bytes from itself",
                snd.3, rcv.3
            )));
        }
        s.push(Op::Copy {
            src: Region::new(Buf::GroupIn(snd.2 as u16), 0, snd.3),
            dst: Region::new(Buf::GroupOut(rcv.2 as u16), 0, rcv.3),
        });
    }
    for &(is_send, peer, i, len) in transfers.iter().filter(|t| t.1 != rank) {
        if i > u16::MAX as usize {
            return Err(Error::invalid(format!(
                "a group holds at most {} transfers per direction",
                u16::MAX
            )));
        }
        if is_send {
            let src = Region::new(Buf::GroupIn(i as u16), 0, len);
            s.sliced(len, chunk, |o, l| Op::Send {
                peer,
                src: src.sub(o, l),
            });
        } else {
            let dst = Region::new(Buf::GroupOut(i as u16), 0, len);
            s.sliced(len, chunk, |o, l| Op::Recv {
                peer,
                dst: dst.sub(o, l),
            });
        }
    }
    Ok(s)
}

/// Builds this rank's schedule for `call` with `algo`. `hosts` lists the ranks of
/// each host (the hierarchical algorithms' layout); every rank on exactly one.
pub(crate) fn build(call: &Call, algo: Algorithm, hosts: &[Vec<usize>]) -> Result<Schedule> {
    use Algorithm::*;
    use Collective::*;
    if algo == Hier {
        let mut seen = vec![false; call.nranks];
        for &r in hosts.iter().flatten() {
            match seen.get_mut(r) {
                Some(x) if !*x => *x = true,
                _ => {
                    return Err(Error::invalid(format!(
                        "the topology does not describe {} ranks (rank {r})",
                        call.nranks
                    )))
                }
            }
        }
        if seen.iter().any(|x| !x) || hosts.iter().any(Vec::is_empty) {
            return Err(Error::invalid(format!(
                "the topology does not place all {} ranks",
                call.nranks
            )));
        }
    }
    let s = match (call.coll, algo) {
        (AllReduce, Ring) => ring::all_reduce(call),
        (AllReduce, Direct) => direct::all_reduce(call),
        (AllReduce, Tree) => tree::all_reduce(call),
        (AllReduce, Hier) => hier::all_reduce(call, hosts),
        (AllGather, Hier) => hier::all_gather(call, hosts),
        (ReduceScatter, Hier) => hier::reduce_scatter(call, hosts),
        (Broadcast, Tree) => tree::broadcast(call),
        (Reduce, Tree) => tree::reduce(call),
        (AllGather, Ring) => ring::all_gather(call),
        (AllGather, Direct) => direct::all_gather(call),
        (AllGather, HostRead) => host::all_gather(call),
        (AllGather, Publish) => host::publish_all_gather(call),
        (AllReduce, Publish) => host::publish_all_reduce(call),
        (ReduceScatter, Ring) => ring::reduce_scatter(call),
        (Broadcast, Chain) => chain::broadcast(call),
        (Reduce, Chain) => chain::reduce(call),
        (AllToAll, Pairwise) => pairwise::all_to_all(call),
        (Barrier, Direct) => direct::barrier(call),
        (c, a) => {
            return Err(Error::invalid(format!(
                "algorithm {a} does not implement {c} (check MIXCCL_ALGO)"
            )))
        }
    };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_the_range_evenly() {
        for count in [0usize, 1, 7, 1031] {
            for parts in 1..=8 {
                let mut next = 0;
                for b in 0..parts {
                    let (s, e) = block(count, parts, b, 4);
                    assert_eq!(s, next);
                    assert!(e - s <= 4 * (count / parts + 1));
                    next = e;
                }
                assert_eq!(next, count * 4);
            }
        }
    }
}
