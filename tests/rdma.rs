//! The RDMA transport as a user meets it, through `mixccl-perf` processes that
//! look like two hosts (`MIXCCL_HOST_ID`), so every peer pair negotiates.
//!
//! On a host without RDMA (this project's CI: no adapter, and a kernel without
//! InfiniBand support, or no libibverbs at all) the job must run over TCP,
//! saying why at `MIXCCL_DEBUG=INFO` and never warning; with `MIXCCL_NET=IB` it
//! must fail at once with an error that says RDMA is unavailable. On a host with
//! an active RDMA port the same job must pick RDMA instead.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const PERF: &str = env!("CARGO_BIN_EXE_mixccl-perf");

struct Rank {
    status: Option<ExitStatus>,
    out: String,
    err: String,
}

/// Runs `n` ranks of `mixccl-perf args`, each on its own emulated host, with
/// `env` added; kills whatever still runs after `limit`.
fn run(n: usize, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Vec<Rank> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("mixccl-rdma-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |r: usize, what: &str| -> PathBuf { dir.join(format!("{r}.{what}")) };
    let mut children: Vec<_> = (0..n)
        .map(|r| {
            let mut cmd = Command::new(PERF);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("MIXCCL_") {
                    cmd.env_remove(k);
                }
            }
            cmd.args(args)
                .env("MIXCCL_TIMEOUT", "30")
                .env("MIXCCL_DEBUG", "INFO")
                .env("MIXCCL_HOST_ID", format!("emulated-host-{r}"))
                .env("MIXCCL_RANK", r.to_string())
                .env("MIXCCL_NRANKS", n.to_string())
                .env("MIXCCL_ROOT", format!("127.0.0.1:{port}"))
                .env("MIXCCL_JOB_ID", format!("rdma-test-{port}"))
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(file(r, "out")).unwrap())
                .stderr(std::fs::File::create(file(r, "err")).unwrap());
            cmd.spawn().expect("start mixccl-perf")
        })
        .collect();
    let deadline = Instant::now() + limit;
    let mut status: Vec<Option<ExitStatus>> = vec![None; n];
    while status.iter().any(Option::is_none) && Instant::now() < deadline {
        for (c, s) in children.iter_mut().zip(status.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait().unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let ranks = (0..n)
        .map(|r| Rank {
            status: status[r],
            out: std::fs::read_to_string(file(r, "out")).unwrap_or_default(),
            err: std::fs::read_to_string(file(r, "err")).unwrap_or_default(),
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    ranks
}

const ALLREDUCE: &[&str] = &[
    "allreduce",
    "-b",
    "8",
    "-e",
    "1M",
    "-f",
    "32",
    "-n",
    "2",
    "-w",
    "1",
];

#[test]
fn hosts_without_rdma_use_tcp_and_say_why_at_info() {
    let ranks = run(3, ALLREDUCE, &[], Duration::from_secs(120));
    let rdma = ranks.iter().any(|r| r.err.contains("via rdma:"));
    for (i, r) in ranks.iter().enumerate() {
        assert!(
            r.status.is_some_and(|s| s.success()),
            "rank {i} failed: {:?}\n{}",
            r.status,
            r.err
        );
        if i == 0 {
            assert!(r.out.contains("Out of bounds values : 0 OK"), "{}", r.out);
        }
        if rdma {
            eprintln!("this host has RDMA: rank {i} chose it (checked in the other test)");
            continue;
        }
        assert!(
            r.err.contains("RDMA unavailable (") && r.err.contains("), using TCP"),
            "rank {i} did not say why it uses TCP:\n{}",
            r.err
        );
        assert!(
            r.err.contains(" via tcp: RDMA unavailable on rank"),
            "{}",
            r.err
        );
        for line in r.err.lines() {
            assert!(
                !line.contains(" WARN ") && !line.contains("panicked"),
                "rank {i} warned about missing RDMA: {line}"
            );
        }
    }
}

#[test]
fn net_ib_without_rdma_fails_at_once_with_a_clear_error() {
    // A library that cannot exist stands for "no RDMA" on any host.
    let start = Instant::now();
    let ranks = run(
        2,
        ALLREDUCE,
        &[
            ("MIXCCL_NET", "IB"),
            (
                "MIXCCL_IBVERBS_LIB",
                "/nonexistent/mixccl-test/libibverbs.so.1",
            ),
            ("MIXCCL_TIMEOUT", "60"),
        ],
        Duration::from_secs(30),
    );
    for (i, r) in ranks.iter().enumerate() {
        assert!(
            r.status.is_some_and(|s| !s.success()),
            "rank {i}: {:?}",
            r.status
        );
        assert!(
            r.err.contains("MIXCCL_NET=IB") && r.err.contains("RDMA is unavailable"),
            "rank {i}:\n{}",
            r.err
        );
        assert!(
            r.err.contains("/nonexistent/mixccl-test/libibverbs.so.1"),
            "{}",
            r.err
        );
    }
    // Before the rendezvous: neither rank waited for the other, nor for the timeout.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn hosts_with_rdma_use_it() {
    // Probe the way a rank does: one rank alone, forced to IB, fails only if
    // this host has no usable RDMA port.
    let probe = run(
        1,
        &["allreduce", "-b", "8", "-e", "8", "-n", "1", "-w", "0"],
        &[("MIXCCL_NET", "IB")],
        Duration::from_secs(60),
    );
    let r = &probe[0];
    if !r.status.is_some_and(|s| s.success()) {
        let why = r.err.lines().last().unwrap_or("");
        eprintln!("SKIPPED: no RDMA on this host, the RDMA path did not run ({why})");
        assert!(r.err.contains("RDMA is unavailable"), "{}", r.err);
        return;
    }
    let ranks = run(
        2,
        ALLREDUCE,
        &[("MIXCCL_NET", "IB")],
        Duration::from_secs(120),
    );
    for (i, r) in ranks.iter().enumerate() {
        assert!(
            r.status.is_some_and(|s| s.success()),
            "rank {i}:\n{}",
            r.err
        );
        assert!(r.err.contains(" via rdma:"), "rank {i}:\n{}", r.err);
    }
    assert!(
        ranks[0].out.contains("Out of bounds values : 0 OK"),
        "{}",
        ranks[0].out
    );
}
