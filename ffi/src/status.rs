//! `ncclResult_t`: the codes, the mapping from `mixccl::Error`, the panic boundary
//! every export goes through, and the last-error message `ncclGetLastError` returns.
//! Owns no communicator state beyond the calling thread's message.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// `ncclResult_t` values, as `include/nccl.h` declares them.
pub(crate) mod code {
    use std::ffi::c_int;
    pub const SUCCESS: c_int = 0;
    pub const UNHANDLED_CUDA_ERROR: c_int = 1;
    pub const SYSTEM_ERROR: c_int = 2;
    pub const INTERNAL_ERROR: c_int = 3;
    pub const INVALID_ARGUMENT: c_int = 4;
    pub const INVALID_USAGE: c_int = 5;
    pub const REMOTE_ERROR: c_int = 6;
    pub const IN_PROGRESS: c_int = 7;
    pub const TIMEOUT: c_int = 8;
}

/// A failed call: the code the C caller gets and the message `ncclGetLastError` gets.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: c_int,
    pub message: String,
}

/// Result of the Rust side of an export.
pub(crate) type Outcome<T = ()> = Result<T, Failure>;

/// How a call that succeeded left its work: finished, or running in the background
/// of a nonblocking communicator (`ncclInProgress`; poll `ncclCommGetAsyncError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    Done,
    InProgress,
}

impl Progress {
    /// `InProgress` if either is.
    pub fn and(self, other: Progress) -> Progress {
        match (self, other) {
            (Progress::Done, Progress::Done) => Progress::Done,
            _ => Progress::InProgress,
        }
    }
}

impl Failure {
    /// ncclInvalidArgument with a reason.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure {
            code: code::INVALID_ARGUMENT,
            message: message.into(),
        }
    }

    /// ncclInvalidUsage with a reason.
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: code::INVALID_USAGE,
            message: message.into(),
        }
    }

    /// ncclInternalError with a reason.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure {
            code: code::INTERNAL_ERROR,
            message: message.into(),
        }
    }
}

/// The code a framework expects for each error of the Rust crate.
pub(crate) fn code_of(e: &mixccl::Error) -> c_int {
    use mixccl::Error::*;
    match e {
        InvalidArgument(_) | InvalidUniqueId(_) => code::INVALID_ARGUMENT,
        Timeout { .. } => code::TIMEOUT,
        // A peer's bytes that do not decode are the peer's fault, as NCCL's remote error.
        PeerLost { .. } | Transport { .. } => code::REMOTE_ERROR,
        // A mismatched call is the application's mistake; so is using a communicator
        // it aborted itself.
        Mismatch { .. } | Aborted | Revoked { .. } => code::INVALID_USAGE,
        Bootstrap(_) | Io { .. } => code::SYSTEM_ERROR,
        Internal(_) => code::INTERNAL_ERROR,
        // NCCL reports a failed CUDA call as ncclUnhandledCudaError; so does every vendor.
        Device { .. } => code::UNHANDLED_CUDA_ERROR,
        // The enum may grow; an unknown error is still an error.
        #[allow(unreachable_patterns)]
        _ => code::INTERNAL_ERROR,
    }
}

impl From<mixccl::Error> for Failure {
    fn from(e: mixccl::Error) -> Failure {
        Failure {
            code: code_of(&e),
            message: e.to_string(),
        }
    }
}

/// `ncclGetErrorString`'s text for each code.
pub(crate) fn error_string(c: c_int) -> &'static CStr {
    match c {
        code::SUCCESS => c"no error",
        code::UNHANDLED_CUDA_ERROR => c"unhandled device runtime error (CUDA, HIP, MUSA, ACL or CNRT call failed; see ncclGetLastError)",
        code::SYSTEM_ERROR => c"unhandled system error (a system call or the bootstrap failed; see ncclGetLastError)",
        code::INTERNAL_ERROR => c"internal error - please report this issue to the mixccl developers with ncclGetLastError's message",
        code::INVALID_ARGUMENT => c"invalid argument (ncclGetLastError says which)",
        code::INVALID_USAGE => c"invalid usage (ncclGetLastError says what)",
        code::REMOTE_ERROR => c"remote process exited or there was a network error",
        code::IN_PROGRESS => c"NCCL operation in progress",
        code::TIMEOUT => c"operation timed out: a peer did not answer within MIXCCL_TIMEOUT",
        _ => c"unknown result code",
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `message` as this thread's last error.
pub(crate) fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = text);
}

/// This thread's last error message, or None if it has had none. The pointer stays
/// valid until this thread records another error (or exits).
pub(crate) fn last_error() -> Option<*const c_char> {
    LAST_ERROR.with(|l| {
        let l = l.borrow();
        (!l.as_bytes().is_empty()).then(|| l.as_ptr())
    })
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs the Rust side of an export: no panic crosses the boundary, a failure becomes
/// its code and this thread's last error.
pub(crate) fn guard(what: &str, f: impl FnOnce() -> Outcome) -> c_int {
    guard_progress(what, || f().map(|()| Progress::Done))
}

/// [`guard`] for calls that may leave work in the background: `ncclInProgress` then.
pub(crate) fn guard_progress(what: &str, f: impl FnOnce() -> Outcome<Progress>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(Progress::Done)) => code::SUCCESS,
        Ok(Ok(Progress::InProgress)) => code::IN_PROGRESS,
        Ok(Err(e)) => {
            set_last_error(&format!("{what}: {}", e.message));
            e.code
        }
        Err(p) => {
            set_last_error(&format!(
                "{what}: internal error (panic: {})",
                panic_message(p.as_ref())
            ));
            code::INTERNAL_ERROR
        }
    }
}

/// Like [`guard`] for exports that return a value instead of a code: `fallback` if
/// the body panics.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_codes() {
        let cases = [
            (mixccl::Error::invalid("x"), code::INVALID_ARGUMENT),
            (
                mixccl::Error::InvalidUniqueId("x".into()),
                code::INVALID_ARGUMENT,
            ),
            (
                mixccl::Error::Timeout {
                    op: "x".into(),
                    waiting_for: vec![1],
                    after: std::time::Duration::from_secs(1),
                },
                code::TIMEOUT,
            ),
            (
                mixccl::Error::PeerLost {
                    rank: 1,
                    reason: "EOF".into(),
                },
                code::REMOTE_ERROR,
            ),
            (
                mixccl::Error::Mismatch {
                    rank: 0,
                    theirs: "a".into(),
                    peer: 1,
                    ours: "b".into(),
                },
                code::INVALID_USAGE,
            ),
            (mixccl::Error::Aborted, code::INVALID_USAGE),
            (mixccl::Error::Revoked { rank: 2 }, code::INVALID_USAGE),
            (mixccl::Error::Bootstrap("x".into()), code::SYSTEM_ERROR),
            (
                mixccl::Error::io("x", std::io::Error::other("y")),
                code::SYSTEM_ERROR,
            ),
            (mixccl::Error::Internal("x".into()), code::INTERNAL_ERROR),
        ];
        for (e, c) in cases {
            assert_eq!(code_of(&e), c, "{e}");
        }
    }

    #[test]
    fn guard_catches_panics_and_keeps_the_message() {
        let c = guard("ncclTest", || panic!("boom"));
        assert_eq!(c, code::INTERNAL_ERROR);
        // SAFETY: the pointer comes from this thread's live CString.
        let msg = unsafe { CStr::from_ptr(last_error().unwrap()) };
        assert!(msg.to_str().unwrap().contains("boom"), "{msg:?}");
        let c = guard("ncclTest", || Err(Failure::invalid("bad dtype 12")));
        assert_eq!(c, code::INVALID_ARGUMENT);
        // SAFETY: as above.
        let msg = unsafe { CStr::from_ptr(last_error().unwrap()) };
        assert_eq!(msg.to_str().unwrap(), "ncclTest: bad dtype 12");
    }

    #[test]
    fn every_code_has_its_own_string() {
        let all: Vec<_> = (0..=8).map(error_string).collect();
        for (i, s) in all.iter().enumerate() {
            assert!(!s.is_empty());
            assert!(all[i + 1..].iter().all(|o| o != s), "code {i} repeats");
        }
        assert_eq!(error_string(99), c"unknown result code");
    }
}
