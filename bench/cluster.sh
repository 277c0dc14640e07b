#!/usr/bin/env bash
# Past one Redis primary: a 3-master Redis Cluster on loopback (no replicas, AOF everysec), two
# postern-gateway processes on it with `partitions: 1` (the whole queue in one slot, so on one
# primary) and two with `partitions: 3` (keyPrefix differs, so both share the cluster), trials
# interleaved. Per trial: msgs/s, the gateways' CPU per message and each primary's CPU per
# message: with one partition one primary does all the Redis work, with three each does a third.
# On this 2-core machine the gateways, not Redis, bound the throughput, so what this shows is
# where the Redis work goes, not more msgs/s (see DESIGN.md, "Scaling model").
#
# Usage: bench/cluster.sh        Env: MSGS SESSIONS SIZE REPS (lib.sh), CLUSTER_PORT (2560)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
. "$PEERS/lib.sh"
. "$REPO/bench/relay-config.sh"
CLUSTER_PORT=${CLUSTER_PORT:-2560}
BASE_PORT=${BASE_PORT:-2531}
CDIR=$BENCH_ROOT/cluster

"$REPO/scripts/install-test-deps.sh" || exit 1
(cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"

declare -a NODE_PIDS GW_PIDS
trap 'for p in "${GW_PIDS[@]}" "${NODE_PIDS[@]}"; do stop_pid "$p" 5; done' EXIT

rm -rf "$CDIR"; mkdir -p "$CDIR"
nodes=()
for i in 0 1 2; do
  port=$((CLUSTER_PORT + i)); mkdir -p "$CDIR/$port"
  (cd "$CDIR/$port" && exec redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly yes \
    --appendfsync everysec --cluster-enabled yes --cluster-config-file nodes.conf --dir "$CDIR/$port" \
    >"$CDIR/$port/redis.log" 2>&1) &
  NODE_PIDS[$i]=$!
  nodes+=("127.0.0.1:$port")
done
for i in 0 1 2; do wait_port $((CLUSTER_PORT + i)) 10 || die "redis node $i did not start"; done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >"$CDIR/create.log" 2>&1 \
  || die "cluster create failed: $(cat "$CDIR/create.log")"
for _ in $(seq 100); do
  ok=0; for i in 0 1 2; do redis-cli -p $((CLUSTER_PORT + i)) cluster info | grep -q cluster_state:ok && ok=$((ok + 1)); done
  [[ $ok == 3 ]] && break; sleep 0.1
done
[[ $ok == 3 ]] || die "cluster not ok"

# start_gateway INDEX PARTITIONS
start_gateway() {
  local i=$1 k=$2 port=$((BASE_PORT + $1)) dir=$BENCH_ROOT/postern-c$1
  rm -rf "$dir"; mkdir -p "$dir"
  local seeds="\"redis://127.0.0.1:$((CLUSTER_PORT + 1))/\", \"redis://127.0.0.1:$((CLUSTER_PORT + 2))/\""
  relay_config "gw$i.bench.test" "$port" "{redis: {url: \"redis://127.0.0.1:$CLUSTER_PORT/\", urls: [$seeds], cluster: true, partitions: $k, keyPrefix: bench-k$k}}" >"$dir/gateway.yaml"
  "$REPO/target/release/postern-gateway" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
  GW_PIDS[$i]=$!
  wait_port "$port" 15 || die "gateway $i did not listen: $(tail -3 "$dir/gateway.log")"
}

# Commands clients sent, summed over the nodes (as bench/redis.sh's redis_cmds: rough, a
# script's own HMGET counts too).
redis_cmds() {
  local i; for i in 0 1 2; do redis-cli -p $((CLUSTER_PORT + i)) info commandstats; done |
    awk -F'[:=,]' '/^cmdstat_(evalsha|eval|script|hmget|zrange|zcard|scard|ping|wait|client|hello|select|info|cluster)[|:]/ { s += $3 } END { print s + 0 }'
}

# trial FIRST: the two gateways FIRST and FIRST+1; prints key=value
trial() {
  local first=$1 per=$((MSGS / 2)) sess=$((SESSIONS / 2))
  local cfile=$BENCH_ROOT/sink.count wfile=$BENCH_ROOT/sink.wait
  : >"$cfile"
  "$SMTP_SINK" -u nobody -c -m 512 127.0.0.1:"$SINK_PORT" 1024 >"$cfile" 2>/dev/null &
  local sinkpid=$!
  wait_port "$SINK_PORT" 10 || die "sink"
  /usr/bin/python3 "$PEERS/sinkwait.py" "$cfile" "$((per * 2))" "$TRIAL_TIMEOUT" >"$wfile" 2>&1 &
  local waitpid=$!
  sleep 0.2
  local g0=$(( $(tree_ticks "${GW_PIDS[$first]}") + $(tree_ticks "${GW_PIDS[$((first + 1))]}") ))
  local n0=(); for p in "${NODE_PIDS[@]}"; do n0+=("$(tree_ticks "$p")"); done
  local c0; c0=$(redis_cmds)
  local t0; t0=$(now)
  local srcs=()
  for k in 0 1; do
    "$SMTP_SOURCE" -s "$sess" -m "$per" -d -l "$SIZE" -M bench.test -f "$SENDER" -t "$RCPT" 127.0.0.1:$((BASE_PORT + first + k)) >/dev/null 2>&1 &
    srcs+=($!)
  done
  wait "${srcs[@]}"
  wait_pid_timeout "$waitpid" $((TRIAL_TIMEOUT + 5))
  local t2; t2=$(sed -nE 's/.*reached_at=([0-9.]+).*/\1/p' "$wfile")
  local g1=$(( $(tree_ticks "${GW_PIDS[$first]}") + $(tree_ticks "${GW_PIDS[$((first + 1))]}") ))
  local n1=(); for p in "${NODE_PIDS[@]}"; do n1+=("$(tree_ticks "$p")"); done
  local c1; c1=$(redis_cmds)
  stop_pid "$sinkpid" 2
  awk -v n="$((per * 2))" -v t0="$t0" -v t2="${t2:-0}" -v g0="$g0" -v g1="$g1" -v hz="$HZ" \
      -v a0="${n0[0]}" -v a1="${n1[0]}" -v b0="${n0[1]}" -v b1="${n1[1]}" -v c0="${n0[2]}" -v c1="${n1[2]}" -v r0="$c0" -v r1="$c1" 'BEGIN{
    e=t2-t0; if (t2 == 0) { print "ok=0"; exit }
    a=(a1-a0)/hz/n*1000; b=(b1-b0)/hz/n*1000; c=(c1-c0)/hz/n*1000; s=a+b+c; m=a; if (b>m) m=b; if (c>m) m=c
    printf "ok=1 msgs=%d e2e_s=%.3f e2e_mps=%.0f gw_cpu_ms_per_msg=%.3f primary_cpu_ms_per_msg=%.3f,%.3f,%.3f redis_total_ms_per_msg=%.3f busiest_primary_share=%.2f commands_per_msg=%.2f\n",
      n, e, n/e, (g1-g0)/hz/n*1000, a, b, c, s, (s > 0 ? m/s : 0), (r1-r0)/n }'
}

# count_trial FIRST: the exact round trips per message, from MONITOR on every node (which
# names a script's own commands "lua"), in a smaller trial (MONITOR slows Redis: no timings).
count_trial() {
  local first=$1 mons=() i
  for i in 0 1 2; do
    redis-cli -p $((CLUSTER_PORT + i)) monitor >"$CDIR/monitor.$i" 2>/dev/null &
    mons+=($!)
  done
  sleep 0.3
  local saved=$MSGS; MSGS=${COUNT_MSGS:-3000}
  local out; out=$(trial "$first")
  MSGS=$saved
  sleep 0.3
  for i in "${mons[@]}"; do stop_pid "$i" 2; done
  local msgs; msgs=$(sed -nE 's/.*msgs=([0-9]+).*/\1/p' <<<"$out")
  cat "$CDIR"/monitor.? | awk -v n="${msgs:-0}" '/^[0-9.]+ \[[0-9]+ [0-9.]+:[0-9]+\] "/ && !/"(INFO|info|MONITOR|monitor)"/ { c++ }
    END { if (n > 0) printf "msgs=%d client_commands=%d round_trips_per_msg=%.2f\n", n, c, c / n; else print "ok=0" }'
}

start_gateway 0 1; start_gateway 1 1
start_gateway 2 3; start_gateway 3 3
echo "# 3-master cluster; 2 gateways per setting; MSGS=$MSGS SESSIONS=$SESSIONS SIZE=$SIZE"
for ((r = 1; r <= REPS; r++)); do
  echo "partitions=1 rep=$r $(trial 0)"
  echo "partitions=3 rep=$r $(trial 2)"
done
echo "partitions=1 count $(count_trial 0)"
echo "partitions=3 count $(count_trial 2)"
# Where each partition lives: the gateway logs each tag's slot; the node serving it.
for i in 0 2; do
  grep -m1 -o 'partitions=.*' "$BENCH_ROOT/postern-c$i/gateway.log"
done
for i in 0 1 2; do
  echo "node=$i slots=$(redis-cli -p $((CLUSTER_PORT + i)) cluster myshardid >/dev/null 2>&1; redis-cli -p $((CLUSTER_PORT + i)) cluster nodes | awk '/myself/ { for (f = 9; f <= NF; f++) printf "%s ", $f }')"
done
