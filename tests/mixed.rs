//! One communicator across device runtimes: ranks whose buffers live in CUDA, HIP,
//! ACL, MUSA, CNRT (the stub runtimes of `tests/stubs/`, built here with the system
//! C compiler) and host memory, through every collective, dtype and op, in place and
//! out of place, with send and receive buffers of different kinds, checked element
//! by element against `mixccl::verify`. Ranks are threads over the in-memory
//! transport; `pipeline_bytes` is 64 KiB so the staged path runs many pieces.
//!
//! All tests share one process, so the stubs are built and the `MIXCCL_*_LIB`
//! variables set once, before anything asks for the runtimes (`setup`).

mod util;

use mixccl::device::{DeviceMemory, MemoryKind, Runtimes, Vendor};
use mixccl::{verify, Collective, Communicator, Config, DataType, Element, MemRef, ReduceOp};
use mixccl::{Error, TransferMem};
use std::path::Path;
use std::sync::Once;
use util::{build_stub, expected_vec, fail, sentinel, test_config, with_ranks};

/// The stub runtimes, by vendor: source file stem and library variable.
const STUBS: [(Vendor, &str); 5] = [
    (Vendor::Cuda, "cuda"),
    (Vendor::Hip, "hip"),
    (Vendor::Musa, "musa"),
    (Vendor::Acl, "acl"),
    (Vendor::Cnrt, "cnrt"),
];

/// Builds every stub and points mixccl at them, once per process, then checks that
/// all five runtimes loaded.
fn setup() {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("mixed-stubs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the stub directory");
        std::env::remove_var("MIXCCL_DEVICES");
        std::env::remove_var("STUB_FAIL");
        // ROCm 6 behaviour where plain host memory is "unregistered", not an error.
        std::env::set_var("STUB_HIP_UNREGISTERED", "1");
        for (vendor, name) in STUBS {
            std::env::set_var(vendor.lib_env(), build_stub(&dir, name, "", &[]));
        }
        let rt = Runtimes::global();
        for (vendor, _) in STUBS {
            if let Err(e) = rt.get(vendor) {
                panic!("{vendor} stub not loaded: {e}");
            }
        }
    });
}

/// Where a rank keeps a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Host,
    Dev(Vendor),
}

/// A buffer of some kind, written and read through `MemRef` (device buffers are
/// found by `MemRef::new`, i.e. by asking the runtimes, as the C ABI does).
struct Buf {
    dev: Option<DeviceMemory>,
    host: Vec<u8>,
    len: usize,
    kind: Kind,
}

impl Buf {
    fn new(kind: Kind, len: usize) -> Buf {
        let dev = match kind {
            Kind::Host => None,
            // Device 1 where the runtime has it, so device indices are exercised.
            Kind::Dev(v) => Some(
                DeviceMemory::new(v, Some(1), len)
                    .unwrap_or_else(|e| panic!("allocating {len} bytes of {v} memory: {e}")),
            ),
        };
        Buf {
            dev,
            host: vec![0; if kind == Kind::Host { len } else { 0 }],
            len,
            kind,
        }
    }

    fn typed<T: Element>(kind: Kind, data: &[T]) -> Buf {
        let mut b = Buf::new(kind, std::mem::size_of_val(data));
        b.put(data);
        b
    }

    fn mem(&mut self) -> MemRef {
        let ptr = match &self.dev {
            Some(d) => d.addr() as *const u8,
            None => self.host.as_ptr(),
        };
        // SAFETY: the buffer lives as long as self and is used by one call at a time.
        let m = unsafe { MemRef::new(ptr, self.len) }.expect("locate a test buffer");
        if self.len > 0 {
            let want = match self.kind {
                Kind::Host => MemoryKind::Host,
                Kind::Dev(vendor) => MemoryKind::Device { vendor, index: 1 },
            };
            assert_eq!(m.kind(), want, "memory kind of a {:?} buffer", self.kind);
        }
        m
    }

    fn put<T: Element>(&mut self, data: &[T]) {
        self.mem()
            .write_from(bytemuck::cast_slice(data))
            .expect("write a test buffer");
    }

    fn get<T: Element>(&mut self) -> Vec<T> {
        let mut v = vec![T::zeroed(); self.len / std::mem::size_of::<T>()];
        self.mem()
            .read_into(bytemuck::cast_slice_mut(&mut v))
            .expect("read a test buffer");
        v
    }
}

/// An empty host buffer (a non-root's unused side).
fn none() -> MemRef {
    // SAFETY: zero bytes are never read or written.
    unsafe {
        MemRef::with_kind(
            std::ptr::NonNull::<u8>::dangling().as_ptr(),
            0,
            MemoryKind::Host,
        )
    }
}

fn filled<T: Element>(len: usize, op: ReduceOp, rank: usize) -> Vec<T> {
    let mut v = vec![T::zeroed(); len];
    verify::fill(&mut v, op, rank, 0);
    v
}

/// The kinds of one rank's send and receive buffers.
#[derive(Debug, Clone, Copy)]
struct Kinds {
    send: Kind,
    recv: Kind,
}

fn run(
    comm: &mut Communicator,
    coll: Collective,
    dtype: DataType,
    op: ReduceOp,
    root: usize,
    send: Option<MemRef>,
    recv: MemRef,
) {
    comm.collective_mem(coll, dtype, op, root, send, recv)
        .unwrap_or_else(|e| panic!("{coll} {dtype} {op} on rank {}: {e}", comm.rank()));
}

fn check_all_reduce<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let input = filled::<T>(count, op, r);
    let mut recv = Buf::typed(k.recv, &vec![sentinel::<T>(); count]);
    let mut send = (!in_place).then(|| Buf::typed(k.send, &input));
    if in_place {
        recv.put(&input);
    }
    let s = send.as_mut().map(Buf::mem);
    run(comm, Collective::AllReduce, T::DTYPE, op, 0, s, recv.mem());
    let exp = expected_vec(T::DTYPE, op, n, count);
    let mut wrong = verify::count_wrong(&recv.get::<T>(), |i| exp[i], op);
    if let Some(s) = send.as_mut() {
        wrong += usize::from(s.get::<T>() != input);
    }
    (wrong > 0).then(|| fail("all_reduce", r, T::DTYPE, op, count, in_place, wrong))
}

fn check_reduce<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let root = (count + 1) % n;
    let input = filled::<T>(count, op, r);
    let wrong = if in_place {
        let mut buf = Buf::typed(k.recv, &input);
        run(
            comm,
            Collective::Reduce,
            T::DTYPE,
            op,
            root,
            None,
            buf.mem(),
        );
        let got = buf.get::<T>();
        if r == root {
            let exp = expected_vec(T::DTYPE, op, n, count);
            verify::count_wrong(&got, |i| exp[i], op)
        } else {
            got.iter().zip(&input).filter(|(a, b)| a != b).count()
        }
    } else {
        let mut send = Buf::typed(k.send, &input);
        let mut recv = (r == root).then(|| Buf::typed(k.recv, &vec![sentinel::<T>(); count]));
        let rm = recv.as_mut().map_or_else(none, Buf::mem);
        run(
            comm,
            Collective::Reduce,
            T::DTYPE,
            op,
            root,
            Some(send.mem()),
            rm,
        );
        let mut wrong = usize::from(send.get::<T>() != input);
        if let Some(recv) = recv.as_mut() {
            let exp = expected_vec(T::DTYPE, op, n, count);
            wrong += verify::count_wrong(&recv.get::<T>(), |i| exp[i], op);
        }
        wrong
    };
    (wrong > 0).then(|| fail("reduce", r, T::DTYPE, op, count, in_place, wrong))
}

fn check_reduce_scatter<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    op: ReduceOp,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let input = filled::<T>(count * n, op, r);
    let got = if in_place {
        let mut buf = Buf::typed(k.recv, &input);
        run(
            comm,
            Collective::ReduceScatter,
            T::DTYPE,
            op,
            0,
            None,
            buf.mem(),
        );
        buf.get::<T>()[r * count..(r + 1) * count].to_vec()
    } else {
        let mut send = Buf::typed(k.send, &input);
        let mut recv = Buf::typed(k.recv, &vec![sentinel::<T>(); count]);
        run(
            comm,
            Collective::ReduceScatter,
            T::DTYPE,
            op,
            0,
            Some(send.mem()),
            recv.mem(),
        );
        recv.get::<T>()
    };
    let exp = expected_vec(T::DTYPE, op, n, count * n);
    let wrong = verify::count_wrong(&got, |i| exp[r * count + i], op);
    (wrong > 0).then(|| fail("reduce_scatter", r, T::DTYPE, op, count, in_place, wrong))
}

fn check_all_gather<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let own = filled::<T>(count, op, r);
    let mut out = vec![sentinel::<T>(); count * n];
    let got = if in_place {
        out[r * count..(r + 1) * count].copy_from_slice(&own);
        let mut buf = Buf::typed(k.recv, &out);
        run(
            comm,
            Collective::AllGather,
            T::DTYPE,
            op,
            0,
            None,
            buf.mem(),
        );
        buf.get::<T>()
    } else {
        let mut send = Buf::typed(k.send, &own);
        let mut recv = Buf::typed(k.recv, &out);
        run(
            comm,
            Collective::AllGather,
            T::DTYPE,
            op,
            0,
            Some(send.mem()),
            recv.mem(),
        );
        recv.get::<T>()
    };
    let c = count.max(1);
    let wrong = verify::count_wrong(
        &got,
        |i| verify::input_value(T::DTYPE, op, i / c, i % c),
        op,
    );
    (wrong > 0).then(|| fail("all_gather", r, T::DTYPE, op, count, in_place, wrong))
}

fn check_broadcast<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let root = (count + 2) % n;
    let data = if r == root {
        filled::<T>(count, op, r)
    } else {
        vec![sentinel::<T>(); count]
    };
    let got = if in_place {
        let mut buf = Buf::typed(k.recv, &data);
        run(
            comm,
            Collective::Broadcast,
            T::DTYPE,
            op,
            root,
            None,
            buf.mem(),
        );
        buf.get::<T>()
    } else {
        let mut send = (r == root).then(|| Buf::typed(k.send, &data));
        let mut recv = Buf::typed(k.recv, &vec![sentinel::<T>(); count]);
        let sm = send.as_mut().map_or_else(none, Buf::mem);
        run(
            comm,
            Collective::Broadcast,
            T::DTYPE,
            op,
            root,
            Some(sm),
            recv.mem(),
        );
        recv.get::<T>()
    };
    let wrong = verify::count_wrong(&got, |i| verify::input_value(T::DTYPE, op, root, i), op);
    (wrong > 0).then(|| fail("broadcast", r, T::DTYPE, op, count, in_place, wrong))
}

fn check_all_to_all<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    count: usize,
    in_place: bool,
) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let input = filled::<T>(count * n, op, r);
    let got = if in_place {
        let mut buf = Buf::typed(k.recv, &input);
        run(comm, Collective::AllToAll, T::DTYPE, op, 0, None, buf.mem());
        buf.get::<T>()
    } else {
        let mut send = Buf::typed(k.send, &input);
        let mut recv = Buf::typed(k.recv, &vec![sentinel::<T>(); count * n]);
        run(
            comm,
            Collective::AllToAll,
            T::DTYPE,
            op,
            0,
            Some(send.mem()),
            recv.mem(),
        );
        recv.get::<T>()
    };
    let c = count.max(1);
    let wrong = verify::count_wrong(
        &got,
        |i| verify::input_value(T::DTYPE, op, i / c, r * count + i % c),
        op,
    );
    (wrong > 0).then(|| fail("all_to_all", r, T::DTYPE, op, count, in_place, wrong))
}

/// A ring shift through `group_mem`: send to the next rank, receive from the previous.
fn check_send_recv<T: Element>(comm: &mut Communicator, k: Kinds, count: usize) -> Option<String> {
    let (r, n) = (comm.rank(), comm.nranks());
    let op = ReduceOp::Sum;
    let (to, from) = ((r + 1) % n, (r + n - 1) % n);
    let mut send = Buf::typed(k.send, &filled::<T>(count, op, r));
    let mut recv = Buf::typed(k.recv, &vec![sentinel::<T>(); count]);
    comm.group_mem(&[
        TransferMem::Send {
            peer: to,
            buf: send.mem(),
        },
        TransferMem::Recv {
            peer: from,
            buf: recv.mem(),
        },
    ])
    .unwrap_or_else(|e| panic!("group_mem on rank {r}: {e}"));
    let wrong = verify::count_wrong(
        &recv.get::<T>(),
        |i| verify::input_value(T::DTYPE, op, from, i),
        op,
    );
    (wrong > 0).then(|| fail("send/recv", r, T::DTYPE, op, count, false, wrong))
}

/// Every collective for one dtype with each of `ops`, in place and out of place.
fn check_every<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    counts: &[usize],
    ops: &[ReduceOp],
) -> Vec<String> {
    let mut errs = Vec::new();
    for &count in counts {
        for in_place in [false, true] {
            for &op in ops {
                errs.extend(check_all_reduce::<T>(comm, k, op, count, in_place));
                errs.extend(check_reduce::<T>(comm, k, op, count, in_place));
                errs.extend(check_reduce_scatter::<T>(comm, k, op, count, in_place));
            }
            errs.extend(check_all_gather::<T>(comm, k, count, in_place));
            errs.extend(check_broadcast::<T>(comm, k, count, in_place));
            errs.extend(check_all_to_all::<T>(comm, k, count, in_place));
        }
        errs.extend(check_send_recv::<T>(comm, k, count));
    }
    errs
}

/// The reducing collectives only.
fn check_reducing<T: Element>(
    comm: &mut Communicator,
    k: Kinds,
    counts: &[usize],
    ops: &[ReduceOp],
) -> Vec<String> {
    let mut errs = Vec::new();
    for &count in counts {
        for in_place in [false, true] {
            for &op in ops {
                errs.extend(check_all_reduce::<T>(comm, k, op, count, in_place));
                errs.extend(check_reduce::<T>(comm, k, op, count, in_place));
                errs.extend(check_reduce_scatter::<T>(comm, k, op, count, in_place));
            }
        }
    }
    errs
}

fn config() -> Config {
    Config {
        pipeline_bytes: 64 << 10,
        ..test_config()
    }
}

/// Runs `f` on 4 ranks (threads) with buffers of `kinds[rank]`; panics with the
/// first failures.
fn on_ranks(kinds: [Kinds; 4], f: impl Fn(&mut Communicator, Kinds) -> Vec<String> + Sync) {
    setup();
    let errs: Vec<String> = with_ranks(4, config(), |comm| {
        let k = kinds[comm.rank()];
        f(comm, k)
    })
    .into_iter()
    .flatten()
    .collect();
    assert!(
        errs.is_empty(),
        "{} failures, first: {:#?}",
        errs.len(),
        &errs[..errs.len().min(10)]
    );
}

fn same(kind: Kind) -> Kinds {
    Kinds {
        send: kind,
        recv: kind,
    }
}

/// Counts: empty, one, small odd primes.
const SMALL: [usize; 4] = [0, 1, 7, 1031];
/// A count that spans many 64 KiB pipeline pieces for every dtype (and is odd).
const LARGE: usize = (1 << 18) + 3;

#[test]
fn mixed_cuda_hip_acl_host_every_collective_dtype_and_op() {
    let kinds = [
        same(Kind::Dev(Vendor::Cuda)),
        same(Kind::Dev(Vendor::Hip)),
        same(Kind::Dev(Vendor::Acl)),
        same(Kind::Host),
    ];
    on_ranks(kinds, |comm, k| {
        let mut e = Vec::new();
        macro_rules! each {
            ($($t:ty),*) => { $( e.extend(check_every::<$t>(comm, k, &SMALL, &ReduceOp::ALL)); )* };
        }
        each!(i8, u8, i32, u32, i64, u64, half::f16, f32, f64, half::bf16);
        e
    });
}

#[test]
fn mixed_cnrt_hip_musa_host_every_collective_dtype_and_op() {
    let kinds = [
        same(Kind::Dev(Vendor::Cnrt)),
        same(Kind::Dev(Vendor::Hip)),
        same(Kind::Dev(Vendor::Musa)),
        same(Kind::Host),
    ];
    on_ranks(kinds, |comm, k| {
        let mut e = Vec::new();
        macro_rules! each {
            ($($t:ty),*) => { $( e.extend(check_every::<$t>(comm, k, &SMALL[1..], &ReduceOp::ALL)); )* };
        }
        each!(i8, u8, i32, u32, i64, u64, half::f16, f32, f64, half::bf16);
        e
    });
}

/// The large count: every collective and dtype with Sum, every op for three dtypes;
/// all-reduce, broadcast and reduce run as many pipelined pieces.
#[test]
fn mixed_large_count_pipelined_through_every_runtime() {
    let kinds = [
        same(Kind::Dev(Vendor::Cuda)),
        same(Kind::Dev(Vendor::Hip)),
        same(Kind::Dev(Vendor::Musa)),
        same(Kind::Dev(Vendor::Acl)),
    ];
    on_ranks(kinds, |comm, k| {
        let mut e = Vec::new();
        macro_rules! each {
            ($($t:ty),*) => { $( e.extend(check_every::<$t>(comm, k, &[LARGE], &[ReduceOp::Sum])); )* };
        }
        each!(i8, u8, i32, u32, i64, u64, half::f16, f32, f64, half::bf16);
        let others = &ReduceOp::ALL[1..];
        e.extend(check_reducing::<f32>(comm, k, &[LARGE], others));
        e.extend(check_reducing::<half::bf16>(comm, k, &[LARGE], others));
        e.extend(check_reducing::<i32>(comm, k, &[LARGE], others));
        e
    });
    // The same with the fifth runtime and host memory in the mix.
    let kinds = [
        same(Kind::Host),
        same(Kind::Dev(Vendor::Cnrt)),
        same(Kind::Dev(Vendor::Cuda)),
        same(Kind::Host),
    ];
    on_ranks(kinds, |comm, k| {
        check_every::<f32>(comm, k, &[LARGE], &[ReduceOp::Sum, ReduceOp::Max])
    });
}

/// Send and receive buffers of one call in different memory: device to host, host
/// to device, and one vendor's device to another's.
#[test]
fn mixed_send_and_recv_buffers_of_different_kinds() {
    use Kind::*;
    let rounds = [
        [
            Kinds {
                send: Dev(Vendor::Cuda),
                recv: Host,
            },
            Kinds {
                send: Host,
                recv: Dev(Vendor::Hip),
            },
            Kinds {
                send: Dev(Vendor::Acl),
                recv: Dev(Vendor::Musa),
            },
            Kinds {
                send: Dev(Vendor::Cnrt),
                recv: Dev(Vendor::Cuda),
            },
        ],
        [
            Kinds {
                send: Dev(Vendor::Hip),
                recv: Dev(Vendor::Acl),
            },
            Kinds {
                send: Dev(Vendor::Musa),
                recv: Host,
            },
            Kinds {
                send: Host,
                recv: Dev(Vendor::Cnrt),
            },
            Kinds {
                send: Dev(Vendor::Cuda),
                recv: Dev(Vendor::Hip),
            },
        ],
    ];
    for kinds in rounds {
        on_ranks(kinds, |comm, k| {
            let mut e = check_every::<f32>(comm, k, &[1, 7, 1031, LARGE], &ReduceOp::ALL);
            e.extend(check_every::<i8>(comm, k, &[7, 1031], &ReduceOp::ALL));
            e.extend(check_every::<half::bf16>(
                comm,
                k,
                &[1031],
                &[ReduceOp::Sum, ReduceOp::Prod],
            ));
            e
        });
    }
}

/// mixccl sets the device each call needs and then restores the caller's: a thread
/// that made device 1 current still has device 1 after mixccl used device 0.
#[test]
fn mixed_shims_restore_the_callers_device() {
    setup();
    type GetDevice = unsafe extern "C" fn(*mut i32) -> i32;
    type SetDevice = unsafe extern "C" fn(i32) -> i32;
    for (vendor, get, set) in [
        (Vendor::Hip, "hipGetDevice", "hipSetDevice"),
        (Vendor::Musa, "musaGetDevice", "musaSetDevice"),
        (Vendor::Acl, "aclrtGetDevice", "aclrtSetDevice"),
        (Vendor::Cnrt, "cnrtGetDevice", "cnrtSetDevice"),
    ] {
        let path = std::env::var(vendor.lib_env()).expect("set by setup");
        // SAFETY: the stub mixccl already loaded (dlopen returns the same handle); the
        // two symbols have the declared signatures.
        let (get, set) = unsafe {
            let lib = libloading::Library::new(&path).expect("dlopen the stub");
            let get: GetDevice = *lib.get::<GetDevice>(get.as_bytes()).expect("get");
            let set: SetDevice = *lib.get::<SetDevice>(set.as_bytes()).expect("set");
            std::mem::forget(lib);
            (get, set)
        };
        std::thread::spawn(move || {
            // SAFETY: plain calls with valid arguments.
            assert_eq!(unsafe { set(1) }, 0, "{vendor}: set device 1");
            let mut d = DeviceMemory::new(vendor, Some(0), 4096).expect("allocate on device 0");
            d.mem()
                .write_from(&[7u8; 4096])
                .expect("write device 0 memory");
            let mut back = [0u8; 4096];
            d.mem().read_into(&mut back).expect("read device 0 memory");
            assert_eq!(back, [7u8; 4096], "{vendor}: round trip through device 0");
            drop(d);
            let mut now = -1;
            // SAFETY: valid out-pointer.
            assert_eq!(unsafe { get(&mut now) }, 0);
            assert_eq!(now, 1, "{vendor}: mixccl left the thread on device {now}");
            assert_eq!(
                Runtimes::global()
                    .get(vendor)
                    .unwrap()
                    .current_device()
                    .unwrap(),
                1,
                "{vendor}: current_device"
            );
        })
        .join()
        .expect("device-restore thread");
    }
}

/// Where the runtime reports allocation ranges (CUDA, HIP, CNRT), a buffer that runs
/// past the end of its allocation is an argument error, not a stub abort.
#[test]
fn mixed_buffer_past_its_allocation_end_is_rejected() {
    setup();
    for vendor in [Vendor::Cuda, Vendor::Hip, Vendor::Cnrt] {
        let d = DeviceMemory::new(vendor, Some(0), 1000).expect("allocate");
        // SAFETY: only located, never read.
        let r = unsafe { MemRef::new((d.addr() + 8) as *const u8, 1000) };
        match r {
            Err(Error::InvalidArgument(m)) => {
                assert!(
                    m.contains("past the end") && m.contains(vendor.name()),
                    "{m}"
                )
            }
            other => panic!("{vendor}: {other:?}"),
        }
        // Inside the allocation it is that runtime's memory on device 0.
        // SAFETY: as above.
        let m = unsafe { MemRef::new((d.addr() + 8) as *const u8, 992) }.expect("inside");
        assert_eq!(m.kind(), MemoryKind::Device { vendor, index: 0 });
    }
}

/// C callers free device memory with their own runtime, unseen by mixccl, and the
/// runtime hands the address out again, possibly for a larger allocation: the cached
/// range of the old allocation must not make the new buffer "run past its end".
#[test]
fn mixed_address_reused_after_a_free_mixccl_did_not_see() {
    setup();
    for vendor in [Vendor::Cuda, Vendor::Hip, Vendor::Cnrt] {
        let dev = Runtimes::global().get(vendor).unwrap();
        let a = dev.alloc_device(0, 1).expect("allocate 1 byte");
        // SAFETY: only located.
        let m = unsafe { MemRef::new(a as *const u8, 1) }.expect("locate the 1-byte buffer");
        assert!(m.is_device());
        // SAFETY: `a` came from alloc_device and is not used again.
        unsafe { dev.free_device(0, a) }.expect("free");
        let b = dev.alloc_device(0, 4).expect("allocate 4 bytes");
        assert_eq!(a, b, "{vendor}: the stub reuses the freed address");
        // SAFETY: only located.
        let m = unsafe { MemRef::new(b as *const u8, 4) }
            .unwrap_or_else(|e| panic!("{vendor}: the reused address: {e}"));
        assert_eq!(m.kind(), MemoryKind::Device { vendor, index: 0 });
        Runtimes::global().forget(b);
        // SAFETY: as above.
        unsafe { dev.free_device(0, b) }.expect("free");
    }
}
