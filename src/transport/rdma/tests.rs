//! Negotiation and selection, over real loopback TCP links; and the real RDMA
//! path, which runs only where this host has an active RDMA port.

use super::wire::tests_support::offer;
use super::*;
use crate::transport::tcp::{self, MeshSpec};
use crate::transport::Links;
use std::net::{SocketAddr, TcpListener};

/// Two ranks as threads: a TCP mesh on loopback, then `upgrade` with `config`
/// and the hosts `same_host` says. Returns each rank's result.
fn two_ranks(config: &Config, same_host: bool) -> Vec<Result<Links>> {
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let threads: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(rank, l)| {
            let addrs = addrs.clone();
            let config = config.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                let use_tcp = [rank != 0, rank != 1];
                let links = tcp::connect_mesh(
                    &MeshSpec {
                        rank,
                        addrs: &addrs,
                        use_tcp: &use_tcp,
                        token: [7; 16],
                        nsocks: 2,
                        socket_buffer: 0,
                        deadline,
                    },
                    &l,
                )?;
                let same = [same_host && rank != 0, same_host && rank != 1];
                upgrade(
                    &RdmaSpec {
                        rank,
                        same_host: &same,
                        config: &config,
                        deadline,
                    },
                    links,
                )
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Sends `n` bytes from rank 0 to rank 1 on every lane, and back, checking them.
fn ping_pong(mut r: Vec<Links>, n: usize) {
    let (a, b) = r.split_at_mut(1);
    let x = a[0][1].as_mut().unwrap();
    let y = b[0][0].as_mut().unwrap();
    assert_eq!(x.lanes(), y.lanes());
    let data: Vec<u8> = (0..n).map(|i| (i * 31 + i / 7) as u8).collect();
    for lane in 0..x.lanes() {
        move_bytes(&mut **x, &mut **y, lane, &data);
        move_bytes(&mut **y, &mut **x, lane, &data);
    }
}

fn move_bytes(from: &mut dyn Link, to: &mut dyn Link, lane: usize, data: &[u8]) {
    let n = data.len();
    let (mut sent, mut got) = (0, Vec::new());
    let mut buf = vec![0u8; 70_000];
    let start = Instant::now();
    while got.len() < n {
        assert!(start.elapsed() < Duration::from_secs(20), "stalled");
        if sent < n {
            sent += from.send_some(lane, &data[sent..]).unwrap();
        }
        let k = to.recv_some(lane, &mut buf).unwrap();
        got.extend_from_slice(&buf[..k]);
    }
    assert_eq!(got, data, "lane {lane}");
}

#[test]
fn decisions_are_symmetric() {
    let a = Message::Offer(offer(2));
    let no = Message::Decline("no RDMA devices".into());
    assert_eq!(decide(0, 1, &a, &a), Verdict::Rdma);
    let v = decide(0, 1, &no, &a);
    assert!(
        matches!(&v, Verdict::Tcp(w) if w.contains("unavailable on rank 0")),
        "{v:?}"
    );
    let v = decide(1, 0, &a, &no);
    assert!(
        matches!(&v, Verdict::Tcp(w) if w.contains("unavailable on rank 0")),
        "{v:?}"
    );
    let mut eth = offer(2);
    eth.link_layer = 2;
    let v = decide(0, 1, &a, &Message::Offer(eth.clone()));
    assert!(
        matches!(&v, Verdict::Tcp(w) if w.contains("no common fabric")),
        "{v:?}"
    );
    let mut other_subnet = offer(2);
    other_subnet.gid[7] = 9;
    assert!(matches!(
        decide(0, 1, &a, &Message::Offer(other_subnet)),
        Verdict::Tcp(_)
    ));
    let v = decide(0, 1, &a, &Message::Offer(offer(3)));
    assert!(
        matches!(&v, Verdict::Mismatch(w) if w.contains("MIXCCL_IB_QPS")),
        "{v:?}"
    );
    let mut small = offer(2);
    small.slot_bytes /= 2;
    let v = decide(0, 1, &a, &Message::Offer(small));
    assert!(
        matches!(&v, Verdict::Mismatch(w) if w.contains("MIXCCL_IB_BUFFER")),
        "{v:?}"
    );
    // Two RoCE ports are one fabric.
    assert_eq!(
        decide(0, 1, &Message::Offer(eth.clone()), &Message::Offer(eth)),
        Verdict::Rdma
    );
}

#[test]
fn a_missing_library_means_tcp_and_the_links_still_work() {
    let config = Config {
        ibverbs_lib: Some("/nonexistent/libibverbs-mixccl-test.so.1".into()),
        ..Config::default()
    };
    let r: Vec<_> = two_ranks(&config, false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(r[0][1].as_ref().unwrap().kind(), "tcp");
    assert_eq!(r[1][0].as_ref().unwrap().kind(), "tcp");
    // The negotiation consumed exactly its own bytes: the TCP streams are clean.
    ping_pong(r, 100_003);
}

#[test]
fn net_ib_without_rdma_is_a_clear_error_on_both_ranks() {
    let config = Config {
        net: NetTransport::Ib,
        ibverbs_lib: Some("/nonexistent/libibverbs-mixccl-test.so.1".into()),
        ..Config::default()
    };
    let start = Instant::now();
    let e = require(&config).unwrap_err().to_string();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "slow: {:?}",
        start.elapsed()
    );
    assert!(
        e.contains("MIXCCL_NET=IB") && e.contains("RDMA is unavailable"),
        "{e}"
    );
    assert!(
        e.contains("libibverbs-mixccl-test"),
        "names the library: {e}"
    );
    for r in two_ranks(&config, false) {
        let e = r.err().expect("MIXCCL_NET=IB must fail").to_string();
        assert!(e.contains("RDMA is unavailable"), "{e}");
    }
}

#[test]
fn socket_and_same_host_peers_skip_negotiation() {
    // Nothing is exchanged, so the ranks need not even agree to try.
    let socket = Config {
        net: NetTransport::Socket,
        ..Config::default()
    };
    let r: Vec<_> = two_ranks(&socket, false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    ping_pong(r, 1000);
    let ib = Config {
        net: NetTransport::Ib,
        ibverbs_lib: Some("/nonexistent/x.so".into()),
        ..Config::default()
    };
    let r: Vec<_> = two_ranks(&ib, true)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    ping_pong(r, 1000);
}

#[test]
fn a_peer_sending_garbage_is_refused_without_allocating_for_it() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_nonblocking(true).unwrap();
    use std::io::Write;
    c.write_all(&u16::MAX.to_le_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = recv_frame(&s, wire::MAX_MESSAGE, deadline, 1)
        .unwrap_err()
        .to_string();
    assert!(e.contains("65535 bytes"), "{e}");
    // A silent peer is a timeout naming it, at the deadline.
    let start = Instant::now();
    let e = recv_frame(&s, 10, Instant::now() + Duration::from_millis(200), 1).unwrap_err();
    assert!(
        matches!(&e, Error::Timeout { waiting_for, .. } if waiting_for == &[1]),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// The real path: two ranks as threads on this host's RDMA port (loopback
/// through the adapter), forced with `MIXCCL_NET=IB`, then bytes on every lane.
/// Where there is no RDMA port it says so and checks the fallback instead.
#[test]
fn real_rdma_path_when_a_device_exists() {
    let config = Config::from_env().unwrap_or_default();
    match probe(&config) {
        Err(why) => {
            eprintln!("SKIPPED real RDMA test: RDMA unavailable on this host ({why})");
            let r: Vec<_> = two_ranks(&config, false)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(r[0][1].as_ref().unwrap().kind(), "tcp");
            ping_pong(r, 10_000);
        }
        Ok(port) => {
            eprintln!("running the real RDMA test on {}", port.name);
            drop(port);
            let config = Config {
                net: NetTransport::Ib,
                ib_buffer: 64 << 10,
                ..config
            };
            let r: Vec<_> = two_ranks(&config, false)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(r[0][1].as_ref().unwrap().kind(), "rdma");
            assert_eq!(r[1][0].as_ref().unwrap().kind(), "rdma");
            ping_pong(r, 3 << 20);
        }
    }
}
