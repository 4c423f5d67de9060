//! Huawei Ascend through AscendCL, `libascendcl.so` (`MIXCCL_ACL_LIB` overrides).
//!
//! - `aclInit(NULL)` once per process when the library is opened; a process that
//!   initialised ACL itself gets ACL_ERROR_REPEAT_INITIALIZE (100002), which is fine.
//! - ACL has no default device: a thread must `aclrtSetDevice` before streams,
//!   copies or allocations. Every such call here sets the device it needs and sets
//!   the thread's previous device back after. A thread that had no device keeps the
//!   one mixccl set: ACL has no call that unsets it (`aclrtResetDevice` releases
//!   the device's resources, streams included).
//! - `aclrtPointerGetAttributes` (CANN 7+) knows only memory ACL allocated; its
//!   `aclrtPtrAttributes` is `{ {u32 id, enum type}, u32 pageSize, u32 rsv[4] }`
//!   with type Host 0, Device 1 (and Unregistered 2 in newer CANN). Any failure or a
//!   non-device type means "not mine". There is no address-range query.
//! - `aclrtMemcpyAsync` takes the destination's capacity (`destMax`) before the source.
//! - ACL has no code-to-text function; `aclGetRecentErrMsg` gives the text of the
//!   calling thread's last failure, read right after it.

use super::loader::{self, Opened};
use super::{Allocation, Device, StreamHandle, Vendor};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_void, CStr};

type AclError = c_int;
type AclStream = *mut c_void;

const ACL_SUCCESS: AclError = 0;
const ACL_ERROR_REPEAT_INITIALIZE: AclError = 100002;
const ACL_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const ACL_MEM_LOCATION_TYPE_DEVICE: u32 = 1;
const ACL_MEM_MALLOC_HUGE_FIRST: c_int = 0;

/// `aclrtPtrAttributes` (acl_rt.h): `aclrtMemLocation { uint32_t id; type }`,
/// `uint32_t pageSize`, `uint32_t rsv[4]`.
#[repr(C)]
struct PtrAttributes {
    location_id: u32,
    location_type: u32,
    page_size: u32,
    rsv: [u32; 4],
}

/// The AscendCL entry points mixccl uses (acl.h, acl_rt.h).
struct Api {
    init: unsafe extern "C" fn(*const c_char) -> AclError,
    get_device: unsafe extern "C" fn(*mut i32) -> AclError,
    set_device: unsafe extern "C" fn(i32) -> AclError,
    pointer_get_attributes: unsafe extern "C" fn(*const c_void, *mut PtrAttributes) -> AclError,
    memcpy_async: unsafe extern "C" fn(
        *mut c_void,
        usize,
        *const c_void,
        usize,
        c_int,
        AclStream,
    ) -> AclError,
    create_stream: unsafe extern "C" fn(*mut AclStream) -> AclError,
    destroy_stream: unsafe extern "C" fn(AclStream) -> AclError,
    synchronize_stream: unsafe extern "C" fn(AclStream) -> AclError,
    malloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> AclError,
    free_host: unsafe extern "C" fn(*mut c_void) -> AclError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize, c_int) -> AclError,
    free: unsafe extern "C" fn(*mut c_void) -> AclError,
    recent_err_msg: unsafe extern "C" fn() -> *const c_char,
}

/// The ACL shim.
pub(crate) struct Acl {
    api: Api,
    lib: Opened,
}

impl Acl {
    /// Loads AscendCL and initialises it once (`aclInit(NULL)`).
    pub(crate) fn open() -> Result<Acl> {
        let lib = loader::open(Vendor::Acl)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each field's type is AscendCL's documented C signature for
                // that symbol; enums are C ints, aclrtStream is void*.
                unsafe { loader::symbol(&lib, Vendor::Acl, $name)? }
            };
        }
        let api = Api {
            init: sym!("aclInit"),
            get_device: sym!("aclrtGetDevice"),
            set_device: sym!("aclrtSetDevice"),
            pointer_get_attributes: sym!("aclrtPointerGetAttributes"),
            memcpy_async: sym!("aclrtMemcpyAsync"),
            create_stream: sym!("aclrtCreateStream"),
            destroy_stream: sym!("aclrtDestroyStream"),
            synchronize_stream: sym!("aclrtSynchronizeStream"),
            malloc_host: sym!("aclrtMallocHost"),
            free_host: sym!("aclrtFreeHost"),
            malloc: sym!("aclrtMalloc"),
            free: sym!("aclrtFree"),
            recent_err_msg: sym!("aclGetRecentErrMsg"),
        };
        let acl = Acl { api, lib };
        // SAFETY: NULL is the documented "no configuration file" argument.
        let rc = unsafe { (acl.api.init)(std::ptr::null()) };
        if rc != ACL_ERROR_REPEAT_INITIALIZE {
            acl.check("aclInit", rc)?;
        }
        Ok(acl)
    }

    /// `Ok` for ACL_SUCCESS, else an error naming `call`, the code and ACL's message
    /// for this thread's last failure.
    fn check(&self, call: &str, rc: AclError) -> Result<()> {
        if rc == ACL_SUCCESS {
            return Ok(());
        }
        // SAFETY: takes nothing; returns a thread-local NUL-terminated string or NULL.
        let p = unsafe { (self.api.recent_err_msg)() };
        let text = if p.is_null() {
            "no message from aclGetRecentErrMsg".to_string()
        } else {
            // SAFETY: non-null and NUL-terminated, valid until the next ACL call.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        Err(Error::Device {
            vendor: "acl",
            message: format!("{call} failed: error {rc} ({})", text.trim()),
        })
    }

    /// The device set on this thread, if any.
    fn thread_device(&self) -> Option<i32> {
        let mut dev: i32 = -1;
        // SAFETY: `dev` is a valid out-pointer.
        let rc = unsafe { (self.api.get_device)(&mut dev) };
        (rc == ACL_SUCCESS && dev >= 0).then_some(dev)
    }

    /// Runs `f` with device `index` set on this thread, then sets the thread's
    /// previous device again (a thread that had none keeps `index`, see above).
    fn on_device<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let set = |device: i32, restoring: bool| {
            // SAFETY: aclrtSetDevice takes an ordinal by value and validates it.
            let rc = unsafe { (self.api.set_device)(device) };
            let call = if restoring {
                "aclrtSetDevice (restoring the caller's device)"
            } else {
                "aclrtSetDevice"
            };
            self.check(call, rc)
        };
        super::switch_device(self.thread_device(), index, set, f)
    }
}

impl Device for Acl {
    fn vendor(&self) -> Vendor {
        Vendor::Acl
    }

    fn library(&self) -> &str {
        &self.lib.name
    }

    fn locate(&self, ptr: usize) -> Result<Option<Allocation>> {
        let mut attr = PtrAttributes {
            location_id: 0,
            location_type: u32::MAX,
            page_size: 0,
            rsv: [0; 4],
        };
        // SAFETY: `attr` is a valid out-pointer of the documented layout; ACL only
        // looks the address up.
        let rc = unsafe { (self.api.pointer_get_attributes)(ptr as *const c_void, &mut attr) };
        if rc != ACL_SUCCESS || attr.location_type != ACL_MEM_LOCATION_TYPE_DEVICE {
            return Ok(None);
        }
        let index = i32::try_from(attr.location_id).map_err(|_| Error::Device {
            vendor: "acl",
            message: format!(
                "aclrtPointerGetAttributes gave device id {} for {ptr:#x} (page size {}, reserved {:?})",
                attr.location_id, attr.page_size, attr.rsv
            ),
        })?;
        Ok(Some(Allocation { index, range: None }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.on_device(index, || {
            let mut s: AclStream = std::ptr::null_mut();
            // SAFETY: `s` is a valid out-pointer; a device is set on this thread.
            self.check("aclrtCreateStream", unsafe {
                (self.api.create_stream)(&mut s)
            })?;
            Ok(s as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check("aclrtDestroyStream", unsafe {
                (self.api.destroy_stream)(stream as AclStream)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller passes a stream of this device, or 0 (the default stream).
            self.check("aclrtSynchronizeStream", unsafe {
                (self.api.synchronize_stream)(stream as AclStream)
            })
        })
    }

    unsafe fn copy_to_host(
        &self,
        index: i32,
        dst: *mut u8,
        src: usize,
        len: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract (Device::copy_to_host) covers both ranges;
            // the destination holds exactly `len` bytes.
            self.check("aclrtMemcpyAsync(DEVICE_TO_HOST)", unsafe {
                (self.api.memcpy_async)(
                    dst.cast(),
                    len,
                    src as *const c_void,
                    len,
                    ACL_MEMCPY_DEVICE_TO_HOST,
                    stream as AclStream,
                )
            })
        })
    }

    unsafe fn copy_to_device(
        &self,
        index: i32,
        dst: usize,
        src: *const u8,
        len: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract (Device::copy_to_device) covers both ranges.
            self.check("aclrtMemcpyAsync(HOST_TO_DEVICE)", unsafe {
                (self.api.memcpy_async)(
                    dst as *mut c_void,
                    len,
                    src.cast(),
                    len,
                    ACL_MEMCPY_HOST_TO_DEVICE,
                    stream as AclStream,
                )
            })
        })
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("aclrtMallocHost({len} bytes)"), unsafe {
                (self.api.malloc_host)(&mut p, len.max(1))
            })?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` came from aclrtMallocHost.
            self.check("aclrtFreeHost", unsafe { (self.api.free_host)(ptr.cast()) })
        })
    }

    fn current_device(&self) -> Result<i32> {
        // A thread without a device: ACL has no default, device 0 is NCCL's.
        Ok(self.thread_device().unwrap_or(0))
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer; HUGE_FIRST is ACL's default policy.
            self.check(&format!("aclrtMalloc({len} bytes)"), unsafe {
                (self.api.malloc)(&mut p, len.max(1), ACL_MEM_MALLOC_HUGE_FIRST)
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check("aclrtFree", unsafe { (self.api.free)(ptr as *mut c_void) })
        })
    }
}

// SAFETY: AscendCL is thread-safe; the struct holds function pointers and the library
// handle.
unsafe impl Send for Acl {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl Sync for Acl {}
