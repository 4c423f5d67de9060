//! How device-runtime failures reach the caller: a runtime that is not found, a
//! missing symbol, a pointer no runtime claims that is not readable host memory, an
//! allocation failure, a vendor error code with the vendor's own text; and that the
//! stub runtimes abort loudly on misuse, so the mixed tests cannot pass by accident.
//!
//! The runtimes are loaded once per process, so each case runs in a child process
//! (this test binary again, `--exact <test>`) with its own `MIXCCL_*_LIB` and
//! `STUB_*` variables; the parent checks the child's outcome.

mod util;

use mixccl::device::{DeviceMemory, MemoryKind, Runtimes, Vendor};
use mixccl::{Communicator, Config, DeviceError, Error, MemRef, ReduceOp};
use std::path::PathBuf;
use std::process::Command;
use util::build_stub;

/// Set in the child: which case to run.
const CHILD: &str = "MIXED_ERRORS_CHILD";

/// A directory for this process's stub builds.
fn stub_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mixed-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the stub directory");
    dir
}

/// Runs test `name` again in a child process with `env` (and the given case), and
/// returns whether it succeeded and its output.
fn child(name: &str, case: &str, env: &[(&str, PathBuf)], unset: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("test executable"));
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, case);
    for (k, _) in std::env::vars() {
        if k.starts_with("MIXCCL_") || k.starts_with("STUB_") {
            cmd.env_remove(k);
        }
    }
    for k in unset {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The case this process should run, when it is a child.
fn case() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// Every stub, built plainly, as `MIXCCL_*_LIB` settings.
fn all_stubs(dir: &std::path::Path) -> Vec<(&'static str, PathBuf)> {
    [
        (Vendor::Cuda, "cuda"),
        (Vendor::Hip, "hip"),
        (Vendor::Musa, "musa"),
        (Vendor::Acl, "acl"),
        (Vendor::Cnrt, "cnrt"),
    ]
    .into_iter()
    .map(|(v, name)| (v.lib_env(), build_stub(dir, name, "", &[])))
    .collect()
}

fn device_message<T>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Device { vendor, error }) => format!("{vendor}: {error}"),
        Err(other) => panic!("expected a device error, got {other:?}"),
        Ok(_) => panic!("expected a device error, got success"),
    }
}

#[test]
fn mixed_errors_runtime_not_found_lists_sonames_and_variable() {
    if case().is_some() {
        let rt = Runtimes::global();
        // Unset variable: the default sonames, none installed here.
        let hip = device_message(rt.get(Vendor::Hip));
        assert!(
            hip.contains("libamdhip64.so.6") && hip.contains("libamdhip64.so.5"),
            "{hip}"
        );
        assert!(hip.contains("set MIXCCL_HIP_LIB"), "{hip}");
        // A variable naming a missing file: only that path is tried.
        let acl = device_message(DeviceMemory::new(Vendor::Acl, None, 64));
        assert!(acl.contains("/nonexistent/libascendcl.so"), "{acl}");
        assert!(
            acl.contains("set MIXCCL_ACL_LIB") && !acl.contains("tried libascendcl.so"),
            "{acl}"
        );
        // With no runtime loaded, host buffers still work and are host memory.
        let v = [1u8; 16];
        // SAFETY: a live vector.
        let m = unsafe { MemRef::new(v.as_ptr(), v.len()) }.expect("host buffer");
        assert_eq!(m.kind(), MemoryKind::Host);
        println!("CHILD OK");
        return;
    }
    let (ok, out) = child(
        "mixed_errors_runtime_not_found_lists_sonames_and_variable",
        "notfound",
        &[(
            "MIXCCL_ACL_LIB",
            PathBuf::from("/nonexistent/libascendcl.so"),
        )],
        &[],
    );
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

#[test]
fn mixed_errors_symbol_missing_is_named() {
    if case().is_some() {
        let rt = Runtimes::global();
        let hip = device_message(rt.get(Vendor::Hip));
        assert!(hip.contains("symbol hipMemcpyAsync missing"), "{hip}");
        let cnrt = device_message(rt.get(Vendor::Cnrt));
        assert!(
            cnrt.contains("cnrtMemcpyAsync_V3") && cnrt.contains("cnrtMemcpyAsync_V2"),
            "{cnrt}"
        );
        // The runtimes whose libraries are whole still load.
        assert!(rt.get(Vendor::Cuda).is_ok());
        println!("CHILD OK");
        return;
    }
    let dir = stub_dir();
    let env = [
        ("MIXCCL_CUDA_LIB", build_stub(&dir, "cuda", "", &[])),
        (
            "MIXCCL_HIP_LIB",
            build_stub(
                &dir,
                "hip",
                "_nocopy",
                &["-DOMIT_hipMemcpyAsync", "-Wno-unused-function"],
            ),
        ),
        (
            "MIXCCL_CNRT_LIB",
            build_stub(
                &dir,
                "cnrt",
                "_nocopy",
                &["-DOMIT_cnrtMemcpyAsync_V2", "-Wno-unused-function"],
            ),
        ),
    ];
    let (ok, out) = child("mixed_errors_symbol_missing_is_named", "symbol", &env, &[]);
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

#[test]
fn mixed_errors_pointer_no_runtime_claims_and_unreadable() {
    if case().is_some() {
        // SAFETY: a fresh anonymous mapping, never accessed.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: only located; the check reads through process_vm_readv, which fails
        // instead of faulting.
        match unsafe { MemRef::new(p as *const u8, 100) } {
            Err(Error::InvalidArgument(m)) => {
                assert!(m.contains("not readable host memory"), "{m}");
                assert!(m.contains(&format!("{p:p}")), "names the pointer: {m}");
                assert!(
                    m.contains("cuda, hip, musa, acl, cnrt"),
                    "names the runtimes asked: {m}"
                );
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        // The same through a collective's buffers never gets that far: the MemRef
        // is refused first, and the communicator stays usable.
        let mut comms = Communicator::in_process(1, Config::default()).expect("1 rank");
        let mut v = [1.0f32; 4];
        comms[0]
            .all_reduce_in_place(&mut v, ReduceOp::Sum)
            .expect("still usable");
        println!("CHILD OK");
        return;
    }
    let (ok, out) = child(
        "mixed_errors_pointer_no_runtime_claims_and_unreadable",
        "pointer",
        &all_stubs(&stub_dir()),
        &[],
    );
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

/// A device collective on one rank, in place: stages through pinned memory.
fn one_rank_all_reduce(vendor: Vendor) -> Result<(), Error> {
    let mut comms = Communicator::in_process(1, Config::default()).expect("1 rank");
    let mut d = DeviceMemory::new(vendor, Some(0), 4096).expect("device memory");
    comms[0].collective_mem(
        mixccl::Collective::AllReduce,
        mixccl::DataType::F32,
        ReduceOp::Sum,
        0,
        None,
        d.mem(),
    )
}

#[test]
fn mixed_errors_allocation_failure_names_the_call() {
    if case().is_some() {
        // The failure is structured: the call, the vendor's code and its name.
        match DeviceMemory::new(Vendor::Hip, Some(0), 4096) {
            Err(Error::Device {
                vendor: "hip",
                error:
                    DeviceError::Call {
                        call,
                        code: 2,
                        name: Some(name),
                        ..
                    },
            }) => assert_eq!(
                (call.as_str(), name.as_str()),
                ("hipMalloc(4096 bytes)", "hipErrorOutOfMemory")
            ),
            Err(e) => panic!("hipMalloc failure not a DeviceError::Call: {e:?}"),
            Ok(_) => panic!("hipMalloc succeeded under STUB_FAIL"),
        }
        let hip = device_message(DeviceMemory::new(Vendor::Hip, Some(0), 4096));
        assert!(
            hip.contains("hipMalloc(4096 bytes) failed: 2 hipErrorOutOfMemory (out of memory)"),
            "{hip}"
        );
        let acl = device_message(one_rank_all_reduce(Vendor::Acl));
        assert!(
            acl.contains("aclrtMallocHost(") && acl.contains("207001"),
            "{acl}"
        );
        assert!(
            acl.contains("EL0004: failed to allocate host memory"),
            "{acl}"
        );
        let cnrt = device_message(one_rank_all_reduce(Vendor::Cnrt));
        assert!(
            cnrt.contains("cnrtHostMalloc(") && cnrt.contains("Insufficient host memory."),
            "{cnrt}"
        );
        // More than the runtime has: the stub's arena is 2 GiB.
        let cuda = device_message(DeviceMemory::new(Vendor::Cuda, Some(0), 3 << 30));
        assert!(
            cuda.contains("cuMemAlloc(3221225472 bytes) failed: 2 CUDA_ERROR_OUT_OF_MEMORY"),
            "{cuda}"
        );
        let musa = device_message(DeviceMemory::new(Vendor::Musa, Some(0), 3 << 30));
        assert!(
            musa.contains("musaMalloc(") && musa.contains("out of memory"),
            "{musa}"
        );
        println!("CHILD OK");
        return;
    }
    let mut env = all_stubs(&stub_dir());
    env.push((
        "STUB_FAIL",
        PathBuf::from("hipMalloc,aclrtMallocHost,cnrtHostMalloc"),
    ));
    let (ok, out) = child(
        "mixed_errors_allocation_failure_names_the_call",
        "alloc",
        &env,
        &[],
    );
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

#[test]
fn mixed_errors_vendor_error_code_carries_the_vendor_text() {
    if case().is_some() {
        let write = |vendor| {
            let mut d = DeviceMemory::new(vendor, Some(1), 256).expect("device memory");
            d.mem().write_from(&[1u8; 256])
        };
        let hip = device_message(write(Vendor::Hip));
        assert!(
            hip.contains("hipStreamSynchronize failed: 719 hipErrorLaunchFailure (unspecified launch failure)"),
            "{hip}"
        );
        let musa = device_message(write(Vendor::Musa));
        assert!(
            musa.contains("musaStreamSynchronize failed: 719 musaErrorLaunchFailure"),
            "{musa}"
        );
        let acl = device_message(write(Vendor::Acl));
        assert!(
            acl.contains("aclrtSynchronizeStream failed: error 507015 (EZ9999: aicore exception"),
            "{acl}"
        );
        let cnrt = device_message(write(Vendor::Cnrt));
        assert!(
            cnrt.contains("cnrtQueueSync failed: error 100060 (Failure on the queue.)"),
            "{cnrt}"
        );
        // Inside a collective the error comes back from the call.
        let e = device_message(one_rank_all_reduce(Vendor::Hip));
        assert!(e.contains("hipStreamSynchronize failed"), "{e}");
        println!("CHILD OK");
        return;
    }
    let mut env = all_stubs(&stub_dir());
    env.push((
        "STUB_FAIL",
        PathBuf::from(
            "hipStreamSynchronize,musaStreamSynchronize,aclrtSynchronizeStream,cnrtQueueSync",
        ),
    ));
    let (ok, out) = child(
        "mixed_errors_vendor_error_code_carries_the_vendor_text",
        "code",
        &env,
        &[],
    );
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

/// The stream primitives fail cleanly: a driver without them still loads and only
/// the primitive fails, naming the symbol; a host function whose launch the runtime
/// refuses is dropped unrun, never leaked or run later.
#[test]
fn mixed_errors_stream_primitives_fail_cleanly() {
    if case().is_some() {
        let rt = Runtimes::global();
        let cuda = rt.get(Vendor::Cuda).expect("cuda loads without events");
        let mut d = DeviceMemory::new(Vendor::Cuda, Some(0), 64).expect("cuda memory");
        d.mem()
            .write_from(&[7u8; 64])
            .expect("cuda copies still work");
        match cuda.create_event(0) {
            Err(Error::Device {
                vendor: "cuda",
                error: DeviceError::Unsupported(m),
            }) => assert!(m.contains("symbol cuEventCreate missing from"), "{m}"),
            other => panic!("create_event without cuEventCreate: {other:?}"),
        }
        let hip = rt.get(Vendor::Hip).expect("hip");
        let s = hip.create_stream(0).expect("stream");
        let held = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = std::sync::Arc::clone(&held);
        let r = hip.launch_host_fn(
            0,
            s,
            Box::new(move || h.store(true, std::sync::atomic::Ordering::SeqCst)),
        );
        let e = device_message(r);
        assert!(
            e.contains("hipLaunchHostFunc failed: 719 hipErrorLaunchFailure"),
            "{e}"
        );
        hip.synchronize(0, s).expect("synchronize");
        assert_eq!(
            std::sync::Arc::strong_count(&held),
            1,
            "the refused host function was not dropped"
        );
        assert!(!held.load(std::sync::atomic::Ordering::SeqCst));
        hip.destroy_stream(0, s).expect("destroy");
        println!("CHILD OK");
        return;
    }
    let dir = stub_dir();
    let env = [
        (
            "MIXCCL_CUDA_LIB",
            build_stub(&dir, "cuda", "_nostream", &["-DOMIT_STREAM_PRIMITIVES"]),
        ),
        ("MIXCCL_HIP_LIB", build_stub(&dir, "hip", "", &[])),
        ("STUB_FAIL", PathBuf::from("hipLaunchHostFunc")),
    ];
    let (ok, out) = child(
        "mixed_errors_stream_primitives_fail_cleanly",
        "streams",
        &env,
        &[],
    );
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

/// ROCm 5's hipMemoryType values (Device 1) and its hipErrorInvalidValue for plain
/// host memory: the shim reads the version and still tells device from host.
#[test]
fn mixed_hip_rocm5_memory_types() {
    if case().is_some() {
        let dir = std::env::var("MIXCCL_HIP_LIB").expect("set by the parent");
        assert!(dir.contains("hip"));
        let errs: Vec<String> = std::thread::scope(|s| {
            let comms = Communicator::in_process(2, Config::default()).expect("2 ranks");
            let hs: Vec<_> = comms
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let r = c.rank();
                        let input: Vec<f32> = (0..1031).map(|i| (i % 7 + r) as f32).collect();
                        let bytes: &[u8] = bytemuck::cast_slice(&input);
                        let mut out = vec![0u8; bytes.len()];
                        if r == 0 {
                            let mut d =
                                DeviceMemory::new(Vendor::Hip, Some(1), bytes.len()).unwrap();
                            // SAFETY: live device memory of that length.
                            let m =
                                unsafe { MemRef::new(d.addr() as *const u8, bytes.len()) }.unwrap();
                            assert_eq!(
                                m.kind(),
                                MemoryKind::Device {
                                    vendor: Vendor::Hip,
                                    index: 1
                                }
                            );
                            d.mem().write_from(bytes).unwrap();
                            c.collective_mem(
                                mixccl::Collective::AllReduce,
                                mixccl::DataType::F32,
                                ReduceOp::Sum,
                                0,
                                None,
                                m,
                            )
                            .unwrap();
                            m.read_into(&mut out).unwrap();
                        } else {
                            let mut h = bytes.to_vec();
                            // SAFETY: a live vector: plain host memory, unknown to HIP.
                            let m = unsafe { MemRef::new(h.as_mut_ptr(), h.len()) }.unwrap();
                            assert_eq!(m.kind(), MemoryKind::Host);
                            c.collective_mem(
                                mixccl::Collective::AllReduce,
                                mixccl::DataType::F32,
                                ReduceOp::Sum,
                                0,
                                None,
                                m,
                            )
                            .unwrap();
                            out = h;
                        }
                        let got: &[f32] = bytemuck::cast_slice(&out);
                        got.iter()
                            .enumerate()
                            .filter(|(i, v)| **v != (2 * (i % 7) + 1) as f32)
                            .map(|(i, v)| format!("rank {r} element {i}: {v}"))
                            .take(3)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert!(errs.is_empty(), "{errs:?}");
        println!("CHILD OK");
        return;
    }
    let dir = stub_dir();
    let env = [
        ("MIXCCL_HIP_LIB", build_stub(&dir, "hip", "", &[])),
        ("STUB_HIP_VERSION", PathBuf::from("50700000")),
    ];
    let (ok, out) = child("mixed_hip_rocm5_memory_types", "rocm5", &env, &[]);
    assert!(ok && out.contains("CHILD OK"), "{out}");
}

/// The stubs fail loudly on misuse (so a shim bug cannot pass silently): a copy past
/// an allocation's end, and an ACL device call on a thread with no device set.
#[test]
fn mixed_errors_stubs_abort_on_misuse() {
    type Malloc = unsafe extern "C" fn(*mut *mut u8, usize) -> i32;
    type Memcpy = unsafe extern "C" fn(*mut u8, *const u8, usize, i32, usize) -> i32;
    type AclInit = unsafe extern "C" fn(*const u8) -> i32;
    type AclMalloc = unsafe extern "C" fn(*mut *mut u8, usize, i32) -> i32;
    match case().as_deref() {
        Some("past-end") => {
            let path = std::env::var("MIXCCL_HIP_LIB").unwrap();
            // SAFETY: the HIP stub's symbols with their C signatures; the copy is the
            // misuse under test and the stub aborts before touching memory.
            unsafe {
                let lib = libloading::Library::new(path).unwrap();
                let malloc = lib.get::<Malloc>(b"hipMalloc").unwrap();
                let memcpy = lib.get::<Memcpy>(b"hipMemcpyAsync").unwrap();
                let mut d = std::ptr::null_mut();
                assert_eq!(malloc(&mut d, 100), 0);
                let mut host = [0u8; 200];
                memcpy(host.as_mut_ptr(), d, 200, 2, 0);
            }
            println!("CHILD SURVIVED");
            return;
        }
        Some("no-device") => {
            let path = std::env::var("MIXCCL_ACL_LIB").unwrap();
            // SAFETY: the ACL stub's symbols with their C signatures; the allocation
            // without aclrtSetDevice is the misuse under test.
            unsafe {
                let lib = libloading::Library::new(path).unwrap();
                let init = lib.get::<AclInit>(b"aclInit").unwrap();
                let malloc = lib.get::<AclMalloc>(b"aclrtMalloc").unwrap();
                assert_eq!(init(std::ptr::null()), 0);
                let mut d = std::ptr::null_mut();
                malloc(&mut d, 100, 0);
            }
            println!("CHILD SURVIVED");
            return;
        }
        _ => {}
    }
    let dir = stub_dir();
    let hip = [("MIXCCL_HIP_LIB", build_stub(&dir, "hip", "", &[]))];
    let (ok, out) = child("mixed_errors_stubs_abort_on_misuse", "past-end", &hip, &[]);
    assert!(!ok && !out.contains("CHILD SURVIVED"), "{out}");
    assert!(
        out.contains("MISUSE in hipMemcpyAsync(DeviceToHost) src: copy runs past the end"),
        "{out}"
    );
    let acl = [("MIXCCL_ACL_LIB", build_stub(&dir, "acl", "", &[]))];
    let (ok, out) = child("mixed_errors_stubs_abort_on_misuse", "no-device", &acl, &[]);
    assert!(!ok && !out.contains("CHILD SURVIVED"), "{out}");
    assert!(
        out.contains("MISUSE in aclrtMalloc: device call on a thread with no device set"),
        "{out}"
    );
}
