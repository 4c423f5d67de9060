//! The shared-memory transport between ranks that are threads of one process (the
//! same code path as between processes): odd element sizes and one-byte barrier
//! messages misalign the rings' positions, so elements straddle the ring's wrap
//! point and receive-and-reduce must fall back from zero-copy to staging.

mod util;

use mixccl::{Communicator, Config, ReduceOp, UniqueId};
use std::time::Duration;

#[test]
fn shared_memory_between_threads_survives_misaligned_rings() {
    for n in [2, 3, 4] {
        let id = UniqueId::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // Small rings wrap often.
        let config = Config {
            timeout: Duration::from_secs(30),
            shm_buffer: 4096,
            chunk_bytes: 1000,
            ..Config::default()
        };
        let errs: Vec<String> = std::thread::scope(|s| {
            let ranks: Vec<_> = (0..n)
                .map(|rank| {
                    let config = config.clone();
                    s.spawn(move || {
                        let mut comm = Communicator::init(rank, n, &id, config).expect("init");
                        for (p, kind) in comm.link_kinds().iter().enumerate() {
                            assert_eq!(*kind, (p != rank).then_some("shm"), "rank {rank} to {p}");
                        }
                        let mut errs = Vec::new();
                        for count in [1usize, 7, 1031, 5003] {
                            comm.barrier().expect("barrier");
                            for op in ReduceOp::ALL {
                                errs.extend(util::check_all_reduce::<f64>(
                                    &mut comm, op, count, false,
                                ));
                                errs.extend(util::check_reduce_scatter::<half::bf16>(
                                    &mut comm, op, count, true,
                                ));
                                errs.extend(util::check_reduce::<i32>(&mut comm, op, count, false));
                            }
                            errs.extend(util::check_all_gather::<u8>(&mut comm, count, false));
                        }
                        errs
                    })
                })
                .collect();
            ranks
                .into_iter()
                .flat_map(|h| h.join().expect("rank thread"))
                .collect()
        });
        assert!(errs.is_empty(), "{n} ranks: {errs:?}");
    }
}
