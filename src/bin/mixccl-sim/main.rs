//! mixccl-sim: what a collective costs on a cluster that is not here, simulated
//! with the library's own planner and schedules (`mixccl::sim`). A thin front end:
//! flags in, tables, JSON and SVG out.
//!
//! Exit codes: 0 on success, 1 on a simulation error, 2 on a usage error.

use mixccl::sim::{
    chart, parse_link, Cache, Cluster, HostModel, Network, Row, Series, Settings, Simulator,
};
use mixccl::{Algorithm, Collective, Config, Topology};
use std::process::ExitCode;

mod islands;
use std::time::Instant;

mod judge;

const USAGE: &str = "\
usage: mixccl-sim <collective> TOPOLOGY [-b size] [-e size] [-f factor] [-J file] [flags]
       mixccl-sim judge [--seed S] [--cases N] [--max-ranks N] [--jobs J] [--worst K]
                  [--prune X] [--quiet]
                  the planner against the simulated best on N random clusters of seed S
                  (default 1, 100; at most N ranks, default 16384; J threads, default 1):
                  a line per case, the K worst (default 10), the share within 10%
       mixccl-sim scale <collective> CLUSTER --min-ranks N --max-ranks N --sizes s,s,..
                  [--svg-dir DIR] [--name NAME] [-J file] [flags]
       mixccl-sim islands --hosts H [--vendors V] [--devices D] [--island LIB[:ALPHA_US,GBS]] ..
                  (bridging vendor islands against host staging; mixccl-sim islands --help)

TOPOLOGY is a JSON model (the format MIXCCL_TOPO_FILE reads) or a generated CLUSTER:
  --topo FILE                     the JSON model
  --hosts H --ranks-per-host R    H hosts of R ranks (scale: hosts = ranks / R)
  --intra CLASS:ALPHA_US,GBIT     link between ranks of a host (default shm:5,32)
  --inter CLASS:ALPHA_US,GBIT     each host's network link (default rdma:4,400)
                                  CLASS is shm, tcp, rdma or mem; bandwidth in Gbit/s
  --slow-fraction F --slow-gbit G a fraction F of hosts (spread evenly) with G Gbit/s NICs
  --pods P --pod-link ALPHA_US,GBIT
                                  P pods of consecutive hosts joined by per-pod uplinks
                                  (in the model the planner plans with)
  --cores C                       C cores per host shared by its shared-memory copies, ranks
                                  bound to them in blocks (as mixccl-perf --np --bind block)
  --same-core X                   cost of a shared-memory byte between two ranks of one core
                                  over its cost between cores (with --cores; default 1), for
                                  the part of a message that --l2 still holds (L2 over ranks
                                  on the core x message bytes)
  --switch-us X                   a message waits X us per other rank on its receiver's core
                                  (with --cores; default 0)
  --l2 SIZE:SPEEDUP               per-core cache: the part of a call's working set that fits
  --l3 SIZE:SPEEDUP               it (L2 per core, L3 per host) moves SPEEDUP times faster
                                  than the calibrated rates (default none)
Flags:
  -b, -e, -f                      sizes as nccl-tests (default 32M, 32M, 2; K, M, G suffixes)
  --algos a,b,..                  simulate only these algorithms (all of them: no --prune)
  --prune X                       skip an algorithm whose planner estimate is over X times
                                  the planner's pick's (default 4; 0 simulates all); a note
                                  under the row names what was skipped, and one the CPU
                                  seconds each simulation took
  --reduce-gbs X                  reduction rate per rank, GB/s (default the planner's 5)
  --no-fold                       simulate every rank even where one period would do
  --no-extrapolate                simulate every chunk of a long tree or chain pipeline
                                  (by default its first periods, extended once they repeat)
                                  and every host of a hierarchical all_reduce
  --sample-ranks N                simulate a hierarchical all_reduce on more than N ranks on
                                  at most N (hosts / 2^k, a half and a quarter of that, the
                                  bytes scaled alike) and extend it per host (approximate,
                                  with a bound; default 4096)
  --max-mem SIZE                  largest memory for one piece's programs (default 6G)
  --sample-pieces K               simulate K of a call's pieces, add the rest at their mean
                                  time (approximate; default all)
  -J, --json FILE                 also write the rows as JSON
  --plan-only                     print the planner's choice per size (and rank count), simulate nothing
The library's MIXCCL_* settings (chunk size, pieces, lanes, call headers) apply as in a run;
MIXCCL_TLS charges TLS's CPU cost per byte to the links it encrypts.
Sizes are nccl-tests' (all_gather: the whole output); data type float, op sum.";

struct Args {
    coll: Collective,
    scale: bool,
    topo: Option<String>,
    cluster: Cluster,
    sizes: Vec<usize>,
    algos: Option<Vec<Algorithm>>,
    settings: Settings,
    json: Option<String>,
    min_ranks: usize,
    max_ranks: usize,
    svg_dir: Option<String>,
    name: String,
    plan_only: bool,
}

/// Comment lines under a table line: why an algorithm could not be simulated, and
/// which results are extended from smaller calls.
fn notes(row: &Row) {
    if !row.cpu.is_empty() {
        let each: Vec<String> = row.cpu.iter().map(|(a, t)| format!("{a} {t:.2}")).collect();
        let total: f64 = row.cpu.iter().map(|(_, t)| t).sum();
        println!("#   cpu: {total:.2} s ({})", each.join(", "));
    }
    for (name, r) in &row.results {
        match r {
            Err(e) => println!("#   {name}: {e}"),
            Ok(o) if o.extrapolated_hosts > 0 => {
                let hosts = o.extrapolated_hosts;
                println!(
                    "#   {name}: approximate: simulated on {} ranks (and a half and a quarter \
                     of them, bytes scaled alike), {hosts} hosts added at their time per host; \
                     bound +-{:.1} us",
                    o.simulated_ranks,
                    o.bound * 1e6
                );
            }
            Ok(_) => {}
        }
    }
}

fn bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or_else(|| format!("'{s}' is not a size"))
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))
}

fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut it = argv.iter();
    let mut first = it.next().ok_or("no collective given")?.as_str();
    if first == "-h" || first == "--help" {
        return Ok(None);
    }
    let scale = first == "scale";
    if scale {
        first = it.next().ok_or("scale: no collective given")?;
    }
    let coll = Collective::parse(first).ok_or_else(|| format!("unknown collective '{first}'"))?;
    let default = |s: &str| parse_link(s).map_err(|e| e.to_string());
    let mut a = Args {
        coll,
        scale,
        topo: None,
        cluster: Cluster::new(1, 1, default("shm:5,32")?, default("rdma:4,400")?),
        sizes: Vec::new(),
        algos: None,
        settings: Settings {
            config: Config::from_env().map_err(|e| e.to_string())?,
            ..Settings::default()
        },
        json: None,
        min_ranks: 16,
        max_ranks: 16384,
        svg_dir: None,
        name: "cluster".into(),
        plan_only: false,
    };
    let (mut b, mut e, mut f) = (32usize << 20, 32usize << 20, 2usize);
    let mut slow_gbit = None;
    while let Some(flag) = it.next() {
        if flag == "--no-fold" {
            a.settings.fold = false;
            continue;
        }
        if flag == "--no-extrapolate" {
            a.settings.extrapolate = false;
            continue;
        }
        if flag == "--plan-only" {
            a.plan_only = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let c = &mut a.cluster;
        match flag.as_str() {
            "--topo" => a.topo = Some(v.clone()),
            "--hosts" => c.hosts = number(flag, v)?,
            "--ranks-per-host" => c.ranks_per_host = number(flag, v)?,
            "--intra" => c.intra = parse_link(v).map_err(|e| e.to_string())?,
            "--inter" => c.inter = parse_link(v).map_err(|e| e.to_string())?,
            "--slow-fraction" => c.slow_fraction = number(flag, v)?,
            "--slow-gbit" => slow_gbit = Some(number::<f64>(flag, v)?),
            "--pods" => c.pods = number(flag, v)?,
            "--pod-link" => {
                c.pod_link = Some(parse_link(&format!("tcp:{v}")).map_err(|e| e.to_string())?)
            }
            "--cores" => c.cores = Some(number(flag, v)?),
            "-b" | "--minbytes" => b = bytes(v)?,
            "-e" | "--maxbytes" => e = bytes(v)?,
            "-f" | "--stepfactor" => f = number(flag, v)?,
            "--sizes" => a.sizes = v.split(',').map(bytes).collect::<Result<_, _>>()?,
            "--algos" => {
                a.algos = Some(
                    v.split(',')
                        .map(|x| {
                            Algorithm::parse(x).ok_or_else(|| format!("unknown algorithm '{x}'"))
                        })
                        .collect::<Result<_, _>>()?,
                )
            }
            "--prune" => {
                let x: f64 = number(flag, v)?;
                a.settings.prune = (x > 0.0).then_some(x);
            }
            "--reduce-gbs" => a.settings.reduce_gbs = number(flag, v)?,
            "--same-core" => {
                let x: f64 = number(flag, v)?;
                if !(x > 0.0 && x.is_finite()) {
                    return Err(format!(
                        "--same-core: expected a positive number, got '{v}'"
                    ));
                }
                a.settings.host.same_core = x;
            }
            "--switch-us" => {
                let x: f64 = number(flag, v)?;
                if !(x >= 0.0 && x.is_finite()) {
                    return Err(format!("--switch-us: expected microseconds, got '{v}'"));
                }
                a.settings.host.switch = x * 1e-6;
            }
            "--l2" => a.settings.host.l2 = cache(flag, v)?,
            "--l3" => a.settings.host.l3 = cache(flag, v)?,
            "--max-mem" => a.settings.max_bytes = bytes(v)?,
            "--sample-pieces" => a.settings.sample_pieces = Some(number(flag, v)?),
            "--sample-ranks" => a.settings.sample_ranks = number(flag, v)?,
            "-J" | "--json" => a.json = Some(v.clone()),
            "--min-ranks" => a.min_ranks = number(flag, v)?,
            "--max-ranks" => a.max_ranks = number(flag, v)?,
            "--svg-dir" => a.svg_dir = Some(v.clone()),
            "--name" => a.name = v.clone(),
            _ => return Err(format!("unknown flag '{flag}'")),
        }
    }
    if a.algos.is_some() {
        // Asked for by name: simulated whatever the planner thinks of them.
        a.settings.prune = None;
    }
    if let Some(g) = slow_gbit {
        a.cluster.slow_gbs = g / 8.0;
    }
    if a.sizes.is_empty() {
        if f < 2 || b == 0 || e < b {
            return Err("sizes: need 0 < -b <= -e and -f >= 2".into());
        }
        let mut s = b;
        while s <= e {
            a.sizes.push(s);
            s = s.saturating_mul(f);
        }
    }
    Ok(Some(a))
}

/// `SIZE:SPEEDUP` of `--l2` and `--l3`.
fn cache(flag: &str, v: &str) -> Result<Cache, String> {
    let bad = || format!("{flag}: expected SIZE:SPEEDUP (2M:1.8), got '{v}'");
    let (b, x) = v.split_once(':').ok_or_else(bad)?;
    let speedup: f64 = x.trim().parse().map_err(|_| bad())?;
    if !(speedup > 0.0 && speedup.is_finite()) {
        return Err(bad());
    }
    Ok(Cache {
        bytes: bytes(b).map_err(|_| bad())?,
        speedup,
    })
}

fn algorithms(sim: &Simulator, a: &Args) -> Vec<Algorithm> {
    let all = sim.algorithms(a.coll);
    match &a.algos {
        Some(only) => all.into_iter().filter(|x| only.contains(x)).collect(),
        None => all,
    }
}

fn network(a: &Args) -> Result<Network, String> {
    match &a.topo {
        Some(path) => {
            let t = Topology::load(std::path::Path::new(path)).map_err(|e| e.to_string())?;
            Ok(Network::from_topology(t).with_tls(a.settings.config.tls))
        }
        None => a
            .cluster
            .build()
            .map(|n| n.with_tls(a.settings.config.tls))
            .map_err(|e| e.to_string()),
    }
}

fn describe(net: &Network) {
    for line in net.topo.describe().iter().take(6) {
        println!("# {line}");
    }
    if net.topo.hosts.len() > 5 {
        println!("# ... {} hosts", net.topo.hosts.len());
    }
    if let Some(p) = net.pod_link {
        let pods = net.pod_of.iter().max().map_or(1, |m| m + 1);
        println!(
            "# {pods} pods joined by {:.1} us, {:.3} GB/s uplinks",
            p.alpha_us, p.bw_gbs
        );
    }
    if let Some(c) = net.cores {
        println!("# {c} cores per host");
    }
}

/// The host model's settings, where they differ from the default.
fn describe_host(s: &Settings) {
    let h = s.host;
    if h != HostModel::default() {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "# same-core cost {}, switch {:.1} us, L2 {:.1} MiB x{}, L3 {:.1} MiB x{}",
            h.same_core,
            h.switch * 1e6,
            mib(h.l2.bytes),
            h.l2.speedup,
            mib(h.l3.bytes),
            h.l3.speedup
        );
    }
}

fn single(a: &Args) -> Result<(), String> {
    let net = network(a)?;
    describe(&net);
    describe_host(&a.settings);
    let sim = Simulator::new(net, a.settings.clone());
    if a.plan_only {
        for &size in &a.sizes {
            // The planner sees one piece (Config::piece_elems).
            let c = &a.settings.config;
            let piece = sim.planned_bytes(a.coll, size);
            let est: Vec<String> = algorithms(&sim, a)
                .iter()
                .filter_map(|&x| {
                    let t = sim.network().topo.estimate(c, a.coll, x, piece)?;
                    Some(format!("{x}:{:.1}us", t * 1e6))
                })
                .collect();
            println!(
                "{size} {} (estimates per piece: {})",
                sim.planner(a.coll, size),
                est.join(" ")
            );
        }
        return Ok(());
    }
    let algos = algorithms(&sim, a);
    println!("# {} on {} ranks (simulated)", a.coll, sim.nranks());
    println!("{}", Row::header(&algos));
    let mut all = Vec::new();
    for &size in &a.sizes {
        let t = Instant::now();
        let row = sim.sweep(a.coll, &[size], &algos).remove(0);
        println!("{}", row.format());
        notes(&row);
        eprintln!("# {size} B simulated in {:.2} s", t.elapsed().as_secs_f64());
        all.push(row);
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

fn scale(a: &Args) -> Result<(), String> {
    let algos_wanted = [Algorithm::Ring, Algorithm::Tree, Algorithm::Hier];
    let rph = a.cluster.ranks_per_host.max(1);
    let mut n = a.min_ranks.max(rph);
    let mut all: Vec<Row> = Vec::new();
    println!(
        "# scale {}: {} ranks per host, {} .. {} ranks",
        a.name, rph, a.min_ranks, a.max_ranks
    );
    while n <= a.max_ranks {
        let mut c = a.cluster.clone();
        c.hosts = n / rph;
        if c.pods > 1 && c.hosts % c.pods != 0 {
            n *= 2;
            continue;
        }
        let net = c
            .build()
            .map_err(|e| e.to_string())?
            .with_tls(a.settings.config.tls);
        let sim = Simulator::new(net, a.settings.clone());
        if a.plan_only {
            let picks: Vec<String> = a
                .sizes
                .iter()
                .map(|&s| format!("{}={}", human(s), sim.planner(a.coll, s)))
                .collect();
            println!("{n} {}", picks.join(" "));
            n *= 2;
            continue;
        }
        let algos: Vec<Algorithm> = algorithms(&sim, a)
            .into_iter()
            .filter(|x| a.algos.is_some() || algos_wanted.contains(x))
            .collect();
        let t = Instant::now();
        let rs = sim.sweep(a.coll, &a.sizes, &algos);
        println!("# {n} ranks ({:.1} s)", t.elapsed().as_secs_f64());
        println!("{}", Row::header(&algos));
        for r in &rs {
            println!("{}", r.format());
            notes(r);
        }
        all.extend(rs);
        n *= 2;
    }
    if let Some(dir) = &a.svg_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
        for &size in &a.sizes {
            let series: Vec<Series> = algos_wanted
                .iter()
                .map(|&x| Series {
                    name: x.name().into(),
                    points: all
                        .iter()
                        .filter(|r| r.size == size)
                        .filter_map(|r| r.busbw(x).map(|b| (r.nranks as f64, b)))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect();
            let label = human(size);
            let svg = chart(
                &format!("{} {} {label}: busbw vs ranks (simulated)", a.name, a.coll),
                "ranks",
                "busbw (GB/s)",
                &series,
            );
            let path = format!("{dir}/{}-{}-{label}.svg", a.name, a.coll);
            std::fs::write(&path, svg).map_err(|e| format!("writing {path}: {e}"))?;
            println!("# wrote {path}");
        }
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}

fn human(b: usize) -> String {
    if b >= 1 << 30 && b % (1 << 30) == 0 {
        format!("{}G", b >> 30)
    } else if b >= 1 << 20 && b % (1 << 20) == 0 {
        format!("{}M", b >> 20)
    } else if b >= 1 << 10 && b % (1 << 10) == 0 {
        format!("{}K", b >> 10)
    } else {
        format!("{b}B")
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("islands") {
        return islands::main(&argv[1..]);
    }
    if argv.first().map(String::as_str) == Some("judge") {
        return match judge::main(&argv[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(judge::Failure::Usage(e)) => {
                eprintln!("mixccl-sim judge: {e}\n\n{USAGE}");
                ExitCode::from(2)
            }
            Err(judge::Failure::Run(e)) => {
                eprintln!("mixccl-sim judge: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("mixccl-sim: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let r = if args.scale {
        scale(&args)
    } else {
        single(&args)
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mixccl-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
