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
//! - Events come from `aclrtCreateEventExWithFlag(ACL_EVENT_SYNC)`: re-recordable,
//!   complete before their first record, and usable in `aclrtStreamWaitEvent`
//!   (events of plain `aclrtCreateEvent` need `aclrtResetEvent` between uses).
//!   `aclrtQueryEventStatus` gives NOT_READY 0 or COMPLETE 1.
//! - Host functions are `aclrtLaunchCallback(fn, data, ACL_CALLBACK_BLOCK, stream)`.
//!   ACL runs a stream's callbacks on the thread subscribed to that stream
//!   (`aclrtSubscribeReport(thread id, stream)`), inside that thread's
//!   `aclrtProcessReport(timeout)`. So each device gets one report thread, started
//!   on its first callback and kept for the process's life, that loops on
//!   `aclrtProcessReport` with a bounded timeout; a stream is subscribed to it on
//!   its first callback and unsubscribed when mixccl destroys the stream.

use super::hostfn::{self, CHostFn};
use super::loader::{self, Opened, Optional};
use super::{Allocation, Device, EventHandle, HostFn, StreamHandle, Vendor};
use crate::debug::log_warn;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

type AclError = c_int;
type AclStream = *mut c_void;
type AclEvent = *mut c_void;

const ACL_SUCCESS: AclError = 0;
const ACL_ERROR_REPEAT_INITIALIZE: AclError = 100002;
const ACL_MEMCPY_HOST_TO_DEVICE: c_int = 1;
const ACL_MEMCPY_DEVICE_TO_HOST: c_int = 2;
const ACL_MEM_LOCATION_TYPE_DEVICE: u32 = 1;
const ACL_MEM_MALLOC_HUGE_FIRST: c_int = 0;
const ACL_EVENT_SYNC: u32 = 1;
const ACL_EVENT_RECORDED_STATUS_COMPLETE: c_int = 1;
const ACL_CALLBACK_BLOCK: c_int = 1;
/// aclrtProcessReport: no callback came within the timeout.
const ACL_ERROR_RT_REPORT_TIMEOUT: AclError = 507012;
/// aclrtProcessReport: no stream is subscribed to the calling thread.
const ACL_ERROR_RT_THREAD_SUBSCRIBE: AclError = 107012;
/// How long one aclrtProcessReport call of a report thread waits (ms).
const REPORT_POLL_MS: i32 = 100;
/// How long a report thread with no subscribed stream sleeps before asking again.
const REPORT_IDLE: Duration = Duration::from_millis(50);
/// How long to wait for a new report thread to say it is ready.
const REPORT_START_TIMEOUT: Duration = Duration::from_secs(10);

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
    create_event_ex_with_flag: Optional<unsafe extern "C" fn(*mut AclEvent, u32) -> AclError>,
    destroy_event: Optional<unsafe extern "C" fn(AclEvent) -> AclError>,
    record_event: Optional<unsafe extern "C" fn(AclEvent, AclStream) -> AclError>,
    query_event_status: Optional<unsafe extern "C" fn(AclEvent, *mut c_int) -> AclError>,
    stream_wait_event: Optional<unsafe extern "C" fn(AclStream, AclEvent) -> AclError>,
    subscribe_report: Optional<unsafe extern "C" fn(u64, AclStream) -> AclError>,
    unsubscribe_report: Optional<unsafe extern "C" fn(u64, AclStream) -> AclError>,
    launch_callback:
        Optional<unsafe extern "C" fn(CHostFn, *mut c_void, c_int, AclStream) -> AclError>,
    process_report: Optional<unsafe extern "C" fn(i32) -> AclError>,
}

/// A device's report thread (see the module comment) and the streams subscribed to it.
struct Reporter {
    index: i32,
    /// Its `pthread_self()`, as aclrtSubscribeReport takes it.
    tid: u64,
    streams: HashSet<StreamHandle>,
}

/// The ACL shim.
pub(crate) struct Acl {
    api: Api,
    lib: Opened,
    /// Report threads started so far, one per device.
    reporters: Mutex<Vec<Reporter>>,
    /// Tells the report threads to finish their current wait and exit.
    stop: Arc<AtomicBool>,
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
        macro_rules! opt {
            ($name:literal) => {
                // SAFETY: as for sym! (acl_rt.h; aclrtEvent is void*, the status and
                // block-type enums are C ints, thread ids uint64_t).
                unsafe { Optional::load(&lib, $name) }
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
            create_event_ex_with_flag: opt!("aclrtCreateEventExWithFlag"),
            destroy_event: opt!("aclrtDestroyEvent"),
            record_event: opt!("aclrtRecordEvent"),
            query_event_status: opt!("aclrtQueryEventStatus"),
            stream_wait_event: opt!("aclrtStreamWaitEvent"),
            subscribe_report: opt!("aclrtSubscribeReport"),
            unsubscribe_report: opt!("aclrtUnSubscribeReport"),
            launch_callback: opt!("aclrtLaunchCallback"),
            process_report: opt!("aclrtProcessReport"),
        };
        let acl = Acl {
            api,
            lib,
            reporters: Mutex::new(Vec::new()),
            stop: Arc::new(AtomicBool::new(false)),
        };
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

    /// Starts device `index`'s report thread and returns its thread id once it has
    /// set its device; it waits for `go` before its first aclrtProcessReport, so it
    /// does not find itself without a subscribed stream.
    fn start_reporter(&self, index: i32, go: mpsc::Receiver<()>) -> Result<u64> {
        let process = self.api.process_report.get(&self.lib, Vendor::Acl)?;
        let set_device = self.api.set_device;
        let stop = Arc::clone(&self.stop);
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("mixccl-acl-report-{index}"))
            .spawn(move || {
                // SAFETY: pthread_self has no preconditions.
                let tid = unsafe { libc::pthread_self() } as u64;
                // SAFETY: aclrtSetDevice takes an ordinal by value and validates it.
                let rc = unsafe { set_device(index) };
                let _ = ready_tx.send((tid, rc));
                if rc != ACL_SUCCESS || go.recv().is_err() {
                    return;
                }
                let mut warned = false;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: waits at most REPORT_POLL_MS, running the callbacks of
                    // streams subscribed to this thread.
                    match unsafe { process(REPORT_POLL_MS) } {
                        ACL_SUCCESS | ACL_ERROR_RT_REPORT_TIMEOUT => {}
                        ACL_ERROR_RT_THREAD_SUBSCRIBE => std::thread::sleep(REPORT_IDLE),
                        rc => {
                            if !warned {
                                log_warn!(
                                    None,
                                    "acl report thread of device {index}: aclrtProcessReport \
                                     failed with error {rc}; retrying"
                                );
                                warned = true;
                            }
                            std::thread::sleep(REPORT_IDLE);
                        }
                    }
                }
            })
            .map_err(|e| Error::Device {
                vendor: "acl",
                message: format!("cannot start the report thread of device {index}: {e}"),
            })?;
        let (tid, rc) = ready_rx
            .recv_timeout(REPORT_START_TIMEOUT)
            .map_err(|_| Error::Device {
                vendor: "acl",
                message: format!(
                    "the report thread of device {index} did not start within {:?}",
                    REPORT_START_TIMEOUT
                ),
            })?;
        self.check("aclrtSetDevice (report thread)", rc)?;
        Ok(tid)
    }

    /// Makes sure `stream` of device `index` is subscribed to that device's report
    /// thread, starting the thread on first use. Device `index` is set on this thread.
    fn subscribe(&self, index: i32, stream: StreamHandle) -> Result<()> {
        let subscribe = self.api.subscribe_report.get(&self.lib, Vendor::Acl)?;
        let mut reporters = self.reporters.lock().unwrap_or_else(|e| e.into_inner());
        let mut go = None;
        let pos = match reporters.iter().position(|r| r.index == index) {
            Some(p) => p,
            None => {
                let (go_tx, go_rx) = mpsc::channel();
                let tid = self.start_reporter(index, go_rx)?;
                go = Some(go_tx);
                reporters.push(Reporter {
                    index,
                    tid,
                    streams: HashSet::new(),
                });
                reporters.len() - 1
            }
        };
        let r = &mut reporters[pos];
        if !r.streams.contains(&stream) {
            // SAFETY: the thread id is a live report thread's pthread_self; the stream
            // belongs to device `index`, which is set on this thread.
            self.check("aclrtSubscribeReport", unsafe {
                subscribe(r.tid, stream as AclStream)
            })?;
            r.streams.insert(stream);
        }
        if let Some(go) = go {
            let _ = go.send(());
        }
        Ok(())
    }

    /// Unsubscribes `stream` from its report thread, if mixccl subscribed it.
    fn unsubscribe(&self, index: i32, stream: StreamHandle) -> Result<()> {
        let mut reporters = self.reporters.lock().unwrap_or_else(|e| e.into_inner());
        let Some(r) = reporters
            .iter_mut()
            .find(|r| r.index == index && r.streams.contains(&stream))
        else {
            return Ok(());
        };
        let unsubscribe = self.api.unsubscribe_report.get(&self.lib, Vendor::Acl)?;
        r.streams.remove(&stream);
        // SAFETY: the stream was subscribed to this thread id by `subscribe`.
        self.check("aclrtUnSubscribeReport", unsafe {
            unsubscribe(r.tid, stream as AclStream)
        })
    }
}

impl Drop for Acl {
    fn drop(&mut self) {
        // Report threads leave within one REPORT_POLL_MS wait.
        self.stop.store(true, Ordering::Relaxed);
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
            self.unsubscribe(index, stream)?;
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

    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let create = self
            .api
            .create_event_ex_with_flag
            .get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            let mut e: AclEvent = std::ptr::null_mut();
            // SAFETY: `e` is a valid out-pointer; ACL_EVENT_SYNC allows stream waits.
            self.check("aclrtCreateEventExWithFlag(ACL_EVENT_SYNC)", unsafe {
                create(&mut e, ACL_EVENT_SYNC)
            })?;
            Ok(e as EventHandle)
        })
    }

    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let destroy = self.api.destroy_event.get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            // SAFETY: `event` came from create_event and is destroyed once.
            self.check("aclrtDestroyEvent", unsafe { destroy(event as AclEvent) })
        })
    }

    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let record = self.api.record_event.get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            // SAFETY: a live event and a stream of this device (or 0).
            self.check("aclrtRecordEvent", unsafe {
                record(event as AclEvent, stream as AclStream)
            })
        })
    }

    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let query = self.api.query_event_status.get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            let mut status: c_int = 0;
            // SAFETY: a live event and a valid out-pointer for the status enum.
            self.check("aclrtQueryEventStatus", unsafe {
                query(event as AclEvent, &mut status)
            })?;
            Ok(status == ACL_EVENT_RECORDED_STATUS_COMPLETE)
        })
    }

    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let wait = self.api.stream_wait_event.get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            // SAFETY: a live ACL_EVENT_SYNC event and a stream of this device (or 0).
            self.check("aclrtStreamWaitEvent", unsafe {
                wait(stream as AclStream, event as AclEvent)
            })
        })
    }

    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let launch = self.api.launch_callback.get(&self.lib, Vendor::Acl)?;
        self.on_device(index, || {
            self.subscribe(index, stream)?;
            hostfn::launch(f, |cb, data| {
                // SAFETY: `cb` is an extern "C" fn(void *) and `data` stays valid until
                // the report thread runs it once (or the launch fails and hostfn frees
                // it); BLOCK holds the stream until the callback has returned.
                self.check("aclrtLaunchCallback(ACL_CALLBACK_BLOCK)", unsafe {
                    launch(cb, data, ACL_CALLBACK_BLOCK, stream as AclStream)
                })
            })
        })
    }
}

// SAFETY: AscendCL is thread-safe; the struct holds function pointers, the library
// handle and mutex-guarded or atomic state.
unsafe impl Send for Acl {}
// SAFETY: as above; nothing is mutated after open.
unsafe impl Sync for Acl {}
