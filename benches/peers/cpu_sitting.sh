#!/usr/bin/env bash
# Issue 23 sitting (docs/performance.md, "Choices that follow the CPU"): 4 ranks, 8 B and 32 MiB,
# mixccl vs Open MPI (shm default; TCP) vs torch gloo (TCP), 5 reps interleaved; raw outputs in $OUT.
# Needs: cargo build --release; openmpi-bin libopenmpi-dev; torch in $PY. Summary: python3 benches/peers/cpu_sitting_summary.py $OUT
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/s23}; mkdir -p $OUT
BASE=$(cd ../shared/baseline 2>/dev/null && pwd)
mpicc -O2 -o /tmp/mpi_allreduce_bench "$BASE/mpi_allreduce_bench.c"
PY=${PY:-$HOME/.cache/mixccl/torch-venv/bin/python}
lscpu | grep -E "Model name|L2|L3" > $OUT/cpu.txt
uptime >> $OUT/cpu.txt
for r in 1 2 3 4 5; do
  for coll in allreduce allgather; do
    ./target/release/mixccl-perf $coll --np 4 -b 8 -e 8 -n 20 -w 5 > $OUT/mx_${coll}_$r.txt 2>&1
    ./target/release/mixccl-perf $coll --np 4 -b 32M -e 32M -n 20 -w 5 >> $OUT/mx_${coll}_$r.txt 2>&1
  done
  for nt in 1 0; do
    MIXCCL_NT_STORES=$nt ./target/release/mixccl-perf allgather --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mx_allgather_nt${nt}_$r.txt 2>&1
  done
  MIXCCL_SHM_BUFFER=256K ./target/release/mixccl-perf allreduce --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mx_allreduce_ring256k_$r.txt 2>&1
  timeout 600 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo -np 4 \
    /tmp/mpi_allreduce_bench 8 32M 20 5 both > $OUT/mpishm_$r.txt 2>&1
  MIXCCL_SHM_DISABLE=1 ./target/release/mixccl-perf allreduce --np 4 -b 32M -e 32M -n 20 -w 5 > $OUT/mxtcp_allreduce_$r.txt 2>&1
  timeout 600 mpirun --allow-run-as-root --oversubscribe --mca oob_tcp_if_include lo \
    --mca btl tcp,self --mca btl_tcp_if_include lo -np 4 \
    /tmp/mpi_allreduce_bench 8 32M 20 5 allreduce > $OUT/mpitcp_$r.txt 2>&1
  GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 timeout 600 $PY $BASE/gloo_bench.py --backend torch -n 4 --min 32M --max 32M --op allreduce --port $((29700 + r)) > $OUT/gloo_$r.txt 2>&1
  echo "rep $r done $(date +%T)"
done
uptime >> $OUT/cpu.txt
