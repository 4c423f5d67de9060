//! The exported `mixccl*` extensions `include/mixccl.h` declares.
#![allow(non_snake_case)]

use crate::cast::{self, CommPtr, NcclUniqueId};
use crate::comm;
use crate::status::{guard, Failure};
use std::ffi::{c_char, c_int};

/// Joins the job the launcher's environment describes (see mixccl.h).
///
/// # Safety
/// `comm` is NULL or points to writable storage for a handle.
#[no_mangle]
pub unsafe extern "C" fn mixcclCommInitFromEnv(comm: *mut CommPtr) -> c_int {
    guard("mixcclCommInitFromEnv", || {
        cast::write(comm, "comm", std::ptr::null_mut())?;
        let shared = comm::init_from_env()?;
        cast::write(comm, "comm", cast::new_handle(shared))
    })
}

/// Writes an id as 256 hex characters and a NUL.
///
/// # Safety
/// `id` is NULL or points to an id; `hex` is NULL or has room for 257 characters.
#[no_mangle]
pub unsafe extern "C" fn mixcclUniqueIdToHex(id: *const NcclUniqueId, hex: *mut c_char) -> c_int {
    guard("mixcclUniqueIdToHex", || {
        let id = cast::read(id, "id")?;
        let mut text: Vec<c_char> = id
            .bytes()
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .map(|c| c as c_char)
            .collect();
        text.push(0);
        cast::write_array(hex, "hex", text)
    })
}

/// Parses an id's hex text, checking its checksum.
///
/// # Safety
/// `hex` is NULL or a NUL-terminated string; `id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mixcclUniqueIdFromHex(hex: *const c_char, id: *mut NcclUniqueId) -> c_int {
    guard("mixcclUniqueIdFromHex", || {
        let text = cast::c_str(hex, "hex")?;
        let parsed: mixccl::UniqueId = text
            .parse()
            .map_err(|e: mixccl::Error| Failure::invalid(e.to_string()))?;
        cast::write(id, "id", NcclUniqueId::from_bytes(parsed.as_bytes()))
    })
}
