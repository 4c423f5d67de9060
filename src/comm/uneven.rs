//! The uneven ("v") collectives: all-gather, reduce-scatter and all-to-all whose
//! blocks differ in size (and place) by rank, as `MPI_Allgatherv` and friends.
//!
//! Counts are in elements and displacements in elements from the buffer's start, as
//! in MPI. Ranks must agree about every count: each call's header carries a digest
//! of the per-rank counts (`header::counts_digest`), so ranks that disagree get
//! `Error::Mismatch` before any data is trusted; all-to-all-v's counts agree pairwise
//! (what rank i sends rank j is what j expects from i), which the header's
//! bytes-to-transfer check catches. The planner is asked with the largest block
//! (a ring step lasts as long as it); the schedules are in `algo::uneven`.

use super::{Communicator, Meta};
use crate::algo::{self, uneven};
use crate::config::{Algorithm, Collective};
use crate::element::{DataType, Element};
use crate::error::{Error, Result};
use crate::header::counts_digest;
use crate::plan;
use crate::reduce::ReduceOp;
use std::sync::Arc;

impl Communicator {
    /// Byte ranges `(offset, len)` of `nranks` blocks of `dtype` with element `counts`
    /// and `displs` inside a buffer of `buf_len` bytes (empty blocks may have any
    /// displacement); `disjoint` rejects blocks that share a byte (blocks that are
    /// written).
    fn v_blocks(
        &self,
        what: &str,
        name: &str,
        dtype: DataType,
        (counts, displs): (&[usize], &[usize]),
        buf_len: usize,
        disjoint: bool,
    ) -> Result<Vec<(usize, usize)>> {
        let (n, e) = (self.nranks, dtype.size());
        if counts.len() != n || displs.len() != n {
            return Err(Error::invalid(format!(
                "{what} on rank {}: {name} has {} counts and {} displacements, expected nranks ({n}) of each",
                self.rank,
                counts.len(),
                displs.len()
            )));
        }
        let mut blocks = Vec::with_capacity(n);
        for (p, (&c, &d)) in counts.iter().zip(displs).enumerate() {
            let range = c
                .checked_mul(e)
                .zip(d.checked_mul(e))
                .and_then(|(len, off)| Some((off, len, off.checked_add(len)?)));
            match range {
                // An empty block may point anywhere: it is never touched.
                _ if c == 0 => blocks.push((0, 0)),
                Some((off, len, end)) if end <= buf_len => blocks.push((off, len)),
                _ => {
                    return Err(Error::invalid(format!(
                        "{what} on rank {}: {name} block {p} ({c} x {dtype} at displacement {d}) \
                         ends past the buffer's {buf_len} bytes",
                        self.rank
                    )))
                }
            }
        }
        if disjoint {
            let mut sorted: Vec<(usize, usize, usize)> = blocks
                .iter()
                .enumerate()
                .filter(|(_, b)| b.1 > 0)
                .map(|(p, b)| (b.0, b.1, p))
                .collect();
            sorted.sort_unstable();
            for w in sorted.windows(2) {
                if w[0].0 + w[0].1 > w[1].0 {
                    return Err(Error::invalid(format!(
                        "{what} on rank {}: {name} blocks {} and {} overlap",
                        self.rank, w[0].2, w[1].2
                    )));
                }
            }
        }
        Ok(blocks)
    }

    /// Runs an uneven schedule; the header carries the digest of `counts` as its
    /// count, and a mismatch this rank finds names this rank's counts.
    #[allow(clippy::too_many_arguments)]
    fn run_uneven(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        counts: &[usize],
        algo: Algorithm,
        schedule: algo::Schedule,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<()> {
        let meta = Meta {
            coll,
            dtype,
            op,
            count: counts_digest(counts) as usize,
            root: 0,
            algo: algo.name(),
        };
        let result = self.run_schedule(meta, &Arc::new(schedule), input, output, &[], &mut []);
        match result {
            Err(Error::Mismatch {
                rank,
                theirs,
                peer,
                ours,
            }) if rank == self.rank && !counts.is_empty() => {
                let shown: Vec<String> = counts.iter().take(16).map(usize::to_string).collect();
                let more = if counts.len() > 16 { ", ..." } else { "" };
                let e = Error::Mismatch {
                    rank,
                    theirs: format!("{theirs}, counts [{}{more}]", shown.join(", ")),
                    peer,
                    ours,
                };
                self.failed = Some(e.clone());
                Err(e)
            }
            other => other,
        }
    }

    /// The algorithm for an uneven `coll` whose largest block has `max_bytes` bytes:
    /// the planner's choice for an even call of that block size, mapped onto those
    /// with an uneven schedule (direct all-gather, else the ring; pairwise all-to-all).
    fn uneven_algo(&self, coll: Collective, max_bytes: usize) -> Algorithm {
        let chosen = plan::choose(&self.config, &self.caps, coll, max_bytes, self.nranks);
        match (coll, chosen) {
            (Collective::AllGather, Algorithm::Direct) => Algorithm::Direct,
            (Collective::AllToAll, _) => Algorithm::Pairwise,
            _ => Algorithm::Ring,
        }
    }

    /// Byte-level uneven all-gather: rank p's `counts[p]` elements land in `recv` at
    /// element `displs[p]`. `send` holds this rank's block (`counts[rank]` elements);
    /// `None` means it is already in place in `recv`.
    pub fn all_gather_v_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let what = "all_gather_v";
        let blocks = self.v_blocks(what, "recv", dtype, (counts, displs), recv.len(), true)?;
        let mine = blocks[self.rank].1;
        if let Some(s) = send {
            if s.len() != mine {
                return Err(Error::invalid(format!(
                    "{what} on rank {}: send has {} bytes but counts[{}] is {} x {dtype} ({mine} bytes)",
                    self.rank,
                    s.len(),
                    self.rank,
                    counts[self.rank]
                )));
            }
        }
        let max = blocks.iter().map(|b| b.1).max().unwrap_or(0);
        let algo = self.uneven_algo(Collective::AllGather, max);
        let c = self.call(
            Collective::AllGather,
            dtype,
            ReduceOp::Sum,
            0,
            0,
            send.is_none(),
        );
        let schedule = match algo {
            Algorithm::Direct => uneven::direct_all_gather(&c, &blocks),
            _ => uneven::ring_all_gather(&c, &blocks),
        };
        self.run_uneven(
            Collective::AllGather,
            dtype,
            ReduceOp::Sum,
            counts,
            algo,
            schedule,
            send.unwrap_or(&[]),
            recv,
        )
    }

    /// Byte-level uneven reduce-scatter: block p (`counts[p]` elements at element
    /// `displs[p]` of `send`) is reduced over ranks and lands on rank p, in `recv`
    /// (`counts[rank]` elements). With `send: None`, `recv` holds every block and the
    /// result lands in this rank's block.
    pub fn reduce_scatter_v_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        let what = "reduce_scatter_v";
        let blocks = match send {
            Some(s) => self.v_blocks(what, "send", dtype, (counts, displs), s.len(), false)?,
            None => self.v_blocks(what, "buffer", dtype, (counts, displs), recv.len(), true)?,
        };
        let mine = blocks[self.rank].1;
        if send.is_some() && recv.len() != mine {
            return Err(Error::invalid(format!(
                "{what} on rank {}: recv has {} bytes but counts[{}] is {} x {dtype} ({mine} bytes)",
                self.rank,
                recv.len(),
                self.rank,
                counts[self.rank]
            )));
        }
        if let Some(fmt) = dtype.fp8() {
            // Accumulate in f32 and round once, as the even reductions (`comm::fp8`).
            let wide_send = send.map(|s| super::fp8::widen(fmt, s));
            let mut wide_recv = super::fp8::widen(fmt, recv);
            self.header_dtype = Some(dtype);
            let r = self.reduce_scatter_v_raw(
                DataType::F32,
                op,
                wide_send.as_deref(),
                &mut wide_recv,
                counts,
                displs,
            );
            self.header_dtype = None;
            r?;
            let (off, len) = if send.is_some() {
                (0, recv.len())
            } else {
                blocks[self.rank]
            };
            super::fp8::narrow(
                fmt,
                &wide_recv[off * 4..(off + len) * 4],
                &mut recv[off..off + len],
            );
            return Ok(());
        }
        let max = blocks.iter().map(|b| b.1).max().unwrap_or(0);
        let algo = self.uneven_algo(Collective::ReduceScatter, max);
        let c = self.call(Collective::ReduceScatter, dtype, op, 0, 0, send.is_none());
        let schedule = uneven::ring_reduce_scatter(&c, &blocks);
        self.run_uneven(
            Collective::ReduceScatter,
            dtype,
            op,
            counts,
            algo,
            schedule,
            send.unwrap_or(&[]),
            recv,
        )
    }

    /// Byte-level uneven all-to-all (out of place): `send_counts[p]` elements at
    /// element `send_displs[p]` of `send` go to rank p; rank p's block lands in `recv`
    /// at `recv_displs[p]` and must be `recv_counts[p]` elements, the count rank p
    /// sends this rank.
    #[allow(clippy::too_many_arguments)]
    pub fn all_to_all_v_raw(
        &mut self,
        dtype: DataType,
        send: &[u8],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [u8],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        let what = "all_to_all_v";
        let sb = self.v_blocks(
            what,
            "send",
            dtype,
            (send_counts, send_displs),
            send.len(),
            false,
        )?;
        let rb = self.v_blocks(
            what,
            "recv",
            dtype,
            (recv_counts, recv_displs),
            recv.len(),
            true,
        )?;
        let r = self.rank;
        if sb[r].1 != rb[r].1 {
            return Err(Error::invalid(format!(
                "{what} on rank {r}: sends itself {} x {dtype} but receives {} from itself",
                send_counts[r], recv_counts[r]
            )));
        }
        let max = sb.iter().chain(&rb).map(|b| b.1).max().unwrap_or(0);
        let algo = self.uneven_algo(Collective::AllToAll, max);
        let c = self.call(Collective::AllToAll, dtype, ReduceOp::Sum, 0, 0, false);
        let schedule = uneven::pairwise_all_to_all(&c, &sb, &rb);
        // Counts agree pairwise (the headers' byte counts check that), not globally.
        self.run_uneven(
            Collective::AllToAll,
            dtype,
            ReduceOp::Sum,
            &[],
            algo,
            schedule,
            send,
            recv,
        )
    }

    /// Gathers rank p's `counts[p]` elements into `recv[displs[p]..]`; `send` is this
    /// rank's block (`counts[rank]` elements). Counts must be equal on every rank.
    pub fn all_gather_v<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        self.all_gather_v_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            counts,
            displs,
        )
    }

    /// In-place [`Communicator::all_gather_v`]: this rank's block is already at
    /// `buf[displs[rank]..][..counts[rank]]`.
    pub fn all_gather_v_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
    ) -> Result<()> {
        self.all_gather_v_raw(
            T::DTYPE,
            None,
            bytemuck::cast_slice_mut(buf),
            counts,
            displs,
        )
    }

    /// Reduces block p of `send` (`counts[p]` elements at `displs[p]`) over ranks into
    /// rank p's `recv` (`counts[rank]` elements). Counts must be equal on every rank.
    pub fn reduce_scatter_v<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
        displs: &[usize],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_v_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            counts,
            displs,
        )
    }

    /// In-place [`Communicator::reduce_scatter_v`]: the result lands in this rank's
    /// block of `buf`.
    pub fn reduce_scatter_v_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        counts: &[usize],
        displs: &[usize],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_v_raw(
            T::DTYPE,
            op,
            None,
            bytemuck::cast_slice_mut(buf),
            counts,
            displs,
        )
    }

    /// Sends `send[send_displs[p]..][..send_counts[p]]` to rank p and receives rank p's
    /// block into `recv[recv_displs[p]..][..recv_counts[p]]`; `recv_counts[p]` must be
    /// what rank p sends this rank.
    pub fn all_to_all_v<T: Element>(
        &mut self,
        send: &[T],
        send_counts: &[usize],
        send_displs: &[usize],
        recv: &mut [T],
        recv_counts: &[usize],
        recv_displs: &[usize],
    ) -> Result<()> {
        self.all_to_all_v_raw(
            T::DTYPE,
            bytemuck::cast_slice(send),
            send_counts,
            send_displs,
            bytemuck::cast_slice_mut(recv),
            recv_counts,
            recv_displs,
        )
    }
}

/// Splits `total` into one share per weight, in proportion, identically on every
/// rank: integer arithmetic only (largest remainders, ties to the lower index), so
/// the shares always sum to `total`. All-zero weights split evenly.
///
/// Panics never; a weight vector that is empty gives an empty split.
pub fn split_by_weight(total: usize, weights: &[u64]) -> Vec<usize> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return (0..n)
            .map(|i| total / n + usize::from(i < total % n))
            .collect();
    }
    let t = total as u128;
    let mut shares: Vec<usize> = Vec::with_capacity(n);
    let mut rems: Vec<(u128, usize)> = Vec::with_capacity(n);
    for (i, w) in weights.iter().enumerate() {
        let p = t * u128::from(*w);
        shares.push((p / sum) as usize);
        rems.push((p % sum, i));
    }
    let left = total - shares.iter().sum::<usize>();
    // Largest remainder first; equal remainders go to the lower index.
    rems.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rems.iter().take(left) {
        shares[i] += 1;
    }
    shares
}

/// Element displacements of blocks laid end to end: the prefix sums of `counts`.
pub fn displacements(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0usize, |at, c| {
            let d = *at;
            *at += c;
            Some(d)
        })
        .collect()
}
