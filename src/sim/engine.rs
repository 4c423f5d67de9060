//! The discrete-event engine: runs every simulated rank's [`Program`] the way the
//! executor runs a schedule, over the links of a [`Network`].
//!
//! - An op starts once the ops it depends on have finished; transfers also wait for
//!   their lane, which runs its ops in order (the executor's lanes).
//! - A send is a *flow*: its bytes drain through the resources it crosses (sending
//!   and receiving rank's shared-memory port, the hosts' NICs, the pods' uplinks,
//!   the receiver's reduction for receive-and-reduce, the host's cores when it has
//!   fewer than ranks); each resource is shared equally among the flows on it and a
//!   flow moves at the smallest share it gets (recomputed whenever a flow starts or
//!   ends). The send finishes, and frees its lane, when the last byte has left; the
//!   bytes arrive `alpha` later.
//! - A receive finishes when its bytes have arrived and it is ready (the link
//!   buffers what arrives early).
//! - Local copies and reductions take their bytes over the host's memory bandwidth
//!   or the reduction rate.
//!
//! Ranks may be folded: with a period `P`, the engine runs ranks `0..P` only and rank
//! `q` stands for every rank `q + kP` (see `sim::fold`).

use super::compile::{Kind, Program};
use super::net::Network;
use crate::error::{Error, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

/// Rates and switches of one simulation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    /// Reduction throughput per rank, bytes/s.
    pub reduce: f64,
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
    ver: u32,
    res: [u32; 6],
    nres: u8,
    alpha: f64,
    rank: u32,
    lane: u32,
}

struct Resource {
    cap: f64,
    flows: Vec<u32>,
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
    // Resources: per rank out, in, reduce; per host NIC out, in, cores; per pod up, down.
    let (r_out, r_in, r_red) = (0, m, 2 * m);
    let (h_out, h_in, h_cpu) = (3 * m, 3 * m + hosts_sim, 3 * m + 2 * hosts_sim);
    let (p_out, p_in) = (3 * m + 3 * hosts_sim, 3 * m + 3 * hosts_sim + pods_sim);
    let mut res: Vec<Resource> = Vec::with_capacity(p_in + pods_sim);
    let gbs = |x: f64| x * 1e9;
    res.resize_with(p_in + pods_sim, || Resource {
        cap: 0.0,
        flows: Vec::new(),
    });
    for r in 0..m {
        let h = &net.topo.hosts[net.topo.host_of(r)];
        res[r_out + r].cap = gbs(h.intra.bw_gbs);
        res[r_in + r].cap = gbs(h.intra.bw_gbs);
        res[r_red + r].cap = rates.reduce;
    }
    for h in 0..hosts_sim {
        let host = &net.topo.hosts[h];
        res[h_out + h].cap = gbs(host.net.bw_gbs);
        res[h_in + h].cap = gbs(host.net.bw_gbs);
        res[h_cpu + h].cap = gbs(host.intra.bw_gbs) * net.cores.unwrap_or(1) as f64;
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
                        let d = local_time(net, p, q as usize, i, rates);
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
                if flows[flow as usize].ver != ver {
                    continue;
                }
                let f = &flows[flow as usize];
                let (q, lane, alpha) = (f.rank, f.lane, f.alpha);
                let resl: Vec<u32> = f.res[..f.nres as usize].to_vec();
                flows[flow as usize].ver = flows[flow as usize].ver.wrapping_add(1);
                free_flows.push(flow);
                touched.clear();
                for &r in &resl {
                    let v = &mut res[r as usize].flows;
                    if let Some(at) = v.iter().position(|&x| x == flow) {
                        v.swap_remove(at);
                    }
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
                                    let d = local_time(net, p, q as usize, j as usize, rates);
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
                        let mut k = 0;
                        let mut add = |x: usize| {
                            fr[k] = x as u32;
                            k += 1;
                        };
                        let mut alpha = net.topo.link(a, b).alpha_us * 1e-6;
                        if ha == hb {
                            add(r_out + a);
                            add(r_in + bq as usize);
                            if net.cores.is_some() {
                                add(h_cpu + fold_host(ha));
                            }
                        } else {
                            add(h_out + fold_host(ha));
                            add(h_in + fold_host(hb));
                            let (pa, pb) = (net.pod_of[ha], net.pod_of[hb]);
                            if pa != pb {
                                add(p_out + fold_pod(pa));
                                add(p_in + fold_pod(pb));
                                alpha += net.pod_link.map_or(0.0, |c| c.alpha_us * 1e-6);
                            }
                        }
                        if reduce {
                            add(r_red + bq as usize);
                        }
                        let flow = Flow {
                            rem: p.ops[op as usize].bytes as f64,
                            rate: 0.0,
                            at: now,
                            ver: 0,
                            res: fr,
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
                        for &r in &fr[..k] {
                            res[r as usize].flows.push(id);
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

/// Recomputes the rate of every flow on the `touched` resources and reschedules
/// their drain events (an event whose version is stale is dropped when it fires).
fn rerate(flows: &mut [Flow], res: &[Resource], touched: &[u32], now: f64, queue: &mut Queue) {
    for &r in touched {
        for &fid in &res[r as usize].flows {
            let f = &mut flows[fid as usize];
            let rate = f.res[..f.nres as usize]
                .iter()
                .map(|&x| res[x as usize].cap / res[x as usize].flows.len() as f64)
                .fold(f64::INFINITY, f64::min);
            if rate == f.rate {
                continue;
            }
            f.rem = (f.rem - f.rate * (now - f.at)).max(0.0);
            f.at = now;
            f.rate = rate;
            f.ver = f.ver.wrapping_add(1);
            let t = now + f.rem / rate;
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
