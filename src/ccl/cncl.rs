//! Cambricon CNCL (`libcncl.so`, `MIXCCL_CNCL_LIB`), for MLU devices.
//!
//! - The unique id is a `cnclCliqueId` from `cnclGetCliqueId`, passed by pointer
//!   to `cnclInitComms(comms, 1, &device, &rank, nranks, &clique)`, which makes one
//!   communicator per call here. It is handled as an opaque block of
//!   [`CLIQUE_BYTES`], more than the struct holds.
//! - Only the types whose `cnclDataType_t` values mixccl relies on are offered
//!   (int8 0, int32 2, float16 3, float32 4); other types leave the call to mixccl.
//!   Not yet checked against a real CNCL: the stubs of `tests/stubs/` cover NCCL
//!   and HCCL.

use super::{c_text, call_error, Ccl, CommHandle, Library};
use crate::device::StreamHandle;
use crate::element::DataType;
use crate::error::Result;
use crate::foreign::Library as Lib;
use crate::reduce::ReduceOp;
use std::ffi::{c_char, c_int, c_void};

type CnclResult = c_int;
type Comm = *mut c_void;
type Queue = *mut c_void;

/// Bytes reserved for a `cnclCliqueId` (the real struct is smaller).
const CLIQUE_BYTES: usize = 1024;

crate::foreign::foreign_api! {
    /// The CNCL entry points mixccl uses (cncl.h).
    struct Api {
        get_clique_id: "cnclGetCliqueId" => fn(*mut u8) -> CnclResult;
        init_comms: "cnclInitComms" => fn(*mut Comm, c_int, *const c_int, *const c_int, c_int, *const u8) -> CnclResult;
        all_reduce: "cnclAllReduce" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Queue) -> CnclResult;
        reduce_scatter: "cnclReduceScatter" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Queue) -> CnclResult;
        all_gather: "cnclAllGather" => fn(*const c_void, *mut c_void, usize, c_int, Comm, Queue) -> CnclResult;
        broadcast: "cnclBroadcast" => fn(*const c_void, *mut c_void, usize, c_int, c_int, Comm, Queue) -> CnclResult;
        abort_comm: "cnclAbortComm" => fn(Comm) -> CnclResult;
        free_comm: "cnclFreeComm" => fn(Comm) -> CnclResult;
        get_error_str: "cnclGetErrorStr" => fn(CnclResult) -> *const c_char;
    }
}

/// `cnclDataType_t` of `dtype`, where mixccl offers it.
fn dtype_code(dtype: DataType) -> Option<c_int> {
    match dtype {
        DataType::I8 => Some(0),
        DataType::I32 => Some(2),
        DataType::F16 => Some(3),
        DataType::F32 => Some(4),
        _ => None,
    }
}

/// Does mixccl hand CNCL calls on `dtype`?
pub(crate) fn offers(dtype: DataType) -> bool {
    dtype_code(dtype).is_some()
}

/// CNCL.
pub(crate) struct Cncl {
    lib: Lib,
    api: Api,
}

impl Cncl {
    /// Binds CNCL's entry points in `handle`.
    pub(crate) fn bind(handle: Lib) -> Result<Cncl> {
        // SAFETY: the declared signatures are cncl.h's.
        let api =
            unsafe { Api::bind(&handle, "") }.map_err(|e| super::load_error(Library::Cncl, e))?;
        Ok(Cncl { lib: handle, api })
    }

    fn check(&self, call: &str, rc: CnclResult) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: CNCL returns a static string for any code.
        let text = unsafe { c_text((self.api.get_error_str)(rc)) };
        Err(call_error(Library::Cncl, call, rc, text))
    }

    fn code(&self, dtype: DataType) -> Result<c_int> {
        dtype_code(dtype)
            .ok_or_else(|| call_error(Library::Cncl, "type", -1, format!("{dtype} not offered")))
    }
}

impl Ccl for Cncl {
    fn kind(&self) -> Library {
        Library::Cncl
    }

    fn path(&self) -> &str {
        &self.lib.name
    }

    fn unique_id(&self) -> Result<Vec<u8>> {
        let mut id = vec![0u8; CLIQUE_BYTES];
        // SAFETY: `id` is larger than a cnclCliqueId.
        self.check("cnclGetCliqueId", unsafe {
            (self.api.get_clique_id)(id.as_mut_ptr())
        })?;
        Ok(id)
    }

    fn init(&self, id: &[u8], nranks: usize, rank: usize, device: i32) -> Result<CommHandle> {
        let mut clique = vec![0u8; CLIQUE_BYTES];
        let n = id.len().min(CLIQUE_BYTES);
        clique[..n].copy_from_slice(&id[..n]);
        let mut comm: Comm = std::ptr::null_mut();
        let (dev, r) = (device as c_int, rank as c_int);
        // SAFETY: one communicator out, one device and rank in, a clique id buffer.
        let rc = unsafe {
            (self.api.init_comms)(&mut comm, 1, &dev, &r, nranks as c_int, clique.as_ptr())
        };
        self.check(&format!("cnclInitComms(rank {rank} of {nranks})"), rc)?;
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
        let t = self.code(dtype)?;
        // SAFETY: the caller's contract; the handles came from this library.
        let rc = unsafe {
            (self.api.all_reduce)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                t,
                op as c_int,
                comm as Comm,
                stream as Queue,
            )
        };
        self.check(&format!("cnclAllReduce({count} x {dtype}, {op})"), rc)
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
        let t = self.code(dtype)?;
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.reduce_scatter)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                t,
                op as c_int,
                comm as Comm,
                stream as Queue,
            )
        };
        self.check(&format!("cnclReduceScatter({count} x {dtype}, {op})"), rc)
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
        let t = self.code(dtype)?;
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                t,
                comm as Comm,
                stream as Queue,
            )
        };
        self.check(&format!("cnclAllGather({count} x {dtype})"), rc)
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
        let t = self.code(dtype)?;
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.broadcast)(
                send as *const c_void,
                recv as *mut c_void,
                count,
                t,
                root as c_int,
                comm as Comm,
                stream as Queue,
            )
        };
        self.check(
            &format!("cnclBroadcast({count} x {dtype}, root {root})"),
            rc,
        )
    }

    fn abort(&self, comm: CommHandle) -> Result<()> {
        // SAFETY: a communicator of this library; abort is safe from any thread.
        self.check("cnclAbortComm", unsafe {
            (self.api.abort_comm)(comm as Comm)
        })
    }

    fn destroy(&self, comm: CommHandle) -> Result<()> {
        // SAFETY: a communicator of this library with no call in flight.
        self.check("cnclFreeComm", unsafe {
            (self.api.free_comm)(comm as Comm)
        })
    }
}
