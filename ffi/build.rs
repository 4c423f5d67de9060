//! Gives `libmixccl.so` its SONAME, `libmixccl.so.0`, so programs linked against it
//! record that name (the one `ffi/install.sh` installs) instead of a bare path, and
//! puts a `libmixccl.so.0 -> libmixccl.so` link next to the library in
//! `target/<profile>/`, so programs linked there also run from there.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "linux" && os != "android" && !os.ends_with("bsd") {
        return;
    }
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmixccl.so.0");
    // OUT_DIR is <target>/<profile>/build/mixccl-ffi-<hash>/out.
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out = Path::new(&out);
    let (Some(build), Some(profile)) = (out.ancestors().nth(2), out.ancestors().nth(3)) else {
        return;
    };
    if build.file_name().is_some_and(|n| n == "build") {
        let link = profile.join("libmixccl.so.0");
        if std::fs::symlink_metadata(&link).is_err() {
            // Best effort: the tests and ffi/install.sh do not rely on it.
            let _ = std::os::unix::fs::symlink("libmixccl.so", &link);
        }
    }
}
