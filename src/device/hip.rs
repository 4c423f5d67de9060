//! AMD ROCm and Hygon DCU through the HIP runtime, `libamdhip64.so.6`/`.5`
//! (`MIXCCL_HIP_LIB` overrides).
//!
//! HIP keeps a current device per thread (`hipSetDevice`). Every call that acts on a
//! device makes that device current for the call and restores the thread's previous
//! device after, so a caller's thread leaves mixccl as it entered.
//!
//! `hipPointerAttribute_t` has one layout in ROCm 5 and 6 (the memory type, an `int`
//! enum, first), but `hipMemoryType`'s values changed in ROCm 6.0 to follow CUDA's:
//! ROCm 5 has Host 0, Device 1, Array 2, Unified 3, Managed 4; ROCm 6 has Unregistered
//! 0, Host 1, Device 2, Managed 3, Array 10, Unified 11. The major version from
//! `hipRuntimeGetVersion` (`major * 10^7 + minor * 10^5 + patch`) picks the table.
//! Plain host memory is `hipErrorInvalidValue` on some versions and success with an
//! unregistered (or, on ROCm 5, host) type on others; both mean "not mine".

use super::hostfn::{self, CHostFn};
use super::loader::{self, Opened, Optional};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

type HipError = c_int;
type HipStream = *mut c_void;
type HipEvent = *mut c_void;

const HIP_SUCCESS: HipError = 0;
const HIP_ERROR_INVALID_VALUE: HipError = 1;
const HIP_ERROR_NOT_READY: HipError = 600;
const HIP_EVENT_DISABLE_TIMING: c_uint = 2;
const HIP_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const HIP_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const HIP_STREAM_NON_BLOCKING: c_uint = 1;
const HIP_HOST_MALLOC_DEFAULT: c_uint = 0;
/// `hipMemoryTypeDevice` and `hipMemoryTypeArray` before ROCm 6.
const ROCM5_DEVICE_TYPES: [c_int; 2] = [1, 2];
/// `hipMemoryTypeDevice` and `hipMemoryTypeArray` from ROCm 6.
const ROCM6_DEVICE_TYPES: [c_int; 2] = [2, 10];

/// `hipPointerAttribute_t` (hip_runtime_api.h, the same layout in ROCm 5 and 6; ROCm 5
/// names the first field `memoryType`, ROCm 6 `type`).
#[repr(C)]
struct PointerAttribute {
    memory_type: c_int,
    device: c_int,
    device_pointer: *mut c_void,
    host_pointer: *mut c_void,
    is_managed: c_int,
    allocation_flags: c_uint,
}

/// The HIP entry points mixccl uses (hip_runtime_api.h).
struct Api {
    init: unsafe extern "C" fn(c_uint) -> HipError,
    runtime_get_version: unsafe extern "C" fn(*mut c_int) -> HipError,
    get_device: unsafe extern "C" fn(*mut c_int) -> HipError,
    set_device: unsafe extern "C" fn(c_int) -> HipError,
    pointer_get_attributes: unsafe extern "C" fn(*mut PointerAttribute, *const c_void) -> HipError,
    mem_get_address_range:
        unsafe extern "C" fn(*mut *mut c_void, *mut usize, *mut c_void) -> HipError,
    memcpy_async:
        unsafe extern "C" fn(*mut c_void, *const c_void, usize, c_int, HipStream) -> HipError,
    stream_create_with_flags: unsafe extern "C" fn(*mut HipStream, c_uint) -> HipError,
    stream_destroy: unsafe extern "C" fn(HipStream) -> HipError,
    stream_synchronize: unsafe extern "C" fn(HipStream) -> HipError,
    host_malloc: unsafe extern "C" fn(*mut *mut c_void, usize, c_uint) -> HipError,
    host_free: unsafe extern "C" fn(*mut c_void) -> HipError,
    malloc: unsafe extern "C" fn(*mut *mut c_void, usize) -> HipError,
    free: unsafe extern "C" fn(*mut c_void) -> HipError,
    get_error_name: unsafe extern "C" fn(HipError) -> *const c_char,
    get_error_string: unsafe extern "C" fn(HipError) -> *const c_char,
    event_create_with_flags: Optional<unsafe extern "C" fn(*mut HipEvent, c_uint) -> HipError>,
    event_destroy: Optional<unsafe extern "C" fn(HipEvent) -> HipError>,
    event_record: Optional<unsafe extern "C" fn(HipEvent, HipStream) -> HipError>,
    event_query: Optional<unsafe extern "C" fn(HipEvent) -> HipError>,
    stream_wait_event: Optional<unsafe extern "C" fn(HipStream, HipEvent, c_uint) -> HipError>,
    launch_host_func: Optional<unsafe extern "C" fn(HipStream, CHostFn, *mut c_void) -> HipError>,
}

/// The HIP shim: the loaded runtime and which `hipMemoryType` table it uses.
pub(crate) struct Hip {
    api: Api,
    lib: Opened,
    /// `hipMemoryType` values that mean device memory for this runtime's version.
    device_types: [c_int; 2],
}

impl Hip {
    /// Loads the runtime, initialises it (`hipInit(0)`) and reads its version.
    pub(crate) fn open() -> Result<Hip> {
        let lib = loader::open(Vendor::Hip)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each field's type is HIP's documented C signature for that
                // symbol (hip_runtime_api.h); enums are C ints and hipDeviceptr_t is void*.
                unsafe { loader::symbol(&lib, Vendor::Hip, $name)? }
            };
        }
        macro_rules! opt {
            ($name:literal) => {
                // SAFETY: as for sym! (hip_runtime_api.h; hipEvent_t is a pointer).
                unsafe { Optional::load(&lib, $name) }
            };
        }
        let api = Api {
            init: sym!("hipInit"),
            runtime_get_version: sym!("hipRuntimeGetVersion"),
            get_device: sym!("hipGetDevice"),
            set_device: sym!("hipSetDevice"),
            pointer_get_attributes: sym!("hipPointerGetAttributes"),
            mem_get_address_range: sym!("hipMemGetAddressRange"),
            memcpy_async: sym!("hipMemcpyAsync"),
            stream_create_with_flags: sym!("hipStreamCreateWithFlags"),
            stream_destroy: sym!("hipStreamDestroy"),
            stream_synchronize: sym!("hipStreamSynchronize"),
            host_malloc: sym!("hipHostMalloc"),
            host_free: sym!("hipHostFree"),
            malloc: sym!("hipMalloc"),
            free: sym!("hipFree"),
            get_error_name: sym!("hipGetErrorName"),
            get_error_string: sym!("hipGetErrorString"),
            event_create_with_flags: opt!("hipEventCreateWithFlags"),
            event_destroy: opt!("hipEventDestroy"),
            event_record: opt!("hipEventRecord"),
            event_query: opt!("hipEventQuery"),
            stream_wait_event: opt!("hipStreamWaitEvent"),
            launch_host_func: opt!("hipLaunchHostFunc"),
        };
        let mut hip = Hip {
            api,
            lib,
            device_types: ROCM6_DEVICE_TYPES,
        };
        // SAFETY: hipInit takes flags by value; 0 is the only documented value.
        hip.check("hipInit", unsafe { (hip.api.init)(0) })?;
        let mut version: c_int = 0;
        // SAFETY: `version` is a valid out-pointer.
        hip.check("hipRuntimeGetVersion", unsafe {
            (hip.api.runtime_get_version)(&mut version)
        })?;
        if version / 10_000_000 < 6 {
            hip.device_types = ROCM5_DEVICE_TYPES;
        }
        Ok(hip)
    }

    /// `Ok` for hipSuccess, else an error naming `call`, the code's name and text.
    fn check(&self, call: &str, rc: HipError) -> Result<()> {
        if rc == HIP_SUCCESS {
            return Ok(());
        }
        let text = |f: unsafe extern "C" fn(HipError) -> *const c_char| {
            // SAFETY: both functions take any code and return a static string or NULL.
            let p = unsafe { f(rc) };
            if p.is_null() {
                "unknown error".to_string()
            } else {
                // SAFETY: non-null and NUL-terminated, per HIP's contract.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        };
        Err(Error::Device {
            vendor: "hip",
            message: format!(
                "{call} failed: {rc} {} ({})",
                text(self.api.get_error_name),
                text(self.api.get_error_string)
            ),
        })
    }

    /// Runs `f` with device `index` current on this thread, then makes the thread's
    /// previous device current again.
    fn on_device<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let set = |device: i32, restoring: bool| {
            // SAFETY: hipSetDevice takes an ordinal by value and validates it.
            let rc = unsafe { (self.api.set_device)(device) };
            let call = if restoring {
                "hipSetDevice (restoring the caller's device)"
            } else {
                "hipSetDevice"
            };
            self.check(call, rc)
        };
        super::switch_device(Some(self.current_device()?), index, set, f)
    }
}

impl Device for Hip {
    fn vendor(&self) -> Vendor {
        Vendor::Hip
    }

    fn library(&self) -> &str {
        &self.lib.name
    }

    fn locate(&self, ptr: usize) -> Result<Option<Allocation>> {
        let mut attr = PointerAttribute {
            memory_type: -1,
            device: -1,
            device_pointer: std::ptr::null_mut(),
            host_pointer: std::ptr::null_mut(),
            is_managed: 0,
            allocation_flags: 0,
        };
        // SAFETY: `attr` is a valid out-pointer of the documented layout; the runtime
        // only looks the address up, it never dereferences it.
        let rc = unsafe { (self.api.pointer_get_attributes)(&mut attr, ptr as *const c_void) };
        if rc == HIP_ERROR_INVALID_VALUE {
            return Ok(None);
        }
        self.check("hipPointerGetAttributes", rc)?;
        if !self.device_types.contains(&attr.memory_type) || attr.is_managed != 0 {
            return Ok(None);
        }
        let mut base: *mut c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        // SAFETY: valid out-pointers; the address is only looked up.
        let rc =
            unsafe { (self.api.mem_get_address_range)(&mut base, &mut size, ptr as *mut c_void) };
        let range = (rc == HIP_SUCCESS && !base.is_null()).then_some((base as usize, size));
        Ok(Some(Allocation {
            index: attr.device,
            range,
        }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.on_device(index, || {
            let mut s: HipStream = std::ptr::null_mut();
            // SAFETY: `s` is a valid out-pointer.
            self.check("hipStreamCreateWithFlags", unsafe {
                (self.api.stream_create_with_flags)(&mut s, HIP_STREAM_NON_BLOCKING)
            })?;
            Ok(s as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check("hipStreamDestroy", unsafe {
                (self.api.stream_destroy)(stream as HipStream)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller passes a stream of this device, or 0 (the null stream).
            self.check("hipStreamSynchronize", unsafe {
                (self.api.stream_synchronize)(stream as HipStream)
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
            self.check("hipMemcpyAsync(DeviceToHost)", unsafe {
                (self.api.memcpy_async)(
                    dst.cast(),
                    src as *const c_void,
                    len,
                    HIP_MEMCPY_DEVICE_TO_HOST,
                    stream as HipStream,
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
            self.check("hipMemcpyAsync(HostToDevice)", unsafe {
                (self.api.memcpy_async)(
                    dst as *mut c_void,
                    src.cast(),
                    len,
                    HIP_MEMCPY_HOST_TO_DEVICE,
                    stream as HipStream,
                )
            })
        })
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer; 0 is hipHostMallocDefault.
            self.check(&format!("hipHostMalloc({len} bytes)"), unsafe {
                (self.api.host_malloc)(&mut p, len.max(1), HIP_HOST_MALLOC_DEFAULT)
            })?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` came from hipHostMalloc.
            self.check("hipHostFree", unsafe { (self.api.host_free)(ptr.cast()) })
        })
    }

    fn current_device(&self) -> Result<i32> {
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        self.check("hipGetDevice", unsafe { (self.api.get_device)(&mut dev) })?;
        Ok(dev)
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.on_device(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("hipMalloc({len} bytes)"), unsafe {
                (self.api.malloc)(&mut p, len.max(1))
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.on_device(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check("hipFree", unsafe { (self.api.free)(ptr as *mut c_void) })
        })
    }

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = self
            .api
            .event_create_with_flags
            .get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            let mut e: HipEvent = std::ptr::null_mut();
            // SAFETY: `e` is a valid out-pointer.
            self.check("hipEventCreateWithFlags", unsafe {
                create(&mut e, HIP_EVENT_DISABLE_TIMING)
            })?;
            Ok(e as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = self.api.event_destroy.get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("hipEventDestroy", unsafe { destroy(event as HipEvent) })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = self.api.event_record.get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0).
            self.check("hipEventRecord", unsafe {
                record(event as HipEvent, stream as HipStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.api.event_query.get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            // SAFETY: a live event from create_event.
            match unsafe { query(event as HipEvent) } {
                HIP_SUCCESS => Ok(true),
                HIP_ERROR_NOT_READY => Ok(false),
                rc => self.check("hipEventQuery", rc).map(|_| false),
            }
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = self.api.stream_wait_event.get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0); flags must be 0.
            self.check("hipStreamWaitEvent", unsafe {
                wait(stream as HipStream, event as HipEvent, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = self.api.launch_host_func.get(&self.lib, Vendor::Hip)?;
        self.on_device(index, || {
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the runtime calls it once (or the launch fails and hostfn frees it).
                self.check("hipLaunchHostFunc", unsafe {
                    launch(stream as HipStream, cb, data)
                })
            })
        })
    }
}

// SAFETY: the HIP runtime is thread-safe; the struct holds function pointers, the
// library handle and a constant table.
unsafe impl Send for Hip {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl Sync for Hip {}
