//! Init/destroy cycles leave nothing behind: file descriptors, threads, shared
//! memory objects and resident memory are measured before and after.
//!
//! CI runs 200 cycles; `MIXCCL_TEST_CYCLES=1000 cargo test --release --test resources
//! -- --nocapture` runs the thousand and prints the figures.

mod util;

use mixccl::{Config, ReduceOp};
use std::time::{Duration, Instant};
use util::bootstrapped_ranks;

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// Resident set in KiB (from /proc/self/statm, in pages).
fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    shm: usize,
    rss_kib: usize,
}

fn usage() -> Usage {
    Usage {
        fds: count_dir("/proc/self/fd"),
        threads: count_dir("/proc/self/task"),
        shm: count_dir("/dev/shm"),
        rss_kib: rss_kib(),
    }
}

/// One cycle: a 4-rank communicator (ranks on threads of this process, so shared
/// memory links, or TCP with `tcp`), one checked all-reduce, destroy.
fn cycle(tcp: bool) {
    let config = Config {
        timeout: Duration::from_secs(30),
        shm_disable: tcp,
        ..Config::default()
    };
    let sums = bootstrapped_ranks(4, config, |comm| {
        let mut v = [comm.rank() as u32 + 1; 33];
        comm.all_reduce_in_place(&mut v, ReduceOp::Sum)
            .expect("all_reduce");
        v
    });
    for v in sums {
        assert!(v.iter().all(|&x| x == 10), "{v:?}");
    }
}

#[test]
fn init_destroy_cycles_leak_nothing() {
    let cycles: usize = std::env::var("MIXCCL_TEST_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    // Warm up: the first cycles grow allocator pools and lazily made statics.
    for i in 0..20 {
        cycle(i % 2 == 1);
    }
    // Threads of the previous cycle's bootstrap root may take a moment to exit.
    std::thread::sleep(Duration::from_millis(200));
    let before = usage();
    let start = Instant::now();
    for i in 0..cycles {
        cycle(i % 2 == 1);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = usage();
    println!(
        "{cycles} cycles (half shm, half tcp) in {:.1} s: fds {} -> {}, threads {} -> {}, /dev/shm {} -> {}, RSS {} -> {} KiB",
        start.elapsed().as_secs_f64(),
        before.fds,
        after.fds,
        before.threads,
        after.threads,
        before.shm,
        after.shm,
        before.rss_kib,
        after.rss_kib
    );
    assert!(
        after.fds <= before.fds,
        "fds leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.threads <= before.threads,
        "threads leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.shm <= before.shm,
        "shm leaked: {before:?} -> {after:?}"
    );
    // Allocator noise is a few MiB at most; a per-cycle leak of even 16 KiB would
    // show as 3 MiB over 200 cycles and 16 MiB over a thousand.
    assert!(
        after.rss_kib <= before.rss_kib + 8 * 1024,
        "memory grew: {before:?} -> {after:?}"
    );
}
