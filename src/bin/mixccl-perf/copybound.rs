//! The copy bound: what this machine's memory copy rate allows a call's busbw to be,
//! so that a figure means something on any CPU (docs/algorithms.md, "The copy bound").
//!
//! Every byte that busbw counts must reach a rank other than the one that holds it,
//! so that rank (or a helper writing for it) reads it from memory at least once. A
//! copy of `A` bytes per second moves `2A` bytes of memory traffic (each byte read
//! and written), so with `k` ranks on a host each at busbw `B`, `k * B <= 2A`:
//! `B <= 2A / k`, where `A` is the rate at which `min(k, cores)` threads copy
//! together. A real algorithm reads and writes more than that (a ring copies each
//! byte into a shared buffer and out again), so 100% is out of reach; the fraction
//! says how far a figure is from what this machine's memory allows. Rank 0 measures
//! `A` after the table while the other ranks wait in a barrier.

use crate::report::Row;
use mixccl::{Communicator, Result};
use std::time::Instant;

/// Bytes each copying thread moves per pass: past the last-level caches of the
/// machines this runs on, so the rate is memory's, not a cache's.
const COPY_BYTES: usize = 64 << 20;
/// Passes per thread; the fastest counts (the others absorb page faults and noise).
const PASSES: usize = 4;

/// The measured rate and the bound it sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CopyBound {
    /// Copying threads (`min(k, cores)`).
    pub threads: usize,
    /// Ranks on rank 0's host (`k`).
    pub local_ranks: usize,
    /// Bytes per second copied by all threads together, in GB/s (10^9 bytes).
    pub rate_gbps: f64,
}

impl CopyBound {
    /// The highest busbw the copy rate allows, in GB/s: `2 * rate / k`.
    pub fn busbw_gbps(&self) -> f64 {
        2.0 * self.rate_gbps / self.local_ranks as f64
    }

    /// `busbw` as a fraction of the bound.
    pub fn fraction(&self, busbw_gbps: f64) -> f64 {
        busbw_gbps / self.busbw_gbps()
    }

    /// The summary line printed after the table.
    pub fn line(&self, rows: &[Row]) -> String {
        let best = rows
            .iter()
            .flat_map(|r| std::iter::once(r.out_of_place).chain(r.in_place))
            .map(|p| p.busbw_gbps)
            .fold(0.0, f64::max);
        format!(
            "# Copy bound           : {:.2} GB/s busbw ({:.2} GB/s copied by {} thread(s), {} ranks on this host); best busbw {:.2} = {:.0}%",
            self.busbw_gbps(),
            self.rate_gbps,
            self.threads,
            self.local_ranks,
            best,
            100.0 * self.fraction(best)
        )
    }
}

/// Ranks on the same host as rank 0 (all of them when there is no topology model).
fn local_ranks(comm: &Communicator) -> usize {
    match comm.topology() {
        Some(t) => {
            let host = t.host_of(0);
            (0..t.nranks()).filter(|&r| t.host_of(r) == host).count()
        }
        None => comm.nranks(),
    }
}

/// Measures the copy bound on rank 0 while the others wait; every rank returns the
/// same `Some` value only on rank 0 (`None` elsewhere). Skipped (`None` everywhere)
/// where rank 0's host has one rank: busbw is then zero or crosses hosts.
pub fn measure(comm: &mut Communicator) -> Result<Option<CopyBound>> {
    let k = local_ranks(comm);
    if k < 2 {
        return Ok(None);
    }
    let bound = (comm.rank() == 0).then(|| {
        // The machine's CPUs, not this process's affinity (`--bind` pins rank 0 to one).
        let cores = online_cpus();
        let threads = k.min(cores);
        CopyBound {
            threads,
            local_ranks: k,
            rate_gbps: copy_rate_gbps(threads),
        }
    });
    comm.barrier()?;
    Ok(bound)
}

/// CPUs online, from `/sys/devices/system/cpu/online` ("0-3,6"); this process's
/// allowed CPUs where that cannot be read.
fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| cpu_list_len(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of CPUs in a kernel CPU list such as "0-3,6"; None if malformed.
fn cpu_list_len(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()?.checked_sub(a.parse().ok()?)? + 1,
            None => part.parse::<usize>().map(|_| 1).ok()?,
        };
    }
    (n > 0).then_some(n)
}

/// The rate, in GB/s, at which `threads` threads copying at once move bytes.
fn copy_rate_gbps(threads: usize) -> f64 {
    let mut buffers: Vec<(Vec<u8>, Vec<u8>)> = (0..threads)
        .map(|t| (vec![t as u8 + 1; COPY_BYTES], vec![0u8; COPY_BYTES]))
        .collect();
    let mut best = f64::INFINITY;
    for _ in 0..PASSES {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (src, dst) in buffers.iter_mut() {
                s.spawn(move || dst.copy_from_slice(src));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
    }
    assert!(
        buffers
            .iter()
            .all(|(s, d)| s[COPY_BYTES - 1] == d[COPY_BYTES - 1]),
        "the copies ran"
    );
    (threads * COPY_BYTES) as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_is_the_rate_shared_by_local_ranks() {
        let b = CopyBound {
            threads: 2,
            local_ranks: 4,
            rate_gbps: 20.0,
        };
        assert_eq!(b.busbw_gbps(), 10.0);
        assert_eq!(b.fraction(2.5), 0.25);
    }

    #[test]
    fn cpu_lists_count_their_cpus() {
        assert_eq!(cpu_list_len("0-1"), Some(2));
        assert_eq!(cpu_list_len("0-3,6,8-9"), Some(7));
        assert_eq!(cpu_list_len("5"), Some(1));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len("x"), None);
    }

    #[test]
    fn a_measured_rate_is_positive_and_finite() {
        let r = copy_rate_gbps(1);
        assert!(r.is_finite() && r > 0.0, "{r}");
    }
}
