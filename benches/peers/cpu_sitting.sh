#!/usr/bin/env bash
# Issue 23 sitting (docs/performance.md, "Choices that follow the CPU"): 4 ranks, 8 B and 32 MiB,
# mixccl vs Open MPI (shm default; TCP) vs torch gloo (TCP), $REPS reps (default 5) interleaved; raw
# outputs in $OUT. PART=tcp runs only the TCP rows (mixccl, Open MPI over TCP, gloo: 32 MiB all-reduce).
# Needs: cargo build --release (the binary under $CARGO_TARGET_DIR, else target/); openmpi-bin
# libopenmpi-dev; torch in $PY. Summary: python3 benches/peers/cpu_sitting_summary.py $OUT
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/s23}; mkdir -p $OUT
REPS=${REPS:-5}; PART=${PART:-all}
PERF=${CARGO_TARGET_DIR:-target}/release/mixccl-perf
BASE=$(cd ../shared/baseline 2>/dev/null && pwd)
mpicc -O2 -o /tmp/mpi_allreduce_bench "$BASE/mpi_allreduce_bench.c"
PY=${PY:-$HOME/.cache/mixccl/torch-venv/bin/python}
lscpu | grep -E "Model name|L2|L3" > $OUT/cpu.txt
uptime >> $OUT/cpu.txt
for r in $(seq "$REPS"); do
  if [ "$PART" != tcp ]; then
  for coll in allreduce allgather; do
    $PERF $coll --np 4 -b 8 -e 8 -n 20 -w 5 > $OUT/mx_${coll}_$r.txt 2>&1
    $PERF $coll --np 4 -b 32M -e 32M -n 20 -w 5 >> $OUT/mx_${coll}_$r.txt 2>&1
  done
  for nt in 1 0; do
    MIXCCL_NT_STORES=$nt $PERF allgather --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mx_allgather_nt${nt}_$r.txt 2>&1
  done
  MIXCCL_SHM_BUFFER=256K $PERF allreduce --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mx_allreduce_ring256k_$r.txt 2>&1
  timeout 600 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo -np 4 \
    /tmp/mpi_allreduce_bench 8 32M 20 5 both > $OUT/mpishm_$r.txt 2>&1
  fi
  MIXCCL_SHM_DISABLE=1 $PERF allreduce --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mxtcp_allreduce_$r.txt 2>&1
  timeout 600 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo \
    --mca btl tcp,self --mca btl_tcp_if_include lo -np 4 \
    /tmp/mpi_allreduce_bench 8 32M 20 5 allreduce > $OUT/mpitcp_$r.txt 2>&1
  GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 timeout 600 $PY $BASE/gloo_bench.py --backend torch -n 4 --min 32M --max 32M --op allreduce --port $((29700 + r)) > $OUT/gloo_$r.txt 2>&1
  echo "rep $r done $(date +%T)"
done
uptime >> $OUT/cpu.txt
