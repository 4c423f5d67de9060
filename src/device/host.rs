//! Host memory for staging: page-locked buffers from a device runtime when one is
//! given (its copies then run at full speed), else plain aligned host memory.

use super::Device;
use crate::debug::log_warn;
use crate::error::{Error, Result};

/// Alignment of plain host staging memory: a page.
const ALIGN: usize = 4096;

/// A host buffer owned by mixccl, freed on drop: pinned by `owner`'s runtime, or
/// plain aligned memory when there is no owner.
pub struct HostMemory {
    ptr: *mut u8,
    len: usize,
    owner: Option<(&'static dyn Device, i32)>,
}

// SAFETY: the buffer is plain memory owned by this value; the runtime handle is Sync.
unsafe impl Send for HostMemory {}

impl HostMemory {
    /// `len` bytes, pinned by `owner` (device runtime and index) when given.
    pub fn new(len: usize, owner: Option<(&'static dyn Device, i32)>) -> Result<HostMemory> {
        let ptr = match owner {
            Some((d, index)) => d.alloc_pinned(index, len)?,
            None => {
                let mut p: *mut libc::c_void = std::ptr::null_mut();
                // SAFETY: valid out-pointer; ALIGN is a power of two and a multiple of
                // the pointer size.
                let rc = unsafe { libc::posix_memalign(&mut p, ALIGN, len.max(1)) };
                if rc != 0 || p.is_null() {
                    return Err(Error::io(
                        format!("allocating {len} bytes of staging memory"),
                        std::io::Error::from_raw_os_error(rc),
                    ));
                }
                p.cast()
            }
        };
        Ok(HostMemory { ptr, len, owner })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr
    }

    /// Which runtime pinned it, if any.
    pub fn owner(&self) -> Option<(&'static dyn Device, i32)> {
        self.owner
    }

    /// The buffer's bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is a live allocation of `len` bytes owned by self, and the
        // exclusive borrow of self makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        match self.owner {
            Some((d, index)) => {
                // SAFETY: `ptr` came from this runtime's alloc_pinned and is freed once.
                if let Err(e) = unsafe { d.free_pinned(index, self.ptr) } {
                    log_warn!(None, "freeing pinned staging memory: {e}");
                }
            }
            // SAFETY: `ptr` came from posix_memalign and is freed once.
            None => unsafe { libc::free(self.ptr.cast()) },
        }
    }
}
