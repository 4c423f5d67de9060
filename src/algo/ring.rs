//! Ring algorithms. Data is cut into `nranks` blocks; in each of `nranks - 1` steps
//! every rank sends one block to `rank + 1` and receives one from `rank - 1`. Each
//! block is further cut into chunks, so a chunk moves on as soon as it has arrived
//! (and been reduced): the executor overlaps the steps.
//!
//! all_reduce = reduce-scatter (rank r ends owning block r+1) + all-gather.
//! Bytes sent per rank: 2 (n-1)/n x size for all_reduce, (n-1)/n x total for the others.

use super::{block, Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

fn ring_peers(c: &Call) -> (usize, usize) {
    let n = c.nranks;
    ((c.rank + 1) % n, (c.rank + n - 1) % n)
}

/// Block index `rank - k` modulo n (k may exceed n).
fn back(c: &Call, k: usize) -> usize {
    let n = c.nranks;
    (c.rank + n * (k / n + 1) - k) % n
}

pub(super) fn all_reduce(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, e, bytes) = (c.nranks, c.esize(), c.bytes());
    let out = |off, len| Region::new(Buf::Output, off, len);
    if n == 1 {
        s.push(Op::Copy {
            src: c.own(0, bytes),
            dst: out(0, bytes),
        });
        return s;
    }
    let owned = reduce_scatter_half(c, &mut s);
    let (next, prev) = ring_peers(c);
    let blk = |b: usize| block(c.count, n, b, e);
    // All-gather: step k sends block r+1-k, receives block r-k.
    for k in 0..n - 1 {
        let (ss, se) = blk((owned + n - k % n) % n);
        s.sliced(se - ss, c.chunk, |o, l| Op::Send {
            peer: next,
            src: out(ss + o, l),
        });
        let (rs, re) = blk(back(c, k));
        s.sliced(re - rs, c.chunk, |o, l| Op::Recv {
            peer: prev,
            dst: out(rs + o, l),
        });
    }
    s
}

/// The first half of the ring all_reduce, for the board's all_reduce: the output ends
/// holding only the block this rank owns, reduced (and divided, for `Avg`); the
/// board gathers the rest (`host::publish_all_reduce`, [`owned_blocks`]).
pub(super) fn all_reduce_scattered(c: &Call) -> Schedule {
    if c.nranks == 1 {
        // One rank owns the whole buffer: the all_reduce is its copy.
        return all_reduce(c);
    }
    let mut s = Schedule::default();
    reduce_scatter_half(c, &mut s);
    s
}

/// Byte range of the output block each rank owns after the ring's reduce-scatter half,
/// by rank: rank p owns block p+1.
pub(crate) fn owned_blocks(count: usize, nranks: usize, esize: usize) -> Vec<(usize, usize)> {
    (0..nranks)
        .map(|p| {
            let (s, e) = block(count, nranks, (p + 1) % nranks, esize);
            (s, e - s)
        })
        .collect()
}

/// Appends the ring all_reduce's reduce-scatter (n > 1); returns the block this rank
/// then owns.
///
/// Only the last step's sums belong in the output; the earlier ones are partial sums
/// that the next step sends on and nothing reads again. They go to two scratch slots
/// of a block each, used in turn (step k writes slot k % 2 while step k's sends read
/// slot (k - 1) % 2), not to the output: out of place, writing them there cost a
/// read-for-ownership and a write-back of each block, 16 blocks of memory traffic per
/// rank and call with 4 ranks against 13 in place (12 and 11 now; docs/algorithms.md).
/// The slots are the same bytes in every call and piece, so they can stay in the
/// last-level cache. A slot is reused two steps later, once the sends that read it
/// have gone (the executor orders the two by region), which still lets a step's
/// receives run up to a block ahead of its sends.
fn reduce_scatter_half(c: &Call, s: &mut Schedule) -> usize {
    let (n, e) = (c.nranks, c.esize());
    let out = |off, len| Region::new(Buf::Output, off, len);
    let (next, prev) = ring_peers(c);
    let blk = |b: usize| block(c.count, n, b, e);
    // Block 0 is the longest (blocks differ by at most one element).
    let slot_len = blk(0).1;
    let slot = |k: usize, len: usize| Region::new(Buf::Scratch, (k % 2) * slot_len, len);
    if n > 2 {
        s.scratch = s.scratch.max(slot_len * (n - 2).min(2));
    }
    // Reduce-scatter: step k sends block r-k, receives and reduces block r-k-1.
    for k in 0..n - 1 {
        let (ss, se) = blk(back(c, k));
        let src = if k == 0 {
            c.own(ss, se - ss)
        } else {
            slot(k - 1, se - ss)
        };
        s.sliced(se - ss, c.chunk, |o, l| Op::Send {
            peer: next,
            src: src.sub(o, l),
        });
        let (rs, re) = blk(back(c, k + 1));
        let acc = c.own(rs, re - rs);
        let dst = if k == n - 2 {
            out(rs, re - rs)
        } else {
            slot(k, re - rs)
        };
        s.sliced(re - rs, c.chunk, |o, l| Op::RecvReduce {
            peer: prev,
            acc: acc.sub(o, l),
            dst: dst.sub(o, l),
        });
    }
    let owned = (c.rank + 1) % n;
    if c.op == ReduceOp::Avg {
        let (os, oe) = blk(owned);
        s.push(Op::FinishAvg {
            dst: out(os, oe - os),
        });
    }
    owned
}

pub(super) fn all_gather(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, b) = (c.nranks, c.bytes());
    let out = |blk: usize| Region::new(Buf::Output, blk * b, b);
    let own = super::own_block_in_place(c, &mut s);
    if n == 1 {
        return s;
    }
    let (next, prev) = ring_peers(c);
    for k in 0..n - 1 {
        // Step 0 forwards this rank's own block straight from where it is read.
        let src = if k == 0 { own } else { out(back(c, k)) };
        s.sliced(b, c.chunk, |o, l| Op::Send {
            peer: next,
            src: src.sub(o, l),
        });
        let dst = out(back(c, k + 1));
        s.sliced(b, c.chunk, |o, l| Op::Recv {
            peer: prev,
            dst: dst.sub(o, l),
        });
    }
    s
}

pub(super) fn reduce_scatter(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, b) = (c.nranks, c.bytes());
    // Partial sums live in the caller's buffer when in place, else in scratch.
    let partial = if c.in_place {
        Buf::Output
    } else {
        Buf::Scratch
    };
    let own = |blk: usize| c.own(blk * b, b);
    let final_dst = if c.in_place {
        Region::new(Buf::Output, c.rank * b, b)
    } else {
        Region::new(Buf::Output, 0, b)
    };
    if n == 1 {
        s.push(Op::Copy {
            src: own(0),
            dst: final_dst,
        });
    } else {
        if !c.in_place {
            s.scratch = n * b;
        }
        let (next, prev) = ring_peers(c);
        // Step k sends block r-k-1 and receives block r-k-2, so rank r ends with block r.
        for k in 0..n - 1 {
            let sb = back(c, k + 1);
            let src = if k == 0 {
                own(sb)
            } else {
                Region::new(partial, sb * b, b)
            };
            s.sliced(b, c.chunk, |o, l| Op::Send {
                peer: next,
                src: src.sub(o, l),
            });
            let rb = back(c, k + 2);
            let dst = if k == n - 2 {
                final_dst
            } else {
                Region::new(partial, rb * b, b)
            };
            let acc = own(rb);
            s.sliced(b, c.chunk, |o, l| Op::RecvReduce {
                peer: prev,
                acc: acc.sub(o, l),
                dst: dst.sub(o, l),
            });
        }
    }
    if c.op == ReduceOp::Avg {
        s.push(Op::FinishAvg { dst: final_dst });
    }
    s
}
