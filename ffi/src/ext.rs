//! The exported `mixccl*` extensions `include/mixccl.h` declares.
#![allow(non_snake_case)]

use crate::cast::{self, CommPtr, NcclUniqueId, RawBuf};
use crate::coll::dtype_of;
use crate::comm::{self, Facts, Shared};
use crate::group;
use crate::status::{guard, Failure, Outcome};
use mixccl::{Communicator, DataType, MemRef, ReduceOp};
use std::ffi::{c_char, c_int, c_void};

/// Joins the job the launcher's environment describes (see mixccl.h).
///
/// # Safety
/// `comm` is NULL or points to writable storage for a handle.
#[no_mangle]
pub unsafe extern "C" fn mixcclCommInitFromEnv(comm: *mut CommPtr) -> c_int {
    guard("mixcclCommInitFromEnv", || {
        cast::write(comm, "comm", std::ptr::null_mut())?;
        let shared = comm::init_from_env()?;
        cast::write(comm, "comm", cast::new_handle(shared))
    })
}

/// Writes an id as 256 hex characters and a NUL.
///
/// # Safety
/// `id` is NULL or points to an id; `hex` is NULL or has room for 257 characters.
#[no_mangle]
pub unsafe extern "C" fn mixcclUniqueIdToHex(id: *const NcclUniqueId, hex: *mut c_char) -> c_int {
    guard("mixcclUniqueIdToHex", || {
        let id = cast::read(id, "id")?;
        let mut text: Vec<c_char> = id
            .bytes()
            .iter()
            .flat_map(|b| format!("{b:02x}").into_bytes())
            .map(|c| c as c_char)
            .collect();
        text.push(0);
        cast::write_array(hex, "hex", text)
    })
}

/// Parses an id's hex text, checking its checksum.
///
/// # Safety
/// `hex` is NULL or a NUL-terminated string; `id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn mixcclUniqueIdFromHex(hex: *const c_char, id: *mut NcclUniqueId) -> c_int {
    guard("mixcclUniqueIdFromHex", || {
        let text = cast::c_str(hex, "hex")?;
        let parsed: mixccl::UniqueId = text
            .parse()
            .map_err(|e: mixccl::Error| Failure::invalid(e.to_string()))?;
        cast::write(id, "id", NcclUniqueId::from_bytes(parsed.as_bytes()))
    })
}

/// `n` counts or displacements from C; NULL is an error naming the array.
fn sizes(ptr: *const usize, n: usize, what: &str) -> Outcome<Vec<usize>> {
    cast::read_array(ptr, n).ok_or_else(|| Failure::invalid(format!("{what} is NULL")))
}

/// Bytes from a buffer's start to the end of its furthest block of `dtype`.
fn span(counts: &[usize], displs: &[usize], dtype: DataType, what: &str) -> Outcome<usize> {
    let mut end = 0usize;
    for (p, (c, d)) in counts.iter().zip(displs).enumerate() {
        let e = c
            .checked_add(*d)
            .and_then(|x| x.checked_mul(dtype.size()))
            .filter(|x| *x <= isize::MAX as usize)
            .ok_or_else(|| {
                Failure::invalid(format!(
                    "{what} block {p} ({c} x {dtype} at displacement {d}) overflows the address space"
                ))
            })?;
        if *c > 0 {
            end = end.max(e);
        }
    }
    Ok(end)
}

/// Runs an uneven call on `comm` now (host-synchronously, after the caller's stream):
/// `f` gets the send bytes (None in place) and the receive bytes. Device buffers are
/// staged through host copies. Not allowed inside a group.
fn run_uneven(
    comm: &Shared,
    stream: usize,
    send: Option<RawBuf>,
    recv: RawBuf,
    f: impl FnOnce(&mut Communicator, Option<&[u8]>, &mut [u8]) -> mixccl::Result<()>,
) -> Outcome {
    if let Some(s) = send {
        if s.overlaps(recv) {
            return Err(Failure::invalid(format!(
                "sendbuff [{:#x}, +{}) and recvbuff [{:#x}, +{}) overlap but the call is not in place",
                s.addr, s.len, recv.addr, recv.len
            )));
        }
    }
    comm.drain()?;
    let send_mem = send.map(RawBuf::mem).transpose()?;
    let recv_mem = recv.mem()?;
    let mems: Vec<MemRef> = send_mem.into_iter().chain([recv_mem]).collect();
    mixccl::device::wait_stream(stream, &mems)?;
    if !mems.iter().any(MemRef::is_device) {
        return comm.with(|c| {
            // SAFETY: `send` does not overlap `recv` (checked above), the only buffer
            // made mutable; the caller keeps both valid until the call returns.
            let input = send.map(|s| unsafe { s.as_slice() });
            // SAFETY: as above; no other slice covers these bytes.
            let output = unsafe { recv.as_mut_slice() };
            Ok(f(c, input, output)?)
        });
    }
    // Device memory: host copies in, the call, the receive buffer back.
    let input = match send_mem {
        Some(m) => {
            let mut v = vec![0u8; m.len()];
            m.read_into(&mut v)?;
            Some(v)
        }
        None => None,
    };
    let mut output = vec![0u8; recv_mem.len()];
    recv_mem.read_into(&mut output)?;
    comm.with(|c| Ok(f(c, input.as_deref(), &mut output)?))?;
    recv_mem.write_from(&output)?;
    Ok(())
}

/// Refuses uneven calls between ncclGroupStart and ncclGroupEnd.
fn not_in_group(what: &str) -> Outcome {
    if group::open() {
        return Err(Failure::usage(format!(
            "{what} runs at once and cannot be part of a group (call it outside ncclGroupStart/End)"
        )));
    }
    Ok(())
}

/// Uneven all-gather (see mixccl.h).
///
/// # Safety
/// `recvcounts` and `displs` hold nranks entries; the buffers are valid for the
/// sizes they give, until the call returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mixcclAllGatherV(
    sendbuff: *const c_void,
    sendcount: usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    displs: *const usize,
    datatype: c_int,
    comm: CommPtr,
    stream: *mut c_void,
) -> c_int {
    let what = "mixcclAllGatherV";
    guard(what, || {
        not_in_group(what)?;
        let c = cast::comm(comm)?;
        let Facts { rank, nranks } = c.ready()?;
        let dtype = dtype_of(datatype)?;
        let counts = sizes(recvcounts, nranks, "recvcounts")?;
        let displs = sizes(displs, nranks, "displs")?;
        if sendcount != counts[rank] {
            return Err(Failure::invalid(format!(
                "{what} on rank {rank}: sendcount {sendcount} but recvcounts[{rank}] is {}",
                counts[rank]
            )));
        }
        let total = span(&counts, &displs, dtype, "recvbuff")?;
        let recv = RawBuf::new(recvbuff, total, "recvbuff")?;
        let own = (recvbuff as usize).checked_add(displs[rank].saturating_mul(dtype.size()));
        let send = if own == Some(sendbuff as usize) {
            None
        } else {
            Some(RawBuf::new(
                sendbuff,
                sendcount.saturating_mul(dtype.size()),
                "sendbuff",
            )?)
        };
        run_uneven(&c, stream as usize, send, recv, |comm, s, r| {
            comm.all_gather_v_raw(dtype, s, r, &counts, &displs)
        })
    })
}

/// Uneven reduce-scatter (see mixccl.h).
///
/// # Safety
/// `sendcounts` and `displs` hold nranks entries; the buffers are valid for the
/// sizes they give, until the call returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mixcclReduceScatterV(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    displs: *const usize,
    recvbuff: *mut c_void,
    recvcount: usize,
    datatype: c_int,
    op: c_int,
    comm: CommPtr,
    stream: *mut c_void,
) -> c_int {
    let what = "mixcclReduceScatterV";
    guard(what, || {
        not_in_group(what)?;
        let c = cast::comm(comm)?;
        let Facts { rank, nranks } = c.ready()?;
        let dtype = dtype_of(datatype)?;
        let op = ReduceOp::from_nccl(op).ok_or_else(|| {
            Failure::invalid(format!(
                "{what}: op {op} is not a built-in ncclRedOp_t (custom ops are not supported here)"
            ))
        })?;
        let counts = sizes(sendcounts, nranks, "sendcounts")?;
        let displs = sizes(displs, nranks, "displs")?;
        if recvcount != counts[rank] {
            return Err(Failure::invalid(format!(
                "{what} on rank {rank}: recvcount {recvcount} but sendcounts[{rank}] is {}",
                counts[rank]
            )));
        }
        let total = span(&counts, &displs, dtype, "sendbuff")?;
        let own = (sendbuff as usize).checked_add(displs[rank].saturating_mul(dtype.size()));
        let (send, recv) = if own == Some(recvbuff as usize) {
            (None, RawBuf::new(sendbuff, total, "sendbuff")?)
        } else {
            (
                Some(RawBuf::new(sendbuff, total, "sendbuff")?),
                RawBuf::new(recvbuff, recvcount.saturating_mul(dtype.size()), "recvbuff")?,
            )
        };
        run_uneven(&c, stream as usize, send, recv, |comm, s, r| {
            comm.reduce_scatter_v_raw(dtype, op, s, r, &counts, &displs)
        })
    })
}

/// Uneven all-to-all (see mixccl.h).
///
/// # Safety
/// The four arrays hold nranks entries; the buffers are valid for the sizes they
/// give, until the call returns.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn mixcclAlltoAllV(
    sendbuff: *const c_void,
    sendcounts: *const usize,
    sdispls: *const usize,
    recvbuff: *mut c_void,
    recvcounts: *const usize,
    rdispls: *const usize,
    datatype: c_int,
    comm: CommPtr,
    stream: *mut c_void,
) -> c_int {
    let what = "mixcclAlltoAllV";
    guard(what, || {
        not_in_group(what)?;
        let c = cast::comm(comm)?;
        let Facts { nranks, .. } = c.ready()?;
        let dtype = dtype_of(datatype)?;
        let sc = sizes(sendcounts, nranks, "sendcounts")?;
        let sd = sizes(sdispls, nranks, "sdispls")?;
        let rc = sizes(recvcounts, nranks, "recvcounts")?;
        let rd = sizes(rdispls, nranks, "rdispls")?;
        let send = RawBuf::new(sendbuff, span(&sc, &sd, dtype, "sendbuff")?, "sendbuff")?;
        let recv = RawBuf::new(recvbuff, span(&rc, &rd, dtype, "recvbuff")?, "recvbuff")?;
        run_uneven(&c, stream as usize, Some(send), recv, |comm, s, r| {
            comm.all_to_all_v_raw(dtype, s.unwrap_or(&[]), &sc, &sd, r, &rc, &rd)
        })
    })
}

/// Splits `total` by `weights` identically on every rank (see mixccl.h).
///
/// # Safety
/// `weights` and `shares` hold `n` entries each (may be NULL when `n` is 0).
#[no_mangle]
pub unsafe extern "C" fn mixcclSplitByWeight(
    total: usize,
    weights: *const u64,
    n: usize,
    shares: *mut usize,
) -> c_int {
    guard("mixcclSplitByWeight", || {
        if n == 0 {
            return Ok(());
        }
        let w = cast::read_array(weights, n).ok_or_else(|| Failure::invalid("weights is NULL"))?;
        cast::write_array(shares, "shares", mixccl::split_by_weight(total, &w))
    })
}
