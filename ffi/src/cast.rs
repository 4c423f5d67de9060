//! Every conversion between C's raw pointers and Rust values lives here (like
//! rustls-ffi's `Castable`): communicator handles, out-parameters, caller buffers,
//! strings, the config struct and the unique id. Other modules hold addresses as
//! [`RawBuf`] and ask this module for slices, under the contract written on each
//! function. The helpers here trust what `include/nccl.h` asks of C callers (an
//! out-parameter points to writable storage of its type, a buffer holds the bytes its
//! count says); they are crate-private and only ever given the pointers an exported
//! `unsafe extern "C"` function received, never pointers made up in Rust.
//!
//! A communicator handle (`ncclComm_t`) is a pointer to a boxed [`CommBox`]. Every
//! live handle's address is in a registry, checked before the box is touched, so a
//! NULL, destroyed or never-initialised handle is an error code, not undefined
//! behaviour (unless a newer communicator's box took over a destroyed one's address).

use crate::comm::Shared;
use crate::status::{Failure, Outcome};
use mixccl::MemRef;
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};

/// What an `ncclComm_t` points to.
pub(crate) struct CommBox {
    magic: u64,
    shared: Arc<Shared>,
}

/// `ncclComm_t`.
pub(crate) type CommPtr = *mut CommBox;

const COMM_MAGIC: u64 = u64::from_le_bytes(*b"mixcclCM");

/// Addresses of the live `CommBox`es.
static LIVE: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

fn live() -> MutexGuard<'static, Option<HashSet<usize>>> {
    // The set stays consistent even if a holder panicked: each insert/remove is whole.
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Boxes `shared` into a new handle for C.
pub(crate) fn new_handle(shared: Arc<Shared>) -> CommPtr {
    let ptr = Box::into_raw(Box::new(CommBox {
        magic: COMM_MAGIC,
        shared,
    }));
    live().get_or_insert_with(HashSet::new).insert(ptr as usize);
    ptr
}

/// The communicator behind a handle: NULL is ncclInvalidArgument, anything not live
/// is ncclInvalidUsage.
pub(crate) fn comm(ptr: *const CommBox) -> Outcome<Arc<Shared>> {
    if ptr.is_null() {
        return Err(Failure::invalid("comm is NULL"));
    }
    let set = live();
    if !set.as_ref().is_some_and(|s| s.contains(&(ptr as usize))) {
        return Err(Failure::usage(format!(
            "comm {ptr:p} is not a live communicator (destroyed, aborted or never initialised)"
        )));
    }
    // SAFETY: the address is registered, and boxes leave the registry (under this
    // lock, which we hold) before they are freed, so it points to a live CommBox.
    let b = unsafe { &*ptr };
    if b.magic != COMM_MAGIC {
        return Err(Failure::internal(format!("comm {ptr:p}: corrupted handle")));
    }
    Ok(b.shared.clone())
}

/// Unregisters and frees a handle, returning its communicator; NULL gives None.
pub(crate) fn take_handle(ptr: CommPtr) -> Outcome<Option<Arc<Shared>>> {
    if ptr.is_null() {
        return Ok(None);
    }
    let removed = live().as_mut().is_some_and(|s| s.remove(&(ptr as usize)));
    if !removed {
        return Err(Failure::usage(format!(
            "comm {ptr:p} is not a live communicator (destroyed twice, or never initialised)"
        )));
    }
    // SAFETY: the address was registered, so it came from Box::into_raw in new_handle,
    // and removing it from the registry made this the only owner.
    let b = unsafe { Box::from_raw(ptr) };
    Ok(Some(b.shared))
}

/// Stores `value` in a caller's out-parameter.
pub(crate) fn write<T>(out: *mut T, what: &str, value: T) -> Outcome {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null; nccl.h requires out-parameters to point to writable storage
    // of their type. `write` does not read or drop the old contents.
    unsafe { out.write(value) };
    Ok(())
}

/// Copies a caller's in-parameter passed by pointer.
pub(crate) fn read<T: Copy>(ptr: *const T, what: &str) -> Outcome<T> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null; the caller passes a pointer to an initialised value of the
    // declared type. `read_unaligned` copes with any alignment.
    Ok(unsafe { ptr.read_unaligned() })
}

/// Copies a caller's array of `count` ints (NULL is fine when count is 0).
pub(crate) fn int_list(ptr: *const c_int, count: c_int, what: &str) -> Outcome<Vec<c_int>> {
    let n = usize::try_from(count)
        .map_err(|_| Failure::invalid(format!("{what}: count {count} is negative")))?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL with {n} entries")));
    }
    if n > 1 << 24 {
        return Err(Failure::invalid(format!(
            "{what}: {n} entries is more than any job has ranks"
        )));
    }
    // SAFETY: non-null; nccl.h requires the array to hold `count` ints.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
}

/// Stores `values` in the array a caller passed (`ncclCommInitAll`'s `comm`).
pub(crate) fn write_array<T>(out: *mut T, what: &str, values: Vec<T>) -> Outcome {
    if out.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    for (i, v) in values.into_iter().enumerate() {
        // SAFETY: nccl.h requires the array to hold at least as many elements as were
        // asked for, which is how many `values` holds.
        unsafe { out.add(i).write(v) };
    }
    Ok(())
}

/// Copies `n` elements of a caller's array; NULL gives None.
pub(crate) fn read_array<T: Copy>(ptr: *const T, n: usize) -> Option<Vec<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-null; nccl.h requires the array (devlist) to hold n elements.
    Some(unsafe { std::slice::from_raw_parts(ptr, n) }.to_vec())
}

/// A NUL-terminated string from C.
pub(crate) fn c_str(ptr: *const c_char, what: &str) -> Outcome<String> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null; the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// Copies `N` bytes from a caller's pointer (a scalar, the hex text of an id).
pub(crate) fn read_bytes<const N: usize>(ptr: *const c_void, len: usize) -> Outcome<[u8; N]> {
    if ptr.is_null() {
        return Err(Failure::invalid("pointer is NULL"));
    }
    let mut out = [0u8; N];
    let len = len.min(N);
    // SAFETY: non-null; the caller's object is at least `len` bytes (a scalar of the
    // op's datatype); `out` is a separate local array.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), out.as_mut_ptr(), len) };
    Ok(out)
}

/// A caller's buffer as an address and a length in bytes, checked non-null when the
/// length is not zero. Plain integers, so recorded calls can cross threads; the
/// caller's contract (nccl.h) keeps the memory valid until the call or group ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawBuf {
    pub addr: usize,
    pub len: usize,
}

impl RawBuf {
    /// `len` bytes at `ptr`. NULL is fine for an empty buffer; the range must not wrap
    /// around the address space or exceed `isize::MAX` bytes.
    pub fn new(ptr: *const c_void, len: usize, what: &str) -> Outcome<RawBuf> {
        let addr = ptr as usize;
        if len == 0 {
            return Ok(RawBuf { addr, len });
        }
        if ptr.is_null() {
            return Err(Failure::invalid(format!("{what} is NULL with {len} bytes")));
        }
        if len > isize::MAX as usize || addr.checked_add(len).is_none() {
            return Err(Failure::invalid(format!(
                "{what} of {len} bytes at {ptr:p} does not fit in the address space"
            )));
        }
        Ok(RawBuf { addr, len })
    }

    /// The empty buffer.
    pub const EMPTY: RawBuf = RawBuf { addr: 0, len: 0 };

    /// The buffer as a [`MemRef`], its memory kind (host, or a loaded device
    /// runtime's memory) looked up now. An address that is neither readable host
    /// memory nor claimed by a runtime is an error naming it.
    pub fn mem(self) -> Outcome<MemRef> {
        // SAFETY: the address came from an exported function's caller, who keeps the
        // buffer valid and untouched until the call (or its group) returns (nccl.h).
        Ok(unsafe { MemRef::new(self.addr as *const u8, self.len) }?)
    }

    /// `len` bytes starting `offset` bytes in; must lie inside `self`.
    pub fn sub(self, offset: usize, len: usize) -> RawBuf {
        debug_assert!(offset + len <= self.len);
        RawBuf {
            addr: self.addr + offset,
            len,
        }
    }

    /// Do the two buffers share a byte? (Empty buffers share none.)
    pub fn overlaps(self, other: RawBuf) -> bool {
        self.len > 0
            && other.len > 0
            && self.addr < other.addr + other.len
            && other.addr < self.addr + self.len
    }

    /// The bytes, to read.
    ///
    /// # Safety
    /// The caller's memory must be valid for reads for `'a`, and no `&mut` slice over
    /// any of its bytes may exist during `'a` (callers check [`RawBuf::overlaps`]).
    pub unsafe fn as_slice<'a>(self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: non-null (checked in `new`), in range, valid and unaliased by the
        // contract above.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The bytes, to write.
    ///
    /// # Safety
    /// The caller's memory must be valid for reads and writes for `'a`, and no other
    /// slice over any of its bytes may exist during `'a`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice<'a>(self) -> &'a mut [u8] {
        if self.len == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and exclusive by the contract above.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

/// `ncclUniqueId`, passed by value to `ncclCommInitRank`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NcclUniqueId {
    /// The 128 bytes of a `mixccl::UniqueId`.
    pub internal: [c_char; 128],
}

impl NcclUniqueId {
    /// The id's bytes.
    pub(crate) fn bytes(&self) -> [u8; 128] {
        self.internal.map(|c| c as u8)
    }

    /// Wraps an id's bytes.
    pub(crate) fn from_bytes(b: &[u8; 128]) -> NcclUniqueId {
        NcclUniqueId {
            internal: b.map(|c| c as c_char),
        }
    }
}

/// The first fields of `ncclConfig_t`: NCCL 2.21's whole struct, which later releases
/// (nccl.h follows 2.30) only extend at the end. Only the fields covered by the
/// caller's `size` are read, so a longer struct is fine.
#[repr(C)]
pub(crate) struct NcclConfig {
    pub size: usize,
    pub magic: c_uint,
    pub version: c_uint,
    pub blocking: c_int,
    pub cga_cluster_size: c_int,
    pub min_ctas: c_int,
    pub max_ctas: c_int,
    pub net_name: *const c_char,
    pub split_share: c_int,
}

/// `NCCL_CONFIG_INITIALIZER`'s magic.
pub(crate) const CONFIG_MAGIC: c_uint = 0xcafe_beef;
/// `NCCL_CONFIG_UNDEF_INT`.
pub(crate) const CONFIG_UNDEF_INT: c_int = c_int::MIN;

/// The fields of a caller's config that mixccl looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigView {
    /// `blocking`: 0, 1 or NCCL_CONFIG_UNDEF_INT.
    pub blocking: c_int,
}

/// Reads a caller's `ncclConfig_t`; NULL gives None.
pub(crate) fn read_config(ptr: *const NcclConfig) -> Outcome<Option<ConfigView>> {
    if ptr.is_null() {
        return Ok(None);
    }
    let head = std::mem::offset_of!(NcclConfig, blocking);
    // SAFETY: non-null; every ncclConfig_t starts with size, magic and version, which
    // NCCL_CONFIG_INITIALIZER fills.
    let (size, magic) = unsafe { ((*ptr).size, (*ptr).magic) };
    if magic != CONFIG_MAGIC || size < head {
        return Err(Failure::invalid(format!(
            "config {ptr:p} was not initialised with NCCL_CONFIG_INITIALIZER (magic {magic:#x}, size {size})"
        )));
    }
    let blocking = if size >= head + std::mem::size_of::<c_int>() {
        // SAFETY: `size` says the caller's struct reaches past `blocking`.
        unsafe { (*ptr).blocking }
    } else {
        CONFIG_UNDEF_INT
    };
    if !matches!(blocking, 0 | 1 | CONFIG_UNDEF_INT) {
        return Err(Failure::invalid(format!(
            "config.blocking = {blocking}: expected 0, 1 or NCCL_CONFIG_UNDEF_INT"
        )));
    }
    Ok(Some(ConfigView { blocking }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout_matches_nccl_h_on_lp64() {
        use std::mem::{offset_of, size_of};
        if size_of::<usize>() == 8 {
            assert_eq!(offset_of!(NcclConfig, blocking), 16);
            assert_eq!(offset_of!(NcclConfig, net_name), 32);
            assert_eq!(offset_of!(NcclConfig, split_share), 40);
            assert_eq!(size_of::<NcclConfig>(), 48);
        }
        assert_eq!(size_of::<NcclUniqueId>(), 128);
    }

    #[test]
    fn buffers_check_null_and_overlap() {
        assert!(RawBuf::new(std::ptr::null(), 0, "x").is_ok());
        assert!(RawBuf::new(std::ptr::null(), 1, "x").is_err());
        assert!(RawBuf::new(usize::MAX as *const c_void, 2, "x").is_err());
        let a = RawBuf { addr: 100, len: 10 };
        assert!(a.overlaps(RawBuf { addr: 109, len: 1 }));
        assert!(!a.overlaps(RawBuf { addr: 110, len: 5 }));
        assert!(!a.overlaps(RawBuf { addr: 105, len: 0 }));
        assert!(RawBuf { addr: 95, len: 6 }.overlaps(a));
    }

    #[test]
    fn configs_need_the_initializer() {
        let mut c = NcclConfig {
            size: std::mem::size_of::<NcclConfig>(),
            magic: CONFIG_MAGIC,
            version: 22105,
            blocking: CONFIG_UNDEF_INT,
            cga_cluster_size: CONFIG_UNDEF_INT,
            min_ctas: CONFIG_UNDEF_INT,
            max_ctas: CONFIG_UNDEF_INT,
            net_name: std::ptr::null(),
            split_share: CONFIG_UNDEF_INT,
        };
        assert_eq!(read_config(&c).unwrap().unwrap().blocking, CONFIG_UNDEF_INT);
        c.blocking = 0;
        assert_eq!(read_config(&c).unwrap().unwrap().blocking, 0);
        c.blocking = 7;
        assert!(read_config(&c).is_err());
        c.blocking = 1;
        c.magic = 0;
        assert!(read_config(&c).is_err());
        assert_eq!(read_config(std::ptr::null()).unwrap(), None);
    }
}
