//! Argument checks: buffer lengths against the element type and rank count, ranks,
//! roots and peers in range. Each error names the call, the rank and the buffer.

use super::Communicator;
use crate::config::Collective;
use crate::element::DataType;
use crate::error::{Error, Result};

/// `r` (a rank, root or peer called `what`) is below `nranks`.
pub(super) fn check_rank(what: &str, r: usize, nranks: usize) -> Result<()> {
    if r >= nranks {
        return Err(Error::invalid(format!(
            "{what} {r} is out of range for {nranks} ranks"
        )));
    }
    Ok(())
}

impl Communicator {
    /// Elements in `bytes` bytes of `dtype`, or an error naming the buffer.
    pub(super) fn elems(
        &self,
        what: &str,
        buf: &str,
        dtype: DataType,
        bytes: usize,
    ) -> Result<usize> {
        if bytes % dtype.size() != 0 {
            return Err(Error::invalid(format!(
                "{what} on rank {}: {buf} has {bytes} bytes, not a whole number of {dtype} elements",
                self.rank
            )));
        }
        Ok(bytes / dtype.size())
    }

    /// Elements per block of a call whose `whole` buffer holds `nranks` blocks and whose
    /// other buffer, if any (`None` in place), holds one: (name, bytes) of each.
    pub(super) fn block_count(
        &self,
        what: &str,
        dtype: DataType,
        whole: (&str, usize),
        block: Option<(&str, usize)>,
    ) -> Result<usize> {
        let total = self.elems(what, whole.0, dtype, whole.1)?;
        let Some((name, bytes)) = block else {
            return self.blocks(&format!("{what}_in_place"), total);
        };
        let count = self.elems(what, name, dtype, bytes)?;
        if Some(total) != count.checked_mul(self.nranks) {
            return Err(Error::invalid(format!(
                "{what} on rank {}: {} has {total} elements, expected nranks ({}) x {name} ({count})",
                self.rank, whole.0, self.nranks
            )));
        }
        Ok(count)
    }

    pub(super) fn same_len(
        &self,
        what: &str,
        dtype: DataType,
        send: usize,
        recv: usize,
    ) -> Result<()> {
        if send != recv {
            return Err(Error::invalid(format!(
                "{what} rank {}: send has {} elements but recv has {}",
                self.rank,
                send / dtype.size(),
                recv / dtype.size()
            )));
        }
        Ok(())
    }

    /// Validates a byte-level collective's buffer lengths (`send: None` = in place)
    /// and root, and returns its element count (per block for the block collectives).
    pub(crate) fn count_of(
        &self,
        coll: Collective,
        dtype: DataType,
        root: usize,
        send: Option<usize>,
        recv: usize,
    ) -> Result<usize> {
        match coll {
            Collective::AllReduce => {
                let count = self.elems("all_reduce", "recv", dtype, recv)?;
                if let Some(send) = send {
                    self.same_len("all_reduce on", dtype, send, recv)?;
                }
                Ok(count)
            }
            Collective::AllGather => self.block_count(
                "all_gather",
                dtype,
                ("recv", recv),
                send.map(|s| ("send", s)),
            ),
            Collective::Broadcast => {
                check_rank("broadcast root", root, self.nranks)?;
                let count = self.elems("broadcast", "recv", dtype, recv)?;
                if let (Some(send), true) = (send, self.rank == root) {
                    self.same_len("broadcast on root", dtype, send, recv)?;
                }
                Ok(count)
            }
            Collective::Reduce => {
                check_rank("reduce root", root, self.nranks)?;
                match send {
                    Some(send) => {
                        if self.rank == root {
                            self.same_len("reduce on root", dtype, send, recv)?;
                        }
                        self.elems("reduce", "send", dtype, send)
                    }
                    None => self.elems("reduce", "buffer", dtype, recv),
                }
            }
            Collective::ReduceScatter => match send {
                Some(send) => self.block_count(
                    "reduce_scatter",
                    dtype,
                    ("send", send),
                    Some(("recv", recv)),
                ),
                None => self.block_count("reduce_scatter", dtype, ("recv", recv), None),
            },
            Collective::AllToAll => {
                let total = self.elems("all_to_all", "recv", dtype, recv)?;
                if let Some(send) = send {
                    self.same_len("all_to_all on", dtype, send, recv)?;
                }
                self.blocks("all_to_all", total)
            }
            Collective::SendRecv | Collective::Barrier => {
                Err(Error::Internal(format!("count_of called for {coll}")))
            }
        }
    }

    pub(super) fn blocks(&self, what: &str, len: usize) -> Result<usize> {
        if len % self.nranks != 0 {
            return Err(Error::invalid(format!(
                "{what} on rank {}: buffer of {len} elements is not a multiple of nranks ({})",
                self.rank, self.nranks
            )));
        }
        Ok(len / self.nranks)
    }

    pub(super) fn no_self(&self, what: &str, peer: usize) -> Result<()> {
        check_rank(&format!("{what} peer"), peer, self.nranks)?;
        if peer == self.rank {
            return Err(Error::invalid(format!(
                "rank {} cannot {what} itself outside a send_recv or group with itself",
                self.rank
            )));
        }
        Ok(())
    }
}
