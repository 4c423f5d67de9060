#!/usr/bin/env bash
# Every real-GPU check in one sitting, for a GPU machine lent for a few minutes
# (issues 15 and 16): the timed stream-order checks alone first, then the correctness
# checks of the CUDA shim and of islands side by side, then the staging bandwidth.
# Needs, built beforehand and copied to BIN (stripped, no cargo needed there):
#   libmixccl.so, libnccl.so (SONAME libnccl.so.2), mixccl-perf
# Usage: tests/gpu/run_all.sh [BIN (default target/release)] [LOGS (default /tmp/gpu_all)]
# Each part's log lands in LOGS; the last lines say which parts passed.
set -u
BIN=$(cd "${1:-target/release}" && pwd)
LOGS=${2:-/tmp/gpu_all}
mkdir -p "$LOGS"
HERE=$(cd "$(dirname "$0")" && pwd)
export MIXCCL_TIMEOUT=${MIXCCL_TIMEOUT:-30} STEP_TIMEOUT=${STEP_TIMEOUT:-120} PYTHONUNBUFFERED=1
start=$SECONDS
stamp() { echo "[$((SECONDS - start)) s] $*"; }

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    lscpu | grep -E 'Model name|^CPU\(s\)'
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "nccl", torch.cuda.nccl.version())'
    nvcc --version | tail -n 1
    lib=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib/libtorch_cuda.so
    echo "nccl symbols libtorch_cuda.so imports that mixccl's libnccl.so.2 lacks:"
    comm -23 <(nm -D --undefined-only "$lib" | awk '{print $2}' | grep '^nccl' | sort) \
        <(nm -D --defined-only "$BIN/libnccl.so" | awk '{print $3}' | grep '^nccl' | sort)
    echo "(end of list)"
} >"$LOGS/env.txt" 2>&1
cat "$LOGS/env.txt"

stamp "stream order (issue 15), alone on the GPU"
bash "$HERE/stream_order.sh" "$BIN" /tmp/stream_order >"$LOGS/stream_order.log" 2>&1
so=$?
grep -E '^\(a\)|^ddp |^parameters|FAIL|Error|error' "$LOGS/stream_order.log" | head -n 40

stamp "CUDA shim correctness and islands (issue 16), side by side"
SMOKE_BANDWIDTH=0 bash "$HERE/cuda_smoke.sh" "$BIN" /tmp/cuda_smoke >"$LOGS/cuda_smoke.log" 2>&1 &
smoke_pid=$!
# The vendor's NCCL that torch's wheel carries, unless the loader path has one.
nccl=$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')
[ -n "$nccl" ] || nccl=$(python3 -c 'import nvidia.nccl as m, os; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
bash "$HERE/islands.sh" "$BIN" "$nccl" >"$LOGS/islands.log" 2>&1
isl=$?
wait $smoke_pid
smoke=$?
grep -E 'FAILED|OK$|none formed|left out|could not join|island' "$LOGS/islands.log" | head -n 20
grep -E 'FAILED|wrong' "$LOGS/cuda_smoke.log" | head -n 20

bw=skipped
if [ $((SECONDS - start)) -lt "${BANDWIDTH_AFTER:-300}" ]; then
    stamp "staging bandwidth beside host buffers"
    { for np in 2 4; do
        for c in allreduce allgather; do
            for mem in host cuda; do
                echo "--- $c --np $np --device $mem"
                timeout 60 "$BIN/mixccl-perf" "$c" --np "$np" --device "$mem" -b 1K -e 64M -f 8 -n 10 -w 3 2>&1 |
                    grep -vE '^#\s*$'
            done
        done
    done; } >"$LOGS/bandwidth.log" 2>&1
    bw=done
fi
stamp "done"
echo "stream_order: rc $so; cuda_smoke: rc $smoke; islands: rc $isl; bandwidth: $bw"
tail -n 1 "$LOGS/stream_order.log" "$LOGS/cuda_smoke.log" "$LOGS/islands.log"
