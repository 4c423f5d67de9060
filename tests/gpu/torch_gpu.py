"""Real-GPU checks of issue 15 (stream-ordered calls, the drop-in libnccl.so.2, the
mixccl backend on CUDA tensors), run by tests/gpu/stream_order.sh on a machine with
an NVIDIA GPU and torch (CUDA build). Every rank uses GPU 0.

    python torch_gpu.py abi NP            (a) ncclAllReduce on a busy stream returns at once
    python torch_gpu.py ddp BACKEND NP    (b)/(c)/(d) 20 DDP steps; prints the step time
                                          and saves the parameters for comparison
    python torch_gpu.py compare A B       parameters of two ddp runs agree within 1e-5
    python torch_gpu.py floor             the driver's own cost of what (a) queues per
                                          call (event record, host function, two 4 MiB
                                          copies), each timed alone on a busy stream

The library is MIXCCL_LIB (libmixccl.so) for `abi`; `ddp nccl` runs torch's own nccl
backend on whatever libnccl.so.2 the loader finds (LD_PRELOAD the mixccl build).
"""

import ctypes
import os
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PORT = int(os.environ.get("TEST_PORT", "29611"))
OUT = os.environ.get("TEST_OUT", "/tmp/torch_gpu")


def _store(rank, world):
    return dist.TCPStore("127.0.0.1", PORT, world, is_master=rank == 0,
                         timeout=timedelta(seconds=120))


def _abi_rank(rank, world, results):
    lib = ctypes.CDLL(os.environ["MIXCCL_LIB"])
    vp, c_int, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    lib.ncclAllReduce.argtypes = [vp, vp, c_size_t, c_int, c_int, vp, vp]
    class UniqueId(ctypes.Structure):  # ncclUniqueId, passed by value
        _fields_ = [("internal", ctypes.c_char * 128)]

    lib.ncclCommInitRank.argtypes = [ctypes.POINTER(vp), c_int, UniqueId, c_int]
    store = _store(rank, world)
    uid = UniqueId()
    if rank == 0:
        assert lib.ncclGetUniqueId(ctypes.byref(uid)) == 0
        store.set("uid", ctypes.string_at(ctypes.addressof(uid), 128))
    else:
        uid = UniqueId.from_buffer_copy(bytes(store.get("uid")))
    comm = vp()
    assert lib.ncclCommInitRank(ctypes.byref(comm), world, uid, rank) == 0
    torch.cuda.set_device(0)
    n = 1 << 20
    stream = torch.cuda.Stream()
    returns = []
    for it in range(10):
        x = torch.full((n,), float(rank + 1 + it), device="cuda")
        torch.cuda.synchronize()
        with torch.cuda.stream(stream):
            torch.cuda._sleep(200_000_000)  # ~0.1 s of a spinning kernel ahead of the call
            x.add_(0)  # and a write of the input the call must see
            t0 = time.perf_counter()
            rc = lib.ncclAllReduce(x.data_ptr(), x.data_ptr(), n, 7, 0, comm, stream.cuda_stream)
            returns.append(time.perf_counter() - t0)
        assert rc == 0, f"ncclAllReduce returned {rc}"
        stream.synchronize()
        want = sum(r + 1 + it for r in range(world))
        wrong = int((x != want).sum())
        assert wrong == 0, f"rank {rank} iteration {it}: {wrong} wrong elements"
    lib.ncclCommDestroy(comm)
    results[rank] = statistics.median(returns) * 1e6


def abi(world):
    results = mp.Manager().dict()
    mp.spawn(_abi_rank, args=(world, results), nprocs=world)
    worst = max(results.values())
    print(f"(a) np={world}: ncclAllReduce on a busy stream returned in a median of "
          f"{', '.join(f'{results[r]:.1f}' for r in sorted(results))} us per rank; results correct")
    if worst >= 100:
        print(f"(a) FAIL: {worst:.1f} us >= 100 us")
        sys.exit(1)


def floor():
    """Median microseconds of each driver call a stream-ordered call makes on the
    caller's thread, timed alone from Python on a stream busy with a kernel."""
    cu = ctypes.CDLL("libcuda.so.1")
    vp, c_size_t = ctypes.c_void_p, ctypes.c_size_t
    torch.cuda.set_device(0)
    n = 1 << 20
    x = torch.ones(n, device="cuda")
    pinned = torch.empty(n, pin_memory=True)
    stream = torch.cuda.Stream()
    s = vp(stream.cuda_stream)
    ev = vp()
    assert cu.cuEventCreate(ctypes.byref(ev), 2) == 0  # CU_EVENT_DISABLE_TIMING
    host_fn = ctypes.CFUNCTYPE(None, vp)(lambda _: None)
    cu.cuMemcpyDtoHAsync_v2.argtypes = [vp, ctypes.c_uint64, c_size_t, vp]
    cu.cuMemcpyHtoDAsync_v2.argtypes = [ctypes.c_uint64, vp, c_size_t, vp]
    ops = {
        "cuEventRecord": lambda: cu.cuEventRecord(ev, s),
        "cuLaunchHostFunc": lambda: cu.cuLaunchHostFunc(s, host_fn, None),
        "cuMemcpyDtoHAsync 4 MiB": lambda: cu.cuMemcpyDtoHAsync_v2(
            pinned.data_ptr(), x.data_ptr(), 4 * n, s),
        "cuMemcpyHtoDAsync 4 MiB": lambda: cu.cuMemcpyHtoDAsync_v2(
            x.data_ptr(), pinned.data_ptr(), 4 * n, s),
        "nothing (ctypes and timing)": lambda: 0,
    }
    times = {k: [] for k in ops}
    for _ in range(10):
        with torch.cuda.stream(stream):
            torch.cuda._sleep(200_000_000)
        for k, f in ops.items():
            t0 = time.perf_counter()
            rc = f()
            times[k].append(time.perf_counter() - t0)
            assert rc == 0, f"{k} returned {rc}"
        stream.synchronize()
    for k, v in times.items():
        print(f"floor: {k}: median {statistics.median(v) * 1e6:.1f} us")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(8)])

    def forward(self, x):
        return self.layers(x)


def _ddp_rank(rank, world, backend, steps):
    if backend == "mixccl":
        import mixccl_torch  # noqa: F401
    torch.cuda.set_device(0)
    dist.init_process_group(backend, store=_store(rank, world), rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    torch.manual_seed(1234)
    model = Net().cuda()
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0], bucket_cap_mb=4)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    times = []
    for step in range(steps):
        g = torch.Generator(device="cuda").manual_seed(1000 * rank + step)
        x = torch.randn(64, 1024, device="cuda", generator=g)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad()
        ddp(x).square().mean().backward()
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        label = os.environ.get("TEST_LABEL", backend)
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, f"{OUT}/{label}.pt")
        ms = statistics.median(times[3:]) * 1e3
        print(f"ddp {label} np={world}: median step {ms:.2f} ms over steps 4-{steps}")
    dist.destroy_process_group()


def ddp(backend, world, steps=20):
    os.makedirs(OUT, exist_ok=True)
    mp.spawn(_ddp_rank, args=(world, backend, steps), nprocs=world)


def compare(a, b):
    pa, pb = torch.load(f"{OUT}/{a}.pt"), torch.load(f"{OUT}/{b}.pt")
    worst = max(float((pa[k] - pb[k]).abs().max()) for k in pa)
    print(f"parameters {a} vs {b}: max difference {worst:.3g}")
    if worst > 1e-5:
        print("FAIL: more than 1e-5")
        sys.exit(1)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "abi":
        abi(int(sys.argv[2]))
    elif what == "ddp":
        ddp(sys.argv[2], int(sys.argv[3]))
    elif what == "compare":
        compare(sys.argv[2], sys.argv[3])
    elif what == "floor":
        floor()
    else:
        sys.exit(__doc__)
