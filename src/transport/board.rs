//! The host board: one shared region for all ranks of a host, in which each rank
//! publishes its bytes once and every other rank copies them out. An all-gather
//! through it writes each block once and reads it n-1 times; through the pairs'
//! rings (transport::shm) every hop writes and reads it again.
//!
//! The lowest rank of the host creates the region (a memfd, so nothing is left in
//! /dev/shm) and hands it to every rank at init (`transport::shm::share_board`);
//! each rank maps it on demand (pages fault in when a call first touches them). Layout: a header line (magic, ranks, ring bytes); per
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
//!
//! This module only moves bytes without waiting ([`Board::write_some`],
//! [`Board::read_some`]) and sleeps once when asked ([`Board::sleep`]); the
//! schedule ops `BoardWrite` and `BoardRead` drive it from the executor, whose one
//! wait loop spins, sleeps, and watches the abort flag, the timeout and the peers'
//! control channels.

use crate::copy::copy_streaming;
use crate::sys::{self, SharedMap};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

const LINE: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"MXBOARD1");
/// Most ranks of one host that share a board (control blocks grow as ranks squared).
pub(crate) const MAX_RANKS: usize = 64;
/// A quarter of a ring is copied per sweep: readers start on a block while it is being
/// written, and each wake-up moves enough to pay for itself (4 ranks on 2 cores at
/// 32 MiB: 64 KiB steps gave half the bandwidth of 2 MiB ones).
const STEPS_PER_RING: usize = 4;

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
        // Not populated: every rank maps all n rings, so populating cost n x n x cap
        // of page-table work at init (64 ranks of 8 MiB rings: seconds), for pages a
        // call may never touch.
        let map = SharedMap::on_demand(&fd, len)?;
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
        let map = SharedMap::on_demand(fd, len).map_err(|e| format!("mapping the board: {e}"))?;
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

    /// Ranks sharing the board.
    pub(crate) fn ranks(&self) -> usize {
        self.nranks
    }

    /// Publishes a prefix of `src` on this rank's ring without waiting: at most a
    /// sweep's step, and what the slowest reader has freed; wakes the readers that
    /// sleep. Returns the bytes published (0 when the ring is full).
    pub(crate) fn write_some(&self, src: &[u8]) -> usize {
        let pos = self.tail(self.me).load(Ordering::Relaxed);
        let k = self.free(pos).min(src.len()).min(self.step());
        if k > 0 {
            self.copy_in(pos, &src[..k]);
            self.tail(self.me).store(pos + k as u64, Ordering::SeqCst);
            (0..self.nranks)
                .filter(|&j| j != self.me)
                .for_each(|j| self.wake(j));
        }
        k
    }

    /// Copies the next bytes rank `p` published into a prefix of `dst` without
    /// waiting (at most a sweep's step), frees them and wakes `p` if it sleeps.
    /// Returns the bytes copied (0 when `p` has published nothing new).
    pub(crate) fn read_some(&self, p: usize, dst: &mut [u8]) -> usize {
        let pos = self.head(p, self.me).load(Ordering::Relaxed);
        let avail = (self.tail(p).load(Ordering::SeqCst) - pos) as usize;
        let k = avail.min(dst.len()).min(self.step());
        if k > 0 {
            self.copy_out(p, pos, &mut dst[..k]);
            self.head(p, self.me)
                .store(pos + k as u64, Ordering::SeqCst);
            self.wake(p);
        }
        k
    }

    /// Could [`Board::write_some`] publish a byte now?
    pub(crate) fn can_write(&self) -> bool {
        self.free(self.tail(self.me).load(Ordering::SeqCst)) > 0
    }

    /// Could [`Board::read_some`] copy a byte of rank `p`'s now?
    pub(crate) fn can_read(&self, p: usize) -> bool {
        self.tail(p).load(Ordering::SeqCst) > self.head(p, self.me).load(Ordering::SeqCst)
    }

    /// Does reader `j` hold this rank's ring full (a writer waits for it)?
    pub(crate) fn holds_full(&self, j: usize) -> bool {
        j != self.me
            && self.head(self.me, j).load(Ordering::SeqCst) + self.cap as u64
                <= self.tail(self.me).load(Ordering::SeqCst)
    }

    /// Is rank `i` asleep on its bell (tests)?
    #[cfg(test)]
    pub(crate) fn sleeps(&self, i: usize) -> bool {
        self.sleeping(i).load(Ordering::SeqCst) != 0
    }

    /// One bounded sleep of a rank that could not move: announces it sleeps, looks
    /// once more with `ready` and sleeps on its bell for at most `max` unless ready;
    /// whoever publishes or frees bytes meanwhile rings it (see the module doc).
    pub(crate) fn sleep(&self, ready: impl Fn() -> bool, max: Duration) {
        let me = self.me;
        self.sleeping(me).store(1, Ordering::SeqCst);
        let seen = self.bell(me).load(Ordering::SeqCst);
        if !ready() {
            sys::futex_wait(self.bell(me), seen, max);
        }
        self.sleeping(me).store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Gathers blocks of the given sizes on `n` ranks, one call after another,
    /// stepping the ranks round-robin from one thread with the non-blocking calls;
    /// checks every byte each rank copied out.
    fn gather_calls(n: usize, cap: usize, sizes: &[usize]) {
        let v = boards(n, cap);
        for (call, &b) in sizes.iter().enumerate() {
            let own: Vec<Vec<u8>> = (0..n)
                .map(|r| (0..b).map(|i| value(r, call, i)).collect())
                .collect();
            let mut out = vec![vec![0xeeu8; n * b]; n];
            let mut written = vec![0usize; n];
            let mut got = vec![vec![0usize; n]; n];
            loop {
                let mut moved = false;
                for (r, board) in v.iter().enumerate() {
                    let k = board.write_some(&own[r][written[r]..]);
                    written[r] += k;
                    for p in (0..n).filter(|&p| p != r) {
                        let at = p * b + got[r][p];
                        let k = board.read_some(p, &mut out[r][at..(p + 1) * b]);
                        got[r][p] += k;
                        moved |= k > 0;
                    }
                    moved |= k > 0;
                }
                let done =
                    (0..n).all(|r| written[r] == b && (0..n).all(|p| p == r || got[r][p] == b));
                if done {
                    break;
                }
                assert!(moved, "{n} ranks, call {call} of {b} bytes: stuck");
            }
            for (r, o) in out.iter().enumerate() {
                for (i, &x) in o.iter().enumerate() {
                    let (p, k) = (i / b, i % b);
                    let want = if p == r { 0xee } else { value(p, call, k) };
                    assert_eq!(x, want, "rank {r} call {call} byte {i}");
                }
            }
        }
    }

    #[test]
    fn every_rank_gets_every_block_across_calls_and_ring_wraps() {
        // Blocks smaller than, equal to and several times the 4 KiB ring, odd sizes so
        // positions wrap mid-ring.
        for n in [2, 3, 4, 5, 8] {
            gather_calls(n, 4096, &[1, 7, 4096, 4099, 10007, 0, 65537, 3]);
        }
        gather_calls(4, 256 << 10, &[(1 << 20) + 3, 131, 1 << 20]);
    }

    #[test]
    fn a_full_ring_waits_for_its_slowest_reader() {
        let v = boards(3, 4096);
        let block = vec![5u8; 3 * 4096];
        let mut written = 0;
        while v[0].can_write() {
            written += v[0].write_some(&block[written..]);
        }
        assert_eq!(written, 4096, "a ring holds its capacity");
        assert_eq!(v[0].write_some(&block[written..]), 0);
        assert!(v[0].holds_full(1) && v[0].holds_full(2) && !v[0].holds_full(0));
        // Rank 1 frees a step; rank 2 still holds the ring full.
        let mut buf = vec![0u8; 4096];
        assert!(v[1].can_read(0) && !v[1].can_read(2));
        let k = v[1].read_some(0, &mut buf);
        assert!(k > 0 && buf[..k].iter().all(|&x| x == 5));
        assert!(!v[0].holds_full(1) && v[0].holds_full(2) && !v[0].can_write());
        assert_eq!(v[2].read_some(0, &mut buf[..100]), 100);
        assert!(v[0].can_write() && !v[0].holds_full(2));
        assert_eq!(v[0].write_some(&block[written..]), 100);
    }

    #[test]
    fn a_ready_sleeper_does_not_sleep() {
        let v = boards(2, 4096);
        v[0].write_some(&[1; 10]);
        let t = std::time::Instant::now();
        v[1].sleep(|| v[1].can_read(0), Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_board_that_does_not_fit_is_refused() {
        let (_b, fd) = Board::create(3, 4096, 0).expect("create");
        assert!(Board::open(&fd, 4, 1).is_err(), "rank count differs");
        let small = sys::memfd("t", 100).expect("memfd");
        assert!(Board::open(&small, 3, 1).is_err(), "no header");
    }
}
