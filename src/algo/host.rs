//! Host algorithms: cross-memory attach, and the start of an all-gather over the
//! host's board.
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

/// The schedule part of an all-gather over the host's board (`transport::board`): one
/// byte each way with every peer, so the call headers travel and are checked (a peer
/// that called something else is a mismatch, not a wrong read of the board) before
/// the communicator copies the blocks through the board. Scratch: [0, 1) the byte
/// sent, [1 + p] the one from peer p.
pub(super) fn publish_start(c: &Call) -> Schedule {
    let mut s = Schedule::default();
    let n = c.nranks;
    if n == 1 || c.bytes() == 0 {
        return s;
    }
    s.scratch = 1 + n;
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
    s
}
