#!/usr/bin/env bash
# The real-GPU checks still open after the second sitting, in one short run (under
# 8 minutes on one H200): issue 15 (a) with its return time taken apart, (b)-(d) at 4
# processes, and issue 16's island check against the machine's own libnccl.so.2.
# Needs, built beforehand and carried (stripped): BIN/libmixccl.so, BIN/libnccl.so
# (SONAME libnccl.so.2), BIN/mixccl-perf.
# Usage: tests/gpu/open_checks.sh BIN OUT
#   1. the driver's own cost of each call a stream-ordered call queues (torch_gpu.py floor)
#   2. (a) at 2 processes with MIXCCL_DEBUG=TRACE: per call, where the caller's time goes
#   3. stream_order.sh with ABI_NPS (default "2 4") and DDP_NPS (default 4)
#   4. islands.sh with the vendor's NCCL that torch carries
set -u
BIN=$(cd "$1" && pwd)
OUT=${2:-/tmp/open_checks}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$HERE/../../python${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MIXCCL_LIB="$BIN/libmixccl.so" MIXCCL_SOCKET_IFNAME=lo
start=$SECONDS
stamp() { echo "[$((SECONDS - start)) s] $*"; }

{
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
    lscpu | grep -E 'Model name|^CPU\(s\)'
    python3 -c 'import torch; print("torch", torch.__version__, "nccl", torch.cuda.nccl.version())'
} 2>&1 | tee "$OUT/env.txt"

stamp "1. driver floor"
timeout 60 python3 "$HERE/torch_gpu.py" floor 2>&1 | tee "$OUT/floor.log"

stamp "2. (a) at 2 processes, traced"
MIXCCL_DEBUG=TRACE TEST_PORT=29621 TEST_OUT="$OUT" timeout 90 \
    python3 "$HERE/torch_gpu.py" abi 2 >"$OUT/abi_trace.log" 2>&1
grep -E '^\(a\)' "$OUT/abi_trace.log"
grep -o 'stream-ordered enqueue: .*' "$OUT/abi_trace.log" | tee "$OUT/enqueue_trace.txt" | tail -n 8

stamp "3. stream order: (a) ${ABI_NPS-2 4}, (b)-(d) at ${DDP_NPS-4}"
ABI_NPS=${ABI_NPS-2 4} DDP_NPS=${DDP_NPS-4} MIXCCL_TIMEOUT=${MIXCCL_TIMEOUT:-20} \
    STEP_TIMEOUT=${STEP_TIMEOUT:-60} bash "$HERE/stream_order.sh" "$BIN" "$OUT/so" \
    >"$OUT/stream_order.log" 2>&1
grep -E '^\(a\)|^ddp |^parameters|FAIL|rror' "$OUT/stream_order.log" | head -n 30

stamp "4. islands with the vendor's NCCL"
nccl=$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')
[ -n "$nccl" ] || nccl=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
echo "vendor NCCL: ${nccl:-none found}"
MIXCCL_TIMEOUT=30 timeout 150 bash "$HERE/islands.sh" "$BIN" "$nccl" >"$OUT/islands.log" 2>&1
tail -n 25 "$OUT/islands.log"
stamp "done"
