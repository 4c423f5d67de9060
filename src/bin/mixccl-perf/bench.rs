//! One collective, one size, one data type: nccl-tests' definitions of size,
//! count and bus bandwidth per collective, and the timed loop plus the check of
//! one phase (out-of-place or in-place) on this rank. Cross-rank aggregation and
//! printing live in `run` and `report`.

use mixccl::device::{DeviceMemory, Vendor};
use mixccl::verify::{count_wrong, expected_reduce, fill, input_value};
use mixccl::{Collective, Communicator, Element, ReduceOp, Result, TransferMem};
use std::time::Instant;

/// Whether the collective reduces (and so has a meaningful `redop` column).
pub fn is_reducing(c: Collective) -> bool {
    matches!(
        c,
        Collective::AllReduce | Collective::Reduce | Collective::ReduceScatter
    )
}

/// Whether the collective has a root (and so a meaningful `root` column).
pub fn has_root(c: Collective) -> bool {
    matches!(c, Collective::Broadcast | Collective::Reduce)
}

/// Whether an in-place variant exists. `send_recv` has none: a Rust call cannot
/// take one buffer as both its send and receive slice, so its in-place columns
/// print N/A instead of repeating the out-of-place measurement.
pub fn has_in_place(c: Collective) -> bool {
    c != Collective::SendRecv
}

/// Per-rank count ("paramcount") per unit of the size column: the size covers all
/// ranks' blocks for allgather, reducescatter and alltoall.
pub fn blocks_per_size(c: Collective, nranks: usize) -> usize {
    match c {
        Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => nranks,
        _ => 1,
    }
}

/// `(size, count)` for a requested size: the size rounded down to a whole number of
/// `blocks_per_size` blocks of `type_size` elements, and the per-rank count.
pub fn size_and_count(
    c: Collective,
    nranks: usize,
    type_size: usize,
    bytes: usize,
) -> (usize, usize) {
    let unit = type_size * blocks_per_size(c, nranks);
    let count = bytes / unit;
    (count * unit, count)
}

/// busbw / algbw, nccl-tests' factors: the share of the data each rank's busiest
/// link must carry in a bandwidth-optimal algorithm.
pub fn bus_factor(c: Collective, nranks: usize) -> f64 {
    let n = nranks as f64;
    match c {
        Collective::AllReduce => 2.0 * (n - 1.0) / n,
        Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => (n - 1.0) / n,
        _ => 1.0,
    }
}

/// One row's call, shared by both phases.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The collective.
    pub collective: Collective,
    /// The reduction op (`Sum` for collectives that do not reduce).
    pub op: ReduceOp,
    /// Root of broadcast and reduce.
    pub root: usize,
    /// Per-rank count, as in the count column.
    pub count: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Untimed iterations.
    pub warmup: usize,
    /// Whether to check the result.
    pub check: bool,
    /// The runtime whose device memory holds the buffers (None: host vectors).
    pub device: Option<Vendor>,
    /// `--skew k`: the uneven (v) call, rank p's block in proportion to
    /// `(n-1) + (k-1) p` (host buffers only).
    pub skew: Option<u64>,
}

/// Per-rank block counts of a skewed call: `total` elements split in proportion to
/// `(n-1) + (k-1) p`, so the largest block is `k` times the smallest (up to
/// rounding); identical on every rank.
pub fn skewed_counts(total: usize, nranks: usize, k: u64) -> Vec<usize> {
    let n = nranks as u64;
    let weights: Vec<u64> = (0..n)
        .map(|p| (n - 1).max(1) + (k.max(1) - 1) * p)
        .collect();
    mixccl::split_by_weight(total, &weights)
}

/// What one phase measured on this rank.
#[derive(Debug, Clone, Copy)]
pub struct PhaseResult {
    /// Mean seconds per call.
    pub seconds: f64,
    /// Wrong elements on this rank (None when not checked).
    pub wrong: Option<usize>,
}

/// What output buffers hold before a checked call. Every input and result has
/// |x| <= 256 (see `mixccl::verify`), so only the 8-bit types, where this saturates
/// to 127 or 255, can produce it by chance.
const POISON: f64 = 1000.0;

/// The buffers of one phase: `send`/`recv` out of place, `recv` alone in place.
struct Bench<'a, T> {
    comm: &'a mut Communicator,
    call: Call,
    in_place: bool,
    rank: usize,
    nranks: usize,
    send: Vec<T>,
    recv: Vec<T>,
    /// With `--device`: device copies of `send` and `recv`, which the calls use.
    device: Option<(DeviceMemory, DeviceMemory)>,
    /// With `--skew`: every rank's block count and where it starts.
    skew: Option<(Vec<usize>, Vec<usize>)>,
}

impl<'a, T: Element> Bench<'a, T> {
    fn new(comm: &'a mut Communicator, call: Call, in_place: bool) -> Result<Self> {
        let (rank, nranks, count) = (comm.rank(), comm.nranks(), call.count);
        let blocks = blocks_per_size(call.collective, nranks);
        let skew = call.skew.map(|k| {
            let counts = skewed_counts(count * nranks, nranks, k);
            let displs = mixccl::displacements(&counts);
            (counts, displs)
        });
        let (send_len, recv_len) = match (&skew, call.collective) {
            (Some((c, _)), Collective::AllGather) => (c[rank], count * nranks),
            (Some((c, _)), Collective::ReduceScatter) => (count * nranks, c[rank]),
            // Skewed all-to-all: rank j gets a block of its own size from every rank.
            (Some((c, _)), _) => (count * nranks, c[rank] * nranks),
            (None, Collective::AllGather) => (count, count * nranks),
            (None, Collective::ReduceScatter) => (count * nranks, count),
            _ => (count * blocks, count * blocks),
        };
        let zero = T::from_f64(0.0);
        let (send, recv) = if in_place {
            (Vec::new(), vec![zero; send_len.max(recv_len)])
        } else {
            (vec![zero; send_len], vec![zero; recv_len])
        };
        let device = match call.device {
            Some(v) => Some((
                DeviceMemory::new(v, None, std::mem::size_of_val(&send[..]))?,
                DeviceMemory::new(v, None, std::mem::size_of_val(&recv[..]))?,
            )),
            None => None,
        };
        Ok(Bench {
            comm,
            call,
            in_place,
            rank,
            nranks,
            send,
            recv,
            device,
            skew,
        })
    }

    /// With `--device`: copies the host vectors' contents to the device buffers.
    fn upload(&mut self) -> Result<()> {
        if let Some((s, r)) = &mut self.device {
            s.mem().write_from(bytemuck::cast_slice(&self.send))?;
            r.mem().write_from(bytemuck::cast_slice(&self.recv))?;
        }
        Ok(())
    }

    /// With `--device`: copies the device result into the host vector for checking.
    fn download(&mut self) -> Result<()> {
        if let Some((_, r)) = &mut self.device {
            r.mem()
                .read_into(bytemuck::cast_slice_mut(&mut self.recv))?;
        }
        Ok(())
    }

    /// One call on the device buffers.
    fn run_device(&mut self) -> Result<()> {
        let Call { op, root, .. } = self.call;
        let (rank, n) = (self.rank, self.nranks);
        let Some((s, r)) = &mut self.device else {
            return Ok(());
        };
        let (send, recv) = (s.mem(), r.mem());
        let coll = self.call.collective;
        if coll == Collective::SendRecv {
            return self.comm.group_mem(&[
                TransferMem::Send {
                    peer: (rank + 1) % n,
                    buf: send,
                },
                TransferMem::Recv {
                    peer: (rank + n - 1) % n,
                    buf: recv,
                },
            ]);
        }
        let send = (!self.in_place).then_some(send);
        self.comm
            .collective_mem(coll, T::DTYPE, op, root, send, recv)
    }

    /// The op that shapes the input data: the reduction op, or `Sum` (exact data).
    fn data_op(&self) -> ReduceOp {
        if is_reducing(self.call.collective) {
            self.call.op
        } else {
            ReduceOp::Sum
        }
    }

    /// Writes this rank's inputs, and [`POISON`] wherever output is expected, so a
    /// call that writes nothing (leaving the timed loop's results) is caught.
    fn fill(&mut self) {
        let (op, rank, count) = (self.data_op(), self.rank, self.call.count);
        let poison = T::from_f64(POISON);
        if !self.in_place {
            fill(&mut self.send, op, rank, 0);
            self.recv.fill(poison);
            return;
        }
        let buf = &mut self.recv;
        match self.call.collective {
            Collective::AllGather if self.skew.is_some() => {
                let (c, d) = self.skew.as_ref().expect("skewed");
                buf.fill(poison);
                fill(&mut buf[d[rank]..][..c[rank]], op, rank, 0);
            }
            Collective::AllGather => {
                buf.fill(poison);
                fill(&mut buf[rank * count..][..count], op, rank, 0);
            }
            // Non-roots of a broadcast hold their own data, which differs from the root's.
            _ => fill(buf, op, rank, 0),
        }
    }

    fn run_once(&mut self) -> Result<()> {
        if self.device.is_some() {
            return self.run_device();
        }
        let Call { op, root, .. } = self.call;
        let (rank, n) = (self.rank, self.nranks);
        let comm = &mut *self.comm;
        if let Some((c, d)) = &self.skew {
            let (send, recv) = (&self.send[..], &mut self.recv[..]);
            let in_place = self.in_place;
            return match self.call.collective {
                Collective::AllGather if in_place => comm.all_gather_v_in_place(recv, c, d),
                Collective::AllGather => comm.all_gather_v(send, recv, c, d),
                Collective::ReduceScatter if in_place => {
                    comm.reduce_scatter_v_in_place(recv, c, d, op)
                }
                Collective::ReduceScatter => comm.reduce_scatter_v(send, recv, c, d, op),
                _ => {
                    let mine = vec![c[rank]; n];
                    let at = mixccl::displacements(&mine);
                    comm.all_to_all_v(send, c, d, recv, &mine, &at)
                }
            };
        }
        if self.in_place {
            let buf = &mut self.recv[..];
            return match self.call.collective {
                Collective::AllReduce => comm.all_reduce_in_place(buf, op),
                Collective::AllGather => comm.all_gather_in_place(buf),
                Collective::Broadcast => comm.broadcast_in_place(buf, root),
                Collective::Reduce => comm.reduce_in_place(buf, op, root),
                Collective::ReduceScatter => comm.reduce_scatter_in_place(buf, op),
                Collective::AllToAll => comm.all_to_all_in_place(buf),
                Collective::SendRecv | Collective::Barrier => {
                    unreachable!("no in-place phase for {}", self.call.collective)
                }
            };
        }
        let (send, recv) = (&self.send[..], &mut self.recv[..]);
        match self.call.collective {
            Collective::AllReduce => comm.all_reduce(send, recv, op),
            Collective::AllGather => comm.all_gather(send, recv),
            Collective::Broadcast => comm.broadcast(send, recv, root),
            Collective::Reduce => comm.reduce(send, recv, op, root),
            Collective::ReduceScatter => comm.reduce_scatter(send, recv, op),
            Collective::AllToAll => comm.all_to_all(send, recv),
            Collective::SendRecv => comm.send_recv(send, (rank + 1) % n, recv, (rank + n - 1) % n),
            Collective::Barrier => unreachable!("barrier is not a benchmark"),
        }
    }

    /// Wrong elements in this rank's output, against `mixccl::verify`'s reference.
    fn wrong(&self) -> usize {
        let (rank, n, count, root) = (self.rank, self.nranks, self.call.count, self.call.root);
        let (dt, op) = (T::DTYPE, self.data_op());
        let out = &self.recv[..];
        if let Some((c, d)) = &self.skew {
            return match self.call.collective {
                Collective::AllGather => {
                    let owner = |k: usize| d.iter().rposition(|s| *s <= k).unwrap_or(0);
                    count_wrong(out, |k| input_value(dt, op, owner(k), k - d[owner(k)]), op)
                }
                Collective::ReduceScatter => {
                    let out = if self.in_place {
                        &out[d[rank]..][..c[rank]]
                    } else {
                        out
                    };
                    count_wrong(out, |k| expected_reduce(dt, op, n, d[rank] + k), op)
                }
                // Block p came from rank p, which sent its elements d[rank].. to us.
                _ => {
                    let b = c[rank].max(1);
                    count_wrong(out, |k| input_value(dt, op, k / b, d[rank] + k % b), op)
                }
            };
        }
        match self.call.collective {
            Collective::AllReduce => count_wrong(out, |k| expected_reduce(dt, op, n, k), op),
            Collective::Reduce if rank == root => {
                count_wrong(out, |k| expected_reduce(dt, op, n, k), op)
            }
            Collective::Reduce => 0,
            Collective::ReduceScatter => {
                let out = if self.in_place {
                    &out[rank * count..][..count]
                } else {
                    out
                };
                count_wrong(out, |k| expected_reduce(dt, op, n, rank * count + k), op)
            }
            Collective::AllGather => {
                count_wrong(out, |k| input_value(dt, op, k / count, k % count), op)
            }
            Collective::Broadcast => count_wrong(out, |k| input_value(dt, op, root, k), op),
            // Block j came from rank j, which filled its block `rank` at index rank*count.
            Collective::AllToAll => count_wrong(
                out,
                |k| input_value(dt, op, k / count, rank * count + k % count),
                op,
            ),
            Collective::SendRecv => {
                count_wrong(out, |k| input_value(dt, op, (rank + n - 1) % n, k), op)
            }
            Collective::Barrier => 0,
        }
    }
}

/// Runs one phase on this rank: fill, warmup, barrier, the timed loop, then (with
/// checking) a refill, one more call and the count of wrong elements.
pub fn run_phase<T: Element>(
    comm: &mut Communicator,
    call: Call,
    in_place: bool,
) -> Result<PhaseResult> {
    let mut b = Bench::<T>::new(comm, call, in_place)?;
    b.fill();
    b.upload()?;
    for _ in 0..call.warmup {
        b.run_once()?;
    }
    b.comm.barrier()?;
    let start = Instant::now();
    for _ in 0..call.iters {
        b.run_once()?;
    }
    let seconds = start.elapsed().as_secs_f64() / call.iters.max(1) as f64;
    let wrong = if call.check {
        b.fill();
        b.upload()?;
        b.run_once()?;
        b.download()?;
        Some(b.wrong())
    } else {
        None
    };
    Ok(PhaseResult { seconds, wrong })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_down_to_whole_blocks() {
        // allreduce: whole elements.
        assert_eq!(size_and_count(Collective::AllReduce, 4, 4, 8), (8, 2));
        assert_eq!(size_and_count(Collective::AllReduce, 4, 4, 7), (4, 1));
        assert_eq!(size_and_count(Collective::AllReduce, 4, 8, 0), (0, 0));
        // allgather / reducescatter / alltoall: whole elements per rank.
        assert_eq!(
            size_and_count(Collective::AllGather, 4, 4, 1024),
            (1024, 64)
        );
        assert_eq!(
            size_and_count(Collective::AllGather, 3, 4, 1024),
            (1020, 85)
        );
        assert_eq!(size_and_count(Collective::ReduceScatter, 4, 2, 10), (8, 1));
        assert_eq!(size_and_count(Collective::AllToAll, 8, 8, 32), (0, 0));
        assert_eq!(size_and_count(Collective::Broadcast, 8, 2, 33), (32, 16));
        assert_eq!(size_and_count(Collective::SendRecv, 8, 1, 33), (33, 33));
    }

    #[test]
    fn bus_factors_are_nccl_tests_factors() {
        assert_eq!(bus_factor(Collective::AllReduce, 4), 1.5);
        assert_eq!(bus_factor(Collective::AllReduce, 1), 0.0);
        assert_eq!(bus_factor(Collective::AllGather, 4), 0.75);
        assert_eq!(bus_factor(Collective::ReduceScatter, 2), 0.5);
        assert_eq!(bus_factor(Collective::AllToAll, 8), 0.875);
        assert_eq!(bus_factor(Collective::Broadcast, 8), 1.0);
        assert_eq!(bus_factor(Collective::Reduce, 8), 1.0);
        assert_eq!(bus_factor(Collective::SendRecv, 8), 1.0);
    }

    #[test]
    fn columns_by_collective() {
        assert!(is_reducing(Collective::ReduceScatter) && !is_reducing(Collective::AllGather));
        assert!(has_root(Collective::Reduce) && !has_root(Collective::AllReduce));
        assert!(!has_in_place(Collective::SendRecv) && has_in_place(Collective::AllToAll));
    }
}
