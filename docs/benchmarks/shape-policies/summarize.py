"""Medians of alternate.sh output: texts/s (wall and per CPU second) and ratios to a base variant, per repeat."""
import sys,json,statistics as st
from collections import defaultdict
rows=[json.loads(l) for l in open(sys.argv[1])]
base = sys.argv[2] if len(sys.argv) > 2 else "exact"
by=defaultdict(dict); pad={}; loads=[]
for x in rows: by[x["rep"]][x["variant"]]=x; pad[x["variant"]]=x["padding_share"]; loads.append(x["load"])
print(f"{len(by)} repeats, load average (1 min) {min(loads):.1f}-{max(loads):.1f}, median {st.median(loads):.1f}")
for n in pad:
    w=[r[n]["texts_per_s"] for r in by.values() if n in r]
    c=[r[n]["texts_per_cpu_s"] for r in by.values() if n in r]
    rw=[r[n]["texts_per_s"]/r[base]["texts_per_s"] for r in by.values() if n in r and base in r]
    rc=[r[n]["texts_per_cpu_s"]/r[base]["texts_per_cpu_s"] for r in by.values() if n in r and base in r]
    print(f"| {n} | {st.median(w):.1f} | {st.median(rw):.2f} ({min(rw):.2f}-{max(rw):.2f}) | {st.median(c):.1f} | {st.median(rc):.2f} ({min(rc):.2f}-{max(rc):.2f}) | {pad[n]:.2f} |")
