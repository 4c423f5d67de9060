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
/// all-to-all at this size). Checked before the rendezvous, when which peers share
/// this host is not known yet: every peer counts as a network peer, unless
/// shared memory is on, when a peer may need [`PER_SHM_PEER`] instead.
pub(crate) fn need(open: u64, nranks: usize, config: &Config) -> (u64, u64) {
    let per_peer = if config.shm_disable {
        config.nsocks as u64 + 1
    } else {
        (config.nsocks as u64 + 1).max(PER_SHM_PEER)
    };
    let peers = (nranks as u64).saturating_sub(1);
    let log2 = u64::from(usize::BITS - nranks.max(1).leading_zeros());
    let sparse = peers.min(2 * log2 + 8);
    let base = open + SLACK;
    (base + sparse * per_peer, base + peers * per_peer)
}

/// Checks (and where it helps raises) the soft descriptor limit for rank `rank` of
/// `nranks`; logs the figures at INFO.
pub(crate) fn check_fds(rank: usize, nranks: usize, config: &Config) -> Result<()> {
    let Ok((mut soft, hard)) = sys::nofile_limit() else {
        return Ok(());
    };
    let open = sys::open_fds().unwrap_or(16) as u64;
    let (needed, all) = need(open, nranks, config);
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
            shm_disable: true,
            ..Config::default()
        };
        // 16 ranks: 5 bits -> 18 sparse peers, capped at the 15 there are.
        assert_eq!(need(10, 16, &c), (10 + 32 + 15 * 3, 10 + 32 + 15 * 3));
        // 1024 ranks: 11 bits -> 30 peers of 3 sockets; all 1023 peers.
        assert_eq!(need(10, 1024, &c), (42 + 30 * 3, 42 + 1023 * 3));
        // With shared memory a peer may take 6 descriptors.
        let shm = Config {
            shm_disable: false,
            ..c
        };
        assert_eq!(need(0, 8, &shm), (32 + 7 * 6, 32 + 7 * 6));
    }
}
