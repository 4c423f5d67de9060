#!/bin/bash
# Two emulated hosts for TLS and long links: network namespaces tls-a / tls-b (names of
# their own, so ../shared/netns/netns.sh's ccl-a / ccl-b can run beside them) joined by a
# veth pair, 10.201.0.1 and 10.201.0.2, each end shaped by tbf at RATE behind a netem
# DELAY (one way; the round trip is twice it). Then, on that link:
#   - tcpbw with 1 and 2 streams (../shared/baseline/physical/tcpbw.c): the link's bound;
#   - mixccl-perf all-reduce SIZE, 2 ranks (one per namespace), plaintext and
#     MIXCCL_TLS=cross-host in turn REPS times, with CPU seconds per rank;
#   - Open MPI's all-reduce (../shared/baseline/mpi_allreduce_bench.c), TCP BTL.
# Usage (root): tls_netns.sh [RATE=1gbit] [DELAY=0ms] [REPS=3]
#   SIZE=32M ITERS=10 SKIP_MPI=1 OUT=/tmp/mixccl-tls-netns PERF=target/release/mixccl-perf
set -u
RATE=${1:-1gbit}; DELAY=${2:-0ms}; REPS=${3:-3}
SIZE=${SIZE:-32M}; ITERS=${ITERS:-10}
HERE=$(cd "$(dirname "$0")" && pwd)
SHARED=${SHARED:-$HERE/../../../shared}; [ -d "$SHARED/baseline" ] || SHARED=/work/shared
PERF=${PERF:-$HERE/../../target/release/mixccl-perf}
OUT=${OUT:-/tmp/mixccl-tls-netns}; mkdir -p "$OUT"
A=tls-a; B=tls-b; IPA=10.201.0.1; IPB=10.201.0.2
down() { ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; true; }
trap down EXIT
down
ip netns add $A; ip netns add $B
ip link add tlsv-a type veth peer name tlsv-b
ip link set tlsv-a netns $A; ip link set tlsv-b netns $B
ip -n $A addr add $IPA/24 dev tlsv-a; ip -n $B addr add $IPB/24 dev tlsv-b
for ns in $A $B; do ip -n $ns link set lo up; done
ip -n $A link set tlsv-a up; ip -n $B link set tlsv-b up
for pair in "$A tlsv-a" "$B tlsv-b"; do
  set -- $pair
  if [ "$DELAY" != 0ms ]; then
    # netem holds a window of packets in flight: limit far above RATE x DELAY.
    tc -n $1 qdisc add dev $2 root handle 1: netem delay "$DELAY" limit 100000 ||
      { echo "netem unavailable in this kernel (sch_netem): no delay can be added" >&2; exit 1; }
    tc -n $1 qdisc add dev $2 parent 1:1 handle 10: tbf rate "$RATE" burst 256kb latency 20ms
  else
    tc -n $1 qdisc add dev $2 root tbf rate "$RATE" burst 256kb latency 20ms
  fi
done
{ echo "# $(date -u) rate $RATE delay $DELAY (each way) size $SIZE iters $ITERS"
  echo "# cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc); load: $(uptime)"
  ip netns exec $A ping -c 3 -q $IPB 2>/dev/null | tail -1; } | tee "$OUT/link.txt"
# Certificates: one CA, one certificate per rank (P-256, 10 years).
C=$OUT/certs; mkdir -p "$C"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
  -keyout "$C/ca.key" -out "$C/ca.pem" -subj /CN=mixccl-bench-ca 2>/dev/null
for r in 0 1; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$C/r$r.key" -out "$C/r$r.csr" -subj /CN=rank$r 2>/dev/null
  printf 'subjectAltName=DNS:rank%s\nbasicConstraints=CA:FALSE\n' $r > "$C/r$r.ext"
  openssl x509 -req -in "$C/r$r.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial \
    -days 3650 -extfile "$C/r$r.ext" -out "$C/r$r.pem" 2>/dev/null
done
gcc -O2 -pthread -o /tmp/tls_tcpbw "$SHARED/baseline/physical/tcpbw.c"
for n in 1 2; do
  ip netns exec $B /tmp/tls_tcpbw recv $IPB 47211 $n > "$OUT/tcpbw$n.txt" & RP=$!
  sleep 0.2; ip netns exec $A /tmp/tls_tcpbw send $IPB 47211 $n 5 > /dev/null; wait $RP
  echo "tcpbw a->b streams=$n: $(grep RECV "$OUT/tcpbw$n.txt")" | tee -a "$OUT/link.txt"
done
PORT=29600
# run NAME ENV...: rank 0 in tls-a, rank 1 in tls-b; prints rank 0's row and CPU seconds.
run() {
  local name=$1; shift; PORT=$((PORT + 1)); local pids=()
  for r in 0 1; do
    local ns=$A; [ $r = 1 ] && ns=$B
    ip netns exec $ns env MIXCCL_ROOT=$IPA:$PORT MIXCCL_RANK=$r MIXCCL_NRANKS=2 \
      MIXCCL_TIMEOUT=120 MIXCCL_TLS_CERT="$C/r$r.pem" MIXCCL_TLS_KEY="$C/r$r.key" \
      MIXCCL_TLS_CA="$C/ca.pem" "$@" /usr/bin/time -f "cpu user %U sys %S" \
      "$PERF" allreduce -b "$SIZE" -e "$SIZE" -n "$ITERS" -w 2 -c 0 > "$OUT/$name.r$r.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  echo "== $name $*: $(grep -v '^#' "$OUT/$name.r0.txt" | grep -E '^ *[0-9]' | head -1)" \
       "| r0 $(grep cpu "$OUT/$name.r0.txt") | r1 $(grep cpu "$OUT/$name.r1.txt")"
}
for k in $(seq "$REPS"); do
  run plain$k MIXCCL_TLS=off
  run tls$k MIXCCL_TLS=cross-host
done
[ -z "${SKIP_MPI:-}" ] || exit 0
mpicc -O2 -o /tmp/tls_mpi_allreduce_bench "$SHARED/baseline/mpi_allreduce_bench.c"
ip netns exec $A unshare --uts sh -c "hostname $A; mpirun --allow-run-as-root --oversubscribe \
    --host $A:1,$B:1 -np 2 --bind-to none --mca plm_rsh_agent $SHARED/netns/netns_rsh_agent.sh \
    --mca oob_tcp_if_include 10.201.0.0/24 --mca btl tcp,self --mca btl_tcp_if_include 10.201.0.0/24 \
    /tmp/tls_mpi_allreduce_bench $SIZE $SIZE $ITERS 2 allreduce" > "$OUT/mpi.txt" 2>&1
echo "== Open MPI 2 ranks"; grep -v '^#' "$OUT/mpi.txt" | grep -E '^ *[0-9]' || cat "$OUT/mpi.txt"
