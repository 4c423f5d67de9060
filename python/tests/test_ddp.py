"""DDP on mixccl ends with the same parameters as DDP on gloo.

20 steps of SGD with momentum, deterministic per-rank data, small buckets (several
allreduces per step, overlapping backward), for an MLP and a BatchNorm model, each
plain, with gradient_as_bucket_view=True, with find_unused_parameters=True (a
branch forward never uses) and with the fp16 compression hook.

With 2 ranks a sum has one addition, a + b, which is the same bits whichever rank's
value comes first, so the parameters must be bitwise equal. With 3 ranks gloo and
mixccl may add in different orders ((a + b) + c against a + (b + c)), so the
parameters are compared within a tolerance: float32 rtol 1e-5 / atol 1e-6, and
rtol 1e-3 / atol 5e-4 for the fp16 hook, whose fp16 sums round at each addition.
"""

import pytest
import torch
from harness import launch

_runs = {}


def run(backend, world):
    if (backend, world) not in _runs:
        results, _ = launch("ddp", backend, world)
        _runs[(backend, world)] = results
    return _runs[(backend, world)]


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_matches_gloo(world):
    ours, gloo = run("mixccl", world), run("gloo", world)
    for rank in range(world):
        assert ours[rank].keys() == gloo[rank].keys()
        for (model, variant), params in ours[rank].items():
            ref = gloo[rank][(model, variant)]
            # Every rank holds the same parameters after every step (BatchNorm's
            # running statistics differ: the last forward updated them from each
            # rank's own batch after rank 0's were broadcast, as under gloo).
            for name, p in params.items():
                if "running_" in name or "num_batches" in name:
                    continue
                assert torch.equal(p, ours[0][(model, variant)][name]), (
                    f"rank {rank} differs from rank 0: {model}/{variant} {name}")
            for name, p in params.items():
                what = f"{model}/{variant} {name} ({world} ranks, rank {rank})"
                if world == 2:
                    assert torch.equal(p, ref[name]), (
                        f"{what}: max |diff| {(p.double() - ref[name].double()).abs().max()}")
                elif variant == "fp16_hook":
                    torch.testing.assert_close(p, ref[name], rtol=1e-3, atol=5e-4, msg=what)
                else:
                    torch.testing.assert_close(p, ref[name], rtol=1e-5, atol=1e-6, msg=what)


def test_training_moves_the_parameters():
    """Guards the comparison above against a run that never trained."""
    ours = run("mixccl", 2)[0]
    for (model, variant), params in ours.items():
        first = params["net.0.weight"]
        torch.manual_seed(1234)
        lin = torch.nn.Linear(16, 32)
        assert not torch.allclose(first, lin.weight), f"{model}/{variant} did not train"
