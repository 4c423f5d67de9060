//! `ncclMemAlloc` / `ncclMemFree`: device memory on the current device of the first
//! loaded device runtime (as NCCL allocates on the current CUDA device), else host
//! memory, 64-byte aligned, from the C allocator. `ncclCommRegister` is a no-op:
//! buffers need no registration; the handle is only something to deregister.

use crate::status::{code, Failure, Outcome};
use mixccl::device::{Runtimes, Vendor};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Mutex;

/// Device allocations made by `ncclMemAlloc`: address -> (runtime, device).
static DEVICE_ALLOCS: Mutex<Option<HashMap<usize, (Vendor, i32)>>> = Mutex::new(None);

/// `size` bytes for `ncclMemAlloc`: on the current device of the first loaded
/// device runtime, else [`alloc`]'s host memory.
pub(crate) fn alloc_for_nccl(size: usize) -> Outcome<*mut c_void> {
    let Some(dev) = Runtimes::global().loaded().next() else {
        return alloc(size);
    };
    let index = dev.current_device()?;
    let addr = dev.alloc_device(index, size)?;
    DEVICE_ALLOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(HashMap::new)
        .insert(addr, (dev.vendor(), index));
    Ok(addr as *mut c_void)
}

/// Frees memory from [`alloc_for_nccl`] (NULL is a no-op).
///
/// # Safety
/// `p` is NULL or came from [`alloc_for_nccl`] and was not freed yet.
pub(crate) unsafe fn free_for_nccl(p: *mut c_void) -> Outcome {
    let found = DEVICE_ALLOCS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_mut()
        .and_then(|m| m.remove(&(p as usize)));
    match found {
        Some((vendor, index)) => {
            let rt = Runtimes::global();
            rt.forget(p as usize);
            // SAFETY: the address came from this runtime's alloc_device (recorded above).
            unsafe { rt.get(vendor)?.free_device(index, p as usize) }?;
            Ok(())
        }
        None => {
            // SAFETY: by the contract above, p is NULL or a live alloc() block.
            unsafe { free(p) };
            Ok(())
        }
    }
}

/// Alignment of `ncclMemAlloc`: a cache line, and enough for every element type.
const ALIGN: usize = 64;

/// `size` bytes (at least one) of 64-byte-aligned host memory.
pub(crate) fn alloc(size: usize) -> Outcome<*mut c_void> {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `p` is a valid out-pointer; ALIGN is a power of two and a multiple of
    // the pointer size, as posix_memalign requires.
    let rc = unsafe { libc::posix_memalign(&mut p, ALIGN, size.max(1)) };
    if rc != 0 || p.is_null() {
        return Err(Failure {
            code: code::SYSTEM_ERROR,
            message: format!(
                "posix_memalign of {size} bytes failed: {}",
                std::io::Error::from_raw_os_error(rc)
            ),
        });
    }
    Ok(p)
}

/// Frees memory from [`alloc`] (NULL is a no-op).
///
/// # Safety
/// `p` is NULL or came from [`alloc`] and was not freed yet.
pub(crate) unsafe fn free(p: *mut c_void) {
    // SAFETY: by the contract above, p is NULL or a live posix_memalign block.
    unsafe { libc::free(p) }
}

/// The handle `ncclCommRegister` returns for `buff`: the buffer's own address, or a
/// non-NULL placeholder for a NULL buffer.
pub(crate) fn register_handle(buff: *mut c_void) -> *mut c_void {
    static PLACEHOLDER: u8 = 0;
    if buff.is_null() {
        std::ptr::addr_of!(PLACEHOLDER).cast_mut().cast()
    } else {
        buff
    }
}
