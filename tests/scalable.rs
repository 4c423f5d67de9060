//! `Communicator::init_scalable` (NCCL's `ncclCommInitRankScalable`): ranks that are
//! threads of this process join through 1, 2 or 3 roots on loopback over 1 to 13
//! ranks and run checked all-reduces; a rank with another count of ids, or the same
//! ids in another order, is refused with an error saying so, and every other rank
//! fails within the timeout; a root that is gone fails the ranks of its slice by
//! name and the others by the slice root 0 never got.

mod util;

use mixccl::{Communicator, Config, Error, ReduceOp, UniqueId};
use std::time::{Duration, Instant};
use util::*;

fn config(timeout_s: u64) -> Config {
    Config {
        timeout: Duration::from_secs(timeout_s),
        shm_disable: true,
        ..Config::default()
    }
}

fn roots(n: usize, config: &Config) -> Vec<UniqueId> {
    (0..n)
        .map(|_| UniqueId::bind_with("127.0.0.1:0".parse().unwrap(), config).expect("bind a root"))
        .collect()
}

/// Inits rank `r` with `ids_of(r)`, all ranks at once (rank `late`, if any, 500 ms
/// after the others); each rank's outcome and how long init took.
fn init_all(
    n: usize,
    config: &Config,
    ids_of: impl Fn(usize) -> Vec<UniqueId> + Sync,
    late: Option<usize>,
) -> Vec<(Result<Communicator, Error>, Duration)> {
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..n)
            .map(|rank| {
                let (ids, config) = (ids_of(rank), config.clone());
                s.spawn(move || {
                    if late == Some(rank) {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    let start = Instant::now();
                    let c = Communicator::init_scalable(rank, n, &ids, config);
                    (c, start.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn one_two_and_three_roots_reduce_right_over_many_rank_counts() {
    let config = config(30);
    for nroots in 1..=3 {
        // 13 ranks on 3 roots: slices of 5, 4 and 4 (more ranks than roots x 2).
        for n in [1usize, 2, 3, 5, 8, 13] {
            if nroots > n {
                continue;
            }
            let ids = roots(nroots, &config);
            let errs: Vec<Vec<String>> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|rank| {
                        let (ids, config) = (&ids, config.clone());
                        s.spawn(move || {
                            let mut comm = Communicator::init_scalable(rank, n, ids, config)
                                .unwrap_or_else(|e| {
                                    panic!("{nroots} roots, rank {rank} of {n}: {e}")
                                });
                            assert_eq!((comm.rank(), comm.nranks()), (rank, n));
                            let mut errs = Vec::new();
                            for in_place in [false, true] {
                                errs.extend(check_all_reduce::<f32>(
                                    &mut comm,
                                    ReduceOp::Sum,
                                    1031,
                                    in_place,
                                ));
                            }
                            errs.extend(check_all_reduce::<i64>(
                                &mut comm,
                                ReduceOp::Max,
                                7,
                                false,
                            ));
                            errs
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (rank, e) in errs.iter().enumerate() {
                assert!(
                    e.is_empty(),
                    "{nroots} roots, {n} ranks, rank {rank}: {e:?}"
                );
            }
        }
    }
}

/// Every rank fails within the bound; returns their messages.
fn all_fail(
    outcomes: Vec<(Result<Communicator, Error>, Duration)>,
    bound: Duration,
) -> Vec<String> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(rank, (r, took))| {
            let e = match r {
                Ok(_) => panic!("rank {rank} joined a communicator whose ids disagree"),
                Err(e) => e.to_string(),
            };
            assert!(took < bound, "rank {rank} took {took:?} to fail: {e}");
            e
        })
        .collect()
}

#[test]
fn a_rank_with_another_count_of_ids_is_refused_and_no_rank_hangs() {
    let timeout = 3;
    let config = config(timeout);
    let ids = roots(2, &config);
    // Ranks 0-1 join root 0, ranks 2-3 root 1; rank 1 comes late with the first id
    // only (nId 1) and so meets root 0 with another count.
    let outcomes = init_all(
        4,
        &config,
        |r| match r {
            1 => ids[..1].to_vec(),
            _ => ids.clone(),
        },
        Some(1),
    );
    let late = outcomes[1].1;
    let errs = all_fail(outcomes, Duration::from_secs(timeout + 12));
    assert!(
        errs[1].contains("refused rank 1")
            && errs[1].contains("1 id")
            && errs[1].contains("earlier ranks with 2 ids"),
        "{}",
        errs[1]
    );
    assert!(late < Duration::from_secs(2), "the refusal took {late:?}");
    // The others learn that rank 1 is missing, and why.
    for r in [0, 2, 3] {
        assert!(errs[r].contains('1'), "rank {r}: {}", errs[r]);
    }
    assert!(errs[0].contains("refused"), "{}", errs[0]);
}

#[test]
fn a_rank_with_the_ids_in_another_order_is_refused() {
    let timeout = 3;
    let config = config(timeout);
    let ids = roots(2, &config);
    // Rank 3 lists them swapped: as root 1 it picks ids[1], which is root 0's id,
    // whose ranks listed them the right way round.
    let swapped = vec![ids[1], ids[0]];
    let outcomes = init_all(
        4,
        &config,
        |r| match r {
            3 => swapped.clone(),
            _ => ids.clone(),
        },
        Some(3),
    );
    let errs = all_fail(outcomes, Duration::from_secs(timeout + 12));
    assert!(
        errs[3].contains("refused rank 3") && errs[3].contains("another order"),
        "{}",
        errs[3]
    );
}

#[test]
fn a_root_that_is_gone_fails_every_rank_by_name() {
    let timeout = 3;
    let config = config(timeout);
    let mut ids = roots(2, &config);
    // Root 1 served a one-rank communicator and has stopped listening.
    drop(Communicator::init(0, 1, &ids[1], config.clone()).unwrap());
    let gone = ids[1].root_addr();
    ids = vec![ids[0], ids[1]];
    let outcomes = init_all(4, &config, |_| ids.clone(), None);
    let errs = all_fail(outcomes, Duration::from_secs(timeout + 12));
    for r in [2, 3] {
        assert!(
            errs[r].contains(&gone.to_string()) && errs[r].contains("root 1 of 2"),
            "rank {r}: {}",
            errs[r]
        );
    }
    for r in [0, 1] {
        assert!(
            errs[r].contains("[2, 3]") && errs[r].contains("roots [1] of 2 sent no slice"),
            "rank {r}: {}",
            errs[r]
        );
    }
}

#[test]
fn bad_id_lists_are_refused_before_any_wait() {
    let config = config(3);
    let ids = roots(2, &config);
    let start = Instant::now();
    for (n, list, word) in [
        (1, ids.clone(), "2 unique ids for 1 ranks"),
        (3, vec![], "0 unique ids"),
        (3, vec![ids[0], ids[0]], "the same id"),
    ] {
        match Communicator::init_scalable(0, n, &list, config.clone()) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(word), "{m}"),
            Err(e) => panic!("{word}: {e:?}"),
            Ok(_) => panic!("{word}: accepted"),
        }
    }
    assert!(start.elapsed() < Duration::from_secs(1));
}
