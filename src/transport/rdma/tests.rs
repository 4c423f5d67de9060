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
                        same_host: &[false, false],
                        tls: None,
                        encrypt: &[],
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
    assert_eq!(
        r[0][1].as_ref().unwrap().class(),
        crate::transport::LinkClass::Tcp
    );
    assert_eq!(
        r[1][0].as_ref().unwrap().class(),
        crate::transport::LinkClass::Tcp
    );
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
            assert_eq!(
                r[0][1].as_ref().unwrap().class(),
                crate::transport::LinkClass::Tcp
            );
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
            assert_eq!(
                r[0][1].as_ref().unwrap().class(),
                crate::transport::LinkClass::Rdma
            );
            assert_eq!(
                r[1][0].as_ref().unwrap().class(),
                crate::transport::LinkClass::Rdma
            );
            ping_pong(r, 3 << 20);
        }
    }
}

/// Builds `tests/fixtures/fake_ibverbs.c` (a libibverbs whose device lives in
/// this process, compiled against rdma-core's header) and returns a private copy
/// named `name`, so each test has its own library state. None, with a plain
/// message, where there is no header or no C compiler.
pub(crate) fn fake_lib(name: &str) -> Option<std::path::PathBuf> {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if !std::path::Path::new("/usr/include/infiniband/verbs.h").exists() {
            eprintln!("SKIPPED fake-verbs tests: rdma-core's verbs.h is not installed");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("mixccl-fake-ibv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let so = dir.join("libfakeibverbs.so");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake_ibverbs.c");
        let ok = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&so)
            .arg(src)
            .arg("-lpthread")
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED fake-verbs tests: cc could not build {src}");
            return None;
        }
        Some(so)
    });
    let so = built.as_ref()?;
    let copy = so.with_file_name(format!("libfakeibverbs-{name}.so"));
    std::fs::copy(so, &copy).ok()?;
    Some(copy)
}

pub(crate) fn fake_config(lib: &std::path::Path) -> Config {
    Config {
        net: NetTransport::Ib,
        ibverbs_lib: Some(lib.to_string_lossy().into_owned()),
        ib_buffer: 64 << 10,
        ib_qps: 3,
        ..Config::default()
    }
}

/// The real `HcaVerbs` code (dlopen, layouts, the ops-table calls, queue pair
/// transitions, registration, completion channel) against the fake library.
#[test]
fn fake_verbs_library_carries_bytes_on_every_lane() {
    let Some(lib) = fake_lib("bytes") else { return };
    let r: Vec<_> = two_ranks(&fake_config(&lib), false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        r[0][1].as_ref().unwrap().class(),
        crate::transport::LinkClass::Rdma
    );
    assert_eq!(
        r[1][0].as_ref().unwrap().class(),
        crate::transport::LinkClass::Rdma
    );
    assert_eq!(r[0][1].as_ref().unwrap().lanes(), 3);
    ping_pong(r, (1 << 20) + 13);
}

/// A communicator per rank over fake-verbs links: the executor drives the links,
/// sleeping on their completion channels between completions.
#[test]
fn fake_verbs_links_run_collectives() {
    let Some(lib) = fake_lib("coll") else { return };
    let config = fake_config(&lib);
    let r: Vec<_> = two_ranks(&config, false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let n = 300_001;
    let threads: Vec<_> = r
        .into_iter()
        .enumerate()
        .map(|(rank, links)| {
            let config = Config {
                spin: Duration::ZERO,
                ..config.clone()
            };
            std::thread::spawn(move || {
                let mut c = crate::Communicator::with_links(rank, links, config).unwrap();
                let mut v: Vec<f32> = (0..n).map(|i| (i % 97) as f32 + rank as f32).collect();
                c.all_reduce_in_place(&mut v, crate::ReduceOp::Sum).unwrap();
                for (i, x) in v.iter().enumerate() {
                    assert_eq!(*x, 2.0 * (i % 97) as f32 + 1.0, "element {i}");
                }
                let mut all = vec![0u32; 2 * 1000];
                let mine: Vec<u32> = (0..1000).map(|i| i * 2 + rank as u32).collect();
                c.all_gather(&mine, &mut all).unwrap();
                assert_eq!(all[1000..].iter().filter(|x| *x % 2 == 1).count(), 1000);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Calls `name(arg)` in the loaded fake library at `lib`.
fn fake_call(lib: &std::path::Path, name: &std::ffi::CStr, arg: libc::c_long) {
    let path = std::ffi::CString::new(lib.to_string_lossy().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings; the library is already loaded (RTLD_NOLOAD
    // returns its handle) and exports `name` as `void name(long)`.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(!h.is_null());
        let f = libc::dlsym(h, name.as_ptr());
        assert!(!f.is_null(), "{name:?}");
        let f: extern "C" fn(libc::c_long) = std::mem::transmute(f);
        f(arg);
    }
}

/// A port going down (an async event) fails every link on it as `PeerLost`,
/// naming the peer, the device and the event.
#[test]
fn fake_verbs_port_down_is_peer_lost() {
    let Some(lib) = fake_lib("port") else { return };
    let mut r: Vec<_> = two_ranks(&fake_config(&lib), false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    fake_call(&lib, c"fake_ibv_port_down", 0);
    let start = Instant::now();
    for (rank, peer) in [(0, 1), (1, 0)] {
        let l = r[rank][peer].as_mut().unwrap();
        let e = loop {
            match l.recv_some(1, &mut [0u8; 16]) {
                Ok(0) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(5),
                        "rank {rank} never noticed"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                Ok(n) => panic!("{n} bytes from nowhere"),
                Err(e) => break e,
            }
        };
        match &e {
            Error::PeerLost { rank: p, reason } => {
                assert_eq!(*p, peer);
                assert!(
                    reason.contains("IBV_EVENT_PORT_ERR") && reason.contains("fake_0:1"),
                    "{reason}"
                );
            }
            e => panic!("{e}"),
        }
    }
}

/// An error completion becomes `PeerLost` naming the peer and the verbs status on
/// the rank that saw it; the executor reports it on the control channel (the TCP
/// link the RDMA link replaced), so the other rank stops with the same cause
/// instead of waiting for data that will never come.
#[test]
fn fake_verbs_error_completion_is_peer_lost_on_both_ranks() {
    let Some(lib) = fake_lib("fail") else { return };
    let config = Config {
        timeout: Duration::from_secs(30),
        spin: Duration::ZERO,
        ..fake_config(&lib)
    };
    let r: Vec<_> = two_ranks(&config, false)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    // Some writes into the first all-reduce, one fails as if the peer had died.
    fake_call(&lib, c"fake_ibv_fail_after", 40);
    let start = Instant::now();
    let threads: Vec<_> = r
        .into_iter()
        .enumerate()
        .map(|(rank, links)| {
            let config = config.clone();
            std::thread::spawn(move || {
                let mut c = crate::Communicator::with_links(rank, links, config).unwrap();
                let mut v = vec![1.0f32; 1 << 20];
                c.all_reduce_in_place(&mut v, crate::ReduceOp::Sum)
                    .expect_err("the injected failure must surface")
            })
        })
        .collect();
    let errors: Vec<Error> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    for (rank, e) in errors.iter().enumerate() {
        eprintln!("rank {rank}: {e}");
        match e {
            Error::PeerLost { reason, .. } => {
                assert!(
                    reason.contains("IBV_WC_RETRY_EXC_ERR"),
                    "rank {rank}: {reason}"
                );
                assert!(reason.contains("fake_0:1"), "rank {rank}: {reason}");
            }
            e => panic!("rank {rank}: {e}"),
        }
    }
}
