//! The `Config` a C caller gets: `MIXCCL_*` variables, and where mixccl has the same
//! knob as NCCL and no `MIXCCL_*` variable is set, the `NCCL_*` one users already set.
//!
//! | mixccl | NCCL fallback |
//! |---|---|
//! | `MIXCCL_SOCKET_IFNAME` | `NCCL_SOCKET_IFNAME` (same syntax) |
//! | `MIXCCL_DEBUG` | `NCCL_DEBUG` (WARN, INFO, TRACE, VERSION; other values ignored) |
//! | `MIXCCL_NSOCKS` | `NCCL_SOCKET_NTHREADS` x `NCCL_NSOCKS_PERTHREAD` (each default 1, at most 64) |
//!
//! Also the C ABI's own `MIXCCL_LAUNCH` ([`Launch`]), read when a communicator is
//! made and checked with the configuration, so a bad value fails init.

use mixccl::{Config, DebugLevel};

/// How calls on device buffers are launched (`MIXCCL_LAUNCH`). Local to each rank:
/// the wire is the same either way, so ranks may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Launch {
    /// `async` (default): enqueued on the caller's stream, returning at once
    /// (`stream`).
    #[default]
    Stream,
    /// `sync`: the call waits for the caller's stream on the host, runs, and returns
    /// with the result in place.
    Sync,
}

/// `MIXCCL_LAUNCH` from `get`.
pub(crate) fn launch_with(get: impl Fn(&str) -> Option<String>) -> mixccl::Result<Launch> {
    match get("MIXCCL_LAUNCH").as_deref().map(str::trim) {
        None | Some("") => Ok(Launch::default()),
        Some(v) if v.eq_ignore_ascii_case("async") => Ok(Launch::Stream),
        Some(v) if v.eq_ignore_ascii_case("sync") => Ok(Launch::Sync),
        Some(v) => Err(mixccl::Error::invalid(format!(
            "MIXCCL_LAUNCH={v:?}: expected async (stream-ordered calls on device \
             buffers, the default) or sync (host-synchronous)"
        ))),
    }
}

/// `MIXCCL_LAUNCH` from the process environment.
pub(crate) fn launch_from_env() -> mixccl::Result<Launch> {
    launch_with(|k| std::env::var(k).ok())
}

/// The configuration from the process environment.
pub(crate) fn config_from_env() -> mixccl::Result<Config> {
    config_with(|k| std::env::var(k).ok())
}

/// The configuration from the variables `get` returns (`MIXCCL_LAUNCH` is checked
/// here too).
pub(crate) fn config_with(get: impl Fn(&str) -> Option<String>) -> mixccl::Result<Config> {
    launch_with(&get)?;
    Config::default().with_env(|k| get(k).or_else(|| nccl_fallback(k, &get)))
}

fn nccl_fallback(key: &str, get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    match key {
        "MIXCCL_SOCKET_IFNAME" => get("NCCL_SOCKET_IFNAME"),
        "MIXCCL_DEBUG" => get("NCCL_DEBUG").filter(|v| DebugLevel::parse(v).is_some()),
        "MIXCCL_NSOCKS" => {
            let threads = get("NCCL_SOCKET_NTHREADS");
            let per = get("NCCL_NSOCKS_PERTHREAD");
            if threads.is_none() && per.is_none() {
                return None;
            }
            let n = |v: Option<String>| {
                v.and_then(|s| s.trim().parse::<u64>().ok())
                    .filter(|n| *n >= 1)
                    .unwrap_or(1)
            };
            Some(n(threads).saturating_mul(n(per)).min(64).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|p| p.0 == k).map(|p| p.1.to_string())
    }

    #[test]
    fn nccl_variables_fill_in_and_mixccl_wins() {
        let c = config_with(env(&[
            ("NCCL_SOCKET_IFNAME", "=lo"),
            ("NCCL_DEBUG", "INFO"),
            ("NCCL_SOCKET_NTHREADS", "2"),
            ("NCCL_NSOCKS_PERTHREAD", "3"),
        ]))
        .unwrap();
        assert_eq!(c.socket_ifname.as_deref(), Some("=lo"));
        assert_eq!(c.debug, DebugLevel::Info);
        assert_eq!(c.nsocks, 6);
        let c = config_with(env(&[
            ("NCCL_SOCKET_IFNAME", "eth"),
            ("MIXCCL_SOCKET_IFNAME", "lo"),
            ("NCCL_NSOCKS_PERTHREAD", "4"),
            ("MIXCCL_NSOCKS", "1"),
            ("NCCL_DEBUG", "ABORT"),
        ]))
        .unwrap();
        assert_eq!(c.socket_ifname.as_deref(), Some("lo"));
        assert_eq!(c.nsocks, 1);
        assert_eq!(c.debug, DebugLevel::Warn);
        let c = config_with(env(&[
            ("NCCL_SOCKET_NTHREADS", "16"),
            ("NCCL_NSOCKS_PERTHREAD", "16"),
        ]))
        .unwrap();
        assert_eq!(c.nsocks, 64);
        let c = config_with(env(&[])).unwrap();
        assert_eq!(c.nsocks, Config::default().nsocks);
    }

    #[test]
    fn launch_mode_is_async_unless_sync_and_bad_values_fail() {
        assert_eq!(launch_with(env(&[])).unwrap(), Launch::Stream);
        assert_eq!(
            launch_with(env(&[("MIXCCL_LAUNCH", "async")])).unwrap(),
            Launch::Stream
        );
        assert_eq!(
            launch_with(env(&[("MIXCCL_LAUNCH", " SYNC ")])).unwrap(),
            Launch::Sync
        );
        assert!(launch_with(env(&[("MIXCCL_LAUNCH", "later")])).is_err());
        assert!(config_with(env(&[("MIXCCL_LAUNCH", "later")])).is_err());
    }
}
