//! Bootstrap and TCP transport end to end: ranks are threads of this process that
//! meet through a real root rendezvous on 127.0.0.1 and exchange data over TCP
//! loopback sockets. Covers the happy path for 1..=5 ranks with 1, 2 and 3 sockets
//! per peer, and the failure modes a rendezvous must survive or report: a rank that
//! never joins, strangers on the root port, a duplicate rank, mismatched nranks,
//! and corrupt unique ids. Every wait is bounded by a short `Config::timeout`.

mod util;

use mixccl::{Communicator, Config, Error, LaunchEnv, ReduceOp, Rendezvous, UniqueId};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use util::*;

const LARGE: usize = (1 << 20) + 3;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// TCP between the threads (shared memory would otherwise carry same-host ranks).
fn config(timeout_s: u64, nsocks: usize) -> Config {
    Config {
        timeout: Duration::from_secs(timeout_s),
        nsocks,
        shm_disable: true,
        ..Config::default()
    }
}

/// A root rendezvous on loopback whose waits are bounded by `config.timeout`.
fn root(config: &Config) -> UniqueId {
    let id = UniqueId::bind_with(loopback(), config).expect("bind the bootstrap root");
    assert!(id.root_addr().ip().is_loopback(), "{id:?}");
    id
}

/// Runs `f` on `n` ranks joined over TCP (one thread per rank); returns per-rank results.
fn tcp_ranks<R: Send>(
    n: usize,
    config: Config,
    f: impl Fn(&mut Communicator) -> R + Sync,
) -> Vec<R> {
    assert!(config.shm_disable, "these tests are about TCP");
    bootstrapped_ranks(n, config, f)
}

/// all_reduce (f32 Sum, i64 Max) at `reduce_counts`; every other collective at `counts`.
fn run_collectives(
    comm: &mut Communicator,
    reduce_counts: &[usize],
    counts: &[usize],
) -> Vec<String> {
    let mut errs = Vec::new();
    for &count in reduce_counts {
        for in_place in [false, true] {
            errs.extend(check_all_reduce::<f32>(
                comm,
                ReduceOp::Sum,
                count,
                in_place,
            ));
            errs.extend(check_all_reduce::<i64>(
                comm,
                ReduceOp::Max,
                count,
                in_place,
            ));
        }
    }
    for &count in counts {
        for in_place in [false, true] {
            errs.extend(check_all_gather::<f32>(comm, count, in_place));
            errs.extend(check_broadcast::<i32>(comm, count, in_place));
            errs.extend(check_reduce::<half::bf16>(
                comm,
                ReduceOp::Sum,
                count,
                in_place,
            ));
            errs.extend(check_reduce_scatter::<f32>(
                comm,
                ReduceOp::Sum,
                count,
                in_place,
            ));
            errs.extend(check_reduce_scatter::<u8>(
                comm,
                ReduceOp::Min,
                count,
                in_place,
            ));
            errs.extend(check_all_to_all::<f64>(comm, count, in_place));
        }
        errs.extend(check_send_recv::<i32>(comm, count));
        comm.barrier().expect("barrier");
    }
    errs
}

fn assert_no_errors(what: &str, errs: Vec<Vec<String>>) {
    let errs: Vec<String> = errs.into_iter().flatten().collect();
    assert!(
        errs.is_empty(),
        "{what}: {} failures, first: {:#?}",
        errs.len(),
        &errs[..errs.len().min(10)]
    );
}

#[test]
fn collectives_over_tcp_for_one_to_five_ranks() {
    for n in 1..=5 {
        let errs = tcp_ranks(n, config(5, 2), |comm| {
            run_collectives(comm, &COUNTS, &[0, 1, 7, 1031])
        });
        assert_no_errors(&format!("{n} ranks, 2 sockets"), errs);
    }
}

#[test]
fn large_collectives_over_tcp() {
    // One large odd count through every collective (the ring algorithms, chunked and
    // spread over the lanes), at an odd and an even rank count.
    for n in [2, 3] {
        let errs = tcp_ranks(n, config(5, 2), |comm| run_collectives(comm, &[], &[LARGE]));
        assert_no_errors(&format!("{n} ranks, large count"), errs);
    }
}

#[test]
fn one_socket_per_peer() {
    for n in 1..=5 {
        let errs = tcp_ranks(n, config(5, 1), |comm| {
            run_collectives(comm, &COUNTS, &[0, 1, 7, 1031])
        });
        assert_no_errors(&format!("{n} ranks, 1 socket"), errs);
    }
}

#[test]
fn three_sockets_per_peer() {
    for n in 1..=5 {
        // Small chunks put many messages on every lane, so lane order matters.
        let config = Config {
            chunk_bytes: 4096,
            ..config(5, 3)
        };
        let errs = tcp_ranks(n, config, |comm| {
            run_collectives(comm, &COUNTS, &[0, 1, 7, 1031])
        });
        assert_no_errors(&format!("{n} ranks, 3 sockets"), errs);
    }
}

#[test]
fn a_rank_that_never_joins_is_named_in_a_timeout() {
    let timeout = 2;
    let config = config(timeout, 2);
    let id = root(&config);
    let start = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                let (id, config) = (&id, config.clone());
                s.spawn(move || {
                    let r = Communicator::init(rank, 3, id, config);
                    (r, start.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, (r, elapsed)) in results.into_iter().enumerate() {
        match r {
            Err(Error::Timeout { waiting_for, .. }) => {
                assert_eq!(waiting_for, vec![2], "rank {rank}")
            }
            other => panic!("rank {rank}: expected a timeout waiting for rank 2, got {other:?}"),
        }
        assert!(
            elapsed >= Duration::from_secs(timeout) - Duration::from_millis(100),
            "rank {rank} gave up after {elapsed:?}, before the {timeout} s timeout"
        );
        assert!(
            elapsed < Duration::from_secs(timeout + 6),
            "rank {rank} took {elapsed:?} to report the missing rank"
        );
    }
}

/// The `info` blob of a hello, as `src/bootstrap/mod.rs` encodes `RankInfo`:
/// family 4, 16 address bytes, port and nsocks (LE), host name length and bytes.
fn rank_info(listen: SocketAddr, nsocks: u16) -> Vec<u8> {
    let SocketAddr::V4(v4) = listen else {
        panic!("IPv4 expected")
    };
    let mut b = vec![4];
    b.extend_from_slice(&v4.ip().octets());
    b.extend_from_slice(&[0; 12]);
    b.extend_from_slice(&listen.port().to_le_bytes());
    b.extend_from_slice(&nsocks.to_le_bytes());
    b.push(8);
    b.extend_from_slice(b"stranger");
    b
}

/// A hello in the wire format of `src/bootstrap/mod.rs`:
/// `"MXHELLO\0" version:u16 token:[16] rank:u32 nranks:u32 len:u32 info:[len]`.
fn hello(token: [u8; 16], rank: u32, nranks: u32, info: &[u8]) -> Vec<u8> {
    let mut b = b"MXHELLO\0".to_vec();
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&token);
    b.extend_from_slice(&rank.to_le_bytes());
    b.extend_from_slice(&nranks.to_le_bytes());
    b.extend_from_slice(&(info.len() as u32).to_le_bytes());
    b.extend_from_slice(info);
    b
}

/// Whether the peer closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A stranger is told nothing: any bytes at all are a leak.
            Ok(k) => panic!("the root sent a stranger {k} bytes: {:?}", &buf[..k]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return true, // reset
        }
    }
}

#[test]
fn strangers_on_the_root_port_do_not_stop_the_job() {
    let config = config(5, 2);
    let id = root(&config);
    let addr = id.root_addr();
    // A listener of ours for the fake hellos to point at, so a root that wrongly
    // admitted one would send ranks to a port nobody serves data on.
    let decoy = TcpListener::bind(loopback()).unwrap();
    let decoy_addr = decoy.local_addr().unwrap();

    let mut random = TcpStream::connect(addr).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    random.write_all(&noise).unwrap();

    let mut http = TcpStream::connect(addr).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();

    // Well-formed hellos with a token that is not this communicator's: one claims
    // rank 0 of the real job, one tries to set the job's size to 7.
    let mut wrong_token: Vec<TcpStream> = [(0u32, 2u32), (1, 7)]
        .iter()
        .map(|&(rank, nranks)| {
            let mut s = TcpStream::connect(addr).unwrap();
            let mut token = [0x5a; 16];
            token[0] = rank as u8;
            s.write_all(&hello(token, rank, nranks, &rank_info(decoy_addr, 2)))
                .unwrap();
            s
        })
        .collect();

    // Connects and stays silent for the whole job.
    let mut silent = TcpStream::connect(addr).unwrap();
    // Half a hello: right magic, then nothing more.
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(b"MXHELLO\0\x01\x00").unwrap();

    // Let the root see them all before the first real hello.
    std::thread::sleep(Duration::from_millis(200));
    for (what, s) in [
        ("random bytes", &mut random),
        ("an HTTP request", &mut http),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "the root kept a connection that sent {what}"
        );
    }
    for s in &mut wrong_token {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "the root kept a hello with the wrong token"
        );
    }

    let start = Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                let (id, config) = (&id, config.clone());
                s.spawn(move || -> Result<Vec<String>, Error> {
                    let mut comm = Communicator::init(rank, 2, id, config)?;
                    let mut errs = Vec::new();
                    errs.extend(check_all_reduce::<f32>(
                        &mut comm,
                        ReduceOp::Sum,
                        1031,
                        false,
                    ));
                    errs.extend(check_all_gather::<i32>(&mut comm, 7, false));
                    Ok(errs)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, r) in results.into_iter().enumerate() {
        let errs = r.unwrap_or_else(|e| panic!("rank {rank} failed despite the strangers: {e}"));
        assert!(errs.is_empty(), "rank {rank}: {errs:?}");
    }
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the strangers delayed the job by {:?}",
        start.elapsed()
    );
    // Once the root is done it lets go of the connections that never said anything useful.
    for (what, s) in [("silent", &mut silent), ("half-hello", &mut partial)] {
        assert!(
            closed_within(s, Duration::from_secs(12)),
            "the {what} connection was never closed"
        );
    }
    drop(decoy);
}

#[test]
fn a_duplicate_rank_is_refused_without_a_hang() {
    let config = config(3, 2);
    let id = root(&config);
    let start = Instant::now();
    // Threads 0 and 1 both claim rank 0; thread 2 is rank 1.
    let claims = [0usize, 0, 1];
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = claims
            .iter()
            .map(|&rank| {
                let (id, config) = (&id, config.clone());
                s.spawn(move || -> Result<Vec<String>, Error> {
                    let mut comm = Communicator::init(rank, 2, id, config)?;
                    Ok(
                        check_all_reduce::<f32>(&mut comm, ReduceOp::Sum, 1031, false)
                            .into_iter()
                            .collect(),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed();
    let ok: Vec<usize> = (0..3).filter(|&t| results[t].is_ok()).collect();
    assert!(
        ok.len() == 2 && ok.contains(&2),
        "expected exactly one rank 0 plus rank 1 to succeed, got {results:?}"
    );
    for t in &ok {
        let errs = results[*t].as_ref().unwrap();
        assert!(errs.is_empty(), "thread {t}: {errs:?}");
    }
    let refused = if ok.contains(&0) { 1 } else { 0 };
    match &results[refused] {
        Err(Error::Bootstrap(_)) | Err(Error::Timeout { .. }) => {}
        other => panic!("the duplicate rank 0 got {other:?}"),
    }
    assert!(elapsed < Duration::from_secs(3 + 6), "took {elapsed:?}");
}

#[test]
fn mismatched_nranks_fail_on_both_ranks() {
    let timeout = 2;
    let config = config(timeout, 2);
    let id = root(&config);
    let start = Instant::now();
    // Rank 0 thinks the job has 2 ranks, rank 1 thinks it has 3.
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = [(0usize, 2usize), (1, 3)]
            .into_iter()
            .map(|(rank, n)| {
                let (id, config) = (&id, config.clone());
                s.spawn(move || (Communicator::init(rank, n, id, config), start.elapsed()))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (rank, (r, elapsed)) in results.into_iter().enumerate() {
        match r {
            Err(Error::Bootstrap(_)) | Err(Error::Timeout { .. }) => {}
            other => panic!("rank {rank}: expected a bootstrap error or timeout, got {other:?}"),
        }
        assert!(
            elapsed < Duration::from_secs(timeout + 6),
            "rank {rank} took {elapsed:?}"
        );
    }
}

#[test]
fn unique_id_round_trips_through_the_environment() {
    let config = config(5, 2);
    let id = root(&config);
    let hex = id.to_string();
    assert_eq!(hex.len(), 2 * UniqueId::BYTES);
    assert!(hex
        .bytes()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(hex.parse::<UniqueId>().unwrap(), id);
    assert_eq!(format!("  {hex}\n").parse::<UniqueId>().unwrap(), id);
    assert_eq!(UniqueId::from_bytes(id.as_bytes()).unwrap(), id);
    // The Debug form shows the root only, never the secret token.
    let debug = format!("{id:?}");
    assert!(debug.contains(&id.root_addr().to_string()), "{debug}");
    assert!(!debug.contains(&hex[20..52]), "{debug}");

    // Both ranks find the job from environment-style variables alone and run a collective.
    let errs: Vec<Vec<String>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|rank| {
                let (hex, config) = (hex.clone(), config.clone());
                s.spawn(move || {
                    let vars = [
                        ("MIXCCL_RANK", rank.to_string()),
                        ("MIXCCL_NRANKS", "2".to_string()),
                        ("MIXCCL_UNIQUE_ID", hex),
                    ];
                    let env = LaunchEnv::detect(|k| {
                        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
                    })
                    .expect("detect");
                    assert_eq!((env.rank, env.nranks, env.launcher), (rank, 2, "mixccl"));
                    assert!(matches!(env.rendezvous, Rendezvous::Id(_)));
                    let mut comm = Communicator::from_launch_env(&env, config).expect("join");
                    check_all_reduce::<i64>(&mut comm, ReduceOp::Max, 7, true)
                        .into_iter()
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_no_errors("environment join", errs);
}

#[test]
fn corrupt_or_truncated_ids_are_invalid() {
    let id = root(&config(2, 1));
    let bytes = *id.as_bytes();
    for len in [0, 1, 64, 127] {
        match UniqueId::from_bytes(&bytes[..len]) {
            Err(Error::InvalidUniqueId(m)) => assert!(m.contains("128"), "{m}"),
            other => panic!("{len} bytes: {other:?}"),
        }
    }
    let mut long = bytes.to_vec();
    long.push(0);
    assert!(matches!(
        UniqueId::from_bytes(&long),
        Err(Error::InvalidUniqueId(_))
    ));
    // Any single flipped bit anywhere is caught (magic, version, token, address, checksum).
    for pos in 0..UniqueId::BYTES {
        for bit in [0x01u8, 0x80] {
            let mut b = bytes;
            b[pos] ^= bit;
            assert!(
                matches!(UniqueId::from_bytes(&b), Err(Error::InvalidUniqueId(_))),
                "a flip of {bit:#x} at byte {pos} was accepted"
            );
        }
    }
    assert!(matches!(
        UniqueId::from_bytes(&[0u8; UniqueId::BYTES]),
        Err(Error::InvalidUniqueId(_))
    ));
    let hex = id.to_string();
    for bad in [
        String::new(),
        hex[..255].to_string(),
        format!("{hex}0"),
        format!("zz{}", &hex[2..]),
        format!("{}\u{e9}", &hex[..254]),
    ] {
        assert!(
            matches!(bad.parse::<UniqueId>(), Err(Error::InvalidUniqueId(_))),
            "{bad:?} parsed"
        );
    }
    let env = LaunchEnv::detect(|k| match k {
        "MIXCCL_RANK" => Some("0".into()),
        "MIXCCL_NRANKS" => Some("2".into()),
        "MIXCCL_UNIQUE_ID" => Some(hex[..200].into()),
        _ => None,
    });
    assert!(matches!(env, Err(Error::InvalidUniqueId(_))), "{env:?}");
}
