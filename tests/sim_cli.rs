//! mixccl-sim from the command line: a table with JSON, the note under an extended
//! result, the planner-only sweep, and usage errors.

use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mixccl-sim"))
}

/// Runs `cmd`, which must succeed (its stderr otherwise), and returns its stdout.
fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("mixccl-sim runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_small_cluster_gives_a_row_per_size_with_json() {
    let json = std::env::temp_dir().join(format!("mixccl-sim-cli-{}.json", std::process::id()));
    let table = stdout_of(
        sim()
            .args(["allreduce", "--hosts", "2", "--ranks-per-host", "2"])
            .args([
                "--intra",
                "shm:5,32",
                "--inter",
                "tcp:40,10",
                "-b",
                "8",
                "-e",
                "1M",
                "-f",
                "1024",
            ])
            .arg("-J")
            .arg(&json),
    );
    assert!(
        table.contains("--- ring ---") && table.contains("planner"),
        "{table}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON written")).unwrap();
    let _ = std::fs::remove_file(&json);
    let rows = rows.as_array().expect("rows");
    // 8 B, then 8 KiB; 8 MiB is past -e.
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["nranks"], 4);
        assert!(r["best"].is_string() && r["planner"].is_string(), "{r}");
        let ring = &r["results"][0];
        assert_eq!(ring[0], "ring");
        assert!(ring[1]["Ok"]["seconds"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn an_extended_hierarchical_result_says_so() {
    // 128 hosts of 2 ranks, at most 128 ranks simulated: 16, 32 and 64 hosts run,
    // 64 added.
    let table = stdout_of(
        sim()
            .env("MIXCCL_CHUNK_SIZE", "32K")
            .args(["allreduce", "--hosts", "128", "--ranks-per-host", "2"])
            .args(["--intra", "shm:3,400", "--inter", "rdma:4,400"])
            .args(["-b", "16M", "-e", "16M", "--algos", "hier"])
            .args(["--sample-ranks", "128"]),
    );
    assert!(
        table.contains("hier: approximate: simulated on 128 ranks")
            && table.contains("64 hosts added"),
        "{table}"
    );
}

#[test]
fn plan_only_prints_the_planners_choice_per_rank_count() {
    let text = stdout_of(
        sim()
            .args([
                "scale",
                "allreduce",
                "--ranks-per-host",
                "8",
                "--min-ranks",
                "16",
            ])
            .args(["--max-ranks", "64", "--sizes", "8,1M", "--plan-only"]),
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("16 8B=") && lines[0].contains(" 1M="),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        vec!["allreduce", "--bogus", "1"],
        vec!["nosuch"],
        vec!["allreduce", "--inter", "rdma:x"],
    ] {
        let out = sim().args(&args).output().expect("mixccl-sim runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
