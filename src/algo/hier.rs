//! Hierarchical algorithms: a phase inside each host (shared memory), a phase across
//! hosts, and a finishing phase inside each host, so the slow links between hosts
//! carry each byte as few times as possible.
//!
//! Channels: with `H` hosts of `L_h` ranks and `C = min L_h`, local rank `i` of each
//! host (for `i < C`) owns channel `i`. Data is split among the channels; channel `c`
//! crosses hosts on its own ring of the `H` owners of `c`, so every local rank up to
//! `C` drives its share of the host's network link. Uneven hosts work: ranks with a
//! local index of `C` or more hand their data to owners and get results back.
//!
//! - all_reduce: the buffer is cut into C blocks; every rank sends block c to the
//!   owner of c on its host, which reduces it (intra reduce-scatter); owners of c
//!   all-reduce block c on a ring across hosts; owners send the result back inside
//!   the host. Bytes across hosts per host: 2(H-1)/H x S, against 2(n-1)/n x S per
//!   boundary for a flat ring whose hosts are contiguous.
//! - all_gather: inside each host every rank sends its block to its local peers;
//!   the owners of c circulate the blocks of channel c (local index mod C) of every
//!   host on their ring; owners forward the foreign blocks to their local peers.
//! - reduce_scatter: the mirror image: intra reduce of each destination block to the
//!   owner of its channel, ring reduce-scatter of the channel's blocks across hosts,
//!   owners send each finished block to its rank.

use super::{block, Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

/// The host layout seen from one rank.
struct Layout<'a> {
    groups: &'a [Vec<usize>],
    /// This rank's host.
    h: usize,
    /// Channels: the smallest host's rank count.
    nch: usize,
}

impl<'a> Layout<'a> {
    fn new(c: &Call, groups: &'a [Vec<usize>]) -> Layout<'a> {
        let h = groups
            .iter()
            .position(|g| g.contains(&c.rank))
            .expect("plan checked the groups");
        let nch = groups.iter().map(Vec::len).min().unwrap_or(1).max(1);
        Layout { groups, h, nch }
    }

    fn hosts(&self) -> usize {
        self.groups.len()
    }

    fn locals(&self) -> &[usize] {
        &self.groups[self.h]
    }

    /// Owner of channel `ch` on host `g`.
    fn owner(&self, g: usize, ch: usize) -> usize {
        self.groups[g][ch]
    }

    /// Channel of rank `q` (its local index mod C).
    fn chan(&self, q: usize) -> usize {
        self.groups
            .iter()
            .find_map(|g| g.iter().position(|&x| x == q))
            .unwrap_or(0)
            % self.nch
    }

    /// The channel this rank owns, if any.
    fn my_channel(&self, rank: usize) -> Option<usize> {
        self.locals()
            .iter()
            .position(|&x| x == rank)
            .filter(|&i| i < self.nch)
    }

    /// Ranks of host `g` whose blocks travel on channel `ch`.
    fn pieces(&self, g: usize, ch: usize) -> impl Iterator<Item = usize> + '_ {
        self.groups[g]
            .iter()
            .enumerate()
            .filter(move |(i, _)| i % self.nch == ch)
            .map(|(_, &q)| q)
    }
}

/// Ring all-reduce of `region` (already holding this rank's contribution) among
/// `members`, this rank at `pos`; `count` elements. `Avg` is divided by all ranks on
/// each finished piece.
fn ring_all_reduce(
    s: &mut Schedule,
    c: &Call,
    members: &[usize],
    pos: usize,
    region: Region,
    count: usize,
) {
    let m = members.len();
    if m == 1 {
        if c.op == ReduceOp::Avg {
            s.push(Op::FinishAvg { dst: region });
        }
        return;
    }
    let e = c.esize();
    let (next, prev) = (members[(pos + 1) % m], members[(pos + m - 1) % m]);
    let sub = |b: usize| {
        let (a, z) = block(count, m, b % m, e);
        region.sub(a, z - a)
    };
    for k in 0..m - 1 {
        let src = sub(pos + m - k);
        s.sliced(src.len, c.chunk, |o, l| Op::Send {
            peer: next,
            src: src.sub(o, l),
        });
        let dst = sub(pos + 2 * m - k - 1);
        s.sliced(dst.len, c.chunk, |o, l| Op::RecvReduce {
            peer: prev,
            acc: dst.sub(o, l),
            dst: dst.sub(o, l),
        });
    }
    let owned = (pos + 1) % m;
    if c.op == ReduceOp::Avg {
        s.push(Op::FinishAvg { dst: sub(owned) });
    }
    for k in 0..m - 1 {
        let src = sub(owned + m - k);
        s.sliced(src.len, c.chunk, |o, l| Op::Send {
            peer: next,
            src: src.sub(o, l),
        });
        let dst = sub(pos + m - k);
        s.sliced(dst.len, c.chunk, |o, l| Op::Recv {
            peer: prev,
            dst: dst.sub(o, l),
        });
    }
}

pub(super) fn all_reduce(c: &Call, groups: &[Vec<usize>]) -> Schedule {
    let mut s = Schedule::default();
    let lay = Layout::new(c, groups);
    let (e, r) = (c.esize(), c.rank);
    let blk = |ch: usize| block(c.count, lay.nch, ch, e);
    let out = |(a, z): (usize, usize)| Region::new(Buf::Output, a, z - a);
    let own = |(a, z): (usize, usize)| c.own(a, z - a);
    // Intra-host reduce of block ch onto its owner.
    for ch in 0..lay.nch {
        let o = lay.owner(lay.h, ch);
        let b = blk(ch);
        if o == r {
            let mut first = true;
            for &p in lay.locals().iter().filter(|&&p| p != r) {
                let (acc, dst) = (if first { own(b) } else { out(b) }, out(b));
                s.sliced(dst.len, c.chunk, |x, l| Op::RecvReduce {
                    peer: p,
                    acc: acc.sub(x, l),
                    dst: dst.sub(x, l),
                });
                first = false;
            }
            if first {
                s.push(Op::Copy {
                    src: own(b),
                    dst: out(b),
                });
            }
        } else {
            let src = own(b);
            s.sliced(src.len, c.chunk, |x, l| Op::Send {
                peer: o,
                src: src.sub(x, l),
            });
        }
    }
    // Across hosts: the owners of a channel all-reduce its block on a ring.
    if let Some(ch) = lay.my_channel(r) {
        let members: Vec<usize> = (0..lay.hosts()).map(|g| lay.owner(g, ch)).collect();
        let (a, z) = blk(ch);
        ring_all_reduce(&mut s, c, &members, lay.h, out((a, z)), (z - a) / e);
    }
    // Inside the host: owners hand the finished blocks to their local peers.
    for ch in 0..lay.nch {
        let o = lay.owner(lay.h, ch);
        let b = out(blk(ch));
        if o == r {
            for &p in lay.locals().iter().filter(|&&p| p != r) {
                s.sliced(b.len, c.chunk, |x, l| Op::Send {
                    peer: p,
                    src: b.sub(x, l),
                });
            }
        } else {
            s.sliced(b.len, c.chunk, |x, l| Op::Recv {
                peer: o,
                dst: b.sub(x, l),
            });
        }
    }
    s
}

pub(super) fn all_gather(c: &Call, groups: &[Vec<usize>]) -> Schedule {
    let mut s = Schedule::default();
    let lay = Layout::new(c, groups);
    let (r, b) = (c.rank, c.bytes());
    let out = |q: usize| Region::new(Buf::Output, q * b, b);
    let own = super::own_block_in_place(c, &mut s);
    // Inside the host: every rank's block to every local peer.
    for &p in lay.locals().iter().filter(|&&p| p != r) {
        s.sliced(b, c.chunk, |x, l| Op::Send {
            peer: p,
            src: own.sub(x, l),
        });
    }
    for &p in lay.locals().iter().filter(|&&p| p != r) {
        s.sliced(b, c.chunk, |x, l| Op::Recv {
            peer: p,
            dst: out(p).sub(x, l),
        });
    }
    let hn = lay.hosts();
    if hn == 1 {
        return s;
    }
    // Across hosts: a ring all-gather of each host's channel blocks among the owners.
    if let Some(ch) = lay.my_channel(r) {
        let (next, prev) = (
            lay.owner((lay.h + 1) % hn, ch),
            lay.owner((lay.h + hn - 1) % hn, ch),
        );
        for k in 0..hn - 1 {
            let send_host = (lay.h + hn - k) % hn;
            for q in lay.pieces(send_host, ch) {
                s.sliced(b, c.chunk, |x, l| Op::Send {
                    peer: next,
                    src: out(q).sub(x, l),
                });
            }
            let recv_host = (lay.h + 2 * hn - k - 1) % hn;
            for q in lay.pieces(recv_host, ch) {
                s.sliced(b, c.chunk, |x, l| Op::Recv {
                    peer: prev,
                    dst: out(q).sub(x, l),
                });
            }
        }
    }
    // Inside the host: owners forward the foreign blocks of their channel.
    for ch in 0..lay.nch {
        let o = lay.owner(lay.h, ch);
        let foreign: Vec<usize> = (0..hn)
            .filter(|&g| g != lay.h)
            .flat_map(|g| lay.pieces(g, ch).collect::<Vec<_>>())
            .collect();
        if o == r {
            for &p in lay.locals().iter().filter(|&&p| p != r) {
                for &q in &foreign {
                    s.sliced(b, c.chunk, |x, l| Op::Send {
                        peer: p,
                        src: out(q).sub(x, l),
                    });
                }
            }
        } else {
            for &q in &foreign {
                s.sliced(b, c.chunk, |x, l| Op::Recv {
                    peer: o,
                    dst: out(q).sub(x, l),
                });
            }
        }
    }
    s
}

pub(super) fn reduce_scatter(c: &Call, groups: &[Vec<usize>]) -> Schedule {
    let mut s = Schedule::default();
    let lay = Layout::new(c, groups);
    let (n, r, b) = (c.nranks, c.rank, c.bytes());
    let partial_buf = if c.in_place {
        Buf::Output
    } else {
        s.scratch = n * b;
        Buf::Scratch
    };
    let partial = |q: usize| Region::new(partial_buf, q * b, b);
    let own = |q: usize| c.own(q * b, b);
    let final_dst = if c.in_place {
        Region::new(Buf::Output, r * b, b)
    } else {
        Region::new(Buf::Output, 0, b)
    };
    // Inside the host: block q is reduced onto this host's owner of q's channel.
    for q in 0..n {
        let o = lay.owner(lay.h, lay.chan(q));
        if o == r {
            let mut first = true;
            for &p in lay.locals().iter().filter(|&&p| p != r) {
                let acc = if first { own(q) } else { partial(q) };
                s.sliced(b, c.chunk, |x, l| Op::RecvReduce {
                    peer: p,
                    acc: acc.sub(x, l),
                    dst: partial(q).sub(x, l),
                });
                first = false;
            }
            if first {
                s.push(Op::Copy {
                    src: own(q),
                    dst: partial(q),
                });
            }
        } else {
            s.sliced(b, c.chunk, |x, l| Op::Send {
                peer: o,
                src: own(q).sub(x, l),
            });
        }
    }
    // Across hosts: ring reduce-scatter of the channel's blocks, by host; after H-1
    // steps the owner holds its own host's blocks finished.
    let hn = lay.hosts();
    if let (Some(ch), true) = (lay.my_channel(r), hn > 1) {
        let (next, prev) = (
            lay.owner((lay.h + 1) % hn, ch),
            lay.owner((lay.h + hn - 1) % hn, ch),
        );
        for k in 0..hn - 1 {
            let send_host = (lay.h + 2 * hn - k - 1) % hn;
            for q in lay.pieces(send_host, ch) {
                s.sliced(b, c.chunk, |x, l| Op::Send {
                    peer: next,
                    src: partial(q).sub(x, l),
                });
            }
            let recv_host = (lay.h + 2 * hn - k - 2) % hn;
            for q in lay.pieces(recv_host, ch) {
                s.sliced(b, c.chunk, |x, l| Op::RecvReduce {
                    peer: prev,
                    acc: partial(q).sub(x, l),
                    dst: partial(q).sub(x, l),
                });
            }
        }
    }
    // Inside the host: each finished block goes to its rank.
    if let Some(ch) = lay.my_channel(r) {
        for q in lay.pieces(lay.h, ch) {
            if q == r {
                s.push(Op::Copy {
                    src: partial(q),
                    dst: final_dst,
                });
            } else {
                s.sliced(b, c.chunk, |x, l| Op::Send {
                    peer: q,
                    src: partial(q).sub(x, l),
                });
            }
        }
    }
    let o = lay.owner(lay.h, lay.chan(r));
    if o != r {
        s.sliced(b, c.chunk, |x, l| Op::Recv {
            peer: o,
            dst: final_dst.sub(x, l),
        });
    }
    if c.op == ReduceOp::Avg {
        s.push(Op::FinishAvg { dst: final_dst });
    }
    s
}
