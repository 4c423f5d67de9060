//! What an `ncclComm_t` owns ([`Shared`]): the `mixccl::Communicator` behind a lock,
//! its abort handle outside the lock (so `ncclCommAbort` works while another thread
//! is inside a call), the facts queries need without locking, the latched error and
//! the PreMulSum ops. Also the calls that make and unmake communicators.

use crate::env::config_from_env;
use crate::redop::OpTable;
use crate::status::{code, code_of, Failure, Outcome};
use mixccl::{AbortHandle, Communicator, UniqueId};
use std::ffi::{c_char, c_int, CString};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One communicator as C sees it.
pub(crate) struct Shared {
    comm: Mutex<Communicator>,
    abort: AbortHandle,
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub nranks: usize,
    /// What `ncclCommCuDevice` reports.
    pub device: c_int,
    finalized: AtomicBool,
    /// `ncclResult_t` of the latched error, `ncclSuccess` while healthy.
    async_code: AtomicI32,
    /// Message of the latched error; set once, so pointers into it stay valid.
    stopped: OnceLock<CString>,
    /// PreMulSum ops made for this communicator.
    pub ops: Mutex<OpTable>,
}

impl Shared {
    /// Wraps a communicator; `device` is what `ncclCommCuDevice` reports.
    pub fn new(comm: Communicator, device: c_int) -> Arc<Shared> {
        Arc::new(Shared {
            abort: comm.abort_handle(),
            rank: comm.rank(),
            nranks: comm.nranks(),
            comm: Mutex::new(comm),
            device,
            finalized: AtomicBool::new(false),
            async_code: AtomicI32::new(code::SUCCESS),
            stopped: OnceLock::new(),
            ops: Mutex::new(OpTable::default()),
        })
    }

    /// Runs `f` on the communicator, holding its lock; latches the communicator's
    /// error (if `f` left one) for `ncclCommGetAsyncError` and `ncclGetLastError`.
    pub fn with<R>(&self, f: impl FnOnce(&mut Communicator) -> Outcome<R>) -> Outcome<R> {
        if self.finalized.load(Ordering::SeqCst) {
            return Err(Failure::usage(format!(
                "rank {}: the communicator was finalized; only ncclCommDestroy may follow",
                self.rank
            )));
        }
        let mut comm = self.comm.lock().map_err(|_| {
            Failure::internal("the communicator was poisoned by a panic in an earlier call")
        })?;
        let result = f(&mut comm);
        if let Some(e) = comm.error() {
            self.async_code.store(code_of(e), Ordering::SeqCst);
            let _ = self
                .stopped
                .set(CString::new(e.to_string().replace('\0', " ")).unwrap_or_default());
        }
        result
    }

    /// `ncclSuccess` or the latched error's code; never blocks.
    pub fn async_code(&self) -> c_int {
        self.async_code.load(Ordering::SeqCst)
    }

    /// The latched error's message, valid as long as this `Shared`.
    pub fn stopped_message(&self) -> Option<*const c_char> {
        self.stopped.get().map(|s| s.as_ptr())
    }

    /// Makes calls in flight (and later ones) fail with `Aborted`.
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Marks the communicator finalized.
    pub fn finalize(&self) {
        self.finalized.store(true, Ordering::SeqCst);
    }

    /// Shrinks like `ncclCommShrink` (works on a communicator stopped by an error).
    pub fn shrink(&self, excluded: &[usize], abort_first: bool) -> Outcome<Arc<Shared>> {
        if abort_first {
            self.abort();
        }
        let mut comm = self.comm.lock().map_err(|_| {
            Failure::internal("the communicator was poisoned by a panic in an earlier call")
        })?;
        let child = comm.shrink(excluded)?;
        Ok(Shared::new(child, self.device))
    }

    /// Splits like `ncclCommSplit`; every rank must call it.
    pub fn split(&self, color: c_int, key: c_int) -> Outcome<Option<Arc<Shared>>> {
        let color = match color {
            -1 => None,
            c if c >= 0 => Some(c as u32),
            c => {
                return Err(Failure::invalid(format!(
                    "color {c}: expected a non-negative color or NCCL_SPLIT_NOCOLOR (-1)"
                )))
            }
        };
        let device = self.device;
        let child = self.with(|c| Ok(c.split(color, i64::from(key))?))?;
        Ok(child.map(|c| Shared::new(c, device)))
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

/// `ncclCommInitRank(Config)`.
pub(crate) fn init_rank(nranks: c_int, id: &[u8; 128], rank: c_int) -> Outcome<Arc<Shared>> {
    let (nranks, rank) = ranks(nranks, rank)?;
    let id = UniqueId::from_bytes(id)?;
    let comm = Communicator::init(rank, nranks, &id, config_from_env()?)?;
    Ok(Shared::new(comm, current_device()))
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

    #[test]
    fn rank_arguments_are_checked() {
        assert!(ranks(0, 0).is_err());
        assert!(ranks(2, 2).is_err());
        assert!(ranks(2, -1).is_err());
        assert_eq!(ranks(3, 2).unwrap(), (3, 2));
    }
}
