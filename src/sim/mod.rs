//! The simulator: what a collective call costs on a machine that is not here, found
//! by running the schedules the real algorithms build (`algo::build`) through a
//! discrete-event model of the executor (`engine`) over modelled links (`net`).
//!
//! It owns the model of time; it must not run anything on a real link, and it
//! changes nothing in the algorithms or the planner it calls.
//!
//! A call is simulated as the communicator runs it: split into consecutive pieces
//! (`Config::piece_elems`: all_reduce, broadcast, reduce), each piece planned and
//! built on its own, every rank starting a piece when it has finished the previous
//! one. Ring and hierarchical schedules on a machine that repeats every `P` ranks
//! are *folded* (only `P` ranks run, standing for all): see [`Simulator::run`].
//! Two approximations, each stating itself in the [`Outcome`] with a bound and off
//! with [`Settings::extrapolate`]: a long tree or chain pipeline is simulated on its
//! first chunk periods, and a hierarchical all_reduce over more than
//! [`Settings::sample_ranks`] ranks on fewer hosts with the bytes scaled alike,
//! each extended at its measured rate.

mod compile;
mod engine;
mod island;
pub mod judge;
mod net;
mod report;

pub use engine::{Cache, HostModel};
pub use island::{compare as compare_islands, IslandCase, IslandRow};
pub use net::{parse_link, Cluster, Network, Rng, Shape, TLS_NS_PER_BYTE};
pub use report::{bus_factor, chart, Row, Series};

/// How a [`Row`]'s result begins where [`Settings::prune`] skipped the algorithm.
pub const SKIPPED: &str = "not simulated (the planner would not pick it; --algos to force)";

use crate::algo::{build, Call};
use crate::config::{Algorithm, Collective, Config};
use crate::element::DataType;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use compile::{compile, Program};

/// The default of [`Settings::prune`]: the planner's estimates of the algorithms it
/// weighs stay within this factor of their simulated times where they matter
/// (`mixccl-sim judge` prints the worst), so an algorithm estimated at more than this
/// many times the pick cannot be the fastest.
pub const PRUNE: f64 = 4.0;

/// Seconds of CPU this thread has used (0 where the clock cannot be read).
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_THREAD_CPUTIME_ID is a clock every Linux and macOS libc provides.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// How a simulation runs, beyond the network.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The library's tunables as the simulated ranks would have them (chunk size,
    /// pieces, lanes, call headers, the planner's limits).
    pub config: Config,
    /// Reduction throughput per rank, GB/s.
    pub reduce_gbs: f64,
    /// How a host's cores and caches shape shared-memory transfers.
    pub host: HostModel,
    /// Fold ranks where the machine and the schedules repeat (exact; off to check).
    pub fold: bool,
    /// Largest memory the compiled programs of one piece may take, bytes.
    pub max_bytes: usize,
    /// Simulate only this many pieces of a call and add the rest at the mean time
    /// per piece of all but the first (an approximation, for sweeps; `None`: all).
    pub sample_pieces: Option<usize>,
    /// Simulate a long chunk pipeline (tree or chain) on its first chunks only, and
    /// extend it by its repeating period once that is exact (see
    /// `Simulator::pipelined`); simulate a hierarchical all_reduce over more than
    /// `sample_ranks` ranks on fewer hosts and extend it per host (see
    /// `Simulator::scaled`). Both approximate, within a stated bound; off to check.
    pub extrapolate: bool,
    /// The most ranks a hierarchical all_reduce is simulated on in full when
    /// `extrapolate` is on: above it, the call is simulated on the first
    /// `hosts / 2^k` hosts within it, a half and a quarter of those, with the bytes
    /// scaled alike, and extended per host (an approximation with a bound,
    /// `Outcome::extrapolated_hosts`).
    pub sample_ranks: usize,
    /// [`Simulator::sweep`] skips an algorithm whose planner estimate is more than
    /// this many times the estimate of the planner's pick (the planner would never
    /// pick it there; the issue-18 sweep spent 504 s on direct at 256 MiB); `None`
    /// simulates every algorithm asked for.
    pub prune: Option<f64>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            config: Config::default(),
            reduce_gbs: crate::plan::REDUCE_GBS,
            host: HostModel::default(),
            fold: true,
            max_bytes: 6 << 30,
            sample_pieces: None,
            extrapolate: true,
            sample_ranks: 4096,
            prune: Some(PRUNE),
        }
    }
}

/// The simulated cost of one call.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Outcome {
    /// Seconds from the first rank's start to the last rank's finish.
    pub seconds: f64,
    /// Pieces the call was split into.
    pub pieces: usize,
    /// Ranks the engine ran (fewer than the communicator's when folded).
    pub simulated_ranks: usize,
    /// Ops in the programs of one piece, over the simulated ranks.
    pub ops: usize,
    /// Events the engine processed, all pieces.
    pub events: u64,
    /// Pieces not simulated but added at the mean time per piece (see
    /// [`Settings::sample_pieces`]).
    pub extrapolated_pieces: usize,
    /// Periods of a chunk pipeline not simulated but added at the period's time (see
    /// [`Simulator::run`]).
    pub extrapolated_chunks: usize,
    /// Hosts not simulated but added at the time per host of smaller, self-similar
    /// calls (see [`Settings::sample_ranks`]).
    pub extrapolated_hosts: usize,
    /// Bound on the error of `seconds` from extrapolated chunks or hosts (0 when none).
    pub bound: f64,
}

/// A network and settings, ready to simulate calls.
pub struct Simulator {
    net: Network,
    settings: Settings,
}

impl Simulator {
    /// A simulator of `net`.
    pub fn new(net: Network, settings: Settings) -> Simulator {
        Simulator { net, settings }
    }

    /// The network.
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Number of ranks.
    pub fn nranks(&self) -> usize {
        self.net.topo.nranks()
    }

    /// The algorithms worth simulating for `coll` here: the planner's candidates that
    /// implement it, without direct above the planner's rank limit (its schedule is
    /// quadratic) and without hierarchical on one host.
    pub fn algorithms(&self, coll: Collective) -> Vec<Algorithm> {
        let n = self.nranks();
        crate::plan::candidates(coll)
            .iter()
            .copied()
            .filter(|&a| match a {
                Algorithm::Direct => n <= 256,
                Algorithm::Hier => self.net.topo.hosts.len() >= 2,
                _ => true,
            })
            .collect()
    }

    /// Elements of one call of `size` bytes (nccl-tests' sizes: the whole buffer for
    /// all_reduce, broadcast and reduce, all ranks' blocks for the others).
    fn count(&self, coll: Collective, size: usize) -> usize {
        let e = DataType::F32.size();
        match coll {
            Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => {
                size / e / self.nranks()
            }
            _ => size / e,
        }
    }

    /// Element counts of the pieces the communicator splits a call into.
    fn pieces(&self, coll: Collective, count: usize) -> Vec<usize> {
        let c = &self.settings.config;
        let Some(piece) = c.piece_elems(coll, DataType::F32, count, self.nranks()) else {
            return vec![count];
        };
        let mut v = vec![piece; count / piece];
        if count % piece > 0 {
            v.push(count % piece);
        }
        v
    }

    /// The bytes per rank the planner sees for a call of `size` bytes: those of its
    /// first piece (every piece but a short last one is planned alike).
    pub fn planned_bytes(&self, coll: Collective, size: usize) -> usize {
        self.pieces(coll, self.count(coll, size))[0] * DataType::F32.size()
    }

    /// The algorithm the planner picks for a call of `size` bytes (for its first
    /// piece).
    pub fn planner(&self, coll: Collective, size: usize) -> Algorithm {
        let bytes = self.planned_bytes(coll, size);
        crate::plan::cheapest(&self.net.topo, &self.settings.config, coll, bytes).0
    }

    fn call(&self, coll: Collective, count: usize, rank: usize) -> Call {
        let e = DataType::F32.size();
        Call {
            coll,
            dtype: DataType::F32,
            op: ReduceOp::Sum,
            count,
            root: 0,
            rank,
            nranks: self.nranks(),
            in_place: false,
            chunk: (self.settings.config.chunk_bytes / e).max(1) * e,
        }
    }

    fn program(
        &self,
        coll: Collective,
        algo: Algorithm,
        count: usize,
        rank: usize,
    ) -> Result<Program> {
        let hosts: Vec<Vec<usize>> = self
            .net
            .topo
            .hosts
            .iter()
            .map(|h| h.ranks.clone())
            .collect();
        let s = build(&self.call(coll, count, rank), algo, &hosts)?;
        let cfg = &self.settings.config;
        let lanes = |p: usize| match self.net.topo.link(rank, p).class {
            crate::topo::LinkClass::Tcp => cfg.nsocks,
            crate::topo::LinkClass::Rdma => cfg.ib_qps,
            _ => 1,
        };
        compile(&s, rank, self.nranks(), cfg.check_calls, lanes)
    }

    /// The programs of every simulated rank for one piece: ranks `0..P` when they
    /// fold (see [`Simulator::folded`]), else all ranks.
    fn programs(&self, coll: Collective, algo: Algorithm, count: usize) -> Result<Vec<Program>> {
        if let Some(folded) = self.folded(coll, algo, count)? {
            return Ok(folded);
        }
        let first = self.program(coll, algo, count, 0)?;
        self.budget(
            &first,
            coll,
            algo,
            count,
            self.nranks(),
            ", which cannot be folded here",
        )?;
        let mut v = vec![first];
        for r in 1..self.nranks() {
            v.push(self.program(coll, algo, count, r)?);
        }
        Ok(v)
    }

    /// The programs of ranks `0..P` when the machine repeats every `P` ranks and the
    /// built programs of ranks `r` and `r + kP` agree (peers shifted by `kP`) for every
    /// `r < P` and the sampled periods `k` (the first two, the middle one and the
    /// last); `None` when they do not.
    ///
    /// Folding is exact for the ring and hierarchical algorithms: their schedules are
    /// invariant under a rotation by `P` ranks (whole hosts) when blocks are equal, and
    /// the check above fails when they are not; with equal machines and schedules,
    /// rank `r + kP` does at every instant what rank `r` does.
    fn folded(
        &self,
        coll: Collective,
        algo: Algorithm,
        count: usize,
    ) -> Result<Option<Vec<Program>>> {
        let n = self.nranks();
        let foldable = self.settings.fold
            && matches!(algo, Algorithm::Ring | Algorithm::Hier)
            && matches!(
                coll,
                Collective::AllReduce | Collective::AllGather | Collective::ReduceScatter
            );
        let Some(p) = self.net.period().filter(|&p| foldable && p < n && p >= 2) else {
            return Ok(None);
        };
        let first = self.program(coll, algo, count, 0)?;
        // The budget holds for the ranks actually built.
        self.budget(&first, coll, algo, count, p, " folded")?;
        let mut folded = vec![first];
        for r in 1..p {
            folded.push(self.program(coll, algo, count, r)?);
        }
        // Rank r + P alone is not enough: a hierarchical all_reduce of fewer elements
        // per channel than hosts leaves the later ring sub-blocks empty, and hosts 0
        // and 1 then run the same ops in the same order while the hosts whose
        // sub-blocks are empty do not (102x6 hosts, 256 B: folded 66 us, every rank
        // 430 us). So periods across the whole ring are compared too: the second,
        // the middle one and the last (a sample, not every period, which would cost
        // what folding saves).
        let periods = n / p;
        let mut ks = vec![1, 2, periods / 2, periods - 1];
        ks.retain(|&k| k >= 1 && k < periods);
        ks.sort_unstable();
        ks.dedup();
        for k in ks {
            for (r, prog) in folded.iter().enumerate() {
                if self
                    .program(coll, algo, count, r + k * p)?
                    .shifted(k * p, n)
                    != *prog
                {
                    return Ok(None);
                }
            }
        }
        Ok(Some(folded))
    }

    /// Refuses programs like `first` for `ranks` ranks over [`Settings::max_bytes`].
    fn budget(
        &self,
        first: &Program,
        coll: Collective,
        algo: Algorithm,
        count: usize,
        ranks: usize,
        how: &str,
    ) -> Result<()> {
        let need = first.footprint().saturating_mul(ranks);
        if need > self.settings.max_bytes {
            return Err(Error::invalid(format!(
                "simulating {algo} {coll} of {count} elements on {} ranks needs about {} MiB \
                 of programs for {ranks} ranks{how} (limit {} MiB)",
                self.nranks(),
                need >> 20,
                self.settings.max_bytes >> 20
            )));
        }
        Ok(())
    }

    /// Simulates one call of `size` bytes with `algo` forced (all pieces).
    pub fn run(&self, coll: Collective, algo: Algorithm, size: usize) -> Result<Outcome> {
        if !algo.implements(coll) {
            return Err(Error::invalid(format!(
                "algorithm {algo} does not implement {coll}"
            )));
        }
        let pieces = self.pieces(coll, self.count(coll, size));
        let rates = engine::Rates {
            reduce: self.settings.reduce_gbs * 1e9,
            buffers: engine::buffer_bytes(coll, size, self.nranks()),
            ring: self.settings.config.shm_buffer as f64,
            host: self.settings.host,
        };
        if let [count] = pieces[..] {
            if let Some(o) = self.pipelined(coll, algo, count, rates)? {
                return Ok(o);
            }
            if let Some(o) = self.scaled(coll, algo, count, rates)? {
                return Ok(o);
            }
        }
        let mut start: Vec<f64> = Vec::new();
        let mut cached: Option<(usize, Vec<Program>)> = None;
        // Pieces already run: (count, start times less the earliest, finish times
        // less the earliest start). The engine has no clock of its own, so a piece
        // whose ranks start in the same pattern (to 1e-9 of a piece's time; float
        // rounding) ends in the same pattern, shifted.
        let mut seen: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
        let (mut events, mut ops, mut simulated) = (0u64, 0usize, 0usize);
        let limit = self.settings.sample_pieces.map_or(usize::MAX, |k| k.max(2));
        let mut ends: Vec<f64> = Vec::new();
        for &count in pieces.iter().take(limit) {
            if cached.as_ref().map(|c| c.0) != Some(count) {
                cached = Some((count, self.programs(coll, algo, count)?));
            }
            let progs = &cached.as_ref().expect("set above").1;
            simulated = progs.len();
            ops = progs.iter().map(|p| p.ops.len()).sum();
            if start.len() != progs.len() {
                let t0 = start.iter().copied().fold(0.0, f64::max);
                start = vec![t0; progs.len()];
            }
            let lo = start.iter().copied().fold(f64::INFINITY, f64::min);
            let rel: Vec<f64> = start.iter().map(|s| s - lo).collect();
            let same = seen.iter().find(|(c, r, f)| {
                let tol = 1e-9 * f.iter().copied().fold(0.0, f64::max);
                *c == count && r.iter().zip(&rel).all(|(a, b)| (a - b).abs() <= tol)
            });
            if let Some((_, _, fin)) = same {
                start = fin.iter().map(|f| lo + f).collect();
                ends.push(start.iter().copied().fold(0.0, f64::max));
                continue;
            }
            let refs: Vec<&Program> = progs.iter().collect();
            let run = engine::run(&self.net, &refs, &start, rates)?;
            events += run.events;
            let fin: Vec<f64> = run.finish.iter().map(|f| f - lo).collect();
            if seen.len() == 4 {
                seen.remove(0);
            }
            seen.push((count, rel, fin));
            start = run.finish;
            ends.push(start.iter().copied().fold(0.0, f64::max));
        }
        let mut seconds = start.iter().copied().fold(0.0, f64::max);
        let extrapolated = pieces.len().saturating_sub(limit);
        if extrapolated > 0 {
            let per = (ends[ends.len() - 1] - ends[0]) / (ends.len() - 1) as f64;
            seconds += per * extrapolated as f64;
        }
        Ok(Outcome {
            seconds,
            pieces: pieces.len(),
            simulated_ranks: simulated,
            ops,
            events,
            extrapolated_pieces: extrapolated,
            extrapolated_chunks: 0,
            extrapolated_hosts: 0,
            bound: 0.0,
        })
    }

    /// Elements of one period of `algo`'s chunk pipeline: its schedule for `k`
    /// periods is the schedule for one period repeated `k` times (one chunk of each
    /// tree, or one chunk down the chain), offsets aside.
    fn period_elems(&self, coll: Collective, algo: Algorithm, count: usize) -> Option<usize> {
        let e = DataType::F32.size();
        let chunk = (self.settings.config.chunk_bytes / e).max(1);
        match (coll, algo) {
            (Collective::AllReduce, Algorithm::Tree)
                if count * e > crate::algo::tree::SINGLE_TREE_MAX_BYTES =>
            {
                Some(2 * chunk)
            }
            (Collective::Broadcast | Collective::Reduce, Algorithm::Tree | Algorithm::Chain) => {
                Some(chunk)
            }
            _ => None,
        }
    }

    /// One piece of `count` elements, every rank starting at 0.
    fn once(
        &self,
        coll: Collective,
        algo: Algorithm,
        count: usize,
        rates: engine::Rates,
    ) -> Result<(f64, Outcome)> {
        let progs = self.programs(coll, algo, count)?;
        let refs: Vec<&Program> = progs.iter().collect();
        let run = engine::run(&self.net, &refs, &vec![0.0; refs.len()], rates)?;
        let seconds = run.finish.iter().copied().fold(0.0, f64::max);
        let o = Outcome {
            seconds,
            pieces: 1,
            simulated_ranks: progs.len(),
            ops: progs.iter().map(|p| p.ops.len()).sum(),
            events: run.events,
            extrapolated_pieces: 0,
            extrapolated_chunks: 0,
            extrapolated_hosts: 0,
            bound: 0.0,
        };
        Ok((seconds, o))
    }

    /// A long chunk pipeline (a tree or a chain of `m` periods, see
    /// [`Simulator::period_elems`]) simulated on 4, 8, .., 24 periods only, and
    /// extended at the rate of the last 16 (from 8 to 24): `T(m) = T(24) + (m - 24)
    /// (T(24) - T(8)) / 16`. The first block of 4 is left out as the pipeline's
    /// fill. The blocks' increments need not be equal (the double tree's two trees
    /// fall into a pattern longer than a block: on 512 ranks, blocks of 8 periods
    /// alternate between two times 0.4% apart), and equal increments need not last
    /// (32 ranks, 64 periods: four equal blocks, yet the whole run is 0.02% longer
    /// than their rate says). So the result carries a bound, tested, not proven: the
    /// spread of the last four blocks' increments, per period, plus 0.5% of the rate,
    /// times the periods added (`extrapolated_pipelines_stay_within_their_bound`
    /// and the full runs in docs/scaling.md stay well inside it). When the spread
    /// exceeds 1% of a block the pattern has not settled and
    /// `None` asks the caller to simulate it all, as it does for pipelines under 48
    /// periods or counts that are not a whole number of periods.
    fn pipelined(
        &self,
        coll: Collective,
        algo: Algorithm,
        count: usize,
        rates: engine::Rates,
    ) -> Result<Option<Outcome>> {
        const K: usize = 4;
        const BLOCKS: usize = 6;
        let Some(unit) = self.period_elems(coll, algo, count) else {
            return Ok(None);
        };
        if !self.settings.extrapolate || count % unit != 0 || count / unit < 12 * K {
            return Ok(None);
        }
        let m = count / unit;
        let mut times = Vec::with_capacity(BLOCKS);
        let mut events = 0u64;
        let mut last = None;
        for j in 1..=BLOCKS {
            let (t, o) = self.once(coll, algo, j * K * unit, rates)?;
            events += o.events;
            times.push(t);
            last = Some(o);
        }
        let incs: Vec<f64> = times.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
        let (lo, hi) = incs
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), &d| (l.min(d), h.max(d)));
        let mean = incs.iter().sum::<f64>() / incs.len() as f64;
        if hi - lo > 0.01 * mean || !mean.is_finite() {
            return Ok(None);
        }
        let rest = m - BLOCKS * K;
        let rate = (times[BLOCKS - 1] - times[1]) / ((BLOCKS - 2) * K) as f64;
        Ok(last.map(|o| Outcome {
            seconds: times[BLOCKS - 1] + rate * rest as f64,
            events,
            extrapolated_chunks: rest,
            bound: ((hi - lo) / K as f64 + 0.005 * rate) * rest as f64,
            ..o
        }))
    }

    /// A hierarchical all_reduce over more than [`Settings::sample_ranks`] ranks,
    /// simulated on the first `h/4`, `h/2` and `h` hosts (`h` the largest
    /// `hosts / 2^k` within the limit) with the bytes scaled alike, and extended at
    /// the time per host of the last two: `T(H) = T(h) + (H - h) (T(h) - T(h/2)) /
    /// (h/2)`. An approximation, for the one case folding cannot help: each owner's
    /// channel ring starts at a block rotated by its host's place, and those blocks
    /// wait for different chunks of the host phase (a chunk spans several ring
    /// blocks), so no two hosts run the same program.
    ///
    /// The smaller calls keep every channel ring block (`count / (C H)` elements),
    /// so a ring step costs the same and a chunk holds as many blocks; the host
    /// phases (bytes per channel) and the ring (`2 (H - 1)` steps) both grow in
    /// proportion to the hosts. The time is then nearly affine in the hosts, not
    /// exactly: the rate per host drifts by up to 0.8% from one doubling to the
    /// next. Measured against full simulations (docs/scaling.md): within 0.62% on
    /// 8,192 and 16,384 ranks, within 1.7% on 128 hosts of 2 to 8 ranks extended
    /// from 64. The bound, tested, not proven, is wide for that reason: the two
    /// rates' spread plus 4% of the rate, times the hosts added. `None` asks the
    /// caller to simulate it all when the rates differ by more than 1% (the line
    /// has not settled), when fewer than 64 hosts could be sampled or a channel's
    /// block holds fewer than 4 whole chunks on the fewest (the ends are not small
    /// beside the call: 4-6% off on 16 to 32 hosts), when the call folds (exact and
    /// cheap), when hosts differ or sit in pods, or when blocks are unequal.
    ///
    /// The samples keep the whole call's `rates` (its buffers for the cache model).
    fn scaled(
        &self,
        coll: Collective,
        algo: Algorithm,
        count: usize,
        rates: engine::Rates,
    ) -> Result<Option<Outcome>> {
        const MIN_CHUNKS: usize = 4;
        const MIN_HOSTS: usize = 64;
        const MAX_SPREAD: f64 = 0.01;
        let hosts = &self.net.topo.hosts;
        let (nh, l) = (hosts.len(), hosts[0].ranks.len());
        if !self.settings.extrapolate
            || (coll, algo) != (Collective::AllReduce, Algorithm::Hier)
            || self.nranks() <= self.settings.sample_ranks
            || self.net.period() != Some(l)
            || self.net.pod_link.is_some()
            || count % (l * nh) != 0
        {
            return Ok(None);
        }
        let mut h = nh;
        while h * l > self.settings.sample_ranks && h % 2 == 0 {
            h /= 2;
        }
        if h * l > self.settings.sample_ranks || h % 4 != 0 || h < MIN_HOSTS {
            return Ok(None);
        }
        if self.folded(coll, algo, count)?.is_some() {
            return Ok(None);
        }
        let unit = count / nh;
        // Each channel's block (`unit * k / l` elements on k hosts) must be at least
        // MIN_CHUNKS whole chunks on the fewest hosts sampled, as it is on all of
        // them: fewer, and the host phases' ends are not small beside the call.
        let e = DataType::F32.size();
        let chunk = (self.settings.config.chunk_bytes / e).max(1);
        let least = unit * (h / 4) / l;
        if (unit * (h / 4)) % l != 0 || least % chunk != 0 || least / chunk < MIN_CHUNKS {
            return Ok(None);
        }
        let mut times = Vec::with_capacity(3);
        let mut events = 0u64;
        let mut last = None;
        for k in [h / 4, h / 2, h] {
            // The first k hosts: the same machine, smaller (hosts are equal).
            let topo = crate::topo::Topology::new(hosts[..k].to_vec(), Vec::new())?;
            let net = Network {
                cores: self.net.cores,
                ..Network::from_topology(topo)
            };
            let sub = Simulator::new(net, self.settings.clone());
            let (t, o) = sub.once(coll, algo, unit * k, rates)?;
            events += o.events;
            times.push(t);
            last = Some(o);
        }
        // Per host: h/4 hosts between the first two samples, h/2 between the last two.
        let (d1, d2) = (
            (times[1] - times[0]) / (h / 4) as f64,
            (times[2] - times[1]) / (h / 2) as f64,
        );
        let spread = (d2 - d1).abs();
        if d2 <= 0.0 || !d2.is_finite() || spread > MAX_SPREAD * d2 {
            return Ok(None);
        }
        let rest = nh - h;
        Ok(last.map(|o| Outcome {
            seconds: times[2] + d2 * rest as f64,
            events,
            extrapolated_hosts: rest,
            bound: (spread + 0.04 * d2) * rest as f64,
            ..o
        }))
    }

    /// Of `algos`, those [`Settings::prune`] skips for a call of `size` bytes, each
    /// with its estimate over the estimate of the planner's pick (`INFINITY` where
    /// the planner does not weigh it at all). The pick itself is never skipped.
    pub fn skipped(
        &self,
        coll: Collective,
        size: usize,
        algos: &[Algorithm],
    ) -> Vec<(Algorithm, f64)> {
        let Some(factor) = self.settings.prune else {
            return Vec::new();
        };
        let bytes = self.planned_bytes(coll, size);
        let c = &self.settings.config;
        let (pick, best) = crate::plan::cheapest(&self.net.topo, c, coll, bytes);
        if !(best > 0.0 && best.is_finite()) {
            return Vec::new();
        }
        algos
            .iter()
            .filter(|&&a| a != pick)
            .filter_map(|&a| {
                let ratio = crate::plan::estimate(&self.net.topo, c, coll, a, bytes)
                    .map_or(f64::INFINITY, |e| e / best);
                (ratio > factor).then_some((a, ratio))
            })
            .collect()
    }

    /// One table row per size: each of `algos` simulated (or why it was not: it
    /// could not be, or [`Simulator::skipped`] skips it), the planner's choice, the
    /// simulated best and the CPU time each simulation took.
    pub fn sweep(&self, coll: Collective, sizes: &[usize], algos: &[Algorithm]) -> Vec<Row> {
        sizes
            .iter()
            .map(|&size| {
                let skipped = self.skipped(coll, size, algos);
                let mut cpu = Vec::new();
                let results = algos
                    .iter()
                    .map(|&a| {
                        if let Some((_, r)) = skipped.iter().find(|(x, _)| *x == a) {
                            let why = if r.is_finite() {
                                format!("estimated {r:.1}x the planner's pick")
                            } else {
                                "not weighed by the planner here".to_string()
                            };
                            return (a, Err(format!("{SKIPPED}: {why}")));
                        }
                        let t0 = thread_cpu_seconds();
                        let r = self.run(coll, a, size).map_err(|e| e.to_string());
                        cpu.push((a.name().to_string(), thread_cpu_seconds() - t0));
                        (a, r)
                    })
                    .collect();
                let mut row =
                    Row::new(coll, self.nranks(), size, results, self.planner(coll, size));
                row.cpu = cpu;
                row
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
