//! Elastic membership: revoke (stop every member's calls without tearing the
//! communicator down), grow (admit new ranks through a grow id, like
//! `ncclCommGetUniqueId` + `ncclCommGrow`) and shrink by island (drop every rank
//! of some hosts or some vendors at once).
//!
//! Grow is a fresh rendezvous on the grow id's root: the existing members keep
//! their ranks, the joiners take the ranks after them, and the new communicator
//! probes, measures and plans for its members as init does. The parent is not
//! touched, so a grow that fails (a wrong or stale id, a rank taken twice, a
//! joiner that never comes) leaves every member its communicator.

use super::Communicator;
use crate::bootstrap::unique_id::fnv1a;
use crate::config::Config;
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::header::encode_control;
use crate::wire::MAX_RANKS;
use crate::UniqueId;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Revokes a communicator from any thread: the call in flight on it stops with
/// `Error::Revoked` and tells every peer, whose calls stop too.
#[derive(Clone, Debug)]
pub struct RevokeHandle {
    abort: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
}

impl RevokeHandle {
    /// Requests the revoke; returns at once.
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
        self.abort.store(true, Ordering::SeqCst);
    }
}

/// The ranks an island shrink drops: all ranks on these hosts, or of these vendors.
#[derive(Debug, Clone, Copy)]
pub enum Island<'a> {
    /// Host names: the host identity, or its part before the first `/` (the hostname).
    Hosts(&'a [&'a str]),
    /// Device vendors as the topology names them (`host`, `cuda`, `hip`, ...).
    Vendors(&'a [&'a str]),
}

impl Communicator {
    /// A handle that revokes this communicator from any thread.
    pub fn revoke_handle(&self) -> RevokeHandle {
        RevokeHandle {
            abort: self.abort.clone(),
            revoked: self.revoked.clone(),
        }
    }

    /// Revokes this communicator, like `ncclCommRevoke`: every peer is told (on the
    /// links' control channels) and its calls in flight or to come fail with
    /// `Error::Revoked`, as do this rank's. The communicator can still shrink (an
    /// empty list keeps every rank), grow, or be dropped.
    pub fn revoke(&mut self) {
        self.revoke_handle().revoke();
        let e = Error::Revoked { rank: self.rank };
        self.tell_peers(&e);
        self.failed.get_or_insert(e);
    }

    /// Whether this communicator was revoked, here or by a peer.
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst) || matches!(self.failed, Some(Error::Revoked { .. }))
    }

    /// What a call stopped by the abort flag returns: `Revoked` (and every linked
    /// peer is told) when a revoke set the flag, else `e`; a revoke heard from a
    /// peer is passed on to the linked peers.
    pub(super) fn stop_error(&mut self, e: Error) -> Error {
        if matches!(e, Error::Aborted) && self.revoked.load(Ordering::SeqCst) {
            let e = Error::Revoked { rank: self.rank };
            self.tell_peers(&e);
            return e;
        }
        // Links are made on first use, so the revoking rank may have no link to some
        // members: each rank that hears of a revoke passes it on once, over its own
        // links, which join every member the call linked.
        if matches!(e, Error::Revoked { .. }) && !self.revoked.swap(true, Ordering::SeqCst) {
            self.tell_peers(&e);
        }
        e
    }

    fn tell_peers(&mut self, e: &Error) {
        if let Some(msg) = encode_control(e) {
            for l in self.links.iter_mut().flatten() {
                // Best effort: a peer that cannot be reached is not a member to stop.
                let _ = l.send_control(&msg);
            }
        }
    }

    /// The token naming this communicator to a grow id.
    fn lineage(&self, what: &str) -> Result<u64> {
        let rejoin = self.rejoin.as_ref().ok_or_else(|| {
            Error::invalid(format!(
                "{what} needs a communicator made by init, shrink, split or grow: \
                 in-process and custom links cannot admit new ranks"
            ))
        })?;
        Ok(fnv1a(&rejoin.token()))
    }

    /// A unique id to grow this communicator with, like `ncclCommGetUniqueId`: one
    /// member calls it and hands the id (out of band) to the other members and to the
    /// joiners. It starts the new communicator's rendezvous root on this rank's
    /// address and names this communicator, so it cannot grow another one.
    pub fn grow_id(&self) -> Result<UniqueId> {
        let parent = self.lineage("grow_id")?;
        let ip = self
            .local_ip
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        let id = UniqueId::bind_with(std::net::SocketAddr::new(ip, 0), &self.config)?;
        Ok(id.for_grow(parent, self.nranks))
    }

    /// Grows this communicator to `nranks` ranks with the id from [`grow_id`]
    /// (`ncclCommGrow` with this communicator and rank -1): every member calls it and
    /// keeps its rank; the joiners call [`Communicator::join_grown`]. Blocks until all
    /// `nranks` ranks are in (bounded by the timeout). This communicator is left as it
    /// was, whatever happens.
    ///
    /// [`grow_id`]: Communicator::grow_id
    pub fn grow(&self, nranks: usize, id: &UniqueId) -> Result<Communicator> {
        let (parent, old) = grow_parent(id)?;
        if parent != self.lineage("grow")? || old != self.nranks {
            return Err(Error::invalid(format!(
                "grow: rank {} of {} was handed a grow id made by another communicator \
                 (of {old} ranks): a stale communicator, or an id from before a shrink; \
                 get a new id with grow_id (ncclCommGetUniqueId) on this one",
                self.rank, self.nranks
            )));
        }
        check_grow(nranks, old)?;
        log_info!(
            Some(self.rank),
            "grow: rank {} keeps its rank, {} -> {nranks} ranks",
            self.rank,
            self.nranks
        );
        Communicator::init(self.rank, nranks, id, self.config.clone())
    }

    /// Joins a communicator being grown to `nranks` as the new rank `rank`
    /// (`ncclCommGrow` with no communicator): `rank` is at least the old size, which
    /// the id carries, and below `nranks`.
    pub fn join_grown(
        rank: usize,
        nranks: usize,
        id: &UniqueId,
        config: Config,
    ) -> Result<Communicator> {
        let (_, old) = grow_parent(id)?;
        check_grow(nranks, old)?;
        if rank < old || rank >= nranks {
            return Err(Error::invalid(format!(
                "grow: a joining rank must take a rank in {old}..{nranks} (ranks below \
                 {old} are the existing members), not {rank}"
            )));
        }
        Communicator::init(rank, nranks, id, config)
    }

    /// The ranks of `island`, by this communicator's topology model.
    pub fn island_ranks(&self, island: Island<'_>) -> Result<Vec<usize>> {
        let topo = self
            .topology()
            .ok_or_else(|| Error::invalid("island: this communicator has no topology model"))?;
        let host_of = |r: usize| -> &str {
            match topo.probes.get(r) {
                Some(p) => &p.host,
                None => &topo.hosts[topo.host_of(r)].name,
            }
        };
        let vendor_of =
            |r: usize| -> &str { topo.probes.get(r).map_or("host", |p| &p.device.vendor) };
        Ok((0..self.nranks)
            .filter(|&r| match island {
                Island::Hosts(hosts) => {
                    let h = host_of(r);
                    let name = h.split('/').next().unwrap_or(h);
                    hosts.iter().any(|x| *x == h || *x == name)
                }
                Island::Vendors(vendors) => vendors.contains(&vendor_of(r)),
            })
            .collect())
    }

    /// Drops a whole island (hosts or vendors) like [`Communicator::shrink`] with its
    /// ranks excluded; the planner re-chooses algorithms for the rest. A rank of the
    /// island gets `Ok(None)` and takes no part; every other rank must call it alike.
    pub fn shrink_island(&mut self, island: Island<'_>) -> Result<Option<Communicator>> {
        let dropped = self.island_ranks(island)?;
        if dropped.contains(&self.rank) {
            return Ok(None);
        }
        if dropped.is_empty() {
            return Err(Error::invalid(format!(
                "shrink_island: no rank of this {}-rank communicator is on {island:?}",
                self.nranks
            )));
        }
        log_info!(
            Some(self.rank),
            "shrink_island: dropping ranks {dropped:?} ({island:?})"
        );
        self.shrink(&dropped).map(Some)
    }
}

fn grow_parent(id: &UniqueId) -> Result<(u64, usize)> {
    id.grow_parent().ok_or_else(|| {
        Error::InvalidUniqueId(
            "not a grow id: growing needs the id a member got from grow_id \
             (ncclCommGetUniqueId), not one from UniqueId::new (ncclGetUniqueId)"
                .into(),
        )
    })
}

fn check_grow(nranks: usize, old: usize) -> Result<()> {
    if nranks <= old || nranks > MAX_RANKS {
        return Err(Error::invalid(format!(
            "grow: nranks {nranks} must be more than the {old} ranks the communicator has \
             (and at most {MAX_RANKS})"
        )));
    }
    Ok(())
}
