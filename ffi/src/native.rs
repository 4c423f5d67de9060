//! Stream-ordered calls of an island member: the island's native calls go on the
//! caller's stream at enqueue, as NCCL queues its kernels, around the host phase
//! that crosses islands (`mixccl::IslandPlanner`):
//!
//! ```text
//! caller stream:  ... | native calls | copy in | ready mark | hold | copy out | native calls | done mark
//! progress thread:          waits for the ready mark (watched), runs the host phase on pinned
//!                           memory, finishes the ticket, waits for the done mark (watched)
//! ```
//!
//! A rank without a host phase in a call (an island member other than the first, in
//! most forms) queues only native calls and a done mark. The progress thread never
//! calls the native library: a call queued there during a hold would wait behind any
//! device-wide synchronisation point (an allocation) that itself waits for the hold
//! (see `staging`). While it waits for the marks it watches the island: a member
//! process gone, the communicator aborted or `MIXCCL_TIMEOUT` aborts the native
//! communicator, which ends the native calls queued on the caller's stream, and the
//! error latches. A unit the steps do not cover (several calls, buffers off the
//! island's device, a scaled op) runs host-synchronously on the caller's thread,
//! where the communicator runs its own native calls.

use crate::cast::RawBuf;
use crate::comm::Shared;
use crate::group::Pending;
use crate::staging::Region;
use crate::status::{Failure, Outcome};
use crate::stream::{self, CallerStream, Ticket};
use mixccl::device::MemoryKind;
use mixccl::{IslandPlanner, IslandSteps, MemRef, NativeCall};
use std::sync::Arc;

/// Whether a unit of an island member must not be staged onto the progress thread:
/// a call of it may go through the islands.
pub(crate) fn touches_islands(planner: &IslandPlanner, calls: &[Pending]) -> bool {
    calls.iter().any(|c| match c {
        Pending::Coll(x) => x
            .island_form()
            .is_some_and(|f| planner.routes(f.coll, f.dtype, f.op)),
        Pending::P2p(_) => false,
    })
}

/// The steps of a unit that is one island call on `s`'s device, or None.
fn plan(
    planner: &IslandPlanner,
    calls: &[Pending],
    s: &CallerStream,
) -> Outcome<Option<IslandSteps>> {
    let [Pending::Coll(call)] = calls else {
        return Ok(None);
    };
    let Some(f) = call.island_form().filter(|f| !f.scaled) else {
        return Ok(None);
    };
    let (vendor, index) = planner.device();
    if (s.vendor, s.index) != (vendor, index) {
        return Ok(None);
    }
    let here = MemoryKind::Device { vendor, index };
    for b in f.send.into_iter().chain([f.recv]) {
        if b.len > 0 && b.mem()?.kind() != here {
            return Ok(None);
        }
    }
    Ok(planner.steps(
        f.coll,
        f.dtype,
        f.op,
        f.root,
        f.count,
        f.send.map(|b| b.addr),
        f.recv.addr,
    )?)
}

/// Enqueues an island member's unit on its caller stream (`streams`, from
/// `group::ordered_streams`) and the progress thread; false when it must run
/// host-synchronously instead (nothing is queued then).
pub(crate) fn enqueue(
    comm: &Arc<Shared>,
    planner: &IslandPlanner,
    calls: &[Pending],
    streams: &[CallerStream],
    ticket: Arc<Ticket>,
) -> Outcome<bool> {
    let [s] = streams else {
        return Ok(false);
    };
    let Some(steps) = plan(planner, calls, s)? else {
        return Ok(false);
    };
    let queued = queue_steps(comm, planner, &steps, s, &ticket);
    if queued.is_err() {
        // Native calls may be queued: end them rather than leave the stream waiting
        // for peers that were told nothing.
        ticket.finish();
        planner.abort();
    }
    let (cross, done) = queued?;
    let (c, t, p) = (comm.clone(), ticket.clone(), planner.clone());
    let pushed = comm.push_ordered(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_ordered(&c, &p, cross, done, &t)
        }))
        .unwrap_or_else(|_| Err(Failure::internal("a stream-ordered island call panicked")));
        if let Err(f) = &r {
            c.latch(f.code, &f.message);
            p.abort();
        }
        t.finish();
        r
    });
    if pushed.is_err() {
        ticket.finish();
        planner.abort();
    }
    pushed.map(|()| true)
}

/// What the progress thread gets for a host phase: the phase, the pinned copies of
/// its regions, and the unit's ready marks.
type Cross = (mixccl::CrossPhase, Vec<(usize, usize)>, stream::Marks);

/// Queues the steps on `s`: native calls, the host phase's staging and hold, native
/// calls, the done mark.
fn queue_steps(
    comm: &Arc<Shared>,
    planner: &IslandPlanner,
    steps: &IslandSteps,
    s: &CallerStream,
    ticket: &Arc<Ticket>,
) -> Outcome<(Option<Cross>, stream::Marks)> {
    planner.order_on(s.stream)?;
    for call in &steps.pre {
        queue(comm, planner, call, s)?;
    }
    let cross = match &steps.cross {
        None => None,
        Some(cross) => {
            let regions: Vec<Region> = cross
                .regions
                .iter()
                .map(|r| Region {
                    device: RawBuf {
                        addr: r.addr,
                        len: r.len,
                    },
                    copy_in: r.copy_in,
                    copy_out: r.copy_out.then_some((0, r.len)),
                })
                .collect();
            let (hosts, staged) = comm.staging.stage_regions(s, &regions)?;
            let marks = match stream::enqueue(&[*s], ticket) {
                Ok(m) => m,
                Err(e) => {
                    let _ = comm.staging.stage_out(staged.without_copies_out());
                    return Err(e.into());
                }
            };
            comm.holds.add(ticket);
            comm.staging.stage_out(staged)?;
            let bufs = hosts.into_iter().zip(regions.iter().map(|r| r.device.len));
            Some((cross.clone(), bufs.collect(), marks))
        }
    };
    for call in &steps.post {
        queue(comm, planner, call, s)?;
    }
    let done = stream::marks_on(&[*s])?;
    Ok((cross, done))
}

/// Queues one step on `s`: a native call, or a device copy through a pinned buffer.
fn queue(comm: &Shared, planner: &IslandPlanner, call: &NativeCall, s: &CallerStream) -> Outcome {
    if let Some((src, dst, len)) = call.as_copy() {
        return comm.staging.copy_through(s, src, dst, len);
    }
    // SAFETY: the call's buffers are the caller's (valid until its stream has passed
    // the call, nccl.h) or the planner's scratch (kept while it lives).
    Ok(unsafe { planner.queue(call, s.stream) }?)
}

/// The progress thread's side: the host phase once the stream reaches it, then the
/// watch until the native calls after it have run.
fn run_ordered(
    comm: &Shared,
    planner: &IslandPlanner,
    cross: Option<Cross>,
    mut done: stream::Marks,
    ticket: &Ticket,
) -> Outcome {
    let timeout = comm.timeout();
    if let Some((phase, bufs, mut marks)) = cross {
        if let Some(f) = comm.latched() {
            return Err(f);
        }
        let released = || ticket.is_released() || comm.is_aborted();
        planner.watch(|| marks.poll(), timeout, released)?;
        if !ticket.start() {
            return Err(Failure::usage(
                "the communicator was aborted before the call ran",
            ));
        }
        let host: Vec<MemRef> = bufs
            .iter()
            // SAFETY: pinned buffers of the pool that this unit owns until its fence
            // (recorded after its copies out, behind the hold) has passed.
            .map(|&(addr, len)| unsafe {
                MemRef::with_kind(addr as *const u8, len, MemoryKind::Host)
            })
            .collect();
        comm.with(|c| Ok(c.island_cross(&phase, &host)?))?;
        ticket.finish();
    }
    planner.watch(|| done.poll(), timeout, || comm.is_aborted())?;
    Ok(())
}
