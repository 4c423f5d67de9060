#!/usr/bin/env bash
# mixccl-sim against mixccl-perf on the topologies this machine can run.
#
# 1. Calibrate shared memory on 2 ranks: alpha from an 8 B sendrecv, bandwidth from a
#    256 MiB sendrecv, the reduction rate from a 256 MiB 2-rank ring all_reduce.
#    Every measurement runs REPS times and the fastest counts (the least disturbed
#    by whatever else the machine runs).
# 2. One host x NPS ranks over shared memory, ring forced (MIXCCL_ALGO), 1 MiB..256 MiB:
#    measured (mixccl-perf --np) against simulated (--cores = this machine's cores).
# 3. With root: two emulated hosts x 2 ranks (namespaces sim-a/sim-b of our own, a
#    veth shaped to RATE by tbf), the link calibrated by 2 ranks across it (alpha: 8 B
#    sendrecv; bandwidth: a 64 MiB ring all_reduce, S bytes each way), ring and hier
#    forced.
# The simulation gets this machine's cores and caches (sizes from sysfs) and the host
# model's constants, fitted on the session-3 measurements (docs/scaling.md, "Validation
# against measurement"): SAME_CORE (cost of a byte between two ranks of one core over one
# between cores), SWITCH_US (a message's wait per other rank on its receiver's core),
# L2X and L3X (speed-ups of the part of a call's working set that fits L2 or L3).
# Prints one table (measured us, simulated us, ratio, within 15%) with the load average
# before and after. Needs: cargo build --release. Raw outputs under $OUT. Rows can be
# simulated again from $OUT without measuring: benches/peers/sim_compare.py $OUT.
# Usage: benches/peers/sim_validate.sh            NPS="2 3 4 8" RATE=1gbit ITERS=5 REPS=2
set -u
cd "$(dirname "$0")/../.."
PERF=./target/release/mixccl-perf
SIM=./target/release/mixccl-sim
OUT=${OUT:-/tmp/mixccl-sim-validate}; mkdir -p "$OUT"
NPS=${NPS:-2 3 4 8}; RATE=${RATE:-1gbit}; ITERS=${ITERS:-5}
MIN=${MIN:-1M}; MAX=${MAX:-256M}; REPS=${REPS:-2}
CORES=$(nproc)
SAME_CORE=${SAME_CORE:-0.7}; SWITCH_US=${SWITCH_US:-20}; L2X=${L2X:-2.5}; L3X=${L3X:-1.5}
HOSTM="--same-core $SAME_CORE --switch-us $SWITCH_US"
C=/sys/devices/system/cpu/cpu0/cache
[ -r $C/index2/size ] && HOSTM="$HOSTM --l2 $(cat $C/index2/size):$L2X"
[ -r $C/index3/size ] && HOSTM="$HOSTM --l3 $(cat $C/index3/size):$L3X"
[ -x "$PERF" ] && [ -x "$SIM" ] || { echo "build first: cargo build --release"; exit 1; }
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $CORES  $(date -u +%FT%TZ)"

# time_us PREFIX SIZE: the fastest out-of-place time of the row of SIZE in the
# mixccl-perf JSON reports PREFIX.rep*.json.
time_us() {
  python3 -c 'import json,sys,glob
t=[r["out_of_place"]["time_us"] for f in glob.glob(sys.argv[1]+".rep*.json")
   for r in json.load(open(f))["rows"] if r["size"]==int(sys.argv[2])]
print(min(t))' "$1" "$2"
}
# reps PREFIX CMD...: run CMD (a mixccl-perf command line) REPS times, JSON to PREFIX.repK.json.
reps() {
  local pre=$1; shift
  for k in $(seq "$REPS"); do "$@" -J "$pre.rep$k.json" > "$pre.rep$k.txt" 2>&1; done
}
# sim_rows FILE ALGO: "size time_us" per row of a mixccl-sim JSON report.
sim_rows() {
  python3 -c 'import json,sys
for r in json.load(open(sys.argv[1])):
    t=dict((a,x) for a,x in r["results"])[sys.argv[2]]
    print(r["size"], t["Ok"]["seconds"]*1e6 if "Ok" in t else "nan")' "$1" "$2"
}

# 1. Calibration.
REPS=$((REPS + 1)) reps "$OUT/cal_8" $PERF sendrecv --np 2 -b 8 -e 8 -n 500 -w 50 -c 0
REPS=$((REPS + 1)) reps "$OUT/cal_256m" $PERF sendrecv --np 2 -b 256M -e 256M -n 5 -w 1 -c 0
REPS=$((REPS + 1)) reps "$OUT/cal_ar" env MIXCCL_ALGO=allreduce:ring $PERF allreduce --np 2 -b 256M -e 256M -n 5 -w 1 -c 0
read -r ALPHA GBIT REDUCE < <(python3 - "$(time_us "$OUT/cal_8" 8)" \
  "$(time_us "$OUT/cal_256m" 268435456)" "$(time_us "$OUT/cal_ar" 268435456)" <<'EOF'
import sys
a, t64, tar = (float(x) * 1e-6 for x in sys.argv[1:4])
S = 256 * 2**20
beta = S / (t64 - a)                    # bytes/s, one direction
# 2-rank ring: half the buffer received and reduced, half received and copied.
rest = tar - S / 2 / beta
red = S / 2 / rest if rest > 0 else 1e12
print(f"{a*1e6:.2f} {beta*8/1e9:.3f} {min(red, 1e12)/1e9:.3f}")
EOF
)
echo "# shm calibration (2 ranks, fastest of $((REPS + 1))): alpha ${ALPHA} us, ${GBIT} Gbit/s, reduction ${REDUCE} GB/s"
echo "# host model: $HOSTM"

printf "%-22s %-6s %10s %12s %12s %7s %s\n" "# topology" algo size "measured_us" "simulated_us" "sim/meas" "within15%"
report() { # NAME ALGO MEASURED_PREFIX SIMJSON
  sim_rows "$4" "$2" | while read -r size simt; do
    local m; m=$(time_us "$3" "$size" 2>/dev/null) || continue
    python3 -c 'import sys
n,a,s,m,t=sys.argv[1:6]; m=float(m); t=float(t); r=t/m
ok="yes" if abs(r-1)<=0.15 else "NO"
print(f"{n:<22} {a:<6} {int(s):>10} {m:>12.1f} {t:>12.1f} {r:>7.2f} {ok}")' "$1" "$2" "$size" "$m" "$simt"
  done
}

# 2. One host.
for np in $NPS; do
  reps "$OUT/shm_np$np" env MIXCCL_ALGO=allreduce:ring $PERF allreduce --np "$np" -b "$MIN" -e "$MAX" -f 4 -n "$ITERS" -w 2 -c 0
  $SIM allreduce --hosts 1 --ranks-per-host "$np" --intra "shm:$ALPHA,$GBIT" --cores "$CORES" $HOSTM \
    --reduce-gbs "$REDUCE" --algos ring -b "$MIN" -e "$MAX" -f 4 -J "$OUT/sim_shm_np$np.json" > "$OUT/sim_shm_np$np.txt" 2>&1
  report "1 host x $np (shm)" ring "$OUT/shm_np$np" "$OUT/sim_shm_np$np.json"
done

# 3. Two emulated hosts.
if [ "$(id -u)" = 0 ] && command -v ip > /dev/null && command -v tc > /dev/null; then
  A=sim-a; B=sim-b; IPA=10.201.0.1; IPB=10.201.0.2
  down() { ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; }
  trap down EXIT
  down
  ip netns add $A && ip netns add $B
  ip link add sim-va type veth peer name sim-vb
  ip link set sim-va netns $A && ip link set sim-vb netns $B
  ip -n $A addr add $IPA/24 dev sim-va && ip -n $B addr add $IPB/24 dev sim-vb
  for x in "$A sim-va" "$B sim-vb"; do
    set -- $x
    ip -n "$1" link set lo up && ip -n "$1" link set "$2" up
    tc -n "$1" qdisc add dev "$2" root tbf rate "$RATE" burst 256kb latency 20ms
  done
  PORT=29700
  # job NAME NRANKS ALGO ARGS...: ranks split evenly, the first half in sim-a; REPS
  # times, rank 0's JSON to NAME.repK.json.
  job() {
    local name=$1 nr=$2 algo=$3; shift 3
    for k in $(seq "$REPS"); do
      PORT=$((PORT + 1)); local pids=()
      for r in $(seq 0 $((nr - 1))); do
        local ns=$A; [ "$r" -ge $((nr / 2)) ] && ns=$B
        local j=""; [ "$r" = 0 ] && j="-J $OUT/$name.rep$k.json"
        ip netns exec $ns env MIXCCL_ROOT=$IPA:$PORT MIXCCL_RANK=$r MIXCCL_NRANKS=$nr \
          MIXCCL_ALGO="$algo" MIXCCL_TIMEOUT=120 $PERF "$@" $j > "$OUT/$name.rep$k.r$r.txt" 2>&1 &
        pids+=($!)
      done
      for p in "${pids[@]}"; do wait "$p"; done
    done
  }
  job net_cal8 2 "" sendrecv -b 8 -e 8 -n 200 -w 20 -c 0
  job net_cal64 2 allreduce:ring allreduce -b 64M -e 64M -n 2 -w 1 -c 0
  read -r XALPHA XGBIT < <(python3 - "$(time_us "$OUT/net_cal8" 8)" "$(time_us "$OUT/net_cal64" 67108864)" <<'EOF'
import sys
a, t = (float(x) * 1e-6 for x in sys.argv[1:3])
# A 2-rank ring all_reduce sends S bytes each way (half reduce-scatter, half all-gather).
print(f"{a*1e6:.1f} {64 * 2**20 / (t - 2 * a) * 8 / 1e9:.3f}")
EOF
)
  echo "# veth calibration (1 rank per namespace): alpha ${XALPHA} us, ${XGBIT} Gbit/s (fastest of $REPS)"
  for algo in ring hier; do
    job "net_$algo" 4 "allreduce:$algo" allreduce -b "$MIN" -e "$MAX" -f 4 -n "${NET_ITERS:-2}" -w 1 -c 0
    # Both namespaces share this machine's cores: one per emulated host.
    $SIM allreduce --hosts 2 --ranks-per-host 2 --intra "shm:$ALPHA,$GBIT" --inter "tcp:$XALPHA,$XGBIT" \
      --cores $((CORES / 2 > 0 ? CORES / 2 : 1)) $HOSTM --reduce-gbs "$REDUCE" --algos $algo -b "$MIN" -e "$MAX" -f 4 \
      -J "$OUT/sim_net_$algo.json" > "$OUT/sim_net_$algo.txt" 2>&1
    report "2 hosts x 2 (veth $RATE)" $algo "$OUT/net_$algo" "$OUT/sim_net_$algo.json"
  done
else
  echo "# two emulated hosts skipped: needs root, ip and tc"
fi
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)  $(date -u +%FT%TZ)"
