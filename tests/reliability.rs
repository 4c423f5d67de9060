//! Mismatched calls end in `Error::Mismatch` on every rank (never a hang or wrong
//! data), and the ranks can rebuild a communicator afterwards.

mod util;

use mixccl::{Communicator, Config, Error, ReduceOp};
use std::time::Duration;
use util::with_ranks;

/// What the odd rank does differently.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Op,
    Dtype,
    Count,
    Root,
    Collective,
    /// Skips the first of two calls of different sizes.
    SkippedCall,
}

const KINDS: [Kind; 6] = [
    Kind::Op,
    Kind::Dtype,
    Kind::Count,
    Kind::Root,
    Kind::Collective,
    Kind::SkippedCall,
];

fn config() -> Config {
    Config {
        // A hang would end in Timeout, which the checks below reject.
        timeout: Duration::from_secs(20),
        ..Config::default()
    }
}

/// One rank's calls: `odd` is the rank that differs; `count` elements per call.
fn calls(comm: &mut Communicator, kind: Kind, odd: bool, count: usize) -> mixccl::Result<()> {
    let n = comm.nranks();
    let mut f = vec![1.0f32; count];
    match kind {
        Kind::Op => {
            let op = if odd { ReduceOp::Max } else { ReduceOp::Sum };
            comm.all_reduce_in_place(&mut f, op)
        }
        Kind::Dtype if odd => {
            // The same number of bytes as the others' f32 call, but f64 elements.
            let mut d = vec![1.0f64; count / 2];
            comm.all_reduce_in_place(&mut d, ReduceOp::Sum)
        }
        Kind::Dtype => comm.all_reduce_in_place(&mut f[..count / 2 * 2], ReduceOp::Sum),
        Kind::Count => {
            let c = if odd { count - 1 } else { count };
            comm.all_reduce_in_place(&mut f[..c], ReduceOp::Sum)
        }
        Kind::Root => {
            let root = if odd { 1 % n } else { 0 };
            comm.broadcast_in_place(&mut f, root)
        }
        Kind::Collective if odd => {
            let mut g = vec![0.0f32; count * n];
            comm.all_gather(&f, &mut g)
        }
        Kind::Collective => comm.all_reduce_in_place(&mut f, ReduceOp::Sum),
        Kind::SkippedCall => {
            if !odd {
                comm.all_reduce_in_place(&mut f[..count / 2], ReduceOp::Sum)?;
            }
            comm.all_reduce_in_place(&mut f, ReduceOp::Sum)
        }
    }
}

#[test]
fn every_mismatch_kind_is_reported_on_every_rank() {
    // 1000 floats run the direct algorithm (every rank talks to every other); 100 000
    // run the ring, where only the odd rank's neighbours see its header and the rest
    // learn of it on the control channels.
    for count in [1000usize, 100_000] {
        for n in 2..=5 {
            for kind in KINDS {
                if matches!(kind, Kind::Root) && n < 2 {
                    continue;
                }
                let odd_rank = n - 1;
                let results = with_ranks(n, config(), |comm| {
                    let odd = comm.rank() == odd_rank;
                    // A rank whose part finished before the mismatch was found (a
                    // broadcast root) learns of it in its next call.
                    calls(comm, kind, odd, count).and_then(|_| comm.barrier())
                });
                for (rank, r) in results.into_iter().enumerate() {
                    match r {
                        Err(Error::Mismatch {
                            rank: a, peer: b, ..
                        }) => assert!(
                            a == odd_rank || b == odd_rank,
                            "{kind:?} n={n} count={count}: rank {rank}'s report names ranks \
                             {a} and {b}, not the odd rank {odd_rank}"
                        ),
                        other => panic!(
                            "{kind:?} n={n} count={count}: rank {rank} got {other:?}, \
                             expected Mismatch"
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn a_mismatch_names_both_calls_and_a_fresh_communicator_works() {
    let results = with_ranks(3, config(), |comm| {
        let odd = comm.rank() == 2;
        calls(comm, Kind::Count, odd, 4096)
    });
    let text = results[0].as_ref().unwrap_err().to_string();
    assert!(
        text.contains("allreduce") && text.contains("4096") && text.contains("4095"),
        "{text}"
    );
    // The communicators were dropped; new ones work.
    let sums = with_ranks(3, config(), |comm| {
        let mut v = vec![comm.rank() as u32 + 1; 77];
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        v
    });
    for v in sums {
        assert!(v.iter().all(|&x| x == 6), "{v:?}");
    }
}

#[test]
fn the_latch_returns_the_same_error_until_the_communicator_is_dropped() {
    let results = with_ranks(2, config(), |comm| {
        let odd = comm.rank() == 1;
        let first = calls(comm, Kind::Op, odd, 10).unwrap_err();
        let mut v = vec![1u8; 4];
        let second = comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap_err();
        (first.to_string(), second.to_string())
    });
    for (first, second) in results {
        assert_eq!(first, second);
    }
}

#[test]
fn point_to_point_calls_need_not_be_made_by_every_rank() {
    // Rank 0 sends to rank 1 twice; rank 2 takes no part; then all run a collective.
    let results = with_ranks(3, config(), |comm| {
        let mut buf = [comm.rank() as u8; 16];
        match comm.rank() {
            0 => {
                comm.send(&buf, 1)?;
                comm.send(&buf, 1)?;
            }
            1 => {
                comm.recv(&mut buf, 0)?;
                comm.recv(&mut buf, 0)?;
            }
            _ => {}
        }
        let mut v = [1u32; 5];
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum)?;
        Ok::<_, Error>((buf, v))
    });
    for (rank, r) in results.into_iter().enumerate() {
        let (buf, v) = r.unwrap_or_else(|e| panic!("rank {rank}: {e}"));
        assert_eq!(v, [3; 5]);
        if rank == 1 {
            assert_eq!(buf, [0; 16]);
        }
    }
}

#[test]
fn mismatched_point_to_point_sizes_are_reported() {
    let results = with_ranks(2, config(), |comm| {
        if comm.rank() == 0 {
            comm.send(&[7u8; 100], 1)
        } else {
            let mut b = [0u8; 64];
            comm.recv(&mut b, 0)
        }
    });
    for r in results {
        assert!(matches!(r, Err(Error::Mismatch { .. })), "{r:?}");
    }
}

/// After a rank is lost mid-job, the survivors shrink (no new unique id) and run a
/// correct all-reduce among themselves; over shared memory and over TCP.
#[test]
fn survivors_shrink_and_carry_on() {
    for tcp in [false, true] {
        let config = Config {
            timeout: Duration::from_secs(20),
            shm_disable: tcp,
            ..Config::default()
        };
        let results = util::bootstrapped_ranks(4, config, |comm| {
            let mut v = vec![1.0f32; 100_000];
            comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
            if comm.rank() == 2 {
                // Rank 2 leaves: its communicator is gone mid-job.
                return None;
            }
            // The others' next call fails, naming rank 2.
            let err = comm
                .all_reduce_in_place(&mut v, ReduceOp::Sum)
                .expect_err("rank 2 is gone");
            assert!(
                matches!(err, Error::PeerLost { rank: 2, .. }),
                "rank {}: {err:?}",
                comm.rank()
            );
            let mut small = comm.shrink(&[2]).expect("shrink");
            assert_eq!(small.nranks(), 3);
            let mut w: Vec<f32> = (0..1031).map(|i| (i + small.rank()) as f32).collect();
            small.all_reduce_in_place(&mut w, ReduceOp::Sum).unwrap();
            Some((small.rank(), w))
        });
        let mut seen = Vec::new();
        for r in results.into_iter().flatten() {
            let (rank, w) = r;
            seen.push(rank);
            for (i, x) in w.iter().enumerate() {
                assert_eq!(
                    *x,
                    (3 * i + 3) as f32,
                    "tcp={tcp} new rank {rank} element {i}"
                );
            }
        }
        seen.sort();
        assert_eq!(seen, [0, 1, 2], "tcp={tcp}");
    }
}

#[test]
fn shrink_arguments_are_checked() {
    let results = util::bootstrapped_ranks(2, config(), |comm| {
        let me = comm.rank();
        (
            comm.shrink(&[me]).map(|_| ()).unwrap_err().to_string(),
            comm.shrink(&[7]).map(|_| ()).unwrap_err().to_string(),
        )
    });
    for (a, b) in results {
        assert!(a.contains("excludes itself"), "{a}");
        assert!(b.contains("out of range"), "{b}");
    }
    let mut comms = Communicator::in_process(2, config()).unwrap();
    assert!(comms[0].shrink(&[1]).is_err());
}
