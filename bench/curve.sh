#!/usr/bin/env bash
# The cost curve: Postern next to Postfix (bench/run.sh, interleaved trials, multi mode) for
# message sizes 1 KB, 5 KB, 100 KB and 10 MB at 20 sessions, and for 1, 20 and 200 sessions at
# 5 KB. Writes bench/curve.csv (medians) and bench/curve.svg (bench/curve_plot.py).
#
# Usage: bench/curve.sh       Env: REPS (default 3)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
export REPS=${REPS:-3}
OUT=$REPO/bench/curve.csv
RAW=$REPO/bench/curve.raw.txt
echo "variable,size,sessions,msgs,postfix_mps,postern_mps,postfix_cpu_ms,postern_cpu_ms" >"$OUT"
: >"$RAW"

# point VARIABLE SIZE SESSIONS MSGS
point() {
  local text
  text=$(MSGS=$4 SESSIONS=$3 SIZE=$2 "$REPO/bench/run.sh" multi 2>&1)
  printf '# %s size=%s sessions=%s msgs=%s\n%s\n' "$1" "$2" "$3" "$4" "$text" >>"$RAW"
  local m; m() { awk -v k="$1" '$1 == k { print $2 }' <<<"$text"; }
  echo "$1,$2,$3,$4,$(m postfix_e2e_mps),$(m postern_e2e_mps),$(m postfix_cpu_ms_per_msg),$(m postern_cpu_ms_per_msg)" | tee -a "$OUT"
}

point size 1000 20 10000
point size 5000 20 10000
point size 100000 20 2000
point size 10000000 20 100
point sessions 5000 1 3000
point sessions 5000 200 10000
python3 "$REPO/bench/curve_plot.py" "$OUT" "$REPO/bench/curve.svg"
