//! The host board: one shared region for all ranks of a host, in which each rank
//! publishes its bytes once and every other rank copies them out. An all-gather
//! through it writes each block once and reads it n-1 times; through the pairs'
//! rings (transport::shm) every hop writes and reads it again.
//!
//! The lowest rank of the host creates the region (a memfd, so nothing is left in
//! /dev/shm) and hands it out with its shared-memory link offers; every link of a rank
//! holds the same `Arc<Board>`. Layout: a header line (magic, ranks, ring bytes); per
//! rank i a control block: its ring's `tail` (written by i), its wait word (`bell` and
//! `sleeping`, i sleeps on it) and one `head` per reader j (written by j), each on its
//! own cache line; then one data ring of `cap` bytes per rank.
//!
//! Positions only grow, across calls, so a call needs no reset: writer i copies into
//! its ring at most `cap` bytes ahead of its slowest reader and publishes with a store
//! of `tail`; reader j copies out and frees with a store of `head[j]`. A rank with
//! nothing to do sets `sleeping`, reads its bell, looks once more and sleeps on the
//! bell (futex); whoever publishes or frees bytes then sees `sleeping` and rings.
//! Sequentially consistent stores and loads on both sides (Dekker's pattern): either
//! the sleeper's last look sees the new bytes or the other side sees it sleeping.

use crate::copy::copy_streaming;
use crate::error::{Error, Result};
use crate::sys::{self, SharedMap};
use crate::transport::Links;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const LINE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"MXBOARD1");
/// Most ranks of one host that share a board (control blocks grow as ranks squared).
pub(crate) const MAX_RANKS: usize = 64;
/// A quarter of a ring is copied per sweep: readers start on a block while it is being
/// written, and each wake-up moves enough to pay for itself (4 ranks on 2 cores at
/// 32 MiB: 64 KiB steps gave half the bandwidth of 2 MiB ones).
const STEPS_PER_RING: usize = 4;
/// Longest single sleep: the abort flag and the peers' liveness are looked at between.
const NAP: Duration = Duration::from_millis(10);
/// Calls moving at most this many bytes poll for `spin` before sleeping (as `exec`).
const SPIN_MAX_BYTES: usize = 1 << 20;

/// Bytes from the start of the region to rank `i`'s control block.
fn ctl_at(nranks: usize, i: usize) -> usize {
    LINE + i * (2 + nranks) * LINE
}

/// Bytes from the start of the region to rank `i`'s data ring.
fn ring_at(nranks: usize, cap: usize, i: usize) -> usize {
    ctl_at(nranks, nranks).next_multiple_of(4096) + i * cap
}

/// The region's length.
fn region_len(nranks: usize, cap: usize) -> usize {
    ring_at(nranks, cap, nranks)
}

/// One rank's view of its host's board.
pub struct Board {
    map: SharedMap,
    nranks: usize,
    cap: usize,
    me: usize,
}

// SAFETY: every access to the shared region goes through atomics or the ring protocol
// above; the mapping lives as long as the Board.
unsafe impl Send for Board {}
// SAFETY: as above; a Board is used by one thread at a time (its communicator's).
unsafe impl Sync for Board {}

impl Board {
    /// Creates a board for `nranks` ranks with `cap`-byte rings (a multiple of 64), as
    /// rank `me` of them; the descriptor is for the others ([`Board::open`]).
    pub(crate) fn create(
        nranks: usize,
        cap: usize,
        me: usize,
    ) -> std::io::Result<(Board, OwnedFd)> {
        let len = region_len(nranks, cap);
        let fd = sys::memfd("mixccl-board", len)?;
        let map = SharedMap::new(&fd, len)?;
        let b = Board {
            map,
            nranks,
            cap,
            me,
        };
        b.word(8).store(nranks as u64, Ordering::Relaxed);
        b.word(16).store(cap as u64, Ordering::Relaxed);
        b.word(0).store(MAGIC, Ordering::Release);
        Ok((b, fd))
    }

    /// Maps a board created by another rank of the host, as rank `me` of `nranks`;
    /// refuses one whose header or size does not fit.
    pub(crate) fn open(
        fd: &OwnedFd,
        nranks: usize,
        me: usize,
    ) -> std::result::Result<Board, String> {
        let file = std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?);
        let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
        if len < LINE {
            return Err(format!("board of {len} bytes"));
        }
        let map = SharedMap::new(fd, len).map_err(|e| format!("mapping the board: {e}"))?;
        let mut b = Board {
            map,
            nranks,
            cap: 0,
            me,
        };
        let (magic, n, cap) = (
            b.word(0).load(Ordering::Acquire),
            b.word(8).load(Ordering::Relaxed) as usize,
            b.word(16).load(Ordering::Relaxed) as usize,
        );
        if magic != MAGIC || n != nranks || cap == 0 || cap % 64 != 0 || cap > 1 << 30 {
            return Err(format!(
                "bad board header (ranks {n}, expected {nranks}; ring {cap} bytes)"
            ));
        }
        if len != region_len(nranks, cap) {
            return Err(format!("board of {len} bytes for {n} rings of {cap}"));
        }
        b.cap = cap;
        Ok(b)
    }

    /// Bytes of each rank's ring.
    pub(crate) fn ring_bytes(&self) -> usize {
        self.cap
    }

    /// The 8-byte word at `off` (a multiple of 8 inside the mapping).
    fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off % 8 == 0 && off + 8 <= region_len(self.nranks, self.cap.max(64)));
        // SAFETY: `off` is 8-aligned and inside the live mapping (mmap is page-aligned);
        // the word is only ever accessed atomically.
        unsafe { &*(self.map.ptr().add(off) as *const AtomicU64) }
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: as in `word`, 4-aligned.
        unsafe { &*(self.map.ptr().add(off) as *const AtomicU32) }
    }

    fn tail(&self, i: usize) -> &AtomicU64 {
        self.word(ctl_at(self.nranks, i))
    }

    fn bell(&self, i: usize) -> &AtomicU32 {
        self.word32(ctl_at(self.nranks, i) + LINE)
    }

    fn sleeping(&self, i: usize) -> &AtomicU32 {
        self.word32(ctl_at(self.nranks, i) + LINE + 4)
    }

    /// Reader `j`'s position in rank `i`'s ring.
    fn head(&self, i: usize, j: usize) -> &AtomicU64 {
        self.word(ctl_at(self.nranks, i) + (2 + j) * LINE)
    }

    /// Copies `src` into this rank's ring at stream position `pos`.
    fn copy_in(&self, pos: u64, src: &[u8]) {
        let at = (pos % self.cap as u64) as usize;
        let first = src.len().min(self.cap - at);
        // SAFETY: [at, at+first) and [0, len-first) lie in this rank's ring; the
        // protocol keeps readers off bytes between their head and the tail, which is
        // where these are (the caller checked the free space).
        unsafe {
            let ring = self.map.ptr().add(ring_at(self.nranks, self.cap, self.me));
            std::ptr::copy_nonoverlapping(src.as_ptr(), ring.add(at), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), ring, src.len() - first);
        }
    }

    /// Copies rank `i`'s ring at stream position `pos` into `dst`.
    fn copy_out(&self, i: usize, pos: u64, dst: &mut [u8]) {
        let at = (pos % self.cap as u64) as usize;
        let first = dst.len().min(self.cap - at);
        // SAFETY: the bytes lie in rank i's ring, published (below its tail) and not
        // yet freed by this reader, so the writer does not touch them now.
        unsafe {
            let ring = self.map.ptr().add(ring_at(self.nranks, self.cap, i));
            let (a, b) = dst.split_at_mut(first);
            copy_streaming(a, std::slice::from_raw_parts(ring.add(at), first));
            copy_streaming(b, std::slice::from_raw_parts(ring, b.len()));
        }
    }

    /// Rings rank `i` if it sleeps.
    fn wake(&self, i: usize) {
        if self.sleeping(i).load(Ordering::SeqCst) != 0 {
            self.bell(i).fetch_add(1, Ordering::SeqCst);
            sys::futex_wake(self.bell(i));
        }
    }

    /// Bytes copied per ring per sweep.
    fn step(&self) -> usize {
        (self.cap / STEPS_PER_RING).max(64)
    }

    /// Free bytes in this rank's ring for a writer at `pos`.
    fn free(&self, pos: u64) -> usize {
        let slowest = (0..self.nranks)
            .filter(|&j| j != self.me)
            .map(|j| self.head(self.me, j).load(Ordering::SeqCst))
            .min()
            .unwrap_or(pos);
        self.cap - (pos - slowest) as usize
    }

    /// All-gather over the board (tests; the communicator calls [`Board::gather`]):
    /// `out` holds one block per rank; this rank's block is
    /// `own` (out of place) or already in `out` (in place, `own` is `None`). Every rank
    /// of the board must make the same call (the caller's headers checked that).
    #[cfg(test)]
    fn all_gather(&self, own: Option<&[u8]>, out: &mut [u8], w: &mut Wait<'_>) -> Result<()> {
        let n = self.nranks;
        if out.is_empty() {
            return Ok(());
        }
        let b = out.len() / n;
        self.gather(own, out.chunks_exact_mut(b).collect(), w)
    }

    /// Gathers rank p's block into `blocks[p]` on every rank (blocks may differ in
    /// length, equally on every rank); this rank's block is `own`, copied into
    /// `blocks[me]` (out of place), or already there (`own` is `None`).
    pub(crate) fn gather(
        &self,
        own: Option<&[u8]>,
        mut blocks: Vec<&mut [u8]>,
        w: &mut Wait<'_>,
    ) -> Result<()> {
        let (n, me) = (self.nranks, self.me);
        debug_assert_eq!(blocks.len(), n);
        let own_dst = std::mem::take(&mut blocks[me]);
        let (src, copy_to): (&[u8], &mut [u8]) = match own {
            Some(s) => (s, own_dst),
            None => (own_dst, &mut []),
        };
        let len: Vec<usize> = (0..n)
            .map(|p| if p == me { src.len() } else { blocks[p].len() })
            .collect();
        let b = len[me];
        let t0 = self.tail(me).load(Ordering::Relaxed);
        let start: Vec<u64> = (0..n)
            .map(|p| self.head(p, me).load(Ordering::Relaxed))
            .collect();
        let (mut written, mut copied) = (0usize, 0usize);
        let mut got = vec![0usize; n];
        got[me] = b;
        let spin = if len.iter().sum::<usize>() <= SPIN_MAX_BYTES {
            w.spin
        } else {
            Duration::ZERO
        };
        let mut idle = Idle::new();
        loop {
            let mut moved = false;
            if written < b {
                let pos = t0 + written as u64;
                let k = self.free(pos).min(b - written).min(self.step());
                if k > 0 {
                    self.copy_in(pos, &src[written..written + k]);
                    self.tail(me).store(pos + k as u64, Ordering::SeqCst);
                    written += k;
                    moved = true;
                    (0..n).filter(|&j| j != me).for_each(|j| self.wake(j));
                }
            }
            if copied < copy_to.len() {
                let k = (copy_to.len() - copied).min(self.step());
                copy_streaming(&mut copy_to[copied..copied + k], &src[copied..copied + k]);
                copied += k;
                moved = true;
            }
            for step in 1..n {
                let p = (me + step) % n;
                if got[p] == len[p] {
                    continue;
                }
                let pos = start[p] + got[p] as u64;
                let avail = (self.tail(p).load(Ordering::SeqCst) - pos) as usize;
                let k = avail.min(len[p] - got[p]).min(self.step());
                if k > 0 {
                    self.copy_out(p, pos, &mut blocks[p][got[p]..got[p] + k]);
                    self.head(p, me).store(pos + k as u64, Ordering::SeqCst);
                    got[p] += k;
                    moved = true;
                    self.wake(p);
                }
            }
            if written == b && copied == copy_to.len() && got == len {
                return Ok(());
            }
            if moved {
                idle.reset();
                continue;
            }
            // Whom this rank waits for: writers whose bytes it still needs, and (when
            // its ring is full) readers that have not freed it.
            let pos = t0 + written as u64;
            let waiting = |p: usize| {
                p != me
                    && (got[p] < len[p]
                        || (written < b
                            && self.head(me, p).load(Ordering::SeqCst) + self.cap as u64 <= pos))
            };
            let ready = || {
                (written < b && self.free(pos) > 0)
                    || (0..n).any(|p| {
                        got[p] < len[p]
                            && self.tail(p).load(Ordering::SeqCst) > start[p] + got[p] as u64
                    })
            };
            idle.wait(self, spin, w, &waiting, &ready)?;
        }
    }
}

/// Splits `out` into the disjoint blocks `ranges[p] = (offset, length)`, by p.
pub(crate) fn split_blocks<'a>(out: &'a mut [u8], ranges: &[(usize, usize)]) -> Vec<&'a mut [u8]> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&p| ranges[p].0);
    let mut blocks: Vec<&mut [u8]> = ranges.iter().map(|_| Default::default()).collect();
    let (mut rest, mut at) = (out, 0);
    for p in order {
        let (off, len) = ranges[p];
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(off - at);
        let (blk, tail) = tail.split_at_mut(len);
        blocks[p] = blk;
        (rest, at) = (tail, off + len);
    }
    blocks
}

/// What a rank needs to wait inside a board call: the no-progress timeout, the abort
/// flag, the links whose control channels report a peer's error or death, and the
/// call's name for errors.
pub(crate) struct Wait<'a> {
    pub timeout: Duration,
    pub spin: Duration,
    pub abort: &'a AtomicBool,
    pub label: &'a dyn std::fmt::Display,
    pub links: &'a mut Links,
}

/// Time without progress, and when the peers were last looked at.
struct Idle {
    since: Instant,
    checked: Instant,
}

impl Idle {
    fn new() -> Idle {
        let now = Instant::now();
        Idle {
            since: now,
            checked: now,
        }
    }

    fn reset(&mut self) {
        self.since = Instant::now();
    }

    /// One wait of a rank that could not move: yields while within `spin`, else sleeps
    /// on its bell for at most [`NAP`]; fails on abort, on a peer's error report or
    /// death, or after `timeout` without progress.
    fn wait(
        &mut self,
        board: &Board,
        spin: Duration,
        w: &mut Wait<'_>,
        waiting: &dyn Fn(usize) -> bool,
        ready: &dyn Fn() -> bool,
    ) -> Result<()> {
        let idle = self.since.elapsed();
        if idle < spin {
            // Yield rather than spin: every rank waits on every other, and on a host
            // with more ranks than cores the one it waits for may need this core.
            // SAFETY: sched_yield takes no arguments and cannot fail in a way that matters.
            unsafe { libc::sched_yield() };
            return Ok(());
        }
        if w.abort.load(Ordering::SeqCst) {
            return Err(Error::Aborted);
        }
        if self.checked.elapsed() >= NAP {
            self.checked = Instant::now();
            crate::exec::control_error(w.links, waiting)?;
        }
        if idle >= w.timeout {
            return Err(Error::Timeout {
                op: w.label.to_string(),
                waiting_for: (0..board.nranks).filter(|&p| waiting(p)).collect(),
                after: idle,
            });
        }
        let me = board.me;
        board.sleeping(me).store(1, Ordering::SeqCst);
        let seen = board.bell(me).load(Ordering::SeqCst);
        if !ready() {
            sys::futex_wait(board.bell(me), seen, NAP.min(w.timeout - idle));
        }
        board.sleeping(me).store(0, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// `n` boards over one region, as ranks 0..n of one host would map it.
    fn boards(n: usize, cap: usize) -> Vec<Board> {
        let (first, fd) = Board::create(n, cap, 0).expect("create a board");
        let mut v = vec![first];
        for me in 1..n {
            v.push(Board::open(&fd, n, me).expect("open the board"));
        }
        v
    }

    fn value(rank: usize, call: usize, i: usize) -> u8 {
        (rank * 31 + call * 7 + i * 13 + i / 251) as u8
    }

    /// Runs `calls` all-gathers of the given block sizes on `n` threads; checks every
    /// byte of every rank's output.
    fn gather_calls(n: usize, cap: usize, sizes: &[usize]) {
        let abort = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = boards(n, cap)
            .into_iter()
            .map(|board| {
                let (sizes, abort) = (sizes.to_vec(), abort.clone());
                std::thread::spawn(move || {
                    let me = board.me;
                    let mut links: Links = (0..n).map(|_| None).collect();
                    for (call, &b) in sizes.iter().enumerate() {
                        let in_place = call % 2 == 1;
                        let own: Vec<u8> = (0..b).map(|i| value(me, call, i)).collect();
                        let mut out = vec![0xeeu8; n * b];
                        if in_place {
                            out[me * b..(me + 1) * b].copy_from_slice(&own);
                        }
                        let mut w = Wait {
                            timeout: Duration::from_secs(20),
                            spin: Duration::from_micros(50),
                            abort: &abort,
                            label: &"test all-gather",
                            links: &mut links,
                        };
                        board
                            .all_gather((!in_place).then_some(&own[..]), &mut out, &mut w)
                            .expect("all-gather");
                        for (i, &v) in out.iter().enumerate() {
                            let (p, k) = (i / b, i % b);
                            assert_eq!(v, value(p, call, k), "rank {me} call {call} byte {i}");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("a rank failed");
        }
    }

    #[test]
    fn every_rank_gets_every_block_across_calls_and_ring_wraps() {
        // Blocks smaller than, equal to and several times the 4 KiB ring, odd sizes so
        // positions wrap mid-ring; in place and out of place alternate.
        for n in [2, 3, 4, 5, 8] {
            gather_calls(n, 4096, &[1, 7, 4096, 4099, 10007, 0, 65537, 3]);
        }
        gather_calls(4, 256 << 10, &[(1 << 20) + 3, 131, 1 << 20]);
    }

    #[test]
    fn a_missing_rank_is_a_timeout_naming_it() {
        let mut v = boards(3, 4096);
        let abort = AtomicBool::new(false);
        let mut links: Links = (0..3).map(|_| None).collect();
        // Ranks 0 and 2 would write; only rank 0 runs, alone: it waits for 1 and 2.
        let board = v.remove(0);
        let mut out = vec![0u8; 3 * 10];
        let mut w = Wait {
            timeout: Duration::from_millis(200),
            spin: Duration::ZERO,
            abort: &abort,
            label: &"allgather #1 on rank 0",
            links: &mut links,
        };
        let t = Instant::now();
        let err = board
            .all_gather(Some(&[1; 10]), &mut out, &mut w)
            .unwrap_err();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t.elapsed()
        );
        match err {
            Error::Timeout { waiting_for, .. } => assert_eq!(waiting_for, vec![1, 2]),
            e => panic!("wrong error: {e}"),
        }
    }

    #[test]
    fn abort_ends_a_wait() {
        let v = boards(2, 4096);
        let abort = Arc::new(AtomicBool::new(false));
        let flag = abort.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, Ordering::SeqCst);
        });
        let mut links: Links = (0..2).map(|_| None).collect();
        let mut out = vec![0u8; 2 * 5];
        let mut w = Wait {
            timeout: Duration::from_secs(60),
            spin: Duration::ZERO,
            abort: &abort,
            label: &"x",
            links: &mut links,
        };
        let start = Instant::now();
        let err = v[0]
            .all_gather(Some(&[1; 5]), &mut out, &mut w)
            .unwrap_err();
        assert!(matches!(err, Error::Aborted), "wrong error: {err}");
        assert!(start.elapsed() < Duration::from_secs(1));
        t.join().unwrap();
    }

    #[test]
    fn blocks_split_by_rank_in_any_order() {
        let mut out: Vec<u8> = (0..10).collect();
        // Rank p owns block p+1 of 3 uneven blocks [0,4) [4,7) [7,10).
        let b = split_blocks(&mut out, &[(4, 3), (7, 3), (0, 4)]);
        assert_eq!(
            (&*b[0], &*b[1], &*b[2]),
            (&[4, 5, 6][..], &[7, 8, 9][..], &[0, 1, 2, 3][..])
        );
    }

    #[test]
    fn a_board_that_does_not_fit_is_refused() {
        let (_b, fd) = Board::create(3, 4096, 0).expect("create");
        assert!(Board::open(&fd, 4, 1).is_err(), "rank count differs");
        let small = sys::memfd("t", 100).expect("memfd");
        assert!(Board::open(&small, 3, 1).is_err(), "no header");
    }
}
