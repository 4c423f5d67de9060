//! Making a communicator: joining through the bootstrap (`init`, the launch
//! environment), over links made elsewhere (custom or in-process), and from an
//! existing one (`shrink`, `split`).

use super::validate::check_rank;
use super::{Communicator, Transfer};
use crate::bootstrap::{self, launcher::Rendezvous, root, LaunchEnv};
use crate::config::Config;
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::exec::Workspace;
use crate::plan;
use crate::transport::{mem, Link, LinkClass};
use crate::UniqueId;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

impl Communicator {
    /// Joins the communicator `id` as `rank` of `nranks`. Blocks until every rank has
    /// joined and all links are up, or fails with `Error::Timeout` naming the missing
    /// ranks once `config.timeout` has passed.
    pub fn init(rank: usize, nranks: usize, id: &UniqueId, config: Config) -> Result<Self> {
        Communicator::init_scalable(rank, nranks, std::slice::from_ref(id), config)
    }

    /// Joins the communicator of `ids` as `rank` of `nranks` through several roots,
    /// like NCCL 2.23's `ncclCommInitRankScalable`: every rank passes the same ids
    /// in the same order, each made by [`UniqueId::new`] (which starts its root) on
    /// some rank; rank `r` joins the root of one id (NCCL's rule: contiguous slices,
    /// the first `nranks % ids.len()` one rank larger), so each root serves about
    /// `nranks / ids.len()` ranks, and root 0 gathers the other roots' slices. One
    /// id is [`Communicator::init`]. A rank whose ids differ (another count, other
    /// ids, another order) is refused with an error saying so; a root that never
    /// answers fails the ranks that wait on it once `config.timeout` has passed.
    pub fn init_scalable(
        rank: usize,
        nranks: usize,
        ids: &[UniqueId],
        config: Config,
    ) -> Result<Self> {
        if ids.is_empty() || ids.len() > nranks.max(1) {
            return Err(Error::invalid(format!(
                "init: {} unique ids for {nranks} ranks: expected 1..={} (at most one \
                 root per rank)",
                ids.len(),
                nranks.max(1)
            )));
        }
        if let Some((i, j)) = (0..ids.len())
            .flat_map(|i| (i + 1..ids.len()).map(move |j| (i, j)))
            .find(|&(i, j)| ids[i] == ids[j])
        {
            return Err(Error::invalid(format!(
                "init: ids {i} and {j} are the same id: each root needs its own (one \
                 UniqueId::new / ncclGetUniqueId per id)"
            )));
        }
        if nranks == 0 {
            return Err(Error::invalid("nranks must be at least 1"));
        }
        check_rank("rank", rank, nranks)?;
        config.validate()?;
        crate::debug::raise_level(config.debug);
        for line in config.describe() {
            log_info!(Some(rank), "config {line}");
        }
        let joined = bootstrap::join(rank, nranks, ids, &config)?;
        // Links are made on first use (`Communicator::connect_for`).
        let mut comm = Communicator::assemble(rank, joined.links, config, None, true)?;
        comm.local_ip = Some(joined.local_ip);
        comm.rejoin = Some(joined.rejoin);
        comm.caps.host_read = comm.probe_host_read()?;
        comm.adopt_board(joined.board);
        super::measure::init_collectives(&mut comm, joined.probes)?;
        Ok(comm)
    }

    /// A communicator of every rank but `excluded`, like `ncclCommShrink`: no new
    /// unique id and no rendezvous; the survivors reconnect through the listeners
    /// kept from init and renumber in rank order. Usable right after `PeerLost`
    /// (this communicator's links are not reused). Every survivor must call it with
    /// the same list; communicators not made by `init` (in-process, custom links)
    /// cannot shrink.
    pub fn shrink(&mut self, excluded: &[usize]) -> Result<Communicator> {
        let mut excluded = excluded.to_vec();
        excluded.sort_unstable();
        excluded.dedup();
        for &r in &excluded {
            check_rank("shrink: excluded rank", r, self.nranks)?;
        }
        if excluded.contains(&self.rank) {
            return Err(Error::invalid(format!(
                "shrink: rank {} excludes itself; only survivors call shrink",
                self.rank
            )));
        }
        let rejoin = self.rejoin.as_ref().ok_or_else(|| {
            Error::invalid(
                "shrink needs a communicator made by init: in-process and custom links \
                 cannot reconnect",
            )
        })?;
        let (rank, links, board, child) = rejoin.shrink(self.rank, &excluded, &self.config)?;
        log_info!(
            Some(self.rank),
            "shrink: rank {} -> rank {rank} of {} (excluded {excluded:?})",
            self.rank,
            links.len()
        );
        // The survivors keep the parent's model, restricted to them (equal everywhere).
        let topo = self.topology().map(|t| t.without(&excluded)).transpose()?;
        let mut comm = Communicator::assemble(rank, links, self.config.clone(), topo, true)?;
        comm.local_ip = self.local_ip;
        comm.rejoin = Some(child);
        comm.adopt_board(board);
        Ok(comm)
    }

    /// Joins a job described by the environment: `MIXCCL_RANK`/`MIXCCL_NRANKS` with
    /// `MIXCCL_UNIQUE_ID` or `MIXCCL_ROOT=host:port`; torchrun (`RANK`, `WORLD_SIZE`,
    /// `MASTER_ADDR`, `MASTER_PORT`); Open MPI (`OMPI_COMM_WORLD_*`); Slurm
    /// (`SLURM_PROCID`, `SLURM_NTASKS`). With an address, rank 0 runs the rendezvous there.
    pub fn from_env() -> Result<Self> {
        let env = LaunchEnv::from_env()?;
        let config = Config::from_env()?;
        Communicator::from_launch_env(&env, config)
    }

    /// Joins the job `env` describes with `config`.
    pub fn from_launch_env(env: &LaunchEnv, config: Config) -> Result<Self> {
        let id = match env.rendezvous {
            Rendezvous::Id(id) => id,
            Rendezvous::Root { addr, token } => {
                if env.rank == 0 {
                    // Bind the wildcard address if the name resolves to another host's view of us.
                    let bound = root::spawn(addr, token, &config).or_else(|_| {
                        let any = if addr.is_ipv4() {
                            std::net::Ipv4Addr::UNSPECIFIED.into()
                        } else {
                            std::net::Ipv6Addr::UNSPECIFIED.into()
                        };
                        root::spawn(std::net::SocketAddr::new(any, addr.port()), token, &config)
                    })?;
                    log_info!(
                        Some(0),
                        "{} launch: bootstrap root on {bound}",
                        env.launcher
                    );
                }
                UniqueId::from_parts(token, addr)
            }
        };
        Communicator::init(env.rank, env.nranks, &id, config)
    }

    /// Builds a communicator over links made elsewhere (`links[p]` reaches rank `p`;
    /// `links[rank]` is `None`). This is how custom and in-process transports plug in.
    pub fn with_links(
        rank: usize,
        links: Vec<Option<Box<dyn Link>>>,
        config: Config,
    ) -> Result<Self> {
        Communicator::with_links_and_topology(rank, links, config, None)
    }

    /// [`Communicator::with_links`] planning with `topo` (None: `MIXCCL_TOPO_FILE` or
    /// one host).
    pub(super) fn with_links_and_topology(
        rank: usize,
        links: Vec<Option<Box<dyn Link>>>,
        config: Config,
        topo: Option<crate::topo::Topology>,
    ) -> Result<Self> {
        Communicator::assemble(rank, links, config, topo, false)
    }

    /// [`Communicator::with_links_and_topology`]; with `lazy`, a peer without a link
    /// is one to connect on first use (the communicator has `rejoin`), not an error.
    fn assemble(
        rank: usize,
        links: Vec<Option<Box<dyn Link>>>,
        config: Config,
        topo: Option<crate::topo::Topology>,
        lazy: bool,
    ) -> Result<Self> {
        let nranks = links.len();
        if nranks == 0 {
            return Err(Error::invalid("nranks must be at least 1"));
        }
        check_rank("rank", rank, nranks)?;
        config.validate()?;
        for (p, l) in links.iter().enumerate() {
            match l {
                Some(l) if p == rank => {
                    return Err(Error::invalid(format!(
                        "rank {rank} was given a link to itself ({})",
                        l.class()
                    )))
                }
                Some(l) if l.peer() != p => {
                    return Err(Error::invalid(format!(
                        "links[{p}] reaches rank {} instead",
                        l.peer()
                    )))
                }
                None if p != rank && !lazy => {
                    return Err(Error::invalid(format!(
                        "rank {rank} has no link to rank {p}"
                    )))
                }
                _ => {}
            }
        }
        for l in links.iter().flatten() {
            log_info!(
                Some(rank),
                "rank {rank} -> rank {} via {} ({} lanes)",
                l.peer(),
                l.class(),
                l.lanes()
            );
        }
        let class = match links.iter().flatten().next() {
            Some(l) => l.class(),
            // Nothing connected yet: the network links to come.
            None if lazy => LinkClass::Tcp,
            None => LinkClass::Mem,
        };
        let mut caps = plan::Capabilities::default();
        caps.set_topology(match topo {
            Some(t) => t,
            None => crate::topo::for_links(nranks, class, &config)?,
        });
        Ok(Communicator {
            rank,
            nranks,
            config,
            links,
            scratch: Vec::new(),
            workspace: Workspace::default(),
            seq: 0,
            failed: None,
            abort: Arc::new(AtomicBool::new(false)),
            revoked: Arc::new(AtomicBool::new(false)),
            local_ip: None,
            caps,
            rejoin: None,
            header_buf: Vec::new(),
            p2p_seq: Default::default(),
            staging: Default::default(),
            last_plan: None,
            board: None,
            header_dtype: None,
            islands: None,
        })
    }

    /// `nranks` communicators in this process joined by in-memory links: for tests and
    /// for running many ranks as threads. Entry `r` is rank `r`.
    pub fn in_process(nranks: usize, config: Config) -> Result<Vec<Communicator>> {
        if nranks == 0 {
            return Err(Error::invalid("nranks must be at least 1"));
        }
        let lanes = config.nsocks;
        mem::mesh(nranks, lanes, 4 << 20)?
            .into_iter()
            .enumerate()
            .map(|(rank, links)| {
                let links = links
                    .into_iter()
                    .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
                    .collect();
                Communicator::with_links(rank, links, config.clone())
            })
            .collect()
    }

    /// Splits this communicator like `ncclCommSplit`: ranks passing the same `color` form
    /// a new communicator, ordered by `key` and then by rank here; `color: None`
    /// (NCCL_SPLIT_NOCOLOR) takes part but joins nothing and gets `Ok(None)`. Every
    /// rank must call it. The new communicators connect over TCP with this one's config.
    pub fn split(&mut self, color: Option<u32>, key: i64) -> Result<Option<Communicator>> {
        let mine = [color.map_or(-1, i64::from), key];
        let mut all = vec![0i64; 2 * self.nranks];
        self.all_gather(&mine, &mut all)?;
        let Some(color) = color else { return Ok(None) };
        let mut members: Vec<(i64, usize)> = (0..self.nranks)
            .filter(|&r| all[2 * r] == i64::from(color))
            .map(|r| (all[2 * r + 1], r))
            .collect();
        members.sort_unstable();
        let new_rank = members
            .iter()
            .position(|m| m.1 == self.rank)
            .expect("this rank has its own color");
        let leader = members[0].1;
        // The leader starts the new communicator's root; the others learn its id from it.
        let mut id_bytes = [0u8; UniqueId::BYTES];
        if self.rank == leader {
            let ip = self
                .local_ip
                .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
            let id = UniqueId::bind_with(std::net::SocketAddr::new(ip, 0), &self.config)?;
            id_bytes = *id.as_bytes();
            let sends = members[1..]
                .iter()
                .map(|m| Transfer::Send {
                    peer: m.1,
                    buf: &id_bytes[..],
                })
                .collect();
            self.group(sends)?;
        } else {
            self.group(vec![Transfer::Recv {
                peer: leader,
                buf: &mut id_bytes[..],
            }])?;
        }
        let id = UniqueId::from_bytes(&id_bytes)?;
        log_info!(
            Some(self.rank),
            "split: color {color} -> rank {new_rank} of {}",
            members.len()
        );
        Communicator::init(new_rank, members.len(), &id, self.config.clone()).map(Some)
    }
}
