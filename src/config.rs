//! Every tunable of mixccl in one place, each with its `MIXCCL_*` environment
//! variable and default, like NCCL's `param.h`. The parameters are declared once,
//! in the table in `config/params.rs`, which also lists the variables read outside
//! `Config`; [`Config::describe`] lists them all and `Communicator::init` prints
//! that list once under `MIXCCL_DEBUG=INFO`.
//!
//! Owns reading, checking and printing settings; what a setting does belongs to the
//! module that uses it.

mod kind;
mod params;

pub use crate::call::{Algorithm, Collective};
pub use params::Config;
pub(crate) use params::{env, warn_unknown_env};

use crate::error::{Error, Result};

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
                    "MIXCCL_ALGO: unknown algorithm {algo:?} in {s:?} ({})",
                    Algorithm::names()
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

/// Which TCP links carry TLS 1.3 (`MIXCCL_TLS`; see `transport::tcp::tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsPolicy {
    /// No link is encrypted.
    #[default]
    Off,
    /// Links between ranks in different pods of the topology model (`MIXCCL_TOPO_FILE`);
    /// without pods in the model, every host is its own pod.
    CrossPod,
    /// Links between ranks on different hosts.
    CrossHost,
    /// Every TCP link, including those inside a host.
    All,
}

impl TlsPolicy {
    /// The `MIXCCL_TLS` spelling.
    pub const fn name(self) -> &'static str {
        match self {
            TlsPolicy::Off => "off",
            TlsPolicy::CrossPod => "cross-pod",
            TlsPolicy::CrossHost => "cross-host",
            TlsPolicy::All => "all",
        }
    }
}

/// Parses a flag variable read outside `Config` as `Config`'s flags are (1, true, yes
/// or 0, false, no); the error names `var` and what it takes.
pub(crate) fn parse_flag(var: &str, v: &str) -> crate::error::Result<bool> {
    kind::Kind::parse(&kind::Flag, var, v)
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
        warn_unknown_env();
        Config::default().with_env(|k| std::env::var(k).ok())
    }

    /// Applies the `MIXCCL_*` variables that `get` returns (testable without touching the process env).
    pub fn with_env(mut self, get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        self.apply_env(&get)?;
        Ok(self)
    }

    /// Checks the values a caller may have set by hand: each must be in its
    /// parameter's range, as if it had been read from the variable.
    pub fn validate(&self) -> Result<()> {
        self.check_ranges()
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
        self.agree_lines().join("\n")
    }

    /// One line per tunable: env name, value, meaning.
    pub fn describe(&self) -> Vec<String> {
        self.describe_lines()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::DebugLevel;
    use std::time::Duration;

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

    #[test]
    fn must_agree_lists_the_settings_that_shape_schedules() {
        let c = Config::default();
        assert_eq!(
            c.must_agree(),
            "MIXCCL_CHUNK_SIZE=524288\nMIXCCL_NSOCKS=2\nMIXCCL_TLS=off\nMIXCCL_DIRECT_MAX_BYTES=16384\n\
             MIXCCL_SHM_DISABLE=0\nMIXCCL_ISLANDS=1\nMIXCCL_ISLAND_MIN_RANKS=2\nMIXCCL_BOARD_BYTES=nonzero\n\
             MIXCCL_SHM_CMA=0\n\
             MIXCCL_ALGO=auto\nMIXCCL_CHECK_CALLS=1\nMIXCCL_PIPELINE_BYTES=8388608\n\
             MIXCCL_TOPO_FILE=unset\nMIXCCL_TOPO_PROBE=1\nMIXCCL_NET=IB-or-auto"
        );
        for line in c.must_agree().lines() {
            let name = line.split('=').next().unwrap();
            assert!(params::is_known(name), "{line}");
        }
        // The board's size is rank 0's; only whether there is one must agree.
        let with = |pairs: &[(&str, &str)]| Config::default().with_env(env(pairs)).unwrap();
        assert_eq!(
            with(&[("MIXCCL_BOARD_BYTES", "64K")]).must_agree(),
            c.must_agree()
        );
        assert!(with(&[("MIXCCL_BOARD_BYTES", "0")])
            .must_agree()
            .contains("\nMIXCCL_BOARD_BYTES=0\n"));
        let set = with(&[
            ("MIXCCL_ALGO", "ring;allreduce:tree"),
            ("MIXCCL_TOPO_FILE", "/a/t.json"),
            ("MIXCCL_NET", "IB"),
        ])
        .must_agree();
        assert!(set.contains("\nMIXCCL_ALGO=ring;allreduce:tree\n"), "{set}");
        assert!(set.contains("\nMIXCCL_TOPO_FILE=set\n"), "{set}");
        assert!(set.ends_with("\nMIXCCL_NET=IB-or-auto"), "{set}");
        // Settings that do not shape schedules may differ.
        assert_eq!(
            with(&[("MIXCCL_TIMEOUT", "9"), ("MIXCCL_SHM_BUFFER", "64K")]).must_agree(),
            c.must_agree()
        );
    }

    #[test]
    fn describe_prints_every_parameter_once() {
        let lines = Config::default().describe();
        let names: Vec<&str> = params::params()
            .iter()
            .filter(|p| p.in_config)
            .map(|p| p.name)
            .collect();
        assert_eq!(lines.len(), names.len());
        for (line, name) in lines.iter().zip(&names) {
            assert!(line.starts_with(&format!("{name}=")), "{line}");
        }
        for want in [
            "MIXCCL_TIMEOUT=300 (",
            "MIXCCL_CHUNK_SIZE=524288 (",
            "MIXCCL_SOCKET_IFNAME=auto (",
            "MIXCCL_SHM_ZEROCOPY=1 (",
            "MIXCCL_SPIN_US=100 (",
            "MIXCCL_ALGO=auto (",
            "MIXCCL_TOPO_FILE=unset (",
            "MIXCCL_DEBUG=WARN (",
            "MIXCCL_NET=auto (",
            "MIXCCL_IBVERBS_LIB=libibverbs.so.1 (",
        ] {
            assert!(lines.iter().any(|l| l.starts_with(want)), "{want}");
        }
    }

    #[test]
    fn empty_values_mean_the_default_where_they_did() {
        let off = Config {
            check_calls: false,
            shm_disable: true,
            topo_probe: false,
            net: NetTransport::Socket,
            socket_ifname: Some("eth0".into()),
            ..Config::default()
        };
        let c = off
            .with_env(env(&[
                ("MIXCCL_CHECK_CALLS", ""),
                ("MIXCCL_SHM_DISABLE", " "),
                ("MIXCCL_TOPO_PROBE", ""),
                ("MIXCCL_NET", ""),
                ("MIXCCL_SOCKET_IFNAME", "  "),
                ("MIXCCL_TOPO_FILE", " "),
                ("MIXCCL_ALGO", ""),
            ]))
            .unwrap();
        assert!(c.check_calls && !c.shm_disable && c.topo_probe);
        assert_eq!(c.net, NetTransport::Auto);
        assert_eq!(c.socket_ifname, None);
        assert_eq!(c.topo_file, None);
        assert!(c.algo.rules.is_empty());
        // Empty is an error where it was one.
        for k in [
            "MIXCCL_NSOCKS",
            "MIXCCL_CHUNK_SIZE",
            "MIXCCL_DEBUG",
            "MIXCCL_TIMEOUT",
        ] {
            assert!(Config::default().with_env(env(&[(k, "")])).is_err(), "{k}");
        }
        // Text keeps what was written; paths are trimmed; rings round up to 64.
        let c = Config::default()
            .with_env(env(&[
                ("MIXCCL_SOCKET_IFNAME", " eth"),
                ("MIXCCL_TOPO_FILE", " /t.json "),
                ("MIXCCL_SHM_BUFFER", "4097"),
                ("MIXCCL_BOARD_BYTES", "65537"),
                ("MIXCCL_SPIN_US", "0"),
                ("MIXCCL_SHM_ZEROCOPY", "no"),
            ]))
            .unwrap();
        assert_eq!(c.socket_ifname.as_deref(), Some(" eth"));
        assert_eq!(c.topo_file, Some(std::path::PathBuf::from("/t.json")));
        assert_eq!((c.shm_buffer, c.board_bytes), (4160, Some(65600)));
        assert_eq!(c.spin, Duration::ZERO);
        assert!(!c.shm_zero_copy);
    }

    #[test]
    fn values_set_by_hand_are_checked_like_variables() {
        for (c, field, var) in [
            (
                Config {
                    ib_qps: 65,
                    ..Config::default()
                },
                "config.ib_qps = 65",
                "MIXCCL_IB_QPS",
            ),
            (
                Config {
                    ib_buffer: 1024,
                    ..Config::default()
                },
                "config.ib_buffer = 1024",
                "MIXCCL_IB_BUFFER",
            ),
            (
                Config {
                    shm_buffer: 100,
                    ..Config::default()
                },
                "config.shm_buffer = 100",
                "MIXCCL_SHM_BUFFER",
            ),
            (
                Config {
                    timeout: Duration::ZERO,
                    ..Config::default()
                },
                "config.timeout = 0",
                "MIXCCL_TIMEOUT",
            ),
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field) && e.contains(var), "{e}");
        }
        let fine = Config {
            board_bytes: Some(0),
            shm_buffer: 4096,
            chunk_bytes: 64,
            ..Config::default()
        };
        assert!(fine.validate().is_ok());
    }
}
