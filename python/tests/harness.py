"""Runs ranks.py as N processes joined through a TCPStore on 127.0.0.1 that the
test process serves, with a deadline, and returns what each rank saved."""

import os
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

HERE = Path(__file__).resolve().parent
PACKAGE_ROOT = HERE.parent  # python/, holding mixccl_torch
# How long one job of ranks may run before the test kills it and fails.
DEADLINE_S = float(os.environ.get("MIXCCL_TORCH_TEST_DEADLINE", "300"))


def rank_env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PACKAGE_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MIXCCL_SOCKET_IFNAME": "lo",
            "GLOO_SOCKET_IFNAME": "lo",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def launch(scenario, backend, world, env=None, expect_exit=None):
    """Runs `world` ranks of `scenario`; returns (results by rank, output by rank).
    `expect_exit` maps a rank to the exit code it must end with (default 0)."""
    expect_exit = expect_exit or {}
    store = dist.TCPStore("127.0.0.1", 0, world, is_master=True,
                          wait_for_workers=False, timeout=timedelta(seconds=DEADLINE_S))
    with tempfile.TemporaryDirectory(prefix=f"mixccl-torch-{scenario}-") as tmp:
        outs = [Path(tmp) / f"rank{r}.pt" for r in range(world)]
        logs = [open(Path(tmp) / f"rank{r}.log", "w+") for r in range(world)]
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE / "ranks.py"), scenario, backend, str(r),
                 str(world), str(store.port), str(outs[r])],
                env=rank_env(env), stdout=logs[r], stderr=subprocess.STDOUT,
            )
            for r in range(world)
        ]
        codes = []
        try:
            for p in procs:
                codes.append(p.wait(timeout=DEADLINE_S))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        text = []
        for r, log in enumerate(logs):
            log.seek(0)
            text.append(log.read())
            log.close()
        report = "\n".join(f"--- rank {r} (exit {procs[r].returncode})\n{t}" for r, t in enumerate(text))
        assert len(codes) == world, f"{scenario}/{backend}: ranks still running after {DEADLINE_S}s\n{report}"
        for r, code in enumerate(codes):
            want = expect_exit.get(r, 0)
            assert code == want, f"{scenario}/{backend}: rank {r} exited {code}, expected {want}\n{report}"
        results = [torch.load(o, weights_only=False) if o.exists() else None for o in outs]
        return results, text
