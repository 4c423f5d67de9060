//! What an `ncclComm_t` owns ([`Shared`]): the `mixccl::Communicator` behind a lock,
//! its abort flag outside the lock (so `ncclCommAbort` works while another thread
//! is inside a call), the facts queries need without locking, the latched error and
//! the PreMulSum ops. Also the calls that make and unmake communicators.
//!
//! A nonblocking communicator (`config.blocking = 0`) also owns a [`CallQueue`]: its
//! init, split or shrink and then its calls run there, in submission order, and
//! `ncclCommGetAsyncError` reports `ncclInProgress` while any is queued or running.
//! Until init has finished the communicator has no `mixccl::Communicator` and no
//! facts; calls that need them fail as NCCL's do (ncclInvalidArgument, "poll first").
//!
//! `ncclCommSuspend` (with `NCCL_SUSPEND_MEM`) sets a flag that refuses new calls
//! until `ncclCommResume`; mixccl holds no device memory, so nothing is released.
//!
//! Any communicator gets a [`CallQueue`] (its progress thread) on its first
//! stream-ordered call (`MIXCCL_LAUNCH`, `stream`); those jobs are never reported as
//! in progress, and host-synchronous calls, split, shrink and finalize wait for them
//! first ([`Shared::drain`]). Abort also releases every caller stream such a call
//! holds ([`Holds`]).

use crate::env::{config_from_env, launch_from_env, Launch};
use crate::queue::CallQueue;
use crate::redop::OpTable;
use crate::status::{code, code_of, Failure, Outcome, Progress};
use crate::stream::Holds;
use mixccl::{AbortHandle, Communicator, RevokeHandle, UniqueId};
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// What queries answer once the communicator exists.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub nranks: usize,
}

/// How long `ncclCommAbort` waits for a nonblocking communicator's thread: an
/// aborted call returns within about 100 ms; an init in progress cannot be
/// interrupted and is left to finish (bounded by its timeout) on its own.
const ABORT_WAIT: Duration = Duration::from_secs(2);

/// One communicator as C sees it.
pub(crate) struct Shared {
    comm: Mutex<Option<Communicator>>,
    /// The communicator's abort handle, once it exists.
    abort: OnceLock<AbortHandle>,
    /// Its revoke handle, once it exists (`ncclCommRevoke` while a call is in flight).
    revoke: OnceLock<RevokeHandle>,
    /// Set by `ncclCommAbort`; a communicator made afterwards is aborted at once.
    aborted: AtomicBool,
    facts: OnceLock<Facts>,
    /// What `ncclCommCuDevice` reports.
    pub device: c_int,
    /// `MIXCCL_TIMEOUT`: bounds how long destroy waits for queued calls.
    timeout: Duration,
    finalized: AtomicBool,
    /// Between `ncclCommSuspend(NCCL_SUSPEND_MEM)` and `ncclCommResume`.
    suspended: AtomicBool,
    /// `ncclResult_t` of the latched error, `ncclSuccess` while healthy.
    async_code: AtomicI32,
    /// Message of the latched error; set once, so pointers into it stay valid.
    stopped: OnceLock<CString>,
    /// Whether calls on host buffers (and init, split, shrink) run in the background.
    nonblocking: bool,
    /// The progress thread: from the start when nonblocking, else from the first
    /// stream-ordered call.
    queue: OnceLock<CallQueue>,
    /// `MIXCCL_LAUNCH` when the communicator was made.
    pub launch: Launch,
    /// Tickets of stream-ordered calls that may still hold a caller's stream.
    pub holds: Holds,
    /// PreMulSum ops made for this communicator.
    pub ops: Mutex<OpTable>,
    /// Pinned buffers of stream-ordered calls on device memory.
    pub staging: crate::staging::Pool,
    /// This rank's island, when it is a member of one (`native`).
    island: OnceLock<mixccl::IslandPlanner>,
}

impl Shared {
    /// Wraps a communicator; `device` is what `ncclCommCuDevice` reports.
    pub fn new(comm: Communicator, device: c_int) -> Arc<Shared> {
        let shared = Shared::empty(device, comm.config().timeout, None);
        shared.install(comm);
        Arc::new(shared)
    }

    fn empty(device: c_int, timeout: Duration, queue: Option<CallQueue>) -> Shared {
        let nonblocking = queue.is_some();
        let cell = OnceLock::new();
        if let Some(q) = queue {
            let _ = cell.set(q);
        }
        Shared {
            comm: Mutex::new(None),
            abort: OnceLock::new(),
            revoke: OnceLock::new(),
            aborted: AtomicBool::new(false),
            facts: OnceLock::new(),
            device,
            timeout,
            finalized: AtomicBool::new(false),
            suspended: AtomicBool::new(false),
            async_code: AtomicI32::new(code::SUCCESS),
            stopped: OnceLock::new(),
            nonblocking,
            queue: cell,
            // An invalid value already failed init (`config_from_env`).
            launch: launch_from_env().unwrap_or_default(),
            holds: Holds::default(),
            ops: Mutex::new(OpTable::default()),
            staging: Default::default(),
            island: OnceLock::new(),
        }
    }

    /// A nonblocking communicator whose init (`make`) runs on its own thread; the
    /// handle is usable for polling at once.
    pub fn start(
        device: c_int,
        timeout: Duration,
        what: &str,
        make: impl FnOnce() -> Outcome<Communicator> + Send + 'static,
    ) -> Outcome<Arc<Shared>> {
        let queue = CallQueue::start(format!("mixccl-{what}"))
            .map_err(|e| Failure::internal(format!("cannot start a thread for {what}: {e}")))?;
        let shared = Arc::new(Shared::empty(device, timeout, Some(queue)));
        let s = shared.clone();
        shared.push(move || {
            let comm = make()?;
            s.install(comm);
            Ok(())
        })?;
        Ok(shared)
    }

    /// Makes `comm` this communicator's (once).
    fn install(&self, comm: Communicator) {
        let handle = comm.abort_handle();
        if self.aborted.load(Ordering::SeqCst) {
            handle.abort();
        }
        let _ = self.abort.set(handle);
        let _ = self.revoke.set(comm.revoke_handle());
        if let Some(p) = comm.island_planner() {
            let _ = self.island.set(p);
        }
        let _ = self.facts.set(Facts {
            rank: comm.rank(),
            nranks: comm.nranks(),
        });
        *self.comm.lock().unwrap_or_else(|e| e.into_inner()) = Some(comm);
        // An abort that raced with the install above: the flag was set after we read it.
        if self.aborted.load(Ordering::SeqCst) {
            self.abort();
        }
    }

    /// This rank's island planner, when it is an island member.
    pub fn island_planner(&self) -> Option<&mixccl::IslandPlanner> {
        self.island.get()
    }

    /// Whether calls on this communicator run in the background.
    pub fn nonblocking(&self) -> bool {
        self.nonblocking
    }

    /// MIXCCL_TIMEOUT of this communicator.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `job` on this communicator's thread, after what is queued; a failure it
    /// returns (or a panic) is latched for `ncclCommGetAsyncError`. Only for a
    /// nonblocking communicator; the job counts as in progress until it has run.
    pub fn push(self: &Arc<Self>, job: impl FnOnce() -> Outcome + Send + 'static) -> Outcome {
        let queue = self
            .queue
            .get()
            .filter(|_| self.nonblocking)
            .ok_or_else(|| Failure::internal("push on a blocking communicator"))?;
        self.push_to(queue, job, true)
    }

    /// Runs a stream-ordered call's `job` on the progress thread (started now if this
    /// is the first), after what is queued; not reported as in progress. A failure is
    /// latched as for [`Shared::push`].
    pub fn push_ordered(
        self: &Arc<Self>,
        job: impl FnOnce() -> Outcome + Send + 'static,
    ) -> Outcome {
        let queue = match self.queue.get() {
            Some(q) => q,
            None => {
                let rank = self.facts.get().map_or(0, |f| f.rank);
                let q = CallQueue::start(format!("mixccl-r{rank}-progress")).map_err(|e| {
                    Failure::internal(format!("cannot start the progress thread: {e}"))
                })?;
                // Two threads racing here: the loser's queue is dropped unused (its
                // thread exits when its sender goes).
                let _ = self.queue.set(q);
                self.queue.get().expect("set above")
            }
        };
        self.push_to(queue, job, false)
    }

    fn push_to(
        self: &Arc<Self>,
        queue: &CallQueue,
        job: impl FnOnce() -> Outcome + Send + 'static,
        reported: bool,
    ) -> Outcome {
        let s = self.clone();
        let job = move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job))
                .unwrap_or_else(|_| Err(Failure::internal("a background call panicked")));
            if let Err(f) = r {
                s.latch(f.code, &f.message);
            }
        };
        if !queue.push(Box::new(job), reported) {
            return Err(Failure::usage("the communicator is being destroyed"));
        }
        Ok(())
    }

    /// Waits until no earlier call is queued or running on the progress thread, at
    /// most twice MIXCCL_TIMEOUT plus 2 s (a stream-ordered call waits at most the
    /// timeout for its stream, then runs at most the timeout plus 1 s; later ones fail
    /// at once behind a failed one). Host-synchronous calls, split and shrink go
    /// through here, so calls still run in issue order on every rank.
    pub fn drain(&self) -> Outcome {
        let Some(q) = self.queue.get() else {
            return Ok(());
        };
        let limit = self.timeout * 2 + Duration::from_secs(2);
        if q.wait_idle(limit) {
            return Ok(());
        }
        Err(Failure {
            code: code::TIMEOUT,
            message: format!(
                "calls enqueued earlier on this communicator did not finish within {limit:?}"
            ),
        })
    }

    /// Records the first error that stopped the communicator: the code first (what
    /// pollers and `ready` read), then its message.
    pub fn latch(&self, c: c_int, message: &str) {
        let c = if c == code::SUCCESS {
            code::INTERNAL_ERROR
        } else {
            c
        };
        let first = self
            .async_code
            .compare_exchange(code::SUCCESS, c, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if first {
            let _ = self
                .stopped
                .set(CString::new(message.replace('\0', " ")).unwrap_or_default());
        }
    }

    /// The latched error as a failure to return, if any.
    pub fn latched(&self) -> Option<Failure> {
        match self.async_code.load(Ordering::SeqCst) {
            code::SUCCESS => None,
            c => Some(Failure {
                code: c,
                message: self.stopped.get().map_or_else(
                    || "the communicator was stopped by an error".into(),
                    |m| m.to_string_lossy().into_owned(),
                ),
            }),
        }
    }

    /// Rank and size; an error while a nonblocking init is still running (NCCL's
    /// ncclInvalidArgument) or after it failed (its code).
    pub fn facts(&self) -> Outcome<Facts> {
        if let Some(f) = self.facts.get() {
            return Ok(*f);
        }
        if let Some(f) = self.latched() {
            return Err(Failure {
                code: f.code,
                message: format!("the communicator could not be created: {}", f.message),
            });
        }
        Err(Failure::invalid(
            "the communicator is still being created: poll ncclCommGetAsyncError until \
             it returns ncclSuccess before using it",
        ))
    }

    /// Checks that a new call may be made: not finalized, created, not suspended, not
    /// stopped by an error (the latched error is returned at once: the failure of a
    /// call that ran in the background, or on a stream, is then the next call's).
    pub fn ready(&self) -> Outcome<Facts> {
        let facts = self.facts()?;
        if self.finalized.load(Ordering::SeqCst) {
            return Err(Failure::usage(format!(
                "rank {}: the communicator was finalized; only ncclCommDestroy may follow",
                facts.rank
            )));
        }
        if self.suspended() {
            return Err(Failure::usage(format!(
                "rank {}: the communicator is suspended (ncclCommSuspend); call \
                 ncclCommResume before using it",
                facts.rank
            )));
        }
        match self.latched() {
            Some(f) => Err(f),
            None => Ok(facts),
        }
    }

    /// `ncclCommSuspend(NCCL_SUSPEND_MEM)`: refuses new calls until [`Shared::resume`].
    /// The communicator must be usable (made, not finalized, not stopped); suspending
    /// it again is a no-op.
    pub fn suspend(&self) -> Outcome {
        if !self.suspended() {
            self.ready()?;
        }
        self.suspended.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `ncclCommResume`: accepts calls again (a no-op if not suspended).
    pub fn resume(&self) -> Outcome {
        self.facts()?;
        self.suspended.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Whether the communicator is suspended.
    pub fn suspended(&self) -> bool {
        self.suspended.load(Ordering::SeqCst)
    }

    /// Runs `f` on the communicator, holding its lock; latches the communicator's
    /// error (if `f` left one) for `ncclCommGetAsyncError` and `ncclGetLastError`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Communicator) -> Outcome<R>) -> Outcome<R> {
        let mut guard = self.comm.lock().map_err(|_| {
            Failure::internal("the communicator was poisoned by a panic in an earlier call")
        })?;
        let comm = guard.as_mut().ok_or_else(|| {
            self.facts()
                .err()
                .unwrap_or_else(|| Failure::internal("the communicator is gone"))
        })?;
        let result = f(comm);
        if let Some(e) = comm.error() {
            self.latch(code_of(e), &e.to_string());
        }
        result
    }

    /// `ncclCommGetAsyncError`: the latched error's code, else `ncclInProgress` while
    /// background work (not stream-ordered calls) is queued or running, else
    /// `ncclSuccess`; never blocks.
    pub fn async_code(&self) -> c_int {
        match self.async_code.load(Ordering::SeqCst) {
            code::SUCCESS if self.queue.get().is_some_and(|q| q.reported() > 0) => {
                code::IN_PROGRESS
            }
            c => c,
        }
    }

    /// The latched error's message, valid as long as this `Shared`.
    pub fn stopped_message(&self) -> Option<*const c_char> {
        self.stopped.get().map(|s| s.as_ptr())
    }

    /// Makes calls in flight (and later ones) fail with `Aborted`, and releases every
    /// caller stream a stream-ordered call holds.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
        self.holds.release_all();
        if let Some(h) = self.abort.get() {
            h.abort();
        }
        // Native calls queued on callers' streams end now too.
        if let Some(p) = self.island.get() {
            p.abort();
        }
    }

    /// Was the communicator aborted?
    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// `ncclCommAbort` after the handle is gone: stops the calls in flight, then
    /// waits a bounded time for the background thread.
    pub fn abort_and_close(&self) {
        self.abort();
        if let Some(q) = self.queue.get() {
            // An init in progress cannot be interrupted: do not wait for it.
            if self.facts.get().is_some() {
                q.wait_idle(ABORT_WAIT);
            }
            q.close();
        }
    }

    /// `ncclCommDestroy` after the handle is gone: waits for queued calls (at most
    /// the communicator's timeout plus a second), then aborts what is left.
    pub fn close(&self) -> Outcome {
        let Some(q) = self.queue.get() else {
            return Ok(());
        };
        let limit = self.timeout + Duration::from_secs(1);
        let drained = q.wait_idle(limit);
        if !drained {
            self.abort_and_close();
            return Err(Failure {
                code: code::TIMEOUT,
                message: format!(
                    "calls still queued after {limit:?}: aborted them; the communicator is freed"
                ),
            });
        }
        q.close();
        Ok(())
    }

    /// Marks the communicator finalized: `Done` if nothing is pending, else
    /// `InProgress` (a nonblocking communicator finishes its queue first). A blocking
    /// one waits (bounded) for its stream-ordered calls, as NCCL's finalize does.
    pub fn finalize(&self) -> Progress {
        self.finalized.store(true, Ordering::SeqCst);
        if !self.nonblocking {
            // A call that did not finish is latched, or aborted by destroy.
            let _ = self.drain();
            return Progress::Done;
        }
        match self.queue.get().is_some_and(|q| q.pending() > 0) {
            true => Progress::InProgress,
            false => Progress::Done,
        }
    }

    /// Shrinks like `ncclCommShrink` (works on a communicator stopped by an error);
    /// with `nonblocking`, in the background.
    pub fn shrink(
        self: &Arc<Self>,
        excluded: &[usize],
        abort_first: bool,
        nonblocking: bool,
    ) -> Outcome<(Arc<Shared>, Progress)> {
        self.facts()?;
        if abort_first {
            self.abort();
        } else {
            // The parent may be stopped: its queued calls then fail at once.
            let _ = self.drain();
        }
        let excluded = excluded.to_vec();
        let parent = self.clone();
        let make = move || parent.with(|c| Ok(c.shrink(&excluded)?));
        if nonblocking {
            let child = Shared::start(self.device, self.timeout, "shrink", make)?;
            return Ok((child, Progress::InProgress));
        }
        Ok((Shared::new(make()?, self.device), Progress::Done))
    }

    /// `ncclCommRevoke`: the call in flight (another thread's) stops at once, then
    /// every peer is told; queued calls and later ones fail with ncclInvalidUsage.
    /// The communicator can still shrink, grow or be destroyed.
    pub fn revoke(&self) -> Outcome {
        let facts = self.facts()?;
        if self.finalized.load(Ordering::SeqCst) {
            return Err(Failure::usage(format!(
                "rank {}: the communicator was finalized; only ncclCommDestroy may follow",
                facts.rank
            )));
        }
        if let Some(h) = self.revoke.get() {
            h.revoke();
        }
        self.holds.release_all();
        // The lock is free within about 100 ms: the call holding it sees the flag.
        self.with(|c| {
            c.revoke();
            Ok(())
        })
    }

    /// `ncclCommGetUniqueId`: an id to grow this communicator with.
    pub fn grow_id(&self) -> Outcome<UniqueId> {
        self.facts()?;
        self.with(|c| Ok(c.grow_id()?))
    }

    /// Grows like `ncclCommGrow` for a member (rank -1): the member keeps its rank;
    /// with `nonblocking`, in the background. The parent is left as it was.
    pub fn grow(
        self: &Arc<Self>,
        nranks: c_int,
        id: &[u8; 128],
        nonblocking: bool,
    ) -> Outcome<(Arc<Shared>, Progress)> {
        let facts = self.facts()?;
        let nranks = usize::try_from(nranks)
            .ok()
            .filter(|n| *n > facts.nranks)
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "nRanks = {nranks}: a grow of this {}-rank communicator needs more ranks",
                    facts.nranks
                ))
            })?;
        let id = UniqueId::from_bytes(id)?;
        self.drain()?;
        let parent = self.clone();
        let make = move || parent.with(|c| Ok(c.grow(nranks, &id)?));
        if nonblocking {
            let child = Shared::start(self.device, self.timeout, "grow", make)?;
            return Ok((child, Progress::InProgress));
        }
        Ok((Shared::new(make()?, self.device), Progress::Done))
    }

    /// Drops every rank on the hosts (`by_host`) or of the vendors `names`, like a
    /// shrink that excludes them; a rank of the island gets None. Blocking.
    pub fn shrink_island(&self, names: Vec<String>, by_host: bool) -> Outcome<Option<Arc<Shared>>> {
        self.facts()?;
        let _ = self.drain();
        let child = self.with(|c| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let island = match by_host {
                true => mixccl::Island::Hosts(&names),
                false => mixccl::Island::Vendors(&names),
            };
            Ok(c.shrink_island(island)?)
        })?;
        Ok(child.map(|c| Shared::new(c, self.device)))
    }

    /// Splits like `ncclCommSplit`; every rank must call it. With `nonblocking` and a
    /// color, the child is made in the background; without a color the call takes
    /// part in the split at once (there is no child to poll).
    pub fn split(
        self: &Arc<Self>,
        color: c_int,
        key: c_int,
        nonblocking: bool,
    ) -> Outcome<(Option<Arc<Shared>>, Progress)> {
        let color = match color {
            -1 => None,
            c if c >= 0 => Some(c as u32),
            c => {
                return Err(Failure::invalid(format!(
                    "color {c}: expected a non-negative color or NCCL_SPLIT_NOCOLOR (-1)"
                )))
            }
        };
        self.ready()?;
        if self.queue.get().is_some_and(|q| q.reported() > 0) {
            return Err(Failure::invalid(
                "the parent communicator has calls in progress: poll ncclCommGetAsyncError \
                 until it returns ncclSuccess before splitting it",
            ));
        }
        self.drain()?;
        let parent = self.clone();
        let make = move || {
            parent
                .with(|c| Ok(c.split(color, i64::from(key))?))?
                .ok_or_else(|| Failure::internal("split gave no communicator for a color"))
        };
        match (color, nonblocking) {
            (Some(_), true) => Ok((
                Some(Shared::start(self.device, self.timeout, "split", make)?),
                Progress::InProgress,
            )),
            (Some(_), false) => Ok((Some(Shared::new(make()?, self.device)), Progress::Done)),
            (None, _) => {
                self.with(|c| Ok(c.split(None, i64::from(key))?))?;
                Ok((None, Progress::Done))
            }
        }
    }
}

/// Checks `nranks` and `rank` as C passes them.
fn ranks(nranks: c_int, rank: c_int) -> Outcome<(usize, usize)> {
    if nranks < 1 {
        return Err(Failure::invalid(format!(
            "nranks = {nranks}: must be at least 1"
        )));
    }
    if rank < 0 || rank >= nranks {
        return Err(Failure::invalid(format!(
            "rank = {rank}: must be in 0..{nranks}"
        )));
    }
    Ok((nranks as usize, rank as usize))
}

/// `ncclGetUniqueId`: starts a rendezvous root on the configured interface.
pub(crate) fn new_unique_id() -> Outcome<UniqueId> {
    let config = config_from_env()?;
    let ip = mixccl::transport::tcp::pick_interface(config.socket_ifname.as_deref())?;
    Ok(UniqueId::bind_with(
        std::net::SocketAddr::new(ip, 0),
        &config,
    )?)
}

/// `ncclCommInitRank(Config)`; with `nonblocking`, init runs in the background.
pub(crate) fn init_rank(
    nranks: c_int,
    id: &[u8; 128],
    rank: c_int,
    nonblocking: bool,
) -> Outcome<(Arc<Shared>, Progress)> {
    let (nranks, rank) = ranks(nranks, rank)?;
    let id = UniqueId::from_bytes(id)?;
    make_comm(nonblocking, &format!("init-r{rank}"), move |config| {
        Communicator::init(rank, nranks, &id, config)
    })
}

/// `ncclCommGrow` for a new rank (comm NULL): joins as `rank` of `nranks`.
pub(crate) fn join_grown(
    nranks: c_int,
    id: &[u8; 128],
    rank: c_int,
    nonblocking: bool,
) -> Outcome<(Arc<Shared>, Progress)> {
    let (nranks, rank) = ranks(nranks, rank)?;
    let id = UniqueId::from_bytes(id)?;
    make_comm(nonblocking, &format!("grow-r{rank}"), move |config| {
        Communicator::join_grown(rank, nranks, &id, config)
    })
}

/// Makes a communicator with `make` and the environment's config, on the calling
/// thread's current device: at once, or (`nonblocking`) in the background on a
/// thread named `label`, as `ncclCommInitRankConfig` does with a nonblocking config.
pub(crate) fn make_comm(
    nonblocking: bool,
    label: &str,
    make: impl FnOnce(mixccl::Config) -> mixccl::Result<Communicator> + Send + 'static,
) -> Outcome<(Arc<Shared>, Progress)> {
    let config = config_from_env()?;
    let device = current_device();
    if nonblocking {
        let timeout = config.timeout;
        let shared = Shared::start(device, timeout, label, move || Ok(make(config)?))?;
        return Ok((shared, Progress::InProgress));
    }
    Ok((Shared::new(make(config)?, device), Progress::Done))
}

/// The calling thread's current device in the first loaded device runtime (what
/// `cudaGetDevice` gives a CUDA user), 0 without one: `ncclCommCuDevice`'s answer
/// for communicators made without a device list.
pub(crate) fn current_device() -> c_int {
    mixccl::device::Runtimes::global()
        .loaded()
        .next()
        .and_then(|d| d.current_device().ok())
        .unwrap_or(0)
}

/// `ncclCommInitAll`: `devices.len()` ranks in this process.
pub(crate) fn init_all(devices: &[c_int]) -> Outcome<Vec<Arc<Shared>>> {
    let comms = Communicator::in_process(devices.len(), config_from_env()?)?;
    Ok(comms
        .into_iter()
        .zip(devices)
        .map(|(c, d)| Shared::new(c, *d))
        .collect())
}

/// `mixcclCommInitFromEnv`.
pub(crate) fn init_from_env() -> Outcome<Arc<Shared>> {
    let env = mixccl::LaunchEnv::from_env()?;
    let comm = Communicator::from_launch_env(&env, config_from_env()?)?;
    Ok(Shared::new(comm, current_device()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `ncclCommGetAsyncError`'s answer until it leaves ncclInProgress.
    fn settle(s: &Shared) -> c_int {
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while s.async_code() == code::IN_PROGRESS && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        s.async_code()
    }

    #[test]
    fn a_nonblocking_communicator_is_in_progress_until_its_init_ends() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let s = Shared::start(0, Duration::from_secs(5), "test", move || {
            // Init ends when the test says so.
            let _ = rx.recv_timeout(Duration::from_secs(30));
            let comm = Communicator::in_process(1, mixccl::Config::default())?;
            Ok(comm.into_iter().next().expect("one rank"))
        })
        .unwrap();
        assert_eq!(s.async_code(), code::IN_PROGRESS);
        assert_eq!(s.facts().unwrap_err().code, code::INVALID_ARGUMENT);
        assert_eq!(s.ready().unwrap_err().code, code::INVALID_ARGUMENT);
        assert_eq!(s.finalize(), Progress::InProgress);
        tx.send(()).unwrap();
        assert_eq!(settle(&s), code::SUCCESS);
        assert_eq!((s.facts().unwrap().rank, s.facts().unwrap().nranks), (0, 1));
        assert!(s.close().is_ok());
    }

    #[test]
    fn a_failed_init_or_job_is_latched_and_later_jobs_still_drain() {
        let s = Shared::start(0, Duration::from_secs(5), "test", || {
            Err(Failure::invalid("no such job"))
        })
        .unwrap();
        assert_eq!(settle(&s), code::INVALID_ARGUMENT);
        assert_eq!(s.facts().unwrap_err().code, code::INVALID_ARGUMENT);

        let s = Shared::start(0, Duration::from_secs(5), "test", || {
            let comm = Communicator::in_process(1, mixccl::Config::default())?;
            Ok(comm.into_iter().next().expect("one rank"))
        })
        .unwrap();
        assert_eq!(settle(&s), code::SUCCESS);
        s.push(|| panic!("a job panics")).unwrap();
        s.push(|| Err(Failure::usage("second failure"))).unwrap();
        assert_eq!(settle(&s), code::INTERNAL_ERROR, "the first failure wins");
        assert_eq!(s.ready().unwrap_err().code, code::INTERNAL_ERROR);
        assert!(s.close().is_ok());
    }

    #[test]
    fn abort_does_not_wait_for_an_init_in_progress() {
        let s = Shared::start(0, Duration::from_secs(5), "test", || {
            std::thread::sleep(Duration::from_millis(1500));
            let comm = Communicator::in_process(1, mixccl::Config::default())?;
            Ok(comm.into_iter().next().expect("one rank"))
        })
        .unwrap();
        let t = std::time::Instant::now();
        s.abort_and_close();
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }

    #[test]
    fn a_suspended_communicator_refuses_calls_until_resumed() {
        let comm = Communicator::in_process(1, mixccl::Config::default()).unwrap();
        let s = Shared::new(comm.into_iter().next().expect("one rank"), 0);
        assert!(s.ready().is_ok());
        s.suspend().unwrap();
        assert!(s.suspended());
        let e = s.ready().unwrap_err();
        assert_eq!(e.code, code::INVALID_USAGE);
        assert!(e.message.contains("suspended"), "{}", e.message);
        s.suspend().unwrap();
        assert!(s.facts().is_ok(), "queries still answer");
        s.resume().unwrap();
        assert!(!s.suspended());
        assert!(s.ready().is_ok());
        s.resume().unwrap();
    }

    #[test]
    fn stream_ordered_jobs_are_not_in_progress_but_are_drained_and_latch() {
        let comm = Communicator::in_process(1, mixccl::Config::default()).unwrap();
        let s = Shared::new(comm.into_iter().next().expect("one rank"), 0);
        assert!(
            s.drain().is_ok(),
            "no progress thread yet: nothing to wait for"
        );
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        s.push_ordered(move || {
            let _ = rx.recv_timeout(Duration::from_secs(30));
            Err(Failure::usage("the ordered job failed"))
        })
        .unwrap();
        assert_eq!(
            s.async_code(),
            code::SUCCESS,
            "a blocking comm is never in progress"
        );
        assert!(s.ready().is_ok());
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            tx.send(()).unwrap();
        });
        assert!(s.drain().is_ok());
        release.join().unwrap();
        assert_eq!(s.async_code(), code::INVALID_USAGE);
        let e = s.ready().unwrap_err();
        assert_eq!(e.code, code::INVALID_USAGE, "the next call fails with it");
        assert!(
            e.message.contains("the ordered job failed"),
            "{}",
            e.message
        );
        assert!(s.close().is_ok());
    }

    /// Revoke stops the call in flight and the queued ones (each latched as
    /// ncclInvalidUsage) and reaches the peer, whose calls that need rank 0 fail with
    /// the same error.
    #[test]
    fn revoke_stops_the_call_in_flight_the_queued_ones_and_the_peer() {
        let mut ranks = Communicator::in_process(2, mixccl::Config::default()).unwrap();
        let mut peer = ranks.pop().expect("rank 1");
        let rank0 = ranks.pop().expect("rank 0");
        let s = Shared::start(0, Duration::from_secs(30), "test", move || Ok(rank0)).unwrap();
        assert_eq!(settle(&s), code::SUCCESS);
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let (s2, tx) = (s.clone(), tx.clone());
            s.push(move || {
                let mut buf = vec![1f32; 1 << 10];
                // Rank 1 never calls: the first job waits until the revoke.
                let r = s2.with(|c| Ok(c.all_reduce_in_place(&mut buf, mixccl::ReduceOp::Sum)?));
                let _ = tx.send(r.map_err(|f| (f.code, f.message)));
                Ok(())
            })
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            s.async_code(),
            code::IN_PROGRESS,
            "the first call waits for rank 1"
        );
        s.revoke().unwrap();
        for i in 0..3 {
            let r = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let (c, m) = r.expect_err("a revoked call failed");
            assert_eq!(c, code::INVALID_USAGE, "call {i}: {m}");
            assert!(m.contains("revoked by rank 0"), "call {i}: {m}");
        }
        assert_eq!(settle(&s), code::INVALID_USAGE);
        // The peer's matching call may still finish on the data rank 0 sent before
        // the revoke; then its next call, which needs rank 0, reads the notice.
        let mut buf = vec![1f32; 1 << 10];
        let first = peer.all_reduce_in_place(&mut buf, mixccl::ReduceOp::Sum);
        let e = match first {
            Err(e) => e,
            Ok(()) => peer
                .all_reduce_in_place(&mut buf, mixccl::ReduceOp::Sum)
                .unwrap_err(),
        };
        assert!(matches!(e, mixccl::Error::Revoked { rank: 0 }), "{e}");
        assert!(s.close().is_ok());
    }

    #[test]
    fn rank_arguments_are_checked() {
        assert!(ranks(0, 0).is_err());
        assert!(ranks(2, 2).is_err());
        assert!(ranks(2, -1).is_err());
        assert_eq!(ranks(3, 2).unwrap(), (3, 2));
    }
}
