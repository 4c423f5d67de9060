//! mixccl-perf: nccl-tests' benchmark for mixccl. Same flags (`-b -e -f -i -n -w
//! -c -o -d -r`), same table (size, count, type, redop, root, then time, algbw,
//! busbw and #wrong out-of-place and in-place), plus `--np N` to start N local
//! ranks itself and `-J FILE` for JSON.
//!
//! Modules: `args` (flags), `launch` (`--np`), `run` (rows and aggregation over
//! ranks), `bench` (one phase of one collective on one rank), `report` (table and
//! JSON), `soak` (random checked calls), `recover` (`--shrink-on-loss`), `elastic`
//! (`--recover`: kill, shrink, grow back). Results are checked against `mixccl::verify`, never the library's kernels.
//!
//! Exit codes: 0 when every row is right (or checking is off), 1 on wrong results
//! or any error, 2 on a usage error.

mod args;
mod bench;
mod copybound;
mod elastic;
mod launch;
mod recover;
mod report;
mod run;
mod soak;

use args::{Args, Command, USAGE};
use mixccl::Communicator;
use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(code) = elastic::main(&argv) {
        return code;
    }
    let args = match args::parse(&argv) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(a)) => a,
        Err(e) => {
            eprintln!("mixccl-perf: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match args.np {
        Some(np) => launch::launch(np, &args.child_args, args.bind),
        None if args.topo && offline_topology() => print_file_topology(),
        None => run_rank(&args),
    }
}

/// `--topo` with `MIXCCL_TOPO_FILE` and no rank in the environment: read the file.
fn offline_topology() -> bool {
    std::env::var_os("MIXCCL_TOPO_FILE").is_some() && mixccl::LaunchEnv::from_env().is_err()
}

fn print_file_topology() -> ExitCode {
    let config = match mixccl::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixccl-perf: {e}");
            return ExitCode::from(1);
        }
    };
    let Some(path) = config.topo_file.clone() else {
        return ExitCode::from(1);
    };
    match mixccl::Topology::load(&path) {
        Ok(t) => {
            print_topology(&t, &config);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mixccl-perf: {e}");
            ExitCode::from(1)
        }
    }
}

/// The model, then one line per collective: the algorithm per size band.
fn print_topology(t: &mixccl::Topology, config: &mixccl::Config) {
    for line in t.describe() {
        println!("# {line}");
    }
    for coll in [
        mixccl::Collective::AllReduce,
        mixccl::Collective::AllGather,
        mixccl::Collective::ReduceScatter,
        mixccl::Collective::Broadcast,
        mixccl::Collective::Reduce,
    ] {
        println!("{}", t.bands(config, coll));
    }
}

/// Joins the job from the environment and runs the benchmark as one of its ranks.
fn run_rank(args: &Args) -> ExitCode {
    let mut comm = match Communicator::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mixccl-perf: cannot join the job: {e}");
            return ExitCode::from(1);
        }
    };
    let (rank, nranks) = (comm.rank(), comm.nranks());
    if args.soak {
        return match soak::run(&mut comm, args) {
            Ok(0) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("mixccl-perf: rank {rank}: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.topo {
        if let (0, Some(t)) = (rank, comm.topology()) {
            print_topology(t, comm.config());
            for line in comm.describe_islands() {
                println!("# {line}");
            }
        }
        return ExitCode::SUCCESS;
    }
    if bench::has_root(args.collective) && args.root >= nranks {
        if rank == 0 {
            eprintln!(
                "mixccl-perf: root {} is not a rank of this {nranks}-rank job\n\n{USAGE}",
                args.root
            );
        }
        return ExitCode::from(2);
    }
    let rows = match run::run(&mut comm, args) {
        Ok(rows) => rows,
        Err(e) => {
            let at = recover::unix_ns();
            eprintln!("mixccl-perf: rank {rank}: {e}");
            if let (true, Some(lost)) = (args.shrink_on_loss, recover::lost_rank(&e)) {
                shrink_after_loss(&mut comm, lost, at);
            }
            return ExitCode::from(1);
        }
    };
    // Host buffers only: device copies are not bounded by the host's memcpy rate.
    let bound = match args.device {
        None => copybound::measure(&mut comm).unwrap_or_else(|e| {
            eprintln!("mixccl-perf: rank {rank}: copy bound not measured: {e}");
            None
        }),
        Some(_) => None,
    };
    drop(comm);
    if let Some(b) = &bound {
        println!("{}", b.line(&rows));
    }

    if rank == 0 {
        if let Some(path) = &args.json {
            let text =
                serde_json::to_string_pretty(&report::json(args, nranks, &rows, bound.as_ref()))
                    .expect("the report is plain JSON values");
            if let Err(e) = std::fs::write(path, text + "\n") {
                eprintln!("mixccl-perf: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    let wrong: Vec<_> = rows.iter().filter(|r| r.wrong() > 0).collect();
    if wrong.is_empty() {
        return ExitCode::SUCCESS;
    }
    if rank == 0 {
        eprintln!("mixccl-perf: wrong results in {} row(s):", wrong.len());
        for r in wrong {
            eprintln!("  {}", report::describe_wrong(args.collective.name(), r));
        }
    }
    ExitCode::from(1)
}

/// `--shrink-on-loss`: report the loss, shrink, check an all-reduce on the survivors.
fn shrink_after_loss(comm: &mut Communicator, lost: usize, at: u128) {
    let rank = comm.rank();
    println!("# rank {rank}: lost rank {lost} at {at}");
    let start = std::time::Instant::now();
    match recover::shrink_and_check(comm, lost) {
        Ok((n, wrong)) => println!(
            "# rank {rank}: shrunk to {n} ranks in {:.3} s: all-reduce of 1048576 floats, {wrong} wrong",
            start.elapsed().as_secs_f64()
        ),
        Err(e) => eprintln!("mixccl-perf: rank {rank}: shrink after losing rank {lost}: {e}"),
    }
}
