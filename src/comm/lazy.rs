//! Links on first use: before a schedule runs, the peers it names that this rank
//! has no link to yet are connected (`bootstrap::Rejoin::connect`), over shared
//! memory inside the host and the network outside it. Every peer's schedule names
//! this rank in the same call, so both ends connect together, with no message
//! beyond the connection's own.

use super::Communicator;
use crate::algo::{Op, Schedule};
use crate::error::Result;

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
        let result = rejoin.connect(self.rank, &need, &mut self.links, &self.config, &self.abort);
        // A revoke that stopped the connecting is told to the peers linked so far.
        result.map_err(|e| {
            let e = self.stop_error(e);
            self.failed = Some(e.clone());
            e
        })
    }
}
