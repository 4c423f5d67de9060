//! Argument validation and failure reporting on in-process communicators: every
//! unusable argument is `Error::InvalidArgument` naming what is wrong, is rejected
//! before any communication (so the communicator stays usable), and never panics.
//! Also: a lost peer is `Error::PeerLost` naming it and latches; an abort from
//! another thread ends a blocked collective with `Error::Aborted`.

mod util;

use mixccl::transport::mem;
use mixccl::transport::Link;
use mixccl::{Communicator, Config, Error, LaunchEnv, ReduceOp};
use std::time::{Duration, Instant};
use util::*;

fn config() -> Config {
    Config {
        timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// Asserts `r` is `InvalidArgument` whose message contains every one of `needles`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(r: mixccl::Result<T>, needles: &[&str]) {
    match r {
        Err(Error::InvalidArgument(msg)) => {
            for n in needles {
                assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
            }
        }
        other => panic!("expected InvalidArgument mentioning {needles:?}, got {other:?}"),
    }
}

/// Runs `bad` on every rank of an `n`-rank in-process communicator, then a checked
/// all_reduce, which must succeed everywhere: the rejected call left no trace.
fn rejected_then_usable(n: usize, bad: impl Fn(&mut Communicator) + Sync) {
    let errs = with_ranks(n, config(), |comm| {
        bad(comm);
        assert!(comm.error().is_none(), "a rejected call latched an error");
        let mut e: Vec<String> = Vec::new();
        e.extend(check_all_reduce::<f32>(comm, ReduceOp::Sum, 1031, false));
        e.extend(check_all_reduce::<i32>(comm, ReduceOp::Max, 7, true));
        e
    });
    let errs: Vec<String> = errs.into_iter().flatten().collect();
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn zero_ranks_in_process() {
    assert_invalid(Communicator::in_process(0, config()), &["nranks"]);
}

#[test]
fn with_links_checks_rank_and_links() {
    // Rank out of range.
    let mut m = mem::mesh(2, 1, 1024).unwrap();
    let links = |v: Vec<Option<mem::MemLink>>| -> Vec<Option<Box<dyn Link>>> {
        v.into_iter()
            .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
            .collect()
    };
    let r0 = links(std::mem::take(&mut m[0]));
    assert_invalid(
        Communicator::with_links(2, r0, config()),
        &["rank 2", "2 ranks"],
    );
    let r1 = links(std::mem::take(&mut m[1]));
    assert_invalid(
        Communicator::with_links(7, r1, config()),
        &["rank 7", "2 ranks"],
    );
    // No links at all.
    assert_invalid(
        Communicator::with_links(0, Vec::new(), config()),
        &["nranks"],
    );
    // A missing link, and links in the wrong slots.
    let mut m = mem::mesh(3, 1, 1024).unwrap();
    let mut r0 = links(std::mem::take(&mut m[0]));
    r0[2] = None;
    assert_invalid(
        Communicator::with_links(0, r0, config()),
        &["rank 0", "rank 2"],
    );
    let mut r1 = links(std::mem::take(&mut m[1]));
    r1.swap(0, 2);
    assert_invalid(
        Communicator::with_links(1, r1, config()),
        &["links[0]", "rank 2"],
    );
    // A link to itself: rank 2's links used as rank 0's.
    let r2 = links(std::mem::take(&mut m[2]));
    assert_invalid(
        Communicator::with_links(0, r2, config()),
        &["rank 0", "itself"],
    );
}

#[test]
fn all_reduce_length_mismatch() {
    rejected_then_usable(3, |comm| {
        let r = comm.rank().to_string();
        let send = vec![1.0f32; 5];
        let mut recv = vec![0.0f32; 4];
        assert_invalid(
            comm.all_reduce(&send, &mut recv, ReduceOp::Sum),
            &["all_reduce", &format!("rank {r}"), "5", "4"],
        );
        let mut recv = vec![0.0f32; 6];
        assert_invalid(
            comm.all_reduce(&send, &mut recv, ReduceOp::Max),
            &["5", "6"],
        );
    });
}

#[test]
fn all_gather_recv_wrong_size() {
    rejected_then_usable(3, |comm| {
        let send = vec![1i32; 4];
        let mut recv = vec![0i32; 11];
        assert_invalid(
            comm.all_gather(&send, &mut recv),
            &[
                "all_gather",
                &format!("rank {}", comm.rank()),
                "11",
                "3",
                "4",
            ],
        );
        let mut recv = vec![0i32; 13];
        assert_invalid(comm.all_gather(&send, &mut recv), &["13"]);
        let mut buf = vec![0i32; 10];
        assert_invalid(comm.all_gather_in_place(&mut buf), &["10", "3"]);
    });
}

#[test]
fn reduce_scatter_send_not_nranks_times_recv() {
    rejected_then_usable(4, |comm| {
        let send = vec![1.0f64; 15];
        let mut recv = vec![0.0f64; 4];
        assert_invalid(
            comm.reduce_scatter(&send, &mut recv, ReduceOp::Sum),
            &[
                "reduce_scatter",
                &format!("rank {}", comm.rank()),
                "15",
                "4",
            ],
        );
        let mut buf = vec![0.0f64; 14];
        assert_invalid(
            comm.reduce_scatter_in_place(&mut buf, ReduceOp::Sum),
            &["14", "4"],
        );
    });
}

#[test]
fn all_to_all_not_a_multiple_of_nranks() {
    rejected_then_usable(3, |comm| {
        let send = vec![1u8; 10];
        let mut recv = vec![0u8; 10];
        assert_invalid(
            comm.all_to_all(&send, &mut recv),
            &["all_to_all", &format!("rank {}", comm.rank()), "10", "3"],
        );
        let mut recv = [0u8; 9];
        assert_invalid(comm.all_to_all(&send[..9], &mut recv[..6]), &["9", "6"]);
        assert_invalid(comm.all_to_all_in_place(&mut recv[..8]), &["8", "3"]);
    });
}

#[test]
fn root_out_of_range() {
    rejected_then_usable(3, |comm| {
        let send = vec![1.0f32; 8];
        let mut recv = vec![0.0f32; 8];
        assert_invalid(
            comm.broadcast(&send, &mut recv, 3),
            &["broadcast", "root", "3", "3 ranks"],
        );
        assert_invalid(comm.broadcast_in_place(&mut recv, 99), &["root", "99"]);
        assert_invalid(
            comm.reduce(&send, &mut recv, ReduceOp::Sum, 3),
            &["reduce", "root", "3", "3 ranks"],
        );
        assert_invalid(
            comm.reduce_in_place(&mut recv, ReduceOp::Min, usize::MAX),
            &["root", &usize::MAX.to_string()],
        );
        // The root's own buffers must agree.
        if comm.rank() == 1 {
            assert_invalid(
                comm.broadcast(&send[..7], &mut recv, 1),
                &["root rank 1", "7", "8"],
            );
            assert_invalid(
                comm.reduce(&send, &mut recv[..2], ReduceOp::Sum, 1),
                &["root rank 1", "8", "2"],
            );
        }
    });
}

#[test]
fn peer_out_of_range_or_self() {
    rejected_then_usable(2, |comm| {
        let r = comm.rank();
        let send = vec![1i64; 3];
        let mut recv = vec![0i64; 3];
        assert_invalid(comm.send(&send, 2), &["peer", "2", "2 ranks"]);
        assert_invalid(comm.recv(&mut recv, 5), &["peer", "5"]);
        assert_invalid(comm.send_recv(&send, 1 - r, &mut recv, 9), &["peer", "9"]);
        assert_invalid(comm.send_recv(&send, 9, &mut recv, 1 - r), &["peer", "9"]);
        assert_invalid(comm.send(&send, r), &[&format!("rank {r}"), "itself"]);
        assert_invalid(comm.recv(&mut recv, r), &[&format!("rank {r}"), "itself"]);
        assert_invalid(
            comm.send_recv(&send, r, &mut recv, 1 - r),
            &[&format!("rank {r}"), "itself"],
        );
        let mut short = vec![0i64; 2];
        assert_invalid(
            comm.send_recv(&send, 1 - r, &mut short, 1 - r),
            &["send_recv", "3", "2"],
        );
    });
}

#[test]
fn config_validation() {
    let bad = [
        (
            Config {
                nsocks: 0,
                ..config()
            },
            "nsocks",
        ),
        (
            Config {
                nsocks: 65,
                ..config()
            },
            "nsocks",
        ),
        (
            Config {
                chunk_bytes: 1,
                ..config()
            },
            "chunk_bytes",
        ),
        (
            Config {
                timeout: Duration::ZERO,
                ..config()
            },
            "timeout",
        ),
    ];
    for (c, what) in bad {
        assert_invalid(c.validate(), &[what]);
        assert_invalid(Communicator::in_process(2, c.clone()), &[what]);
        assert_invalid(Communicator::in_process(1, c), &[what]);
    }
    assert!(config().validate().is_ok());
}

#[test]
fn env_values_name_the_variable() {
    for (var, value) in [
        ("MIXCCL_NSOCKS", "abc"),
        ("MIXCCL_NSOCKS", "0"),
        ("MIXCCL_NSOCKS", "65"),
        ("MIXCCL_TIMEOUT", "0"),
        ("MIXCCL_TIMEOUT", "-3"),
        ("MIXCCL_TIMEOUT", "soon"),
        ("MIXCCL_TIMEOUT", "inf"),
        ("MIXCCL_TIMEOUT", "NaN"),
        ("MIXCCL_CHUNK_SIZE", "1"),
        ("MIXCCL_CHUNK_SIZE", "12Q"),
        ("MIXCCL_SOCKET_BUFFER", "lots"),
        ("MIXCCL_DIRECT_MAX_BYTES", "-1"),
        ("MIXCCL_ALGO", "allreduce:fastest"),
        ("MIXCCL_ALGO", "everything:ring"),
        ("MIXCCL_DEBUG", "LOUD"),
    ] {
        let r = Config::default().with_env(|k| (k == var).then(|| value.to_string()));
        assert_invalid(r, &[var]);
    }
    // Unset and valid variables still work.
    let c = Config::default()
        .with_env(|k| (k == "MIXCCL_NSOCKS").then(|| " 3 ".to_string()))
        .unwrap();
    assert_eq!(c.nsocks, 3);
}

fn detect(pairs: &[(&str, &str)]) -> mixccl::Result<LaunchEnv> {
    LaunchEnv::detect(|k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

#[test]
fn launch_env_missing_or_garbled() {
    let root = ("MIXCCL_ROOT", "127.0.0.1:29500");
    assert_invalid(detect(&[]), &["MIXCCL_RANK", "MIXCCL_NRANKS"]);
    assert_invalid(
        detect(&[("MIXCCL_RANK", "one"), ("MIXCCL_NRANKS", "2"), root]),
        &["MIXCCL_RANK", "one"],
    );
    assert_invalid(
        detect(&[("MIXCCL_RANK", "0"), ("MIXCCL_NRANKS", "-2"), root]),
        &["MIXCCL_NRANKS", "-2"],
    );
    assert_invalid(
        detect(&[("MIXCCL_RANK", "3"), ("MIXCCL_NRANKS", "3"), root]),
        &["rank 3 of 3"],
    );
    assert_invalid(
        detect(&[("MIXCCL_RANK", "0"), ("MIXCCL_NRANKS", "0"), root]),
        &["0 ranks"],
    );
    // Only the rank: no launcher is complete.
    assert_invalid(detect(&[("MIXCCL_RANK", "0"), root]), &["MIXCCL_NRANKS"]);
    // A rank and size but nowhere to meet.
    assert_invalid(
        detect(&[("MIXCCL_RANK", "0"), ("MIXCCL_NRANKS", "2")]),
        &["MIXCCL_ROOT", "MIXCCL_UNIQUE_ID"],
    );
    // Addresses that cannot be parsed (none needs a name lookup).
    for bad in ["127.0.0.1", "127.0.0.1:99999", "127.0.0.1:port", ":"] {
        assert_invalid(
            detect(&[
                ("MIXCCL_RANK", "0"),
                ("MIXCCL_NRANKS", "2"),
                ("MIXCCL_ROOT", bad),
            ]),
            &["MIXCCL_ROOT", bad],
        );
    }
    assert_invalid(
        detect(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "http"),
        ]),
        &["MASTER_PORT", "http"],
    );
    assert_invalid(
        detect(&[
            ("OMPI_COMM_WORLD_RANK", "0"),
            ("OMPI_COMM_WORLD_SIZE", "x"),
            root,
        ]),
        &["OMPI_COMM_WORLD_SIZE"],
    );
    assert!(matches!(
        detect(&[
            ("MIXCCL_RANK", "0"),
            ("MIXCCL_NRANKS", "2"),
            ("MIXCCL_UNIQUE_ID", "00ff")
        ]),
        Err(Error::InvalidUniqueId(_))
    ));
    // And a complete environment is accepted.
    let e = detect(&[("MIXCCL_RANK", "1"), ("MIXCCL_NRANKS", "2"), root]).unwrap();
    assert_eq!((e.rank, e.nranks, e.launcher), (1, 2, "mixccl"));
}

#[test]
fn a_dropped_peer_is_peer_lost_and_latches() {
    let mut comms = Communicator::in_process(2, config()).unwrap();
    let mut survivor = comms.remove(0);
    let mut peer = comms.remove(0);
    // One successful collective first: the job was under way.
    std::thread::scope(|s| {
        let h = s.spawn(|| check_all_reduce::<f32>(&mut peer, ReduceOp::Sum, 1031, false));
        assert_eq!(
            check_all_reduce::<f32>(&mut survivor, ReduceOp::Sum, 1031, false),
            None
        );
        assert_eq!(h.join().unwrap(), None);
    });
    drop(peer);
    let start = Instant::now();
    let mut buf = vec![1.0f32; 1031];
    let first = survivor.all_reduce_in_place(&mut buf, ReduceOp::Sum);
    match &first {
        Err(Error::PeerLost { rank: 1, .. }) => {}
        other => panic!("expected PeerLost naming rank 1, got {other:?}"),
    }
    assert!(first
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("peer rank 1"));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Latched: every later call fails with the same error, at once.
    let latched = first.unwrap_err().to_string();
    assert_eq!(
        survivor.error().map(|e| e.to_string()),
        Some(latched.clone())
    );
    let again = survivor.barrier();
    assert!(
        matches!(again, Err(Error::PeerLost { rank: 1, .. })),
        "{again:?}"
    );
    assert_eq!(again.unwrap_err().to_string(), latched);
    let mut out = vec![0.0f32; 1031];
    let third = survivor.all_reduce(&buf, &mut out, ReduceOp::Max);
    assert_eq!(third.unwrap_err().to_string(), latched);
}

#[test]
fn survivors_of_three_name_the_dropped_rank() {
    let mut comms = Communicator::in_process(3, config()).unwrap();
    drop(comms.pop());
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = comms
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    let mut buf = vec![1i32; 7];
                    let start = Instant::now();
                    (
                        c.all_reduce_in_place(&mut buf, ReduceOp::Sum),
                        start.elapsed(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, (r, elapsed)) in results.into_iter().enumerate() {
        match r {
            Err(Error::PeerLost { rank: 2, .. }) => {}
            other => panic!("rank {rank}: expected PeerLost naming rank 2, got {other:?}"),
        }
        assert!(elapsed < Duration::from_secs(2), "rank {rank}: {elapsed:?}");
    }
}

#[test]
fn abort_ends_a_blocked_collective() {
    let mut comms = Communicator::in_process(
        2,
        Config {
            timeout: Duration::from_secs(30),
            ..Config::default()
        },
    )
    .unwrap();
    let mut waiter = comms.remove(0);
    let sleeper = comms.remove(0);
    let handle = waiter.abort_handle();
    let (result, after_abort) = std::thread::scope(|s| {
        // The peer never joins the collective: it sleeps, then goes away.
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            drop(sleeper);
        });
        let h = s.spawn(move || {
            let mut buf = vec![1.0f32; 1 << 16];
            let r = waiter.all_reduce_in_place(&mut buf, ReduceOp::Sum);
            let done = Instant::now();
            let later = waiter.barrier();
            (r, done, later)
        });
        std::thread::sleep(Duration::from_millis(300));
        let aborted_at = Instant::now();
        handle.abort();
        let (r, done, later) = h.join().unwrap();
        ((r, later), done.saturating_duration_since(aborted_at))
    });
    let (r, later) = result;
    assert!(matches!(r, Err(Error::Aborted)), "{r:?}");
    assert!(
        after_abort < Duration::from_secs(1),
        "the abort took {after_abort:?} to end the collective"
    );
    assert!(matches!(later, Err(Error::Aborted)), "{later:?}");
}
