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
//! A nonblocking communicator's share of a call or group is queued on its own thread
//! (`comm::Shared::push`) instead, and the export returns `ncclInProgress`; the
//! caller's buffers must then stay valid until `ncclCommGetAsyncError` leaves
//! `ncclInProgress`.

use crate::coll::{run_p2p, CollCall, P2p};
use crate::comm::Shared;
use crate::status::{Failure, Outcome, Progress};
use std::cell::RefCell;
use std::sync::Arc;

/// A call that can wait for a group.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pending {
    Coll(CollCall),
    P2p(P2p),
}

#[derive(Default)]
struct Group {
    depth: usize,
    calls: Vec<(Arc<Shared>, Pending)>,
    error: Option<Failure>,
}

thread_local! {
    static GROUP: RefCell<Group> = RefCell::new(Group::default());
}

/// `ncclGroupStart`.
pub(crate) fn start() -> Outcome {
    GROUP.with(|g| g.borrow_mut().depth += 1);
    Ok(())
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

/// Runs the call `make` validates now, or records it if this thread has a group open.
/// A validation failure inside a group is also kept for `ncclGroupEnd`.
pub(crate) fn submit(make: impl FnOnce() -> Outcome<(Arc<Shared>, Pending)>) -> Outcome<Progress> {
    let made = make();
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
    if comm.nonblocking() {
        return queue(&comm, vec![call]);
    }
    run_one(&comm, &[call]).map(|()| Progress::Done)
}

/// Runs a nonblocking communicator's calls on its thread.
fn queue(comm: &Arc<Shared>, calls: Vec<Pending>) -> Outcome<Progress> {
    let c = comm.clone();
    comm.push(move || run_one(&c, &calls))?;
    Ok(Progress::InProgress)
}

/// Runs one communicator's calls: collectives in order, then the transfers together.
fn run_one(comm: &Shared, calls: &[Pending]) -> Outcome {
    comm.with(|c| {
        let mut p2p = Vec::new();
        for call in calls {
            match call {
                Pending::Coll(x) => x.run(c)?,
                Pending::P2p(t) => p2p.push(*t),
            }
        }
        run_p2p(c, &p2p)
    })
}

/// Runs a closed group's calls: queues those of nonblocking communicators, runs the
/// others.
fn run(calls: Vec<(Arc<Shared>, Pending)>) -> Outcome<Progress> {
    let mut by_comm: Vec<(Arc<Shared>, Vec<Pending>)> = Vec::new();
    for (comm, call) in calls {
        match by_comm.iter_mut().find(|(c, _)| Arc::ptr_eq(c, &comm)) {
            Some((_, v)) => v.push(call),
            None => by_comm.push((comm, vec![call])),
        }
    }
    let (background, now): (Vec<_>, Vec<_>) =
        by_comm.into_iter().partition(|(c, _)| c.nonblocking());
    let mut progress = Progress::Done;
    for (comm, calls) in background {
        progress = progress.and(queue(&comm, calls)?);
    }
    run_blocking(now).map(|()| progress)
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
