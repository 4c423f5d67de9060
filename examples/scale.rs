//! Scaling probe (docs/scaling.md): `N` ranks as `N / P` processes of `P` rank
//! threads each, joined through one unique id over TCP on loopback. Every rank
//! times its init, then runs a checked 8 B and 1 MiB all-reduce, an all-gather of
//! 8 B per rank and a 1 MiB broadcast; each process then counts its sockets
//! (/proc/self/fd) and its RSS while all its communicators are still alive.
//!
//!     MIXCCL_SHM_DISABLE=1 cargo run --example scale -- 256 16
//!
//! prints one line per process and a summary: max init seconds, sockets per rank
//! (max over processes of sockets / P), RSS per rank in MiB, shared-memory rings per
//! rank right after init and after the calls (max over ranks), mapped shared-memory
//! segments per rank (`memfd:mixccl` mappings / P), wrong results.
//! `SCALE_SMALL_ONLY=1` runs the 8 B all-reduce only. `SCALE_ROOTS=K` joins through
//! K unique ids (K roots, `Communicator::init_scalable`), all started by the parent.

use mixccl::{Communicator, Config, ReduceOp, UniqueId};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// Shared-memory segments this process has mapped (rings and the host's board).
fn shm_maps() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().filter(|l| l.contains("memfd:mixccl")).count())
        .unwrap_or(0)
}

/// This rank's links over shared memory.
fn shm_links(comm: &Communicator) -> usize {
    let shm = |c: &&mixccl::transport::LinkClass| **c == mixccl::transport::LinkClass::Shm;
    comm.link_classes().iter().flatten().filter(shm).count()
}

fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs the calls, returning the number of wrong elements.
fn calls(comm: &mut Communicator) -> mixccl::Result<usize> {
    let (r, n) = (comm.rank(), comm.nranks());
    let mut wrong = 0;
    let mut small = [r as u64, 1];
    comm.all_reduce_in_place(&mut small, ReduceOp::Sum)?;
    wrong += usize::from(small != [(n * (n - 1) / 2) as u64, n as u64]);
    if std::env::var_os("SCALE_SMALL_ONLY").is_some() {
        return Ok(wrong);
    }
    let len = (1 << 20) / 4;
    let mut big: Vec<f32> = (0..len).map(|i| ((i + r) % 7) as f32).collect();
    comm.all_reduce_in_place(&mut big, ReduceOp::Sum)?;
    wrong += (0..len)
        .filter(|&i| big[i] != (0..n).map(|q| ((i + q) % 7) as f32).sum::<f32>())
        .count();
    let mut all = vec![0u64; n];
    comm.all_gather(&[r as u64 * 3], &mut all)?;
    wrong += (0..n).filter(|&q| all[q] != q as u64 * 3).count();
    let mut b: Vec<u32> = if r == 0 {
        (0..len as u32).collect()
    } else {
        vec![0; len]
    };
    comm.broadcast_in_place(&mut b, 0)?;
    wrong += (0..len).filter(|&i| b[i] != i as u32).count();
    Ok(wrong)
}

fn child(n: usize, per: usize, base: usize, ids: Vec<UniqueId>) {
    let ids = Arc::new(ids);
    let gate = Arc::new(Barrier::new(per));
    let threads: Vec<_> = (base..base + per)
        .map(|rank| {
            let (gate, ids) = (gate.clone(), ids.clone());
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut comm = Communicator::init_scalable(rank, n, &ids, Config::from_env()?)?;
                let init = t.elapsed().as_secs_f64();
                let shm_init = shm_links(&comm);
                if rank == base {
                    eprintln!("rank {rank}: init done in {init:.2} s");
                }
                let wrong = calls(&mut comm)?;
                // Count while every communicator of this process is alive.
                gate.wait();
                let counted = if rank == base {
                    Some((sockets(), rss_kib(), shm_maps()))
                } else {
                    None
                };
                gate.wait();
                let peers = comm.link_classes().iter().flatten().count();
                let shm = (shm_init, shm_links(&comm));
                Ok::<_, mixccl::Error>((init, wrong, counted, peers, shm))
            })
        })
        .collect();
    let (mut init, mut wrong, mut socks, mut rss, mut peers) = (0f64, 0, 0, 0, 0);
    let (mut maps, mut shm_init, mut shm_after) = (0, 0, 0);
    for t in threads {
        let (i, w, c, p, s) = t.join().expect("rank thread").unwrap_or_else(|e| {
            eprintln!("rank failed: {e}");
            std::process::exit(1)
        });
        init = init.max(i);
        wrong += w;
        peers = peers.max(p);
        shm_init = shm_init.max(s.0);
        shm_after = shm_after.max(s.1);
        if let Some((s, r, m)) = c {
            socks = s;
            rss = r;
            maps = m;
        }
    }
    println!(
        "proc base {base}: init_max_s {init:.3} sockets {socks} rss_kib {rss} max_peers {peers} \
         shm_init {shm_init} shm_after {shm_after} shm_maps {maps} wrong {wrong}"
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(16);
    let per: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    if let (Ok(base), Ok(id)) = (std::env::var("SCALE_BASE"), std::env::var("SCALE_ID")) {
        child(
            n,
            per,
            base.parse().expect("SCALE_BASE"),
            id.split(',')
                .map(|i| i.parse().expect("SCALE_ID"))
                .collect(),
        );
        return;
    }
    assert!(n % per == 0, "N must be a multiple of P");
    let roots: usize = std::env::var("SCALE_ROOTS").map_or(1, |k| k.parse().expect("SCALE_ROOTS"));
    let ids: Vec<String> = (0..roots)
        .map(|_| {
            UniqueId::bind("127.0.0.1:0".parse().unwrap())
                .expect("root")
                .to_string()
        })
        .collect();
    let id = ids.join(",");
    let start = Instant::now();
    let kids: Vec<_> = (0..n / per)
        .map(|k| {
            Command::new(&args[0])
                .args([n.to_string(), per.to_string()])
                .env("SCALE_BASE", (k * per).to_string())
                .env("SCALE_ID", &id)
                .output_spawn()
        })
        .collect();
    let (mut init, mut socks, mut rss, mut peers, mut wrong, mut failed) =
        (0f64, 0f64, 0f64, 0, 0usize, 0);
    let (mut shm_init, mut shm_after, mut maps) = (0, 0, 0f64);
    for k in kids {
        let out = k.wait_with_output().expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            failed += 1;
        }
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let val = |key: &str| -> f64 {
                f.iter()
                    .position(|w| *w == key)
                    .and_then(|i| f.get(i + 1)?.parse().ok())
                    .unwrap_or(0.0)
            };
            init = init.max(val("init_max_s"));
            socks = f64::max(socks, val("sockets") / per as f64);
            rss = f64::max(rss, val("rss_kib") / per as f64 / 1024.0);
            peers = peers.max(val("max_peers") as usize);
            wrong += val("wrong") as usize;
            shm_init = shm_init.max(val("shm_init") as usize);
            shm_after = shm_after.max(val("shm_after") as usize);
            maps = f64::max(maps, val("shm_maps") / per as f64);
        }
    }
    println!(
        "ranks {n} per_process {per} roots {roots}: init_max {init:.2} s, sockets/rank {socks:.1}, \
         rss/rank {rss:.1} MiB, max linked peers {peers}, shm rings/rank {shm_init} at init \
         {shm_after} after, shm maps/rank {maps:.1}, wrong {wrong}, failed processes {failed}, \
         wall {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

trait SpawnPiped {
    fn output_spawn(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_spawn(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn")
    }
}
