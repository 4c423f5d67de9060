//! All-reduce a vector of f32 across ranks, as a user of the crate would.
//!
//! Under a launcher (mpirun, torchrun, srun, or MIXCCL_RANK/MIXCCL_NRANKS/MIXCCL_ROOT
//! in a shell loop) each process is one rank and joins from the environment:
//!
//!     MIXCCL_ROOT=127.0.0.1:29500 MIXCCL_NRANKS=2 MIXCCL_RANK=0 cargo run --example allreduce &
//!     MIXCCL_ROOT=127.0.0.1:29500 MIXCCL_NRANKS=2 MIXCCL_RANK=1 cargo run --example allreduce
//!
//! Without a launcher it starts `N` ranks (default 4) as threads of this process,
//! joined over TCP on loopback: `cargo run --example allreduce -- 4`.

use mixccl::{Communicator, Config, ReduceOp, UniqueId};

/// Rank r contributes [r, r, ...] + [0, 1, 2, ...]; the sum is known in closed form.
fn run(comm: &mut Communicator) -> mixccl::Result<Vec<f32>> {
    let (r, n) = (comm.rank(), comm.nranks());
    let mut v: Vec<f32> = (0..8).map(|i| (r + i) as f32).collect();
    comm.all_reduce_in_place(&mut v, ReduceOp::Sum)?;
    let want: Vec<f32> = (0..8).map(|i| (n * i + n * (n - 1) / 2) as f32).collect();
    assert_eq!(v, want, "rank {r}: wrong sum");
    Ok(v)
}

fn main() -> mixccl::Result<()> {
    let launched = [
        "MIXCCL_RANK",
        "RANK",
        "OMPI_COMM_WORLD_RANK",
        "SLURM_PROCID",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some());
    if launched {
        let mut comm = Communicator::from_env()?;
        let v = run(&mut comm)?;
        println!("rank {} of {}: {:?}", comm.rank(), comm.nranks(), v);
        return Ok(());
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4);
    let id = UniqueId::bind("127.0.0.1:0".parse().expect("loopback address"))?;
    let results = std::thread::scope(|s| {
        let ranks: Vec<_> = (0..n)
            .map(|rank| {
                s.spawn(move || {
                    let mut comm = Communicator::init(rank, n, &id, Config::from_env()?)?;
                    run(&mut comm)
                })
            })
            .collect();
        ranks
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect::<Vec<_>>()
    });
    for (rank, v) in results.into_iter().enumerate() {
        println!("rank {rank} of {n}: {:?}", v?);
    }
    Ok(())
}
