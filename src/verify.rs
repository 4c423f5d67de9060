//! Reference data and expected results for checking collectives.
//!
//! Owns the test pattern that `mixccl-perf` and the test suites put into send
//! buffers ([`input_value`], [`fill`]) and the results a correct collective must
//! produce from it ([`expected_reduce`], [`is_close`], [`count_wrong`]).
//!
//! It must stay independent of the library: the reference is scalar f64 and
//! wrapping-integer arithmetic written here, never the `reduce` kernels, so a bug
//! in a kernel cannot hide by also being in the reference.
//!
//! The inputs are small integers chosen so that every result is exact in every
//! data type for up to 64 ranks: sums stay within +-256 (exact in bf16), products
//! are +-2^k with k <= 8, and integer types wrap exactly as the kernels do. Values
//! depend on both the rank and the element index (through a hash, not a short
//! period), so a block delivered to the wrong rank or the wrong offset is caught.

use crate::element::{DataType, Element};
use crate::reduce::ReduceOp;

/// A well-mixed 64-bit hash of `(rank, index)` (splitmix64 finaliser).
fn mix(rank: usize, index: usize) -> u64 {
    let mut h = (rank as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The value rank `rank` puts at global element `index` of its input for `op`.
///
/// - `Sum`, `Avg`: integers in -4..=4 (0..=8 for unsigned types).
/// - `Prod`: mostly 1; 2 on exactly one rank in every 8 consecutive ranks, and -1 on
///   another one for signed types, so |product| <= 2^ceil(n/8) <= 256 for n <= 64.
/// - `Max`, `Min`: integers in -11..=11 (0..=22 for unsigned types).
pub fn input_value(dtype: DataType, op: ReduceOp, rank: usize, index: usize) -> f64 {
    let signed = dtype.is_signed();
    match op {
        ReduceOp::Sum | ReduceOp::Avg => {
            let v = (mix(rank, index) % 9) as i64;
            (if signed { v - 4 } else { v }) as f64
        }
        ReduceOp::Prod => {
            // The position of the "2" among each 8 ranks depends on the index only, so
            // no index ever sees more than one 2 per 8 ranks.
            let shift = (mix(usize::MAX, index) % 8) as usize;
            match (rank + shift) % 8 {
                0 => 2.0,
                4 if signed => -1.0,
                _ => 1.0,
            }
        }
        ReduceOp::Max | ReduceOp::Min => {
            let v = (mix(rank, index) % 23) as i64;
            (if signed { v - 11 } else { v }) as f64
        }
    }
}

/// Fills `buf[k]` with [`input_value`]`(T::DTYPE, op, rank, first_index + k)`.
pub fn fill<T: Element>(buf: &mut [T], op: ReduceOp, rank: usize, first_index: usize) {
    for (k, x) in buf.iter_mut().enumerate() {
        *x = T::from_f64(input_value(T::DTYPE, op, rank, first_index + k));
    }
}

/// Wraps an integer result to the width and signedness of `dtype` (floats pass through).
fn wrap_to(dtype: DataType, x: i128) -> i128 {
    match dtype {
        DataType::I8 => x as i8 as i128,
        DataType::U8 => x as u8 as i128,
        DataType::I32 => x as i32 as i128,
        DataType::U32 => x as u32 as i128,
        DataType::I64 => x as i64 as i128,
        DataType::U64 => x as u64 as i128,
        // Floats, fp8 included, pass through.
        _ => x,
    }
}

/// `op` over ranks `0..nranks` of [`input_value`] at `index`: what every element of a
/// correct all-reduce (or the root's reduce) holds.
///
/// Integer types use the type's own wrapping arithmetic, and `Avg` is the wrapped sum
/// divided by `nranks`, truncating toward zero, as the kernels do. Float types use
/// exact f64 arithmetic; `Avg` is then `sum / nranks`. Panics if `nranks == 0`.
pub fn expected_reduce(dtype: DataType, op: ReduceOp, nranks: usize, index: usize) -> f64 {
    assert!(nranks > 0, "expected_reduce needs at least one rank");
    let values = (0..nranks).map(|r| input_value(dtype, op, r, index));
    if dtype.is_float() {
        return match op {
            ReduceOp::Sum => values.sum(),
            ReduceOp::Prod => values.product(),
            ReduceOp::Max => values.fold(f64::NEG_INFINITY, f64::max),
            ReduceOp::Min => values.fold(f64::INFINITY, f64::min),
            ReduceOp::Avg => values.sum::<f64>() / nranks as f64,
        };
    }
    // Wrapping in i128 and then truncating to the width gives the same bits as
    // wrapping in the width at every step (2^width divides 2^128).
    let values = values.map(|v| v as i128);
    let r = match op {
        ReduceOp::Sum => wrap_to(dtype, values.fold(0, i128::wrapping_add)),
        ReduceOp::Prod => wrap_to(dtype, values.fold(1, i128::wrapping_mul)),
        ReduceOp::Max => values.max().unwrap_or(0),
        ReduceOp::Min => values.min().unwrap_or(0),
        ReduceOp::Avg => wrap_to(dtype, values.fold(0, i128::wrapping_add)) / nranks as i128,
    };
    r as f64
}

/// Relative tolerance for `Avg` on float types: the division by `nranks` rounds once
/// in the element type (and f16/bf16 may round twice through f32).
fn avg_tolerance(dtype: DataType) -> f64 {
    match dtype {
        DataType::F16 | DataType::BF16 => 1e-2,
        DataType::F8E4M3 | DataType::F8E4M3Fnuz => 0.0625,
        DataType::F8E5M2 | DataType::F8E5M2Fnuz => 0.125,
        DataType::F32 => 1e-6,
        _ => 1e-12,
    }
}

/// Whether `got` is the right result for `want` (an [`expected_reduce`] or
/// [`input_value`] value).
///
/// Exact equality with `T::from_f64(want)`, except `Avg` on float types, which allows
/// a relative error of 1e-2 for f16/bf16, 1e-6 for f32 and 1e-12 for f64, measured
/// against `max(|want|, 1/64)` so results near zero are not held to a tighter bound
/// than the smallest nonzero average a 64-rank job produces.
pub fn is_close<T: Element>(got: T, want: f64, op: ReduceOp) -> bool {
    if op == ReduceOp::Avg && T::DTYPE.is_float() {
        let tol = avg_tolerance(T::DTYPE) * want.abs().max(1.0 / 64.0);
        (got.to_f64() - want).abs() <= tol
    } else {
        got == T::from_f64(want)
    }
}

/// How many elements of `got` are not [`is_close`] to `expected(k)` for their index `k`.
pub fn count_wrong<T: Element>(got: &[T], expected: impl Fn(usize) -> f64, op: ReduceOp) -> usize {
    got.iter()
        .enumerate()
        .filter(|&(k, &g)| !is_close(g, expected(k), op))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn sum_over_three_ranks_matches_hand_computation() {
        for d in DataType::ALL {
            for index in [0, 1, 17, 1000] {
                let by_hand: f64 = (0..3)
                    .map(|r| input_value(d, ReduceOp::Sum, r, index))
                    .sum();
                assert_eq!(
                    expected_reduce(d, ReduceOp::Sum, 3, index),
                    by_hand,
                    "{d} {index}"
                );
            }
        }
        // Concrete values pinned, so a change of the pattern is a conscious one.
        let v: Vec<f64> = (0..3)
            .map(|r| input_value(DataType::F32, ReduceOp::Sum, r, 5))
            .collect();
        assert_eq!(v, [0.0, 0.0, 3.0]);
        assert_eq!(expected_reduce(DataType::F32, ReduceOp::Sum, 3, 5), 3.0);
        let m: Vec<f64> = (0..3)
            .map(|r| input_value(DataType::U8, ReduceOp::Max, r, 0))
            .collect();
        assert_eq!(m, [16.0, 19.0, 4.0]);
        assert_eq!(expected_reduce(DataType::U8, ReduceOp::Max, 3, 0), 19.0);
        assert_eq!(expected_reduce(DataType::U8, ReduceOp::Min, 3, 0), 4.0);
    }

    /// Accumulates in `T` itself, rounding after every step as a kernel does, in a
    /// rank order other than 0..n.
    fn reduce_in_type<T: Element>(op: ReduceOp, n: usize, index: usize) -> T {
        let v = |r: usize| input_value(T::DTYPE, op, r, index);
        let mut acc = v(n - 1);
        for r in (0..n - 1).rev() {
            let x = v(r);
            acc = T::from_f64(match op {
                ReduceOp::Sum | ReduceOp::Avg => acc + x,
                ReduceOp::Prod => acc * x,
                ReduceOp::Max => acc.max(x),
                ReduceOp::Min => acc.min(x),
            })
            .to_f64();
        }
        if op == ReduceOp::Avg {
            acc /= n as f64;
        }
        T::from_f64(acc)
    }

    #[test]
    fn float_results_are_exact_in_the_type_up_to_64_ranks() {
        fn check<T: Element>() {
            for op in ReduceOp::ALL {
                for n in [1, 2, 7, 64] {
                    for i in 0..300 {
                        let got = reduce_in_type::<T>(op, n, i);
                        let want = expected_reduce(T::DTYPE, op, n, i);
                        assert!(is_close(got, want, op), "{:?} {op} n={n} i={i}", T::DTYPE);
                    }
                }
            }
        }
        check::<f16>();
        check::<bf16>();
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn values_are_in_range_for_every_type() {
        for d in DataType::ALL {
            let lo = if d.is_signed() { -11.0 } else { 0.0 };
            for op in ReduceOp::ALL {
                for r in 0..64 {
                    for i in 0..64 {
                        let v = input_value(d, op, r, i);
                        assert_eq!(v, v.trunc());
                        assert!((lo..=22.0).contains(&v), "{d} {op} {v}");
                        if matches!(op, ReduceOp::Sum | ReduceOp::Avg) {
                            assert!(v.abs() <= 8.0);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn prod_stays_in_range() {
        for d in [DataType::F16, DataType::BF16, DataType::F32, DataType::I32] {
            for n in [1, 2, 3, 8, 64] {
                for i in 0..500 {
                    let p = expected_reduce(d, ReduceOp::Prod, n, i);
                    assert!(p.abs() <= 256.0, "{d} n={n} i={i}: {p}");
                    assert!(p.abs() >= 1.0);
                }
            }
        }
        for i in 0..100 {
            assert!(expected_reduce(DataType::F32, ReduceOp::Prod, 8, i).abs() == 2.0);
        }
    }

    #[test]
    fn values_vary_by_rank_and_index() {
        for op in ReduceOp::ALL {
            let d = DataType::I32;
            let by_rank = (0..16).filter(|&r| input_value(d, op, r, 7) != input_value(d, op, 0, 7));
            assert!(by_rank.count() >= 4, "{op}");
            let by_index =
                (0..64).filter(|&i| input_value(d, op, 3, i) != input_value(d, op, 3, 0));
            assert!(by_index.count() >= 8, "{op}");
        }
        // A block shifted by any count is visible.
        for count in [1, 3, 9, 1024] {
            let a: Vec<f64> = (0..64)
                .map(|k| input_value(DataType::F32, ReduceOp::Sum, 0, k))
                .collect();
            let b: Vec<f64> = (0..64)
                .map(|k| input_value(DataType::F32, ReduceOp::Sum, 0, k + count))
                .collect();
            assert_ne!(a, b);
        }
    }

    #[test]
    fn integers_wrap_in_their_width() {
        // 64 ranks of u8 values up to 8 can exceed 255.
        let exact: i64 = (0..64)
            .map(|r| input_value(DataType::U8, ReduceOp::Sum, r, 2) as i64)
            .sum();
        assert_eq!(
            expected_reduce(DataType::U8, ReduceOp::Sum, 64, 2),
            (exact as u8) as f64
        );
        // 8 ranks of prod: a 2 and a -1 give -2 in every signed width.
        assert_eq!(expected_reduce(DataType::I8, ReduceOp::Prod, 8, 0), -2.0);
        assert_eq!(expected_reduce(DataType::U8, ReduceOp::Prod, 8, 0), 2.0);
        // Avg truncates toward zero.
        for i in 0..50 {
            let s = expected_reduce(DataType::I32, ReduceOp::Sum, 3, i);
            assert_eq!(
                expected_reduce(DataType::I32, ReduceOp::Avg, 3, i),
                (s / 3.0).trunc()
            );
        }
    }

    #[test]
    fn fill_and_count_wrong_agree() {
        let mut buf = vec![0f32; 100];
        fill(&mut buf, ReduceOp::Max, 2, 50);
        let want = |k: usize| input_value(DataType::F32, ReduceOp::Max, 2, 50 + k);
        assert_eq!(count_wrong(&buf, want, ReduceOp::Max), 0);
        buf[7] += 1.0;
        buf[9] = f32::NAN;
        assert_eq!(count_wrong(&buf, want, ReduceOp::Max), 2);
        let mut h = vec![bf16::ZERO; 10];
        fill(&mut h, ReduceOp::Sum, 1, 0);
        assert_eq!(
            count_wrong(
                &h,
                |k| input_value(DataType::BF16, ReduceOp::Sum, 1, k),
                ReduceOp::Sum
            ),
            0
        );
    }

    #[test]
    fn avg_tolerance_is_relative_for_floats_only() {
        let want = 5.0 / 3.0;
        assert!(is_close(f16::from_f64(want), want, ReduceOp::Avg));
        assert!(is_close(bf16::from_f64(want), want, ReduceOp::Avg));
        assert!(is_close((5.0f32) / 3.0, want, ReduceOp::Avg));
        assert!(!is_close(1.7f32, want, ReduceOp::Avg));
        // One ulp off: fine for Avg, wrong for every other op.
        let off = f16::from_bits(f16::from_f64(want).to_bits() + 1);
        assert!(is_close(off, want, ReduceOp::Avg));
        assert!(!is_close(off, want, ReduceOp::Sum));
        assert!(is_close(1i32, want.trunc(), ReduceOp::Avg));
        assert!(!is_close(2i32, want.trunc(), ReduceOp::Avg));
    }
}
