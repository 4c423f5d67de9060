//! Ranks as separate processes of the `mixccl-perf` binary (the `processes_*`
//! tests): starting them with a clean `MIXCCL_*` environment (`--np`, or one by one
//! as a launcher would with `MIXCCL_RANK`/`MIXCCL_NRANKS`/`MIXCCL_ROOT`), collecting
//! their output, and checking that /dev/shm is left clean.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `mixccl-perf` binary cargo built for these tests.
pub const PERF: &str = env!("CARGO_BIN_EXE_mixccl-perf");

/// `mixccl-perf` with a clean `MIXCCL_*` environment and a bounded timeout.
pub fn perf(timeout_s: u32) -> Command {
    let mut cmd = Command::new(PERF);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIXCCL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("MIXCCL_TIMEOUT", timeout_s.to_string());
    cmd
}

/// A child whose stdout and stderr are collected as they arrive; killed on drop.
pub struct Proc {
    /// The process, to kill or wait for.
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut r: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(k) = r.read(&mut buf) {
            if k == 0 {
                break;
            }
            into.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..k]));
        }
    })
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .expect("start mixccl-perf");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), out.clone()),
            collect(child.stderr.take().unwrap(), err.clone()),
        ];
        Proc {
            child,
            out,
            err,
            readers,
        }
    }

    /// Waits until `deadline`; None (after killing it) if it is still running then.
    pub fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Entries of /dev/shm that could be mixccl's (Open MPI's own segments, which other
/// tests may create meanwhile, are left out).
pub fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    !n.starts_with("vader_segment")
                        && !n.starts_with("sm_segment")
                        && !n.contains("ompi")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Fails if /dev/shm gained entries since `before`.
pub fn assert_no_new_shm(before: &std::collections::BTreeSet<String>, when: &str) {
    let after = dev_shm();
    let new: Vec<_> = after.difference(before).collect();
    assert!(new.is_empty(), "{when}: left in /dev/shm: {new:?}");
}

/// Which transport the ranks use between each other (all ranks share this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `MIXCCL_SHM_DISABLE=1`: TCP over loopback.
    Tcp,
    /// The default inside a host: shared memory.
    Shm,
    /// Shared memory with all-gather and all-reduce forced through the host's board,
    /// whose rings are made small (64 KiB) so writers wrap and wait for slow readers.
    Board,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// Starts rank `rank` of `n` as a launcher script would: `MIXCCL_RANK`,
/// `MIXCCL_NRANKS`, `MIXCCL_ROOT`, no `--np`.
pub fn manual_rank(
    rank: usize,
    n: usize,
    port: u16,
    timeout_s: u32,
    args: &[&str],
    link: Transport,
) -> Proc {
    let mut cmd = perf(timeout_s);
    if link == Transport::Tcp {
        cmd.env("MIXCCL_SHM_DISABLE", "1");
    }
    if link == Transport::Board {
        cmd.env("MIXCCL_ALGO", "allgather:publish;allreduce:publish")
            .env("MIXCCL_BOARD_BYTES", "64K");
    }
    cmd.args(args)
        .env("MIXCCL_RANK", rank.to_string())
        .env("MIXCCL_NRANKS", n.to_string())
        .env("MIXCCL_ROOT", format!("127.0.0.1:{port}"))
        .env("MIXCCL_JOB_ID", format!("tcp-processes-{port}"));
    Proc::spawn(cmd)
}
