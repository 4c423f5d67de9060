//! Direct algorithms: every rank exchanges with every peer in one round, the
//! latency-optimal choice for small messages. all_reduce receives all peers' inputs
//! and reduces them in rank order, so every rank computes bitwise the same result.
//! Also the dissemination barrier. (Point-to-point groups are `algo::group`.)

use super::{Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

pub(super) fn all_reduce(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, r, b) = (c.nranks, c.rank, c.bytes());
    let out = Region::new(Buf::Output, 0, b);
    let slot = |p: usize| Region::new(Buf::Scratch, p * b, b);
    s.scratch = n * b;
    let own = c.own(0, b);
    for k in 1..n {
        s.sliced(b, c.chunk, |o, l| Op::Send {
            peer: (r + k) % n,
            src: own.sub(o, l),
        });
    }
    for k in 1..n {
        let from = (r + n - k) % n;
        s.sliced(b, c.chunk, |o, l| Op::Recv {
            peer: from,
            dst: slot(from).sub(o, l),
        });
    }
    // In place, our own input must survive until it is reduced: park it in its slot.
    let mine = if c.in_place {
        s.push(Op::Copy {
            src: own,
            dst: slot(r),
        });
        slot(r)
    } else {
        own
    };
    let input_of = |p: usize| if p == r { mine } else { slot(p) };
    s.push(Op::Copy {
        src: input_of(0),
        dst: out,
    });
    for p in 1..n {
        s.push(Op::Reduce {
            src: input_of(p),
            dst: out,
        });
    }
    if c.op == ReduceOp::Avg {
        s.push(Op::FinishAvg { dst: out });
    }
    s
}

pub(super) fn all_gather(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, r, b) = (c.nranks, c.rank, c.bytes());
    let out = |p: usize| Region::new(Buf::Output, p * b, b);
    let own = super::own_block_in_place(c, &mut s);
    for k in 1..n {
        s.sliced(b, c.chunk, |o, l| Op::Send {
            peer: (r + k) % n,
            src: own.sub(o, l),
        });
    }
    for k in 1..n {
        let from = (r + n - k) % n;
        s.sliced(b, c.chunk, |o, l| Op::Recv {
            peer: from,
            dst: out(from).sub(o, l),
        });
    }
    s
}

/// Dissemination barrier: in round k, send a byte to rank + 2^k and wait for one from
/// rank - 2^k; after ceil(log2 n) rounds every rank has heard, directly or through
/// others, from every other. Round k+1 may only send after *all* earlier rounds'
/// bytes arrived: each received byte is folded into an accumulator byte (a local
/// reduce), and every round sends the accumulator, so the executor orders each send
/// after every earlier receive.
pub(super) fn barrier(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let n = c.nranks;
    let rounds = usize::BITS as usize - (n.max(1) - 1).leading_zeros() as usize;
    s.scratch = rounds + 1;
    let acc = Region::new(Buf::Scratch, rounds, 1);
    for k in 0..rounds {
        let d = 1usize << k;
        let got = Region::new(Buf::Scratch, k, 1);
        s.push(Op::Send {
            peer: (c.rank + d) % n,
            src: acc,
        });
        s.push(Op::Recv {
            peer: (c.rank + n - d) % n,
            dst: got,
        });
        s.push(Op::Reduce { src: got, dst: acc });
    }
    s
}
