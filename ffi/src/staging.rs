//! Host staging of a stream-ordered unit on the caller's own streams.
//!
//! A unit on device buffers runs on the progress thread against pinned host copies of
//! its buffers. Every device copy is queued on the caller's stream at enqueue time,
//! on the caller's thread, around the unit's ready mark and hold (`stream`):
//!
//! ```text
//! caller stream:  ... | copy in (device -> pinned) | ready mark | hold | copy out (pinned -> device) | fence
//! progress thread:                      waits for the mark, runs the call on pinned memory, finishes the ticket
//! ```
//!
//! So the hold waits only for host work (the wire), never for device work queued
//! after it. That is what the runtimes require of a host function ("must not perform
//! any synchronization that may depend on outstanding CUDA work not mandated to run
//! earlier"): were the progress thread to queue its own copies after the hold, a
//! device-wide synchronisation point in between (the application's `cudaMalloc`,
//! `cudaFree` or `cudaFreeHost`, which PyTorch's caching allocator makes at any
//! time) would order those copies after the hold, and the hold after the copies: a
//! deadlock that only the timeout ends (seen with torch DDP on an H200).
//!
//! Pinned buffers come from a pool per communicator, allocated on the caller's thread
//! and freed only with the communicator; a buffer is taken again at once by a unit on
//! the stream its last unit ran on alone (stream order separates the two), and by any
//! other once the fence recorded after its unit's copies out has completed. After a
//! failed or aborted call the copy out still runs: the output then holds unspecified
//! bytes (the input, partial results, or earlier contents of the pinned buffer).

use crate::cast::RawBuf;
use crate::group::Pending;
use crate::status::{Failure, Outcome};
use crate::stream::{self, CallerStream};
use mixccl::device::{Device, EventHandle, HostMemory, MemoryKind, Runtimes};
use std::sync::{Arc, Mutex};

/// Pinned buffers below this size are rounded up, so small calls share a few buffers.
const MIN_BUFFER: usize = 64 << 10;

/// One device buffer of a call and where it goes on the host.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    /// The caller's device bytes.
    pub device: RawBuf,
    /// Copy them to the host before the call (it reads them).
    pub copy_in: bool,
    /// The part the call writes, as (offset, length) within `device`: copied back after.
    pub copy_out: Option<(usize, usize)>,
}

/// Events recorded after a unit's copies out, one per caller stream; the unit's
/// buffers are free again once all have completed.
struct Fence {
    events: Vec<(CallerStream, &'static dyn Device, EventHandle)>,
}

impl Fence {
    fn passed(&self) -> bool {
        self.events
            .iter()
            .all(|(s, d, e)| d.event_done(s.index, *e).unwrap_or(false))
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        for (s, d, e) in self.events.drain(..) {
            stream::put_event(d, s.index, e);
        }
    }
}

/// A pinned buffer of the pool.
struct Slot {
    mem: HostMemory,
    vendor: mixccl::device::Vendor,
    index: i32,
    /// The fence of the last unit that used it; free once passed.
    fence: Option<Arc<Fence>>,
}

impl Slot {
    /// Have the copies of the last unit that used it run?
    fn idle(&self) -> bool {
        self.fence.as_ref().map_or(true, |f| f.passed())
    }

    /// Can a unit on `s` use it for `len` bytes? Without waiting for its fence when its
    /// last unit ran on `s` alone: the new unit's copy in is queued on `s` after that
    /// unit's copy out, and the progress thread touches the buffer only after the new
    /// unit's ready mark, so stream order keeps the two apart (and saves a query of
    /// the fence per call on the caller's thread).
    fn free_for(&self, s: &CallerStream, len: usize) -> bool {
        self.vendor == s.vendor
            && self.index == s.index
            && self.mem.len() >= len
            && (self.last_on(s) || self.idle())
    }

    /// Was the last unit that used it on stream `s` alone?
    fn last_on(&self, s: &CallerStream) -> bool {
        self.fence
            .as_ref()
            .is_some_and(|f| matches!(f.events.as_slice(), [(only, _, _)] if only == s))
    }
}

/// The pinned buffers of one communicator.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<Vec<Slot>>,
}

/// What [`Pool::stage_in`] took for one unit; give it to [`Pool::stage_out`] after
/// the unit's holds are queued.
pub(crate) struct Staged {
    taken: Vec<Slot>,
    /// (stream, device address, host address, length) of each copy out.
    outs: Vec<(CallerStream, usize, usize, usize)>,
    streams: Vec<CallerStream>,
}

impl Staged {
    /// The same buffers with no copy out (the unit will not run).
    pub fn without_copies_out(mut self) -> Staged {
        self.outs.clear();
        self
    }
}

impl Pool {
    /// The smallest free buffer for `len` bytes on `s`'s device, or a new one.
    fn take(&self, s: &CallerStream, len: usize) -> Outcome<Slot> {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let best = slots
                .iter()
                .enumerate()
                .filter(|(_, x)| x.free_for(s, len))
                .min_by_key(|(_, x)| x.mem.len())
                .map(|(i, _)| i);
            if let Some(i) = best {
                let mut slot = slots.swap_remove(i);
                slot.fence = None;
                return Ok(slot);
            }
        }
        let d = Runtimes::global().get(s.vendor)?;
        let mem = HostMemory::new(len.next_power_of_two().max(MIN_BUFFER), Some((d, s.index)))?;
        Ok(Slot {
            mem,
            vendor: s.vendor,
            index: s.index,
            fence: None,
        })
    }

    /// Takes a pinned buffer for region `r` on `s` into `staged` (its copy out noted)
    /// and returns its address; on an error gives back everything `staged` took.
    fn take_into(&self, staged: &mut Staged, s: &CallerStream, r: &Region) -> Outcome<usize> {
        let mut slot = match self.take(s, r.device.len) {
            Ok(slot) => slot,
            Err(e) => {
                self.give_back(std::mem::take(&mut staged.taken), None);
                return Err(e);
            }
        };
        let host = slot.mem.as_mut_ptr() as usize;
        staged.taken.push(slot);
        if let Some((off, len)) = r.copy_out.filter(|(_, len)| *len > 0) {
            staged.outs.push((*s, r.device.addr + off, host + off, len));
        }
        Ok(host)
    }

    /// Stages `calls` (each with its caller stream): takes a pinned buffer per device
    /// buffer, queues the copies in on the call's stream, and returns the calls
    /// rewritten to the pinned buffers. Nothing is queued on an error, nor when a
    /// device buffer lies off its call's stream's device (`Ok(None)`: the copies run
    /// on that stream, so such a unit stays host-synchronous).
    pub fn stage_in(
        &self,
        calls: &[(Pending, Option<CallerStream>)],
    ) -> Outcome<Option<(Vec<Pending>, Staged)>> {
        // Each buffer is located once: device buffers to stage, per call.
        let mut device_regions = Vec::with_capacity(calls.len());
        for (call, stream) in calls {
            let mut regions = Vec::new();
            if let Some(s) = stream {
                for r in call.regions().into_iter().filter(|r| r.device.len > 0) {
                    if let MemoryKind::Device { vendor, index } = r.device.mem()?.kind() {
                        if (vendor, index) != (s.vendor, s.index) {
                            return Ok(None);
                        }
                        regions.push(r);
                    }
                }
            }
            device_regions.push(regions);
        }
        let mut staged = Staged {
            taken: Vec::new(),
            outs: Vec::new(),
            streams: Vec::new(),
        };
        let mut ins = Vec::new();
        let mut host_calls = Vec::with_capacity(calls.len());
        for ((call, stream), regions) in calls.iter().zip(device_regions) {
            let Some(s) = stream else {
                host_calls.push(*call);
                continue;
            };
            if !staged.streams.contains(s) {
                staged.streams.push(*s);
            }
            let mut map = Vec::new();
            for r in regions {
                let host = self.take_into(&mut staged, s, &r)?;
                if r.copy_in {
                    ins.push((*s, host, r.device.addr, r.device.len));
                }
                map.push((r.device, host));
            }
            host_calls.push(call.with_buffers(|b| {
                map.iter()
                    .find(|(d, _)| d.addr == b.addr && d.len == b.len)
                    .map_or(b, |(_, host)| RawBuf {
                        addr: *host,
                        len: b.len,
                    })
            }));
        }
        for (s, host, dev, len) in ins {
            let d = Runtimes::global().get(s.vendor)?;
            // SAFETY: `dev` is the caller's device memory of `len` bytes on this
            // device (located above); `host` is a pinned buffer of at least `len`
            // bytes that this unit owns until its fence passes, which is after the
            // copy has run.
            let r = unsafe { d.copy_to_host(s.index, host as *mut u8, dev, len, s.stream) };
            if let Err(e) = r {
                self.give_back(std::mem::take(&mut staged.taken), None);
                return Err(e.into());
            }
        }
        Ok(Some((host_calls, staged)))
    }

    /// Stages raw device `regions` on `s` (an island call's host phase, `native`):
    /// a pinned buffer per region, the copies in queued on `s`; returns the pinned
    /// addresses in region order.
    pub fn stage_regions(
        &self,
        s: &CallerStream,
        regions: &[Region],
    ) -> Outcome<(Vec<usize>, Staged)> {
        let mut staged = Staged {
            taken: Vec::new(),
            outs: Vec::new(),
            streams: vec![*s],
        };
        let mut hosts = Vec::with_capacity(regions.len());
        for r in regions {
            hosts.push(self.take_into(&mut staged, s, r)?);
        }
        let d = Runtimes::global().get(s.vendor)?;
        for (r, &host) in regions.iter().zip(&hosts) {
            if !r.copy_in || r.device.len == 0 {
                continue;
            }
            // SAFETY: `r.device` is device memory of `len` bytes on this device (the
            // caller's buffer or the island's scratch); `host` a pinned buffer of at
            // least `len` bytes that this unit owns until its fence passes.
            let c = unsafe {
                d.copy_to_host(
                    s.index,
                    host as *mut u8,
                    r.device.addr,
                    r.device.len,
                    s.stream,
                )
            };
            if let Err(e) = c {
                self.give_back(std::mem::take(&mut staged.taken), None);
                return Err(e.into());
            }
        }
        Ok((hosts, staged))
    }

    /// Queues a copy of `len` bytes from device buffer `src` to `dst` on `s`, through
    /// a pinned buffer (the runtimes copy between device and host only); the buffer
    /// returns to the pool behind a fence.
    pub fn copy_through(&self, s: &CallerStream, src: usize, dst: usize, len: usize) -> Outcome {
        if len == 0 {
            return Ok(());
        }
        let region = Region {
            device: RawBuf { addr: src, len },
            copy_in: true,
            copy_out: None,
        };
        let (hosts, mut staged) = self.stage_regions(s, &[region])?;
        staged.outs.push((*s, dst, hosts[0], len));
        self.stage_out(staged)
    }

    /// Queues the copies out after the unit's holds, then a fence on each stream,
    /// and returns the buffers to the pool behind the fence.
    pub fn stage_out(&self, staged: Staged) -> Outcome {
        let rt = Runtimes::global();
        let mut first_err = None;
        for (s, dev, host, len) in &staged.outs {
            let d = rt.get(s.vendor)?;
            // SAFETY: `dev` lies in the caller's device buffer of this call (its
            // written part); `host` in a pinned buffer the unit owns until the fence
            // recorded below has passed, which is after this copy has run.
            let r = unsafe { d.copy_to_device(s.index, *dev, *host as *const u8, *len, s.stream) };
            if let Err(e) = r {
                first_err.get_or_insert(Failure::from(e));
            }
        }
        let mut events = Vec::new();
        for s in &staged.streams {
            let d = rt.get(s.vendor)?;
            match stream::take_event(d, s.index).and_then(|e| {
                d.record_event(s.index, e, s.stream)?;
                Ok(e)
            }) {
                Ok(e) => events.push((*s, d, e)),
                Err(e) => {
                    first_err.get_or_insert(Failure::from(e));
                }
            }
        }
        // A stream whose fence could not be recorded keeps its buffers out of the
        // pool for good: nothing tells when its copies have run.
        let fence = (events.len() == staged.streams.len()).then(|| Arc::new(Fence { events }));
        match fence {
            Some(f) => self.give_back(staged.taken, Some(f)),
            None => std::mem::forget(staged.taken),
        }
        first_err.map_or(Ok(()), Err)
    }

    fn give_back(&self, taken: Vec<Slot>, fence: Option<Arc<Fence>>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for mut s in taken {
            s.fence = fence.clone();
            slots.push(s);
        }
    }
}

impl Drop for Pool {
    /// Frees the buffers whose copies have run; waits up to [`DRAIN_LIMIT`] for the
    /// others (the communicator may be destroyed right after its last enqueue), and
    /// leaks those still queued rather than free memory a copy may yet touch.
    fn drop(&mut self) {
        let slots = std::mem::take(self.slots.get_mut().unwrap_or_else(|e| e.into_inner()));
        let end = std::time::Instant::now() + DRAIN_LIMIT;
        for slot in slots {
            while !slot.idle() && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            if slot.idle() {
                drop(slot);
            } else {
                std::mem::forget(slot.mem);
            }
        }
    }
}

/// How long dropping a pool waits for copies still queued on callers' streams.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
