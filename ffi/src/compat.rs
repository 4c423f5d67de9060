//! The bodies of the exports NCCL added after the core API (2.22 to 2.30) that
//! frameworks link to (PyTorch's `libtorch_cuda.so` imports every one): what maps
//! onto mixccl, and a clear `ncclInvalidUsage` for what does not.
//!
//! - `ncclGather` / `ncclScatter`: one group of `ncclSend` / `ncclRecv` made through
//!   the exported functions, so they are ordered, grouped, queued (nonblocking) and
//!   stream-ordered exactly like the caller's own sends and receives.
//! - `ncclCommInitRankScalable`: `Communicator::init_scalable`, one root per id.
//! - `ncclCommSuspend` / `ncclCommResume` / `ncclCommMemStats`: a flag on the
//!   communicator (`comm::Shared`); mixccl holds no device memory to release or count.
//! - Windows (`ncclCommWindowRegister`, ...): a registry of (communicator, address,
//!   size); a handle C passes back is looked up, never dereferenced.
//! - `ncclGroupSimulateEnd`: ends the group without running it and reports the
//!   planner's estimate of its calls (`Topology::choose`), in microseconds.
//! - The device API and one-sided calls: [`unsupported`].
//!
//! Owns nothing but the window registry; must not reach into the group's or the
//! collectives' internals (it calls the exported functions instead).

use crate::api;
use crate::cast::{self, CommPtr, NcclUniqueId, RawBuf};
use crate::coll::dtype_of;
use crate::comm::Shared;
use crate::group;
use crate::status::{code, last_error, Failure, Outcome, Progress};
use mixccl::{Communicator, UniqueId};
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// `NCCL_SUSPEND_MEM`.
const SUSPEND_MEM: c_int = 0x01;
/// `NCCL_WIN_COLL_SYMMETRIC | NCCL_WIN_STRICT_ORDERING`: the window flags NCCL 2.30 knows.
const WINDOW_FLAGS: c_int = 0x03;
/// `NCCL_SIM_INFO_INITIALIZER`'s magic.
const SIM_INFO_MAGIC: c_uint = 0x7468_5283;

/// Why a call NCCL has and mixccl does not is refused.
pub(crate) enum Missing {
    /// `ncclDevCommCreate` and the device pointers of windows.
    DeviceApi,
    /// `ncclPutSignal`, `ncclSignal`, `ncclWaitSignal`.
    OneSided,
}

/// `ncclInvalidUsage` saying what is missing and what to use instead; the caller's
/// arguments are not looked at.
pub(crate) fn unsupported(what: Missing) -> Outcome {
    Err(Failure::usage(match what {
        Missing::DeviceApi => {
            "NCCL's device API (device communicators, LSA and multimem pointers of \
             windows) is not provided by mixccl, which has no device-side library: use \
             the host collectives"
        }
        Missing::OneSided => {
            "one-sided calls on windows (ncclPutSignal, ncclSignal, ncclWaitSignal) are \
             not provided by mixccl: use ncclSend and ncclRecv"
        }
    }))
}

/// One send or receive of a gather's or scatter's group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    send: bool,
    addr: usize,
    peer: usize,
}

/// The sends and receives of a gather (`gather`) or scatter of `block` bytes per rank
/// on rank `rank` of `nranks`. `one` is the buffer of one block every rank has (a
/// gather's sendbuff, a scatter's recvbuff); `all` the root's buffer of `nranks`
/// blocks, None off the root.
fn rooted_parts(
    gather: bool,
    rank: usize,
    nranks: usize,
    root: usize,
    one: RawBuf,
    all: Option<RawBuf>,
    block: usize,
) -> Outcome<Vec<Part>> {
    let Some(all) = all.filter(|_| rank == root) else {
        return Ok(vec![Part {
            send: gather,
            addr: one.addr,
            peer: root,
        }]);
    };
    let own = all.sub(root * block, block);
    let in_place = block > 0 && one.addr == own.addr;
    if !in_place && one.overlaps(all) {
        let (one_name, all_name) = match gather {
            true => ("sendbuff", "recvbuff"),
            false => ("recvbuff", "sendbuff"),
        };
        return Err(Failure::invalid(format!(
            "{one_name} overlaps {all_name} without being in place (in place needs \
             {one_name} == {all_name} + root * count elements)"
        )));
    }
    let mut parts: Vec<Part> = (0..nranks)
        .filter(|r| !(in_place && *r == root))
        .map(|r| Part {
            send: !gather,
            addr: all.addr + r * block,
            peer: r,
        })
        .collect();
    if !in_place {
        parts.push(Part {
            send: gather,
            addr: one.addr,
            peer: root,
        });
    }
    Ok(parts)
}

/// `ncclGather` (`gather`) or `ncclScatter`: checks the arguments, then runs the
/// transfers as one group.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rooted(
    gather: bool,
    sendbuff: *const c_void,
    recvbuff: *mut c_void,
    count: usize,
    datatype: c_int,
    root: c_int,
    comm: CommPtr,
    stream: *mut c_void,
) -> Outcome<Progress> {
    let c = cast::comm(comm)?;
    let facts = c.ready()?;
    let dtype = dtype_of(datatype)?;
    let n = facts.nranks;
    let root_rank = usize::try_from(root)
        .ok()
        .filter(|r| *r < n)
        .ok_or_else(|| Failure::invalid(format!("root {root} is out of range for {n} ranks")))?;
    let too_big = || {
        Failure::invalid(format!(
            "count {count} x {n} ranks of {dtype} overflows the address space"
        ))
    };
    let block = count
        .checked_mul(dtype.size())
        .filter(|b| b.checked_mul(n).is_some_and(|t| t <= isize::MAX as usize))
        .ok_or_else(too_big)?;
    let (one, one_name, all, all_name) = match gather {
        true => (sendbuff, "sendbuff", recvbuff.cast_const(), "recvbuff"),
        false => (recvbuff.cast_const(), "recvbuff", sendbuff, "sendbuff"),
    };
    let one = RawBuf::new(one, block, one_name)?;
    let all = match facts.rank == root_rank {
        true => Some(RawBuf::new(all, block * n, all_name)?),
        false => None,
    };
    let parts = rooted_parts(gather, facts.rank, n, root_rank, one, all, block)?;
    run_group(&parts, count, datatype, comm, stream)
}

/// This thread's last error message (what the exported function that just failed
/// recorded).
fn last_error_text() -> String {
    match last_error() {
        // SAFETY: `last_error` points to this thread's NUL-terminated message, valid
        // until this thread records another error; it is copied at once.
        Some(p) => unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned(),
        None => "no message".into(),
    }
}

/// Runs `parts` as `ncclGroupStart`, one `ncclSend` / `ncclRecv` each, `ncclGroupEnd`.
fn run_group(
    parts: &[Part],
    count: usize,
    datatype: c_int,
    comm: CommPtr,
    stream: *mut c_void,
) -> Outcome<Progress> {
    let mut first: Option<Failure> = None;
    let mut note = |what: &str, rc: c_int| {
        if rc != code::SUCCESS && rc != code::IN_PROGRESS && first.is_none() {
            first = Some(Failure {
                code: rc,
                message: format!("{what}: {}", last_error_text()),
            });
        }
        rc
    };
    // SAFETY: no arguments.
    note("ncclGroupStart", unsafe { api::ncclGroupStart() });
    for p in parts {
        let peer = p.peer as c_int;
        let rc = match p.send {
            // SAFETY: `rooted` checked that each buffer holds `count` elements of
            // `datatype` (the caller's contract, nccl.h) and that receive buffers do
            // not overlap; the caller keeps them valid as for any collective.
            true => unsafe {
                api::ncclSend(p.addr as *const c_void, count, datatype, peer, comm, stream)
            },
            // SAFETY: as above.
            false => unsafe {
                api::ncclRecv(p.addr as *mut c_void, count, datatype, peer, comm, stream)
            },
        };
        note(if p.send { "ncclSend" } else { "ncclRecv" }, rc);
    }
    // SAFETY: no arguments; it closes the group opened above (a failure inside it
    // makes it run nothing).
    let end = note("ncclGroupEnd", unsafe { api::ncclGroupEnd() });
    match first {
        Some(f) => Err(f),
        None if end == code::IN_PROGRESS => Ok(Progress::InProgress),
        None => Ok(Progress::Done),
    }
}

/// `ncclCommInitRankScalable`'s arguments checked and its `n_id` ids decoded.
pub(crate) fn scalable_ids(
    nranks: c_int,
    myrank: c_int,
    n_id: c_int,
    ids: *const NcclUniqueId,
) -> Outcome<Vec<UniqueId>> {
    if nranks < 1 || myrank < 0 || myrank >= nranks {
        return Err(Failure::invalid(format!(
            "nranks = {nranks}, myrank = {myrank}: expected nranks >= 1 and myrank in 0..nranks"
        )));
    }
    if n_id < 1 || n_id > nranks {
        return Err(Failure::invalid(format!(
            "nId = {n_id}: expected 1..={nranks} (at most one id per rank)"
        )));
    }
    if ids.is_null() {
        return Err(Failure::invalid("commIds is NULL"));
    }
    // `wrapping_add` stays in safe code; `cast::read` does the one read.
    (0..n_id as usize)
        .map(|i| {
            let id = cast::read(ids.wrapping_add(i), "commIds")?;
            UniqueId::from_bytes(&id.bytes()).map_err(|e| {
                Failure::from(mixccl::Error::InvalidUniqueId(format!("commIds[{i}]: {e}")))
            })
        })
        .collect()
}

/// `ncclCommInitRankScalable`: joins as `myrank` of `nranks` through the roots of
/// all `n_id` ids (`Communicator::init_scalable`); with `nonblocking`, in the
/// background like `ncclCommInitRankConfig`.
pub(crate) fn init_scalable(
    nranks: c_int,
    myrank: c_int,
    n_id: c_int,
    ids: *const NcclUniqueId,
    nonblocking: bool,
) -> Outcome<(Arc<Shared>, Progress)> {
    let ids = scalable_ids(nranks, myrank, n_id, ids)?;
    let (nranks, rank) = (nranks as usize, myrank as usize);
    crate::comm::make_comm(nonblocking, &format!("init-r{rank}"), move |config| {
        Communicator::init_scalable(rank, nranks, &ids, config)
    })
}

/// `ncclCommSuspend`.
pub(crate) fn suspend(comm: CommPtr, flags: c_int) -> Outcome {
    let c = cast::comm(comm)?;
    if flags & !SUSPEND_MEM != 0 {
        return Err(Failure::invalid(format!(
            "flags {flags:#x}: expected 0 or NCCL_SUSPEND_MEM"
        )));
    }
    match flags & SUSPEND_MEM {
        0 => c.facts().map(drop),
        _ => c.suspend(),
    }
}

/// `ncclCommResume`.
pub(crate) fn resume(comm: CommPtr) -> Outcome {
    cast::comm(comm)?.resume()
}

/// `ncclCommMemStats`: device bytes are 0 (mixccl allocates none).
pub(crate) fn mem_stats(comm: CommPtr, stat: c_int, value: *mut u64) -> Outcome {
    let c = cast::comm(comm)?;
    c.facts()?;
    let v = match stat {
        // ncclStatGpuMemSuspend, ncclStatGpuMemPersist, ncclStatGpuMemTotal.
        0 | 2 | 3 => 0,
        // ncclStatGpuMemSuspended.
        1 => u64::from(c.suspended()),
        s => {
            return Err(Failure::invalid(format!(
                "stat {s} is not an ncclCommMemStat_t (0..=3)"
            )))
        }
    };
    cast::write(value, "value", v)
}

/// A registered window.
struct Window {
    comm: Weak<Shared>,
    user: usize,
}

/// Live windows by handle. Each handle is the address of a box the registry owns, so
/// it is unique while the window lives; a handle from C is only ever a key here.
type Windows = HashMap<usize, Box<Window>>;

static WINDOWS: Mutex<Option<Windows>> = Mutex::new(None);

fn windows() -> MutexGuard<'static, Option<Windows>> {
    // Each insert or remove is whole, so the map stays consistent after a panic.
    WINDOWS.lock().unwrap_or_else(|e| e.into_inner())
}

/// `ncclCommWindowRegister`.
pub(crate) fn window_register(
    comm: CommPtr,
    buff: *mut c_void,
    size: usize,
    win: *mut *mut c_void,
    flags: c_int,
) -> Outcome {
    cast::write(win, "win", std::ptr::null_mut())?;
    let c = cast::comm(comm)?;
    c.ready()?;
    if flags & !WINDOW_FLAGS != 0 {
        return Err(Failure::invalid(format!(
            "winFlags {flags:#x}: expected NCCL_WIN_DEFAULT, NCCL_WIN_COLL_SYMMETRIC or \
             NCCL_WIN_STRICT_ORDERING"
        )));
    }
    let buf = RawBuf::new(buff, size, "buff")?;
    let window = Box::new(Window {
        comm: Arc::downgrade(&c),
        user: buf.addr,
    });
    let handle = &*window as *const Window as usize;
    windows()
        .get_or_insert_with(HashMap::new)
        .insert(handle, window);
    cast::write(win, "win", handle as *mut c_void)
}

/// Checks that `win` is a live window of `comm`; `take` also unregisters it.
fn window_of(comm: CommPtr, win: *mut c_void, take: bool) -> Outcome<usize> {
    let c = cast::comm(comm)?;
    if win.is_null() {
        return Err(Failure::invalid("win is NULL"));
    }
    let mut guard = windows();
    let map = guard.get_or_insert_with(HashMap::new);
    let w = map.get(&(win as usize)).ok_or_else(|| {
        Failure::usage(format!(
            "win {win:p} is not a registered window (deregistered, or never registered)"
        ))
    })?;
    if !w.comm.upgrade().is_some_and(|wc| Arc::ptr_eq(&wc, &c)) {
        return Err(Failure::usage(format!(
            "win {win:p} was registered with another communicator"
        )));
    }
    let user = w.user;
    if take {
        map.remove(&(win as usize));
    }
    Ok(user)
}

/// `ncclCommWindowDeregister`.
pub(crate) fn window_deregister(comm: CommPtr, win: *mut c_void) -> Outcome {
    window_of(comm, win, true).map(drop)
}

/// `ncclWinGetUserPtr`.
pub(crate) fn window_user_ptr(comm: CommPtr, win: *mut c_void, out: *mut *mut c_void) -> Outcome {
    let user = window_of(comm, win, false)?;
    cast::write(out, "outUserPtr", user as *mut c_void)
}

/// `ncclSimInfo_t` (NCCL 2.22 onwards).
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct NcclSimInfo {
    size: usize,
    magic: c_uint,
    version: c_uint,
    estimated_time: f32,
}

/// `ncclGroupSimulateEnd`: ends the group without running its calls and stores the
/// planner's estimate of them in `estimatedTime`, in microseconds as NCCL does: per
/// collective, the time of the algorithm the planner would choose on that
/// communicator's model; per send or receive, its link's time; summed over the group.
/// Outside a group it estimates nothing and says so (ncclInvalidUsage).
pub(crate) fn simulate_end(sim_info: *mut NcclSimInfo) -> Outcome {
    let mut info = cast::read(sim_info.cast_const(), "simInfo")?;
    if info.magic != SIM_INFO_MAGIC || info.size < std::mem::size_of::<NcclSimInfo>() {
        return Err(Failure::invalid(format!(
            "simInfo was not initialised with NCCL_SIM_INFO_INITIALIZER (magic {:#x}, size {})",
            info.magic, info.size
        )));
    }
    let Some(calls) = group::end_without_running()? else {
        // An inner group: the outermost end decides.
        return Ok(());
    };
    let mut seconds = 0.0;
    for (shared, call) in &calls {
        seconds += shared.with(|c| Ok(estimate(c, call)))?;
    }
    info.estimated_time = (seconds * 1e6) as f32;
    cast::write(sim_info, "simInfo", info)
}

/// The planner's time for one call of a group, in seconds (0 without a model).
fn estimate(c: &mixccl::Communicator, call: &group::Pending) -> f64 {
    let Some(topo) = c.topology() else {
        return 0.0;
    };
    match call {
        group::Pending::Coll(cc) => {
            let (coll, bytes) = cc.planned_bytes();
            match topo.choose(c.config(), coll, bytes) {
                (algo, t) if t.is_nan() => {
                    topo.estimate(c.config(), coll, algo, bytes).unwrap_or(0.0)
                }
                (_, t) => t,
            }
        }
        group::Pending::P2p(p) => topo.link(c.rank(), p.peer).time(p.buf.len as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(addr: usize, len: usize) -> RawBuf {
        RawBuf { addr, len }
    }

    #[test]
    fn a_gather_receives_every_block_on_root_and_sends_elsewhere() {
        // Root 1 of 3, blocks of 8 bytes at 1000.
        let parts = rooted_parts(true, 1, 3, 1, buf(500, 8), Some(buf(1000, 24)), 8).unwrap();
        let recv = |addr, peer| Part {
            send: false,
            addr,
            peer,
        };
        assert_eq!(
            parts,
            vec![
                recv(1000, 0),
                recv(1008, 1),
                recv(1016, 2),
                Part {
                    send: true,
                    addr: 500,
                    peer: 1
                }
            ]
        );
        // In place: the root's own block stays where it is.
        let parts = rooted_parts(true, 1, 3, 1, buf(1008, 8), Some(buf(1000, 24)), 8).unwrap();
        assert_eq!(parts, vec![recv(1000, 0), recv(1016, 2)]);
        // Off the root: one send, whatever recvbuff is.
        let parts = rooted_parts(true, 2, 3, 1, buf(500, 8), None, 8).unwrap();
        assert_eq!(
            parts,
            vec![Part {
                send: true,
                addr: 500,
                peer: 1
            }]
        );
        // Overlapping any other way is refused.
        let e = rooted_parts(true, 1, 3, 1, buf(1004, 8), Some(buf(1000, 24)), 8).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARGUMENT);
    }

    #[test]
    fn a_scatter_sends_every_block_from_root() {
        let parts = rooted_parts(false, 0, 2, 0, buf(500, 4), Some(buf(1000, 8)), 4).unwrap();
        let send = |addr, peer| Part {
            send: true,
            addr,
            peer,
        };
        assert_eq!(
            parts,
            vec![
                send(1000, 0),
                send(1004, 1),
                Part {
                    send: false,
                    addr: 500,
                    peer: 0
                }
            ]
        );
        let parts = rooted_parts(false, 1, 2, 0, buf(500, 4), None, 4).unwrap();
        assert_eq!(
            parts,
            vec![Part {
                send: false,
                addr: 500,
                peer: 0
            }]
        );
    }

    #[test]
    fn scalable_init_checks_its_arguments_and_every_id() {
        let ids = [
            NcclUniqueId::from_bytes(&[7; 128]),
            NcclUniqueId::from_bytes(&[9; 128]),
        ];
        let message_of = |r: Outcome<Vec<UniqueId>>| {
            let f = r.expect_err("refused");
            assert_eq!(f.code, code::INVALID_ARGUMENT);
            f.message
        };
        assert!(message_of(scalable_ids(4, 0, 0, ids.as_ptr())).contains("nId = 0"));
        assert!(message_of(scalable_ids(1, 0, 2, ids.as_ptr())).contains("nId = 2"));
        assert!(message_of(scalable_ids(4, 4, 1, ids.as_ptr())).contains("myrank = 4"));
        assert!(message_of(scalable_ids(4, 0, 1, std::ptr::null())).contains("NULL"));
        // Bytes that are no mixccl id are named by their place in the array.
        assert!(message_of(scalable_ids(4, 0, 2, ids.as_ptr())).contains("commIds[0]"));
    }

    fn simulate() -> (crate::status::Outcome, f32) {
        let mut info = NcclSimInfo {
            size: std::mem::size_of::<NcclSimInfo>(),
            magic: SIM_INFO_MAGIC,
            version: 23007,
            estimated_time: -1.0,
        };
        let r = simulate_end(&mut info);
        (r, info.estimated_time)
    }

    /// The group's bookkeeping (dropin.c checks the estimate of real calls).
    #[test]
    fn a_simulated_group_is_ended_without_running() {
        // Each test runs on its own thread, so the group state starts empty.
        let (r, t) = simulate();
        let e = r.unwrap_err();
        assert_eq!(e.code, code::INVALID_USAGE);
        assert!(e.message.contains("without a matching"), "{}", e.message);
        assert_eq!(t, -1.0);

        // An empty group takes no time, and is closed.
        group::start().unwrap();
        let (r, t) = simulate();
        r.unwrap();
        assert_eq!(t, 0.0);
        let e = group::end().unwrap_err();
        assert!(
            e.message.contains("without a matching"),
            "closed: {}",
            e.message
        );

        // Inside a nested group only that level closes; the outer end decides.
        group::start().unwrap();
        group::start().unwrap();
        let (r, t) = simulate();
        r.unwrap();
        assert_eq!(t, -1.0, "an inner level estimates nothing");
        group::end().unwrap();
        assert!(group::end().is_err(), "the outer group was closed");

        // A call that failed in the group is the simulation's error; the group closes.
        group::start().unwrap();
        let _ = group::submit(|| Err(Failure::usage("a bad call")));
        let (r, t) = simulate();
        let e = r.unwrap_err();
        assert!(
            e.message.contains("cannot be estimated") && e.message.contains("a bad call"),
            "{}",
            e.message
        );
        assert_eq!(t, -1.0);
        assert!(group::end().is_err(), "closed");

        let mut bad = NcclSimInfo {
            size: 24,
            magic: 0,
            version: 0,
            estimated_time: 0.0,
        };
        let e = simulate_end(&mut bad).unwrap_err();
        assert_eq!(e.code, code::INVALID_ARGUMENT);
    }

    #[test]
    fn sim_info_has_nccls_layout() {
        if std::mem::size_of::<usize>() == 8 {
            assert_eq!(std::mem::offset_of!(NcclSimInfo, estimated_time), 16);
            assert_eq!(std::mem::size_of::<NcclSimInfo>(), 24);
        }
    }
}
