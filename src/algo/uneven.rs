//! Uneven ("v") collectives: the ring and direct all-gather, the ring reduce-scatter
//! and the pairwise all-to-all with a block of its own size (and place) per rank.
//! Every block is a byte range `(offset, len)` of its buffer; blocks of zero bytes
//! are dropped by `Schedule::push` on both ends alike.
//!
//! The schedules are the even ones with block `b` at `blocks[b]` instead of at
//! `b * size`: the ring moves each block `n - 1` hops whatever its size, so a step
//! lasts as long as its largest block (the planner is asked with the largest block).
//! The reduce-scatter reduces each block once along the ring, in the same order the
//! even ring uses, so its result does not depend on how the other blocks are sized.

use super::{Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

fn ring_peers(c: &Call) -> (usize, usize) {
    let n = c.nranks;
    ((c.rank + 1) % n, (c.rank + n - 1) % n)
}

/// Block index `rank - k` modulo n (k at most 2n).
fn back(c: &Call, k: usize) -> usize {
    let n = c.nranks;
    (c.rank + 2 * n - k % (2 * n)) % n
}

fn region(buf: Buf, (off, len): (usize, usize)) -> Region {
    Region::new(buf, off, len)
}

/// This rank's block copied to its place in `Output` (unless in place); returns where
/// the block is read from.
fn own_block(c: &Call, blocks: &[(usize, usize)], s: &mut Schedule) -> Region {
    let placed = region(Buf::Output, blocks[c.rank]);
    if c.in_place {
        return placed;
    }
    let own = Region::new(Buf::Input, 0, placed.len);
    s.sliced(placed.len, c.chunk, |o, l| Op::Copy {
        src: own.sub(o, l),
        dst: placed.sub(o, l),
    });
    own
}

/// Ring all-gather-v: `blocks[p]` is where rank p's block lands in `Output`; this
/// rank's own block is `Input` (its whole length) or, in place, already there.
pub(crate) fn ring_all_gather(c: &Call, blocks: &[(usize, usize)]) -> Schedule {
    let mut s = Schedule::default();
    let own = own_block(c, blocks, &mut s);
    if c.nranks == 1 {
        return s;
    }
    let (next, prev) = ring_peers(c);
    for k in 0..c.nranks - 1 {
        let src = if k == 0 {
            own
        } else {
            region(Buf::Output, blocks[back(c, k)])
        };
        s.sliced(src.len, c.chunk, |o, l| Op::Send {
            peer: next,
            src: src.sub(o, l),
        });
        let dst = region(Buf::Output, blocks[back(c, k + 1)]);
        s.sliced(dst.len, c.chunk, |o, l| Op::Recv {
            peer: prev,
            dst: dst.sub(o, l),
        });
    }
    s
}

/// Direct all-gather-v: this rank's block to every peer, every peer's block from it.
pub(crate) fn direct_all_gather(c: &Call, blocks: &[(usize, usize)]) -> Schedule {
    let mut s = Schedule::default();
    let (n, r) = (c.nranks, c.rank);
    let own = own_block(c, blocks, &mut s);
    for k in 1..n {
        s.sliced(own.len, c.chunk, |o, l| Op::Send {
            peer: (r + k) % n,
            src: own.sub(o, l),
        });
    }
    for k in 1..n {
        let from = (r + n - k) % n;
        let dst = region(Buf::Output, blocks[from]);
        s.sliced(dst.len, c.chunk, |o, l| Op::Recv {
            peer: from,
            dst: dst.sub(o, l),
        });
    }
    s
}

/// Ring reduce-scatter-v: `blocks[p]` is where rank p's block lies in the input (the
/// `Input` buffer, or `Output` in place). The result lands at `Output` offset 0 (out
/// of place) or at this rank's block (in place). Partial sums live in scratch (out of
/// place, packed) or in the caller's buffer (in place).
pub(crate) fn ring_reduce_scatter(c: &Call, blocks: &[(usize, usize)]) -> Schedule {
    let mut s = Schedule::default();
    let n = c.nranks;
    let own = |b: usize| {
        let (off, len) = blocks[b];
        c.own(off, len)
    };
    let mine = blocks[c.rank].1;
    let final_dst = if c.in_place {
        region(Buf::Output, blocks[c.rank])
    } else {
        Region::new(Buf::Output, 0, mine)
    };
    // Out of place, block b's partial sum sits at the sum of the earlier blocks' lengths.
    let mut packed = Vec::with_capacity(n);
    let mut at = 0;
    for &(_, len) in blocks {
        packed.push((at, len));
        at += len;
    }
    let partial = |b: usize| {
        if c.in_place {
            region(Buf::Output, blocks[b])
        } else {
            region(Buf::Scratch, packed[b])
        }
    };
    if n == 1 {
        s.push(Op::Copy {
            src: own(0),
            dst: final_dst,
        });
    } else {
        if !c.in_place {
            s.scratch = at;
        }
        let (next, prev) = ring_peers(c);
        // Step k sends block r-k-1 and receives block r-k-2, so rank r ends with block r.
        for k in 0..n - 1 {
            let sb = back(c, k + 1);
            let src = if k == 0 { own(sb) } else { partial(sb) };
            s.sliced(src.len, c.chunk, |o, l| Op::Send {
                peer: next,
                src: src.sub(o, l),
            });
            let rb = back(c, k + 2);
            let dst = if k == n - 2 { final_dst } else { partial(rb) };
            let acc = own(rb);
            s.sliced(acc.len, c.chunk, |o, l| Op::RecvReduce {
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

/// Pairwise all-to-all-v (out of place): `send[p]` is the `Input` range bound for rank
/// p, `recv[p]` the `Output` range rank p's block lands in. Step k sends to rank r+k
/// and receives from rank r-k; all steps are posted at once.
pub(crate) fn pairwise_all_to_all(
    c: &Call,
    send: &[(usize, usize)],
    recv: &[(usize, usize)],
) -> Schedule {
    let mut s = Schedule::default();
    let (n, r) = (c.nranks, c.rank);
    let own = region(Buf::Input, send[r]);
    let placed = region(Buf::Output, recv[r]);
    s.sliced(own.len.min(placed.len), c.chunk, |o, l| Op::Copy {
        src: own.sub(o, l),
        dst: placed.sub(o, l),
    });
    for k in 1..n {
        let to = (r + k) % n;
        let from = (r + n - k) % n;
        let src = region(Buf::Input, send[to]);
        s.sliced(src.len, c.chunk, |o, l| Op::Send {
            peer: to,
            src: src.sub(o, l),
        });
        let dst = region(Buf::Output, recv[from]);
        s.sliced(dst.len, c.chunk, |o, l| Op::Recv {
            peer: from,
            dst: dst.sub(o, l),
        });
    }
    s
}
