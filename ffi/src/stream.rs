//! Stream-ordered calls on device buffers: how one unit of calls (a call, or one
//! communicator's share of a group) is tied to the caller's streams so that it reads
//! its input only after all earlier work on those streams and later work waits for
//! its result, while the export returns at once.
//!
//! At enqueue, on the caller's thread, per distinct caller stream of the unit:
//! 1. an event is recorded on the stream: the *ready mark*. When it completes, every
//!    earlier item of the stream has finished, so the input may be read;
//! 2. with several streams (one device), each stream waits for the others' ready
//!    marks, so the unit's holds all start once the whole unit is ready;
//! 3. a host function, the *hold*, is launched on the stream after it: it returns
//!    only when the unit's [`Ticket`] is finished or released, so later work on the
//!    stream waits for the result.
//!
//! The communicator's progress thread (`queue`) then takes the unit in issue order,
//! polls the ready marks ([`Marks::wait`]), runs the calls (staging on mixccl's own
//! non-blocking streams, never the caller's, which the hold keeps busy), and
//! finishes the ticket. Readiness is an event query rather than a host function so
//! that the progress thread never needs the runtime's host-function thread: runtimes
//! may run every stream's host functions on one thread, one at a time, so a hold
//! waiting on one stream must not keep a second unit (of another communicator, on
//! another stream) from starting. For the same reason a hold starts only once the
//! whole unit is ready (step 2): a hold running while its unit still waits for
//! another stream could keep that stream's earlier host functions from running.
//!
//! Every hold is bounded: it returns when its ticket finishes, at once when the
//! communicator is aborted ([`Holds::release_all`]), and otherwise at most
//! `timeout` (MIXCCL_TIMEOUT) after the later of its own start and the unit's start,
//! when it calls the ticket's `expire` (which latches a timeout and aborts the
//! communicator) and waits at most [`EXPIRE_GRACE`] more for the aborted unit to stop
//! touching the buffers.
//!
//! Owns the tickets, the marks and a pool of events; knows nothing of what a call
//! does or of the wire.

use crate::status::{Failure, Outcome};
use mixccl::device::{Device, EventHandle, HostFn, Runtimes, StreamHandle, Vendor};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

/// How long an expired hold waits for its aborted unit to stop (aborted calls return
/// within about 100 ms), so the stream is released within MIXCCL_TIMEOUT + 1 s.
pub(crate) const EXPIRE_GRACE: Duration = Duration::from_millis(900);

/// A caller's stream on one device of one runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CallerStream {
    /// The runtime whose stream it is (that of the call's device buffers).
    pub vendor: Vendor,
    /// The device of the call's device buffers.
    pub index: i32,
    /// The handle as the caller passed it (0: the default stream).
    pub stream: StreamHandle,
}

#[derive(Default)]
struct TicketState {
    /// When the progress thread started running the unit.
    started: Option<Instant>,
    /// The unit has finished (or will never touch its buffers again).
    finished: bool,
    /// Released by an abort: holds return even if the unit is still running.
    released: bool,
}

/// What holds wait for: the unit's progress, shared by its holds, its job and the
/// communicator's [`Holds`].
pub(crate) struct Ticket {
    state: Mutex<TicketState>,
    changed: Condvar,
    timeout: Duration,
    /// Called once by the first hold that gives up on the unit.
    expire: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Ticket {
    /// A ticket whose holds give up `timeout` after the unit (or the hold) started,
    /// calling `expire` first.
    pub fn new(timeout: Duration, expire: impl FnOnce() + Send + 'static) -> Arc<Ticket> {
        Arc::new(Ticket {
            state: Mutex::new(TicketState::default()),
            changed: Condvar::new(),
            timeout,
            expire: Mutex::new(Some(Box::new(expire))),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TicketState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the unit running; false if it was released first (it must then not run:
    /// its streams have moved on).
    pub fn start(&self) -> bool {
        let mut s = self.lock();
        if s.released || s.finished {
            return false;
        }
        s.started = Some(Instant::now());
        self.changed.notify_all();
        true
    }

    /// Marks the unit finished: its holds return.
    pub fn finish(&self) {
        self.lock().finished = true;
        self.changed.notify_all();
    }

    /// Releases the holds at once (abort); the unit will not start.
    pub fn release(&self) {
        self.lock().released = true;
        self.changed.notify_all();
    }

    /// Was the ticket released (or finished) before the unit started?
    pub fn is_released(&self) -> bool {
        let s = self.lock();
        s.released || s.finished
    }

    fn done(&self) -> bool {
        let s = self.lock();
        s.finished || s.released
    }

    /// The body of a hold: returns when the unit has finished, when the ticket is
    /// released, or (see the module doc) when the unit overran its timeout.
    pub fn hold(&self) {
        let begun = Instant::now();
        let mut s = self.lock();
        loop {
            if s.finished || s.released {
                return;
            }
            let from = s.started.map_or(begun, |t| t.max(begun));
            let left = (from + self.timeout).saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(s);
        let expire = self.expire.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(f) = expire {
            f();
        }
        // Wait for the aborted unit to finish, not for a release.
        let end = Instant::now() + EXPIRE_GRACE;
        let mut s = self.lock();
        while !s.finished {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The tickets of one communicator that may still hold a stream, so an abort can
/// release them all.
#[derive(Default)]
pub(crate) struct Holds {
    live: Mutex<Vec<Weak<Ticket>>>,
}

impl Holds {
    /// Tracks `t` (and forgets tickets that are gone or done).
    pub fn add(&self, t: &Arc<Ticket>) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.upgrade().is_some_and(|t| !t.done()));
        live.push(Arc::downgrade(t));
    }

    /// Releases every tracked ticket: each held stream moves on at once.
    pub fn release_all(&self) {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|e| e.into_inner()));
        for t in live.iter().filter_map(Weak::upgrade) {
            t.release();
        }
    }
}

/// Vendors whose shim lacks events or host functions, by [`Vendor::ALL`] position:
/// asked once, then their calls stay host-synchronous.
static UNSUPPORTED: AtomicU8 = AtomicU8::new(0);

fn vendor_bit(v: Vendor) -> u8 {
    1 << Vendor::ALL.iter().position(|x| *x == v).unwrap_or(0)
}

/// Can `v`'s calls be stream-ordered (as far as we know yet)?
pub(crate) fn supported(v: Vendor) -> bool {
    UNSUPPORTED.load(Ordering::Relaxed) & vendor_bit(v) == 0
}

/// Events made for ready marks and free again, per device.
static EVENTS: Mutex<Vec<(Vendor, i32, EventHandle)>> = Mutex::new(Vec::new());

/// An event of device `index` from the pool, or a new one.
pub(crate) fn take_event(d: &dyn Device, index: i32) -> mixccl::Result<EventHandle> {
    let pooled = {
        let mut pool = EVENTS.lock().unwrap_or_else(|e| e.into_inner());
        let at = pool
            .iter()
            .position(|(v, i, _)| *v == d.vendor() && *i == index);
        at.map(|at| pool.swap_remove(at).2)
    };
    match pooled {
        Some(e) => Ok(e),
        None => d.create_event(index),
    }
}

/// Gives an event back to the pool if it has completed; destroys it otherwise.
pub(crate) fn put_event(d: &dyn Device, index: i32, e: EventHandle) {
    if d.event_done(index, e).unwrap_or(false) {
        EVENTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((d.vendor(), index, e));
    } else {
        let _ = d.destroy_event(index, e);
    }
}

/// The ready marks of one unit: an event recorded on each of its caller streams.
/// Dropping them gives completed events back to the pool and destroys the others.
pub(crate) struct Marks {
    marks: Vec<(CallerStream, &'static dyn Device, EventHandle)>,
    /// Every event has completed since it was recorded.
    all_done: bool,
}

impl Marks {
    /// Has every earlier item on every caller stream finished? (Never blocks.)
    pub fn poll(&mut self) -> mixccl::Result<bool> {
        for (s, d, e) in &self.marks {
            if !d.event_done(s.index, *e)? {
                return Ok(false);
            }
        }
        self.all_done = true;
        Ok(true)
    }

    /// Waits until every earlier item on every caller stream has finished: polls the
    /// events, at most `limit`; gives up at once when `stop()` says so.
    pub fn wait(&mut self, limit: Duration, stop: impl Fn() -> bool) -> Outcome {
        let end = Instant::now() + limit;
        let mut nap = Duration::from_micros(10);
        let mut left: Vec<usize> = (0..self.marks.len()).collect();
        loop {
            let mut still = Vec::new();
            for i in left {
                let (s, d, e) = self.marks[i];
                if !d.event_done(s.index, e)? {
                    still.push(i);
                }
            }
            left = still;
            if left.is_empty() {
                self.all_done = true;
                return Ok(());
            }
            if stop() {
                return Err(Failure::usage(
                    "the communicator was aborted before the caller's stream reached the call",
                ));
            }
            if Instant::now() >= end {
                let s = self.marks[left[0]].0;
                return Err(Failure {
                    code: crate::status::code::TIMEOUT,
                    message: format!(
                        "the caller's {} stream {:#x} on device {} did not reach the call \
                         within {limit:?} (MIXCCL_TIMEOUT): earlier work on it is still running",
                        s.vendor, s.stream, s.index
                    ),
                });
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(1));
        }
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        for (s, d, e) in self.marks.drain(..) {
            if self.all_done {
                EVENTS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((s.vendor, s.index, e));
            } else {
                let _ = d.destroy_event(s.index, e);
            }
        }
    }
}

/// Marks on `streams` (an event recorded on each), without holds: the ready marks
/// of [`enqueue`], and what an island call's watch polls for the native calls
/// queued before them (`native`). A runtime that cannot make events is remembered.
pub(crate) fn marks_on(streams: &[CallerStream]) -> mixccl::Result<Marks> {
    let rt = Runtimes::global();
    let mut marks = Marks {
        marks: Vec::with_capacity(streams.len()),
        all_done: false,
    };
    for s in streams {
        let d = rt.get(s.vendor)?;
        let e = take_event(d, s.index).inspect_err(|_| unsupported(s.vendor))?;
        marks.marks.push((*s, d, e));
        d.record_event(s.index, e, s.stream)?;
    }
    Ok(marks)
}

/// Ties a unit to `streams`: records a ready mark on each, then launches a hold of
/// `ticket` on each. On an error the ticket is finished (holds already launched
/// return at once) and nothing else is left queued; a runtime that cannot make
/// events is remembered, so later calls do not try again.
pub(crate) fn enqueue(streams: &[CallerStream], ticket: &Arc<Ticket>) -> mixccl::Result<Marks> {
    let r = try_enqueue(streams, ticket);
    if r.is_err() {
        ticket.finish();
    }
    r
}

fn try_enqueue(streams: &[CallerStream], ticket: &Arc<Ticket>) -> mixccl::Result<Marks> {
    let marks = marks_on(streams)?;
    // Join the streams before any hold: each hold starts only when every stream has
    // reached the unit, so a running hold never stands between the unit and its
    // start (a runtime that runs host functions one at a time would otherwise let a
    // hold on one stream keep an earlier host function on another from running).
    for (s, d, _) in &marks.marks {
        for (o, _, e) in &marks.marks {
            if o.stream != s.stream {
                d.stream_wait_event(s.index, s.stream, *e)?;
            }
        }
    }
    for (s, d, _) in &marks.marks {
        let t = ticket.clone();
        let hold: HostFn = Box::new(move || t.hold());
        // Not remembered as unsupported: a launch may fail for one stream only (an
        // ACL stream the application subscribed to a report thread of its own).
        d.launch_host_fn(s.index, s.stream, hold)?;
    }
    Ok(marks)
}

/// Remembers that `v`'s shim lacks events (any failure to make one lands here: the
/// calls then stay host-synchronous, which is always correct).
fn unsupported(v: Vendor) {
    UNSUPPORTED.fetch_or(vendor_bit(v), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    fn on_thread(t: &Arc<Ticket>) -> std::thread::JoinHandle<Instant> {
        let t = t.clone();
        std::thread::spawn(move || {
            t.hold();
            Instant::now()
        })
    }

    #[test]
    fn a_hold_returns_when_its_unit_finishes() {
        let t = Ticket::new(Duration::from_secs(60), || panic!("must not expire"));
        let h = on_thread(&t);
        assert!(t.start());
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            !h.is_finished(),
            "the hold returned before the unit finished"
        );
        t.finish();
        h.join().unwrap();
        assert!(!t.start(), "a finished unit does not start again");
    }

    #[test]
    fn a_released_ticket_frees_its_holds_and_its_unit_does_not_start() {
        let t = Ticket::new(Duration::from_secs(60), || panic!("must not expire"));
        let holds = Holds::default();
        holds.add(&t);
        let hs: Vec<_> = (0..3).map(|_| on_thread(&t)).collect();
        holds.release_all();
        for h in hs {
            h.join().unwrap();
        }
        assert!(t.is_released());
        assert!(!t.start());
        // A hold launched after the release returns at once.
        t.hold();
    }

    #[test]
    fn an_overrunning_unit_expires_once_and_the_hold_waits_for_it_to_stop() {
        let expired = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let e = expired.clone();
        let t = Ticket::new(Duration::from_millis(50), move || {
            e.fetch_add(1, Ordering::SeqCst);
        });
        assert!(t.start());
        // The unit stops 100 ms after it is told to (within EXPIRE_GRACE).
        let (t2, e2, s2) = (t.clone(), expired.clone(), stopped.clone());
        let unit = std::thread::spawn(move || {
            while e2.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(100));
            s2.store(true, Ordering::SeqCst);
            t2.finish();
        });
        let hs: Vec<_> = (0..2).map(|_| on_thread(&t)).collect();
        for h in hs {
            h.join().unwrap();
            assert!(
                stopped.load(Ordering::SeqCst),
                "a hold returned while the unit still ran"
            );
        }
        unit.join().unwrap();
        assert_eq!(expired.load(Ordering::SeqCst), 1, "expire is called once");
    }

    #[test]
    fn a_unit_that_never_stops_is_left_after_the_grace() {
        let t = Ticket::new(Duration::from_millis(10), || ());
        assert!(t.start());
        let h = on_thread(&t);
        // Neither finished nor released: the hold gives up by itself.
        h.join().unwrap();
        assert!(!t.done());
    }

    #[test]
    fn holds_forget_finished_tickets() {
        let holds = Holds::default();
        for _ in 0..10 {
            let t = Ticket::new(Duration::from_secs(1), || ());
            holds.add(&t);
            t.finish();
        }
        assert!(holds.live.lock().unwrap().len() <= 1);
    }

    #[test]
    fn marks_without_events_are_ready() {
        let mut m = Marks {
            marks: Vec::new(),
            all_done: false,
        };
        assert!(m.wait(Duration::from_millis(1), || true).is_ok());
    }
}
