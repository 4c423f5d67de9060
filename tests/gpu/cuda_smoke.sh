#!/usr/bin/env bash
# Real-GPU check of the CUDA shim, for a machine with an NVIDIA GPU, its driver and
# the CUDA toolkit (nvcc). Needs, built beforehand (no cargo needed on the GPU host):
#   BIN/mixccl-perf    cargo build --release --bin mixccl-perf
#   BIN/libmixccl.so*  cargo build --release -p mixccl-ffi --lib
# Usage: tests/gpu/cuda_smoke.sh [BIN (default target/release)] [OUT (default /tmp/cuda_smoke)]
#
# 1. correctness on cudaMalloc'd buffers, 2-4 processes sharing GPU 0: every
#    collective, every dtype (and every op for allreduce), odd sizes, several
#    pipeline pieces (MIXCCL_PIPELINE_BYTES=1M), each element checked (#wrong = 0);
# 2. the C ABI on device buffers with an unsynchronised stream (cuda_c_abi.c);
# 3. the GB/s of the staging path beside a host-buffer run of the same binary;
# 4. a clear error when the CUDA library cannot be found.
# Prints "CUDA SMOKE: PASS" or "CUDA SMOKE: FAIL (n)" last; exits non-zero on failure.
set -u
BIN=${1:-target/release}
OUT=${2:-/tmp/cuda_smoke}
mkdir -p "$OUT/json"
WORK=$(mktemp -d)
PERF="$BIN/mixccl-perf"
export MIXCCL_TIMEOUT=${MIXCCL_TIMEOUT:-120}
fails=0
note() { printf '\n=== %s\n' "$*"; }
# Runs a mixccl-perf command; fails when it exits non-zero or any row has wrong elements.
perf() {
    local log
    log=$(timeout 300 "$PERF" "$@" 2>&1)
    local rc=$?
    echo "$log" | grep -vE '^#\s*$' | tail -n 40
    if [ $rc -ne 0 ] || ! echo "$log" | grep -q 'Out of bounds values : 0 OK'; then
        echo "!!! FAILED (rc $rc): mixccl-perf $*"
        fails=$((fails + 1))
    fi
}

note "GPU"
nvidia-smi -L || { echo "no GPU visible"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

note "1. correctness on device buffers (CUDA shim)"
for np in 2 4; do
    MIXCCL_PIPELINE_BYTES=1M perf allreduce --np "$np" --device cuda -b 4 -e 8M -f 37 -d all -o all -n 1 -w 0
done
for c in allgather broadcast reduce reducescatter alltoall sendrecv; do
    MIXCCL_PIPELINE_BYTES=1M perf "$c" --np 3 --device cuda -b 4 -e 8M -f 37 -d all -r 2 -n 1 -w 0
done

note "2. C ABI on cudaMalloc'd buffers (nvcc build of tests/gpu/cuda_c_abi.c)"
LIBDIR=$(cd "$BIN" && pwd)
export MIXCCL_SOCKET_IFNAME=lo
if command -v nvcc >/dev/null; then
    if nvcc -O2 -I include tests/gpu/cuda_c_abi.c -o "$WORK/cuda_c_abi" -L "$LIBDIR" -lmixccl \
        -Xlinker -rpath="$LIBDIR" 2>&1; then
        for np in 2 4; do
            log=$(timeout 300 "$WORK/cuda_c_abi" "$np" 3000017 2>&1)
            rc=$?
            echo "$log" | tail -n 20
            [ $rc -eq 0 ] || { echo "!!! FAILED (rc $rc): cuda_c_abi $np"; fails=$((fails + 1)); }
        done
    else
        echo "!!! FAILED: nvcc build"; fails=$((fails + 1))
    fi
else
    echo "nvcc not found: C ABI part skipped"
fi

note "3. bandwidth: device (staged) beside host buffers, same binary, same sitting"
[ "${SMOKE_BANDWIDTH:-1}" = 0 ] && echo "(skipped: SMOKE_BANDWIDTH=0)"
for np in $([ "${SMOKE_BANDWIDTH:-1}" = 0 ] || echo 2 4); do
    for c in allreduce allgather; do
        for mem in host cuda; do
            echo "--- $c --np $np --device $mem"
            perf "$c" --np "$np" --device "$mem" -b 8 -e "${SMOKE_MAX_BYTES:-256M}" -f 8 -n 10 -w 3 -J "$OUT/json/${c}_np${np}_${mem}.json"
        done
    done
done

note "4. runtime not found is a clear error"
MIXCCL_CUDA_LIB=/nonexistent/libcuda.so.1 timeout 60 "$PERF" allreduce --np 2 --device cuda -b 1K -e 1K 2>&1 | tail -n 3

tar czf "$OUT/json.tgz" -C "$OUT" json && rm -rf "$OUT/json" "$WORK"
echo
if [ $fails -eq 0 ]; then echo "CUDA SMOKE: PASS"; else echo "CUDA SMOKE: FAIL ($fails)"; fi
[ $fails -eq 0 ]
