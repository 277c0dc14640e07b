#!/usr/bin/env bash
# Instructions per message of the plain durable relay, counted by valgrind's callgrind: the
# same count for the same binary and workload whatever else the machine does, so small changes
# can be compared where wall-clock CPU (bench/run.sh) drifts 10-20% between runs on this VM.
# User-space instructions of the gateway only (its threads, libc included; the kernel's TCP
# and fsync work is not counted: about half of the CPU by perf).
#
# The gateway runs under callgrind with the embedded store on disk; after a warm-up of WARMUP
# messages the counters are zeroed, MSGS messages go through (smtp-source -> gateway ->
# smtp-sink, all delivered), and the counters are dumped.
#
# With SPAM=1 the gateway runs the spam benchmark's checks (bench/spam.sh's "spam" gateway: SPF,
# DKIM, DMARC, one DNSBL zone, content rules, DNS from a local dnsmasq) on its DKIM-signed
# message, so the spam path's own cost can be compared the same way.
#
# Usage: bench/instructions.sh        Env: MSGS (2000), WARMUP (500), SESSIONS (20), SIZE (5000),
#        GATEWAY_BIN (a postern-gateway binary to measure instead of this checkout's build),
#        SPAM (0; 1: the spam path), DNS_PORT (2583, with SPAM=1)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
MSGS=${MSGS:-2000}
export BENCH_ROOT=${BENCH_ROOT:-/var/tmp/peers-bench}/instructions
. "$PEERS/lib.sh"
. "$REPO/bench/relay-config.sh"
WARMUP=${WARMUP:-500}
GW_PORT=${GW_PORT:-2580}
DIR=$BENCH_ROOT/work

command -v valgrind >/dev/null || apt-get install -y -qq --no-install-recommends valgrind >/dev/null || die "valgrind"
"$REPO/scripts/install-test-deps.sh" || exit 1
if [[ -z ${GATEWAY_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
  GATEWAY_BIN=$REPO/target/release/postern-gateway
fi
rm -rf "$DIR"; mkdir -p "$DIR"
SINK_PID=; DNS_PID=
trap 'stop_pid "${GW_PID:-}" 30; stop_pid "$SINK_PID" 2; stop_pid "$DNS_PID" 2' EXIT
# What smtp-source sends: SIZE bytes of its own, or the spam benchmark's signed message.
content=(-l "$SIZE")
spam_dns=
if [[ ${SPAM:-0} == 1 ]]; then
  . "$REPO/bench/spam-env.sh"
  spam_dns=${DNS_PORT:-2583}
  spam_setup "$spam_dns"
fi
relay_config gw.bench.test "$GW_PORT" "{embedded: {path: \"$DIR/store\"}}" $spam_dns >"$DIR/gateway.yaml"
valgrind --tool=callgrind --callgrind-out-file="$DIR/callgrind.out.%p" \
  "$GATEWAY_BIN" run --config "$DIR/gateway.yaml" >"$DIR/gateway.log" 2>"$DIR/valgrind.log" &
GW_PID=$!
wait_port "$GW_PORT" 120 || die "gateway did not listen under valgrind: $(tail -3 "$DIR/valgrind.log")"

# send N: N messages through, waiting until the sink has counted them all.
send() {
  local n=$1 cfile=$DIR/sink.count
  : >"$cfile"
  "$SMTP_SINK" -u nobody -c -m 512 127.0.0.1:"$SINK_PORT" 1024 >"$cfile" 2>/dev/null &
  SINK_PID=$!
  wait_port "$SINK_PORT" 10 || die "sink"
  "$SMTP_SOURCE" -s "$SESSIONS" -m "$n" -d "${content[@]}" -M bench.test -f "$SENDER" -t "$RCPT" \
    127.0.0.1:"$GW_PORT" >/dev/null 2>&1 || die "smtp-source failed"
  /usr/bin/python3 "$PEERS_DIR/sinkwait.py" "$cfile" "$n" "$TRIAL_TIMEOUT" >/dev/null || die "not all delivered"
  stop_pid "$SINK_PID" 2; SINK_PID=
}

send "$WARMUP"
callgrind_control -z "$GW_PID" >/dev/null || die "callgrind_control -z"
send "$MSGS"
callgrind_control -d "$GW_PID" >/dev/null || die "callgrind_control -d"
# The dump just written: the newest file that is not the process's final one.
dump=$(ls -t "$DIR"/callgrind.out."$GW_PID".* 2>/dev/null | head -1)
[[ -n $dump ]] || die "no callgrind dump"
ir=$(sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$dump" | head -1)
awk -v ir="$ir" -v n="$MSGS" -v s="$SIZE" -v spam="${SPAM:-0}" 'BEGIN{ printf "spam=%d msgs=%d size=%d instructions=%d instructions_per_msg=%.0f\n", spam, n, s, ir, ir / n }'
echo "dump: $dump (callgrind_annotate $dump | head -40)"
