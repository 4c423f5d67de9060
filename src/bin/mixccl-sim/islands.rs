//! `mixccl-sim islands`: all-reduce bridged through vendor islands versus staged
//! through host memory, on V vendors x D devices x H hosts (`mixccl::sim::compare_islands`).

use mixccl::sim::{compare_islands, parse_link, IslandCase, Settings};
use mixccl::topo::IslandLink;
use mixccl::Config;
use std::process::ExitCode;

pub const USAGE: &str = "\
usage: mixccl-sim islands --hosts H [--vendors V] [--devices D] [--island LIB[:ALPHA_US,GBS]]
                  [--pcie-gbs X] [--intra CLASS:ALPHA_US,GBIT] [--inter CLASS:ALPHA_US,GBIT]
                  [-b size] [-e size] [-f factor]
  all_reduce (float, sum) on H hosts, each with V vendors of D devices (default 2 x 8):
  host staging (the planner's algorithm over all ranks) against bridging (the island's
  library inside each host's vendor group, the planner's algorithm over one
  representative per island), and bridging in shard form (island reduce-scatter, one
  all-reduce per shard across islands, island all-gather).
  --island: the library's cost (default nccl with its
  assumed figures; LIB alone takes that library's defaults); --pcie-gbs: host<->device
  copy rate (default 25); links as for the other commands (default shm:5,32 and rdma:4,400).";

fn run(argv: &[String]) -> Result<(), String> {
    let link = |s: &str| parse_link(s).map_err(|e| e.to_string());
    let mut case = IslandCase {
        hosts: 1,
        vendors: 2,
        devices: 8,
        island: IslandLink::default_for("nccl").expect("nccl defaults"),
        pcie_gbs: 25.0,
        intra: link("shm:5,32")?,
        inter: link("rdma:4,400")?,
    };
    let (mut b, mut e, mut f) = (1usize << 20, 256usize << 20, 4usize);
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--hosts" => case.hosts = super::number(flag, v)?,
            "--vendors" => case.vendors = super::number(flag, v)?,
            "--devices" => case.devices = super::number(flag, v)?,
            "--pcie-gbs" => case.pcie_gbs = super::number(flag, v)?,
            "--intra" => case.intra = link(v)?,
            "--inter" => case.inter = link(v)?,
            "--island" => {
                let (lib, figures) = v.split_once(':').unwrap_or((v.as_str(), ""));
                case.island = IslandLink::default_for(lib)
                    .ok_or_else(|| format!("--island: unknown library '{lib}'"))?;
                if let Some((a, g)) = figures.split_once(',') {
                    case.island.alpha_us = super::number(flag, a)?;
                    case.island.bw_gbs = super::number(flag, g)?;
                }
            }
            "-b" => b = super::bytes(v)?,
            "-e" => e = super::bytes(v)?,
            "-f" => f = super::number(flag, v)?,
            _ => return Err(format!("islands: unknown flag {flag}")),
        }
    }
    if case.hosts == 0 || case.vendors == 0 || case.devices == 0 || f < 2 || b == 0 {
        return Err(
            "islands: hosts, vendors, devices and -b must be positive, -f at least 2".into(),
        );
    }
    let mut sizes = vec![b];
    while let Some(&last) = sizes.last() {
        match last.checked_mul(f).filter(|&x| x <= e) {
            Some(x) => sizes.push(x),
            None => break,
        }
    }
    let settings = Settings {
        config: Config::from_env().map_err(|e| e.to_string())?,
        ..Settings::default()
    };
    let rows = compare_islands(&case, &settings, &sizes).map_err(|e| e.to_string())?;
    println!(
        "# all_reduce on {} hosts x {} vendors x {} devices; island {} ({} us, {} GB/s); \
         host<->device {} GB/s",
        case.hosts,
        case.vendors,
        case.devices,
        case.island.library,
        case.island.alpha_us,
        case.island.bw_gbs,
        case.pcie_gbs
    );
    println!(
        "# {:>10} {:>12} {:>10} {:>12} {:>11} {:>11} {:>10} {:>8} {:>10} {:>8}",
        "bytes",
        "staged us",
        "algo",
        "bridged us",
        "native us",
        "reps us",
        "reps algo",
        "gain",
        "shard us",
        "gain"
    );
    for r in rows {
        println!(
            "  {:>10} {:>12.1} {:>10} {:>12.1} {:>11.1} {:>11.1} {:>10} {:>7.1}x {:>10.1} {:>7.1}x",
            r.bytes,
            r.staged_s * 1e6,
            r.staged_algo,
            r.bridged_s * 1e6,
            r.native_s * 1e6,
            r.reps_s * 1e6,
            r.reps_algo,
            r.staged_s / r.bridged_s,
            r.shard_s * 1e6,
            r.staged_s / r.shard_s
        );
    }
    Ok(())
}

/// Runs the subcommand on the arguments after `islands`.
pub fn main(argv: &[String]) -> ExitCode {
    if argv.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.contains("unknown flag")
                || e.contains("needs a value")
                || e.contains("must be") =>
        {
            eprintln!("mixccl-sim: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("mixccl-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
