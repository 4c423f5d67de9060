//! Shared-memory transport for peers on the same host.
//!
//! Per pair of ranks, the first time a call needs that pair, the lower rank creates
//! one memfd holding two single-producer, single-consumer byte rings (one per
//! direction) and two eventfd doorbells, and hands all three to the higher rank over
//! a Unix socket in the abstract namespace (SCM_RIGHTS). Nothing ever has a name in /dev/shm, so a normal exit, an error
//! and a SIGKILL all leave nothing behind. The Unix socket stays open as a liveness
//! channel: when the peer process dies, it reads EOF, which becomes `PeerLost`.
//!
//! Ring protocol: `tail` is written only by the producer, `head` only by the
//! consumer; data is published with a store of `tail` and freed with a store of
//! `head`. A side rings the other's doorbell only when the other may be asleep on
//! this ring: the producer when the ring was empty before its write, the consumer
//! when it was full before its read (a waiting side always saw exactly that state
//! last). A waiting side polls its doorbell; the executor spins briefly first.
//!
//! - `link`: [`ShmLink`], the rings, doorbells and liveness channel.
//! - `connect`: the listener and the offers it admitted, the offer and its hello,
//!   connecting peers on first use, and handing out the host's board.

mod connect;
mod link;

#[cfg(test)]
pub(crate) use connect::connect_host_peers;
pub(crate) use connect::{connect_peers, listen, share_board, ShmAcceptor, ShmSpec};
pub use link::ShmLink;

#[cfg(test)]
mod tests {
    use super::connect::*;
    use super::link::*;
    use crate::error::Error;
    use crate::transport::Link;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::{Duration, Instant};

    /// A connected pair of links between "rank 0" and "rank 1" of this process.
    fn pair() -> (ShmLink, ShmLink) {
        // Listener names are per token: one token per pair, also across test processes.
        static PAIRS: AtomicU32 = AtomicU32::new(0);
        let mut token = [0u8; 16];
        token[..4].copy_from_slice(&std::process::id().to_le_bytes());
        token[4..8].copy_from_slice(&PAIRS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let spec = move |rank| ShmSpec {
            rank,
            token,
            name_token: token,
            names: &[0, 1],
            same_host: &[true, true],
            capacity: 4096,
            zero_copy: true,
            board_bytes: 64 << 10,
            deadline: Instant::now() + Duration::from_secs(10),
        };
        let l1 = listen(&token, 1).expect("listener of rank 1");
        let l0 = listen(&token, 0).expect("listener of rank 0");
        let one = std::thread::spawn(move || connect_host_peers(&spec(1), &l1));
        let mut zero = connect_host_peers(&spec(0), &l0).expect("rank 0 links");
        let mut one = one.join().expect("rank 1 thread").expect("rank 1 links");
        (zero[1].take().expect("0->1"), one[0].take().expect("1->0"))
    }

    #[test]
    fn a_peer_that_wrote_and_left_is_lost_only_once_its_bytes_are_read() {
        let (mut zero, mut one) = pair();
        assert_eq!(zero.send_some(0, b"last words").expect("send"), 10);
        drop(zero);
        std::thread::sleep(LIVENESS_EVERY * 2);
        // The end is known (ring closed, goodbye on the socket), but bytes remain.
        one.check_rx_alive()
            .expect("bytes left to read: not lost yet");
        let mut got = [0u8; 10];
        assert_eq!(one.recv_some(0, &mut got).expect("read the last bytes"), 10);
        assert_eq!(&got, b"last words");
        std::thread::sleep(LIVENESS_EVERY * 2);
        let err = one
            .recv_some(0, &mut got)
            .expect_err("nothing more can come");
        assert!(
            matches!(err, Error::PeerLost { rank: 0, .. }),
            "wrong error: {err}"
        );
    }

    #[test]
    fn gathered_pieces_arrive_in_order_and_stop_where_the_ring_is_full() {
        let (mut zero, mut one) = pair();
        let a: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let b: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
        // 4096-byte ring: all of `a` and the first 1096 bytes of `b` fit.
        assert_eq!(zero.send_gather(0, &[&a, &[], &b]).expect("send"), 4096);
        assert_eq!(zero.send_gather(0, &[&b[1096..]]).expect("full"), 0);
        let mut got = vec![0u8; 5000];
        let mut have = 0;
        while have < 4096 {
            have += one.recv_some(0, &mut got[have..4096]).expect("recv");
        }
        assert_eq!(zero.send_gather(0, &[&b[1096..]]).expect("rest"), 904);
        while have < 5000 {
            have += one.recv_some(0, &mut got[have..]).expect("recv");
        }
        assert_eq!(&got[..3000], &a[..]);
        assert_eq!(&got[3000..], &b[..]);
    }
}
