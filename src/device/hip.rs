//! AMD ROCm and Hygon DCU through the HIP runtime, `libamdhip64.so.6`/`.5`
//! (`MIXCCL_HIP_LIB` overrides): the CUDA-runtime-shaped shim of `cudart.rs` with
//! what HIP does its own way.
//!
//! - `hipInit(0)` when the library is opened.
//! - `hipPointerAttribute_t` has one layout in ROCm 5 and 6 (the memory type, an
//!   `int` enum, first), but `hipMemoryType`'s values changed in ROCm 6.0 to follow
//!   CUDA's: ROCm 5 has Host 0, Device 1, Array 2, Unified 3, Managed 4; ROCm 6 has
//!   Unregistered 0, Host 1, Device 2, Managed 3, Array 10, Unified 11. The major
//!   version from `hipRuntimeGetVersion` (`major * 10^7 + minor * 10^5 + patch`)
//!   picks the table. Managed memory (`isManaged`) is readable from the host.
//! - `hipMemGetAddressRange` gives the allocation range, so answers are cached.
//! - Pinned memory: `hipHostMalloc(ptr, size, hipHostMallocDefault)`, `hipHostFree`.
//! - `hipEventQuery` says not ready with hipErrorNotReady (600).

use super::cudart::{Cudart, CudartApi, Flavor, PointerAttributes, RtError, SUCCESS};
use super::loader::{self, Library};
use super::Vendor;
use crate::error::Result;
use std::ffi::{c_int, c_uint, c_void};

/// The HIP shim.
pub(crate) type Hip = Cudart<HipFlavor>;

const HIP_ERROR_NOT_READY: RtError = 600;
const HIP_HOST_MALLOC_DEFAULT: c_uint = 0;
/// `hipMemoryTypeDevice` and `hipMemoryTypeArray` before ROCm 6.
const ROCM5_DEVICE_TYPES: [c_int; 2] = [1, 2];
/// `hipMemoryTypeDevice` and `hipMemoryTypeArray` from ROCm 6.
const ROCM6_DEVICE_TYPES: [c_int; 2] = [2, 10];

crate::foreign::foreign_api! {
    /// The HIP entry points outside the shared runtime API (hip_runtime_api.h).
    pub(crate) struct HipApi {
        init: "hipInit" => fn(c_uint) -> RtError;
        runtime_get_version: "hipRuntimeGetVersion" => fn(*mut c_int) -> RtError;
        mem_get_address_range: "hipMemGetAddressRange" => fn(*mut *mut c_void, *mut usize, *mut c_void) -> RtError;
        host_malloc: "hipHostMalloc" => fn(*mut *mut c_void, usize, c_uint) -> RtError;
        host_free: "hipHostFree" => fn(*mut c_void) -> RtError;
    }
}

/// What HIP does its own way: its extra entry points and its `hipMemoryType` table.
pub(crate) struct HipFlavor {
    api: HipApi,
    /// `hipMemoryType` values that mean device memory for this runtime's version.
    device_types: [c_int; 2],
}

impl Flavor for HipFlavor {
    const VENDOR: Vendor = Vendor::Hip;
    const PREFIX: &'static str = "hip";

    fn open(lib: &Library, rt: &CudartApi) -> Result<HipFlavor> {
        // SAFETY: every signature in HipApi is hip_runtime_api.h's.
        let api =
            unsafe { HipApi::bind(lib, "") }.map_err(|e| loader::load_error(Vendor::Hip, e))?;
        // SAFETY: hipInit takes flags by value; 0 is the only documented value.
        rt.check(Vendor::Hip, "hipInit", unsafe { (api.init)(0) })?;
        let mut version: c_int = 0;
        // SAFETY: `version` is a valid out-pointer.
        rt.check(Vendor::Hip, "hipRuntimeGetVersion", unsafe {
            (api.runtime_get_version)(&mut version)
        })?;
        let device_types = if version / 10_000_000 < 6 {
            ROCM5_DEVICE_TYPES
        } else {
            ROCM6_DEVICE_TYPES
        };
        Ok(HipFlavor { api, device_types })
    }

    fn is_device(&self, attr: &PointerAttributes) -> bool {
        self.device_types.contains(&attr.memory_type) && attr.is_managed == 0
    }

    fn range(&self, ptr: usize) -> Option<(usize, usize)> {
        let mut base: *mut c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: valid out-pointers; the address is only looked up.
        let rc =
            unsafe { (self.api.mem_get_address_range)(&mut base, &mut size, ptr as *mut c_void) };
        (rc == SUCCESS && !base.is_null()).then_some((base as usize, size))
    }

    unsafe fn alloc_pinned(&self, p: *mut *mut c_void, len: usize) -> (&'static str, RtError) {
        // SAFETY: the caller's contract; 0 is hipHostMallocDefault.
        let rc = unsafe { (self.api.host_malloc)(p, len, HIP_HOST_MALLOC_DEFAULT) };
        ("hipHostMalloc", rc)
    }

    unsafe fn free_pinned(&self, p: *mut c_void) -> (&'static str, RtError) {
        // SAFETY: the caller's contract: `p` came from hipHostMalloc.
        ("hipHostFree", unsafe { (self.api.host_free)(p) })
    }

    fn not_ready(&self, rc: RtError, _name: &str) -> bool {
        rc == HIP_ERROR_NOT_READY
    }
}
