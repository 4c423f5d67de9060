//! Running a call: the element split into pieces, the plan (remembered for a loop
//! of equal calls), and the run of a schedule through the executor with the error
//! latch and the abort flag. Every data path runs here, through the executor: the
//! host board's and the cross-memory reads are ops of the schedule.

use super::{CallLabel, Communicator, Meta};
use crate::algo::{self, Call};
use crate::config::{Algorithm, Collective};
use crate::debug::log_trace;
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::exec::{self, Buffers, Context};
use crate::header::{self, CallHeader};
use crate::plan;
use crate::reduce::ReduceOp;
use std::sync::atomic::Ordering;

impl Communicator {
    pub(super) fn call(
        &self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        root: usize,
        in_place: bool,
    ) -> Call {
        let e = dtype.size();
        Call {
            coll,
            dtype,
            op,
            count,
            root,
            rank: self.rank,
            nranks: self.nranks,
            in_place,
            chunk: (self.config.chunk_bytes / e).max(1) * e,
        }
    }

    /// Elements per piece when a call of `count` elements is split (see
    /// `Config::pipeline_bytes`): only element-wise collectives, only above the limit.
    pub(crate) fn piece_elems(
        &self,
        coll: Collective,
        dtype: DataType,
        count: usize,
    ) -> Option<usize> {
        self.config.piece_elems(coll, dtype, count, self.nranks)
    }

    /// Builds the call for a byte-level collective (`send: None` = in place) and runs
    /// it, as consecutive pieces when [`Communicator::piece_elems`] says so. Every rank
    /// splits alike, whatever memory its buffers are in.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn launch(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        root: usize,
        send: Option<&[u8]>,
        recv: &mut [u8],
    ) -> Result<()> {
        let Some(piece) = self.piece_elems(coll, dtype, count) else {
            let call = self.call(coll, dtype, op, count, root, send.is_none());
            return self.run(call, send.unwrap_or(&[]), recv);
        };
        let e = dtype.size();
        let mut start = 0;
        while start < count {
            let n = piece.min(count - start);
            let r = start * e..(start + n) * e;
            // Buffers a rank does not use (a non-root's send of broadcast, recv of
            // reduce) may be shorter: it gets an empty piece.
            let input = send.and_then(|s| s.get(r.clone())).unwrap_or(&[]);
            let output = match recv.get_mut(r) {
                Some(o) => o,
                None => &mut [],
            };
            let call = self.call(coll, dtype, op, n, root, send.is_none());
            self.run(call, input, output)?;
            start += n;
        }
        Ok(())
    }

    /// Plans and runs `call` over `input` (empty when in place) and `output`.
    pub(super) fn run(&mut self, call: Call, input: &[u8], output: &mut [u8]) -> Result<()> {
        let (algo, schedule) = match &self.last_plan {
            Some((last, algo, schedule)) if *last == call => (*algo, schedule.clone()),
            _ => {
                let (algo, schedule) = self.plan(&call)?;
                let schedule = std::sync::Arc::new(schedule);
                self.last_plan = Some((call, algo, schedule.clone()));
                (algo, schedule)
            }
        };
        let meta = Meta {
            coll: call.coll,
            dtype: call.dtype,
            op: call.op,
            count: call.count,
            root: call.root,
            algo: algo.name(),
        };
        self.run_schedule(meta, &schedule, input, output, &[], &mut [])
    }

    /// The algorithm for `call` and this rank's schedule for it.
    pub(super) fn plan(&self, call: &Call) -> Result<(Algorithm, algo::Schedule)> {
        let algo = plan::choose(
            &self.config,
            &self.caps,
            call.coll,
            call.bytes(),
            self.nranks,
        );
        if algo == Algorithm::Publish && !self.caps.publish {
            return Err(Error::invalid(
                "MIXCCL_ALGO forces publish, but the ranks share no board (needs all ranks \
                 on one host over shared memory, at least 2 and at most 64 of them)",
            ));
        }
        if algo == Algorithm::HostRead && !self.caps.host_read {
            return Err(Error::invalid(
                "MIXCCL_ALGO forces cma, but not every rank can read every other's memory \
                 (needs all ranks on one host over shared memory, and process_vm_readv allowed)",
            ));
        }
        let schedule = algo::build(call, algo, &self.caps.hosts)?;
        log_trace!(
            Some(self.rank),
            "{} #{}: {} x {} {} root {} via {algo}: {} ops",
            call.coll,
            self.seq + 1,
            call.count,
            call.dtype,
            call.op,
            call.root,
            schedule.ops.len()
        );
        Ok((algo, schedule))
    }

    /// Runs a schedule through the executor, with the error latch and abort flag.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_schedule<'g>(
        &mut self,
        meta: Meta,
        schedule: &std::sync::Arc<algo::Schedule>,
        input: &[u8],
        output: &mut [u8],
        group_in: &[&'g [u8]],
        group_out: &mut [&'g mut [u8]],
    ) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.load(Ordering::SeqCst) {
            let e = self.stop_error(Error::Aborted);
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.connect_for(schedule)?;
        // Point-to-point calls need not be made by every rank: they are counted per
        // peer (exec's p2p_seq), not in the collective sequence.
        let p2p = meta.coll == Collective::SendRecv;
        if !p2p {
            self.seq += 1;
        }
        let words = schedule.scratch.div_ceil(8);
        if self.scratch.len() < words {
            self.scratch.resize(words, 0);
        }
        let label = CallLabel {
            coll: meta.coll,
            seq: self.seq,
            rank: self.rank,
        };
        let header_len = exec::HEADER_SLOT * self.nranks;
        if self.header_buf.len() < header_len {
            self.header_buf.resize(header_len, 0);
        }
        let mut bufs = Buffers {
            input,
            output,
            scratch: &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.scratch)
                [..schedule.scratch],
            group_in,
            group_out,
            header: &mut self.header_buf[..header_len],
        };
        let header = self.config.check_calls.then(|| CallHeader {
            seq: self.seq,
            coll: meta.coll,
            dtype: self.header_dtype.unwrap_or(meta.dtype),
            op: meta.op,
            count: meta.count as u64,
            root: meta.root as u32,
            algo: header::fnv32(meta.algo),
            bytes_to_you: 0,
            bytes_from_you: 0,
        });
        let cx = Context {
            dtype: meta.dtype,
            op: meta.op,
            nranks: self.nranks,
            rank: self.rank,
            timeout: self.config.timeout,
            spin: self.config.spin,
            label: &label,
            abort: &self.abort,
            header,
            algo: meta.algo,
            p2p_seq: p2p.then_some(&self.p2p_seq),
            board: self.board.as_deref(),
        };
        let result = exec::run(
            schedule,
            &mut bufs,
            &mut self.links,
            &mut self.workspace,
            &cx,
        );
        // The links' byte streams are in an unknown state: refuse further calls.
        result.map_err(|e| {
            let e = self.stop_error(e);
            self.failed = Some(e.clone());
            e
        })
    }
}
