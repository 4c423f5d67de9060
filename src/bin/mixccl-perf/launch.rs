//! `--np N`: this process becomes a local launcher. It starts the root rendezvous,
//! runs N copies of itself as ranks 0..N with the `MIXCCL_*` variables that
//! `Communicator::from_env` reads, and reports the first rank that fails.
//! It never joins the communicator itself.

use mixccl::UniqueId;
use std::process::{Child, Command, ExitCode, ExitStatus};
use std::time::{Duration, Instant};

/// How long the other ranks may take to finish on their own after one fails: long
/// enough for survivors to report the lost peer (and for rank 0 to finish printing
/// when a rank exits 1 over wrong results), short enough not to wait for a hang.
const GRACE: Duration = Duration::from_secs(3);

/// Interval between polls of the children.
const POLL: Duration = Duration::from_millis(20);

/// The environment of rank `rank` of `np` joining the communicator `id_hex`.
pub fn child_env(rank: usize, np: usize, id_hex: &str) -> Vec<(&'static str, String)> {
    vec![
        ("MIXCCL_RANK", rank.to_string()),
        ("MIXCCL_NRANKS", np.to_string()),
        ("MIXCCL_LOCAL_RANK", rank.to_string()),
        ("MIXCCL_LOCAL_SIZE", np.to_string()),
        ("MIXCCL_UNIQUE_ID", id_hex.to_string()),
    ]
}

/// Makes the child die with the launcher, so killing the launcher (Ctrl-C from a
/// script, a CI timeout) does not leave ranks running until their own timeout.
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec the closure calls only async-signal-safe
    // functions (prctl, getppid, _exit) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The launcher may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}

/// The CPUs this process may run on (empty if unknown).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Makes the child run on `cpus` only, like `mpirun --bind-to core` (one core per
/// rank when ranks outnumber cores) or `--map-by slot:PE=k` (a block of k cores per
/// rank otherwise, room for a rank's helper threads: device staging, runtime
/// threads). With more ranks than cores, block placement keeps ring neighbours on
/// one core, where a rank that waits yields straight to the one it waits for.
#[cfg(target_os = "linux")]
fn pin_to(cmd: &mut Command, cpus: &[usize]) {
    use std::os::unix::process::CommandExt;
    // SAFETY: cpu_set_t is plain data, zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: `cpu` comes from sched_getaffinity, so it is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: between fork and exec the closure only calls sched_setaffinity on a
    // copied cpu_set_t, which is async-signal-safe; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cmd: &mut Command, _cpus: &[usize]) {}

fn kill_all(children: &mut [Option<Child>]) -> Vec<usize> {
    let mut killed = Vec::new();
    for (rank, slot) in children.iter_mut().enumerate() {
        if let Some(mut child) = slot.take() {
            let _ = child.kill();
            let _ = child.wait();
            killed.push(rank);
        }
    }
    killed
}

/// Runs `np` ranks of this program with `child_args`; the process's exit code.
pub fn launch(np: usize, child_args: &[String], bind: bool) -> ExitCode {
    match launch_ranks(np, child_args, bind) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(msg) => {
            eprintln!("mixccl-perf: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Ok(true) when every rank exited 0.
fn launch_ranks(np: usize, child_args: &[String], bind: bool) -> Result<bool, String> {
    let cpus = if bind { allowed_cpus() } else { Vec::new() };
    let addr = "127.0.0.1:0".parse().expect("a literal socket address");
    let id = UniqueId::bind(addr).map_err(|e| format!("cannot start the rendezvous: {e}"))?;
    // Display is the hex form `MIXCCL_UNIQUE_ID` takes.
    let id_hex = id.to_string();
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;

    let mut children: Vec<Option<Child>> = Vec::with_capacity(np);
    for rank in 0..np {
        let mut cmd = Command::new(&exe);
        cmd.args(child_args)
            .envs(child_env(rank, np, &id_hex))
            // A root address from the caller's environment would compete with the id.
            .env_remove("MIXCCL_ROOT");
        die_with_parent(&mut cmd);
        if !cpus.is_empty() {
            let first = rank * cpus.len() / np;
            let end = ((rank + 1) * cpus.len() / np).max(first + 1);
            pin_to(&mut cmd, &cpus[first..end]);
        }
        match cmd.spawn() {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                kill_all(&mut children);
                return Err(format!("cannot start rank {rank} ({}): {e}", exe.display()));
            }
        }
    }

    let mut failed: Vec<(usize, ExitStatus)> = Vec::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let mut running = 0;
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    *slot = None;
                    if !status.success() {
                        eprintln!("mixccl-perf: rank {rank} exited with {status}");
                        failed.push((rank, status));
                        deadline.get_or_insert_with(|| Instant::now() + GRACE);
                    }
                }
                Ok(None) => running += 1,
                Err(e) => {
                    kill_all(&mut children);
                    return Err(format!("cannot wait for rank {rank}: {e}"));
                }
            }
        }
        if running == 0 {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let killed = kill_all(&mut children);
            eprintln!(
                "mixccl-perf: killed rank(s) {killed:?}, still running {}s after rank {} failed",
                GRACE.as_secs(),
                failed[0].0
            );
            break;
        }
        std::thread::sleep(POLL);
    }
    Ok(failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_get_rank_size_and_id() {
        let env = child_env(2, 4, "ab");
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MIXCCL_RANK"), Some("2"));
        assert_eq!(get("MIXCCL_NRANKS"), Some("4"));
        assert_eq!(get("MIXCCL_LOCAL_RANK"), Some("2"));
        assert_eq!(get("MIXCCL_LOCAL_SIZE"), Some("4"));
        assert_eq!(get("MIXCCL_UNIQUE_ID"), Some("ab"));
    }
}
