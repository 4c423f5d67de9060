//! The descriptor budget of a rank, checked at init: what it holds open already,
//! what its links may need, and the soft `RLIMIT_NOFILE` (raised towards the hard
//! limit when that helps), so a rank short of descriptors fails at init naming the
//! limit and the need instead of in the middle of a call.

use crate::config::Config;
use crate::debug::{log_info, log_warn};
use crate::error::{Error, Result};
use crate::sys;

/// Descriptors kept free beyond the links: logs, files and devices the
/// application opens, the bootstrap's own sockets.
const SLACK: u64 = 32;

/// Descriptors per shared-memory link (a ring mapping's file and two doorbells
/// each way, conservatively).
const PER_SHM_PEER: u64 = 6;

/// What a rank needs: `(needed, all)`, where `needed` covers the links the
/// sparse algorithms use (ring neighbours, tree and dissemination partners:
/// `2 log2 n + 8` peers) and `all` a link to every peer (direct algorithms and
/// all-to-all at this size).
pub(crate) fn need(open: u64, nranks: usize, host_peers: usize, config: &Config) -> (u64, u64) {
    let per_peer = config.nsocks as u64 + 1;
    let n = nranks as u64;
    let net_peers = n.saturating_sub(1).saturating_sub(host_peers as u64);
    let log2 = u64::from(usize::BITS - nranks.max(1).leading_zeros());
    let sparse = net_peers.min(2 * log2 + 8);
    let shm = host_peers as u64 * PER_SHM_PEER;
    let base = open + SLACK + shm;
    (base + sparse * per_peer, base + net_peers * per_peer)
}

/// Checks (and where it helps raises) the soft descriptor limit for rank `rank` of
/// `nranks` with `host_peers` peers over shared memory; logs the figures at INFO.
pub(crate) fn check_fds(
    rank: usize,
    nranks: usize,
    host_peers: usize,
    config: &Config,
) -> Result<()> {
    let Ok((mut soft, hard)) = sys::nofile_limit() else {
        return Ok(());
    };
    let open = sys::open_fds().unwrap_or(16) as u64;
    let (needed, all) = need(open, nranks, host_peers, config);
    if soft < all && hard > soft && sys::raise_nofile(all).is_ok() {
        log_info!(
            Some(rank),
            "raised the soft RLIMIT_NOFILE from {soft} to {}",
            all.min(hard)
        );
        soft = all.min(hard);
    }
    log_info!(
        Some(rank),
        "descriptors: {open} open, limit {soft} (hard {hard}); links need about {needed} \
         (up to {all} if a call connects to all {} peers)",
        nranks.saturating_sub(1)
    );
    if soft < needed {
        return Err(Error::Bootstrap(format!(
            "rank {rank} of {nranks}: the file descriptor limit RLIMIT_NOFILE is {soft} \
             (hard {hard}) but this rank needs about {needed} ({open} open now, {} sockets \
             per peer with MIXCCL_NSOCKS={}); raise it (`ulimit -n {needed}` or more)",
            config.nsocks + 1,
            config.nsocks
        )));
    }
    if soft < all {
        log_warn!(
            Some(rank),
            "RLIMIT_NOFILE {soft} is below the {all} descriptors a link to every peer \
             would take: calls that use direct algorithms or all-to-all at {nranks} ranks \
             may fail for want of descriptors"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_grows_with_log_n_for_sparse_algorithms_and_n_for_all() {
        let c = Config {
            nsocks: 2,
            ..Config::default()
        };
        // 16 ranks: log2 = 5 -> 18 sparse peers, capped at 15 network peers.
        assert_eq!(need(10, 16, 0, &c), (10 + 32 + 15 * 3, 10 + 32 + 15 * 3));
        // 1024 ranks: 11 bits -> 30 peers of 3 sockets; all 1023 peers.
        assert_eq!(need(10, 1024, 0, &c), (42 + 30 * 3, 42 + 1023 * 3));
        // 4 shared-memory peers of 8: 3 network peers.
        assert_eq!(need(0, 8, 4, &c), (32 + 24 + 9, 32 + 24 + 9));
    }
}
