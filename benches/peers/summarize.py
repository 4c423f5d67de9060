#!/usr/bin/env python3
"""Median tables from the raw outputs of benches/peers/*.sh.

Usage: summarize.py DIR
Reads mixccl-perf tables (out-of-place and in-place columns) and the baseline
harness' MPI / torch-gloo tables (one table per collective), groups files by name
without the `_repN` suffix, and prints per size: median time (us) / busbw (GB/s)
over the reps, one column per tool and placement.
"""
import os, re, statistics, sys
from collections import defaultdict

def parse(path):
    """{collective: {size: (time_us, busbw)}}; mixccl files yield two placements."""
    out = defaultdict(dict)
    coll = None
    for line in open(path, errors="replace"):
        if line.startswith("# mixccl-perf "):
            coll = line.split()[2].rstrip(":")
        elif line.startswith("# MPI_Allgather") or line.startswith("# allgather"):
            coll = "allgather"
        elif line.startswith("# MPI_Allreduce") or line.startswith("# allreduce"):
            coll = "allreduce"
        if line.startswith("#") or not line.strip():
            continue
        f = line.split()
        try:
            size = int(f[0])
        except ValueError:
            continue
        try:
            if len(f) >= 13:  # mixccl-perf: size count type redop root t a b w t a b w
                out[coll + " oop"][size] = (float(f[5]), float(f[7]))
                if f[9] != "N/A":
                    out[coll + " ip"][size] = (float(f[9]), float(f[11]))
            elif len(f) >= 6:
                out[coll][size] = (float(f[2]), float(f[4]))
        except ValueError:
            continue  # a launcher's message, not a row
    return out

def main(d):
    groups = defaultdict(list)
    for name in sorted(os.listdir(d)):
        if name.endswith(".txt"):
            groups[re.sub(r"_rep\d+\.txt$", "", name)].append(os.path.join(d, name))
    table = defaultdict(lambda: defaultdict(list))  # (tool, coll) -> size -> [(t, bw)]
    for tool, files in groups.items():
        for p in files:
            for coll, rows in parse(p).items():
                for size, v in rows.items():
                    table[(tool, coll)][size].append(v)
    colls = sorted({c.split()[0] for (_, c) in table})
    for coll in colls:
        cols = sorted(k for k in table if k[1].split()[0] == coll)
        sizes = sorted({s for k in cols for s in table[k]})
        print(f"\n{coll}: median time (us) / busbw (GB/s) over reps")
        print("| size | " + " | ".join(f"{t} {c} (x{max(len(v) for v in table[(t, c)].values())})" for t, c in cols) + " |")
        print("|---:|" + "---:|" * len(cols))
        for s in sizes:
            cells = []
            for k in cols:
                v = table[k].get(s)
                if v:
                    cells.append(f"{statistics.median(x[0] for x in v):.1f} / {statistics.median(x[1] for x in v):.2f}")
                else:
                    cells.append("-")
            print(f"| {s} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/mixccl-peers")
