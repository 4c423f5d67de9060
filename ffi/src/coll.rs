//! One collective or point-to-point call as C made it, validated: integers become a
//! `DataType`, an op and ranks; pointers become [`RawBuf`]s, with NCCL's in-place
//! rules deciding whether the call reads a separate send buffer. A call is checked
//! whole before any byte moves, so a bad argument leaves the communicator usable.
//!
//! In place (NCCL's rules): AllReduce, Broadcast, Reduce and AlltoAll when
//! `sendbuff == recvbuff`; ReduceScatter when `recvbuff == sendbuff + rank*recvcount`;
//! AllGather when `sendbuff == recvbuff + rank*sendcount`. In place, the
//! `mixccl::Communicator` gets `send: None` and the whole buffer as `recv`; buffers
//! that overlap any other way are rejected, since Rust must never hold a shared and a
//! mutable slice over the same bytes.
//!
//! A call runs either host-synchronously (it first waits on the host for the
//! caller's stream: [`StreamWait::Host`]) or on the progress thread of a
//! stream-ordered unit, whose ready marks have already seen the stream reach it
//! ([`StreamWait::Done`]; see `stream`).

use crate::cast::RawBuf;
use crate::comm::{Facts, Shared};
use crate::redop::{scaled_copy, OpSpec};
use crate::staging::Region;
use crate::status::{Failure, Outcome};
use crate::stream::CallerStream;
use mixccl::device::{MemoryKind, StreamHandle};
use mixccl::{Collective, Communicator, DataType, MemRef, ReduceOp, Transfer, TransferMem};
use std::ffi::{c_int, c_void};

/// Whether a call still has to wait for its caller's stream before reading its
/// buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamWait {
    /// Wait on the host (synchronize the stream) first.
    Host,
    /// The stream already reached the call (a stream-ordered unit's ready marks).
    Done,
}

/// The caller stream of a call whose buffers include device memory: on the runtime
/// and device of the first device buffer. None for host buffers only.
fn device_stream(bufs: &[RawBuf], stream: StreamHandle) -> Outcome<Option<CallerStream>> {
    for b in bufs {
        if let MemoryKind::Device { vendor, index } = b.mem()?.kind() {
            return Ok(Some(CallerStream {
                vendor,
                index,
                stream,
            }));
        }
    }
    Ok(None)
}

/// Which collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    AllReduce,
    Broadcast,
    Reduce,
    AllGather,
    ReduceScatter,
    AllToAll,
}

impl Kind {
    fn reduces(self) -> bool {
        matches!(self, Kind::AllReduce | Kind::Reduce | Kind::ReduceScatter)
    }

    fn rooted(self) -> bool {
        matches!(self, Kind::Broadcast | Kind::Reduce)
    }
}

/// A collective's arguments as C passed them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Args {
    pub send: *const c_void,
    pub recv: *mut c_void,
    pub count: usize,
    pub dtype: c_int,
    pub op: c_int,
    pub root: c_int,
    /// The caller's stream (`cudaStream_t` or another vendor's); 0 is the default.
    pub stream: usize,
}

/// A collective as the communicator's island route sees it ([`CollCall::island_form`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IslandForm {
    pub coll: Collective,
    pub dtype: DataType,
    /// The op the communicator runs (a scaled sum runs as a sum of a scaled copy).
    pub op: ReduceOp,
    /// A `ncclRedOpCreatePreMulSum` op: the input is scaled on the host first.
    pub scaled: bool,
    pub root: usize,
    /// Elements, per block for all-gather and reduce-scatter.
    pub count: usize,
    pub send: Option<RawBuf>,
    pub recv: RawBuf,
}

/// A validated collective call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CollCall {
    kind: Kind,
    dtype: DataType,
    op: OpSpec,
    root: usize,
    rank: usize,
    nranks: usize,
    /// What the collective reads; None when in place.
    send: Option<RawBuf>,
    /// What it writes; in place, the whole buffer it reads and writes.
    recv: RawBuf,
    /// The caller's stream, waited for before the call reads its buffers.
    stream: usize,
}

/// The data type for C's integer.
pub(crate) fn dtype_of(v: c_int) -> Outcome<DataType> {
    DataType::from_nccl(v).ok_or_else(|| {
        Failure::invalid(format!(
            "datatype {v} is not an ncclDataType_t (0..=11, ncclInt8..ncclFloat8e5m2) nor \
             mixcclFloat8e4m3fnuz (64) or mixcclFloat8e5m2fnuz (65)"
        ))
    })
}

fn rank_of(what: &str, v: c_int, nranks: usize) -> Outcome<usize> {
    usize::try_from(v)
        .ok()
        .filter(|r| *r < nranks)
        .ok_or_else(|| Failure::invalid(format!("{what} {v} is out of range for {nranks} ranks")))
}

/// `count * blocks` elements of `dtype` in bytes.
fn bytes(count: usize, dtype: DataType, blocks: usize) -> Outcome<usize> {
    count
        .checked_mul(dtype.size())
        .and_then(|b| b.checked_mul(blocks))
        .filter(|b| *b <= isize::MAX as usize)
        .ok_or_else(|| {
            Failure::invalid(format!(
                "count {count} x {blocks} of {dtype} overflows the address space"
            ))
        })
}

/// In place when the pointers are equal; otherwise two buffers that must not overlap.
fn same_or_apart(
    send: *const c_void,
    recv: *mut c_void,
    send_len: usize,
    recv_len: usize,
) -> Outcome<(Option<RawBuf>, RawBuf)> {
    if send == recv.cast_const() && send_len == recv_len {
        return Ok((None, RawBuf::new(recv, recv_len, "recvbuff")?));
    }
    apart(send, recv, send_len, recv_len)
}

fn apart(
    send: *const c_void,
    recv: *mut c_void,
    send_len: usize,
    recv_len: usize,
) -> Outcome<(Option<RawBuf>, RawBuf)> {
    let s = RawBuf::new(send, send_len, "sendbuff")?;
    let r = RawBuf::new(recv, recv_len, "recvbuff")?;
    if s.overlaps(r) {
        return Err(Failure::invalid(format!(
            "sendbuff [{send:p}, +{send_len}) and recvbuff [{recv:p}, +{recv_len}) overlap \
             but are not in place by NCCL's rule for this collective"
        )));
    }
    Ok((Some(s), r))
}

impl CollCall {
    /// Validates a call of `kind` on `comm`.
    pub fn new(kind: Kind, comm: &Shared, facts: Facts, a: Args) -> Outcome<CollCall> {
        let dtype = dtype_of(a.dtype)?;
        let Facts { rank, nranks } = facts;
        let op = if kind.reduces() {
            comm.ops
                .lock()
                .map_err(|_| Failure::internal("op table poisoned"))?
                .resolve(a.op, dtype)?
        } else {
            OpSpec::Builtin(ReduceOp::Sum)
        };
        let root = if kind.rooted() {
            rank_of("root", a.root, nranks)?
        } else {
            0
        };
        let b = bytes(a.count, dtype, 1)?;
        let (send, recv) = match kind {
            Kind::AllReduce => same_or_apart(a.send, a.recv, b, b)?,
            Kind::AllToAll => {
                let total = bytes(a.count, dtype, nranks)?;
                same_or_apart(a.send, a.recv, total, total)?
            }
            Kind::Broadcast | Kind::Reduce if rank == root => same_or_apart(a.send, a.recv, b, b)?,
            // A non-root broadcast only receives; sendbuff is not read (may be NULL).
            Kind::Broadcast => {
                let send = (a.send != a.recv.cast_const()).then_some(RawBuf::EMPTY);
                (send, RawBuf::new(a.recv, b, "recvbuff")?)
            }
            // A non-root reduce only reads; recvbuff may be NULL.
            Kind::Reduce if a.send == a.recv.cast_const() => {
                (None, RawBuf::new(a.recv, b, "recvbuff")?)
            }
            Kind::Reduce => (Some(RawBuf::new(a.send, b, "sendbuff")?), RawBuf::EMPTY),
            Kind::AllGather => {
                let total = bytes(a.count, dtype, nranks)?;
                let own = (a.recv as usize).checked_add(rank * b);
                if own == Some(a.send as usize) {
                    (None, RawBuf::new(a.recv, total, "recvbuff")?)
                } else {
                    apart(a.send, a.recv, b, total)?
                }
            }
            Kind::ReduceScatter => {
                let total = bytes(a.count, dtype, nranks)?;
                let own = (a.send as usize).checked_add(rank * b);
                if own == Some(a.recv as usize) {
                    (None, RawBuf::new(a.send, total, "sendbuff")?)
                } else {
                    apart(a.send, a.recv, total, b)?
                }
            }
        };
        Ok(CollCall {
            kind,
            dtype,
            op,
            root,
            rank,
            nranks,
            send,
            recv,
            stream: a.stream,
        })
    }

    /// Where an in-place call leaves its result.
    fn in_place_output(&self) -> RawBuf {
        match self.kind {
            Kind::ReduceScatter => {
                let b = self.recv.len / self.nranks;
                self.recv.sub(self.rank * b, b)
            }
            Kind::Reduce if self.rank != self.root => RawBuf::EMPTY,
            _ => self.recv,
        }
    }

    /// The collective this call runs.
    /// The collective and the bytes per rank the planner weighs it by (the buffer
    /// for all_reduce, broadcast and reduce; one block for the others).
    pub(crate) fn planned_bytes(&self) -> (Collective, usize) {
        let n = self.nranks.max(1);
        let whole = self
            .send
            .map_or(self.recv.len, |s| s.len.max(self.recv.len));
        let bytes = match self.kind {
            Kind::AllReduce | Kind::Broadcast | Kind::Reduce => whole,
            Kind::AllGather => self.send.map_or(self.recv.len / n, |s| s.len),
            Kind::ReduceScatter => match self.send {
                Some(_) => self.recv.len,
                None => self.recv.len / n,
            },
            Kind::AllToAll => self.send.map_or(self.recv.len, |s| s.len) / n,
        };
        (self.collective(), bytes)
    }

    fn collective(&self) -> Collective {
        match self.kind {
            Kind::AllReduce => Collective::AllReduce,
            Kind::Broadcast => Collective::Broadcast,
            Kind::Reduce => Collective::Reduce,
            Kind::AllGather => Collective::AllGather,
            Kind::ReduceScatter => Collective::ReduceScatter,
            Kind::AllToAll => Collective::AllToAll,
        }
    }

    /// The call as the communicator's island route sees it (None for the
    /// collectives that never go through islands).
    pub fn island_form(&self) -> Option<IslandForm> {
        if matches!(self.kind, Kind::Reduce | Kind::AllToAll) {
            return None;
        }
        // The buffer for all-reduce and broadcast, one block for the others.
        let count = self.planned_bytes().1 / self.dtype.size().max(1);
        let (op, scaled) = match self.op {
            OpSpec::Builtin(op) => (op, false),
            OpSpec::PreMulSum(_) => (ReduceOp::Sum, true),
        };
        Some(IslandForm {
            coll: self.collective(),
            dtype: self.dtype,
            op,
            scaled,
            root: self.root,
            count,
            send: self.send,
            recv: self.recv,
        })
    }

    /// The buffers the call touches, with what it reads and writes of each (for
    /// staging on the caller's stream, `staging`).
    pub fn regions(&self) -> Vec<Region> {
        let written = |out: RawBuf| (out.len > 0).then(|| (out.addr - self.recv.addr, out.len));
        match self.send {
            // In place: the one buffer is read whole, and written where the result lands.
            None => vec![Region {
                device: self.recv,
                copy_in: true,
                copy_out: written(self.in_place_output()),
            }],
            Some(send) => vec![
                Region {
                    device: send,
                    copy_in: true,
                    copy_out: None,
                },
                Region {
                    device: self.recv,
                    copy_in: false,
                    copy_out: written(self.recv),
                },
            ],
        }
    }

    /// The same call on other buffers: `map` gives each buffer's replacement (of the
    /// same length).
    pub fn with_buffers(&self, map: impl Fn(RawBuf) -> RawBuf) -> CollCall {
        CollCall {
            send: self.send.map(&map),
            recv: map(self.recv),
            ..*self
        }
    }

    /// The caller's stream if the call touches device memory (see [`device_stream`]).
    pub fn device_stream(&self) -> Outcome<Option<CallerStream>> {
        let bufs: Vec<RawBuf> = self.send.into_iter().chain([self.recv]).collect();
        device_stream(&bufs, self.stream)
    }

    /// Runs the call (blocking) on `comm`: waits for the caller's stream if `wait`
    /// says so, then runs on host memory directly or stages device memory through
    /// the host.
    ///
    /// The caller's buffers must still be valid (nccl.h: until the call, or the
    /// group holding it, returns; stream-ordered: until its stream has passed it).
    pub fn run(&self, comm: &mut Communicator, wait: StreamWait) -> Outcome {
        let send = self.send.map(RawBuf::mem).transpose()?;
        let recv = self.recv.mem()?;
        let bufs: Vec<MemRef> = send.into_iter().chain([recv]).collect();
        if wait == StreamWait::Host {
            mixccl::device::wait_stream(self.stream, &bufs)?;
        }
        if !bufs.iter().any(MemRef::is_device) {
            return self.run_host(comm);
        }
        let (op, scaled) = match self.op {
            OpSpec::Builtin(op) => (op, None),
            OpSpec::PreMulSum(scalar) => {
                // Scale a host copy of the input; the call then sums it into `recv`
                // (in place: into the in-place output).
                let src = send.unwrap_or(recv);
                let mut host = vec![0u8; src.len()];
                src.read_into(&mut host)?;
                (ReduceOp::Sum, Some(scaled_copy(self.dtype, &host, scalar)?))
            }
        };
        let (send, recv) = match &scaled {
            None => (send, recv),
            Some(s) => (
                // SAFETY: our own vector, alive until the call below returns.
                Some(unsafe { MemRef::with_kind(s.as_ptr(), s.len(), MemoryKind::Host) }),
                if send.is_some() {
                    recv
                } else {
                    self.in_place_output().mem()?
                },
            ),
        };
        comm.collective_mem(self.collective(), self.dtype, op, self.root, send, recv)?;
        Ok(())
    }

    /// [`CollCall::run`] for host buffers: slices and the byte-level calls.
    fn run_host(&self, comm: &mut Communicator) -> Outcome {
        let scaled: Vec<u8>;
        let (op, input, output) = match self.op {
            OpSpec::Builtin(op) => {
                // SAFETY: `new` checked that `send` does not overlap `recv`, the only
                // buffer made mutable below; the caller keeps it valid (see above).
                let input = self.send.map(|s| unsafe { s.as_slice() });
                (op, input, self.recv)
            }
            OpSpec::PreMulSum(scalar) => {
                // In place the whole buffer is the input; the scaled copy is separate
                // memory, so the call runs out of place into the in-place output.
                let (src, out) = match self.send {
                    Some(s) => (s, self.recv),
                    None => (self.recv, self.in_place_output()),
                };
                // SAFETY: no mutable slice exists while this one lives (it ends with
                // the copy); the caller keeps the buffer valid.
                scaled = scaled_copy(self.dtype, unsafe { src.as_slice() }, scalar)?;
                (ReduceOp::Sum, Some(&scaled[..]), out)
            }
        };
        // SAFETY: the only other slice alive is `input`, which is either the caller's
        // send buffer (checked not to overlap `output` in `new`) or our own copy; the
        // caller keeps the buffer valid and does not touch it during the call.
        let output = unsafe { output.as_mut_slice() };
        let d = self.dtype;
        match self.kind {
            Kind::AllReduce => comm.all_reduce_raw(d, op, input, output),
            Kind::Broadcast => comm.broadcast_raw(d, input, output, self.root),
            Kind::Reduce => comm.reduce_raw(d, op, input, output, self.root),
            Kind::AllGather => comm.all_gather_raw(d, input, output),
            Kind::ReduceScatter => comm.reduce_scatter_raw(d, op, input, output),
            Kind::AllToAll => comm.all_to_all_raw(d, input, output),
        }?;
        Ok(())
    }
}

/// A validated `ncclSend` or `ncclRecv`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct P2p {
    pub send: bool,
    pub peer: usize,
    pub buf: RawBuf,
    /// The caller's stream, waited for before the transfer reads its buffer.
    pub stream: usize,
}

impl P2p {
    /// Validates a send (`send`) or receive of `count` elements with `peer`.
    pub fn new(
        send: bool,
        facts: Facts,
        buf: *const c_void,
        count: usize,
        dtype: c_int,
        peer: c_int,
        stream: usize,
    ) -> Outcome<P2p> {
        let dtype = dtype_of(dtype)?;
        let peer = rank_of("peer", peer, facts.nranks)?;
        let len = bytes(count, dtype, 1)?;
        let buf = RawBuf::new(buf, len, if send { "sendbuff" } else { "recvbuff" })?;
        Ok(P2p {
            send,
            peer,
            buf,
            stream,
        })
    }
}

impl P2p {
    /// The buffer, read by a send and written by a receive (see [`CollCall::regions`]).
    pub fn region(&self) -> Region {
        Region {
            device: self.buf,
            copy_in: self.send,
            copy_out: (!self.send).then_some((0, self.buf.len)),
        }
    }

    /// The caller's stream if the buffer is device memory.
    pub fn device_stream(&self) -> Outcome<Option<CallerStream>> {
        device_stream(&[self.buf], self.stream)
    }
}

/// Runs `p2p` together as one `Communicator::group`, first waiting for each
/// transfer's stream if `wait` says so.
///
/// The buffers must still be valid (nccl.h: until the group returns; stream-ordered:
/// until the streams have passed it).
pub(crate) fn run_p2p(comm: &mut Communicator, p2p: &[P2p], wait: StreamWait) -> Outcome {
    if p2p.is_empty() {
        return Ok(());
    }
    check_disjoint(p2p)?;
    let mems = p2p
        .iter()
        .map(|t| t.buf.mem())
        .collect::<Outcome<Vec<MemRef>>>()?;
    if wait == StreamWait::Host {
        for (t, m) in p2p.iter().zip(&mems) {
            mixccl::device::wait_stream(t.stream, std::slice::from_ref(m))?;
        }
    }
    if mems.iter().any(MemRef::is_device) {
        let transfers: Vec<TransferMem> = p2p
            .iter()
            .zip(mems)
            .map(|(t, buf)| match t.send {
                true => TransferMem::Send { peer: t.peer, buf },
                false => TransferMem::Recv { peer: t.peer, buf },
            })
            .collect();
        comm.group_mem(&transfers)?;
        return Ok(());
    }
    let transfers = p2p
        .iter()
        .map(|t| {
            if t.send {
                // SAFETY: `check_disjoint` found no receive buffer overlapping this one,
                // and the caller keeps it valid until the group returns.
                let buf = unsafe { t.buf.as_slice() };
                Transfer::Send { peer: t.peer, buf }
            } else {
                // SAFETY: `check_disjoint` found no other buffer of the group
                // overlapping this one; the caller keeps it valid.
                let buf = unsafe { t.buf.as_mut_slice() };
                Transfer::Recv { peer: t.peer, buf }
            }
        })
        .collect();
    comm.group(transfers)?;
    Ok(())
}

/// Rejects a group where a receive buffer overlaps any other buffer (sends may share).
pub(crate) fn check_disjoint(p2p: &[P2p]) -> Outcome {
    let mut bufs: Vec<&P2p> = p2p.iter().filter(|t| t.buf.len > 0).collect();
    bufs.sort_by_key(|t| t.buf.addr);
    let (mut any_end, mut recv_end) = (0usize, 0usize);
    for t in bufs {
        if t.buf.addr < recv_end || (!t.send && t.buf.addr < any_end) {
            return Err(Failure::invalid(format!(
                "a receive buffer of this group overlaps another buffer of it (at {:#x}, peer {})",
                t.buf.addr, t.peer
            )));
        }
        let end = t.buf.addr + t.buf.len;
        any_end = any_end.max(end);
        if !t.send {
            recv_end = recv_end.max(end);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(send: bool, addr: usize, len: usize) -> P2p {
        P2p {
            send,
            peer: 0,
            buf: RawBuf { addr, len },
            stream: 0,
        }
    }

    #[test]
    fn receive_buffers_must_not_overlap_anything() {
        assert!(check_disjoint(&[t(true, 0, 10), t(true, 5, 10), t(false, 15, 5)]).is_ok());
        assert!(check_disjoint(&[t(true, 0, 10), t(false, 9, 5)]).is_err());
        assert!(check_disjoint(&[t(false, 0, 10), t(true, 9, 5)]).is_err());
        assert!(check_disjoint(&[t(false, 0, 100), t(true, 200, 5), t(true, 50, 1)]).is_err());
        assert!(check_disjoint(&[t(false, 0, 10), t(false, 10, 10), t(false, 5, 0)]).is_ok());
    }

    fn shared(rank: usize, nranks: usize) -> std::sync::Arc<Shared> {
        let comms = Communicator::in_process(nranks, mixccl::Config::default()).unwrap();
        Shared::new(comms.into_iter().nth(rank).unwrap(), 0)
    }

    fn args(send: usize, recv: usize, count: usize) -> Args {
        Args {
            send: send as *const c_void,
            recv: recv as *mut c_void,
            count,
            dtype: 7,
            op: 0,
            root: 0,
            stream: 0,
        }
    }

    #[test]
    fn nccl_in_place_rules() {
        let c = shared(1, 3);
        // AllGather: in place when send == recv + rank * count.
        let g = CollCall::new(
            Kind::AllGather,
            &c,
            c.facts().unwrap(),
            args(0x1000 + 40, 0x1000, 10),
        )
        .unwrap();
        assert_eq!(g.send, None);
        assert_eq!(
            g.recv,
            RawBuf {
                addr: 0x1000,
                len: 120
            }
        );
        assert!(CollCall::new(
            Kind::AllGather,
            &c,
            c.facts().unwrap(),
            args(0x1000 + 4, 0x1000, 10)
        )
        .is_err());
        let g = CollCall::new(
            Kind::AllGather,
            &c,
            c.facts().unwrap(),
            args(0x2000, 0x1000, 10),
        )
        .unwrap();
        assert_eq!(
            g.send,
            Some(RawBuf {
                addr: 0x2000,
                len: 40
            })
        );
        // ReduceScatter: in place when recv == send + rank * count.
        let r = CollCall::new(
            Kind::ReduceScatter,
            &c,
            c.facts().unwrap(),
            args(0x1000, 0x1000 + 40, 10),
        )
        .unwrap();
        assert_eq!(r.send, None);
        assert_eq!(
            r.in_place_output(),
            RawBuf {
                addr: 0x1028,
                len: 40
            }
        );
        assert!(CollCall::new(
            Kind::ReduceScatter,
            &c,
            c.facts().unwrap(),
            args(0x1000, 0x1000, 10)
        )
        .is_err());
        // AllReduce: equal pointers, else apart.
        assert_eq!(
            CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), args(8, 8, 10))
                .unwrap()
                .send,
            None
        );
        assert!(CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), args(8, 12, 10)).is_err());
        // Reduce off the root: recv unused (may be NULL or anything).
        let mut a = args(0x1000, 0, 10);
        a.root = 0;
        let r = CollCall::new(Kind::Reduce, &c, c.facts().unwrap(), a).unwrap();
        assert_eq!(r.recv, RawBuf::EMPTY);
        a.root = 3;
        assert!(CollCall::new(Kind::Reduce, &c, c.facts().unwrap(), a).is_err());
        // Broadcast off the root: send unused, in place only if equal.
        let b =
            CollCall::new(Kind::Broadcast, &c, c.facts().unwrap(), args(0, 0x1000, 10)).unwrap();
        assert_eq!(b.send, Some(RawBuf::EMPTY));
        let b = CollCall::new(
            Kind::Broadcast,
            &c,
            c.facts().unwrap(),
            args(0x1000, 0x1000, 10),
        )
        .unwrap();
        assert_eq!(b.send, None);
        // Counts that overflow, NULL with count > 0, bad dtype and op.
        assert!(CollCall::new(
            Kind::AllReduce,
            &c,
            c.facts().unwrap(),
            args(8, 0x10000, usize::MAX / 2)
        )
        .is_err());
        assert!(
            CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), args(0, 0x1000, 1)).is_err()
        );
        assert!(CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), args(0, 0, 0)).is_ok());
        let mut a = args(8, 0x1000, 1);
        a.dtype = 12;
        assert!(CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), a).is_err());
        a.dtype = 0;
        a.op = 5;
        assert!(CollCall::new(Kind::AllReduce, &c, c.facts().unwrap(), a).is_err());
        a.op = 5;
        assert!(
            CollCall::new(Kind::AllGather, &c, c.facts().unwrap(), a).is_ok(),
            "op is not read"
        );
    }
}
