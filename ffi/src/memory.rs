//! `ncclMemAlloc` / `ncclMemFree` (host memory, 64-byte aligned, from the C
//! allocator so `free` works on it too) and `ncclCommRegister` (a no-op: host buffers
//! need no registration; the handle is only something to deregister).

use crate::status::{code, Failure, Outcome};
use std::ffi::c_void;

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
