//! The promise: every rank receives bitwise-identical results for every collective
//! and algorithm, and the same inputs on the same communicator give the same bits
//! run after run. Inputs are floats whose sums depend on the order of addition, so
//! a rank that reduced in another order would show other bits.

mod util;

use mixccl::{AlgoOverride, Config, ReduceOp};
use std::time::Duration;
use util::*;

fn config(algo: &str) -> Config {
    Config {
        timeout: Duration::from_secs(20),
        chunk_bytes: 256,
        algo: AlgoOverride::parse(algo).unwrap(),
        ..Config::default()
    }
}

/// Order-sensitive f32 inputs: magnitudes from 1e-4 to 1e4.
fn input(rank: usize, i: usize) -> f32 {
    let x = ((rank * 7919 + i * 104_729) % 1_000_003) as f32 / 1_000_003.0;
    let e = ((rank * 3 + i) % 9) as i32 - 4;
    (x - 0.5) * 10f32.powi(e)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `n` ranks twice; every rank's bits must equal rank 0's, and the second run
/// the first.
fn same_everywhere(
    what: &str,
    n: usize,
    algo: &str,
    f: impl Fn(&mut mixccl::Communicator) -> Vec<u32> + Sync,
) {
    let first = with_ranks(n, config(algo), &f);
    for (r, b) in first.iter().enumerate() {
        assert_eq!(
            b, &first[0],
            "{what} {algo} n={n}: rank {r} differs from rank 0"
        );
    }
    let second = with_ranks(n, config(algo), &f);
    assert_eq!(
        second, first,
        "{what} {algo} n={n}: a second run gave other bits"
    );
}

const COUNT: usize = 4099;

#[test]
fn all_reduce_bits_are_identical_for_every_algorithm() {
    for algo in ["allreduce:ring", "allreduce:direct", "allreduce:tree", ""] {
        for n in [2, 3, 5, 8] {
            for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Prod] {
                same_everywhere(&format!("all_reduce {op}"), n, algo, |comm| {
                    let r = comm.rank();
                    let mine: Vec<f32> = (0..COUNT).map(|i| input(r, i)).collect();
                    let mut out = vec![0f32; COUNT];
                    comm.all_reduce(&mine, &mut out, op).unwrap();
                    bits(&out)
                });
            }
        }
    }
}

#[test]
fn reduce_then_broadcast_and_scatter_then_gather_are_identical() {
    for (algo, n) in [
        ("reduce:chain;broadcast:chain", 4),
        ("reduce:tree;broadcast:tree", 5),
    ] {
        same_everywhere("reduce + broadcast", n, algo, |comm| {
            let r = comm.rank();
            let mine: Vec<f32> = (0..COUNT).map(|i| input(r, i)).collect();
            let mut out = vec![0f32; COUNT];
            comm.reduce(&mine, &mut out, ReduceOp::Sum, 1).unwrap();
            comm.broadcast_in_place(&mut out, 1).unwrap();
            bits(&out)
        });
    }
    for algo in [
        "reducescatter:ring;allgather:ring",
        "reducescatter:ring;allgather:direct",
    ] {
        for n in [3, 4] {
            same_everywhere("reduce_scatter + all_gather", n, algo, |comm| {
                let r = comm.rank();
                let mine: Vec<f32> = (0..COUNT * n).map(|i| input(r, i)).collect();
                let mut part = vec![0f32; COUNT];
                comm.reduce_scatter(&mine, &mut part, ReduceOp::Sum)
                    .unwrap();
                let mut all = vec![0f32; COUNT * n];
                comm.all_gather(&part, &mut all).unwrap();
                bits(&all)
            });
        }
    }
}

#[test]
fn fp8_all_reduce_bits_are_identical() {
    for d in mixccl::DataType::FP8 {
        let f = d.fp8().unwrap();
        for algo in ["allreduce:ring", "allreduce:direct", "allreduce:tree"] {
            same_everywhere(&format!("all_reduce {d}"), 5, algo, |comm| {
                let r = comm.rank();
                let mine: Vec<u8> = (0..COUNT).map(|i| f.encode(input(r, i))).collect();
                let mut out = vec![0u8; COUNT];
                comm.all_reduce_raw(d, ReduceOp::Sum, Some(&mine), &mut out)
                    .unwrap();
                out.into_iter().map(u32::from).collect()
            });
        }
    }
}
