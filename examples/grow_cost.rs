//! The cost of growing a communicator by one rank (issue 20): `N - 1` rank threads
//! join a communicator, rank 0 makes a grow id, and the members grow it to `N` with
//! one joiner thread; every rank then runs a checked 1 KiB all-reduce on the grown
//! communicator. Prints the slowest rank's grow time (the call, up to the grown
//! communicator in hand) and the all-reduce time, for each repetition, then the median.
//!
//!     cargo run --release --example grow_cost -- 16 [REPS]
//!
//! Settings come from the environment (`MIXCCL_SHM_DISABLE=1` for TCP links).

use mixccl::{Communicator, Config, ReduceOp, UniqueId};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    assert!(n >= 2, "N must be 2 or more");
    let config = Config::from_env().expect("MIXCCL_* settings");
    let mut grows = Vec::new();
    for rep in 0..reps {
        let lo = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
        let id = UniqueId::bind_with(lo, &config).expect("bootstrap root");
        let grow_id: Arc<Mutex<Option<UniqueId>>> = Arc::new(Mutex::new(None));
        let ready = Arc::new(Barrier::new(n));
        let times: Vec<(Duration, Duration)> = std::thread::scope(|s| {
            let mut hs = Vec::new();
            for rank in 0..n - 1 {
                let (id, config, grow_id, ready) =
                    (&id, config.clone(), grow_id.clone(), ready.clone());
                hs.push(s.spawn(move || {
                    let comm = Communicator::init(rank, n - 1, id, config).expect("init");
                    if rank == 0 {
                        *grow_id.lock().unwrap() = Some(comm.grow_id().expect("grow id"));
                    }
                    ready.wait();
                    let gid = (*grow_id.lock().unwrap()).expect("grow id set");
                    let start = Instant::now();
                    let mut grown = comm.grow(n, &gid).expect("grow");
                    let grew = start.elapsed();
                    (grew, checked(&mut grown, rank, n))
                }));
            }
            let (config, grow_id, ready) = (config.clone(), grow_id.clone(), ready.clone());
            hs.push(s.spawn(move || {
                ready.wait();
                let gid = (*grow_id.lock().unwrap()).expect("grow id set");
                let start = Instant::now();
                let mut grown = Communicator::join_grown(n - 1, n, &gid, config).expect("join");
                let grew = start.elapsed();
                (grew, checked(&mut grown, n - 1, n))
            }));
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let grow = times.iter().map(|t| t.0).max().unwrap();
        let call = times.iter().map(|t| t.1).max().unwrap();
        println!(
            "rep {rep}: {} -> {n} ranks: grow {:.1} ms (slowest rank), checked 1 KiB all-reduce {:.2} ms",
            n - 1,
            grow.as_secs_f64() * 1e3,
            call.as_secs_f64() * 1e3
        );
        grows.push(grow);
    }
    grows.sort();
    println!(
        "{} -> {n} ranks: median grow {:.1} ms over {reps} repetition(s)",
        n - 1,
        grows[grows.len() / 2].as_secs_f64() * 1e3
    );
}

/// Runs a 1 KiB all-reduce on `comm` and checks it against the sum computed here.
fn checked(comm: &mut Communicator, rank: usize, n: usize) -> Duration {
    let send: Vec<f32> = (0..256).map(|i| (i * 3 + rank) as f32).collect();
    let mut recv = vec![0f32; 256];
    let start = Instant::now();
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum)
        .expect("all-reduce on the grown communicator");
    let took = start.elapsed();
    for (i, v) in recv.iter().enumerate() {
        let want = (n * i * 3 + n * (n - 1) / 2) as f32;
        assert_eq!(*v, want, "rank {rank} element {i}");
    }
    took
}
