#!/usr/bin/env bash
# Coverage-guided fuzzing with AFL++ through afl.rs (`cargo afl`), which builds on stable Rust
# (cargo-fuzz needs a nightly for its sanitizer flags; CI has none). Targets and their
# properties: gateway/src/fuzzing.rs. Seeds: fuzz/seeds/<target>/.
#
#   scripts/fuzz.sh                  every target for 12 s (what CI runs)
#   scripts/fuzz.sh 3600 session     one target for an hour (the long run in FUZZING.md)
#
# Fails when a target crashed (a panic is a crash: a broken property or a bug); the inputs are
# left in target/fuzz/out/<target>/default/crashes/.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-12}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(session data proxy received config content)

# Installing cargo-afl also builds AFL++ from the source bundled in the crate (nothing is
# downloaded but crates); `config --build` covers an install whose AFL++ build was skipped.
command -v cargo-afl >/dev/null || cargo install cargo-afl --locked --version 0.18.2
if ! log=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$log" || { echo "$log" >&2; exit 1; }
fi
# cargo-afl builds every crate with codegen-units=1: at opt-level 3 that is ~15 minutes of a
# 2-core machine from scratch, at 1 about 8, at 0 about 3-4. Short runs (CI: a smoke run of
# each target) build at opt-level 0, whose executions are slower (the session target ~35% vs
# opt-level 1) but start 5 minutes sooner; long runs at 3 (fastest executions). Each level
# keeps its own target directory.
export AFL_OPT_LEVEL=${AFL_OPT_LEVEL:-$([ "$secs" -lt 600 ] && echo 0 || echo 3)}
export CARGO_TARGET_DIR="$PWD/target/fuzz-o$AFL_OPT_LEVEL"
(cd fuzz && cargo afl build --release --locked)

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
status=0
for t in "${targets[@]}"; do
  out="$CARGO_TARGET_DIR/out/$t"
  rm -rf "$out"
  mkdir -p "$(dirname "$out")"
  cargo afl fuzz -V "$secs" -t 1000 -i "fuzz/seeds/$t" -o "$out" -x fuzz/dict/smtp.dict \
    "$CARGO_TARGET_DIR/release/$t" >"$out.log" 2>&1 || { status=1; tail -20 "$out.log"; }
  stats="$out/default/fuzzer_stats"
  execs=$(awk -F': *' '/^execs_done/ {print $2}' "$stats" 2>/dev/null || echo 0)
  cover=$(awk -F': *' '/^bitmap_cvg/ {print $2}' "$stats" 2>/dev/null || echo "?")
  edges=$(awk -F': *' '/^edges_found/ {print $2}' "$stats" 2>/dev/null || echo "?")
  crashes=$(find "$out/default/crashes" -name 'id:*' 2>/dev/null | wc -l)
  echo "fuzz $t: ${secs}s, $execs executions, $edges edges ($cover), $crashes crashes"
  if [ "$crashes" -gt 0 ]; then
    status=1
    for f in "$out"/default/crashes/id:*; do
      echo "crash input $f:"; od -c "$f" | head -8
    done
  fi
done
exit "$status"
