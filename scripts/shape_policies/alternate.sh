#!/bin/bash
# Run shape_policies.py once per variant and repeat, each in a fresh process, the variants'
# order rotating per repeat; one JSON line per run is appended to OUT.
# usage: alternate.sh DATA_DIR DTYPE REPEATS VARIANT,VARIANT,... OUT   (from the repository root)
DATA=$1; DTYPE=$2; REPS=$3; VARIANTS=$4; OUT=$5
HERE=$(dirname "$0")
for rep in $(seq 0 $((REPS-1))); do
  n=$(echo "$VARIANTS" | tr ',' '\n' | wc -l)
  for v in $(echo "$VARIANTS" | tr ',' '\n' | tail -n +$(( (rep % n) + 1 )); echo "$VARIANTS" | tr ',' '\n' | head -n $(( rep % n ))); do
    PYTHONPATH=src python "$HERE/shape_policies.py" --data-dir "$DATA" --dtype "$DTYPE" --texts 384 --repeats 1 \
      --first-rep "$rep" --variants "$v" 2>/dev/null | grep '"variant"' >> "$OUT"
  done
done
