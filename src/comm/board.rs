//! What a communicator sets up when all its ranks share a host: keeping the host's
//! board that rank 0 handed out at init (the executor runs the board ops of
//! a schedule on it), and probing whether every rank can read every other's memory
//! (for the schedules' cross-memory reads).

use super::{Communicator, Transfer};
use crate::debug::log_info;
use crate::error::Result;
use crate::reduce::ReduceOp;
use crate::transport::board::Board;
use crate::transport::LinkClass;
use std::sync::Arc;

impl Communicator {
    /// Keeps the host's board that rank 0 handed out at init (`bootstrap::join`), if
    /// any. Every rank has one or none does: rank 0 creates it exactly when all ranks
    /// are on its host with shared memory and the board on (must-agree settings), and
    /// a rank that could not map it failed init.
    pub(super) fn adopt_board(&mut self, board: Option<Arc<Board>>) {
        self.board = board;
        self.caps.publish = self.board.is_some();
    }

    /// Can every rank read every other's memory directly? All ranks must agree, so this
    /// is collective: first whether every rank is eligible (all peers over shared
    /// memory, `MIXCCL_SHM_CMA` on), then a real read of a word each peer publishes.
    pub(super) fn probe_host_read(&mut self) -> Result<bool> {
        // MIXCCL_SHM_CMA is a must-agree setting, so every rank returns here alike.
        if !self.config.shm_cma {
            return Ok(false);
        }
        // Links are made on first use: a communicator from init asks what its links
        // would be; one over given links has them all.
        let eligible = self.nranks > 1
            && match &self.rejoin {
                Some(r) => r.all_on_shm(),
                None => self
                    .links
                    .iter()
                    .flatten()
                    .all(|l| l.class() == LinkClass::Shm),
            };
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
