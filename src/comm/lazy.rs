//! Links on first use: before a schedule runs, the peers it names that this rank
//! has no link to yet are connected (`bootstrap::Rejoin::connect`), over shared
//! memory inside the host and the network outside it. Every peer's schedule names
//! this rank in the same call, so both ends connect together, with no message
//! beyond the connection's own.

use super::Communicator;
use crate::algo::{Op, Schedule};
use crate::error::{Error, Result};
use crate::header::{decode_control, encode_control};
use crate::transport::Link;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

impl Communicator {
    /// Connects the peers `schedule` needs and this rank lacks; a failure (a peer
    /// that never answers within `MIXCCL_TIMEOUT`, an abort or revoke) stops the
    /// communicator.
    pub(super) fn connect_for(&mut self, schedule: &Schedule) -> Result<()> {
        let Some(rejoin) = &self.rejoin else {
            return Ok(());
        };
        let links = &self.links;
        let missing = |p: usize| p != self.rank && links.get(p).is_some_and(Option::is_none);
        let mut need: Vec<usize> = Vec::new();
        for op in &schedule.ops {
            let peer = match *op {
                Op::Send { peer, .. }
                | Op::Recv { peer, .. }
                | Op::RecvReduce { peer, .. }
                | Op::PeerRead { peer, .. }
                // A board read has no link of its own, but its writer's link is how
                // the executor notices that the writer died.
                | Op::BoardRead { peer, .. } => peer,
                _ => continue,
            };
            if missing(peer) && !need.contains(&peer) {
                need.push(peer);
            }
        }
        if need.is_empty() {
            return Ok(());
        }
        // While connecting, a revoke or a lost peer may be reported on the links this
        // rank has (by a peer that will never connect, having stopped): they are
        // watched, and a report stops the connecting (the abort flag) and the call.
        let rank = self.rank;
        let mut fresh: Vec<Option<Box<dyn Link>>> = (0..self.links.len()).map(|_| None).collect();
        let mut linked = std::mem::take(&mut self.links);
        let connecting = AtomicBool::new(true);
        let (result, heard) = std::thread::scope(|s| {
            let watcher = s.spawn(|| watch_reports(&mut linked, &self.abort, &connecting));
            let result = rejoin.connect(rank, &need, &mut fresh, &self.config, &self.abort);
            connecting.store(false, Ordering::SeqCst);
            (result, watcher.join().unwrap_or(None))
        });
        self.links = linked;
        for (p, l) in fresh.into_iter().enumerate() {
            if l.is_some() {
                self.links[p] = l;
            }
        }
        let result = match heard {
            Some(e) => Err(e),
            None => result,
        };
        // A revoke that stopped the connecting is told to the peers linked so far;
        // so is a peer found gone (its listener refused), as the executor tells a
        // lost peer: the peers of this call wait on this rank and would otherwise
        // blame it.
        result.map_err(|e| {
            let e = self.stop_error(e);
            if let (Error::PeerLost { .. }, Some(msg)) = (&e, encode_control(&e)) {
                for l in self.links.iter_mut().flatten() {
                    let _ = l.send_control(&msg);
                }
            }
            self.failed = Some(e.clone());
            e
        })
    }
}

/// Watches `links` for a control message (a revoke, a lost peer, a mismatch
/// reported by a peer) while `connecting`; on one, sets `abort` (which stops the
/// connecting) and returns what it says.
fn watch_reports(
    links: &mut [Option<Box<dyn Link>>],
    abort: &AtomicBool,
    connecting: &AtomicBool,
) -> Option<Error> {
    while connecting.load(Ordering::SeqCst) {
        for (p, l) in links.iter_mut().enumerate() {
            if let Some(Ok(Some(msg))) = l.as_mut().map(|l| l.recv_control()) {
                abort.store(true, Ordering::SeqCst);
                return Some(decode_control(p, &msg));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}
