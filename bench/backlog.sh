#!/usr/bin/env bash
# Memory with a backlog: the destination is down (nothing listens on its port), BACKLOG
# messages are accepted and wait in the queue, and the gateway's RSS is sampled as the queue
# fills and after, while the scheduler keeps leasing and retrying. Bodies must not be held in
# memory for queued jobs: RSS should stay flat however deep the queue.
#
# Usage: bench/backlog.sh [embedded|redis]      Env: BACKLOG (100000) SESSIONS SIZE (lib.sh)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
. "$PEERS/lib.sh"
STORE=${1:-embedded}
BACKLOG=${BACKLOG:-100000}
PORT=${PORT:-2561}
DEAD_PORT=${DEAD_PORT:-2562}
REDIS_PORT=${REDIS_PORT:-2563}
DIR=$BENCH_ROOT/backlog

"$REPO/scripts/install-test-deps.sh" || exit 1
(cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
port_in_use "$DEAD_PORT" && die "port $DEAD_PORT must stay closed"
rm -rf "$DIR"; mkdir -p "$DIR"

case $STORE in
  embedded) store="{embedded: {path: \"$DIR/store\"}}" ;;
  redis)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$DIR" >"$DIR/redis.log" 2>&1 &
    REDIS_PID=$!
    wait_port "$REDIS_PORT" 10 || die "redis did not start"
    store="{redis: {url: \"redis://127.0.0.1:$REDIS_PORT/\"}}" ;;
  *) die "store: embedded or redis" ;;
esac
cat >"$DIR/gateway.yaml" <<YAML
hostname: gw.bench.test
listeners: [{name: smtp, address: "127.0.0.1:$PORT"}]
admin: {address: "127.0.0.1:0"}
store: $store
relay: {trustedNetworks: [127.0.0.0/8]}
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$DEAD_PORT"], tls: {mode: none}}
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
logging: {format: text, level: warn}
YAML
"$REPO/target/release/postern-gateway" run --config "$DIR/gateway.yaml" >"$DIR/gateway.log" 2>&1 &
GW=$!
trap 'stop_pid "$GW" 5; stop_pid "${REDIS_PID:-}" 5' EXIT
wait_port "$PORT" 15 || die "gateway did not listen"

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
echo "store=$STORE backlog=$BACKLOG size=$SIZE idle rss_kb=$(rss_kb "$GW")"
sent=0 step=$((BACKLOG / 5))
while (( sent < BACKLOG )); do
  t0=$(now)
  "$SMTP_SOURCE" -s "$SESSIONS" -m "$step" -d -l "$SIZE" -M bench.test -f "$SENDER" -t "$RCPT" "127.0.0.1:$PORT" >/dev/null 2>&1
  sent=$((sent + step))
  echo "store=$STORE queued=$sent accept_s=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}') rss_kb=$(rss_kb "$GW")"
done
# The scheduler keeps failing against the dead port and rescheduling: RSS after a while.
for wait in 10 30; do
  sleep "$wait"
  echo "store=$STORE queued=$sent after_s=$wait rss_kb=$(rss_kb "$GW") peak_rss_kb=$(hwm_kb "$GW")"
done
