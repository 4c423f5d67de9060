//! The call vocabulary: which collectives there are, which algorithms there are,
//! and the one table saying which algorithms serve which collective. Their names
//! are the ones `MIXCCL_ALGO`, logs, `mixccl-perf` and `mixccl-sim` use.
//!
//! Owns names and the table only; what an algorithm does lives in `algo`, which one
//! a call runs in `plan`, and how `MIXCCL_ALGO` is read in `config`.

/// A collective operation, as named in `MIXCCL_ALGO` and in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Collective {
    /// `all_reduce`.
    AllReduce,
    /// `all_gather`.
    AllGather,
    /// `broadcast`.
    Broadcast,
    /// `reduce`.
    Reduce,
    /// `reduce_scatter`.
    ReduceScatter,
    /// `all_to_all`.
    AllToAll,
    /// `send` / `recv` / `send_recv`.
    SendRecv,
    /// `barrier`.
    Barrier,
}

impl Collective {
    /// Every collective.
    pub const ALL: [Collective; 8] = [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::ReduceScatter,
        Collective::AllToAll,
        Collective::SendRecv,
        Collective::Barrier,
    ];

    /// Lower-case name without separators (`allreduce`, `reducescatter`, ...), as nccl-tests spells them.
    pub const fn name(self) -> &'static str {
        match self {
            Collective::AllReduce => "allreduce",
            Collective::AllGather => "allgather",
            Collective::Broadcast => "broadcast",
            Collective::Reduce => "reduce",
            Collective::ReduceScatter => "reducescatter",
            Collective::AllToAll => "alltoall",
            Collective::SendRecv => "sendrecv",
            Collective::Barrier => "barrier",
        }
    }

    /// Parses a name, ignoring case, `_` and `-` (`all_reduce`, `AllReduce`, `all-reduce`).
    pub fn parse(s: &str) -> Option<Collective> {
        let key: String = s
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        Collective::ALL.into_iter().find(|c| c.name() == key)
    }

    /// The algorithms that implement this collective, in the order of [`SERVES`].
    pub const fn algorithms(self) -> &'static [Algorithm] {
        let mut i = 0;
        while i < SERVES.len() {
            if SERVES[i].0 as u8 == self as u8 {
                return SERVES[i].1;
            }
            i += 1;
        }
        &[]
    }
}

impl std::fmt::Display for Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm a collective can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Algorithm {
    /// Ring: reduce-scatter then all-gather, chunked and pipelined; bandwidth-optimal.
    Ring,
    /// Direct: every rank exchanges with every peer in one step; latency-optimal for small messages.
    Direct,
    /// Chain: a pipelined path from (or to) the root; used by broadcast and reduce.
    Chain,
    /// Pairwise exchange: step k sends to rank+k and receives from rank-k; used by all-to-all.
    Pairwise,
    /// Every rank reads its peers' buffers directly (cross-memory attach): all ranks on
    /// one host, shared-memory links; used by all-gather.
    HostRead,
    /// Every rank writes its block once into its host's shared board and copies every
    /// peer's out of it: all ranks on one host over shared memory; used by all-gather,
    /// and by all-reduce after the ring's reduce-scatter.
    Publish,
    /// Trees: NCCL's double binary tree for all-reduce, a pipelined binary tree for
    /// broadcast and reduce; latency O(log n).
    Tree,
    /// Hierarchical: inside each host, across hosts on one ring per local rank index,
    /// inside each host again; used by all-reduce, all-gather and reduce-scatter.
    Hier,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 8] = [
        Algorithm::Ring,
        Algorithm::Direct,
        Algorithm::Chain,
        Algorithm::Pairwise,
        Algorithm::HostRead,
        Algorithm::Publish,
        Algorithm::Tree,
        Algorithm::Hier,
    ];

    /// Lower-case name as used in `MIXCCL_ALGO`.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Ring => "ring",
            Algorithm::Direct => "direct",
            Algorithm::Chain => "chain",
            Algorithm::Pairwise => "pairwise",
            Algorithm::HostRead => "cma",
            Algorithm::Publish => "publish",
            Algorithm::Tree => "tree",
            Algorithm::Hier => "hier",
        }
    }

    /// Parses a name as printed by [`Algorithm::name`].
    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Every name [`Algorithm::parse`] accepts, comma-separated (for error messages).
    pub fn names() -> String {
        Algorithm::ALL.map(Algorithm::name).join(", ")
    }

    /// Does this algorithm implement `coll`? (A look-up in [`SERVES`], the table
    /// `algo::build` dispatches on.)
    pub const fn implements(self, coll: Collective) -> bool {
        let algos = coll.algorithms();
        let mut i = 0;
        while i < algos.len() {
            if algos[i] as u8 == self as u8 {
                return true;
            }
            i += 1;
        }
        false
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which algorithms serve which collective: the one collective x algorithm table.
/// `MIXCCL_ALGO` accepts these pairs, the planner chooses among them and
/// `algo::build` has a schedule for each (send/recv runs outside `algo::build`).
pub const SERVES: [(Collective, &[Algorithm]); 8] = {
    use Algorithm::*;
    use Collective::*;
    [
        (AllReduce, &[Ring, Direct, Tree, Publish, Hier]),
        (AllGather, &[Ring, Direct, HostRead, Publish, Hier]),
        (ReduceScatter, &[Ring, Hier]),
        (Broadcast, &[Chain, Tree]),
        (Reduce, &[Chain, Tree]),
        (AllToAll, &[Pairwise]),
        (SendRecv, &[Direct]),
        (Barrier, &[Direct]),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_every_collective_once_and_every_algorithm() {
        for coll in Collective::ALL {
            let rows = SERVES.iter().filter(|(c, _)| *c == coll).count();
            assert_eq!(rows, 1, "{coll} has {rows} rows");
            assert!(!coll.algorithms().is_empty(), "{coll} has no algorithm");
        }
        for algo in Algorithm::ALL {
            assert!(
                Collective::ALL.iter().any(|c| algo.implements(*c)),
                "{algo} serves no collective"
            );
        }
        // The table as `implements` wrote it before the table existed, pair by pair.
        let before = |coll, algo| {
            use Algorithm::*;
            use Collective::*;
            matches!(
                (coll, algo),
                (AllReduce, Ring | Direct | Tree | Publish | Hier)
                    | (AllGather, Ring | Direct | HostRead | Publish | Hier)
                    | (ReduceScatter, Ring | Hier)
                    | (Broadcast | Reduce, Chain | Tree)
                    | (AllToAll, Pairwise)
                    | (SendRecv | Barrier, Direct)
            )
        };
        for coll in Collective::ALL {
            for algo in Algorithm::ALL {
                assert_eq!(algo.implements(coll), before(coll, algo), "{algo} {coll}");
            }
        }
    }

    #[test]
    fn names_parse_back() {
        for c in Collective::ALL {
            assert_eq!(Collective::parse(c.name()), Some(c));
        }
        assert_eq!(Collective::parse("All_Reduce"), Some(Collective::AllReduce));
        assert_eq!(
            Collective::parse("reduce-scatter"),
            Some(Collective::ReduceScatter)
        );
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(&a.name().to_uppercase()), Some(a));
        }
        assert_eq!(Algorithm::parse("host_read"), None);
        assert_eq!(
            Algorithm::names(),
            "ring, direct, chain, pairwise, cma, publish, tree, hier"
        );
    }
}
