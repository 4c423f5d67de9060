//! Grouped point-to-point transfers (ncclGroupStart/End semantics) and splitting a
//! communicator (ncclCommSplit).

mod util;

use mixccl::{Communicator, ReduceOp, Transfer};
use util::*;

fn pattern(from: usize, to: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (from * 31 + to * 7 + i * 13) as u8)
        .collect()
}

#[test]
fn group_all_to_all_with_self_copies() {
    for n in [1, 2, 3, 5] {
        for len in [0usize, 1, 1031, (1 << 20) + 3] {
            let ok = with_ranks(n, test_config(), |comm| {
                let r = comm.rank();
                let sends: Vec<Vec<u8>> = (0..n).map(|p| pattern(r, p, len)).collect();
                let mut recvs: Vec<Vec<u8>> = (0..n).map(|_| vec![0xEE; len]).collect();
                let mut t: Vec<Transfer> = sends
                    .iter()
                    .enumerate()
                    .map(|(p, b)| Transfer::Send { peer: p, buf: b })
                    .collect();
                t.extend(
                    recvs
                        .iter_mut()
                        .enumerate()
                        .map(|(p, b)| Transfer::Recv { peer: p, buf: b }),
                );
                comm.group(t).expect("group");
                (0..n).all(|p| recvs[p] == pattern(p, r, len))
            });
            assert!(ok.iter().all(|x| *x), "{n} ranks, {len} bytes: {ok:?}");
        }
    }
}

#[test]
fn group_keeps_order_of_several_sends_to_one_peer() {
    let ok = with_ranks(2, test_config(), |comm| {
        let r = comm.rank();
        let peer = 1 - r;
        let a = pattern(r, 0, 5000);
        let b = pattern(r, 1, 7);
        let (mut x, mut y) = (vec![0u8; 5000], vec![0u8; 7]);
        comm.group(vec![
            Transfer::Recv { peer, buf: &mut x },
            Transfer::Send { peer, buf: &a },
            Transfer::Send { peer, buf: &b },
            Transfer::Recv { peer, buf: &mut y },
        ])
        .expect("group");
        x == pattern(peer, 0, 5000) && y == pattern(peer, 1, 7)
    });
    assert_eq!(ok, vec![true, true]);
}

#[test]
fn group_rejects_unmatched_self_transfers() {
    let mut comms = Communicator::in_process(1, test_config()).unwrap();
    let buf = [1u8; 4];
    let e = comms[0]
        .group(vec![Transfer::Send { peer: 0, buf: &buf }])
        .unwrap_err();
    assert!(
        matches!(e, mixccl::Error::InvalidArgument(ref m) if m.contains("itself")),
        "{e}"
    );
    let e = comms[0]
        .group(vec![Transfer::Send { peer: 3, buf: &buf }])
        .unwrap_err();
    assert!(
        matches!(e, mixccl::Error::InvalidArgument(ref m) if m.contains('3')),
        "{e}"
    );
}

/// Splits 5 ranks by parity (key reverses the order), leaves rank 4 out, and checks an
/// all-reduce of original ranks inside each part.
#[test]
fn split_by_color_and_key() {
    let n = 5;
    let results = with_ranks(n, test_config(), |comm| {
        let r = comm.rank();
        let color = if r == 4 { None } else { Some((r % 2) as u32) };
        let sub = comm.split(color, -(r as i64)).expect("split");
        let sub = match sub {
            None => return (r, None),
            Some(s) => s,
        };
        let mut sub = sub;
        let mut v = vec![r as i64; 9];
        sub.all_reduce_in_place(&mut v, ReduceOp::Sum)
            .expect("all_reduce in the split");
        (r, Some((sub.rank(), sub.nranks(), v[0])))
    });
    for (r, got) in results {
        let want = match r {
            4 => None,
            0 => Some((1, 2, 2)), // {0, 2}, key -r: rank 2 first
            2 => Some((0, 2, 2)),
            1 => Some((1, 2, 4)), // {1, 3}
            3 => Some((0, 2, 4)),
            _ => unreachable!(),
        };
        assert_eq!(got, want, "rank {r}");
    }
}
