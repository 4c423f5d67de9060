//! Command-line flags: nccl-tests' names and defaults, parsed by hand. Owns the
//! [`Args`] every other module reads; knows nothing about communicators.

use mixccl::device::Vendor;
use mixccl::{Collective, DataType, ReduceOp};
use std::path::PathBuf;

/// Printed for `-h` (stdout) and for any usage error (stderr).
pub const USAGE: &str = "\
usage: mixccl-perf <allreduce|allgather|broadcast|reduce|reducescatter|alltoall|sendrecv> [flags]
       mixccl-perf soak [-n calls] [-e maxbytes] [--seed s] [--np n] [--device d]
                             random collectives, types, ops, sizes (log-uniform up to -e
                             bytes per rank), roots and in-place, every result checked

  -b, --minbytes <size>      smallest size (default 32M); sizes take K, M, G suffixes
  -e, --maxbytes <size>      largest size (default 32M)
  -f, --stepfactor <n>       multiply the size by n between rows (default 2)
  -i, --stepbytes <size>     add this many bytes between rows (used when -f is not given or is 1)
  -n, --iters <n>            timed iterations per row (default 20)
  -w, --warmup_iters <n>     untimed iterations before them (default 5)
  -c, --check <0|1>          check results, printing #wrong (default 1)
  -o, --op <op>              sum, prod, max, min, avg or all (default sum)
  -d, --datatype <type>      int8 uint8 int32 uint32 int64 uint64 half float double bfloat16,
                             f8e4m3 f8e5m2 f8e4m3fnuz f8e5m2fnuz, or all (the ten non-fp8
                             types; default float)
      --skew <k>             allgather, reducescatter, alltoall: run the uneven (v) call
                             with rank p's block in proportion to 1 + (k-1) p/(n-1), so
                             the largest is k times the smallest (split_by_weight); the
                             size column is still the total over ranks
  -r, --root <rank>          root of broadcast and reduce (default 0)
  -J, --json <file>          also write the results as JSON
      --np <n>               start n local ranks; otherwise join the job described by the
                             environment (MIXCCL_RANK/NRANKS + MIXCCL_UNIQUE_ID or MIXCCL_ROOT,
                             torchrun, Open MPI, Slurm)
      --device <host|cuda|hip|musa|acl|cnrt>
                             put the buffers in this runtime's memory on the current device
                             (default host); device buffers are staged through pinned memory
      --seed <n>             soak: the random sequence (default 1; equal on every rank)
      --bind <block|none>    with --np: pin rank r to CPUs r*ncpus/n .. (r+1)*ncpus/n of the
                             CPUs this process may use (at least one), so neighbouring ranks
                             share a core when ranks outnumber cores (default block); none
                             leaves placement to the kernel
      --topo                 print the topology model and, per collective, the algorithm
                             chosen for each size band, then stop (the collective may be
                             omitted); with MIXCCL_TOPO_FILE and no job in the environment
                             the file is read without joining a job
      --shrink-on-loss       when a call fails because one rank is lost (PeerLost, or a
                             timeout waiting for that rank alone), print
                             '# rank r: lost rank R at T' (T: Unix time in ns), shrink the
                             communicator to the survivors, run a checked all-reduce of
                             1 Mi floats on it, print '# rank r: shrunk to N ranks ... W wrong',
                             then exit 1 as for any error
  -h, --help                 this text";

/// How sizes grow from `--minbytes` to `--maxbytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Multiply by this factor (at least 2).
    Factor(usize),
    /// Add this many bytes (at least 1).
    Bytes(usize),
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// The collective to time.
    pub collective: Collective,
    /// First size in bytes.
    pub min_bytes: usize,
    /// Last size in bytes (inclusive).
    pub max_bytes: usize,
    /// Growth between sizes.
    pub step: Step,
    /// Timed iterations per row (at least 1).
    pub iters: usize,
    /// Untimed iterations before them.
    pub warmup: usize,
    /// Whether results are checked.
    pub check: bool,
    /// Reduction ops to run, in order (one entry unless `-o all`).
    pub ops: Vec<ReduceOp>,
    /// Data types to run, in order (one entry unless `-d all`).
    pub dtypes: Vec<DataType>,
    /// Root rank of broadcast and reduce.
    pub root: usize,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// `--np`: start this many local ranks.
    pub np: Option<usize>,
    /// The arguments without `--np`, for the ranks a launcher starts.
    pub child_args: Vec<String>,
    /// `--bind`: pin the ranks `--np` starts to CPUs.
    pub bind: bool,
    /// `--device`: the runtime whose memory holds the buffers (None: host memory).
    pub device: Option<Vendor>,
    /// `soak` instead of a collective: `iters` random checked calls.
    pub soak: bool,
    /// `--seed`: the soak's random sequence.
    pub seed: u64,
    /// `--topo`: print the model and the planner's choices instead of timing.
    pub topo: bool,
    /// `--shrink-on-loss`: after losing one rank, shrink and run a checked all-reduce.
    pub shrink_on_loss: bool,
    /// `--skew k`: run the uneven call, largest block k times the smallest.
    pub skew: Option<u64>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `-h`: print the usage and stop.
    Help,
    /// Run the benchmark.
    Run(Args),
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024, any case).
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, shift) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 10),
        'M' => (&s[..s.len() - 1], 20),
        'G' => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    num.parse::<usize>().ok()?.checked_mul(1usize << shift)
}

fn parse_count(flag: &str, v: &str, min: usize) -> Result<usize, String> {
    v.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= min)
        .ok_or_else(|| format!("{flag} {v:?}: expected an integer of at least {min}"))
}

/// Parses the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Command, String> {
    let mut collective = None;
    let mut min_bytes = 32 << 20;
    let mut max_bytes = 32 << 20;
    let mut factor = None;
    let mut step_bytes = None;
    let mut iters = 20;
    let mut warmup = 5;
    let mut check = true;
    let mut ops = vec![ReduceOp::Sum];
    let mut dtypes = vec![DataType::F32];
    let mut root = 0;
    let mut json = None;
    let mut np = None;
    let mut bind = true;
    let mut device = None;
    let mut soak = false;
    let mut seed = 1u64;
    let mut topo = false;
    let mut shrink_on_loss = false;
    let mut skew = None;
    let mut child_args = Vec::new();

    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        i += 1;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if arg == "--topo" {
            topo = true;
            child_args.push(arg.clone());
            continue;
        }
        if arg == "--shrink-on-loss" {
            shrink_on_loss = true;
            child_args.push(arg.clone());
            continue;
        }
        // `--name value`, `--name=value`, `-x value` or `-xvalue`.
        let (name, inline) = if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (long.to_string(), None),
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let rest = &arg[1..];
            let split = rest.chars().next().map_or(0, char::len_utf8);
            let (n, v) = rest.split_at(split);
            (n.to_string(), Some(v.to_string()).filter(|v| !v.is_empty()))
        } else {
            if collective.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            if arg == "soak" {
                soak = true;
                collective = Some(Collective::AllReduce);
                child_args.push(arg.clone());
                continue;
            }
            collective = Some(
                Collective::parse(arg)
                    .filter(|c| *c != Collective::Barrier)
                    .ok_or_else(|| format!("unknown collective {arg:?}"))?,
            );
            child_args.push(arg.clone());
            continue;
        };
        let key = match name.as_str() {
            "b" | "minbytes" => 'b',
            "e" | "maxbytes" => 'e',
            "f" | "stepfactor" => 'f',
            "i" | "stepbytes" => 'i',
            "n" | "iters" => 'n',
            "w" | "warmup_iters" => 'w',
            "c" | "check" => 'c',
            "o" | "op" => 'o',
            "d" | "datatype" => 'd',
            "r" | "root" => 'r',
            "J" | "json" => 'J',
            "np" => 'N',
            "bind" => 'B',
            "device" => 'D',
            "seed" => 'S',
            "skew" => 'K',
            _ => return Err(format!("unknown flag {arg:?}")),
        };
        let consumed_next = inline.is_none();
        let value = match inline {
            Some(v) => v,
            None => {
                let v = argv.get(i).ok_or_else(|| format!("{arg} needs a value"))?;
                i += 1;
                v.clone()
            }
        };
        let flag = arg.split('=').next().unwrap_or(arg);
        let size = |v: &str| {
            parse_size(v)
                .ok_or_else(|| format!("{flag} {v:?}: expected a size like 8, 64K, 32M or 1G"))
        };
        match key {
            'b' => min_bytes = size(&value)?,
            'e' => max_bytes = size(&value)?,
            'f' => factor = Some(parse_count(flag, &value, 1)?),
            'i' => {
                let s = size(&value)?;
                if s == 0 {
                    return Err(format!("{flag} {value:?}: expected a positive size"));
                }
                step_bytes = Some(s);
            }
            'n' => iters = parse_count(flag, &value, 1)?,
            'w' => warmup = parse_count(flag, &value, 0)?,
            'c' => check = parse_count(flag, &value, 0)? != 0,
            'o' => {
                ops = if value.eq_ignore_ascii_case("all") {
                    ReduceOp::ALL.to_vec()
                } else {
                    vec![ReduceOp::parse(&value).ok_or_else(|| {
                        format!("{flag} {value:?}: expected sum, prod, max, min, avg or all")
                    })?]
                }
            }
            'd' => {
                dtypes = if value.eq_ignore_ascii_case("all") {
                    DataType::ALL.to_vec()
                } else {
                    vec![DataType::parse(&value)
                        .ok_or_else(|| format!("{flag} {value:?}: unknown data type"))?]
                }
            }
            'r' => root = parse_count(flag, &value, 0)?,
            'J' => json = Some(PathBuf::from(value.clone())),
            'N' => {
                np = Some(parse_count(flag, &value, 1)?);
                continue;
            }
            'S' => {
                seed = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("{flag} {value:?}: expected an integer"))?
            }
            'D' => {
                device = if value.eq_ignore_ascii_case("host") {
                    None
                } else {
                    Some(Vendor::parse(&value).ok_or_else(|| {
                        format!("{flag} {value:?}: expected host, cuda, hip, musa, acl or cnrt")
                    })?)
                }
            }
            'K' => skew = Some(parse_count(flag, &value, 1)? as u64),
            'B' => {
                bind = match value.as_str() {
                    "block" => true,
                    "none" => false,
                    _ => return Err(format!("{flag} {value:?}: expected block or none")),
                };
                continue;
            }
            _ => unreachable!("every key is matched above"),
        }
        child_args.push(arg.clone());
        if consumed_next {
            child_args.push(value);
        }
    }

    let collective = match collective {
        Some(c) => c,
        None if topo => Collective::AllReduce,
        None => return Err("missing the collective to run".into()),
    };
    if soak {
        // Soak sizes run from 0 to -e; -b does not apply.
        min_bytes = 0;
    }
    if min_bytes > max_bytes {
        return Err(format!(
            "minbytes ({min_bytes}) is larger than maxbytes ({max_bytes})"
        ));
    }
    // nccl-tests: a factor above 1 wins; otherwise sizes grow by stepbytes (default 1M).
    let step = match (factor, step_bytes) {
        (Some(f), _) if f > 1 => Step::Factor(f),
        (Some(_), s) => Step::Bytes(s.unwrap_or(1 << 20)),
        (None, Some(s)) => Step::Bytes(s),
        (None, None) => Step::Factor(2),
    };
    if skew.is_some()
        && (soak
            || !matches!(
                collective,
                Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll
            ))
    {
        return Err(format!(
            "--skew applies to allgather, reducescatter and alltoall, not {}",
            if soak { "soak" } else { collective.name() }
        ));
    }
    if let Some(n) = np {
        if matches!(collective, Collective::Broadcast | Collective::Reduce) && root >= n {
            return Err(format!("root {root} is not a rank of --np {n}"));
        }
    }
    Ok(Command::Run(Args {
        collective,
        min_bytes,
        max_bytes,
        step,
        iters,
        warmup,
        check,
        ops,
        dtypes,
        root,
        json,
        np,
        child_args,
        bind,
        device,
        soak,
        seed,
        topo,
        shrink_on_loss,
        skew,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        match parse(&v)? {
            Command::Run(a) => Ok(a),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_nccl_tests_defaults() {
        let a = args("allreduce").unwrap();
        assert_eq!(a.collective, Collective::AllReduce);
        assert_eq!((a.min_bytes, a.max_bytes), (32 << 20, 32 << 20));
        assert_eq!(a.step, Step::Factor(2));
        assert_eq!((a.iters, a.warmup, a.check), (20, 5, true));
        assert_eq!(a.ops, vec![ReduceOp::Sum]);
        assert_eq!(a.dtypes, vec![DataType::F32]);
        assert_eq!((a.root, a.json.clone(), a.np), (0, None, None));
    }

    #[test]
    fn topo_needs_no_collective() {
        let a = args("--topo").unwrap();
        assert!(a.topo);
        assert_eq!(a.child_args, ["--topo"]);
        assert!(!args("allreduce").unwrap().topo);
        assert!(args("-b 8").is_err());
    }

    #[test]
    fn bind_is_a_launcher_flag() {
        let a = args("allreduce --np 4 -b 8").unwrap();
        assert!(a.bind);
        let a = args("allreduce --np 4 --bind none -b 8").unwrap();
        assert!(!a.bind);
        assert_eq!(a.child_args, vec!["allreduce", "-b", "8"]);
        assert!(args("allreduce --np 4 --bind spread")
            .unwrap_err()
            .contains("block or none"));
    }

    #[test]
    fn skew_and_fp8_types() {
        let a = args("allgather --skew 3 -d f8e4m3fnuz").unwrap();
        assert_eq!(a.skew, Some(3));
        assert_eq!(a.dtypes, vec![DataType::F8E4M3Fnuz]);
        assert_eq!(
            a.child_args,
            vec!["allgather", "--skew", "3", "-d", "f8e4m3fnuz"]
        );
        for d in ["f8e4m3", "f8e5m2", "f8e4m3fnuz", "f8e5m2fnuz"] {
            assert_eq!(
                args(&format!("allreduce -d {d}")).unwrap().dtypes[0].name(),
                d
            );
        }
        assert!(args("allreduce --skew 3")
            .unwrap_err()
            .contains("--skew applies"));
        assert!(args("alltoall --skew 0").is_err());
        let c = crate::bench::skewed_counts(1200, 3, 3);
        assert_eq!(c.iter().sum::<usize>(), 1200);
        assert_eq!(c[2], 3 * c[0]);
    }

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("0"), Some(0));
        assert_eq!(parse_size("8"), Some(8));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("1.5M"), None);
        assert_eq!(parse_size("-8"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn every_flag_in_every_spelling() {
        let a = args("-b 8 -e 1M -f 4 -n 3 -w 0 -c 0 -o all -d all -r 1 -J out.json broadcast")
            .unwrap();
        assert_eq!(a.collective, Collective::Broadcast);
        assert_eq!(
            (a.min_bytes, a.max_bytes, a.step),
            (8, 1 << 20, Step::Factor(4))
        );
        assert_eq!((a.iters, a.warmup, a.check, a.root), (3, 0, false, 1));
        assert_eq!(a.ops.len(), 5);
        assert_eq!(a.dtypes.len(), 10);
        assert_eq!(a.json, Some(PathBuf::from("out.json")));
        let b = args("all_gather --minbytes=1K --maxbytes 4K --stepbytes 1K -dbf16 -oMAX --np 3")
            .unwrap();
        assert_eq!(b.collective, Collective::AllGather);
        assert_eq!(
            (b.min_bytes, b.max_bytes, b.step),
            (1024, 4096, Step::Bytes(1024))
        );
        assert_eq!(b.dtypes, vec![DataType::BF16]);
        assert_eq!(b.ops, vec![ReduceOp::Max]);
        assert_eq!(b.np, Some(3));
        assert_eq!(
            b.child_args,
            [
                "all_gather",
                "--minbytes=1K",
                "--maxbytes",
                "4K",
                "--stepbytes",
                "1K",
                "-dbf16",
                "-oMAX"
            ]
        );
        let c = args("--np=2 sendrecv -b 0").unwrap();
        assert_eq!(c.child_args, ["sendrecv", "-b", "0"]);
        assert_eq!(c.min_bytes, 0);
    }

    #[test]
    fn step_factor_wins_over_step_bytes() {
        assert_eq!(args("allreduce -i 1K -f 3").unwrap().step, Step::Factor(3));
        assert_eq!(args("allreduce -i 1K").unwrap().step, Step::Bytes(1024));
        assert_eq!(args("allreduce -f 1").unwrap().step, Step::Bytes(1 << 20));
        assert_eq!(args("allreduce -f 1 -i 8").unwrap().step, Step::Bytes(8));
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "",
            "barrier",
            "allreduce alltoall",
            "frobnicate",
            "allreduce -x 1",
            "allreduce --bogus",
            "allreduce -b",
            "allreduce -b 12Q",
            "allreduce -b 2M -e 1M",
            "allreduce -n 0",
            "allreduce -f 0",
            "allreduce -i 0",
            "allreduce -o mean",
            "allreduce -d float128",
            "allreduce --np 0",
            "allreduce -c yes",
            "broadcast -r 2 --np 2",
        ] {
            assert!(args(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse(&["allreduce".into(), "-h".into()]), Ok(Command::Help));
    }
}
