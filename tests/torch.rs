//! The PyTorch backend (`python/mixccl_torch`): runs its pytest suite (every
//! collective x dtype against a reference, DDP against gloo, dead and silent ranks)
//! with a Python that has torch, against the release `libmixccl.so`.
//!
//! The Python is `MIXCCL_TORCH_PYTHON`, else the virtualenv `.ci/run` makes
//! (`~/.cache/mixccl/torch-venv`), else `python3`. Without torch and pytest there the
//! test prints why and passes, unless `MIXCCL_TORCH_REQUIRED=1` (set by `.ci/run` once
//! it has installed torch), where a missing torch is a failure.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole pytest run (about a minute and a half on two idle cores) must end by then.
const DEADLINE: Duration = Duration::from_secs(1200);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

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

/// Why `python` cannot run the suite, if it cannot.
fn missing_torch(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import torch, pytest; print(torch.__version__)"])
        .output();
    match out {
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
        Ok(o) if !o.status.success() => Some(format!(
            "{} has no torch or pytest: {}",
            python.display(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(o) => {
            eprintln!(
                "torch {} at {}",
                String::from_utf8_lossy(&o.stdout).trim(),
                python.display()
            );
            None
        }
    }
}

/// `target/release/libmixccl.so`, built if needed (a no-op after `.ci/run`'s
/// release build).
fn release_library() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "mixccl-ffi", "--lib"])
        .current_dir(repo())
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release -p mixccl-ffi failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let lib = target.join("release/libmixccl.so");
    assert!(lib.is_file(), "{} missing after the build", lib.display());
    lib
}

#[test]
fn pytorch_backend_suite() {
    let python = python();
    if let Some(why) = missing_torch(&python) {
        assert!(
            std::env::var("MIXCCL_TORCH_REQUIRED").as_deref() != Ok("1"),
            "MIXCCL_TORCH_REQUIRED=1 but {why}"
        );
        eprintln!("skipped: {why} (.ci/run installs torch into ~/.cache/mixccl/torch-venv)");
        return;
    }
    let lib = release_library();
    let mut child = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "python/tests",
        ])
        .current_dir(repo())
        .env("MIXCCL_LIB", &lib)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pytest");
    // Drain both pipes on threads so a chatty run cannot block on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pytest") {
            break Some(status);
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = format!(
        "{}{}",
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default()
    );
    eprintln!("{text}");
    let status = status.unwrap_or_else(|| panic!("pytest still running after {DEADLINE:?}"));
    assert!(status.success(), "pytest failed ({status})");
    // pytest's summary line, e.g. "7 passed in 70.1s": a run that collected nothing
    // exits 5, but make sure the suite really ran.
    assert!(text.contains(" passed"), "pytest ran no test");
}
