//! Links made on first use (issue 17), over TCP and over shared memory: a
//! communicator that only runs ring algorithms links each rank to its two ring
//! neighbours and nobody else; a peer that dies before anyone connected to it is named by the next rank
//! that needs it, within `MIXCCL_TIMEOUT`, whichever end dials (over shared memory:
//! whichever end offers); shrink and split work after lazy links; a rank short of
//! file descriptors fails at init naming the limit; init's own all-reduces run over
//! the tree, so right after init a rank is linked to its tree neighbours only.

mod util;

use mixccl::transport::LinkClass;
use mixccl::{AlgoOverride, Communicator, Config, Error, ReduceOp, UniqueId};
use std::collections::BTreeSet;
use std::sync::Barrier;
use std::time::{Duration, Instant};

fn tcp_config(algo: &str, timeout_s: u64) -> Config {
    Config {
        shm_disable: true,
        ..shm_config(algo, timeout_s)
    }
}

/// Shared memory between the ranks (all on this host), small rings and board.
fn shm_config(algo: &str, timeout_s: u64) -> Config {
    Config {
        timeout: Duration::from_secs(timeout_s),
        topo_probe: false,
        shm_buffer: 64 << 10,
        board_bytes: Some(64 << 10),
        algo: AlgoOverride::parse(algo).expect("algo override"),
        ..Config::default()
    }
}

/// The peers this rank holds a link to.
fn linked(comm: &Communicator) -> BTreeSet<usize> {
    comm.link_classes()
        .iter()
        .enumerate()
        .filter_map(|(p, c)| c.map(|_| p))
        .collect()
}

#[test]
fn ring_algorithms_link_only_ring_neighbours() {
    ring_links_only_neighbours(tcp_config(
        "allreduce:ring;allgather:ring;broadcast:chain",
        60,
    ));
}

/// The shared-memory rings of a host are made on first use too: one per ring
/// neighbour, none to the other 13 ranks of the host.
#[test]
fn shm_ring_algorithms_link_only_ring_neighbours() {
    ring_links_only_neighbours(shm_config(
        "allreduce:ring;allgather:ring;broadcast:chain",
        60,
    ));
}

fn ring_links_only_neighbours(config: Config) {
    let n = 16;
    let class = if config.shm_disable {
        LinkClass::Tcp
    } else {
        LinkClass::Shm
    };
    let results = util::bootstrapped_ranks(n, config, |comm| {
        let r = comm.rank();
        let mut v: Vec<u64> = (0..1000).map(|i| (i * r) as u64).collect();
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        let sum = (n * (n - 1) / 2) as u64;
        let reduced_ok = v.iter().enumerate().all(|(i, x)| *x == i as u64 * sum);
        let mut all = vec![0u32; 3 * n];
        comm.all_gather(&[r as u32, 7, r as u32 * 2], &mut all)
            .unwrap();
        let gathered_ok = (0..n).all(|q| all[3 * q..3 * q + 3] == [q as u32, 7, q as u32 * 2]);
        let mut b = vec![if r == 5 { 9u8 } else { 0 }; 4096];
        comm.broadcast_in_place(&mut b, 5).unwrap();
        let broadcast_ok = b.iter().all(|x| *x == 9);
        let classes: std::collections::HashSet<LinkClass> =
            comm.link_classes().into_iter().flatten().collect();
        (
            r,
            reduced_ok && gathered_ok && broadcast_ok,
            linked(comm),
            classes,
        )
    });
    for (r, ok, peers, classes) in results {
        assert!(ok, "rank {r}: wrong result");
        let want: BTreeSet<usize> = [(r + 1) % n, (r + n - 1) % n].into();
        assert_eq!(peers, want, "rank {r} links");
        assert_eq!(classes, [class].into(), "rank {r} link classes");
    }
}

/// Init's own all-reduces (the model's fingerprint and measured figures, the
/// islands' vendor code, the final check) go over the tree with the default
/// algorithms: right after init, before any call, each of 32 ranks over TCP is
/// linked to at most 2 log2(n) + 2 peers (its tree neighbours, its measurement
/// partner), not to all 31. The first small all-reduce after init is direct, as
/// before, and links every pair.
#[test]
fn init_links_only_tree_neighbours() {
    init_links_tree_neighbours(
        32,
        Config {
            shm_disable: true,
            timeout: Duration::from_secs(60),
            ..Config::default()
        },
    );
}

/// As above over shared memory (16 ranks of one host, the host's board on).
#[test]
fn init_links_only_tree_neighbours_over_shm() {
    init_links_tree_neighbours(
        16,
        Config {
            timeout: Duration::from_secs(60),
            ..Config::default()
        },
    );
}

fn init_links_tree_neighbours(n: usize, config: Config) {
    let tcp = config.shm_disable;
    let results = util::bootstrapped_ranks(n, config, |comm| {
        let at_init = linked(comm);
        let mut v = [comm.rank() as u64];
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        (comm.rank(), at_init, v[0], linked(comm).len())
    });
    let bound = 2 * n.ilog2() as usize + 2;
    let mut ends = 0;
    let most = results.iter().map(|t| t.1.len()).max().unwrap_or(0);
    for (r, at_init, sum, after) in results {
        assert!(
            at_init.len() <= bound,
            "rank {r}: {} peers linked at init (at most {bound}): {at_init:?}",
            at_init.len()
        );
        assert_eq!(sum, (n * (n - 1) / 2) as u64, "rank {r}");
        if tcp {
            assert_eq!(
                after,
                n - 1,
                "rank {r}: a small all-reduce links every peer"
            );
        }
        ends += at_init.len();
    }
    // A tree has n - 1 edges; the measurement may add one pair.
    assert!(ends / 2 <= n, "{} pairs linked at init", ends / 2);
    println!(
        "{n} ranks ({}): {} pairs linked right after init, at most {most} per rank",
        if tcp { "tcp" } else { "shm" },
        ends / 2
    );
}

/// Ring of 5: ranks 0 and 4 never linked to rank 2. Rank 2 leaves (its
/// communicator and listener closed); then rank 0 (which would accept rank 2's
/// connection) and rank 4 (which would dial rank 2) each send to it and must fail
/// naming rank 2: rank 4 (the dialing end) at once, its connection refused
/// (`PeerLost`), rank 0 when the timeout is up or, sooner, when rank 4's report of
/// the loss reaches it over their ring link.
#[test]
fn a_never_connected_dead_peer_is_named_within_the_timeout() {
    never_connected_dead_peer_is_named(tcp_config("allreduce:ring;allgather:ring", 3));
}

/// As above over shared memory, where the lower rank offers: rank 0 offers to rank
/// 2's listener, which is gone (`PeerLost` at once), rank 4 waits for rank 2's offer
/// until the timeout or rank 0's report.
#[test]
fn a_never_connected_dead_shm_peer_is_named_within_the_timeout() {
    never_connected_dead_peer_is_named(shm_config("allreduce:ring;allgather:ring", 3));
}

fn never_connected_dead_peer_is_named(config: Config) {
    let shm = !config.shm_disable;
    let timeout = config.timeout.as_secs();
    let n = 5;
    let id = UniqueId::bind_with("127.0.0.1:0".parse().unwrap(), &config).unwrap();
    let gone = Barrier::new(n);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|r| {
                let (id, config, gone) = (&id, config.clone(), &gone);
                s.spawn(move || {
                    let mut comm = Communicator::init(r, n, id, config).unwrap();
                    let mut v = [r as u32];
                    comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                    assert_eq!(v, [10]);
                    let peers = linked(&comm);
                    if r == 2 {
                        drop(comm);
                        gone.wait();
                        return None;
                    }
                    gone.wait();
                    if r == 1 || r == 3 {
                        return None;
                    }
                    assert!(!peers.contains(&2), "rank {r}: {peers:?}");
                    let start = Instant::now();
                    let err = comm.send(&[1u8; 16], 2).expect_err("rank 2 is gone");
                    Some((r, err, start.elapsed()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let results: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(results.len(), 2);
    let dialer = if shm { 0 } else { 4 };
    for (r, err, took) in results {
        if r == dialer {
            assert!(
                matches!(&err, Error::PeerLost { rank: 2, .. }),
                "rank {r}: {err:?}"
            );
            assert!(
                took < Duration::from_secs(timeout),
                "rank {r} took {took:?}"
            );
            continue;
        }
        assert!(
            matches!(&err, Error::Timeout { waiting_for, .. } if waiting_for == &[2])
                || matches!(&err, Error::PeerLost { rank: 2, .. }),
            "rank {r}: {err:?}"
        );
        // A bound on a bounded wait, not a speed figure: timeout plus generous slack.
        assert!(
            took < Duration::from_secs(timeout + 10),
            "rank {r} took {took:?}"
        );
    }
}

#[test]
fn shrink_and_split_work_after_lazy_links() {
    shrink_and_split_work(tcp_config("allreduce:ring;allgather:ring", 30));
}

/// Over shared memory, with the host's board handed out again by the shrunk
/// communicator's rank 0.
#[test]
fn shrink_and_split_work_after_lazy_shm_links() {
    shrink_and_split_work(shm_config("allreduce:ring;allgather:ring", 30));
}

fn shrink_and_split_work(config: Config) {
    let results = util::bootstrapped_ranks(6, config, |comm| {
        let r = comm.rank();
        let mut v = vec![1.0f32; 1000];
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        assert!(v.iter().all(|x| *x == 6.0));
        // Split by parity: ranks 0,2,4 and 1,3,5, each a ring of 3.
        let mut half = comm
            .split(Some((r % 2) as u32), r as i64)
            .unwrap()
            .expect("a color");
        let mut h = [r as u64];
        half.all_reduce_in_place(&mut h, ReduceOp::Sum).unwrap();
        let half_ok = h[0] == if r % 2 == 0 { 6 } else { 9 };
        // Everyone but rank 5 shrinks (rank 5 leaves without a call).
        if r == 5 {
            return None;
        }
        let mut small = comm.shrink(&[5]).unwrap();
        let mut w: Vec<u64> = (0..777).map(|i| (i + small.rank()) as u64).collect();
        small.all_reduce_in_place(&mut w, ReduceOp::Sum).unwrap();
        let small_ok = w.iter().enumerate().all(|(i, x)| *x == 5 * i as u64 + 10);
        Some((r, half_ok, small_ok, linked(&small).len()))
    });
    let results: Vec<_> = results.into_iter().flatten().collect();
    assert_eq!(results.len(), 5);
    for (r, half_ok, small_ok, links) in results {
        assert!(half_ok, "rank {r}: split all-reduce wrong");
        assert!(small_ok, "rank {r}: shrunk all-reduce wrong");
        assert_eq!(links, 2, "rank {r}: a ring of 5 links two neighbours");
    }
}

/// A rank whose descriptor limit (soft and hard) cannot hold the links of a
/// 1024-rank job fails at init, naming RLIMIT_NOFILE, the limit and the need.
#[test]
fn a_low_descriptor_limit_fails_at_init_naming_it() {
    let port = util::processes::free_port();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} allreduce -b 8 -e 8",
            util::processes::PERF
        ))
        .env("MIXCCL_SHM_DISABLE", "1")
        .env("MIXCCL_TIMEOUT", "5")
        .env("MIXCCL_RANK", "0")
        .env("MIXCCL_NRANKS", "1024")
        .env("MIXCCL_ROOT", format!("127.0.0.1:{port}"))
        .output()
        .expect("run sh");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RLIMIT_NOFILE is 48 (hard 48)") && err.contains("needs about"),
        "{err}"
    );
}
