//! mixccl as a drop-in NCCL / RCCL: a C program written for NCCL (`c/dropin.c`, only
//! nccl.h), linked with `-lnccl` or `-lrccl`, runs unchanged on mixccl's
//! `libnccl.so.2` / `librccl.so.1` found through `LD_LIBRARY_PATH`, and on
//! `LD_PRELOAD` when it was linked against another libnccl.so.2 (a stub standing in
//! for NVIDIA's). The program checks an all-reduce, gather and scatter from every root,
//! scalable init, suspend/resume, windows and the calls mixccl refuses, on several
//! processes, and prints which library file it loaded.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

fn dropin_source() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/dropin.c")
}

/// `dir` with `lib<name>.so` and `soname` linking to the build of that name.
fn library_dir(dir: &Path, name: &str, soname: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create library dir");
    let so = profile_dir().join(format!("lib{name}.so"));
    for link in [format!("lib{name}.so"), soname.to_string()] {
        let link = dir.join(link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).expect("symlink the library");
    }
    dir.to_path_buf()
}

/// Compiles `dropin.c` against `include/nccl.h`, linked with `-l<name>` from `libdir`;
/// `rpath` records `libdir` in the program (else only LD_LIBRARY_PATH finds it).
fn compile_dropin(exe: &Path, libdir: &Path, name: &str, rpath: bool) {
    let mut cmd = Command::new("cc");
    cmd.args([
        "-std=c99",
        "-pedantic",
        "-O1",
        "-Wall",
        "-Wextra",
        "-Werror",
    ])
    .arg(format!("-I{}", repo().join("include").display()))
    .arg(dropin_source())
    .arg("-o")
    .arg(exe)
    .arg(format!("-L{}", libdir.display()))
    .arg(format!("-l{name}"));
    if rpath {
        cmd.arg(format!("-Wl,-rpath,{}", libdir.display()));
    }
    run_ok(&mut cmd);
}

/// One process per rank; the loader's variables are exactly `loader` (cargo's
/// LD_LIBRARY_PATH, which holds target/<profile>, is not inherited).
fn ranks(exe: &Path, n: usize, id_file: &Path, loader: &[(&str, &Path)]) -> Vec<Command> {
    (0..n)
        .map(|r| {
            let mut c = Command::new(exe);
            base_env(&mut c)
                .env_remove("LD_LIBRARY_PATH")
                .env_remove("LD_PRELOAD")
                .env("TEST_RANK", r.to_string())
                .env("TEST_NRANKS", n.to_string())
                .env("TEST_ID_FILE", id_file);
            for (k, v) in loader {
                c.env(k, v);
            }
            c
        })
        .collect()
}

/// Every rank passed and loaded `library` (a path in target/<profile>).
fn assert_ran_on(what: &str, runs: &[Finished], library: &Path) {
    assert_all_ok(what, runs);
    let library = library.canonicalize().expect("canonical library path");
    for r in runs {
        assert!(r.output.contains("dropin OK"), "{what}: {}", r.output);
        let loaded = r
            .output
            .lines()
            .find_map(|l| l.split_once(" loaded ").map(|(_, p)| p.trim().to_string()))
            .unwrap_or_else(|| panic!("{what}: no library reported:\n{}", r.output));
        assert_eq!(Path::new(&loaded), library, "{what}: {}", r.output);
    }
    eprint!("{}", runs[0].output);
}

#[test]
fn a_program_linked_with_lnccl_runs_on_mixccl_through_ld_library_path() {
    let dir = scratch("dropin-path");
    let libdir = library_dir(&dir.join("lib"), "nccl", "libnccl.so.2");
    let exe = dir.join("dropin");
    compile_dropin(&exe, &libdir, "nccl", false);
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        dynamic.contains("Shared library: [libnccl.so.2]"),
        "{dynamic}"
    );
    assert!(
        !dynamic.contains("RPATH") && !dynamic.contains("RUNPATH"),
        "{dynamic}"
    );

    // Without the variable the loader has no libnccl.so.2 to give it.
    let runs = run_all(ranks(&exe, 1, &dir.join("id-none"), &[]), DEADLINE);
    assert!(
        !runs[0].ok(),
        "ran without a libnccl.so.2: {}",
        runs[0].output
    );
    assert!(
        runs[0].output.contains("libnccl.so.2"),
        "{}",
        runs[0].output
    );

    let cmds = ranks(&exe, 3, &dir.join("id"), &[("LD_LIBRARY_PATH", &libdir)]);
    let runs = run_all(cmds, DEADLINE);
    assert_ran_on(
        "dropin -lnccl, LD_LIBRARY_PATH",
        &runs,
        &profile_dir().join("libnccl.so"),
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ld_preload_replaces_the_libnccl_a_program_was_linked_against() {
    let dir = scratch("dropin-preload");
    // A stand-in for NVIDIA's library: every nccl* function the program calls fails.
    let object = dir.join("dropin.o");
    run_ok(
        Command::new("cc")
            .args(["-std=c99", "-c"])
            .arg(format!("-I{}", repo().join("include").display()))
            .arg(dropin_source())
            .arg("-o")
            .arg(&object),
    );
    let undefined = run_ok(Command::new("nm").args(["--undefined-only"]).arg(&object));
    let mut stub = String::from("/* Not NCCL: every call fails. */\n");
    for name in undefined
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("nccl"))
    {
        stub += &match name {
            "ncclGetErrorString" | "ncclGetLastError" => {
                format!("const char* {name}(int x) {{ (void)x; return \"stub libnccl\"; }}\n")
            }
            _ => format!("int {name}(void) {{ return 3; }}\n"),
        };
    }
    assert!(stub.contains("ncclAllReduce"), "{undefined}");
    let stub_dir = dir.join("stub");
    std::fs::create_dir_all(&stub_dir).unwrap();
    std::fs::write(dir.join("stub.c"), stub).unwrap();
    run_ok(
        Command::new("cc")
            .args(["-shared", "-fPIC", "-Wl,-soname,libnccl.so.2"])
            .arg(dir.join("stub.c"))
            .arg("-o")
            .arg(stub_dir.join("libnccl.so.2")),
    );
    std::os::unix::fs::symlink("libnccl.so.2", stub_dir.join("libnccl.so")).unwrap();
    let exe = dir.join("dropin");
    compile_dropin(&exe, &stub_dir, "nccl", true);

    // As linked, the program gets the stub (and fails).
    let runs = run_all(ranks(&exe, 1, &dir.join("id-stub"), &[]), DEADLINE);
    assert!(!runs[0].ok(), "the stub passed: {}", runs[0].output);
    assert!(
        runs[0].output.contains("stub libnccl"),
        "{}",
        runs[0].output
    );

    let library = profile_dir().join("libnccl.so");
    let cmds = ranks(&exe, 2, &dir.join("id"), &[("LD_PRELOAD", &library)]);
    let runs = run_all(cmds, DEADLINE);
    assert_ran_on("dropin on a stub libnccl, LD_PRELOAD", &runs, &library);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_program_linked_with_lrccl_runs_on_mixccl() {
    let dir = scratch("dropin-rccl");
    let libdir = library_dir(&dir.join("lib"), "rccl", "librccl.so.1");
    let exe = dir.join("dropin");
    compile_dropin(&exe, &libdir, "rccl", false);
    let dynamic = run_ok(Command::new("readelf").arg("-d").arg(&exe));
    assert!(
        dynamic.contains("Shared library: [librccl.so.1]"),
        "{dynamic}"
    );
    let cmds = ranks(&exe, 2, &dir.join("id"), &[("LD_LIBRARY_PATH", &libdir)]);
    let runs = run_all(cmds, DEADLINE);
    assert_ran_on(
        "dropin -lrccl, LD_LIBRARY_PATH",
        &runs,
        &profile_dir().join("librccl.so"),
    );
    let _ = std::fs::remove_dir_all(dir);
}
