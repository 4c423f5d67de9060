//! Cambricon MLU through the Cambricon runtime CNRT, `libcnrt.so` (`MIXCCL_CNRT_LIB`
//! overrides).
//!
//! - Copies: `cnrtMemcpyAsync_V3(dst, src, bytes, queue, dir)` where the library has
//!   it (CNRT 6.x headers deprecate `_V2` in its favour), else `cnrtMemcpyAsync_V2`,
//!   same signature; directions HostToDev 0, DevToHost 2.
//! - `cnrtPointerAttributes_t` is `{type, device, size, devicePointer, hostPointer,
//!   cacheMode, deviceBasePointer}` with Unregistered 0, Host 1, Device 2; `size` and
//!   `deviceBasePointer` give the allocation range.
//! - Queues (`cnrtQueue_t`) play the role of streams; NULL is the default queue.
//! - The current device is per thread (`cnrtSetDevice`); every call that acts on a
//!   device makes it current for the call and restores the previous one after.
//! - Notifiers (`cnrtNotifier_t`) play the role of events: `cnrtPlaceNotifier`
//!   records, `cnrtQueryNotifier` answers cnrtSuccess when done and
//!   cnrtErrorNotReady (1; `cnrtErrorBusy`, 632014, in older releases) before,
//!   `cnrtQueueWaitNotifier(notifier, queue, 0)` orders queues; host functions go
//!   through `cnrtInvokeHostFunc(queue, fn, data)`.

use super::hostfn::{self, CHostFn};
use super::loader::{self, Opened, Optional};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

type CnrtRet = c_int;
type CnrtQueue = *mut c_void;
type CnrtNotifier = *mut c_void;

const CNRT_SUCCESS: CnrtRet = 0;
/// `cnrtErrorNotReady` (CNRT 6) and the deprecated `cnrtErrorBusy` of older releases.
const CNRT_NOT_READY: [CnrtRet; 2] = [1, 632014];
const CNRT_MEMCPY_HOST_TO_DEV: c_int = 0;
const CNRT_MEMCPY_DEV_TO_HOST: c_int = 2;
const CNRT_MEM_TYPE_DEVICE: c_int = 2;

/// `cnrtPointerAttributes_t` (cnrt.h).
#[repr(C)]
struct PointerAttributes {
    memory_type: c_int,
    device: c_int,
    size: usize,
    device_pointer: *mut c_void,
    host_pointer: *mut c_void,
    cache_mode: c_int,
    device_base_pointer: *mut c_void,
}

type MemcpyAsync =
    unsafe extern "C" fn(*mut c_void, *mut c_void, usize, CnrtQueue, c_int) -> CnrtRet;

/// The CNRT entry points mixccl uses (cnrt.h).
struct Api {
    get_device: unsafe extern "C" fn(*mut c_int) -> CnrtRet,
    set_device: unsafe extern "C" fn(c_int) -> CnrtRet,
    pointer_get_attributes: unsafe extern "C" fn(*mut PointerAttributes, *const c_void) -> CnrtRet,
    memcpy_async: MemcpyAsync,
    /// Which of `cnrtMemcpyAsync_V3`/`_V2` `memcpy_async` is, for messages.
    memcpy_name: &'static str,
    queue_create: unsafe extern "C" fn(*mut CnrtQueue) -> CnrtRet,
    queue_destroy: unsafe extern "C" fn(CnrtQueue) -> CnrtRet,
    queue_sync: unsafe extern "C" fn(CnrtQueue) -> CnrtRet,
    host_malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> CnrtRet,
    free_host: unsafe extern "C" fn(*mut c_void) -> CnrtRet,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> CnrtRet,
    free: unsafe extern "C" fn(*mut c_void) -> CnrtRet,
    get_error_str: unsafe extern "C" fn(CnrtRet) -> *const c_char,
    notifier_create: Optional<unsafe extern "C" fn(*mut CnrtNotifier) -> CnrtRet>,
    notifier_destroy: Optional<unsafe extern "C" fn(CnrtNotifier) -> CnrtRet>,
    place_notifier: Optional<unsafe extern "C" fn(CnrtNotifier, CnrtQueue) -> CnrtRet>,
    query_notifier: Optional<unsafe extern "C" fn(CnrtNotifier) -> CnrtRet>,
    queue_wait_notifier: Optional<unsafe extern "C" fn(CnrtNotifier, CnrtQueue, c_uint) -> CnrtRet>,
    invoke_host_func: Optional<unsafe extern "C" fn(CnrtQueue, CHostFn, *mut c_void) -> CnrtRet>,
}

/// The CNRT shim.
pub(crate) struct Cnrt {
    api: Api,
    lib: Opened,
}

impl Cnrt {
    /// Loads CNRT (it initialises itself on first use).
    pub(crate) fn open() -> Result<Cnrt> {
        let lib = loader::open(Vendor::Cnrt)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each field's type is CNRT's documented C signature for that
                // symbol (cnrt.h); enums are C ints, cnrtQueue_t is a pointer.
                unsafe { loader::symbol(&lib, Vendor::Cnrt, $name)? }
            };
        }
        macro_rules! opt {
            ($name:literal) => {
                // SAFETY: as for sym! (cnrt.h; cnrtNotifier_t is a pointer).
                unsafe { Optional::load(&lib, $name) }
            };
        }
        // SAFETY: both names have MemcpyAsync's signature in cnrt.h.
        let (memcpy_async, memcpy_name) = match unsafe {
            loader::symbol::<MemcpyAsync>(&lib, Vendor::Cnrt, "cnrtMemcpyAsync_V3")
        } {
            Ok(f) => (f, "cnrtMemcpyAsync_V3"),
            Err(_) => (
                // SAFETY: as above.
                unsafe { loader::symbol::<MemcpyAsync>(&lib, Vendor::Cnrt, "cnrtMemcpyAsync_V2") }
                    .map_err(|_| Error::Device {
                        vendor: "cnrt",
                        message: format!(
                            "symbol cnrtMemcpyAsync_V3 and cnrtMemcpyAsync_V2 both missing from {}",
                            lib.name
                        ),
                    })?,
                "cnrtMemcpyAsync_V2",
            ),
        };
        let api = Api {
            get_device: sym!("cnrtGetDevice"),
            set_device: sym!("cnrtSetDevice"),
            pointer_get_attributes: sym!("cnrtPointerGetAttributes"),
            memcpy_async,
            memcpy_name,
            queue_create: sym!("cnrtQueueCreate"),
            queue_destroy: sym!("cnrtQueueDestroy"),
            queue_sync: sym!("cnrtQueueSync"),
            host_malloc: sym!("cnrtHostMalloc"),
            free_host: sym!("cnrtFreeHost"),
            malloc: sym!("cnrtMalloc"),
            free: sym!("cnrtFree"),
            get_error_str: sym!("cnrtGetErrorStr"),
            notifier_create: opt!("cnrtNotifierCreate"),
            notifier_destroy: opt!("cnrtNotifierDestroy"),
            place_notifier: opt!("cnrtPlaceNotifier"),
            query_notifier: opt!("cnrtQueryNotifier"),
            queue_wait_notifier: opt!("cnrtQueueWaitNotifier"),
            invoke_host_func: opt!("cnrtInvokeHostFunc"),
        };
        let cnrt = Cnrt { api, lib };
        // Fails early, with the runtime's own words, when there is no usable device.
        cnrt.current_device()?;
        Ok(cnrt)
    }

    /// `Ok` for cnrtSuccess, else an error naming `call`, the code and its text.
    fn check(&self, call: &str, rc: CnrtRet) -> Result<()> {
        if rc == CNRT_SUCCESS {
            return Ok(());
        }
        // SAFETY: takes any code and returns a static string or NULL.
        let p = unsafe { (self.api.get_error_str)(rc) };
        let text = if p.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null and NUL-terminated, per CNRT's contract.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        };
        Err(Error::Device {
            vendor: "cnrt",
            message: format!("{call} failed: error {rc} ({text})"),
        })
    }

    /// Runs `f` with device `index` current on this thread, then makes the thread's
    /// previous device current again.
    fn on_device<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let set = |device: i32, restoring: bool| {
            // SAFETY: cnrtSetDevice takes an ordinal by value and validates it.
            let rc = unsafe { (self.api.set_device)(device) };
            let call = if restoring {
                "cnrtSetDevice (restoring the caller's device)"
            } else {
                "cnrtSetDevice"
            };
            self.check(call, rc)
        };
        super::switch_device(Some(self.current_device()?), index, set, f)
    }

    /// Queues a copy in direction `dir` with the runtime's async copy.
    ///
    /// # Safety
    /// `dst` and `src` are valid for `len` bytes of the kinds `dir` names until the
    /// queue is synchronised.
    unsafe fn copy(
        &self,
        index: i32,
        dst: *mut c_void,
        src: *mut c_void,
        len: usize,
        queue: StreamHandle,
        dir: c_int,
    ) -> Result<()> {
        self.on_device(index, || {
            let what = if dir == CNRT_MEMCPY_HOST_TO_DEV {
                "HostToDev"
            } else {
                "DevToHost"
            };
            // SAFETY: this function's contract.
            self.check(&format!("{}({what})", self.api.memcpy_name), unsafe {
                (self.api.memcpy_async)(dst, src, len, queue as CnrtQueue, dir)
            })
        })
    }
}

impl Device for Cnrt {
    fn vendor(&self) -> Vendor {
        Vendor::Cnrt
    }

    fn library(&self) -> &str {
        &self.lib.name
    }

    fn locate(&self, ptr: usize) -> Result<Option<Allocation>> {
        let mut attr = PointerAttributes {
            memory_type: -1,
            device: -1,
            size: 0,
            device_pointer: std::ptr::null_mut(),
            host_pointer: std::ptr::null_mut(),
            cache_mode: 0,
            device_base_pointer: std::ptr::null_mut(),
        };
        // SAFETY: `attr` is a valid out-pointer of the documented layout; CNRT only
        // looks the address up.
        let rc = unsafe { (self.api.pointer_get_attributes)(&mut attr, ptr as *const c_void) };
        // Memory CNRT never saw: an error on some versions, Unregistered on others.
        if rc != CNRT_SUCCESS || attr.memory_type != CNRT_MEM_TYPE_DEVICE {
            return Ok(None);
        }
        let base = attr.device_base_pointer as usize;
        let range = (base != 0 && base <= ptr && attr.size > 0).then_some((base, attr.size));
        Ok(Some(Allocation {
            index: attr.device,
            range,
        }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.on_device(index, || {
            let mut q: CnrtQueue = std::ptr::null_mut();
            // SAFETY: `q` is a valid out-pointer.
            self.check("cnrtQueueCreate", unsafe {
                (self.api.queue_create)(&mut q)
            })?;
            Ok(q as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check("cnrtQueueDestroy", unsafe {
                (self.api.queue_destroy)(stream as CnrtQueue)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller passes a queue of this device, or 0 (the default queue).
            self.check("cnrtQueueSync", unsafe {
                (self.api.queue_sync)(stream as CnrtQueue)
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
        // SAFETY: the caller's contract (Device::copy_to_host); CNRT takes the source
        // as a mutable pointer but does not write it.
        unsafe {
            self.copy(
                index,
                dst.cast(),
                src as *mut c_void,
                len,
                stream,
                CNRT_MEMCPY_DEV_TO_HOST,
            )
        }
    }

    unsafe fn copy_to_device(
        &self,
        index: i32,
        dst: usize,
        src: *const u8,
        len: usize,
        stream: StreamHandle,
    ) -> Result<()> {
        // SAFETY: the caller's contract (Device::copy_to_device); as above.
        unsafe {
            self.copy(
                index,
                dst as *mut c_void,
                src.cast_mut().cast(),
                len,
                stream,
                CNRT_MEMCPY_HOST_TO_DEV,
            )
        }
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("cnrtHostMalloc({len} bytes)"), unsafe {
                (self.api.host_malloc)(&mut p, len.max(1))
            })?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` came from cnrtHostMalloc.
            self.check("cnrtFreeHost", unsafe { (self.api.free_host)(ptr.cast()) })
        })
    }

    fn current_device(&self) -> Result<i32> {
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        self.check("cnrtGetDevice", unsafe { (self.api.get_device)(&mut dev) })?;
        Ok(dev)
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("cnrtMalloc({len} bytes)"), unsafe {
                (self.api.malloc)(&mut p, len.max(1))
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check("cnrtFree", unsafe { (self.api.free)(ptr as *mut c_void) })
        })
    }

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = self.api.notifier_create.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            let mut n: CnrtNotifier = std::ptr::null_mut();
            // SAFETY: `n` is a valid out-pointer.
            self.check("cnrtNotifierCreate", unsafe { create(&mut n) })?;
            Ok(n as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = self.api.notifier_destroy.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("cnrtNotifierDestroy", unsafe {
                destroy(event as CnrtNotifier)
            })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let place = self.api.place_notifier.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            // SAFETY: a live notifier and a queue of this device (or 0).
            self.check("cnrtPlaceNotifier", unsafe {
                place(event as CnrtNotifier, stream as CnrtQueue)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.api.query_notifier.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            // SAFETY: a live notifier from create_event.
            match unsafe { query(event as CnrtNotifier) } {
                CNRT_SUCCESS => Ok(true),
                rc if CNRT_NOT_READY.contains(&rc) => Ok(false),
                rc => self.check("cnrtQueryNotifier", rc).map(|_| false),
            }
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = self.api.queue_wait_notifier.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            // SAFETY: a live notifier and a queue of this device (or 0); the flag is
            // reserved and must be 0.
            self.check("cnrtQueueWaitNotifier", unsafe {
                wait(event as CnrtNotifier, stream as CnrtQueue, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let invoke = self.api.invoke_host_func.get(&self.lib, Vendor::Cnrt)?;
        self.on_device(index, || {
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the runtime calls it once (or the launch fails and hostfn frees it).
                self.check("cnrtInvokeHostFunc", unsafe {
                    invoke(stream as CnrtQueue, cb, data)
                })
            })
        })
    }
}

// SAFETY: CNRT is thread-safe; the struct holds function pointers and the library
// handle.
unsafe impl Send for Cnrt {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl Sync for Cnrt {}
