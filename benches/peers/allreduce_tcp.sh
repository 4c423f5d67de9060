#!/usr/bin/env bash
# One sitting, interleaved reps: mixccl-perf (TCP loopback: MIXCCL_SHM_DISABLE=1) vs Open MPI forced to TCP
# vs torch.distributed gloo, all-reduce float sum, 4 ranks, 8 B .. 256 MiB x4.
# Needs: cargo build --release; openmpi-bin libopenmpi-dev; /tmp/venv-torch with torch
# (see ../shared/baseline/README.md). Raw outputs go to $OUT (default /tmp/mixccl-peers).
# Usage: benches/peers/allreduce_tcp.sh [REPS=3] [NP=4] [MAX=256M]
set -u
cd "$(dirname "$0")/../.."
REPS=${1:-3}; NP=${2:-4}; MAX=${3:-256M}
OUT=${OUT:-/tmp/mixccl-peers}; mkdir -p "$OUT"
BASE=$(cd ../shared/baseline 2>/dev/null && pwd)
mpicc -O2 -o /tmp/mpi_allreduce_bench "$BASE/mpi_allreduce_bench.c"
for r in $(seq "$REPS"); do
  echo "== rep $r mixccl"
  MIXCCL_SHM_DISABLE=1 ./target/release/mixccl-perf allreduce --np "$NP" -b 8 -e "$MAX" -f 4 -n 20 -w 5 \
    > "$OUT/mixccl_np${NP}_rep$r.txt" 2>&1
  # x4 from 8 B stops at 128 MiB; the baseline harness appends MAX, so do we.
  MIXCCL_SHM_DISABLE=1 ./target/release/mixccl-perf allreduce --np "$NP" -b "$MAX" -e "$MAX" -n 20 -w 5 \
    >> "$OUT/mixccl_np${NP}_rep$r.txt" 2>&1; tail -2 "$OUT/mixccl_np${NP}_rep$r.txt" | head -1
  echo "== rep $r mpi-tcp"
  timeout 900 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo \
    --mca btl tcp,self --mca btl_tcp_if_include lo -np "$NP" \
    /tmp/mpi_allreduce_bench 8 "$MAX" 20 5 allreduce > "$OUT/mpitcp_np${NP}_rep$r.txt" 2>&1
  tail -1 "$OUT/mpitcp_np${NP}_rep$r.txt"
  if [ -x /tmp/venv-torch/bin/python ]; then
    echo "== rep $r torch-gloo"
    GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 timeout 900 /tmp/venv-torch/bin/python "$BASE/gloo_bench.py" \
      --backend torch -n "$NP" --max "$MAX" --op allreduce --port $((29700 + r)) \
      > "$OUT/gloo_np${NP}_rep$r.txt" 2>&1; tail -1 "$OUT/gloo_np${NP}_rep$r.txt"
  fi
done
