//! The progress thread of a communicator: one thread per communicator runs its jobs
//! one at a time in the order they were submitted. A nonblocking communicator
//! (`config.blocking = 0`) has one from the start for its init and calls (the caller's
//! thread returns `ncclInProgress`); any communicator gets one for its stream-ordered
//! calls on device buffers (`stream`). Owns the thread, the queue and the counts of
//! jobs not yet finished (all of them, and those `ncclCommGetAsyncError` reports as
//! in progress); knows nothing of what a job does (`comm` and `group` make them).
//!
//! The thread holds only the receiving end: closing the queue (or dropping it) lets
//! it finish what is queued and exit. Nothing here joins the thread from itself (a job
//! may drop the last reference to the communicator that owns this queue).

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One unit of background work.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// Jobs submitted and not yet finished: all of them, and those reported as in progress.
#[derive(Default, Clone, Copy)]
struct Counts {
    all: usize,
    reported: usize,
}

/// The counts, with a condition variable for waiters.
#[derive(Default)]
struct Pending {
    count: Mutex<Counts>,
    changed: Condvar,
}

impl Pending {
    fn add(&self, d: isize, reported: bool) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        n.all = n.all.saturating_add_signed(d);
        if reported {
            n.reported = n.reported.saturating_add_signed(d);
        }
        self.changed.notify_all();
    }
}

/// The queue and thread of one communicator.
pub(crate) struct CallQueue {
    tx: Mutex<Option<Sender<(Job, bool)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pending: Arc<Pending>,
}

impl CallQueue {
    /// Starts the thread, named `name`.
    pub fn start(name: String) -> std::io::Result<CallQueue> {
        let (tx, rx) = channel::<(Job, bool)>();
        let pending = Arc::new(Pending::default());
        let p = pending.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for (job, reported) in rx {
                // A panicking job must not kill the thread: later jobs still run, and
                // the count still falls (the job itself latched nothing, so the
                // communicator reports the panic through `comm`'s catch).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                p.add(-1, reported);
            }
        })?;
        Ok(CallQueue {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            pending,
        })
    }

    /// Queues `job` behind the jobs already queued; `reported`: counted by
    /// [`CallQueue::reported`] until it has run. False if the queue is closed.
    pub fn push(&self, job: Job, reported: bool) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return false;
        };
        self.pending.add(1, reported);
        if tx.send((job, reported)).is_err() {
            self.pending.add(-1, reported);
            return false;
        }
        true
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.counts().all
    }

    /// Jobs queued or running that were pushed as `reported`.
    pub fn reported(&self) -> usize {
        self.counts().reported
    }

    fn counts(&self) -> Counts {
        *self.pending.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no call is queued or running, at most `limit`; true if idle.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut n = self.pending.count.lock().unwrap_or_else(|e| e.into_inner());
        while n.all > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .pending
                .changed
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Refuses further jobs; joins the thread if it is idle, else lets it finish what
    /// is queued and exit on its own. Never call from a job.
    pub fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if self.pending() == 0 {
            if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_in_order_and_the_count_falls_to_zero() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..20 {
            let s = seen.clone();
            assert!(q.push(
                Box::new(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    s.lock().unwrap().push(i)
                }),
                i % 2 == 0
            ));
        }
        assert!(q.wait_idle(Duration::from_secs(30)));
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!((q.pending(), q.reported()), (0, 0));
        q.close();
        assert!(
            !q.push(Box::new(|| ()), true),
            "a closed queue refuses jobs"
        );
    }

    #[test]
    fn a_panicking_job_does_not_stop_later_ones() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        q.push(Box::new(|| panic!("job panics")), true);
        let r = ran.clone();
        q.push(
            Box::new(move || {
                r.fetch_add(1, Ordering::SeqCst);
            }),
            true,
        );
        assert!(q.wait_idle(Duration::from_secs(30)));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn only_reported_jobs_count_as_in_progress() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        q.push(
            Box::new(move || {
                let _ = rx.recv_timeout(Duration::from_secs(30));
            }),
            false,
        );
        q.push(Box::new(|| ()), true);
        assert_eq!((q.pending(), q.reported()), (2, 1));
        tx.send(()).unwrap();
        assert!(q.wait_idle(Duration::from_secs(30)));
        assert_eq!((q.pending(), q.reported()), (0, 0));
    }

    #[test]
    fn waiting_is_bounded() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        q.push(
            Box::new(|| std::thread::sleep(Duration::from_millis(500))),
            true,
        );
        let t = Instant::now();
        assert!(!q.wait_idle(Duration::from_millis(50)));
        assert!(t.elapsed() < Duration::from_millis(450));
        q.close();
    }
}
