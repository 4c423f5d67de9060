//! Passing a [`HostFn`] through a runtime's C host-function launch
//! (`cuLaunchHostFunc` and its kin take `void (*)(void *)` and a `void *`).
//!
//! The closure (a fat `Box<dyn FnOnce>`) is boxed once more so one thin pointer
//! carries it; [`trampoline`] reboxes and runs it on the runtime's thread, catching
//! any panic so none unwinds into C. [`launch`] frees the closure again when the
//! runtime refuses it, so a closure runs exactly once if the launch succeeded and
//! never if it failed.

use super::HostFn;
use crate::debug::log_warn;
use crate::error::Result;
use std::ffi::c_void;

/// The C signature every runtime's host-function launch takes
/// (`CUhostFn`, `hipHostFn_t`, `musaHostFn_t`, `aclrtCallback`, `cnrtHostFn_t`).
pub(crate) type CHostFn = extern "C" fn(*mut c_void);

/// The callback handed to the runtime; `data` came from [`launch`].
extern "C" fn trampoline(data: *mut c_void) {
    if data.is_null() {
        return;
    }
    // SAFETY: `data` is the pointer `launch` made with Box::into_raw, and the runtime
    // calls its callback exactly once per successful launch, so it is reboxed once.
    let f = unsafe { Box::from_raw(data.cast::<HostFn>()) };
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        log_warn!(
            None,
            "a host function queued on a device stream panicked; the panic was stopped \
             at the runtime boundary and the stream continues"
        );
    }
}

/// Hands `f` to a runtime: `enqueue(callback, data)` calls the runtime's launch with
/// them and checks its result. On error `f` is dropped here, unrun.
pub(crate) fn launch(
    f: HostFn,
    enqueue: impl FnOnce(CHostFn, *mut c_void) -> Result<()>,
) -> Result<()> {
    let data: *mut c_void = Box::into_raw(Box::new(f)).cast();
    let out = enqueue(trampoline, data);
    if out.is_err() {
        // SAFETY: the runtime refused the launch, so it will never call the
        // trampoline with `data`; this is the only owner left.
        drop(unsafe { Box::from_raw(data.cast::<HostFn>()) });
    }
    out
}
