"""The device-tensor path of the backend, on host tensors posing as a device (no GPU
here): results against a reference, and the order of stream operations that gives
ProcessGroupNCCL's semantics. Real device tensors are checked by tests/gpu/."""

import pytest
import torch
from harness import launch
from ranks import values, reference

import mixccl_torch


def test_registered_for_cpu_and_cuda():
    types = mixccl_torch.device_types()
    assert types[:2] == ["cpu", "cuda"], types


@pytest.mark.parametrize("world", [2, 3])
def test_device_path_results_and_stream_order(world):
    results, _ = launch("fake_device", "mixccl", world)
    ins = [values(r, 1031, torch.float32) for r in range(world)]
    want_sum = reference("sum", ins, torch.float32)
    want_gather = torch.cat([values(r, 5, torch.int32) for r in range(world)])
    for rank, res in enumerate(results):
        torch.testing.assert_close(res["allreduce"], want_sum)
        assert torch.equal(res["allgather"], want_gather), res["allgather"]
        assert torch.equal(res["broadcast"], values(world - 1, 7, torch.float64))
        assert res["future_done"]
        log = res["log"]
        # Each call: a ready event recorded on the caller's stream, the group's
        # stream waits for it, a done event recorded on the group's stream, and
        # Work.wait() makes the caller's stream wait for that.
        records = [e for e in log if e[0] == "record"]
        waits = [e for e in log if e[0] == "wait"]
        assert len(records) == 6, log
        for call in range(3):
            ready, done = records[2 * call], records[2 * call + 1]
            assert ready[2] == "current" and done[2] != "current", log
            lane_wait, caller_wait = waits[2 * call], waits[2 * call + 1]
            assert lane_wait == ("wait", done[2], ready[1]), log
            assert caller_wait == ("wait", "current", done[1]), log
            assert log.index(ready) < log.index(lane_wait) < log.index(done) < log.index(caller_wait), log
