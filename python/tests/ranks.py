"""One rank of a test job: `python ranks.py SCENARIO BACKEND RANK WORLD PORT OUT`.

Joins the job through the TCPStore the test process serves on 127.0.0.1:PORT, runs
SCENARIO with init_process_group(BACKEND), and saves what it returns to OUT with
torch.save. The test (harness.py) compares the saved results across ranks and
backends.
"""

import contextlib
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

import mixccl_torch  # noqa: F401  (registers "mixccl")

# dtype -> tolerance-free values: every input element is 1, 2 or 3, so sums and
# products over up to 4 ranks are exact in every dtype, int8 and bfloat16 included.
DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
] + [getattr(torch, name) for name in ("uint32", "uint64") if hasattr(torch, name)]
OPS = {
    "sum": dist.ReduceOp.SUM,
    "prod": dist.ReduceOp.PRODUCT,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
    "avg": dist.ReduceOp.AVG,
}
COUNTS = [1, 7, 1031]


def values(rank, count, dtype, salt=0):
    """Rank `rank`'s input: elements in {1, 2, 3}, different on every rank."""
    return ((torch.arange(count) * 7 + rank * 5 + salt) % 3 + 1).to(dtype)


def reference(op, inputs, dtype):
    stacked = torch.stack([i.to(torch.float64) for i in inputs])
    if op == "sum":
        r = stacked.sum(0)
    elif op == "prod":
        r = stacked.prod(0)
    elif op == "max":
        r = stacked.max(0).values
    elif op == "min":
        r = stacked.min(0).values
    else:
        r = stacked.sum(0) / len(inputs)
        if not dtype.is_floating_point:
            r = torch.trunc(r)
    return r.to(dtype)


class Checker:
    def __init__(self):
        self.checked = 0
        self.failures = []

    def same(self, what, got, want):
        self.checked += 1
        try:
            if got.dtype.is_floating_point:
                torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
            else:
                assert torch.equal(got, want), f"got {got[:8]}, want {want[:8]}"
        except AssertionError as e:
            self.failures.append(f"{what}: {e}")


def noncontig(t):
    """The same values as t, in a non-contiguous tensor (every other column of a
    wider buffer)."""
    wide = torch.zeros((t.numel(), 2), dtype=t.dtype)
    wide[:, 0] = t
    view = wide[:, 0]
    assert not view.is_contiguous()
    return view


def collectives(rank, world):
    """Every collective x dtype (x op x count), contiguous and not, against a
    reference each rank computes from all ranks' inputs."""
    ck = Checker()
    for dtype in DTYPES:
        for count in COUNTS:
            ins = [values(r, count, dtype) for r in range(world)]
            # (a one-element view is always contiguous)
            for layout in ("contig", "strided") if count > 1 else ("contig",):
                make = (lambda t: t.clone()) if layout == "contig" else noncontig
                tag = f"{dtype} n={count} {layout}"
                for name, op in OPS.items():
                    t = make(ins[rank])
                    dist.all_reduce(t, op=op)
                    ck.same(f"all_reduce {name} {tag}", t, reference(name, ins, dtype))
                    root = count % world
                    t = make(ins[rank])
                    dist.reduce(t, dst=root, op=op)
                    if rank == root:
                        ck.same(f"reduce {name} {tag}", t, reference(name, ins, dtype))
                    else:
                        ck.same(f"reduce {name} {tag} off-root untouched", t, ins[rank])
                    # reduce_scatter: rank r's block j is values(r, .., salt=j).
                    blocks = [[values(r, count, dtype, j) for j in range(world)] for r in range(world)]
                    out = make(torch.zeros(count, dtype=dtype))
                    dist.reduce_scatter(out, [make(b) for b in blocks[rank]], op=op)
                    want = reference(name, [blocks[r][rank] for r in range(world)], dtype)
                    ck.same(f"reduce_scatter {name} {tag}", out, want)
                    out = make(torch.zeros(count, dtype=dtype))
                    dist.reduce_scatter_tensor(out, torch.cat(blocks[rank]), op=op)
                    ck.same(f"reduce_scatter_tensor {name} {tag}", out, want)
                root = (count + 1) % world
                t = make(ins[rank] if rank == root else torch.zeros(count, dtype=dtype))
                dist.broadcast(t, src=root)
                ck.same(f"broadcast {tag}", t, ins[root])
                outs = [make(torch.zeros(count, dtype=dtype)) for _ in range(world)]
                dist.all_gather(outs, make(ins[rank]))
                for r in range(world):
                    ck.same(f"all_gather[{r}] {tag}", outs[r], ins[r])
                flat = torch.zeros(world * count, dtype=dtype)
                dist.all_gather_into_tensor(flat, make(ins[rank]))
                ck.same(f"all_gather_into_tensor {tag}", flat, torch.cat(ins))
                # all_to_all_single: block j of rank r is values(r, .., salt=j).
                src = torch.cat([values(rank, count, dtype, j) for j in range(world)])
                dst = torch.zeros(world * count, dtype=dtype)
                dist.all_to_all_single(dst, src)
                want = torch.cat([values(r, count, dtype, rank) for r in range(world)])
                ck.same(f"all_to_all_single {tag}", dst, want)
                # send/recv around a ring, ordered so that nothing waits on itself.
                nxt, prv = (rank + 1) % world, (rank - 1) % world
                got = make(torch.zeros(count, dtype=dtype))
                if rank % 2 == 0:
                    dist.send(make(ins[rank]), nxt)
                    dist.recv(got, prv)
                else:
                    dist.recv(got, prv)
                    dist.send(make(ins[rank]), nxt)
                ck.same(f"send/recv {tag}", got, ins[prv])
    # Uneven all_to_all_single and list all_to_all: rank r sends j+1 rows to rank j.
    rows = lambda r, j: values(r, (j + 1) * 3, torch.float32, r * world + j).view(j + 1, 3)
    src = torch.cat([rows(rank, j) for j in range(world)])
    dst = torch.zeros((rank + 1) * world, 3)
    dist.all_to_all_single(
        dst, src, [rank + 1] * world, [j + 1 for j in range(world)]
    )
    ck.same("all_to_all_single uneven", dst, torch.cat([rows(r, rank) for r in range(world)]))
    outs = [torch.zeros(rank + 1, 3) for _ in range(world)]
    dist.all_to_all(outs, [rows(rank, j) for j in range(world)])
    for r in range(world):
        ck.same(f"all_to_all[{r}]", outs[r], rows(r, rank))
    # Coalesced point-to-point: everyone sends to the next and receives from the
    # previous at once (would deadlock without a group).
    nxt, prv = (rank + 1) % world, (rank - 1) % world
    got = torch.zeros(5)
    reqs = dist.batch_isend_irecv(
        [dist.P2POp(dist.isend, values(rank, 5, torch.float32), nxt),
         dist.P2POp(dist.irecv, got, prv)]
    )
    for r in reqs:
        r.wait()
    ck.same("batch_isend_irecv", got, values(prv, 5, torch.float32))
    # gather / scatter.
    outs = [torch.zeros(4) for _ in range(world)] if rank == 0 else None
    dist.gather(values(rank, 4, torch.float32), outs, dst=0)
    if rank == 0:
        for r in range(world):
            ck.same(f"gather[{r}]", outs[r], values(r, 4, torch.float32))
    got = torch.zeros(4)
    dist.scatter(got, [values(r, 4, torch.float32, 1) for r in range(world)] if rank == 0 else None, src=0)
    ck.same("scatter", got, values(rank, 4, torch.float32, 1))
    # bool travels as bytes (max = any, min = all); complex as pairs of reals.
    b = torch.tensor([rank == 0, True, False])
    dist.all_reduce(b, op=dist.ReduceOp.MAX)
    ck.same("all_reduce bool max", b.to(torch.uint8), torch.tensor([1, 1, 0], dtype=torch.uint8))
    c = torch.tensor([1 + 2j, rank * 1j], dtype=torch.complex64)
    dist.all_reduce(c)
    ck.same("all_reduce complex", torch.view_as_real(c), torch.view_as_real(
        torch.tensor([world * (1 + 2j), sum(range(world)) * 1j], dtype=torch.complex64)))
    # Async works complete in order through futures holding the tensors.
    ts = [values(rank, 100, torch.float32, i) for i in range(8)]
    works = [dist.all_reduce(t, async_op=True) for t in ts]
    for i, w in enumerate(works):
        res = w.get_future().wait()
        ck.same(f"async future {i}", res[0], reference("sum", [values(r, 100, torch.float32, i) for r in range(world)], torch.float32))
    dist.barrier()
    return {"checked": ck.checked, "failures": ck.failures}


# -- DDP equivalence

class MLP(nn.Module):
    def __init__(self, with_unused=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
        # A branch forward never uses: only find_unused_parameters=True copes.
        self.unused = nn.Linear(8, 8) if with_unused else None

    def forward(self, x):
        return self.net(x)


class BNNet(nn.Module):
    def __init__(self, with_unused=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
        self.unused = nn.Linear(8, 8) if with_unused else None

    def forward(self, x):
        return self.net(x)


VARIANTS = {
    "plain": {},
    "bucket_view": {"gradient_as_bucket_view": True},
    "find_unused": {"find_unused_parameters": True},
    "fp16_hook": {"hook": "fp16"},
}


def train(model_name, variant, rank, world, steps=20):
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP

    opts = dict(VARIANTS[variant])
    hook = opts.pop("hook", None)
    torch.manual_seed(1234)
    cls = MLP if model_name == "mlp" else BNNet
    model = cls(with_unused=variant == "find_unused")
    # Small buckets: several allreduces per step, overlapping backward.
    ddp = DDP(model, bucket_cap_mb=0.002, **opts)
    if hook == "fp16":
        ddp.register_comm_hook(None, default_hooks.fp16_compress_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    for step in range(steps):
        g = torch.Generator().manual_seed(1000 * rank + step)
        x = torch.randn(8, 16, generator=g)
        y = torch.randn(8, 4, generator=g)
        opt.zero_grad()
        loss = nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def ddp(rank, world):
    return {
        (m, v): train(m, v, rank, world) for m in ("mlp", "bn") for v in VARIANTS
    }


# -- faults

def killed_peer(rank, world):
    """Rank world-1 dies in the middle of the job; the others must get an error
    naming their rank, within the timeout, from the next collective."""
    t = torch.ones(1000)
    dist.all_reduce(t)
    if rank == world - 1:
        os._exit(17)
    start = time.monotonic()
    try:
        for _ in range(50):
            dist.all_reduce(t)
        return {"error": None, "seconds": time.monotonic() - start}
    except Exception as e:  # what the user sees
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - start}


def silent_peer(rank, world):
    """Rank world-1 stops calling collectives (but stays alive): the others time out."""
    t = torch.ones(10)
    dist.all_reduce(t)
    if rank == world - 1:
        # Silent until rank 0 has saved its result (or TEST_SILENT_SLEEP passes).
        deadline = time.monotonic() + float(os.environ["TEST_SILENT_SLEEP"])
        while time.monotonic() < deadline and not (OUT.parent / "rank0.pt").exists():
            time.sleep(0.2)
        return {"error": None, "seconds": 0.0}
    start = time.monotonic()
    try:
        dist.all_reduce(t)
        return {"error": None, "seconds": time.monotonic() - start}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}", "seconds": time.monotonic() - start}


# -- the device-tensor path, on host tensors posing as a device

class FakeDevice:
    """Stands in for torch.device("fakedev:0"): hashable, with a type."""

    type = "fakedev"
    index = 0

    def __repr__(self):
        return "fakedev:0"


class FakeDeviceModule:
    """torch.cuda's stream and event API, logging each use in order. The buffers
    are host memory, so the C calls (stream handle 0) complete before they return
    and every event has passed once recorded."""

    def __init__(self):
        self.log = []
        self.current = self.Stream(name="current")

    def Stream(self, device=None, name=None):  # noqa: N802 (torch's name)
        module = self

        class _Stream:
            fakedev_stream = 0

            def __init__(self):
                self.name = name or f"stream{len(module.log)}"

            def wait_event(self, event):
                module.log.append(("wait", self.name, event.name))

        return _Stream()

    def Event(self):  # noqa: N802
        module = self

        class _Event:
            def __init__(self):
                self.name = f"event{sum(1 for e in module.log if e[0] == 'event')}"
                module.log.append(("event", self.name))

            def record(self, stream):
                module.log.append(("record", self.name, stream.name))

            def synchronize(self):
                pass

        return _Event()

    def current_stream(self, device=None):
        return self.current

    def stream(self, s):
        return contextlib.nullcontext()


def fake_device(rank, world):
    """The device path of the backend (ready event on the caller's stream, the
    group's stream waiting for it, the done event, Work.wait ordering the caller's
    stream, futures completed by the completion thread), with host tensors posing
    as device tensors. Returns the results and the order of stream operations."""
    from mixccl_torch import process_group as pg

    fake = FakeDeviceModule()
    real_module, real_init = pg.device_module, pg._Buffer.__init__
    pg.device_module = lambda kind: fake if kind == "fakedev" else real_module(kind)
    pg.record_stream = lambda tensor, stream: None

    device = FakeDevice()

    def init(self, tensor):
        real_init(self, tensor)
        self.device = device

    pg._Buffer.__init__ = init
    try:
        out = {}
        t = values(rank, 1031, torch.float32)
        dist.all_reduce(t)  # async_op=False: torch calls Work.wait()
        out["allreduce"] = t
        g = torch.empty(world * 5, dtype=torch.int32)
        work = dist.all_gather_into_tensor(g, values(rank, 5, torch.int32), async_op=True)
        fut = work.get_future()
        work.wait()
        fut.wait()
        out["allgather"] = g
        out["future_done"] = fut.done()
        b = values(rank, 7, torch.float64)
        dist.broadcast(b, src=world - 1)
        out["broadcast"] = b
        out["log"] = list(fake.log)
        return out
    finally:
        pg.device_module, pg._Buffer.__init__ = real_module, real_init


OUT = None  # this rank's result file (main sets it)

def uneven(rank, world):
    """Uneven all_gather / reduce_scatter / all_to_all_single (the mixccl*V calls)
    and fp8 tensors, against references each rank computes from every rank's input."""
    ck = Checker()
    sizes = [(2, 0, 5, 1)[r % 4] + r // 4 for r in range(world)]
    for dtype in (torch.float32, torch.int64, torch.bfloat16):
        ins = [values(r, sizes[r], dtype) for r in range(world)]
        outs = [torch.zeros(sizes[r], dtype=dtype) for r in range(world)]
        dist.all_gather(outs, ins[rank].clone())
        for r in range(world):
            ck.same(f"all_gather uneven {dtype} from {r}", outs[r], ins[r])
        for name in ("sum", "max"):
            blocks = [[values(r, sizes[j], dtype, j) for j in range(world)] for r in range(world)]
            out = torch.zeros(sizes[rank], dtype=dtype)
            dist.reduce_scatter(out, [b.clone() for b in blocks[rank]], op=OPS[name])
            want = reference(name, [blocks[r][rank] for r in range(world)], dtype)
            ck.same(f"reduce_scatter uneven {name} {dtype}", out, want)
        # all_to_all_single: rank i sends (i + 2j) % 3 rows of 4 to rank j.
        rows = lambda i, j: (i + 2 * j) % 3  # noqa: E731
        send_splits = [rows(rank, j) for j in range(world)]
        recv_splits = [rows(i, rank) for i in range(world)]
        inp = torch.cat([
            (torch.arange(rows(rank, j) * 4) + 100 * rank + 10 * j).to(dtype).view(-1, 4)
            for j in range(world)
        ])
        out = torch.zeros(sum(recv_splits), 4, dtype=dtype)
        dist.all_to_all_single(out, inp, recv_splits, send_splits)
        want = torch.cat([
            (torch.arange(rows(i, rank) * 4) + 100 * i + 10 * rank).to(dtype).view(-1, 4)
            for i in range(world)
        ])
        ck.same(f"all_to_all_single uneven {dtype}", out, want)
    for name in ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz"):
        if not hasattr(torch, name):
            continue
        dtype = getattr(torch, name)
        ins = [values(r, 1031, torch.float64) for r in range(world)]
        for op in ("sum", "max", "min"):
            t = ins[rank].to(dtype)
            dist.all_reduce(t, op=OPS[op])
            want = reference(op, ins, torch.float64).to(dtype)
            ck.same(f"all_reduce {op} {name}", t.view(torch.uint8), want.view(torch.uint8))
        outs = [torch.zeros(sizes[r], dtype=dtype) for r in range(world)]
        dist.all_gather(outs, ins[rank][: sizes[rank]].to(dtype))
        for r in range(world):
            ck.same(f"all_gather uneven {name} from {r}", outs[r].view(torch.uint8),
                    ins[r][: sizes[r]].to(dtype).view(torch.uint8))
    return {"checked": ck.checked, "failures": ck.failures}


SCENARIOS = {
    "collectives": collectives,
    "uneven": uneven,
    "ddp": ddp,
    "killed_peer": killed_peer,
    "silent_peer": silent_peer,
    "fake_device": fake_device,
}


def main():
    global OUT
    scenario, backend, rank, world, port, out = sys.argv[1:7]
    OUT = Path(out)
    rank, world, port = int(rank), int(world), int(port)
    timeout = timedelta(seconds=float(os.environ.get("TEST_PG_TIMEOUT", "60")))
    store = dist.TCPStore("127.0.0.1", port, world, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    torch.manual_seed(0)
    result = SCENARIOS[scenario](rank, world)
    torch.save(result, out)
    if scenario in ("killed_peer", "silent_peer"):
        # The group is broken; leave without a collective shutdown.
        sys.stdout.flush()
        os._exit(0)
    dist.destroy_process_group()
    # Skip the interpreter's teardown: under load it once ended a rank that had saved
    # its results with SIGABRT ("terminate called without an active exception", from
    # libstdc++ at exit; cause not found), which is not what these tests check.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
