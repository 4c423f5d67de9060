//! Gives each build of the C ABI its SONAME, so programs linked against it record
//! that name (the one `ffi/install.sh` installs) instead of a bare path, and puts a
//! `SONAME -> file` link next to the library in `target/<profile>/`, so programs
//! linked there also run from there. One script for the three packages that build
//! `ffi/src` (they differ only in the library's name):
//!
//! | package       | file in target/<profile>/ | SONAME           |
//! |---------------|---------------------------|------------------|
//! | `mixccl-ffi`  | `libmixccl.so`            | `libmixccl.so.0` |
//! | `mixccl-nccl` | `libnccl.so`              | `libnccl.so.2`   |
//! | `mixccl-rccl` | `librccl.so`              | `librccl.so.1`   |
//!
//! The NCCL and RCCL builds are what a program linked against NVIDIA's NCCL or AMD's
//! RCCL loads instead of them (`LD_LIBRARY_PATH` or `LD_PRELOAD`), unchanged.

use std::path::Path;

/// The library file cargo writes and the SONAME it gets, for the package being built.
fn names(package: &str) -> Option<(&'static str, &'static str)> {
    match package {
        "mixccl-ffi" => Some(("libmixccl.so", "libmixccl.so.0")),
        "mixccl-nccl" => Some(("libnccl.so", "libnccl.so.2")),
        "mixccl-rccl" => Some(("librccl.so", "librccl.so.1")),
        _ => None,
    }
}

fn main() {
    let package = std::env::var("CARGO_PKG_NAME").unwrap_or_default();
    let Some((file, soname)) = names(&package) else {
        panic!("ffi/build.rs does not know package {package:?}: add it to names()");
    };
    // The path is relative to the package: ffi/ itself, or ffi/nccl and ffi/rccl.
    let script = if package == "mixccl-ffi" {
        "build.rs"
    } else {
        "../build.rs"
    };
    println!("cargo:rerun-if-changed={script}");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" && os != "android" && !os.ends_with("bsd") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out = Path::new(&out);
    let (Some(build), Some(profile)) = (out.ancestors().nth(2), out.ancestors().nth(3)) else {
        return;
    };
    if build.file_name().is_some_and(|n| n == "build") {
        let link = profile.join(soname);
        if std::fs::symlink_metadata(&link).is_err() {
            // Best effort: the tests and ffi/install.sh do not rely on it.
            let _ = std::os::unix::fs::symlink(file, &link);
        }
    }
}
