//! PyTorch's CUDA library links NCCL by name: every `nccl*` function that torch's
//! `libtorch_cuda.so` imports (`nm -D --undefined-only`) must be exported by mixccl's
//! `libnccl.so.2` (and `librccl.so.1`), or `import torch` fails with "undefined
//! symbol" on mixccl. The list comes from the torch wheel CI installs, so a new torch
//! that needs more shows here first. And with mixccl's `libnccl.so` in `LD_PRELOAD`,
//! torch's own NCCL calls reach mixccl (`torch.cuda.nccl.unique_id()` is a mixccl id).
//!
//! The Python is `MIXCCL_TORCH_PYTHON`, else the virtualenv `.ci/run` makes
//! (`~/.cache/mixccl/torch-venv`), else `python3` (as `tests/torch.rs`). Without torch
//! the test prints why and passes, unless `MIXCCL_TORCH_REQUIRED=1`. A wheel without a
//! CUDA library (CPU-only) is said so, then any `libtorch_cuda*.so` or ROCm's
//! `libtorch_hip*.so` is used; with none of them there is nothing to check.

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use util::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MIXCCL_TORCH_PYTHON") {
        return p.into();
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/mixccl/torch-venv/bin/python");
        if venv.is_file() {
            return venv;
        }
    }
    "python3".into()
}

/// torch's package directory, found without importing torch; Err says why not.
fn torch_dir(python: &Path) -> Result<PathBuf, String> {
    let find = "import importlib.util as u; s = u.find_spec('torch'); \
                print(s.submodule_search_locations[0] if s else '')";
    let out = Command::new(python)
        .args(["-c", find])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dir.is_empty() {
        return Err(format!(
            "{} has no torch{}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .map(|l| format!(": {l}"))
                .unwrap_or_default()
        ));
    }
    Ok(PathBuf::from(dir))
}

/// torch's libraries that link NCCL (or RCCL): `lib/libtorch_cuda.so`, else any
/// `libtorch_cuda*.so` or `libtorch_hip*.so` in `lib/`.
fn nccl_users(torch: &Path) -> Vec<PathBuf> {
    let lib = torch.join("lib");
    let main = lib.join("libtorch_cuda.so");
    if main.is_file() {
        return vec![main];
    }
    eprintln!(
        "{} is missing (a CPU-only or ROCm wheel?): looking for libtorch_cuda*.so and \
         libtorch_hip*.so in {}",
        main.display(),
        lib.display()
    );
    let mut found: Vec<PathBuf> = std::fs::read_dir(&lib)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    found.retain(|p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        (name.starts_with("libtorch_cuda") || name.starts_with("libtorch_hip"))
            && name.ends_with(".so")
    });
    found.sort();
    found
}

/// The dynamic symbols of `file`, `--undefined-only` or `--defined-only`, without
/// version suffixes.
fn symbols(file: &Path, which: &str) -> BTreeSet<String> {
    let out = run_ok(Command::new("nm").args(["-D", which]).arg(file));
    out.lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap_or(s).to_string())
        .collect()
}

/// torch's directory and its libraries that link NCCL; None (after saying why) when
/// there is nothing to check.
fn torch_with_nccl(python: &Path) -> Option<(PathBuf, Vec<PathBuf>)> {
    let torch = match torch_dir(python) {
        Ok(dir) => dir,
        Err(why) => {
            assert!(
                std::env::var("MIXCCL_TORCH_REQUIRED").as_deref() != Ok("1"),
                "MIXCCL_TORCH_REQUIRED=1 but {why}"
            );
            eprintln!("skipped: {why} (.ci/run installs torch into ~/.cache/mixccl/torch-venv)");
            return None;
        }
    };
    let users = nccl_users(&torch);
    if users.is_empty() {
        eprintln!(
            "skipped: torch at {} has no libtorch_cuda*.so or libtorch_hip*.so, so it \
             imports no NCCL function",
            torch.display()
        );
        return None;
    }
    Some((torch, users))
}

#[test]
fn mixccl_exports_every_nccl_function_torch_imports() {
    let Some((_, users)) = torch_with_nccl(&python()) else {
        return;
    };
    for lib in ["libnccl.so", "librccl.so"] {
        let exported = symbols(&profile_dir().join(lib), "--defined-only");
        for user in &users {
            let imported: BTreeSet<String> = symbols(user, "--undefined-only")
                .into_iter()
                .filter(|s| s.starts_with("nccl") || s.starts_with("pnccl"))
                .collect();
            let missing: Vec<&String> = imported.difference(&exported).collect();
            assert!(
                missing.is_empty(),
                "{} imports {} nccl* functions; mixccl's {lib} lacks {}: {missing:?}",
                user.display(),
                imported.len(),
                missing.len()
            );
            eprintln!(
                "{lib} exports all {} nccl* functions {} imports",
                imported.len(),
                user.display()
            );
        }
    }
}

/// torch's wheels find NVIDIA's libnccl.so.2 through their RPATH and load it by path,
/// so `LD_LIBRARY_PATH` cannot replace it; `LD_PRELOAD` does: the symbols of the
/// preloaded library come first for every lookup.
#[test]
fn torch_calls_mixccl_under_ld_preload() {
    let python = python();
    let Some((torch, _)) = torch_with_nccl(&python) else {
        return;
    };
    if !torch.join("cuda/nccl.py").is_file() {
        eprintln!(
            "skipped: torch at {} has no torch.cuda.nccl",
            torch.display()
        );
        return;
    }
    let script = "import torch.cuda.nccl as n; print(n.version(), bytes(n.unique_id()[:8]))";
    let command = || {
        let mut cmd = Command::new(&python);
        base_env(&mut cmd)
            .env_remove("LD_PRELOAD")
            .args(["-c", script]);
        cmd
    };
    // Without the preload torch runs NVIDIA's NCCL (which may fail here for want of
    // an interface or a driver; it just must not be mixccl).
    let plain = command().output().expect("run python");
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("MIXCCLID"),
        "torch reached mixccl without the preload"
    );
    let preloaded = run_ok(command().env("LD_PRELOAD", profile_dir().join("libnccl.so")));
    assert!(
        preloaded.contains("(2, 30, 7) b'MIXCCLID'"),
        "torch with LD_PRELOAD of mixccl's libnccl.so: {preloaded}"
    );
    eprintln!("torch's NCCL under LD_PRELOAD: {}", preloaded.trim());
}
