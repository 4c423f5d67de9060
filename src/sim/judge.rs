//! The planner judged against the simulator on random clusters: `mixccl-sim judge`.
//!
//! A case is a cluster drawn by [`Cluster::random`], a collective (all_reduce,
//! all_gather, reduce_scatter or broadcast) and a size of 8 B to 256 MiB (a power of
//! two, nccl-tests' size: the whole output of all_gather; rounded up to a whole
//! element per rank where the ranks need more), all drawn from one seed. The case
//! is simulated with every algorithm the planner weighs for it (less those
//! [`Settings::prune`] skips) and the planner's pick is judged against the fastest.

use super::{Cluster, Rng, Row, Settings, Shape, Simulator};
use crate::config::Collective;
use crate::error::Result;

/// The collectives a judge draws from.
pub const COLLECTIVES: [Collective; 4] = [
    Collective::AllReduce,
    Collective::AllGather,
    Collective::ReduceScatter,
    Collective::Broadcast,
];

/// One drawn case.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its number within its seed's sequence.
    pub index: usize,
    /// The cluster.
    pub cluster: Cluster,
    /// The collective.
    pub coll: Collective,
    /// Bytes (nccl-tests' size).
    pub size: usize,
}

/// The first `n` cases of `seed` within `shape`: case `i` is the same whatever `n`.
pub fn cases(seed: u64, n: usize, shape: &Shape) -> Vec<Case> {
    (0..n)
        .map(|index| {
            let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ index as u64);
            let cluster = Cluster::random(&mut rng, shape);
            let coll = COLLECTIVES[rng.range(0, COLLECTIVES.len() - 1)];
            let mut size = 8usize << rng.range(0, 25);
            let n = cluster.hosts * cluster.ranks_per_host;
            if matches!(coll, Collective::AllGather | Collective::ReduceScatter) {
                let unit = 4 * n;
                size = size.div_ceil(unit) * unit;
            }
            Case {
                index,
                cluster,
                coll,
                size,
            }
        })
        .collect()
}

/// What one case found.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The case.
    pub case: Case,
    /// The simulated row (every algorithm's outcome, the pick, the best).
    pub row: Row,
    /// The planner's estimate of each algorithm for the call's first piece, seconds.
    pub estimates: Vec<(String, f64)>,
    /// CPU seconds the case took.
    pub cpu: f64,
}

impl Verdict {
    /// The pick's simulated time over the best's (`None` when the pick could not be
    /// simulated).
    pub fn ratio(&self) -> Option<f64> {
        self.row.planner_over_best
    }
}

/// Simulates `case` under `settings`.
pub fn judge(case: &Case, settings: &Settings) -> Result<Verdict> {
    let t0 = super::thread_cpu_seconds();
    let net = case.cluster.build()?;
    let sim = Simulator::new(net, settings.clone());
    let algos = sim.algorithms(case.coll);
    let row = sim.sweep(case.coll, &[case.size], &algos).remove(0);
    let bytes = sim.planned_bytes(case.coll, case.size);
    let estimates = algos
        .iter()
        .filter_map(|&a| {
            let e =
                crate::plan::estimate(&sim.network().topo, &settings.config, case.coll, a, bytes)?;
            Some((a.name().to_string(), e))
        })
        .collect();
    Ok(Verdict {
        case: case.clone(),
        row,
        estimates,
        cpu: super::thread_cpu_seconds() - t0,
    })
}
