//! The C ABI across vendors: `c/mixed.c` as 4 processes, each keeping its buffers in
//! a different stub runtime's device memory (or host memory), through every
//! collective, dtype and op, checked element by element. The stubs
//! (`tests/stubs/*_stub.c` of the main crate) are built here, linked into the program
//! for its own allocations and copies, and named to mixccl by the `MIXCCL_*_LIB`
//! variables, so mixccl and the program share each stub's device arena.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

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

#[test]
fn mixed_vendors_through_the_c_abi_as_processes() {
    let dir = scratch("mixed");
    let stubs: Vec<(&str, &str, PathBuf)> = [
        ("cuda", "MIXCCL_CUDA_LIB"),
        ("hip", "MIXCCL_HIP_LIB"),
        ("musa", "MIXCCL_MUSA_LIB"),
        ("acl", "MIXCCL_ACL_LIB"),
        ("cnrt", "MIXCCL_CNRT_LIB"),
    ]
    .into_iter()
    .map(|(name, var)| (name, var, build_stub(&dir, name)))
    .collect();
    let exe = dir.join("mixed");
    let mut sources = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/mixed.c")];
    // After the program, so the linker keeps them (--as-needed).
    sources.extend(stubs.iter().map(|(_, _, so)| so.clone()));
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    compile("cc", &sources, &exe, &dir, &["-std=c99", &rpath]);
    for (round, mems) in [
        ["cuda", "hip", "acl", "host"],
        ["musa", "cnrt", "host", "hip"],
    ]
    .iter()
    .enumerate()
    {
        let id_file = dir.join(format!("id-{round}"));
        let cmds = mems
            .iter()
            .enumerate()
            .map(|(r, mem)| {
                let mut c = Command::new(&exe);
                base_env(&mut c)
                    .env("TEST_RANK", r.to_string())
                    .env("TEST_NRANKS", mems.len().to_string())
                    .env("TEST_ID_FILE", &id_file)
                    .env("TEST_MEM", mem);
                for (_, var, so) in &stubs {
                    c.env(var, so);
                }
                for k in ["STUB_FAIL", "STUB_HIP_VERSION", "STUB_HIP_UNREGISTERED"] {
                    c.env_remove(k);
                }
                c
            })
            .collect();
        let runs = run_all(cmds, DEADLINE);
        assert_all_ok(&format!("mixed.c on {mems:?}"), &runs);
        for r in &runs {
            assert!(r.output.contains("mixed OK"), "{}", r.output);
            eprint!("{}", r.output);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
