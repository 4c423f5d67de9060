//! The tree and hierarchical algorithms, forced, on 1 to 9 ranks and on hosts of
//! every shape the planner may meet (one host; ranks interleaved across two hosts;
//! uneven contiguous hosts such as 3+2+1), every dtype and op, in place and out of
//! place, over the in-memory transport; checked element by element against
//! `mixccl::verify`. The host layout comes from a topology file (`MIXCCL_TOPO_FILE`).

mod util;

use mixccl::topo::{Host, LinkClass, LinkCost, Topology};
use mixccl::{AlgoOverride, Config, ReduceOp};
use std::path::PathBuf;
use util::*;

const COST: LinkCost = LinkCost {
    class: LinkClass::Mem,
    alpha_us: 5.0,
    bw_gbs: 4.0,
    measured: false,
};

/// Writes a topology with these hosts and returns its path.
fn topo_file(name: &str, hosts: &[Vec<usize>]) -> PathBuf {
    let t = Topology::new(
        hosts
            .iter()
            .enumerate()
            .map(|(i, ranks)| Host {
                name: format!("h{i}"),
                ranks: ranks.clone(),
                intra: COST,
                net: LinkCost {
                    class: LinkClass::Tcp,
                    alpha_us: 50.0,
                    bw_gbs: 0.1,
                    ..COST
                },
            })
            .collect(),
        Vec::new(),
    )
    .expect("a valid topology");
    // One file per call: tests running as threads of one process (cargo test) use the
    // same names, and one would remove the file another is about to read.
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let k = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "mixccl-topo-{}-{k}-{name}.json",
        std::process::id()
    ));
    std::fs::write(&path, t.to_json()).expect("write the topology file");
    path
}

/// Host layouts for n ranks: one host, interleaved over two, uneven contiguous
/// (halving: 6 -> 3+2+1, 9 -> 5+2+1+1).
fn layouts(n: usize) -> Vec<(String, Vec<Vec<usize>>)> {
    let mut v = vec![("one".to_string(), vec![(0..n).collect()])];
    if n >= 2 {
        v.push((
            "interleaved".into(),
            (0..2).map(|h| (h..n).step_by(2).collect()).collect(),
        ));
    }
    if n >= 3 {
        let (mut hosts, mut next) = (Vec::new(), 0);
        while next < n {
            let size = (n - next).div_ceil(2);
            hosts.push((next..next + size).collect());
            next += size;
        }
        v.push(("uneven".into(), hosts));
    }
    v
}

fn run(algos: &str, ns: impl Iterator<Item = usize>, counts: &[usize]) {
    for n in ns {
        for (name, hosts) in layouts(n) {
            let path = topo_file(&format!("{n}-{name}"), &hosts);
            let config = Config {
                algo: AlgoOverride::parse(algos).unwrap(),
                topo_file: Some(path.clone()),
                ..test_config()
            };
            let errs = with_ranks(n, config, |comm| {
                assert_eq!(comm.topology().unwrap().hosts.len(), hosts.len());
                for_each_type!(check_all(comm, counts, &ReduceOp::ALL))
            });
            let _ = std::fs::remove_file(&path);
            let errs: Vec<String> = errs.into_iter().flatten().collect();
            assert!(
                errs.is_empty(),
                "{algos} on {n} ranks, hosts {hosts:?}: {} failures, first: {:#?}",
                errs.len(),
                &errs[..errs.len().min(10)]
            );
        }
    }
}

#[test]
fn hierarchical_and_rooted_trees_every_layout() {
    run(
        "allreduce:hier;allgather:hier;reducescatter:hier;broadcast:tree;reduce:tree",
        1..=9,
        &[0, 1, 7, 1031],
    );
}

#[test]
fn double_binary_tree_every_rank_count() {
    run("allreduce:tree", 1..=9, &[0, 1, 7, 1031]);
}

/// One large case: many chunks per block on uneven hosts.
#[test]
fn large_counts_on_uneven_hosts() {
    for algos in [
        "allreduce:hier;allgather:hier;reducescatter:hier;broadcast:tree;reduce:tree",
        "allreduce:tree",
    ] {
        let path = topo_file("large", &[vec![0, 1, 2], vec![3, 4], vec![5]]);
        let config = Config {
            algo: AlgoOverride::parse(algos).unwrap(),
            topo_file: Some(path.clone()),
            chunk_bytes: 64 << 10,
            ..test_config()
        };
        let errs = with_ranks(6, config, |comm| {
            let mut e = check_all::<f32>(comm, &[(1 << 20) + 3], &[ReduceOp::Sum]);
            e.extend(check_reducing::<half::bf16>(
                comm,
                &[(1 << 18) + 1],
                &[ReduceOp::Avg],
            ));
            e
        });
        let _ = std::fs::remove_file(&path);
        let errs: Vec<String> = errs.into_iter().flatten().collect();
        assert!(errs.is_empty(), "{algos}: {errs:#?}");
    }
}

/// Tiny chunks and three lanes: many messages per peer, in lane order.
#[test]
fn tiny_chunks_and_lanes_on_uneven_hosts() {
    let path = topo_file("tiny", &[vec![0, 3], vec![1, 4], vec![2]]);
    for algos in [
        "allreduce:hier;allgather:hier;reducescatter:hier;broadcast:tree;reduce:tree",
        "allreduce:tree",
    ] {
        let config = Config {
            algo: AlgoOverride::parse(algos).unwrap(),
            topo_file: Some(path.clone()),
            chunk_bytes: 64,
            nsocks: 3,
            ..test_config()
        };
        let errs = with_ranks(5, config, |comm| {
            let mut e = check_all::<f32>(comm, &[0, 1, 7, 1031], &ReduceOp::ALL);
            e.extend(check_all::<i8>(comm, &[1031], &[ReduceOp::Sum]));
            e
        });
        let errs: Vec<String> = errs.into_iter().flatten().collect();
        assert!(errs.is_empty(), "{algos}: {errs:#?}");
    }
    let _ = std::fs::remove_file(&path);
}

/// A topology file for another rank count is refused at init, naming the variable.
#[test]
fn topology_file_of_the_wrong_size_is_refused() {
    let path = topo_file("wrong", &[vec![0, 1], vec![2]]);
    let config = Config {
        topo_file: Some(path.clone()),
        ..test_config()
    };
    let e = mixccl::Communicator::in_process(4, config).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(e.to_string().contains("MIXCCL_TOPO_FILE"), "{e}");
}
