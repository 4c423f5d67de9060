//! Logging to stderr in NCCL's shape: `host:pid:tid [rank] MIXCCL LEVEL message`.
//! The level comes from `MIXCCL_DEBUG` (WARN, INFO, TRACE), read once per process.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// How much mixccl prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DebugLevel {
    /// Problems only (the default).
    Warn,
    /// Configuration, topology and algorithm choices.
    Info,
    /// Per-call detail.
    Trace,
}

impl DebugLevel {
    /// Parses WARN, INFO or TRACE (any case).
    pub fn parse(s: &str) -> Option<DebugLevel> {
        match s.trim().to_ascii_uppercase().as_str() {
            "WARN" | "VERSION" => Some(DebugLevel::Warn),
            "INFO" => Some(DebugLevel::Info),
            "TRACE" => Some(DebugLevel::Trace),
            _ => None,
        }
    }

    /// Upper-case name.
    pub const fn name(self) -> &'static str {
        match self {
            DebugLevel::Warn => "WARN",
            DebugLevel::Info => "INFO",
            DebugLevel::Trace => "TRACE",
        }
    }
}

static RAISED: AtomicU8 = AtomicU8::new(0);

/// The process-wide level: `MIXCCL_DEBUG`, or higher if a `Config` asked for more.
pub(crate) fn level() -> DebugLevel {
    static LEVEL: OnceLock<DebugLevel> = OnceLock::new();
    let env = *LEVEL.get_or_init(|| {
        // Read directly (not through `config::env`): `config` logs, so `debug` sits below it.
        std::env::var("MIXCCL_DEBUG")
            .ok()
            .and_then(|v| DebugLevel::parse(&v))
            .unwrap_or(DebugLevel::Warn)
    });
    let raised = match RAISED.load(Ordering::Relaxed) {
        2 => DebugLevel::Trace,
        1 => DebugLevel::Info,
        _ => DebugLevel::Warn,
    };
    env.max(raised)
}

/// Makes the process log at least at `lvl` (a communicator's `Config::debug`).
pub(crate) fn raise_level(lvl: DebugLevel) {
    RAISED.fetch_max(lvl as u8, Ordering::Relaxed);
}

fn hostname() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    })
}

/// Writes one log line if `lvl` is enabled. `rank` is None before a rank is known.
pub(crate) fn log(lvl: DebugLevel, rank: Option<usize>, msg: std::fmt::Arguments<'_>) {
    if lvl > level() {
        return;
    }
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    let rank = rank.map_or_else(|| "-".to_string(), |r| r.to_string());
    let line = format!(
        "{}:{}:{} [{}] MIXCCL {} {}\n",
        hostname(),
        std::process::id(),
        tid,
        rank,
        lvl.name(),
        msg
    );
    write_line(&line);
}

/// Is per-call detail (`MIXCCL_DEBUG=TRACE`) logged? For the C ABI crate, which
/// logs through [`trace_line`].
pub fn trace_enabled() -> bool {
    level() >= DebugLevel::Trace
}

/// Writes one TRACE line in the usual shape, if TRACE is enabled.
pub fn trace_line(rank: Option<usize>, msg: std::fmt::Arguments<'_>) {
    log(DebugLevel::Trace, rank, msg);
}

/// Writes `line` to fd 2 in one write(2), as NCCL does, so lines from ranks sharing
/// a terminal or pipe never cut into each other (`eprintln!` writes each piece of
/// its format separately). A line up to PIPE_BUF (4 KiB) is atomic on a pipe.
fn write_line(line: &str) {
    use std::io::Write;
    // Stderr is unbuffered: write_all is one write(2) unless the kernel takes less.
    // Nowhere to report a failed log write.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Logs at WARN: `log_warn!(rank_option, "fmt", args..)`.
macro_rules! log_warn {
    ($rank:expr, $($arg:tt)*) => {
        $crate::debug::log($crate::debug::DebugLevel::Warn, $rank, format_args!($($arg)*))
    };
}
/// Logs at INFO.
macro_rules! log_info {
    ($rank:expr, $($arg:tt)*) => {
        $crate::debug::log($crate::debug::DebugLevel::Info, $rank, format_args!($($arg)*))
    };
}
/// Logs at TRACE.
macro_rules! log_trace {
    ($rank:expr, $($arg:tt)*) => {
        $crate::debug::log($crate::debug::DebugLevel::Trace, $rank, format_args!($($arg)*))
    };
}
#[allow(unused_imports)]
pub(crate) use {log_info, log_trace, log_warn};
