//! Reading a job's shape from the environment launchers set: MIXCCL_*, torchrun,
//! Open MPI and Slurm, tried in that order.

use crate::bootstrap::unique_id::fnv1a;
use crate::error::{Error, Result};
use crate::UniqueId;
use std::net::{SocketAddr, ToSocketAddrs};

/// How the ranks of a job find each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rendezvous {
    /// A unique id handed to every rank (`MIXCCL_UNIQUE_ID`, hex); whoever made it runs the root.
    Id(UniqueId),
    /// A well-known address: rank 0 runs the root there, the others connect to it.
    /// The token is derived from the address and the launcher's job id.
    Root {
        /// The root's address.
        addr: SocketAddr,
        /// The shared token.
        token: [u8; 16],
    },
}

/// What the environment says about this process's place in a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub nranks: usize,
    /// Rank among the processes on this host, where the launcher says.
    pub local_rank: Option<usize>,
    /// How to meet the other ranks.
    pub rendezvous: Rendezvous,
    /// Which launcher's variables were used (`mixccl`, `torchrun`, `openmpi`, `slurm`).
    pub launcher: &'static str,
}

/// Variable names for rank, size and local rank, per launcher.
const LAUNCHERS: [(&str, &str, &str, &str); 4] = [
    (
        "mixccl",
        "MIXCCL_RANK",
        "MIXCCL_NRANKS",
        "MIXCCL_LOCAL_RANK",
    ),
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    (
        "openmpi",
        "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_LOCAL_RANK",
    ),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
];

impl LaunchEnv {
    /// Reads the process environment.
    pub fn from_env() -> Result<LaunchEnv> {
        LaunchEnv::detect(|k| std::env::var(k).ok())
    }

    /// Reads the variables `get` returns (testable without touching the process env).
    pub fn detect(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv> {
        let num = |var: &str| -> Result<Option<usize>> {
            match get(var) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    Error::invalid(format!("{var}={v:?} is not a non-negative integer"))
                }),
            }
        };
        let mut found = None;
        for (name, r, n, l) in LAUNCHERS {
            if let (Some(rank), Some(nranks)) = (num(r)?, num(n)?) {
                found = Some((name, rank, nranks, num(l)?));
                break;
            }
        }
        let (launcher, rank, nranks, local_rank) = found.ok_or_else(|| {
            Error::invalid(
                "no launcher environment found: set MIXCCL_RANK and MIXCCL_NRANKS (or run under \
                 torchrun, mpirun or srun)",
            )
        })?;
        if nranks == 0 || rank >= nranks {
            return Err(Error::invalid(format!(
                "{launcher} environment gives rank {rank} of {nranks} ranks"
            )));
        }
        let rendezvous = if let Some(hex) = get("MIXCCL_UNIQUE_ID") {
            Rendezvous::Id(hex.parse()?)
        } else {
            let (text, var) = if let Some(root) = get("MIXCCL_ROOT") {
                (root, "MIXCCL_ROOT")
            } else if let (Some(host), Some(port)) = (get("MASTER_ADDR"), get("MASTER_PORT")) {
                let port: u16 = port.trim().parse().map_err(|_| {
                    Error::invalid(format!("MASTER_PORT={port:?} is not a port number"))
                })?;
                // torchrun's agent already serves its own store on MASTER_PORT.
                let port = if get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True") {
                    port.checked_add(1).ok_or_else(|| {
                        Error::invalid("MASTER_PORT 65535 leaves no port for mixccl")
                    })?
                } else {
                    port
                };
                (format!("{}:{port}", host.trim()), "MASTER_ADDR/MASTER_PORT")
            } else {
                return Err(Error::invalid(format!(
                    "{launcher} environment found (rank {rank} of {nranks}) but no rendezvous: set \
                     MIXCCL_ROOT=host:port or MIXCCL_UNIQUE_ID, or MASTER_ADDR and MASTER_PORT"
                )));
            };
            let addr = text
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| {
                    Error::invalid(format!("{var}={text:?} is not a reachable host:port"))
                })?;
            let job = [
                "MIXCCL_JOB_ID",
                "TORCHELASTIC_RUN_ID",
                "SLURM_JOB_ID",
                "PMIX_NAMESPACE",
                "OMPI_MCA_ess_base_jobid",
            ]
            .iter()
            .find_map(|k| get(k))
            .unwrap_or_default();
            let seed = format!("mixccl|{addr}|{job}");
            let lo = fnv1a(seed.as_bytes());
            let hi = fnv1a(format!("{seed}|hi").as_bytes());
            let mut token = [0u8; 16];
            token[..8].copy_from_slice(&lo.to_le_bytes());
            token[8..].copy_from_slice(&hi.to_le_bytes());
            Rendezvous::Root { addr, token }
        };
        Ok(LaunchEnv {
            rank,
            nranks,
            local_rank,
            rendezvous,
            launcher,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        LaunchEnv::detect(move |k| v.iter().find(|(n, _)| n == k).map(|(_, x)| x.clone()))
    }

    #[test]
    fn each_launcher_is_understood() {
        let e = env(&[
            ("MIXCCL_RANK", "1"),
            ("MIXCCL_NRANKS", "4"),
            ("MIXCCL_ROOT", "127.0.0.1:9000"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.nranks, e.launcher), (1, 4, "mixccl"));
        assert!(matches!(e.rendezvous, Rendezvous::Root { addr, .. } if addr.port() == 9000));
        let e = env(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "3"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.nranks, e.local_rank, e.launcher),
            (2, 3, Some(0), "torchrun")
        );
        assert!(matches!(e.rendezvous, Rendezvous::Root { addr, .. } if addr.port() == 29500));
        let e = env(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap();
        assert!(matches!(e.rendezvous, Rendezvous::Root { addr, .. } if addr.port() == 29501));
        let e = env(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "8"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            ("MIXCCL_ROOT", "127.0.0.1:1"),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.nranks, e.local_rank, e.launcher),
            (3, 8, Some(1), "openmpi")
        );
        let e = env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "0"),
            ("MIXCCL_ROOT", "localhost:7"),
        ])
        .unwrap();
        assert_eq!(e.launcher, "slurm");
    }

    #[test]
    fn tokens_differ_between_jobs_and_agree_within_one() {
        let t = |job: &str| match env(&[
            ("MIXCCL_RANK", "0"),
            ("MIXCCL_NRANKS", "2"),
            ("MIXCCL_ROOT", "127.0.0.1:9"),
            ("MIXCCL_JOB_ID", job),
        ])
        .unwrap()
        .rendezvous
        {
            Rendezvous::Root { token, .. } => token,
            _ => unreachable!(),
        };
        assert_eq!(t("a"), t("a"));
        assert_ne!(t("a"), t("b"));
    }

    #[test]
    fn bad_environments_say_what_is_wrong() {
        assert!(env(&[]).unwrap_err().to_string().contains("MIXCCL_RANK"));
        assert!(env(&[("MIXCCL_RANK", "x"), ("MIXCCL_NRANKS", "2")])
            .unwrap_err()
            .to_string()
            .contains("MIXCCL_RANK"));
        assert!(env(&[
            ("MIXCCL_RANK", "2"),
            ("MIXCCL_NRANKS", "2"),
            ("MIXCCL_ROOT", "127.0.0.1:1")
        ])
        .unwrap_err()
        .to_string()
        .contains("rank 2 of 2"));
        assert!(env(&[("MIXCCL_RANK", "0"), ("MIXCCL_NRANKS", "2")])
            .unwrap_err()
            .to_string()
            .contains("MIXCCL_ROOT"));
        assert!(env(&[
            ("MIXCCL_RANK", "0"),
            ("MIXCCL_NRANKS", "2"),
            ("MIXCCL_UNIQUE_ID", "abc")
        ])
        .is_err());
    }
}
