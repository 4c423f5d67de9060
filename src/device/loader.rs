//! Finding and opening a vendor runtime library (dlopen through `libloading`) and
//! looking up its symbols, with errors that list what was tried.

use super::Vendor;
use crate::error::{Error, Result};
use libloading::Library;

/// An opened runtime library and where it came from.
pub(crate) struct Opened {
    /// The library; kept open for the life of the process.
    pub lib: Library,
    /// The path or soname it was opened as.
    pub name: String,
}

/// Opens `vendor`'s library: the path in its `MIXCCL_*_LIB` variable if set (and
/// only that), else the first of its sonames that loads.
pub(crate) fn open(vendor: Vendor) -> Result<Opened> {
    let var = vendor.lib_env();
    let candidates: Vec<String> = match std::env::var(var) {
        Ok(p) if !p.trim().is_empty() => vec![p.trim().to_string()],
        _ => vendor.sonames().iter().map(|s| s.to_string()).collect(),
    };
    let mut tried = Vec::new();
    for name in &candidates {
        // SAFETY: loading a vendor runtime runs its initialisers; these are the
        // libraries the vendor documents for exactly this use (NCCL, PyTorch and
        // cudarc load them the same way).
        match unsafe { Library::new(name) } {
            Ok(lib) => {
                return Ok(Opened {
                    lib,
                    name: name.clone(),
                })
            }
            Err(e) => tried.push(format!("{name} ({e})")),
        }
    }
    Err(Error::Device {
        vendor: vendor.name(),
        message: format!(
            "runtime library not found: tried {}; set {var} to its path",
            tried.join(", ")
        ),
    })
}

/// Looks up symbol `name` of type `T` (a function pointer type) in `lib`.
///
/// # Safety
/// `T` must be the symbol's true C signature.
pub(crate) unsafe fn symbol<T: Copy>(o: &Opened, vendor: Vendor, name: &str) -> Result<T> {
    // SAFETY: the caller vouches for `T`; the Library outlives the copied pointer
    // because runtimes are kept loaded until the process exits.
    unsafe { o.lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|e| Error::Device {
            vendor: vendor.name(),
            message: format!("symbol {name} missing from {}: {e}", o.name),
        })
}

/// An entry point a runtime may lack (the stream primitives, newer than the rest):
/// its absence does not stop the runtime loading, only the calls that need it.
#[derive(Clone, Copy)]
pub(crate) struct Optional<T> {
    f: Option<T>,
    name: &'static str,
}

impl<T: Copy> Optional<T> {
    /// Looks up `name` in `o`, remembering the name for the error if it is missing.
    ///
    /// # Safety
    /// `T` must be the symbol's true C signature.
    pub(crate) unsafe fn load(o: &Opened, name: &'static str) -> Optional<T> {
        // SAFETY: the caller vouches for `T`; see `symbol`.
        let f = unsafe { o.lib.get::<T>(name.as_bytes()) }.ok().map(|s| *s);
        Optional { f, name }
    }

    /// The entry point, or an error naming it and the library it is missing from.
    pub(crate) fn get(&self, o: &Opened, vendor: Vendor) -> Result<T> {
        self.f.ok_or_else(|| Error::Device {
            vendor: vendor.name(),
            message: format!(
                "symbol {} missing from {}: this runtime cannot order work on streams \
                 (events, host functions)",
                self.name, o.name
            ),
        })
    }
}
