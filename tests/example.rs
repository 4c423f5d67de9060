//! Runs `examples/allreduce.rs` as a user would: threads on loopback, and as separate
//! processes joined through MIXCCL_ROOT.

use std::path::PathBuf;
use std::process::Command;

/// The example binary; `cargo test` builds examples, `cargo test --test example` does not.
fn example() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    // target/<profile>/deps/example-<hash> -> target/<profile>/examples/allreduce
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("allreduce");
    BUILT.call_once(|| {
        if !path.exists() {
            let ok = Command::new(env!("CARGO"))
                .args(["build", "--example", "allreduce"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .expect("run cargo build --example allreduce");
            assert!(ok.success(), "building the example failed");
        }
    });
    path
}

#[test]
fn example_runs_local_ranks_as_threads() {
    let out = Command::new(example())
        .arg("3")
        .env("MIXCCL_TIMEOUT", "30")
        .output()
        .expect("run example");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Rank r holds sum_k (k + i) = 3i + 3 at index i.
    assert!(
        text.contains("rank 2 of 3: [3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]"),
        "{text}"
    );
}

#[test]
fn example_joins_from_the_environment() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let children: Vec<_> = (0..2)
        .map(|r| {
            Command::new(example())
                .env("MIXCCL_RANK", r.to_string())
                .env("MIXCCL_NRANKS", "2")
                .env("MIXCCL_ROOT", format!("127.0.0.1:{port}"))
                .env("MIXCCL_TIMEOUT", "30")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("spawn example")
        })
        .collect();
    for (r, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("wait for example");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "rank {r}: {text}");
        // Two ranks: index i holds 2i + 1.
        assert!(
            text.contains(&format!(
                "rank {r} of 2: [1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]"
            )),
            "{text}"
        );
    }
}
