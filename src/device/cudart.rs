//! The CUDA-runtime-shaped vendors (AMD HIP, Moore Threads MUSA): one shim over the
//! API they share under their own prefixes (`hipMalloc`, `musaMalloc`, ...), with
//! each vendor file keeping only what differs, as a [`Flavor`]: how the runtime
//! starts, which pointer attributes mean device memory, the allocation-range query,
//! the pinned-memory calls and how "not ready" is told.
//!
//! Shared behaviour: errors are `<prefix>Error_t` with success 0 and
//! InvalidValue 1, texts from `<prefix>GetErrorName`/`String`; the current device is
//! per thread (`<prefix>SetDevice`), and every call that acts on a device makes it
//! current for the call and restores the thread's previous device after, so a
//! caller's thread leaves mixccl as it entered; copy kinds HostToDevice 1,
//! DeviceToHost 2; streams created non-blocking, events without timing.

use super::hostfn::{self, CHostFn};
use super::loader::{self, Library};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::error::{DeviceError, Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// `<prefix>Error_t`.
pub(crate) type RtError = c_int;
type RtStream = *mut c_void;
type RtEvent = *mut c_void;

pub(crate) const SUCCESS: RtError = 0;
pub(crate) const ERROR_INVALID_VALUE: RtError = 1;
const MEMCPY_HOST_TO_DEVICE: c_int = 1;
const MEMCPY_DEVICE_TO_HOST: c_int = 2;
const STREAM_NON_BLOCKING: c_uint = 1;
const EVENT_DISABLE_TIMING: c_uint = 2;

/// `cudaPointerAttributes` as CUDA 11 lays it out (`{type, device, devicePointer,
/// hostPointer}`, MUSA's `musaPointerAttributes`), extended by HIP's
/// `hipPointerAttribute_t` with `isManaged` and `allocationFlags`. The larger layout
/// serves both: a runtime with the shorter struct writes only its prefix, and the
/// tail keeps the zero it was given.
#[repr(C)]
pub(crate) struct PointerAttributes {
    pub memory_type: c_int,
    pub device: c_int,
    pub device_pointer: *mut c_void,
    pub host_pointer: *mut c_void,
    pub is_managed: c_int,
    pub allocation_flags: c_uint,
}

crate::foreign::foreign_api! {
    /// The entry points the CUDA-runtime-shaped APIs share, named without their
    /// prefix (`hip`, `musa`); enums are C ints, handles pointers.
    pub(crate) struct CudartApi {
        get_device: "GetDevice" => fn(*mut c_int) -> RtError;
        set_device: "SetDevice" => fn(c_int) -> RtError;
        pointer_get_attributes: "PointerGetAttributes" => fn(*mut PointerAttributes, *const c_void) -> RtError;
        memcpy_async: "MemcpyAsync" => fn(*mut c_void, *const c_void, usize, c_int, RtStream) -> RtError;
        stream_create_with_flags: "StreamCreateWithFlags" => fn(*mut RtStream, c_uint) -> RtError;
        stream_destroy: "StreamDestroy" => fn(RtStream) -> RtError;
        stream_synchronize: "StreamSynchronize" => fn(RtStream) -> RtError;
        malloc: "Malloc" => fn(*mut *mut c_void, usize) -> RtError;
        free: "Free" => fn(*mut c_void) -> RtError;
        get_error_name: "GetErrorName" => fn(RtError) -> *const c_char;
        get_error_string: "GetErrorString" => fn(RtError) -> *const c_char;
        @optional {
            event_create_with_flags: "EventCreateWithFlags" => fn(*mut RtEvent, c_uint) -> RtError;
            event_destroy: "EventDestroy" => fn(RtEvent) -> RtError;
            event_record: "EventRecord" => fn(RtEvent, RtStream) -> RtError;
            event_query: "EventQuery" => fn(RtEvent) -> RtError;
            stream_wait_event: "StreamWaitEvent" => fn(RtStream, RtEvent, c_uint) -> RtError;
            launch_host_func: "LaunchHostFunc" => fn(RtStream, CHostFn, *mut c_void) -> RtError;
        }
    }
}

impl CudartApi {
    /// The runtime's name for code `rc`, or "" when it has none.
    pub(crate) fn error_name(&self, rc: RtError) -> String {
        text(self.get_error_name, rc)
    }

    /// `Ok` for success, else `vendor`'s error naming `call`, the code's name and text.
    pub(crate) fn check(&self, vendor: Vendor, call: &str, rc: RtError) -> Result<()> {
        if rc == SUCCESS {
            return Ok(());
        }
        let or_unknown = |s: String| {
            if s.is_empty() {
                "unknown error".to_string()
            } else {
                s
            }
        };
        Err(Error::Device {
            vendor: vendor.name(),
            error: DeviceError::Call {
                call: call.to_string(),
                code: rc,
                name: Some(or_unknown(self.error_name(rc))),
                text: or_unknown(text(self.get_error_string, rc)),
            },
        })
    }
}

/// The string a `const char *(*)(int)` error function returns for `rc` ("" for NULL).
fn text(f: unsafe extern "C" fn(RtError) -> *const c_char, rc: RtError) -> String {
    // SAFETY: the error functions take any code and return a static string or NULL.
    let s = unsafe { f(rc) };
    if s.is_null() {
        String::new()
    } else {
        // SAFETY: non-null and NUL-terminated, per the runtime's contract.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

/// What one CUDA-runtime-shaped vendor does its own way.
pub(crate) trait Flavor: Sized + Send + Sync + 'static {
    /// The vendor.
    const VENDOR: Vendor;
    /// The prefix of its entry points (`hip`, `musa`).
    const PREFIX: &'static str;

    /// Binds the vendor's own entry points in `lib` and starts the runtime.
    fn open(lib: &Library, api: &CudartApi) -> Result<Self>;

    /// Do these attributes (from a successful query) describe device memory that the
    /// CPU cannot read directly?
    fn is_device(&self, attr: &PointerAttributes) -> bool;

    /// The allocation `(base, len)` holding `ptr`, where the runtime can say.
    fn range(&self, ptr: usize) -> Option<(usize, usize)>;

    /// Allocates `len` bytes of pinned host memory into `*p`: the call's name (for
    /// messages) and its result.
    ///
    /// # Safety
    /// `p` is a valid out-pointer.
    unsafe fn alloc_pinned(&self, p: *mut *mut c_void, len: usize) -> (&'static str, RtError);

    /// Frees pinned memory: the call's name and its result.
    ///
    /// # Safety
    /// `p` came from [`Flavor::alloc_pinned`] and is not used afterwards.
    unsafe fn free_pinned(&self, p: *mut c_void) -> (&'static str, RtError);

    /// Is `rc` (named `name` by the runtime) its "not ready" answer to an event query?
    fn not_ready(&self, rc: RtError, name: &str) -> bool;
}

/// The shim of a CUDA-runtime-shaped vendor `F`.
pub(crate) struct Cudart<F: Flavor> {
    api: CudartApi,
    flavor: F,
    lib: Library,
}

impl<F: Flavor> Cudart<F> {
    /// Loads the vendor's runtime and starts it.
    pub(crate) fn open() -> Result<Cudart<F>> {
        let lib = loader::open(F::VENDOR)?;
        // SAFETY: every signature in CudartApi is the shared runtime API's, which
        // hip_runtime_api.h and musa_runtime_api.h both follow.
        let api = unsafe { CudartApi::bind(&lib, F::PREFIX) }
            .map_err(|e| loader::load_error(F::VENDOR, e))?;
        let flavor = F::open(&lib, &api)?;
        Ok(Cudart { api, flavor, lib })
    }

    /// `<prefix><name>`, for messages.
    fn name(what: &str) -> String {
        format!("{}{what}", F::PREFIX)
    }

    fn check(&self, call: &str, rc: RtError) -> Result<()> {
        self.api.check(F::VENDOR, call, rc)
    }

    /// An optional entry point, or an error naming it.
    fn need<T: Copy>(&self, f: &crate::foreign::Optional<T>) -> Result<T> {
        loader::need(f, &self.lib, F::VENDOR)
    }

    /// Runs `f` with device `index` current on this thread, then makes the thread's
    /// previous device current again.
    fn on_device<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let set = |device: i32, restoring: bool| {
            // SAFETY: SetDevice takes an ordinal by value and validates it.
            let rc = unsafe { (self.api.set_device)(device) };
            let call = if restoring {
                format!(
                    "{} (restoring the caller's device)",
                    Self::name("SetDevice")
                )
            } else {
                Self::name("SetDevice")
            };
            self.check(&call, rc)
        };
        super::switch_device(Some(self.current_device()?), index, set, f)
    }

    /// Queues a copy of kind `kind` (`what` names it in messages).
    ///
    /// # Safety
    /// `dst` and `src` are valid for `len` bytes of the kinds `kind` names until the
    /// stream is synchronised.
    unsafe fn copy(
        &self,
        index: i32,
        dst: *mut c_void,
        src: *const c_void,
        len: usize,
        kind: (c_int, &str),
        stream: StreamHandle,
    ) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: this function's contract.
            self.check(
                &format!("{}({})", Self::name("MemcpyAsync"), kind.1),
                unsafe { (self.api.memcpy_async)(dst, src, len, kind.0, stream as RtStream) },
            )
        })
    }
}

impl<F: Flavor> Device for Cudart<F> {
    fn vendor(&self) -> Vendor {
        F::VENDOR
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
            is_managed: 0,
            allocation_flags: 0,
        };
        // SAFETY: `attr` is a valid out-pointer of at least the runtime's layout; the
        // runtime only looks the address up, it never dereferences it.
        let rc = unsafe { (self.api.pointer_get_attributes)(&mut attr, ptr as *const c_void) };
        // Plain host memory: InvalidValue on some versions, success with an
        // unregistered or host type on others; both mean "not mine".
        if rc == ERROR_INVALID_VALUE {
            return Ok(None);
        }
        self.check(&Self::name("PointerGetAttributes"), rc)?;
        if !self.flavor.is_device(&attr) {
            return Ok(None);
        }
        Ok(Some(Allocation {
            index: attr.device,
            range: self.flavor.range(ptr),
        }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.on_device(index, || {
            let mut s: RtStream = std::ptr::null_mut();
            // SAFETY: `s` is a valid out-pointer.
            self.check(&Self::name("StreamCreateWithFlags"), unsafe {
                (self.api.stream_create_with_flags)(&mut s, STREAM_NON_BLOCKING)
            })?;
            Ok(s as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check(&Self::name("StreamDestroy"), unsafe {
                (self.api.stream_destroy)(stream as RtStream)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller passes a stream of this device, or 0 (the null stream).
            self.check(&Self::name("StreamSynchronize"), unsafe {
                (self.api.stream_synchronize)(stream as RtStream)
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
        // SAFETY: the caller's contract (Device::copy_to_host) covers both ranges.
        unsafe {
            self.copy(
                index,
                dst.cast(),
                src as *const c_void,
                len,
                (MEMCPY_DEVICE_TO_HOST, "DeviceToHost"),
                stream,
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
        // SAFETY: the caller's contract (Device::copy_to_device) covers both ranges.
        unsafe {
            self.copy(
                index,
                dst as *mut c_void,
                src.cast(),
                len,
                (MEMCPY_HOST_TO_DEVICE, "HostToDevice"),
                stream,
            )
        }
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            let (call, rc) = unsafe { self.flavor.alloc_pinned(&mut p, len.max(1)) };
            self.check(&format!("{call}({len} bytes)"), rc)?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` came from alloc_pinned.
            let (call, rc) = unsafe { self.flavor.free_pinned(ptr.cast()) };
            self.check(call, rc)
        })
    }

    fn current_device(&self) -> Result<i32> {
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        self.check(&Self::name("GetDevice"), unsafe {
            (self.api.get_device)(&mut dev)
        })?;
        Ok(dev)
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("{}({len} bytes)", Self::name("Malloc")), unsafe {
                (self.api.malloc)(&mut p, len.max(1))
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check(&Self::name("Free"), unsafe {
                (self.api.free)(ptr as *mut c_void)
            })
        })
    }

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = self.need(&self.api.event_create_with_flags)?;
        self.on_device(index, || {
            let mut e: RtEvent = std::ptr::null_mut();
            // SAFETY: `e` is a valid out-pointer.
            self.check(&Self::name("EventCreateWithFlags"), unsafe {
                create(&mut e, EVENT_DISABLE_TIMING)
            })?;
            Ok(e as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = self.need(&self.api.event_destroy)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check(&Self::name("EventDestroy"), unsafe {
                destroy(event as RtEvent)
            })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = self.need(&self.api.event_record)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0).
            self.check(&Self::name("EventRecord"), unsafe {
                record(event as RtEvent, stream as RtStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.need(&self.api.event_query)?;
        self.on_device(index, || {
            // SAFETY: a live event from create_event.
            match unsafe { query(event as RtEvent) } {
                SUCCESS => Ok(true),
                rc if self.flavor.not_ready(rc, &self.api.error_name(rc)) => Ok(false),
                rc => self.check(&Self::name("EventQuery"), rc).map(|_| false),
            }
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = self.need(&self.api.stream_wait_event)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0); flags must be 0.
            self.check(&Self::name("StreamWaitEvent"), unsafe {
                wait(stream as RtStream, event as RtEvent, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = self.need(&self.api.launch_host_func)?;
        self.on_device(index, || {
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the runtime calls it once (or the launch fails and hostfn frees it).
                self.check(&Self::name("LaunchHostFunc"), unsafe {
                    launch(stream as RtStream, cb, data)
                })
            })
        })
    }
}

// SAFETY: the CUDA-runtime-shaped runtimes are thread-safe; the shim holds function
// pointers, the library handle and the flavor (Send + Sync by its trait bound).
unsafe impl<F: Flavor> Send for Cudart<F> {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl<F: Flavor> Sync for Cudart<F> {}
