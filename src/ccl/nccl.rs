//! NVIDIA NCCL (`libnccl.so.2`, `MIXCCL_NCCL_LIB`), and the libraries that copy its
//! API: AMD RCCL (`librccl.so.1`, `MIXCCL_RCCL_LIB`; the same `nccl*` names) and
//! Moore Threads MCCL (`libmccl.so`, `MIXCCL_MCCL_LIB`; `mccl*` names).
//!
//! - `ncclUniqueId` is 128 bytes passed by value to `ncclCommInitRank`.
//! - Data types and ops have NCCL's integer values, which are mixccl's own
//!   ([`DataType`] and [`ReduceOp`] are declared in NCCL's order).
//! - `ncclCommAbort` stops calls in flight and frees the communicator.

use super::{c_text, call_error, Ccl, CommHandle, Library};
use crate::device::StreamHandle;
use crate::element::DataType;
use crate::error::Result;
use crate::foreign::Library as Lib;
use crate::reduce::ReduceOp;
use std::ffi::{c_char, c_int, c_void};

type NcclResult = c_int;
type Comm = *mut c_void;
type Stream = *mut c_void;

/// `ncclUniqueId`: `{ char internal[128]; }`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [u8; 128],
}

crate::foreign::foreign_api! {
    /// The NCCL entry points mixccl uses (nccl.h), named without their prefix.
    struct Api {
        get_unique_id: "GetUniqueId" => fn(*mut UniqueId) -> NcclResult;
        comm_init_rank: "CommInitRank" => fn(*mut Comm, c_int, UniqueId, c_int) -> NcclResult;
        all_reduce: "AllReduce" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult;
        reduce_scatter: "ReduceScatter" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult;
        all_gather: "AllGather" => fn(*const c_void, *mut c_void, usize, c_int, Comm, Stream) -> NcclResult;
        broadcast: "Broadcast" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Stream) -> NcclResult;
        comm_abort: "CommAbort" => fn(Comm) -> NcclResult;
        comm_get_async_error: "CommGetAsyncError" => fn(Comm, *mut NcclResult) -> NcclResult;
        comm_destroy: "CommDestroy" => fn(Comm) -> NcclResult;
        get_error_string: "GetErrorString" => fn(NcclResult) -> *const c_char;
    }
}

/// NCCL or a library with its API.
pub(crate) struct Nccl {
    kind: Library,
    lib: Lib,
    api: Api,
}

impl Nccl {
    /// Binds `lib`'s entry points in `handle` (`nccl*`, or `mccl*` for MCCL).
    pub(crate) fn bind(kind: Library, handle: Lib) -> Result<Nccl> {
        let prefix = if kind == Library::Mccl {
            "mccl"
        } else {
            "nccl"
        };
        // SAFETY: the declared signatures are nccl.h's (mccl.h copies them).
        let api = unsafe { Api::bind(&handle, prefix) }.map_err(|e| super::load_error(kind, e))?;
        Ok(Nccl {
            kind,
            lib: handle,
            api,
        })
    }

    fn check(&self, call: &str, rc: NcclResult) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: the library returns a static string for any code.
        let text = unsafe { c_text((self.api.get_error_string)(rc)) };
        Err(call_error(self.kind, call, rc, text))
    }
}

impl Ccl for Nccl {
    fn kind(&self) -> Library {
        self.kind
    }

    fn path(&self) -> &str {
        &self.lib.name
    }

    fn unique_id(&self) -> Result<Vec<u8>> {
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: `id` is a valid out-pointer of the declared layout.
        self.check("GetUniqueId", unsafe { (self.api.get_unique_id)(&mut id) })?;
        Ok(id.internal.to_vec())
    }

    fn init(&self, id: &[u8], nranks: usize, rank: usize, device: i32) -> Result<CommHandle> {
        let _ = device; // NCCL uses the calling thread's current device.
        let mut uid = UniqueId { internal: [0; 128] };
        let n = id.len().min(128);
        uid.internal[..n].copy_from_slice(&id[..n]);
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id is passed by value.
        let rc =
            unsafe { (self.api.comm_init_rank)(&mut comm, nranks as c_int, uid, rank as c_int) };
        self.check(&format!("CommInitRank(rank {rank} of {nranks})"), rc)?;
        Ok(comm as usize)
    }

    unsafe fn all_reduce(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: StreamHandle,
    ) -> Result<()> {
        // SAFETY: the caller's contract; the handles came from this library.
        let rc = unsafe {
            (self.api.all_reduce)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                op as c_int,
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("AllReduce({count} x {dtype}, {op})"), rc)
    }

    unsafe fn reduce_scatter(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: StreamHandle,
    ) -> Result<()> {
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.reduce_scatter)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                op as c_int,
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("ReduceScatter({count} x {dtype}, {op})"), rc)
    }

    unsafe fn all_gather(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        stream: StreamHandle,
    ) -> Result<()> {
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("AllGather({count} x {dtype})"), rc)
    }

    unsafe fn broadcast(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        root: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.broadcast)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                dtype as c_int,
                root as c_int,
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("Broadcast({count} x {dtype}, root {root})"), rc)
    }

    fn async_error(&self, comm: CommHandle) -> Result<()> {
        let mut state: NcclResult = 0;
        // SAFETY: a communicator of this library; `state` is a valid out-pointer.
        let rc = unsafe { (self.api.comm_get_async_error)(comm as Comm, &mut state) };
        self.check("CommGetAsyncError", rc)?;
        // ncclInProgress (7): a nonblocking operation still running is no error.
        match state {
            0 | 7 => Ok(()),
            e => self.check("a call on the stream (CommGetAsyncError)", e),
        }
    }

    fn abort(&self, comm: CommHandle) -> Result<()> {
        // SAFETY: a communicator of this library; abort is safe from any thread.
        self.check("CommAbort", unsafe { (self.api.comm_abort)(comm as Comm) })
    }

    fn destroy(&self, comm: CommHandle) -> Result<()> {
        // SAFETY: a communicator of this library with no call in flight.
        self.check("CommDestroy", unsafe {
            (self.api.comm_destroy)(comm as Comm)
        })
    }
}
