//! Intruders on every listening port of a running job: while 3 ranks (threads of this
//! process) init, run checked all-reduces, shrink, then grow back (the left rank
//! joins the survivors' grow, whose root is flooded too), flooder threads find every
//! TCP and Unix listening socket this process owns (the bootstrap root while it is
//! up, each rank's kept TCP listener, each rank's shared-memory listener) through
//! /proc, and keep connecting to them: random bytes then close, random bytes then
//! hold, a data-hello magic with garbage after it, and connections that connect and
//! then say nothing. Every result is checked element by element; the job must finish
//! within a bound, and every intruder the job accepted must have been dropped (the
//! intruder sees EOF or a reset). Over TCP and over shared memory.
//!
//! Silent intruders (connect, then say nothing) are held open on every listener: the
//! shared-memory listener reads an offer only once its connection has something to
//! say, so they cannot hold up the real offers.

mod util;

use mixccl::{Communicator, Config, ReduceOp, UniqueId};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Elements of each checked all-reduce.
const COUNT: usize = 1 << 20;
/// Checked all-reduces while the flood runs.
const CALLS: usize = 4;
/// Intruders held open at once, per listener (kept below any listen backlog).
const HELD_PER_LISTENER: usize = 8;

/// Socket inodes of this process's open file descriptors.
fn own_socket_inodes() -> HashSet<u64> {
    let mut set = HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return set;
    };
    for e in dir.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if let Ok(i) = n.parse() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// Where someone can connect to this process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Tcp(SocketAddr),
    /// A Unix socket: a path, or an abstract name (leading '@' in /proc).
    Unix(String),
}

/// This process's listening sockets: TCP on IPv4 and Unix stream sockets.
fn own_listeners() -> Vec<Target> {
    let mine = own_socket_inodes();
    let mut out = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/net/tcp") {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address rem_address st ... inode (column 9)
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else {
                continue;
            };
            if !mine.contains(&inode) {
                continue;
            }
            let Some((ip, port)) = f[1].split_once(':') else {
                continue;
            };
            let (Ok(ip), Ok(port)) = (u32::from_str_radix(ip, 16), u16::from_str_radix(port, 16))
            else {
                continue;
            };
            // /proc prints the address in host byte order of a network-order u32.
            let ip = std::net::Ipv4Addr::from(u32::from_be(ip));
            let ip = if ip.is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST
            } else {
                ip
            };
            out.push(Target::Tcp(SocketAddr::from((ip, port))));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/self/net/unix") {
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Num RefCount Protocol Flags Type St Inode Path
            if f.len() < 8 || f[3] != "00010000" || f[4] != "0001" {
                continue;
            }
            if f[6].parse::<u64>().is_ok_and(|i| mine.contains(&i)) {
                out.push(Target::Unix(f[7].to_string()));
            }
        }
    }
    out
}

fn connect_unix(name: &str) -> std::io::Result<UnixStream> {
    use std::os::linux::net::SocketAddrExt;
    match name.strip_prefix('@') {
        Some(abs) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abs.as_bytes())?;
            UnixStream::connect_addr(&addr)
        }
        None => UnixStream::connect(name),
    }
}

/// xorshift64: the flood's bytes and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// An intruder's connection, kept to see whether the job dropped it.
enum Held {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Held {
    /// The connection, to write to.
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Held::Tcp(s) => s,
            Held::Unix(s) => s,
        }
    }

    /// Whether the other side closed it (EOF or reset), without blocking.
    fn dropped(&mut self) -> bool {
        let mut buf = [0u8; 512];
        let r = match self {
            Held::Tcp(s) => {
                let _ = s.set_nonblocking(true);
                s.read(&mut buf)
            }
            Held::Unix(s) => {
                let _ = s.set_nonblocking(true);
                s.read(&mut buf)
            }
        };
        match r {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ),
        }
    }
}

/// Counts of what the flood did.
#[derive(Default)]
struct Tally {
    connections: AtomicUsize,
    refused: AtomicUsize,
    bytes: AtomicUsize,
}

/// One flooder: until `stop`, connects to every listener it finds, again and again.
fn flood(seed: u64, unix_too: bool, stop: &AtomicBool, tally: &Tally, held: &Mutex<Vec<Held>>) {
    let mut rng = Rng(seed | 1);
    let mut per_target: std::collections::HashMap<Target, usize> = Default::default();
    while !stop.load(Ordering::SeqCst) {
        let targets = own_listeners();
        for t in targets {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let kind = rng.next() % 4;
            let len = 1 + (rng.next() % 2048) as usize;
            let mut garbage = rng.bytes(len);
            if kind == 2 {
                // The start of a data hello, then garbage.
                garbage.splice(0..0, b"MXDATA\0\0".iter().copied());
            }
            // Garbage then hold (1), or connect and say nothing (3): held while there is
            // room, else closed.
            let hold = (kind == 1 || kind == 3)
                && per_target.get(&t).copied().unwrap_or(0) < HELD_PER_LISTENER;
            let timeout = Some(Duration::from_millis(200));
            let visit = match &t {
                Target::Tcp(addr) => Some(
                    TcpStream::connect_timeout(addr, Duration::from_millis(200)).map(|s| {
                        let _ = s.set_write_timeout(timeout);
                        Held::Tcp(s)
                    }),
                ),
                Target::Unix(name) if unix_too => Some(connect_unix(name).map(|s| {
                    let _ = s.set_write_timeout(timeout);
                    Held::Unix(s)
                })),
                Target::Unix(_) => None,
            };
            match visit {
                Some(Ok(mut keep)) => {
                    tally.connections.fetch_add(1, Ordering::Relaxed);
                    if kind != 3 && keep.writer().write_all(&garbage).is_ok() {
                        tally.bytes.fetch_add(garbage.len(), Ordering::Relaxed);
                    }
                    if hold {
                        *per_target.entry(t.clone()).or_default() += 1;
                        held.lock().unwrap().push(keep);
                    }
                }
                Some(Err(_)) => {
                    tally.refused.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Init, `CALLS` checked all-reduces, a shrink to ranks 0 and 1 and a checked
/// all-reduce on it, then a grow back to 3 (rank 2 joins) and a checked all-reduce,
/// with flooders running throughout.
fn job_survives_a_flood(shm: bool) {
    let config = Config {
        timeout: Duration::from_secs(20),
        shm_disable: !shm,
        ..Config::default()
    };
    let id = UniqueId::bind_with("127.0.0.1:0".parse().unwrap(), &config).expect("bind the root");
    let stop = AtomicBool::new(false);
    let tally = Tally::default();
    let held = Mutex::new(Vec::new());
    let grow_id: std::sync::OnceLock<UniqueId> = std::sync::OnceLock::new();
    let wait_grow_id = || {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(id) = grow_id.get() {
                return *id;
            }
            assert!(Instant::now() < until, "shm={shm}: no grow id within 20 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let start = Instant::now();
    let results: Vec<Vec<String>> = std::thread::scope(|s| {
        for k in 0..2u64 {
            let (stop, tally, held) = (&stop, &tally, &held);
            s.spawn(move || flood(0x9e37_79b9 + k + shm as u64, shm, stop, tally, held));
        }
        // Let the flood find the root before the ranks arrive.
        std::thread::sleep(Duration::from_millis(100));
        let ranks: Vec<_> = (0..3)
            .map(|rank| {
                let (id, config, grow_id, wait_grow_id, tally) =
                    (&id, config.clone(), &grow_id, &wait_grow_id, &tally);
                s.spawn(move || {
                    let mut errs = Vec::new();
                    let mut comm = Communicator::init(rank, 3, id, config.clone())
                        .unwrap_or_else(|e| panic!("shm={shm}: init of rank {rank}: {e}"));
                    // On a loaded machine the flooders may not have run yet: the calls
                    // start once they have made their first connections (10 s at most;
                    // the count is asserted below), so the job really runs under them.
                    let until = Instant::now() + Duration::from_secs(10);
                    while tally.connections.load(Ordering::Relaxed) < 10 && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    for _ in 0..CALLS {
                        errs.extend(util::check_all_reduce::<f32>(
                            &mut comm,
                            ReduceOp::Sum,
                            COUNT,
                            false,
                        ));
                    }
                    let mut big = if rank == 2 {
                        // Rank 2 leaves; the kept listeners of 0 and 1, full of
                        // intruders by now, are what the shrink reconnects through.
                        // Then it comes back through their grow's (flooded) root.
                        drop(comm);
                        Communicator::join_grown(2, 3, &wait_grow_id(), config)
                            .unwrap_or_else(|e| panic!("shm={shm}: rank 2 joining: {e}"))
                    } else {
                        let mut small = comm
                            .shrink(&[2])
                            .unwrap_or_else(|e| panic!("shm={shm}: shrink on rank {rank}: {e}"));
                        errs.extend(util::check_all_reduce::<i32>(
                            &mut small,
                            ReduceOp::Sum,
                            COUNT + 3,
                            true,
                        ));
                        if rank == 0 {
                            let _ = grow_id.set(small.grow_id().unwrap());
                        }
                        small
                            .grow(3, &wait_grow_id())
                            .unwrap_or_else(|e| panic!("shm={shm}: grow on rank {rank}: {e}"))
                    };
                    errs.extend(util::check_all_reduce::<f32>(
                        &mut big,
                        ReduceOp::Sum,
                        COUNT,
                        false,
                    ));
                    errs
                })
            })
            .collect();
        let out = ranks
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect();
        stop.store(true, Ordering::SeqCst);
        out
    });
    let took = start.elapsed();
    for (rank, errs) in results.iter().enumerate() {
        assert!(errs.is_empty(), "shm={shm}: rank {rank}: {errs:?}");
    }
    let connections = tally.connections.load(Ordering::Relaxed);
    assert!(
        connections >= 10,
        "shm={shm}: the flood made only {connections} connections"
    );
    assert!(
        took < Duration::from_secs(30),
        "shm={shm}: the job took {took:?} under the flood"
    );
    // Every communicator is gone: whatever the job accepted was closed with it.
    let mut held = held.into_inner().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut open = held.len();
    while open > 0 && Instant::now() < deadline {
        open = held.iter_mut().map(|h| !h.dropped()).filter(|o| *o).count();
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "shm={shm}: job done in {took:?} under {connections} intruder connections ({} refused, \
         {} bytes of garbage); {} held intruders, {open} never dropped",
        tally.refused.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
        held.len()
    );
    assert_eq!(
        open, 0,
        "shm={shm}: {open} intruder connections were never dropped"
    );
}

#[test]
fn a_flood_of_intruders_during_init_and_collectives_changes_nothing() {
    job_survives_a_flood(false);
    job_survives_a_flood(true);
}
