"""libmixccl.so through ctypes: finding the library, the C signatures, and the
mapping from torch dtypes and reduce ops to nccl.h's integer values.

Owns nothing but the foreign calls; which call runs when is the process group's
business. ctypes releases the GIL around every call, so a collective blocked in
the library never stalls other Python threads.
"""

import ctypes
import os
from pathlib import Path

import torch
import torch.distributed as dist

# ncclResult_t values (include/nccl.h).
SUCCESS = 0
RESULT_NAMES = {
    1: "ncclUnhandledCudaError",
    2: "ncclSystemError",
    3: "ncclInternalError",
    4: "ncclInvalidArgument",
    5: "ncclInvalidUsage",
    6: "ncclRemoteError",
    7: "ncclInProgress",
    8: "ncclTimeout",
}

# ncclDataType_t for every torch dtype mixccl moves natively. bool travels as uint8
# (0/1 bytes; only ops that keep 0/1 are allowed on it, see process_group.py).
DTYPES = {
    torch.int8: 0,
    torch.uint8: 1,
    torch.bool: 1,
    torch.int32: 2,
    torch.int64: 4,
    torch.float16: 6,
    torch.float32: 7,
    torch.float64: 8,
    torch.bfloat16: 9,
}
# fp8: NCCL's values for the OCP formats, mixccl's own (outside NCCL's range) for the
# FNUZ formats AMD MI300 uses; ranks passing different formats get a mismatch.
for _name, _value in (
    ("float8_e4m3fn", 10),
    ("float8_e5m2", 11),
    ("float8_e4m3fnuz", 64),
    ("float8_e5m2fnuz", 65),
):
    if hasattr(torch, _name):
        DTYPES[getattr(torch, _name)] = _value
# Unsigned 32/64-bit tensors exist in recent torch versions only.
if hasattr(torch, "uint32"):
    DTYPES[torch.uint32] = 3
if hasattr(torch, "uint64"):
    DTYPES[torch.uint64] = 5

# ncclRedOp_t for torch's reduce ops.
OPS = {
    dist.ReduceOp.SUM: 0,
    dist.ReduceOp.PRODUCT: 1,
    dist.ReduceOp.MAX: 2,
    dist.ReduceOp.MIN: 3,
    dist.ReduceOp.AVG: 4,
}


class UniqueId(ctypes.Structure):
    """ncclUniqueId: 128 bytes, passed by value to ncclCommInitRank."""

    _fields_ = [("internal", ctypes.c_char * 128)]


class MixcclError(RuntimeError):
    """A mixccl call failed: the message names the rank, the call, the nccl result
    code and mixccl's own description (lost peer, timeout, mismatch, ...)."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _candidates():
    """Where libmixccl.so is looked for, in order."""
    env = os.environ.get("MIXCCL_LIB")
    if env:
        # An explicit choice is the only candidate: a silent fallback would hide a typo.
        return [Path(env)]
    here = Path(__file__).resolve().parent
    found = [here / "libmixccl.so"]
    # Running from a checkout (PYTHONPATH=python or an editable install): the
    # repository's cargo build.
    for profile in ("release", "debug"):
        found.append(here.parent.parent / "target" / profile / "libmixccl.so")
    # Installed with ffi/install.sh into a library path the loader searches.
    found += [Path("libmixccl.so.0"), Path("libmixccl.so")]
    return found


def load():
    """Opens libmixccl.so and declares the signatures this package calls."""
    errors = []
    lib = None
    for path in _candidates():
        if path.is_absolute() and not path.exists():
            errors.append(f"{path}: no such file")
            continue
        try:
            lib = ctypes.CDLL(str(path))
            break
        except OSError as e:
            errors.append(f"{path}: {e}")
    if lib is None:
        raise ImportError(
            "mixccl_torch cannot load libmixccl.so (build it with "
            "`cargo build --release -p mixccl-ffi --lib`, or point MIXCCL_LIB at it): "
            + "; ".join(errors)
        )
    c_int, c_size_t, vp = ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p
    comm_p = ctypes.POINTER(vp)
    sizes = ctypes.POINTER(c_size_t)
    sig = {
        "ncclGetUniqueId": [ctypes.POINTER(UniqueId)],
        "ncclCommInitRank": [comm_p, c_int, UniqueId, c_int],
        "ncclCommDestroy": [vp],
        "ncclCommAbort": [vp],
        "ncclCommGetAsyncError": [vp, ctypes.POINTER(c_int)],
        "ncclAllReduce": [vp, vp, c_size_t, c_int, c_int, vp, vp],
        "ncclBroadcast": [vp, vp, c_size_t, c_int, c_int, vp, vp],
        "ncclReduce": [vp, vp, c_size_t, c_int, c_int, c_int, vp, vp],
        "ncclAllGather": [vp, vp, c_size_t, c_int, vp, vp],
        "ncclReduceScatter": [vp, vp, c_size_t, c_int, c_int, vp, vp],
        "ncclAlltoAll": [vp, vp, c_size_t, c_int, vp, vp],
        "ncclSend": [vp, c_size_t, c_int, c_int, vp, vp],
        "ncclRecv": [vp, c_size_t, c_int, c_int, vp, vp],
        "mixcclAllGatherV": [vp, c_size_t, vp, sizes, sizes, c_int, vp, vp],
        "mixcclReduceScatterV": [vp, sizes, sizes, vp, c_size_t, c_int, c_int, vp, vp],
        "mixcclAlltoAllV": [vp, sizes, sizes, vp, sizes, sizes, c_int, vp, vp],
        "ncclGroupStart": [],
        "ncclGroupEnd": [],
    }
    for name, args in sig.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = c_int
    for name, args in {"ncclGetErrorString": [c_int], "ncclGetLastError": [vp]}.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = ctypes.c_char_p
    return lib


def describe(lib, code, comm):
    """Name and message of a failed call's result: the calling thread's last error."""
    name = RESULT_NAMES.get(code, f"ncclResult {code}")
    detail = lib.ncclGetLastError(comm) or b""
    return name, detail.decode(errors="replace")


def size_array(values):
    """A C array of size_t (counts or displacements of the uneven calls)."""
    return (ctypes.c_size_t * len(values))(*values)


def displacements(counts):
    """Blocks laid end to end: the prefix sums of `counts`."""
    out, at = [], 0
    for c in counts:
        out.append(at)
        at += c
    return out
