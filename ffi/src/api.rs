//! The exported `nccl*` functions, one per declaration of `include/nccl.h`, in its
//! order. [`nccl_api!`] defines each once and exports it twice: as `ncclX` and as the
//! profiling alias `pncclX` (NCCL's PMPI-style names), both calling the same body.
//!
//! Every body runs inside `status::guard` (no panic crosses the boundary; a failure
//! becomes its `ncclResult_t` and this thread's last error). Enum parameters arrive as
//! `c_int` and are validated, since an out-of-range value in a Rust enum would be
//! undefined behaviour.
#![allow(non_snake_case)]

use crate::cast::{self, CommPtr, NcclConfig, NcclUniqueId};
use crate::coll::{dtype_of, Args, CollCall, Kind, P2p};
use crate::comm;
use crate::compat::{self, Missing, NcclSimInfo};
use crate::group::{self, Pending};
use crate::memory;
use crate::redop::Scalar;
use crate::status::{error_string, guard, guard_progress, guard_value, last_error, Failure};
use std::ffi::{c_char, c_int, c_uint, c_void};

/// `NCCL_VERSION_CODE` of `include/nccl.h` (NCCL 2.30.7).
const VERSION_CODE: c_int = 23007;

/// `cudaStream_t`: waited for before a call reads its buffers, never queued on.
type Stream = *mut c_void;

/// `ncclWindow_t`: a handle from `compat`'s window registry.
type Window = *mut c_void;

/// NCCL's device-API structs, only ever passed through (never read).
type DevPtr = *const c_void;

/// Defines each function once, exported as `$name` and as `p$name`.
macro_rules! nccl_api {
    ($(
        $(#[doc = $doc:literal])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block
    )*) => {
        $(
            $(#[doc = $doc])*
            ///
            /// # Safety
            /// Pointer arguments follow `include/nccl.h`: NULL where it allows NULL,
            /// otherwise valid for the sizes the other arguments give, until the call
            /// (or the group holding it) returns.
            #[no_mangle]
            #[allow(clippy::too_many_arguments)]
            pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret $body
        )*

        /// The `pnccl*` profiling aliases: same functions, names prefixed with `p`.
        pub mod profiling {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[doc = concat!(
                    "`p", stringify!($name), "`: alias of [`", stringify!($name),
                    "`](super::", stringify!($name), ")."
                )]
                ///
                /// # Safety
                /// As for the function it aliases.
                #[export_name = concat!("p", stringify!($name))]
                #[allow(clippy::too_many_arguments)]
                pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
                    // SAFETY: same contract as the function this aliases.
                    unsafe { super::$name($($arg),*) }
                }
            )*
        }
    };
}

/// A collective: validated now, then run or recorded for the group.
fn collective(what: &str, kind: Kind, comm: CommPtr, a: Args) -> c_int {
    guard_progress(what, || {
        group::submit(|| {
            let c = cast::comm(comm)?;
            let call = CollCall::new(kind, &c, c.ready()?, a)?;
            Ok((c, Pending::Coll(call)))
        })
    })
}

/// A send (`send`) or receive: validated now, then run or recorded for the group.
#[allow(clippy::too_many_arguments)]
fn p2p(
    what: &str,
    send: bool,
    buf: *const c_void,
    count: usize,
    dtype: c_int,
    peer: c_int,
    comm: CommPtr,
    stream: Stream,
) -> c_int {
    guard_progress(what, || {
        group::submit(|| {
            let c = cast::comm(comm)?;
            let t = P2p::new(send, c.ready()?, buf, count, dtype, peer, stream as usize)?;
            Ok((c, Pending::P2p(t)))
        })
    })
}

/// Joins a communicator through the id `id` gives (read after `out` is cleared).
fn init_rank_config(
    what: &str,
    out: *mut CommPtr,
    nranks: c_int,
    id: impl FnOnce() -> crate::status::Outcome<NcclUniqueId>,
    rank: c_int,
    config: *const NcclConfig,
) -> c_int {
    guard_progress(what, || {
        cast::write(out, "comm", std::ptr::null_mut())?;
        let id = id()?;
        let nonblocking = cast::read_config(config)?.is_some_and(|c| c.blocking == 0);
        let (shared, progress) = comm::init_rank(nranks, &id.bytes(), rank, nonblocking)?;
        cast::write(out, "comm", cast::new_handle(shared))?;
        Ok(progress)
    })
}

/// Whether a child made with `config` runs in the background: NULL inherits the
/// parent's mode (as NCCL), otherwise `blocking = 0` asks for it.
fn child_nonblocking(
    parent: &comm::Shared,
    config: *const NcclConfig,
) -> crate::status::Outcome<bool> {
    Ok(match cast::read_config(config)? {
        None => parent.nonblocking(),
        Some(c) => c.blocking == 0,
    })
}

nccl_api! {
    /// Allocates on the current device of the loaded device runtime, else
    /// 64-byte-aligned host memory.
    fn ncclMemAlloc(ptr: *mut *mut c_void, size: usize) -> c_int {
        guard("ncclMemAlloc", || {
            cast::write(ptr, "ptr", std::ptr::null_mut())?;
            cast::write(ptr, "ptr", memory::alloc_for_nccl(size)?)
        })
    }

    /// Frees memory from ncclMemAlloc (NULL is a no-op).
    fn ncclMemFree(ptr: *mut c_void) -> c_int {
        guard("ncclMemFree", || {
            // SAFETY: nccl.h: ptr is NULL or came from ncclMemAlloc.
            unsafe { memory::free_for_nccl(ptr) }
        })
    }

    /// Stores NCCL_VERSION_CODE.
    fn ncclGetVersion(version: *mut c_int) -> c_int {
        guard("ncclGetVersion", || cast::write(version, "version", VERSION_CODE))
    }

    /// Starts a rendezvous root in this process and describes it.
    fn ncclGetUniqueId(unique_id: *mut NcclUniqueId) -> c_int {
        guard("ncclGetUniqueId", || {
            if unique_id.is_null() {
                return Err(Failure::invalid("uniqueId is NULL"));
            }
            let id = comm::new_unique_id()?;
            cast::write(unique_id, "uniqueId", NcclUniqueId::from_bytes(id.as_bytes()))
        })
    }

    /// Joins a communicator with a configuration (NULL: defaults).
    fn ncclCommInitRankConfig(
        comm: *mut CommPtr,
        nranks: c_int,
        comm_id: NcclUniqueId,
        rank: c_int,
        config: *mut NcclConfig,
    ) -> c_int {
        init_rank_config("ncclCommInitRankConfig", comm, nranks, || Ok(comm_id), rank, config)
    }

    /// Joins a communicator.
    fn ncclCommInitRank(
        comm: *mut CommPtr,
        nranks: c_int,
        comm_id: NcclUniqueId,
        rank: c_int,
    ) -> c_int {
        init_rank_config("ncclCommInitRank", comm, nranks, || Ok(comm_id), rank, std::ptr::null())
    }

    /// `ndev` ranks in this process, joined in memory.
    fn ncclCommInitAll(comm: *mut CommPtr, ndev: c_int, devlist: *const c_int) -> c_int {
        guard("ncclCommInitAll", || {
            if comm.is_null() {
                return Err(Failure::invalid("comm is NULL"));
            }
            let n = usize::try_from(ndev)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| Failure::invalid(format!("ndev = {ndev}: must be at least 1")))?;
            let devices = cast::read_array(devlist, n).unwrap_or_else(|| (0..ndev).collect());
            let comms = comm::init_all(&devices)?;
            cast::write_array(comm, "comm", comms.into_iter().map(cast::new_handle).collect())
        })
    }

    /// Marks the communicator finalized; ncclInProgress while a nonblocking
    /// communicator still has queued calls.
    fn ncclCommFinalize(comm: CommPtr) -> c_int {
        guard_progress("ncclCommFinalize", || Ok(cast::comm(comm)?.finalize()))
    }

    /// Waits (bounded) for queued calls, then frees the communicator (NULL is a no-op).
    fn ncclCommDestroy(comm: CommPtr) -> c_int {
        guard("ncclCommDestroy", || match cast::take_handle(comm)? {
            Some(shared) => shared.close(),
            None => Ok(()),
        })
    }

    /// Stops calls in flight (on other threads or in the background) and frees the
    /// communicator.
    fn ncclCommAbort(comm: CommPtr) -> c_int {
        guard("ncclCommAbort", || {
            if let Some(shared) = cast::take_handle(comm)? {
                shared.abort_and_close();
            }
            Ok(())
        })
    }

    /// Stops the calls in flight or queued on this communicator and on every peer
    /// (each fails with ncclInvalidUsage); the communicator can still shrink, grow
    /// or be destroyed.
    fn ncclCommRevoke(comm: CommPtr, revoke_flags: c_int) -> c_int {
        guard("ncclCommRevoke", || {
            if revoke_flags != 0 {
                return Err(Failure::invalid(format!(
                    "revokeFlags {revoke_flags:#x}: expected NCCL_REVOKE_DEFAULT (0)"
                )));
            }
            cast::comm(comm)?.revoke()
        })
    }

    /// Splits the communicator by color, ordered by key.
    fn ncclCommSplit(
        comm: CommPtr,
        color: c_int,
        key: c_int,
        newcomm: *mut CommPtr,
        config: *mut NcclConfig,
    ) -> c_int {
        guard_progress("ncclCommSplit", || {
            cast::write(newcomm, "newcomm", std::ptr::null_mut())?;
            let parent = cast::comm(comm)?;
            let nonblocking = child_nonblocking(&parent, config)?;
            let (child, progress) = parent.split(color, key, nonblocking)?;
            cast::write(newcomm, "newcomm", child.map_or(std::ptr::null_mut(), cast::new_handle))?;
            Ok(progress)
        })
    }

    /// The survivors' communicator, without a new unique id.
    fn ncclCommShrink(
        comm: CommPtr,
        exclude_ranks_list: *mut c_int,
        exclude_ranks_count: c_int,
        newcomm: *mut CommPtr,
        config: *mut NcclConfig,
        shrink_flags: c_int,
    ) -> c_int {
        guard_progress("ncclCommShrink", || {
            cast::write(newcomm, "newcomm", std::ptr::null_mut())?;
            let parent = cast::comm(comm)?;
            let nonblocking = child_nonblocking(&parent, config)?;
            let excluded = cast::int_list(exclude_ranks_list, exclude_ranks_count, "excludeRanksList")?;
            let excluded = excluded
                .into_iter()
                .map(|r| {
                    usize::try_from(r)
                        .map_err(|_| Failure::invalid(format!("excludeRanksList holds rank {r}")))
                })
                .collect::<crate::status::Outcome<Vec<usize>>>()?;
            if shrink_flags & !1 != 0 {
                return Err(Failure::invalid(format!(
                    "shrinkFlags {shrink_flags:#x}: expected NCCL_SHRINK_DEFAULT or NCCL_SHRINK_ABORT"
                )));
            }
            let (child, progress) = parent.shrink(&excluded, shrink_flags & 1 != 0, nonblocking)?;
            cast::write(newcomm, "newcomm", cast::new_handle(child))?;
            Ok(progress)
        })
    }

    /// The id a grow of this communicator needs: one member calls it and hands it
    /// to the other members and to the new ranks.
    fn ncclCommGetUniqueId(comm: CommPtr, unique_id: *mut NcclUniqueId) -> c_int {
        guard("ncclCommGetUniqueId", || {
            if unique_id.is_null() {
                return Err(Failure::invalid("uniqueId is NULL"));
            }
            let id = cast::comm(comm)?.grow_id()?;
            cast::write(unique_id, "uniqueId", NcclUniqueId::from_bytes(id.as_bytes()))
        })
    }

    /// Grows a communicator to nRanks ranks: members pass their communicator and
    /// rank -1 (they keep their ranks); new ranks pass comm NULL and their rank.
    fn ncclCommGrow(
        comm: CommPtr,
        nranks: c_int,
        unique_id: *const NcclUniqueId,
        rank: c_int,
        newcomm: *mut CommPtr,
        config: *mut NcclConfig,
    ) -> c_int {
        guard_progress("ncclCommGrow", || {
            cast::write(newcomm, "newcomm", std::ptr::null_mut())?;
            let id = cast::read(unique_id, "uniqueId")?.bytes();
            let (child, progress) = if comm.is_null() {
                let nonblocking = cast::read_config(config)?.is_some_and(|c| c.blocking == 0);
                comm::join_grown(nranks, &id, rank, nonblocking)?
            } else {
                if rank != -1 {
                    return Err(Failure::invalid(format!(
                        "rank = {rank}: a member growing its communicator passes rank -1 \
                         (it keeps its rank); only new ranks (comm NULL) pass a rank"
                    )));
                }
                let parent = cast::comm(comm)?;
                let nonblocking = child_nonblocking(&parent, config)?;
                parent.grow(nranks, &id, nonblocking)?
            };
            cast::write(newcomm, "newcomm", cast::new_handle(child))?;
            Ok(progress)
        })
    }

    /// Joins a communicator through the roots of its `n_id` ids (each rank meets
    /// one root; the roots exchange their slices of the rank table).
    fn ncclCommInitRankScalable(
        newcomm: *mut CommPtr,
        nranks: c_int,
        myrank: c_int,
        n_id: c_int,
        comm_ids: *mut NcclUniqueId,
        config: *mut NcclConfig,
    ) -> c_int {
        guard_progress("ncclCommInitRankScalable", || {
            cast::write(newcomm, "comm", std::ptr::null_mut())?;
            let nonblocking = cast::read_config(config)?.is_some_and(|c| c.blocking == 0);
            let (shared, progress) =
                compat::init_scalable(nranks, myrank, n_id, comm_ids, nonblocking)?;
            cast::write(newcomm, "comm", cast::new_handle(shared))?;
            Ok(progress)
        })
    }

    /// A static string for each result code.
    fn ncclGetErrorString(result: c_int) -> *const c_char {
        error_string(result).as_ptr()
    }

    /// This thread's last error, else the error that stopped `comm`, else "".
    fn ncclGetLastError(comm: CommPtr) -> *const c_char {
        guard_value(c"".as_ptr(), || {
            last_error()
                .or_else(|| cast::comm(comm).ok().and_then(|c| c.stopped_message()))
                .unwrap_or(c"".as_ptr())
        })
    }

    /// The code of the error that stopped the communicator, else ncclInProgress while
    /// a nonblocking communicator has work queued or running, else ncclSuccess.
    fn ncclCommGetAsyncError(comm: CommPtr, async_error: *mut c_int) -> c_int {
        guard("ncclCommGetAsyncError", || {
            let code = cast::comm(comm)?.async_code();
            cast::write(async_error, "asyncError", code)
        })
    }

    /// Number of ranks.
    fn ncclCommCount(comm: CommPtr, count: *mut c_int) -> c_int {
        guard("ncclCommCount", || {
            let n = cast::comm(comm)?.facts()?.nranks;
            cast::write(count, "count", n as c_int)
        })
    }

    /// The device index given at init (0 for ncclCommInitRank).
    fn ncclCommCuDevice(comm: CommPtr, device: *mut c_int) -> c_int {
        guard("ncclCommCuDevice", || {
            let c = cast::comm(comm)?;
            c.facts()?;
            let d = c.device;
            cast::write(device, "device", d)
        })
    }

    /// This rank.
    fn ncclCommUserRank(comm: CommPtr, rank: *mut c_int) -> c_int {
        guard("ncclCommUserRank", || {
            let r = cast::comm(comm)?.facts()?.rank;
            cast::write(rank, "rank", r as c_int)
        })
    }

    /// Accepted for compatibility: host buffers need no registration.
    fn ncclCommRegister(
        comm: CommPtr,
        buff: *mut c_void,
        size: usize,
        handle: *mut *mut c_void,
    ) -> c_int {
        guard("ncclCommRegister", || {
            let _ = size;
            cast::comm(comm)?;
            cast::write(handle, "handle", memory::register_handle(buff))
        })
    }

    /// Accepted for compatibility.
    fn ncclCommDeregister(comm: CommPtr, handle: *mut c_void) -> c_int {
        guard("ncclCommDeregister", || {
            cast::comm(comm)?;
            if handle.is_null() {
                return Err(Failure::invalid("handle is NULL"));
            }
            Ok(())
        })
    }

    /// With NCCL_SUSPEND_MEM, refuses calls until ncclCommResume.
    fn ncclCommSuspend(comm: CommPtr, flags: c_int) -> c_int {
        guard("ncclCommSuspend", || compat::suspend(comm, flags))
    }

    /// Accepts calls again.
    fn ncclCommResume(comm: CommPtr) -> c_int {
        guard("ncclCommResume", || compat::resume(comm))
    }

    /// Device memory held (none) and whether suspended.
    fn ncclCommMemStats(comm: CommPtr, stat: c_int, value: *mut u64) -> c_int {
        guard("ncclCommMemStats", || compat::mem_stats(comm, stat, value))
    }

    /// Registers a window (answers ncclWinGetUserPtr only).
    fn ncclCommWindowRegister(
        comm: CommPtr,
        buff: *mut c_void,
        size: usize,
        win: *mut Window,
        win_flags: c_int,
    ) -> c_int {
        guard("ncclCommWindowRegister", || compat::window_register(comm, buff, size, win, win_flags))
    }

    /// Unregisters a window.
    fn ncclCommWindowDeregister(comm: CommPtr, win: Window) -> c_int {
        guard("ncclCommWindowDeregister", || compat::window_deregister(comm, win))
    }

    /// The address a window was registered with.
    fn ncclWinGetUserPtr(comm: CommPtr, win: Window, out_user_ptr: *mut *mut c_void) -> c_int {
        guard("ncclWinGetUserPtr", || compat::window_user_ptr(comm, win, out_user_ptr))
    }

    /// An op that multiplies each input by the scalar, then sums.
    fn ncclRedOpCreatePreMulSum(
        op: *mut c_int,
        scalar: *mut c_void,
        datatype: c_int,
        residence: c_int,
        comm: CommPtr,
    ) -> c_int {
        guard("ncclRedOpCreatePreMulSum", || {
            let c = cast::comm(comm)?;
            let dtype = dtype_of(datatype)?;
            if op.is_null() {
                return Err(Failure::invalid("op is NULL"));
            }
            let scalar = match residence {
                // ncclScalarDevice: read while each call runs.
                0 if !scalar.is_null() => Scalar::At(scalar as usize),
                // ncclScalarHostImmediate: read now.
                1 => Scalar::Value(cast::read_bytes::<8>(scalar, dtype.size())?),
                0 => return Err(Failure::invalid("scalar is NULL")),
                r => {
                    return Err(Failure::invalid(format!(
                        "residence {r} is not an ncclScalarResidence_t (0 or 1)"
                    )))
                }
            };
            let id = c
                .ops
                .lock()
                .map_err(|_| Failure::internal("op table poisoned"))?
                .create(dtype, scalar)?;
            cast::write(op, "op", id)
        })
    }

    /// Destroys an op from ncclRedOpCreatePreMulSum.
    fn ncclRedOpDestroy(op: c_int, comm: CommPtr) -> c_int {
        guard("ncclRedOpDestroy", || {
            cast::comm(comm)?
                .ops
                .lock()
                .map_err(|_| Failure::internal("op table poisoned"))?
                .destroy(op)
        })
    }

    /// Reduces to `root`.
    fn ncclReduce(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        op: c_int,
        root: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args { send: sendbuff, recv: recvbuff, count, dtype: datatype, op, root, stream: stream as usize };
        collective("ncclReduce", Kind::Reduce, comm, a)
    }

    /// In-place broadcast (deprecated in NCCL).
    fn ncclBcast(
        buff: *mut c_void,
        count: usize,
        datatype: c_int,
        root: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args { send: buff, recv: buff, count, dtype: datatype, op: 0, root, stream: stream as usize };
        collective("ncclBcast", Kind::Broadcast, comm, a)
    }

    /// Broadcasts from `root`.
    fn ncclBroadcast(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        root: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args { send: sendbuff, recv: recvbuff, count, dtype: datatype, op: 0, root, stream: stream as usize };
        collective("ncclBroadcast", Kind::Broadcast, comm, a)
    }

    /// Reduces across all ranks.
    fn ncclAllReduce(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        op: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args { send: sendbuff, recv: recvbuff, count, dtype: datatype, op, root: 0, stream: stream as usize };
        collective("ncclAllReduce", Kind::AllReduce, comm, a)
    }

    /// Reduces, leaving block `rank` of the result here.
    fn ncclReduceScatter(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        recvcount: usize,
        datatype: c_int,
        op: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args {
            send: sendbuff,
            recv: recvbuff,
            count: recvcount,
            dtype: datatype,
            op,
            root: 0,
            stream: stream as usize,
        };
        collective("ncclReduceScatter", Kind::ReduceScatter, comm, a)
    }

    /// Gathers every rank's block in rank order.
    fn ncclAllGather(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        sendcount: usize,
        datatype: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args {
            send: sendbuff,
            recv: recvbuff,
            count: sendcount,
            dtype: datatype,
            op: 0,
            root: 0,
            stream: stream as usize,
        };
        collective("ncclAllGather", Kind::AllGather, comm, a)
    }

    /// Block j of sendbuff goes to rank j.
    fn ncclAlltoAll(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        let a = Args { send: sendbuff, recv: recvbuff, count, dtype: datatype, op: 0, root: 0, stream: stream as usize };
        collective("ncclAlltoAll", Kind::AllToAll, comm, a)
    }

    /// Block i of recvbuff on root comes from rank i (a group of sends and receives).
    fn ncclGather(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        root: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        guard_progress("ncclGather", || {
            compat::rooted(true, sendbuff, recvbuff, count, datatype, root, comm, stream)
        })
    }

    /// Block i of sendbuff on root goes to rank i (a group of sends and receives).
    fn ncclScatter(
        sendbuff: *const c_void,
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        root: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        guard_progress("ncclScatter", || {
            compat::rooted(false, sendbuff, recvbuff, count, datatype, root, comm, stream)
        })
    }

    /// Sends `count` elements to `peer`.
    fn ncclSend(
        sendbuff: *const c_void,
        count: usize,
        datatype: c_int,
        peer: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        p2p("ncclSend", true, sendbuff, count, datatype, peer, comm, stream)
    }

    /// Receives `count` elements from `peer`.
    fn ncclRecv(
        recvbuff: *mut c_void,
        count: usize,
        datatype: c_int,
        peer: c_int,
        comm: CommPtr,
        stream: Stream,
    ) -> c_int {
        p2p("ncclRecv", false, recvbuff, count, datatype, peer, comm, stream)
    }

    /// Not provided (ncclInvalidUsage).
    fn ncclPutSignal(
        _localbuff: *const c_void,
        _count: usize,
        _datatype: c_int,
        _peer: c_int,
        _peer_win: Window,
        _peer_win_offset: usize,
        _sig_idx: c_int,
        _ctx: c_int,
        _flags: c_uint,
        _comm: CommPtr,
        _stream: Stream,
    ) -> c_int {
        guard("ncclPutSignal", || compat::unsupported(Missing::OneSided))
    }

    /// Not provided (ncclInvalidUsage).
    fn ncclSignal(
        _peer: c_int,
        _sig_idx: c_int,
        _ctx: c_int,
        _flags: c_uint,
        _comm: CommPtr,
        _stream: Stream,
    ) -> c_int {
        guard("ncclSignal", || compat::unsupported(Missing::OneSided))
    }

    /// Not provided (ncclInvalidUsage).
    fn ncclWaitSignal(_n_desc: c_int, _signal_descs: *mut c_void, _comm: CommPtr, _stream: Stream) -> c_int {
        guard("ncclWaitSignal", || compat::unsupported(Missing::OneSided))
    }

    /// Opens a group (groups nest).
    fn ncclGroupStart() -> c_int {
        guard("ncclGroupStart", group::start)
    }

    /// Closes a group; the outermost runs what was recorded.
    fn ncclGroupEnd() -> c_int {
        guard_progress("ncclGroupEnd", group::end)
    }

    /// Ends the group without running it; no estimate (ncclInvalidUsage).
    fn ncclGroupSimulateEnd(sim_info: *mut NcclSimInfo) -> c_int {
        guard("ncclGroupSimulateEnd", || compat::simulate_end(sim_info))
    }

    /// Device API: not provided (ncclInvalidUsage).
    fn ncclDevCommCreate(_comm: CommPtr, _reqs: DevPtr, _out_dev_comm: *mut c_void) -> c_int {
        guard("ncclDevCommCreate", || compat::unsupported(Missing::DeviceApi))
    }

    /// Device API: not provided (ncclInvalidUsage).
    fn ncclDevCommDestroy(_comm: CommPtr, _dev_comm: DevPtr) -> c_int {
        guard("ncclDevCommDestroy", || compat::unsupported(Missing::DeviceApi))
    }

    /// Device API: not provided (ncclInvalidUsage).
    fn ncclGetLsaMultimemDevicePointer(_window: Window, _offset: usize, _out_ptr: *mut *mut c_void) -> c_int {
        guard("ncclGetLsaMultimemDevicePointer", || compat::unsupported(Missing::DeviceApi))
    }

    /// Device API: not provided (ncclInvalidUsage).
    fn ncclGetPeerDevicePointer(
        _window: Window,
        _offset: usize,
        _peer: c_int,
        _out_ptr: *mut *mut c_void,
    ) -> c_int {
        guard("ncclGetPeerDevicePointer", || compat::unsupported(Missing::DeviceApi))
    }
}
