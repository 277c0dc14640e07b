#!/usr/bin/env bash
# A/B of two gateway binaries on the plain relay (or the spam path), interleaved pairs, the
# gateway alone under smtp-source -> gateway -> smtp-sink (no Postfix trial in between, so
# pairs run seconds apart and the VM's drift, 10-20% over minutes, mostly cancels within a
# pair). Per trial and binary: the gateway's CPU ms per message (perf's task-clock), context
# switches per message, and system calls per message (raw_syscalls tracepoint; perf stat
# counts, no tracing overhead to speak of). Kernel work (about half the CPU) shows here where
# bench/instructions.sh (user space only) cannot see it.
#
# Usage: bench/ab.sh A_BIN B_BIN      Env: PAIRS (5), MSGS (20000), WARMUP (2000), SESSIONS (20),
#        SIZE (5000), SPAM (0; 1: the spam benchmark's policy, message and DNS)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
export BENCH_ROOT=${BENCH_ROOT:-/var/tmp/peers-bench}/ab
. "$PEERS/lib.sh"
. "$REPO/bench/relay-config.sh"
[[ $# -eq 2 && -x $1 && -x $2 ]] || die "usage: bench/ab.sh A_BIN B_BIN (two postern-gateway binaries)"
PAIRS=${PAIRS:-5}
WARMUP=${WARMUP:-2000}
GW_PORT=${GW_PORT:-2590}
DNS_PORT=${DNS_PORT:-2593}
DIR=$BENCH_ROOT/work
command -v perf >/dev/null || apt-get install -y -qq --no-install-recommends linux-perf >/dev/null || die "perf"
"$REPO/scripts/install-test-deps.sh" || exit 1
rm -rf "$DIR"; mkdir -p "$DIR"
GW_PID=; SINK_PID=; DNS_PID=
trap 'stop_pid "$GW_PID" 10; stop_pid "$SINK_PID" 2; stop_pid "$DNS_PID" 2' EXIT

content=(-l "$SIZE"); spam_dns=
if [[ ${SPAM:-0} == 1 ]]; then
  . "$REPO/bench/spam-env.sh"
  spam_setup "$DNS_PORT"; spam_dns=$DNS_PORT
fi

# send N [PERF_OUT]: N messages through the running gateway, waiting for the sink to count them;
# with PERF_OUT, perf stat counts the gateway meanwhile.
send() {
  local n=$1 out=${2:-} perf_pid=
  : >"$DIR/sink.count"
  "$SMTP_SINK" -u nobody -c -m 512 127.0.0.1:"$SINK_PORT" 1024 >"$DIR/sink.count" 2>/dev/null &
  SINK_PID=$!
  wait_port "$SINK_PORT" 10 || die "sink did not listen"
  if [[ -n $out ]]; then
    perf stat -x, -e task-clock,context-switches,raw_syscalls:sys_enter -p "$GW_PID" -o "$out" &
    perf_pid=$!
    sleep 0.2 # perf attaches
  fi
  "$SMTP_SOURCE" -s "$SESSIONS" -m "$n" -d "${content[@]}" -M bench.test -f "$SENDER" -t "$RCPT" \
    127.0.0.1:"$GW_PORT" >/dev/null 2>&1 || die "smtp-source failed"
  /usr/bin/python3 "$PEERS_DIR/sinkwait.py" "$DIR/sink.count" "$n" "$TRIAL_TIMEOUT" >/dev/null || die "not all delivered"
  [[ -n $perf_pid ]] && { kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null; }
  stop_pid "$SINK_PID" 2; SINK_PID=
}

# trial LABEL BIN: a fresh store and gateway, WARMUP messages, then MSGS counted.
trial() {
  rm -rf "$DIR/store"
  relay_config gw.bench.test "$GW_PORT" "{embedded: {path: \"$DIR/store\"}}" $spam_dns >"$DIR/gateway.yaml"
  "$2" run --config "$DIR/gateway.yaml" >"$DIR/gateway.log" 2>&1 &
  GW_PID=$!
  wait_port "$GW_PORT" 15 || die "gateway did not listen: $(tail -3 "$DIR/gateway.log")"
  send "$WARMUP"
  send "$MSGS" "$DIR/perf.csv"
  stop_pid "$GW_PID" 10; GW_PID=
  awk -F, -v n="$MSGS" -v l="$1" '/task-clock/ {t=$1} /context-switches/ {c=$1} /raw_syscalls/ {s=$1}
    END {printf "%s cpu_ms_per_msg=%.4f ctxsw_per_msg=%.2f syscalls_per_msg=%.2f\n", l, t/n, c/n, s/n}' "$DIR/perf.csv"
}

a=(); b=()
for ((i = 1; i <= PAIRS; i++)); do
  la=$(trial "A pair=$i" "$1"); echo "$la"; a+=("$la")
  lb=$(trial "B pair=$i" "$2"); echo "$lb"; b+=("$lb")
done
echo "SUMMARY spam=${SPAM:-0} msgs=$MSGS sessions=$SESSIONS size=$SIZE pairs=$PAIRS (median min max n)"
for k in cpu_ms_per_msg ctxsw_per_msg syscalls_per_msg; do
  echo "  A $k $(for l in "${a[@]}"; do kv "$k" "$l"; done | stats3)"
  echo "  B $k $(for l in "${b[@]}"; do kv "$k" "$l"; done | stats3)"
done
# B lower than A in how many pairs (CPU): the sign that survives the drift.
lower=0
for ((i = 0; i < ${#a[@]}; i++)); do
  awk -v x="$(kv cpu_ms_per_msg "${a[$i]}")" -v y="$(kv cpu_ms_per_msg "${b[$i]}")" 'BEGIN{exit !(y < x)}' && lower=$((lower + 1))
done
echo "  B's CPU lower than A's in $lower of ${#a[@]} pairs"
