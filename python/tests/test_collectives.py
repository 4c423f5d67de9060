"""Every collective x dtype x op, contiguous and strided, against a reference."""

import pytest
from harness import launch


@pytest.mark.parametrize("world", [2, 3])
def test_every_collective_and_dtype(world):
    results, _ = launch("collectives", "mixccl", world)
    for rank, res in enumerate(results):
        assert res["checked"] > 1000, res["checked"]
        assert not res["failures"], f"rank {rank}: " + "\n".join(res["failures"][:20])
