//! Device memory of every vendor, behind one trait. Each runtime (CUDA, HIP, MUSA,
//! ACL, CNRT) is loaded with dlopen, once per process, the first time a buffer's
//! memory type is asked for; nothing vendor-specific exists outside this folder.
//!
//! - [`Device`]: what mixccl needs of a runtime: is this pointer mine, copy to and
//!   from host memory on a stream, pinned host memory, device memory, streams, and
//!   the stream primitives that order work without a host wait (events, host
//!   functions run in stream order; `hostfn.rs` carries a Rust closure through the
//!   runtime's C callback). A runtime that lacks a primitive's entry point still
//!   loads; only that primitive fails, naming the missing symbol.
//! - [`Runtimes::global`]: the runtimes this process could load, in the fixed order
//!   [`Vendor::ALL`]; `MIXCCL_DEVICES` (`cuda,hip,...` or `none`) narrows the list.
//! - [`locate`]: the [`MemoryKind`] of a buffer: each loaded runtime is asked in
//!   order, device answers are cached per allocation range, host memory is the
//!   fallback and must be readable.
//! - [`MemRef`]: a caller's buffer by address and kind, as the staged collectives
//!   (`Communicator::*_mem`) take them.

mod acl;
mod cnrt;
mod cuda;
mod hip;
mod host;
mod hostfn;
mod loader;
mod musa;

pub use host::HostMemory;

use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{OnceLock, RwLock};

/// A device vendor's runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vendor {
    /// NVIDIA CUDA (driver API, `libcuda.so.1`); also CUDA-compatible runtimes such
    /// as Iluvatar CoreX through `MIXCCL_CUDA_LIB`.
    Cuda,
    /// AMD ROCm HIP and Hygon DCU (`libamdhip64.so`).
    Hip,
    /// Moore Threads MUSA (`libmusart.so`).
    Musa,
    /// Huawei Ascend ACL (`libascendcl.so`).
    Acl,
    /// Cambricon CNRT (`libcnrt.so`).
    Cnrt,
}

impl Vendor {
    /// Every vendor, in the order runtimes are asked about a pointer.
    pub const ALL: [Vendor; 5] = [
        Vendor::Cuda,
        Vendor::Hip,
        Vendor::Musa,
        Vendor::Acl,
        Vendor::Cnrt,
    ];

    /// Lower-case name, as in `MIXCCL_DEVICES` and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Cuda => "cuda",
            Vendor::Hip => "hip",
            Vendor::Musa => "musa",
            Vendor::Acl => "acl",
            Vendor::Cnrt => "cnrt",
        }
    }

    /// The vendor named `s` (case-insensitive).
    pub fn parse(s: &str) -> Option<Vendor> {
        Vendor::ALL
            .into_iter()
            .find(|v| v.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The environment variable naming the runtime library to load instead of the
    /// default sonames.
    pub fn lib_env(self) -> &'static str {
        match self {
            Vendor::Cuda => "MIXCCL_CUDA_LIB",
            Vendor::Hip => "MIXCCL_HIP_LIB",
            Vendor::Musa => "MIXCCL_MUSA_LIB",
            Vendor::Acl => "MIXCCL_ACL_LIB",
            Vendor::Cnrt => "MIXCCL_CNRT_LIB",
        }
    }

    /// The sonames tried, in order, when the environment variable is unset.
    pub fn sonames(self) -> &'static [&'static str] {
        match self {
            Vendor::Cuda => &["libcuda.so.1"],
            Vendor::Hip => &["libamdhip64.so.6", "libamdhip64.so.5", "libamdhip64.so"],
            Vendor::Musa => &["libmusart.so", "libmusart.so.1"],
            Vendor::Acl => &["libascendcl.so"],
            Vendor::Cnrt => &["libcnrt.so"],
        }
    }
}

impl std::fmt::Display for Vendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Memory the CPU reads and writes directly (including pinned and managed memory).
    Host,
    /// Memory of device `index` of `vendor`'s runtime, reached only through its copies.
    Device {
        /// The runtime that owns it.
        vendor: Vendor,
        /// The device ordinal within that runtime.
        index: i32,
    },
}

impl std::fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryKind::Host => f.write_str("host"),
            MemoryKind::Device { vendor, index } => write!(f, "{vendor}:{index}"),
        }
    }
}

/// A device allocation holding a pointer, as its runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The device ordinal.
    pub index: i32,
    /// `(base, len)` of the whole allocation when the runtime can say; cached then.
    pub range: Option<(usize, usize)>,
}

/// A vendor stream or queue handle as the caller's runtime defines it
/// (`cudaStream_t`, `hipStream_t`, `aclrtStream`, `cnrtQueue_t`); 0 is the default stream.
pub type StreamHandle = usize;

/// A runtime event handle as the vendor defines it (`CUevent`, `hipEvent_t`,
/// `aclrtEvent`, `cnrtNotifier_t`, `musaEvent_t`).
pub type EventHandle = usize;

/// Host work queued on a stream with [`Device::launch_host_fn`]: the runtime runs it
/// on a thread of its own once every earlier item on the stream has finished, and
/// later items wait until it returns. It must not call the runtime.
pub type HostFn = Box<dyn FnOnce() + Send + 'static>;

/// What mixccl needs of a device runtime. Each implementation lives in one file of
/// `src/device/` and loads its library at run time.
///
/// Copies are asynchronous on `stream` where the API has streams; callers follow
/// them with [`Device::synchronize`] before touching the host side.
pub trait Device: Send + Sync {
    /// Which vendor this is.
    fn vendor(&self) -> Vendor;

    /// The path or soname the runtime was loaded from.
    fn library(&self) -> &str;

    /// `Some` when `ptr` is this runtime's device memory (memory the CPU cannot read
    /// directly); `None` for anything else, including this runtime's pinned host
    /// memory and plain host memory.
    fn locate(&self, ptr: usize) -> Result<Option<Allocation>>;

    /// A new stream on device `index`, for the staging copies.
    fn create_stream(&self, index: i32) -> Result<StreamHandle>;

    /// Destroys a stream from [`Device::create_stream`].
    fn destroy_stream(&self, index: i32, stream: StreamHandle) -> Result<()>;

    /// Waits until all work queued on `stream` (0: the default stream) of device
    /// `index` has finished.
    fn synchronize(&self, index: i32, stream: StreamHandle) -> Result<()>;

    /// Queues a copy of `len` bytes from device memory `src` to host memory `dst`.
    ///
    /// # Safety
    /// `src` is device memory of this runtime on device `index` holding `len` bytes;
    /// `dst` is host memory valid for `len` byte writes until `stream` is synchronised.
    unsafe fn copy_to_host(
        &self,
        index: i32,
        dst: *mut u8,
        src: usize,
        len: usize,
        stream: StreamHandle,
    ) -> Result<()>;

    /// Queues a copy of `len` bytes from host memory `src` to device memory `dst`.
    ///
    /// # Safety
    /// `dst` is device memory of this runtime on device `index` holding `len` bytes;
    /// `src` is host memory valid for `len` byte reads until `stream` is synchronised.
    unsafe fn copy_to_device(
        &self,
        index: i32,
        dst: usize,
        src: *const u8,
        len: usize,
        stream: StreamHandle,
    ) -> Result<()>;

    /// `len` bytes of page-locked host memory usable for fast copies with device `index`.
    fn alloc_pinned(&self, index: i32, len: usize) -> Result<*mut u8>;

    /// Frees memory from [`Device::alloc_pinned`].
    ///
    /// # Safety
    /// `ptr` came from `alloc_pinned` of this runtime and is not used afterwards.
    unsafe fn free_pinned(&self, index: i32, ptr: *mut u8) -> Result<()>;

    /// The caller thread's current device (the runtime's default when none was set).
    fn current_device(&self) -> Result<i32>;

    /// `len` bytes of device memory on device `index`.
    fn alloc_device(&self, index: i32, len: usize) -> Result<usize>;

    /// Frees memory from [`Device::alloc_device`].
    ///
    /// # Safety
    /// `ptr` came from `alloc_device` (or the runtime's own allocator) and is not
    /// used afterwards.
    unsafe fn free_device(&self, index: i32, ptr: usize) -> Result<()>;

    /// A new event on device `index` (timing disabled), for ordering stream work.
    fn create_event(&self, index: i32) -> Result<EventHandle> {
        let _ = index;
        Err(self.unsupported("events"))
    }

    /// Destroys an event from [`Device::create_event`].
    fn destroy_event(&self, index: i32, event: EventHandle) -> Result<()> {
        let _ = (index, event);
        Err(self.unsupported("events"))
    }

    /// Records `event` at the current end of `stream` (0: the default stream).
    fn record_event(&self, index: i32, event: EventHandle, stream: StreamHandle) -> Result<()> {
        let _ = (index, event, stream);
        Err(self.unsupported("events"))
    }

    /// Has the work before `event`'s last record finished? Never blocks.
    fn event_done(&self, index: i32, event: EventHandle) -> Result<bool> {
        let _ = (index, event);
        Err(self.unsupported("events"))
    }

    /// Makes work queued on `stream` after this call wait for `event`'s last record.
    fn stream_wait_event(
        &self,
        index: i32,
        stream: StreamHandle,
        event: EventHandle,
    ) -> Result<()> {
        let _ = (index, stream, event);
        Err(self.unsupported("events"))
    }

    /// Queues `f` on `stream` (see [`HostFn`]): `cuLaunchHostFunc`,
    /// `hipLaunchHostFunc`, `musaLaunchHostFunc`, `aclrtLaunchCallback`,
    /// `cnrtInvokeHostFunc`. `f` runs exactly once if this returns `Ok`, never if it
    /// returns an error.
    fn launch_host_fn(&self, index: i32, stream: StreamHandle, f: HostFn) -> Result<()> {
        let _ = (index, stream, f);
        Err(self.unsupported("host-function launch"))
    }

    /// The error for a primitive this runtime's shim does not offer.
    fn unsupported(&self, what: &str) -> Error {
        Error::Device {
            vendor: self.vendor().name(),
            message: format!("{what} not supported by the {} shim", self.vendor()),
        }
    }
}

/// The device runtimes this process loaded, asked in [`Vendor::ALL`] order.
pub struct Runtimes {
    loaded: Vec<Box<dyn Device>>,
    /// Why each runtime that is not loaded is missing.
    missing: Vec<(Vendor, String)>,
    /// Device allocations seen so far: base -> (end, kind).
    ranges: RwLock<BTreeMap<usize, (usize, Vendor, i32)>>,
}

static RUNTIMES: OnceLock<Runtimes> = OnceLock::new();

impl Runtimes {
    /// The process's runtimes, loaded on first use from `MIXCCL_DEVICES` (default:
    /// every vendor) and each vendor's library variable or sonames.
    pub fn global() -> &'static Runtimes {
        RUNTIMES.get_or_init(|| {
            let wanted = std::env::var("MIXCCL_DEVICES").ok();
            Runtimes::load(wanted.as_deref())
        })
    }

    /// Loads the runtimes named in `wanted` (`None`: all; `"none"`: none).
    fn load(wanted: Option<&str>) -> Runtimes {
        let vendors: Vec<Vendor> = match wanted.map(str::trim) {
            None | Some("") | Some("all") => Vendor::ALL.to_vec(),
            Some("none") => Vec::new(),
            Some(list) => {
                let mut v: Vec<Vendor> = Vec::new();
                for name in list.split(',') {
                    match Vendor::parse(name) {
                        Some(x) => v.push(x),
                        None => log_warn!(
                            None,
                            "MIXCCL_DEVICES: unknown runtime {name:?} ignored (cuda, hip, musa, acl, cnrt, none)"
                        ),
                    }
                }
                v.sort();
                v.dedup();
                v
            }
        };
        let mut loaded: Vec<Box<dyn Device>> = Vec::new();
        let mut missing = Vec::new();
        for vendor in Vendor::ALL {
            if !vendors.contains(&vendor) {
                missing.push((vendor, "not in MIXCCL_DEVICES".to_string()));
                continue;
            }
            match open(vendor) {
                Ok(d) => {
                    log_info!(None, "{vendor} runtime loaded from {}", d.library());
                    loaded.push(d);
                }
                Err(e) => {
                    log_info!(None, "{vendor} runtime not loaded: {e}");
                    missing.push((vendor, e.to_string()));
                }
            }
        }
        Runtimes {
            loaded,
            missing,
            ranges: RwLock::new(BTreeMap::new()),
        }
    }

    /// The loaded runtimes, in the order they are asked about pointers.
    pub fn loaded(&self) -> impl Iterator<Item = &dyn Device> {
        self.loaded.iter().map(|b| b.as_ref())
    }

    /// Is any device runtime loaded?
    pub fn any(&self) -> bool {
        !self.loaded.is_empty()
    }

    /// `vendor`'s runtime, or an error saying why it is not loaded (the sonames tried
    /// and the variable that overrides them).
    pub fn get(&'static self, vendor: Vendor) -> Result<&'static dyn Device> {
        if let Some(d) = self.loaded.iter().find(|d| d.vendor() == vendor) {
            return Ok(d.as_ref());
        }
        let why = self
            .missing
            .iter()
            .find(|(v, _)| *v == vendor)
            .map(|(_, w)| w.as_str())
            .unwrap_or("not loaded");
        Err(Error::Device {
            vendor: vendor.name(),
            message: format!("runtime not available: {why}"),
        })
    }

    /// The kind of memory at `[ptr, ptr + len)`; see [`locate`].
    pub fn locate(&self, ptr: usize, len: usize) -> Result<MemoryKind> {
        if len == 0 || self.loaded.is_empty() {
            return Ok(MemoryKind::Host);
        }
        let end = ptr
            .checked_add(len)
            .ok_or_else(|| Error::invalid(format!("buffer {ptr:#x} + {len} bytes wraps around")))?;
        let cached = self
            .ranges
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .range(..=ptr)
            .next_back()
            .map(|(_, v)| *v);
        if let Some((aend, vendor, index)) = cached {
            if ptr < aend && end <= aend {
                return Ok(MemoryKind::Device { vendor, index });
            }
            if ptr < aend {
                // Too short: the allocation may have been freed by its owner (C callers
                // free with their runtime, unseen here) and its address reused by a
                // larger one. Ask the runtimes again.
                self.forget(ptr);
            }
        }
        for d in self.loaded() {
            if let Some(a) = d.locate(ptr)? {
                let vendor = d.vendor();
                if let Some((base, alen)) = a.range {
                    let aend = base.saturating_add(alen);
                    self.ranges
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(base, (aend, vendor, a.index));
                    return within(ptr, end, base, aend, vendor, a.index);
                }
                return Ok(MemoryKind::Device {
                    vendor,
                    index: a.index,
                });
            }
        }
        Ok(MemoryKind::Host)
    }

    /// Drops cached ranges holding `ptr` (call before freeing device memory, so a
    /// later allocation at the same address is asked about afresh).
    pub fn forget(&self, ptr: usize) {
        let mut ranges = self.ranges.write().unwrap_or_else(|e| e.into_inner());
        let hit = ranges
            .range(..=ptr)
            .next_back()
            .filter(|(_, (end, _, _))| ptr < *end)
            .map(|(b, _)| *b);
        if let Some(b) = hit {
            ranges.remove(&b);
        }
    }
}

/// A buffer `[ptr, end)` found inside the allocation `[base, aend)`.
fn within(
    ptr: usize,
    end: usize,
    base: usize,
    aend: usize,
    vendor: Vendor,
    index: i32,
) -> Result<MemoryKind> {
    if end > aend {
        return Err(Error::invalid(format!(
            "buffer [{ptr:#x}, +{}) runs {} bytes past the end of its {vendor} allocation \
             [{base:#x}, +{}) on device {index}",
            end - ptr,
            end - aend,
            aend - base
        )));
    }
    Ok(MemoryKind::Device { vendor, index })
}

/// Runs `f` on device `index` for a runtime whose current device is per thread,
/// then gives the thread back `prev`, its device before (`None`: it had none, which
/// such runtimes cannot restore). `set(device, restoring)` is the runtime's checked
/// set-device call. The caller's device is restored even when `f` fails; `f`'s error
/// wins over a failed restore.
fn switch_device<T>(
    prev: Option<i32>,
    index: i32,
    set: impl Fn(i32, bool) -> Result<()>,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    if prev == Some(index) {
        return f();
    }
    set(index, false)?;
    let out = f();
    let Some(prev) = prev else { return out };
    let restored = set(prev, true);
    let out = out?;
    restored?;
    Ok(out)
}

/// Loads `vendor`'s runtime.
fn open(vendor: Vendor) -> Result<Box<dyn Device>> {
    match vendor {
        Vendor::Cuda => Ok(Box::new(cuda::Cuda::open()?)),
        Vendor::Hip => Ok(Box::new(hip::Hip::open()?)),
        Vendor::Musa => Ok(Box::new(musa::Musa::open()?)),
        Vendor::Acl => Ok(Box::new(acl::Acl::open()?)),
        Vendor::Cnrt => Ok(Box::new(cnrt::Cnrt::open()?)),
    }
}

/// The kind of memory at `[ptr, ptr + len)`: device memory of the first loaded
/// runtime that claims it (the whole buffer must lie inside one allocation), else
/// host memory. A buffer no runtime claims must be readable host memory, checked
/// on its first and last byte, so a stray pointer is an error rather than a crash.
pub fn locate(ptr: *const u8, len: usize) -> Result<MemoryKind> {
    let rt = Runtimes::global();
    let kind = rt.locate(ptr as usize, len)?;
    if kind == MemoryKind::Host && len > 0 && !crate::sys::readable(ptr as usize, len) {
        let names: Vec<&str> = rt.loaded().map(|d| d.vendor().name()).collect();
        return Err(Error::invalid(format!(
            "buffer [{ptr:p}, +{len}) is not readable host memory, and no loaded device \
             runtime claims it (loaded: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )));
    }
    Ok(kind)
}

/// A caller's buffer by address: host memory or any loaded runtime's device memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRef {
    addr: usize,
    len: usize,
    kind: MemoryKind,
}

impl MemRef {
    /// The buffer at `ptr`, its memory kind found by [`locate`].
    ///
    /// # Safety
    /// `[ptr, ptr + len)` is memory of one kind that stays allocated, and is not
    /// used by anything else while a collective given this `MemRef` runs (read-only
    /// sharing is fine for send buffers).
    pub unsafe fn new(ptr: *const u8, len: usize) -> Result<MemRef> {
        Ok(MemRef {
            addr: ptr as usize,
            len,
            kind: locate(ptr, len)?,
        })
    }

    /// The buffer at `ptr`, of a kind the caller already knows.
    ///
    /// # Safety
    /// As [`MemRef::new`], and `kind` is right.
    pub unsafe fn with_kind(ptr: *const u8, len: usize, kind: MemoryKind) -> MemRef {
        MemRef {
            addr: ptr as usize,
            len,
            kind,
        }
    }

    /// The address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it zero bytes long?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where it lives.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }

    /// Is it device memory?
    pub fn is_device(&self) -> bool {
        matches!(self.kind, MemoryKind::Device { .. })
    }

    /// The bytes `[off, off + len)` of this buffer (same kind).
    pub fn slice(&self, off: usize, len: usize) -> MemRef {
        assert!(off + len <= self.len, "MemRef::slice out of range");
        MemRef {
            addr: self.addr + off,
            len,
            kind: self.kind,
        }
    }

    /// Copies this buffer (any kind) into host memory `dst` of the same length,
    /// synchronously.
    pub fn read_into(&self, dst: &mut [u8]) -> Result<()> {
        check_len("read_into", self.len, dst.len())?;
        match self.kind {
            MemoryKind::Host => {
                // SAFETY: by MemRef's contract the buffer is readable host memory of
                // `len` bytes, and `dst` is a distinct exclusive borrow.
                let src = unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) };
                dst.copy_from_slice(src);
                Ok(())
            }
            MemoryKind::Device { vendor, index } => {
                let d = Runtimes::global().get(vendor)?;
                let s = d.create_stream(index)?;
                // SAFETY: the buffer is `vendor` device memory of `len` bytes on `index`
                // (MemRef's contract); `dst` stays borrowed until the synchronize below.
                let r = unsafe { d.copy_to_host(index, dst.as_mut_ptr(), self.addr, self.len, s) }
                    .and_then(|_| d.synchronize(index, s));
                let _ = d.destroy_stream(index, s);
                r
            }
        }
    }

    /// Copies host memory `src` of the same length into this buffer, synchronously.
    pub fn write_from(&self, src: &[u8]) -> Result<()> {
        check_len("write_from", self.len, src.len())?;
        match self.kind {
            MemoryKind::Host => {
                // SAFETY: by MemRef's contract nothing else uses these bytes while we
                // write them, and `src` is host memory of the same length.
                let dst = unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) };
                dst.copy_from_slice(src);
                Ok(())
            }
            MemoryKind::Device { vendor, index } => {
                let d = Runtimes::global().get(vendor)?;
                let s = d.create_stream(index)?;
                // SAFETY: as in read_into, the other direction.
                let r = unsafe { d.copy_to_device(index, self.addr, src.as_ptr(), self.len, s) }
                    .and_then(|_| d.synchronize(index, s));
                let _ = d.destroy_stream(index, s);
                r
            }
        }
    }
}

fn check_len(what: &str, ours: usize, theirs: usize) -> Result<()> {
    if ours != theirs {
        return Err(Error::Internal(format!(
            "MemRef::{what}: buffer has {ours} bytes, host side {theirs}"
        )));
    }
    Ok(())
}

/// Waits for the work queued on a caller's `stream` before a collective reads its
/// buffers: on the runtime of the first device buffer, else on the only loaded
/// runtime if there is exactly one (host buffers written by a kernel), else nothing.
pub fn wait_stream(stream: StreamHandle, bufs: &[MemRef]) -> Result<()> {
    let rt = Runtimes::global();
    let target = bufs.iter().find_map(|b| match b.kind {
        MemoryKind::Device { vendor, index } => Some((vendor, index)),
        MemoryKind::Host => None,
    });
    match target {
        Some((vendor, index)) => rt.get(vendor)?.synchronize(index, stream),
        None if rt.loaded.len() == 1 && stream != 0 => {
            let d = rt.loaded[0].as_ref();
            d.synchronize(d.current_device()?, stream)
        }
        None => Ok(()),
    }
}

/// Device memory owned by the caller through mixccl (benchmarks, tests,
/// `ncclMemAlloc`), freed on drop.
pub struct DeviceMemory {
    dev: &'static dyn Device,
    index: i32,
    addr: usize,
    len: usize,
}

impl DeviceMemory {
    /// `len` bytes on device `index` of `vendor` (`None`: the thread's current device).
    pub fn new(vendor: Vendor, index: Option<i32>, len: usize) -> Result<DeviceMemory> {
        let dev = Runtimes::global().get(vendor)?;
        let index = match index {
            Some(i) => i,
            None => dev.current_device()?,
        };
        let addr = dev.alloc_device(index, len)?;
        Ok(DeviceMemory {
            dev,
            index,
            addr,
            len,
        })
    }

    /// The buffer as a [`MemRef`] for a collective; `&mut` because the collective
    /// may write it.
    pub fn mem(&mut self) -> MemRef {
        MemRef {
            addr: self.addr,
            len: self.len,
            kind: MemoryKind::Device {
                vendor: self.dev.vendor(),
                index: self.index,
            },
        }
    }

    /// The device address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Is it empty?
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for DeviceMemory {
    fn drop(&mut self) {
        Runtimes::global().forget(self.addr);
        // SAFETY: `addr` came from this runtime's alloc_device and is freed once.
        if let Err(e) = unsafe { self.dev.free_device(self.index, self.addr) } {
            log_warn!(None, "freeing device memory: {e}");
        }
    }
}
