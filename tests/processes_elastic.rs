//! `mixccl-perf --recover` as processes: 4 ranks run checked all-reduces, a random
//! rank is SIGKILLed at a random time, the survivors shrink, a replacement process
//! joins their grow, and checked all-reduces go on on the whole communicator; over
//! TCP and over shared memory, `MIXCCL_TEST_RECOVER_REPS` times each (2 by default,
//! 20 for the full run), every result checked by the ranks, nothing left in /dev/shm.
//! The kill-to-whole times it prints are figures, not asserted.

mod util;

use std::time::{Duration, Instant};
use util::processes::{assert_no_new_shm, dev_shm, perf, Proc};

fn recover(shm: bool) {
    let reps: usize = std::env::var("MIXCCL_TEST_RECOVER_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("MIXCCL_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("MIXCCL_TEST_SEED={seed}");
    let before = dev_shm();
    let mut cmd = perf(20);
    if !shm {
        cmd.env("MIXCCL_SHM_DISABLE", "1");
    }
    cmd.args(["--recover", "--np", "4", "-n", "10"]).args([
        "--reps",
        &reps.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    let mut p = Proc::spawn(cmd);
    let limit = Duration::from_secs(60 + 30 * reps as u64);
    let status = p.wait_until(Instant::now() + limit);
    let (out, err) = (p.stdout(), p.stderr());
    println!("{out}");
    let status = status.unwrap_or_else(|| panic!("no end within {limit:?}:\n{out}\n{err}"));
    assert!(status.success(), "{status}:\n{out}\n{err}");
    for rep in 0..reps {
        assert!(
            out.contains(&format!("# rep {rep}: killed rank")),
            "rep {rep} missing:\n{out}"
        );
    }
    // Every survivor and every replacement checked its all-reduces after the grow.
    assert_eq!(out.matches("grew to 4 as rank").count(), 3 * reps, "{out}");
    assert_eq!(out.matches("# replacement: ").count(), reps, "{out}");
    assert!(out.contains("# kill to whole over"), "{out}");
    assert_no_new_shm(&before, "after --recover");
}

#[test]
fn killed_ranks_are_replaced_and_the_communicator_grows_back_over_tcp() {
    recover(false);
}

#[test]
fn killed_ranks_are_replaced_and_the_communicator_grows_back_over_shm() {
    recover(true);
}
