//! Collectives on buffers in any memory ([`MemRef`]): host buffers go straight to the
//! byte-level calls; device buffers move through pinned host memory.
//!
//! All-reduce, broadcast and reduce are split into pieces on every rank alike
//! (`Config::pipeline_bytes`, see `Communicator::launch`), and a staging thread keeps
//! three pinned piece buffers turning: while piece k is on the wire it copies piece
//! k-1's result back to the device and piece k+1's input to the host. The other
//! collectives and point-to-point transfers stage the whole buffer in, run, and stage
//! it out. The wire never sees memory kinds, so ranks with host, CUDA, HIP or any
//! other memory mix freely in one communicator.

use super::Communicator;
use crate::config::Collective;
use crate::device::{Device, HostMemory, MemRef, MemoryKind, Runtimes};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use std::sync::mpsc;

/// One transfer of [`Communicator::group_mem`].
#[derive(Debug, Clone, Copy)]
pub enum TransferMem {
    /// Send `buf` to rank `peer`.
    Send {
        /// Destination rank.
        peer: usize,
        /// Bytes to send.
        buf: MemRef,
    },
    /// Receive `buf.len()` bytes from rank `peer`.
    Recv {
        /// Source rank.
        peer: usize,
        /// Where the bytes land.
        buf: MemRef,
    },
}

/// A device runtime and device index.
type DeviceOf = (&'static dyn Device, i32);

/// What a communicator keeps between staged calls: pinned host buffers and device
/// streams, so a call allocates nothing once the sizes have been seen.
#[derive(Default)]
pub(crate) struct Staging {
    bufs: Vec<Option<HostMemory>>,
    streams: Vec<Stream>,
}

fn same_device(a: DeviceOf, b: DeviceOf) -> bool {
    a.0.vendor() == b.0.vendor() && a.1 == b.1
}

fn device_of(m: &MemRef) -> Result<Option<DeviceOf>> {
    match m.kind() {
        MemoryKind::Host => Ok(None),
        MemoryKind::Device { vendor, index } => Ok(Some((Runtimes::global().get(vendor)?, index))),
    }
}

/// A stream of one device, destroyed on drop.
pub(crate) struct Stream {
    dev: DeviceOf,
    handle: usize,
}

impl Stream {
    fn new(dev: DeviceOf) -> Result<Stream> {
        Ok(Stream {
            dev,
            handle: dev.0.create_stream(dev.1)?,
        })
    }

    /// Copies `len` bytes of device memory at `src` to host `dst` and waits.
    ///
    /// # Safety
    /// `src` is this device's memory of `len` bytes; `dst` host memory writable for
    /// `len` bytes that nothing else touches during the call.
    unsafe fn to_host(&self, dst: usize, src: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.dev
                .0
                .copy_to_host(self.dev.1, dst as *mut u8, src, len, self.handle)?
        };
        self.dev.0.synchronize(self.dev.1, self.handle)
    }

    /// Copies `len` bytes of host memory at `src` to device `dst` and waits.
    ///
    /// # Safety
    /// As [`Stream::to_host`], the other direction.
    unsafe fn to_device(&self, dst: usize, src: usize, len: usize) -> Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            self.dev
                .0
                .copy_to_device(self.dev.1, dst, src as *const u8, len, self.handle)?
        };
        self.dev.0.synchronize(self.dev.1, self.handle)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.dev.0.destroy_stream(self.dev.1, self.handle);
    }
}

/// The host bytes of a host `MemRef`, `[off, off + len)`, or empty when the buffer
/// is shorter (a buffer this rank does not use).
///
/// # Safety
/// `m` is host memory (MemRef's contract makes it valid), and no mutable view of
/// these bytes exists while the slice lives.
unsafe fn host_piece<'a>(m: &MemRef, off: usize, len: usize) -> &'a [u8] {
    if m.len() < off + len {
        return &[];
    }
    // SAFETY: within the buffer, which is readable host memory by MemRef's contract.
    unsafe { std::slice::from_raw_parts((m.addr() + off) as *const u8, len) }
}

/// As [`host_piece`], writable.
///
/// # Safety
/// As [`host_piece`], and no other view of these bytes exists while the slice lives.
unsafe fn host_piece_mut<'a>(m: &MemRef, off: usize, len: usize) -> &'a mut [u8] {
    if m.len() < off + len {
        return &mut [];
    }
    // SAFETY: within the buffer, exclusively ours for the call by MemRef's contract.
    unsafe { std::slice::from_raw_parts_mut((m.addr() + off) as *mut u8, len) }
}

/// `len` bytes of pinned host memory at `ptr` (a staging buffer).
///
/// # Safety
/// `ptr` is a live staging buffer of at least `len` bytes that no other thread
/// touches while the slice lives.
unsafe fn staged<'a>(ptr: usize, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, len) }
}

impl Communicator {
    /// Runs collective `coll` on buffers in any memory (host, or device memory of any
    /// loaded runtime; `send` and `recv` may differ). `send: None` means in place, as
    /// for the `*_raw` calls, whose buffer rules apply. Device results are written
    /// before this returns. `root` is ignored by collectives without one.
    pub fn collective_mem(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        send: Option<MemRef>,
        recv: MemRef,
    ) -> Result<()> {
        let count = self.count_of(coll, dtype, root, send.map(|s| s.len()), recv.len())?;
        if let Some(s) = send {
            let (a, b) = (
                s.addr()..s.addr() + s.len(),
                recv.addr()..recv.addr() + recv.len(),
            );
            if !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end {
                return Err(Error::invalid(format!(
                    "{coll} on rank {}: send [{:#x}, +{}) and recv [{:#x}, +{}) overlap; \
                     pass no send buffer for in place",
                    self.rank(),
                    s.addr(),
                    s.len(),
                    recv.addr(),
                    recv.len()
                )));
            }
        }
        if self.island_route(coll, dtype, op) {
            return self.island_call(coll, dtype, op, root, count, send, recv);
        }
        if !send.is_some_and(|s| s.is_device()) && !recv.is_device() {
            // SAFETY: both are host memory (MemRef's contract) and do not overlap.
            let input = send.map(|s| unsafe { host_piece(&s, 0, s.len()) });
            // SAFETY: as above; recv is exclusively ours for the call.
            let output = unsafe { host_piece_mut(&recv, 0, recv.len()) };
            return self.launch(coll, dtype, op, count, root, input, output);
        }
        match coll {
            Collective::AllReduce | Collective::Broadcast | Collective::Reduce => {
                self.staged_pieces(coll, dtype, op, count, root, send, recv)
            }
            _ => self.staged_whole(coll, dtype, op, count, send, recv),
        }
    }

    /// Takes staging buffer `slot` out of the pool, at least `len` bytes, pinned by
    /// `owner` (reallocated if it was pinned by another runtime or is too small).
    fn take_staging(&mut self, slot: usize, len: usize, owner: DeviceOf) -> Result<HostMemory> {
        let bufs = &mut self.staging.bufs;
        if bufs.len() <= slot {
            bufs.resize_with(slot + 1, || None);
        }
        if let Some(b) = bufs[slot].take() {
            if b.owner().is_some_and(|o| same_device(o, owner)) && b.len() >= len {
                return Ok(b);
            }
        }
        HostMemory::new(len.max(4096), Some(owner))
    }

    fn put_staging(&mut self, slot: usize, b: HostMemory) {
        self.staging.bufs[slot] = Some(b);
    }

    /// A stream of `dev` from the pool (created the first time).
    fn take_stream(&mut self, dev: DeviceOf) -> Result<Stream> {
        let streams = &mut self.staging.streams;
        match streams.iter().position(|s| same_device(s.dev, dev)) {
            Some(i) => Ok(streams.swap_remove(i)),
            None => Stream::new(dev),
        }
    }

    fn put_streams(&mut self, streams: impl IntoIterator<Item = Option<Stream>>) {
        self.staging.streams.extend(streams.into_iter().flatten());
    }

    /// Copies device or host buffer `m` into host memory `dst` (same length).
    fn copy_in(&mut self, m: MemRef, dst: &mut [u8]) -> Result<()> {
        let Some(dev) = device_of(&m)? else {
            return m.read_into(dst);
        };
        let s = self.take_stream(dev)?;
        // SAFETY: `m` is `dev`'s memory of dst.len() bytes (MemRef's contract, the
        // lengths are equal); `dst` is borrowed exclusively for the call.
        let r = unsafe { s.to_host(dst.as_mut_ptr() as usize, m.addr(), dst.len()) };
        self.put_streams([Some(s)]);
        r
    }

    /// Copies host memory `src` into device or host buffer `m` (same length).
    fn copy_out(&mut self, m: MemRef, src: &[u8]) -> Result<()> {
        let Some(dev) = device_of(&m)? else {
            return m.write_from(src);
        };
        let s = self.take_stream(dev)?;
        // SAFETY: as in copy_in, the other direction.
        let r = unsafe { s.to_device(m.addr(), src.as_ptr() as usize, src.len()) };
        self.put_streams([Some(s)]);
        r
    }

    /// All-reduce, broadcast or reduce with a device buffer: pieces pipelined through
    /// three pinned buffers by a staging thread (see the module comment); a call of
    /// one piece runs its copies on the calling thread.
    #[allow(clippy::too_many_arguments)]
    fn staged_pieces(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        root: usize,
        send: Option<MemRef>,
        recv: MemRef,
    ) -> Result<()> {
        let e = dtype.size();
        let me = self.rank();
        let reads = coll != Collective::Broadcast || me == root;
        let writes = coll != Collective::Reduce || me == root;
        let src = send.unwrap_or(recv);
        let owner = match (device_of(&src)?, device_of(&recv)?) {
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => {
                return Err(Error::Internal("staged call without device memory".into()))
            }
        };
        let src_stream = match device_of(&src)? {
            Some(d) if reads => Some(self.take_stream(d)?),
            _ => None,
        };
        let dst_stream = match device_of(&recv)? {
            Some(d) if writes => Some(self.take_stream(d)?),
            _ => None,
        };
        let piece = self.piece_elems(coll, dtype, count).unwrap_or(count.max(1));
        let npieces = count.div_ceil(piece).max(1);
        let nbuf = npieces.min(3);
        let mut bufs = Vec::with_capacity(nbuf);
        for slot in 0..nbuf {
            match self.take_staging(slot, piece * e, owner) {
                Ok(b) => bufs.push(b),
                Err(err) => {
                    self.put_streams([src_stream, dst_stream]);
                    return Err(err);
                }
            }
        }
        let ptrs: Vec<usize> = bufs.iter_mut().map(|b| b.as_mut_ptr() as usize).collect();
        let span = |k: usize| {
            let start = k * piece;
            (start * e, piece.min(count - start.min(count)) * e)
        };
        // SAFETY (both closures): `src`/`recv` are device memory covering [off,
        // off+len) of piece k (count was validated against their lengths), and the
        // caller hands over buffer k%nbuf only while the collective does not use it.
        let fetch = |k: usize| -> Result<()> {
            if let Some(s) = &src_stream {
                let (off, len) = span(k);
                unsafe { s.to_host(ptrs[k % nbuf], src.addr() + off, len)? };
            }
            Ok(())
        };
        let store = |k: usize| -> Result<()> {
            if let Some(s) = &dst_stream {
                let (off, len) = span(k);
                unsafe { s.to_device(recv.addr() + off, ptrs[k % nbuf], len)? };
            }
            Ok(())
        };
        let result = if npieces == 1 {
            fetch(0)
                .and_then(|_| self.run_piece(coll, dtype, op, root, send, recv, span(0), ptrs[0]))
                .and_then(|_| store(0))
        } else {
            std::thread::scope(|scope| {
                let (ready_tx, ready_rx) = mpsc::channel::<()>();
                let (done_tx, done_rx) = mpsc::channel::<()>();
                let (fetch, store) = (&fetch, &store);
                let stager = scope.spawn(move || -> Result<()> {
                    for k in 0..npieces.min(2) {
                        fetch(k)?;
                        if ready_tx.send(()).is_err() {
                            return Ok(());
                        }
                    }
                    for k in 0..npieces {
                        if done_rx.recv().is_err() {
                            return Ok(()); // the collective thread stopped
                        }
                        store(k)?;
                        if k + 2 < npieces {
                            fetch(k + 2)?;
                            if ready_tx.send(()).is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Ok(())
                });
                let mut result = Ok(());
                for k in 0..npieces {
                    if ready_rx.recv().is_err() {
                        break; // the stager failed; its error comes from join
                    }
                    let r =
                        self.run_piece(coll, dtype, op, root, send, recv, span(k), ptrs[k % nbuf]);
                    if let Err(e) = r {
                        result = Err(e);
                        break;
                    }
                    if done_tx.send(()).is_err() {
                        break;
                    }
                }
                drop(done_tx);
                let staged = stager.join().unwrap_or_else(|_| {
                    Err(Error::Internal("device staging thread panicked".into()))
                });
                result.and(staged)
            })
        };
        for (slot, b) in bufs.into_iter().enumerate() {
            self.put_staging(slot, b);
        }
        self.put_streams([src_stream, dst_stream]);
        result
    }

    /// Runs piece `(off, len)` of a staged element-wise call, whose staged side(s)
    /// are in the pinned buffer at `buf`.
    #[allow(clippy::too_many_arguments)]
    fn run_piece(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        send: Option<MemRef>,
        recv: MemRef,
        (off, len): (usize, usize),
        buf: usize,
    ) -> Result<()> {
        // SAFETY: the pinned buffer holds at least a piece, and the staging side
        // leaves it alone until this piece's collective is done.
        let buf = unsafe { staged(buf, len) };
        let n = len / dtype.size();
        // In place means recv is device memory here (host calls never stage).
        let in_staged = send.map_or(true, |s| s.is_device());
        match (send, in_staged, recv.is_device()) {
            // Both sides staged: in place on the buffer.
            (_, true, true) => self.launch(coll, dtype, op, n, root, None, buf),
            (Some(s), false, true) => {
                // SAFETY: host send buffer, read only, disjoint from `buf`.
                let input = unsafe { host_piece(&s, off, len) };
                self.launch(coll, dtype, op, n, root, Some(input), buf)
            }
            (Some(_), true, false) => {
                // SAFETY: host recv buffer, exclusively ours, disjoint from `buf`.
                let output = unsafe { host_piece_mut(&recv, off, len) };
                self.launch(coll, dtype, op, n, root, Some(buf), output)
            }
            _ => Err(Error::Internal("host-only call staged".into())),
        }
    }

    /// All-gather, reduce-scatter or all-to-all with a device buffer: stage what the
    /// call reads, run it on host memory, stage back what it writes.
    fn staged_whole(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        count: usize,
        send: Option<MemRef>,
        recv: MemRef,
    ) -> Result<()> {
        let block = count * dtype.size();
        let own = self.rank() * block..(self.rank() + 1) * block;
        // In place, which bytes of `recv` the call reads and which it writes.
        let (read, write) = match coll {
            Collective::AllGather => (own.clone(), 0..recv.len()),
            Collective::ReduceScatter => (0..recv.len(), own.clone()),
            _ => (0..recv.len(), 0..recv.len()),
        };
        let owner = match (
            send.map(|s| device_of(&s)).transpose()?.flatten(),
            device_of(&recv)?,
        ) {
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => {
                return Err(Error::Internal("staged call without device memory".into()))
            }
        };
        let mut out = self.take_staging(0, recv.len(), owner)?;
        let mut inp = match send {
            Some(s) if s.is_device() => Some(self.take_staging(1, s.len(), owner)?),
            _ => None,
        };
        let result = (|| -> Result<()> {
            let out_bytes = &mut out.as_mut_slice()[..recv.len()];
            match send {
                None => self.copy_in(recv.slice(read.start, read.len()), &mut out_bytes[read])?,
                Some(s) => {
                    if let Some(b) = inp.as_mut() {
                        self.copy_in(s, &mut b.as_mut_slice()[..s.len()])?;
                    }
                }
            }
            let input: Option<&[u8]> = match (send, inp.as_mut()) {
                (None, _) => None,
                (Some(s), Some(b)) => Some(&b.as_mut_slice()[..s.len()]),
                // SAFETY: host send buffer, read only, disjoint from the staging buffer.
                (Some(s), None) => Some(unsafe { host_piece(&s, 0, s.len()) }),
            };
            if recv.is_device() {
                self.launch(coll, dtype, op, count, 0, input, out_bytes)?;
                let w = if send.is_none() { write } else { 0..recv.len() };
                self.copy_out(recv.slice(w.start, w.len()), &out_bytes[w])
            } else {
                // SAFETY: host recv buffer, exclusively ours for the call.
                let output = unsafe { host_piece_mut(&recv, 0, recv.len()) };
                self.launch(coll, dtype, op, count, 0, input, output)
            }
        })();
        self.put_staging(0, out);
        if let Some(b) = inp {
            self.put_staging(1, b);
        }
        result
    }

    /// Runs sends and receives on buffers in any memory, as [`Communicator::group`]
    /// does for host slices: device sends are copied to the host first, device
    /// receives written back after.
    pub fn group_mem(&mut self, transfers: &[TransferMem]) -> Result<()> {
        // Pinned by the buffer's own runtime: some (CANN before 8) fail copies to
        // host memory they did not allocate.
        let mut host: Vec<Option<HostMemory>> = Vec::with_capacity(transfers.len());
        for t in transfers {
            let (TransferMem::Send { buf, .. } | TransferMem::Recv { buf, .. }) = t;
            let Some(dev) = device_of(buf)? else {
                host.push(None);
                continue;
            };
            let mut h = HostMemory::new(buf.len(), Some(dev))?;
            if matches!(t, TransferMem::Send { .. }) {
                self.copy_in(*buf, &mut h.as_mut_slice()[..buf.len()])?;
            }
            host.push(Some(h));
        }
        let mut list = Vec::with_capacity(transfers.len());
        for (t, h) in transfers.iter().zip(host.iter_mut()) {
            list.push(match (*t, h) {
                (TransferMem::Send { peer, buf }, Some(h)) => crate::Transfer::Send {
                    peer,
                    buf: &h.as_mut_slice()[..buf.len()],
                },
                (TransferMem::Send { peer, buf }, None) => crate::Transfer::Send {
                    peer,
                    // SAFETY: host send buffer, read only for the call.
                    buf: unsafe { host_piece(&buf, 0, buf.len()) },
                },
                (TransferMem::Recv { peer, buf }, Some(h)) => crate::Transfer::Recv {
                    peer,
                    buf: &mut h.as_mut_slice()[..buf.len()],
                },
                (TransferMem::Recv { peer, buf }, None) => crate::Transfer::Recv {
                    peer,
                    // SAFETY: host recv buffer, exclusively ours for the call.
                    buf: unsafe { host_piece_mut(&buf, 0, buf.len()) },
                },
            });
        }
        self.group(list)?;
        for (t, h) in transfers.iter().zip(host.iter_mut()) {
            if let (TransferMem::Recv { buf, .. }, Some(h)) = (t, h) {
                self.copy_out(*buf, &h.as_mut_slice()[..buf.len()])?;
            }
        }
        Ok(())
    }
}
