//! Islands over stub vendor collective libraries: ranks are processes of this test
//! binary (the ignored test `island_rank` is each rank's body), on stub CUDA and ACL
//! runtimes with a stub NCCL and HCCL (`tests/stubs/nccl_stub.c`, `hccl_stub.c`)
//! that run the collectives across the island's processes over shared memory and
//! count their calls.
//!
//! - two islands of different vendors and a host-memory rank in one communicator:
//!   every island collective x dtype x op, in place and out of place, on device and
//!   host buffers, checked element by element against `mixccl::verify`; the stub
//!   libraries' counts show the island phases ran in them;
//! - one island spanning the communicator (the native call alone);
//! - a missing, a broken and a mixccl-made library: no island, INFO says why, results right;
//! - an island member that dies: `PeerLost` on every survivor, native communicator aborted;
//! - the stub libraries queue their collectives on the caller's stream, as the real
//!   ones do (`tests/stubs/ccl_order_check.c`).

mod util;

use mixccl::device::{DeviceMemory, Vendor};
use mixccl::{verify, Collective, Communicator, Element, Error, MemRef, ReduceOp};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use util::{build_stub, expected_vec, fail, processes::free_port};

/// The stub libraries, built once per test process.
struct Stubs {
    cuda: PathBuf,
    acl: PathBuf,
    nccl: PathBuf,
    hccl: PathBuf,
    fake_nccl: PathBuf,
}

fn stubs() -> &'static Stubs {
    static STUBS: std::sync::OnceLock<Stubs> = std::sync::OnceLock::new();
    STUBS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("island-stubs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the stub directory");
        Stubs {
            cuda: build_stub(&dir, "cuda", "", &[]),
            acl: build_stub(&dir, "acl", "", &[]),
            nccl: build_stub(&dir, "nccl", "", &[]),
            hccl: build_stub(&dir, "hccl", "", &[]),
            fake_nccl: build_stub(&dir, "nccl", "_mixccl", &["-DPRETEND_MIXCCL"]),
        }
    })
}

/// What a rank runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Cuda,
    Acl,
    Host,
}

/// Starts rank `rank` of `sides.len()` as a process of this binary, in `mode`.
fn spawn(sides: &[Side], rank: usize, port: u16, mode: &str, nccl: &Path) -> std::process::Child {
    let s = stubs();
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("MIXCCL_") || k.to_string_lossy() == "STUB_FAIL" {
            cmd.env_remove(k);
        }
    }
    let devices = match sides[rank] {
        Side::Cuda => "cuda",
        Side::Acl => "acl",
        Side::Host => "none",
    };
    cmd.args([
        "--ignored",
        "--exact",
        "island_rank",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("ISLAND_MODE", mode)
    .env("MIXCCL_RANK", rank.to_string())
    .env("MIXCCL_NRANKS", sides.len().to_string())
    .env("MIXCCL_ROOT", format!("127.0.0.1:{port}"))
    .env("MIXCCL_JOB_ID", format!("islands-{port}"))
    .env("MIXCCL_TIMEOUT", "60")
    .env("MIXCCL_DEBUG", "INFO")
    .env("MIXCCL_DEVICES", devices)
    .env("MIXCCL_CUDA_LIB", &s.cuda)
    .env("MIXCCL_ACL_LIB", &s.acl)
    .env("MIXCCL_NCCL_LIB", nccl)
    .env("MIXCCL_HCCL_LIB", &s.hccl)
    .env("STUB_CCL_TIMEOUT_S", "60")
    .env("MIXCCL_ISLANDS", if mode == "off" { "0" } else { "1" })
    .env(
        "MIXCCL_ISLAND_MIN_RANKS",
        if mode == "lone" { "1" } else { "2" },
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd.spawn().expect("start a rank")
}

/// Runs every rank of `sides` in `mode` and returns each one's (success, stdout, stderr).
fn run_ranks(sides: &[Side], mode: &str, nccl: &Path) -> Vec<(bool, String, String)> {
    let port = free_port();
    let children: Vec<_> = (0..sides.len())
        .map(|r| spawn(sides, r, port, mode, nccl))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    children
        .into_iter()
        .enumerate()
        .map(|(r, mut c)| {
            while c.try_wait().expect("try_wait").is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = c.wait_with_output().expect("rank output");
            if let Ok(d) = std::env::var("ISLAND_DUMP") {
                let _ = std::fs::write(format!("{d}/rank{r}.out"), &out.stdout);
                let _ = std::fs::write(format!("{d}/rank{r}.err"), &out.stderr);
            }
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

/// The value of `name=` on the rank's `COUNTS` line.
fn count(out: &str, name: &str) -> i64 {
    let line = out
        .lines()
        .find_map(|l| l.find("COUNTS").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no COUNTS line in {out}"));
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn assert_all_ok(results: &[(bool, String, String)]) {
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let failed: Vec<String> = results
        .iter()
        .enumerate()
        .filter(|(_, (ok, out, _))| !*ok || !out.contains("RANK DONE"))
        .map(|(r, (_, out, err))| {
            format!(
                "rank {r} failed\nstdout:\n{}\nstderr:\n{}",
                tail(out),
                tail(err)
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

#[test]
fn two_vendor_islands_and_a_host_rank() {
    use Side::*;
    let sides = [Cuda, Acl, Host, Cuda, Acl];
    let results = run_ranks(&sides, "full", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, err)) in results.iter().enumerate() {
        assert!(
            out.contains("island: nccl over ranks [0, 3]")
                && out.contains("island: hccl over ranks [1, 4]")
                && out.contains("outside islands: ranks [2]")
                && out.contains("outside islands: rank 2: no device runtime"),
            "rank {r} describes other islands:\n{out}"
        );
        if sides[r] == Host {
            assert!(
                err.contains("left out: no device runtime loaded"),
                "rank {r}:\n{err}"
            );
            continue;
        }
        // Every island collective ran in the native library: all-reduce (also for
        // reduce-scatter), all-gather, and broadcast (the last phase of each).
        for name in ["all_reduce", "all_gather", "broadcast"] {
            assert!(count(out, name) > 0, "rank {r}: no native {name}:\n{out}");
        }
        // Native all-reduces: 2 placements x 2 counts x 10 types x 2 (in place or
        // not) x 4 ops (Avg stays with mixccl) x 2 (all-reduce, reduce-scatter).
        assert_eq!(count(out, "all_reduce"), 640, "rank {r}:\n{out}");
        assert_eq!(count(out, "init"), 1, "rank {r}: one native communicator");
        assert_eq!(count(out, "abort"), 0, "rank {r}: nothing aborted");
    }
}

#[test]
fn equal_islands_all_reduce_in_shards() {
    use Side::*;
    let sides = [Cuda, Acl, Acl, Cuda];
    let results = run_ranks(&sides, "full", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, _)) in results.iter().enumerate() {
        assert!(
            out.contains("island: nccl over ranks [0, 3]")
                && out.contains("island: hccl over ranks [1, 2]"),
            "rank {r}:\n{out}"
        );
        // All-reduce is the shard form: per call (2 placements x 10 types x 2 x 4
        // ops = 160 per count), count 37 is 18 elements a member (one native
        // reduce-scatter and all-gather) and a tail of 1 (a native all-reduce, then
        // broadcast); count 1 is the tail alone. Besides: the all-gathers of the
        // all-gather calls (2 x 2 x 10 x 2), and reduce-scatter calls (leader form)
        // use the native all-reduce (320).
        assert_eq!(count(out, "reduce_scatter"), 160, "rank {r}:\n{out}");
        assert_eq!(count(out, "all_gather"), 160 + 80, "rank {r}:\n{out}");
        assert_eq!(count(out, "all_reduce"), 320 + 2 * 160, "rank {r}:\n{out}");
    }
}

#[test]
fn one_island_spanning_the_communicator() {
    let sides = [Side::Cuda, Side::Cuda, Side::Cuda];
    let results = run_ranks(&sides, "full", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, _)) in results.iter().enumerate() {
        assert!(
            out.contains("island: nccl over ranks [0, 1, 2]"),
            "rank {r}:\n{out}"
        );
        // Without other groups, reduce-scatter and all-gather are the native calls.
        for name in ["all_reduce", "reduce_scatter", "all_gather", "broadcast"] {
            assert!(count(out, name) > 0, "rank {r}: no native {name}:\n{out}");
        }
    }
}

#[test]
fn lone_ranks_use_their_library_when_allowed() {
    // MIXCCL_ISLAND_MIN_RANKS=1 (how the real NCCL is exercised on a one-GPU machine):
    // a rank alone with its vendor is an island of one; two equal islands all-reduce
    // in shards, so every phase inside an island is a native call.
    let sides = [Side::Cuda, Side::Acl];
    let results = run_ranks(&sides, "lone", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, _)) in results.iter().enumerate() {
        assert!(
            out.contains("island: nccl over ranks [0]")
                && out.contains("island: hccl over ranks [1]"),
            "rank {r}:\n{out}"
        );
        for name in ["reduce_scatter", "all_gather", "broadcast"] {
            assert!(count(out, name) > 0, "rank {r}: no native {name}:\n{out}");
        }
        assert_eq!(count(out, "init"), 1, "rank {r}: one native communicator");
    }
    // The default (2) leaves a lone rank out, saying why.
    let results = run_ranks(&sides, "quick", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, _)) in results.iter().enumerate() {
        assert!(out.contains("islands: none formed"), "rank {r}:\n{out}");
        assert_eq!(count(out, "init"), 0, "rank {r}: no native communicator");
    }
}

#[test]
fn unusable_libraries_form_no_island() {
    let s = stubs();
    let cases: [(&Path, &str); 3] = [
        (Path::new("/nonexistent/libnccl.so.2"), "library not found"),
        (&s.cuda, "symbol ncclGetUniqueId missing"),
        (&s.fake_nccl, "is mixccl itself"),
    ];
    for (lib, why) in cases {
        let sides = [Side::Cuda, Side::Cuda, Side::Host];
        let results = run_ranks(&sides, "quick", lib);
        assert_all_ok(&results);
        for (r, (_, out, err)) in results.iter().enumerate() {
            assert!(
                !out.contains("island:"),
                "rank {r} formed an island with {lib:?}:\n{out}"
            );
            assert!(
                out.contains("islands: none formed")
                    && out.contains("outside islands: rank 0: its nccl library could not be used")
                    && out.contains("outside islands: rank 2: no device runtime"),
                "rank {r} does not describe the ranks left out:\n{out}"
            );
            if sides[r] == Side::Cuda {
                assert!(
                    err.contains("left out") && err.contains(why),
                    "rank {r} does not say why ({why}) with {lib:?}:\n{err}"
                );
            }
        }
    }
}

#[test]
fn islands_off_keeps_the_ordinary_path() {
    let sides = [Side::Cuda, Side::Cuda, Side::Host];
    let results = run_ranks(&sides, "off", &stubs().nccl);
    assert_all_ok(&results);
    for (r, (_, out, _)) in results.iter().enumerate() {
        assert!(
            !out.contains("island:") && !out.contains("islands:"),
            "rank {r} describes islands though they are off:\n{out}"
        );
        if sides[r] == Side::Cuda {
            assert_eq!(
                count(out, "init"),
                0,
                "rank {r} made a native communicator:\n{out}"
            );
        }
    }
}

#[test]
fn dead_island_member_is_peer_lost_everywhere() {
    use Side::*;
    let sides = [Cuda, Cuda, Host];
    let results = run_ranks(&sides, "die", &stubs().nccl);
    for (r, (_, out, err)) in results.iter().enumerate() {
        if r == 1 {
            continue; // the rank that died
        }
        assert!(
            out.contains("FAILED PeerLost"),
            "rank {r} did not see a lost peer\nstdout:\n{out}\nstderr:\n{err}"
        );
    }
    // The survivor in the island aborted its native communicator.
    assert!(
        count(&results[0].1, "abort") >= 1,
        "rank 0 did not abort its native communicator:\n{}",
        results[0].1
    );
    assert!(
        results[0].1.contains("rank 1"),
        "rank 0 names the dead member:\n{}",
        results[0].1
    );
}

/// The stub libraries themselves are stream-ordered, as NCCL and HCCL are: a call
/// queues its collective on the caller's stream and returns, the stream runs it
/// once it gets there, an abort drains it at once, destroy waits for it, and
/// STUB_CCL_SYNC=1 brings back the host-synchronous call (`tests/stubs/ccl_order_check.c`
/// checks each, on two ranks in threads; run here for NCCL and HCCL).
#[test]
fn stub_collectives_are_stream_ordered() {
    let s = stubs();
    let dir = s.nccl.parent().expect("the stub directory");
    let exe = dir.join("ccl_order_check");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stubs/ccl_order_check.c");
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-Wextra", "-Werror", "-pthread", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("run cc");
    assert!(status.success(), "building {src:?} failed");
    for lib in ["nccl", "hccl"] {
        let mut child = Command::new(&exe)
            .arg(lib)
            .env("MIXCCL_CUDA_LIB", &s.cuda)
            .env("MIXCCL_NCCL_LIB", &s.nccl)
            .env("MIXCCL_ACL_LIB", &s.acl)
            .env("MIXCCL_HCCL_LIB", &s.hccl)
            .env("STUB_CCL_TIMEOUT_S", "30")
            .env_remove("STUB_CCL_SYNC")
            .env_remove("STUB_FAIL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ccl_order_check");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("ccl_order_check output");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("ccl order check OK"),
            "ccl_order_check {lib}: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
    }
}

// ---- a rank's body ------------------------------------------------------------

/// Where a rank keeps its buffers in one round of checks.
#[derive(Debug, Clone, Copy)]
enum Place {
    Host,
    Device(Vendor),
}

/// A buffer of `len` bytes in `place`.
struct Buf {
    dev: Option<DeviceMemory>,
    host: Vec<u8>,
}

impl Buf {
    fn new(place: Place, len: usize) -> Buf {
        match place {
            Place::Host => Buf {
                dev: None,
                host: vec![0; len],
            },
            Place::Device(v) => Buf {
                dev: Some(DeviceMemory::new(v, None, len.max(1)).expect("device memory")),
                host: vec![0; len],
            },
        }
    }

    fn mem(&mut self) -> MemRef {
        let len = self.host.len();
        match &mut self.dev {
            Some(d) => d.mem().slice(0, len),
            // SAFETY: the vector lives as long as self, used by one call at a time.
            None => unsafe { MemRef::new(self.host.as_ptr(), len) }.expect("host buffer"),
        }
    }

    fn put<T: Element>(&mut self, data: &[T]) {
        let m = self.mem();
        m.write_from(bytemuck::cast_slice(data)).expect("write");
    }

    fn get<T: Element>(&mut self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.host.len() / std::mem::size_of::<T>()];
        let m = self.mem();
        m.read_into(bytemuck::cast_slice_mut(&mut v)).expect("read");
        v
    }
}

fn filled<T: Element>(len: usize, op: ReduceOp, rank: usize, first: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); len];
    verify::fill(&mut v, op, rank, first);
    v
}

/// Every island collective on `T`, in place and out of place, in `place`.
fn check_type<T: Element>(comm: &mut Communicator, place: Place, count: usize) -> Vec<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let e = std::mem::size_of::<T>();
    let dt = T::DTYPE;
    let mut errs = Vec::new();
    for in_place in [false, true] {
        for op in ReduceOp::ALL {
            // all-reduce
            let input = filled::<T>(count, op, r, 0);
            let mut a = Buf::new(place, count * e);
            a.put(&input);
            let got = if in_place {
                let m = a.mem();
                comm.collective_mem(Collective::AllReduce, dt, op, 0, None, m)
                    .expect("all_reduce");
                a.get::<T>()
            } else {
                let mut out = Buf::new(place, count * e);
                let (s, o) = (a.mem(), out.mem());
                comm.collective_mem(Collective::AllReduce, dt, op, 0, Some(s), o)
                    .expect("all_reduce");
                out.get::<T>()
            };
            let exp = expected_vec(dt, op, n, count);
            let wrong = verify::count_wrong(&got, |i| exp[i], op);
            if wrong > 0 {
                errs.push(fail("all_reduce", r, dt, op, count, in_place, wrong));
            }
            // reduce-scatter: block b of every rank's input starts at index b * count.
            let input = filled::<T>(n * count, op, r, 0);
            let mut a = Buf::new(place, n * count * e);
            a.put(&input);
            let got = if in_place {
                let m = a.mem();
                comm.collective_mem(Collective::ReduceScatter, dt, op, 0, None, m)
                    .expect("reduce_scatter");
                a.get::<T>()[r * count..(r + 1) * count].to_vec()
            } else {
                let mut out = Buf::new(place, count * e);
                let (s, o) = (a.mem(), out.mem());
                comm.collective_mem(Collective::ReduceScatter, dt, op, 0, Some(s), o)
                    .expect("reduce_scatter");
                out.get::<T>()
            };
            let exp = expected_vec(dt, op, n, n * count);
            let wrong = verify::count_wrong(&got, |i| exp[r * count + i], op);
            if wrong > 0 {
                errs.push(fail("reduce_scatter", r, dt, op, count, in_place, wrong));
            }
        }
        // all-gather: rank q's block holds input_value(q, i).
        let op = ReduceOp::Sum;
        let mine = filled::<T>(count, op, r, 0);
        let mut out = Buf::new(place, n * count * e);
        let got = if in_place {
            let mut init = vec![T::from_f64(77.0); n * count];
            init[r * count..(r + 1) * count].copy_from_slice(&mine);
            out.put(&init);
            let m = out.mem();
            comm.collective_mem(Collective::AllGather, dt, op, 0, None, m)
                .expect("all_gather");
            out.get::<T>()
        } else {
            let mut a = Buf::new(place, count * e);
            a.put(&mine);
            let (s, o) = (a.mem(), out.mem());
            comm.collective_mem(Collective::AllGather, dt, op, 0, Some(s), o)
                .expect("all_gather");
            out.get::<T>()
        };
        let wrong = verify::count_wrong(
            &got,
            |i| verify::input_value(dt, op, i / count, i % count),
            op,
        );
        if wrong > 0 {
            errs.push(fail("all_gather", r, dt, op, count, in_place, wrong));
        }
        // broadcast from every root.
        for root in 0..n {
            let data = filled::<T>(count, op, root, 0);
            let mut out = Buf::new(place, count * e);
            out.put(&vec![T::from_f64(77.0); count]);
            if in_place {
                if r == root {
                    out.put(&data);
                }
                let m = out.mem();
                comm.collective_mem(Collective::Broadcast, dt, op, root, None, m)
                    .expect("broadcast");
            } else {
                let mut a = Buf::new(place, count * e);
                a.put(&data);
                let (s, o) = (a.mem(), out.mem());
                comm.collective_mem(Collective::Broadcast, dt, op, root, Some(s), o)
                    .expect("broadcast");
            }
            let got = out.get::<T>();
            let wrong = verify::count_wrong(&got, |i| verify::input_value(dt, op, root, i), op);
            if wrong > 0 {
                errs.push(fail(
                    &format!("broadcast root {root}"),
                    r,
                    dt,
                    op,
                    count,
                    in_place,
                    wrong,
                ));
            }
        }
    }
    errs
}

/// Native call counts of the library this rank's island would use.
fn print_counts(comm_vendor: Option<Vendor>) {
    let var = match comm_vendor {
        Some(Vendor::Cuda) => "MIXCCL_NCCL_LIB",
        Some(Vendor::Acl) => "MIXCCL_HCCL_LIB",
        _ => {
            println!("COUNTS none");
            return;
        }
    };
    let path = std::env::var(var).expect("library variable");
    // SAFETY: the stub library, already loaded by mixccl (or loadable); its
    // stubCclCount has the declared signature.
    let names = [
        "init",
        "all_reduce",
        "reduce_scatter",
        "all_gather",
        "broadcast",
        "abort",
    ];
    let counts: Vec<String> = match unsafe { libloading::Library::new(&path) } {
        Ok(lib) => {
            type CountFn = unsafe extern "C" fn(*const std::ffi::c_char) -> std::ffi::c_long;
            // SAFETY: as above.
            match unsafe { lib.get::<CountFn>(b"stubCclCount") } {
                Ok(f) => names
                    .iter()
                    .map(|n| {
                        let c = std::ffi::CString::new(*n).unwrap();
                        // SAFETY: a NUL-terminated name.
                        format!("{n}={}", unsafe { f(c.as_ptr()) })
                    })
                    .collect(),
                Err(_) => vec!["nostub".into()],
            }
        }
        Err(_) => vec!["nolib".into()],
    };
    println!("COUNTS {}", counts.join(" "));
}

/// Each rank's body, run by the tests above as a child process (ignored otherwise).
#[test]
#[ignore = "a rank of the island tests, started by them"]
fn island_rank() {
    let mode = std::env::var("ISLAND_MODE").expect("ISLAND_MODE: started by the island tests");
    let vendor = match std::env::var("MIXCCL_DEVICES").as_deref() {
        Ok("cuda") => Some(Vendor::Cuda),
        Ok("acl") => Some(Vendor::Acl),
        _ => None,
    };
    let mut comm = Communicator::from_env().expect("join");
    for line in comm.describe_islands() {
        println!("{line}");
    }
    let r = comm.rank();
    if mode == "die" {
        let mut buf = vec![1.0f32; 1024];
        for k in 0..1000 {
            if r == 1 && k == 3 {
                // SAFETY: ends this process at once, as a crash would.
                unsafe { libc::_exit(9) };
            }
            if let Err(e) = comm.all_reduce_in_place(&mut buf, ReduceOp::Max) {
                let kind = match &e {
                    Error::PeerLost { .. } => "PeerLost",
                    Error::Timeout { .. } => "Timeout",
                    _ => "other",
                };
                println!("FAILED {kind}: {e}");
                print_counts(vendor);
                return;
            }
        }
        panic!("rank {r}: every call succeeded though rank 1 died");
    }
    // Every rank makes the same calls: device buffers where it has a device, then
    // host buffers (island members copy them to the device for the native phases).
    let places = [vendor.map_or(Place::Host, Place::Device), Place::Host];
    let quick = mode != "full";
    let counts: &[usize] = if quick { &[5] } else { &[1, 37] };
    let mut errs = Vec::new();
    for &place in &places {
        for &count in counts {
            errs.extend(crate::for_each_type!(check_type(&mut comm, place, count)));
            if quick {
                break;
            }
        }
        if quick {
            break;
        }
    }
    print_counts(vendor);
    assert!(
        errs.is_empty(),
        "rank {r}: {} checks failed:\n{}",
        errs.len(),
        errs.join("\n")
    );
    println!("RANK DONE");
}
