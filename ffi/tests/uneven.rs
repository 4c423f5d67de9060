//! `c/uneven.c`: mixcclAllGatherV, mixcclReduceScatterV, mixcclAlltoAllV, the fp8
//! types and mixcclSplitByWeight through the C ABI, ranks as threads of one process.

mod util;

use std::path::PathBuf;
use std::process::Command;
use util::*;

#[test]
fn uneven_collectives_and_fp8_through_the_c_abi() {
    let dir = scratch("uneven");
    let exe = dir.join("uneven");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/c/uneven.c");
    compile("cc", &[src], &exe, &dir, &["-std=c99", "-pedantic"]);
    let mut c = Command::new(&exe);
    base_env(&mut c);
    let runs = run_all(vec![c], DEADLINE);
    assert_all_ok("uneven", &runs);
    assert!(runs[0].output.contains("uneven OK"), "{}", runs[0].output);
    let _ = std::fs::remove_dir_all(dir);
}
