//! The [`Link`] contract, checked the same way on every transport: in-process
//! (`mem`), TCP on loopback, shared memory between threads, and RDMA over the fake
//! libibverbs (`tests/fixtures/fake_ibverbs.c`; skipped with a printed reason where
//! rdma-core's header or a C compiler is missing).
//!
//! Each check is one generic function over a connected pair that a [`Transport`]
//! builds; `conformance!` instantiates every check for every transport, so a
//! failure names both (`transport::conformance::shm::control_both_ways`). One
//! thread drives both ends; every wait is bounded by [`BOUND`] and fails as a stall.

use super::mem::MemLink;
use super::shm::{ShmLink, ShmSpec};
use super::tcp::{MeshSpec, TcpLink};
use super::{Direction, Link, LinkClass, WaitHandle};
use crate::error::Error;
use crate::sys;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The longest any one wait in a check may take before it fails as a stall.
const BOUND: Duration = Duration::from_secs(60);

/// Sizes every lane carries each way: empty, one byte, odd primes, several MiB.
const SIZES: [usize; 7] = [0, 1, 3, 7, 1031, 65_537, (4 << 20) + 7];

/// A way to build a connected pair of links, and what its links offer.
trait Transport {
    /// One end, as `pair` builds it.
    type End: 'static;
    /// `Link::kind` of its links.
    const KIND: LinkClass;
    /// `recv_with` shows received bytes in place.
    const RECV_WITH: bool;
    /// `read_remote` reads the peer's memory.
    const READ_REMOTE: bool;
    /// The data lanes report a closed or dead peer as `PeerLost`. An RDMA link
    /// learns of it through its control channel only (the executor polls that):
    /// its idle queue pairs say nothing until a write to the peer fails.
    const DATA_SEES_CLOSE: bool;

    /// Rank 0's link to rank 1 and rank 1's link to rank 0; `None`, with the
    /// reason printed, where this host cannot build them.
    fn pair() -> Option<(Self::End, Self::End)>;

    /// The end as the trait object under test.
    fn link(end: &mut Self::End) -> &mut dyn Link;

    /// Ends `end` as a rank whose process dies: its connections close and no
    /// goodbye is sent.
    fn die(end: Self::End);
}

struct Mem;

impl Transport for Mem {
    type End = MemLink;
    const KIND: LinkClass = LinkClass::Mem;
    const RECV_WITH: bool = false;
    const READ_REMOTE: bool = false;
    const DATA_SEES_CLOSE: bool = true;

    fn pair() -> Option<(MemLink, MemLink)> {
        let mut m = super::mem::mesh(2, 3, 4096).expect("in-process mesh");
        Some((m[0][1].take()?, m[1][0].take()?))
    }

    fn link(end: &mut MemLink) -> &mut dyn Link {
        end
    }

    fn die(end: MemLink) {
        end.close_without_goodbye();
    }
}

struct Tcp;

impl Transport for Tcp {
    type End = TcpLink;
    const KIND: LinkClass = LinkClass::Tcp;
    const RECV_WITH: bool = false;
    const READ_REMOTE: bool = false;
    const DATA_SEES_CLOSE: bool = true;

    fn pair() -> Option<(TcpLink, TcpLink)> {
        Some(tcp_pair())
    }

    fn link(end: &mut TcpLink) -> &mut dyn Link {
        end
    }

    fn die(end: TcpLink) {
        shut_down_sockets(&end);
        // The descriptors and memory leak, as a dead process's stay with the kernel.
        std::mem::forget(end);
    }
}

/// TCP links with TLS on every lane and the control socket.
struct TlsTcp;

impl Transport for TlsTcp {
    type End = TcpLink;
    const KIND: LinkClass = LinkClass::Tcp;
    const RECV_WITH: bool = false;
    const READ_REMOTE: bool = false;
    const DATA_SEES_CLOSE: bool = true;

    fn pair() -> Option<(TcpLink, TcpLink)> {
        let c = super::tcp::tls::tests::certs();
        let ctx = [c.good[0].context().ok()?, c.good[1].context().ok()?];
        let (listeners, addrs) = loopback_listeners();
        let (mut zero, mut one) = both(|rank| {
            let spec = MeshSpec {
                rank,
                addrs: &addrs,
                use_tcp: &[rank != 0, rank != 1],
                token: [0x5d; 16],
                nsocks: 3,
                socket_buffer: 64 << 10,
                same_host: &[true, true],
                tls: Some(&ctx[rank]),
                encrypt: &[rank != 0, rank != 1],
                deadline: Instant::now() + Duration::from_secs(20),
            };
            super::tcp::connect_mesh(&spec, &listeners[rank])
                .unwrap_or_else(|e| panic!("tls links of rank {rank}: {e}"))
        });
        Some((zero[1].take()?, one[0].take()?))
    }

    fn link(end: &mut TcpLink) -> &mut dyn Link {
        end
    }

    fn die(end: TcpLink) {
        shut_down_sockets(&end);
        std::mem::forget(end);
    }
}

struct Shm;

impl Transport for Shm {
    type End = ShmLink;
    const KIND: LinkClass = LinkClass::Shm;
    const RECV_WITH: bool = true;
    const READ_REMOTE: bool = true;
    const DATA_SEES_CLOSE: bool = true;

    fn pair() -> Option<(ShmLink, ShmLink)> {
        // Listener names are per token: one token per pair, also across test processes.
        static PAIRS: AtomicU32 = AtomicU32::new(0);
        let mut token = [0u8; 16];
        token[..4].copy_from_slice(&std::process::id().to_le_bytes());
        token[4..8].copy_from_slice(&PAIRS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        token[8] = 0xc0;
        let listeners = [
            super::shm::listen(&token, 0).expect("shm listener of rank 0"),
            super::shm::listen(&token, 1).expect("shm listener of rank 1"),
        ];
        let (mut zero, mut one) = both(|rank| {
            let spec = ShmSpec {
                rank,
                token,
                name_token: token,
                names: &[0, 1],
                same_host: &[true, true],
                // Small rings: the several-MiB messages wrap them many times.
                capacity: 4096,
                zero_copy: true,
                board_bytes: 64 << 10,
                deadline: Instant::now() + Duration::from_secs(20),
            };
            super::shm::connect_host_peers(&spec, &listeners[rank])
                .unwrap_or_else(|e| panic!("shm links of rank {rank}: {e}"))
        });
        Some((zero[1].take()?, one[0].take()?))
    }

    fn link(end: &mut ShmLink) -> &mut dyn Link {
        end
    }

    fn die(end: ShmLink) {
        shut_down_sockets(&end);
        // The descriptors and memory leak, as a dead process's stay with the kernel.
        std::mem::forget(end);
    }
}

struct Rdma;

impl Transport for Rdma {
    type End = Box<dyn Link>;
    const KIND: LinkClass = LinkClass::Rdma;
    const RECV_WITH: bool = false;
    const READ_REMOTE: bool = false;
    const DATA_SEES_CLOSE: bool = false;

    fn pair() -> Option<(Box<dyn Link>, Box<dyn Link>)> {
        // A private copy of the library per pair: each pair gets its own fake device,
        // and no copy is rewritten while it is loaded.
        static PAIRS: AtomicU32 = AtomicU32::new(0);
        let name = format!("conformance-{}", PAIRS.fetch_add(1, Ordering::Relaxed));
        let lib = super::rdma::tests::fake_lib(&name)?;
        let config = super::rdma::tests::fake_config(&lib);
        let (listeners, addrs) = loopback_listeners();
        let (mut zero, mut one) = both(|rank| {
            let tcp = tcp_links(rank, &listeners, &addrs);
            let spec = super::rdma::RdmaSpec {
                rank,
                same_host: &[false, false],
                config: &config,
                deadline: Instant::now() + Duration::from_secs(20),
            };
            super::rdma::upgrade(&spec, tcp)
                .unwrap_or_else(|e| panic!("rdma links of rank {rank}: {e}"))
        });
        Some((zero[1].take()?, one[0].take()?))
    }

    fn link(end: &mut Box<dyn Link>) -> &mut dyn Link {
        &mut **end
    }

    fn die(end: Box<dyn Link>) {
        shut_down_sockets(&*end);
        // The descriptors and memory leak, as a dead process's stay with the kernel.
        std::mem::forget(end);
    }
}

/// Runs `f(rank)` for ranks 0 and 1 at once, rank 1 on a thread of its own.
fn both<R: Send>(f: impl Fn(usize) -> R + Sync) -> (R, R) {
    std::thread::scope(|s| {
        let one = s.spawn(|| f(1));
        let zero = f(0);
        (zero, one.join().expect("rank 1 panicked"))
    })
}

fn loopback_listeners() -> ([TcpListener; 2], Vec<SocketAddr>) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("loopback listener");
    let listeners = [bind(), bind()];
    let addrs = listeners
        .iter()
        .map(|l| l.local_addr().expect("listener address"))
        .collect();
    (listeners, addrs)
}

/// Rank `rank`'s mesh of two ranks: three lanes, 64 KiB socket buffers (so a
/// lane fills up soon).
fn tcp_links(
    rank: usize,
    listeners: &[TcpListener; 2],
    addrs: &[SocketAddr],
) -> Vec<Option<TcpLink>> {
    let spec = MeshSpec {
        rank,
        addrs,
        use_tcp: &[rank != 0, rank != 1],
        token: [0x5c; 16],
        nsocks: 3,
        socket_buffer: 64 << 10,
        same_host: &[true, true],
        tls: None,
        encrypt: &[],
        deadline: Instant::now() + Duration::from_secs(20),
    };
    super::tcp::connect_mesh(&spec, &listeners[rank])
        .unwrap_or_else(|e| panic!("tcp links of rank {rank}: {e}"))
}

fn tcp_pair() -> (TcpLink, TcpLink) {
    let (listeners, addrs) = loopback_listeners();
    let (mut zero, mut one) = both(|rank| tcp_links(rank, &listeners, &addrs));
    (
        zero[1].take().expect("rank 0's link to rank 1"),
        one[0].take().expect("rank 1's link to rank 0"),
    )
}

/// What the kernel does to a link's connections when its process dies: every
/// socket it polls (control channel, lanes) is shut down, so the peer reads their
/// end. The caller then forgets the link, so nothing of its own closing runs (no
/// goodbye, no ring marked closed). Descriptors that are not sockets (doorbells,
/// completion channels) are left as they are.
fn shut_down_sockets(link: &dyn Link) {
    let mut fds: Vec<WaitHandle> = link.control_handle().into_iter().collect();
    for lane in 0..link.lanes() {
        link.wait_handles(lane, Direction::Send, &mut fds);
    }
    let mut shut = 0;
    for h in fds {
        // SAFETY: the descriptor is open (the link holds it); shutdown only changes
        // the connection's state and fails harmlessly on a descriptor that is not a socket.
        if unsafe { libc::shutdown(h.fd, libc::SHUT_RDWR) } == 0 {
            shut += 1;
        }
    }
    assert!(
        shut > 0,
        "{} link: nothing to shut down",
        link.class().name()
    );
}

/// Bytes of stream `seed`: no two streams of a check share a run of them.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    (0..n as u64)
        .map(|i| ((i + (seed << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect()
}

/// Fails with the first differing byte (not the whole buffers, which may be MiB).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if got != want {
        let at = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Fails the check once `start` is [`BOUND`] ago.
fn bounded(start: Instant, what: impl FnOnce() -> String) {
    assert!(start.elapsed() < BOUND, "stalled: {}", what());
}

/// Moves `data` from `from` to `to` on `lane`, sending and receiving in turns;
/// returns what arrived.
fn move_bytes(from: &mut dyn Link, to: &mut dyn Link, lane: usize, data: &[u8]) -> Vec<u8> {
    let (mut sent, mut got) = (0, Vec::with_capacity(data.len()));
    let mut buf = vec![0u8; 70_001];
    let start = Instant::now();
    while got.len() < data.len() {
        bounded(start, || {
            format!(
                "lane {lane}: {sent} of {} sent, {} received",
                data.len(),
                got.len()
            )
        });
        let s = if sent < data.len() {
            from.send_some(lane, &data[sent..])
                .unwrap_or_else(|e| panic!("send on lane {lane}: {e}"))
        } else {
            0
        };
        sent += s;
        let k = to
            .recv_some(lane, &mut buf)
            .unwrap_or_else(|e| panic!("recv on lane {lane}: {e}"));
        got.extend_from_slice(&buf[..k]);
        if s == 0 && k == 0 {
            std::thread::yield_now();
        }
    }
    got
}

/// Nothing more is waiting on `lane`.
fn assert_drained(l: &mut dyn Link, lane: usize) {
    let n = l.recv_some(lane, &mut [0u8; 64]).expect("recv");
    assert_eq!(n, 0, "{n} bytes arrived on lane {lane} that nobody sent");
}

/// The descriptors of `hs` that are ready within `timeout`.
fn ready(hs: &[WaitHandle], timeout: Duration) -> Vec<WaitHandle> {
    let mut fds: Vec<libc::pollfd> = hs.iter().map(|h| sys::pollfd(h.fd, h.events)).collect();
    sys::poll(&mut fds, timeout).expect("poll");
    hs.iter()
        .zip(&fds)
        .filter(|(_, f)| f.revents != 0)
        .map(|(h, _)| *h)
        .collect()
}

/// Has the stream socket `fd` ended with nothing left in it to read? A descriptor
/// that is not a socket (a doorbell) counts as ended: links that use one close
/// synchronously, before their peer looks.
fn stream_ended(fd: i32) -> bool {
    let mut b = 0u8;
    // SAFETY: one writable byte; MSG_PEEK leaves the stream as it is, MSG_DONTWAIT
    // never blocks.
    let n = unsafe {
        libc::recv(
            fd,
            (&mut b as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOTSOCK))
}

/// What `l`'s control channel says once everything its closed peer sent, the end
/// included, has arrived.
fn control_after_peer_closed(l: &mut dyn Link) -> crate::Result<()> {
    let h = l.control_handle().expect("a control channel");
    let start = Instant::now();
    loop {
        bounded(start, || {
            "the peer's end never arrived on the control channel".into()
        });
        // Looked at first, so the recv_control below has seen the end.
        let ended = stream_ended(h.fd);
        match l.recv_control()? {
            Some(m) => panic!("a control message nobody sent: {m:?}"),
            None if ended => return Ok(()),
            None => {
                ready(&[h], Duration::from_millis(10));
            }
        }
    }
}

/// Reads `lane` until the closed peer shows: `PeerLost` naming it. Bytes still
/// arriving are a failure (the caller has read all there were).
fn lane_sees_the_end(l: &mut dyn Link, lane: usize) {
    let peer = l.peer();
    let start = Instant::now();
    loop {
        bounded(start, || {
            format!("lane {lane} never reported the closed peer")
        });
        match l.recv_some(lane, &mut [0u8; 64]) {
            Ok(0) => std::thread::yield_now(),
            Ok(n) => panic!("{n} bytes on lane {lane} after the peer closed"),
            Err(Error::PeerLost { rank, .. }) => {
                assert_eq!(rank, peer, "PeerLost names the peer");
                return;
            }
            Err(e) => panic!("lane {lane}: want PeerLost, got {e}"),
        }
    }
}

/// Both ends name each other and agree on the lanes.
fn ends_agree<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    assert_eq!((a.peer(), b.peer()), (1, 0));
    assert_eq!((a.class(), b.class()), (T::KIND, T::KIND));
    assert!(a.lanes() >= 1);
    assert_eq!(a.lanes(), b.lanes());
}

/// Every size, on every lane, each way, arrives byte for byte, and nothing more.
fn bytes_on_every_lane<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    for lane in 0..a.lanes() {
        for (i, &n) in SIZES.iter().enumerate() {
            for dir in 0..2 {
                let (from, to): (&mut dyn Link, &mut dyn Link) = if dir == 0 {
                    (&mut *a, &mut *b)
                } else {
                    (&mut *b, &mut *a)
                };
                let data = pattern((lane * 100 + i * 2 + dir) as u64, n);
                if n == 0 {
                    assert_eq!(from.send_some(lane, &data).expect("send nothing"), 0);
                    assert_eq!(to.recv_some(lane, &mut []).expect("recv nothing"), 0);
                }
                let got = move_bytes(from, to, lane, &data);
                assert_same(&got, &data, &format!("{n} bytes on lane {lane}, way {dir}"));
            }
        }
        assert_drained(a, lane);
        assert_drained(b, lane);
    }
}

/// `send_gather` sends a prefix of the pieces' concatenation, empty pieces included.
fn send_gather_concatenates<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    assert_eq!(a.send_gather(0, &[&[], &[]]).expect("gather nothing"), 0);
    for lane in 0..a.lanes() {
        let pieces: Vec<Vec<u8>> = [0, 1031, 0, 1, 65_537, 7]
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern((lane * 10 + i) as u64, n))
            .collect();
        let want = pieces.concat();
        let (mut sent, mut got) = (0, Vec::new());
        let mut buf = vec![0u8; 10_007];
        let start = Instant::now();
        while got.len() < want.len() {
            bounded(start, || {
                format!("lane {lane}: {sent} sent, {} received", got.len())
            });
            // The pieces not yet sent, the first one cut where the last call stopped.
            let mut rest: Vec<&[u8]> = Vec::new();
            let mut skip = sent;
            for p in &pieces {
                let k = skip.min(p.len());
                skip -= k;
                rest.push(&p[k..]);
            }
            let s = a.send_gather(lane, &rest).expect("send_gather");
            sent += s;
            let k = b.recv_some(lane, &mut buf).expect("recv");
            got.extend_from_slice(&buf[..k]);
            if s == 0 && k == 0 {
                std::thread::yield_now();
            }
        }
        assert_same(&got, &want, &format!("gathered pieces on lane {lane}"));
        assert_drained(b, lane);
    }
}

/// `recv_with` is offered exactly where the transport says, shows at most `max`
/// bytes, and consumes exactly what `f` returns.
fn recv_with_views<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    let offered = b
        .recv_with(0, 4096, &mut |v| {
            assert!(v.is_empty(), "{} bytes before any were sent", v.len());
            0
        })
        .expect("recv_with on an idle lane");
    assert_eq!(
        offered.is_some(),
        T::RECV_WITH,
        "recv_with offered: {offered:?}"
    );
    if !T::RECV_WITH {
        return;
    }
    assert_eq!(offered, Some(0));
    for lane in 0..a.lanes() {
        let data = pattern(lane as u64 + 7, (1 << 20) + 3);
        let (mut sent, mut got) = (0, Vec::new());
        let start = Instant::now();
        while got.len() < data.len() {
            bounded(start, || {
                format!("lane {lane}: {sent} sent, {} viewed", got.len())
            });
            let s = if sent < data.len() {
                a.send_some(lane, &data[sent..]).expect("send")
            } else {
                0
            };
            sent += s;
            // Views of up to 1000 bytes, of which 333 are taken: the next view must
            // start right after them.
            let used = b
                .recv_with(lane, 1000, &mut |v| {
                    assert!(v.len() <= 1000, "a view of {} bytes, max 1000", v.len());
                    let k = v.len().min(333);
                    got.extend_from_slice(&v[..k]);
                    k
                })
                .expect("recv_with")
                .expect("offered once, offered always");
            if s == 0 && used == 0 {
                std::thread::yield_now();
            }
        }
        assert_same(&got, &data, &format!("viewed bytes on lane {lane}"));
        assert_drained(b, lane);
    }
}

/// Lanes are independent ordered streams: messages go out round robin (message k
/// on lane k % lanes, as the executor sends them), the receiver reads the last lane
/// to the end before it looks at the others, which stay full meanwhile, and each
/// lane's bytes are its messages in the order they were sent.
fn lanes_are_independent_and_ordered<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    let lanes = a.lanes();
    let sizes = [1, 1031, 7, (1 << 20) + 3];
    let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = vec![Default::default(); lanes];
    let mut want: Vec<Vec<u8>> = vec![Vec::new(); lanes];
    for k in 0..4 * lanes {
        let m = pattern(k as u64 + 1000, sizes[k % sizes.len()] + k);
        want[k % lanes].extend_from_slice(&m);
        queues[k % lanes].push_back(m);
    }
    let mut offset = vec![0usize; lanes];
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); lanes];
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    // The last lane that still expects bytes is the only one read.
    while let Some(lane) = (0..lanes).rev().find(|&l| got[l].len() < want[l].len()) {
        bounded(start, || {
            format!(
                "reading lane {lane} ({} of {} bytes) while the others wait",
                got[lane].len(),
                want[lane].len()
            )
        });
        let mut moved = 0;
        for (l, q) in queues.iter_mut().enumerate() {
            if let Some(m) = q.front() {
                let s = a.send_some(l, &m[offset[l]..]).expect("send");
                offset[l] += s;
                moved += s;
                if offset[l] == m.len() {
                    q.pop_front();
                    offset[l] = 0;
                }
            }
        }
        let k = b.recv_some(lane, &mut buf).expect("recv");
        got[lane].extend_from_slice(&buf[..k]);
        if moved + k == 0 {
            std::thread::yield_now();
        }
    }
    for l in 0..lanes {
        assert_same(&got[l], &want[l], &format!("messages on lane {l}"));
        assert_drained(b, l);
    }
}

/// Control messages go both ways, whole and in order, beside data on the lanes;
/// the control handle is ready once one has arrived.
fn control_both_ways<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    let data = pattern(3, 1031);
    for i in 0..2 {
        let (from, to): (&mut dyn Link, &mut dyn Link) = if i == 0 {
            (&mut *a, &mut *b)
        } else {
            (&mut *b, &mut *a)
        };
        let msgs: Vec<Vec<u8>> = vec![
            format!("from rank {}: first", from.peer() ^ 1).into_bytes(),
            vec![i as u8],
            pattern(i as u64 + 50, 200),
        ];
        let h = to.control_handle().expect("a control channel");
        let before = move_bytes(from, to, 0, &data);
        assert_same(&before, &data, "data before the control messages");
        // Nothing waits on the control channel yet: its handle must say so (a
        // doorbell rung by the data is drained first).
        for _ in 0..100 {
            match ready(&[h], Duration::ZERO).first() {
                None => break,
                Some(h) if h.doorbell => sys::drain_eventfd(h.fd),
                Some(_) => assert_eq!(to.recv_control().expect("recv_control"), None),
            }
        }
        assert!(
            ready(&[h], Duration::ZERO).is_empty(),
            "control handle stays ready with no message waiting"
        );
        for (k, m) in msgs.iter().enumerate() {
            assert!(
                from.send_control(m).expect("send_control"),
                "no control channel"
            );
            if k == 0 {
                assert!(
                    !ready(&[h], BOUND).is_empty(),
                    "control handle not ready with a message waiting"
                );
            }
            let between = move_bytes(from, to, 0, &data);
            assert_same(&between, &data, "data between control messages");
        }
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < msgs.len() {
            bounded(start, || {
                format!("{} of {} control messages", got.len(), msgs.len())
            });
            match to.recv_control().expect("recv_control") {
                Some(m) => got.push(m),
                None => {
                    ready(&[h], Duration::from_millis(10));
                }
            }
        }
        assert_eq!(got, msgs, "control messages, way {i}");
        assert_eq!(to.recv_control().expect("recv_control"), None);
        assert_drained(to, 0);
    }
}

/// Polls `l` on `lane` until its wait handles for `dir` say nothing (doorbells
/// drained, nothing to receive), and returns them. Handles that never settle are a
/// busy loop for the executor: a failure.
fn settled_handles(l: &mut dyn Link, lane: usize, dir: Direction) -> Vec<WaitHandle> {
    for _ in 0..100 {
        if dir == Direction::Recv {
            assert_eq!(l.recv_some(lane, &mut [0u8; 64]).expect("recv"), 0);
        }
        let mut hs = Vec::new();
        l.wait_handles(lane, dir, &mut hs);
        assert!(!hs.is_empty(), "no wait handles for lane {lane} {dir:?}");
        let now = ready(&hs, Duration::ZERO);
        if now.is_empty() {
            return hs;
        }
        for h in now.iter().filter(|h| h.doorbell) {
            sys::drain_eventfd(h.fd);
        }
    }
    panic!("wait handles of lane {lane} ({dir:?}) stay ready with nothing to do");
}

/// The wait handles of a lane that found nothing to receive become ready when data
/// arrives; those of a lane that could not send become ready when the peer reads.
fn wait_handles_fire<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let (a, b) = (T::link(&mut a), T::link(&mut b));
    for lane in 0..a.lanes() {
        // Receiving: b waits, then a sends.
        let hs = settled_handles(b, lane, Direction::Recv);
        let data = pattern(lane as u64, 1031);
        let sent = a.send_some(lane, &data).expect("send");
        assert!(sent > 0, "an empty lane took nothing");
        assert!(
            !ready(&hs, BOUND).is_empty(),
            "lane {lane}: no handle ready after data arrived"
        );
        let mut got = Vec::new();
        let start = Instant::now();
        while got.len() < sent {
            bounded(start, || {
                format!("lane {lane}: {} of {sent} bytes", got.len())
            });
            let mut buf = vec![0u8; sent - got.len()];
            let k = b.recv_some(lane, &mut buf).expect("recv");
            got.extend_from_slice(&buf[..k]);
        }
        got.extend(move_bytes(a, b, lane, &data[sent..]));
        assert_same(&got, &data, &format!("lane {lane}"));

        // Sending: a fills the lane until it takes no more, then waits; b reads.
        let chunk = pattern(lane as u64 + 20, 65_536);
        let (mut filled, mut zeros) = (0usize, 0);
        let start = Instant::now();
        // A few refusals in a row: the lane is full, not just busy for a moment.
        while zeros < 3 {
            bounded(start, || {
                format!("lane {lane} took {filled} bytes and wants more")
            });
            assert!(filled < 1 << 30, "lane {lane} never fills");
            match a
                .send_some(lane, &chunk[filled % chunk.len()..])
                .expect("send")
            {
                0 => zeros += 1,
                n => (filled, zeros) = (filled + n, 0),
            }
        }
        let hs = settled_handles(a, lane, Direction::Send);
        read_pattern(b, lane, &chunk, 0, filled);
        assert!(
            !ready(&hs, BOUND).is_empty(),
            "lane {lane}: no send handle ready after the peer read everything"
        );
        // A lane may hold bytes it answered 0 for (a TLS lane's last records,
        // encrypted before the socket filled); the next call with the same bytes
        // reports them, as the executor's retry does. Whatever it takes must arrive
        // in order, and then nothing more.
        let more = a
            .send_some(lane, &chunk[filled % chunk.len()..])
            .expect("send");
        read_pattern(b, lane, &chunk, filled, more);
        assert_drained(b, lane);
    }
}

/// Receives `count` bytes on `lane` of `b`, checking each against `chunk` repeated
/// from stream offset `from`.
fn read_pattern(b: &mut dyn Link, lane: usize, chunk: &[u8], from: usize, count: usize) {
    let mut buf = vec![0u8; 65_536];
    let mut read = 0;
    let start = Instant::now();
    while read < count {
        bounded(start, || format!("lane {lane}: read {read} of {count}"));
        let k = b
            .recv_some(lane, &mut buf[..(count - read).min(65_536)])
            .expect("recv");
        for (j, x) in buf[..k].iter().enumerate() {
            let i = from + read + j;
            assert_eq!(*x, chunk[i % chunk.len()], "byte {i} of lane {lane}");
        }
        read += k;
    }
}

/// A normal close: bytes sent before it arrive, then the lanes report the peer
/// lost, and the control channel says nothing (a goodbye is not a death).
fn normal_close_is_a_goodbye<T: Transport>() {
    let Some((mut a, mut b)) = T::pair() else {
        return;
    };
    let last = pattern(9, 1031);
    let al = T::link(&mut a);
    let mut sent = 0;
    let start = Instant::now();
    while sent < last.len() {
        bounded(start, || "sending the last words".into());
        sent += al.send_some(0, &last[sent..]).expect("send");
    }
    drop(a);
    let bl = T::link(&mut b);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < last.len() {
        bounded(start, || {
            format!("{} of the last {} bytes", got.len(), last.len())
        });
        let mut buf = [0u8; 4096];
        let k = bl
            .recv_some(0, &mut buf)
            .expect("bytes sent before the close");
        got.extend_from_slice(&buf[..k]);
    }
    assert_same(&got, &last, "bytes sent before the close");
    if T::DATA_SEES_CLOSE {
        for lane in 0..bl.lanes() {
            lane_sees_the_end(bl, lane);
        }
    }
    control_after_peer_closed(bl).expect("a goodbye is not a lost peer");
    assert_eq!(bl.recv_control().expect("still a goodbye"), None);
}

/// A peer that dies (no goodbye) is `PeerLost` naming it, on the control channel
/// and on every lane.
fn dead_peer_is_peer_lost<T: Transport>() {
    let Some((a, mut b)) = T::pair() else { return };
    T::die(a);
    let bl = T::link(&mut b);
    match control_after_peer_closed(bl) {
        Err(Error::PeerLost { rank: 0, .. }) => {}
        other => panic!("want PeerLost naming rank 0, got {other:?}"),
    }
    if T::DATA_SEES_CLOSE {
        for lane in 0..bl.lanes() {
            lane_sees_the_end(bl, lane);
        }
    }
}

/// `read_remote` is offered exactly where the transport says, copies the peer's
/// bytes exactly, and an address the peer has not mapped is an error naming it.
fn read_remote_copies<T: Transport>() {
    let Some((mut a, _b)) = T::pair() else { return };
    let a = T::link(&mut a);
    // The peer is a thread of this process: its memory is ours.
    let src = pattern(77, 100_003);
    let mut dst = vec![0u8; src.len()];
    let offered = a
        .read_remote(src.as_ptr() as u64, &mut dst)
        .expect("read_remote");
    assert_eq!(offered, T::READ_REMOTE, "read_remote offered");
    if !offered {
        assert!(dst.iter().all(|&x| x == 0), "a link that cannot read wrote");
        return;
    }
    assert_same(&dst, &src, "bytes read from the peer's memory");
    let e = a
        .read_remote(8, &mut [0u8; 16])
        .expect_err("reading the peer's page zero");
    assert!(e.to_string().contains("rank 1"), "{e}");
}

/// One module per transport, one test per check.
macro_rules! conformance {
    ($($module:ident: $transport:ty),* $(,)?) => {$(
        mod $module {
            use super::*;

            #[test]
            fn ends_agree() {
                super::ends_agree::<$transport>();
            }

            #[test]
            fn bytes_on_every_lane() {
                super::bytes_on_every_lane::<$transport>();
            }

            #[test]
            fn send_gather_concatenates() {
                super::send_gather_concatenates::<$transport>();
            }

            #[test]
            fn recv_with_views() {
                super::recv_with_views::<$transport>();
            }

            #[test]
            fn lanes_are_independent_and_ordered() {
                super::lanes_are_independent_and_ordered::<$transport>();
            }

            #[test]
            fn control_both_ways() {
                super::control_both_ways::<$transport>();
            }

            #[test]
            fn wait_handles_fire() {
                super::wait_handles_fire::<$transport>();
            }

            #[test]
            fn normal_close_is_a_goodbye() {
                super::normal_close_is_a_goodbye::<$transport>();
            }

            #[test]
            fn dead_peer_is_peer_lost() {
                super::dead_peer_is_peer_lost::<$transport>();
            }

            #[test]
            fn read_remote_copies() {
                super::read_remote_copies::<$transport>();
            }
        }
    )*};
}

conformance!(mem: Mem, tcp: Tcp, tls: TlsTcp, shm: Shm, rdma: Rdma);
