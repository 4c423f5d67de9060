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
        let pid = std::process::id();
        let net = 20 + pid % 200;
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
