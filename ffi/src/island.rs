//! The `mixcclCommShrinkHosts` / `mixcclCommShrinkVendors` extensions (the
//! "elastic communicators" block of `include/mixccl.h`): drop a whole island of
//! ranks, by host or by device vendor. Growing the island back is NCCL's own
//! `ncclCommGetUniqueId` + `ncclCommGrow`.
#![allow(non_snake_case)]

use crate::cast::{self, CommPtr};
use crate::status::{guard, Failure, Outcome};
use std::ffi::{c_char, c_int};

/// The `count` strings of a C array of names.
fn names(list: *const *const c_char, count: c_int, what: &str) -> Outcome<Vec<String>> {
    let n = usize::try_from(count)
        .ok()
        .filter(|n| (1..=1 << 16).contains(n))
        .ok_or_else(|| Failure::invalid(format!("{what}: count {count} (need 1 to 65536)")))?;
    let ptrs = cast::read_array(list, n)
        .ok_or_else(|| Failure::invalid(format!("{what} is NULL with {n} entries")))?;
    ptrs.into_iter()
        .enumerate()
        .map(|(i, p)| cast::c_str(p, &format!("{what}[{i}]")))
        .collect()
}

fn shrink(
    what: &str,
    comm: CommPtr,
    list: *const *const c_char,
    count: c_int,
    newcomm: *mut CommPtr,
    by_host: bool,
) -> c_int {
    guard(what, || {
        cast::write(newcomm, "newcomm", std::ptr::null_mut())?;
        let parent = cast::comm(comm)?;
        let names = names(list, count, if by_host { "hosts" } else { "vendors" })?;
        let child = parent.shrink_island(names, by_host)?;
        cast::write(
            newcomm,
            "newcomm",
            child.map_or(std::ptr::null_mut(), cast::new_handle),
        )
    })
}

/// Drops every rank on the named hosts (see mixccl.h).
///
/// # Safety
/// `hosts` is NULL or points to `nHosts` NUL-terminated strings; `newcomm` is NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn mixcclCommShrinkHosts(
    comm: CommPtr,
    hosts: *const *const c_char,
    n_hosts: c_int,
    newcomm: *mut CommPtr,
) -> c_int {
    shrink("mixcclCommShrinkHosts", comm, hosts, n_hosts, newcomm, true)
}

/// Drops every rank of the named device vendors (see mixccl.h).
///
/// # Safety
/// `vendors` is NULL or points to `nVendors` NUL-terminated strings; `newcomm` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mixcclCommShrinkVendors(
    comm: CommPtr,
    vendors: *const *const c_char,
    n_vendors: c_int,
    newcomm: *mut CommPtr,
) -> c_int {
    shrink(
        "mixcclCommShrinkVendors",
        comm,
        vendors,
        n_vendors,
        newcomm,
        false,
    )
}
