//! Every collective with ranks as separate processes, through `mixccl-perf --np`,
//! over TCP loopback (`MIXCCL_SHM_DISABLE=1`; 2, 3 and 4 ranks), over shared memory
//! (the default inside a host; 2, 5 and 8 ranks) and through the host's board (3
//! and 4 ranks), checked through its JSON report (every row present, zero wrong
//! elements out of place and in place), with nothing left in /dev/shm; and a short
//! soak of random checked calls.

mod util;

use mixccl::{DataType, ReduceOp};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use util::processes::{assert_no_new_shm, dev_shm, perf, Proc, Transport};

/// Wall-clock bound on one `--np` run; a run that takes longer is killed and fails.
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn is_reducing(coll: &str) -> bool {
    matches!(coll, "allreduce" | "reduce" | "reducescatter")
}

fn has_root(coll: &str) -> bool {
    matches!(coll, "broadcast" | "reduce")
}

/// Per-rank blocks the size column covers (nccl-tests: all ranks' data for these).
fn blocks(coll: &str, np: usize) -> usize {
    match coll {
        "allgather" | "reducescatter" | "alltoall" => np,
        _ => 1,
    }
}

/// One `mixccl-perf` invocation's size sweep and coverage.
struct Sweep {
    min: usize,
    max: usize,
    factor: usize,
    dtypes: Vec<DataType>,
    /// `None`: `-o all`.
    op: Option<ReduceOp>,
    root: usize,
}

impl Sweep {
    fn args(&self) -> Vec<String> {
        let dtype = if self.dtypes.len() == DataType::ALL.len() {
            "all".to_string()
        } else {
            assert_eq!(self.dtypes.len(), 1);
            self.dtypes[0].name().to_string()
        };
        let op = self.op.map_or("all", |o| o.name()).to_string();
        [
            "-b",
            &self.min.to_string(),
            "-e",
            &self.max.to_string(),
            "-f",
            &self.factor.to_string(),
            "-d",
            &dtype,
            "-o",
            &op,
            "-r",
            &self.root.to_string(),
            "-n",
            "1",
            "-w",
            "0",
            "-c",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `(size, count, type, redop)` of every row the run must print, in order: sizes
    /// from min times factor up to max (0 is followed by 1), each rounded down to
    /// whole per-rank elements, repeats removed; per dtype, per op for reductions.
    fn expected_rows(&self, coll: &str, np: usize) -> Vec<(usize, usize, String, String)> {
        let mut requested = Vec::new();
        let mut s = self.min;
        while s <= self.max {
            requested.push(s);
            s = if s == 0 { 1 } else { s * self.factor };
        }
        let ops: Vec<String> = match (is_reducing(coll), self.op) {
            (false, _) => vec!["none".into()],
            (true, Some(op)) => vec![op.name().into()],
            (true, None) => ReduceOp::ALL.iter().map(|o| o.name().into()).collect(),
        };
        let mut rows = Vec::new();
        for dt in &self.dtypes {
            for op in &ops {
                let unit = dt.size() * blocks(coll, np);
                let mut sizes: Vec<(usize, usize)> = requested
                    .iter()
                    .map(|s| (s / unit * unit, s / unit))
                    .collect();
                sizes.dedup();
                rows.extend(
                    sizes
                        .into_iter()
                        .map(|(size, count)| (size, count, dt.name().to_string(), op.clone())),
                );
            }
        }
        rows
    }
}

static RUNS: AtomicUsize = AtomicUsize::new(0);

/// Runs `mixccl-perf <coll> --np <np> <sweep> -J <file>` and checks the JSON report.
/// Returns the report's rows.
fn run_np(coll: &str, np: usize, sweep: &Sweep, link: Transport) -> Vec<Value> {
    let json: PathBuf = std::env::temp_dir().join(format!(
        "mixccl-tcp-processes-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&json);
    let mut cmd = perf(60);
    if link == Transport::Tcp {
        cmd.env("MIXCCL_SHM_DISABLE", "1");
    }
    if link == Transport::Board {
        cmd.env("MIXCCL_ALGO", "allgather:publish;allreduce:publish")
            .env("MIXCCL_BOARD_BYTES", "64K");
    }
    cmd.arg(coll)
        .args(["--np", &np.to_string()])
        .args(sweep.args())
        .arg("-J")
        .arg(&json);
    let what = format!("{coll} --np {np} {} over {link:?}", sweep.args().join(" "));
    let start = Instant::now();
    let mut p = Proc::spawn(cmd);
    let status = p.wait_until(start + RUN_LIMIT);
    let (stdout, stderr) = (p.stdout(), p.stderr());
    let status = status.unwrap_or_else(|| {
        panic!("{what}: still running after {RUN_LIMIT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    assert!(
        status.success(),
        "{what}: {status}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("# Out of bounds values : 0 OK"),
        "{what}: no OK summary\n{stdout}"
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("{what}: no JSON report at {}: {e}", json.display()));
    let _ = std::fs::remove_file(&json);
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");

    assert_eq!(report["collective"], coll, "{what}");
    assert_eq!(report["nranks"], np, "{what}");
    assert_eq!(report["check"], true, "{what}");
    assert_eq!(report["out_of_bounds"], 0, "{what}");
    // All ranks share this host: the copy bound was measured (docs/algorithms.md).
    if np > 1 {
        let rate = report["copy_rate_gbps"].as_f64().expect("copy rate");
        let bound = report["copy_bound_busbw_gbps"].as_f64().expect("bound");
        assert!(rate > 0.0 && rate.is_finite(), "{what}: copy rate {rate}");
        assert!(
            (bound - 2.0 * rate / np as f64).abs() < 1e-9 * rate,
            "{what}"
        );
    }
    let rows = report["rows"].as_array().expect("rows").clone();
    let expected = sweep.expected_rows(coll, np);
    let got: Vec<(usize, usize, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["size"].as_u64().expect("size") as usize,
                r["count"].as_u64().expect("count") as usize,
                r["type"].as_str().expect("type").to_string(),
                r["redop"].as_str().expect("redop").to_string(),
            )
        })
        .collect();
    assert_eq!(
        got, expected,
        "{what}: rows differ from the requested sweep"
    );
    let root = if has_root(coll) {
        sweep.root as i64
    } else {
        -1
    };
    for r in &rows {
        let row = format!("{what}: row {r}");
        assert_eq!(r["root"], root, "{row}");
        // Checking was on: every phase reports a count of wrong elements, and it is 0.
        assert_eq!(r["out_of_place"]["wrong"], 0, "{row}");
        if coll == "sendrecv" {
            assert!(r["in_place"].is_null(), "{row}");
        } else {
            assert_eq!(r["in_place"]["wrong"], 0, "{row}");
        }
        let t = r["out_of_place"]["time_us"].as_f64().expect("time");
        assert!(t.is_finite() && t >= 0.0, "{row}");
    }
    rows
}

/// Every data type and op over a geometric sweep from 0; every type and op at a
/// per-rank count that is odd for every element size; and a count of 2^20 + 3 f32
/// elements (2^21 + 7 bf16) per rank, float and bfloat16 over every op.
fn check_collective(coll: &str, link: Transport) {
    let nps: &[usize] = match link {
        Transport::Tcp => &[2, 3, 4],
        Transport::Shm => &[2, 5, 8],
        Transport::Board => &[3, 4],
    };
    let shm_before = dev_shm();
    for &np in nps {
        let b = blocks(coll, np);
        run_np(
            coll,
            np,
            &Sweep {
                min: 0,
                max: 256 << 10,
                factor: 8,
                dtypes: DataType::ALL.to_vec(),
                op: None,
                root: 0,
            },
            link,
        );
        // 8255 = 0b10_0000_0011_1111: odd count for 1-, 2-, 4- and 8-byte types (8255,
        // 4127, 2063, 1031 elements per rank), above the direct algorithms' limit.
        let odd = 8255 * b;
        let rows = run_np(
            coll,
            np,
            &Sweep {
                min: odd,
                max: odd,
                factor: 2,
                dtypes: DataType::ALL.to_vec(),
                op: None,
                root: np - 1,
            },
            link,
        );
        assert!(rows
            .iter()
            .any(|r| r["count"] == 1031 && r["type"] == "double"));
        // 4 * (2^20 + 3) + 3 bytes: 2^20 + 3 floats, 2^21 + 7 bfloat16s per rank.
        let large = (4 * ((1 << 20) + 3) + 3) * b;
        for (dtype, op, count) in [
            (DataType::F32, None, (1 << 20) + 3),
            (DataType::BF16, None, (1 << 21) + 7),
        ] {
            let rows = run_np(
                coll,
                np,
                &Sweep {
                    min: large,
                    max: large,
                    factor: 2,
                    dtypes: vec![dtype],
                    op,
                    root: 1,
                },
                link,
            );
            assert!(rows.iter().all(|r| r["count"] == count), "{rows:?}");
        }
    }
    assert_no_new_shm(&shm_before, coll);
}

#[test]
fn allreduce_processes() {
    check_collective("allreduce", Transport::Tcp);
}

#[test]
fn allreduce_processes_shm() {
    check_collective("allreduce", Transport::Shm);
}

#[test]
fn allgather_processes() {
    check_collective("allgather", Transport::Tcp);
}

#[test]
fn allgather_processes_shm() {
    check_collective("allgather", Transport::Shm);
}

/// Every size from 0 bytes (the board is forced even where the planner would pick
/// the direct algorithm), with in place and out of place checked by mixccl-perf.
#[test]
fn allgather_processes_board() {
    check_collective("allgather", Transport::Board);
}

/// The board's all-reduce (ring reduce-scatter, then the board), every size, dtype and
/// op (`Avg` divides before the board), uneven blocks from the odd counts.
#[test]
fn allreduce_processes_board() {
    check_collective("allreduce", Transport::Board);
}

#[test]
fn broadcast_processes() {
    check_collective("broadcast", Transport::Tcp);
}

#[test]
fn broadcast_processes_shm() {
    check_collective("broadcast", Transport::Shm);
}

#[test]
fn reduce_processes() {
    check_collective("reduce", Transport::Tcp);
}

#[test]
fn reduce_processes_shm() {
    check_collective("reduce", Transport::Shm);
}

#[test]
fn reducescatter_processes() {
    check_collective("reducescatter", Transport::Tcp);
}

#[test]
fn reducescatter_processes_shm() {
    check_collective("reducescatter", Transport::Shm);
}

#[test]
fn alltoall_processes() {
    check_collective("alltoall", Transport::Tcp);
}

#[test]
fn alltoall_processes_shm() {
    check_collective("alltoall", Transport::Shm);
}

#[test]
fn sendrecv_processes() {
    check_collective("sendrecv", Transport::Tcp);
}

#[test]
fn sendrecv_processes_shm() {
    check_collective("sendrecv", Transport::Shm);
}

/// A short soak: random collectives, types, ops, sizes, roots and in-place, over
/// 4 processes, every result checked (the full 10 000-call run is in the notes).
#[test]
fn soak_of_random_checked_calls() {
    let out = perf(60)
        .args([
            "soak", "--np", "4", "-n", "200", "-e", "256K", "--seed", "7",
        ])
        .output()
        .expect("run mixccl-perf soak");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("200 random checked calls on 4 ranks"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": 0 wrong elements"), "{text}");
}
