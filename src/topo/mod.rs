//! Topology: what each rank probes about itself (`probe`) and the model of hosts and
//! link costs all ranks plan with (`model`, dumped and loaded as JSON). It owns facts
//! about the machine and runs nothing: it does not choose algorithms (`plan` does, and
//! adds [`Topology::choose`], [`Topology::estimate`] and [`Topology::bands`]) and
//! does not move bytes (the communicator measures links at init, `comm::measure`).

pub(crate) mod model;
pub(crate) mod probe;

pub use model::{Host, IslandLink, LinkClass, LinkCost, Pods, Topology};
pub use probe::{DeviceInfo, Nic, RankProbe, RdmaPort};

use crate::config::Config;
use crate::error::{Error, Result};

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

pub(crate) fn check_size(t: &Topology, nranks: usize, path: &std::path::Path) -> Result<()> {
    if t.nranks() != nranks {
        return Err(Error::invalid(format!(
            "MIXCCL_TOPO_FILE={} describes {} ranks, but the communicator has {nranks}",
            path.display(),
            t.nranks()
        )));
    }
    Ok(())
}
