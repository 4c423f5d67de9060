//! Dropping a whole host island and admitting it again through the C ABI
//! (`c/island.c`: `mixcclCommShrinkHosts`, `ncclCommGetUniqueId`, `ncclCommGrow`):
//! four processes, two per host identity (`MIXCCL_HOST_ID`), results checked in C.

mod util;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use util::*;

#[test]
fn a_host_island_is_dropped_and_grown_back() {
    let dir = scratch("island");
    let exe = dir.join("island");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/island.c");
    compile("cc", &[src], &exe, &dir, &["-std=c99", "-pedantic"]);
    let id_file = dir.join("id");
    let cmds = (0..4)
        .map(|r| {
            let mut c = Command::new(&exe);
            base_env(&mut c)
                .env("MIXCCL_TIMEOUT", "20")
                .env(
                    "MIXCCL_HOST_ID",
                    if r < 2 { "island-a" } else { "island-b" },
                )
                .env("TEST_RANK", r.to_string())
                .env("TEST_ID_FILE", &id_file);
            c
        })
        .collect();
    let runs = run_all(cmds, Duration::from_secs(120));
    assert_all_ok("island", &runs);
    for (r, run) in runs.iter().enumerate() {
        assert!(run.output.contains("island OK"), "rank {r}: {}", run.output);
        assert!(
            run.output.contains("island-b admitted again: rank"),
            "rank {r}: {}",
            run.output
        );
    }
    assert!(
        runs[0]
            .output
            .contains("island-b dropped: rank 0 of 2, all-reduce 3"),
        "{}",
        runs[0].output
    );
    let _ = std::fs::remove_dir_all(dir);
}
