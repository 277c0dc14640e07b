#!/usr/bin/env bash
# Relay control's costs, each measured against its own baseline in the same run:
#
#  submission  authenticated submission over STARTTLS (AUTH PLAIN, an argon2id user) on a
#              `submission` listener, next to plain relaying from a trusted network on port 25.
#              smtp-source cannot do STARTTLS or AUTH, so the client is tests/src/bin/smtp-load
#              (smtp-source's flags, one thread per session, no pipelining); it also runs the
#              plain case, so the client is the same on both sides, and smtp-source's plain run
#              is shown as the reference client.
#  limits      the rate limits with the Redis store: a gateway with three limits (per client IP
#              messages and recipients, per sender domain messages; none is reached) next to
#              one without, each on its own redis-server so Redis round trips are each
#              gateway's own.
#
# Usage: bench/relay-control.sh [submission|limits ...]   (default: both)
# Env:   MSGS SESSIONS SIZE REPS (lib.sh); MODES (default "multi single" for submission)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
. "$PEERS/lib.sh"
parts=("$@"); [[ ${#parts[@]} -gt 0 ]] || parts=(submission limits)
read -r -a MODES <<<"${MODES:-multi single}"
DIR=$BENCH_ROOT/relay-control
PLAIN_PORT=2561 SUB_PORT=2562 OFF_PORT=2563 ON_PORT=2564 REDIS_OFF=2565 REDIS_ON=2566

"$REPO/scripts/install-test-deps.sh" || exit 1
(cd "$REPO" && cargo build --release -q -p postern-gateway -p postern-tests --bin postern-gateway --bin smtp-load) ||
  die "build failed"
GATEWAY_BIN=$REPO/target/release/postern-gateway
LOAD=$REPO/target/release/smtp-load
SOURCE=$SMTP_SOURCE
PIDS=()
trap 'for p in "${PIDS[@]}"; do stop_pid "$p" 10; done' EXIT

# start_gateway NAME PORT YAML_BODY: a gateway relaying example.test to the sink.
start_gateway() {
  local name=$1 port=$2 body=$3 dir=$DIR/$1
  mkdir -p "$dir"
  cat >"$dir/gateway.yaml" <<YAML
hostname: gw.bench.test
admin: {address: "127.0.0.1:0"}
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$SINK_PORT"], tls: {mode: none}}
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
delivery: {concurrencyPerDestination: 20}
logging: {format: text, level: info}
$body
YAML
  "$GATEWAY_BIN" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
  PIDS+=($!)
  eval "GW_$name=$!"
  wait_port "$port" 15 || die "gateway $name did not listen"
}

start_redis() {
  local port=$1 dir=$DIR/redis-$1
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
    --dir "$dir" >"$dir/redis.log" 2>&1 &
  PIDS+=($!)
  eval "REDIS_$port=$!"
  wait_port "$port" 10 || die "redis $port did not start"
}

# Round trips per message: the commands clients send, read from MONITOR, which marks the ones
# a Lua script runs "[0 lua]" (INFO commandstats counts those too, and a script's HMGET cannot
# be told from a client's). MONITOR costs Redis CPU, so it runs in a pass of its own.
# redis_round_trips REDIS_PORT GATEWAY_PORT GATEWAY_PID MESSAGES
redis_round_trips() {
  local mon=$DIR/monitor.$1 n
  redis-cli -p "$1" monitor >"$mon" &
  local mpid=$!
  for ((n = 0; n < 100; n++)); do grep -q OK "$mon" && break; sleep 0.1; done
  grep -q OK "$mon" || die "redis-cli monitor did not start"
  MSGS=$4 run_trial "$2" multi "$3" >/dev/null
  kill "$mpid"; wait "$mpid" 2>/dev/null
  n=$(grep -c '^[0-9.]* \[[0-9]* [0-9]' "$mon")
  awk -v n="$n" -v m="$4" 'BEGIN{printf "%.3f", n/m}'
}

report() {  # report LABEL VALUES...  (msgs/s: whole numbers)
  local label=$1; shift
  printf '  %-34s %s\n' "$label" "$(printf '%s\n' "$@" | stats)"
}

report3() {  # report3 LABEL VALUES...  (ratios, ms: three decimals)
  local label=$1; shift
  printf '  %-34s %s\n' "$label" "$(printf '%s\n' "$@" | stats3)"
}

submission() {
  rm -rf "$DIR"; mkdir -p "$DIR"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
    -addext basicConstraints=critical,CA:TRUE -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=gw.bench.test \
    -keyout "$DIR/gw.key" -out "$DIR/gw.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/gw.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial -days 2 \
    -extfile <(echo "subjectAltName=DNS:gw.bench.test") -out "$DIR/gw.pem" 2>/dev/null || die "certificates"
  echo "bench:$(echo 'load-secret' | "$GATEWAY_BIN" hash-password):@bench.test" >"$DIR/users"
  start_gateway sub "$SUB_PORT" "listeners:
  - {name: smtp, address: \"127.0.0.1:$PLAIN_PORT\"}
  - {name: submission, address: \"127.0.0.1:$SUB_PORT\", role: submission,
     tls: {certFile: \"$DIR/gw.pem\", keyFile: \"$DIR/gw.key\"}}
store: {embedded: {path: \"$DIR/sub/store\"}}
relay: {trustedNetworks: [127.0.0.0/8]}
auth: {usersFile: \"$DIR/users\"}"
  local tls=(--starttls "$DIR/ca.pem" gw.bench.test --auth bench:load-secret)
  for mode in "${MODES[@]}"; do
    local ref=() plain=() sub=() ref_cpu=() plain_cpu=() sub_cpu=() ratio=()
    for ((i = 1; i <= REPS; i++)); do
      SMTP_SOURCE=$SOURCE
      r=$(run_trial "$PLAIN_PORT" "$mode" "$GW_sub"); echo "smtp-source plain mode=$mode rep=$i $r"
      SMTP_SOURCE=$LOAD
      p=$(run_trial "$PLAIN_PORT" "$mode" "$GW_sub"); echo "smtp-load plain  mode=$mode rep=$i $p"
      SMTP_SOURCE="$DIR/load-tls"
      printf '#!/bin/sh\nexec %q "$@" %q %q %q %q %q\n' "$LOAD" "${tls[@]}" >"$SMTP_SOURCE"; chmod +x "$SMTP_SOURCE"
      s=$(run_trial "$SUB_PORT" "$mode" "$GW_sub"); echo "smtp-load tls+auth mode=$mode rep=$i $s"
      for t in "$r" "$p" "$s"; do [[ $(kv ok "$t") == 1 ]] || die "trial failed: $t"; done
      ref+=("$(kv e2e_mps "$r")"); plain+=("$(kv e2e_mps "$p")"); sub+=("$(kv e2e_mps "$s")")
      ref_cpu+=("$(kv srv_cpu_ms_per_msg "$r")"); plain_cpu+=("$(kv srv_cpu_ms_per_msg "$p")")
      sub_cpu+=("$(kv srv_cpu_ms_per_msg "$s")")
      ratio+=("$(awk -v a="$(kv e2e_mps "$s")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
    done
    echo "SUMMARY submission mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
    report "smtp-source plain e2e_mps" "${ref[@]}"
    report "smtp-load plain e2e_mps" "${plain[@]}"
    report "smtp-load starttls+auth e2e_mps" "${sub[@]}"
    report3 "tls+auth/plain mps" "${ratio[@]}"
    report3 "gw cpu ms/msg smtp-source plain" "${ref_cpu[@]}"
    report3 "gw cpu ms/msg smtp-load plain" "${plain_cpu[@]}"
    report3 "gw cpu ms/msg starttls+auth" "${sub_cpu[@]}"
  done
  SMTP_SOURCE=$SOURCE
}

limits() {
  rm -rf "$DIR"; mkdir -p "$DIR"
  start_redis "$REDIS_OFF"; start_redis "$REDIS_ON"
  local common="relay: {trustedNetworks: [127.0.0.0/8]}"
  start_gateway off "$OFF_PORT" "listeners: [{name: smtp, address: \"127.0.0.1:$OFF_PORT\"}]
store: {redis: {url: \"redis://127.0.0.1:$REDIS_OFF\"}}
$common"
  start_gateway on "$ON_PORT" "listeners: [{name: smtp, address: \"127.0.0.1:$ON_PORT\"}]
store: {redis: {url: \"redis://127.0.0.1:$REDIS_ON\"}}
$common
rateLimits:
  - {key: clientIp, count: messages, limit: 100000000, per: 1h, exemptTrusted: false}
  - {key: clientIp, count: recipients, limit: 100000000, per: 1h, exemptTrusted: false}
  - {key: senderDomain, count: messages, limit: 100000000, per: 1h, exemptTrusted: false}"
  local off=() on=() off_cpu=() on_cpu=() off_rcpu=() on_rcpu=() ratio=()
  # limit_trial PORT GATEWAY_PID REDIS_PID: a run_trial line plus Redis CPU per message.
  limit_trial() {
    local r0 r1 t
    r0=$(tree_ticks "$3")
    t=$(run_trial "$1" multi "$2")
    r1=$(tree_ticks "$3")
    echo "$t $(awk -v r0="$r0" -v r1="$r1" -v hz="$HZ" -v n="$MSGS" \
      'BEGIN{printf "redis_cpu_ms_per_msg=%.3f", (r1-r0)/hz/n*1000}')"
  }
  for ((i = 1; i <= REPS; i++)); do
    local t u
    # Alternate which side goes first: a drift in the machine's speed then favours neither.
    if ((i % 2)); then
      t=$(limit_trial "$OFF_PORT" "$GW_off" "$REDIS_2565"); echo "limits off rep=$i $t"
      u=$(limit_trial "$ON_PORT" "$GW_on" "$REDIS_2566"); echo "limits on  rep=$i $u"
    else
      u=$(limit_trial "$ON_PORT" "$GW_on" "$REDIS_2566"); echo "limits on  rep=$i $u"
      t=$(limit_trial "$OFF_PORT" "$GW_off" "$REDIS_2565"); echo "limits off rep=$i $t"
    fi
    [[ $(kv ok "$t") == 1 && $(kv ok "$u") == 1 ]] || die "trial failed"
    off+=("$(kv e2e_mps "$t")"); off_cpu+=("$(kv srv_cpu_ms_per_msg "$t")")
    on+=("$(kv e2e_mps "$u")"); on_cpu+=("$(kv srv_cpu_ms_per_msg "$u")")
    off_rcpu+=("$(kv redis_cpu_ms_per_msg "$t")"); on_rcpu+=("$(kv redis_cpu_ms_per_msg "$u")")
    ratio+=("$(awk -v a="$(kv e2e_mps "$u")" -v b="$(kv e2e_mps "$t")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY limits (Redis store) msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  report "limits off e2e_mps" "${off[@]}"
  report "limits on e2e_mps" "${on[@]}"
  report3 "on/off mps" "${ratio[@]}"
  report3 "gw cpu ms/msg off" "${off_cpu[@]}"
  report3 "gw cpu ms/msg on" "${on_cpu[@]}"
  printf '  %-34s %s\n' "redis round trips/msg off" "$(redis_round_trips "$REDIS_OFF" "$OFF_PORT" "$GW_off" 2000)"
  printf '  %-34s %s\n' "redis round trips/msg on" "$(redis_round_trips "$REDIS_ON" "$ON_PORT" "$GW_on" 2000)"
  report3 "redis cpu ms/msg off" "${off_rcpu[@]}"
  report3 "redis cpu ms/msg on" "${on_rcpu[@]}"
}

for part in "${parts[@]}"; do
  case $part in
    submission) submission ;;
    limits) limits ;;
    *) die "unknown part $part (submission, limits)" ;;
  esac
  for p in "${PIDS[@]}"; do stop_pid "$p" 10; done
  PIDS=()
done
