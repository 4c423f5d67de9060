//! `c/single_process.c`: ranks as threads of one process (ncclCommInitAll), bad
//! arguments and their codes, error strings, configs, memory, split, one thread
//! driving every rank through a group, and ncclCommAbort ending a blocked call.

mod util;

use std::path::PathBuf;
use std::process::Command;
use util::*;

#[test]
fn single_process_api() {
    let dir = scratch("single");
    let exe = dir.join("single_process");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/single_process.c");
    compile("cc", &[src], &exe, &dir, &["-std=c99", "-pedantic"]);
    let mut c = Command::new(&exe);
    base_env(&mut c);
    let runs = run_all(vec![c], DEADLINE);
    assert_all_ok("single_process", &runs);
    assert!(
        runs[0].output.contains("single process OK"),
        "{}",
        runs[0].output
    );
    eprint!("{}", runs[0].output);
    let _ = std::fs::remove_dir_all(dir);
}
