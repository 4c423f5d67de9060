//! The communicator: rank, size, config, links to peers, the error latch and the
//! collective calls. It validates arguments, asks `plan` and `algo` for a schedule
//! and hands it to `exec`; it never touches sockets or reduction loops itself.

use crate::algo::{self, Call};
use crate::bootstrap::{self, launcher::Rendezvous, root, LaunchEnv};
use crate::config::{Algorithm, Collective, Config};
use crate::debug::{log_info, log_trace};
use crate::element::{DataType, Element};
use crate::error::{Error, Result};
use crate::exec::{self, Buffers, Context, Workspace};
use crate::header::{self, CallHeader};
use crate::plan;
use crate::reduce::ReduceOp;
use crate::transport::{mem, Link};
use crate::UniqueId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A group of ranks that run collectives together. Calls on one communicator must
/// be made in the same order on every rank; a communicator is used by one thread
/// at a time (`&mut self`), and [`AbortHandle`] stops it from any thread.
pub struct Communicator {
    rank: usize,
    nranks: usize,
    config: Config,
    links: Vec<Option<Box<dyn Link>>>,
    scratch: Vec<u64>,
    workspace: Workspace,
    seq: u64,
    failed: Option<Error>,
    abort: Arc<AtomicBool>,
    /// The address this rank's TCP listener used (None for in-process links).
    local_ip: Option<std::net::IpAddr>,
    /// What the planner may use beyond links (agreed by all ranks at init).
    caps: plan::Capabilities,
    /// Listeners and peers' addresses kept from init, for `shrink`.
    rejoin: Option<bootstrap::Rejoin>,
    /// Call headers sent and received (see `exec::HEADER_SLOT`).
    header_buf: Vec<u8>,
    /// Point-to-point calls so far, per peer (see `exec::Context::p2p_seq`).
    p2p_seq: std::cell::RefCell<Vec<u64>>,
    /// Host staging buffers for device memory, kept between calls (`stage`).
    pub(crate) staging: crate::stage::Staging,
    /// The last call's plan and schedule: a loop of equal calls (the common case)
    /// plans and builds once. Both are pure functions of the call and of what the
    /// communicator fixed at init.
    last_plan: Option<(Call, Algorithm, std::sync::Arc<algo::Schedule>)>,
    /// The host's board, when every rank is on this host (`transport::board`).
    board: Option<Arc<crate::transport::board::Board>>,
}

/// One transfer of a [`Communicator::group`] call.
#[derive(Debug)]
pub enum Transfer<'a> {
    /// Send `buf` to rank `peer`.
    Send {
        /// Destination rank.
        peer: usize,
        /// Bytes to send.
        buf: &'a [u8],
    },
    /// Receive `buf.len()` bytes from rank `peer`.
    Recv {
        /// Source rank.
        peer: usize,
        /// Where the bytes land.
        buf: &'a mut [u8],
    },
}

/// What a call's header says about it.
#[derive(Debug, Clone, Copy)]
struct Meta {
    coll: Collective,
    dtype: DataType,
    op: ReduceOp,
    count: usize,
    root: usize,
    algo: &'static str,
}

/// Names a call in errors; formatted only when an error needs it.
struct CallLabel {
    coll: Collective,
    seq: u64,
    rank: usize,
}

impl std::fmt::Display for CallLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} #{} on rank {}", self.coll, self.seq, self.rank)
    }
}

/// Aborts a communicator from another thread: in-flight and later calls fail with
/// `Error::Aborted`.
#[derive(Clone, Debug)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// Requests the abort; returns at once.
    pub fn abort(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn check_rank(what: &str, r: usize, nranks: usize) -> Result<()> {
    if r >= nranks {
        return Err(Error::invalid(format!(
            "{what} {r} is out of range for {nranks} ranks"
        )));
    }
    Ok(())
}

impl Communicator {
    /// Joins the communicator `id` as `rank` of `nranks`. Blocks until every rank has
    /// joined and all links are up, or fails with `Error::Timeout` naming the missing
    /// ranks once `config.timeout` has passed.
    pub fn init(rank: usize, nranks: usize, id: &UniqueId, config: Config) -> Result<Self> {
        if nranks == 0 {
            return Err(Error::invalid("nranks must be at least 1"));
        }
        check_rank("rank", rank, nranks)?;
        config.validate()?;
        crate::debug::raise_level(config.debug);
        for line in config.describe() {
            log_info!(Some(rank), "config {line}");
        }
        let (links, local_ip, rejoin, probes) = bootstrap::join(rank, nranks, id, &config)?;
        let mut comm = Communicator::with_links(rank, links, config)?;
        comm.local_ip = Some(local_ip);
        comm.rejoin = Some(rejoin);
        comm.caps.host_read = comm.probe_host_read()?;
        comm.adopt_board();
        crate::topo::establish(&mut comm, probes)?;
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
        let (rank, links, child) = rejoin.shrink(self.rank, &excluded, &self.config)?;
        log_info!(
            Some(self.rank),
            "shrink: rank {} -> rank {rank} of {} (excluded {excluded:?})",
            self.rank,
            links.len()
        );
        // The survivors keep the parent's model, restricted to them (equal everywhere).
        let topo = self.topology().map(|t| t.without(&excluded)).transpose()?;
        let mut comm =
            Communicator::with_links_and_topology(rank, links, self.config.clone(), topo)?;
        comm.local_ip = self.local_ip;
        comm.rejoin = Some(child);
        comm.adopt_board();
        Ok(comm)
    }

    /// Keeps the host's board that the shared-memory links brought, if any. Every rank
    /// has one or none does: rank 0 creates it exactly when all ranks are on its host
    /// with shared memory and the board on (must-agree settings), and a rank that
    /// could not map it failed to connect.
    fn adopt_board(&mut self) {
        self.board = self.links.iter().flatten().find_map(|l| l.board());
        self.caps.publish = self.board.is_some();
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
                    let bound = root::spawn(addr, token, config.timeout).or_else(|_| {
                        let any = if addr.is_ipv4() {
                            std::net::Ipv4Addr::UNSPECIFIED.into()
                        } else {
                            std::net::Ipv6Addr::UNSPECIFIED.into()
                        };
                        root::spawn(
                            std::net::SocketAddr::new(any, addr.port()),
                            token,
                            config.timeout,
                        )
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
    fn with_links_and_topology(
        rank: usize,
        links: Vec<Option<Box<dyn Link>>>,
        config: Config,
        topo: Option<crate::topo::Topology>,
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
                        l.kind()
                    )))
                }
                Some(l) if l.peer() != p => {
                    return Err(Error::invalid(format!(
                        "links[{p}] reaches rank {} instead",
                        l.peer()
                    )))
                }
                None if p != rank => {
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
                l.kind(),
                l.lanes()
            );
        }
        let class = match links.iter().flatten().next().map(|l| l.kind()) {
            Some("shm") => crate::topo::LinkClass::Shm,
            Some("tcp") => crate::topo::LinkClass::Tcp,
            Some("rdma") => crate::topo::LinkClass::Rdma,
            _ => crate::topo::LinkClass::Mem,
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
            local_ip: None,
            caps,
            rejoin: None,
            header_buf: Vec::new(),
            p2p_seq: Default::default(),
            staging: Default::default(),
            last_plan: None,
            board: None,
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

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.nranks
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport to each peer (`"shm"`, `"tcp"`, `"mem"`; `None` for this rank).
    pub fn link_kinds(&self) -> Vec<Option<&'static str>> {
        self.links
            .iter()
            .map(|l| l.as_ref().map(|l| l.kind()))
            .collect()
    }

    /// The topology model this communicator plans with.
    pub fn topology(&self) -> Option<&crate::topo::Topology> {
        self.caps.topo.as_deref()
    }

    /// Replaces the model the planner uses (init, once every rank holds the same one).
    pub(crate) fn set_topology(&mut self, t: crate::topo::Topology) {
        self.caps.set_topology(t);
    }

    /// A handle that aborts this communicator from any thread.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.abort.clone())
    }

    /// The error that stopped this communicator, if one did.
    pub fn error(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    fn call(
        &self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        root: usize,
        in_place: bool,
    ) -> Call {
        let e = dtype.size();
        Call {
            coll,
            dtype,
            op,
            count,
            root,
            rank: self.rank,
            nranks: self.nranks,
            in_place,
            chunk: (self.config.chunk_bytes / e).max(1) * e,
        }
    }

    /// Elements per piece when a call of `count` elements is split (see
    /// `Config::pipeline_bytes`): only element-wise collectives, only above the limit.
    pub(crate) fn piece_elems(
        &self,
        coll: Collective,
        dtype: DataType,
        count: usize,
    ) -> Option<usize> {
        self.config.piece_elems(coll, dtype, count, self.nranks)
    }

    /// Builds the call for a byte-level collective (`send: None` = in place) and runs
    /// it, as consecutive pieces when [`Communicator::piece_elems`] says so. Every rank
    /// splits alike, whatever memory its buffers are in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        root: usize,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        let Some(piece) = self.piece_elems(coll, dtype, count) else {
            let call = self.call(coll, dtype, op, count, root, send.is_none());
            return self.run(call, send.unwrap_or(&[]), recv);
        };
        let e = dtype.size();
        let mut start = 0;
        while start < count {
            let n = piece.min(count - start);
            let r = start * e..(start + n) * e;
            // Buffers a rank does not use (a non-root's send of broadcast, recv of
            // reduce) may be shorter: it gets an empty piece.
            let input = send.and_then(|s| s.get(r.clone())).unwrap_or(&[]);
            let output = match recv.get_mut(r) {
                Some(o) => o,
                None => &mut [],
            };
            let call = self.call(coll, dtype, op, n, root, send.is_none());
            self.run(call, input, output)?;
            start += n;
        }
        Ok(())
    }

    /// Plans and runs `call` over `input` (empty when in place) and `output`.
    fn run(&mut self, call: Call, input: &[u8], output: &mut [u8]) -> Result<()> {
        let (algo, schedule) = match &self.last_plan {
            Some((last, algo, schedule)) if *last == call => (*algo, schedule.clone()),
            _ => {
                let (algo, schedule) = self.plan(&call)?;
                let schedule = std::sync::Arc::new(schedule);
                self.last_plan = Some((call, algo, schedule.clone()));
                (algo, schedule)
            }
        };
        let meta = Meta {
            coll: call.coll,
            dtype: call.dtype,
            op: call.op,
            count: call.count,
            root: call.root,
            algo: algo.name(),
        };
        self.run_schedule(meta, &schedule, input, output, &[], &mut [])?;
        if algo == Algorithm::Publish && !output.is_empty() {
            let (own, blocks) = match call.coll {
                // The schedule exchanged headers only; every block is still to move.
                Collective::AllGather => {
                    let b = output.len() / self.nranks;
                    let own = (!input.is_empty()).then_some(input);
                    (own, output.chunks_exact_mut(b).collect())
                }
                // The schedule was the ring's reduce-scatter: each rank owns one block.
                _ => {
                    let ranges = algo::owned_blocks(call.count, self.nranks, call.dtype.size());
                    (None, crate::transport::board::split_blocks(output, &ranges))
                }
            };
            self.publish_gather(call.coll, own, blocks)?;
        }
        Ok(())
    }

    /// The blocks of a call whose schedule `run` just ran (headers, and for all_reduce
    /// the reduce-scatter), through the host's board: `blocks[p]` gets rank p's block;
    /// this rank's is `own` or already in place.
    fn publish_gather(
        &mut self,
        coll: Collective,
        own: Option<&[u8]>,
        blocks: Vec<&mut [u8]>,
    ) -> Result<()> {
        let Some(board) = self.board.clone() else {
            return Err(Error::Internal("publish planned without a board".into()));
        };
        let label = CallLabel {
            coll,
            seq: self.seq,
            rank: self.rank,
        };
        let mut w = crate::transport::board::Wait {
            timeout: self.config.timeout,
            spin: self.config.spin,
            abort: &self.abort,
            label: &label,
            links: &mut self.links,
        };
        let result = board.gather(own, blocks, &mut w);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// The algorithm for `call` and this rank's schedule for it.
    fn plan(&self, call: &Call) -> Result<(Algorithm, algo::Schedule)> {
        let algo = plan::choose(
            &self.config,
            &self.caps,
            call.coll,
            call.bytes(),
            self.nranks,
        );
        if algo == Algorithm::Publish && !self.caps.publish {
            return Err(Error::invalid(
                "MIXCCL_ALGO forces publish, but the ranks share no board (needs all ranks \
                 on one host over shared memory, at least 2 and at most 64 of them)",
            ));
        }
        if algo == Algorithm::HostRead && !self.caps.host_read {
            return Err(Error::invalid(
                "MIXCCL_ALGO forces cma, but not every rank can read every other's memory \
                 (needs all ranks on one host over shared memory, and process_vm_readv allowed)",
            ));
        }
        let schedule = algo::build(call, algo, &self.caps.hosts)?;
        log_trace!(
            Some(self.rank),
            "{} #{}: {} x {} {} root {} via {algo}: {} ops",
            call.coll,
            self.seq + 1,
            call.count,
            call.dtype,
            call.op,
            call.root,
            schedule.ops.len()
        );
        Ok((algo, schedule))
    }

    /// Runs a schedule through the executor, with the error latch and abort flag.
    #[allow(clippy::too_many_arguments)]
    fn run_schedule<'g>(
        &mut self,
        meta: Meta,
        schedule: &std::sync::Arc<algo::Schedule>,
        input: &[u8],
        output: &mut [u8],
        group_in: &[&'g [u8]],
        group_out: &mut [&'g mut [u8]],
    ) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.load(Ordering::SeqCst) {
            self.failed = Some(Error::Aborted);
            return Err(Error::Aborted);
        }
        // Point-to-point calls need not be made by every rank: they are counted per
        // peer (exec's p2p_seq), not in the collective sequence.
        let p2p = meta.coll == Collective::SendRecv;
        if !p2p {
            self.seq += 1;
        }
        let words = schedule.scratch.div_ceil(8);
        if self.scratch.len() < words {
            self.scratch.resize(words, 0);
        }
        let label = CallLabel {
            coll: meta.coll,
            seq: self.seq,
            rank: self.rank,
        };
        let header_len = exec::HEADER_SLOT * self.nranks;
        if self.header_buf.len() < header_len {
            self.header_buf.resize(header_len, 0);
        }
        let mut bufs = Buffers {
            input,
            output,
            scratch: &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.scratch)
                [..schedule.scratch],
            group_in,
            group_out,
            header: &mut self.header_buf[..header_len],
        };
        let header = self.config.check_calls.then(|| CallHeader {
            seq: self.seq,
            coll: meta.coll,
            dtype: meta.dtype,
            op: meta.op,
            count: meta.count as u64,
            root: meta.root as u32,
            algo: header::fnv32(meta.algo),
            bytes_to_you: 0,
            bytes_from_you: 0,
        });
        let cx = Context {
            dtype: meta.dtype,
            op: meta.op,
            nranks: self.nranks,
            rank: self.rank,
            timeout: self.config.timeout,
            spin: self.config.spin,
            label: &label,
            abort: &self.abort,
            header,
            algo: meta.algo,
            p2p_seq: p2p.then_some(&self.p2p_seq),
        };
        let result = exec::run(
            schedule,
            &mut bufs,
            &mut self.links,
            &mut self.workspace,
            &cx,
        );
        if let Err(e) = &result {
            // The links' byte streams are in an unknown state: refuse further calls.
            self.failed = Some(e.clone());
        }
        result
    }

    /// Can every rank read every other's memory directly? All ranks must agree, so this
    /// is collective: first whether every rank is eligible (all peers over shared
    /// memory, `MIXCCL_SHM_CMA` on), then a real read of a word each peer publishes.
    fn probe_host_read(&mut self) -> Result<bool> {
        // MIXCCL_SHM_CMA is a must-agree setting, so every rank returns here alike.
        if !self.config.shm_cma {
            return Ok(false);
        }
        let eligible = self.nranks > 1 && self.links.iter().flatten().all(|l| l.kind() == "shm");
        let mut ok = [u8::from(eligible)];
        self.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
        if ok[0] == 0 {
            return Ok(false);
        }
        let magic = |r: usize| 0x6d69_7863_636c_0000u64 | r as u64;
        let word = [magic(self.rank)];
        let mine = (word.as_ptr() as u64).to_le_bytes();
        let mut theirs = vec![[0u8; 8]; self.nranks];
        let mut t: Vec<Transfer> = Vec::new();
        for (p, slot) in theirs
            .iter_mut()
            .enumerate()
            .filter(|(p, _)| *p != self.rank)
        {
            t.push(Transfer::Send {
                peer: p,
                buf: &mine,
            });
            t.push(Transfer::Recv { peer: p, buf: slot });
        }
        self.group(t)?;
        let mut good = true;
        for (p, addr) in theirs.iter().enumerate().filter(|(p, _)| *p != self.rank) {
            let mut got = [0u8; 8];
            let read = self.links[p]
                .as_mut()
                .map(|l| l.read_remote(u64::from_le_bytes(*addr), &mut got))
                .unwrap_or(Ok(false));
            good &= matches!(read, Ok(true)) && u64::from_le_bytes(got) == magic(p);
        }
        let mut ok = [u8::from(good)];
        // `word` must stay alive until every peer has read it: this all-reduce is after.
        self.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
        std::hint::black_box(&word);
        log_info!(
            Some(self.rank),
            "cross-memory reads between ranks: {}",
            if ok[0] == 1 { "on" } else { "off" }
        );
        Ok(ok[0] == 1)
    }

    /// Elements in `bytes` bytes of `dtype`, or an error naming the buffer.
    fn elems(&self, what: &str, buf: &str, dtype: DataType, bytes: usize) -> Result<usize> {
        if bytes % dtype.size() != 0 {
            return Err(Error::invalid(format!(
                "{what} on rank {}: {buf} has {bytes} bytes, not a whole number of {dtype} elements",
                self.rank
            )));
        }
        Ok(bytes / dtype.size())
    }

    /// Elements per block of a call whose `whole` buffer holds `nranks` blocks and whose
    /// other buffer, if any (`None` in place), holds one: (name, bytes) of each.
    fn block_count(
        &self,
        what: &str,
        dtype: DataType,
        whole: (&str, usize),
        block: Option<(&str, usize)>,
    ) -> Result<usize> {
        let total = self.elems(what, whole.0, dtype, whole.1)?;
        let Some((name, bytes)) = block else {
            return self.blocks(&format!("{what}_in_place"), total);
        };
        let count = self.elems(what, name, dtype, bytes)?;
        if Some(total) != count.checked_mul(self.nranks) {
            return Err(Error::invalid(format!(
                "{what} on rank {}: {} has {total} elements, expected nranks ({}) x {name} ({count})",
                self.rank, whole.0, self.nranks
            )));
        }
        Ok(count)
    }

    fn same_len(&self, what: &str, dtype: DataType, send: usize, recv: usize) -> Result<()> {
        if send != recv {
            return Err(Error::invalid(format!(
                "{what} rank {}: send has {} elements but recv has {}",
                self.rank,
                send / dtype.size(),
                recv / dtype.size()
            )));
        }
        Ok(())
    }

    /// Validates a byte-level collective's buffer lengths (`send: None` = in place)
    /// and root, and returns its element count (per block for the block collectives).
    pub(crate) fn count_of(
        &self,
        coll: Collective,
        dtype: DataType,
        root: usize,
        send: Option<usize>,
        recv: usize,
    ) -> Result<usize> {
        match coll {
            Collective::AllReduce => {
                let count = self.elems("all_reduce", "recv", dtype, recv)?;
                if let Some(send) = send {
                    self.same_len("all_reduce on", dtype, send, recv)?;
                }
                Ok(count)
            }
            Collective::AllGather => self.block_count(
                "all_gather",
                dtype,
                ("recv", recv),
                send.map(|s| ("send", s)),
            ),
            Collective::Broadcast => {
                check_rank("broadcast root", root, self.nranks)?;
                let count = self.elems("broadcast", "recv", dtype, recv)?;
                if let (Some(send), true) = (send, self.rank == root) {
                    self.same_len("broadcast on root", dtype, send, recv)?;
                }
                Ok(count)
            }
            Collective::Reduce => {
                check_rank("reduce root", root, self.nranks)?;
                match send {
                    Some(send) => {
                        if self.rank == root {
                            self.same_len("reduce on root", dtype, send, recv)?;
                        }
                        self.elems("reduce", "send", dtype, send)
                    }
                    None => self.elems("reduce", "buffer", dtype, recv),
                }
            }
            Collective::ReduceScatter => match send {
                Some(send) => self.block_count(
                    "reduce_scatter",
                    dtype,
                    ("send", send),
                    Some(("recv", recv)),
                ),
                None => self.block_count("reduce_scatter", dtype, ("recv", recv), None),
            },
            Collective::AllToAll => {
                let total = self.elems("all_to_all", "recv", dtype, recv)?;
                if let Some(send) = send {
                    self.same_len("all_to_all on", dtype, send, recv)?;
                }
                self.blocks("all_to_all", total)
            }
            Collective::SendRecv | Collective::Barrier => {
                Err(Error::Internal(format!("count_of called for {coll}")))
            }
        }
    }

    /// Validates and runs a byte-level collective (`send: None` = in place).
    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        let count = self.count_of(coll, dtype, root, send.map(<[u8]>::len), recv.len())?;
        self.launch(coll, dtype, op, count, root, send, recv)
    }

    /// Byte-level all-reduce of `dtype` elements; `send: None` means in place in `recv`.
    /// The typed methods and the C ABI call this.
    pub fn all_reduce_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllReduce, dtype, op, 0, send, recv)
    }

    /// Byte-level all-gather: `recv` holds `nranks` blocks of `send`'s size; `send: None`
    /// means this rank's block is already in place in `recv`.
    pub fn all_gather_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllGather, dtype, ReduceOp::Sum, 0, send, recv)
    }

    /// Byte-level broadcast of `recv.len()` bytes from `root`; `send` is read on the root
    /// only (`None` there means in place).
    pub fn broadcast_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
        root: usize,
    ) -> Result<()> {
        self.raw(
            Collective::Broadcast,
            dtype,
            ReduceOp::Sum,
            root,
            send,
            recv,
        )
    }

    /// Byte-level reduce to `root`. Out of place, `recv` is written on the root only (may
    /// be empty elsewhere); `send: None` reduces `recv` in place (non-root buffers are read only).
    pub fn reduce_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
        root: usize,
    ) -> Result<()> {
        self.raw(Collective::Reduce, dtype, op, root, send, recv)
    }

    /// Byte-level reduce-scatter. Out of place, `send` holds `nranks` blocks of `recv`'s
    /// size; with `send: None`, `recv` holds all blocks and the result lands in block `rank`.
    pub fn reduce_scatter_raw(
        &mut self,
        dtype: DataType,
        op: ReduceOp,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::ReduceScatter, dtype, op, 0, send, recv)
    }

    /// Byte-level all-to-all over `nranks` equal blocks; `send: None` means in place.
    pub fn all_to_all_raw(
        &mut self,
        dtype: DataType,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        self.raw(Collective::AllToAll, dtype, ReduceOp::Sum, 0, send, recv)
    }

    /// Runs every send and receive in `transfers` together, like sends and receives
    /// between `ncclGroupStart` and `ncclGroupEnd`: any pattern completes without deadlock
    /// as long as every rank posts matching transfers. Several transfers to one peer are
    /// matched in order; a send to and a receive from this rank itself become a copy.
    pub fn group(&mut self, transfers: Vec<Transfer<'_>>) -> Result<()> {
        let mut ins: Vec<&[u8]> = Vec::new();
        let mut outs: Vec<&mut [u8]> = Vec::new();
        let mut plan = Vec::with_capacity(transfers.len());
        for t in transfers {
            match t {
                Transfer::Send { peer, buf } => {
                    check_rank("send peer", peer, self.nranks)?;
                    plan.push((true, peer, ins.len(), buf.len()));
                    ins.push(buf);
                }
                Transfer::Recv { peer, buf } => {
                    check_rank("recv peer", peer, self.nranks)?;
                    plan.push((false, peer, outs.len(), buf.len()));
                    outs.push(buf);
                }
            }
        }
        let chunk = self.config.chunk_bytes;
        let schedule = algo::group(self.rank, chunk, &plan)?;
        let meta = Meta {
            coll: Collective::SendRecv,
            dtype: DataType::U8,
            op: ReduceOp::Sum,
            count: 0,
            root: 0,
            algo: "group",
        };
        self.run_schedule(
            meta,
            &std::sync::Arc::new(schedule),
            &[],
            &mut [],
            &ins,
            &mut outs,
        )
    }

    /// `recv[i] = op over ranks of send[i]`; `recv.len()` must equal `send.len()`.
    pub fn all_reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.all_reduce_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place [`Communicator::all_reduce`].
    pub fn all_reduce_in_place<T: Element>(&mut self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        self.all_reduce_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf))
    }

    /// Gathers every rank's `send` into `recv` in rank order; `recv.len() == nranks * send.len()`.
    pub fn all_gather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.all_gather_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-gather: `buf` holds `nranks` blocks and this rank's block is
    /// already at `buf[rank * count..][..count]`.
    pub fn all_gather_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        self.all_gather_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf))
    }

    fn blocks(&self, what: &str, len: usize) -> Result<usize> {
        if len % self.nranks != 0 {
            return Err(Error::invalid(format!(
                "{what} on rank {}: buffer of {len} elements is not a multiple of nranks ({})",
                self.rank, self.nranks
            )));
        }
        Ok(len / self.nranks)
    }

    /// Copies `root`'s `send` into every rank's `recv`; `send` is read on the root only
    /// (others may pass an empty slice) and must there be as long as `recv`.
    pub fn broadcast<T: Element>(&mut self, send: &[T], recv: &mut [T], root: usize) -> Result<()> {
        self.broadcast_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            root,
        )
    }

    /// In-place broadcast from `root`.
    pub fn broadcast_in_place<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<()> {
        self.broadcast_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf), root)
    }

    /// Reduces every rank's `send` into `recv` on `root`; `recv` is written on the root
    /// only (others may pass an empty slice) and must there be as long as `send`.
    pub fn reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.reduce_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
            root,
        )
    }

    /// In-place reduce to `root`; non-root buffers are only read.
    pub fn reduce_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        self.reduce_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf), root)
    }

    /// Reduces `send` (`nranks * recv.len()` elements) over ranks and leaves block
    /// `rank` of the result in `recv`.
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_raw(
            T::DTYPE,
            op,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place reduce-scatter: the result lands in `buf[rank * count..][..count]`.
    pub fn reduce_scatter_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        self.reduce_scatter_raw(T::DTYPE, op, None, bytemuck::cast_slice_mut(buf))
    }

    /// Block `j` of `send` goes to rank `j`; block `j` of `recv` comes from rank `j`.
    /// Both hold `nranks` blocks of equal size.
    pub fn all_to_all<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        self.all_to_all_raw(
            T::DTYPE,
            Some(bytemuck::cast_slice(send)),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-to-all.
    pub fn all_to_all_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        self.all_to_all_raw(T::DTYPE, None, bytemuck::cast_slice_mut(buf))
    }

    fn no_self(&self, what: &str, peer: usize) -> Result<()> {
        check_rank(&format!("{what} peer"), peer, self.nranks)?;
        if peer == self.rank {
            return Err(Error::invalid(format!(
                "rank {} cannot {what} itself outside a send_recv or group with itself",
                self.rank
            )));
        }
        Ok(())
    }

    /// Sends `buf` to `peer`, which must call [`Communicator::recv`] with the same length.
    pub fn send<T: Element>(&mut self, buf: &[T], peer: usize) -> Result<()> {
        self.no_self("send to", peer)?;
        self.group(vec![Transfer::Send {
            peer,
            buf: bytemuck::cast_slice(buf),
        }])
    }

    /// Receives `buf.len()` elements from `peer`.
    pub fn recv<T: Element>(&mut self, buf: &mut [T], peer: usize) -> Result<()> {
        self.no_self("receive from", peer)?;
        self.group(vec![Transfer::Recv {
            peer,
            buf: bytemuck::cast_slice_mut(buf),
        }])
    }

    /// Sends `send` to rank `to` while receiving `recv` (same length) from rank `from`,
    /// without deadlock whatever the size.
    pub fn send_recv<T: Element>(
        &mut self,
        send: &[T],
        to: usize,
        recv: &mut [T],
        from: usize,
    ) -> Result<()> {
        if send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "send_recv on rank {}: send has {} elements but recv has {}",
                self.rank,
                send.len(),
                recv.len()
            )));
        }
        self.group(vec![
            Transfer::Send {
                peer: to,
                buf: bytemuck::cast_slice(send),
            },
            Transfer::Recv {
                peer: from,
                buf: bytemuck::cast_slice_mut(recv),
            },
        ])
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

    /// Returns once every rank has entered the barrier.
    pub fn barrier(&mut self) -> Result<()> {
        let call = self.call(
            Collective::Barrier,
            DataType::U8,
            ReduceOp::Sum,
            0,
            0,
            false,
        );
        self.run(call, &[], &mut [])
    }
}

impl std::fmt::Debug for Communicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Communicator")
            .field("rank", &self.rank)
            .field("nranks", &self.nranks)
            .field("seq", &self.seq)
            .field("failed", &self.failed)
            .finish()
    }
}
