//! `mixccl-sim judge`: the planner against the simulated best on random clusters
//! (`mixccl::sim::judge`), a line per case, the worst cases and the share within 10%.

use mixccl::sim::judge::{cases, judge, Verdict};
use mixccl::sim::{Settings, Shape};
use mixccl::Config;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Why the judge stopped.
pub enum Failure {
    /// Bad flags (exit 2).
    Usage(String),
    /// A case could not be simulated (exit 1).
    Run(String),
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, Failure> {
    v.parse()
        .map_err(|_| Failure::Usage(format!("{flag}: '{v}' is not a number")))
}

fn human(b: usize) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.0}MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0}KiB", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// One line: the case, the pick's ratio, every algorithm's simulated time and the
/// planner's estimate (us).
fn line(v: &Verdict) -> String {
    let c = &v.case;
    // The estimates are per piece; the pieces are those of the simulated calls.
    let pieces = v
        .row
        .results
        .iter()
        .find_map(|(_, r)| r.as_ref().ok().map(|o| o.pieces))
        .unwrap_or(1);
    let times: Vec<String> = v
        .row
        .results
        .iter()
        .map(|(a, r)| {
            let est = v
                .estimates
                .iter()
                .find(|(x, _)| x == a)
                .map_or("-".into(), |(_, e)| {
                    format!("{:.0}", e * 1e6 * pieces as f64)
                });
            match r {
                Ok(o) => format!("{a} {:.0}us est {est}", o.seconds * 1e6),
                Err(_) => format!("{a} skipped est {est}"),
            }
        })
        .collect();
    format!(
        "case {:>4} {:>14} {:>8}: {} {:>5} best {:>5} | {} | {pieces} pieces | {} | cpu {:.2}s",
        c.index,
        c.coll.name(),
        human(c.size),
        v.ratio().map_or("  -  ".into(), |r| format!("{r:.3}x")),
        v.row.planner,
        v.row.best.as_deref().unwrap_or("-"),
        times.join(", "),
        c.cluster.summary(),
        v.cpu
    )
}

/// Runs the judge on `argv` (after `judge`).
pub fn main(argv: &[String]) -> Result<(), Failure> {
    let (mut seed, mut n, mut jobs, mut worst, mut quiet) =
        (1u64, 100usize, 1usize, 10usize, false);
    let mut shape = Shape::default();
    let mut settings = Settings {
        config: Config::from_env().map_err(|e| Failure::Usage(e.to_string()))?,
        ..Settings::default()
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--quiet" {
            quiet = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--seed" => seed = number(flag, v)?,
            "--cases" => n = number(flag, v)?,
            "--jobs" => jobs = number::<usize>(flag, v)?.max(1),
            "--worst" => worst = number(flag, v)?,
            "--max-ranks" => shape.max_ranks = number::<usize>(flag, v)?.max(2),
            "--prune" => {
                let x: f64 = number(flag, v)?;
                settings.prune = (x > 0.0).then_some(x);
            }
            _ => return Err(Failure::Usage(format!("unknown flag '{flag}'"))),
        }
    }
    let all = cases(seed, n, &shape);
    println!(
        "# judge: seed {seed}, {n} cases, at most {} ranks, prune {}",
        shape.max_ranks,
        settings.prune.map_or("off".into(), |x| format!("{x}x"))
    );
    let wall = Instant::now();
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Result<Verdict, String>>>> = Mutex::new(vec![None; all.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.min(all.len()).max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(c) = all.get(i) else { break };
                let v = judge(c, &settings).map_err(|e| {
                    format!("case {i} ({} {}): {e}", c.coll.name(), c.cluster.summary())
                });
                if !quiet {
                    match &v {
                        Ok(v) => println!("{}", line(v)),
                        Err(e) => println!("# {e}"),
                    }
                }
                done.lock().expect("no thread panicked")[i] = Some(v);
            });
        }
    });
    let done = done.into_inner().expect("no thread panicked");
    let mut verdicts = Vec::new();
    for v in done.into_iter().flatten() {
        verdicts.push(v.map_err(Failure::Run)?);
    }
    let ratios: Vec<f64> = verdicts.iter().filter_map(Verdict::ratio).collect();
    let within = ratios.iter().filter(|&&r| r <= 1.1).count();
    let over = ratios.iter().filter(|&&r| r > 1.25).count();
    let most = ratios.iter().copied().fold(1.0, f64::max);
    let cpu: f64 = verdicts.iter().map(|v| v.cpu).sum();
    let mut order: Vec<&Verdict> = verdicts.iter().collect();
    order.sort_by(|a, b| {
        b.ratio()
            .unwrap_or(0.0)
            .total_cmp(&a.ratio().unwrap_or(0.0))
    });
    println!("# worst {} cases:", worst.min(order.len()));
    for v in order.iter().take(worst) {
        println!("{}", line(v));
    }
    println!(
        "# seed {seed}: {within} of {} cases within 10% of the simulated best ({:.1}%), \
         {over} over 1.25x, worst {most:.3}x; {} not judged (pick not simulated); \
         cpu {cpu:.1} s, wall {:.1} s",
        ratios.len(),
        100.0 * within as f64 / ratios.len().max(1) as f64,
        verdicts.len() - ratios.len(),
        wall.elapsed().as_secs_f64()
    );
    Ok(())
}
