//! The headers are the contract: they compile as C99 and C++, agree with the values
//! and layouts NCCL programs rely on (NCCL 2.30's), and `libmixccl.so` exports exactly
//! what they declare (nothing else named nccl*), and so do its NCCL and RCCL builds
//! (`libnccl.so`, `librccl.so`). Also the SONAMEs, the static library and the install
//! recipe with its pkg-config file.

mod util;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use util::*;

/// Compile-time checks of values and layouts, valid C11 and C++11.
const CHECKS: &str = r#"
#include <stddef.h>
#include "mixccl.h"
#ifdef __cplusplus
#define STATIC_ASSERT(c, m) static_assert(c, m)
#else
#define STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif
STATIC_ASSERT(ncclSuccess == 0 && ncclInvalidArgument == 4 && ncclRemoteError == 6, "results");
STATIC_ASSERT(ncclInProgress == 7 && ncclTimeout == 8 && ncclNumResults == 9, "results");
STATIC_ASSERT(ncclChar == 0 && ncclInt == 2 && ncclHalf == 6 && ncclFloat == 7, "types");
STATIC_ASSERT(ncclDouble == 8 && ncclBfloat16 == 9 && ncclFloat8e4m3 == 10, "types");
STATIC_ASSERT(ncclFloat8e5m2 == 11 && ncclNumTypes == 12, "types");
STATIC_ASSERT(ncclSum == 0 && ncclAvg == 4 && ncclNumOps == 5, "ops");
STATIC_ASSERT(ncclMaxRedOp == 0x7fffffff, "ops");
STATIC_ASSERT(sizeof(ncclRedOp_t) == 4 && sizeof(ncclDataType_t) == 4, "enum sizes");
STATIC_ASSERT(sizeof(ncclUniqueId) == 128, "unique id");
STATIC_ASSERT(NCCL_VERSION_CODE == NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH), "version");
STATIC_ASSERT(NCCL_VERSION_CODE == NCCL_VERSION(2, 30, 7), "the release the layouts follow");
STATIC_ASSERT(NCCL_API_MAGIC == 0xcafebeef, "config magic");
STATIC_ASSERT(offsetof(ncclConfig_t, blocking) == 16, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclConfig_t, netName) == 32, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclConfig_t, splitShare) == 40, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclConfig_t, commName) == 48, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclConfig_t, numRmaCtx) == 84, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclConfig_t, graphStreamOrdering) == 92, "config");
STATIC_ASSERT(sizeof(void*) != 8 || sizeof(ncclConfig_t) == 96, "config");
STATIC_ASSERT(sizeof(void*) != 8 || offsetof(ncclSimInfo_t, estimatedTime) == 16, "sim info");
STATIC_ASSERT(sizeof(void*) != 8 || sizeof(ncclSimInfo_t) == 24, "sim info");
STATIC_ASSERT(sizeof(ncclWaitSignalDesc_t) == 16 && offsetof(ncclWaitSignalDesc_t, ctx) == 12, "desc");
STATIC_ASSERT(ncclStatGpuMemSuspend == 0 && ncclStatGpuMemTotal == 3, "mem stats");
STATIC_ASSERT(NCCL_SUSPEND_MEM == 1 && NCCL_SHRINK_ABORT == 1 && NCCL_REVOKE_DEFAULT == 0, "flags");
STATIC_ASSERT(NCCL_WIN_COLL_SYMMETRIC == 1 && NCCL_WIN_STRICT_ORDERING == 2, "window flags");
STATIC_ASSERT(MIXCCL_UNIQUE_ID_HEX_BYTES == 257, "hex");
static ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
static ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
int uses_config(void) {
  return config.blocking == NCCL_CONFIG_UNDEF_INT && config.graphStreamOrdering == NCCL_CONFIG_UNDEF_INT &&
         sim.estimatedTime == NCCL_UNDEF_FLOAT;
}
"#;

/// Only C99: the headers, the initializer and a call through each kind of parameter.
const C99: &str = r#"
#include "mixccl.h"
#include "nccl.h"
int main(void) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  ncclSimInfo_t sim = NCCL_SIM_INFO_INITIALIZER;
  ncclComm_t comm = NCCL_COMM_NULL;
  ncclWindow_t win = NULL;
  cudaStream_t stream = NULL;
  uint64_t value = 0;
  float x = 1;
  (void)config;
  (void)sim;
  if (ncclCommMemStats(comm, ncclStatGpuMemTotal, &value) != ncclInvalidArgument) return 2;
  if (ncclWinGetUserPtr(comm, win, NULL) != ncclInvalidArgument) return 3;
  if (ncclGather(&x, &x, 1, ncclFloat, 0, comm, stream) != ncclInvalidArgument) return 4;
  return ncclAllReduce(&x, &x, 1, ncclFloat, ncclSum, comm, stream) == ncclInvalidArgument ? 0 : 1;
}
"#;

/// A CUDA header included first already declares cudaStream_t (C99 forbids a second
/// typedef): nccl.h must then leave it alone.
const CUDA_FIRST: &str = r#"
#define __CUDA_RUNTIME_H__
#define CUDART_VERSION 12040
typedef struct CUstream_st* cudaStream_t;
#include "nccl.h"
int f(cudaStream_t s) { return ncclGroupEnd() == ncclSuccess && s == 0; }
"#;

fn syntax_check(compiler: &str, lang: &str, std: &str, source: &str, dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, source).unwrap();
    run_ok(
        Command::new(compiler)
            .args(["-x", lang, std, "-pedantic", "-Wall", "-Wextra", "-Werror"])
            .arg("-fsyntax-only")
            .arg(format!("-I{}", repo().join("include").display()))
            .arg(&file),
    );
}

#[test]
fn headers_compile_as_c99_c11_and_cxx() {
    let dir = scratch("header");
    syntax_check("cc", "c", "-std=c99", C99, &dir, "c99.c");
    syntax_check("cc", "c", "-std=c99", CUDA_FIRST, &dir, "cuda_first.c");
    syntax_check("cc", "c", "-std=c11", CHECKS, &dir, "checks.c");
    syntax_check("c++", "c++", "-std=c++11", CHECKS, &dir, "checks.cc");
    syntax_check(
        "c++",
        "c++",
        "-std=c++11",
        CUDA_FIRST,
        &dir,
        "cuda_first.cc",
    );
    // Each header on its own, as C and C++.
    for h in ["nccl.h", "mixccl.h"] {
        let src = format!("#include \"{h}\"\nint x;\n");
        syntax_check("cc", "c", "-std=c99", &src, &dir, "alone.c");
        syntax_check("c++", "c++", "-std=c++11", &src, &dir, "alone.cc");
    }
    // A C99 program links and runs against the library (the id is passed by value).
    compile(
        "cc",
        &[dir.join("c99.c")],
        &dir.join("c99"),
        &dir,
        &["-std=c99"],
    );
    run_ok(base_env(&mut Command::new(dir.join("c99"))));
    let _ = std::fs::remove_dir_all(dir);
}

/// Function names a header declares: identifiers with `prefix` followed by `(`.
fn declared(header: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("include").join(header)).unwrap();
    // Drop comments so prose mentioning a function is not a declaration.
    let mut code = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("/*") {
        code.push_str(&rest[..i]);
        rest = rest[i..].split_once("*/").map_or("", |(_, r)| r);
    }
    code.push_str(rest);
    let mut names = BTreeSet::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if ident(bytes[i]) && (i == 0 || !ident(bytes[i - 1])) {
            let start = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            let name = &code[start..i];
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'(' && prefixes.iter().any(|p| name.starts_with(p)) {
                names.insert(name.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The three builds of the C ABI in the profile directory: libmixccl, and the same
/// library under NVIDIA's and AMD's names, each with its SONAME.
const LIBRARIES: [(&str, &str); 3] = [
    ("libmixccl.so", "libmixccl.so.0"),
    ("libnccl.so", "libnccl.so.2"),
    ("librccl.so", "librccl.so.1"),
];

/// Defined dynamic symbols of the shared library `file`.
fn exported(file: &str) -> BTreeSet<String> {
    let so = profile_dir().join(file);
    let out = run_ok(Command::new("nm").args(["-D", "--defined-only"]).arg(&so));
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .collect()
}

#[test]
fn exports_match_the_headers() {
    let nccl = declared("nccl.h", &["nccl", "pnccl"]);
    let ext = declared("mixccl.h", &["mixccl"]);
    assert_eq!(
        nccl.len(),
        106,
        "nccl.h declares 53 functions, each with its pnccl alias: {nccl:?}"
    );
    for name in nccl.iter().filter(|n| n.starts_with("nccl")) {
        assert!(
            nccl.contains(&format!("p{name}")),
            "{name} has no pnccl alias in nccl.h"
        );
    }
    assert!(!ext.is_empty());
    for (file, _) in LIBRARIES {
        let syms = exported(file);
        let ours = |p: &[&str]| -> BTreeSet<String> {
            syms.iter()
                .filter(|s| p.iter().any(|p| s.starts_with(p)))
                .cloned()
                .collect()
        };
        assert_eq!(
            ours(&["nccl", "pnccl"]),
            nccl,
            "{file}: exported nccl*/pnccl* vs nccl.h"
        );
        assert_eq!(
            ours(&["mixccl"]),
            ext,
            "{file}: exported mixccl* vs mixccl.h"
        );
        // Nothing else of ours leaks: Rust symbols stay hidden.
        let stray: Vec<_> = syms
            .iter()
            .filter(|s| {
                (s.contains("mixccl") || s.contains("nccl"))
                    && !s.starts_with("mixccl")
                    && !s.starts_with("nccl")
                    && !s.starts_with("pnccl")
            })
            .collect();
        assert!(stray.is_empty(), "{file}: unexpected exports: {stray:?}");
    }
}

#[test]
fn sonames_and_static_library() {
    for (file, soname) in LIBRARIES {
        let so = profile_dir().join(file);
        let out = run_ok(Command::new("readelf").arg("-d").arg(&so));
        assert!(
            out.contains(&format!("Library soname: [{soname}]")),
            "{file}: {out}"
        );
    }
    // A program linked statically needs no libmixccl.so at run time.
    let dir = scratch("static");
    let src = dir.join("version.c");
    std::fs::write(
        &src,
        "#include \"nccl.h\"\n#include <stdio.h>\nint main(void) { int v = 0;\n\
         if (ncclGetVersion(&v) != ncclSuccess || v != NCCL_VERSION_CODE) return 1;\n\
         printf(\"%d\\n\", v); return 0; }\n",
    )
    .unwrap();
    let exe = dir.join("version");
    run_ok(
        Command::new("cc")
            .arg(format!("-I{}", repo().join("include").display()))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(profile_dir().join("libmixccl.a"))
            .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"]),
    );
    let out = run_ok(&mut Command::new(&exe));
    assert_eq!(out.trim(), "23007");
    let ldd = run_ok(Command::new("ldd").arg(&exe));
    assert!(!ldd.contains("libmixccl"), "{ldd}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn install_recipe_with_pkg_config() {
    let dir = scratch("install");
    let prefix = dir.join("prefix");
    run_ok(
        Command::new("sh")
            .arg(repo().join("ffi/install.sh"))
            .arg(&prefix)
            .arg(profile_dir()),
    );
    for f in [
        "lib/libmixccl.so",
        "lib/libmixccl.so.0",
        "lib/libmixccl.a",
        "include/nccl.h",
        "include/mixccl.h",
        "lib/pkgconfig/mixccl.pc",
    ] {
        assert!(prefix.join(f).exists(), "{f} not installed");
    }
    // NCCL's and RCCL's names only on request.
    assert!(!prefix.join("lib/libnccl.so.2").exists());
    let dropin = dir.join("dropin");
    run_ok(
        Command::new("sh")
            .arg(repo().join("ffi/install.sh"))
            .args(["--nccl", "--rccl"])
            .arg(&dropin)
            .arg(profile_dir()),
    );
    for (f, soname) in [
        ("lib/libnccl.so.2", "libnccl.so.2"),
        ("lib/libnccl.so", "libnccl.so.2"),
        ("lib/librccl.so.1", "librccl.so.1"),
        ("lib/librccl.so", "librccl.so.1"),
        ("lib/libmixccl.so.0", "libmixccl.so.0"),
    ] {
        let out = run_ok(Command::new("readelf").arg("-d").arg(dropin.join(f)));
        assert!(
            out.contains(&format!("Library soname: [{soname}]")),
            "{f}: {out}"
        );
    }
    if !have("pkg-config") {
        eprintln!("pkg-config not installed: skipping the pkg-config build");
        return;
    }
    let flags = run_ok(
        Command::new("pkg-config")
            .args(["--cflags", "--libs", "mixccl"])
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
    );
    let src = dir.join("v.c");
    std::fs::write(
        &src,
        "#include <nccl.h>\nint main(void) { int v; return ncclGetVersion(&v) != ncclSuccess || v != NCCL_VERSION_CODE; }\n",
    )
    .unwrap();
    let exe = dir.join("v");
    run_ok(
        Command::new("cc")
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .args(flags.split_whitespace())
            .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display())),
    );
    run_ok(&mut Command::new(&exe));
    let _ = std::fs::remove_dir_all(dir);
}
