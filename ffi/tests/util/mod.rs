//! Shared helpers of the C ABI tests: find the `libmixccl.so` cargo built for this
//! test run, compile C programs against it and `include/`, and run them (as several
//! processes, or under mpirun) with a deadline, on loopback only.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Seconds mixccl waits for a silent peer in the programs (bounds every hang).
pub const MIXCCL_TIMEOUT: &str = "30";
/// How long one program (or one group of rank processes) may run.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ffi/ has a parent")
        .to_path_buf()
}

/// The directory with the libmixccl.so and libmixccl.a of this build profile, and the
/// same library as libnccl.so and librccl.so: the test executable lives in
/// `<target>/<profile>/deps/`. A test build (`cargo test`, `cargo nextest run`) does
/// not always produce the cdylibs and staticlib there, so this asks cargo to build
/// them first (a no-op when they are fresh; cargo's lock serialises concurrent test
/// processes, so none sees a half-written library).
pub fn profile_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in <target>/<profile>/deps")
        .to_path_buf();
    BUILT.get_or_init(|| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args([
            "build",
            "-p",
            "mixccl-ffi",
            "-p",
            "mixccl-nccl",
            "-p",
            "mixccl-rccl",
        ])
        .arg("--lib")
        .current_dir(repo());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "{cmd:?} failed");
    });
    for lib in ["libmixccl.so", "libmixccl.a", "libnccl.so", "librccl.so"] {
        assert!(
            dir.join(lib).is_file(),
            "{} not found after cargo build -p mixccl-ffi -p mixccl-nccl -p mixccl-rccl",
            dir.join(lib).display()
        );
    }
    dir
}

/// A fresh scratch directory for one test, under cargo's target tmp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ffi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// `dir/lib` with libmixccl.so and its SONAME (libmixccl.so.0) linking to the build.
pub fn lib_dir(dir: &Path) -> PathBuf {
    let lib = dir.join("lib");
    std::fs::create_dir_all(&lib).expect("create lib dir");
    let so = profile_dir().join("libmixccl.so");
    for name in ["libmixccl.so", "libmixccl.so.0"] {
        let link = lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&so, &link).expect("symlink libmixccl.so");
    }
    lib
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command to completion, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Compiles C `sources` into `out` with `compiler` (cc, c++, mpicc), against
/// `include/` and the shared library (rpath set, so no LD_LIBRARY_PATH is needed).
pub fn compile(compiler: &str, sources: &[PathBuf], out: &Path, dir: &Path, extra: &[&str]) {
    let lib = lib_dir(dir);
    let mut cmd = Command::new(compiler);
    cmd.args(["-O1", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg(format!("-I{}", repo().join("include").display()))
        .args(extra)
        .args(sources)
        .arg("-o")
        .arg(out)
        .arg(format!("-L{}", lib.display()))
        .arg("-lmixccl")
        .arg(format!("-Wl,-rpath,{}", lib.display()));
    run_ok(&mut cmd);
}

/// The environment every program gets: loopback only, short timeouts, nothing
/// inherited that could change how ranks find each other.
pub fn base_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("MIXCCL_") || k.starts_with("NCCL_") || k.starts_with("OMPI_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("MIXCCL_SOCKET_IFNAME", "lo")
        .env("MIXCCL_TIMEOUT", MIXCCL_TIMEOUT)
}

/// `mpirun -np n exe`: Open MPI on one host (more ranks than cores allowed), as root
/// in CI, over shared memory and loopback only. The PRTE variable is for Open MPI 5.
pub fn mpirun(n: usize, exe: &Path) -> Command {
    let mut cmd = Command::new("mpirun");
    base_env(&mut cmd)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_pml", "ob1")
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        .env("OMPI_MCA_oob_tcp_if_include", "lo")
        .env("OMPI_MCA_btl_tcp_if_include", "lo")
        .env("PRTE_MCA_oob_tcp_if_include", "lo")
        .args(["--oversubscribe", "-np", &n.to_string()])
        .arg(exe);
    cmd
}

/// Output and status of one finished process.
pub struct Finished {
    pub status: Option<ExitStatus>,
    pub output: String,
}

impl Finished {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

fn spawn_piped(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

/// Runs the commands at once and waits for all of them until `deadline`; those
/// still running then get SIGTERM, then SIGKILL, and report no status.
pub fn run_all(cmds: Vec<Command>, deadline: Duration) -> Vec<Finished> {
    let start = Instant::now();
    let mut children: Vec<Child> = cmds.into_iter().map(|mut c| spawn_piped(&mut c)).collect();
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let mut out = c.stdout.take().expect("stdout");
            let mut err = c.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                let mut a = String::new();
                let mut b = String::new();
                let t = std::thread::spawn(move || {
                    let _ = err.read_to_string(&mut b);
                    b
                });
                let _ = out.read_to_string(&mut a);
                a + &t.join().unwrap_or_default()
            })
        })
        .collect();
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    while status.iter().any(Option::is_none) && start.elapsed() < deadline {
        for (c, s) in children.iter_mut().zip(status.iter_mut()) {
            if s.is_none() {
                *s = c.try_wait().expect("try_wait");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (c, s) in children.iter_mut().zip(&status) {
        if s.is_none() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    if status.iter().any(Option::is_none) {
        std::thread::sleep(Duration::from_secs(2));
    }
    for (c, s) in children.iter_mut().zip(&status) {
        if s.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    readers
        .into_iter()
        .zip(status)
        .map(|(r, status)| Finished {
            status,
            output: r.join().unwrap_or_default(),
        })
        .collect()
}

/// Panics with every process's output unless all succeeded.
pub fn assert_all_ok(what: &str, runs: &[Finished]) {
    if runs.iter().all(Finished::ok) {
        return;
    }
    let mut report = format!("{what} failed:\n");
    for (i, r) in runs.iter().enumerate() {
        report += &format!(
            "--- process {i}: {}\n{}\n",
            r.status
                .map_or("killed at the deadline".to_string(), |s| s.to_string()),
            r.output
        );
    }
    panic!("{report}");
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
