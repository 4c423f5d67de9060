//! The discrete-event engine: runs every simulated rank's [`Program`] the way the
//! executor runs a schedule, over the links of a [`Network`].
//!
//! - An op starts once the ops it depends on have finished; transfers also wait for
//!   their lane, which runs its ops in order (the executor's lanes).
//! - A send is a *flow*: its bytes drain through the resources it crosses (sending
//!   and receiving rank's shared-memory port, the hosts' NICs, the pods' uplinks,
//!   the receiver's reduction for receive-and-reduce, the cores of both ranks when
//!   the host's cores are modelled); each resource gives the flows on it one equal
//!   rate, its capacity over their summed weights (1 each, except on cores), and a
//!   flow moves at the smallest rate it gets (recomputed whenever a flow starts or
//!   ends). The send finishes, and frees its lane, when the last byte has left; the
//!   bytes arrive `alpha` later.
//! - Cores (`Network::cores`): ranks sit on cores as `mixccl-perf --np` binds them
//!   (block placement: local rank `i` of `n` on core `i * C / n`). A shared-memory
//!   byte costs its sender's core one copy and its receiver's core one copy (or one
//!   reduction); a core does `2 x` the link bandwidth of such copies per second, so
//!   two ranks on two cores exchanging both ways move at the link bandwidth, as
//!   calibrated. Between two ranks of one core a byte costs [`HostModel::same_core`]
//!   times as much (it stays in that core's caches), for the part of its message
//!   that the core's L2 still holds ([`HostModel::same_core_cost`]).
//!   A message to a rank that shares its core waits [`HostModel::switch`] per other
//!   rank there before it is taken (the receiver sleeps and waits for its turn).
//! - Caches ([`HostModel::l2`], [`HostModel::l3`]): the part of a call's working set
//!   (its buffers and shared-memory rings, over every call of a benchmark loop) that
//!   fits a core's L2 or the host's L3 moves at that cache's speed-up over the
//!   calibrated (memory-bound) rates.
//! - A receive finishes when its bytes have arrived and it is ready (the link
//!   buffers what arrives early).
//! - Local copies and reductions take their bytes over the host's memory bandwidth
//!   or the reduction rate.
//!
//! Ranks may be folded: with a period `P`, the engine runs ranks `0..P` only and rank
//! `q` stands for every rank `q + kP` (see `sim::fold`).

use super::compile::{Kind, Program};
use super::net::Network;
use crate::config::Collective;
use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// A cache level: its size and how much faster copies and reductions run from it
/// than from memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cache {
    /// Bytes (per core for L2, per host for L3).
    pub bytes: usize,
    /// Rate from this cache over the calibrated rate (1: no effect).
    pub speedup: f64,
}

/// How one host's cores and caches shape its shared-memory transfers. The default
/// changes nothing: equal costs on and between cores, no caches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HostModel {
    /// Cost of a shared-memory byte between two ranks on one core over its cost
    /// between two cores (applies where `Network::cores` is set).
    pub same_core: f64,
    /// Each core's own cache.
    pub l2: Cache,
    /// The host's shared cache.
    pub l3: Cache,
    /// Seconds a message waits, per other rank on its receiver's core, before the
    /// receiver runs (a rank that sleeps waits for its turn on a shared core).
    pub switch: f64,
}

impl Default for HostModel {
    fn default() -> HostModel {
        let none = Cache {
            bytes: 0,
            speedup: 1.0,
        };
        HostModel {
            same_core: 1.0,
            l2: none,
            l3: none,
            switch: 0.0,
        }
    }
}

impl HostModel {
    /// Speed of copies and reductions over the calibrated rate for a core whose
    /// ranks touch `core_bytes` on a host whose ranks touch `host_bytes`: the part
    /// that fits L2 at its speed-up, the part beyond that fits L3 at its, the rest
    /// at 1 (time per byte weighted by the parts).
    pub(crate) fn speed(&self, core_bytes: f64, host_bytes: f64) -> f64 {
        let fits = |c: &Cache, w: f64| {
            if c.speedup != 1.0 && w > 0.0 {
                (c.bytes as f64 / w).min(1.0)
            } else {
                0.0
            }
        };
        let a = fits(&self.l2, core_bytes);
        let b = fits(&self.l3, host_bytes).max(a);
        1.0 / (a / self.l2.speedup + (b - a) / self.l3.speedup + (1.0 - b))
    }

    /// Cost of a shared-memory byte between two ranks of a core that `ranks` ranks
    /// share, in a message of `bytes`, over its cost between cores. The saving of
    /// [`HostModel::same_core`] needs the message still in the core's L2 when its
    /// receiver runs; every rank of the core has about one message in flight there,
    /// so `L2 / (ranks x bytes)` of it is (all of it at most; all of it when the L2
    /// is not modelled).
    pub(crate) fn same_core_cost(&self, ranks: usize, bytes: f64) -> f64 {
        let kept = if self.l2.bytes == 0 || bytes <= 0.0 {
            1.0
        } else {
            (self.l2.bytes as f64 / (ranks as f64 * bytes)).min(1.0)
        };
        1.0 - (1.0 - self.same_core) * kept
    }
}

/// Bytes of input and output buffers one rank holds for a call of `size` bytes
/// (nccl-tests' sizes) on `n` ranks.
pub(crate) fn buffer_bytes(coll: Collective, size: usize, n: usize) -> f64 {
    let s = size as f64;
    match coll {
        Collective::AllGather | Collective::ReduceScatter => s + s / n as f64,
        _ => 2.0 * s,
    }
}

/// Rates and switches of one simulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    /// Reduction throughput per rank, bytes/s.
    pub reduce: f64,
    /// Bytes of buffers one rank touches over the whole call (see [`buffer_bytes`]).
    pub buffers: f64,
    /// Bytes of one shared-memory ring (one per peer a rank sends to on its host).
    pub ring: f64,
    /// Cores and caches.
    pub host: HostModel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Start(u32),
    Drained { flow: u32, ver: u32 },
    Arrive { rank: u32, lane: u32 },
    LocalDone { rank: u32, op: u32 },
}

struct Flow {
    rem: f64,
    rate: f64,
    at: f64,
    /// When its one valid drain event (version `ver`) fires: never after it drains.
    due: f64,
    ver: u32,
    res: [u32; 6],
    /// The flow's weight on each of `res`.
    w: [f64; 6],
    nres: u8,
    alpha: f64,
    rank: u32,
    lane: u32,
}

struct Resource {
    cap: f64,
    flows: Vec<u32>,
    /// Summed weights of `flows`.
    load: f64,
}

struct RankState {
    waits: Vec<u32>,
    next: Vec<u32>,
    busy: Vec<bool>,
    arrived: Vec<VecDeque<f64>>,
    /// Per send lane: (receiving simulated rank, its lane).
    dest: Vec<(u32, u32)>,
    started: bool,
    left: usize,
}

enum Task {
    Finish(u32, u32),
    Try(u32, u32),
}

/// Pending events by time, then by insertion (so equal times run in a fixed order).
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
}

impl Queue {
    /// Times are non-negative, so their bit patterns order like the numbers.
    fn push(&mut self, t: f64, e: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t.max(0.0).to_bits(), self.seq, e)));
    }

    fn pop(&mut self) -> Option<(f64, Ev)> {
        self.heap
            .pop()
            .map(|Reverse((t, _, e))| (f64::from_bits(t), e))
    }
}

/// What one run of the engine found.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    /// Per simulated rank: when its last op finished.
    pub finish: Vec<f64>,
    /// Events processed.
    pub events: u64,
}

/// Runs `progs` (simulated rank `q` runs `progs[q]`, true rank numbers in its
/// peers) starting at `start[q]`; `period` folds ranks (`progs.len()` when not folded).
pub(crate) fn run(net: &Network, progs: &[&Program], start: &[f64], rates: Rates) -> Result<Run> {
    let m = progs.len();
    let n = net.topo.nranks();
    let fold = |r: usize| r % m;
    let hosts_sim = (0..m).map(|r| net.topo.host_of(r)).max().unwrap_or(0) + 1;
    let pods_sim = (0..hosts_sim).map(|h| net.pod_of[h]).max().unwrap_or(0) + 1;
    let fold_host = |h: usize| h % hosts_sim;
    let fold_pod = |p: usize| p % pods_sim;
    // Resources: per rank out, in, reduce; per host NIC out, in; per pod up, down;
    // per core of each host (when modelled).
    let cores = net.cores.unwrap_or(0);
    let (r_out, r_in, r_red) = (0, m, 2 * m);
    let (h_out, h_in) = (3 * m, 3 * m + hosts_sim);
    let (p_out, p_in) = (3 * m + 2 * hosts_sim, 3 * m + 2 * hosts_sim + pods_sim);
    let c_at = p_in + pods_sim;
    let mut res: Vec<Resource> = Vec::with_capacity(c_at + hosts_sim * cores);
    let gbs = |x: f64| x * 1e9;
    res.resize_with(c_at + hosts_sim * cores, || Resource {
        cap: 0.0,
        flows: Vec::new(),
        load: 0.0,
    });
    // Placement: rank q's core (index into the core resources, `None` when cores are
    // not modelled) and its multiplier from the caches.
    let local = |q: usize| {
        let h = net.topo.host_of(q);
        let rs = &net.topo.hosts[h].ranks;
        let i = rs.iter().position(|&r| r == q).unwrap_or(0);
        (h, i, rs.len())
    };
    let core_of: Vec<Option<usize>> = (0..m)
        .map(|q| {
            let (h, i, k) = local(q);
            (cores > 0).then(|| fold_host(h) * cores + i * cores / k)
        })
        .collect();
    // Bytes each simulated rank touches: buffers plus a ring per host peer it sends to.
    let touched_by: Vec<f64> = progs
        .iter()
        .enumerate()
        .map(|(q, p)| {
            let h = net.topo.host_of(q);
            let mut peers: Vec<u32> = p
                .lanes
                .iter()
                .filter(|l| l.send && net.topo.host_of(l.peer as usize) == h)
                .map(|l| l.peer)
                .collect();
            peers.sort_unstable();
            peers.dedup();
            rates.buffers + rates.ring * peers.len() as f64
        })
        .collect();
    // Working sets per core and per host (a rank stands for its whole host: folding
    // runs whole hosts).
    let mut per_core = vec![0.0f64; hosts_sim * cores];
    let mut per_host = vec![0.0f64; hosts_sim];
    let mut sharing = vec![0usize; hosts_sim * cores];
    for q in 0..m {
        per_host[fold_host(net.topo.host_of(q))] += touched_by[q];
        if let Some(c) = core_of[q] {
            per_core[c] += touched_by[q];
            sharing[c] += 1;
        }
    }
    // What a message to rank q waits for the others on its core.
    let turn: Vec<f64> = core_of
        .iter()
        .map(|c| c.map_or(0.0, |c| (sharing[c] - 1) as f64 * rates.host.switch))
        .collect();
    let speed: Vec<f64> = (0..m)
        .map(|q| {
            let own = core_of[q].map_or(touched_by[q], |c| per_core[c]);
            rates
                .host
                .speed(own, per_host[fold_host(net.topo.host_of(q))])
        })
        .collect();
    for r in 0..m {
        let h = &net.topo.hosts[net.topo.host_of(r)];
        res[r_out + r].cap = gbs(h.intra.bw_gbs) * speed[r];
        res[r_in + r].cap = gbs(h.intra.bw_gbs) * speed[r];
        res[r_red + r].cap = rates.reduce * speed[r];
        if let Some(c) = core_of[r] {
            // A core copies 2x the link bandwidth: one copy at each end of a byte.
            res[c_at + c].cap = 2.0 * gbs(h.intra.bw_gbs) * speed[r];
        }
    }
    for h in 0..hosts_sim {
        let host = &net.topo.hosts[h];
        res[h_out + h].cap = gbs(host.net.bw_gbs);
        res[h_in + h].cap = gbs(host.net.bw_gbs);
    }
    if let Some(pl) = net.pod_link {
        for p in 0..pods_sim {
            res[p_out + p].cap = gbs(pl.bw_gbs);
            res[p_in + p].cap = gbs(pl.bw_gbs);
        }
    }

    // Lane look-up per simulated rank: (true peer, send, lane) -> lane index.
    let index: Vec<HashMap<(u32, bool, u16), u32>> = progs
        .iter()
        .map(|p| {
            p.lanes
                .iter()
                .enumerate()
                .map(|(i, l)| ((l.peer, l.send, l.lane), i as u32))
                .collect()
        })
        .collect();
    let mut st: Vec<RankState> = Vec::with_capacity(m);
    for (q, p) in progs.iter().enumerate() {
        let mut dest = vec![(u32::MAX, u32::MAX); p.lanes.len()];
        for (i, l) in p.lanes.iter().enumerate().filter(|(_, l)| l.send) {
            let b = l.peer as usize;
            let bq = fold(b);
            // The receiver sees this rank shifted as its own rank is.
            let shift = b - bq;
            let me = ((q + n - shift % n) % n) as u32;
            let Some(&li) = index[bq].get(&(me, false, l.lane)) else {
                return Err(Error::Internal(format!(
                    "simulation: rank {q} sends to rank {b} on lane {}, which never receives from it",
                    l.lane
                )));
            };
            if progs[bq].lanes[li as usize].ops.len() != l.ops.len() {
                return Err(Error::Internal(format!(
                    "simulation: rank {q} sends {} messages to rank {b} on lane {}, which receives {}",
                    l.ops.len(),
                    l.lane,
                    progs[bq].lanes[li as usize].ops.len()
                )));
            }
            dest[i] = (bq as u32, li);
        }
        st.push(RankState {
            waits: p.waits.clone(),
            next: vec![0; p.lanes.len()],
            busy: vec![false; p.lanes.len()],
            arrived: vec![VecDeque::new(); p.lanes.len()],
            dest,
            started: false,
            left: p.ops.len(),
        });
    }

    let mut queue = Queue::default();
    let mut flows: Vec<Flow> = Vec::new();
    let mut free_flows: Vec<u32> = Vec::new();
    let mut finish = vec![0.0f64; m];
    let mut events = 0u64;
    for (q, &t) in start.iter().enumerate() {
        queue.push(t, Ev::Start(q as u32));
    }
    let mut todo: Vec<Task> = Vec::new();
    let mut touched: Vec<u32> = Vec::new();

    while let Some((now, ev)) = queue.pop() {
        events += 1;
        match ev {
            Ev::Start(q) => {
                let s = &mut st[q as usize];
                s.started = true;
                let p = progs[q as usize];
                if s.left == 0 {
                    finish[q as usize] = now;
                }
                for (i, op) in p.ops.iter().enumerate() {
                    let local = !matches!(op.kind, Kind::Send | Kind::Recv | Kind::RecvReduce);
                    if local && s.waits[i] == 0 {
                        let d = local_time(net, p, q as usize, i, rates) / speed[q as usize];
                        queue.push(
                            now + d,
                            Ev::LocalDone {
                                rank: q,
                                op: i as u32,
                            },
                        );
                    }
                }
                for l in 0..p.lanes.len() {
                    todo.push(Task::Try(q, l as u32));
                }
            }
            Ev::LocalDone { rank, op } => todo.push(Task::Finish(rank, op)),
            Ev::Arrive { rank, lane } => todo.push(Task::Try(rank, lane)),
            Ev::Drained { flow, ver } => {
                let f = &mut flows[flow as usize];
                if f.ver != ver {
                    continue;
                }
                // Re-rated to a lower rate since this event was set: it drains later.
                let t = f.at + f.rem / f.rate;
                if t > now {
                    f.due = t;
                    queue.push(t, Ev::Drained { flow, ver });
                    continue;
                }
                let f = &flows[flow as usize];
                let (q, lane, alpha) = (f.rank, f.lane, f.alpha);
                let (resl, wl) = (f.res, f.w);
                let nres = f.nres as usize;
                flows[flow as usize].ver = flows[flow as usize].ver.wrapping_add(1);
                free_flows.push(flow);
                touched.clear();
                for (&r, &w) in resl[..nres].iter().zip(&wl[..nres]) {
                    let x = &mut res[r as usize];
                    if let Some(at) = x.flows.iter().position(|&y| y == flow) {
                        x.flows.swap_remove(at);
                    }
                    // Exact when empty again (no rounding left behind).
                    x.load = if x.flows.is_empty() { 0.0 } else { x.load - w };
                    touched.push(r);
                }
                rerate(&mut flows, &res, &touched, now, &mut queue);
                let s = &mut st[q as usize];
                let idx = s.next[lane as usize];
                let op = progs[q as usize].lanes[lane as usize].ops[idx as usize];
                s.busy[lane as usize] = false;
                s.next[lane as usize] += 1;
                let (bq, bl) = s.dest[lane as usize];
                st[bq as usize].arrived[bl as usize].push_back(now + alpha);
                queue.push(now + alpha, Ev::Arrive { rank: bq, lane: bl });
                todo.push(Task::Finish(q, op));
                todo.push(Task::Try(q, lane));
            }
        }
        while let Some(task) = todo.pop() {
            match task {
                Task::Finish(q, i) => {
                    let p = progs[q as usize];
                    let s = &mut st[q as usize];
                    s.left -= 1;
                    if s.left == 0 {
                        finish[q as usize] = now;
                    }
                    for &j in
                        &p.succ[p.succ_at[i as usize] as usize..p.succ_at[i as usize + 1] as usize]
                    {
                        s.waits[j as usize] -= 1;
                        if s.waits[j as usize] == 0 {
                            let op = p.ops[j as usize];
                            match op.kind {
                                Kind::Send | Kind::Recv | Kind::RecvReduce => {
                                    todo.push(Task::Try(q, op.lane))
                                }
                                _ => {
                                    let d = local_time(net, p, q as usize, j as usize, rates)
                                        / speed[q as usize];
                                    queue.push(now + d, Ev::LocalDone { rank: q, op: j });
                                }
                            }
                        }
                    }
                }
                Task::Try(q, l) => {
                    let p = progs[q as usize];
                    let lane = &p.lanes[l as usize];
                    let s = &mut st[q as usize];
                    if !s.started || s.busy[l as usize] {
                        continue;
                    }
                    let idx = s.next[l as usize] as usize;
                    let Some(&op) = lane.ops.get(idx) else {
                        continue;
                    };
                    if s.waits[op as usize] != 0 {
                        continue;
                    }
                    if lane.send {
                        s.busy[l as usize] = true;
                        let (bq, bl) = s.dest[l as usize];
                        let rop = progs[bq as usize].lanes[bl as usize].ops[idx];
                        let reduce = progs[bq as usize].ops[rop as usize].kind == Kind::RecvReduce;
                        let a = q as usize;
                        let b = lane.peer as usize;
                        let (ha, hb) = (net.topo.host_of(a), net.topo.host_of(b));
                        let mut fr = [0u32; 6];
                        let mut fw = [1.0f64; 6];
                        let mut k = 0;
                        let mut add = |x: usize, w: f64| {
                            fr[k] = x as u32;
                            fw[k] = w;
                            k += 1;
                        };
                        let mut alpha = net.topo.link(a, b).alpha_us * 1e-6 + turn[bq as usize];
                        if ha == hb {
                            add(r_out + a, 1.0);
                            add(r_in + bq as usize, 1.0);
                            if let (Some(ca), Some(cb)) = (core_of[a], core_of[bq as usize]) {
                                // In units of one copy: the receiver's share of a
                                // calibrated reduction is what is left of 1/reduce
                                // after the sender's copy, 1/(2 bw).
                                let bw = gbs(net.topo.hosts[ha].intra.bw_gbs);
                                let recv = if reduce {
                                    (2.0 * bw / rates.reduce - 1.0).max(0.0)
                                } else {
                                    1.0
                                };
                                if ca == cb {
                                    let bytes = p.ops[op as usize].bytes as f64;
                                    let cost = rates.host.same_core_cost(sharing[ca], bytes);
                                    add(c_at + ca, cost * (1.0 + recv));
                                } else {
                                    add(c_at + ca, 1.0);
                                    add(c_at + cb, recv);
                                }
                            }
                        } else {
                            add(h_out + fold_host(ha), 1.0);
                            add(h_in + fold_host(hb), 1.0);
                            let (pa, pb) = (net.pod_of[ha], net.pod_of[hb]);
                            if pa != pb {
                                add(p_out + fold_pod(pa), 1.0);
                                add(p_in + fold_pod(pb), 1.0);
                                alpha += net.pod_link.map_or(0.0, |c| c.alpha_us * 1e-6);
                            }
                        }
                        if reduce {
                            add(r_red + bq as usize, 1.0);
                        }
                        let flow = Flow {
                            rem: p.ops[op as usize].bytes as f64,
                            rate: 0.0,
                            at: now,
                            due: f64::INFINITY,
                            ver: 0,
                            res: fr,
                            w: fw,
                            nres: k as u8,
                            alpha,
                            rank: q,
                            lane: l,
                        };
                        let id = match free_flows.pop() {
                            Some(id) => {
                                let ver = flows[id as usize].ver;
                                flows[id as usize] = Flow { ver, ..flow };
                                id
                            }
                            None => {
                                flows.push(flow);
                                (flows.len() - 1) as u32
                            }
                        };
                        touched.clear();
                        for (&r, &w) in fr[..k].iter().zip(&fw[..k]) {
                            res[r as usize].flows.push(id);
                            res[r as usize].load += w;
                            touched.push(r);
                        }
                        rerate(&mut flows, &res, &touched, now, &mut queue);
                    } else {
                        match s.arrived[l as usize].front() {
                            Some(&t) if t <= now => {
                                s.arrived[l as usize].pop_front();
                                s.next[l as usize] += 1;
                                todo.push(Task::Try(q, l));
                                todo.push(Task::Finish(q, op));
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    if let Some((q, s)) = st.iter().enumerate().find(|(_, s)| s.left > 0) {
        return Err(Error::Internal(format!(
            "simulation: rank {q} cannot finish ({} of {} ops left): the schedules do not match",
            s.left,
            progs[q].ops.len()
        )));
    }
    Ok(Run { finish, events })
}

/// Seconds a local op takes.
fn local_time(net: &Network, p: &Program, q: usize, i: usize, rates: Rates) -> f64 {
    let op = p.ops[i];
    match op.kind {
        Kind::Copy => op.bytes as f64 / (net.topo.hosts[net.topo.host_of(q)].intra.bw_gbs * 1e9),
        Kind::Reduce => op.bytes as f64 / rates.reduce,
        _ => 0.0,
    }
}

/// Recomputes the rate of every flow on the `touched` resources. A flow that now
/// drains earlier than its drain event gets a new one (the old one's version is
/// stale and it is dropped when it fires); one that drains later keeps its event,
/// which sets a new one when it fires early (most re-ratings slow flows down, so
/// this leaves far fewer events in the queue).
fn rerate(flows: &mut [Flow], res: &[Resource], touched: &[u32], now: f64, queue: &mut Queue) {
    for &r in touched {
        for &fid in &res[r as usize].flows {
            let f = &mut flows[fid as usize];
            let rate = f.res[..f.nres as usize]
                .iter()
                .map(|&x| res[x as usize].cap / res[x as usize].load)
                .fold(f64::INFINITY, f64::min);
            if rate == f.rate {
                continue;
            }
            f.rem = (f.rem - f.rate * (now - f.at)).max(0.0);
            f.at = now;
            f.rate = rate;
            let t = now + f.rem / rate;
            if t >= f.due {
                continue;
            }
            f.due = t;
            f.ver = f.ver.wrapping_add(1);
            queue.push(
                t,
                Ev::Drained {
                    flow: fid,
                    ver: f.ver,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cache, HostModel};
    use crate::sim::{Cluster, Settings, Simulator};
    use crate::topo::{LinkClass, LinkCost};
    use crate::{Algorithm, Collective};

    const ALPHA: f64 = 10e-6;
    const BETA: f64 = 1e9;
    /// 64 KiB blocks.
    const BLOCK: f64 = 65536.0;

    /// `n` ranks of one host over shm at ALPHA, BETA on `cores` cores (`None`: a core
    /// per rank); no call headers, free reduction, one 64 KiB chunk per block.
    fn ring(n: usize, cores: Option<usize>, host: HostModel) -> f64 {
        ring_at(n, cores, host, BETA, 1e9)
    }

    fn ring_at(n: usize, cores: Option<usize>, host: HostModel, beta: f64, reduce: f64) -> f64 {
        let shm = LinkCost {
            class: LinkClass::Shm,
            alpha_us: ALPHA * 1e6,
            bw_gbs: beta / 1e9,
            measured: false,
        };
        let mut c = Cluster::new(1, n, shm, shm);
        c.cores = cores;
        let mut s = Settings::default();
        s.config.check_calls = false;
        s.config.chunk_bytes = BLOCK as usize;
        s.reduce_gbs = reduce;
        s.host = host;
        Simulator::new(c.build().unwrap(), s)
            .run(Collective::AllReduce, Algorithm::Ring, n * BLOCK as usize)
            .unwrap()
            .seconds
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs()
    }

    #[test]
    fn three_ranks_on_two_cores_are_bound_by_the_shared_core() {
        // Ranks 0 and 1 on core 0, rank 2 on core 1; a core does 2 BETA of copies.
        // Reduce-scatter (free reduction: the receiver's part costs nothing): core 0
        // carries 0->1 (both copies, 1 + 0), 1->2's send (1) and 2->0's receive (0):
        // 2 BETA / 2 = BETA. All-gather: 0->1 (2), 1->2 (1), 2->0 (1): 2 BETA / 4, and
        // every flow touches core 0.
        let want = 2.0 * (ALPHA + BLOCK / BETA) + 2.0 * (ALPHA + BLOCK / (BETA / 2.0));
        let t = ring(3, Some(2), HostModel::default());
        assert!(close(t, want), "{t} vs {want}");
        // A core per rank: every step at BETA.
        let t = ring(3, None, HostModel::default());
        assert!(close(t, 4.0 * (ALPHA + BLOCK / BETA)), "{t}");
    }

    #[test]
    fn copies_between_ranks_of_one_core_cost_same_core() {
        // As above with 0->1 at half cost: reduce-scatter core 0 at 1.5 (the ports
        // still cap it at BETA); all-gather 1 + 1 + 1 = 3: 2 BETA / 3.
        let host = HostModel {
            same_core: 0.5,
            ..HostModel::default()
        };
        let want = 2.0 * (ALPHA + BLOCK / BETA) + 2.0 * (ALPHA + BLOCK / (2.0 * BETA / 3.0));
        let t = ring(3, Some(2), host);
        assert!(close(t, want), "{t} vs {want}");
    }

    #[test]
    fn same_core_saves_only_what_the_l2_still_holds() {
        // 4 ranks on one core, every link between ranks of that core, same-core 0.5.
        // With an L2 of two blocks, the core's 4 ranks have a block each in flight,
        // so half of each message is still there: a byte costs 1 - 0.5 x 0.5 = 0.75.
        // Reduce-scatter (free reduction): 4 flows of weight 0.75 on a core of
        // 2 BETA, BETA / 1.5 each; all-gather: weight 1.5 each, BETA / 3. Three
        // steps of each: 6 ALPHA + 3 x 1.5 B/BETA + 3 x 3 B/BETA.
        let l2 = |bytes: f64| HostModel {
            same_core: 0.5,
            l2: Cache {
                bytes: bytes as usize,
                speedup: 1.0,
            },
            ..HostModel::default()
        };
        let want = 6.0 * ALPHA + 13.5 * BLOCK / BETA;
        let t = ring(4, Some(1), l2(2.0 * BLOCK));
        assert!(close(t, want), "{t} vs {want}");
        // An L2 that holds every rank's block (or none modelled) keeps the whole
        // saving: reduce-scatter at BETA (the ports), all-gather at BETA / 2.
        let want = 6.0 * ALPHA + 9.0 * BLOCK / BETA;
        for t in [ring(4, Some(1), l2(4.0 * BLOCK)), ring(4, Some(1), l2(0.0))] {
            assert!(close(t, want), "{t} vs {want}");
        }
    }

    #[test]
    fn a_message_waits_for_the_other_ranks_of_its_core() {
        // 4 ranks on 2 cores: each receiver shares its core with one rank, so each of
        // the 2(n-1) = 6 steps waits `switch` once more.
        let host = HostModel {
            switch: 3e-6,
            ..HostModel::default()
        };
        let (t0, t1) = (
            ring(4, Some(2), HostModel::default()),
            ring(4, Some(2), host),
        );
        assert!(close(t1 - t0, 6.0 * 3e-6), "{t0} {t1}");
    }

    #[test]
    fn the_cached_part_of_a_call_moves_at_the_cache_speed() {
        let host = HostModel {
            l2: Cache {
                bytes: 2 << 20,
                speedup: 2.0,
            },
            l3: Cache {
                bytes: 32 << 20,
                speedup: 1.5,
            },
            ..HostModel::default()
        };
        let mib = (1 << 20) as f64;
        // All in L2; half in L2 and the rest in L3; 1/32 in L2, 1/2 within L3.
        assert!(close(host.speed(mib, 4.0 * mib), 2.0));
        assert!(close(
            host.speed(4.0 * mib, 16.0 * mib),
            1.0 / (0.5 / 2.0 + 0.5 / 1.5)
        ));
        let t = 1.0 / 32.0 / 2.0 + (0.5 - 1.0 / 32.0) / 1.5 + 0.5;
        assert!(close(host.speed(64.0 * mib, 64.0 * mib), 1.0 / t));
        assert!(close(HostModel::default().speed(mib, mib), 1.0));
        // A call that fits L2 (2 ranks, 128 KiB, a 1 MiB ring each: 1.25 MiB per
        // core) runs as on links and reductions twice as fast.
        let cached = ring_at(2, Some(2), host, BETA, 4.0);
        let fast = ring_at(2, Some(2), HostModel::default(), 2.0 * BETA, 8.0);
        assert!(close(cached, fast), "{cached} vs {fast}");
    }
}
