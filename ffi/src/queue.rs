//! The background thread of a nonblocking communicator (`config.blocking = 0`): one
//! thread per communicator runs its init and then its calls, one at a time in the
//! order they were submitted, while the caller's thread returns `ncclInProgress`.
//! Owns the thread, the queue and the count of calls not yet finished; knows nothing
//! of what a call does (`comm` and `group` make the jobs).
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

/// Calls submitted and not yet finished, with a condition variable for waiters.
#[derive(Default)]
struct Pending {
    count: Mutex<usize>,
    changed: Condvar,
}

impl Pending {
    fn add(&self, d: isize) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_add_signed(d);
        self.changed.notify_all();
    }
}

/// The queue and thread of one nonblocking communicator.
pub(crate) struct CallQueue {
    tx: Mutex<Option<Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    pending: Arc<Pending>,
}

impl CallQueue {
    /// Starts the thread, named `name`.
    pub fn start(name: String) -> std::io::Result<CallQueue> {
        let (tx, rx) = channel::<Job>();
        let pending = Arc::new(Pending::default());
        let p = pending.clone();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for job in rx {
                // A panicking job must not kill the thread: later jobs still run, and
                // the count still falls (the job itself latched nothing, so the
                // communicator reports the panic through `comm`'s catch).
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                p.add(-1);
            }
        })?;
        Ok(CallQueue {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            pending,
        })
    }

    /// Queues `job` behind the calls already queued. False if the queue is closed.
    pub fn push(&self, job: Job) -> bool {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = tx.as_ref() else {
            return false;
        };
        self.pending.add(1);
        if tx.send(job).is_err() {
            self.pending.add(-1);
            return false;
        }
        true
    }

    /// Calls queued or running.
    pub fn pending(&self) -> usize {
        *self.pending.count.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no call is queued or running, at most `limit`; true if idle.
    pub fn wait_idle(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut n = self.pending.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
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
            assert!(q.push(Box::new(move || {
                std::thread::sleep(Duration::from_millis(1));
                s.lock().unwrap().push(i)
            })));
        }
        assert!(q.wait_idle(Duration::from_secs(30)));
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
        assert_eq!(q.pending(), 0);
        q.close();
        assert!(!q.push(Box::new(|| ())), "a closed queue refuses jobs");
    }

    #[test]
    fn a_panicking_job_does_not_stop_later_ones() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        q.push(Box::new(|| panic!("job panics")));
        let r = ran.clone();
        q.push(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(q.wait_idle(Duration::from_secs(30)));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn waiting_is_bounded() {
        let q = CallQueue::start("test-queue".into()).unwrap();
        q.push(Box::new(|| std::thread::sleep(Duration::from_millis(500))));
        let t = Instant::now();
        assert!(!q.wait_idle(Duration::from_millis(50)));
        assert!(t.elapsed() < Duration::from_millis(450));
        q.close();
    }
}
