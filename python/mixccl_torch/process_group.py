"""ProcessGroupMixccl: a torch.distributed.ProcessGroup whose collectives run on
one mixccl communicator.

Owns the communicator and one worker thread per group. Every call is turned into
an operation (the C calls, then the copy back into non-contiguous outputs) and
queued; the worker runs operations one at a time in call order, which is the
order every rank issues them, and completes each operation's torch Future with
its tensors (or with the MixcclError that stopped it). The caller gets a Work at
once, so DDP's gradient buckets are reduced while backward goes on.

Device tensors (cuda, and npu / mlu / musa where the vendor's torch extension is
loaded) follow ProcessGroupNCCL's stream semantics. At the call, an event is
recorded on torch's current stream of the tensor's device; the worker makes the
group's own stream of that device wait for it and enqueues the C call on that
stream (mixccl's C ABI is stream-ordered for device buffers: it returns without
waiting for the device or the network), then records a done event. `Work.wait()`
makes the caller's current stream wait for the done event, with no host wait for
the data; `Work.get_future()` completes once the done event has passed (a
completion thread waits for it) and mixccl reports no error. Ranks may hold
tensors of different device types (rank 0 cuda, rank 1 npu): nothing here
assumes that peers use the same kind of device.

Every wait is bounded: the store wait for the unique id by the store's timeout,
each mixccl call by the communicator's timeout (init_process_group's), and a
failed communicator fails every later call at once.
"""

import ctypes
import importlib.util
import ipaddress
import os
import queue
import threading
from datetime import timedelta

import torch
import torch.distributed as dist

from . import _lib
from ._lib import MixcclError

# Store key under which rank 0 publishes the unique id (the store is already
# prefixed per group by torch).
UNIQUE_ID_KEY = "mixccl/unique_id"
_LIB = None


def _library():
    global _LIB
    if _LIB is None:
        _LIB = _lib.load()
    return _LIB


# Device types whose tensors the backend serves besides "cpu", with the torch
# extension that provides each one's torch.<type> module. "cuda" is NVIDIA's, and
# AMD's under ROCm builds of torch (which keep the "cuda" name).
DEVICE_EXTENSIONS = {"cuda": None, "npu": "torch_npu", "mlu": "torch_mlu", "musa": "torch_musa"}


def device_types():
    """The device types to register the backend for: cpu, cuda, and each of npu,
    mlu, musa whose vendor extension is importable."""
    types = ["cpu"]
    for kind, ext in DEVICE_EXTENSIONS.items():
        if ext is None or importlib.util.find_spec(ext) is not None:
            types.append(kind)
    return types


def device_module(kind):
    """torch's module for a device type (torch.cuda, torch.npu, ...), importing the
    vendor's extension first when it has one."""
    ext = DEVICE_EXTENSIONS.get(kind)
    if ext is not None:
        importlib.import_module(ext)
    mod = getattr(torch, kind, None)
    if mod is None:
        raise MixcclError(f"mixccl_torch: torch has no {kind!r} device module")
    return mod


def stream_handle(kind, stream):
    """The runtime's stream handle (cudaStream_t, aclrtStream, ...) of a torch stream,
    as an integer for the C call."""
    for attr in (f"{kind}_stream", "cuda_stream", "stream_id"):
        handle = getattr(stream, attr, None)
        if handle is not None:
            return int(handle)
    raise MixcclError(f"mixccl_torch: cannot get the runtime handle of a {kind} stream")


def record_stream(tensor, stream):
    """Tells torch's caching allocator that `stream` uses `tensor`."""
    tensor.record_stream(stream)


class _NoStream:
    """The stream context of host-tensor ops: none."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _DeviceLane:
    """The group's own stream on one device, on which its calls are enqueued."""

    def __init__(self, device):
        self.device = device
        self.module = device_module(device.type)
        self.stream = self.module.Stream(device=device)
        self.handle = stream_handle(device.type, self.stream)


class _Work(dist._Work):
    """The handle a call returns: completes with the operation's Future. wait()
    raises the operation's MixcclError (torch's future-wrapping Work would only
    return, leaving the failure unseen by a synchronous caller). For device
    tensors wait() orders the caller's current stream after the call instead of
    blocking the host (ProcessGroupNCCL's semantics)."""

    def __init__(self, fut, op=None, bound=None):
        super().__init__()
        self._fut = fut
        self._op = op
        self._bound = bound

    def wait(self, timeout=None):
        op = self._op
        if op is None or op.device is None:
            self._fut.wait()  # raises the stored error
            return True
        bound = self._bound if timeout is None or not timeout else timeout
        seconds = bound.total_seconds() if isinstance(bound, timedelta) else bound
        if not op.enqueued.wait(seconds):
            raise MixcclError(f"mixccl: {op.name} was not enqueued within {seconds} s")
        if op.error is not None:
            raise op.error
        lane = op.lane
        lane.module.current_stream(lane.device).wait_event(op.done)
        return True

    def is_completed(self):
        return self._fut.done()

    def get_future(self):
        return self._fut


class _Op:
    """One queued call: `launch(stream)` makes the C calls (stream: the runtime
    handle, or None for host tensors), `finish` copies results back (after the
    outermost ncclGroupEnd when the op is part of a coalesced group). A device op
    also carries its device, the event recorded on the caller's stream at the call
    (`ready`), the event recorded after it on the group's stream (`done`) and
    whether the worker has enqueued it yet."""

    __slots__ = ("name", "launch", "finish", "result", "future", "device", "lane",
                 "ready", "done", "enqueued", "error", "bufs")

    def __init__(self, name, launch, finish, result, device=None):
        self.name = name
        self.launch = launch
        self.finish = finish
        self.result = result
        self.future = torch.futures.Future()
        self.device = device
        self.lane = None
        self.ready = None
        self.done = None
        self.enqueued = threading.Event()
        self.error = None
        self.bufs = ()


class _Buffer:
    """A tensor as mixccl sees it: a contiguous buffer, its nccl datatype and element
    count. Non-contiguous tensors are staged through a contiguous copy; complex
    tensors travel as pairs of reals."""

    def __init__(self, tensor):
        if tensor.device.type != "cpu" and tensor.device.type not in DEVICE_EXTENSIONS:
            raise ValueError(
                f"mixccl_torch handles cpu and {', '.join(DEVICE_EXTENSIONS)} tensors, "
                f"got {tensor.device}"
            )
        self.tensor = tensor
        self.device = None if tensor.device.type == "cpu" else tensor.device
        self.staged = tensor if tensor.is_contiguous() else tensor.contiguous()
        flat = torch.view_as_real(self.staged) if self.staged.is_complex() else self.staged
        if flat.dtype not in _lib.DTYPES:
            raise TypeError(f"mixccl has no datatype for {tensor.dtype}")
        self.dtype = _lib.DTYPES[flat.dtype]
        self.count = flat.numel()
        self.ptr = flat.data_ptr() if self.count else None

    def copy_back(self):
        if self.staged is not self.tensor:
            self.tensor.copy_(self.staged)


def _op_code(reduce_op, tensor):
    """nccl op value of a torch ReduceOp, refusing combinations mixccl would get
    wrong (sums of bools, products of complex numbers)."""
    kind = getattr(reduce_op, "op", reduce_op)
    if kind not in _lib.OPS:
        raise ValueError(f"mixccl_torch does not support ReduceOp {kind}")
    if tensor.dtype == torch.bool and kind not in (
        dist.ReduceOp.MAX,
        dist.ReduceOp.MIN,
        dist.ReduceOp.PRODUCT,
    ):
        raise ValueError(f"ReduceOp {kind} on bool tensors is not supported (use MAX or MIN)")
    if tensor.is_complex() and kind not in (dist.ReduceOp.SUM, dist.ReduceOp.AVG):
        raise ValueError(f"ReduceOp {kind} on complex tensors is not supported")
    return _lib.OPS[kind]


def _one(tensors, what):
    if len(tensors) != 1:
        raise ValueError(f"mixccl_torch {what} takes exactly one tensor, got {len(tensors)}")
    return tensors[0]


def _loopback(addr):
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return addr == "localhost"


class ProcessGroupMixccl(dist.ProcessGroup):
    """torch.distributed backend "mixccl" (CPU tensors): see the module comment."""

    def __init__(self, store, rank, size, timeout):
        super().__init__(rank, size)
        self._rank = rank
        self._size = size
        self._timeout = timeout if isinstance(timeout, timedelta) else timedelta(seconds=1800)
        self._lib = _library()
        self._comm = ctypes.c_void_p()
        self._init_comm(store)
        self._coalesced = None
        self._queue = queue.SimpleQueue()
        self._closed = False
        # The group's stream per device, made on first use (worker thread only).
        self._lanes = {}
        # Device ops enqueued and not yet known to be done, oldest first.
        self._completions = queue.SimpleQueue()
        self._worker = threading.Thread(
            target=self._run, name=f"mixccl-rank{rank}", daemon=True
        )
        self._worker.start()
        self._completer = threading.Thread(
            target=self._complete, name=f"mixccl-done-rank{rank}", daemon=True
        )
        self._completer.start()

    # -- setup and teardown

    def _init_comm(self, store):
        lib = self._lib
        env = {"MIXCCL_TIMEOUT": str(max(self._timeout.total_seconds(), 0.001))}
        # With the job's store on loopback every rank is on this host: keep the
        # rendezvous on loopback too, unless the user chose an interface.
        if (
            "MIXCCL_SOCKET_IFNAME" not in os.environ
            and "NCCL_SOCKET_IFNAME" not in os.environ
            and _loopback(os.environ.get("MASTER_ADDR", ""))
        ):
            env["MIXCCL_SOCKET_IFNAME"] = "lo"
        # Sleep in poll at once instead of polling for 100 us first: training has
        # compute threads competing with the worker for the cores, and the busy poll
        # took their time (25M-parameter DDP step, 4 ranks on 2 cores: 309 ms with 0
        # against 839 ms with 100, gloo 417-660 ms; docs/performance.md).
        if "MIXCCL_SPIN_US" not in os.environ:
            env["MIXCCL_SPIN_US"] = "0"
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            uid = _lib.UniqueId()
            if self._rank == 0:
                self._check(lib.ncclGetUniqueId(ctypes.byref(uid)), "ncclGetUniqueId", None)
                store.set(UNIQUE_ID_KEY, ctypes.string_at(ctypes.addressof(uid), 128))
            else:
                # Bounded by the store's timeout (init_process_group's).
                data = store.get(UNIQUE_ID_KEY)
                uid = _lib.UniqueId.from_buffer_copy(bytes(data))
            code = lib.ncclCommInitRank(ctypes.byref(self._comm), self._size, uid, self._rank)
            self._check(code, "ncclCommInitRank", None)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _check(self, code, call, comm="self"):
        if code != _lib.SUCCESS:
            comm = self._comm if comm == "self" else comm
            name, detail = _lib.describe(self._lib, code, comm)
            raise MixcclError(
                f"mixccl rank {self._rank} of {self._size}: {call} failed: {name}: {detail}",
                code,
            )

    def _lane(self, device):
        lane = self._lanes.get(device)
        if lane is None:
            lane = self._lanes[device] = _DeviceLane(device)
        return lane

    def _run(self):
        while True:
            item = self._queue.get()
            if item is None:
                self._completions.put(None)
                return
            ops = item if isinstance(item, list) else [item]
            try:
                self._launch(item, ops)
            except BaseException as e:  # every waiter must hear of it
                if not isinstance(e, MixcclError):
                    e = MixcclError(f"mixccl rank {self._rank} of {self._size}: {e!r}")
                for op in ops:
                    op.error = e
                    op.enqueued.set()
                    op.future.set_exception(e)
                continue
            for op in ops:
                if op.device is None:
                    op.future.set_result(op.result)
                else:
                    op.enqueued.set()
                    self._completions.put(op)

    def _launch(self, item, ops):
        """Makes the C calls of one queued item (an op, or a coalesced group of them):
        device ops on the group's stream of their device, after their ready event."""
        devices = {op.device for op in ops if op.device is not None}
        if len(devices) > 1:
            raise MixcclError(
                f"mixccl rank {self._rank}: one coalesced group spans devices {sorted(map(str, devices))}"
            )
        lane = self._lane(devices.pop()) if devices else None
        stream = None
        if lane is not None:
            for op in ops:
                op.lane = lane
                if op.ready is not None:
                    lane.stream.wait_event(op.ready)
                # The caching allocator must not hand these to other work before the
                # group's stream is done with them.
                for b in op.bufs:
                    record_stream(b.tensor, lane.stream)
                    if b.staged is not b.tensor:
                        record_stream(b.staged, lane.stream)
            stream = ctypes.c_void_p(lane.handle)
        context = lane.module.stream(lane.stream) if lane is not None else _NoStream()
        with context:
            if isinstance(item, list):
                self._check(self._lib.ncclGroupStart(), "ncclGroupStart")
                try:
                    for op in ops:
                        op.launch(stream)
                finally:
                    self._check(self._lib.ncclGroupEnd(), "ncclGroupEnd")
            else:
                item.launch(stream)
            for op in ops:
                if op.finish is not None:
                    op.finish()
            if lane is not None:
                for op in ops:
                    op.done = lane.module.Event()
                    op.done.record(lane.stream)

    def _complete(self):
        """Completes device ops' futures in order, once their done event has passed
        and the communicator reports no error."""
        while True:
            op = self._completions.get()
            if op is None:
                return
            try:
                op.done.synchronize()
                code = ctypes.c_int(0)
                if self._comm:
                    self._lib.ncclCommGetAsyncError(self._comm, ctypes.byref(code))
                if code.value not in (_lib.SUCCESS, 7):  # 7: ncclInProgress
                    self._check(code.value, f"{op.name} (stream-ordered)")
            except BaseException as e:
                if not isinstance(e, MixcclError):
                    e = MixcclError(f"mixccl rank {self._rank} of {self._size}: {e!r}")
                op.future.set_exception(e)
                continue
            op.future.set_result(op.result)

    def _submit(self, name, launch, finish, result, bufs=()):
        if self._closed:
            raise MixcclError(f"mixccl rank {self._rank}: {name} after shutdown")
        devices = {b.device for b in bufs}
        if len(devices) > 1:
            raise ValueError(
                f"mixccl_torch {name}: tensors on different devices {sorted(map(str, devices))}"
            )
        device = devices.pop() if devices else None
        op = _Op(name, launch, finish, result, device)
        if device is not None:
            # The call's input is what the caller's stream holds at this point.
            mod = device_module(device.type)
            op.ready = mod.Event()
            op.ready.record(mod.current_stream(device))
        op.bufs = tuple(bufs)
        if self._coalesced is not None:
            self._coalesced.append(op)
        else:
            self._queue.put(op)
        return _Work(op.future, op, self._timeout)

    def shutdown(self, *args, **kwargs):
        """Drains the queue, stops the worker and destroys the communicator."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._worker.join(timeout=self._timeout.total_seconds() + 5)
        if not self._worker.is_alive() and self._comm:
            self._lib.ncclCommDestroy(self._comm)
            self._comm = ctypes.c_void_p()

    def abort(self, *args, **kwargs):
        """Stops calls in flight (they fail within about 100 ms) and frees the
        communicator."""
        self._closed = True
        if self._comm:
            self._lib.ncclCommAbort(self._comm)
            self._comm = ctypes.c_void_p()
        self._queue.put(None)

    # -- identity

    def getBackendName(self):
        return "mixccl"

    def __repr__(self):
        return f"ProcessGroupMixccl(rank={self._rank}, size={self._size})"

    # -- coalescing (batch_isend_irecv, _coalescing_manager): one ncclGroup

    @property
    def supports_coalescing(self):
        return True

    def _get_backend(self, device=None):
        # torch asks the group's backend for a device whether it can coalesce; this
        # group is its own (and only) backend.
        return self

    def start_coalescing(self, device=None):
        if self._coalesced is not None:
            raise MixcclError(f"mixccl rank {self._rank}: coalescing already started")
        self._coalesced = []

    def end_coalescing(self, device=None):
        ops, self._coalesced = self._coalesced or [], None
        done = _Op("coalesced", lambda stream: None, None, [])
        devices = {op.device for op in ops if op.device is not None}
        if len(devices) == 1:
            # The group's Work follows its device ops like any of them.
            done.device = devices.pop()
            done.ready = next(op.ready for op in ops if op.device is not None)
        self._queue.put(ops + [done])
        return _Work(done.future, done, self._timeout)

    # -- collectives

    def allreduce(self, tensors, opts=None):
        t = _one(tensors, "allreduce")
        op = _op_code(opts.reduceOp if opts is not None else dist.ReduceOp.SUM, t)
        b = _Buffer(t)
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclAllReduce(b.ptr, b.ptr, b.count, b.dtype, op, comm, stream),
                "ncclAllReduce",
            )

        return self._submit("allreduce", launch, b.copy_back, tensors, (b,))

    def allreduce_coalesced(self, tensors, opts=None):
        op = opts.reduceOp if opts is not None else dist.ReduceOp.SUM
        bufs = [(_Buffer(t), _op_code(op, t)) for t in tensors]
        comm, lib = self._comm, self._lib

        def launch(stream):
            for b, code in bufs:
                self._check(
                    lib.ncclAllReduce(b.ptr, b.ptr, b.count, b.dtype, code, comm, stream),
                    "ncclAllReduce",
                )

        def finish():
            for b, _ in bufs:
                b.copy_back()

        return self._submit(
            "allreduce_coalesced", launch, finish, tensors, tuple(b for b, _ in bufs)
        )

    def broadcast(self, tensors, opts):
        b = _Buffer(_one(tensors, "broadcast"))
        root = opts.rootRank
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclBroadcast(b.ptr, b.ptr, b.count, b.dtype, root, comm, stream),
                "ncclBroadcast",
            )

        return self._submit("broadcast", launch, b.copy_back, tensors, (b,))

    def reduce(self, tensors, opts):
        t = _one(tensors, "reduce")
        op = _op_code(opts.reduceOp, t)
        b = _Buffer(t)
        root = opts.rootRank
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclReduce(b.ptr, b.ptr, b.count, b.dtype, op, root, comm, stream),
                "ncclReduce",
            )

        finish = b.copy_back if self._rank == root else None
        return self._submit("reduce", launch, finish, tensors, (b,))

    def _allgather_base(self, output, input, opts=None):
        if output.numel() != input.numel() * self._size or output.dtype != input.dtype:
            raise ValueError(
                f"allgather output must hold {self._size} x {input.numel()} {input.dtype}"
            )
        src, dst = _Buffer(input), _Buffer(output)
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclAllGather(src.ptr, dst.ptr, src.count, src.dtype, comm, stream),
                "ncclAllGather",
            )

        return self._submit("allgather", launch, dst.copy_back, [output], (src, dst))

    def allgather(self, output_tensors, input_tensors, opts=None):
        inp = _one(input_tensors, "allgather")
        outs = _one(output_tensors, "allgather")
        if len(outs) != self._size:
            raise ValueError(f"allgather needs {self._size} output tensors, got {len(outs)}")
        if any(o.numel() != inp.numel() for o in outs):
            return self._allgather_v(output_tensors, outs, inp)
        src = _Buffer(inp)
        flat = torch.empty((self._size,) + tuple(inp.shape), dtype=inp.dtype, device=inp.device)
        dst = _Buffer(flat)
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclAllGather(src.ptr, dst.ptr, src.count, src.dtype, comm, stream),
                "ncclAllGather",
            )

        def finish():
            for i, o in enumerate(outs):
                o.copy_(flat[i].view(o.shape))

        return self._submit("allgather", launch, finish, output_tensors, (src, dst))

    def _allgather_v(self, result, outs, inp):
        """all_gather into outputs of different sizes: mixcclAllGatherV."""
        if outs[self._rank].numel() != inp.numel():
            raise ValueError(
                f"allgather output {self._rank} holds {outs[self._rank].numel()} elements "
                f"but this rank's input {inp.numel()}"
            )
        src = _Buffer(inp)
        per = 2 if inp.is_complex() else 1
        counts = [o.numel() * per for o in outs]
        flat = torch.empty(sum(o.numel() for o in outs), dtype=inp.dtype, device=inp.device)
        dst = _Buffer(flat)
        c_counts = _lib.size_array(counts)
        c_displs = _lib.size_array(_lib.displacements(counts))
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.mixcclAllGatherV(
                    src.ptr, src.count, dst.ptr, c_counts, c_displs, src.dtype, comm, stream
                ),
                "mixcclAllGatherV",
            )

        def finish():
            at = 0
            for o in outs:
                o.copy_(flat[at : at + o.numel()].view(o.shape))
                at += o.numel()

        return self._submit("allgather", launch, finish, result, (src, dst))

    def _reduce_scatter_base(self, output, input, opts=None):
        op = _op_code(opts.reduceOp if opts is not None else dist.ReduceOp.SUM, input)
        if input.numel() != output.numel() * self._size or output.dtype != input.dtype:
            raise ValueError(
                f"reduce_scatter input must hold {self._size} x {output.numel()} {output.dtype}"
            )
        src, dst = _Buffer(input), _Buffer(output)
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclReduceScatter(src.ptr, dst.ptr, dst.count, dst.dtype, op, comm, stream),
                "ncclReduceScatter",
            )

        return self._submit("reduce_scatter", launch, dst.copy_back, [output], (src, dst))

    def reduce_scatter(self, output_tensors, input_tensors, opts=None):
        out = _one(output_tensors, "reduce_scatter")
        ins = _one(input_tensors, "reduce_scatter")
        if len(ins) != self._size:
            raise ValueError(f"reduce_scatter needs {self._size} inputs, got {len(ins)}")
        if any(i.numel() != out.numel() for i in ins):
            return self._reduce_scatter_v(output_tensors, out, ins, opts)
        flat = torch.stack([i.reshape(out.shape) for i in ins])
        return self._reduce_scatter_base(out, flat, opts)

    def _reduce_scatter_v(self, result, out, ins, opts):
        """reduce_scatter of inputs of different sizes: mixcclReduceScatterV."""
        op = _op_code(opts.reduceOp if opts is not None else dist.ReduceOp.SUM, out)
        if ins[self._rank].numel() != out.numel():
            raise ValueError(
                f"reduce_scatter input {self._rank} holds {ins[self._rank].numel()} elements "
                f"but the output {out.numel()}"
            )
        flat = torch.cat([i.reshape(-1) for i in ins])
        src, dst = _Buffer(flat), _Buffer(out)
        per = 2 if out.is_complex() else 1
        counts = [i.numel() * per for i in ins]
        c_counts = _lib.size_array(counts)
        c_displs = _lib.size_array(_lib.displacements(counts))
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.mixcclReduceScatterV(
                    src.ptr, c_counts, c_displs, dst.ptr, dst.count, dst.dtype, op, comm, stream
                ),
                "mixcclReduceScatterV",
            )

        return self._submit("reduce_scatter", launch, dst.copy_back, result, (src, dst))

    def alltoall_base(self, output, input, output_split_sizes, input_split_sizes, opts=None):
        n = self._size
        if not output_split_sizes and not input_split_sizes:
            if input.numel() % n or output.numel() != input.numel():
                raise ValueError(f"alltoall needs equal sizes divisible by {n}")
            src, dst = _Buffer(input), _Buffer(output)
            comm, lib = self._comm, self._lib

            def launch(stream):
                self._check(
                    lib.ncclAlltoAll(src.ptr, dst.ptr, src.count // n, src.dtype, comm, stream),
                    "ncclAlltoAll",
                )

            return self._submit("alltoall", launch, dst.copy_back, [output], (src, dst))
        # Uneven splits along dim 0: mixcclAlltoAllV, counts in elements.
        in_splits = list(input_split_sizes) or [input.shape[0] // n] * n
        out_splits = list(output_split_sizes) or [output.shape[0] // n] * n
        if len(in_splits) != n or len(out_splits) != n:
            raise ValueError(f"alltoall needs {n} split sizes per side")
        if sum(in_splits) != input.shape[0] or sum(out_splits) != output.shape[0]:
            raise ValueError("alltoall split sizes must add up to the tensors' first dimension")
        src, dst = _Buffer(input), _Buffer(output)
        in_row = src.count // max(input.shape[0], 1)
        out_row = dst.count // max(output.shape[0], 1)
        sc = [s * in_row for s in in_splits]
        rc = [s * out_row for s in out_splits]
        arrays = [_lib.size_array(a) for a in (sc, _lib.displacements(sc), rc, _lib.displacements(rc))]
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.mixcclAlltoAllV(
                    src.ptr, arrays[0], arrays[1], dst.ptr, arrays[2], arrays[3], src.dtype,
                    comm, stream,
                ),
                "mixcclAlltoAllV",
            )

        return self._submit("alltoall", launch, dst.copy_back, [output], (src, dst))

    def alltoall(self, output_tensors, input_tensors, opts=None):
        return self._pairwise("alltoall", output_tensors, input_tensors, output_tensors)

    def _pairwise(self, name, outs, ins, result):
        """Send ins[j] to rank j and receive outs[i] from rank i, all in one group."""
        if len(outs) != self._size or len(ins) != self._size:
            raise ValueError(f"{name} needs {self._size} input and output tensors")
        srcs = [_Buffer(t) for t in ins]
        dsts = [_Buffer(t) for t in outs]
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(lib.ncclGroupStart(), "ncclGroupStart")
            try:
                for peer in range(self._size):
                    s, d = srcs[peer], dsts[peer]
                    self._check(
                        lib.ncclSend(s.ptr, s.count, s.dtype, peer, comm, stream), "ncclSend"
                    )
                    self._check(
                        lib.ncclRecv(d.ptr, d.count, d.dtype, peer, comm, stream), "ncclRecv"
                    )
            finally:
                self._check(lib.ncclGroupEnd(), "ncclGroupEnd")

        def finish():
            for d in dsts:
                d.copy_back()

        return self._submit(name, launch, finish, result, srcs + dsts)

    def gather(self, output_tensors, input_tensors, opts):
        inp = _one(input_tensors, "gather")
        root = opts.rootRank
        src = _Buffer(inp)
        dsts = [_Buffer(t) for t in output_tensors[0]] if self._rank == root else []
        if self._rank == root and len(dsts) != self._size:
            raise ValueError(f"gather needs {self._size} outputs on the root")
        comm, lib, me = self._comm, self._lib, self._rank

        def launch(stream):
            self._check(lib.ncclGroupStart(), "ncclGroupStart")
            try:
                if me == root:
                    for peer, d in enumerate(dsts):
                        if peer == me:
                            d.staged.copy_(src.staged.view(d.staged.shape))
                        else:
                            self._check(
                                lib.ncclRecv(d.ptr, d.count, d.dtype, peer, comm, stream),
                                "ncclRecv",
                            )
                else:
                    self._check(
                        lib.ncclSend(src.ptr, src.count, src.dtype, root, comm, stream), "ncclSend"
                    )
            finally:
                self._check(lib.ncclGroupEnd(), "ncclGroupEnd")

        def finish():
            for d in dsts:
                d.copy_back()

        return self._submit("gather", launch, finish, output_tensors, [src] + dsts)

    def scatter(self, output_tensors, input_tensors, opts):
        out = _one(output_tensors, "scatter")
        root = opts.rootRank
        dst = _Buffer(out)
        srcs = [_Buffer(t) for t in input_tensors[0]] if self._rank == root else []
        if self._rank == root and len(srcs) != self._size:
            raise ValueError(f"scatter needs {self._size} inputs on the root")
        comm, lib, me = self._comm, self._lib, self._rank

        def launch(stream):
            self._check(lib.ncclGroupStart(), "ncclGroupStart")
            try:
                if me == root:
                    for peer, s in enumerate(srcs):
                        if peer == me:
                            dst.staged.copy_(s.staged.view(dst.staged.shape))
                        else:
                            self._check(
                                lib.ncclSend(s.ptr, s.count, s.dtype, peer, comm, stream),
                                "ncclSend",
                            )
                else:
                    self._check(
                        lib.ncclRecv(dst.ptr, dst.count, dst.dtype, root, comm, stream), "ncclRecv"
                    )
            finally:
                self._check(lib.ncclGroupEnd(), "ncclGroupEnd")

        return self._submit("scatter", launch, dst.copy_back, output_tensors, [dst] + srcs)

    def send(self, tensors, dst_rank, tag=0):
        b = _Buffer(_one(tensors, "send"))
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(lib.ncclSend(b.ptr, b.count, b.dtype, dst_rank, comm, stream), "ncclSend")

        return self._submit("send", launch, None, tensors, (b,))

    def recv(self, tensors, src_rank, tag=0):
        b = _Buffer(_one(tensors, "recv"))
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(lib.ncclRecv(b.ptr, b.count, b.dtype, src_rank, comm, stream), "ncclRecv")

        return self._submit("recv", launch, b.copy_back, tensors, (b,))

    def barrier(self, opts=None):
        token = torch.zeros(1, dtype=torch.uint8)
        b = _Buffer(token)
        comm, lib = self._comm, self._lib

        def launch(stream):
            self._check(
                lib.ncclAllReduce(b.ptr, b.ptr, 1, b.dtype, _lib.OPS[dist.ReduceOp.MAX], comm, stream),
                "ncclAllReduce (barrier)",
            )

        return self._submit("barrier", launch, None, [token])

    def gather_single(self, output, input, opts):
        outs = []
        if self._rank == opts.rootRank:
            if not output.is_contiguous():
                raise ValueError("gather into one tensor needs a contiguous output")
            outs = list(output.view(self._size, -1).unbind(0))
        flat = input.reshape(-1) if input.is_contiguous() else input.contiguous().view(-1)
        return self.gather([outs], [flat], opts)

    # Newer torch calls these names; older releases call the underscored ones.
    all_gather_single = _allgather_base
    reduce_scatter_single = _reduce_scatter_base
    all_to_all_single = alltoall_base


def create_process_group(store, rank, size, timeout):
    """The creator torch.distributed calls for init_process_group("mixccl")."""
    return ProcessGroupMixccl(store, rank, size, timeout)
