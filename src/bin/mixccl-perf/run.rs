//! One rank's whole benchmark: the list of sizes, the loop over data types, ops
//! and sizes, aggregation of each phase over ranks, and rank 0's printing.

use crate::args::{Args, Step};
use crate::bench::{self, Call, PhaseResult};
use crate::report::{self, Phase, Row};
use mixccl::{Collective, Communicator, DataType, ReduceOp, Result};
use std::io::Write;

/// Requested sizes from `min` to `max` inclusive, before rounding. A factor step
/// goes from 0 to 1 so `-b 0` does not loop forever; the list stops on overflow.
pub fn requested_sizes(min: usize, max: usize, step: Step) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut size = min;
    while size <= max {
        sizes.push(size);
        let next = match step {
            Step::Factor(_) if size == 0 => Some(1),
            Step::Factor(f) => size.checked_mul(f),
            Step::Bytes(b) => size.checked_add(b.max(1)),
        };
        match next {
            Some(n) => size = n,
            None => break,
        }
    }
    sizes
}

/// `(size, count)` per row: requested sizes rounded down to whole blocks, with the
/// repeats that rounding creates removed.
pub fn row_sizes(args: &Args, nranks: usize, dtype: DataType) -> Vec<(usize, usize)> {
    let mut rows: Vec<(usize, usize)> = requested_sizes(args.min_bytes, args.max_bytes, args.step)
        .into_iter()
        .map(|s| bench::size_and_count(args.collective, nranks, dtype.size(), s))
        .collect();
    rows.dedup();
    rows
}

/// Calls `$body` with `$T` bound to the element type of `$dtype`.
macro_rules! with_element {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            DataType::I8 => {
                type $T = i8;
                $body
            }
            DataType::U8 => {
                type $T = u8;
                $body
            }
            DataType::I32 => {
                type $T = i32;
                $body
            }
            DataType::U32 => {
                type $T = u32;
                $body
            }
            DataType::I64 => {
                type $T = i64;
                $body
            }
            DataType::U64 => {
                type $T = u64;
                $body
            }
            DataType::F16 => {
                type $T = half::f16;
                $body
            }
            DataType::F32 => {
                type $T = f32;
                $body
            }
            DataType::F64 => {
                type $T = f64;
                $body
            }
            DataType::BF16 => {
                type $T = half::bf16;
                $body
            }
            DataType::F8E4M3 => {
                type $T = mixccl::F8E4M3;
                $body
            }
            DataType::F8E5M2 => {
                type $T = mixccl::F8E5M2;
                $body
            }
            DataType::F8E4M3Fnuz => {
                type $T = mixccl::F8E4M3Fnuz;
                $body
            }
            DataType::F8E5M2Fnuz => {
                type $T = mixccl::F8E5M2Fnuz;
                $body
            }
        }
    };
}
pub(crate) use with_element;

/// The slowest rank's time and the sum of wrong elements over ranks. An all-gather
/// rather than reductions, so the verdict does not rest on the reduction kernels.
fn aggregate(comm: &mut Communicator, r: PhaseResult) -> Result<(f64, Option<u64>)> {
    let mine = [r.seconds, r.wrong.unwrap_or(0) as f64];
    let mut all = vec![0.0f64; 2 * comm.nranks()];
    comm.all_gather(&mine, &mut all)?;
    let seconds = all.chunks(2).map(|c| c[0]).fold(0.0, f64::max);
    let wrong = all.chunks(2).map(|c| c[1] as u64).sum();
    Ok((seconds, r.wrong.map(|_| wrong)))
}

fn run_row(
    comm: &mut Communicator,
    args: &Args,
    dtype: DataType,
    op: ReduceOp,
    size: usize,
    count: usize,
) -> Result<Row> {
    let coll = args.collective;
    let n = comm.nranks();
    let call = Call {
        collective: coll,
        op,
        root: args.root,
        count,
        iters: args.iters,
        warmup: args.warmup,
        check: args.check,
        device: args.device,
        skew: args.skew,
    };
    let factor = bench::bus_factor(coll, n);
    let mut phase = |in_place: bool| -> Result<Phase> {
        let r = with_element!(dtype, T => bench::run_phase::<T>(comm, call, in_place))?;
        let (seconds, wrong) = aggregate(comm, r)?;
        Ok(Phase::new(size, seconds, factor, wrong))
    };
    let out_of_place = phase(false)?;
    let in_place =
        if bench::has_in_place(coll) && !(args.skew.is_some() && coll == Collective::AllToAll) {
            Some(phase(true)?)
        } else {
            None
        };
    Ok(Row {
        size,
        count,
        dtype,
        redop: bench::is_reducing(coll).then_some(op),
        root: bench::has_root(coll).then_some(args.root),
        out_of_place,
        in_place,
    })
}

/// Runs every row on this rank; rank 0 prints the table as it goes. Every rank
/// returns the same rows.
pub fn run(comm: &mut Communicator, args: &Args) -> Result<Vec<Row>> {
    let print = comm.rank() == 0;
    let mut out = std::io::stdout();
    if print {
        println!("{}", report::header(args, comm.nranks()));
    }
    // Collectives that do not reduce run once, on Sum data, whatever `-o` says.
    let ops = if bench::is_reducing(args.collective) {
        args.ops.clone()
    } else {
        vec![ReduceOp::Sum]
    };
    let mut rows = Vec::new();
    for &dtype in &args.dtypes {
        for &op in &ops {
            for (size, count) in row_sizes(args, comm.nranks(), dtype) {
                let row = run_row(comm, args, dtype, op, size, count)?;
                if print {
                    println!("{}", report::format_row(&row));
                    let _ = out.flush();
                }
                rows.push(row);
            }
        }
    }
    if print {
        println!("{}", report::summary(&rows));
        let _ = out.flush();
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};

    fn args(s: &str) -> Args {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        match parse(&v) {
            Ok(Command::Run(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sizes_multiply_or_add() {
        assert_eq!(
            requested_sizes(8, 128, Step::Factor(2)),
            [8, 16, 32, 64, 128]
        );
        assert_eq!(requested_sizes(8, 100, Step::Factor(4)), [8, 32]);
        assert_eq!(requested_sizes(0, 4, Step::Factor(2)), [0, 1, 2, 4]);
        assert_eq!(requested_sizes(0, 0, Step::Factor(2)), [0]);
        assert_eq!(
            requested_sizes(1024, 4096, Step::Bytes(1024)),
            [1024, 2048, 3072, 4096]
        );
        assert_eq!(
            requested_sizes(32 << 20, 32 << 20, Step::Factor(2)),
            [32 << 20]
        );
        assert_eq!(
            requested_sizes(usize::MAX - 1, usize::MAX, Step::Factor(2)).len(),
            1
        );
        assert_eq!(
            requested_sizes(usize::MAX - 1, usize::MAX, Step::Bytes(1)).len(),
            2
        );
    }

    #[test]
    fn rows_are_rounded_and_deduplicated() {
        let a = args("allreduce -b 0 -e 16 -f 2");
        assert_eq!(
            row_sizes(&a, 4, DataType::F32),
            [(0, 0), (4, 1), (8, 2), (16, 4)]
        );
        let a = args("allgather -b 1K -e 4K -f 2");
        assert_eq!(
            row_sizes(&a, 3, DataType::F64),
            [(1008, 42), (2040, 85), (4080, 170)]
        );
        let a = args("alltoall -b 8 -e 64 -f 2");
        assert_eq!(row_sizes(&a, 4, DataType::F64), [(0, 0), (32, 1), (64, 2)]);
    }
}
