//! The device runtimes' side of [`crate::foreign`]: a vendor's library found by its
//! `MIXCCL_*_LIB` variable or sonames, and load failures as device errors.

use super::Vendor;
use crate::error::{DeviceError, Error, Result};
use crate::foreign::{LoadError, Source};

pub(crate) use crate::foreign::{Library, Optional};

/// Opens `vendor`'s library: the path in its `MIXCCL_*_LIB` variable if set (and
/// only that), else the first of its sonames that loads.
pub(crate) fn open(vendor: Vendor) -> Result<Library> {
    Library::open(&Source::from_env(vendor.lib_env(), vendor.sonames()))
        .map_err(|e| load_error(vendor, e))
}

/// A load failure of `vendor`'s runtime as a device error.
pub(crate) fn load_error(vendor: Vendor, e: LoadError) -> Error {
    let message = match e {
        LoadError::NotFound { .. } => format!("runtime {e}"),
        LoadError::MissingSymbol { .. } => e.to_string(),
    };
    Error::Device {
        vendor: vendor.name(),
        error: DeviceError::NotLoaded(message),
    }
}

/// An optional entry point of `vendor`'s runtime, or an error naming it and the
/// library it is missing from.
pub(crate) fn need<T: Copy>(f: &Optional<T>, lib: &Library, vendor: Vendor) -> Result<T> {
    f.ok().ok_or_else(|| Error::Device {
        vendor: vendor.name(),
        error: DeviceError::Unsupported(format!(
            "symbol {} missing from {}: this runtime cannot order work on streams \
             (events, host functions)",
            f.name(),
            lib.name
        )),
    })
}
