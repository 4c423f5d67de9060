//! `--recover`: kill a rank, shrink, start a replacement, grow back, go on.
//!
//! `mixccl-perf --recover [--np N] [--reps R] [--seed S] [-n ITERS]` is a launcher:
//! per repetition it starts N ranks (`--recover-member DIR`) that run checked
//! all-reduces until one fails, waits until every rank is up, SIGKILLs a random rank
//! after a random delay (0 to 400 ms) and at once starts a replacement
//! (`--recover-join DIR RANK N`). The survivors name the lost rank, shrink, check an
//! all-reduce, and rank 0 of the shrunk communicator writes a grow id to DIR (the
//! out-of-band channel a job's own launcher would use); every survivor and the
//! replacement grow to N and run ITERS more checked all-reduces. Each phase's time
//! is printed, and at the end the median and maximum time from the kill to a whole
//! communicator again. Public API only.

use crate::launch::{child_env, die_with_parent};
use crate::recover::{lost_rank, unix_ns};
use mixccl::{Communicator, Config, ReduceOp, UniqueId};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

/// Elements of every checked all-reduce.
const COUNT: usize = 1 << 16;
/// How long any rank waits for a file another process writes.
const FILE_WAIT: Duration = Duration::from_secs(120);

/// What `--recover` was given.
struct Plan {
    np: usize,
    reps: usize,
    seed: u64,
    iters: usize,
}

/// Runs the `--recover` role `argv` names; None when `argv` has no `--recover*` flag.
pub fn main(argv: &[String]) -> Option<ExitCode> {
    let pos = argv.iter().position(|a| a.starts_with("--recover"))?;
    let code = match argv[pos].as_str() {
        "--recover" => parse(argv).and_then(|p| launch(&p)),
        "--recover-member" => match argv.get(pos + 1) {
            Some(dir) => member(Path::new(dir), iters_of(argv)),
            None => Err("--recover-member needs a directory".into()),
        },
        "--recover-join" => {
            let get = |i: usize| argv.get(pos + i).cloned().unwrap_or_default();
            match (get(2).parse::<usize>(), get(3).parse::<usize>()) {
                (Ok(rank), Ok(n)) => joiner(Path::new(&get(1)), rank, n, iters_of(argv)),
                _ => Err("--recover-join needs DIR RANK NRANKS".into()),
            }
        }
        other => Err(format!("unknown flag {other}")),
    };
    Some(match code {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mixccl-perf: {e}");
            ExitCode::from(1)
        }
    })
}

fn iters_of(argv: &[String]) -> usize {
    flag(argv, "-n").and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let i = argv.iter().position(|a| a == name)?;
    argv.get(i + 1).map(String::as_str)
}

fn parse(argv: &[String]) -> Result<Plan, String> {
    let num = |name: &str, default: u64| -> Result<u64, String> {
        flag(argv, name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("{name} {v:?}: expected a number"))
        })
    };
    let plan = Plan {
        np: num("--np", 4)? as usize,
        reps: num("--reps", 1)? as usize,
        seed: num("--seed", 1)?,
        iters: num("-n", 20)? as usize,
    };
    if plan.np < 2 || plan.reps < 1 {
        return Err("--recover needs --np 2 or more and --reps 1 or more".into());
    }
    Ok(plan)
}

/// A small xorshift, so a seed gives the same kill times and victims.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn launch(plan: &Plan) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my executable: {e}"))?;
    let mut rng = plan.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut wholes = Vec::new();
    for rep in 0..plan.reps {
        let delay = Duration::from_millis(next(&mut rng) % 400);
        let victim = (next(&mut rng) % plan.np as u64) as usize;
        let dir = std::env::temp_dir().join(format!("mixccl-recover-{}-{rep}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let result = one_rep(&exe, plan, &dir, victim, delay);
        let _ = std::fs::remove_dir_all(&dir);
        let (whole, killed_at) = result.map_err(|e| format!("repetition {rep}: {e}"))?;
        println!(
            "# rep {rep}: killed rank {victim} after {} ms of all-reduces (at {killed_at}); \
             whole again ({} ranks) {:.1} ms after the kill",
            delay.as_millis(),
            plan.np,
            whole.as_secs_f64() * 1e3
        );
        wholes.push(whole);
    }
    wholes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "# kill to whole over {} repetition(s): median {:.1} ms, max {:.1} ms",
        wholes.len(),
        ms(wholes[wholes.len() / 2]),
        ms(*wholes.last().expect("at least one repetition"))
    );
    Ok(())
}

fn spawn(exe: &Path, args: &[String], env: &[(&str, String)]) -> Result<Child, String> {
    let mut cmd = Command::new(exe);
    cmd.args(args).envs(env.iter().map(|(k, v)| (*k, v)));
    cmd.env_remove("MIXCCL_ROOT");
    die_with_parent(&mut cmd);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// One kill, shrink and grow: the time from the kill to the grown communicator, and
/// the kill's Unix time in ns (to compare with the ranks' "lost" lines).
fn one_rep(
    exe: &Path,
    plan: &Plan,
    dir: &Path,
    victim: usize,
    delay: Duration,
) -> Result<(Duration, u128), String> {
    let id = UniqueId::bind("127.0.0.1:0".parse().expect("literal"))
        .map_err(|e| format!("cannot start the rendezvous: {e}"))?;
    let hex = id.to_string();
    let d = dir.to_string_lossy().into_owned();
    let iters = plan.iters.to_string();
    let mut children = Vec::new();
    for rank in 0..plan.np {
        let args = [
            "--recover-member".into(),
            d.clone(),
            "-n".into(),
            iters.clone(),
        ];
        children.push(spawn(exe, &args, &child_env(rank, plan.np, &hex))?);
    }
    let kill_all = |children: &mut Vec<Child>| {
        for c in children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    for rank in 0..plan.np {
        if let Err(e) = wait_file(&dir.join(format!("ready.{rank}"))) {
            kill_all(&mut children);
            return Err(e);
        }
    }
    std::thread::sleep(delay);
    let _ = children[victim].kill(); // SIGKILL
    let killed_at = unix_ns();
    let _ = children[victim].wait();
    let args = [
        "--recover-join".into(),
        d.clone(),
        (plan.np - 1).to_string(),
        plan.np.to_string(),
        "-n".into(),
        iters,
    ];
    children.push(spawn(exe, &args, &[])?);
    let deadline = Instant::now() + FILE_WAIT;
    let mut failed = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        if i == victim {
            continue;
        }
        loop {
            match c.try_wait() {
                Ok(Some(s)) if s.success() => break,
                Ok(Some(s)) => {
                    failed.push(format!("process {i} exited with {s}"));
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    failed.push(format!("process {i} still running after {FILE_WAIT:?}"));
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
            }
        }
    }
    if !failed.is_empty() {
        kill_all(&mut children);
        return Err(failed.join("; "));
    }
    let whole: u128 = read_file(&dir.join("whole"))?
        .trim()
        .parse()
        .map_err(|e| format!("bad time in {}/whole: {e}", dir.display()))?;
    Ok((
        Duration::from_nanos(whole.saturating_sub(killed_at) as u64),
        killed_at,
    ))
}

/// Waits (bounded) until `path` exists.
fn wait_file(path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + FILE_WAIT;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {FILE_WAIT:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, String> {
    wait_file(path)?;
    std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Writes `text` to `path` whole (a rename), so a reader never sees half of it.
fn publish(path: PathBuf, text: &str) -> Result<(), String> {
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// One checked all-reduce; `step` varies the values from call to call.
fn checked(comm: &mut Communicator, step: usize) -> Result<(), String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let send: Vec<f32> = (0..COUNT)
        .map(|i| ((i % 251) * (r + 1) + step % 7) as f32)
        .collect();
    let mut recv = vec![0f32; COUNT];
    comm.all_reduce(&send, &mut recv, ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    // Small integers: every partial sum is exact in f32.
    let wrong = (0..COUNT)
        .filter(|&i| recv[i] != ((i % 251) * n * (n + 1) / 2 + n * (step % 7)) as f32)
        .count();
    if wrong > 0 {
        return Err(format!(
            "rank {r} of {n}: {wrong} wrong elements in all-reduce {step}"
        ));
    }
    Ok(())
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// A member: checked all-reduces until a rank is lost, then shrink, grow, go on.
fn member(dir: &Path, iters: usize) -> Result<(), String> {
    let mut comm = Communicator::from_env().map_err(|e| format!("cannot join: {e}"))?;
    let (rank, n) = (comm.rank(), comm.nranks());
    publish(dir.join(format!("ready.{rank}")), "")?;
    let started = Instant::now();
    let mut step = 0;
    let err = loop {
        if let Err(e) = checked(&mut comm, step) {
            match comm.error() {
                Some(e) => break e.clone(),
                None => return Err(e),
            }
        }
        step += 1;
        if started.elapsed() > FILE_WAIT {
            return Err(format!(
                "rank {rank}: no rank was lost within {FILE_WAIT:?}"
            ));
        }
    };
    let lost = lost_rank(&err).ok_or_else(|| format!("rank {rank}: {err}"))?;
    println!(
        "# rank {rank}: lost rank {lost} at {} after {step} checked all-reduces",
        unix_ns()
    );
    let t = Instant::now();
    let mut small = comm
        .shrink(&[lost])
        .map_err(|e| format!("rank {rank}: shrink: {e}"))?;
    checked(&mut small, 0)?;
    let shrunk = ms(t);
    if small.rank() == 0 {
        let id = small.grow_id().map_err(|e| format!("grow id: {e}"))?;
        publish(dir.join("grow.id"), &id.to_string())?;
    }
    let id: UniqueId = read_file(&dir.join("grow.id"))?
        .parse()
        .map_err(|e| format!("grow id: {e}"))?;
    let t = Instant::now();
    let mut big = small
        .grow(n, &id)
        .map_err(|e| format!("rank {rank}: grow: {e}"))?;
    let grew = ms(t);
    if big.rank() == 0 {
        publish(dir.join("whole"), &unix_ns().to_string())?;
    }
    drop(small);
    for k in 0..iters {
        checked(&mut big, k)?;
    }
    println!(
        "# rank {rank}: shrunk to {} ranks in {shrunk:.1} ms (checked), grew to {n} as rank {} \
         in {grew:.1} ms, {iters} checked all-reduces after",
        n - 1,
        big.rank()
    );
    Ok(())
}

/// The replacement: waits for the grow id, joins as `rank` of `n`, goes on.
fn joiner(dir: &Path, rank: usize, n: usize, iters: usize) -> Result<(), String> {
    let t = Instant::now();
    let id: UniqueId = read_file(&dir.join("grow.id"))?
        .parse()
        .map_err(|e| format!("grow id: {e}"))?;
    let waited = ms(t);
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut big = Communicator::join_grown(rank, n, &id, config)
        .map_err(|e| format!("replacement rank {rank}: {e}"))?;
    let joined = ms(t);
    for k in 0..iters {
        checked(&mut big, k)?;
    }
    println!(
        "# replacement: waited {waited:.1} ms for the grow id, joined as rank {rank} of {n} in \
         {joined:.1} ms, {iters} checked all-reduces after"
    );
    Ok(())
}
