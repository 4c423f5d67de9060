//! Huawei HCCL (`libhccl.so`, `MIXCCL_HCCL_LIB`), for Ascend devices.
//!
//! - The unique id is `HcclRootInfo`, 4108 bytes, made by `HcclGetRootInfo` and
//!   passed by pointer to `HcclCommInitRootInfo(nRanks, &info, rank, &comm)`.
//! - `HcclDataType` and `HcclReduceOp` have their own values (hccl_types.h).
//! - HCCL's public API has no abort: `HcclCommDestroy` stands in for it, which
//!   makes the library's calls in flight fail.

use super::{c_text, call_error, Ccl, CommHandle, Library};
use crate::device::StreamHandle;
use crate::element::DataType;
use crate::error::Result;
use crate::foreign::Library as Lib;
use crate::reduce::ReduceOp;
use std::ffi::{c_char, c_int, c_void};

type HcclResult = c_int;
type Comm = *mut c_void;
type Stream = *mut c_void;

/// `HCCL_ROOT_INFO_BYTES`.
const ROOT_INFO_BYTES: usize = 4108;

crate::foreign::foreign_api! {
    /// The HCCL entry points mixccl uses (hccl.h).
    struct Api {
        get_root_info: "HcclGetRootInfo" => fn(*mut u8) -> HcclResult;
        comm_init_root_info: "HcclCommInitRootInfo" => fn(u32, *const u8, u32, *mut Comm) -> HcclResult;
        all_reduce: "HcclAllReduce" => fn(*mut c_void, *mut c_void, u64, c_int, c_int, Comm, Stream) -> HcclResult;
        reduce_scatter: "HcclReduceScatter" => fn(*mut c_void, *mut c_void, u64, c_int, c_int, Comm, Stream) -> HcclResult;
        all_gather: "HcclAllGather" => fn(*mut c_void, *mut c_void, u64, c_int, Comm, Stream) -> HcclResult;
        broadcast: "HcclBroadcast" => fn(*mut c_void, u64, c_int, u32, Comm, Stream) -> HcclResult;
        comm_destroy: "HcclCommDestroy" => fn(Comm) -> HcclResult;
        get_comm_async_error: "HcclGetCommAsyncError" => fn(Comm, *mut HcclResult) -> HcclResult;
        get_error_string: "HcclGetErrorString" => fn(HcclResult) -> *const c_char;
    }
}

/// `HcclDataType` of `dtype`.
fn dtype_code(dtype: DataType) -> c_int {
    match dtype {
        DataType::I8 => 0,
        DataType::I32 => 2,
        DataType::F16 => 3,
        DataType::F32 => 4,
        DataType::I64 => 5,
        DataType::U64 => 6,
        DataType::U8 => 7,
        DataType::U32 => 9,
        DataType::F64 => 10,
        DataType::BF16 => 11,
        // Never passed: `Library::supports` keeps fp8 out of islands (-1 is no
        // HcclDataType, so HCCL would refuse it rather than misread the data).
        DataType::F8E4M3 | DataType::F8E5M2 | DataType::F8E4M3Fnuz | DataType::F8E5M2Fnuz => -1,
    }
}

/// `HcclReduceOp` of `op` (Avg is never passed: see `supports`).
fn op_code(op: ReduceOp) -> c_int {
    match op {
        ReduceOp::Sum | ReduceOp::Avg => 0,
        ReduceOp::Prod => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
    }
}

/// HCCL.
pub(crate) struct Hccl {
    lib: Lib,
    api: Api,
}

impl Hccl {
    /// Binds HCCL's entry points in `handle`.
    pub(crate) fn bind(handle: Lib) -> Result<Hccl> {
        // SAFETY: the declared signatures are hccl.h's.
        let api =
            unsafe { Api::bind(&handle, "") }.map_err(|e| super::load_error(Library::Hccl, e))?;
        Ok(Hccl { lib: handle, api })
    }

    fn check(&self, call: &str, rc: HcclResult) -> Result<()> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: HCCL returns a static string for any code.
        let text = unsafe { c_text((self.api.get_error_string)(rc)) };
        Err(call_error(Library::Hccl, call, rc, text))
    }
}

impl Ccl for Hccl {
    fn kind(&self) -> Library {
        Library::Hccl
    }

    fn path(&self) -> &str {
        &self.lib.name
    }

    fn unique_id(&self) -> Result<Vec<u8>> {
        let mut info = vec![0u8; ROOT_INFO_BYTES];
        // SAFETY: `info` holds HCCL_ROOT_INFO_BYTES writable bytes.
        self.check("HcclGetRootInfo", unsafe {
            (self.api.get_root_info)(info.as_mut_ptr())
        })?;
        Ok(info)
    }

    fn init(&self, id: &[u8], nranks: usize, rank: usize, device: i32) -> Result<CommHandle> {
        let _ = device; // HCCL uses the thread's current device (aclrtSetDevice).
        let mut info = vec![0u8; ROOT_INFO_BYTES];
        let n = id.len().min(ROOT_INFO_BYTES);
        info[..n].copy_from_slice(&id[..n]);
        let mut comm: Comm = std::ptr::null_mut();
        // SAFETY: `info` holds a root info; `comm` is a valid out-pointer.
        let rc = unsafe {
            (self.api.comm_init_root_info)(nranks as u32, info.as_ptr(), rank as u32, &mut comm)
        };
        self.check(
            &format!("HcclCommInitRootInfo(rank {rank} of {nranks})"),
            rc,
        )?;
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
                send as *mut c_void,
                recv as *mut c_void,
                count as u64,
                dtype_code(dtype),
                op_code(op),
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("HcclAllReduce({count} x {dtype}, {op})"), rc)
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
                send as *mut c_void,
                recv as *mut c_void,
                count as u64,
                dtype_code(dtype),
                op_code(op),
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("HcclReduceScatter({count} x {dtype}, {op})"), rc)
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
                send as *mut c_void,
                recv as *mut c_void,
                count as u64,
                dtype_code(dtype),
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(&format!("HcclAllGather({count} x {dtype})"), rc)
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
        // HCCL broadcasts in place; the caller has put the root's data in `recv`
        // (`send` is equal to it or unused).
        let _ = send;
        // SAFETY: as in all_reduce.
        let rc = unsafe {
            (self.api.broadcast)(
                recv as *mut c_void,
                count as u64,
                dtype_code(dtype),
                root as u32,
                comm as Comm,
                stream as Stream,
            )
        };
        self.check(
            &format!("HcclBroadcast({count} x {dtype}, root {root})"),
            rc,
        )
    }

    fn async_error(&self, comm: CommHandle) -> Result<()> {
        let mut state: HcclResult = 0;
        // SAFETY: a communicator of this library; `state` is a valid out-pointer.
        let rc = unsafe { (self.api.get_comm_async_error)(comm as Comm, &mut state) };
        self.check("HcclGetCommAsyncError", rc)?;
        match state {
            0 => Ok(()),
            e => self.check("a call on the stream (HcclGetCommAsyncError)", e),
        }
    }

    fn abort(&self, comm: CommHandle) -> Result<()> {
        self.destroy(comm)
    }

    fn destroy(&self, comm: CommHandle) -> Result<()> {
        // SAFETY: a communicator of this library.
        self.check("HcclCommDestroy", unsafe {
            (self.api.comm_destroy)(comm as Comm)
        })
    }
}
