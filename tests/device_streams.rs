//! The stream primitives of every vendor shim (`Device::create_event`,
//! `record_event`, `event_done`, `stream_wait_event`, `launch_host_fn`), through the
//! `Device` trait, against the stub runtimes of `tests/stubs/` (built here with the
//! system C compiler, as `tests/mixed.rs` does). The stubs run each stream's work on
//! a worker thread, later than it was enqueued; `STUB_STREAM_DELAY_US` slows each
//! item down so an ordering bug shows as wrong data.
//!
//! Ordering is made deterministic with a gate: a host function that blocks its
//! stream until the test releases it, so "has not run yet" is a fact while the gate
//! is closed, not a race. Every wait is bounded.

mod util;

use mixccl::device::{Device, EventHandle, Runtimes, StreamHandle, Vendor};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use util::build_stub;

/// The stub runtimes, by vendor: source file stem.
const STUBS: [(Vendor, &str); 5] = [
    (Vendor::Cuda, "cuda"),
    (Vendor::Hip, "hip"),
    (Vendor::Musa, "musa"),
    (Vendor::Acl, "acl"),
    (Vendor::Cnrt, "cnrt"),
];

/// The device every test uses (the stubs have two), so device switching is exercised.
const INDEX: i32 = 1;
/// Bytes per buffer.
const LEN: usize = 4096;
/// The longest any bounded wait here lasts before the test fails.
const BOUND: Duration = Duration::from_secs(30);
/// How long a test leaves a broken implementation to run ahead of a closed gate.
const GRACE: Duration = Duration::from_millis(100);

fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("stream-stubs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the stub directory");
        std::env::remove_var("MIXCCL_DEVICES");
        std::env::remove_var("STUB_FAIL");
        std::env::set_var("STUB_STREAM_DELAY_US", "1000");
        for (vendor, name) in STUBS {
            std::env::set_var(vendor.lib_env(), build_stub(&dir, name, "", &[]));
        }
        let rt = Runtimes::global();
        for (vendor, _) in STUBS {
            if let Err(e) = rt.get(vendor) {
                panic!("{vendor} stub not loaded: {e}");
            }
        }
    });
}

/// One vendor's runtime with a device buffer and pinned host buffers to copy with.
struct Rig {
    vendor: Vendor,
    dev: &'static dyn Device,
    device_buf: usize,
    pinned: Vec<usize>,
    streams: Vec<StreamHandle>,
    events: Vec<EventHandle>,
}

impl Rig {
    fn new(vendor: Vendor) -> Rig {
        setup();
        let dev = Runtimes::global().get(vendor).expect("runtime");
        let device_buf = dev.alloc_device(INDEX, LEN).expect("device memory");
        Rig {
            vendor,
            dev,
            device_buf,
            pinned: Vec::new(),
            streams: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A pinned host buffer of LEN bytes, each set to `fill`; returned by address.
    fn pinned(&mut self, fill: u8) -> usize {
        let p = self.dev.alloc_pinned(INDEX, LEN).expect("pinned memory");
        // SAFETY: a fresh allocation of LEN bytes that nothing else uses yet.
        unsafe { std::slice::from_raw_parts_mut(p, LEN) }.fill(fill);
        self.pinned.push(p as usize);
        p as usize
    }

    fn stream(&mut self) -> StreamHandle {
        let s = self.dev.create_stream(INDEX).expect("stream");
        self.streams.push(s);
        s
    }

    fn event(&mut self) -> EventHandle {
        let e = self
            .dev
            .create_event(INDEX)
            .unwrap_or_else(|err| panic!("{}: create_event: {err}", self.vendor));
        self.events.push(e);
        e
    }

    /// Queues device buffer <- pinned `src`.
    fn to_device(&self, src: usize, s: StreamHandle) {
        // SAFETY: `src` is a live pinned buffer of LEN bytes, the device buffer holds
        // LEN bytes; the test synchronises `s` before freeing either.
        unsafe {
            self.dev
                .copy_to_device(INDEX, self.device_buf, src as *const u8, LEN, s)
        }
        .expect("copy_to_device");
    }

    /// Queues pinned `dst` <- device buffer.
    fn to_host(&self, dst: usize, s: StreamHandle) {
        // SAFETY: as in to_device, the other direction; nothing reads `dst` until `s`
        // is synchronised (or a host function queued after the copy runs).
        unsafe {
            self.dev
                .copy_to_host(INDEX, dst as *mut u8, self.device_buf, LEN, s)
        }
        .expect("copy_to_host");
    }

    /// Queues `f` on `s`.
    fn host_fn(&self, s: StreamHandle, f: impl FnOnce() + Send + 'static) {
        self.dev
            .launch_host_fn(INDEX, s, Box::new(f))
            .unwrap_or_else(|e| panic!("{}: launch_host_fn: {e}", self.vendor));
    }

    /// Queues a host function that holds `s` until the returned sender is used (or
    /// dropped), at most BOUND.
    fn gate(&self, s: StreamHandle) -> mpsc::Sender<()> {
        let (tx, rx) = mpsc::channel::<()>();
        self.host_fn(s, move || {
            let _ = rx.recv_timeout(BOUND);
        });
        tx
    }

    fn done(&self, e: EventHandle) -> bool {
        self.dev
            .event_done(INDEX, e)
            .unwrap_or_else(|err| panic!("{}: event_done: {err}", self.vendor))
    }

    /// Waits (at most BOUND) until `e` is done.
    fn wait_done(&self, e: EventHandle) {
        let start = Instant::now();
        while !self.done(e) {
            assert!(
                start.elapsed() < BOUND,
                "{}: event not done after {BOUND:?}",
                self.vendor
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn sync(&self, s: StreamHandle) {
        self.dev.synchronize(INDEX, s).expect("synchronize");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for &s in &self.streams {
            let _ = self.dev.synchronize(INDEX, s);
            let _ = self.dev.destroy_stream(INDEX, s);
        }
        for &e in &self.events {
            let _ = self.dev.destroy_event(INDEX, e);
        }
        for &p in &self.pinned {
            // SAFETY: from alloc_pinned, every stream using it synchronised above.
            let _ = unsafe { self.dev.free_pinned(INDEX, p as *mut u8) };
        }
        // SAFETY: from alloc_device, no stream uses it any more.
        let _ = unsafe { self.dev.free_device(INDEX, self.device_buf) };
    }
}

/// The LEN bytes of pinned buffer `p`.
///
/// # Safety
/// No stream writes `p` meanwhile.
unsafe fn bytes(p: usize) -> Vec<u8> {
    // SAFETY: the caller's contract; `p` is a live pinned buffer of LEN bytes.
    unsafe { std::slice::from_raw_parts(p as *const u8, LEN) }.to_vec()
}

/// Which byte values a buffer holds, for messages.
fn values(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// A host function runs after the copies queued before it and before those queued
/// after it: it sees the first round trip's bytes and not yet the second's.
#[test]
fn host_fn_runs_between_earlier_and_later_copies() {
    for (vendor, _) in STUBS {
        let mut r = Rig::new(vendor);
        let (first, second) = (r.pinned(0x11), r.pinned(0x22));
        let (mid, out) = (r.pinned(0), r.pinned(0));
        let s = r.stream();
        let gate = r.gate(s);
        r.to_device(first, s);
        r.to_host(mid, s);
        let seen = Arc::new(Mutex::new(None));
        let seen2 = Arc::clone(&seen);
        let caller = std::thread::current().id();
        r.host_fn(s, move || {
            // SAFETY: the copy into `mid` came before this function on its stream and
            // nothing later writes it; `out` is written only by a copy queued after.
            let got = unsafe { (bytes(mid), bytes(out)) };
            *seen2.lock().unwrap() = Some((got, std::thread::current().id()));
        });
        r.to_device(second, s);
        r.to_host(out, s);
        assert!(
            seen.lock().unwrap().is_none(),
            "{vendor}: the host function ran while the gate before it was closed"
        );
        drop(gate);
        r.sync(s);
        let (got, thread) = seen.lock().unwrap().take().unwrap_or_else(|| {
            panic!("{vendor}: the host function never ran before synchronize returned")
        });
        assert_ne!(
            thread, caller,
            "{vendor}: host function ran on the caller's thread"
        );
        assert!(
            got.0.iter().all(|&b| b == 0x11),
            "{vendor}: host function saw {:?} from the earlier copies, want 0x11",
            values(&got.0)
        );
        assert!(
            got.1.iter().all(|&b| b == 0),
            "{vendor}: host function saw {:?} from a later copy, want it not run (0)",
            values(&got.1)
        );
        // SAFETY: the stream is synchronised.
        let fin = unsafe { bytes(out) };
        assert!(
            fin.iter().all(|&b| b == 0x22),
            "{vendor}: final bytes {:?}, want 0x22",
            values(&fin)
        );
    }
}

/// An event is not done until the work queued before its record has run, is done
/// after, and an event never recorded is done.
#[test]
fn event_done_only_after_the_work_before_it() {
    for (vendor, _) in STUBS {
        let mut r = Rig::new(vendor);
        let (src, out) = (r.pinned(0x5a), r.pinned(0));
        let s = r.stream();
        let never = r.event();
        assert!(
            r.done(never),
            "{vendor}: an event never recorded is not done"
        );
        let e = r.event();
        let gate = r.gate(s);
        r.to_device(src, s);
        r.dev.record_event(INDEX, e, s).expect("record_event");
        assert!(
            !r.done(e),
            "{vendor}: event done while the work before it is held"
        );
        std::thread::sleep(GRACE);
        assert!(
            !r.done(e),
            "{vendor}: event done while the work before it is held"
        );
        drop(gate);
        r.wait_done(e);
        // The copy before the record has run: read the device buffer back.
        r.to_host(out, s);
        r.sync(s);
        // SAFETY: the stream is synchronised.
        let got = unsafe { bytes(out) };
        assert!(
            got.iter().all(|&b| b == 0x5a),
            "{vendor}: device buffer holds {:?} after the event, want 0x5a",
            values(&got)
        );
        // Recorded again behind a new gate: not done again until released.
        let gate = r.gate(s);
        r.dev.record_event(INDEX, e, s).expect("record_event again");
        assert!(!r.done(e), "{vendor}: re-recorded event done while held");
        drop(gate);
        r.wait_done(e);
    }
}

/// `stream_wait_event` makes a second stream's later work wait for the first
/// stream's work before the record: the second stream reads the device buffer only
/// after the first has written it.
#[test]
fn stream_wait_event_orders_a_second_stream() {
    for (vendor, _) in STUBS {
        let mut r = Rig::new(vendor);
        let (src, out) = (r.pinned(0x77), r.pinned(0));
        let (s1, s2) = (r.stream(), r.stream());
        let e = r.event();
        let after = r.event();
        let gate = r.gate(s1);
        r.to_device(src, s1);
        r.dev.record_event(INDEX, e, s1).expect("record_event");
        r.dev
            .stream_wait_event(INDEX, s2, e)
            .unwrap_or_else(|err| panic!("{vendor}: stream_wait_event: {err}"));
        r.to_host(out, s2);
        r.dev.record_event(INDEX, after, s2).expect("record_event");
        // A second stream that ignored the wait would run its copy now.
        std::thread::sleep(GRACE);
        assert!(
            !r.done(after),
            "{vendor}: the second stream ran past its wait while the first is held"
        );
        drop(gate);
        r.sync(s2);
        assert!(
            r.done(e),
            "{vendor}: second stream finished before the event"
        );
        // SAFETY: s2 is synchronised.
        let got = unsafe { bytes(out) };
        assert!(
            got.iter().all(|&b| b == 0x77),
            "{vendor}: second stream read {:?}, want the first stream's 0x77",
            values(&got)
        );
    }
}

/// A host function that blocks holds its stream: nothing queued after it runs
/// until it returns, and then everything does, in order.
#[test]
fn blocking_host_fn_holds_its_stream() {
    for (vendor, _) in STUBS {
        let mut r = Rig::new(vendor);
        let (src, out) = (r.pinned(0x3c), r.pinned(0));
        let s = r.stream();
        let e = r.event();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (release, held) = mpsc::channel::<()>();
        let o = Arc::clone(&order);
        r.host_fn(s, move || {
            let _ = held.recv_timeout(BOUND);
            o.lock().unwrap().push("blocker");
        });
        r.to_device(src, s);
        r.to_host(out, s);
        let o = Arc::clone(&order);
        r.host_fn(s, move || o.lock().unwrap().push("after"));
        r.dev.record_event(INDEX, e, s).expect("record_event");
        std::thread::sleep(GRACE);
        assert!(
            !r.done(e),
            "{vendor}: work ran past a blocked host function"
        );
        assert!(
            order.lock().unwrap().is_empty(),
            "{vendor}: {:?} ran while the first host function blocks",
            order.lock().unwrap()
        );
        release.send(()).expect("release the blocker");
        r.wait_done(e);
        assert_eq!(
            *order.lock().unwrap(),
            ["blocker", "after"],
            "{vendor}: host functions out of order"
        );
        // SAFETY: the event after the copies is done.
        let got = unsafe { bytes(out) };
        assert!(
            got.iter().all(|&b| b == 0x3c),
            "{vendor}: copies after the blocker gave {:?}, want 0x3c",
            values(&got)
        );
    }
}
