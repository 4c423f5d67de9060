//! The topology model a communicator plans with, built at init: from every rank's
//! probe (or `MIXCCL_TOPO_FILE`), refined by a short measurement, checked equal on
//! every rank. `topo` owns the model; this runs the collectives that build it, and
//! init's others (the islands'), with their small all-reduces over the tree
//! ([`init_collectives`]): right after init a rank is linked to its tree
//! neighbours (and its measurement partner) only.
//!
//! The measurement replaces probed link costs with measured ones.
//!
//! Round 0: on every host with two ranks or more, its first two ranks ping-pong over
//! their link (shared memory). Rounds 1 and 2: the first ranks of hosts 2k and 2k+1,
//! then of hosts 2k+1 and 2k+2, ping-pong across the network, so no host's link
//! carries two measurements at once. Each pair times 20 round trips of 8 bytes
//! (alpha = half the median round trip) and one or two one-way transfers of 1 MiB (inside a
//! host) or 4 MiB (between hosts) each answered by 8 bytes (bandwidth). The second
//! transfer is skipped when the first took over 200 ms, which bounds the whole
//! measurement to a few seconds even on a 100 Mbit/s link.
//!
//! Every rank then contributes what it measured to one max-all-reduce, so all ranks
//! end with the same figures: per host the best bandwidth and lowest alpha seen.

use super::{Communicator, Transfer};
use crate::config::Collective;
use crate::debug::log_info;
use crate::error::{Error, Result};
use crate::reduce::ReduceOp;
use crate::topo::{self, RankProbe, Topology};
use std::time::{Duration, Instant};

/// Runs init's own collectives: [`establish`], then the islands. Their small
/// all-reduces go over the tree (`plan::choose`), so a rank leaves init linked to
/// its tree neighbours only, and every call after init is planned as usual.
pub(super) fn init_collectives(comm: &mut Communicator, probes: Vec<RankProbe>) -> Result<()> {
    comm.caps.init = true;
    let done = establish(comm, probes).and_then(|()| comm.form_islands());
    comm.caps.init = false;
    // A call equal to init's last must not reuse its tree plan.
    comm.last_plan = None;
    done
}

/// Builds the model at init from every rank's probe (or `MIXCCL_TOPO_FILE`), refines
/// it by measurement unless `MIXCCL_TOPO_PROBE=0`, checks that every rank holds the
/// same model, hands it to the planner and dumps it if asked. Collective: every rank
/// calls it right after its links are up.
fn establish(comm: &mut Communicator, probes: Vec<RankProbe>) -> Result<()> {
    let config = comm.config().clone();
    let (rank, nranks) = (comm.rank(), comm.nranks());
    let start = std::time::Instant::now();
    let mut t = match &config.topo_file {
        Some(path) => {
            let t = Topology::load(path)?;
            topo::check_size(&t, nranks, path)?;
            t
        }
        None => Topology::from_probes(probes, !config.shm_disable)?,
    };
    comm.set_topology(t.clone());
    if config.topo_file.is_none() && config.topo_probe && nranks > 1 {
        refine(comm, &mut t)?;
        comm.set_topology(t.clone());
    }
    // Ranks must plan alike: compare the model's fingerprint everywhere. The largest
    // fingerprint and the largest complement (the smallest) are this rank's own on
    // every rank exactly when all agree: one max-all-reduce (a tree, log n steps)
    // checks it; only a mismatch (seen on every rank then) pays for the all-gather
    // (a ring, n steps) that names the rank.
    let mine = [t.fingerprint()];
    let mut bounds = [mine[0], !mine[0]];
    comm.all_reduce_in_place(&mut bounds, ReduceOp::Max)?;
    if bounds != [mine[0], !mine[0]] {
        let mut all = vec![0u64; nranks];
        comm.all_gather(&mine, &mut all)?;
        if let Some((peer, theirs)) = all.iter().enumerate().find(|(_, f)| **f != mine[0]) {
            return Err(Error::Mismatch {
                rank,
                theirs: format!("a topology model with fingerprint {:016x}", mine[0]),
                peer,
                ours: format!("one with fingerprint {theirs:016x}"),
            });
        }
    }
    // The bands cost ~100 plans each: computed only when they are printed.
    if crate::debug::level() >= crate::debug::DebugLevel::Info {
        for line in t.describe() {
            log_info!(Some(rank), "topology: {line}");
        }
        for coll in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::Broadcast,
        ] {
            log_info!(Some(rank), "topology: {}", t.bands(&config, coll));
        }
    }
    log_info!(
        Some(rank),
        "topology established in {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    if let (Some(path), 0) = (&config.topo_dump_file, rank) {
        std::fs::write(path, t.to_json() + "\n").map_err(|e| {
            Error::io(
                format!("writing MIXCCL_TOPO_DUMP_FILE={}", path.display()),
                e,
            )
        })?;
    }
    // One more all-reduce with the final model: every rank got this far before init
    // returns (over the tree, as init's others; the planner's own choices are first
    // run by the first calls, which connect what they need).
    let mut ok = [1u8];
    comm.all_reduce_in_place(&mut ok, ReduceOp::Min)?;
    Ok(())
}

const PINGS: usize = 20;
const INTRA_BYTES: usize = 1 << 20;
const INTER_BYTES: usize = 4 << 20;
const ONE_MORE_BELOW: Duration = Duration::from_millis(200);
/// "Not measured" in an alpha slot (alphas are stored negated, so max = lowest alpha).
const NO_ALPHA: f64 = -1e30;

/// What one pair measured: (alpha in us, bandwidth in GB/s).
fn ping_pong(
    comm: &mut Communicator,
    peer: usize,
    first: bool,
    bytes: usize,
) -> Result<(f64, f64)> {
    let tiny = [0u8; 8];
    let mut back = [0u8; 8];
    let mut round = |comm: &mut Communicator, send_len: usize, big: &[u8], sink: &mut [u8]| {
        let out: &[u8] = if send_len == 8 { &tiny } else { big };
        if first {
            comm.group(vec![Transfer::Send { peer, buf: out }])?;
            comm.group(vec![Transfer::Recv {
                peer,
                buf: &mut back,
            }])
        } else {
            let into: &mut [u8] = if send_len == 8 { &mut back } else { sink };
            comm.group(vec![Transfer::Recv { peer, buf: into }])?;
            comm.group(vec![Transfer::Send { peer, buf: &tiny }])
        }
    };
    let big = vec![0u8; bytes];
    let mut sink = vec![0u8; bytes];
    round(comm, 8, &big, &mut sink)?;
    // The median round trip: on a busy machine a few trips wait for a core.
    let mut trips = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t0 = Instant::now();
        round(comm, 8, &big, &mut sink)?;
        trips.push(t0.elapsed().as_secs_f64());
    }
    trips.sort_by(f64::total_cmp);
    let alpha = trips[PINGS / 2] / 2.0;
    let mut best = f64::INFINITY;
    for i in 0..2 {
        let t = Instant::now();
        round(comm, bytes, &big, &mut sink)?;
        let took = t.elapsed();
        best = best.min(took.as_secs_f64());
        // Both sides decide alike: the sender's time is sent along below.
        let mut verdict = [u8::from(took < ONE_MORE_BELOW)];
        if first {
            comm.group(vec![Transfer::Send {
                peer,
                buf: &verdict,
            }])?;
        } else {
            comm.group(vec![Transfer::Recv {
                peer,
                buf: &mut verdict,
            }])?;
        }
        if i == 0 && verdict[0] == 0 {
            break;
        }
    }
    // The transfer's time includes one alpha, negligible at these sizes.
    Ok((alpha * 1e6, bytes as f64 / best / 1e9))
}

/// Measures, exchanges and applies the figures to `t` (equal on all ranks after).
fn refine(comm: &mut Communicator, t: &mut Topology) -> Result<()> {
    let rank = comm.rank();
    let hn = t.hosts.len();
    // Per host: [-intra alpha, intra bw, -net alpha, net bw].
    let mut v = vec![0.0f64; 4 * hn];
    for h in 0..hn {
        v[4 * h] = NO_ALPHA;
        v[4 * h + 2] = NO_ALPHA;
    }
    let me = t.host_of(rank);
    let ranks = t.hosts[me].ranks.clone();
    if ranks.len() >= 2 && (rank == ranks[0] || rank == ranks[1]) {
        let peer = if rank == ranks[0] { ranks[1] } else { ranks[0] };
        let (a, bw) = ping_pong(comm, peer, rank == ranks[0], INTRA_BYTES)?;
        v[4 * me] = -a;
        v[4 * me + 1] = bw;
    }
    for parity in [0, 1] {
        if rank != ranks[0] {
            break;
        }
        // Pairs (g, g+1) with g of this parity.
        let partner = if me % 2 == parity {
            Some(me + 1).filter(|&g| g < hn)
        } else {
            me.checked_sub(1)
        };
        let Some(g) = partner else { continue };
        let peer = t.hosts[g].ranks[0];
        let (a, bw) = ping_pong(comm, peer, me < g, INTER_BYTES)?;
        for x in [me, g] {
            v[4 * x + 2] = v[4 * x + 2].max(-a);
            v[4 * x + 3] = v[4 * x + 3].max(bw);
        }
    }
    comm.all_reduce_in_place(&mut v, ReduceOp::Max)?;
    for (h, host) in t.hosts.iter_mut().enumerate() {
        if v[4 * h + 1] > 0.0 && v[4 * h] > NO_ALPHA {
            host.intra.alpha_us = -v[4 * h];
            host.intra.bw_gbs = v[4 * h + 1];
            host.intra.measured = true;
        }
        if v[4 * h + 3] > 0.0 && v[4 * h + 2] > NO_ALPHA {
            host.net.alpha_us = -v[4 * h + 2];
            host.net.bw_gbs = v[4 * h + 3];
            host.net.measured = true;
        }
    }
    Ok(())
}
