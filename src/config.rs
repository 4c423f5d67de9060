//! Every tunable of mixccl in one place, each with its `MIXCCL_*` environment
//! variable and default, like NCCL's `param.h`. [`Config::describe`] lists them
//! all; `Communicator::init` prints that list once under `MIXCCL_DEBUG=INFO`.

use crate::debug::DebugLevel;
use crate::error::{Error, Result};
use std::time::Duration;

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
}

impl Algorithm {
    /// Does this algorithm implement `coll`? (The table `algo::build` dispatches on.)
    pub const fn implements(self, coll: Collective) -> bool {
        use Algorithm::*;
        use Collective::*;
        matches!(
            (coll, self),
            (AllReduce, Ring | Direct | Tree | Publish | Hier)
                | (AllGather, Ring | Direct | HostRead | Publish | Hier)
                | (ReduceScatter, Ring | Hier)
                | (Broadcast | Reduce, Chain | Tree)
                | (AllToAll, Pairwise)
                | (SendRecv | Barrier, Direct)
        )
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A forced algorithm choice per collective, parsed from `MIXCCL_ALGO`:
/// `allreduce:direct;allgather:ring`, or a bare `ring`, which applies to every
/// collective that ring implements and leaves the others to the planner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlgoOverride {
    /// `(None, algo)` applies to every collective; `(Some(c), algo)` to `c` only. Later entries win.
    pub rules: Vec<(Option<Collective>, Algorithm)>,
}

impl AlgoOverride {
    /// Parses the `MIXCCL_ALGO` syntax.
    pub fn parse(s: &str) -> Result<AlgoOverride> {
        let mut rules = Vec::new();
        for part in s.split([';', ',']).map(str::trim).filter(|p| !p.is_empty()) {
            let (coll, algo) = match part.split_once(':') {
                Some((c, a)) => {
                    let c = Collective::parse(c.trim()).ok_or_else(|| {
                        Error::invalid(format!("MIXCCL_ALGO: unknown collective {c:?} in {s:?}"))
                    })?;
                    (Some(c), a)
                }
                None => (None, part),
            };
            let algo = Algorithm::parse(algo).ok_or_else(|| {
                Error::invalid(format!(
                    "MIXCCL_ALGO: unknown algorithm {algo:?} in {s:?} (ring, direct, chain, pairwise, cma, tree, hier)"
                ))
            })?;
            if let Some(c) = coll {
                if !algo.implements(c) {
                    return Err(Error::invalid(format!(
                        "MIXCCL_ALGO: {algo} does not implement {c} (in {s:?})"
                    )));
                }
            }
            rules.push((coll, algo));
        }
        Ok(AlgoOverride { rules })
    }

    /// The forced algorithm for `coll`, if any.
    pub fn get(&self, coll: Collective) -> Option<Algorithm> {
        self.rules
            .iter()
            .rev()
            .find(|(c, a)| *c == Some(coll) || (c.is_none() && a.implements(coll)))
            .map(|(_, a)| *a)
    }
}

/// Which transport carries traffic between hosts (`MIXCCL_NET`, like `NCCL_NET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetTransport {
    /// RDMA where both ends have an active port on the same fabric, else TCP.
    #[default]
    Auto,
    /// RDMA to every peer on another host; init fails where it cannot (`IB`).
    Ib,
    /// TCP only; libibverbs is not even loaded (`Socket`).
    Socket,
}

impl NetTransport {
    /// The `MIXCCL_NET` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            NetTransport::Auto => "auto",
            NetTransport::Ib => "IB",
            NetTransport::Socket => "Socket",
        }
    }
}

/// Every tunable of a communicator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bound on every blocking wait without progress (`MIXCCL_TIMEOUT`, seconds; default 300).
    pub timeout: Duration,
    /// Pipelining unit of the algorithms in bytes (`MIXCCL_CHUNK_SIZE`; default 512 KiB).
    pub chunk_bytes: usize,
    /// TCP sockets per peer; a large message is spread across them (`MIXCCL_NSOCKS`; default 2).
    pub nsocks: usize,
    /// Network interface for sockets, NCCL_SOCKET_IFNAME syntax: a prefix list, `^` to exclude,
    /// `=` for exact names (`MIXCCL_SOCKET_IFNAME`; default: the route to the root, else the
    /// first non-loopback interface).
    pub socket_ifname: Option<String>,
    /// SO_SNDBUF/SO_RCVBUF in bytes (`MIXCCL_SOCKET_BUFFER`; default 0: automatic,
    /// 512 KiB to peers on this host, the kernel's autotuning to other hosts).
    pub socket_buffer: usize,
    /// The planner weighs the direct (latency) algorithms for all_reduce messages up to
    /// this many bytes per rank and all_gather results up to this many bytes in total
    /// (`MIXCCL_DIRECT_MAX_BYTES`; default 16 KiB).
    pub direct_max_bytes: usize,
    /// all_reduce, broadcast and reduce larger than this run as a sequence of calls
    /// of at most this many bytes, on every rank alike, so a rank whose buffers are in
    /// device memory can copy piece k+1 to the host while piece k is on the wire
    /// (`MIXCCL_PIPELINE_BYTES`; default 8 MiB; 0 = never split). A piece is never
    /// smaller than two chunks per rank ([`Config::piece_elems`]).
    pub pipeline_bytes: usize,
    /// Send a header (sequence number, collective, type, op, count, root, algorithm,
    /// bytes) ahead of each call's data to every peer, so mismatched calls become
    /// `Error::Mismatch` instead of a hang or wrong data (`MIXCCL_CHECK_CALLS`;
    /// default 1).
    pub check_calls: bool,
    /// Use TCP even between ranks on the same host (`MIXCCL_SHM_DISABLE=1`; default 0).
    pub shm_disable: bool,
    /// Bytes of each shared-memory ring, per direction and peer (`MIXCCL_SHM_BUFFER`;
    /// default 1 MiB; rounded up to 64).
    pub shm_buffer: usize,
    /// Bytes of each rank's ring in the host's board (`transport::board`), through
    /// which an all-gather on one host copies each block once per reader
    /// (`MIXCCL_BOARD_BYTES`; default 8 MiB, rounded up to 64; 0 = no board). Made by
    /// rank 0 when every rank is on its host: n rings, mapped and prefaulted.
    pub board_bytes: usize,
    /// Reduce received data straight out of the shared-memory ring instead of copying
    /// it to a staging buffer first (`MIXCCL_SHM_ZEROCOPY`; default 1).
    pub shm_zero_copy: bool,
    /// Let ranks on one host read each other's buffers directly (process_vm_readv) when
    /// every rank is on one host and the kernel allows it; all-gather then copies each
    /// byte once (`MIXCCL_SHM_CMA`; default 0: on the 2-core test machine the ring over
    /// shared memory measured faster, see docs/algorithms.md).
    pub shm_cma: bool,
    /// How long a waiting rank polls (yielding the core) before it sleeps
    /// (`MIXCCL_SPIN_US`, microseconds; default 100).
    pub spin: Duration,
    /// Forced algorithms (`MIXCCL_ALGO`, e.g. `allreduce:ring;allgather:direct`).
    pub algo: AlgoOverride,
    /// Load the topology model from this JSON file instead of probing
    /// (`MIXCCL_TOPO_FILE`, like NCCL_TOPO_FILE; default: probe).
    pub topo_file: Option<std::path::PathBuf>,
    /// Rank 0 writes the model as JSON here after init (`MIXCCL_TOPO_DUMP_FILE`).
    pub topo_dump_file: Option<std::path::PathBuf>,
    /// Refine the probed link costs with a short measurement at init
    /// (`MIXCCL_TOPO_PROBE`; default 1; 0 keeps the probe's figures).
    pub topo_probe: bool,
    /// Log level (`MIXCCL_DEBUG` = WARN, INFO or TRACE; default WARN).
    pub debug: DebugLevel,
    /// Transport between hosts (`MIXCCL_NET` = IB or Socket; default: RDMA where possible).
    pub net: NetTransport,
    /// RDMA devices and ports, NCCL_IB_HCA syntax: `mlx5_0:1,mlx5_1`, `^` to exclude,
    /// `=` for exact names (`MIXCCL_IB_HCA`; default: the first active port).
    pub ib_hca: Option<String>,
    /// GID index for RoCE addressing (`MIXCCL_IB_GID_INDEX`; default 0).
    pub ib_gid_index: u8,
    /// RDMA queue pairs (lanes) per peer (`MIXCCL_IB_QPS`, 1..=64; default 2).
    pub ib_qps: usize,
    /// Registered staging per RDMA lane and direction, in 8 slots
    /// (`MIXCCL_IB_BUFFER`; default 1 MiB; 32K to 1G).
    pub ib_buffer: usize,
    /// libibverbs to load (`MIXCCL_IBVERBS_LIB`; default `libibverbs.so.1`).
    pub ibverbs_lib: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timeout: Duration::from_secs(300),
            chunk_bytes: 512 << 10,
            nsocks: 2,
            socket_ifname: None,
            socket_buffer: 0,
            direct_max_bytes: 16 << 10,
            pipeline_bytes: 8 << 20,
            check_calls: true,
            spin: Duration::from_micros(100),
            shm_disable: false,
            shm_buffer: 1 << 20,
            board_bytes: 8 << 20,
            shm_zero_copy: true,
            shm_cma: false,
            algo: AlgoOverride::default(),
            topo_file: None,
            topo_dump_file: None,
            topo_probe: true,
            debug: DebugLevel::Warn,
            net: NetTransport::Auto,
            ib_hca: None,
            ib_gid_index: 0,
            ib_qps: 2,
            ib_buffer: 1 << 20,
            ibverbs_lib: None,
        }
    }
}

/// Parses a byte count with an optional K/M/G suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1usize << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mul)
}

impl Config {
    /// The defaults, overridden by any `MIXCCL_*` variables in the process environment.
    pub fn from_env() -> Result<Config> {
        Config::default().with_env(|k| std::env::var(k).ok())
    }

    /// Applies the `MIXCCL_*` variables that `get` returns (testable without touching the process env).
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        fn bad(var: &str, v: &str, want: &str) -> Error {
            Error::invalid(format!("{var}={v:?}: expected {want}"))
        }
        if let Some(v) = get("MIXCCL_TIMEOUT") {
            let secs: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .ok_or_else(|| bad("MIXCCL_TIMEOUT", &v, "a positive number of seconds"))?;
            self.timeout = Duration::from_secs_f64(secs);
        }
        if let Some(v) = get("MIXCCL_CHUNK_SIZE") {
            self.chunk_bytes = parse_bytes(&v)
                .filter(|b| *b >= 64)
                .ok_or_else(|| bad("MIXCCL_CHUNK_SIZE", &v, "a size of at least 64 bytes"))?;
        }
        if let Some(v) = get("MIXCCL_NSOCKS") {
            self.nsocks = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| bad("MIXCCL_NSOCKS", &v, "an integer in 1..=64"))?;
        }
        if let Some(v) = get("MIXCCL_SOCKET_IFNAME") {
            self.socket_ifname = Some(v).filter(|s| !s.trim().is_empty());
        }
        if let Some(v) = get("MIXCCL_SOCKET_BUFFER") {
            self.socket_buffer =
                parse_bytes(&v).ok_or_else(|| bad("MIXCCL_SOCKET_BUFFER", &v, "a size"))?;
        }
        if let Some(v) = get("MIXCCL_DIRECT_MAX_BYTES") {
            self.direct_max_bytes =
                parse_bytes(&v).ok_or_else(|| bad("MIXCCL_DIRECT_MAX_BYTES", &v, "a size"))?;
        }
        if let Some(v) = get("MIXCCL_CHECK_CALLS") {
            self.check_calls = match v.trim() {
                "1" | "true" | "yes" | "" => true,
                "0" | "false" | "no" => false,
                _ => return Err(bad("MIXCCL_CHECK_CALLS", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("MIXCCL_PIPELINE_BYTES") {
            self.pipeline_bytes =
                parse_bytes(&v).ok_or_else(|| bad("MIXCCL_PIPELINE_BYTES", &v, "a size"))?;
        }
        if let Some(v) = get("MIXCCL_SHM_DISABLE") {
            self.shm_disable = match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => return Err(bad("MIXCCL_SHM_DISABLE", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("MIXCCL_SHM_ZEROCOPY") {
            self.shm_zero_copy = match v.trim() {
                "1" | "true" | "yes" | "" => true,
                "0" | "false" | "no" => false,
                _ => return Err(bad("MIXCCL_SHM_ZEROCOPY", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("MIXCCL_SHM_CMA") {
            self.shm_cma = match v.trim() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" | "" => false,
                _ => return Err(bad("MIXCCL_SHM_CMA", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("MIXCCL_SHM_BUFFER") {
            self.shm_buffer = parse_bytes(&v)
                .filter(|b| (4096..=1 << 30).contains(b))
                .map(|b| b.div_ceil(64) * 64)
                .ok_or_else(|| bad("MIXCCL_SHM_BUFFER", &v, "a size from 4K to 1G"))?;
        }
        if let Some(v) = get("MIXCCL_BOARD_BYTES") {
            self.board_bytes = parse_bytes(&v)
                .filter(|&b| b == 0 || (64 << 10..=1 << 30).contains(&b))
                .map(|b| b.div_ceil(64) * 64)
                .ok_or_else(|| bad("MIXCCL_BOARD_BYTES", &v, "0, or a size from 64K to 1G"))?;
        }
        if let Some(v) = get("MIXCCL_SPIN_US") {
            let us: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad("MIXCCL_SPIN_US", &v, "microseconds"))?;
            self.spin = Duration::from_micros(us);
        }
        if let Some(v) = get("MIXCCL_ALGO") {
            self.algo = AlgoOverride::parse(&v)?;
        }
        let path = |v: String| {
            Some(std::path::PathBuf::from(v.trim())).filter(|p| !p.as_os_str().is_empty())
        };
        if let Some(v) = get("MIXCCL_TOPO_FILE") {
            self.topo_file = path(v);
        }
        if let Some(v) = get("MIXCCL_TOPO_DUMP_FILE") {
            self.topo_dump_file = path(v);
        }
        if let Some(v) = get("MIXCCL_TOPO_PROBE") {
            self.topo_probe = match v.trim() {
                "1" | "true" | "yes" | "" => true,
                "0" | "false" | "no" => false,
                _ => return Err(bad("MIXCCL_TOPO_PROBE", &v, "0 or 1")),
            };
        }
        if let Some(v) = get("MIXCCL_DEBUG") {
            self.debug = DebugLevel::parse(&v)
                .ok_or_else(|| bad("MIXCCL_DEBUG", &v, "WARN, INFO or TRACE"))?;
        }
        if let Some(v) = get("MIXCCL_NET") {
            self.net = match v.trim().to_ascii_uppercase().as_str() {
                "" | "AUTO" => NetTransport::Auto,
                "IB" => NetTransport::Ib,
                "SOCKET" => NetTransport::Socket,
                _ => return Err(bad("MIXCCL_NET", &v, "IB or Socket")),
            };
        }
        if let Some(v) = get("MIXCCL_IB_HCA") {
            self.ib_hca = Some(v).filter(|s| !s.trim().is_empty());
        }
        if let Some(v) = get("MIXCCL_IB_GID_INDEX") {
            self.ib_gid_index = v
                .trim()
                .parse()
                .map_err(|_| bad("MIXCCL_IB_GID_INDEX", &v, "an integer in 0..=255"))?;
        }
        if let Some(v) = get("MIXCCL_IB_QPS") {
            self.ib_qps = v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| bad("MIXCCL_IB_QPS", &v, "an integer in 1..=64"))?;
        }
        if let Some(v) = get("MIXCCL_IB_BUFFER") {
            self.ib_buffer = parse_bytes(&v)
                .filter(|b| (32 << 10..=1 << 30).contains(b))
                .ok_or_else(|| bad("MIXCCL_IB_BUFFER", &v, "a size from 32K to 1G"))?;
        }
        if let Some(v) = get("MIXCCL_IBVERBS_LIB") {
            self.ibverbs_lib = Some(v).filter(|s| !s.trim().is_empty());
        }
        Ok(self)
    }

    /// Checks the values a caller may have set by hand.
    pub fn validate(&self) -> Result<()> {
        if self.timeout.is_zero() {
            return Err(Error::invalid("config.timeout must be positive"));
        }
        if self.chunk_bytes < 64 {
            return Err(Error::invalid(format!(
                "config.chunk_bytes = {} is below the minimum of 64",
                self.chunk_bytes
            )));
        }
        if !(1..=64).contains(&self.nsocks) {
            return Err(Error::invalid(format!(
                "config.nsocks = {} is outside 1..=64",
                self.nsocks
            )));
        }
        if !(1..=64).contains(&self.ib_qps) || !(32 << 10..=1 << 30).contains(&self.ib_buffer) {
            return Err(Error::invalid(format!(
                "config.ib_qps = {} (1..=64) or config.ib_buffer = {} (32K..=1G) is out of range",
                self.ib_qps, self.ib_buffer
            )));
        }
        Ok(())
    }

    /// Elements per piece when a call of `count` elements of `dtype` on `nranks` ranks
    /// is split (see `pipeline_bytes`): only element-wise collectives, only above the
    /// piece size. A piece holds at least two chunks per rank, so each piece's ring
    /// still streams: without that floor a 256 MiB ring on 16,384 ranks ran 32 pieces
    /// of 2 x 16,383 steps each, 3.34 s against 0.161 s unsplit (mixccl-sim). Up to 8
    /// ranks with the default chunk the floor is below 8 MiB and changes nothing.
    pub(crate) fn piece_elems(
        &self,
        coll: crate::Collective,
        dtype: crate::DataType,
        count: usize,
        nranks: usize,
    ) -> Option<usize> {
        let elementwise = matches!(
            coll,
            crate::Collective::AllReduce | crate::Collective::Broadcast | crate::Collective::Reduce
        );
        if !elementwise || self.pipeline_bytes == 0 {
            return None;
        }
        let bytes = self
            .pipeline_bytes
            .max(nranks.saturating_mul(self.chunk_bytes).saturating_mul(2));
        let piece = (bytes / dtype.size()).max(1);
        (count > piece).then_some(piece)
    }

    /// The settings every rank must share, one `NAME=value` line each: they shape the
    /// schedules and the wire, so ranks that differ would desynchronise.
    pub(crate) fn must_agree(&self) -> String {
        let algo = self
            .algo
            .rules
            .iter()
            .map(|(c, a)| c.map_or_else(|| a.to_string(), |c| format!("{c}:{a}")))
            .collect::<Vec<_>>()
            .join(";");
        format!(
            "MIXCCL_NSOCKS={}\nMIXCCL_SHM_DISABLE={}\nMIXCCL_BOARD={}\nMIXCCL_SHM_CMA={}\nMIXCCL_CHUNK_SIZE={}\nMIXCCL_DIRECT_MAX_BYTES={}\nMIXCCL_PIPELINE_BYTES={}\nMIXCCL_CHECK_CALLS={}\nMIXCCL_ALGO={}\nMIXCCL_NET={}\nMIXCCL_TOPO_PROBE={}\nMIXCCL_TOPO_FILE={}",
            self.nsocks,
            u8::from(self.shm_disable),
            u8::from(self.board_bytes > 0),
            u8::from(self.shm_cma),
            self.chunk_bytes,
            self.direct_max_bytes,
            self.pipeline_bytes,
            u8::from(self.check_calls),
            if algo.is_empty() { "auto" } else { &algo },
            // Auto and IB both negotiate per peer over TCP; Socket does not.
            if self.net == NetTransport::Socket { "Socket" } else { "IB-or-auto" },
            u8::from(self.topo_probe),
            if self.topo_file.is_some() { "set" } else { "unset" }
        )
    }

    /// One line per tunable: env name, value, meaning.
    pub fn describe(&self) -> Vec<String> {
        let algo = if self.algo.rules.is_empty() {
            "auto".to_string()
        } else {
            self.algo
                .rules
                .iter()
                .map(|(c, a)| match c {
                    Some(c) => format!("{c}:{a}"),
                    None => a.to_string(),
                })
                .collect::<Vec<_>>()
                .join(";")
        };
        vec![
            format!(
                "MIXCCL_TIMEOUT={} (seconds, bound on every wait)",
                self.timeout.as_secs_f64()
            ),
            format!(
                "MIXCCL_CHUNK_SIZE={} (bytes, pipelining unit)",
                self.chunk_bytes
            ),
            format!("MIXCCL_NSOCKS={} (TCP sockets per peer)", self.nsocks),
            format!(
                "MIXCCL_SOCKET_IFNAME={} (interface for sockets)",
                self.socket_ifname.as_deref().unwrap_or("auto")
            ),
            format!(
                "MIXCCL_SOCKET_BUFFER={} (bytes, 0 = 512K on this host, kernel autotuning to others)",
                self.socket_buffer
            ),
            format!(
                "MIXCCL_DIRECT_MAX_BYTES={} (direct algorithms considered up to this size)",
                self.direct_max_bytes
            ),
            format!(
                "MIXCCL_PIPELINE_BYTES={} (largest piece of a split all_reduce/broadcast/reduce)",
                self.pipeline_bytes
            ),
            format!(
                "MIXCCL_CHECK_CALLS={} (per-call headers: mismatched calls are errors)",
                u8::from(self.check_calls)
            ),
            format!(
                "MIXCCL_SPIN_US={} (poll before sleeping)",
                self.spin.as_micros()
            ),
            format!("MIXCCL_ALGO={algo} (forced algorithms)"),
            format!(
                "MIXCCL_SHM_DISABLE={} (TCP between ranks of one host)",
                u8::from(self.shm_disable)
            ),
            format!(
                "MIXCCL_SHM_BUFFER={} (bytes of each shared-memory ring, per peer and direction)",
                self.shm_buffer
            ),
            format!(
                "MIXCCL_BOARD_BYTES={} (bytes of each rank's ring in the host's board, 0 = none)",
                self.board_bytes
            ),
            format!(
                "MIXCCL_SHM_CMA={} (cross-memory reads between ranks of one host)",
                u8::from(self.shm_cma)
            ),
            format!(
                "MIXCCL_TOPO_FILE={} (topology model to load instead of probing)",
                self.topo_file
                    .as_ref()
                    .map_or("unset".into(), |p| p.display().to_string())
            ),
            format!(
                "MIXCCL_TOPO_DUMP_FILE={} (where rank 0 writes the model)",
                self.topo_dump_file
                    .as_ref()
                    .map_or("unset".into(), |p| p.display().to_string())
            ),
            format!(
                "MIXCCL_TOPO_PROBE={} (measure link costs at init)",
                u8::from(self.topo_probe)
            ),
            format!("MIXCCL_DEBUG={} (log level)", self.debug.name()),
            format!("MIXCCL_NET={} (transport between hosts)", self.net.name()),
            format!(
                "MIXCCL_IB_HCA={} (RDMA devices and ports)",
                self.ib_hca.as_deref().unwrap_or("auto")
            ),
            format!("MIXCCL_IB_GID_INDEX={} (RoCE GID index)", self.ib_gid_index),
            format!("MIXCCL_IB_QPS={} (RDMA queue pairs per peer)", self.ib_qps),
            format!(
                "MIXCCL_IB_BUFFER={} (bytes of RDMA staging per lane and direction)",
                self.ib_buffer
            ),
            format!(
                "MIXCCL_IBVERBS_LIB={} (libibverbs to load)",
                self.ibverbs_lib.as_deref().unwrap_or("libibverbs.so.1")
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_overrides_defaults() {
        let c = Config::default()
            .with_env(env(&[
                ("MIXCCL_TIMEOUT", "2.5"),
                ("MIXCCL_CHUNK_SIZE", "1M"),
                ("MIXCCL_NSOCKS", "4"),
                ("MIXCCL_ALGO", "allreduce:direct; ring"),
                ("MIXCCL_DEBUG", "info"),
            ]))
            .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.chunk_bytes, 1 << 20);
        assert_eq!(c.nsocks, 4);
        assert_eq!(c.algo.get(Collective::AllReduce), Some(Algorithm::Ring));
        assert_eq!(c.debug, DebugLevel::Info);
        let c = Config::default()
            .with_env(env(&[("MIXCCL_ALGO", "ring;all_reduce:direct")]))
            .unwrap();
        assert_eq!(c.algo.get(Collective::AllReduce), Some(Algorithm::Direct));
        assert_eq!(c.algo.get(Collective::AllGather), Some(Algorithm::Ring));
        // A bare algorithm leaves collectives it does not implement to the planner.
        assert_eq!(c.algo.get(Collective::Broadcast), None);
        assert_eq!(c.algo.get(Collective::Barrier), None);
    }

    #[test]
    fn forced_algorithms_must_implement_their_collective() {
        let e = AlgoOverride::parse("broadcast:ring").unwrap_err();
        assert!(
            e.to_string().contains("ring does not implement broadcast"),
            "{e}"
        );
        for coll in Collective::ALL {
            assert!(
                [
                    Algorithm::Ring,
                    Algorithm::Direct,
                    Algorithm::Chain,
                    Algorithm::Pairwise
                ]
                .iter()
                .any(|a| a.implements(coll)),
                "{coll} has no algorithm"
            );
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("MIXCCL_TIMEOUT", "-1"),
            ("MIXCCL_NSOCKS", "0"),
            ("MIXCCL_CHUNK_SIZE", "abc"),
            ("MIXCCL_ALGO", "allreduce:fastest"),
            ("MIXCCL_DEBUG", "LOUD"),
            ("MIXCCL_NET", "carrier-pigeon"),
            ("MIXCCL_IB_QPS", "0"),
            ("MIXCCL_IB_GID_INDEX", "256"),
            ("MIXCCL_IB_BUFFER", "1K"),
        ] {
            let e = Config::default().with_env(env(&[(k, v)])).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
    }

    #[test]
    fn rdma_settings_parse() {
        let c = Config::default()
            .with_env(env(&[
                ("MIXCCL_NET", "ib"),
                ("MIXCCL_IB_HCA", "^mlx5_2"),
                ("MIXCCL_IB_GID_INDEX", "3"),
                ("MIXCCL_IB_QPS", "4"),
                ("MIXCCL_IB_BUFFER", "256K"),
                ("MIXCCL_IBVERBS_LIB", "/opt/lib/libibverbs.so.1"),
            ]))
            .unwrap();
        assert_eq!(c.net, NetTransport::Ib);
        assert_eq!(c.ib_hca.as_deref(), Some("^mlx5_2"));
        assert_eq!((c.ib_gid_index, c.ib_qps, c.ib_buffer), (3, 4, 256 << 10));
        assert_eq!(c.ibverbs_lib.as_deref(), Some("/opt/lib/libibverbs.so.1"));
        let s = Config::default()
            .with_env(env(&[("MIXCCL_NET", "Socket")]))
            .unwrap();
        assert_eq!(s.net, NetTransport::Socket);
        assert!(s.must_agree().contains("MIXCCL_NET=Socket"));
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_bytes("8"), Some(8));
        assert_eq!(parse_bytes("4K"), Some(4096));
        assert_eq!(parse_bytes("256M"), Some(256 << 20));
        assert_eq!(parse_bytes("1g"), Some(1 << 30));
        assert_eq!(parse_bytes("x"), None);
    }

    #[test]
    fn pieces_hold_at_least_two_chunks_per_rank() {
        use crate::{Collective, DataType};
        let c = Config::default();
        let f = DataType::F32;
        // Up to 8 ranks with the default chunk: MIXCCL_PIPELINE_BYTES decides.
        assert_eq!(c.pipeline_bytes, 8 << 20);
        assert_eq!(
            c.piece_elems(Collective::AllReduce, f, 1 << 24, 4),
            Some(2 << 20)
        );
        assert_eq!(
            c.piece_elems(Collective::AllReduce, f, 1 << 24, 8),
            Some(2 << 20)
        );
        assert_eq!(c.piece_elems(Collective::AllReduce, f, 2 << 20, 8), None);
        // 16 ranks: 16 MiB pieces; 16,384 ranks: a 256 MiB call is not split.
        assert_eq!(
            c.piece_elems(Collective::Reduce, f, 1 << 24, 16),
            Some(4 << 20)
        );
        assert_eq!(
            c.piece_elems(Collective::AllReduce, f, 64 << 20, 16384),
            None
        );
        // Only element-wise collectives, and 0 turns splitting off.
        assert_eq!(c.piece_elems(Collective::AllGather, f, 1 << 24, 4), None);
        let off = Config {
            pipeline_bytes: 0,
            ..Config::default()
        };
        assert_eq!(off.piece_elems(Collective::AllReduce, f, 1 << 24, 4), None);
    }
}
