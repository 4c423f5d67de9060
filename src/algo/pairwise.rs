//! Pairwise all-to-all: in step k (1..n) rank r sends block r+k to rank r+k and
//! receives block r-k from rank r-k; all steps are posted at once and the executor
//! runs them concurrently. In place, received blocks land in scratch and are copied
//! over a block only after that block has been sent.

use super::{Buf, Call, Op, Region, Schedule};

pub(super) fn all_to_all(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, r, b) = (c.nranks, c.rank, c.bytes());
    let out = |blk: usize| Region::new(Buf::Output, blk * b, b);
    if !c.in_place {
        s.push(Op::Copy {
            src: c.own(r * b, b),
            dst: out(r),
        });
    } else {
        s.scratch = n * b;
    }
    for k in 1..n {
        let to = (r + k) % n;
        let from = (r + n - k) % n;
        let src = c.own(to * b, b);
        s.sliced(b, c.chunk, |o, l| Op::Send {
            peer: to,
            src: src.sub(o, l),
        });
        let dst = if c.in_place {
            Region::new(Buf::Scratch, from * b, b)
        } else {
            out(from)
        };
        s.sliced(b, c.chunk, |o, l| Op::Recv {
            peer: from,
            dst: dst.sub(o, l),
        });
    }
    if c.in_place {
        for k in 1..n {
            let from = (r + n - k) % n;
            s.push(Op::Copy {
                src: Region::new(Buf::Scratch, from * b, b),
                dst: out(from),
            });
        }
    }
    s
}
