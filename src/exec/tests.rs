//! Several ranks over in-process links, driven by one thread that steps each rank's
//! progress in turn: deterministic, no sleeps, no clocks.

use super::lower::{lower, HEADER_SLOT};
use super::progress::{Progress, State, Step};
use super::{control, Buffers, Context};
use crate::algo::{build, Buf, Call, Op, Region};
use crate::config::{Algorithm, Collective};
use crate::element::DataType;
use crate::error::Error;
use crate::header::{fnv32, CallHeader};
use crate::reduce::ReduceOp;
use crate::transport::board::Board;
use crate::transport::{mem, Link};
use crate::verify::{count_wrong, expected_reduce, input_value};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Runs `coll` with `algo` on `nranks` ranks of `count` f32 each, behind call
/// headers, over in-process links of `lanes` lanes and `capacity` bytes per lane
/// (small, so transfers go in many pieces), stepping the ranks round-robin from
/// one thread. `board`: the bytes of each rank's ring of a host board the ranks
/// share (0: none). Returns each rank's output and the number of rounds taken.
#[allow(clippy::too_many_arguments)]
fn stepped(
    coll: Collective,
    algo: Algorithm,
    op: ReduceOp,
    nranks: usize,
    count: usize,
    lanes: usize,
    capacity: usize,
    board: usize,
) -> (Vec<Vec<f32>>, usize) {
    let boards = if board > 0 && nranks > 1 {
        boards(nranks, board)
    } else {
        Vec::new()
    };
    let dtype = DataType::F32;
    let hosts: Vec<Vec<usize>> = (0..nranks)
        .collect::<Vec<_>>()
        .chunks(2)
        .map(<[usize]>::to_vec)
        .collect();
    let mut links: Vec<Vec<Option<Box<dyn Link>>>> = mem::mesh(nranks, lanes, capacity)
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
                .collect()
        })
        .collect();
    let call = |rank| Call {
        coll,
        dtype,
        op,
        count,
        root: 0,
        rank,
        nranks,
        in_place: false,
        chunk: 256,
    };
    let schedules: Vec<_> = (0..nranks)
        .map(|r| build(&call(r), algo, &hosts).unwrap())
        .collect();
    let lowered: Vec<_> = (0..nranks)
        .map(|r| {
            lower(&schedules[r], r, nranks, true, |p| {
                links[r][p].as_ref().map(|l| l.lanes())
            })
            .unwrap()
        })
        .collect();
    let inputs: Vec<Vec<f32>> = (0..nranks)
        .map(|r| {
            (0..count)
                .map(|i| input_value(dtype, op, r, i) as f32)
                .collect()
        })
        .collect();
    let out_count = match coll {
        Collective::AllGather => count * nranks,
        _ => count,
    };
    let mut outputs = vec![vec![0f32; out_count]; nranks];
    let mut scratch: Vec<Vec<u64>> = schedules
        .iter()
        .map(|s| vec![0u64; s.scratch.div_ceil(8)])
        .collect();
    let mut headers = vec![vec![0u8; HEADER_SLOT * nranks]; nranks];
    let labels: Vec<String> = (0..nranks)
        .map(|r| format!("{coll} #1 on rank {r}"))
        .collect();
    let abort = AtomicBool::new(false);
    let contexts: Vec<Context<'_>> = (0..nranks)
        .map(|r| Context {
            dtype,
            op,
            nranks,
            rank: r,
            timeout: Duration::from_secs(1),
            spin: Duration::ZERO,
            label: &labels[r],
            abort: &abort,
            header: Some(CallHeader {
                seq: 1,
                coll,
                dtype,
                op,
                count: count as u64,
                root: 0,
                algo: fnv32(algo.name()),
                bytes_to_you: 0,
                bytes_from_you: 0,
            }),
            algo: algo.name(),
            p2p_seq: None,
            board: boards.get(r),
        })
        .collect();
    let mut bufs: Vec<Buffers<'_, '_>> = inputs
        .iter()
        .zip(outputs.iter_mut())
        .zip(scratch.iter_mut().zip(headers.iter_mut()))
        .zip(&schedules)
        .map(|(((i, o), (s, h)), sched)| Buffers {
            input: bytemuck::cast_slice(i),
            output: bytemuck::cast_slice_mut(o),
            scratch: &mut bytemuck::cast_slice_mut::<u64, u8>(s)[..sched.scratch],
            group_in: &[],
            group_out: &mut [],
            header: h,
        })
        .collect();
    for r in 0..nranks {
        let mine = contexts[r].header.unwrap();
        control::write_headers(&lowered[r], mine, &mut bufs[r], nranks, &contexts[r]);
    }
    let mut states: Vec<State> = (0..nranks).map(|_| State::default()).collect();
    let mut progress: Vec<Progress<'_>> = lowered
        .iter()
        .zip(states.iter_mut())
        .map(|(l, s)| Progress::new(l, s))
        .collect();
    let mut rounds = 0;
    let mut done = vec![false; nranks];
    loop {
        rounds += 1;
        let mut moved = false;
        for r in 0..nranks {
            match progress[r]
                .step(&mut bufs[r], &mut links[r], &contexts[r])
                .unwrap_or_else(|e| panic!("{coll} {algo} rank {r} of {nranks}: {e}"))
            {
                // Finishing in this step is progress too.
                Step::Done => moved |= !std::mem::replace(&mut done[r], true),
                Step::Progressed => moved = true,
                Step::Idle => {}
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        // Every rank ran once since the last change: with in-process links nothing
        // else can make a lane ready, so this is a deadlock.
        assert!(
            moved,
            "{coll} {algo} on {nranks} ranks: no rank can progress after {rounds} rounds: {}",
            progress
                .iter()
                .enumerate()
                .map(|(r, p)| format!("\nrank {r}: {}", p.describe()))
                .collect::<String>()
        );
    }
    drop(progress);
    drop(bufs);
    (outputs, rounds)
}

/// `n` views of one host board with rings of `cap` bytes, as ranks 0..n map it.
fn boards(n: usize, cap: usize) -> Vec<Board> {
    let (first, fd) = Board::create(n, cap, 0).expect("create a board");
    let mut v = vec![first];
    for me in 1..n {
        v.push(Board::open(&fd, n, me).expect("open the board"));
    }
    v
}

fn check_all_reduce(algo: Algorithm, op: ReduceOp) {
    // The board's rings (when the algorithm uses them) are smaller than a call's
    // blocks, so they wrap and writers wait for readers.
    let board = if algo == Algorithm::Publish { 1024 } else { 0 };
    for nranks in [1usize, 2, 3, 4, 5, 8] {
        for count in [1usize, 1031] {
            let (out, rounds) = stepped(
                Collective::AllReduce,
                algo,
                op,
                nranks,
                count,
                2,
                100,
                board,
            );
            for (r, o) in out.iter().enumerate() {
                let wrong = count_wrong(o, |i| expected_reduce(DataType::F32, op, nranks, i), op);
                assert_eq!(
                    wrong, 0,
                    "{algo} all-reduce ({op:?}) of {count} on {nranks} ranks: rank {r}"
                );
            }
            if nranks > 1 && count > 100 {
                // Links of 100 bytes: the data cannot have moved in one round.
                assert!(rounds > 10, "{algo} on {nranks} ranks took {rounds} rounds");
            }
        }
    }
}

#[test]
fn ring_all_reduce_stepped_from_one_thread() {
    check_all_reduce(Algorithm::Ring, ReduceOp::Sum);
    check_all_reduce(Algorithm::Ring, ReduceOp::Avg);
}

#[test]
fn tree_all_reduce_stepped_from_one_thread() {
    check_all_reduce(Algorithm::Tree, ReduceOp::Sum);
    check_all_reduce(Algorithm::Tree, ReduceOp::Max);
}

#[test]
fn board_all_reduce_stepped_from_one_thread() {
    check_all_reduce(Algorithm::Publish, ReduceOp::Sum);
    check_all_reduce(Algorithm::Publish, ReduceOp::Avg);
}

/// Rank 0 of `boards.len()` runs `ops` through the blocking [`super::run`],
/// without headers, on `boards[0]` and in-process links; its peers never run (what
/// they sent before is `peers(links)`'s).
fn alone_on_the_board(
    ops: Vec<Op>,
    boards: &[Board],
    timeout: Duration,
    abort: &AtomicBool,
    peers: impl FnOnce(&mut [Vec<Option<Box<dyn Link>>>]),
) -> crate::error::Result<()> {
    let nranks = boards.len();
    let mut links: Vec<Vec<Option<Box<dyn Link>>>> = mem::mesh(nranks, 1, 1 << 16)
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
                .collect()
        })
        .collect();
    peers(&mut links);
    let input = vec![7u8; 4 << 16];
    let mut output = vec![0u8; 4 << 16];
    let mut header = vec![0u8; HEADER_SLOT * nranks];
    let mut bufs = Buffers {
        input: &input,
        output: &mut output,
        scratch: &mut [],
        group_in: &[],
        group_out: &mut [],
        header: &mut header,
    };
    let cx = Context {
        dtype: DataType::U8,
        op: ReduceOp::Sum,
        nranks,
        rank: 0,
        timeout,
        spin: Duration::ZERO,
        label: &"allgather #1 on rank 0",
        abort,
        header: None,
        algo: "publish",
        p2p_seq: None,
        board: Some(&boards[0]),
    };
    let schedule = std::sync::Arc::new(crate::algo::Schedule { ops, scratch: 0 });
    super::run(
        &schedule,
        &mut bufs,
        &mut links[0],
        &mut super::Workspace::default(),
        &cx,
    )
}

fn region(buf: Buf, off: usize, len: usize) -> Region {
    Region::new(buf, off, len)
}

#[test]
fn a_board_wait_times_out_naming_the_writers_it_waits_for() {
    let ops = vec![
        Op::BoardWrite {
            src: region(Buf::Input, 0, 10),
        },
        Op::BoardRead {
            peer: 1,
            dst: region(Buf::Output, 10, 10),
        },
        Op::BoardRead {
            peer: 2,
            dst: region(Buf::Output, 20, 10),
        },
    ];
    // Rank 2 published its block; rank 1 never did.
    let b = boards(3, 4096);
    assert_eq!(b[2].write_some(&[3; 10]), 10);
    let err = alone_on_the_board(
        ops,
        &b,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err();
    match err {
        Error::Timeout { waiting_for, .. } => assert_eq!(waiting_for, vec![1]),
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn a_full_board_ring_times_out_naming_the_readers_holding_it() {
    // Three rings' worth into a 4 KiB ring that ranks 1 and 2 never read.
    let ops = vec![Op::BoardWrite {
        src: region(Buf::Input, 0, 3 * 4096),
    }];
    let b = boards(3, 4096);
    assert_eq!(b[1].read_some(0, &mut [0; 10]), 0, "nothing published yet");
    let err = alone_on_the_board(
        ops,
        &b,
        Duration::from_millis(100),
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap_err();
    match err {
        Error::Timeout { waiting_for, .. } => assert_eq!(waiting_for, vec![1, 2]),
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn an_abort_ends_a_rank_sleeping_on_the_board() {
    let abort = AtomicBool::new(false);
    let ops = vec![Op::BoardRead {
        peer: 1,
        dst: region(Buf::Output, 0, 10),
    }];
    let b = boards(2, 4096);
    let err = std::thread::scope(|s| {
        let (b1, abort) = (&b[1], &abort);
        // Once rank 0 sleeps on its bell (seen through rank 1's view), abort.
        s.spawn(move || {
            for _ in 0..600_000 {
                if b1.sleeps(0) {
                    abort.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            abort.store(true, std::sync::atomic::Ordering::SeqCst);
            panic!("rank 0 never slept on the board");
        });
        alone_on_the_board(ops, &b, Duration::from_secs(600), abort, |_| {})
    })
    .unwrap_err();
    assert!(matches!(err, Error::Aborted), "wrong error: {err}");
}

#[test]
fn a_peer_report_ends_a_board_wait() {
    let ops = vec![Op::BoardRead {
        peer: 1,
        dst: region(Buf::Output, 0, 10),
    }];
    let err = alone_on_the_board(
        ops,
        &boards(2, 4096),
        Duration::from_secs(600),
        &AtomicBool::new(false),
        |links| {
            let report = Error::PeerLost {
                rank: 1,
                reason: "its device failed".into(),
            };
            let msg = crate::header::encode_control(&report).expect("encodes");
            links[1][0].as_mut().unwrap().send_control(&msg).unwrap();
        },
    )
    .unwrap_err();
    match err {
        Error::PeerLost { rank, reason } => {
            assert_eq!(rank, 1);
            assert!(reason.starts_with("its device failed"), "{reason}");
        }
        e => panic!("wrong error: {e}"),
    }
}

#[test]
fn direct_and_hierarchical_all_reduce_stepped_from_one_thread() {
    check_all_reduce(Algorithm::Direct, ReduceOp::Sum);
    check_all_reduce(Algorithm::Hier, ReduceOp::Sum);
}

#[test]
fn all_gather_stepped_from_one_thread() {
    let op = ReduceOp::Sum;
    for algo in [
        Algorithm::Ring,
        Algorithm::Direct,
        Algorithm::Hier,
        Algorithm::Publish,
    ] {
        let board = if algo == Algorithm::Publish { 1024 } else { 0 };
        for nranks in [1usize, 2, 3, 4, 5, 8] {
            for count in [1usize, 333, 1000] {
                let (out, _) = stepped(
                    Collective::AllGather,
                    algo,
                    op,
                    nranks,
                    count,
                    2,
                    100,
                    board,
                );
                for (r, o) in out.iter().enumerate() {
                    for q in 0..nranks {
                        let block = &o[q * count..(q + 1) * count];
                        let wrong =
                            count_wrong(block, |i| input_value(DataType::F32, op, q, i), op);
                        assert_eq!(
                            wrong, 0,
                            "{algo} all-gather of {count} on {nranks} ranks: rank {r}'s block {q}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn mismatched_call_is_reported_by_a_stepped_rank() {
    // Rank 1 of 2 runs a call of another count: its header differs, and the step
    // that receives it fails with a mismatch naming the peer.
    let nranks = 2;
    let dtype = DataType::F32;
    let op = ReduceOp::Sum;
    let mut links: Vec<Vec<Option<Box<dyn Link>>>> = mem::mesh(nranks, 1, 1 << 16)
        .unwrap()
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
                .collect()
        })
        .collect();
    let counts = [64usize, 65];
    let schedules: Vec<_> = (0..nranks)
        .map(|r| {
            let call = Call {
                coll: Collective::AllReduce,
                dtype,
                op,
                count: counts[r],
                root: 0,
                rank: r,
                nranks,
                in_place: true,
                chunk: 1 << 16,
            };
            build(&call, Algorithm::Ring, &[vec![0, 1]]).unwrap()
        })
        .collect();
    let lowered: Vec<_> = (0..nranks)
        .map(|r| lower(&schedules[r], r, nranks, true, |_| Some(1)).unwrap())
        .collect();
    let label = "allreduce #1";
    let abort = AtomicBool::new(false);
    let cx = |r: usize| Context {
        dtype,
        op,
        nranks,
        rank: r,
        timeout: Duration::from_secs(1),
        spin: Duration::ZERO,
        label: &label,
        abort: &abort,
        header: Some(CallHeader {
            seq: 1,
            coll: Collective::AllReduce,
            dtype,
            op,
            count: counts[r] as u64,
            root: 0,
            algo: fnv32("ring"),
            bytes_to_you: 0,
            bytes_from_you: 0,
        }),
        algo: "ring",
        p2p_seq: None,
        board: None,
    };
    let mut outs: Vec<Vec<f32>> = counts.iter().map(|&c| vec![1.0; c]).collect();
    let mut hdrs = vec![vec![0u8; HEADER_SLOT * nranks]; nranks];
    let mut scratch: Vec<Vec<u8>> = schedules.iter().map(|s| vec![0; s.scratch]).collect();
    let mut bufs: Vec<Buffers<'_, '_>> = outs
        .iter_mut()
        .zip(hdrs.iter_mut())
        .zip(scratch.iter_mut())
        .map(|((o, h), s)| Buffers {
            input: &[],
            output: bytemuck::cast_slice_mut(o),
            scratch: s,
            group_in: &[],
            group_out: &mut [],
            header: h,
        })
        .collect();
    let mut states = [State::default(), State::default()];
    let [s0, s1] = &mut states;
    let mut progress = [
        Progress::new(&lowered[0], s0),
        Progress::new(&lowered[1], s1),
    ];
    for r in 0..nranks {
        control::write_headers(
            &lowered[r],
            cx(r).header.unwrap(),
            &mut bufs[r],
            nranks,
            &cx(r),
        );
    }
    // Each rank's header goes out in its first step, so within two rounds each has
    // received the other's; a failed rank is not stepped again.
    let mut errors = Vec::new();
    for _ in 0..2 {
        for r in 0..nranks {
            if errors.iter().any(|(q, _)| *q == r) {
                continue;
            }
            if let Err(e) = progress[r].step(&mut bufs[r], &mut links[r], &cx(r)) {
                errors.push((r, e));
            }
        }
    }
    assert_eq!(errors.len(), 2, "{errors:?}");
    for (r, e) in errors {
        match e {
            crate::error::Error::Mismatch { rank, peer, .. } => {
                assert_eq!((rank, peer), (r, 1 - r));
            }
            e => panic!("rank {r}: {e}"),
        }
    }
}
