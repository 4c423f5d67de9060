//! Picks the algorithm for each call: `MIXCCL_ALGO` when it forces one, else a
//! size rule (direct exchange for small messages, ring for large ones, chain for
//! rooted calls, pairwise for all-to-all). The topology issue replaces the size
//! rule with an alpha-beta cost model; the contract stays: a pure function of
//! values every rank shares, so all ranks choose alike.

use crate::config::{Algorithm, Collective, Config};

/// What the communicator offers beyond links, decided at init and equal on all ranks.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Capabilities {
    /// Every rank is on one host and may read every other's memory (cross-memory attach).
    pub host_read: bool,
}

/// The algorithm for `coll` moving `bytes` per rank on `nranks` ranks.
pub(crate) fn choose(
    config: &Config,
    caps: Capabilities,
    coll: Collective,
    bytes: usize,
    nranks: usize,
) -> Algorithm {
    if let Some(forced) = config.algo.get(coll) {
        return forced;
    }
    match coll {
        Collective::AllGather
            if caps.host_read && bytes.saturating_mul(nranks) > config.direct_max_bytes =>
        {
            Algorithm::HostRead
        }
        Collective::AllReduce if bytes <= config.direct_max_bytes || nranks <= 1 => {
            Algorithm::Direct
        }
        Collective::AllReduce => Algorithm::Ring,
        Collective::AllGather if bytes.saturating_mul(nranks) <= config.direct_max_bytes => {
            Algorithm::Direct
        }
        Collective::AllGather | Collective::ReduceScatter => Algorithm::Ring,
        Collective::Broadcast | Collective::Reduce => Algorithm::Chain,
        Collective::AllToAll => Algorithm::Pairwise,
        Collective::SendRecv | Collective::Barrier => Algorithm::Direct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlgoOverride;

    #[test]
    fn size_rule_and_override() {
        let c = Config::default();
        let none = Capabilities::default();
        assert_eq!(
            choose(&c, none, Collective::AllReduce, 8, 4),
            Algorithm::Direct
        );
        assert_eq!(
            choose(&c, none, Collective::AllReduce, 32 << 20, 4),
            Algorithm::Ring
        );
        assert_eq!(
            choose(&c, none, Collective::Broadcast, 8, 4),
            Algorithm::Chain
        );
        assert_eq!(
            choose(&c, none, Collective::AllGather, 1 << 20, 4),
            Algorithm::Ring
        );
        let cma = Capabilities { host_read: true };
        assert_eq!(
            choose(&c, cma, Collective::AllGather, 1 << 20, 4),
            Algorithm::HostRead
        );
        assert_eq!(
            choose(&c, cma, Collective::AllGather, 8, 4),
            Algorithm::Direct
        );
        let forced = Config {
            algo: AlgoOverride::parse("allreduce:ring").unwrap(),
            ..Config::default()
        };
        assert_eq!(
            choose(&forced, none, Collective::AllReduce, 8, 4),
            Algorithm::Ring
        );
        assert_eq!(
            choose(&forced, none, Collective::AllToAll, 8, 4),
            Algorithm::Pairwise
        );
    }
}
