//! The executor: runs one rank's [`Schedule`] over its links.
//!
//! - `lower`: the schedule made ready to run (call headers first, each op's
//!   dependencies, transfers on lanes, staging), a pure function the simulator
//!   uses too, so it times exactly what runs here.
//! - `progress`: the run itself, one non-blocking sweep at a time
//!   (`Progress::step`) over local ops, the links' lanes and the host board's
//!   lanes, and the one blocking loop (`drive`) that spins, then sleeps in `poll`
//!   (or on the board's bell) when nothing moves, watches the abort flag and the
//!   peers' control channels, and turns a wait without progress for `timeout` into
//!   `Error::Timeout`.
//! - `control`: call headers written and checked, error reports and deaths read
//!   off the links' control channels, and a failure's report passed on to every peer.
//!
//! Ops run as soon as the ops they depend on have finished; dependencies come from
//! program order and region overlap (read-after-write, write-after-read,
//! write-after-write), so algorithms only state what moves where. Per link, the
//! k-th send (or receive) goes on lane `k % lanes`, and each lane runs its ops in
//! order. One thread drives everything with non-blocking calls.
//!
//! The executor does not know which collective or algorithm it runs.

mod control;
pub(crate) mod lower;
mod progress;

// The header transfers, for code that builds calls around the executor's own.
#[allow(unused_imports)]
pub(crate) use lower::header_ops;
pub(crate) use lower::{lower, Lowered, HEADER_SLOT};
use progress::{Progress, State};

use crate::algo::{Buf, Region, Schedule};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::header::CallHeader;
use crate::reduce::ReduceOp;
use crate::transport::Link;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// The caller's buffers and the library's scratch for one call.
pub(crate) struct Buffers<'a, 'g> {
    pub input: &'a [u8],
    pub output: &'a mut [u8],
    pub scratch: &'a mut [u8],
    /// Send and receive buffers of a group call.
    pub group_in: &'a [&'g [u8]],
    pub group_out: &'a mut [&'g mut [u8]],
    /// Call headers, [`HEADER_SLOT`] bytes per peer (see `Buf::Header`).
    pub header: &'a mut [u8],
}

impl Buffers<'_, '_> {
    fn get(&self, r: Region) -> &[u8] {
        let b: &[u8] = match r.buf {
            Buf::Input => self.input,
            Buf::Output => self.output,
            Buf::Scratch => self.scratch,
            Buf::GroupIn(i) => self.group_in[i as usize],
            Buf::GroupOut(i) => self.group_out[i as usize],
            Buf::Header => self.header,
        };
        &b[r.off..r.off + r.len]
    }

    fn get_mut(&mut self, r: Region) -> &mut [u8] {
        let b: &mut [u8] = match r.buf {
            Buf::Input | Buf::GroupIn(_) => unreachable!("schedules never write send buffers"),
            Buf::Output => self.output,
            Buf::Scratch => self.scratch,
            Buf::GroupOut(i) => self.group_out[i as usize],
            Buf::Header => self.header,
        };
        &mut b[r.off..r.off + r.len]
    }

    /// `src` for reading and `dst` for writing at once; they must not overlap.
    fn pair(&mut self, src: Region, dst: Region) -> (&[u8], &mut [u8]) {
        debug_assert!(!src.overlaps(&dst));
        if src.buf == dst.buf {
            let whole: &mut [u8] = match dst.buf {
                Buf::Output => self.output,
                Buf::Scratch => self.scratch,
                Buf::GroupOut(i) => self.group_out[i as usize],
                Buf::Header => self.header,
                Buf::Input | Buf::GroupIn(_) => unreachable!("schedules never write send buffers"),
            };
            if src.off < dst.off {
                let (a, b) = whole.split_at_mut(dst.off);
                (&a[src.off..src.off + src.len], &mut b[..dst.len])
            } else {
                let (a, b) = whole.split_at_mut(src.off);
                (&b[..src.len], &mut a[dst.off..dst.off + dst.len])
            }
        } else {
            let (s, d): (&[u8], &mut [u8]) = match (src.buf, dst.buf) {
                (Buf::Input, Buf::Output) => (self.input, self.output),
                (Buf::Input, Buf::Scratch) => (self.input, self.scratch),
                (Buf::Output, Buf::Scratch) => (self.output, self.scratch),
                (Buf::Scratch, Buf::Output) => (self.scratch, self.output),
                (Buf::GroupIn(i), Buf::GroupOut(j)) => {
                    (self.group_in[i as usize], self.group_out[j as usize])
                }
                _ => unreachable!("no schedule pairs these buffers"),
            };
            (
                &s[src.off..src.off + src.len],
                &mut d[dst.off..dst.off + dst.len],
            )
        }
    }
}

/// Per-call facts the executor needs.
pub(crate) struct Context<'a> {
    pub dtype: DataType,
    pub op: ReduceOp,
    pub nranks: usize,
    /// This rank (for error messages).
    pub rank: usize,
    pub timeout: Duration,
    /// How long to poll without sleeping before blocking.
    pub spin: Duration,
    /// Names the call in errors, e.g. "allreduce #12 on rank 3" (formatted only on error).
    pub label: &'a dyn std::fmt::Display,
    pub abort: &'a AtomicBool,
    /// This rank's call, sent ahead of the data to every peer it sends to and
    /// checked against what every peer it receives from sent (None: no headers).
    pub header: Option<CallHeader>,
    /// The algorithm's name, for mismatch messages.
    pub algo: &'a str,
    /// Point-to-point calls are not collective: their headers carry, per peer, how
    /// many earlier point-to-point calls exchanged data with it (`p2p_seq[p]`)
    /// instead of the collective sequence number. Updated here.
    pub p2p_seq: Option<&'a std::cell::RefCell<Vec<u64>>>,
    /// The host's board, for schedules with board ops (`Op::BoardWrite`, `BoardRead`).
    pub board: Option<&'a crate::transport::board::Board>,
}

/// Reusable per-communicator executor memory.
#[derive(Default)]
pub(crate) struct Workspace {
    /// The last schedule run, lowered (with or without headers); a loop of equal
    /// calls (see `Communicator`'s plan memo) lowers once.
    lowered: Option<(Arc<Schedule>, bool, Lowered)>,
    progress: State,
}

/// Runs `schedule` to completion, behind per-call headers when `cx.header` is set.
/// A mismatch found here is reported to every peer on the control channels.
pub(crate) fn run(
    schedule: &Arc<Schedule>,
    bufs: &mut Buffers<'_, '_>,
    links: &mut [Option<Box<dyn Link>>],
    ws: &mut Workspace,
    cx: &Context<'_>,
) -> Result<()> {
    let headers = cx.header.is_some();
    let lowered = match ws.lowered.take() {
        Some((s, h, low)) if Arc::ptr_eq(&s, schedule) && h == headers => low,
        _ => lower(schedule, cx.rank, links.len(), headers, |p| {
            links.get(p)?.as_ref().map(|l| l.lanes())
        })
        .map_err(|peer| Error::invalid(format!("{}: no link to rank {peer}", cx.label)))?,
    };
    if let Some(mine) = cx.header {
        control::write_headers(&lowered, mine, bufs, links.len(), cx);
    }
    let mut progress = Progress::new(&lowered, &mut ws.progress);
    let mut result = progress::drive(&mut progress, bufs, links, cx);
    if headers {
        result = control::settle(result, links, cx);
    }
    ws.lowered = Some((schedule.clone(), headers, lowered));
    result
}

#[cfg(test)]
mod tests;
