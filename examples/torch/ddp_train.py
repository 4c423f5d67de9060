"""Trains a small model with DistributedDataParallel over mixccl.

    pip install ./python                       # or: export PYTHONPATH=$PWD/python
    cargo build --release -p mixccl-ffi --lib  # libmixccl.so (or set MIXCCL_LIB)
    torchrun --nproc_per_node 4 --master_addr 127.0.0.1 examples/torch/ddp_train.py

Each rank fits its own shard of a synthetic regression problem (y = x @ W + noise);
DDP averages the gradients, so every rank ends with the same model. `--backend gloo`
runs the same program on gloo for comparison.
"""

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

import mixccl_torch  # noqa: F401  (registers the "mixccl" backend)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="mixccl")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()

    torch.manual_seed(0)
    true_w = torch.randn(32, 8)
    model = nn.Sequential(
        nn.Linear(32, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 8)
    )
    ddp = DDP(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1 + rank)  # each rank its own data shard

    start = time.monotonic()
    for step in range(args.steps):
        x = torch.randn(args.batch, 32, generator=gen)
        y = x @ true_w + 0.01 * torch.randn(args.batch, 8, generator=gen)
        loss = nn.functional.mse_loss(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if rank == 0 and (step % 50 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    elapsed = time.monotonic() - start

    # Every rank must hold the same parameters: compare a checksum across ranks.
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    sums = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    dist.all_gather(sums, flat.double().sum().reshape(1))
    if rank == 0:
        same = all(torch.equal(s, sums[0]) for s in sums)
        print(
            f"{args.backend}: {world} ranks, {args.steps} steps in {elapsed:.2f} s, "
            f"final loss {loss.item():.4f}, parameters identical on all ranks: {same}"
        )
        if not same:
            raise SystemExit("ranks disagree")
    dist.destroy_process_group()
    if os.environ.get("LOCAL_RANK") is None and rank == 0:
        print("(run under torchrun to start several ranks)")


if __name__ == "__main__":
    main()
