//! C programs against libmixccl.so, one rank per process, started two ways: without
//! MPI (the unique id passed through a file) and by `mpirun -np N` (the id shared
//! with MPI_Bcast), N = 1..5; every collective x dtype x op checked element by
//! element (`c/collectives.c`); a lost or silent peer as NCCL's error codes
//! (`c/faults.c`); nonblocking communicators (`c/nonblocking.c`); and the two C
//! examples.

mod util;

use std::path::PathBuf;
use std::process::Command;
use util::*;

fn source(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/c")
        .join(name)
}

fn mpicc() -> &'static str {
    assert!(
        have("mpicc") && have("mpirun"),
        "mpicc/mpirun not found: the C ABI tests need Open MPI \
         (Debian: apt-get install openmpi-bin libopenmpi-dev; .ci/run installs it)"
    );
    "mpicc"
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
fn collectives_under_mpirun() {
    let dir = scratch("mpi");
    let exe = dir.join("collectives_mpi");
    compile(
        mpicc(),
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
fn c_examples_build_and_run() {
    let dir = scratch("examples");
    let examples = repo().join("examples/c");
    let mpi_exe = dir.join("allreduce_mpi");
    compile(
        mpicc(),
        &[examples.join("allreduce_mpi.c")],
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

    let env_exe = dir.join("allgather_env");
    compile(
        "cc",
        &[examples.join("allgather_env.c")],
        &env_exe,
        &dir,
        &["-std=c99", "-pedantic"],
    );
    // The root binds MIXCCL_ROOT; retry once should another process take the port.
    let mut last = Vec::new();
    for _ in 0..2 {
        let root = format!("127.0.0.1:{}", free_port());
        let cmds = (0..3)
            .map(|r| {
                let mut c = Command::new(&env_exe);
                base_env(&mut c)
                    .env("MIXCCL_ROOT", &root)
                    .env("MIXCCL_NRANKS", "3")
                    .env("MIXCCL_RANK", r.to_string())
                    .env("MIXCCL_TIMEOUT", "10");
                c
            })
            .collect();
        last = run_all(cmds, DEADLINE);
        if last.iter().all(Finished::ok) {
            break;
        }
    }
    assert_all_ok("allgather_env on 3 processes", &last);
    for r in &last {
        assert!(r.output.contains(", 0 wrong"), "{}", r.output);
    }
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
