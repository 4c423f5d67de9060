//! Shared helpers for the end-to-end tests: run ranks as threads, check results
//! against `mixccl::verify` element by element.
#![allow(dead_code)]

use mixccl::{verify, Communicator, Config, DataType, Element, ReduceOp, UniqueId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Rank counts every collective is tested with.
pub const NRANKS: [usize; 6] = [1, 2, 3, 4, 5, 8];
/// Element counts: empty, one, small primes and a large odd size.
pub const COUNTS: [usize; 5] = [0, 1, 7, 1031, (1 << 20) + 3];

/// A config for tests: short timeout so a bug fails fast instead of hanging.
pub fn test_config() -> Config {
    Config {
        timeout: Duration::from_secs(60),
        ..Config::default()
    }
}

/// Runs `f` on every rank of an in-process communicator, each rank on its own thread.
pub fn with_ranks<R: Send>(
    n: usize,
    config: Config,
    f: impl Fn(&mut Communicator) -> R + Sync,
) -> Vec<R> {
    let comms = Communicator::in_process(n, config).expect("in-process communicator");
    std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .into_iter()
            .map(|mut c| {
                let f = &f;
                s.spawn(move || f(&mut c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect()
    })
}

/// Runs `f` on `n` ranks that are threads joined through a real bootstrap (a root on
/// loopback, `Communicator::init`): TCP between them with `shm_disable`, shared memory
/// otherwise. Returns per-rank results.
pub fn bootstrapped_ranks<R: Send>(
    n: usize,
    config: Config,
    f: impl Fn(&mut Communicator) -> R + Sync,
) -> Vec<R> {
    let id = UniqueId::bind_with("127.0.0.1:0".parse().unwrap(), &config)
        .expect("bind the bootstrap root");
    assert!(id.root_addr().ip().is_loopback(), "{id:?}");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|rank| {
                let (f, id, config) = (&f, &id, config.clone());
                s.spawn(move || {
                    let mut comm = Communicator::init(rank, n, id, config)
                        .unwrap_or_else(|e| panic!("init of rank {rank} of {n}: {e}"));
                    assert_eq!((comm.rank(), comm.nranks()), (rank, n));
                    f(&mut comm)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread panicked"))
            .collect()
    })
}

type Key = (DataType, ReduceOp, usize, usize);
type Slot = Arc<OnceLock<Arc<Vec<f64>>>>;

/// `expected_reduce` for indices `0..len`, computed once per process (the first rank
/// to ask computes it, the others wait) and shared by all ranks.
pub fn expected_vec(dtype: DataType, op: ReduceOp, nranks: usize, len: usize) -> Arc<Vec<f64>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Slot>>> = OnceLock::new();
    let slot = {
        let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
        if cache.len() > 16 {
            cache.clear();
        }
        cache.entry((dtype, op, nranks, len)).or_default().clone()
    };
    slot.get_or_init(|| {
        Arc::new(
            (0..len)
                .map(|i| verify::expected_reduce(dtype, op, nranks, i))
                .collect(),
        )
    })
    .clone()
}

/// A value no check expects, to fill receive buffers with.
pub fn sentinel<T: Element>() -> T {
    T::from_f64(77.0)
}

/// Describes a failed check.
pub fn fail(
    what: &str,
    rank: usize,
    dtype: DataType,
    op: ReduceOp,
    count: usize,
    in_place: bool,
    wrong: usize,
) -> String {
    format!("{what}: rank {rank} dtype {dtype} op {op} count {count} in_place {in_place}: {wrong} wrong elements")
}

/// Checks the reducing collectives (all_reduce, reduce, reduce_scatter) for one dtype
/// with each of `ops`, in place and out of place.
pub fn check_reducing<T: Element>(
    comm: &mut Communicator,
    counts: &[usize],
    ops: &[ReduceOp],
) -> Vec<String> {
    let mut errs = Vec::new();
    for &count in counts {
        for in_place in [false, true] {
            for &op in ops {
                errs.extend(check_all_reduce::<T>(comm, op, count, in_place));
                errs.extend(check_reduce::<T>(comm, op, count, in_place));
                errs.extend(check_reduce_scatter::<T>(comm, op, count, in_place));
            }
        }
    }
    errs
}

/// Checks every collective for one dtype on `comm`; returns failures. Every rank of the
/// communicator must call it with the same arguments.
pub fn check_all<T: Element>(
    comm: &mut Communicator,
    counts: &[usize],
    ops: &[ReduceOp],
) -> Vec<String> {
    let mut errs = Vec::new();
    for &count in counts {
        for in_place in [false, true] {
            for &op in ops {
                errs.extend(check_all_reduce::<T>(comm, op, count, in_place));
                errs.extend(check_reduce::<T>(comm, op, count, in_place));
                errs.extend(check_reduce_scatter::<T>(comm, op, count, in_place));
            }
            errs.extend(check_all_gather::<T>(comm, count, in_place));
            errs.extend(check_broadcast::<T>(comm, count, in_place));
            errs.extend(check_all_to_all::<T>(comm, count, in_place));
            errs.extend(check_send_recv::<T>(comm, count));
            comm.barrier().expect("barrier");
        }
    }
    errs
}

pub fn check_all_reduce<T: Element>(
    comm: &mut Communicator,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let mut input = vec![T::zeroed(); count];
    verify::fill(&mut input, op, r, 0);
    let pristine = input.clone();
    let out = if in_place {
        comm.all_reduce_in_place(&mut input, op)
            .expect("all_reduce_in_place");
        input
    } else {
        let mut out = vec![sentinel::<T>(); count];
        comm.all_reduce(&input, &mut out, op).expect("all_reduce");
        assert_eq!(
            input, pristine,
            "all_reduce modified its send buffer on rank {r}"
        );
        out
    };
    let exp = expected_vec(T::DTYPE, op, n, count);
    let wrong = verify::count_wrong(&out, |i| exp[i], op);
    (wrong > 0).then(|| fail("all_reduce", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_reduce<T: Element>(
    comm: &mut Communicator,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let root = (count + 1) % n;
    let mut input = vec![T::zeroed(); count];
    verify::fill(&mut input, op, r, 0);
    let pristine = input.clone();
    let out = if in_place {
        comm.reduce_in_place(&mut input, op, root)
            .expect("reduce_in_place");
        input
    } else {
        let mut out = if r == root {
            vec![sentinel::<T>(); count]
        } else {
            Vec::new()
        };
        comm.reduce(&input, &mut out, op, root).expect("reduce");
        assert_eq!(
            input, pristine,
            "reduce modified its send buffer on rank {r}"
        );
        out
    };
    let wrong = if r == root {
        let exp = expected_vec(T::DTYPE, op, n, count);
        verify::count_wrong(&out, |i| exp[i], op)
    } else if in_place {
        // Non-root buffers are input only.
        out.iter().zip(&pristine).filter(|(a, b)| a != b).count()
    } else {
        0
    };
    (wrong > 0).then(|| fail("reduce", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_reduce_scatter<T: Element>(
    comm: &mut Communicator,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let mut input = vec![T::zeroed(); count * n];
    verify::fill(&mut input, op, r, 0);
    let out: Vec<T> = if in_place {
        comm.reduce_scatter_in_place(&mut input, op)
            .expect("reduce_scatter_in_place");
        input[r * count..(r + 1) * count].to_vec()
    } else {
        let mut out = vec![sentinel::<T>(); count];
        comm.reduce_scatter(&input, &mut out, op)
            .expect("reduce_scatter");
        out
    };
    let exp = expected_vec(T::DTYPE, op, n, count * n);
    let wrong = verify::count_wrong(&out, |k| exp[r * count + k], op);
    (wrong > 0).then(|| fail("reduce_scatter", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_all_gather<T: Element>(
    comm: &mut Communicator,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let out = if in_place {
        let mut buf = vec![sentinel::<T>(); count * n];
        verify::fill(&mut buf[r * count..(r + 1) * count], op, r, 0);
        comm.all_gather_in_place(&mut buf)
            .expect("all_gather_in_place");
        buf
    } else {
        let mut input = vec![T::zeroed(); count];
        verify::fill(&mut input, op, r, 0);
        let mut out = vec![sentinel::<T>(); count * n];
        comm.all_gather(&input, &mut out).expect("all_gather");
        out
    };
    let wrong = verify::count_wrong(
        &out,
        |i| verify::input_value(T::DTYPE, op, i / count.max(1), i % count.max(1)),
        op,
    );
    (wrong > 0).then(|| fail("all_gather", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_broadcast<T: Element>(
    comm: &mut Communicator,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let root = (count + 2) % n;
    let mut input = vec![sentinel::<T>(); count];
    if r == root {
        verify::fill(&mut input, op, r, 0);
    }
    let out = if in_place {
        comm.broadcast_in_place(&mut input, root)
            .expect("broadcast_in_place");
        input
    } else {
        let mut out = vec![sentinel::<T>(); count];
        let send: &[T] = if r == root { &input } else { &[] };
        comm.broadcast(send, &mut out, root).expect("broadcast");
        out
    };
    let wrong = verify::count_wrong(&out, |i| verify::input_value(T::DTYPE, op, root, i), op);
    (wrong > 0).then(|| fail("broadcast", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_all_to_all<T: Element>(
    comm: &mut Communicator,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    // Block j (for rank j) holds this rank's values at indices j*count..
    let mut input = vec![T::zeroed(); count * n];
    verify::fill(&mut input, op, r, 0);
    let out = if in_place {
        comm.all_to_all_in_place(&mut input)
            .expect("all_to_all_in_place");
        input
    } else {
        let mut out = vec![sentinel::<T>(); count * n];
        comm.all_to_all(&input, &mut out).expect("all_to_all");
        out
    };
    let c = count.max(1);
    let wrong = verify::count_wrong(
        &out,
        |i| verify::input_value(T::DTYPE, op, i / c, r * count + i % c),
        op,
    );
    (wrong > 0).then(|| fail("all_to_all", r, T::DTYPE, op, count, in_place, wrong))
}

pub fn check_send_recv<T: Element>(comm: &mut Communicator, count: usize) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let mut input = vec![T::zeroed(); count];
    verify::fill(&mut input, op, r, 0);
    let mut out = vec![sentinel::<T>(); count];
    let (to, from) = ((r + 1) % n, (r + n - 1) % n);
    comm.send_recv(&input, to, &mut out, from)
        .expect("send_recv");
    let mut wrong = verify::count_wrong(&out, |i| verify::input_value(T::DTYPE, op, from, i), op);
    // Plain send/recv in a pattern that cannot deadlock: even ranks send first.
    if n > 1 && count < 4096 {
        let mut got = vec![sentinel::<T>(); count];
        if r % 2 == 0 {
            if r + 1 < n {
                comm.send(&input, r + 1).expect("send");
            }
            if r > 0 {
                comm.recv(&mut got, r - 1).expect("recv");
            }
        } else {
            comm.recv(&mut got, r - 1).expect("recv");
            if r + 1 < n {
                comm.send(&input, r + 1).expect("send");
            }
        }
        if r > 0 {
            wrong += verify::count_wrong(&got, |i| verify::input_value(T::DTYPE, op, r - 1, i), op);
        }
    }
    (wrong > 0).then(|| fail("send/recv", r, T::DTYPE, op, count, false, wrong))
}

/// Calls `$f::<T>($args)` for every element type.
#[macro_export]
macro_rules! for_each_type {
    ($f:ident ( $($arg:expr),* )) => {{
        let mut v: Vec<String> = Vec::new();
        v.extend($f::<i8>($($arg),*));
        v.extend($f::<u8>($($arg),*));
        v.extend($f::<i32>($($arg),*));
        v.extend($f::<u32>($($arg),*));
        v.extend($f::<i64>($($arg),*));
        v.extend($f::<u64>($($arg),*));
        v.extend($f::<half::f16>($($arg),*));
        v.extend($f::<f32>($($arg),*));
        v.extend($f::<f64>($($arg),*));
        v.extend($f::<half::bf16>($($arg),*));
        v
    }};
}

/// Compiles the stub runtime `tests/stubs/<name>_stub.c` with the system C compiler
/// into `dir/lib<name>_stub<suffix>.so` (`extra`: more flags, such as `-DOMIT_...`).
pub fn build_stub(
    dir: &std::path::Path,
    name: &str,
    suffix: &str,
    extra: &[&str],
) -> std::path::PathBuf {
    let stubs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/stubs");
    let out = dir.join(format!("lib{name}_stub{suffix}.so"));
    // Built under a private name and renamed into place: tests running at once build
    // the same stub, and a child process must never load a half-written library.
    let tmp = dir.join(format!(
        ".lib{name}_stub{suffix}.so.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let status = std::process::Command::new("cc")
        .args([
            "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-pthread",
        ])
        .args(extra)
        .arg("-o")
        .arg(&tmp)
        .arg(stubs.join(format!("{name}_stub.c")))
        .status()
        .expect("run cc (the stub runtimes need a C compiler)");
    assert!(status.success(), "building {name}_stub.c {extra:?} failed");
    std::fs::rename(&tmp, &out).expect("move the built stub into place");
    out
}
