//! Chain (pipelined path) algorithms for rooted collectives. Ranks form the path
//! root, root+1, ..., root-1; data is cut into chunks and each chunk is forwarded as
//! soon as it arrives, so time is about (n - 2) chunk hops + size / bandwidth.

use super::{Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

/// (position on the path, rank before, rank after).
fn place(c: &Call) -> (usize, usize, usize) {
    let n = c.nranks;
    let pos = (c.rank + n - c.root) % n;
    (pos, (c.rank + n - 1) % n, (c.rank + 1) % n)
}

pub(super) fn broadcast(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let b = c.bytes();
    let out = Region::new(Buf::Output, 0, b);
    let (pos, prev, next) = place(c);
    let last = pos == c.nranks - 1;
    if pos == 0 {
        let src = c.own(0, b);
        if !c.in_place {
            s.push(Op::Copy { src, dst: out });
        }
        if !last {
            s.sliced(b, c.chunk, |o, l| Op::Send {
                peer: next,
                src: src.sub(o, l),
            });
        }
        return s;
    }
    // Interleave so each chunk is forwarded right after it arrives.
    s.sliced(b, c.chunk, |o, l| Op::Recv {
        peer: prev,
        dst: out.sub(o, l),
    });
    if !last {
        let recvs = std::mem::take(&mut s.ops);
        for op in recvs {
            s.push(op);
            if let Op::Recv { dst, .. } = op {
                s.push(Op::Send {
                    peer: next,
                    src: dst,
                });
            }
        }
    }
    s
}

pub(super) fn reduce(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let b = c.bytes();
    let (pos, _, _) = place(c);
    let n = c.nranks;
    // Data flows from the end of the path towards the root.
    let toward_root = (c.rank + n - 1) % n;
    let from_tail = (c.rank + 1) % n;
    let tail = pos == n - 1;
    let own = c.own(0, b);
    let out = Region::new(Buf::Output, 0, b);
    if n == 1 {
        s.push(Op::Copy { src: own, dst: out });
    } else if tail {
        s.sliced(b, c.chunk, |o, l| Op::Send {
            peer: toward_root,
            src: own.sub(o, l),
        });
    } else {
        // Non-roots keep partial sums in scratch: their buffers are input only.
        let dst = if pos == 0 {
            out
        } else {
            s.scratch = b;
            Region::new(Buf::Scratch, 0, b)
        };
        let mut o = 0;
        while o < b {
            let l = c.chunk.min(b - o);
            s.push(Op::RecvReduce {
                peer: from_tail,
                acc: own.sub(o, l),
                dst: dst.sub(o, l),
            });
            if pos != 0 {
                s.push(Op::Send {
                    peer: toward_root,
                    src: dst.sub(o, l),
                });
            }
            o += l;
        }
    }
    if pos == 0 && c.op == ReduceOp::Avg {
        s.push(Op::FinishAvg { dst: out });
    }
    s
}
