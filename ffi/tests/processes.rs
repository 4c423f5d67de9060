//! C programs against libmixccl.so, one rank per process, started three ways: with
//! the unique id passed through a file (N = 1..5), with mixccl's own environment
//! launcher (`mixcclCommInitFromEnv`: MIXCCL_RANK, MIXCCL_NRANKS, MIXCCL_ROOT;
//! N = 1, 3, 5), and by `mpirun -np N` (the id shared with MPI_Bcast; N = 1..5);
//! every collective x dtype x op checked element by element (`c/collectives.c`); a
//! lost or silent peer as NCCL's error codes (`c/faults.c`); nonblocking
//! communicators (`c/nonblocking.c`); and the two C examples.
//!
//! Only a plain C compiler is needed: the Open MPI variants (`mpicc`, `mpirun`) print
//! why and pass when Open MPI is not installed, unless `MIXCCL_MPI_REQUIRED=1` (set by
//! `.ci/run`, which installs it), where its absence is a failure.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

fn source(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(name)
}

/// `mpicc` when Open MPI is installed; else None after saying why the caller skips.
fn mpicc(test: &str) -> Option<&'static str> {
    if have("mpicc") && have("mpirun") {
        return Some("mpicc");
    }
    let why = "mpicc/mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev; \
               .ci/run installs it)";
    assert!(
        std::env::var("MIXCCL_MPI_REQUIRED").as_deref() != Ok("1"),
        "MIXCCL_MPI_REQUIRED=1 but {why}"
    );
    eprintln!("skipped {test}: {why}; the same programs run without MPI in the other tests");
    None
}

/// Runs `n` processes of `exe` started by mixccl's environment launcher
/// (MIXCCL_RANK, MIXCCL_NRANKS, MIXCCL_ROOT on a free loopback port), with `extra`
/// variables. Rank 0 binds the root: if another process took the port meanwhile, it
/// tries once more on another.
fn env_launch(exe: &Path, n: usize, extra: &[(&str, &str)]) -> Vec<Finished> {
    let mut last = Vec::new();
    for _ in 0..2 {
        let root = format!("127.0.0.1:{}", free_port());
        let cmds = (0..n)
            .map(|r| {
                let mut c = Command::new(exe);
                base_env(&mut c)
                    .env("MIXCCL_ROOT", &root)
                    .env("MIXCCL_NRANKS", n.to_string())
                    .env("MIXCCL_RANK", r.to_string());
                for (k, v) in extra {
                    c.env(k, v);
                }
                c
            })
            .collect();
        last = run_all(cmds, DEADLINE);
        if last.iter().all(Finished::ok) {
            break;
        }
    }
    last
}

#[test]
fn collectives_as_processes_without_mpi() {
    let dir = scratch("nompi");
    let exe = dir.join("collectives");
    compile(
        "cc",
        &[source("collectives.c")],
        &exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    for n in 1..=5 {
        let id_file = dir.join(format!("id-{n}"));
        let cmds = (0..n)
            .map(|r| {
                let mut c = Command::new(&exe);
                base_env(&mut c)
                    .env("TEST_RANK", r.to_string())
                    .env("TEST_NRANKS", n.to_string())
                    .env("TEST_ID_FILE", &id_file);
                c
            })
            .collect();
        let runs = run_all(cmds, DEADLINE);
        assert_all_ok(&format!("collectives.c on {n} processes"), &runs);
        for r in &runs {
            assert!(r.output.contains("collectives OK"), "{}", r.output);
        }
        eprint!("{}", runs[0].output);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn collectives_under_the_environment_launcher() {
    let dir = scratch("envlaunch");
    let exe = dir.join("collectives");
    compile(
        "cc",
        &[source("collectives.c")],
        &exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    // 1..=5 ranks run through a file's id above; here one, an odd number and the most.
    for n in [1, 3, 5] {
        let runs = env_launch(&exe, n, &[]);
        assert_all_ok(
            &format!("collectives.c on {n} processes, MIXCCL_ROOT"),
            &runs,
        );
        for r in &runs {
            assert!(r.output.contains("collectives OK"), "{}", r.output);
        }
        eprint!("{}", runs[0].output);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn collectives_under_mpirun() {
    let Some(mpicc) = mpicc("collectives_under_mpirun") else {
        return;
    };
    let dir = scratch("mpi");
    let exe = dir.join("collectives_mpi");
    compile(
        mpicc,
        &[source("collectives.c")],
        &exe,
        &dir,
        &["-DUSE_MPI"],
    );
    for n in 1..=5 {
        let runs = run_all(vec![mpirun(n, &exe)], DEADLINE);
        assert_all_ok(&format!("mpirun -np {n} collectives_mpi"), &runs);
        assert_eq!(
            runs[0].output.matches("collectives OK").count(),
            n,
            "{}",
            runs[0].output
        );
        eprint!("{}", runs[0].output);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_example_without_mpi_builds_and_runs() {
    let dir = scratch("example-env");
    let env_exe = dir.join("allgather_env");
    compile(
        "cc",
        &[repo().join("examples/c/allgather_env.c")],
        &env_exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    let runs = env_launch(&env_exe, 3, &[("MIXCCL_TIMEOUT", "10")]);
    assert_all_ok("allgather_env on 3 processes", &runs);
    for r in &runs {
        assert!(r.output.contains(", 0 wrong"), "{}", r.output);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_example_with_mpi_builds_and_runs() {
    let Some(mpicc) = mpicc("c_example_with_mpi_builds_and_runs") else {
        return;
    };
    let dir = scratch("example-mpi");
    let mpi_exe = dir.join("allreduce_mpi");
    compile(
        mpicc,
        &[repo().join("examples/c/allreduce_mpi.c")],
        &mpi_exe,
        &dir,
        &[],
    );
    let runs = run_all(vec![mpirun(3, &mpi_exe)], DEADLINE);
    assert_all_ok("mpirun -np 3 allreduce_mpi", &runs);
    assert_eq!(
        runs[0].output.matches(", 0 wrong").count(),
        3,
        "{}",
        runs[0].output
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn lost_and_silent_peers_map_to_nccl_codes() {
    let dir = scratch("faults");
    let exe = dir.join("faults");
    compile(
        "cc",
        &[source("faults.c")],
        &exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    for (mode, text, n) in [
        ("lost", "remote process exited", 2),
        ("silent", "timed out", 2),
        ("shrink", "shrunk to 2 ranks, allreduce 3", 3),
    ] {
        let id_file = dir.join(format!("id-{mode}"));
        let cmds = (0..n)
            .map(|r| {
                let mut c = Command::new(&exe);
                base_env(&mut c)
                    .env("MIXCCL_TIMEOUT", "1")
                    .env("TEST_RANK", r.to_string())
                    .env("TEST_ID_FILE", &id_file)
                    .arg(mode);
                c
            })
            .collect();
        let runs = run_all(cmds, DEADLINE);
        assert_all_ok(&format!("faults {mode}"), &runs);
        assert!(runs[0].output.contains(text), "{}", runs[0].output);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nonblocking_communicators_complete_in_the_background() {
    let dir = scratch("nonblocking");
    let exe = dir.join("nonblocking");
    compile(
        "cc",
        &[source("nonblocking.c")],
        &exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    for (mode, n, text) in [
        ("ok", 3, "nonblocking OK"),
        ("lost", 3, "shrunk to 2 ranks, all-reduce 3"),
        ("abort", 2, "abort during an all-reduce returned"),
    ] {
        let id_file = dir.join(format!("id-{mode}"));
        let cmds = (0..n)
            .map(|r| {
                let mut c = Command::new(&exe);
                base_env(&mut c)
                    .env("MIXCCL_TIMEOUT", "10")
                    .env("TEST_RANK", r.to_string())
                    .env("TEST_NRANKS", n.to_string())
                    .env("TEST_ID_FILE", &id_file)
                    .arg(mode);
                c
            })
            .collect();
        let mut runs = run_all(cmds, DEADLINE);
        if mode == "lost" {
            // The last rank killed itself: SIGKILL is its only right ending.
            use std::os::unix::process::ExitStatusExt;
            let last = runs.pop().expect("n runs");
            assert_eq!(
                last.status.and_then(|s| s.signal()),
                Some(libc::SIGKILL),
                "the lost rank: {}",
                last.output
            );
        }
        assert_all_ok(&format!("nonblocking {mode}"), &runs);
        let expected = if mode == "lost" { n - 1 } else { 1 };
        let found = runs.iter().filter(|r| r.output.contains(text)).count();
        assert!(
            found >= expected,
            "nonblocking {mode}: {text:?} printed {found} times:\n{}",
            runs.iter()
                .map(|r| r.output.as_str())
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        for r in &runs {
            eprint!("{}", r.output);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
