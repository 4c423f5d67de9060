//! Tree algorithms: NCCL's double binary tree for all_reduce, and a pipelined binary
//! tree for broadcast and reduce. Latency grows with the tree's depth, O(log n),
//! instead of the ring's O(n) steps, which is what small messages need.
//!
//! The binary tree is NCCL's (`ncclGetBtree`): node v's parent is found by moving
//! its lowest set bit one place up (`(v ^ bit) | (bit << 1)`), or by clearing it
//! when that leaves the range; node 0 is the root. The second tree of the double
//! tree is the first mirrored (`n - 1 - v`, n even) or shifted by one (n odd), so
//! most ranks that are leaves in one tree are inner nodes in the other. Each tree
//! carries half of the data: reduced up towards its root chunk by chunk, then
//! broadcast back down, every chunk moving on as soon as it has arrived.

use super::{block, Buf, Call, Op, Region, Schedule};
use crate::reduce::ReduceOp;

/// Parent of virtual node `v` in NCCL's binary tree over `n` nodes (`None` for 0).
pub(crate) fn btree_parent(n: usize, v: usize) -> Option<usize> {
    if v == 0 || v >= n {
        return None;
    }
    let bit = v & v.wrapping_neg();
    let up = (v ^ bit) | (bit << 1);
    Some(if up >= n { v ^ bit } else { up })
}

/// Children of virtual node `v`, ascending. A child differs from `v` by one power
/// of two, so only those candidates are checked.
pub(crate) fn btree_children(n: usize, v: usize) -> Vec<usize> {
    let mut kids = Vec::new();
    let mut d = 1usize;
    while d < n {
        for c in [v.checked_sub(d), v.checked_add(d)].into_iter().flatten() {
            if c < n && btree_parent(n, c) == Some(v) && !kids.contains(&c) {
                kids.push(c);
            }
        }
        d <<= 1;
    }
    kids.sort_unstable();
    kids
}

/// A tree over ranks: rank `r` is virtual node `to_v(r)`.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    /// Virtual node = (rank - root) mod n.
    Rooted(usize),
    /// Virtual node = n - 1 - rank.
    Mirror,
    /// Virtual node = (rank - 1) mod n.
    Shift,
}

impl Shape {
    fn to_v(self, n: usize, r: usize) -> usize {
        match self {
            Shape::Rooted(root) => (r + n - root) % n,
            Shape::Mirror => n - 1 - r,
            Shape::Shift => (r + n - 1) % n,
        }
    }

    fn to_rank(self, n: usize, v: usize) -> usize {
        match self {
            Shape::Rooted(root) => (v + root) % n,
            Shape::Mirror => n - 1 - v,
            Shape::Shift => (v + 1) % n,
        }
    }

    /// (parent, children) of rank `r`.
    pub(crate) fn links(self, n: usize, r: usize) -> (Option<usize>, Vec<usize>) {
        let v = self.to_v(n, r);
        let parent = btree_parent(n, v).map(|p| self.to_rank(n, p));
        let kids = btree_children(n, v)
            .into_iter()
            .map(|c| self.to_rank(n, c))
            .collect();
        (parent, kids)
    }
}

/// The two trees of the double binary tree on `n` ranks.
pub(crate) fn double_tree(n: usize) -> [Shape; 2] {
    [
        Shape::Rooted(0),
        if n % 2 == 0 {
            Shape::Mirror
        } else {
            Shape::Shift
        },
    ]
}

/// Pieces `(offset, len)` of `[start, end)` of at most `chunk` bytes.
fn pieces(start: usize, end: usize, chunk: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut o = start;
    while o < end {
        let l = chunk.min(end - o);
        v.push((o, l));
        o += l;
    }
    v
}

/// Up to this many bytes all_reduce uses only the first tree: the second would double
/// the messages without shortening the path, and small calls are message-bound.
pub(crate) const SINGLE_TREE_MAX_BYTES: usize = 4 << 10;

/// Double binary tree all_reduce: tree t reduces and broadcasts half t of the buffer
/// (the whole buffer goes up tree 0 at or below [`SINGLE_TREE_MAX_BYTES`]).
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
    let trees = double_tree(n).map(|t| t.links(n, c.rank));
    let parts = if bytes <= SINGLE_TREE_MAX_BYTES { 1 } else { 2 };
    let halves: Vec<Vec<(usize, usize)>> = (0..2)
        .map(|t| {
            if t >= parts {
                return Vec::new();
            }
            let (a, b) = block(c.count, parts, t, e);
            pieces(a, b, c.chunk)
        })
        .collect();
    let most = halves.iter().map(Vec::len).max().unwrap_or(0);
    // Chunk j of tree 0, then of tree 1: both trees advance together, and every
    // pair of ranks lists its messages in the same order.
    for j in 0..most {
        for (t, (parent, kids)) in trees.iter().enumerate() {
            let Some(&(o, l)) = halves[t].get(j) else {
                continue;
            };
            let (own, dst) = (c.own(o, l), out(o, l));
            for (i, &k) in kids.iter().enumerate() {
                s.push(Op::RecvReduce {
                    peer: k,
                    acc: if i == 0 { own } else { dst },
                    dst,
                });
            }
            let partial = if kids.is_empty() { own } else { dst };
            match parent {
                Some(p) => {
                    s.push(Op::Send {
                        peer: *p,
                        src: partial,
                    });
                    s.push(Op::Recv { peer: *p, dst });
                }
                None => {
                    if kids.is_empty() {
                        s.push(Op::Copy { src: own, dst });
                    }
                    if c.op == ReduceOp::Avg {
                        s.push(Op::FinishAvg { dst });
                    }
                }
            }
            for &k in kids {
                s.push(Op::Send { peer: k, src: dst });
            }
        }
    }
    s
}

/// Pipelined binary-tree broadcast: the root hands each chunk to rank 0 (unless it
/// is rank 0), whose tree forwards it: every rank receives it from its parent and
/// sends it to its (at most two) children at once. The tree does not depend on the
/// root, so ranks that disagree on the root still exchange call headers with their
/// tree neighbours and the mismatch is reported instead of a hang.
pub(super) fn broadcast(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, b, r, root) = (c.nranks, c.bytes(), c.rank, c.root);
    let out = Region::new(Buf::Output, 0, b);
    let own = c.own(0, b);
    if r == root && !c.in_place {
        s.push(Op::Copy { src: own, dst: out });
    }
    let (parent, kids) = Shape::Rooted(0).links(n, r);
    // Rank 0 forwards the root's data: its own, or what the root sent it.
    let src = if r == 0 && root == 0 { own } else { out };
    for (o, l) in pieces(0, b, c.chunk) {
        if root != 0 && r == root {
            s.push(Op::Send {
                peer: 0,
                src: own.sub(o, l),
            });
        }
        if root != 0 && r == 0 {
            s.push(Op::Recv {
                peer: root,
                dst: out.sub(o, l),
            });
        }
        if let Some(p) = parent {
            s.push(Op::Recv {
                peer: p,
                dst: out.sub(o, l),
            });
        }
        for &k in &kids {
            s.push(Op::Send {
                peer: k,
                src: src.sub(o, l),
            });
        }
    }
    s
}

/// Pipelined binary-tree reduce: each chunk is reduced up the tree rooted at rank 0
/// with the children's partial sums, and rank 0 hands the result to the root (unless
/// it is the root). Ranks other than the root keep partial sums in scratch: their
/// buffers are input only. As for broadcast, the tree does not depend on the root.
pub(super) fn reduce(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, b, r, root) = (c.nranks, c.bytes(), c.rank, c.root);
    let (parent, kids) = Shape::Rooted(0).links(n, r);
    let own = c.own(0, b);
    let out = Region::new(Buf::Output, 0, b);
    let dst = if parent.is_none() && root == 0 {
        out
    } else if kids.is_empty() {
        own
    } else {
        s.scratch = b;
        Region::new(Buf::Scratch, 0, b)
    };
    for (o, l) in pieces(0, b, c.chunk) {
        for (i, &k) in kids.iter().enumerate() {
            s.push(Op::RecvReduce {
                peer: k,
                acc: if i == 0 { own.sub(o, l) } else { dst.sub(o, l) },
                dst: dst.sub(o, l),
            });
        }
        match parent {
            Some(p) => s.push(Op::Send {
                peer: p,
                src: dst.sub(o, l),
            }),
            None if root == 0 => {
                if kids.is_empty() {
                    s.push(Op::Copy {
                        src: own.sub(o, l),
                        dst: out.sub(o, l),
                    });
                }
            }
            None => s.push(Op::Send {
                peer: root,
                src: dst.sub(o, l),
            }),
        }
        if root != 0 && r == root {
            s.push(Op::Recv {
                peer: 0,
                dst: out.sub(o, l),
            });
        }
        if r == root && c.op == ReduceOp::Avg {
            s.push(Op::FinishAvg { dst: out.sub(o, l) });
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape is a tree: parents and children agree, and every rank reaches the
    /// root; the depth is logarithmic.
    #[test]
    fn trees_are_trees() {
        for n in 1..=70 {
            let mut shapes = double_tree(n).to_vec();
            shapes.push(Shape::Rooted(n / 2));
            for shape in shapes {
                let mut roots = 0;
                for r in 0..n {
                    let (parent, kids) = shape.links(n, r);
                    assert!(kids.len() <= 2, "n {n} rank {r}: {kids:?}");
                    for &k in &kids {
                        assert_eq!(shape.links(n, k).0, Some(r), "n {n}");
                    }
                    match parent {
                        None => roots += 1,
                        Some(p) => assert!(shape.links(n, p).1.contains(&r), "n {n} r {r}"),
                    }
                    let (mut x, mut depth) = (r, 0);
                    while let Some(p) = shape.links(n, x).0 {
                        x = p;
                        depth += 1;
                        assert!(depth <= 2 * (usize::BITS - n.leading_zeros()) as usize);
                    }
                }
                assert_eq!(roots, 1, "n {n}");
            }
        }
    }

    /// In the double tree most inner nodes of one tree are leaves of the other.
    #[test]
    fn double_tree_spreads_inner_nodes() {
        for n in [4, 8, 9, 16, 33] {
            let [a, b] = double_tree(n);
            let both = (0..n)
                .filter(|&r| !a.links(n, r).1.is_empty() && !b.links(n, r).1.is_empty())
                .count();
            assert!(both <= 2, "n {n}: {both} ranks are inner in both trees");
        }
    }
}
