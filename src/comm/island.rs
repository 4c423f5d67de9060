//! Islands: ranks of one host and one device vendor that run the phases inside
//! their group with the vendor's own collective library (`ccl`), while mixccl runs
//! only the phases that cross groups.
//!
//! At init every rank says which device vendor it runs on and whether it could load
//! that vendor's library; ranks of one host and vendor that all could form an
//! island (at least two of them). Every other rank is a group of its own. The
//! decision is made from one all-gather, so every rank holds the same groups. An
//! island's first rank makes the library's unique id and sends it to the others;
//! an island whose native communicator fails on any member is dissolved, again
//! agreed by all. The first rank of every group then joins a communicator of
//! representatives (`reps`, split from this one), over which the cross-group
//! phases run, host-staged as any mixccl call.
//!
//! A call goes through the islands when it is an all-reduce, all-gather,
//! reduce-scatter or broadcast that every island's library offers for its type and
//! op (all ranks decide alike, from the call alone); anything else keeps the
//! ordinary path. The phases (see docs/algorithms.md, "Islands"):
//! - all-reduce: island all-reduce (native), representatives' all-reduce, island
//!   broadcast from the representative (native); when every rank is in an island
//!   and the islands have one size `m`, the shard form instead: island
//!   reduce-scatter (native), all-reduce of each shard over the members at the same
//!   position in every island (one communicator per position, split at init),
//!   island all-gather (native);
//! - broadcast: the root's island broadcast, representatives' broadcast, the other
//!   islands' broadcast;
//! - all-gather: island all-gather (native), representatives' all-gather of their
//!   groups' blocks, island broadcast of the whole result;
//! - reduce-scatter: island all-reduce, representatives' all-reduce, island
//!   broadcast, each rank keeping its block;
//!
//! and with one island spanning the communicator, the native call alone.
//!
//! Every native call is watched: a member process that is gone, the abort flag or
//! the communicator's timeout aborts the native communicator, and the call fails
//! with `PeerLost`, `Aborted` or `Timeout` (latched like any failure).

mod steps;

pub use steps::{CrossPhase, CrossRegion, IslandPlanner, IslandSteps, NativeCall};

use super::Communicator;
use crate::ccl::{self, Ccl, CommHandle, Library};
use crate::config::Collective;
use crate::debug::log_info;
use crate::device::{DeviceMemory, MemRef, MemoryKind, Runtimes, StreamHandle, Vendor};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bytes of the unique-id message: ok flag, length, id (HCCL's is the longest).
const ID_MSG: usize = 1 + 4 + 4108;

/// One group: an island, or a rank on its own.
#[derive(Debug, Clone)]
struct Group {
    /// Its ranks, ascending; the first is its representative.
    members: Vec<usize>,
    /// The island's library (`None`: a rank on its own).
    library: Option<Library>,
}

/// This rank's native communicator, shared between the communicator's own island
/// calls (`Member`) and stream-ordered callers (`IslandPlanner`, `island_stream`).
pub(crate) struct NativeComm {
    pub(crate) ccl: &'static dyn Ccl,
    /// `None` once aborted.
    comm: Mutex<Option<CommHandle>>,
    /// Position in the island.
    pub(crate) index: usize,
    pub(crate) vendor: Vendor,
    pub(crate) device: i32,
    /// The other members' (rank, pid), watched during native calls (empty when
    /// their processes cannot be seen from here).
    pub(crate) peers: Vec<(usize, u32)>,
    /// The caller stream that the last stream-ordered native call was queued on:
    /// native calls on another stream (or this communicator's own) first wait for it,
    /// so every member issues its calls to the library in one order.
    pub(crate) last_stream: Mutex<Option<StreamHandle>>,
}

impl NativeComm {
    /// The live handle, or an error once aborted.
    pub(crate) fn handle(&self) -> Result<CommHandle> {
        self.comm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ok_or_else(|| {
                Error::Internal(format!("the {} communicator was aborted", self.ccl.kind()))
            })
    }

    /// The error a call queued on a stream ended in (once the stream has run it):
    /// another member's abort or loss ends this member's calls early, unwritten.
    pub(crate) fn async_error(&self) -> Result<()> {
        let c = self.handle()?;
        self.ccl.async_error(c)
    }

    /// Aborts the native communicator (once; safe from any thread).
    pub(crate) fn abort(&self) {
        if let Some(c) = self.comm.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = self.ccl.abort(c);
        }
    }

    /// Why a native call running since `start` must stop now, if it must: the
    /// communicator's abort flag, a member process gone, or `timeout` passed.
    pub(crate) fn stop_reason(
        &self,
        start: Instant,
        timeout: Duration,
        aborted: bool,
    ) -> Option<Error> {
        if aborted {
            Some(Error::Aborted)
        } else if let Some(&(rank, pid)) = self.peers.iter().find(|(_, p)| pid_gone(*p)) {
            Some(Error::PeerLost {
                rank,
                reason: format!(
                    "island member process {pid} is gone; {} communicator aborted",
                    self.ccl.kind()
                ),
            })
        } else if start.elapsed() > timeout {
            Some(Error::Timeout {
                op: format!("{} island call", self.ccl.kind()),
                waiting_for: self.peers.iter().map(|p| p.0).collect(),
                after: start.elapsed(),
            })
        } else {
            None
        }
    }
}

/// How long a call whose member process is gone may still turn out finished: a
/// member exits once its own part of the last call is done, which can be just before
/// this rank sees the call's end.
const EXIT_GRACE: Duration = Duration::from_millis(200);

impl NativeComm {
    /// For a stop because a member process is gone (`why`): whether the call turns
    /// out finished within [`EXIT_GRACE`] (`done`), so it is not aborted.
    pub(crate) fn finished_anyway(
        &self,
        why: &Error,
        mut done: impl FnMut() -> Result<bool>,
    ) -> bool {
        if !matches!(why, Error::PeerLost { .. }) {
            return false;
        }
        let end = Instant::now() + EXIT_GRACE;
        while Instant::now() < end {
            if done().unwrap_or(false) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

impl Drop for NativeComm {
    fn drop(&mut self) {
        if let Some(c) = self
            .comm
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = self.ccl.destroy(c);
        }
    }
}

/// This rank's side of its island.
struct Member {
    nc: std::sync::Arc<NativeComm>,
    /// This communicator's own stream for its host-synchronous island calls.
    stream: StreamHandle,
    /// Device buffers for calls whose buffers are elsewhere, by slot.
    scratch: Vec<Option<DeviceMemory>>,
}

/// The islands of a communicator, equal on every rank but for `member` and `reps`.
pub(crate) struct Islands {
    groups: Vec<Group>,
    /// Group index of each rank.
    group_of: Vec<usize>,
    member: Option<Member>,
    /// The representatives' communicator (on representatives, with two groups or more).
    reps: Option<Box<Communicator>>,
    /// When every group is an island of one size `m` (and there are two or more):
    /// the communicator of the members at this rank's position in every island, over
    /// which all-reduce runs one shard in `m` (the shard form).
    shards: Option<Box<Communicator>>,
    /// Why each rank outside an island is outside, for `describe_islands`.
    left_out: Vec<String>,
}

impl Islands {
    /// Islands that did not form: the communicator keeps its ordinary path.
    fn none(left_out: Vec<String>) -> Box<Islands> {
        Box::new(Islands {
            groups: Vec::new(),
            group_of: Vec::new(),
            member: None,
            reps: None,
            shards: None,
            left_out,
        })
    }
}

/// A call as the island phases see it.
#[derive(Debug, Clone, Copy)]
struct Call {
    coll: Collective,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
    /// Elements (per block for all-gather and reduce-scatter).
    count: usize,
    rank: usize,
    nranks: usize,
}

/// What one rank says about itself at init.
struct Offer {
    vendor: Option<(Vendor, i32)>,
    ccl: std::result::Result<&'static dyn Ccl, String>,
}

fn local_offer() -> Offer {
    let rt = Runtimes::global();
    let Some(dev) = rt.loaded().next() else {
        return Offer {
            vendor: None,
            ccl: Err("no device runtime loaded".into()),
        };
    };
    let vendor = dev.vendor();
    let device = match dev.current_device() {
        Ok(d) => d,
        Err(e) => {
            return Offer {
                vendor: None,
                ccl: Err(format!("{vendor} has no current device: {e}")),
            }
        }
    };
    Offer {
        vendor: Some((vendor, device)),
        ccl: ccl::load(Library::for_vendor(vendor)),
    }
}

/// Is process `pid` gone (or a zombie)?
fn pid_gone(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

impl Communicator {
    /// Forms the islands (every rank calls it at init, after the topology is agreed).
    pub(super) fn form_islands(&mut self) -> Result<()> {
        if !self.config.islands || self.nranks < 2 {
            return Ok(());
        }
        let n = self.nranks;
        let me = self.rank;
        let hosts: Vec<usize> = match self.topology() {
            Some(t) if t.nranks() == n => (0..n).map(|r| t.host_of(r)).collect(),
            _ => return Ok(()),
        };
        let offer = local_offer();
        let ok = offer.ccl.is_ok();
        let mine = [
            offer.vendor.map_or(-1, |(v, _)| {
                Vendor::ALL.iter().position(|&x| x == v).unwrap_or(0) as i64
            }),
            i64::from(ok),
            i64::from(std::process::id()),
        ];
        // Communicators on host memory alone have no device runtime on any rank: one
        // max-all-reduce (a tree, log n steps) says so, and then every rank's offer is
        // known without the all-gather (a ring, n steps; 1.4 s of a 512-rank init on 2
        // cores): no vendor, so nothing below forms.
        let mut any_vendor = [mine[0]];
        self.all_reduce_in_place(&mut any_vendor, ReduceOp::Max)?;
        let mut all = vec![0i64; 3 * n];
        if any_vendor[0] < 0 {
            all.iter_mut().step_by(3).for_each(|v| *v = -1);
        } else {
            self.all_gather(&mine, &mut all)?;
        }
        let vendor_of = |r: usize| -> Option<Vendor> {
            usize::try_from(all[3 * r])
                .ok()
                .and_then(|v| Vendor::ALL.get(v).copied())
        };
        // Ranks of one host and vendor whose library loaded, by (host, vendor).
        let mut candidates: std::collections::BTreeMap<(usize, Vendor), Vec<usize>> =
            Default::default();
        for r in 0..n {
            if let (Some(v), 1) = (vendor_of(r), all[3 * r + 1]) {
                candidates.entry((hosts[r], v)).or_default().push(r);
            }
        }
        let min_ranks = self.config.island_min_ranks;
        let mut island_of: Vec<Option<(Vec<usize>, Library)>> = vec![None; n];
        for ((_, v), members) in &candidates {
            if members.len() >= min_ranks {
                for &r in members {
                    island_of[r] = Some((members.clone(), Library::for_vendor(*v)));
                }
            }
        }
        let why_out = |r: usize, island_of: &[Option<(Vec<usize>, Library)>]| {
            if island_of[r].is_some() {
                return None;
            }
            Some(match vendor_of(r) {
                None => format!("rank {r}: no device runtime"),
                Some(v) if all[3 * r + 1] == 0 => format!(
                    "rank {r}: its {} library could not be used (its INFO log says why)",
                    Library::for_vendor(v)
                ),
                Some(v)
                    if candidates
                        .get(&(hosts[r], v))
                        .is_some_and(|m| m.len() >= min_ranks) =>
                {
                    format!(
                        "rank {r}: a member of its {} island failed to join",
                        Library::for_vendor(v)
                    )
                }
                Some(v) => format!(
                    "rank {r}: no other {v} rank on its host has {}",
                    Library::for_vendor(v)
                ),
            })
        };
        match (&offer.ccl, &island_of[me]) {
            (Err(why), _) => log_info!(Some(me), "islands: rank {me} left out: {why}"),
            (Ok(c), None) => log_info!(
                Some(me),
                "islands: rank {me} left out: no other rank of {} on its host has {} ({})",
                offer.vendor.map_or("none", |(v, _)| v.name()),
                c.kind(),
                c.path()
            ),
            _ => {}
        }
        if island_of.iter().all(Option::is_none) {
            log_info!(Some(me), "islands: none formed");
            let left_out = (0..n).filter_map(|r| why_out(r, &island_of)).collect();
            self.islands = Some(Islands::none(left_out));
            return Ok(());
        }
        // The native communicator of this rank's island.
        let mut member = None;
        let mut init_ok = true;
        if let (Some((members, lib)), Ok(c), Some((vendor, device))) =
            (&island_of[me], &offer.ccl, offer.vendor)
        {
            let index = members.iter().position(|&r| r == me).unwrap_or(0);
            match self.native_init(*c, members, index, device) {
                Ok(comm) => {
                    let stream = Runtimes::global().get(vendor)?.create_stream(device)?;
                    let mut peers: Vec<(usize, u32)> = members
                        .iter()
                        .filter(|&&r| r != me)
                        .map(|&r| (r, all[3 * r + 2] as u32))
                        .collect();
                    if peers.iter().any(|&(_, pid)| pid_gone(pid)) {
                        // Another process namespace: liveness is left to the timeout.
                        peers.clear();
                    }
                    member = Some(Member {
                        nc: std::sync::Arc::new(NativeComm {
                            ccl: *c,
                            comm: Mutex::new(Some(comm)),
                            index,
                            vendor,
                            device,
                            peers,
                            last_stream: Mutex::new(None),
                        }),
                        stream,
                        scratch: Vec::new(),
                    });
                }
                Err(e) => {
                    log_info!(
                        Some(me),
                        "islands: rank {me} could not join its {lib} island: {e}"
                    );
                    init_ok = false;
                }
            }
        }
        // Agree which islands stand: one failed member dissolves its island.
        let mut oks = vec![0i64; n];
        self.all_gather(&[i64::from(init_ok)], &mut oks)?;
        for r in 0..n {
            if oks[r] == 0 {
                if let Some((members, _)) = island_of[r].clone() {
                    for m in members {
                        island_of[m] = None;
                    }
                }
            }
        }
        if island_of[me].is_none() {
            if let Some(m) = member.take() {
                m.nc.abort();
                let _ = Runtimes::global()
                    .get(m.nc.vendor)
                    .and_then(|d| d.destroy_stream(m.nc.device, m.stream));
            }
        }
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = vec![usize::MAX; n];
        for r in 0..n {
            if group_of[r] != usize::MAX {
                continue;
            }
            let (members, library) = match &island_of[r] {
                Some((m, lib)) => (m.clone(), Some(*lib)),
                None => (vec![r], None),
            };
            for &m in &members {
                group_of[m] = groups.len();
            }
            groups.push(Group { members, library });
        }
        let left_out: Vec<String> = (0..n).filter_map(|r| why_out(r, &island_of)).collect();
        if groups.iter().all(|g| g.library.is_none()) {
            log_info!(Some(me), "islands: none formed (a member failed to join)");
            self.islands = Some(Islands::none(left_out));
            return Ok(());
        }
        if me == 0 {
            for g in groups.iter().filter(|g| g.library.is_some()) {
                log_info!(
                    Some(me),
                    "islands: {} island of ranks {:?} on host {}",
                    g.library.map_or("", |l| l.name()),
                    g.members,
                    hosts[g.members[0]]
                );
            }
        }
        if let Some(m) = &member {
            log_info!(
                Some(me),
                "islands: rank {me} is member {} of a {} island ({}), device {}:{}",
                m.nc.index,
                m.nc.ccl.kind(),
                m.nc.ccl.path(),
                m.nc.vendor,
                m.nc.device
            );
        }
        // The representatives' communicator, made without islands of its own.
        let reps = if groups.len() > 1 {
            let lead = groups[group_of[me]].members[0] == me;
            let saved = self.config.islands;
            self.config.islands = false;
            let r = self.split(lead.then_some(0), me as i64);
            self.config.islands = saved;
            r?.map(|mut c| {
                c.abort = self.abort.clone();
                Box::new(c)
            })
        } else {
            None
        };
        // The shard form needs every rank in an island and the islands of one size.
        let size = groups[0].members.len();
        let uniform = groups.len() > 1
            && groups
                .iter()
                .all(|g| g.library.is_some() && g.members.len() == size);
        let shards = match (&member, uniform) {
            (Some(m), true) => {
                let saved = self.config.islands;
                self.config.islands = false;
                let r = self.split(Some(m.nc.index as u32), me as i64);
                self.config.islands = saved;
                r?.map(|mut c| {
                    c.abort = self.abort.clone();
                    Box::new(c)
                })
            }
            _ => None,
        };
        self.islands = Some(Box::new(Islands {
            groups,
            group_of,
            member,
            reps,
            shards,
            left_out,
        }));
        Ok(())
    }

    /// Makes this rank's native communicator: the first member makes the id and
    /// sends it to the others over this communicator.
    fn native_init(
        &mut self,
        c: &'static dyn Ccl,
        members: &[usize],
        index: usize,
        device: i32,
    ) -> Result<CommHandle> {
        let mut msg = vec![0u8; ID_MSG];
        if index == 0 {
            let id = c.unique_id();
            if let Ok(id) = &id {
                msg[0] = 1;
                msg[1..5].copy_from_slice(&(id.len() as u32).to_le_bytes());
                msg[5..5 + id.len()].copy_from_slice(id);
            }
            let sends = members[1..]
                .iter()
                .map(|&peer| super::Transfer::Send { peer, buf: &msg })
                .collect();
            self.group(sends)?;
            id?;
        } else {
            self.group(vec![super::Transfer::Recv {
                peer: members[0],
                buf: &mut msg,
            }])?;
            if msg[0] != 1 {
                return Err(Error::Internal(format!(
                    "rank {} could not make the {} unique id",
                    members[0],
                    c.kind()
                )));
            }
        }
        let len = u32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        c.init(
            &msg[5..5 + len.min(ID_MSG - 5)],
            members.len(),
            index,
            device,
        )
    }

    /// Does this call go through the islands?
    pub(super) fn island_route(&self, coll: Collective, dtype: DataType, op: ReduceOp) -> bool {
        self.islands
            .as_deref()
            .is_some_and(|is| routes(&is.groups, coll, dtype, op))
    }

    /// Runs a call the islands take (see [`Communicator::island_route`]); `count` as
    /// `count_of` gives it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn island_call(
        &mut self,
        coll: Collective,
        dtype: DataType,
        op: ReduceOp,
        root: usize,
        count: usize,
        send: Option<MemRef>,
        recv: MemRef,
    ) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.abort.load(Ordering::SeqCst) {
            self.failed = Some(Error::Aborted);
            return Err(Error::Aborted);
        }
        let Some(mut is) = self.islands.take() else {
            return Err(Error::Internal("island call without islands".into()));
        };
        let call = Call {
            coll,
            dtype,
            op,
            root,
            count,
            rank: self.rank,
            nranks: self.nranks,
        };
        let r = is.run(call, send, recv, self.config.timeout, &self.abort);
        if let Err(e) = &r {
            self.failed = Some(e.clone());
            // Closing the representatives' links tells the other groups now rather
            // than at their timeout.
            is.reps = None;
            is.shards = None;
        }
        self.islands = Some(is);
        r
    }

    /// Lines saying which islands formed and why each other rank is outside them
    /// (empty when islands are off or the communicator has one rank), for
    /// `mixccl-perf --topo`.
    pub fn describe_islands(&self) -> Vec<String> {
        let Some(is) = &self.islands else {
            return Vec::new();
        };
        if is.groups.is_empty() {
            let mut out = vec!["islands: none formed".to_string()];
            out.extend(is.left_out.iter().map(|w| format!("outside islands: {w}")));
            return out;
        }
        let mut out: Vec<String> = is
            .groups
            .iter()
            .filter_map(|g| {
                g.library
                    .map(|l| format!("island: {l} over ranks {:?}", g.members))
            })
            .collect();
        let alone: Vec<usize> = is
            .groups
            .iter()
            .filter(|g| g.library.is_none())
            .map(|g| g.members[0])
            .collect();
        if !alone.is_empty() {
            out.push(format!("outside islands: ranks {alone:?}"));
        }
        out.extend(is.left_out.iter().map(|w| format!("outside islands: {w}")));
        out
    }
}

/// Does a call of `coll` with `dtype` and `op` go through `groups` (alike on every
/// rank: from the call alone)?
fn routes(groups: &[Group], coll: Collective, dtype: DataType, op: ReduceOp) -> bool {
    if groups.is_empty() {
        return false;
    }
    let reduces = match coll {
        Collective::AllReduce | Collective::ReduceScatter => Some(op),
        Collective::AllGather | Collective::Broadcast => None,
        _ => return false,
    };
    groups
        .iter()
        .filter_map(|g| g.library)
        .all(|l| l.supports(dtype, reduces))
}

impl Islands {
    /// Who is where, for planning a call into steps.
    fn layout(&self, rank: usize) -> steps::Layout {
        let size = self.groups.first().map_or(0, |g| g.members.len());
        steps::Layout {
            groups: self.groups.clone(),
            group_of: self.group_of.clone(),
            rank,
            shard_form: self.groups.len() > 1
                && self
                    .groups
                    .iter()
                    .all(|g| g.library.is_some() && g.members.len() == size),
        }
    }
}

impl Drop for Islands {
    fn drop(&mut self) {
        if let Some(m) = &self.member {
            // The native communicator goes with the last holder of `m.nc`.
            let _ = Runtimes::global()
                .get(m.nc.vendor)
                .and_then(|d| d.destroy_stream(m.nc.device, m.stream));
        }
    }
}

/// A device buffer at `addr` of `len` bytes of `vendor`'s device `index`.
fn dev_ref(addr: usize, len: usize, vendor: Vendor, index: i32) -> MemRef {
    // SAFETY: a scratch buffer or a caller's device buffer of that many bytes,
    // used by this call only.
    unsafe { MemRef::with_kind(addr as *const u8, len, MemoryKind::Device { vendor, index }) }
}

/// The host bytes of `m`.
fn read(m: MemRef) -> Result<Vec<u8>> {
    let mut v = vec![0u8; m.len()];
    m.read_into(&mut v)?;
    Ok(v)
}

/// Copies `src` into `dst` (same length, any kinds), through the host.
fn copy(src: MemRef, dst: MemRef) -> Result<()> {
    if src.is_empty() || (src.addr() == dst.addr() && src.kind() == dst.kind()) {
        return Ok(());
    }
    dst.write_from(&read(src)?)
}

impl Islands {
    /// The representatives' communicator, with its errors naming ranks of this one.
    fn reps<T>(&mut self, f: impl FnOnce(&mut Communicator) -> Result<T>) -> Result<T> {
        let reps = self
            .reps
            .as_deref_mut()
            .ok_or_else(|| Error::Internal("no representatives' communicator here".into()))?;
        f(reps).map_err(|e| match e {
            Error::PeerLost { rank, reason } => Error::PeerLost {
                rank: self.groups.get(rank).map_or(rank, |g| g.members[0]),
                reason: format!("{reason} (representative of its group)"),
            },
            e => e,
        })
    }

    fn run(
        &mut self,
        c: Call,
        send: Option<MemRef>,
        recv: MemRef,
        timeout: Duration,
        abort: &AtomicBool,
    ) -> Result<()> {
        if self.member.is_some() {
            self.run_member(c, send, recv, timeout, abort)
        } else {
            self.run_alone(c, send, recv)
        }
    }

    /// A rank on its own: only the representatives' phase.
    fn run_alone(&mut self, c: Call, send: Option<MemRef>, recv: MemRef) -> Result<()> {
        let e = c.dtype.size();
        match c.coll {
            Collective::AllReduce => {
                self.reps(|r| r.collective_mem(c.coll, c.dtype, c.op, 0, send, recv))
            }
            Collective::Broadcast => {
                let root = self.group_of[c.root];
                self.reps(|r| r.collective_mem(c.coll, c.dtype, c.op, root, send, recv))
            }
            Collective::AllGather => {
                let block = c.count * e;
                let own = send.unwrap_or_else(|| recv.slice(c.rank * block, block));
                let full = self.gather_groups(read(own)?, block, c.nranks)?;
                recv.write_from(&full)
            }
            Collective::ReduceScatter => {
                let block = c.count * e;
                let mut all = read(send.unwrap_or(recv))?;
                self.reps(|r| r.all_reduce_raw(c.dtype, c.op, None, &mut all))?;
                let mine = &all[c.rank * block..(c.rank + 1) * block];
                let out = if send.is_some() {
                    recv
                } else {
                    recv.slice(c.rank * block, block)
                };
                out.write_from(mine)
            }
            _ => Err(Error::Internal(format!("{} through the islands", c.coll))),
        }
    }

    /// The representatives' all-gather of each group's blocks (`own`: this group's,
    /// in member order), returned as the whole result in rank order.
    fn gather_groups(&mut self, own: Vec<u8>, block: usize, nranks: usize) -> Result<Vec<u8>> {
        let widest = self
            .groups
            .iter()
            .map(|g| g.members.len())
            .max()
            .unwrap_or(1);
        let mut padded = own;
        padded.resize(widest * block, 0);
        let mut all = vec![0u8; self.groups.len() * widest * block];
        self.reps(|r| r.all_gather_raw(DataType::U8, Some(&padded), &mut all))?;
        let mut full = vec![0u8; nranks * block];
        for (g, group) in self.groups.iter().enumerate() {
            for (i, &r) in group.members.iter().enumerate() {
                let from = (g * widest + i) * block;
                full[r * block..(r + 1) * block].copy_from_slice(&all[from..from + block]);
            }
        }
        Ok(full)
    }

    /// An island member: the call's steps (`steps::Layout::steps`, the same a
    /// stream-ordered caller queues) on this member's stream; buffers off its device
    /// go through scratch slots 1 (input) and 0 (output; filled first when in place).
    fn run_member(
        &mut self,
        c: Call,
        send: Option<MemRef>,
        recv: MemRef,
        timeout: Duration,
        abort: &AtomicBool,
    ) -> Result<()> {
        let layout = self.layout(c.rank);
        let m = self.member.as_mut().expect("run_member on a member");
        let (vendor, device) = (m.nc.vendor, m.nc.device);
        let mine = |b: &MemRef| {
            b.kind()
                == MemoryKind::Device {
                    vendor,
                    index: device,
                }
        };
        let inp = match send {
            Some(s) => Some(m.on_device(1, s, mine(&s), true)?),
            None => None,
        };
        let out = m.on_device(0, recv, mine(&recv), send.is_none())?;
        let steps = layout
            .steps(c, inp, out, |slot, len| m.scratch(slot, len))?
            .ok_or_else(|| Error::Internal(format!("{} through the islands", c.coll)))?;
        self.run_steps(&steps, timeout, abort)?;
        copy(dev_ref(out, recv.len(), vendor, device), recv)
    }
}

impl Member {
    /// Device scratch buffer `slot` of at least `len` bytes.
    fn scratch(&mut self, slot: usize, len: usize) -> Result<usize> {
        if self.scratch.len() <= slot {
            self.scratch.resize_with(slot + 1, || None);
        }
        if let Some(d) = &self.scratch[slot] {
            if d.len() >= len {
                return Ok(d.addr());
            }
        }
        self.scratch[slot] = None;
        let d = DeviceMemory::new(self.nc.vendor, Some(self.nc.device), len.max(256))?;
        let a = d.addr();
        self.scratch[slot] = Some(d);
        Ok(a)
    }

    /// `b`'s address when it is this member's device memory (`here`), else scratch
    /// `slot` holding a copy of it when `fill`.
    fn on_device(&mut self, slot: usize, b: MemRef, here: bool, fill: bool) -> Result<usize> {
        if here {
            return Ok(b.addr());
        }
        let a = self.scratch(slot, b.len())?;
        if fill {
            copy(b, dev_ref(a, b.len(), self.nc.vendor, self.nc.device))?;
        }
        Ok(a)
    }

    /// Waits for the caller stream that stream-ordered native calls went to last:
    /// they come before this communicator's own.
    fn settle(&mut self) -> Result<()> {
        let last = self
            .nc
            .last_stream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match last.filter(|s| *s != self.stream) {
            Some(s) => Runtimes::global()
                .get(self.nc.vendor)?
                .synchronize(self.nc.device, s),
            None => Ok(()),
        }
    }

    /// Runs native call `f` on this member's stream and waits for it, watched: a
    /// member process gone, `abort` or `timeout` aborts the native communicator.
    fn native(
        &mut self,
        timeout: Duration,
        abort: &AtomicBool,
        f: impl FnOnce(&dyn Ccl, CommHandle, StreamHandle) -> Result<()>,
    ) -> Result<()> {
        self.settle()?;
        let nc = &*self.nc;
        let comm = nc.handle()?;
        let dev = Runtimes::global().get(nc.vendor)?;
        let (stream, device) = (self.stream, nc.device);
        let done = AtomicBool::new(false);
        let fired: Mutex<Option<Error>> = Mutex::new(None);
        let result = std::thread::scope(|scope| {
            scope.spawn(|| {
                let start = Instant::now();
                while !done.load(Ordering::Acquire) {
                    if let Some(e) = nc.stop_reason(start, timeout, abort.load(Ordering::SeqCst)) {
                        if nc.finished_anyway(&e, || Ok(done.load(Ordering::Acquire))) {
                            return;
                        }
                        *fired.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                        nc.abort();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let r = f(nc.ccl, comm, stream)
                .and_then(|_| dev.synchronize(device, stream))
                .and_then(|_| nc.ccl.async_error(comm));
            done.store(true, Ordering::Release);
            r
        });
        if let Some(e) = fired.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        result
    }
}
