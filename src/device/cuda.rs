//! NVIDIA CUDA through the driver API, `libcuda.so.1` (`MIXCCL_CUDA_LIB` overrides;
//! CUDA-compatible runtimes such as Iluvatar CoreX load the same way).
//!
//! Why the driver and not the runtime (`libcudart`): `libcuda.so.1` is installed with
//! every driver under a soname that has not changed since CUDA 4, while cudart's
//! soname changes with each major release (`.so.12`, `.so.13`) and frameworks ship
//! their own copy inside their wheels, off the loader's path. Runtime allocations,
//! streams (`cudaStream_t` is `CUstream`) and primary contexts are the driver's own
//! objects, so the driver API serves runtime users unchanged (NCCL and cudarc load
//! the driver the same way). The cost is context handling: each call makes the
//! device's primary context current on the calling thread (`cuCtxPushCurrent`) and
//! pops it after, so mixccl's threads never leave a context behind.

use super::hostfn::{self, CHostFn};
use super::loader::{self, Opened, Optional};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::error::{Error, Result};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::Mutex;

type CuResult = c_int;
type CuDevicePtr = u64;
type CuContext = *mut c_void;
type CuStream = *mut c_void;
type CuEvent = *mut c_void;

const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_INVALID_VALUE: CuResult = 1;
const CUDA_ERROR_NOT_INITIALIZED: CuResult = 3;
const CUDA_ERROR_INVALID_CONTEXT: CuResult = 201;
const CUDA_ERROR_NOT_READY: CuResult = 600;
const CU_EVENT_DISABLE_TIMING: c_uint = 2;
const CU_POINTER_ATTRIBUTE_MEMORY_TYPE: c_int = 2;
const CU_POINTER_ATTRIBUTE_IS_MANAGED: c_int = 8;
const CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: c_int = 9;
const CU_MEMORYTYPE_DEVICE: c_uint = 2;
const CU_STREAM_NON_BLOCKING: c_uint = 1;

/// The driver entry points mixccl uses, by their versioned names (`_v2`), as the
/// headers map them since CUDA 3.2.
struct Api {
    init: unsafe extern "C" fn(c_uint) -> CuResult,
    device_get: unsafe extern "C" fn(*mut c_int, c_int) -> CuResult,
    primary_ctx_retain: unsafe extern "C" fn(*mut CuContext, c_int) -> CuResult,
    ctx_push: unsafe extern "C" fn(CuContext) -> CuResult,
    ctx_pop: unsafe extern "C" fn(*mut CuContext) -> CuResult,
    ctx_get_device: unsafe extern "C" fn(*mut c_int) -> CuResult,
    pointer_get_attribute: unsafe extern "C" fn(*mut c_void, c_int, CuDevicePtr) -> CuResult,
    mem_get_address_range:
        unsafe extern "C" fn(*mut CuDevicePtr, *mut usize, CuDevicePtr) -> CuResult,
    memcpy_dtoh_async: unsafe extern "C" fn(*mut c_void, CuDevicePtr, usize, CuStream) -> CuResult,
    memcpy_htod_async:
        unsafe extern "C" fn(CuDevicePtr, *const c_void, usize, CuStream) -> CuResult,
    stream_create: unsafe extern "C" fn(*mut CuStream, c_uint) -> CuResult,
    stream_destroy: unsafe extern "C" fn(CuStream) -> CuResult,
    stream_synchronize: unsafe extern "C" fn(CuStream) -> CuResult,
    mem_alloc_host: unsafe extern "C" fn(*mut *mut c_void, usize) -> CuResult,
    mem_free_host: unsafe extern "C" fn(*mut c_void) -> CuResult,
    mem_alloc: unsafe extern "C" fn(*mut CuDevicePtr, usize) -> CuResult,
    mem_free: unsafe extern "C" fn(CuDevicePtr) -> CuResult,
    get_error_name: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    get_error_string: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult,
    event_create: Optional<unsafe extern "C" fn(*mut CuEvent, c_uint) -> CuResult>,
    event_destroy: Optional<unsafe extern "C" fn(CuEvent) -> CuResult>,
    event_record: Optional<unsafe extern "C" fn(CuEvent, CuStream) -> CuResult>,
    event_query: Optional<unsafe extern "C" fn(CuEvent) -> CuResult>,
    stream_wait_event: Optional<unsafe extern "C" fn(CuStream, CuEvent, c_uint) -> CuResult>,
    launch_host_func: Optional<unsafe extern "C" fn(CuStream, CHostFn, *mut c_void) -> CuResult>,
}

/// The CUDA shim: the loaded driver and each device's primary context.
pub(crate) struct Cuda {
    api: Api,
    lib: Opened,
    /// Primary contexts retained so far, by device ordinal (kept for the process's life).
    contexts: Mutex<Vec<(c_int, usize)>>,
}

impl Cuda {
    /// Loads the driver and initialises it (`cuInit(0)`).
    pub(crate) fn open() -> Result<Cuda> {
        let lib = loader::open(Vendor::Cuda)?;
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: each field's type is the driver's documented C signature for
                // that symbol (cuda.h).
                unsafe { loader::symbol(&lib, Vendor::Cuda, $name)? }
            };
        }
        macro_rules! opt {
            ($name:literal) => {
                // SAFETY: as for sym! (cuda.h signatures; cuLaunchHostFunc since CUDA 10).
                unsafe { Optional::load(&lib, $name) }
            };
        }
        let api = Api {
            init: sym!("cuInit"),
            device_get: sym!("cuDeviceGet"),
            primary_ctx_retain: sym!("cuDevicePrimaryCtxRetain"),
            ctx_push: sym!("cuCtxPushCurrent_v2"),
            ctx_pop: sym!("cuCtxPopCurrent_v2"),
            ctx_get_device: sym!("cuCtxGetDevice"),
            pointer_get_attribute: sym!("cuPointerGetAttribute"),
            mem_get_address_range: sym!("cuMemGetAddressRange_v2"),
            memcpy_dtoh_async: sym!("cuMemcpyDtoHAsync_v2"),
            memcpy_htod_async: sym!("cuMemcpyHtoDAsync_v2"),
            stream_create: sym!("cuStreamCreate"),
            stream_destroy: sym!("cuStreamDestroy_v2"),
            stream_synchronize: sym!("cuStreamSynchronize"),
            mem_alloc_host: sym!("cuMemAllocHost_v2"),
            mem_free_host: sym!("cuMemFreeHost"),
            mem_alloc: sym!("cuMemAlloc_v2"),
            mem_free: sym!("cuMemFree_v2"),
            get_error_name: sym!("cuGetErrorName"),
            get_error_string: sym!("cuGetErrorString"),
            event_create: opt!("cuEventCreate"),
            event_destroy: opt!("cuEventDestroy_v2"),
            event_record: opt!("cuEventRecord"),
            event_query: opt!("cuEventQuery"),
            stream_wait_event: opt!("cuStreamWaitEvent"),
            launch_host_func: opt!("cuLaunchHostFunc"),
        };
        let cuda = Cuda {
            api,
            lib,
            contexts: Mutex::new(Vec::new()),
        };
        // SAFETY: cuInit takes flags by value; 0 is the only documented value.
        cuda.check("cuInit", unsafe { (cuda.api.init)(0) })?;
        Ok(cuda)
    }

    /// `Ok` for CUDA_SUCCESS, else an error naming `call`, the code's name and text.
    fn check(&self, call: &str, rc: CuResult) -> Result<()> {
        if rc == CUDA_SUCCESS {
            return Ok(());
        }
        let text = |f: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult| {
            let mut p: *const c_char = std::ptr::null();
            // SAFETY: `p` is a valid out-pointer; on success the driver points it at a
            // static NUL-terminated string.
            if unsafe { f(rc, &mut p) } == CUDA_SUCCESS && !p.is_null() {
                // SAFETY: non-null and NUL-terminated, per the driver's contract.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            } else {
                "unknown error".to_string()
            }
        };
        Err(Error::Device {
            vendor: "cuda",
            message: format!(
                "{call} failed: {rc} {} ({})",
                text(self.api.get_error_name),
                text(self.api.get_error_string)
            ),
        })
    }

    /// Device `index`'s primary context, retained once.
    fn context(&self, index: i32) -> Result<CuContext> {
        let mut ctxs = self.contexts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = ctxs.iter().find(|(i, _)| *i == index) {
            return Ok(*c as CuContext);
        }
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        self.check("cuDeviceGet", unsafe {
            (self.api.device_get)(&mut dev, index)
        })?;
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: `ctx` is a valid out-pointer; `dev` came from cuDeviceGet.
        self.check("cuDevicePrimaryCtxRetain", unsafe {
            (self.api.primary_ctx_retain)(&mut ctx, dev)
        })?;
        ctxs.push((index, ctx as usize));
        Ok(ctx)
    }

    /// Runs `f` with device `index`'s primary context current on this thread.
    fn with_context<T>(&self, index: i32, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let ctx = self.context(index)?;
        // SAFETY: `ctx` is a retained primary context, valid for the process's life.
        self.check("cuCtxPushCurrent", unsafe { (self.api.ctx_push)(ctx) })?;
        let out = f();
        let mut popped: CuContext = std::ptr::null_mut();
        // SAFETY: pops the context pushed above; `popped` is a valid out-pointer.
        let rc = unsafe { (self.api.ctx_pop)(&mut popped) };
        let out = out?;
        self.check("cuCtxPopCurrent", rc)?;
        Ok(out)
    }
}

impl Device for Cuda {
    fn vendor(&self) -> Vendor {
        Vendor::Cuda
    }

    fn library(&self) -> &str {
        &self.lib.name
    }

    fn locate(&self, ptr: usize) -> Result<Option<Allocation>> {
        let mut mem_type: c_uint = 0;
        // SAFETY: MEMORY_TYPE writes one unsigned int to the valid out-pointer; the
        // driver only inspects the address, it never dereferences it.
        let rc = unsafe {
            (self.api.pointer_get_attribute)(
                (&mut mem_type as *mut c_uint).cast(),
                CU_POINTER_ATTRIBUTE_MEMORY_TYPE,
                ptr as CuDevicePtr,
            )
        };
        // Memory the driver does not know (plain host memory) is INVALID_VALUE.
        if matches!(
            rc,
            CUDA_ERROR_INVALID_VALUE | CUDA_ERROR_NOT_INITIALIZED | CUDA_ERROR_INVALID_CONTEXT
        ) {
            return Ok(None);
        }
        self.check("cuPointerGetAttribute(MEMORY_TYPE)", rc)?;
        if mem_type != CU_MEMORYTYPE_DEVICE {
            return Ok(None);
        }
        let mut managed: c_int = 0;
        // SAFETY: IS_MANAGED writes one bool-sized int (we give an int, which is larger).
        let rc = unsafe {
            (self.api.pointer_get_attribute)(
                (&mut managed as *mut c_int).cast(),
                CU_POINTER_ATTRIBUTE_IS_MANAGED,
                ptr as CuDevicePtr,
            )
        };
        if rc == CUDA_SUCCESS && managed & 0xff != 0 {
            // Managed memory is readable from the host: no staging needed.
            return Ok(None);
        }
        let mut ordinal: c_int = 0;
        // SAFETY: DEVICE_ORDINAL writes one int to the valid out-pointer.
        self.check("cuPointerGetAttribute(DEVICE_ORDINAL)", unsafe {
            (self.api.pointer_get_attribute)(
                (&mut ordinal as *mut c_int).cast(),
                CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL,
                ptr as CuDevicePtr,
            )
        })?;
        let mut base: CuDevicePtr = 0;
        let mut size: usize = 0;
        // SAFETY: valid out-pointers; the address is only looked up.
        let rc = unsafe { (self.api.mem_get_address_range)(&mut base, &mut size, ptr as u64) };
        let range = (rc == CUDA_SUCCESS).then_some((base as usize, size));
        Ok(Some(Allocation {
            index: ordinal,
            range,
        }))
    }

    fn create_stream(&self, index: i32) -> Result<StreamHandle> {
        self.with_context(index, || {
            let mut s: CuStream = std::ptr::null_mut();
            // SAFETY: `s` is a valid out-pointer; a context is current.
            self.check("cuStreamCreate", unsafe {
                (self.api.stream_create)(&mut s, CU_STREAM_NON_BLOCKING)
            })?;
            Ok(s as StreamHandle)
        })
    }

    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.with_context(index, || {
            // SAFETY: `stream` came from create_stream and is destroyed once.
            self.check("cuStreamDestroy", unsafe {
                (self.api.stream_destroy)(stream as CuStream)
            })
        })
    }

    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()> {
        self.with_context(index, || {
            // SAFETY: the caller passes a stream of this device's context, or 0.
            self.check("cuStreamSynchronize", unsafe {
                (self.api.stream_synchronize)(stream as CuStream)
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
        self.with_context(index, || {
            // SAFETY: the caller's contract (Device::copy_to_host) covers both ranges.
            self.check("cuMemcpyDtoHAsync", unsafe {
                (self.api.memcpy_dtoh_async)(dst.cast(), src as u64, len, stream as CuStream)
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
        self.with_context(index, || {
            // SAFETY: the caller's contract (Device::copy_to_device) covers both ranges.
            self.check("cuMemcpyHtoDAsync", unsafe {
                (self.api.memcpy_htod_async)(dst as u64, src.cast(), len, stream as CuStream)
            })
        })
    }

    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8> {
        self.with_context(index, || {
            let mut p: *mut c_void = std::ptr::null_mut();
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("cuMemAllocHost({len} bytes)"), unsafe {
                (self.api.mem_alloc_host)(&mut p, len.max(1))
            })?;
            Ok(p.cast())
        })
    }

    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()> {
        self.with_context(index, || {
            // SAFETY: the caller's contract: `ptr` came from cuMemAllocHost.
            self.check("cuMemFreeHost", unsafe {
                (self.api.mem_free_host)(ptr.cast())
            })
        })
    }

    fn current_device(&self) -> Result<i32> {
        let mut dev: c_int = 0;
        // SAFETY: `dev` is a valid out-pointer.
        let rc = unsafe { (self.api.ctx_get_device)(&mut dev) };
        // No current context on this thread: the runtime's default device is 0.
        if rc == CUDA_ERROR_INVALID_CONTEXT {
            return Ok(0);
        }
        self.check("cuCtxGetDevice", rc)?;
        Ok(dev)
    }

    fn alloc_device(&self, index: i32, len: usize) -> Result<usize> {
        self.with_context(index, || {
            let mut p: CuDevicePtr = 0;
            // SAFETY: `p` is a valid out-pointer.
            self.check(&format!("cuMemAlloc({len} bytes)"), unsafe {
                (self.api.mem_alloc)(&mut p, len.max(1))
            })?;
            Ok(p as usize)
        })
    }

    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()> {
        self.with_context(index, || {
            // SAFETY: the caller's contract: `ptr` is a live device allocation.
            self.check("cuMemFree", unsafe { (self.api.mem_free)(ptr as u64) })
        })
    }

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = self.api.event_create.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            let mut e: CuEvent = std::ptr::null_mut();
            // SAFETY: `e` is a valid out-pointer; a context is current.
            self.check("cuEventCreate", unsafe {
                create(&mut e, CU_EVENT_DISABLE_TIMING)
            })?;
            Ok(e as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = self.api.event_destroy.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("cuEventDestroy", unsafe { destroy(event as CuEvent) })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = self.api.event_record.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            // SAFETY: a live event and a stream of this device's context (or 0).
            self.check("cuEventRecord", unsafe {
                record(event as CuEvent, stream as CuStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.api.event_query.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            // SAFETY: a live event from create_event.
            match unsafe { query(event as CuEvent) } {
                CUDA_SUCCESS => Ok(true),
                CUDA_ERROR_NOT_READY => Ok(false),
                rc => self.check("cuEventQuery", rc).map(|_| false),
            }
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = self.api.stream_wait_event.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            // SAFETY: a live event and a stream of this device's context (or 0);
            // flags must be 0.
            self.check("cuStreamWaitEvent", unsafe {
                wait(stream as CuStream, event as CuEvent, 0)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = self.api.launch_host_func.get(&self.lib, Vendor::Cuda)?;
        self.with_context(index, || {
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the driver calls it once (or the launch fails and hostfn frees it).
                self.check("cuLaunchHostFunc", unsafe {
                    launch(stream as CuStream, cb, data)
                })
            })
        })
    }
}

// SAFETY: the driver API is thread-safe; the struct holds function pointers, the
// library handle and a mutex-guarded table of context addresses.
unsafe impl Send for Cuda {}
// SAFETY: as above; no interior state is touched without the mutex.
unsafe impl Sync for Cuda {}
