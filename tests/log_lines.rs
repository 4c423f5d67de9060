//! Log lines of several ranks sharing one stderr pipe: each line is written whole
//! (one write(2)), so no line carries another process's prefix; and a misspelt
//! `MIXCCL_*` variable is reported once per process with the closest known name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PERF: &str = env!("CARGO_BIN_EXE_mixccl-perf");

/// Wall-clock bound on the run; a run that takes longer is killed and fails.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The parts of a log line's prefix `host:pid:tid [rank] MIXCCL LEVEL `, if `line`
/// starts with one: `(pid, rank, level)`.
fn prefix(line: &str) -> Option<(u32, String, String)> {
    let (head, rest) = line.split_once(' ')?;
    let ids: Vec<&str> = head.split(':').collect();
    let [host, pid, tid] = ids[..] else {
        return None;
    };
    if host.is_empty() || tid.parse::<u32>().is_err() {
        return None;
    }
    let pid = pid.parse().ok()?;
    let rest = rest.strip_prefix('[')?;
    let (rank, rest) = rest.split_once("] MIXCCL ")?;
    if rank != "-" && rank.parse::<usize>().is_err() {
        return None;
    }
    let (level, _) = rest.split_once(' ')?;
    ["WARN", "INFO", "TRACE"]
        .contains(&level)
        .then(|| (pid, rank.to_string(), level.to_string()))
}

#[test]
fn prefix_parser_accepts_only_whole_prefixes() {
    assert_eq!(
        prefix("vm:5515:5516 [3] MIXCCL INFO config MIXCCL_NSOCKS=2"),
        Some((5515, "3".into(), "INFO".into()))
    );
    assert_eq!(
        prefix("vm:1:1 [-] MIXCCL WARN x"),
        Some((1, "-".into(), "WARN".into()))
    );
    // The interleaving this test exists for.
    assert_eq!(prefix("vm:5515:5515vm:5513:5513 [0] MIXCCL INFO x"), None);
    assert_eq!(prefix("MIXCCL INFO x"), None);
    assert_eq!(prefix("vm:1:1 [0] MIXCCL LOUD x"), None);
}

#[test]
fn ranks_log_whole_lines() {
    let mut cmd = Command::new(PERF);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIXCCL_") {
            cmd.env_remove(k);
        }
    }
    cmd.args([
        "allreduce",
        "--np",
        "4",
        "-b",
        "8",
        "-e",
        "1K",
        "-f",
        "4",
        "-n",
        "2",
        "-w",
        "1",
    ])
    .env("MIXCCL_TIMEOUT", "60")
    .env("MIXCCL_DEBUG", "INFO")
    .env("MIXCCL_NSOCK", "2")
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start mixccl-perf");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        let _ = tx.send(s);
    });
    let err = match rx.recv_timeout(RUN_LIMIT) {
        Ok(s) => s,
        Err(_) => {
            // SAFETY: kill(2) on the launcher we started; its ranks die with it
            // (PR_SET_PDEATHSIG).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = child.wait();
            panic!("mixccl-perf --np 4 ran past {RUN_LIMIT:?}");
        }
    };
    let status = child.wait().expect("wait for mixccl-perf");
    let out = out.join().unwrap();
    assert!(
        status.success(),
        "mixccl-perf failed: {status}\n{out}\n{err}"
    );

    let mut info: BTreeMap<u32, usize> = BTreeMap::new();
    let mut ranks = BTreeSet::new();
    let mut unknown: BTreeMap<u32, usize> = BTreeMap::new();
    for line in err.lines().filter(|l| l.contains("MIXCCL")) {
        let (pid, rank, level) =
            prefix(line).unwrap_or_else(|| panic!("line without its prefix: {line:?}\n{err}"));
        assert_eq!(
            line.matches("] MIXCCL ").count(),
            1,
            "two prefixes in one line: {line:?}"
        );
        if level == "INFO" {
            *info.entry(pid).or_default() += 1;
            ranks.insert(rank);
        }
        if line.contains("unknown variable MIXCCL_NSOCK ") {
            assert!(
                line.ends_with(
                    "unknown variable MIXCCL_NSOCK (not a mixccl setting; closest: MIXCCL_NSOCKS)"
                ),
                "{line}"
            );
            *unknown.entry(pid).or_default() += 1;
        }
    }
    // Four ranks logged at INFO, each as itself: the check above saw real lines.
    assert!(
        info.len() >= 4,
        "INFO lines from {} processes\n{err}",
        info.len()
    );
    for r in ["0", "1", "2", "3"] {
        assert!(ranks.contains(r), "no INFO line from rank {r}\n{err}");
    }
    // The misspelt variable: once per process, in every rank's process.
    assert!(
        unknown.values().all(|&n| n == 1),
        "warned more than once in a process: {unknown:?}\n{err}"
    );
    assert!(
        info.keys().all(|p| unknown.contains_key(p)),
        "a rank did not warn about MIXCCL_NSOCK\n{err}"
    );
}
