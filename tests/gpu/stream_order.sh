#!/usr/bin/env bash
# Issue 15's figures on a machine with an NVIDIA GPU, torch (CUDA build) and its NCCL,
# all processes on GPU 0; under 8 minutes. Needs, built beforehand and carried over:
#   target/release/libmixccl.so, target/release/libnccl.so (SONAME libnccl.so.2)
#   (`cargo build --release`: the default members include mixccl-ffi and mixccl-nccl)
# Usage: tests/gpu/stream_order.sh [BIN (default target/release)] [OUT (default /tmp/stream_order)]
# (a) C ABI: ncclAllReduce on a stream busy with a kernel returns in under 100 us,
#     results correct after synchronize (2 and 4 processes);
# (b) torch's own nccl backend on mixccl (LD_PRELOAD of the libnccl.so.2 build): DDP,
#     20 steps, parameters within 1e-5 of the same run on gloo;
# (c) the mixccl backend on CUDA tensors: the same DDP;
# (d) DDP step time, enqueued against MIXCCL_LAUNCH=sync, same sitting.
# Prints "STREAM ORDER: PASS" or "STREAM ORDER: FAIL (n)" last.
set -u
BIN=$(cd "${1:-target/release}" && pwd)
export TEST_OUT=${2:-/tmp/stream_order}
mkdir -p "$TEST_OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$HERE/../../python${PYTHONPATH:+:$PYTHONPATH}"
export MIXCCL_LIB="$BIN/libmixccl.so" MIXCCL_SOCKET_IFNAME=lo MIXCCL_TIMEOUT=${MIXCCL_TIMEOUT:-120}
PY=${PYTHON:-python3}
fails=0
run() {
    echo "--- $*"
    timeout "${STEP_TIMEOUT:-240}" "$@" || { echo "!!! FAILED: $*"; fails=$((fails + 1)); }
}
nvidia-smi -L || { echo "no GPU visible"; exit 2; }
# ABI_NPS / DDP_NPS: the rank counts of (a) and of (b)-(d) (default "2 4").
for np in ${ABI_NPS-2 4}; do
    TEST_PORT=$((29600 + np)) run "$PY" "$HERE/torch_gpu.py" abi "$np"
done
for np in ${DDP_NPS-2 4}; do
    TEST_PORT=29610 TEST_LABEL=gloo$np run "$PY" "$HERE/torch_gpu.py" ddp gloo "$np"
    TEST_PORT=29611 TEST_LABEL=nccl$np LD_PRELOAD="$BIN/libnccl.so" \
        run "$PY" "$HERE/torch_gpu.py" ddp nccl "$np"
    run "$PY" "$HERE/torch_gpu.py" compare "gloo$np" "nccl$np"
    TEST_PORT=29612 TEST_LABEL=mixccl$np run "$PY" "$HERE/torch_gpu.py" ddp mixccl "$np"
    run "$PY" "$HERE/torch_gpu.py" compare "gloo$np" "mixccl$np"
    TEST_PORT=29613 TEST_LABEL=mixccl_sync$np MIXCCL_LAUNCH=sync \
        run "$PY" "$HERE/torch_gpu.py" ddp mixccl "$np"
done
echo
if [ $fails -eq 0 ]; then echo "STREAM ORDER: PASS"; else echo "STREAM ORDER: FAIL ($fails)"; fi
[ $fails -eq 0 ]
