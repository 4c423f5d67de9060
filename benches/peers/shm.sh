#!/usr/bin/env bash
# One sitting, interleaved reps: mixccl-perf on its default transport inside a host
# (shared memory) vs Open MPI's default shared-memory path (pml ob1 + btl vader),
# unbound (its default when oversubscribed) and bound to cores like mixccl-perf --np,
# all-reduce and all-gather float, 4 ranks, 8 B .. 256 MiB x4; then mixccl's two
# receive-and-reduce variants (MIXCCL_SHM_ZEROCOPY=1|0) at 2 MiB and 32 MiB.
# Needs: cargo build --release; openmpi-bin libopenmpi-dev. Raw outputs go to $OUT.
# Usage: benches/peers/shm.sh [REPS=3] [NP=4] [MAX=256M]
set -u
cd "$(dirname "$0")/../.."
REPS=${1:-3}; NP=${2:-4}; MAX=${3:-256M}
OUT=${OUT:-/tmp/mixccl-peers-shm}; mkdir -p "$OUT"
BASE=$(cd ../shared/baseline 2>/dev/null && pwd)
mpicc -O2 -o /tmp/mpi_allreduce_bench "$BASE/mpi_allreduce_bench.c"
for r in $(seq "$REPS"); do
  for coll in allreduce allgather; do
    echo "== rep $r mixccl $coll"
    ./target/release/mixccl-perf $coll --np "$NP" -b 8 -e "$MAX" -f 4 -n 20 -w 5 \
      > "$OUT/mixccl_${coll}_np${NP}_rep$r.txt" 2>&1
    # x4 from 8 B stops at 128 MiB; the baseline harness appends MAX, so do we.
    ./target/release/mixccl-perf $coll --np "$NP" -b "$MAX" -e "$MAX" -n 20 -w 5 \
      >> "$OUT/mixccl_${coll}_np${NP}_rep$r.txt" 2>&1; tail -2 "$OUT/mixccl_${coll}_np${NP}_rep$r.txt" | head -1
  done
  echo "== rep $r mpi-shm (both)"
  timeout 900 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo -np "$NP" \
    /tmp/mpi_allreduce_bench 8 "$MAX" 20 5 both > "$OUT/mpishm_np${NP}_rep$r.txt" 2>&1
  tail -1 "$OUT/mpishm_np${NP}_rep$r.txt"
  echo "== rep $r mpi-shm bound to cores (both)"
  timeout 900 mpirun --allow-run-as-root --oversubscribe --bind-to core:overload-allowed \
    --mca oob_tcp_if_include lo -np "$NP" \
    /tmp/mpi_allreduce_bench 8 "$MAX" 20 5 both > "$OUT/mpishmbound_np${NP}_rep$r.txt" 2>&1
  tail -1 "$OUT/mpishmbound_np${NP}_rep$r.txt"
  for z in 1 0; do
    echo "== rep $r mixccl zerocopy=$z"
    MIXCCL_SHM_ZEROCOPY=$z ./target/release/mixccl-perf allreduce --np "$NP" -b 2M -e 32M -f 16 -n 20 -w 5 \
      > "$OUT/mixccl_zc${z}_np${NP}_rep$r.txt" 2>&1; grep -E "^ +[0-9]" "$OUT/mixccl_zc${z}_np${NP}_rep$r.txt"
  done
done
