//! Every collective x every dtype x every op x nranks {1,2,3,4,5,8} x counts
//! {0, 1, 7, 1031, 2^20+3}, in place and out of place, with ranks as threads over
//! the in-memory transport, checked element by element against `mixccl::verify`.

mod util;

use mixccl::{Config, ReduceOp};
use util::*;

fn matrix(n: usize, counts: &[usize], config: Config) {
    let errs = with_ranks(n, config, |comm| {
        for_each_type!(check_all(comm, counts, &ReduceOp::ALL))
    });
    let errs: Vec<String> = errs.into_iter().flatten().collect();
    assert!(
        errs.is_empty(),
        "{} failures, first: {:#?}",
        errs.len(),
        &errs[..errs.len().min(10)]
    );
}

#[test]
fn small_counts_every_rank_count() {
    for n in NRANKS {
        matrix(n, &COUNTS[..4], test_config());
    }
}

/// The large count costs seconds per rank count (8M-element buffers at 8 ranks), so it
/// runs every collective and dtype with Sum, and every op for f32, bf16 and i32.
#[test]
fn large_count_every_rank_count() {
    let large = &COUNTS[4..];
    for n in NRANKS {
        let errs = with_ranks(n, test_config(), |comm| {
            let mut e = for_each_type!(check_all(comm, large, &[ReduceOp::Sum]));
            let others = &ReduceOp::ALL[1..];
            e.extend(check_reducing::<f32>(comm, large, others));
            e.extend(check_reducing::<half::bf16>(comm, large, others));
            e.extend(check_reducing::<i32>(comm, large, others));
            e
        });
        let errs: Vec<String> = errs.into_iter().flatten().collect();
        assert!(
            errs.is_empty(),
            "{n} ranks: {} failures, first: {:#?}",
            errs.len(),
            &errs[..errs.len().min(10)]
        );
    }
}

#[test]
fn tiny_chunks_and_many_lanes() {
    // Many slices per block and 3 lanes per link exercise pipelining and lane order.
    let config = Config {
        chunk_bytes: 64,
        nsocks: 3,
        ..test_config()
    };
    for n in [2, 3, 5] {
        matrix(n, &[0, 1, 7, 1031], config.clone());
    }
}

#[test]
fn forced_algorithms_agree() {
    for algo in [
        "allreduce:ring;allgather:ring",
        "allreduce:direct;allgather:direct",
    ] {
        let config = Config {
            algo: mixccl::AlgoOverride::parse(algo).unwrap(),
            ..test_config()
        };
        for n in [1, 2, 3, 4] {
            matrix(n, &[0, 1, 7, 1031], config.clone());
        }
    }
}

/// No rank leaves a barrier before every rank has entered it. Ranks enter at staggered
/// times (in both orders) and record when they entered and left.
#[test]
fn barrier_waits_for_every_rank() {
    use std::time::{Duration, Instant};
    for n in [2, 3, 5, 6, 7, 8, 13, 16] {
        for reverse in [false, true] {
            let times = with_ranks(n, test_config(), |comm| {
                let r = comm.rank();
                let slot = if reverse { n - 1 - r } else { r };
                std::thread::sleep(Duration::from_millis(3 * slot as u64));
                let entered = Instant::now();
                comm.barrier().expect("barrier");
                (entered, Instant::now())
            });
            let last_in = times.iter().map(|t| t.0).max().unwrap();
            for (r, (_, left)) in times.iter().enumerate() {
                assert!(
                    *left >= last_in,
                    "{n} ranks: rank {r} left the barrier before the last rank entered"
                );
            }
        }
    }
}
