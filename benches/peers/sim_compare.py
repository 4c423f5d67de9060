#!/usr/bin/env python3
"""mixccl-sim against stored sim_validate.sh measurements, without measuring again.

Reads the mixccl-perf reports sim_validate.sh left in OUT (shm_np*.rep*.json,
net_{ring,hier}.rep*.json; the fastest repetition counts, as in the script), runs
mixccl-sim on each topology with the calibration given here and any extra flags,
and prints sim/measured per row.

Usage: benches/peers/sim_compare.py OUT [--sim PATH] [--shm A_US,GBIT,REDUCE_GBS]
                                         [--veth A_US,GBIT] [--cores C] [-- SIM FLAGS...]
"""
import argparse, glob, json, subprocess, sys


def measured(prefix):
    """size -> fastest out-of-place time (us) over PREFIX.rep*.json."""
    best = {}
    for f in glob.glob(prefix + ".rep*.json"):
        for r in json.load(open(f))["rows"]:
            t = r["out_of_place"]["time_us"]
            best[r["size"]] = min(t, best.get(r["size"], t))
    return best


def simulate(sim, args, algo):
    out = subprocess.run([sim, "allreduce", *args, "--algos", algo, "-b", "1M", "-e", "256M",
                          "-f", "4", "-J", "/dev/stdout"], capture_output=True, text=True, check=True)
    # The JSON array follows the table on stdout.
    rows = json.loads(out.stdout[out.stdout.index("\n[") + 1:])
    return {r["size"]: dict((a, x) for a, x in r["results"])[algo]["Ok"]["seconds"] * 1e6
            for r in rows}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--sim", default="target/release/mixccl-sim")
    p.add_argument("--shm", default="1.11,41.818,3.184")
    p.add_argument("--veth", default="16.4,0.937")
    p.add_argument("--cores", type=int, default=2)
    # Everything after "--" goes to mixccl-sim (argparse would take its flags as ours).
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    alpha, gbit, red = a.shm.split(",")
    shm = [f"--intra", f"shm:{alpha},{gbit}", "--reduce-gbs", red]
    rows = []
    for np_ in (2, 3, 4, 8):
        m = measured(f"{a.out}/shm_np{np_}")
        if not m:
            continue
        s = simulate(a.sim, ["--hosts", "1", "--ranks-per-host", str(np_), *shm,
                             "--cores", str(a.cores), *a.extra], "ring")
        rows += [(f"1 host x {np_}", "ring", z, m[z], s[z]) for z in sorted(m)]
    for algo in ("ring", "hier"):
        m = measured(f"{a.out}/net_{algo}")
        if not m:
            continue
        s = simulate(a.sim, ["--hosts", "2", "--ranks-per-host", "2", *shm, "--inter",
                             f"tcp:{a.veth}", "--cores", str(max(a.cores // 2, 1)), *a.extra], algo)
        rows += [("2 hosts x 2", algo, z, m[z], s[z]) for z in sorted(m)]
    ok = 0
    print(f"{'# topology':<14} {'algo':<5} {'size':>10} {'measured_us':>12} {'simulated_us':>12} sim/meas")
    for name, algo, z, mt, st in rows:
        r = st / mt
        ok += abs(r - 1) <= 0.15
        print(f"{name:<14} {algo:<5} {z:>10} {mt:>12.1f} {st:>12.1f} {r:>8.2f}"
              f"{'' if abs(r - 1) <= 0.15 else '  NO'}")
    print(f"# {ok} of {len(rows)} within 15%")


if __name__ == "__main__":
    sys.exit(main())
