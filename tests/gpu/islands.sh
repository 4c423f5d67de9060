#!/usr/bin/env bash
# Real-GPU check of islands (issue 16), for a machine with NVIDIA GPUs, their driver
# and the vendor's libnccl.so.2 (not mixccl's). Needs, built beforehand:
#   BIN/mixccl-perf    cargo build --release --bin mixccl-perf
# Usage: tests/gpu/islands.sh [BIN (default target/release)] [NCCL (default: libnccl.so.2 from the loader path)]
#
# 1. which libnccl.so.2 mixccl would load, and that it is not mixccl itself;
# 2. an island over every GPU (one rank per GPU: NCCL refuses two ranks on one GPU):
#    all-reduce, all-gather, reduce-scatter, broadcast on device buffers, every type,
#    each element checked; INFO lines show the island and its library;
# 3. the same with MIXCCL_ISLANDS=0 (host staging), for the GB/s beside it;
# 4. on a machine with one GPU, two ranks on it: NCCL refuses the duplicate GPU, the
#    island dissolves, INFO says why, and the results stay right;
# 5. on one GPU, MIXCCL_ISLAND_MIN_RANKS=1 and two emulated hosts: each rank is an
#    island of one whose phases run in the real NCCL; results checked.
# Prints "ISLANDS GPU: PASS" or "ISLANDS GPU: FAIL (n)" last; exits non-zero on failure.
set -u
BIN=${1:-target/release}
PERF="$BIN/mixccl-perf"
[ -n "${2:-}" ] && export MIXCCL_NCCL_LIB="$2"
export MIXCCL_TIMEOUT=${MIXCCL_TIMEOUT:-120} MIXCCL_SOCKET_IFNAME=lo
fails=0
note() { printf '\n=== %s\n' "$*"; }
perf() { # runs mixccl-perf; fails on a non-zero exit or wrong elements
    local log rc
    log=$(timeout 300 "$PERF" "$@" 2>&1)
    rc=$?
    echo "$log" | grep -E 'islands:|island:|outside islands|^ +[0-9]' | tail -n 40
    if [ $rc -ne 0 ] || ! echo "$log" | grep -q 'Out of bounds values : 0 OK'; then
        echo "!!! FAILED (rc $rc): mixccl-perf $*"
        fails=$((fails + 1))
    fi
    LAST_LOG=$log
}

note "GPU"
nvidia-smi -L || { echo "no GPU visible"; exit 2; }
ngpu=$(nvidia-smi -L | grep -c '^GPU')

note "1. the NCCL library"
lib=${MIXCCL_NCCL_LIB:-$(ldconfig -p | awk '/libnccl.so.2 /{print $NF; exit}')}
echo "libnccl.so.2: ${lib:-not found}"
if [ -n "$lib" ] && nm -D "$lib" 2>/dev/null | grep -q mixcclCommInitFromEnv; then
    echo "(that is mixccl itself: islands must refuse it)"
fi

if [ "$ngpu" -ge 2 ]; then
    note "2. an island of $ngpu ranks, one per GPU"
    for c in allreduce allgather reducescatter broadcast; do
        MIXCCL_DEBUG=INFO perf "$c" --np "$ngpu" --device cuda -b 4 -e 64M -f 4 -d all -n 5 -w 2
        echo "$LAST_LOG" | grep -q 'island: nccl\|nccl island of ranks' \
            || { echo "!!! no nccl island formed"; fails=$((fails + 1)); }
    done
    note "3. host staging (MIXCCL_ISLANDS=0), same sizes"
    MIXCCL_ISLANDS=0 perf allreduce --np "$ngpu" --device cuda -b 4 -e 64M -f 4 -d float -n 5 -w 2
else
    note "4. two ranks on the one GPU: NCCL refuses the duplicate, the island dissolves"
    MIXCCL_DEBUG=INFO perf allreduce --np 2 --device cuda -b 4 -e 1M -f 4 -d all -n 1 -w 0
    echo "$LAST_LOG" | grep -E 'could not join|none formed|left out' | head -n 5
    echo "$LAST_LOG" | grep -q 'none formed' \
        || { echo "!!! expected no island on one GPU"; fails=$((fails + 1)); }
fi

if [ "$ngpu" -lt 2 ]; then
    note "5. lone islands: MIXCCL_ISLAND_MIN_RANKS=1, each rank alone on an emulated host"
    # NCCL allows one rank per GPU, so on one GPU each rank is an island of one that
    # runs its phases (reduce-scatter, all-gather, broadcast) in the real NCCL on the
    # device, and mixccl bridges the two islands over TCP.
    lone() { # lone COLL TYPES MAXSIZE: two ranks joined through MIXCCL_ROOT, each its own host
        local port=$((29700 + RANDOM % 200)) r
        for r in 0 1; do
            NCCL_DEBUG=VERSION MIXCCL_HOST_ID=lone-gpu-host-$r MIXCCL_ISLAND_MIN_RANKS=1 MIXCCL_DEBUG=INFO \
                MIXCCL_RANK=$r MIXCCL_NRANKS=2 MIXCCL_ROOT=127.0.0.1:$port \
                MIXCCL_JOB_ID=lone-$port timeout 300 "$PERF" "$1" --device "${DEVICE:-cuda}" \
                -b 4 -e "$3" -f 4 -d "$2" -n 3 -w 1 >"/tmp/lone_$r.log" 2>&1 &
        done
        local bad=0
        wait %1 || bad=1
        wait %2 || bad=1
        grep -E 'NCCL version|island:|islands:|^ +[0-9]' /tmp/lone_0.log | tail -n 18
        if [ $bad -ne 0 ] || ! grep -q 'Out of bounds values : 0 OK' /tmp/lone_0.log; then
            echo "!!! FAILED: lone islands, $1"; tail -n 5 /tmp/lone_[01].log
            fails=$((fails + 1))
        fi
        grep -q 'nccl island of ranks \[0\]' /tmp/lone_0.log \
            || { echo "!!! no lone nccl island on rank 0"; fails=$((fails + 1)); }
    }
    lone allreduce all 16M
    for c in allgather reducescatter broadcast; do lone "$c" float 4M; done
fi

note "topology and islands (--topo)"
timeout 120 "$PERF" --topo --np "$([ "$ngpu" -ge 2 ] && echo "$ngpu" || echo 2)" --device cuda 2>&1 | grep -i island

if [ $fails -eq 0 ]; then echo "ISLANDS GPU: PASS"; else echo "ISLANDS GPU: FAIL ($fails)"; exit 1; fi
