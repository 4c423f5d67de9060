"""A dead or silent rank is an exception on the others, naming their rank, within
the timeout given to init_process_group: never a hang."""

from harness import launch

# init_process_group's timeout in the ranks (seconds; it also bounds init, which
# takes seconds on a loaded two-core machine), and what the bound allows on top.
PG_TIMEOUT = 30
SLACK = 30


def test_killed_rank_raises_on_survivors():
    world = 3
    results, logs = launch(
        "killed_peer", "mixccl", world,
        env={"TEST_PG_TIMEOUT": str(PG_TIMEOUT)}, expect_exit={world - 1: 17},
    )
    for rank in range(world - 1):
        res = results[rank]
        assert res["error"] is not None, f"rank {rank} saw no error:\n{logs[rank]}"
        assert f"rank {rank} of {world}" in res["error"], res["error"]
        assert "ncclRemoteError" in res["error"] or "ncclTimeout" in res["error"], res["error"]
        assert res["seconds"] < PG_TIMEOUT + SLACK, res
        print(f"rank {rank}: {res}")


def test_silent_rank_times_out_with_the_process_group_timeout():
    # Long enough for init on a loaded machine, far below mixccl's default of 300 s.
    timeout = 20
    silent_for = 150
    results, logs = launch(
        "silent_peer", "mixccl", 2,
        env={"TEST_PG_TIMEOUT": str(timeout), "TEST_SILENT_SLEEP": str(silent_for)},
    )
    res = results[0]
    assert res["error"] is not None, f"rank 0 saw no error:\n{logs[0]}"
    assert "rank 0 of 2" in res["error"] and "ncclTimeout" in res["error"], res["error"]
    # The communicator's timeout is init_process_group's, not mixccl's default: the
    # error comes while the silent rank is still silent.
    assert timeout - 1 < res["seconds"] < silent_for - 30, res
