//! Host algorithms: cross-memory attach, and all-gathers over the host's board.
//!
//! Cross-memory attach: when every peer is on this host and
//! may read this process's memory (process_vm_readv), each rank publishes where its
//! data lives and every peer copies it straight into its own output: one copy per
//! byte instead of two through a shared ring, and no intermediate hops.
//!
//! all_gather: rank r sends each peer a 16-byte description (address, length) of its
//! block, reads every peer's block into output block p, then tells each peer "done"
//! with one byte; it returns only when every peer has said "done", so no peer reads
//! its buffer after the call returned. Bytes copied per rank: (n-1)/n x total, once.

use super::{Buf, Call, Op, Region, Schedule};

/// Scratch layout: [0, 16) this rank's description, [16(p+1), 16(p+2)) peer p's,
/// then one "done" byte per peer.
pub(super) fn all_gather(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, r, b) = (c.nranks, c.rank, c.bytes());
    let out = |p: usize| Region::new(Buf::Output, p * b, b);
    let own = super::own_block_in_place(c, &mut s);
    if n == 1 || b == 0 {
        return s;
    }
    let mine = Region::new(Buf::Scratch, 0, 16);
    let desc = |p: usize| Region::new(Buf::Scratch, 16 * (p + 1), 16);
    let done = |p: usize| Region::new(Buf::Scratch, 16 * (n + 1) + p, 1);
    s.scratch = 16 * (n + 1) + n;
    s.push(Op::Describe {
        src: own,
        dst: mine,
    });
    for k in 1..n {
        let p = (r + k) % n;
        s.push(Op::Send { peer: p, src: mine });
        s.push(Op::Recv {
            peer: p,
            dst: desc(p),
        });
    }
    for k in 1..n {
        let p = (r + k) % n;
        s.push(Op::PeerRead {
            peer: p,
            desc: desc(p),
            offset: 0,
            dst: out(p),
        });
        // Reading the first byte just written makes this send wait for the read.
        s.push(Op::Send {
            peer: p,
            src: out(p).sub(0, 1),
        });
    }
    for k in 1..n {
        let p = (r + k) % n;
        s.push(Op::Recv {
            peer: p,
            dst: done(p),
        });
    }
    s
}

/// An all-gather over the host's board (`transport::board`): one byte each way with
/// every peer, so the call headers travel and are checked (a peer that called
/// something else is a mismatch, not a wrong read of the board: the board ops wait
/// for the headers), then this rank publishes its block once and copies every
/// peer's out of the board. Scratch: [0, 1) the byte sent, [1 + p] the one from
/// peer p. Bytes copied per rank: its block in, (n-1)/n x total out.
pub(super) fn publish_all_gather(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let (n, b) = (c.nranks, c.bytes());
    if n == 1 || b == 0 {
        super::own_block_in_place(c, &mut s);
        return s;
    }
    byte_exchange(c, &mut s);
    let out = |p: usize| Region::new(Buf::Output, p * b, b);
    let own = c.own(0, b);
    let own = if c.in_place { out(c.rank) } else { own };
    s.push(Op::BoardWrite { src: own });
    if !c.in_place {
        // In chunks, so the executor interleaves the copy with the board's steps.
        s.sliced(b, c.chunk, |o, l| Op::Copy {
            src: own.sub(o, l),
            dst: out(c.rank).sub(o, l),
        });
    }
    for k in 1..n {
        let p = (c.rank + k) % n;
        s.push(Op::BoardRead {
            peer: p,
            dst: out(p),
        });
    }
    s
}

/// An all-reduce that ends on the host's board: the ring's reduce-scatter leaves each
/// rank owning one reduced block ([`super::owned_blocks`]), which it publishes on the
/// board and every other rank copies out, instead of the ring's all-gather half.
pub(super) fn publish_all_reduce(c: &Call) -> Schedule {
    let mut s = super::ring::all_reduce_scattered(c);
    let n = c.nranks;
    if n == 1 {
        return s;
    }
    let blocks = super::owned_blocks(c.count, n, c.esize());
    let block = |p: usize| Region::new(Buf::Output, blocks[p].0, blocks[p].1);
    s.push(Op::BoardWrite { src: block(c.rank) });
    for k in 1..n {
        let p = (c.rank + k) % n;
        s.push(Op::BoardRead {
            peer: p,
            dst: block(p),
        });
    }
    s
}

/// One byte each way with every peer (scratch [0, 1) out, [1 + p] from peer p), so
/// that call headers go between every pair of ranks on the board.
fn byte_exchange(c: &Call, s: &mut Schedule) {
    let n = c.nranks;
    s.scratch = s.scratch.max(1 + n);
    for k in 1..n {
        let p = (c.rank + k) % n;
        s.push(Op::Send {
            peer: p,
            src: Region::new(Buf::Scratch, 0, 1),
        });
        s.push(Op::Recv {
            peer: p,
            dst: Region::new(Buf::Scratch, 1 + p, 1),
        });
    }
}
