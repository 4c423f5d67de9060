//! Elastic communicators, ranks as threads over a real bootstrap (TCP, or shared
//! memory): grow after init and after a shrink (members keep their ranks, joiners
//! take the next ones, results checked on the grown communicator and on the parent),
//! the clear errors of a wrong or stale grow id and of a rank taken twice, and
//! revoke during a 64 MiB all-reduce on every rank, then a shrink to go on.

mod util;

use mixccl::{Communicator, Config, Error, Island, ReduceOp, UniqueId};
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};
use util::check_all_reduce;

fn config(shm: bool) -> Config {
    Config {
        shm_disable: !shm,
        timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

/// A value one thread posts and others wait for (bounded).
struct Mailbox<T>(Mutex<Option<T>>, Condvar);

impl<T: Clone> Mailbox<T> {
    fn new() -> Self {
        Mailbox(Mutex::new(None), Condvar::new())
    }
    fn post(&self, v: T) {
        *self.0.lock().unwrap() = Some(v);
        self.1.notify_all();
    }
    fn wait(&self) -> T {
        let g = self.0.lock().unwrap();
        let (g, _) = self
            .1
            .wait_timeout_while(g, Duration::from_secs(60), |v| v.is_none())
            .unwrap();
        g.clone().expect("nothing posted within 60 s")
    }
}

fn loopback_id(cfg: &Config) -> UniqueId {
    UniqueId::bind_with("127.0.0.1:0".parse().unwrap(), cfg).unwrap()
}

fn all_reduce_ok(comm: &mut Communicator, what: &str) {
    let rank = comm.rank();
    if let Some(e) = check_all_reduce::<f32>(comm, ReduceOp::Sum, 4099, false) {
        panic!("{what} on rank {rank}: {e}");
    }
}

/// `old` members grow to `new`: results right on the grown communicator and on the
/// parent, which every member still holds. Returns the grow id that was used.
fn grow(old: usize, new: usize, shm: bool) -> UniqueId {
    let cfg = config(shm);
    let id = loopback_id(&cfg);
    let grow_id = Mailbox::new();
    std::thread::scope(|s| {
        for r in 0..new {
            let (cfg, id, grow_id) = (cfg.clone(), &id, &grow_id);
            s.spawn(move || {
                let mut big = if r < old {
                    let mut comm = Communicator::init(r, old, id, cfg).unwrap();
                    all_reduce_ok(&mut comm, "before grow");
                    if r == 0 {
                        grow_id.post(comm.grow_id().unwrap());
                    }
                    let big = comm.grow(new, &grow_id.wait()).unwrap();
                    all_reduce_ok(&mut comm, "the parent after grow");
                    big
                } else {
                    Communicator::join_grown(r, new, &grow_id.wait(), cfg).unwrap()
                };
                assert_eq!((big.rank(), big.nranks()), (r, new));
                assert_eq!(
                    big.topology().unwrap().nranks(),
                    new,
                    "re-planned for {new}"
                );
                all_reduce_ok(&mut big, "after grow");
            });
        }
    });
    grow_id.wait()
}

#[test]
fn members_keep_their_ranks_and_joiners_take_the_next_over_tcp() {
    grow(3, 4, false);
    grow(1, 3, false);
}

#[test]
fn members_keep_their_ranks_and_joiners_take_the_next_over_shm() {
    grow(2, 4, true);
}

/// A lost rank's place is taken again: shrink to the survivors, then grow back.
#[test]
fn a_shrunk_communicator_grows_back_whole() {
    let cfg = config(true);
    let id = loopback_id(&cfg);
    let grow_id = Mailbox::new();
    std::thread::scope(|s| {
        for r in 0..4 {
            let (cfg, id, grow_id) = (cfg.clone(), &id, &grow_id);
            s.spawn(move || {
                let mut big = if r < 3 {
                    let mut comm = Communicator::init(r, 4, id, cfg).unwrap();
                    // Rank 3 "dies" before any call: the survivors drop it.
                    let mut small = comm.shrink(&[3]).unwrap();
                    all_reduce_ok(&mut small, "after shrink");
                    if r == 0 {
                        grow_id.post(small.grow_id().unwrap());
                    }
                    // An id of the shrunk communicator does not fit its parent.
                    let gid = grow_id.wait();
                    let stale = comm.grow(4, &gid).unwrap_err().to_string();
                    assert!(stale.contains("another communicator"), "{stale}");
                    small.grow(4, &gid).unwrap()
                } else {
                    // Rank 3 joins, then is gone (its communicator dropped), and a
                    // replacement joins the survivors' grow.
                    drop(Communicator::init(3, 4, id, cfg.clone()).unwrap());
                    Communicator::join_grown(3, 4, &grow_id.wait(), cfg).unwrap()
                };
                all_reduce_ok(&mut big, "grown back");
            });
        }
    });
}

#[test]
fn wrong_ids_and_ranks_are_refused_and_members_keep_their_communicator() {
    let cfg = config(false);
    let plain = loopback_id(&cfg);
    util::bootstrapped_ranks(2, cfg.clone(), |comm| {
        let gid = {
            // Each rank makes its own id here: only the checks before any wait run.
            comm.grow_id().unwrap()
        };
        let e = comm.grow(3, &plain).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidUniqueId(m) if m.contains("not a grow id")),
            "{e}"
        );
        let e = comm.grow(2, &gid).unwrap_err().to_string();
        assert!(e.contains("nranks 2 must be more than the 2 ranks"), "{e}");
        let e = Communicator::join_grown(2, 3, &plain, cfg.clone()).unwrap_err();
        assert!(matches!(e, Error::InvalidUniqueId(_)), "{e}");
        let e = Communicator::join_grown(1, 3, &gid, cfg.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("a joining rank must take a rank in 2..3"), "{e}");
        let e = Communicator::join_grown(3, 3, &gid, cfg.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("2..3"), "{e}");
        all_reduce_ok(comm, "after refused grows");
    });
}

/// Two joiners claim the same rank: the root admits one, the other is told; the
/// grown communicator is whole and right.
#[test]
fn a_rank_claimed_twice_is_refused_and_the_grow_completes() {
    let cfg = config(false);
    let id = loopback_id(&cfg);
    let grow_id = Mailbox::new();
    let outcomes = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let (cfg, id, grow_id) = (cfg.clone(), &id, &grow_id);
                s.spawn(move || -> Result<(), Error> {
                    let mut big = if t < 2 {
                        let comm = Communicator::init(t, 2, id, cfg).unwrap();
                        if t == 0 {
                            grow_id.post(comm.grow_id().unwrap());
                        }
                        comm.grow(3, &grow_id.wait()).unwrap()
                    } else {
                        Communicator::join_grown(2, 3, &grow_id.wait(), cfg)?
                    };
                    all_reduce_ok(&mut big, "grown with a duplicate joiner");
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(refused.len(), 1, "{outcomes:?}");
    let msg = refused[0].to_string();
    assert!(msg.contains("duplicate rank"), "{msg}");
}

/// A joiner that comes after the grow is complete is told at once that the grow is
/// over (its root has stopped listening), not left retrying until the timeout: the
/// other ordering of a rank claimed twice.
#[test]
fn a_joiner_after_the_grow_is_told_it_is_over() {
    let grow_id = grow(2, 3, false);
    let late = Communicator::join_grown(2, 3, &grow_id, config(false)).unwrap_err();
    assert!(matches!(late, Error::Bootstrap(_)), "{late:?}");
    let msg = late.to_string();
    assert!(
        msg.contains("grow is over") && msg.contains("duplicate rank"),
        "{msg}"
    );
}

/// Revoke on rank 1 while every rank is inside a 64 MiB all-reduce: every rank's
/// call returns `Revoked` naming rank 1, later calls too, and an empty shrink gives
/// a communicator that runs right.
fn revoke_during_a_large_all_reduce(shm: bool) {
    const COUNT: usize = 16 << 20; // 64 MiB of f32
    let handle = Mailbox::new();
    let start = Barrier::new(5);
    let revoked_at = Mailbox::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            let h: mixccl::RevokeHandle = handle.wait();
            start.wait();
            std::thread::sleep(Duration::from_millis(2));
            revoked_at.post(Instant::now());
            h.revoke();
        });
        util::bootstrapped_ranks(4, config(shm), |comm| {
            let r = comm.rank();
            if r == 1 {
                handle.post(comm.revoke_handle());
            }
            let send: Vec<f32> = (0..COUNT).map(|i| (i % 7) as f32).collect();
            let mut recv = vec![0f32; COUNT];
            start.wait();
            let e = comm
                .all_reduce(&send, &mut recv, ReduceOp::Sum)
                .unwrap_err();
            let took = revoked_at.wait().elapsed();
            eprintln!(
                "rank {r} (shm {shm}): revoked all-reduce returned {took:?} after the revoke"
            );
            assert!(matches!(e, Error::Revoked { rank: 1 }), "rank {r}: {e}");
            assert!(comm.is_revoked() || matches!(comm.error(), Some(Error::Revoked { .. })));
            let later = comm.all_reduce(&send[..5], &mut recv[..5], ReduceOp::Sum);
            assert!(
                matches!(later, Err(Error::Revoked { .. })),
                "rank {r}: {later:?}"
            );
            let mut fresh = comm.shrink(&[]).unwrap();
            assert_eq!((fresh.rank(), fresh.nranks()), (r, 4));
            all_reduce_ok(&mut fresh, "after revoke and shrink");
        });
    });
}

#[test]
fn revoke_stops_a_64_mib_all_reduce_on_every_rank_over_tcp() {
    revoke_during_a_large_all_reduce(false);
}

#[test]
fn revoke_stops_a_64_mib_all_reduce_on_every_rank_over_shm() {
    revoke_during_a_large_all_reduce(true);
}

/// Islands by vendor and host: every rank here is a host-memory rank of this host,
/// so the island of another vendor is empty (a clear error) and this host's island
/// is everyone (each rank is dropped and takes no part).
#[test]
fn islands_are_named_by_vendor_and_host() {
    util::bootstrapped_ranks(3, config(false), |comm| {
        assert_eq!(
            comm.island_ranks(Island::Vendors(&["host"])).unwrap(),
            [0, 1, 2]
        );
        assert!(comm
            .island_ranks(Island::Vendors(&["cuda"]))
            .unwrap()
            .is_empty());
        let e = comm
            .shrink_island(Island::Vendors(&["cuda"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no rank of this 3-rank communicator"), "{e}");
        let host = comm.topology().unwrap().probes[0].host.clone();
        assert!(comm
            .shrink_island(Island::Hosts(&[host.as_str()]))
            .unwrap()
            .is_none());
    });
}
