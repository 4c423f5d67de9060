"""mixccl_torch: importing it registers the torch.distributed backend "mixccl".

    import mixccl_torch  # noqa: F401
    torch.distributed.init_process_group("mixccl")   # CPU and device tensors

It serves cpu tensors, cuda tensors (NVIDIA, and AMD under ROCm builds of torch),
and npu, mlu, musa tensors where the vendor's torch extension (torch_npu,
torch_mlu, torch_musa) is importable. Calls on device tensors are enqueued on
torch's current stream of their device (no host wait), as with the nccl backend.

The backend runs every collective on libmixccl.so (found through MIXCCL_LIB, next to
this package, or in the repository's target/release). See process_group.py for how
calls are ordered and how errors surface.
"""

import torch.distributed as dist

from ._lib import MixcclError
from .process_group import ProcessGroupMixccl, create_process_group, device_types

BACKEND = "mixccl"

__all__ = ["BACKEND", "MixcclError", "ProcessGroupMixccl", "create_process_group", "device_types"]

if BACKEND.upper() not in dist.Backend._plugins:
    dist.Backend.register_backend(BACKEND, create_process_group, devices=device_types())
