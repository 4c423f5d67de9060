//! Moore Threads MUSA through the MUSA runtime, `libmusart.so` (`MIXCCL_MUSA_LIB`
//! overrides): the CUDA-runtime-shaped shim of `cudart.rs` with what MUSA does its
//! own way.
//!
//! - The runtime initialises itself on first use; opening asks for the current
//!   device so a machine without a usable device fails early, in its own words.
//! - `musaPointerAttributes` is CUDA 11's `{type, device, devicePointer,
//!   hostPointer}` with Unregistered 0, Host 1, Device 2, Managed 3.
//! - There is no address-range query, so allocations are not cached by range.
//! - Pinned memory: `musaMallocHost`, `musaFreeHost`.
//! - `musaEventQuery`'s "not ready" is told by its name, `musaErrorNotReady`, whose
//!   value MUSA does not publish.

use super::cudart::{Cudart, CudartApi, Flavor, PointerAttributes, RtError};
use super::loader::{self, Library};
use super::Vendor;
use crate::error::Result;
use std::ffi::{c_int, c_void};

/// The MUSA shim.
pub(crate) type Musa = Cudart<MusaFlavor>;

const MUSA_MEMORY_TYPE_DEVICE: c_int = 2;

crate::foreign::foreign_api! {
    /// The MUSA entry points outside the shared runtime API (musa_runtime_api.h).
    pub(crate) struct MusaApi {
        malloc_host: "musaMallocHost" => fn(*mut *mut c_void, usize) -> RtError;
        free_host: "musaFreeHost" => fn(*mut c_void) -> RtError;
    }
}

/// What MUSA does its own way: its pinned-memory entry points.
pub(crate) struct MusaFlavor {
    api: MusaApi,
}

impl Flavor for MusaFlavor {
    const VENDOR: Vendor = Vendor::Musa;
    const PREFIX: &'static str = "musa";

    fn open(lib: &Library, rt: &CudartApi) -> Result<MusaFlavor> {
        // SAFETY: every signature in MusaApi is musa_runtime_api.h's.
        let api =
            unsafe { MusaApi::bind(lib, "") }.map_err(|e| loader::load_error(Vendor::Musa, e))?;
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        rt.check(Vendor::Musa, "musaGetDevice", unsafe {
            (rt.get_device)(&mut dev)
        })?;
        Ok(MusaFlavor { api })
    }

    fn is_device(&self, attr: &PointerAttributes) -> bool {
        attr.memory_type == MUSA_MEMORY_TYPE_DEVICE
    }

    fn range(&self, _ptr: usize) -> Option<(usize, usize)> {
        None
    }

    unsafe fn alloc_pinned(&self, p: *mut *mut c_void, len: usize) -> (&'static str, RtError) {
        // SAFETY: the caller's contract.
        ("musaMallocHost", unsafe { (self.api.malloc_host)(p, len) })
    }

    unsafe fn free_pinned(&self, p: *mut c_void) -> (&'static str, RtError) {
        // SAFETY: the caller's contract: `p` came from musaMallocHost.
        ("musaFreeHost", unsafe { (self.api.free_host)(p) })
    }

    fn not_ready(&self, _rc: RtError, name: &str) -> bool {
        name == "musaErrorNotReady"
    }
}
