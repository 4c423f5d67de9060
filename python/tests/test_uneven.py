"""Uneven all_gather / reduce_scatter / all_to_all_single and fp8 tensors."""

import pytest
from harness import launch


@pytest.mark.parametrize("world", [2, 3, 5])
def test_uneven_collectives_and_fp8(world):
    results, _ = launch("uneven", "mixccl", world)
    for rank, res in enumerate(results):
        assert res["checked"] > 20, res["checked"]
        assert not res["failures"], f"rank {rank}: " + "\n".join(res["failures"][:20])
