//! What a communicator does beside the executor when all its ranks share a host:
//! keeping the host's board that the shared-memory links brought, gathering blocks
//! through it, and probing whether every rank can read every other's memory.

use super::{CallLabel, Communicator, Transfer};
use crate::config::Collective;
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use crate::transport::LinkClass;

impl Communicator {
    /// Keeps the host's board that the shared-memory links brought, if any. Every rank
    /// has one or none does: rank 0 creates it exactly when all ranks are on its host
    /// with shared memory and the board on (must-agree settings), and a rank that
    /// could not map it failed to connect.
    pub(super) fn adopt_board(&mut self) {
        self.board = self.links.iter().flatten().find_map(|l| l.board());
        self.caps.publish = self.board.is_some();
    }

    /// The blocks of a call whose schedule `run` just ran (headers, and for all_reduce
    /// the reduce-scatter), through the host's board: `blocks[p]` gets rank p's block;
    /// this rank's is `own` or already in place.
    pub(super) fn publish_gather(
        &mut self,
        coll: Collective,
        own: Option<&[u8]>,
        blocks: Vec<&mut [u8]>,
    ) -> Result<()> {
        let Some(board) = self.board.clone() else {
            return Err(Error::Internal("publish planned without a board".into()));
        };
        let label = CallLabel {
            coll,
            seq: self.seq,
            rank: self.rank,
        };
        let mut w = crate::transport::board::Wait {
            timeout: self.config.timeout,
            spin: self.config.spin,
            abort: &self.abort,
            label: &label,
            links: &mut self.links,
        };
        board.gather(own, blocks, &mut w).map_err(|e| {
            let e = self.stop_error(e);
            self.failed = Some(e.clone());
            e
        })
    }

    /// Can every rank read every other's memory directly? All ranks must agree, so this
    /// is collective: first whether every rank is eligible (all peers over shared
    /// memory, `MIXCCL_SHM_CMA` on), then a real read of a word each peer publishes.
    pub(super) fn probe_host_read(&mut self) -> Result<bool> {
        // MIXCCL_SHM_CMA is a must-agree setting, so every rank returns here alike.
        if !self.config.shm_cma {
            return Ok(false);
        }
        let eligible = self.nranks > 1
            && self
                .links
                .iter()
                .flatten()
                .all(|l| l.class() == LinkClass::Shm);
        let mut ok = [u8::from(eligible)];
        self.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
        if ok[0] == 0 {
            return Ok(false);
        }
        let magic = |r: usize| 0x6d69_7863_636c_0000u64 | r as u64;
        let word = [magic(self.rank)];
        let mine = (word.as_ptr() as u64).to_le_bytes();
        let mut theirs = vec![[0u8; 8]; self.nranks];
        let mut t: Vec<Transfer> = Vec::new();
        for (p, slot) in theirs
            .iter_mut()
            .enumerate()
            .filter(|(p, _)| *p != self.rank)
        {
            t.push(Transfer::Send {
                peer: p,
                buf: &mine,
            });
            t.push(Transfer::Recv { peer: p, buf: slot });
        }
        self.group(t)?;
        let mut good = true;
        for (p, addr) in theirs.iter().enumerate().filter(|(p, _)| *p != self.rank) {
            let mut got = [0u8; 8];
            let read = self.links[p]
                .as_mut()
                .map(|l| l.read_remote(u64::from_le_bytes(*addr), &mut got))
                .unwrap_or(Ok(false));
            good &= matches!(read, Ok(true)) && u64::from_le_bytes(got) == magic(p);
        }
        let mut ok = [u8::from(good)];
        // `word` must stay alive until every peer has read it: this all-reduce is after.
        self.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
        std::hint::black_box(&word);
        log_info!(
            Some(self.rank),
            "cross-memory reads between ranks: {}",
            if ok[0] == 1 { "on" } else { "off" }
        );
        Ok(ok[0] == 1)
    }
}
