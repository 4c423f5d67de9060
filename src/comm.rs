//! The communicator: rank, size, config, links to peers, the error latch and the
//! collective calls. It validates arguments, asks `plan` and `algo` for a schedule
//! and hands it to `exec`; it never touches sockets or reduction loops itself.

use crate::algo::{self, Call};
use crate::bootstrap::{self, launcher::Rendezvous, root, LaunchEnv};
use crate::config::{Collective, Config};
use crate::debug::{log_info, log_trace};
use crate::element::{DataType, Element};
use crate::error::{Error, Result};
use crate::exec::{self, Buffers, Context, Workspace};
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
        let links = bootstrap::join(rank, nranks, id, &config)?
            .into_iter()
            .map(|l| l.map(|l| Box::new(l) as Box<dyn Link>))
            .collect();
        Communicator::with_links(rank, links, config)
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
            send_to: None,
            recv_from: None,
            rank: self.rank,
            nranks: self.nranks,
            in_place,
            chunk: (self.config.chunk_bytes / e).max(1) * e,
        }
    }

    /// Plans and runs `call` over `input` (empty when in place) and `output`.
    fn run(&mut self, call: Call, input: &[u8], output: &mut [u8]) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.load(Ordering::SeqCst) {
            self.failed = Some(Error::Aborted);
            return Err(Error::Aborted);
        }
        self.seq += 1;
        let algo = plan::choose(&self.config, call.coll, call.bytes(), self.nranks);
        let schedule = algo::build(&call, algo)?;
        log_trace!(
            Some(self.rank),
            "{} #{}: {} x {} {} root {} via {algo}: {} ops",
            call.coll,
            self.seq,
            call.count,
            call.dtype,
            call.op,
            call.root,
            schedule.ops.len()
        );
        let words = schedule.scratch.div_ceil(8);
        if self.scratch.len() < words {
            self.scratch.resize(words, 0);
        }
        let label = CallLabel {
            coll: call.coll,
            seq: self.seq,
            rank: self.rank,
        };
        let mut bufs = Buffers {
            input,
            output,
            scratch: &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.scratch)
                [..schedule.scratch],
        };
        let cx = Context {
            dtype: call.dtype,
            op: call.op,
            nranks: self.nranks,
            timeout: self.config.timeout,
            spin: self.config.spin,
            label: &label,
            abort: &self.abort,
        };
        let result = exec::run(
            &schedule,
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

    /// `recv[i] = op over ranks of send[i]`; `recv.len()` must equal `send.len()`.
    pub fn all_reduce<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        if send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "all_reduce on rank {}: send has {} elements but recv has {}",
                self.rank,
                send.len(),
                recv.len()
            )));
        }
        let call = self.call(Collective::AllReduce, T::DTYPE, op, send.len(), 0, false);
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place [`Communicator::all_reduce`].
    pub fn all_reduce_in_place<T: Element>(&mut self, buf: &mut [T], op: ReduceOp) -> Result<()> {
        let call = self.call(Collective::AllReduce, T::DTYPE, op, buf.len(), 0, true);
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
    }

    /// Gathers every rank's `send` into `recv` in rank order; `recv.len() == nranks * send.len()`.
    pub fn all_gather<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        if Some(recv.len()) != send.len().checked_mul(self.nranks) {
            return Err(Error::invalid(format!(
                "all_gather on rank {}: recv has {} elements, expected nranks ({}) x send ({})",
                self.rank,
                recv.len(),
                self.nranks,
                send.len()
            )));
        }
        let call = self.call(
            Collective::AllGather,
            T::DTYPE,
            ReduceOp::Sum,
            send.len(),
            0,
            false,
        );
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-gather: `buf` holds `nranks` blocks and this rank's block is
    /// already at `buf[rank * count..][..count]`.
    pub fn all_gather_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        let count = self.blocks("all_gather_in_place", buf.len())?;
        let call = self.call(
            Collective::AllGather,
            T::DTYPE,
            ReduceOp::Sum,
            count,
            0,
            true,
        );
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
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
        check_rank("broadcast root", root, self.nranks)?;
        if self.rank == root && send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "broadcast on root rank {root}: send has {} elements but recv has {}",
                send.len(),
                recv.len()
            )));
        }
        let call = self.call(
            Collective::Broadcast,
            T::DTYPE,
            ReduceOp::Sum,
            recv.len(),
            root,
            false,
        );
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place broadcast from `root`.
    pub fn broadcast_in_place<T: Element>(&mut self, buf: &mut [T], root: usize) -> Result<()> {
        check_rank("broadcast root", root, self.nranks)?;
        let call = self.call(
            Collective::Broadcast,
            T::DTYPE,
            ReduceOp::Sum,
            buf.len(),
            root,
            true,
        );
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
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
        check_rank("reduce root", root, self.nranks)?;
        if self.rank == root && send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "reduce on root rank {root}: send has {} elements but recv has {}",
                send.len(),
                recv.len()
            )));
        }
        let call = self.call(Collective::Reduce, T::DTYPE, op, send.len(), root, false);
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place reduce to `root`; non-root buffers are only read.
    pub fn reduce_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
        root: usize,
    ) -> Result<()> {
        check_rank("reduce root", root, self.nranks)?;
        let call = self.call(Collective::Reduce, T::DTYPE, op, buf.len(), root, true);
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
    }

    /// Reduces `send` (`nranks * recv.len()` elements) over ranks and leaves block
    /// `rank` of the result in `recv`.
    pub fn reduce_scatter<T: Element>(
        &mut self,
        send: &[T],
        recv: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        if Some(send.len()) != recv.len().checked_mul(self.nranks) {
            return Err(Error::invalid(format!(
                "reduce_scatter on rank {}: send has {} elements, expected nranks ({}) x recv ({})",
                self.rank,
                send.len(),
                self.nranks,
                recv.len()
            )));
        }
        let call = self.call(
            Collective::ReduceScatter,
            T::DTYPE,
            op,
            recv.len(),
            0,
            false,
        );
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place reduce-scatter: the result lands in `buf[rank * count..][..count]`.
    pub fn reduce_scatter_in_place<T: Element>(
        &mut self,
        buf: &mut [T],
        op: ReduceOp,
    ) -> Result<()> {
        let count = self.blocks("reduce_scatter_in_place", buf.len())?;
        let call = self.call(Collective::ReduceScatter, T::DTYPE, op, count, 0, true);
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
    }

    /// Block `j` of `send` goes to rank `j`; block `j` of `recv` comes from rank `j`.
    /// Both hold `nranks` blocks of equal size.
    pub fn all_to_all<T: Element>(&mut self, send: &[T], recv: &mut [T]) -> Result<()> {
        if send.len() != recv.len() {
            return Err(Error::invalid(format!(
                "all_to_all on rank {}: send has {} elements but recv has {}",
                self.rank,
                send.len(),
                recv.len()
            )));
        }
        let count = self.blocks("all_to_all", send.len())?;
        let call = self.call(
            Collective::AllToAll,
            T::DTYPE,
            ReduceOp::Sum,
            count,
            0,
            false,
        );
        self.run(
            call,
            bytemuck::cast_slice(send),
            bytemuck::cast_slice_mut(recv),
        )
    }

    /// In-place all-to-all.
    pub fn all_to_all_in_place<T: Element>(&mut self, buf: &mut [T]) -> Result<()> {
        let count = self.blocks("all_to_all_in_place", buf.len())?;
        let call = self.call(
            Collective::AllToAll,
            T::DTYPE,
            ReduceOp::Sum,
            count,
            0,
            true,
        );
        self.run(call, &[], bytemuck::cast_slice_mut(buf))
    }

    fn p2p<T: Element>(
        &mut self,
        send: Option<(&[T], usize)>,
        recv: Option<(&mut [T], usize)>,
    ) -> Result<()> {
        let mut call = self.call(Collective::SendRecv, T::DTYPE, ReduceOp::Sum, 0, 0, false);
        if let Some((buf, to)) = &send {
            check_rank("send peer", *to, self.nranks)?;
            call.send_to = Some(*to);
            call.count = buf.len();
        }
        if let Some((buf, from)) = &recv {
            check_rank("recv peer", *from, self.nranks)?;
            call.recv_from = Some(*from);
            if send.is_some() && buf.len() != call.count {
                return Err(Error::invalid(format!(
                    "send_recv on rank {}: send has {} elements but recv has {}",
                    self.rank,
                    call.count,
                    buf.len()
                )));
            }
            call.count = buf.len();
        }
        let self_only = |p: Option<usize>| p == Some(self.rank);
        if (self_only(call.send_to) || self_only(call.recv_from))
            && !(self_only(call.send_to) && self_only(call.recv_from))
        {
            return Err(Error::invalid(format!(
                "rank {} cannot send to or receive from itself except in a send_recv with itself",
                self.rank
            )));
        }
        let input: &[u8] = send.map_or(&[], |(b, _)| bytemuck::cast_slice(b));
        let output: &mut [u8] = match recv {
            Some((b, _)) => bytemuck::cast_slice_mut(b),
            None => &mut [],
        };
        self.run(call, input, output)
    }

    /// Sends `buf` to `peer`, which must call [`Communicator::recv`] with the same length.
    pub fn send<T: Element>(&mut self, buf: &[T], peer: usize) -> Result<()> {
        self.p2p::<T>(Some((buf, peer)), None)
    }

    /// Receives `buf.len()` elements from `peer`.
    pub fn recv<T: Element>(&mut self, buf: &mut [T], peer: usize) -> Result<()> {
        self.p2p::<T>(None, Some((buf, peer)))
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
        self.p2p(Some((send, to)), Some((recv, from)))
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
