//! The uneven ("v") collectives on in-process communicators, element by element
//! against references computed here from the inputs: 1, 2, 3, 4, 5 and 8 ranks,
//! zero-sized and odd-sized blocks, gaps between blocks, tiny chunks (so blocks are
//! cut into many pieces), in and out of place, each algorithm that serves them.
//! Also: ranks that disagree about the counts get `Error::Mismatch`.

mod util;

use mixccl::{AlgoOverride, Config, Error, ReduceOp};
use std::time::Duration;
use util::*;

const RANKS: [usize; 6] = [1, 2, 3, 4, 5, 8];
/// Marks bytes no block covers; they must survive every call.
const GAP: i32 = -7777;

fn config(algo: &str, chunk: usize) -> Config {
    Config {
        timeout: Duration::from_secs(20),
        chunk_bytes: chunk,
        algo: AlgoOverride::parse(algo).unwrap(),
        ..Config::default()
    }
}

/// Rank `r`'s input element `i` (distinct per rank and index, small enough to sum).
fn val(r: usize, i: usize) -> i32 {
    ((r * 131 + i * 7) % 61) as i32 - 30
}

/// Odd, zero and uneven counts: rank p's block in pattern `k`.
fn counts(n: usize, k: usize) -> Vec<usize> {
    (0..n)
        .map(|p| match k {
            0 => (p * 37 + 5) % 23, // odd sizes, some small
            1 => {
                if p % 2 == 1 {
                    0
                } else {
                    3 * p + 1
                }
            } // zero-sized blocks
            2 => 1000 * (p + 1) + p, // large enough for many chunks
            _ => 0,                 // all empty
        })
        .collect()
}

/// Displacements with a gap of `gap` elements before every block.
fn spaced(counts: &[usize], gap: usize) -> (Vec<usize>, usize) {
    let mut at = 0;
    let d = counts
        .iter()
        .map(|c| {
            at += gap;
            let d = at;
            at += c;
            d
        })
        .collect();
    (d, at + gap)
}

#[test]
fn all_gather_v_matches_reference() {
    for algo in ["allgather:ring", "allgather:direct", ""] {
        for n in RANKS {
            for k in 0..4 {
                let cnt = counts(n, k);
                for (gap, in_place) in [(0, false), (2, false), (1, true)] {
                    let (displs, total) = spaced(&cnt, gap);
                    let errs = with_ranks(n, config(algo, 64), |comm| {
                        let r = comm.rank();
                        let mine: Vec<i32> = (0..cnt[r]).map(|i| val(r, i)).collect();
                        let mut out = vec![GAP; total];
                        let res = if in_place {
                            out[displs[r]..][..cnt[r]].copy_from_slice(&mine);
                            comm.all_gather_v_in_place(&mut out, &cnt, &displs)
                        } else {
                            comm.all_gather_v(&mine, &mut out, &cnt, &displs)
                        };
                        res.map(|()| out)
                    });
                    let mut want = vec![GAP; total];
                    for p in 0..n {
                        for i in 0..cnt[p] {
                            want[displs[p] + i] = val(p, i);
                        }
                    }
                    for (r, got) in errs.into_iter().enumerate() {
                        let got = got.unwrap_or_else(|e| {
                            panic!("{algo} n={n} k={k} gap={gap} in_place={in_place} rank {r}: {e}")
                        });
                        assert_eq!(
                            got, want,
                            "{algo} n={n} k={k} gap={gap} in_place={in_place} rank {r}"
                        );
                    }
                }
            }
        }
    }
}

/// Reference reduction of `vals` in f64 (exact for these small integers).
fn reduce_ref(op: ReduceOp, vals: &[f64]) -> f64 {
    match op {
        ReduceOp::Sum => vals.iter().sum(),
        ReduceOp::Prod => vals.iter().product(),
        ReduceOp::Max => vals.iter().cloned().fold(f64::MIN, f64::max),
        ReduceOp::Min => vals.iter().cloned().fold(f64::MAX, f64::min),
        ReduceOp::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
    }
}

#[test]
fn reduce_scatter_v_matches_reference() {
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::Avg] {
        for n in RANKS {
            for k in 0..4 {
                let cnt = counts(n, k);
                for (gap, in_place) in [(0, false), (3, false), (1, true)] {
                    let (displs, total) = spaced(&cnt, gap);
                    let res = with_ranks(n, config("", 64), |comm| {
                        let r = comm.rank();
                        let input: Vec<f64> = (0..total).map(|i| f64::from(val(r, i))).collect();
                        if in_place {
                            let mut buf = input;
                            comm.reduce_scatter_v_in_place(&mut buf, &cnt, &displs, op)
                                .map(|()| buf[displs[r]..][..cnt[r]].to_vec())
                        } else {
                            let mut out = vec![f64::NAN; cnt[r]];
                            comm.reduce_scatter_v(&input, &mut out, &cnt, &displs, op)
                                .map(|()| out)
                        }
                    });
                    for (r, got) in res.into_iter().enumerate() {
                        let what =
                            format!("{op:?} n={n} k={k} gap={gap} in_place={in_place} rank {r}");
                        let got = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                        let want: Vec<f64> = (0..cnt[r])
                            .map(|i| {
                                let at = displs[r] + i;
                                let vals: Vec<f64> =
                                    (0..n).map(|p| f64::from(val(p, at))).collect();
                                reduce_ref(op, &vals)
                            })
                            .collect();
                        assert_eq!(got.len(), want.len(), "{what}");
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= 1e-12 * w.abs(),
                                "{what} element {i}: {g} != {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Elements rank `i` sends rank `j` in all-to-all pattern `k`.
fn a2a_count(k: usize, i: usize, j: usize) -> usize {
    match k {
        0 => (i * 3 + j * 5 + 1) % 7,
        1 => {
            if (i + j) % 3 == 0 {
                0
            } else {
                400 * (i + 1) + j
            }
        }
        _ => 0,
    }
}

#[test]
fn all_to_all_v_matches_reference() {
    for n in RANKS {
        for k in 0..3 {
            for gap in [0, 2] {
                let res = with_ranks(n, config("", 64), |comm| {
                    let r = comm.rank();
                    let sc: Vec<usize> = (0..n).map(|j| a2a_count(k, r, j)).collect();
                    let rc: Vec<usize> = (0..n).map(|j| a2a_count(k, j, r)).collect();
                    let (sd, stotal) = spaced(&sc, gap);
                    // Receive blocks in reverse rank order, to use displacements freely.
                    let rev: Vec<usize> = rc.iter().rev().cloned().collect();
                    let (rd_rev, rtotal) = spaced(&rev, gap);
                    let rd: Vec<usize> = rd_rev.into_iter().rev().collect();
                    let mut send = vec![GAP; stotal];
                    for j in 0..n {
                        for e in 0..sc[j] {
                            send[sd[j] + e] = val(r, j * 10_000 + e);
                        }
                    }
                    let mut recv = vec![GAP; rtotal];
                    comm.all_to_all_v(&send, &sc, &sd, &mut recv, &rc, &rd)
                        .map(|()| (recv, rc, rd))
                });
                for (r, got) in res.into_iter().enumerate() {
                    let what = format!("n={n} k={k} gap={gap} rank {r}");
                    let (recv, rc, rd) = got.unwrap_or_else(|e| panic!("{what}: {e}"));
                    let mut want = vec![GAP; recv.len()];
                    for p in 0..n {
                        for e in 0..rc[p] {
                            want[rd[p] + e] = val(p, r * 10_000 + e);
                        }
                    }
                    assert_eq!(recv, want, "{what}");
                }
            }
        }
    }
}

#[test]
fn disagreeing_counts_are_a_mismatch() {
    for (coll, n) in [
        ("allgather", 3),
        ("reducescatter", 4),
        ("allgather:direct", 3),
    ] {
        let cfg = config(if coll.contains(':') { coll } else { "" }, 1 << 16);
        let res = with_ranks(n, cfg, |comm| {
            let r = comm.rank();
            // Rank 1 thinks rank 0's block is one element longer.
            let mut cnt = vec![4usize; n];
            if r == 1 {
                cnt[0] = 5;
            }
            let displs = mixccl::displacements(&cnt);
            let total: usize = cnt.iter().sum();
            if coll.starts_with("allgather") {
                let mine = vec![1.0f32; cnt[r]];
                let mut out = vec![0.0f32; total];
                comm.all_gather_v(&mine, &mut out, &cnt, &displs)
            } else {
                let input = vec![1.0f32; total];
                let mut out = vec![0.0f32; cnt[r]];
                comm.reduce_scatter_v(&input, &mut out, &cnt, &displs, ReduceOp::Sum)
            }
        });
        let mut named = false;
        for (r, e) in res.into_iter().enumerate() {
            match e {
                Err(Error::Mismatch {
                    rank, theirs, ours, ..
                }) => {
                    let text = format!("{theirs} / {ours}");
                    named |= text.contains("per-rank counts");
                    if r == 1 && rank == 1 {
                        assert!(
                            text.contains("[5, 4"),
                            "rank 1 does not name its counts: {text}"
                        );
                    }
                }
                other => panic!("{coll} rank {r}: expected a mismatch, got {other:?}"),
            }
        }
        assert!(named, "{coll}: no rank says the per-rank counts differ");
    }
}

#[test]
fn all_to_all_v_disagreement_is_a_mismatch() {
    let n = 3;
    let res = with_ranks(n, config("", 1 << 16), |comm| {
        let r = comm.rank();
        let sc = vec![2usize; n];
        let mut rc = vec![2usize; n];
        if r == 2 {
            rc[0] = 3; // rank 0 sends 2
        }
        let send = vec![1i32; 6];
        let mut recv = vec![0i32; rc.iter().sum()];
        comm.all_to_all_v(
            &send,
            &sc,
            &mixccl::displacements(&sc),
            &mut recv,
            &rc,
            &mixccl::displacements(&rc),
        )
    });
    // All-to-all-v's counts are checked pairwise (the header's bytes to and from each
    // peer), so the two ranks that disagree get the mismatch; rank 1's own exchanges
    // agree, and it may finish before, or fail after, the pair stops (it returned Ok
    // once under load), but never hangs (with_ranks joins every rank).
    for r in [0, 2] {
        assert!(
            matches!(res[r], Err(Error::Mismatch { .. })),
            "rank {r}: {:?}",
            res[r]
        );
    }
}

#[test]
fn bad_counts_are_rejected_before_any_transfer() {
    let res = with_ranks(2, config("", 1 << 16), |comm| {
        let r = comm.rank();
        let mut out = vec![0i32; 8];
        let short = comm
            .all_gather_v(&[1i32; 3], &mut out, &[3], &[0])
            .unwrap_err()
            .to_string();
        let past = comm
            .all_gather_v(&[1i32; 3], &mut out, &[3, 3], &[0, 6])
            .unwrap_err()
            .to_string();
        let overlap = comm
            .all_gather_v(&[1i32; 3], &mut out, &[3, 3], &[0, 2])
            .unwrap_err()
            .to_string();
        let wrong = comm
            .all_gather_v(&[1i32; 2], &mut out, &[3, 3], &[0, 3])
            .unwrap_err()
            .to_string();
        // Still usable.
        let mut ok = vec![0i32; 5];
        let cnt = [2, 3];
        let mine = vec![r as i32; cnt[r]];
        comm.all_gather_v(&mine, &mut ok, &cnt, &[0, 2]).unwrap();
        assert_eq!(ok, vec![0, 0, 1, 1, 1]);
        (short, past, overlap, wrong)
    });
    for (short, past, overlap, wrong) in res {
        assert!(short.contains("expected nranks (2)"), "{short}");
        assert!(past.contains("ends past"), "{past}");
        assert!(overlap.contains("overlap"), "{overlap}");
        assert!(wrong.contains("send has 8 bytes"), "{wrong}");
    }
}

#[test]
fn split_by_weight_sums_and_is_proportional() {
    use mixccl::split_by_weight;
    assert_eq!(split_by_weight(10, &[1, 1]), vec![5, 5]);
    assert_eq!(split_by_weight(10, &[3, 1]), vec![8, 2]); // 7.5 / 2.5: tie to index 0
    assert_eq!(split_by_weight(7, &[0, 0, 0]), vec![3, 2, 2]);
    assert_eq!(split_by_weight(5, &[0, 2]), vec![0, 5]);
    assert_eq!(split_by_weight(0, &[4, 9]), vec![0, 0]);
    assert!(split_by_weight(9, &[]).is_empty());
    assert_eq!(
        split_by_weight(usize::MAX, &[u64::MAX, u64::MAX])
            .iter()
            .map(|x| *x as u128)
            .sum::<u128>(),
        usize::MAX as u128
    );
    for total in [0usize, 1, 17, 1000, 65_537] {
        for w in [
            vec![1u64, 2, 3],
            vec![5, 0, 7, 1],
            vec![448, 240],
            vec![1; 8],
        ] {
            let s = split_by_weight(total, &w);
            assert_eq!(s.iter().sum::<usize>(), total, "{total} {w:?}");
            let wsum: u64 = w.iter().sum();
            for (share, wi) in s.iter().zip(&w) {
                let exact = total as f64 * *wi as f64 / wsum as f64;
                assert!((*share as f64 - exact).abs() < 1.0, "{total} {w:?}: {s:?}");
            }
        }
    }
}

#[test]
fn uneven_results_are_identical_on_every_rank_and_every_run() {
    // Floats whose sums depend on order: every rank's all-gathered reduce-scatter
    // output must be the same bits, run after run.
    let n = 5;
    let cnt = counts(n, 2);
    let displs = mixccl::displacements(&cnt);
    let total: usize = cnt.iter().sum();
    let once = || {
        with_ranks(n, config("", 4096), |comm| {
            let r = comm.rank();
            let input: Vec<f32> = (0..total)
                .map(|i| ((r * 7919 + i * 104_729) % 1_000_003) as f32 * 1.0e-3 + 0.1)
                .collect();
            let mut part = vec![0.0f32; cnt[r]];
            comm.reduce_scatter_v(&input, &mut part, &cnt, &displs, ReduceOp::Sum)
                .unwrap();
            let mut all = vec![0.0f32; total];
            comm.all_gather_v(&part, &mut all, &cnt, &displs).unwrap();
            all.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
        })
    };
    let first = once();
    for r in 1..n {
        assert_eq!(first[r], first[0], "rank {r} differs from rank 0");
    }
    assert_eq!(once(), first, "a second run gave other bits");
}
