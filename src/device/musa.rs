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
use super::loader::{self, Opened, Optional};
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

/// The MUSA runtime entry points mixccl uses.
struct Api {
    get_device: unsafe extern "C" fn(*mut c_int) -> MusaError,
    set_device: unsafe extern "C" fn(c_int) -> MusaError,
    pointer_get_attributes:
        unsafe extern "C" fn(*mut PointerAttributes, *const c_void) -> MusaError,
    memcpy_async:
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int, MusaStream) -> MusaError,
    stream_create_with_flags: unsafe extern "C" fn(*mut MusaStream, c_uint) -> MusaError,
    stream_destroy: unsafe extern "C" fn(MusaStream) -> MusaError,
    stream_synchronize: unsafe extern "C" fn(MusaStream) -> MusaError,
    malloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> MusaError,
    free_host: unsafe extern "C" fn(*mut c_void) -> MusaError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> MusaError,
    free: unsafe extern "C" fn(*mut c_void) -> MusaError,
    get_error_name: unsafe extern "C" fn(MusaError) -> *const c_char,
    get_error_string: unsafe extern "C" fn(MusaError) -> *const c_char,
    event_create_with_flags: Optional<unsafe extern "C" fn(*mut MusaEvent, c_uint) -> MusaError>,
    event_destroy: Optional<unsafe extern "C" fn(MusaEvent) -> MusaError>,
    event_record: Optional<unsafe extern "C" fn(MusaEvent, MusaStream) -> MusaError>,
    event_query: Optional<unsafe extern "C" fn(MusaEvent) -> MusaError>,
    stream_wait_event: Optional<unsafe extern "C" fn(MusaStream, MusaEvent, c_uint) -> MusaError>,
    launch_host_func: Optional<unsafe extern "C" fn(MusaStream, CHostFn, *mut c_void) -> MusaError>,
}

/// The MUSA shim.
pub(crate) struct Musa {
    api: Api,
    lib: Opened,
}

impl Musa {
    /// Loads the runtime (it initialises itself on first use).
    pub(crate) fn open() -> Result<Musa> {
        let lib = loader::open(Vendor::Musa)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each field's type is the MUSA runtime's C signature for that
                // symbol (musa_runtime_api.h); enums are C ints.
                unsafe { loader::symbol(&lib, Vendor::Musa, $name)? }
            };
        }
        macro_rules! opt {
            ($name:literal) => {
                // SAFETY: as for sym! (musa_runtime_api.h; musaEvent_t is a pointer).
                unsafe { Optional::load(&lib, $name) }
            };
        }
        let api = Api {
            get_device: sym!("musaGetDevice"),
            set_device: sym!("musaSetDevice"),
            pointer_get_attributes: sym!("musaPointerGetAttributes"),
            memcpy_async: sym!("musaMemcpyAsync"),
            stream_create_with_flags: sym!("musaStreamCreateWithFlags"),
            stream_destroy: sym!("musaStreamDestroy"),
            stream_synchronize: sym!("musaStreamSynchronize"),
            malloc_host: sym!("musaMallocHost"),
            free_host: sym!("musaFreeHost"),
            malloc: sym!("musaMalloc"),
            free: sym!("musaFree"),
            get_error_name: sym!("musaGetErrorName"),
            get_error_string: sym!("musaGetErrorString"),
            event_create_with_flags: opt!("musaEventCreateWithFlags"),
            event_destroy: opt!("musaEventDestroy"),
            event_record: opt!("musaEventRecord"),
            event_query: opt!("musaEventQuery"),
            stream_wait_event: opt!("musaStreamWaitEvent"),
            launch_host_func: opt!("musaLaunchHostFunc"),
        };
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
        let create = self
            .api
            .event_create_with_flags
            .get(&self.lib, Vendor::Musa)?;
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
        let destroy = self.api.event_destroy.get(&self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("musaEventDestroy", unsafe { destroy(event as MusaEvent) })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = self.api.event_record.get(&self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0).
            self.check("musaEventRecord", unsafe {
                record(event as MusaEvent, stream as MusaStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.api.event_query.get(&self.lib, Vendor::Musa)?;
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
        let wait = self.api.stream_wait_event.get(&self.lib, Vendor::Musa)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0); flags must be 0.
            self.check("musaStreamWaitEvent", unsafe {
                wait(stream as MusaStream, event as MusaEvent, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = self.api.launch_host_func.get(&self.lib, Vendor::Musa)?;
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
