//! Topology: what each rank probes about itself (`probe`), the model of hosts and
//! link costs all ranks plan with (`model`, dumped and loaded as JSON), and the short
//! measurement at init that refines the probed costs (`measure`). It owns facts
//! about the machine; it does not choose algorithms (that is `plan`) and moves bytes
//! only through the communicator's public calls.

pub(crate) mod measure;
pub(crate) mod model;
pub(crate) mod probe;

pub use model::{Host, LinkClass, LinkCost, Pods, Topology};
pub use probe::{DeviceInfo, Nic, RankProbe, RdmaPort};

use crate::comm::Communicator;
use crate::config::{Algorithm, Collective, Config};
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;

impl Topology {
    /// The algorithm the planner picks for `coll` with `bytes` per rank (the buffer for
    /// all_reduce, broadcast and reduce; one block for all_gather, reduce_scatter and
    /// all_to_all) under `config` (`MIXCCL_ALGO` included), and its time estimate in
    /// seconds (`NaN` when forced).
    pub fn choose(&self, config: &Config, coll: Collective, bytes: usize) -> (Algorithm, f64) {
        if let Some(forced) = config.algo.get(coll) {
            return (forced, f64::NAN);
        }
        crate::plan::cheapest(self, config, coll, bytes)
    }

    /// The estimate for `coll` with `algo`, or `None` where the planner would not
    /// consider it.
    pub fn estimate(
        &self,
        config: &Config,
        coll: Collective,
        algo: Algorithm,
        bytes: usize,
    ) -> Option<f64> {
        crate::plan::estimate(self, config, coll, algo, bytes)
    }
}

/// The model for links built without a bootstrap: `MIXCCL_TOPO_FILE` if set, else one
/// host whose links cost what `class` suggests.
pub(crate) fn for_links(nranks: usize, class: LinkClass, config: &Config) -> Result<Topology> {
    if let Some(path) = &config.topo_file {
        let t = Topology::load(path)?;
        check_size(&t, nranks, path)?;
        return Ok(t);
    }
    let intra = match class {
        LinkClass::Shm => model::SHM_DEFAULT,
        _ => LinkCost {
            class,
            ..model::MEM_DEFAULT
        },
    };
    Topology::single_host(nranks, intra)
}

fn check_size(t: &Topology, nranks: usize, path: &std::path::Path) -> Result<()> {
    if t.nranks() != nranks {
        return Err(Error::invalid(format!(
            "MIXCCL_TOPO_FILE={} describes {} ranks, but the communicator has {nranks}",
            path.display(),
            t.nranks()
        )));
    }
    Ok(())
}

/// Builds the model at init from every rank's probe (or `MIXCCL_TOPO_FILE`), refines
/// it by measurement unless `MIXCCL_TOPO_PROBE=0`, checks that every rank holds the
/// same model, hands it to the planner and dumps it if asked. Collective: every rank
/// calls it right after its links are up.
pub(crate) fn establish(comm: &mut Communicator, probes: Vec<RankProbe>) -> Result<()> {
    let config = comm.config().clone();
    let (rank, nranks) = (comm.rank(), comm.nranks());
    let start = std::time::Instant::now();
    let mut t = match &config.topo_file {
        Some(path) => {
            let t = Topology::load(path)?;
            check_size(&t, nranks, path)?;
            t
        }
        None => Topology::from_probes(probes, !config.shm_disable)?,
    };
    comm.set_topology(t.clone());
    if config.topo_file.is_none() && config.topo_probe && nranks > 1 {
        measure::refine(comm, &mut t)?;
        comm.set_topology(t.clone());
    }
    // Ranks must plan alike: compare the model's fingerprint everywhere.
    let mine = [t.fingerprint()];
    let mut all = vec![0u64; nranks];
    comm.all_gather(&mine, &mut all)?;
    if let Some((peer, theirs)) = all.iter().enumerate().find(|(_, f)| **f != mine[0]) {
        return Err(Error::Mismatch {
            rank,
            theirs: format!("a topology model with fingerprint {:016x}", mine[0]),
            peer,
            ours: format!("one with fingerprint {theirs:016x}"),
        });
    }
    for line in t.describe() {
        log_info!(Some(rank), "topology: {line}");
    }
    for coll in [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast,
    ] {
        log_info!(Some(rank), "topology: {}", bands(&t, &config, coll));
    }
    log_info!(
        Some(rank),
        "topology established in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    if let (Some(path), 0) = (&config.topo_dump_file, rank) {
        std::fs::write(path, t.to_json() + "\n").map_err(|e| {
            Error::io(
                format!("writing MIXCCL_TOPO_DUMP_FILE={}", path.display()),
                e,
            )
        })?;
    }
    // An all-reduce with the final model checks that the planner's first real choice
    // runs on every rank before init returns.
    let mut ok = [1u8];
    comm.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
    Ok(())
}

/// `allreduce: 8B..16KiB direct, 32KiB..1MiB tree, ...`: the choice per power-of-two
/// size from 8 B to 1 GiB, runs of equal choices merged.
pub fn bands(t: &Topology, config: &Config, coll: Collective) -> String {
    let per_rank = |s: usize| match coll {
        Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => {
            (s / t.nranks()).max(1)
        }
        _ => s,
    };
    let mut runs: Vec<(usize, usize, Algorithm)> = Vec::new();
    let mut s = 8usize;
    while s <= 1 << 30 {
        let a = t.choose(config, coll, per_rank(s)).0;
        match runs.last_mut() {
            Some(last) if last.2 == a => last.1 = s,
            _ => runs.push((s, s, a)),
        }
        s *= 2;
    }
    let size = |b: usize| {
        if b >= 1 << 30 {
            format!("{}GiB", b >> 30)
        } else if b >= 1 << 20 {
            format!("{}MiB", b >> 20)
        } else if b >= 1 << 10 {
            format!("{}KiB", b >> 10)
        } else {
            format!("{b}B")
        }
    };
    let parts: Vec<String> = runs
        .iter()
        .map(|(a, b, algo)| format!("{}..{} {algo}", size(*a), size(*b)))
        .collect();
    format!("{coll}: {}", parts.join(", "))
}
