//! Bridging versus host staging: what an all-reduce costs on V vendors x D devices
//! per host x H hosts when each host's devices of one vendor form an island (see
//! `comm/island.rs`) and when every byte is staged through host memory.
//!
//! - host staging: the planner's algorithm over all `H x V x D` ranks, simulated on
//!   the cluster's links, plus one device-to-host and one host-to-device copy;
//! - bridging as the library runs it (leader form): the island's all-reduce
//!   ([`IslandLink::all_reduce`]), the copy out, the planner's algorithm over the
//!   `H x V` representatives (simulated), the copy in, the island's broadcast
//!   ([`IslandLink::broadcast`]);
//! - bridging in shard form (the library's all-reduce when every rank is in an
//!   island of one size): the island's reduce-scatter,
//!   the copy out of one shard, `D` all-reduces of a shard each over one member per
//!   island (simulated as one, each host's network link shared `D` ways), the copy
//!   in, the island's all-gather.
//!
//! The island phases are the alpha-beta model of the library's ring, not simulated
//! transfers: the simulator does not model NVLink or HCCS.

use super::{Cluster, Settings, Simulator};
use crate::config::{Algorithm, Collective};
use crate::error::Result;
use crate::topo::{IslandLink, LinkCost};

/// A cluster of islands.
#[derive(Debug, Clone)]
pub struct IslandCase {
    /// Hosts.
    pub hosts: usize,
    /// Vendors per host (one island each).
    pub vendors: usize,
    /// Devices per vendor on each host.
    pub devices: usize,
    /// The islands' library cost (all vendors alike here).
    pub island: IslandLink,
    /// Host <-> device copy rate, GB/s.
    pub pcie_gbs: f64,
    /// The link between two ranks of a host (host memory).
    pub intra: LinkCost,
    /// Each host's network link.
    pub inter: LinkCost,
}

/// One size of the comparison.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct IslandRow {
    /// Bytes per rank.
    pub bytes: usize,
    /// Host staging: seconds, and the planner's algorithm over all ranks.
    pub staged_s: f64,
    /// The algorithm host staging runs.
    pub staged_algo: String,
    /// Bridging: seconds in all.
    pub bridged_s: f64,
    /// Of which inside the islands (all-reduce and broadcast).
    pub native_s: f64,
    /// Of which the representatives' all-reduce.
    pub reps_s: f64,
    /// The algorithm the representatives run.
    pub reps_algo: String,
    /// Bridging in shard form: seconds in all.
    pub shard_s: f64,
}

/// The planner's all-reduce of `bytes` on `cluster`, simulated: seconds and algorithm.
fn planned(cluster: &Cluster, settings: &Settings, bytes: usize) -> Result<(f64, Algorithm)> {
    let sim = Simulator::new(cluster.build()?, settings.clone());
    let algo = sim.planner(Collective::AllReduce, bytes);
    Ok((sim.run(Collective::AllReduce, algo, bytes)?.seconds, algo))
}

/// Both ways, for each of `sizes` (bytes per rank).
pub fn compare(case: &IslandCase, settings: &Settings, sizes: &[usize]) -> Result<Vec<IslandRow>> {
    let all = Cluster::new(
        case.hosts,
        case.vendors * case.devices,
        case.intra,
        case.inter,
    );
    let reps = Cluster::new(case.hosts, case.vendors, case.intra, case.inter);
    let mut shared = case.inter;
    shared.bw_gbs /= case.devices as f64;
    let shards = Cluster::new(case.hosts, case.vendors, case.intra, shared);
    let mut rows = Vec::new();
    for &bytes in sizes {
        let b = bytes as f64;
        let copies = 2.0 * b / (case.pcie_gbs * 1e9);
        let (staged, staged_algo) = planned(&all, settings, bytes)?;
        let native =
            case.island.all_reduce(case.devices, b) + case.island.broadcast(case.devices, b);
        let (reps_s, reps_algo) = if case.hosts * case.vendors > 1 {
            planned(&reps, settings, bytes)?
        } else {
            (0.0, Algorithm::Ring)
        };
        let shard = bytes.div_ceil(case.devices);
        let shard_reps = if case.hosts * case.vendors > 1 {
            planned(&shards, settings, shard)?.0
        } else {
            0.0
        };
        let shard_s = 2.0 * case.island.reduce_scatter(case.devices, b)
            + 2.0 * shard as f64 / (case.pcie_gbs * 1e9)
            + shard_reps;
        rows.push(IslandRow {
            bytes,
            staged_s: staged + copies,
            staged_algo: staged_algo.name().to_string(),
            bridged_s: native + copies + reps_s,
            native_s: native,
            reps_s,
            reps_algo: reps_algo.name().to_string(),
            shard_s,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::{LinkClass, Topology};

    fn link(class: LinkClass, alpha_us: f64, bw_gbs: f64) -> LinkCost {
        LinkCost {
            class,
            alpha_us,
            bw_gbs,
            measured: false,
        }
    }

    #[test]
    fn bridging_wins_on_large_messages_and_costs_add_up() {
        let case = IslandCase {
            hosts: 2,
            vendors: 2,
            devices: 8,
            island: IslandLink::default_for("nccl").unwrap(),
            pcie_gbs: 25.0,
            intra: link(LinkClass::Shm, 5.0, 4.0),
            inter: link(LinkClass::Rdma, 4.0, 50.0),
        };
        let rows = compare(&case, &Settings::default(), &[64 << 20]).unwrap();
        let r = &rows[0];
        assert!(r.bridged_s < r.staged_s, "{r:?}");
        let b = (64 << 20) as f64;
        // 14 steps of 8 us, 14/8 of the bytes at 300 GB/s; then 7 steps and the bytes.
        let native = 14.0 * 8e-6 + 14.0 / 8.0 * b / 300e9 + 7.0 * 8e-6 + b / 300e9;
        assert!(
            (r.native_s - native).abs() < 1e-12,
            "{} vs {native}",
            r.native_s
        );
        assert!((r.bridged_s - (native + 2.0 * b / 25e9 + r.reps_s)).abs() < 1e-12);
    }

    #[test]
    fn a_model_file_overrides_the_library_defaults() {
        let one = Topology::single_host(2, link(LinkClass::Shm, 5.0, 4.0)).unwrap();
        assert_eq!(one.island_link("hccl"), IslandLink::default_for("hccl"));
        let mut json: serde_json::Value = serde_json::from_str(&one.to_json()).unwrap();
        json["island_links"] =
            serde_json::json!([{"library": "hccl", "alpha_us": 3.0, "bw_gbs": 77.0}]);
        let t = Topology::from_json(&json.to_string()).unwrap();
        let l = t.island_link("hccl").unwrap();
        assert_eq!((l.alpha_us, l.bw_gbs), (3.0, 77.0));
        assert_eq!(t.island_link("nccl"), IslandLink::default_for("nccl"));
        json["island_links"] =
            serde_json::json!([{"library": "xccl", "alpha_us": 3.0, "bw_gbs": 7.0}]);
        assert!(Topology::from_json(&json.to_string()).is_err());
    }
}
