//! `mixccl-perf soak`: a long run of random calls, every result checked. All ranks
//! draw the same sequence from `--seed`: collective, data type, op, per-rank count
//! (log-uniform from 0 to `-e` bytes), root and in-place or not, so the calls match
//! without any coordination. Each step is one checked call (`bench::run_phase` with
//! one timed iteration and checking on). Rank 0 prints the totals.

use crate::args::Args;
use crate::bench::{self, Call};
use crate::run::with_element;
use mixccl::{Collective, Communicator, DataType, ReduceOp, Result};
use std::time::Instant;

/// xorshift64*: small, deterministic, the same on every rank.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

const COLLECTIVES: [Collective; 7] = [
    Collective::AllReduce,
    Collective::AllGather,
    Collective::Broadcast,
    Collective::Reduce,
    Collective::ReduceScatter,
    Collective::AllToAll,
    Collective::SendRecv,
];

/// One random step.
fn draw(rng: &mut Rng, nranks: usize, max_bytes: usize) -> (Call, DataType, bool) {
    let collective = COLLECTIVES[rng.below(COLLECTIVES.len() as u64) as usize];
    let dtype = DataType::ALL[rng.below(DataType::ALL.len() as u64) as usize];
    let op = ReduceOp::ALL[rng.below(ReduceOp::ALL.len() as u64) as usize];
    let max_count = max_bytes / dtype.size() / bench::blocks_per_size(collective, nranks);
    // Log-uniform: as many tiny calls as large ones, sizes 0 and 1 included.
    let bits = 64 - (max_count as u64).leading_zeros() as u64;
    let count = match rng.below(bits + 2) {
        0 => 0,
        b => (rng.below(1u64 << (b - 1).min(62)) as usize + (1usize << (b - 1))).min(max_count),
    };
    let call = Call {
        collective,
        op,
        root: rng.below(nranks as u64) as usize,
        count,
        iters: 1,
        warmup: 0,
        check: true,
        device: None,
        skew: None,
    };
    let in_place = bench::has_in_place(collective) && rng.below(2) == 1;
    (call, dtype, in_place)
}

/// Runs `args.iters` random checked calls; returns the wrong elements over all ranks.
pub fn run(comm: &mut Communicator, args: &Args) -> Result<u64> {
    let mut rng = Rng(args.seed.max(1));
    let (rank, n) = (comm.rank(), comm.nranks());
    let start = Instant::now();
    let mut wrong_here = 0u64;
    let device_call = |call: Call| Call {
        device: args.device,
        ..call
    };
    for step in 0..args.iters {
        let (call, dtype, in_place) = draw(&mut rng, n, args.max_bytes);
        let call = device_call(call);
        let r = with_element!(dtype, T => bench::run_phase::<T>(comm, call, in_place))?;
        let w = r.wrong.unwrap_or(0) as u64;
        if w > 0 {
            eprintln!(
                "mixccl-perf soak: rank {rank}: step {step}: {} x {dtype} {} root {} {}: {w} wrong",
                call.count,
                call.collective,
                call.root,
                if in_place { "in place" } else { "out of place" }
            );
        }
        wrong_here += w;
        if rank == 0 && (step + 1) % 1000 == 0 {
            println!(
                "# soak: {} calls, {:.1} s",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    // Totals over ranks by all-gather, so the verdict does not rest on reductions.
    let mut all = vec![0u64; n];
    comm.all_gather(&[wrong_here], &mut all)?;
    let wrong: u64 = all.iter().sum();
    if rank == 0 {
        println!(
            "# soak: {} random checked calls on {n} ranks (seed {}, up to {} bytes per rank) in {:.1} s: {wrong} wrong elements",
            args.iters,
            args.seed,
            args.max_bytes,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(wrong)
}
