//! One communicator across two emulated hosts: network namespaces joined by a veth
//! pair, two ranks in each. Ranks in one namespace share memory; ranks in different
//! namespaces use TCP over the veth. Needs root and iproute2 (CI runs as root); the
//! namespaces are deleted when the test ends, even when it fails.

use std::process::{Command, Output, Stdio};

const PERF: &str = env!("CARGO_BIN_EXE_mixccl-perf");

/// Two namespaces and a veth pair; deleted on drop.
struct Hosts {
    ns: [String; 2],
    ip: [String; 2],
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Hosts {
    fn new() -> Hosts {
        // Tests may run as threads of one process: a counter keeps names apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let net = 20 + (pid * 7 + k) % 200;
        let pid = format!(
            "{pid}{}",
            if k == 0 {
                String::new()
            } else {
                format!("x{k}")
            }
        );
        let ns = [format!("mxa{pid}"), format!("mxb{pid}")];
        let ip_of = |h: u32| format!("10.231.{net}.{h}");
        let hosts = Hosts {
            ns: ns.clone(),
            ip: [ip_of(1), ip_of(2)],
        };
        let veth = [format!("va{pid}"), format!("vb{pid}")];
        for n in &ns {
            ip(&["netns", "add", n]);
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ]);
        for k in 0..2 {
            ip(&["link", "set", &veth[k], "netns", &ns[k]]);
            ip(&[
                "-n",
                &ns[k],
                "addr",
                "add",
                &format!("{}/24", hosts.ip[k]),
                "dev",
                &veth[k],
            ]);
            ip(&["-n", &ns[k], "link", "set", "lo", "up"]);
            ip(&["-n", &ns[k], "link", "set", &veth[k], "up"]);
        }
        hosts
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn two_hosts_mix_shared_memory_and_tcp() {
    assert!(
        is_root(),
        "this test emulates hosts with network namespaces and needs root"
    );
    let hosts = Hosts::new();
    let root = format!("{}:29411", hosts.ip[0]);
    for coll in ["allreduce", "allgather", "alltoall"] {
        let children: Vec<_> = (0..4)
            .map(|rank| {
                let host = rank / 2;
                Command::new("ip")
                    .args(["netns", "exec", &hosts.ns[host], PERF, coll])
                    .args([
                        "-b", "0", "-e", "1M", "-f", "64", "-d", "all", "-o", "all", "-n", "2",
                        "-w", "1",
                    ])
                    .env("MIXCCL_RANK", rank.to_string())
                    .env("MIXCCL_NRANKS", "4")
                    .env("MIXCCL_ROOT", &root)
                    .env("MIXCCL_TIMEOUT", "30")
                    .env("MIXCCL_DEBUG", "INFO")
                    .env_remove("MIXCCL_SHM_DISABLE")
                    .env_remove("MIXCCL_HOST_ID")
                    .env_remove("MIXCCL_SOCKET_IFNAME")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn a rank in its namespace")
            })
            .collect();
        let outs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect();
        for (rank, o) in outs.iter().enumerate() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success(),
                "{coll} rank {rank}: {}\n{err}",
                o.status
            );
            let same = rank ^ 1;
            assert!(
                err.contains(&format!("rank {rank} -> rank {same} via shm")),
                "{coll} rank {rank}: {err}"
            );
            for other in [(rank + 2) % 4, ((rank + 2) % 4) ^ 1] {
                assert!(
                    err.contains(&format!("rank {rank} -> rank {other} via tcp")),
                    "{coll} rank {rank}: {err}"
                );
            }
        }
        let table = String::from_utf8_lossy(&outs[0].stdout);
        assert!(
            table.contains("# Out of bounds values : 0 OK"),
            "{coll}: {table}"
        );
        // 0, 1, 64, 4K, 256K and 1M bytes for each of 10 types (and 5 ops where they apply).
        let rows = table
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .count();
        assert!(rows >= 30, "{coll}: only {rows} rows\n{table}");
    }
}

/// Runs `mixccl-perf ARGS` as ranks 0-1 in the first namespace and 2-3 in the second,
/// with `env` added; returns each rank's output.
fn four_ranks(hosts: &Hosts, port: u16, args: &[&str], env: &[(&str, &str)]) -> Vec<Output> {
    let root = format!("{}:{port}", hosts.ip[0]);
    let children: Vec<_> = (0..4)
        .map(|rank| {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &hosts.ns[rank / 2], PERF])
                .args(args)
                .env("MIXCCL_RANK", rank.to_string())
                .env("MIXCCL_NRANKS", "4")
                .env("MIXCCL_ROOT", &root)
                .env("MIXCCL_TIMEOUT", "30")
                .env("MIXCCL_DEBUG", "INFO")
                .env_remove("MIXCCL_ALGO")
                .env_remove("MIXCCL_TOPO_FILE")
                .env_remove("MIXCCL_TOPO_PROBE")
                .env_remove("MIXCCL_SHM_DISABLE")
                .env_remove("MIXCCL_HOST_ID")
                .env_remove("MIXCCL_SOCKET_IFNAME")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.spawn().expect("spawn a rank in its namespace")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("wait"))
        .collect()
}

/// The topology across two emulated hosts: every rank probes, measures and agrees on
/// two hosts of two ranks (shared memory inside, TCP across, measured); rank 0 dumps
/// the model; and the tree and hierarchical algorithms, forced, give right results
/// over the mix of shared memory and TCP (every dtype; every op is the in-memory
/// tests' job).
#[test]
fn two_hosts_topology_and_new_algorithms() {
    assert!(
        is_root(),
        "this test emulates hosts with network namespaces and needs root"
    );
    let hosts = Hosts::new();
    let dump = std::env::temp_dir().join(format!("mixccl-netns-topo-{}.json", std::process::id()));
    let dump_s = dump.display().to_string();
    let cases: [(&str, &str, u16); 5] = [
        ("allreduce", "", 29421),
        ("allreduce", "allreduce:hier", 29422),
        ("allreduce", "allreduce:tree", 29423),
        ("allgather", "allgather:hier", 29424),
        ("reducescatter", "reducescatter:hier", 29425),
    ];
    for (coll, algo, port) in cases {
        let mut env = vec![("MIXCCL_TOPO_DUMP_FILE", dump_s.as_str())];
        if !algo.is_empty() {
            env.push(("MIXCCL_ALGO", algo));
        }
        let outs = four_ranks(
            &hosts,
            port,
            &[
                coll, "-b", "0", "-e", "256K", "-f", "16", "-d", "all", "-o", "sum", "-n", "1",
                "-w", "0",
            ],
            &env,
        );
        for (rank, o) in outs.iter().enumerate() {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success(),
                "{coll} {algo} rank {rank}: {}\n{err}",
                o.status
            );
            assert!(
                err.contains("topology: 4 ranks on 2 hosts"),
                "{coll} {algo} rank {rank}: {err}"
            );
        }
        let table = String::from_utf8_lossy(&outs[0].stdout);
        assert!(
            table.contains("# Out of bounds values : 0 OK"),
            "{coll} {algo}: {table}"
        );
    }
    let text = std::fs::read_to_string(&dump).expect("rank 0 dumped the model");
    let _ = std::fs::remove_file(&dump);
    let t = mixccl::Topology::from_json(&text).expect("the dump loads back");
    assert_eq!(t.hosts.len(), 2, "{text}");
    for (h, ranks) in t.hosts.iter().zip([[0, 1], [2, 3]]) {
        assert_eq!(h.ranks, ranks, "{text}");
        assert_eq!(h.intra.class, mixccl::topo::LinkClass::Shm, "{text}");
        assert_eq!(h.net.class, mixccl::topo::LinkClass::Tcp, "{text}");
        assert!(h.net.measured && h.intra.measured, "{text}");
    }
    assert_eq!(t.probes.len(), 4, "{text}");
    assert!(t.probes[0].net_if.is_some(), "{text}");
}
