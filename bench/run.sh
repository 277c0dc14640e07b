#!/usr/bin/env bash
# End-to-end relay throughput of postern-gateway next to Postfix, in the same run, with
# Postfix's smtp-source as the client and smtp-sink as the destination
# (harness: ../shared/bench/peers/lib.sh). Everything on 127.0.0.1.
#
# Usage: bench/run.sh [multi|single ...]       (default: multi)
# Env:   MSGS SESSIONS SIZE REPS (see lib.sh), GATEWAY_PORT (default 2530),
#        GATEWAY_BIN (a postern-gateway binary to measure instead of building this checkout's:
#        an A/B of two commits runs this script once per binary, in turns)
# Prints one line per trial and a SUMMARY with medians; see bench/RESULTS.md.
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
. "$PEERS/lib.sh"
. "$REPO/bench/relay-config.sh"

GATEWAY_PORT=${GATEWAY_PORT:-2530}
GW=$BENCH_ROOT/postern
modes=("$@"); [[ ${#modes[@]} -gt 0 ]] || modes=(multi)

"$REPO/scripts/install-test-deps.sh" || exit 1
if [[ -z ${GATEWAY_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
  GATEWAY_BIN=$REPO/target/release/postern-gateway
fi

start_gateway() {
  rm -rf "$GW"; mkdir -p "$GW"
  # The store on disk (not tmpfs): fsync is real.
  relay_config gw.bench.test "$GATEWAY_PORT" "{embedded: {path: \"$GW/store\"}}" >"$GW/gateway.yaml"
  port_in_use "$GATEWAY_PORT" && die "port $GATEWAY_PORT already in use"
  "$GATEWAY_BIN" run --config "$GW/gateway.yaml" >"$GW/gateway.log" 2>&1 &
  GW_PID=$!
  wait_port "$GATEWAY_PORT" 15 || die "gateway did not listen"
}


# Mail left in the bench Postfix's queue by an interrupted run is retried at start, before any
# sink listens; Postfix then suspends the destination and the first trial times out. Drop it.
[[ -d $BENCH_ROOT/postfix/etc ]] && postsuper -c "$BENCH_ROOT/postfix/etc" -d ALL >/dev/null 2>&1
"$PEERS/postfix-relay.sh" start >/dev/null 2>&1 || die "postfix instance did not start"
PF_PID=$(tr -d ' \n' <"$BENCH_ROOT/postfix/spool/pid/master.pid")
start_gateway
trap 'stop_pid $GW_PID 10; "$PEERS/postfix-relay.sh" stop >/dev/null 2>&1' EXIT

for mode in "${modes[@]}"; do
  pf_mps=(); gw_mps=(); pf_cpu=(); gw_cpu=(); ratio=(); cpu_ratio=()
  for ((i = 1; i <= REPS; i++)); do
    p=$(run_trial "$POSTFIX_PORT" "$mode" "$PF_PID")
    echo "postfix mode=$mode rep=$i $p"
    g=$(run_trial "$GATEWAY_PORT" "$mode" "$GW_PID")
    echo "postern mode=$mode rep=$i $g"
    [[ $(kv ok "$p") == 1 && $(kv ok "$g") == 1 ]] || { log "trial failed"; continue; }
    pf_mps+=("$(kv e2e_mps "$p")"); gw_mps+=("$(kv e2e_mps "$g")")
    pf_cpu+=("$(kv srv_cpu_ms_per_msg "$p")"); gw_cpu+=("$(kv srv_cpu_ms_per_msg "$g")")
    ratio+=("$(awk -v a="$(kv e2e_mps "$g")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
    cpu_ratio+=("$(awk -v a="$(kv srv_cpu_ms_per_msg "$g")" -v b="$(kv srv_cpu_ms_per_msg "$p")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  echo "  postfix_e2e_mps        $(printf '%s\n' "${pf_mps[@]}" | stats)"
  echo "  postern_e2e_mps        $(printf '%s\n' "${gw_mps[@]}" | stats)"
  echo "  postern/postfix mps    $(printf '%s\n' "${ratio[@]}" | stats3)"
  echo "  postfix_cpu_ms_per_msg $(printf '%s\n' "${pf_cpu[@]}" | stats3)"
  echo "  postern_cpu_ms_per_msg $(printf '%s\n' "${gw_cpu[@]}" | stats3)"
  echo "  postern/postfix cpu    $(printf '%s\n' "${cpu_ratio[@]}" | stats3)"
done
