#!/usr/bin/env python3
"""torch.distributed on mixccl vs gloo, one sitting, reps interleaved.

Measures, per backend and rank count:
  - the median time of one DDP training step (zero_grad, forward, backward with
    DDP's bucketed allreduce, SGD step) for an MLP of about 1M and one of about
    25M parameters (batch 8, so the step is mostly gradient communication);
  - the median latency of a synchronous 1-element float allreduce.

Usage (from the repository root, after `cargo build --release`, with torch):
    OMP_NUM_THREADS=1 MIXCCL_LIB=$PWD/target/release/libmixccl.so \\
      python benches/peers/torch_ddp.py [--reps 3] [--ranks 2 4] [--steps 20]
Everything runs on 127.0.0.1. Prints one JSON line per run and a median table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {
    # name: layer widths of an MLP (Linear + ReLU between)
    "1M": [512, 1024, 512, 256],  # 1.18M parameters
    "25M": [4096, 4096, 2048, 256],  # 25.7M parameters
}


def mlp(widths):
    import torch.nn as nn

    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def worker(args):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
    import mixccl_torch  # noqa: F401

    dist.init_process_group(args.backend)
    rank = dist.get_rank()
    out = {"backend": args.backend, "ranks": dist.get_world_size()}
    if args.what == "latency":
        t = torch.ones(1)
        for _ in range(200):
            dist.all_reduce(t)
        chunks = []
        for _ in range(7):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(300):
                dist.all_reduce(t)
            chunks.append((time.perf_counter() - start) / 300 * 1e6)
        out.update(what="allreduce_1elem_us", value=statistics.median(chunks))
    else:
        torch.manual_seed(0)
        model = mlp(MODELS[args.what])
        nparams = sum(p.numel() for p in model.parameters())
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-3)
        x = torch.randn(8, MODELS[args.what][0])
        times = []
        for step in range(args.steps + 3):
            start = time.perf_counter()
            opt.zero_grad()
            ddp(x).square().mean().backward()
            opt.step()
            if step >= 3:
                times.append((time.perf_counter() - start) * 1e3)
        out.update(what=f"ddp_step_ms_{args.what}", params=nparams,
                   value=statistics.median(times))
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)
    dist.destroy_process_group()


def launch(backend, ranks, what, steps, port):
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
               WORLD_SIZE=str(ranks), GLOO_SOCKET_IFNAME="lo", MIXCCL_SOCKET_IFNAME="lo",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--backend", backend, "--what", what,
             "--steps", str(steps)],
            env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for r in range(ranks)
    ]
    result, logs = None, []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise SystemExit(f"{backend} {ranks} {what}: timed out")
        logs.append(text)
        for line in text.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[7:])
    if result is None or any(p.returncode for p in procs):
        raise SystemExit(f"{backend} {ranks} {what} failed:\n" + "\n".join(logs))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--backend", default="mixccl")
    ap.add_argument("--what", default="latency")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--only", nargs="+", default=["latency", "1M", "25M"])
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    rows = {}
    port = 29800
    for rep in range(args.reps):
        for ranks in args.ranks:
            for what in args.only:
                for backend in ("mixccl", "gloo"):
                    port += 1
                    r = launch(backend, ranks, what, args.steps, port)
                    print(json.dumps(dict(r, rep=rep)), flush=True)
                    rows.setdefault((r["what"], ranks, backend), []).append(r["value"])
    print("\n| measure | ranks | mixccl (median) | gloo (median) |\n|---|---:|---:|---:|")
    for (what, ranks, backend), vals in sorted(rows.items()):
        if backend != "mixccl":
            continue
        g = rows.get((what, ranks, "gloo"), [float("nan")])
        print(f"| {what} | {ranks} | {statistics.median(vals):.1f} | {statistics.median(g):.1f} |")


if __name__ == "__main__":
    main()
