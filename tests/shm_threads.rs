//! The shared-memory transport between ranks that are threads of one process (the
//! same code path as between processes): odd element sizes and one-byte barrier
//! messages misalign the rings' positions, so elements straddle the ring's wrap
//! point and receive-and-reduce must fall back from zero-copy to staging. Also the
//! optional cross-memory all-gather.

mod util;

use mixccl::transport::LinkClass;
use mixccl::{Config, ReduceOp};
use std::time::Duration;
use util::bootstrapped_ranks;

fn flat(errs: Vec<Vec<String>>) -> Vec<String> {
    errs.into_iter().flatten().collect()
}

#[test]
fn shared_memory_between_threads_survives_misaligned_rings() {
    for n in [2, 3, 4] {
        // Small rings wrap often.
        let config = Config {
            timeout: Duration::from_secs(30),
            shm_buffer: 4096,
            chunk_bytes: 1000,
            ..Config::default()
        };
        let errs = flat(bootstrapped_ranks(n, config, |comm| {
            let rank = comm.rank();
            // Links are made on first use (init links its tree only): whatever is
            // linked is shared memory.
            for (p, class) in comm.link_classes().iter().enumerate() {
                assert!(
                    matches!(class, None | Some(LinkClass::Shm)) && (p != rank || class.is_none()),
                    "rank {rank} to {p}: {class:?}"
                );
            }
            let mut errs = Vec::new();
            for count in [1usize, 7, 1031, 5003] {
                comm.barrier().expect("barrier");
                for op in ReduceOp::ALL {
                    errs.extend(util::check_all_reduce::<f64>(comm, op, count, false));
                    errs.extend(util::check_reduce_scatter::<half::bf16>(
                        comm, op, count, true,
                    ));
                    errs.extend(util::check_reduce::<i32>(comm, op, count, false));
                }
                errs.extend(util::check_all_gather::<u8>(comm, count, false));
            }
            // The small calls above take the direct algorithm: every pair is linked
            // now, and over shared memory.
            for (p, class) in comm.link_classes().iter().enumerate() {
                assert_eq!(
                    *class,
                    (p != rank).then_some(LinkClass::Shm),
                    "rank {rank} to {p} after the calls"
                );
            }
            errs
        }));
        assert!(errs.is_empty(), "{n} ranks: {errs:?}");
    }
}

/// With MIXCCL_SHM_CMA on, all-gather reads peers' buffers directly (the cma
/// algorithm); results must match element by element, in and out of place.
#[test]
fn all_gather_by_cross_memory_reads() {
    for n in [2, 3, 5] {
        let config = Config {
            timeout: Duration::from_secs(30),
            shm_cma: true,
            algo: mixccl::AlgoOverride::parse("allgather:cma").unwrap(),
            ..Config::default()
        };
        let errs = flat(bootstrapped_ranks(n, config, |comm| {
            let mut errs = Vec::new();
            for count in [0usize, 1, 7, 1031, (1 << 20) + 3] {
                for in_place in [false, true] {
                    errs.extend(util::check_all_gather::<f32>(comm, count, in_place));
                    errs.extend(util::check_all_gather::<u8>(comm, count, in_place));
                    errs.extend(util::check_all_gather::<half::f16>(comm, count, in_place));
                }
            }
            errs
        }));
        assert!(errs.is_empty(), "{n} ranks: {errs:?}");
    }
}

/// Forcing cma where a rank is not on shared memory is a clear error, not a hang.
#[test]
fn forced_cma_without_shared_memory_is_an_error() {
    let config = Config {
        algo: mixccl::AlgoOverride::parse("allgather:cma").unwrap(),
        ..util::test_config()
    };
    let errs = util::with_ranks(2, config, |comm| {
        let mut out = vec![0f32; 2 * 300_000];
        comm.all_gather(&vec![1f32; 300_000], &mut out)
            .unwrap_err()
            .to_string()
    });
    for e in errs {
        assert!(e.contains("cma"), "{e}");
    }
}
