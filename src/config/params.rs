//! The parameter table: every `MIXCCL_*` variable mixccl knows, declared once.
//!
//! A `Config` parameter is one entry of [`config_params!`]: field, type, default,
//! variable, kind (how its text is read and which values are allowed), whether
//! every rank must agree on it, and a line of help. The struct, `Default`, the
//! environment parsing, `validate`, `describe` and the must-agree list are all
//! generated from it. Variables read outside `Config` (launchers, device runtimes,
//! the Python package, test harnesses) are listed in [`ELSEWHERE`], so the two
//! together are the complete list that README is checked against and that
//! unknown variables are matched with.

use super::kind::{
    Algos, Flag, Int, Kind, Level, Micros, Net, Path, Seconds, Size, SizeOrAuto, Text, Tls,
};
use super::{AlgoOverride, NetTransport, TlsPolicy};
use crate::debug::DebugLevel;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where a variable is documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Doc {
    /// A row of README's Configuration table, with the same default.
    Table,
    /// Named in README outside that table (launchers, device libraries, PyTorch).
    Readme,
    /// A test harness's knob, documented where the test is.
    Tests,
}

/// One declared variable, as listed by [`params`]. The library itself reads only
/// the names; the README check reads the rest.
#[derive(Debug, Clone)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Param {
    /// The variable, `MIXCCL_...`.
    pub name: &'static str,
    /// The `Config` field it sets, or where it is read when it is not one.
    pub field: &'static str,
    /// Whether it is a `Config` field.
    pub in_config: bool,
    /// The field's Rust type (`Config` parameters only).
    pub ty: &'static str,
    /// The default, as README writes it.
    pub default: String,
    /// The values allowed, in words.
    pub allowed: String,
    /// Whether every rank must have the same value.
    pub must_agree: bool,
    /// Where it is documented.
    pub doc: Doc,
    /// One line of help.
    pub help: &'static str,
}

/// The must-agree projection of a parameter: `no`, `yes` (the shown value), or a
/// function of the value (only what changes the schedules or the wire).
macro_rules! agree {
    (no, $kind:expr, $v:expr) => {
        None::<String>
    };
    (yes, $kind:expr, $v:expr) => {
        Some(Kind::show(&$kind, $v))
    };
    (($f:expr), $kind:expr, $v:expr) => {
        Some(($f)($v))
    };
}

/// Generates `Config` and everything that walks its parameters from one table.
macro_rules! config_params {
    ($(
        $(#[$meta:meta])*
        $field:ident: $ty:ty = $default:expr,
            $name:literal, $kind:expr, agree $agree:tt,
            $help:literal;
    )*) => {
        /// Every tunable of a communicator. Each field is one `MIXCCL_*` variable
        /// of the parameter table (`src/config/params.rs`).
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                $(#[$meta])*
                #[doc = concat!("\n\n`", $name, "`; default `", stringify!($default), "`.")]
                pub $field: $ty,
            )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* }
            }
        }

        impl Config {
            /// Sets every field whose variable `get` returns.
            pub(super) fn apply_env(&mut self, get: &dyn Fn(&str) -> Option<String>) -> Result<()> {
                $(
                    if let Some(v) = get($name) {
                        let kind = $kind;
                        self.$field = if kind.empty_is_default() && v.trim().is_empty() {
                            $default
                        } else {
                            kind.parse($name, &v)?
                        };
                    }
                )*
                Ok(())
            }

            /// Fails on the first field outside its kind's range.
            pub(super) fn check_ranges(&self) -> Result<()> {
                $({
                    let kind = $kind;
                    if !kind.check(&self.$field) {
                        return Err(Error::invalid(format!(
                            "config.{} = {} is out of range: expected {} ({})",
                            stringify!($field),
                            kind.show(&self.$field),
                            kind.allowed(),
                            $name
                        )));
                    }
                })*
                Ok(())
            }

            /// `NAME=value` for every must-agree parameter, in table order.
            pub(super) fn agree_lines(&self) -> Vec<String> {
                let mut lines = Vec::new();
                $(
                    if let Some(v) = agree!($agree, $kind, &self.$field) {
                        lines.push(format!("{}={}", $name, v));
                    }
                )*
                lines
            }

            /// `NAME=value (help)` for every parameter, in table order.
            pub(super) fn describe_lines(&self) -> Vec<String> {
                vec![$( format!("{}={} ({})", $name, $kind.show(&self.$field), $help), )*]
            }
        }

        /// The `Config` parameters, in table order.
        fn config_params() -> Vec<Param> {
            let d = Config::default();
            vec![$({
                let kind = $kind;
                Param {
                    name: $name,
                    field: stringify!($field),
                    in_config: true,
                    ty: stringify!($ty),
                    default: kind.doc(&d.$field),
                    allowed: kind.allowed(),
                    must_agree: agree!($agree, kind, &d.$field).is_some(),
                    doc: Doc::Table,
                    help: $help,
                }
            },)*]
        }
    };
}

config_params! {
    /// Bound on every blocking wait without progress, in seconds.
    timeout: Duration = Duration::from_secs(300),
        "MIXCCL_TIMEOUT", Seconds, agree no,
        "seconds, bound on every wait";
    /// Pipelining unit of the algorithms, in bytes.
    chunk_bytes: usize = 512 << 10,
        "MIXCCL_CHUNK_SIZE", Size::range(64, usize::MAX), agree yes,
        "bytes, pipelining unit";
    /// TCP sockets per peer; a large message is spread across them.
    nsocks: usize = 2,
        "MIXCCL_NSOCKS", Int { min: 1, max: 64 }, agree yes,
        "TCP sockets per peer";
    /// Network interface for sockets, NCCL_SOCKET_IFNAME syntax: a prefix list, `^` to
    /// exclude, `=` for exact names (`None`: the route to the root, else the first
    /// non-loopback interface).
    socket_ifname: Option<String> = None,
        "MIXCCL_SOCKET_IFNAME", Text { none: "auto" }, agree no,
        "interface for sockets";
    /// SO_SNDBUF/SO_RCVBUF in bytes (0: automatic, a core's L2 (256 KiB-2 MiB) to peers
    /// on this host, the kernel's autotuning to other hosts).
    socket_buffer: usize = 0,
        "MIXCCL_SOCKET_BUFFER", Size::ANY, agree no,
        "bytes, 0 = a core's L2 (256K-2M) on this host, kernel autotuning to others";
    /// TLS 1.3 with mutual authentication on TCP links and the bootstrap's connections:
    /// `off`, `cross-pod` (links between pods of `MIXCCL_TOPO_FILE`'s model),
    /// `cross-host` or `all` (`transport::tcp::tls`).
    tls: TlsPolicy = TlsPolicy::Off,
        "MIXCCL_TLS", Tls, agree yes,
        "which TCP links carry TLS: off, cross-pod, cross-host, all";
    /// This rank's certificate chain (PEM), presented to every TLS peer.
    tls_cert: Option<PathBuf> = None,
        "MIXCCL_TLS_CERT", Path, agree no,
        "PEM certificate chain of this rank (TLS)";
    /// The private key of `MIXCCL_TLS_CERT` (PEM: PKCS#8, PKCS#1 or SEC1).
    tls_key: Option<PathBuf> = None,
        "MIXCCL_TLS_KEY", Path, agree no,
        "PEM private key of the certificate (TLS)";
    /// The certificate authority (PEM) that must have signed every peer's certificate.
    tls_ca: Option<PathBuf> = None,
        "MIXCCL_TLS_CA", Path, agree no,
        "PEM CA that signs every rank's certificate (TLS)";
    /// The planner weighs the direct (latency) algorithms for all_reduce messages up to
    /// this many bytes per rank and all_gather results up to this many bytes in total.
    direct_max_bytes: usize = 16 << 10,
        "MIXCCL_DIRECT_MAX_BYTES", Size::ANY, agree yes,
        "direct algorithms considered up to this size";
    /// Use TCP even between ranks on the same host.
    shm_disable: bool = false,
        "MIXCCL_SHM_DISABLE", Flag, agree yes,
        "TCP between ranks of one host";
    /// Let ranks of one host and one vendor run the phases inside their island with
    /// the vendor's own collective library (NCCL, RCCL, HCCL, CNCL, MCCL).
    islands: bool = true,
        "MIXCCL_ISLANDS", Flag, agree yes,
        "vendor collective libraries inside islands of one host and vendor";
    /// The fewest ranks an island may have. 1 lets a rank alone on its host use its
    /// vendor's library (no gain, but it runs the library: a check on a one-GPU
    /// machine, where NCCL refuses two ranks on one device).
    island_min_ranks: usize = 2,
        "MIXCCL_ISLAND_MIN_RANKS", Int { min: 1, max: 1 << 20 }, agree yes,
        "fewest ranks an island may have (1: a lone rank uses its vendor library too)";
    /// Bytes of each shared-memory ring, per direction and peer (rounded up to 64).
    shm_buffer: usize = 1 << 20,
        "MIXCCL_SHM_BUFFER", Size { min: 4 << 10, max: 1 << 30, zero: false, round: 64 }, agree no,
        "bytes of each shared-memory ring, per peer and direction";
    /// Reduce received data straight out of the shared-memory ring instead of copying
    /// it to a staging buffer first.
    shm_zero_copy: bool = true,
        "MIXCCL_SHM_ZEROCOPY", Flag, agree no,
        "reduce straight out of the peer's ring";
    /// Bytes of each rank's ring in the host's board (`transport::board`), through
    /// which an all-gather on one host copies each block once per reader (rounded up
    /// to 64; 0 = no board; `None`, the default: from the last-level cache,
    /// `cpu::Tuning::board_bytes`). Made by rank 0 when every rank is on its host: n
    /// rings.
    board_bytes: Option<usize> = None,
        "MIXCCL_BOARD_BYTES",
        SizeOrAuto(Size { min: 64 << 10, max: 1 << 30, zero: true, round: 64 }),
        agree
        // Whether there is a board changes the plans; its size is rank 0's.
        (|b: &Option<usize>| if *b == Some(0) { "0" } else { "nonzero" }.to_string()),
        "bytes of each rank's ring in the host's board, 0 = none, auto = from the last-level cache";
    /// Let ranks on one host read each other's buffers directly (process_vm_readv) when
    /// every rank is on one host and the kernel allows it; all-gather then copies each
    /// byte once (off by default: on the 2-core test machine the ring over shared
    /// memory measured faster, see docs/algorithms.md).
    shm_cma: bool = false,
        "MIXCCL_SHM_CMA", Flag, agree yes,
        "cross-memory reads between ranks of one host";
    /// How long a waiting rank polls (yielding the core) before it sleeps, in
    /// microseconds.
    spin: Duration = Duration::from_micros(100),
        "MIXCCL_SPIN_US", Micros, agree no,
        "poll before sleeping";
    /// Forced algorithms (e.g. `allreduce:ring;allgather:direct`).
    algo: AlgoOverride = AlgoOverride::default(),
        "MIXCCL_ALGO", Algos, agree yes,
        "forced algorithms";
    /// Send a header (sequence number, collective, type, op, count, root, algorithm,
    /// bytes) ahead of each call's data to every peer, so mismatched calls become
    /// `Error::Mismatch` instead of a hang or wrong data.
    check_calls: bool = true,
        "MIXCCL_CHECK_CALLS", Flag, agree yes,
        "per-call headers: mismatched calls are errors";
    /// all_reduce, broadcast and reduce larger than this run as a sequence of calls
    /// of at most this many bytes, on every rank alike, so a rank whose buffers are in
    /// device memory can copy piece k+1 to the host while piece k is on the wire
    /// (0 = never split). A piece is never smaller than two chunks per rank
    /// ([`Config::piece_elems`]).
    pipeline_bytes: usize = 8 << 20,
        "MIXCCL_PIPELINE_BYTES", Size::ANY, agree yes,
        "largest piece of a split all_reduce/broadcast/reduce";
    /// Load the topology model from this JSON file instead of probing (like
    /// NCCL_TOPO_FILE).
    topo_file: Option<PathBuf> = None,
        "MIXCCL_TOPO_FILE", Path, agree
        // Ranks may load the model from different paths; loading one or not must agree.
        (|p: &Option<PathBuf>| if p.is_some() { "set" } else { "unset" }.to_string()),
        "topology model to load instead of probing";
    /// Rank 0 writes the model as JSON here after init.
    topo_dump_file: Option<PathBuf> = None,
        "MIXCCL_TOPO_DUMP_FILE", Path, agree no,
        "where rank 0 writes the model";
    /// Refine the probed link costs with a short measurement at init (false keeps the
    /// probe's figures).
    topo_probe: bool = true,
        "MIXCCL_TOPO_PROBE", Flag, agree yes,
        "measure link costs at init";
    /// Log level (WARN, INFO or TRACE).
    debug: DebugLevel = DebugLevel::Warn,
        "MIXCCL_DEBUG", Level, agree no,
        "log level";
    /// Transport between hosts (IB or Socket; `Auto`: RDMA where possible).
    net: NetTransport = NetTransport::Auto,
        "MIXCCL_NET", Net, agree
        // Auto and IB both negotiate per peer over TCP; Socket does not.
        (|n: &NetTransport| if *n == NetTransport::Socket { "Socket" } else { "IB-or-auto" }.to_string()),
        "transport between hosts";
    /// RDMA devices and ports, NCCL_IB_HCA syntax: `mlx5_0:1,mlx5_1`, `^` to exclude,
    /// `=` for exact names (`None`: the first active port).
    ib_hca: Option<String> = None,
        "MIXCCL_IB_HCA", Text { none: "auto" }, agree no,
        "RDMA devices and ports";
    /// GID index for RoCE addressing.
    ib_gid_index: u8 = 0,
        "MIXCCL_IB_GID_INDEX", Int { min: 0, max: 255 }, agree no,
        "RoCE GID index";
    /// RDMA queue pairs (lanes) per peer.
    ib_qps: usize = 2,
        "MIXCCL_IB_QPS", Int { min: 1, max: 64 }, agree no,
        "RDMA queue pairs per peer";
    /// Registered staging per RDMA lane and direction, in 8 slots.
    ib_buffer: usize = 1 << 20,
        "MIXCCL_IB_BUFFER", Size::range(32 << 10, 1 << 30), agree no,
        "bytes of RDMA staging per lane and direction";
    /// libibverbs to load (`None`: `libibverbs.so.1`).
    ibverbs_lib: Option<String> = None,
        "MIXCCL_IBVERBS_LIB", Text { none: "libibverbs.so.1" }, agree no,
        "libibverbs to load";
}

/// A variable read outside `Config`: by a launcher, a device runtime, the Python
/// package or a test harness.
pub(crate) struct Elsewhere {
    /// The variable.
    pub name: &'static str,
    /// Who reads it.
    pub read_by: &'static str,
    /// The default, as README writes it (`unset` where there is none).
    pub default: &'static str,
    /// Where it is documented.
    pub doc: Doc,
    /// One line of help.
    pub help: &'static str,
}

/// Every `MIXCCL_*` variable read outside `Config`.
pub(crate) const ELSEWHERE: &[Elsewhere] = &[
    Elsewhere {
        name: "MIXCCL_NT_STORES",
        read_by: "cpu",
        default: "1",
        doc: Doc::Table,
        help: "non-temporal stores for large outputs: 1 or 0",
    },
    Elsewhere {
        name: "MIXCCL_HOST_ID",
        read_by: "bootstrap::host",
        default: "auto",
        doc: Doc::Table,
        help: "host identity; ranks with equal ids share memory",
    },
    Elsewhere {
        name: "MIXCCL_DEVICES",
        read_by: "device::Runtimes",
        default: "all",
        doc: Doc::Table,
        help: "device runtimes to try: cuda,hip,musa,acl,cnrt or none",
    },
    Elsewhere {
        name: "MIXCCL_NCCL_LIB",
        read_by: "ccl",
        default: "libnccl.so.2",
        doc: Doc::Readme,
        help: "NCCL library an island loads",
    },
    Elsewhere {
        name: "MIXCCL_RCCL_LIB",
        read_by: "ccl",
        default: "librccl.so.1",
        doc: Doc::Readme,
        help: "RCCL library an island loads",
    },
    Elsewhere {
        name: "MIXCCL_HCCL_LIB",
        read_by: "ccl",
        default: "libhccl.so",
        doc: Doc::Readme,
        help: "HCCL library an island loads",
    },
    Elsewhere {
        name: "MIXCCL_CNCL_LIB",
        read_by: "ccl",
        default: "libcncl.so",
        doc: Doc::Readme,
        help: "CNCL library an island loads",
    },
    Elsewhere {
        name: "MIXCCL_MCCL_LIB",
        read_by: "ccl",
        default: "libmccl.so",
        doc: Doc::Readme,
        help: "MCCL library an island loads",
    },
    Elsewhere {
        name: "MIXCCL_CUDA_LIB",
        read_by: "device::loader",
        default: "libcuda.so.1",
        doc: Doc::Readme,
        help: "CUDA driver library to load",
    },
    Elsewhere {
        name: "MIXCCL_HIP_LIB",
        read_by: "device::loader",
        default: "libamdhip64.so.6",
        doc: Doc::Readme,
        help: "HIP runtime library to load",
    },
    Elsewhere {
        name: "MIXCCL_MUSA_LIB",
        read_by: "device::loader",
        default: "libmusart.so",
        doc: Doc::Readme,
        help: "MUSA runtime library to load",
    },
    Elsewhere {
        name: "MIXCCL_ACL_LIB",
        read_by: "device::loader",
        default: "libascendcl.so",
        doc: Doc::Readme,
        help: "Ascend ACL library to load",
    },
    Elsewhere {
        name: "MIXCCL_CNRT_LIB",
        read_by: "device::loader",
        default: "libcnrt.so",
        doc: Doc::Readme,
        help: "Cambricon CNRT library to load",
    },
    Elsewhere {
        name: "MIXCCL_RANK",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "this process's rank",
    },
    Elsewhere {
        name: "MIXCCL_NRANKS",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "number of ranks",
    },
    Elsewhere {
        name: "MIXCCL_LOCAL_RANK",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "rank among the processes on this host",
    },
    Elsewhere {
        name: "MIXCCL_LOCAL_SIZE",
        read_by: "set by mixccl-perf --np for its ranks",
        default: "unset",
        doc: Doc::Readme,
        help: "processes on this host",
    },
    Elsewhere {
        name: "MIXCCL_UNIQUE_ID",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "the communicator's unique id, in hex",
    },
    Elsewhere {
        name: "MIXCCL_ROOT",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "host:port where rank 0 runs the rendezvous",
    },
    Elsewhere {
        name: "MIXCCL_JOB_ID",
        read_by: "bootstrap::launcher",
        default: "unset",
        doc: Doc::Readme,
        help: "job id mixed into the MIXCCL_ROOT token, so jobs on one address differ",
    },
    Elsewhere {
        name: "MIXCCL_LIB",
        read_by: "python/mixccl_torch",
        default: "unset",
        doc: Doc::Readme,
        help: "libmixccl.so for the PyTorch backend",
    },
    Elsewhere {
        name: "MIXCCL_LAUNCH",
        read_by: "ffi/src/env.rs",
        default: "async",
        doc: Doc::Readme,
        help: "C ABI calls on device buffers: async (stream-ordered) or sync (host-synchronous)",
    },
    Elsewhere {
        name: "MIXCCL_MPI_REQUIRED",
        read_by: "ffi/tests/processes.rs",
        default: "0",
        doc: Doc::Tests,
        help: "1: the Open MPI tests fail instead of skipping without mpirun",
    },
    Elsewhere {
        name: "MIXCCL_TEST_RECOVER_REPS",
        read_by: "tests/processes_elastic.rs",
        default: "2",
        doc: Doc::Tests,
        help: "kill/shrink/grow repetitions of the recover process tests (20 for the full run)",
    },
    Elsewhere {
        name: "MIXCCL_TORCH_PYTHON",
        read_by: "tests/torch.rs",
        default: "unset",
        doc: Doc::Tests,
        help: "the Python with torch that tests/torch.rs runs",
    },
    Elsewhere {
        name: "MIXCCL_TORCH_REQUIRED",
        read_by: "tests/torch.rs",
        default: "0",
        doc: Doc::Tests,
        help: "1: tests/torch.rs fails instead of skipping without torch",
    },
    Elsewhere {
        name: "MIXCCL_TORCH_TEST_DEADLINE",
        read_by: "python/tests/harness.py",
        default: "300",
        doc: Doc::Tests,
        help: "seconds the Python tests may run",
    },
    Elsewhere {
        name: "MIXCCL_TORCH_VENV",
        read_by: ".ci/run",
        default: "~/.cache/mixccl/torch-venv",
        doc: Doc::Tests,
        help: "where .ci/run keeps the virtualenv with a CPU torch",
    },
    Elsewhere {
        name: "MIXCCL_TEST_SEED",
        read_by: "tests/processes.rs",
        default: "unset",
        doc: Doc::Tests,
        help: "replays the kill test's random points",
    },
    Elsewhere {
        name: "MIXCCL_TEST_KILL_REPS",
        read_by: "tests/processes.rs",
        default: "4",
        doc: Doc::Tests,
        help: "repetitions of the kill test",
    },
    Elsewhere {
        name: "MIXCCL_TEST_CYCLES",
        read_by: "tests/resources.rs",
        default: "200",
        doc: Doc::Tests,
        help: "init/destroy cycles of the resource test",
    },
];

/// Every declared variable: `Config`'s parameters, then those read elsewhere.
pub(crate) fn params() -> Vec<Param> {
    let mut all = config_params();
    all.extend(ELSEWHERE.iter().map(|e| Param {
        name: e.name,
        field: e.read_by,
        in_config: false,
        ty: "",
        default: e.default.to_string(),
        allowed: String::new(),
        must_agree: false,
        doc: e.doc,
        help: e.help,
    }));
    all
}

/// Whether `name` is a declared variable.
pub(crate) fn is_known(name: &str) -> bool {
    params().iter().any(|p| p.name == name)
}

/// Reads a declared variable from the process environment (for the few read
/// outside `Config`). Reading an undeclared one is a bug the tests catch.
pub(crate) fn env(name: &str) -> Option<String> {
    debug_assert!(is_known(name), "{name} is not in the parameter table");
    std::env::var(name).ok()
}

/// The edit distance between `a` and `b` (insertions, deletions, substitutions).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The declared variable closest to `name`: one that starts with it or that it
/// starts with (a truncated or extended name) if any, else the fewest edits away;
/// the first of equals in table order.
pub(crate) fn closest(name: &str) -> &'static str {
    params()
        .iter()
        .min_by_key(|p| {
            let stem = !(p.name.starts_with(name) || name.starts_with(p.name));
            (stem, edit_distance(name, p.name))
        })
        .map_or("MIXCCL_DEBUG", |p| p.name)
}

/// The `MIXCCL_*` names among `names` that are not declared, each with the closest
/// declared one.
pub(crate) fn unknown(names: impl IntoIterator<Item = String>) -> Vec<(String, &'static str)> {
    let known = params();
    let mut found: Vec<(String, &'static str)> = names
        .into_iter()
        .filter(|n| n.starts_with("MIXCCL_") && !known.iter().any(|p| p.name == n.as_str()))
        .map(|n| {
            let c = closest(&n);
            (n, c)
        })
        .collect();
    found.sort();
    found
}

/// Warns once per process about every `MIXCCL_*` variable in the environment that
/// is not declared: a misspelt setting would otherwise be ignored silently.
pub(crate) fn warn_unknown_env() {
    static DONE: AtomicBool = AtomicBool::new(false);
    // Checked and set before warning: the warning's own log call comes back here.
    if DONE.load(Ordering::Relaxed) || DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let names = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok());
    for (name, near) in unknown(names) {
        crate::debug::log_warn!(
            None,
            "unknown variable {name} (not a mixccl setting; closest: {near})"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed() {
        let all = params();
        for (i, p) in all.iter().enumerate() {
            assert!(p.name.starts_with("MIXCCL_"), "{}", p.name);
            assert!(
                all[..i].iter().all(|q| q.name != p.name),
                "{} declared twice",
                p.name
            );
            assert!(!p.help.is_empty(), "{} has no help", p.name);
        }
        assert_eq!(all.iter().filter(|p| p.in_config).count(), 31);
        let row = |name: &str| all.iter().find(|p| p.name == name).unwrap();
        let n = row("MIXCCL_NSOCKS");
        assert_eq!(
            (n.field, n.ty, n.default.as_str(), n.allowed.as_str()),
            ("nsocks", "usize", "2", "an integer in 1..=64")
        );
        let b = row("MIXCCL_BOARD_BYTES");
        assert_eq!(
            (b.default.as_str(), b.allowed.as_str(), b.must_agree),
            ("auto", "auto, 0, or a size from 64K to 1G", true)
        );
        let t = row("MIXCCL_TOPO_FILE");
        assert_eq!((t.ty, t.default.as_str()), ("Option<PathBuf>", "unset"));
        let h = row("MIXCCL_HOST_ID");
        assert!(!h.in_config && h.field == "bootstrap::host" && !h.must_agree);
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("MIXCCL_NSOCK", "MIXCCL_NSOCKS"), 1);
        assert_eq!(edit_distance("MIXCCL_TIEMOUT", "MIXCCL_TIMEOUT"), 2);
    }

    #[test]
    fn misspelt_variables_are_found_with_the_closest_name() {
        assert_eq!(closest("MIXCCL_NSOCK"), "MIXCCL_NSOCKS");
        assert_eq!(closest("MIXCCL_TIEMOUT"), "MIXCCL_TIMEOUT");
        assert_eq!(closest("MIXCCL_CHUNKSIZE"), "MIXCCL_CHUNK_SIZE");
        assert_eq!(closest("MIXCCL_BOARD"), "MIXCCL_BOARD_BYTES");
        assert_eq!(closest("MIXCCL_SHM_ZERO_COPY"), "MIXCCL_SHM_ZEROCOPY");
        assert_eq!(closest("MIXCCL_IB_QP"), "MIXCCL_IB_QPS");
        assert_eq!(closest("MIXCCL_CUDA"), "MIXCCL_CUDA_LIB");
        assert_eq!(closest("MIXCCL_NSOCKS_PER_THREAD"), "MIXCCL_NSOCKS");
        assert_eq!(closest("MIXCCL_TOPO"), "MIXCCL_TOPO_FILE");
        let env = [
            "PATH",
            "MIXCCL_NSOCKS",
            "MIXCCL_TSL",
            "NCCL_DEBUG",
            "MIXCCL_DEBUGG",
            "MIXCCL_RANK",
            "MIXCCL_CUDA_LIB",
            "MIXCCL_TEST_CYCLES",
        ]
        .map(String::from);
        let found = unknown(env);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["MIXCCL_DEBUGG", "MIXCCL_TSL"]);
        assert_eq!(found[0].1, "MIXCCL_DEBUG");
        assert_eq!(found[1].1, "MIXCCL_TLS");
    }

    /// README's Configuration table: `(variable, default)` per row, and the paragraph
    /// after it that names the must-agree settings.
    fn readme_configuration(readme: &str) -> (Vec<(String, String)>, String) {
        let section = readme
            .split("\n## ")
            .find(|s| s.starts_with("Configuration"))
            .expect("README has a Configuration section");
        let rows = section
            .lines()
            .filter(|l| l.starts_with("| `MIXCCL_"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells[1].trim_matches('`').to_string(), cells[2].to_string())
            })
            .collect();
        let agree = section
            .split("\n\n")
            .find(|p| p.contains("must be equal on all ranks"))
            .expect("README says which settings must agree")
            .to_string();
        (rows, agree)
    }

    /// The `MIXCCL_*` names in `text`.
    fn names_in(text: &str) -> Vec<&str> {
        let mut names: Vec<&str> = text
            .match_indices("MIXCCL_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    #[test]
    fn readme_documents_the_table() {
        let readme = include_str!("../../README.md");
        let (rows, agree) = readme_configuration(readme);
        let all = params();
        for (name, default) in &rows {
            let p = all
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("README documents {name}, which mixccl does not read"));
            assert_eq!(p.doc, Doc::Table, "{name} is in README's table");
            assert_eq!(&p.default, default, "README's default for {name}");
        }
        for p in &all {
            match p.doc {
                Doc::Table => assert!(
                    rows.iter().any(|(n, _)| n == p.name),
                    "README's Configuration table lacks {} (default {})",
                    p.name,
                    p.default
                ),
                Doc::Readme => assert!(
                    names_in(readme).contains(&p.name),
                    "README does not mention {}",
                    p.name
                ),
                Doc::Tests => {}
            }
        }
        let named = names_in(&agree);
        let must: Vec<&str> = {
            let mut m: Vec<&str> = all
                .iter()
                .filter(|p| p.must_agree)
                .map(|p| p.name)
                .collect();
            m.sort();
            m
        };
        assert_eq!(named, must, "README's must-agree paragraph");
    }

    /// Every text file under `dir`, recursively (build outputs and caches left out).
    fn text_files(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !["target", ".git", "__pycache__", "build"].contains(&name.as_str()) {
                    text_files(&path, out);
                }
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                out.push((path, text));
            }
        }
    }

    #[test]
    fn every_variable_the_repository_names_is_declared() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            "src", "ffi", "tests", "python", ".ci", "benches", "examples", "docs",
        ] {
            text_files(&root.join(dir), &mut files);
        }
        files.push((
            root.join("README.md"),
            include_str!("../../README.md").into(),
        ));
        assert!(files.len() > 50, "found only {} files", files.len());
        let me = root.join("src/config/params.rs");
        for (path, text) in files.iter().filter(|(p, _)| *p != me) {
            for name in names_in(text) {
                // Not variables: the prefix alone (`MIXCCL_<VENDOR>_LIB`, a filter on
                // `MIXCCL_*`), mixccl.h's guard and macro; README's example of the
                // warning names a misspelt one on purpose.
                let skip = ["MIXCCL_", "MIXCCL_H_", "MIXCCL_UNIQUE_ID_HEX_BYTES"].contains(&name)
                    || text.contains(&format!("unknown variable {name} "));
                assert!(
                    skip || is_known(name),
                    "{} names {name}, which the parameter table does not declare",
                    path.display()
                );
            }
        }
        for v in crate::device::Vendor::ALL {
            assert!(is_known(v.lib_env()), "{}", v.lib_env());
        }
    }
}
