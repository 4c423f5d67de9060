//! Algorithm selection from JSON topologies this machine does not have (the files in
//! `tests/topos/`, loaded as `MIXCCL_TOPO_FILE` would load them): the planner's
//! choice per size band, the `MIXCCL_ALGO` override, and dump/load round trips.

use mixccl::topo::Topology;
use mixccl::{AlgoOverride, Algorithm, Collective, Config};
use std::path::Path;

use Algorithm::{Chain, Direct, Hier, Ring, Tree};
use Collective::{AllGather, AllReduce, Broadcast, Reduce, ReduceScatter};

fn load(name: &str) -> Topology {
    Topology::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/topos")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `bytes` is the size nccl-tests reports: the buffer, or the total over all blocks.
fn pick(t: &Topology, coll: Collective, bytes: usize) -> Algorithm {
    let per_rank = match coll {
        AllGather | ReduceScatter => bytes / t.nranks(),
        _ => bytes,
    };
    t.choose(&Config::default(), coll, per_rank).0
}

fn expect(t: &Topology, name: &str, cases: &[(Collective, usize, Algorithm)]) {
    for &(coll, bytes, want) in cases {
        assert_eq!(
            pick(t, coll, bytes),
            want,
            "{name}: {coll} of {bytes} bytes\n{}",
            t.bands(&Config::default(), coll)
        );
    }
}

const K: usize = 1 << 10;
const M: usize = 1 << 20;

#[test]
fn one_host_of_eight() {
    let t = load("1x8.json");
    expect(
        &t,
        "1x8",
        &[
            (AllReduce, 8, Direct),
            (AllReduce, 4 * K, Direct),
            // mixccl-sim: ring 84 us, direct 117, tree 133 (the tree's chunks do not
            // stream: see plan.rs).
            (AllReduce, 32 * K, Ring),
            (AllReduce, M, Ring),
            (AllReduce, 256 * M, Ring),
            (AllGather, 8 * K, Direct),
            (AllGather, 32 * M, Ring),
            (ReduceScatter, 32 * M, Ring),
            (Broadcast, 8, Tree),
            (Broadcast, 64 * M, Chain),
            (Reduce, 8, Tree),
            (Reduce, 64 * M, Chain),
        ],
    );
    // One host: the hierarchical algorithms are never candidates.
    for coll in [AllReduce, AllGather, ReduceScatter] {
        assert!(t
            .estimate(&Config::default(), coll, Hier, 1 << 20)
            .is_none());
    }
}

#[test]
fn two_hosts_of_four() {
    let t = load("2x4.json");
    expect(
        &t,
        "2x4",
        &[
            (AllReduce, 8, Direct),
            (AllReduce, 64 * K, Hier),
            // 32 MiB all_reduce: ring (mixccl-sim: hier 18.1 ms, ring 18.8; see
            // the_planner_is_near_the_simulated_best).
            (AllGather, 8 * K, Direct),
            (AllGather, 32 * M, Hier),
            // mixccl-sim: ring; hier 1.16x (chosen before session 5).
            (ReduceScatter, 32 * M, Ring),
            // mixccl-sim: chain 70 us, tree 85 us (the chain's hops inside hosts
            // are cheap: plan.rs, issue 18).
            (Broadcast, 8, Chain),
            (Broadcast, 256 * M, Chain),
        ],
    );
}

#[test]
fn sixteen_hosts_of_eight_with_slow_links() {
    let t = load("16x8-slow.json");
    assert_eq!((t.nranks(), t.hosts.len()), (128, 16));
    expect(
        &t,
        "16x8",
        &[
            (AllReduce, 8, Direct),
            (AllReduce, K, Tree),
            // mixccl-sim: hier 1.94 ms, tree 2.22 ms.
            (AllReduce, 8 * K, Hier),
            (AllReduce, 64 * K, Hier),
            (AllReduce, 256 * M, Hier),
            // mixccl-sim: ring 8.38 ms, hier 8.99 ms (the ring's latency is the
            // mean hop's, not the slowest's: plan.rs, issue 18).
            (AllGather, M, Ring),
            // mixccl-sim: ring 8.38 ms, hier 9.00 ms.
            (ReduceScatter, M, Ring),
            (Broadcast, K, Tree),
            (Reduce, K, Tree),
            (Broadcast, 256 * M, Chain),
        ],
    );
}

/// One host's NIC is 10x slower than the others': the planner turns to the
/// hierarchical algorithms, which cross that NIC with fewer bytes, at sizes where
/// uniform NICs keep the flat ones.
#[test]
fn one_host_with_a_ten_times_slower_nic() {
    let slow = load("4x4-one-slow-nic.json");
    let mut uniform = slow.clone();
    let fast = uniform.hosts[0].net;
    uniform.hosts[2].net = fast;
    assert!(slow.hosts[2].net.bw_gbs * 10.0 <= fast.bw_gbs);
    expect(
        &slow,
        "slow nic",
        &[
            (AllReduce, 8, Direct),
            (AllReduce, K, Hier),
            (AllReduce, 256 * M, Hier),
            (AllGather, 64 * M, Hier),
            // 64 MiB reduce_scatter: ring, 1.09x hier in mixccl-sim (see
            // the_planner_is_near_the_simulated_best).
        ],
    );
    expect(
        &uniform,
        "uniform",
        &[
            (AllReduce, K, Direct),
            // mixccl-sim: hier 12.6 ms, ring 15.7 ms (the estimate of hier's phases
            // follows the simulator's order: plan.rs, issue 18).
            (AllGather, 64 * M, Hier),
            (ReduceScatter, 64 * M, Ring),
        ],
    );
    // The flat ring crosses the slow NIC with 2(n-1)/n of the buffer: its estimate
    // triples (the uniform ring is bound by shared memory, not the NICs).
    let c = Config::default();
    let ring = |t: &Topology| t.estimate(&c, AllReduce, Ring, 64 * M).unwrap();
    assert!(ring(&slow) > 2.0 * ring(&uniform));
}

#[test]
fn mixccl_algo_overrides_the_model() {
    let t = load("16x8-slow.json");
    let c = Config {
        algo: AlgoOverride::parse("allreduce:ring;broadcast:chain").unwrap(),
        ..Config::default()
    };
    for bytes in [8, 64 * K, 256 * M] {
        assert_eq!(t.choose(&c, AllReduce, bytes).0, Ring);
        assert_eq!(t.choose(&c, Broadcast, bytes).0, Chain);
    }
    assert_eq!(t.choose(&c, AllGather, M).0, Hier);
    for bad in ["allreduce:hyper", "broadcast:hier", "reducescatter:tree"] {
        let e = Config::default()
            .with_env(|k| (k == "MIXCCL_ALGO").then(|| bad.to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("MIXCCL_ALGO"), "{bad}: {e}");
    }
}

#[test]
fn dumps_load_back_identically() {
    for name in [
        "1x8.json",
        "2x4.json",
        "16x8-slow.json",
        "4x4-one-slow-nic.json",
    ] {
        let t = load(name);
        let back = Topology::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t, "{name}");
        assert_eq!(back.fingerprint(), t.fingerprint(), "{name}");
        for coll in [AllReduce, AllGather, Broadcast] {
            assert_eq!(
                back.bands(&Config::default(), coll),
                t.bands(&Config::default(), coll)
            );
        }
    }
    // Different costs, different fingerprints: ranks that disagree are caught.
    let a = load("2x4.json");
    let mut b = a.clone();
    b.hosts[1].net.bw_gbs *= 2.0;
    assert_ne!(a.fingerprint(), b.fingerprint());
}

/// The planner judged by mixccl-sim on the four topologies above: all_reduce,
/// reduce_scatter and all_gather of 64 KiB to 256 MiB (60 cases), the planner's
/// choice against the fastest simulated algorithm it weighs (direct only where the
/// planner picks it). Session 5's fix (the ring reduces its chunks as they arrive:
/// `plan.rs`) took these from 15 choices more than 2% slower than the best (worst
/// 1.32x: 2x4, reduce_scatter of 4 MiB, hier against the ring) to 12 (worst 1.26x:
/// the slow NIC, all_gather of 512 KiB, hier against the ring); what is left is in
/// docs/scaling.md.
#[test]
fn the_planner_is_near_the_simulated_best() {
    use mixccl::sim::{Network, Settings, Simulator};
    let (mut wrong, mut worst) = (Vec::new(), 1.0f64);
    for name in [
        "1x8.json",
        "2x4.json",
        "16x8-slow.json",
        "4x4-one-slow-nic.json",
    ] {
        let sim = Simulator::new(Network::from_topology(load(name)), Settings::default());
        for coll in [AllReduce, ReduceScatter, AllGather] {
            for bytes in [64 * K, 512 * K, 4 * M, 32 * M, 256 * M] {
                let time = |a| {
                    sim.run(coll, a, bytes)
                        .unwrap_or_else(|e| panic!("{name} {coll} {a} {bytes}: {e}"))
                        .seconds
                };
                let pick = sim.planner(coll, bytes);
                let times: Vec<(Algorithm, f64)> = sim
                    .algorithms(coll)
                    .into_iter()
                    .filter(|&a| a != Direct || a == pick)
                    .map(|a| (a, time(a)))
                    .collect();
                let best = times.iter().map(|&(_, t)| t).fold(f64::INFINITY, f64::min);
                let chosen = times
                    .iter()
                    .find(|&&(a, _)| a == pick)
                    .map_or_else(|| time(pick), |&(_, t)| t);
                let ratio = chosen / best;
                worst = worst.max(ratio);
                if ratio > 1.02 {
                    wrong.push(format!("{name} {coll} {bytes}: {pick} {ratio:.2}x"));
                }
            }
        }
    }
    assert!(worst < 1.3, "worst {worst:.2}x: {wrong:#?}");
    assert!(wrong.len() <= 12, "{} wrong: {wrong:#?}", wrong.len());
}
