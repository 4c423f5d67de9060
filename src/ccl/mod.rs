//! The vendors' own collective libraries, behind one trait, as `device/` holds the
//! vendors' runtimes. Each library is loaded with dlopen, once per process, the
//! first time a communicator asks for it; nothing library-specific exists outside
//! this folder. `comm::island` decides which ranks use one and runs the phases.
//!
//! - [`Ccl`]: what mixccl needs of a collective library: a unique id made by one
//!   member and distributed by mixccl, a communicator from it, all-reduce,
//!   reduce-scatter, all-gather and broadcast on device memory and a stream, abort
//!   and destroy, and the library's error text in every error.
//! - [`Library`]: the five libraries (NCCL, RCCL, HCCL, CNCL, MCCL), the device
//!   vendor each serves, its sonames and its `MIXCCL_*_LIB` variable.
//! - [`load`]: the process's instance of a library, or why it cannot be used. A
//!   library that turns out to be mixccl itself (mixccl installs itself as
//!   `libnccl.so.2` and `librccl.so.1`) is refused: bridging to it would only loop
//!   back into the host-staged path.
//!
//! One file per library: `nccl.rs` (also RCCL and MCCL, which share NCCL's API
//! under their own sonames and, for MCCL, its own prefix), `hccl.rs`, `cncl.rs`.

mod cncl;
mod hccl;
mod nccl;

use crate::device::{StreamHandle, Vendor};
use crate::element::DataType;
use crate::error::{DeviceError, Error, Result};
use crate::foreign::{Library as Lib, LoadError, Source};
use crate::reduce::ReduceOp;
use std::sync::{Mutex, OnceLock};

/// A native communicator handle as the library defines it (`ncclComm_t`, `HcclComm`,
/// `cnclComm_t`).
pub(crate) type CommHandle = usize;

/// A symbol only mixccl's own C library exports: a library that has it is mixccl.
const MARKER_SYMBOL: &str = "mixcclCommInitFromEnv";

/// A vendor collective library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Library {
    /// NVIDIA NCCL (`libnccl.so.2`), for CUDA devices.
    Nccl,
    /// AMD RCCL (`librccl.so.1`), for HIP devices.
    Rccl,
    /// Huawei HCCL (`libhccl.so`), for Ascend devices.
    Hccl,
    /// Cambricon CNCL (`libcncl.so`), for MLU devices.
    Cncl,
    /// Moore Threads MCCL (`libmccl.so`), for MUSA devices.
    Mccl,
}

impl Library {
    /// Lower-case name, as in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Library::Nccl => "nccl",
            Library::Rccl => "rccl",
            Library::Hccl => "hccl",
            Library::Cncl => "cncl",
            Library::Mccl => "mccl",
        }
    }

    /// The library that connects `vendor`'s devices.
    pub fn for_vendor(vendor: Vendor) -> Library {
        match vendor {
            Vendor::Cuda => Library::Nccl,
            Vendor::Hip => Library::Rccl,
            Vendor::Acl => Library::Hccl,
            Vendor::Cnrt => Library::Cncl,
            Vendor::Musa => Library::Mccl,
        }
    }

    /// The variable naming the library to load instead of the sonames.
    pub fn lib_env(self) -> &'static str {
        match self {
            Library::Nccl => "MIXCCL_NCCL_LIB",
            Library::Rccl => "MIXCCL_RCCL_LIB",
            Library::Hccl => "MIXCCL_HCCL_LIB",
            Library::Cncl => "MIXCCL_CNCL_LIB",
            Library::Mccl => "MIXCCL_MCCL_LIB",
        }
    }

    /// The sonames tried in order when the variable is unset.
    pub fn sonames(self) -> &'static [&'static str] {
        match self {
            Library::Nccl => &["libnccl.so.2", "libnccl.so"],
            Library::Rccl => &["librccl.so.1", "librccl.so"],
            Library::Hccl => &["libhccl.so"],
            Library::Cncl => &["libcncl.so"],
            Library::Mccl => &["libmccl.so"],
        }
    }

    /// Can it reduce `dtype` with `op` (`None`: only move `dtype`)? Every rank can
    /// ask this of any island's library, loaded here or not, so all agree on which
    /// calls go through the islands. Avg is left to mixccl everywhere: each phase
    /// would divide by its own group's size.
    pub fn supports(self, dtype: DataType, op: Option<ReduceOp>) -> bool {
        // fp8 stays with mixccl: its reductions run widened to f32 (`comm::fp8`), and
        // the native libraries differ in which fp8 formats they know.
        if op == Some(ReduceOp::Avg) || dtype.fp8().is_some() {
            return false;
        }
        match self {
            Library::Cncl => cncl::offers(dtype),
            _ => true,
        }
    }
}

impl std::fmt::Display for Library {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What mixccl needs of a vendor collective library. Buffers are device memory of
/// the library's vendor on the device the communicator was made on; calls are
/// queued on `stream` and the caller synchronises it.
pub(crate) trait Ccl: Send + Sync {
    /// Which library this is.
    fn kind(&self) -> Library;

    /// The path or soname it was loaded from.
    fn path(&self) -> &str;

    /// A fresh unique id, made on one member and sent to the others by mixccl.
    fn unique_id(&self) -> Result<Vec<u8>>;

    /// Joins communicator `id` as `rank` of `nranks`, on device `device`.
    fn init(&self, id: &[u8], nranks: usize, rank: usize, device: i32) -> Result<CommHandle>;

    /// `recv = op over members of send`, `count` elements.
    ///
    /// # Safety
    /// `send` and `recv` are device memory of `count` elements (they may be equal),
    /// valid until `stream` is synchronised.
    #[allow(clippy::too_many_arguments)]
    unsafe fn all_reduce(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: StreamHandle,
    ) -> Result<()>;

    /// Block `rank` of `op` over members of `send` (`nranks * count` elements) into
    /// `recv` (`count` elements).
    ///
    /// # Safety
    /// As [`Ccl::all_reduce`], with those lengths.
    #[allow(clippy::too_many_arguments)]
    unsafe fn reduce_scatter(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        op: ReduceOp,
        stream: StreamHandle,
    ) -> Result<()>;

    /// Every member's `send` (`count` elements) into `recv` in member order.
    ///
    /// # Safety
    /// As [`Ccl::all_reduce`], `recv` holding `nranks * count` elements.
    unsafe fn all_gather(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        stream: StreamHandle,
    ) -> Result<()>;

    /// Member `root`'s `send` into every member's `recv` (`count` elements; `send`
    /// is read on the root only).
    ///
    /// # Safety
    /// As [`Ccl::all_reduce`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn broadcast(
        &self,
        comm: CommHandle,
        send: usize,
        recv: usize,
        count: usize,
        dtype: DataType,
        root: usize,
        stream: StreamHandle,
    ) -> Result<()>;

    /// The error a call of `comm` ended in on its stream, if any: the library's
    /// queued work cannot return one, so a caller checks after the stream has run
    /// it (`ncclCommGetAsyncError`). Libraries without such a query report none.
    fn async_error(&self, comm: CommHandle) -> Result<()> {
        let _ = comm;
        Ok(())
    }

    /// Stops every call in flight on `comm` and frees it (safe from any thread).
    fn abort(&self, comm: CommHandle) -> Result<()>;

    /// Frees `comm` once no call is in flight.
    fn destroy(&self, comm: CommHandle) -> Result<()>;
}

/// Libraries tried so far in this process: each is opened at most once.
type Loaded = Vec<(Library, std::result::Result<&'static dyn Ccl, String>)>;

static LOADED: OnceLock<Mutex<Loaded>> = OnceLock::new();

/// The process's instance of `lib`, opened the first time, or why it cannot be used
/// (not found, a missing entry point, or mixccl itself).
pub(crate) fn load(lib: Library) -> std::result::Result<&'static dyn Ccl, String> {
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = loaded.iter().find(|(l, _)| *l == lib) {
        return r.clone();
    }
    let r = open(lib).map_err(|e| e.to_string());
    loaded.push((lib, r.clone()));
    r
}

/// Opens `lib` from its variable or sonames and binds its entry points.
fn open(lib: Library) -> Result<&'static dyn Ccl> {
    let src = Source::from_env(lib.lib_env(), lib.sonames());
    let handle = Lib::open(&src).map_err(|e| load_error(lib, e))?;
    // SAFETY: a probe for a symbol's presence; the pointer is never called.
    if unsafe { handle.symbol::<unsafe extern "C" fn()>(MARKER_SYMBOL) }.is_ok() {
        return Err(Error::Device {
            vendor: lib.name(),
            error: DeviceError::NotLoaded(format!(
                "{} is mixccl itself (it exports {MARKER_SYMBOL}), not the vendor's {}; \
                 set {} to the vendor library",
                handle.name,
                lib.name(),
                lib.lib_env()
            )),
        });
    }
    // Kept for the life of the process, as the device runtimes are: native
    // communicators and their threads must outlive every use.
    let ccl: Box<dyn Ccl> = match lib {
        Library::Nccl | Library::Rccl | Library::Mccl => Box::new(nccl::Nccl::bind(lib, handle)?),
        Library::Hccl => Box::new(hccl::Hccl::bind(handle)?),
        Library::Cncl => Box::new(cncl::Cncl::bind(handle)?),
    };
    Ok(Box::leak(ccl))
}

/// A load failure of `lib` as a device error naming the library.
fn load_error(lib: Library, e: LoadError) -> Error {
    Error::Device {
        vendor: lib.name(),
        error: DeviceError::NotLoaded(format!("{} {e}", lib.name())),
    }
}

/// A failed library call as an error: the call, the code and the library's text.
pub(crate) fn call_error(lib: Library, call: &str, code: i32, text: String) -> Error {
    Error::Device {
        vendor: lib.name(),
        error: DeviceError::Call {
            call: call.to_string(),
            code,
            name: None,
            text,
        },
    }
}

/// The text a library's error-string function returned.
///
/// # Safety
/// `p` is null or a NUL-terminated string that lives as long as the library.
pub(crate) unsafe fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        return "no error text".to_string();
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}
