#!/usr/bin/env bash
# Relay throughput with the Redis store: 1, 2 and 3 postern-gateway processes sharing one
# redis-server, next to one gateway with the embedded store, in the same run. Each gateway
# gets its own smtp-source (SESSIONS/N sessions, MSGS/N messages) started at the same moment;
# one smtp-sink counts them all. Also counts Redis commands per message (INFO commandstats).
#
# Usage: bench/redis.sh            Env: MSGS SESSIONS SIZE REPS (lib.sh), APPENDFSYNC (everysec)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
. "$PEERS/lib.sh"
. "$REPO/bench/relay-config.sh"
APPENDFSYNC=${APPENDFSYNC:-everysec}
RDIR=$BENCH_ROOT/redis
REDIS_PORT=${REDIS_PORT:-2540}
BASE_PORT=${BASE_PORT:-2531}

"$REPO/scripts/install-test-deps.sh" || exit 1
(cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"

start_redis() {
  rm -rf "$RDIR"; mkdir -p "$RDIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync "$APPENDFSYNC" \
    --dir "$RDIR" >"$RDIR/redis.log" 2>&1 &
  REDIS_PID=$!
  wait_port "$REDIS_PORT" 10 || die "redis did not start"
}

# start_gateway INDEX STORE_YAML -> sets GW_PIDS[INDEX]
start_gateway() {
  local i=$1 store=$2 port=$((BASE_PORT + $1)) dir=$BENCH_ROOT/postern-$1
  rm -rf "$dir"; mkdir -p "$dir"
  relay_config "gw$i.bench.test" "$port" "$store" >"$dir/gateway.yaml"
  "$REPO/target/release/postern-gateway" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
  GW_PIDS[$i]=$!
  wait_port "$port" 15 || die "gateway $i did not listen"
}

# Round trips, rough: the commands the gateways send themselves. Commands run inside Lua
# scripts show up in INFO too (hset, zadd, ...), so only the client-level ones are summed; a
# script that calls one of those (the lease script's HMGET) is counted too: `count_trial`
# is the exact count.
redis_cmds() {
  redis-cli -p "$REDIS_PORT" info commandstats |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval|script|hmget|zrange|zcard|scard|ping|wait|client|hello|select|info)[|:]/ { s += $3 } END { print s + 0 }'
}

# trial N: N gateways already running on BASE_PORT..; prints key=value
trial() {
  local n=$1 per=$((MSGS / $1)) sess=$((SESSIONS / $1))
  local cfile=$BENCH_ROOT/sink.count wfile=$BENCH_ROOT/sink.wait
  : >"$cfile"
  "$SMTP_SINK" -u nobody -c -m 512 127.0.0.1:"$SINK_PORT" 1024 >"$cfile" 2>/dev/null &
  local sinkpid=$!
  wait_port "$SINK_PORT" 10 || die "sink"
  /usr/bin/python3 "$PEERS/sinkwait.py" "$cfile" "$((per * n))" "$TRIAL_TIMEOUT" >"$wfile" 2>&1 &
  local waitpid=$!
  sleep 0.2
  local c0 s0=0 p; c0=$(redis_cmds 2>/dev/null || echo 0)
  for p in "${GW_PIDS[@]:0:$n}"; do s0=$((s0 + $(tree_ticks "$p"))); done
  local r0; r0=$(tree_ticks "${REDIS_PID:-}")
  read -r b0 _ < <(sys_jiffies)
  local t0; t0=$(now)
  local srcs=()
  for ((k = 0; k < n; k++)); do
    "$SMTP_SOURCE" -s "$sess" -m "$per" -d -l "$SIZE" -M bench.test -f "$SENDER" -t "$RCPT" 127.0.0.1:$((BASE_PORT + k)) >/dev/null 2>&1 &
    srcs+=($!)
  done
  wait "${srcs[@]}"
  wait_pid_timeout "$waitpid" $((TRIAL_TIMEOUT + 5))
  local t2; t2=$(sed -nE 's/.*reached_at=([0-9.]+).*/\1/p' "$wfile")
  read -r b1 _ < <(sys_jiffies)
  local s1=0; for p in "${GW_PIDS[@]:0:$n}"; do s1=$((s1 + $(tree_ticks "$p"))); done
  local r1; r1=$(tree_ticks "${REDIS_PID:-}")
  local c1; c1=$(redis_cmds 2>/dev/null || echo 0)
  stop_pid "$sinkpid" 2
  awk -v n="$((per * n))" -v t0="$t0" -v t2="${t2:-0}" -v s0="$s0" -v s1="$s1" -v r0="$r0" -v r1="$r1" -v hz="$HZ" \
      -v c0="$c0" -v c1="$c1" -v b0="$b0" -v b1="$b1" -v g="$n" 'BEGIN{
    e=t2-t0; if (t2 == 0) { print "ok=0"; exit }
    printf "ok=1 gateways=%d msgs=%d e2e_s=%.3f e2e_mps=%.0f gw_cpu_ms_per_msg=%.3f redis_cpu_ms_per_msg=%.3f redis_round_trips_per_msg=%.2f sys_busy_cores=%.2f\n",
      g, n, e, n/e, (s1-s0)/hz/n*1000, (r1-r0)/hz/n*1000, (c1-c0)/n, (b1-b0)/hz/e }'
}

# count_trial N: the exact round trips per message, from MONITOR (which names a script's own
# commands "lua"), in a separate smaller trial (MONITOR slows Redis down: no timings here).
count_trial() {
  local n=$1 mon=$BENCH_ROOT/monitor.txt
  redis-cli -p "$REDIS_PORT" monitor >"$mon" 2>/dev/null &
  local monpid=$!
  sleep 0.3
  local saved=$MSGS; MSGS=${COUNT_MSGS:-3000}
  local out; out=$(trial "$n")
  MSGS=$saved
  sleep 0.3
  stop_pid "$monpid" 2
  local msgs; msgs=$(sed -nE 's/.*msgs=([0-9]+).*/\1/p' <<<"$out")
  awk -v n="${msgs:-0}" '/^[0-9.]+ \[[0-9]+ [0-9.]+:[0-9]+\] "/ && !/"(INFO|info|MONITOR|monitor)"/ { c++ }
    END { if (n > 0) printf "msgs=%d client_commands=%d round_trips_per_msg=%.2f\n", n, c, c / n; else print "ok=0" }' "$mon"
}

declare -a GW_PIDS
trap 'for p in "${GW_PIDS[@]}"; do stop_pid "$p" 5; done; stop_pid "${REDIS_PID:-}" 5' EXIT

echo "# embedded store, 1 gateway"
start_gateway 0 "{embedded: {path: \"$BENCH_ROOT/postern-0/store\"}}"
for ((r = 1; r <= REPS; r++)); do echo "embedded rep=$r $(trial 1)"; done
stop_pid "${GW_PIDS[0]}" 5; GW_PIDS=()

start_redis
echo "# redis store (appendfsync $APPENDFSYNC)"
for n in 1 2 3; do
  start_gateway $((n - 1)) "{redis: {url: \"redis://127.0.0.1:$REDIS_PORT/\"}}"
  for ((r = 1; r <= REPS; r++)); do echo "redis n=$n rep=$r $(trial "$n")"; done
  echo "redis n=$n count $(count_trial "$n")"
done
