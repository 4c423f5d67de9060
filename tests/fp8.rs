//! fp8 collectives on in-process communicators against a float64 reference: every
//! op of every reducing collective rounds once (the exact f64 result rounded to the
//! format), data-moving collectives move the bits unchanged, values at each format's
//! maximum saturate, NaN and (e5m2) infinities propagate, every rank gets the same
//! bits, and ranks passing different fp8 formats get `Error::Mismatch`.

mod util;

use mixccl::fp8::Format;
use mixccl::{Communicator, Config, DataType, Error, ReduceOp};
use std::time::Duration;
use util::*;

fn config() -> Config {
    Config {
        timeout: Duration::from_secs(20),
        chunk_bytes: 64,
        ..Config::default()
    }
}

/// fp8 bit patterns with magnitudes in [1/4, 8]: products of up to five of them and
/// sums of up to five are exact in f32, so f32 accumulation equals f64's.
fn moderate(f: Format) -> Vec<u8> {
    (0..=255u8)
        .filter(|b| {
            let v = f.decode(*b).abs();
            (0.25..=8.0).contains(&v)
        })
        .collect()
}

fn input(f: Format, rank: usize, i: usize) -> u8 {
    let m = moderate(f);
    m[(rank * 37 + i * 11 + i / 7) % m.len()]
}

fn ref_op(op: ReduceOp, vals: &[f64]) -> f64 {
    match op {
        ReduceOp::Sum => vals.iter().sum(),
        ReduceOp::Prod => vals.iter().product(),
        ReduceOp::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        ReduceOp::Min => vals.iter().cloned().fold(f64::INFINITY, f64::min),
        ReduceOp::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
    }
}

/// The f64 result of `op` over ranks at index `i`, rounded once to the format.
fn want(f: Format, op: ReduceOp, n: usize, bits: impl Fn(usize) -> u8) -> u8 {
    let vals: Vec<f64> = (0..n).map(|r| f64::from(f.decode(bits(r)))).collect();
    f.encode(ref_op(op, &vals) as f32)
}

const COUNT: usize = 301;

fn fmt(d: DataType) -> Format {
    d.fp8().expect("an fp8 type")
}

#[test]
fn fp8_reductions_round_once_against_f64() {
    for d in DataType::FP8 {
        let f = fmt(d);
        for n in [1, 2, 3, 5] {
            for op in ReduceOp::ALL {
                let res = with_ranks(n, config(), |comm| {
                    let r = comm.rank();
                    let mine: Vec<u8> = (0..COUNT).map(|i| input(f, r, i)).collect();
                    // all_reduce, out of place and in place.
                    let mut ar = vec![0u8; COUNT];
                    comm.all_reduce_raw(d, op, Some(&mine), &mut ar).unwrap();
                    let mut ar_in = mine.clone();
                    comm.all_reduce_raw(d, op, None, &mut ar_in).unwrap();
                    // reduce to the last rank.
                    let root = n - 1;
                    let mut red = vec![0u8; if r == root { COUNT } else { 0 }];
                    comm.reduce_raw(d, op, Some(&mine), &mut red, root).unwrap();
                    // reduce_scatter over n blocks of 17.
                    let blk = 17;
                    let rs_in: Vec<u8> = (0..n * blk).map(|i| input(f, r, i)).collect();
                    let mut rs = vec![0u8; blk];
                    comm.reduce_scatter_raw(d, op, Some(&rs_in), &mut rs)
                        .unwrap();
                    // reduce_scatter_v with uneven blocks.
                    let counts: Vec<usize> = (0..n).map(|p| 3 * p + 1).collect();
                    let displs = mixccl::displacements(&counts);
                    let total: usize = counts.iter().sum();
                    let v_in: Vec<u8> = (0..total).map(|i| input(f, r, i)).collect();
                    let mut v = vec![0u8; counts[r]];
                    comm.reduce_scatter_v_raw(d, op, Some(&v_in), &mut v, &counts, &displs)
                        .unwrap();
                    (ar, ar_in, red, rs, v, displs[r])
                });
                let what = |c: &str, r: usize, i: usize| {
                    format!("{d} {op} n={n} {c} rank {r} element {i}")
                };
                for (r, (ar, ar_in, red, rs, v, at)) in res.iter().enumerate() {
                    for i in 0..COUNT {
                        let w = want(f, op, n, |p| input(f, p, i));
                        assert_eq!(ar[i], w, "{}", what("all_reduce", r, i));
                        assert_eq!(ar_in[i], w, "{}", what("all_reduce in place", r, i));
                        if r == n - 1 {
                            assert_eq!(red[i], w, "{}", what("reduce", r, i));
                        }
                    }
                    for (i, got) in rs.iter().enumerate() {
                        let w = want(f, op, n, |p| input(f, p, r * 17 + i));
                        assert_eq!(*got, w, "{}", what("reduce_scatter", r, i));
                    }
                    for (i, got) in v.iter().enumerate() {
                        let w = want(f, op, n, |p| input(f, p, at + i));
                        assert_eq!(*got, w, "{}", what("reduce_scatter_v", r, i));
                    }
                }
                // Every rank's all_reduce bits are the same.
                for (r, x) in res.iter().enumerate() {
                    assert_eq!(x.0, res[0].0, "{d} {op} n={n}: rank {r} differs");
                }
            }
        }
    }
}

#[test]
fn fp8_data_movement_keeps_the_bits() {
    for d in DataType::FP8 {
        let n = 3;
        let res = with_ranks(n, config(), |comm| {
            let r = comm.rank() as u8;
            // Every bit pattern, NaNs and infinities included.
            let mine: Vec<u8> = (0..=255u8).map(|b| b.wrapping_add(r)).collect();
            let mut ag = vec![0u8; 256 * n];
            comm.all_gather_raw(d, Some(&mine), &mut ag).unwrap();
            let mut bc = if r == 1 { mine.clone() } else { vec![0u8; 256] };
            comm.broadcast_raw(d, None, &mut bc, 1).unwrap();
            let a2a_in: Vec<u8> = (0..255u8).map(|b| b ^ r).collect();
            let mut a2a = vec![0u8; 255];
            comm.all_to_all_raw(d, Some(&a2a_in), &mut a2a).unwrap();
            (ag, bc, a2a)
        });
        for (r, (ag, bc, a2a)) in res.into_iter().enumerate() {
            for p in 0..n {
                for b in 0..256usize {
                    assert_eq!(ag[p * 256 + b], (b as u8).wrapping_add(p as u8), "{d} ag");
                }
            }
            let want_bc: Vec<u8> = (0..=255u8).map(|b| b.wrapping_add(1)).collect();
            assert_eq!(bc, want_bc, "{d} broadcast rank {r}");
            for p in 0..n {
                for k in 0..85 {
                    assert_eq!(a2a[p * 85 + k], ((r * 85 + k) as u8) ^ p as u8, "{d} a2a");
                }
            }
        }
    }
}

#[test]
fn fp8_max_values_nan_and_infinity() {
    for d in DataType::FP8 {
        let f = fmt(d);
        let max = f.encode(f.max);
        let nan = f.encode(f32::NAN);
        // Element k of each case: the bits every rank passes (rank-dependent via closure).
        type Case = (&'static str, fn(Format, usize) -> f32, ReduceOp);
        let cases: Vec<Case> = vec![
            ("max + max saturates", |f, _| f.max, ReduceOp::Sum),
            ("-max - max saturates", |f, _| -f.max, ReduceOp::Sum),
            ("max of max", |f, _| f.max, ReduceOp::Max),
            (
                "max and -max cancel",
                |f, r| if r % 2 == 0 { f.max } else { -f.max },
                ReduceOp::Sum,
            ),
            ("avg of max", |f, _| f.max, ReduceOp::Avg),
            (
                "NaN poisons the sum",
                |_, r| if r == 1 { f32::NAN } else { 1.0 },
                ReduceOp::Sum,
            ),
            (
                "NaN poisons the product",
                |_, r| if r == 0 { f32::NAN } else { 2.0 },
                ReduceOp::Prod,
            ),
            (
                "inf + finite",
                |_, r| if r == 0 { f32::INFINITY } else { 3.0 },
                ReduceOp::Sum,
            ),
            (
                "inf - inf",
                |_, r| {
                    if r == 0 {
                        f32::INFINITY
                    } else {
                        f32::NEG_INFINITY
                    }
                },
                ReduceOp::Sum,
            ),
        ];
        for n in [2, 4] {
            for (name, value, op) in &cases {
                let res = with_ranks(n, config(), |comm| {
                    let r = comm.rank();
                    let mine = vec![f.encode(value(f, r)); 5];
                    let mut out = vec![0u8; 5];
                    comm.all_reduce_raw(d, *op, Some(&mine), &mut out)
                        .map(|()| out)
                });
                let vals: Vec<f64> = (0..n)
                    .map(|r| f64::from(f.decode(f.encode(value(f, r)))))
                    .collect();
                let exact = ref_op(*op, &vals);
                let w = f.encode(exact as f32);
                for (r, out) in res.into_iter().enumerate() {
                    let out = out.unwrap();
                    assert_eq!(out, vec![w; 5], "{d} {name} n={n} rank {r} (exact {exact})");
                }
                if name.contains("saturates") {
                    assert_eq!(w & 0x7f, max & 0x7f, "{d} {name}: saturates to max");
                }
                if name.contains("NaN") || (*name == "inf - inf" && f.has_inf()) {
                    assert_eq!(w & 0x7f, nan & 0x7f, "{d} {name}: NaN");
                }
                if *name == "inf + finite" {
                    if f.has_inf() {
                        assert!(f.decode(w).is_infinite(), "{d}: inf stays inf");
                    } else {
                        assert_eq!(w, max, "{d}: no infinity, saturates");
                    }
                }
            }
        }
    }
}

#[test]
fn different_fp8_formats_are_a_mismatch() {
    for (a, b) in [
        (DataType::F8E4M3, DataType::F8E4M3Fnuz),
        (DataType::F8E5M2, DataType::F8E5M2Fnuz),
        (DataType::F8E4M3, DataType::F8E5M2),
    ] {
        for coll in ["all_reduce", "all_gather", "reduce_scatter_v"] {
            let res = with_ranks(3, config(), |comm: &mut Communicator| {
                let d = if comm.rank() == 1 { b } else { a };
                let mine = vec![0x38u8; 6];
                let mut out = vec![0u8; 18];
                match coll {
                    "all_reduce" => {
                        comm.all_reduce_raw(d, ReduceOp::Sum, Some(&mine), &mut out[..6])
                    }
                    "all_gather" => comm.all_gather_raw(d, Some(&mine), &mut out),
                    _ => comm.reduce_scatter_v_raw(
                        d,
                        ReduceOp::Sum,
                        Some(&out.clone()),
                        &mut [0u8; 6],
                        &[6, 6, 6],
                        &[0, 6, 12],
                    ),
                }
            });
            let mut named = false;
            for (r, e) in res.into_iter().enumerate() {
                match e {
                    Err(Error::Mismatch { theirs, ours, .. }) => {
                        named |= ours.contains("data type") || theirs.contains("data type");
                    }
                    other => {
                        panic!("{a} vs {b} {coll} rank {r}: expected a mismatch, got {other:?}")
                    }
                }
            }
            assert!(named, "{a} vs {b} {coll}: no rank names the data type");
        }
    }
}
