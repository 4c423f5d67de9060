//! Picks the algorithm for each call: `MIXCCL_ALGO` when it forces one, else the
//! candidate with the smallest alpha-beta time estimate on the topology model
//! (like NCCL's `tuning.cc`). A pure function of values every rank shares (the
//! must-agree settings and the model, whose fingerprint init compares), so all
//! ranks choose alike. Without a model (custom transports) a size rule stands in.
//!
//! The estimate of one candidate is latency + bandwidth + reduction:
//! - latency: the dependent message steps of the algorithm, each costing the
//!   largest alpha among the links that step uses; the steps that cross from one pod
//!   to another also pay the pods' uplink alpha;
//! - bandwidth: every byte the algorithm moves is charged to the links it crosses:
//!   inside a host to the sending and the receiving rank (shared-memory copies),
//!   between hosts to the sending host's network link out and the receiving host's
//!   link in, between pods also to the sending pod's uplink out and the receiving
//!   pod's uplink in (shared by all hosts of the pod); the busiest of them, at its
//!   bandwidth, bounds the time;
//! - reduction: the most bytes any rank reduces, at [`REDUCE_GBS`].

use crate::config::{Algorithm, Collective, Config};
use crate::topo::Topology;
use std::sync::Arc;

/// Reduction throughput assumed by the estimate, GB/s per rank.
pub(crate) const REDUCE_GBS: f64 = 5.0;
/// The board's all-reduce (ring reduce-scatter, then the board's gather) is weighed
/// from this many bytes: 4 ranks on 2 cores measured it ahead of the ring from 2-8 MiB
/// in place and out of place; below, out-of-place calls were slower through the
/// board, which the estimate does not see.
const PUBLISH_ALL_REDUCE_MIN_BYTES: usize = 4 << 20;
/// The direct algorithms move (n-1) x S per rank and need a link to every peer (made
/// on first use: (n-1) x (nsocks+1) sockets per rank); above this many ranks they are
/// not considered, so a large communicator stays sparse (and their estimate alone
/// would cost O(n^2)).
const DIRECT_MAX_RANKS: usize = 128;
/// Above this many ranks all-to-all's pairwise load is not summed (O(n^2)).
const PAIRWISE_LOAD_MAX_RANKS: usize = 256;

/// What the communicator offers beyond links, decided at init and equal on all ranks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Capabilities {
    /// Every rank is on one host and may read every other's memory (cross-memory attach).
    pub host_read: bool,
    /// Every rank is on one host and shares its board (`transport::board`).
    pub publish: bool,
    /// The model all ranks plan with.
    pub topo: Option<Arc<Topology>>,
    /// Ranks per host, from `topo` (the hierarchical algorithms' layout).
    pub hosts: Vec<Vec<usize>>,
    /// Init is running its own collectives: small all-reduces go over the tree
    /// ([`choose`]).
    pub init: bool,
}

impl Capabilities {
    /// Sets the model (and the host layout derived from it).
    pub(crate) fn set_topology(&mut self, t: Topology) {
        self.hosts = t.hosts.iter().map(|h| h.ranks.clone()).collect();
        self.topo = Some(Arc::new(t));
    }
}

/// The algorithm for `coll` moving `bytes` per rank on `nranks` ranks.
pub(crate) fn choose(
    config: &Config,
    caps: &Capabilities,
    coll: Collective,
    bytes: usize,
    nranks: usize,
) -> Algorithm {
    if let Some(forced) = config.algo.get(coll) {
        return forced;
    }
    // Init's own all-reduces (the model's fingerprint and measured figures, the
    // islands' vendor code, the final check: a few bytes to a few KiB) run over one
    // tree, whatever the model: the direct algorithm the planner picks for them up
    // to DIRECT_MAX_RANKS would link every pair at init, the tree links a rank to
    // its parent and children only, and calls connect the rest when they need it.
    if caps.init
        && coll == Collective::AllReduce
        && bytes <= crate::algo::tree::SINGLE_TREE_MAX_BYTES
    {
        return Algorithm::Tree;
    }
    match &caps.topo {
        Some(t) if t.nranks() == nranks => {
            cheapest_with(t, config, coll, bytes, &host_paths(caps, coll)).0
        }
        _ => host_rule(config, caps, coll, bytes, nranks)
            .unwrap_or_else(|| size_rule(config, coll, bytes, nranks)),
    }
}

/// The host's own paths the planner weighs for `coll` where `caps` offers them, ahead
/// of [`candidates`] (they win ties: at 2 ranks the board's all-gather and the
/// ring's move the same bytes in one step).
fn host_paths(caps: &Capabilities, coll: Collective) -> Vec<Algorithm> {
    let mut v = Vec::new();
    if coll == Collective::AllGather && caps.host_read {
        v.push(Algorithm::HostRead);
    }
    if caps.publish && matches!(coll, Collective::AllGather | Collective::AllReduce) {
        v.push(Algorithm::Publish);
    }
    v
}

/// The host paths without a model: cross-memory reads, else the board, for
/// all-gathers above the direct algorithm's range; the board for all-reduces from
/// [`PUBLISH_ALL_REDUCE_MIN_BYTES`].
fn host_rule(
    config: &Config,
    caps: &Capabilities,
    coll: Collective,
    bytes: usize,
    nranks: usize,
) -> Option<Algorithm> {
    let gather =
        coll == Collective::AllGather && bytes.saturating_mul(nranks) > config.direct_max_bytes;
    if gather && caps.host_read {
        return Some(Algorithm::HostRead);
    }
    let reduce = coll == Collective::AllReduce && bytes >= PUBLISH_ALL_REDUCE_MIN_BYTES;
    (caps.publish && (gather || reduce)).then_some(Algorithm::Publish)
}

/// The rule used without a model: direct for small messages, ring for large ones.
fn size_rule(config: &Config, coll: Collective, bytes: usize, nranks: usize) -> Algorithm {
    match coll {
        Collective::AllReduce if bytes <= config.direct_max_bytes || nranks <= 1 => {
            Algorithm::Direct
        }
        Collective::AllReduce => Algorithm::Ring,
        Collective::AllGather if bytes.saturating_mul(nranks) <= config.direct_max_bytes => {
            Algorithm::Direct
        }
        Collective::AllGather | Collective::ReduceScatter => Algorithm::Ring,
        Collective::Broadcast | Collective::Reduce => Algorithm::Chain,
        Collective::AllToAll => Algorithm::Pairwise,
        Collective::SendRecv | Collective::Barrier => Algorithm::Direct,
    }
}

/// The algorithms the planner weighs for `coll`, in tie-breaking order.
pub(crate) fn candidates(coll: Collective) -> &'static [Algorithm] {
    use Algorithm::*;
    match coll {
        Collective::AllReduce => &[Ring, Direct, Tree, Hier],
        Collective::AllGather => &[Ring, Direct, Hier],
        Collective::ReduceScatter => &[Ring, Hier],
        Collective::Broadcast | Collective::Reduce => &[Chain, Tree],
        Collective::AllToAll => &[Pairwise],
        Collective::SendRecv | Collective::Barrier => &[Direct],
    }
}

/// The planner's questions about a model (defined here so that `topo` does not
/// depend on `plan`).
impl Topology {
    /// The algorithm the planner picks for `coll` with `bytes` per rank (the buffer for
    /// all_reduce, broadcast and reduce; one block for all_gather, reduce_scatter and
    /// all_to_all) under `config` (`MIXCCL_ALGO` included), and its time estimate in
    /// seconds (`NaN` when forced).
    pub fn choose(&self, config: &Config, coll: Collective, bytes: usize) -> (Algorithm, f64) {
        if let Some(forced) = config.algo.get(coll) {
            return (forced, f64::NAN);
        }
        cheapest(self, config, coll, bytes)
    }

    /// The estimate for `coll` with `algo`, or `None` where the planner would not
    /// consider it.
    pub fn estimate(
        &self,
        config: &Config,
        coll: Collective,
        algo: Algorithm,
        bytes: usize,
    ) -> Option<f64> {
        estimate(self, config, coll, algo, bytes)
    }

    /// `allreduce: 8B..16KiB direct, 32KiB..1MiB tree, ...`: the choice per power-of-two
    /// size from 8 B to 1 GiB, runs of equal choices merged.
    pub fn bands(&self, config: &Config, coll: Collective) -> String {
        let per_rank = |s: usize| match coll {
            Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => {
                (s / self.nranks()).max(1)
            }
            _ => s,
        };
        let mut runs: Vec<(usize, usize, Algorithm)> = Vec::new();
        let mut s = 8usize;
        while s <= 1 << 30 {
            let a = self.choose(config, coll, per_rank(s)).0;
            match runs.last_mut() {
                Some(last) if last.2 == a => last.1 = s,
                _ => runs.push((s, s, a)),
            }
            s *= 2;
        }
        let size = |b: usize| {
            if b >= 1 << 30 {
                format!("{}GiB", b >> 30)
            } else if b >= 1 << 20 {
                format!("{}MiB", b >> 20)
            } else if b >= 1 << 10 {
                format!("{}KiB", b >> 10)
            } else {
                format!("{b}B")
            }
        };
        let parts: Vec<String> = runs
            .iter()
            .map(|(a, b, algo)| format!("{}..{} {algo}", size(*a), size(*b)))
            .collect();
        format!("{coll}: {}", parts.join(", "))
    }
}

/// The candidate with the smallest estimate, and that estimate in seconds (first
/// candidate wins ties). Public through [`Topology::choose`].
pub(crate) fn cheapest(
    t: &Topology,
    config: &Config,
    coll: Collective,
    bytes: usize,
) -> (Algorithm, f64) {
    cheapest_with(t, config, coll, bytes, &[])
}

/// As [`cheapest`], weighing the host paths `host` (see [`host_paths`]) first.
fn cheapest_with(
    t: &Topology,
    config: &Config,
    coll: Collective,
    bytes: usize,
    host: &[Algorithm],
) -> (Algorithm, f64) {
    let mut best = (size_rule(config, coll, bytes, t.nranks()), f64::INFINITY);
    for &a in host.iter().chain(candidates(coll)) {
        if let Some(time) = estimate(t, config, coll, a, bytes) {
            if time < best.1 {
                best = (a, time);
            }
        }
    }
    best
}

/// Bytes charged to each sender, receiver, network link and pod uplink.
struct Load<'a> {
    t: &'a Topology,
    rank_out: Vec<f64>,
    rank_in: Vec<f64>,
    net_out: Vec<f64>,
    net_in: Vec<f64>,
    pod_out: Vec<f64>,
    pod_in: Vec<f64>,
    /// Largest alpha (seconds) among the hosts' links used so far.
    alpha: f64,
    /// Messages (calls of `add`) so far, and how many of them crossed pods.
    messages: usize,
    crossings: usize,
}

impl<'a> Load<'a> {
    fn new(t: &'a Topology) -> Load<'a> {
        let (n, h, p) = (t.nranks(), t.hosts.len(), t.npods());
        Load {
            t,
            rank_out: vec![0.0; n],
            rank_in: vec![0.0; n],
            net_out: vec![0.0; h],
            net_in: vec![0.0; h],
            pod_out: vec![0.0; p],
            pod_in: vec![0.0; p],
            alpha: 0.0,
            messages: 0,
            crossings: 0,
        }
    }

    /// `bytes` from rank `a` to rank `b`.
    fn add(&mut self, a: usize, b: usize, bytes: f64) {
        if a == b {
            return;
        }
        let (ha, hb) = (self.t.host_of(a), self.t.host_of(b));
        if ha == hb {
            self.rank_out[a] += bytes;
            self.rank_in[b] += bytes;
        } else {
            self.net_out[ha] += bytes;
            self.net_in[hb] += bytes;
        }
        self.messages += 1;
        if self.t.crossing(a, b).is_some() {
            self.pod_out[self.t.pod_of(ha)] += bytes;
            self.pod_in[self.t.pod_of(hb)] += bytes;
            self.crossings += 1;
        }
        self.alpha = self.alpha.max(self.t.link(a, b).alpha_us * 1e-6);
    }

    /// Seconds the busiest link needs for its bytes.
    fn seconds(&self) -> f64 {
        let mut worst = 0.0f64;
        for r in 0..self.rank_out.len() {
            let bw = self.t.hosts[self.t.host_of(r)].intra.bw_gbs * 1e9;
            worst = worst.max(self.rank_out[r].max(self.rank_in[r]) / bw);
        }
        for (h, host) in self.t.hosts.iter().enumerate() {
            worst = worst.max(self.net_out[h].max(self.net_in[h]) / (host.net.bw_gbs * 1e9));
        }
        if let Some(pods) = &self.t.pods {
            for p in 0..self.pod_out.len() {
                let bytes = self.pod_out[p].max(self.pod_in[p]);
                worst = worst.max(bytes / (pods.uplink.bw_gbs * 1e9));
            }
        }
        worst
    }
}

/// The most pod crossings on the way of one block round a ring whose link `i -> i+1`
/// crosses pods where `cross[i]`: block `b` (of the first `blocks`, those holding
/// data) takes `hops` links from link `b` on (as `hier::ring_all_reduce` moves it:
/// reduced from `b` round to `b - 1`, then passed on from there).
fn ring_crossings(cross: &[bool], blocks: usize, hops: usize) -> f64 {
    let m = cross.len();
    let laps = hops / m + 2;
    let mut upto = vec![0usize; m * laps + 1];
    for i in 0..m * laps {
        upto[i + 1] = upto[i] + usize::from(cross[i % m]);
    }
    (0..blocks.min(m))
        .map(|b| upto[b + hops] - upto[b])
        .max()
        .unwrap_or(0) as f64
}

/// Seconds of the pods' uplink alpha (0 without pods).
fn pod_alpha(t: &Topology) -> f64 {
    t.pods.as_ref().map_or(0.0, |p| p.uplink.alpha_us * 1e-6)
}

/// A link's alpha (seconds) and bandwidth (bytes/s) from `a` to `b`, with the pods'
/// uplink's alpha added and its bandwidth as a bound where the link crosses pods.
fn hop(t: &Topology, a: usize, b: usize) -> (f64, f64) {
    let l = t.link(a, b);
    let (mut alpha, mut bw) = (l.alpha_us * 1e-6, l.bw_gbs * 1e9);
    if let Some(u) = t.crossing(a, b) {
        alpha += u.alpha_us * 1e-6;
        bw = bw.min(u.bw_gbs * 1e9);
    }
    (alpha, bw)
}

/// Seconds of the longest way from the root of `shape` down to a rank, summing
/// `hop(child, parent)` over its links.
fn tree_longest(
    t: &Topology,
    shape: crate::algo::tree::Shape,
    hop: impl Fn(usize, usize) -> f64,
) -> f64 {
    let n = t.nranks();
    let mut up: Vec<Option<f64>> = vec![None; n];
    let mut path = Vec::new();
    for r in 0..n {
        let mut x = r;
        while up[x].is_none() {
            path.push(x);
            match shape.links(n, x).0 {
                Some(p) => x = p,
                None => {
                    up[x] = Some(0.0);
                    path.pop();
                    break;
                }
            }
        }
        while let Some(y) = path.pop() {
            let p = shape.links(n, y).0.expect("not the root");
            up[y] = Some(up[p].expect("set above") + hop(y, p));
        }
    }
    up.into_iter().flatten().fold(0.0, f64::max)
}

/// Seconds of the first `c` bytes' way from the root of `shape` down to the last
/// rank: per link its alpha and the chunk's transfer, at the link's bandwidth shared
/// with the parent's other children over the same kind of link (it sends to all of
/// them at once) and, of `k` chunks, with those the link's other lanes carry at the
/// same time (see [`lanes_ahead`]).
fn tree_fill(
    t: &Topology,
    config: &Config,
    shape: crate::algo::tree::Shape,
    c: f64,
    k: f64,
) -> f64 {
    let n = t.nranks();
    tree_longest(t, shape, |r, p| {
        let inside = t.host_of(r) == t.host_of(p);
        let share = shape
            .links(n, p)
            .1
            .iter()
            .filter(|&&k| (t.host_of(k) == t.host_of(p)) == inside)
            .count()
            .max(1) as f64;
        let (alpha, bw) = hop(t, p, r);
        alpha + share * lanes_ahead(t, config, p, r, k) * c / bw
    })
}

/// Chunks of `k` that a link from `a` to `b` moves at once: one per lane, the k-th
/// on lane `k % lanes`, sharing the link's bandwidth, so the first chunk crosses a
/// link of two lanes at half its bandwidth when a second follows (mixccl-sim judge:
/// a chain over 389x1 hosts, 32 MiB, simulated 9.3 ms, 5.2 with one chunk at a time).
fn lanes_ahead(t: &Topology, config: &Config, a: usize, b: usize, k: f64) -> f64 {
    k.min(lanes(t, config, a, b) as f64).max(1.0)
}

/// Estimated seconds for `coll` with `algo` on `bytes` per rank, or `None` when `algo`
/// is not a candidate here.
pub(crate) fn estimate(
    t: &Topology,
    config: &Config,
    coll: Collective,
    algo: Algorithm,
    bytes: usize,
) -> Option<f64> {
    use Algorithm::*;
    use Collective::*;
    let n = t.nranks();
    let nf = n as f64;
    let hn = t.hosts.len();
    let chunk = config.chunk_bytes as f64;
    // S: the buffer for all_reduce, broadcast and reduce; the total for the others.
    let s = match coll {
        AllGather | ReduceScatter | AllToAll => bytes as f64 * nf,
        _ => bytes as f64,
    };
    let mut load = Load::new(t);
    if n == 1 {
        return Some(if algo == candidates(coll)[0] {
            0.0
        } else {
            1.0
        });
    }
    // Per-message overhead on a rank that handles several messages in one step.
    let msg = t
        .hosts
        .iter()
        .map(|h| h.intra.alpha_us)
        .fold(f64::INFINITY, f64::min)
        * 0.2e-6;
    // Message steps that cross pods (each pays the uplink's alpha on top).
    let mut cross = 0.0;
    let (steps, extra, reduced) = match (coll, algo) {
        (AllReduce | AllGather | ReduceScatter, Ring) => {
            return Some(ring(t, coll, s, chunk));
        }
        (AllReduce, Direct) | (AllGather, Direct) => {
            if s > config.direct_max_bytes as f64 || n > DIRECT_MAX_RANKS {
                return None;
            }
            // With call headers on, each pair also exchanges a header (mixccl-sim
            // judge: 168 B all_gather on 6x7 hosts with NICs of 0.14 GB/s, simulated
            // 92 us, 20 without them).
            let header = if config.check_calls {
                crate::header::HEADER_BYTES as f64
            } else {
                0.0
            };
            let per = if coll == AllReduce { s } else { s / nf } + header;
            // Every message is in flight at once: no cost per message beyond its
            // bytes (mixccl-sim judge: 104 ranks, 416 B all_gather, simulated 17 us
            // where a cost per message estimated 178). The messages inside the hosts
            // and those between them run side by side, each at its own alpha
            // (mixccl-sim judge: 112 B all_gather on two pods of one host, intra
            // alpha 18.3 us, simulated 18 us; the largest alpha plus the busiest
            // link's bytes estimated 30).
            let mut inside = Load::new(t);
            for a in 0..n {
                for b in 0..n {
                    if t.host_of(a) == t.host_of(b) {
                        inside.add(a, b, per);
                    } else {
                        load.add(a, b, per);
                    }
                }
            }
            let reduced = if coll == AllReduce {
                (nf - 1.0) * s / (REDUCE_GBS * 1e9)
            } else {
                0.0
            };
            let across = if load.messages > 0 {
                load.alpha
                    + load.seconds()
                    + if load.crossings > 0 {
                        pod_alpha(t)
                    } else {
                        0.0
                    }
            } else {
                0.0
            };
            return Some(across.max(inside.alpha + inside.seconds()) + reduced);
        }
        (AllReduce, Tree) => {
            let trees = if bytes <= crate::algo::tree::SINGLE_TREE_MAX_BYTES {
                1
            } else {
                2
            };
            let nt = trees as f64;
            let c = chunk.min(s / nt);
            // A chunk's round trip: per link on the longest way, its alpha up and
            // down, its transfer up, the two children's reductions one after the
            // other, and its transfer down beside the parent's other child (each
            // link's own costs, the pods' uplink's where it crosses pods: the slowest
            // link's on every level was up to 2x the simulated time).
            let red = REDUCE_GBS * 1e9;
            let mut trip = 0.0f64;
            for shape in crate::algo::tree::double_tree(n).into_iter().take(trees) {
                for r in 0..n {
                    let (parent, _) = shape.links(n, r);
                    if let Some(p) = parent {
                        load.add(r, p, s / nt);
                        load.add(p, r, s / nt);
                    }
                }
                let down = tree_fill(t, config, shape, c, 1.0);
                let up = tree_longest(t, shape, |r, p| {
                    let (alpha, bw) = hop(t, r, p);
                    alpha + c / bw + 2.0 * c / red
                });
                trip = trip.max(up + down);
            }
            if !trees_block(t, config, trees) {
                // The chunks stream: the first pays the round trip, the others
                // follow at the busiest link's or reduction's pace (mixccl-sim judge:
                // 967x1 hosts, 8 MiB, simulated 4.97 ms where a round trip per chunk
                // estimated 43.5).
                let k = (s / nt / chunk).ceil().max(1.0);
                let pace = load.seconds().max(s / red);
                return Some(trip + pace * (k - 1.0) / k);
            }
            // A lane runs its messages in order, so where one lane carries one tree's
            // way up and the other's way down, a chunk's way down (after the round
            // trip to the root) holds up the next chunk's way up: mixccl-sim finds
            // every chunk of both trees paying a round trip of its own.
            let rounds = nt * (s / nt / chunk).ceil().max(1.0);
            return Some(rounds * trip + load.seconds());
        }
        (Broadcast | Reduce, Tree) => {
            let shape = crate::algo::tree::Shape::Rooted(0);
            for r in 0..n {
                if let Some(p) = shape.links(n, r).0 {
                    load.add(p, r, s);
                }
            }
            let reduced = if coll == Reduce { 2.0 * s } else { 0.0 };
            // The first chunk pays each link's alpha and transfer on the longest way
            // down, the others follow at the busiest link's pace (mixccl-sim judge:
            // the slowest link's transfer on every level was up to 2.5x the
            // simulated time, 151x3 hosts, 8 KiB, simulated 77 us, estimated 196).
            let k = (s / chunk).ceil().max(1.0);
            return Some(
                tree_fill(t, config, shape, chunk.min(s), k)
                    + load.seconds() * (k - 1.0) / k
                    + reduced / (REDUCE_GBS * 1e9),
            );
        }
        (Broadcast | Reduce, Chain) => {
            // The first chunk pays every hop's alpha and transfer; the others follow
            // it at the slowest hop's pace. (The slowest hop for all of them, as
            // estimated before, was 1.5x the simulated time where most hops are
            // inside hosts: 5x4 hosts, 4 MiB, simulated 3.18 ms, estimated 4.70.)
            let c = chunk.min(s);
            let k = (s / chunk).ceil().max(1.0);
            // A hop of several lanes moves as many chunks at once, the first among
            // them (see `lanes_ahead`).
            let (mut first, mut slowest, mut ahead) = (0.0f64, 0.0f64, 1.0f64);
            for r in 0..n - 1 {
                let w = lanes_ahead(t, config, r, r + 1, k);
                let (alpha, mut bw) = hop(t, r, r + 1);
                if coll == Reduce {
                    bw = bw.min(REDUCE_GBS * 1e9);
                }
                first += alpha + w * c / bw;
                if c / bw > slowest {
                    (slowest, ahead) = (c / bw, w);
                }
            }
            return Some(first + (k - ahead) * slowest);
        }
        (AllReduce | AllGather | ReduceScatter, Hier) => {
            if hn < 2 || hn == n {
                return None;
            }
            // A call split into pieces (`Config::piece_elems`) overlaps one piece's
            // phases with the next's.
            let piece = config
                .pipeline_bytes
                .max(n.saturating_mul(config.chunk_bytes).saturating_mul(2));
            let pieces = config.pipeline_bytes > 0 && coll == AllReduce && bytes >= piece;
            return Some(hier(t, config, coll, s, pieces));
        }
        (AllToAll, Pairwise) => {
            if n <= PAIRWISE_LOAD_MAX_RANKS {
                for a in 0..n {
                    for b in 0..n {
                        load.add(a, b, s / nf);
                    }
                }
            }
            cross = if t.npods() > 1 { 1.0 } else { 0.0 };
            (1.0, (nf - 2.0) * msg, 0.0)
        }
        (SendRecv | Barrier, Direct) => (1.0, 0.0, 0.0),
        (AllGather, Publish | HostRead) | (AllReduce, Publish) => {
            // The host's own paths: all ranks on one host, all-gathers above the
            // direct algorithm's range, the board's all-reduce from its floor.
            if hn != 1
                || (coll == AllGather && s <= config.direct_max_bytes as f64)
                || (coll == AllReduce && bytes < PUBLISH_ALL_REDUCE_MIN_BYTES)
            {
                return None;
            }
            let b = s / nf;
            let (mut steps, mut before) = (0.0, 0.0);
            if coll == AllReduce {
                // The ring's reduce-scatter half first (as the ring all_reduce's).
                for r in 0..n {
                    load.add(r, (r + 1) % n, (nf - 1.0) / nf * s);
                }
                let reduction = (nf - 1.0) / nf * s / (REDUCE_GBS * 1e9);
                before = load.seconds().max(reduction);
                steps = nf - 1.0;
                load = Load::new(t);
            }
            // Bytes of the other ranks' blocks each rank copies out.
            let blocks = (nf - 1.0) * b;
            let gather = if algo == Publish {
                // Each rank writes its block once and copies every other one out,
                // as one transfer to all (its own copy out, the others' in): one step.
                for r in 0..n {
                    load.rank_out[r] += b;
                    load.rank_in[r] += blocks;
                }
                steps += 1.0;
                load.seconds()
            } else {
                // Cross-memory reads: each rank copies every other block once,
                // straight from its owner (one copy where a shared-memory transfer
                // makes two: half the transfer's time); two steps, the exchange of
                // the blocks' descriptions and that of the "done" bytes.
                for r in 0..n {
                    load.rank_in[r] += blocks;
                }
                steps += 2.0;
                load.seconds() / 2.0
            };
            // One host: no pod crossings; the copies overlap nothing after them.
            let alpha = if load.alpha > 0.0 {
                load.alpha
            } else {
                t.link(0, 1).alpha_us * 1e-6
            };
            return Some(steps * alpha + before + gather);
        }
        _ => return None,
    };
    let alpha = if load.alpha > 0.0 {
        load.alpha
    } else {
        t.link(0, 1).alpha_us * 1e-6
    };
    Some(
        steps * alpha
            + cross * pod_alpha(t)
            + extra
            + load.seconds()
            + reduced / (REDUCE_GBS * 1e9),
    )
}

/// The ring: the longer of its bandwidth bound and its latency chain.
///
/// - Bandwidth: the busiest link's bytes; the chunks of the reduce-scatter half are
///   reduced as they arrive, so that half takes the longer of its transfer and its
///   reduction, not their sum (mixccl-sim: 256 MiB on 64 ranks, ring 58.1 ms against
///   the sum's 65.4 and the overlap's 60.0; see the planner tests).
/// - Latency: a block moves one hop per step, from rank `r` to `r + 1` once `r` has
///   it, so over the `f (n - 1)` steps the call takes the mean hop's alpha and chunk
///   time per step (the mean, not the largest: the hops alternate; a rank's lane
///   that is slower than that holds the chain up, which the bandwidth bound covers),
///   plus the other chunks of the last block. mixccl-sim (`mixccl-sim judge`) found
///   the sum of the largest alpha per step and the bandwidth 2x too slow on hosts
///   of 8 ranks behind one 25 Gbit/s NIC (144x8, 64 MiB: simulated 43.9 ms, that
///   sum 88.3 ms): the NIC's transfers hide the cheap shared-memory hops.
fn ring(t: &Topology, coll: Collective, s: f64, chunk: f64) -> f64 {
    let n = t.nranks();
    let nf = n as f64;
    let f = if coll == Collective::AllReduce {
        2.0
    } else {
        1.0
    };
    let mut load = Load::new(t);
    for r in 0..n {
        load.add(r, (r + 1) % n, f * (nf - 1.0) / nf * s);
    }
    let half = load.seconds() / f;
    let reduce = REDUCE_GBS * 1e9;
    let reduction = if coll == Collective::AllGather {
        0.0
    } else {
        (nf - 1.0) / nf * s / reduce
    };
    let bound = half.max(reduction) + (f - 1.0) * half;
    // A step moves one block of S/n per rank, in chunks.
    let block = s / nf;
    let c = chunk.min(block);
    let k = (block / chunk).ceil().max(1.0);
    let (mut hop_move, mut hop_reduce, mut slowest) = (0.0f64, 0.0f64, f64::INFINITY);
    for r in 0..n {
        let next = (r + 1) % n;
        let (alpha, bw) = hop(t, r, next);
        hop_move += alpha + c / bw;
        hop_reduce += alpha + c / bw.min(reduce);
        slowest = slowest.min(bw);
    }
    let (hop_move, hop_reduce) = (hop_move / nf, hop_reduce / nf);
    let reducing = if coll == Collective::AllGather {
        0.0
    } else {
        nf - 1.0
    };
    let moving = f * (nf - 1.0) - reducing;
    let chain = reducing * hop_reduce + moving * hop_move + (k - 1.0) * c / slowest;
    chain.max(bound + hop_move)
}

/// Lanes of the link from rank `a` to rank `b` (as the communicator opens them).
fn lanes(t: &Topology, config: &Config, a: usize, b: usize) -> usize {
    match t.link(a, b).class {
        crate::topo::LinkClass::Tcp => config.nsocks,
        crate::topo::LinkClass::Rdma => config.ib_qps,
        _ => 1,
    }
}

/// Whether the first `trees` trees of the double tree hold one another up: a link of
/// one lane that carries one tree's way up and the other's way down (the lowering
/// puts a pair's k-th message on lane `k % lanes`, and the trees' chunks alternate,
/// so with two lanes or more each tree has lanes of its own).
fn trees_block(t: &Topology, config: &Config, trees: usize) -> bool {
    let n = t.nranks();
    if trees < 2 {
        return false;
    }
    // Per directed pair: bit 0 a way up, bit 1 a way down.
    let mut ways: std::collections::HashMap<(usize, usize), u8> = Default::default();
    for shape in crate::algo::tree::double_tree(n) {
        for r in 0..n {
            if let Some(p) = shape.links(n, r).0 {
                *ways.entry((r, p)).or_default() |= 1;
                *ways.entry((p, r)).or_default() |= 2;
            }
        }
    }
    ways.iter()
        .any(|(&(a, b), &w)| w == 3 && lanes(t, config, a, b) < 2)
}

/// Seconds a ring of `hops` steps over links of unequal pace (a step of link `i`:
/// its alpha and `step[i].1` seconds of bytes) loses where a link can run the next
/// step's messages beside the current ones (lanes to spare). A link fed by a faster
/// one gets its second block while the first is still going out (the feeder's step,
/// `e` with its alpha, is shorter than the link's bytes, `d`); the two share the
/// link, so the first leaves `d - e` late, and they go on as a pair: each further
/// link of a run of slow ones holds the first back again, by what is left of its
/// bytes once the second follows (about two of the feeder's steps behind), where the
/// link after it is slow too and waits for it. The latest of the ring's starts.
/// (mixccl-sim judge, seed 22 case 491: all_gather of 1 MiB on 9x2 hosts, NICs of
/// hosts 1, 3, 5 and 7 at 0.35 GB/s, the others 1.25: hier simulated 3755 us, 2757
/// with every NIC slow and 2757 with one lane per link; estimated 2726 without this.)
fn ring_lag(step: &[(f64, f64)], hops: usize) -> f64 {
    let m = step.len();
    if m < 2 || hops < 1 {
        return 0.0;
    }
    // Per feeder pace: prefix sums over the ring laid out three times of each link's
    // hold-up where the links before and after it are held up too (a link fed by a
    // fast one starts a pair afresh).
    let mut sums: Vec<(f64, Vec<f64>)> = Vec::new();
    let mut worst = 0.0f64;
    for i in 0..m {
        let (alpha, bytes) = step[(i + m - 1) % m];
        let (e, d) = (alpha + bytes, step[i].1);
        if e >= d {
            continue;
        }
        let at = match sums.iter().position(|(x, _)| *x == e) {
            Some(at) => at,
            None => {
                let held = |j: usize| (step[j % m].1 - 2.0 * e).max(0.0);
                let mut prefix = vec![0.0f64; 3 * m + 1];
                for j in 0..3 * m {
                    let inside = held(j + m - 1) > 0.0 && held(j + 1) > 0.0;
                    let h = if inside { held(j) } else { 0.0 };
                    prefix[j + 1] = prefix[j] + h;
                }
                sums.push((e, prefix));
                sums.len() - 1
            }
        };
        let prefix = &sums[at].1;
        // Links i+1 ..= i+hops-2: those whose next link is still on the way.
        let (from, to) = (i + 1, (i + hops.min(2 * m)).saturating_sub(1).max(i + 1));
        worst = worst.max(d - e + prefix[to] - prefix[from]);
    }
    worst
}

/// The hierarchical estimate: the latency of the phases on the critical path, and the
/// phases' bandwidth one after the other as `mixccl-sim` runs them (issue 18: the
/// overlap of the host and network phases assumed before was up to 1.3x too fast).
fn hier(t: &Topology, config: &Config, coll: Collective, s: f64, pieces: bool) -> f64 {
    let chunk = config.chunk_bytes as f64;
    let hn = t.hosts.len() as f64;
    let nf = t.nranks() as f64;
    let nch = t.hosts.iter().map(|h| h.ranks.len()).min().unwrap_or(1) as f64;
    let red = REDUCE_GBS * 1e9;
    // Per phase inside the hosts, the busiest rank's seconds (its port moves `bw`, its
    // reductions `red`): the first phase (to owners) and the last (from owners).
    // (No cost per message: the engine sends to every peer on a lane of its own;
    // mixccl-sim judge found it doubling the estimate of small calls.)
    let (mut first, mut last, mut reduce_in) = (0.0f64, 0.0f64, 0.0f64);
    let mut alpha_in = 0.0f64;
    for h in &t.hosts {
        let l = h.ranks.len() as f64;
        if l < 2.0 {
            continue;
        }
        let bw = h.intra.bw_gbs * 1e9;
        // What a non-owner hands over (all of it where some ranks own no channel).
        let share = if l > nch { 1.0 } else { (nch - 1.0) / nch };
        let (a, b) = match coll {
            // Reduce to owners: a rank sends the blocks it does not own, an owner
            // receives and reduces (L-1) S/C; the finish mirrors it.
            Collective::AllReduce => {
                let into = (l - 1.0) * s / nch;
                reduce_in = reduce_in.max(into);
                (
                    (share * s / bw).max(into / bw.min(red)),
                    (share * s).max(into) / bw,
                )
            }
            // Blocks to local peers, then the foreign blocks from their owners.
            Collective::AllGather => (
                (l - 1.0) * s / nf / bw,
                (nf - l) * s / nf * share.max((l - 1.0) / nch) / bw,
            ),
            // Every block reduced onto its owner, then the finished ones to their ranks.
            _ => {
                let into = (l - 1.0) * s / nch;
                (
                    (share * s / bw).max(into / bw.min(red)),
                    (l / nch - 1.0).max(0.0) * s / nf / bw,
                )
            }
        };
        first = first.max(a);
        last = last.max(b);
        alpha_in = alpha_in.max(h.intra.alpha_us * 1e-6);
    }
    // Across hosts: each host's link carries the ring's share of the whole buffer.
    let f = if coll == Collective::AllReduce {
        2.0
    } else {
        1.0
    };
    let mut inter = 0.0f64;
    let mut alpha_x = 0.0f64;
    // Per pod, the bytes its hosts' ring links send to another pod; and how many
    // of the ring's links cross pods.
    let mut pod_out = vec![0.0f64; t.npods()];
    let mut cross = vec![false; t.hosts.len()];
    let mut link_bw = Vec::with_capacity(t.hosts.len());
    // Per ring link, one of its steps: its alpha and the seconds of its bytes.
    let mut link_step = Vec::with_capacity(t.hosts.len());
    for (i, h) in t.hosts.iter().enumerate() {
        let j = (i + 1) % t.hosts.len();
        let next = &t.hosts[j];
        let bytes = match coll {
            Collective::AllReduce => f * (hn - 1.0) / hn * s,
            // Everything but what the next host already has.
            _ => (nf - next.ranks.len() as f64) * s / nf,
        };
        let bw = h.net.bw_gbs.min(next.net.bw_gbs) * 1e9;
        link_bw.push(bw);
        inter = inter.max(bytes / bw);
        let alpha = h.net.alpha_us.max(next.net.alpha_us) * 1e-6;
        alpha_x = alpha_x.max(alpha);
        let steps = f * (t.hosts.len() - 1) as f64;
        link_step.push((alpha, bytes / steps / bw));
        if t.pod_of(i) != t.pod_of(j) {
            pod_out[t.pod_of(i)] += bytes;
            cross[i] = true;
        }
    }
    // A channel's block goes round the ring in sub-blocks, one per host; sub-blocks
    // without data (small calls, taken as 4-byte elements) send nothing.
    let (hops, blocks) = match coll {
        Collective::AllReduce => (
            2 * (t.hosts.len() - 1),
            ((s / 4.0 / nch).ceil() as usize).max(1),
        ),
        _ => (t.hosts.len() - 1, t.hosts.len()),
    };
    let crossings = ring_crossings(&cross, blocks, hops);
    if let Some(pods) = &t.pods {
        let most = pod_out.iter().copied().fold(0.0, f64::max);
        inter = inter.max(most / (pods.uplink.bw_gbs * 1e9));
    }
    // The ring in steps: a step moves a piece of S/(H C) per owner over the NICs,
    // and in the reduce-scatter steps also reduces it.
    let nsteps = hn - 1.0;
    let step = inter / (f * nsteps);
    let rs_step = step.max(s / (hn * nch) / red);
    // A step's messages per channel: where they leave a link's lanes to spare, the
    // next step's go out beside them (see `ring_lag`).
    let most = t.hosts.iter().map(|h| h.ranks.len()).max().unwrap_or(1) as f64;
    let messages = match coll {
        Collective::AllGather => (most / nch).ceil() * (s / nf / chunk).ceil(),
        _ => (s / (hn * nch) / chunk).ceil(),
    };
    let spare = (0..t.hosts.len()).all(|i| {
        let j = (i + 1) % t.hosts.len();
        messages < lanes(t, config, t.hosts[i].ranks[0], t.hosts[j].ranks[0]) as f64
    });
    let lag = if spare && !pieces {
        ring_lag(&link_step, hops)
    } else {
        0.0
    };
    let phases = match coll {
        // The owners forward the blocks in host order, not as they arrive: a host's
        // forwarding waits for the block that comes last, so all of it but the last
        // step's follows the ring; the peers' blocks go out beside the ring.
        // (mixccl-sim judge, seed 18 case 17: 8x4 hosts, shm 6.23 GB/s, tcp 3.12
        // GB/s, 4 MiB: simulated 1730 us; the overlap of both phases estimated 1296.)
        Collective::AllGather => first.max((nsteps - 1.0) * step) + step.max(last),
        // The ring waits for the first phase (its first blocks are reduced last) and
        // the last waits for the ring: the phases follow one another (with 1 MiB
        // chunks a block is one or a few chunks, which leaves little to overlap).
        // Pieces in flight at once: the slowest of the phases, and half the host
        // phases' (mixccl-sim: 2x2 hosts, shm 1.98 GB/s, tcp 1.25 GB/s, 256 MiB in 32
        // pieces: simulated 268 ms, the phases one after the other 352 ms).
        // An owner's reductions, of both its phases, share its one rate.
        _ if pieces => {
            let ring = f * nsteps * rs_step.max(step);
            let reductions = reduce_in / red + nsteps / hn * s / nch / red;
            ring.max(first + last).max(reductions) + 0.5 * ring.min(first + last)
        }
        // A reduce-scatter step sends what the step before received and reduced:
        // a sub-block's reduction and its transfer follow one another, overlapped
        // only chunk by chunk (mixccl-sim judge, seed 12 case 293: 149x2 hosts, 128
        // MiB, sub-blocks of one chunk: simulated 39.4 ms, estimated 27.5 with
        // the longer of the two per step; the ring, 28.2 ms, was right).
        // Per link its own transfer (the channels share the NICs); the slowest
        // link's pace still bounds every step (slow NICs: the others' steps wait).
        Collective::ReduceScatter => {
            let sub = s / (hn * nch);
            let (reduce, m) = (sub / red, (sub / chunk).ceil().max(1.0));
            let chain = link_bw
                .iter()
                .map(|&bw| {
                    let move_ = sub * nch / bw;
                    move_.max(reduce) + move_.min(reduce) / m
                })
                .sum::<f64>()
                / hn;
            first + nsteps * step.max(chain) + last
        }
        _ => first + f * nsteps * rs_step.max(step) + last,
    };
    // Intra alphas on the critical path: all_gather's first phase runs beside the
    // ring; reduce_scatter's last phase is a copy where every rank owns a channel.
    let uneven = t.hosts.iter().any(|h| h.ranks.len() as f64 > nch);
    let hops_in = match coll {
        Collective::AllGather => 1.0,
        Collective::ReduceScatter => 1.0 + f64::from(u8::from(uneven)),
        _ => 2.0,
    };
    hops_in * alpha_in + f * (hn - 1.0) * alpha_x + crossings * pod_alpha(t) + phases + lag
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlgoOverride;

    /// Init's own small all-reduces go over the tree, with or without a model and
    /// whatever it says; larger ones, other collectives, forced algorithms and
    /// every call after init are planned as before.
    #[test]
    fn init_runs_its_small_all_reduces_over_the_tree() {
        let c = Config::default();
        let t = Arc::new(one_host(64, 5.0, 4.0));
        for topo in [None, Some(t)] {
            let mut caps = Capabilities {
                topo,
                ..Capabilities::default()
            };
            assert_eq!(
                choose(&c, &caps, Collective::AllReduce, 16, 64),
                Algorithm::Direct
            );
            caps.init = true;
            for bytes in [1, 16, 4 << 10] {
                assert_eq!(
                    choose(&c, &caps, Collective::AllReduce, bytes, 64),
                    Algorithm::Tree
                );
            }
            assert_eq!(
                choose(&c, &caps, Collective::AllGather, 8, 64),
                Algorithm::Direct
            );
            assert_ne!(
                choose(&c, &caps, Collective::AllReduce, 1 << 20, 64),
                Algorithm::Tree
            );
            let ring = Config {
                algo: AlgoOverride::parse("allreduce:ring").unwrap(),
                ..Config::default()
            };
            assert_eq!(
                choose(&ring, &caps, Collective::AllReduce, 16, 64),
                Algorithm::Ring
            );
        }
    }

    #[test]
    fn size_rule_and_override_without_a_model() {
        let c = Config::default();
        let none = Capabilities::default();
        assert_eq!(
            choose(&c, &none, Collective::AllReduce, 8, 4),
            Algorithm::Direct
        );
        assert_eq!(
            choose(&c, &none, Collective::AllReduce, 32 << 20, 4),
            Algorithm::Ring
        );
        assert_eq!(
            choose(&c, &none, Collective::Broadcast, 8, 4),
            Algorithm::Chain
        );
        let cma = Capabilities {
            host_read: true,
            ..Capabilities::default()
        };
        assert_eq!(
            choose(&c, &cma, Collective::AllGather, 1 << 20, 4),
            Algorithm::HostRead
        );
        assert_eq!(
            choose(&c, &cma, Collective::AllGather, 8, 4),
            Algorithm::Direct
        );
        let forced = Config {
            algo: AlgoOverride::parse("allreduce:tree").unwrap(),
            ..Config::default()
        };
        assert_eq!(
            choose(&forced, &none, Collective::AllReduce, 8, 4),
            Algorithm::Tree
        );
        assert_eq!(
            choose(&forced, &none, Collective::AllToAll, 8, 4),
            Algorithm::Pairwise
        );
    }

    #[test]
    fn every_candidate_has_an_estimate_somewhere() {
        let t = Topology::from_json(
            r#"{"hosts": [
              {"name": "a", "ranks": [0, 1, 2], "intra": {"class": "shm", "alpha_us": 5, "bw_gbs": 4},
               "net": {"class": "tcp", "alpha_us": 40, "bw_gbs": 1.25}},
              {"name": "b", "ranks": [3, 4], "intra": {"class": "shm", "alpha_us": 5, "bw_gbs": 4},
               "net": {"class": "tcp", "alpha_us": 40, "bw_gbs": 1.25}}]}"#,
        )
        .unwrap();
        let c = Config::default();
        for coll in Collective::ALL {
            for &a in candidates(coll) {
                let e = estimate(&t, &c, coll, a, 1024).expect("a candidate");
                assert!(e.is_finite() && e > 0.0, "{coll} {a}: {e}");
            }
        }
    }

    /// `hosts` hosts x 8 ranks, shared memory 3 us 50 GB/s, RDMA 4 us 50 GB/s (the
    /// 400 Gbit/s cluster of docs/scaling.md).
    fn cluster(hosts: usize) -> Topology {
        use crate::topo::{Host, LinkClass, LinkCost};
        let cost = |class, alpha_us| LinkCost {
            class,
            alpha_us,
            bw_gbs: 50.0,
            measured: false,
        };
        let hosts = (0..hosts)
            .map(|h| Host {
                name: format!("h{h}"),
                ranks: (8 * h..8 * h + 8).collect(),
                intra: cost(LinkClass::Shm, 3.0),
                net: cost(LinkClass::Rdma, 4.0),
            })
            .collect();
        Topology::new(hosts, Vec::new()).unwrap()
    }

    /// Cases where the planner picked the double tree and mixccl-sim found it 5x
    /// (1 MiB: tree 3.93 ms, hier 0.76 ms) and 12x (8 MiB pieces: tree 30.6 ms,
    /// hier 2.6 ms) slower than the hierarchical all_reduce; small calls stay on
    /// the tree, which the simulation confirms (8 B: tree 68 us, hier 510 us).
    #[test]
    fn the_tree_is_not_chosen_for_what_it_cannot_stream() {
        let t = cluster(64);
        let c = Config::default();
        let pick = |bytes| cheapest(&t, &c, Collective::AllReduce, bytes).0;
        assert_eq!(pick(8), Algorithm::Tree);
        assert_eq!(pick(1 << 20), Algorithm::Hier);
        assert_eq!(pick(8 << 20), Algorithm::Hier);
        // The estimate is within a third of the simulated time (3.93 ms, 30.6 ms).
        let tree = |bytes| estimate(&t, &c, Collective::AllReduce, Algorithm::Tree, bytes).unwrap();
        assert!(
            (tree(1 << 20) / 3.93e-3 - 1.0).abs() < 0.33,
            "{}",
            tree(1 << 20)
        );
        assert!(
            (tree(8 << 20) / 30.6e-3 - 1.0).abs() < 0.33,
            "{}",
            tree(8 << 20)
        );
    }

    /// `hosts` hosts of one rank each, costed as [`cluster`]'s.
    fn one_rank_per_host(hosts: usize) -> Topology {
        let eight = cluster(hosts);
        let hosts = eight
            .hosts
            .iter()
            .enumerate()
            .map(|(h, host)| crate::topo::Host {
                ranks: vec![h],
                ..host.clone()
            })
            .collect();
        Topology::new(hosts, Vec::new()).unwrap()
    }

    /// With one rank per host every link of the double tree is a network link of
    /// two lanes, each tree's chunks have a lane of their own and stream
    /// (mixccl-sim, 64x1 hosts, 8 MiB: tree 3.52 ms, estimated 2.95; ring 2.32 ms,
    /// picked); with 8 ranks per host one-lane
    /// shared-memory links carry one tree's way up and the other's way down.
    #[test]
    fn the_trees_stream_where_their_links_have_two_lanes() {
        let c = Config::default();
        let t = one_rank_per_host(64);
        assert!(!trees_block(&t, &c, 2));
        assert!(trees_block(&cluster(64), &c, 2));
        let est = |a| estimate(&t, &c, Collective::AllReduce, a, 8 << 20).unwrap();
        let tree = est(Algorithm::Tree);
        assert!((tree / 3.52e-3 - 1.0).abs() < 0.2, "{tree}");
        assert_eq!(
            cheapest(&t, &c, Collective::AllReduce, 8 << 20).0,
            Algorithm::Ring
        );
    }

    /// `hosts` hosts x 8 ranks as `cluster_512`, in two pods joined by 100 Gbit/s
    /// uplinks with 5 ms of latency (the two-pod cluster of docs/scaling.md).
    fn two_pods(hosts: usize) -> Topology {
        use crate::topo::{Host, LinkClass, LinkCost, Pods};
        let cost = |class, alpha_us, bw_gbs| LinkCost {
            class,
            alpha_us,
            bw_gbs,
            measured: false,
        };
        let all = (0..hosts)
            .map(|h| Host {
                name: format!("h{h}"),
                ranks: (8 * h..8 * h + 8).collect(),
                intra: cost(LinkClass::Shm, 3.0, 50.0),
                net: cost(LinkClass::Rdma, 4.0, 50.0),
            })
            .collect();
        Topology::new(all, Vec::new())
            .unwrap()
            .with_pods(Pods {
                hosts: vec![(0..hosts / 2).collect(), (hosts / 2..hosts).collect()],
                uplink: cost(LinkClass::Tcp, 5000.0, 12.5),
            })
            .unwrap()
    }

    /// Cases where the planner, blind to the pod link, picked the tree and mixccl-sim
    /// found another algorithm faster: 8 B on 128 ranks (tree 20.1 ms, direct one
    /// crossing, 5.0 ms), 8 B on 2,048 ranks (tree 20.1 ms, hier 17.0 ms), 1 MiB on
    /// 8,192 ranks (tree 40.8 ms, hier 28.4 ms); and one where the tree is right
    /// (8 B on 8,192 ranks: tree 20.1 ms, hier 23.2 ms).
    #[test]
    fn the_pod_link_is_charged() {
        let c = Config::default();
        let pick = |t: &Topology, bytes| cheapest(t, &c, Collective::AllReduce, bytes).0;
        let est =
            |t: &Topology, a, bytes| estimate(t, &c, Collective::AllReduce, a, bytes).unwrap();
        let near = |x: f64, sim: f64| (x / sim - 1.0).abs() < 0.1;
        let t = two_pods(16);
        assert_eq!(pick(&t, 8), Algorithm::Direct);
        assert!(near(est(&t, Algorithm::Direct, 8), 5.0e-3));
        assert!(near(est(&t, Algorithm::Tree, 8), 20.05e-3));
        let t = two_pods(256);
        assert_eq!(pick(&t, 8), Algorithm::Hier);
        assert!(near(est(&t, Algorithm::Hier, 8), 17.05e-3));
        let t = two_pods(1024);
        assert_eq!(pick(&t, 8), Algorithm::Tree);
        assert_eq!(pick(&t, 1 << 20), Algorithm::Hier);
        assert!(near(est(&t, Algorithm::Hier, 8), 23.19e-3));
        assert!(near(est(&t, Algorithm::Hier, 1 << 20), 28.4e-3));
        // Without the pods the same hosts plan as one network: the tree at 8 B.
        let one = Topology::new(t.hosts.clone(), Vec::new()).unwrap();
        assert!(est(&one, Algorithm::Hier, 8) < 10e-3);
    }

    /// Cases where the planner added the ring's reductions to its transfers and so
    /// chose hier, where mixccl-sim found the ring faster (it reduces each chunk as
    /// it arrives): 256 MiB on 64 ranks of one network (4 pieces of 64 MiB: ring
    /// 58.1 ms, hier 61.9 ms), on 512 ranks (one piece: ring 62.1 ms, hier 67.4 ms),
    /// on 512 ranks in two pods (ring 91.6 ms, hier 99.1 ms); and two where hier
    /// stays right: two pods of one host each (16 ranks, 16 pieces of 16 MiB: hier
    /// 220 ms, ring 336 ms), 2,048 ranks of one network (hier 71.4 ms, ring 71.8).
    #[test]
    fn the_ring_overlaps_its_reductions() {
        let c = Config::default();
        let pick = |t: &Topology, bytes| cheapest(t, &c, Collective::AllReduce, bytes).0;
        let est = |t: &Topology, a, bytes| {
            estimate(t, &c, Collective::AllReduce, a, bytes).expect("a candidate")
        };
        let near = |x: f64, sim: f64| (x / sim - 1.0).abs() < 0.06;
        let t = cluster(8);
        assert_eq!(pick(&t, 64 << 20), Algorithm::Ring);
        assert!(near(4.0 * est(&t, Algorithm::Ring, 64 << 20), 58.1e-3));
        let t = cluster(64);
        assert_eq!(pick(&t, 256 << 20), Algorithm::Ring);
        assert!(near(est(&t, Algorithm::Ring, 256 << 20), 62.1e-3));
        let t = two_pods(64);
        assert_eq!(pick(&t, 256 << 20), Algorithm::Ring);
        let t = two_pods(2);
        assert_eq!(pick(&t, 16 << 20), Algorithm::Hier);
        let t = cluster(256);
        assert_eq!(pick(&t, 256 << 20), Algorithm::Hier);
    }

    /// 9 hosts x 2 ranks over shared memory (3.37 us, 16.66 GB/s) and TCP (3.45 us,
    /// 1.25 GB/s), the NICs of `slow` at 0.346 GB/s (mixccl-sim judge, seed 22 case
    /// 491, with hosts 1, 3, 5 and 7 slow).
    fn nine_by_two(slow: &[usize]) -> Topology {
        use crate::topo::{Host, LinkClass, LinkCost};
        let cost = |class, alpha_us, bw_gbs| LinkCost {
            class,
            alpha_us,
            bw_gbs,
            measured: false,
        };
        let hosts = (0..9)
            .map(|h| Host {
                name: format!("h{h}"),
                ranks: vec![2 * h, 2 * h + 1],
                intra: cost(LinkClass::Shm, 3.37, 16.66),
                net: cost(
                    LinkClass::Tcp,
                    3.45,
                    if slow.contains(&h) { 0.346 } else { 1.25 },
                ),
            })
            .collect();
        Topology::new(hosts, Vec::new()).unwrap()
    }

    /// A hierarchical all_gather whose ring runs from a fast link into slow ones:
    /// mixccl-sim finds 3755 us for 1 MiB with every second NIC slow (hosts 1, 3, 5
    /// and 7) but 2757 us with every NIC slow, and 2757 us either way with one lane
    /// per link; the estimate was 2726 for both and picked hier over the ring
    /// (simulated 2882 us, estimated 2946). Now the ring is picked.
    #[test]
    fn a_fast_link_into_slow_ones_holds_the_ring_up() {
        let c = Config::default();
        let bytes = 1048608 / 18;
        let near = |x: f64, sim: f64| (x / sim - 1.0).abs() < 0.1;
        let half = nine_by_two(&[1, 3, 5, 7]);
        let hier = |t: &Topology| estimate(t, &c, Collective::AllGather, Algorithm::Hier, bytes);
        assert!(near(hier(&half).unwrap(), 3755e-6), "{:?}", hier(&half));
        let all = nine_by_two(&(0..9).collect::<Vec<_>>());
        assert!(near(hier(&all).unwrap(), 2757e-6), "{:?}", hier(&all));
        assert_eq!(
            cheapest(&half, &c, Collective::AllGather, bytes).0,
            Algorithm::Ring
        );
        // Links of equal pace lose nothing; one fast link into a slow one loses the
        // difference; a run of slow links loses more on each.
        let (a, d) = (1e-6, 100e-6);
        assert_eq!(ring_lag(&[(a, d); 6], 5), 0.0);
        let one = ring_lag(&[(a, 10e-6), (a, d), (a, d), (a, 10e-6)], 3);
        assert!((one - (d - 11e-6)).abs() < 1e-12, "{one}");
        let run = ring_lag(&[(a, 10e-6), (a, d), (a, d), (a, d), (a, d)], 4);
        assert!(run > one, "{run} {one}");
    }

    /// One host of `n` ranks over shared memory of `alpha_us` and `bw_gbs`.
    fn one_host(n: usize, alpha_us: f64, bw_gbs: f64) -> Topology {
        use crate::topo::{Host, LinkClass, LinkCost};
        let cost = |class| LinkCost {
            class,
            alpha_us,
            bw_gbs,
            measured: true,
        };
        let host = Host {
            name: "h".into(),
            ranks: (0..n).collect(),
            intra: cost(LinkClass::Shm),
            net: cost(LinkClass::Tcp),
        };
        Topology::new(vec![host], Vec::new()).unwrap()
    }

    /// The picks of the planner before the host paths were costed (the fixed rules
    /// that ran ahead of the estimate, copied from plan.rs as it was), for comparison.
    fn old_choose(
        config: &Config,
        caps: &Capabilities,
        t: &Topology,
        coll: Collective,
        bytes: usize,
    ) -> Algorithm {
        let n = t.nranks();
        if coll == Collective::AllGather
            && caps.host_read
            && bytes.saturating_mul(n) > config.direct_max_bytes
        {
            return Algorithm::HostRead;
        }
        if caps.publish
            && match coll {
                Collective::AllGather => bytes.saturating_mul(n) > config.direct_max_bytes,
                Collective::AllReduce => bytes >= 4 << 20,
                _ => false,
            }
        {
            return Algorithm::Publish;
        }
        cheapest(t, config, coll, bytes).0
    }

    /// Sizes from 8 B to 256 MiB: powers of two and their neighbours.
    fn sizes() -> Vec<usize> {
        let mut v = Vec::new();
        let mut s = 8usize;
        while s <= 256 << 20 {
            v.extend([s - 1, s, s + 1]);
            s *= 2;
        }
        v
    }

    /// This machine's shapes (one host, 2-8 ranks over shared memory; the default
    /// model's 5 us and 4 GB/s, and faster and slower measured ones), the default
    /// settings (the board on, cross-memory reads off) and without a board: the
    /// estimate picks what the fixed rules picked, for every collective and size.
    #[test]
    fn costing_the_board_keeps_the_fixed_rules_picks_on_one_host() {
        let c = Config::default();
        let mut checked = 0;
        for n in 2..=8 {
            for (alpha, bw) in [(5.0, 4.0), (1.5, 12.0), (20.0, 1.5)] {
                let t = Arc::new(one_host(n, alpha, bw));
                for publish in [true, false] {
                    let caps = Capabilities {
                        publish,
                        topo: Some(t.clone()),
                        ..Capabilities::default()
                    };
                    for coll in Collective::ALL {
                        for bytes in sizes() {
                            let old = old_choose(&c, &caps, &t, coll, bytes);
                            let new = choose(&c, &caps, coll, bytes, n);
                            assert_eq!(
                                new, old,
                                "{coll} of {bytes} B on {n} ranks ({alpha} us, {bw} GB/s), \
                                 board {publish}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    /// With cross-memory reads on: the estimate picks them where the fixed rule did
    /// once their saved copy outweighs their second step (at 5 us and 4 GB/s, from 64
    /// KiB per rank); below, on 2 ranks, the board or the ring.
    #[test]
    fn cross_memory_reads_are_picked_where_their_copy_pays() {
        let c = Config::default();
        for n in 2..=8 {
            let t = Arc::new(one_host(n, 5.0, 4.0));
            for publish in [true, false] {
                let caps = Capabilities {
                    publish,
                    host_read: true,
                    topo: Some(t.clone()),
                    ..Capabilities::default()
                };
                for bytes in sizes() {
                    let coll = Collective::AllGather;
                    let old = old_choose(&c, &caps, &t, coll, bytes);
                    let new = choose(&c, &caps, coll, bytes, n);
                    if bytes >= 64 << 10 {
                        assert_eq!(new, old, "{bytes} B on {n} ranks, board {publish}");
                    } else if new != old {
                        // Only the host paths trade places, never with the others.
                        assert_eq!(old, Algorithm::HostRead, "{bytes} B on {n} ranks");
                        let want = if publish {
                            Algorithm::Publish
                        } else {
                            Algorithm::Ring
                        };
                        assert_eq!(new, want, "{bytes} B on {n} ranks");
                    }
                }
            }
        }
    }

    #[test]
    fn the_host_paths_are_estimated_on_one_host_only() {
        let c = Config::default();
        let one = one_host(4, 5.0, 4.0);
        let est = |t: &Topology, coll, a, bytes| estimate(t, &c, coll, a, bytes);
        let big = 1 << 22;
        for (coll, a) in [
            (Collective::AllGather, Algorithm::Publish),
            (Collective::AllGather, Algorithm::HostRead),
            (Collective::AllReduce, Algorithm::Publish),
        ] {
            let e = est(&one, coll, a, big).expect("one host");
            assert!(e.is_finite() && e > 0.0, "{coll} {a}: {e}");
            // Below their floors they are not weighed.
            assert_eq!(est(&one, coll, a, 8), None, "{coll} {a} at 8 B");
        }
        let two = cluster(2);
        assert_eq!(
            est(&two, Collective::AllGather, Algorithm::Publish, big),
            None
        );
        // 4 ranks, 4 MiB blocks at 5 us and 4 GB/s: the board takes 1 step and
        // 12 MiB through each rank; the reads 2 steps and half the time for their
        // single copy; the ring (estimated by `ring`, the longer of its latency chain
        // and its bandwidth bound) 3 steps and at least the same bytes.
        let ring = est(&one, Collective::AllGather, Algorithm::Ring, big).unwrap();
        let board = est(&one, Collective::AllGather, Algorithm::Publish, big).unwrap();
        let cma = est(&one, Collective::AllGather, Algorithm::HostRead, big).unwrap();
        let copy = 3.0 * big as f64 / 4e9;
        assert!(ring >= 15e-6 + copy && ring > board, "{ring}");
        assert!((board - (5e-6 + copy)).abs() < 1e-9, "{board}");
        assert!((cma - (10e-6 + copy / 2.0)).abs() < 1e-9, "{cma}");
    }
}
