//! A job whose ranks the test starts one by one, as a launcher script would
//! (`MIXCCL_RANK`, `MIXCCL_NRANKS`, `MIXCCL_ROOT`, no `--np`): every rank joins,
//! rank 0 alone prints the checked table.

mod util;

use std::time::{Duration, Instant};
use util::processes::{free_port, manual_rank, Proc, Transport};

#[test]
fn ranks_started_without_np() {
    let n = 3;
    let port = free_port();
    let args = [
        "allreduce",
        "-b",
        "0",
        "-e",
        "64K",
        "-f",
        "4",
        "-d",
        "int32",
        "-o",
        "all",
        "-n",
        "2",
        "-w",
        "1",
    ];
    let mut ranks: Vec<Proc> = (0..n)
        .map(|r| manual_rank(r, n, port, 30, &args, Transport::Tcp))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (r, p) in ranks.iter_mut().enumerate() {
        let status = p.wait_until(deadline);
        assert!(
            status.is_some_and(|s| s.success()),
            "rank {r}: {status:?}\nstdout:\n{}\nstderr:\n{}",
            p.stdout(),
            p.stderr()
        );
    }
    let out = ranks[0].stdout();
    assert!(out.contains("# mixccl-perf allreduce: nranks 3,"), "{out}");
    // 0, 1, 4, ..., 64K requested; 0 and 1 byte both round to 0 int32s: 9 sizes x 5 ops.
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("int32"))
        .collect();
    assert_eq!(rows.len(), 9 * 5, "{out}");
    assert!(
        rows.iter()
            .any(|l| l.split_whitespace().next() == Some("65536")),
        "{out}"
    );
    assert!(out.contains("# Out of bounds values : 0 OK"), "{out}");
    for (r, p) in ranks.iter().enumerate().skip(1) {
        assert!(
            !p.stdout().contains("Out of bounds"),
            "rank {r} printed the table too"
        );
    }
}
