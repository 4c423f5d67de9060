#!/bin/bash
# Two emulated hosts x 2 ranks (../shared/netns/netns.sh: namespaces ccl-a/ccl-b, a veth
# shaped by tbf): mixccl allreduce with the automatic choice and with each forced
# algorithm, then Open MPI across the same namespaces (4 ranks, 2 per "host").
# Usage: hier_netns.sh [RATE=1gbit] [MAX=256M] [ITERS=3]   (root; outputs under $OUT)
#        REPS=3 hier_netns.sh            small sizes only, every algorithm 3 times in turn
#        SKIP_SMALL=1 SKIP_MPI=1 LARGE_MIN=32M ALGOS="auto ring" hier_netns.sh 1gbit 32M 5
#                                        one size, chosen algorithms, no Open MPI
set -u
RATE=${1:-1gbit}; MAX=${2:-256M}; ITERS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
NETNS=${NETNS:-$HERE/../../../shared/netns/netns.sh}
[ -x "$NETNS" ] || NETNS=/work/shared/netns/netns.sh
PERF=${PERF:-$HERE/../../target/release/mixccl-perf}
OUT=${OUT:-/tmp/mixccl-hier-netns}; mkdir -p "$OUT"
trap '"$NETNS" down >/dev/null 2>&1' EXIT
"$NETNS" down >/dev/null 2>&1
"$NETNS" up "$RATE" > "$OUT/up.txt" || exit 1
PORT=29500
# run NAME ALGO COLL ARGS...: 4 ranks, 0-1 in ccl-a, 2-3 in ccl-b, rank 0's table to $OUT/NAME.txt
run() {
  local name=$1 algo=$2; shift 2
  PORT=$((PORT + 1))
  local pids=()
  for r in 0 1 2 3; do
    local ns=ccl-a; [ $r -ge 2 ] && ns=ccl-b
    ip netns exec $ns env MIXCCL_ROOT=10.200.0.1:$PORT MIXCCL_RANK=$r MIXCCL_NRANKS=4 \
      MIXCCL_ALGO="$algo" MIXCCL_TIMEOUT=120 MIXCCL_DEBUG=${DEBUG:-WARN} \
      MIXCCL_TOPO_DUMP_FILE=$OUT/$name.topo.json \
      "$PERF" "$@" > "$OUT/$name.r$r.txt" 2>&1 &
    pids+=($!)
  done
  local rc=0
  for p in "${pids[@]}"; do wait $p || rc=1; done
  cp "$OUT/$name.r0.txt" "$OUT/$name.txt"
  echo "== $name (MIXCCL_ALGO='$algo' $*) rc=$rc"
  grep -v '^#' "$OUT/$name.txt" | grep -v '^$' || cat "$OUT/$name.r"*.txt
}
"$NETNS" test 3 > "$OUT/link.txt" 2>&1; grep tcpbw "$OUT/link.txt"
# REPS=k: only small sizes (8 B .. SMALL_MAX), each algorithm k times in turn
# (auto, ring, hier, tree, direct, auto, ...), to see through the machine's noise.
if [ -n "${REPS:-}" ]; then
  for k in $(seq "$REPS"); do
    for a in auto ring hier tree direct; do
      algo="allreduce:$a"; [ $a = auto ] && algo=""
      run rep${k}_$a "$algo" allreduce -b 8 -e "${SMALL_MAX:-4K}" -f 8 -n "${SMALL_ITERS:-200}" -w 20 -c 0
    done
  done
  exit 0
fi
# Small sizes: many iterations (the 2-core machine is noisy); large sizes: few.
SMALL=(allreduce -b 8 -e 512K -f 2 -n "${SMALL_ITERS:-40}" -w 5 -c 0)
LARGE=(allreduce -b "${LARGE_MIN:-1M}" -e "$MAX" -f 2 -n "$ITERS" -w 1 -c 0)
for a in ${ALGOS:-auto ring hier tree direct}; do
  algo="allreduce:$a"; [ $a = auto ] && algo=""
  [ -n "${SKIP_SMALL:-}" ] || run small_$a "$algo" "${SMALL[@]}"
  [ $a = direct ] || run large_$a "$algo" "${LARGE[@]}"
done
[ -z "${SKIP_MPI:-}" ] || exit 0
# Open MPI: 2 ranks per namespace, TCP between them, shared memory inside each.
mpicc -O2 -o /tmp/mpi_allreduce_bench "$HERE/../../../shared/baseline/mpi_allreduce_bench.c" 2>/dev/null ||
  mpicc -O2 -o /tmp/mpi_allreduce_bench /work/shared/baseline/mpi_allreduce_bench.c
ip netns exec ccl-a unshare --uts sh -c "hostname ccl-a; mpirun --allow-run-as-root --oversubscribe \
    --host ccl-a:2,ccl-b:2 -np 4 --bind-to none --mca plm_rsh_agent $(dirname "$NETNS")/netns_rsh_agent.sh \
    --mca oob_tcp_if_include 10.200.0.0/24 --mca btl tcp,vader,self --mca btl_tcp_if_include 10.200.0.0/24 \
    /tmp/mpi_allreduce_bench 8 $MAX $ITERS 1 allreduce" > "$OUT/mpi.txt" 2>&1
echo "== Open MPI 4 ranks (2 per namespace)"; cat "$OUT/mpi.txt"
# The same with idle ranks yielding the core (4 busy-polling ranks share 2 cores here).
ip netns exec ccl-a unshare --uts sh -c "hostname ccl-a; mpirun --allow-run-as-root --oversubscribe \
    --host ccl-a:2,ccl-b:2 -np 4 --bind-to none --mca plm_rsh_agent $(dirname "$NETNS")/netns_rsh_agent.sh \
    --mca oob_tcp_if_include 10.200.0.0/24 --mca btl tcp,vader,self --mca btl_tcp_if_include 10.200.0.0/24 \
    --mca mpi_yield_when_idle 1 /tmp/mpi_allreduce_bench 8 $MAX $ITERS 1 allreduce" > "$OUT/mpi_yield.txt" 2>&1
echo "== Open MPI 4 ranks (2 per namespace), mpi_yield_when_idle 1"; cat "$OUT/mpi_yield.txt"
