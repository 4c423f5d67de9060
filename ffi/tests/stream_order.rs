//! Stream-ordered calls through the C ABI (`c/stream_order.c`) on the stub runtimes,
//! which run stream work on a worker thread later than it was enqueued, so a call
//! that reads its input too early or finishes after the work queued behind it shows
//! as wrong data. Every vendor shim takes part: one rank per runtime in `order`, and
//! a pair of runtimes in each fault case. The stubs are built here, linked into the
//! program and named to mixccl by the `MIXCCL_*_LIB` variables, as in `mixed.rs`.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

const STUBS: [(&str, &str); 5] = [
    ("cuda", "MIXCCL_CUDA_LIB"),
    ("hip", "MIXCCL_HIP_LIB"),
    ("musa", "MIXCCL_MUSA_LIB"),
    ("acl", "MIXCCL_ACL_LIB"),
    ("cnrt", "MIXCCL_CNRT_LIB"),
];

/// Builds `tests/stubs/<name>_stub.c` into `dir/lib<name>_stub.so`.
fn build_stub(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(format!("lib{name}_stub.so"));
    run_ok(
        Command::new("cc")
            .args([
                "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
            ])
            .arg("-o")
            .arg(&out)
            .arg(repo().join(format!("tests/stubs/{name}_stub.c"))),
    );
    out
}

/// The program, linked with every stub, in a scratch directory of its own.
fn program(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    let mut sources =
        vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/stream_order.c")];
    // After the program, so the linker keeps them (--as-needed).
    sources.extend(STUBS.iter().map(|(n, _)| build_stub(&dir, n)));
    let exe = dir.join("stream_order");
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    compile("cc", &sources, &exe, &dir, &["-std=c11", &rpath]);
    (dir, exe)
}

/// Runs `case` with one rank per entry of `mems`; `env` is added to every rank's.
fn run_case(
    dir: &Path,
    exe: &Path,
    case: &str,
    mems: &[&str],
    env: &[(&str, &str)],
) -> Vec<Finished> {
    let id_file = dir.join(format!("{case}.id"));
    let done_file = dir.join(format!("{case}.done"));
    // A second run of the case must not find the first one's id or signals.
    let warm_file = dir.join(format!("{case}.done.warm"));
    for f in [&id_file, &done_file, &warm_file] {
        let _ = std::fs::remove_file(f);
    }
    let cmds = mems
        .iter()
        .enumerate()
        .map(|(r, mem)| {
            let mut c = Command::new(exe);
            base_env(&mut c)
                .env("TEST_CASE", case)
                .env("TEST_RANK", r.to_string())
                .env("TEST_NRANKS", mems.len().to_string())
                .env("TEST_ID_FILE", &id_file)
                .env("TEST_DONE_FILE", &done_file)
                .env("TEST_MEM", mem);
            for (name, var) in STUBS {
                c.env(var, dir.join(format!("lib{name}_stub.so")));
            }
            for k in ["STUB_FAIL", "TEST_SYNC"] {
                c.env_remove(k);
            }
            for (k, v) in env {
                c.env(k, v);
            }
            c
        })
        .collect();
    let runs = run_all(cmds, DEADLINE);
    assert_all_ok(
        &format!("stream_order.c {case} on {mems:?} with {env:?}"),
        &runs,
    );
    runs
}

/// [`run_case`], then checks that every rank reported the case OK.
fn run_case_ok(dir: &Path, exe: &Path, case: &str, mems: &[&str], env: &[(&str, &str)]) {
    let runs = run_case(dir, exe, case, mems, env);
    let ok = format!("stream_order {case} OK");
    for (r, run) in runs.iter().enumerate() {
        assert!(run.output.contains(&ok), "rank {r}: {}", run.output);
    }
}

#[test]
fn calls_are_ordered_on_the_callers_streams_on_every_vendor() {
    let (dir, exe) = program("stream-order");
    let mems = ["cuda", "hip", "musa", "acl", "cnrt"];
    for env in [
        &[][..],
        &[("MIXCCL_LAUNCH", "sync"), ("TEST_SYNC", "1")][..],
    ] {
        run_case_ok(&dir, &exe, "order", &mems, env);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn trace_takes_the_callers_time_apart() {
    // MIXCCL_DEBUG=TRACE logs, per stream-ordered call, where the caller's time went
    // (the figure a real GPU's return time is taken apart with).
    let (dir, exe) = program("stream-order-trace");
    let runs = run_case(
        &dir,
        &exe,
        "allocs",
        &["cuda", "cuda"],
        &[("MIXCCL_DEBUG", "TRACE"), ("STUB_IMPLICIT_SYNC", "1")],
    );
    for (r, run) in runs.iter().enumerate() {
        let line = run
            .output
            .lines()
            .find(|l| l.contains("stream-ordered enqueue:"))
            .unwrap_or_else(|| panic!("rank {r}: no enqueue trace in {}", run.output));
        for phase in [
            "validate",
            "locate",
            "copy in",
            "mark and hold",
            "copy out and fence",
            "queue",
        ] {
            assert!(
                line.contains(&format!("{phase} ")),
                "rank {r}: {phase} missing: {line}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn device_wide_synchronisation_between_calls_does_not_deadlock() {
    // PyTorch's allocator calls cudaMalloc/cudaFree while calls are in flight; on a
    // GPU those wait for every stream, held ones included (STUB_IMPLICIT_SYNC=1
    // models it). A timeout far beyond the deadline: a deadlock fails the test.
    let (dir, exe) = program("stream-allocs");
    for mems in [&["cuda", "cuda"][..], &["cuda", "cuda", "cuda"][..]] {
        run_case_ok(
            &dir,
            &exe,
            "allocs",
            mems,
            &[("STUB_IMPLICIT_SYNC", "1"), ("MIXCCL_TIMEOUT", "600")],
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs fault case `case` on two ranks (`mems` their runtimes, `env` extra variables)
/// and checks that rank 0's report contains `expect`.
fn fault_case(name: &str, case: &str, mems: &[&str], env: &[(&str, &str)], expect: &str) {
    let (dir, exe) = program(name);
    let runs = run_case(&dir, &exe, case, mems, env);
    assert!(runs[0].output.contains(expect), "{}", runs[0].output);
    eprint!("{}", runs[0].output);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_peer_releases_the_held_stream_and_the_error_latches() {
    // A timeout far beyond the deadline: only the peer loss can release the stream.
    fault_case(
        "stream-killed",
        "killed",
        &["hip", "cuda"],
        &[("MIXCCL_TIMEOUT", "600")],
        "stream released",
    );
}

#[test]
fn a_silent_peer_releases_the_held_stream_after_the_timeout() {
    fault_case(
        "stream-silent",
        "silent",
        &["musa", "acl"],
        &[("MIXCCL_TIMEOUT", "3")],
        "stream released",
    );
}

#[test]
fn abort_releases_every_held_stream() {
    // A timeout far beyond the deadline: only the abort can release the streams.
    fault_case(
        "stream-abort",
        "abort",
        &["cnrt", "cuda"],
        &[("MIXCCL_TIMEOUT", "600")],
        "abort released both streams",
    );
}

/// The native call count `name` on a rank's `NATIVE` line.
fn native(out: &str, name: &str) -> i64 {
    let line = out
        .lines()
        .find(|l| l.contains(" NATIVE "))
        .unwrap_or_else(|| panic!("no NATIVE line in {out}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

#[test]
fn island_calls_queue_the_native_library_on_the_callers_stream() {
    // Stub NCCL and HCCL run their collectives on the caller's stream (a host
    // function), so a call behind a gate only returns if mixccl queues the native
    // calls at enqueue; the counts prove they went through the library.
    let (dir, exe) = program("stream-islands");
    let nccl = build_stub(&dir, "nccl");
    let hccl = build_stub(&dir, "hccl");
    let libs = [
        ("MIXCCL_NCCL_LIB", nccl.to_str().expect("utf-8 path")),
        ("MIXCCL_HCCL_LIB", hccl.to_str().expect("utf-8 path")),
        ("STUB_CCL_TIMEOUT_S", "60"),
    ];
    // One island spanning the communicator; two equal islands of two vendors (the
    // shard form); an island and a rank of another host (the representatives' form).
    let cases: [(&[&str], &str); 3] = [
        (&["cuda", "cuda"], "a,a"),
        (&["cuda", "acl", "acl", "cuda"], "a,a,a,a"),
        (&["cuda", "cuda", "cuda"], "a,a,b"),
    ];
    for (mems, hosts) in cases {
        let mut env = libs.to_vec();
        env.push(("TEST_HOSTS", hosts));
        let runs = run_case(&dir, &exe, "islands", mems, &env);
        for (r, run) in runs.iter().enumerate() {
            let what = format!("{mems:?} on hosts {hosts}, rank {r}:\n{}", run.output);
            assert!(run.output.contains("stream_order islands OK"), "{what}");
            let lone = hosts.split(',').nth(r) == Some("b");
            if lone {
                continue;
            }
            assert!(native(&run.output, "all_reduce") > 0, "{what}");
            assert!(native(&run.output, "broadcast") > 0, "{what}");
            assert!(native(&run.output, "all_gather") > 0, "{what}");
            assert_eq!(native(&run.output, "abort"), 0, "{what}");
            if mems.len() == 4 {
                // The shard form: 7 and N elements leave each member a shard.
                assert!(native(&run.output, "reduce_scatter") > 0, "{what}");
            }
        }
    }
    // What PyTorch's allocator does between calls (device-wide synchronisation
    // points while calls wait for peers) must not deadlock an island either: the
    // native calls are queued at enqueue, never behind a hold (a timeout beyond the
    // deadline: a deadlock fails the test).
    let mut env = libs.to_vec();
    env.extend([
        ("TEST_HOSTS", "a,a,a,a"),
        ("STUB_IMPLICIT_SYNC", "1"),
        ("MIXCCL_TIMEOUT", "600"),
    ]);
    run_case_ok(&dir, &exe, "allocs", &["cuda", "acl", "acl", "cuda"], &env);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_killed_island_member_releases_the_stream_and_the_error_latches() {
    // Rank 1 of a two-rank NCCL island dies; rank 0's next call, behind a gate, has
    // only native calls on its stream (the island spans the communicator). The watch
    // must abort the native communicator so the stream comes back; MIXCCL_TIMEOUT is
    // beyond the test's deadline, so only the member's loss can release it.
    let (dir, exe) = program("stream-island-killed");
    let nccl = build_stub(&dir, "nccl");
    let env = [
        ("MIXCCL_NCCL_LIB", nccl.to_str().expect("utf-8 path")),
        ("STUB_CCL_TIMEOUT_S", "600"),
        ("TEST_HOSTS", "a,a"),
        ("MIXCCL_TIMEOUT", "600"),
    ];
    let runs = run_case(&dir, &exe, "killed", &["cuda", "cuda"], &env);
    eprint!("{}", runs[0].output);
    assert!(
        runs[0].output.contains("stream released"),
        "{}",
        runs[0].output
    );
    assert!(
        runs[0].output.contains("island member process"),
        "the error names the lost member: {}",
        runs[0].output
    );
    let _ = std::fs::remove_dir_all(dir);
}
