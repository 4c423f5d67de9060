//! Moore Threads MUSA through the MUSA runtime, `libmusart.so` (`MIXCCL_MUSA_LIB`
//! overrides).
//!
//! The MUSA runtime mirrors the CUDA runtime API under `musa*` names: errors are
//! `musaError_t` with musaSuccess 0 and musaErrorInvalidValue 1, and
//! `musaPointerAttributes` is CUDA 11's `{type, device, devicePointer, hostPointer}`
//! with Unregistered 0, Host 1, Device 2, Managed 3. Plain host memory is either
//! musaErrorInvalidValue or success with type Unregistered; both mean "not mine".
//! The runtime has no address-range query, so allocations are not cached by range.
//!
//! The current device is per thread (`musaSetDevice`); every call that acts on a
//! device makes it current for the call and restores the thread's previous device.

use super::hostfn::{self, CHostFn};
use super::loader::{self, Library};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

type MusaError = c_int;
type MusaStream = *mut c_void;
type MusaEvent = *mut c_void;

const MUSA_SUCCESS: MusaError = 0;
const MUSA_ERROR_INVALID_VALUE: MusaError = 1;
const MUSA_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const MUSA_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const MUSA_MEMORY_TYPE_DEVICE: c_int = 2;
const MUSA_STREAM_NON_BLOCKING: c_uint = 1;
const MUSA_EVENT_DISABLE_TIMING: c_uint = 2;

/// `musaPointerAttributes` (musa_runtime_api.h).
#[repr(C)]
struct PointerAttributes {
    memory_type: c_int,
    device: c_int,
    device_pointer: *mut c_void,
    host_pointer: *mut c_void,
}

crate::foreign::foreign_api! {
    /// The MUSA runtime entry points mixccl uses.
    struct Api {
        get_device: "musaGetDevice" => fn(*mut c_int) -> MusaError;
        set_device: "musaSetDevice" => fn(c_int) -> MusaError;
        pointer_get_attributes: "musaPointerGetAttributes" => fn(*mut PointerAttributes, *const c_void) -> MusaError;
        memcpy_async: "musaMemcpyAsync" => fn(*mut c_void, *const c_void, usize, c_int, MusaStream) -> MusaError;
        stream_create_with_flags: "musaStreamCreateWithFlags" => fn(*mut MusaStream, c_uint) -> MusaError;
        stream_destroy: "musaStreamDestroy" => fn(MusaStream) -> MusaError;
        stream_synchronize: "musaStreamSynchronize" => fn(MusaStream) -> MusaError;
        malloc_host: "musaMallocHost" => fn(*mut *mut c_void, usize) -> MusaError;
        free_host: "musaFreeHost" => fn(*mut c_void) -> MusaError;
        malloc: "musaMalloc" => fn(*mut *mut c_void, usize) -> MusaError;
        free: "musaFree" => fn(*mut c_void) -> MusaError;
        get_error_name: "musaGetErrorName" => fn(MusaError) -> *const c_char;
        get_error_string: "musaGetErrorString" => fn(MusaError) -> *const c_char;
        @optional {
            event_create_with_flags: "musaEventCreateWithFlags" => fn(*mut MusaEvent, c_uint) -> MusaError;
            event_destroy: "musaEventDestroy" => fn(MusaEvent) -> MusaError;
            event_record: "musaEventRecord" => fn(MusaEvent, MusaStream) -> MusaError;
            event_query: "musaEventQuery" => fn(MusaEvent) -> MusaError;
            stream_wait_event: "musaStreamWaitEvent" => fn(MusaStream, MusaEvent, c_uint) -> MusaError;
            launch_host_func: "musaLaunchHostFunc" => fn(MusaStream, CHostFn, *mut c_void) -> MusaError;
        }
    }
}

/// The MUSA shim.
pub(crate) struct Musa {
    api: Api,
    lib: Library,
}

impl Musa {
    /// Loads the runtime (it initialises itself on first use).
    pub(crate) fn open() -> Result<Musa> {
        let lib = loader::open(Vendor::Musa)?;
        // SAFETY: every signature in Api is musa_runtime_api.h's.
        let api =
            unsafe { Api::bind(&lib, "") }.map_err(|e| loader::load_error(Vendor::Musa, e))?;
        let musa = Musa { api, lib };
        // Fails early, with the runtime's own words, when there is no usable device.
        musa.current_device()?;
        Ok(musa)
    }

    /// `Ok` for musaSuccess, else an error naming `call`, the code's name and text.
    fn check(&self, call: &str, rc: MusaError) -> Result<()> {
        if rc == MUSA_SUCCESS {
            return Ok(());
        }
        let text = |f: unsafe extern "C" fn(MusaError) -> *const c_char| {
            // SAFETY: both functions take any code and return a static string or NULL.
            let p = unsafe { f(rc) };
            if p.is_null() {
                "unknown error".to_string()
            } else {
                // SAFETY: non-null and NUL-terminated, per the runtime's contract.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        Err(Error::Device {
            vendor: "musa",
            message: format!(
                "{call} failed: {rc} {} ({})",
                text(self.api.get_error_name),
                text(self.api.get_error_string)
            ),
        })
    }

    /// The runtime's name for error code `rc` (`musaGetErrorName`).
    fn error_name(&self, rc: MusaError) -> String {
        // SAFETY: takes any code and returns a static string or NULL.
        let p = unsafe { (self.api.get_error_name)(rc) };
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: non-null and NUL-terminated, per the runtime's contract.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    }

    /// Runs `f` with device `index` current on this thread, then makes the thread's
    /// previous device current again.
    fn on_device<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let set = |device: i32, restoring: bool| {
            // SAFETY: musaSetDevice takes an ordinal by value and validates it.
            let rc = unsafe { (self.api.set_device)(device) };
            let call = if restoring {
                "musaSetDevice (restoring the caller's device)"
            } else {
                "musaSetDevice"
            };
            self.check(call, rc)
        };
        super::switch_device(Some(self.current_device()?), index, set, f)
    }
}

impl Device for Musa {
    fn vendor(&self) -> Vendor {
        Vendor::Musa
    }

    fn library(&self) -> &str {
        &self.lib.name
    }

    fn locate(&self, ptr: usize) -> Result<Option<Allocation>> {
        let mut attr = PointerAttributes {
            memory_type: -1,
            device: -1,
            device_pointer: std::ptr::null_mut(),
            host_pointer: std::ptr::null_mut(),
        };
        // SAFETY: `attr` is a valid out-pointer of the documented layout; the runtime
        // only looks the address up.
        let rc = unsafe { (self.api.pointer_get_attributes)(&mut attr, ptr as *const c_void) };
        if rc == MUSA_ERROR_INVALID_VALUE {
            return Ok(None);
        }
        self.check("musaPointerGetAttributes", rc)?;
        if attr.memory_type != MUSA_MEMORY_TYPE_DEVICE {
            return Ok(None);
        }
        Ok(Some(Allocation {
            index: attr.device,
            range: None,
        }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.on_device(index, || {
            let mut s: MusaStream = std::ptr::null_mut();
            // SAFETY: `s` is a valid out-pointer.
            self.check("musaStreamCreateWithFlags", unsafe {
                (self.api.stream_create_with_flags)(&mut s, MUSA_STREAM_NON_BLOCKING)
            })?;
            Ok(s as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check("musaStreamDestroy", unsafe {
                (self.api.stream_destroy)(stream as MusaStream)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller passes a stream of this device, or 0 (the null stream).
            self.check("musaStreamSynchronize", unsafe {
                (self.api.stream_synchronize)(stream as MusaStream)
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
            // SAFETY: the caller's contract (Device::copy_to_host) covers both ranges.
            self.check("musaMemcpyAsync(DeviceToHost)", unsafe {
                (self.api.memcpy_async)(
                    dst.cast(),
                    src as *const c_void,
                    len,
                    MUSA_MEMCPY_DEVICE_TO_HOST,
                    stream as MusaStream,
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
            self.check("musaMemcpyAsync(HostToDevice)", unsafe {
                (self.api.memcpy_async)(
                    dst as *mut c_void,
                    src.cast(),
                    len,
                    MUSA_MEMCPY_HOST_TO_DEVICE,
                    stream as MusaStream,
                )
            })
        })
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("musaMallocHost({len} bytes)"), unsafe {
                (self.api.malloc_host)(&mut p, len.max(1))
            })?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` came from musaMallocHost.
            self.check("musaFreeHost", unsafe { (self.api.free_host)(ptr.cast()) })
        })
    }

    fn current_device(&self) -> Result<i32> {
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        self.check("musaGetDevice", unsafe { (self.api.get_device)(&mut dev) })?;
        Ok(dev)
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("musaMalloc({len} bytes)"), unsafe {
                (self.api.malloc)(&mut p, len.max(1))
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check("musaFree", unsafe { (self.api.free)(ptr as *mut c_void) })
        })
    }

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = loader::need(&self.api.event_create_with_flags, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            let mut e: MusaEvent = std::ptr::null_mut();
            // SAFETY: `e` is a valid out-pointer.
            self.check("musaEventCreateWithFlags", unsafe {
                create(&mut e, MUSA_EVENT_DISABLE_TIMING)
            })?;
            Ok(e as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = loader::need(&self.api.event_destroy, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("musaEventDestroy", unsafe { destroy(event as MusaEvent) })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = loader::need(&self.api.event_record, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0).
            self.check("musaEventRecord", unsafe {
                record(event as MusaEvent, stream as MusaStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = loader::need(&self.api.event_query, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: a live event from create_event.
            match unsafe { query(event as MusaEvent) } {
                MUSA_SUCCESS => Ok(true),
                // musaErrorNotReady: told by name, its value is not published.
                rc if self.error_name(rc) == "musaErrorNotReady" => Ok(false),
                rc => self.check("musaEventQuery", rc).map(|_| false),
            }
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = loader::need(&self.api.stream_wait_event, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0); flags must be 0.
            self.check("musaStreamWaitEvent", unsafe {
                wait(stream as MusaStream, event as MusaEvent, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = loader::need(&self.api.launch_host_func, &self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the runtime calls it once (or the launch fails and hostfn frees it).
                self.check("musaLaunchHostFunc", unsafe {
                    launch(stream as MusaStream, cb, data)
                })
            })
        })
    }
}

// SAFETY: the MUSA runtime is thread-safe; the struct holds function pointers and the
// library handle.
unsafe impl Send for Musa {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl Sync for Musa {}
