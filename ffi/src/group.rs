//! `ncclGroupStart` / `ncclGroupEnd`: per-thread nesting depth and the calls recorded
//! while a group is open. The outermost `ncclGroupEnd` runs them: per communicator,
//! the collectives first in call order, then every send and receive together in one
//! `Communicator::group`, so any point-to-point pattern completes. A group spanning
//! several communicators (one thread driving the ranks of `ncclCommInitAll`) runs each
//! communicator on its own thread, since each call blocks until its peers take part.
//!
//! Recorded buffers are addresses: the caller keeps them valid until `ncclGroupEnd`
//! returns, as NCCL requires. A call that fails inside a group spoils it: the
//! outermost `ncclGroupEnd` then runs nothing and returns that call's error, as
//! NCCL does.
//!
//! A communicator's share of a call or group (a *unit*) that touches device memory
//! is stream-ordered unless `MIXCCL_LAUNCH=sync`: tied to the caller's streams
//! (`stream`) and queued on the communicator's progress thread, and the export
//! returns `ncclSuccess` at once; the buffers must stay valid until the streams have
//! passed the call. A unit on host buffers only is host-synchronous: it first waits
//! (bounded) for the stream-ordered units before it (`Shared::drain`), so every rank
//! still runs its calls in issue order.
//!
//! A nonblocking communicator's host-synchronous unit is queued on its own thread
//! (`comm::Shared::push`) instead, and the export returns `ncclInProgress`; the
//! caller's buffers must then stay valid until `ncclCommGetAsyncError` leaves
//! `ncclInProgress`.

use crate::cast::RawBuf;
use crate::coll::{check_disjoint, run_p2p, CollCall, P2p, StreamWait};
use crate::comm::Shared;
use crate::env::Launch;
use crate::staging::Region;
use crate::status::{code, Failure, Outcome, Progress};
use crate::stream::{self, CallerStream, Marks, Ticket};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

/// A call that can wait for a group.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending {
    Coll(CollCall),
    P2p(P2p),
}

impl Pending {
    /// The buffers the call touches (see [`CollCall::regions`]).
    pub fn regions(&self) -> Vec<Region> {
        match self {
            Pending::Coll(c) => c.regions(),
            Pending::P2p(t) => vec![t.region()],
        }
    }

    /// The same call on other buffers (see [`CollCall::with_buffers`]).
    pub fn with_buffers(&self, map: impl Fn(RawBuf) -> RawBuf) -> Pending {
        match self {
            Pending::Coll(c) => Pending::Coll(c.with_buffers(map)),
            Pending::P2p(t) => Pending::P2p(P2p {
                buf: map(t.buf),
                ..*t
            }),
        }
    }

    fn device_stream(&self) -> Outcome<Option<CallerStream>> {
        match self {
            Pending::Coll(x) => x.device_stream(),
            Pending::P2p(t) => t.device_stream(),
        }
    }
}

#[derive(Default)]
struct Group {
    depth: usize,
    calls: Vec<(Arc<Shared>, Pending)>,
    error: Option<Failure>,
}

/// Where the caller's time of one stream-ordered call goes, logged at TRACE
/// (`MIXCCL_DEBUG=TRACE`): microseconds per phase of the enqueue, so the return time
/// of a call on a busy stream can be taken apart on a real GPU.
#[derive(Clone, Copy)]
struct Laps {
    last: Instant,
    /// (phase, microseconds) so far; at most [`Laps::MAX`].
    laps: [(&'static str, u32); Laps::MAX],
    n: usize,
}

impl Laps {
    const MAX: usize = 8;

    /// A clock started now, or None unless TRACE is on.
    fn start() -> Option<Laps> {
        mixccl::trace_enabled().then(|| Laps {
            last: Instant::now(),
            laps: [("", 0); Laps::MAX],
            n: 0,
        })
    }

    /// Ends the phase `what`.
    fn lap(mut self, what: &'static str) -> Laps {
        let now = Instant::now();
        if self.n < Laps::MAX {
            let us = now.duration_since(self.last).as_micros();
            self.laps[self.n] = (what, u32::try_from(us).unwrap_or(u32::MAX));
            self.n += 1;
        }
        self.last = now;
        self
    }

    fn log(&self, rank: usize) {
        let phases: Vec<String> = self.laps[..self.n]
            .iter()
            .map(|(w, us)| format!("{w} {us}"))
            .collect();
        let total: u32 = self.laps[..self.n].iter().map(|(_, us)| us).sum();
        mixccl::trace_line(
            Some(rank),
            format_args!(
                "stream-ordered enqueue: {total} us ({} us)",
                phases.join(", ")
            ),
        );
    }
}

thread_local! {
    /// The validation lap of the call being dispatched (TRACE only; set by `submit`
    /// around its dispatch, taken by `enqueue_ordered`).
    static CALL_LAPS: std::cell::Cell<Option<Laps>> = const { std::cell::Cell::new(None) };
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// `ncclGroupStart`.
pub(crate) fn start() -> Outcome {
    GROUP.with(|g| g.borrow_mut().depth += 1);
    Ok(())
}

/// Whether this thread has a group open (calls are being recorded).
pub(crate) fn open() -> bool {
    GROUP.with(|g| g.borrow().depth > 0)
}

/// `ncclGroupEnd`.
pub(crate) fn end() -> Outcome<Progress> {
    let (calls, error) = GROUP
        .with(|g| {
            let mut g = g.borrow_mut();
            match g.depth {
                0 => Err(Failure::usage(
                    "ncclGroupEnd without a matching ncclGroupStart",
                )),
                1 => {
                    g.depth = 0;
                    Ok(Some((std::mem::take(&mut g.calls), g.error.take())))
                }
                _ => {
                    g.depth -= 1;
                    Ok(None)
                }
            }
        })?
        .unwrap_or_default();
    if let Some(e) = error {
        return Err(Failure {
            code: e.code,
            message: format!("the group was not run: a call in it failed: {}", e.message),
        });
    }
    run(calls)
}

/// A call recorded in a group, with its communicator.
pub(crate) type GroupCall = (Arc<Shared>, Pending);

/// `ncclGroupEnd` for `ncclGroupSimulateEnd`: closes one level of the group and,
/// at the outermost, hands back its calls without running them (None for an inner
/// level). A call that failed in the group is its error, as for `ncclGroupEnd`.
pub(crate) fn end_without_running() -> Outcome<Option<Vec<GroupCall>>> {
    let taken = GROUP.with(|g| {
        let mut g = g.borrow_mut();
        match g.depth {
            0 => Err(Failure::usage(
                "ncclGroupSimulateEnd without a matching ncclGroupStart",
            )),
            1 => {
                g.depth = 0;
                Ok(Some((std::mem::take(&mut g.calls), g.error.take())))
            }
            _ => {
                g.depth -= 1;
                Ok(None)
            }
        }
    })?;
    match taken {
        None => Ok(None),
        Some((_, Some(e))) => Err(Failure {
            code: e.code,
            message: format!(
                "the group cannot be estimated: a call in it failed: {}",
                e.message
            ),
        }),
        Some((calls, None)) => Ok(Some(calls)),
    }
}

/// Runs the call `make` validates now, or records it if this thread has a group open.
/// A validation failure inside a group is also kept for `ncclGroupEnd`.
pub(crate) fn submit(make: impl FnOnce() -> Outcome<(Arc<Shared>, Pending)>) -> Outcome<Progress> {
    let laps = Laps::start();
    let made = make();
    let laps = laps.map(|l| l.lap("validate"));
    let deferred = GROUP.with(|g| {
        let mut g = g.borrow_mut();
        if g.depth == 0 {
            return false;
        }
        match &made {
            Ok((comm, call)) => g.calls.push((comm.clone(), *call)),
            Err(e) => {
                g.error.get_or_insert_with(|| e.clone());
            }
        }
        true
    });
    let (comm, call) = made?;
    if deferred {
        return Ok(Progress::Done);
    }
    // Only this call's enqueue may take its validation lap: one left behind would be
    // read by a later group's enqueue as its own.
    CALL_LAPS.with(|c| c.set(laps));
    let r = dispatch(vec![(comm, vec![call])]);
    CALL_LAPS.with(|c| c.set(None));
    r
}

/// Sends each communicator's unit on its way: stream-ordered, queued (nonblocking
/// communicator), or run now.
fn dispatch(by_comm: Vec<(Arc<Shared>, Vec<Pending>)>) -> Outcome<Progress> {
    let mut progress = Progress::Done;
    let mut now = Vec::new();
    for (comm, calls) in by_comm {
        if enqueue_ordered(&comm, &calls)? {
            continue;
        }
        if comm.nonblocking() {
            progress = progress.and(queue(&comm, calls)?);
        } else {
            now.push((comm, calls));
        }
    }
    run_blocking(now).map(|()| progress)
}

/// Runs a nonblocking communicator's calls on its thread.
fn queue(comm: &Arc<Shared>, calls: Vec<Pending>) -> Outcome<Progress> {
    let c = comm.clone();
    comm.push(move || run_calls(&c, &calls, StreamWait::Host))?;
    Ok(Progress::InProgress)
}

/// Runs one communicator's calls: collectives in order, then the transfers together.
fn run_calls(comm: &Shared, calls: &[Pending], wait: StreamWait) -> Outcome {
    comm.with(|c| {
        let mut p2p = Vec::new();
        for call in calls {
            match call {
                Pending::Coll(x) => x.run(c, wait)?,
                Pending::P2p(t) => p2p.push(*t),
            }
        }
        run_p2p(c, &p2p, wait)
    })
}

/// Runs a unit host-synchronously on the caller's thread, after the stream-ordered
/// units before it.
fn run_one(comm: &Shared, calls: &[Pending]) -> Outcome {
    comm.drain()?;
    run_calls(comm, calls, StreamWait::Host)
}

/// Each call of a unit with its caller stream (None: host buffers only).
type WithStreams = Vec<(Pending, Option<CallerStream>)>;

/// The distinct caller streams of a unit that is to be stream-ordered, and each call
/// with its stream: None when `MIXCCL_LAUNCH=sync`, when no call touches device
/// memory, when its device buffers lie on more than one device, or when the runtime
/// lacks events (the unit is host-synchronous then).
fn ordered_streams(
    comm: &Shared,
    calls: &[Pending],
) -> Outcome<Option<(Vec<CallerStream>, WithStreams)>> {
    if comm.launch != Launch::Stream {
        return Ok(None);
    }
    let with_streams = calls
        .iter()
        .map(|c| Ok((*c, c.device_stream()?)))
        .collect::<Outcome<WithStreams>>()?;
    let mut streams = Vec::new();
    for (_, s) in &with_streams {
        if let Some(s) = s.filter(|s| !streams.contains(s)) {
            streams.push(s);
        }
    }
    // Streams of one unit are joined with events, which work within one device.
    let one_device = streams
        .iter()
        .all(|s| (s.vendor, s.index) == (streams[0].vendor, streams[0].index));
    if streams.is_empty() || !one_device || !stream::supported(streams[0].vendor) {
        return Ok(None);
    }
    Ok(Some((streams, with_streams)))
}

/// Enqueues a unit on its caller streams and the progress thread, and returns true;
/// false when it is not stream-ordered (see [`ordered_streams`]; also when tying it
/// to a stream failed, which leaves nothing queued there).
fn enqueue_ordered(comm: &Arc<Shared>, calls: &[Pending]) -> Outcome<bool> {
    let mut laps = CALL_LAPS.with(|c| c.take()).or_else(Laps::start);
    let mut lap = |what| laps = laps.map(|l| l.lap(what));
    let Some((streams, with_streams)) = ordered_streams(comm, calls)? else {
        return Ok(false);
    };
    lap("locate");
    let weak = Arc::downgrade(comm);
    let timeout = comm.timeout();
    let ticket = Ticket::new(timeout, move || {
        if let Some(s) = weak.upgrade() {
            s.latch(
                code::TIMEOUT,
                &format!(
                    "a stream-ordered call did not finish within {timeout:?} (MIXCCL_TIMEOUT) \
                     of its start; the communicator was aborted to release the caller's stream"
                ),
            );
            s.abort();
        }
    });
    // An island member's calls that may go through its island queue the native
    // calls on the caller's stream (`native`), or run host-synchronously: never on
    // the progress thread.
    if let Some(planner) = comm.island_planner() {
        if crate::native::touches_islands(planner, calls) {
            return crate::native::enqueue(comm, planner, calls, &streams, ticket);
        }
    }
    // Device buffers are staged through pinned memory by copies on the caller's
    // streams around the hold (`staging`); the progress thread runs host calls.
    let p2p: Vec<P2p> = calls
        .iter()
        .filter_map(|c| match c {
            Pending::P2p(t) => Some(*t),
            Pending::Coll(_) => None,
        })
        .collect();
    check_disjoint(&p2p)?;
    let Some((host_calls, staged)) = comm.staging.stage_in(&with_streams)? else {
        return Ok(false);
    };
    lap("copy in");
    let Ok(mut marks) = stream::enqueue(&streams, &ticket) else {
        // The copies in are queued; the buffers go back behind a fence all the same.
        let _ = comm.staging.stage_out(staged.without_copies_out());
        return Ok(false);
    };
    comm.holds.add(&ticket);
    lap("mark and hold");
    if let Err(f) = comm.staging.stage_out(staged) {
        // The holds are queued: the unit must still run (or be released) to free the
        // streams; the failure is the call's.
        comm.latch(f.code, &f.message);
    }
    lap("copy out and fence");
    let (c, t, calls) = (comm.clone(), ticket.clone(), host_calls);
    let pushed = comm.push_ordered(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_ordered(&c, &calls, &mut marks, &t)
        }))
        .unwrap_or_else(|_| Err(Failure::internal("a stream-ordered call panicked")));
        // Latched before the streams move on, so work after the call (and the
        // application, once its stream is back) sees the error.
        if let Err(f) = &r {
            c.latch(f.code, &f.message);
        }
        t.finish();
        r
    });
    if pushed.is_err() {
        ticket.finish();
    }
    if let Some(l) = laps {
        l.lap("queue").log(comm.facts().map_or(0, |f| f.rank));
    }
    pushed.map(|()| true)
}

/// The progress thread's side of a stream-ordered unit: fails at once behind a
/// latched error, waits for the caller's streams to reach the unit, runs it.
fn run_ordered(comm: &Shared, calls: &[Pending], marks: &mut Marks, ticket: &Ticket) -> Outcome {
    if let Some(f) = comm.latched() {
        return Err(f);
    }
    marks.wait(comm.timeout(), || ticket.is_released() || comm.is_aborted())?;
    if !ticket.start() {
        return Err(Failure::usage(
            "the communicator was aborted before the call ran",
        ));
    }
    run_calls(comm, calls, StreamWait::Done)
}

/// Runs a closed group's calls, one unit per communicator (see [`dispatch`]).
fn run(calls: Vec<(Arc<Shared>, Pending)>) -> Outcome<Progress> {
    let mut by_comm: Vec<(Arc<Shared>, Vec<Pending>)> = Vec::new();
    for (comm, call) in calls {
        match by_comm.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &comm)) {
            Some((_, v)) => v.push(call),
            None => by_comm.push((comm, vec![call])),
        }
    }
    dispatch(by_comm)
}

/// Runs blocking communicators' calls, each communicator on its own thread if several.
fn run_blocking(by_comm: Vec<(Arc<Shared>, Vec<Pending>)>) -> Outcome {
    match by_comm.len() {
        0 => Ok(()),
        1 => run_one(&by_comm[0].0, &by_comm[0].1),
        _ => std::thread::scope(|s| {
            let handles: Vec<_> = by_comm
                .iter()
                .map(|(comm, calls)| {
                    let rank = comm.facts().map_or(usize::MAX, |f| f.rank);
                    let h = s.spawn(move || run_one(comm, calls));
                    (rank, h)
                })
                .collect();
            let mut first = Ok(());
            for (rank, h) in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err(Failure::internal(
                        "a rank's thread panicked in ncclGroupEnd",
                    ))
                });
                if let (Err(e), Ok(())) = (r, &first) {
                    first = Err(Failure {
                        code: e.code,
                        message: format!("rank {rank}: {}", e.message),
                    });
                }
            }
            first
        }),
    }
}
