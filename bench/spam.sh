#!/usr/bin/env bash
# The spam path against the stack people run. Three relays in the same run, trials interleaved:
# - postern "plain": no spam checks (the reference for what the checks cost);
# - postern "spam": a SpamPolicy doing SPF, DKIM, DMARC, one DNSBL zone and the default
#   content rules;
# - Postfix + Rspamd: Debian's rspamd 3.4 as a milter (its proxy worker in self-scan mode, one
#   process per core) with its default rules, SPF, DKIM, DMARC and one RBL (the same zone)
#   checking the loopback client too (check_local, exclude_local off), on a Postfix instance
#   of its own (../shared/bench's, plus smtpd_milters).
# All get the same DKIM-signed ~5 KB message (smtp-source -F); DNS answers come from one local
# dnsmasq (records with a 300 s TTL; each trial line counts the queries it received). Rspamd's modules that need the Internet or Redis are off (fuzzy
# check, ASN, update checks, the Internet's RBL/SURBL lists; Redis-backed ones turn themselves
# off). A check first sends one message through each relay to a dumping sink and requires
# Rspamd's result header to show SPF, DKIM and DMARC passing, and the DNSBL to be asked.
#
# Usage: bench/spam.sh [multi|single ...]   (default: multi)
# Env:   MSGS SESSIONS REPS (lib.sh), BASE_PORT (2550), DNS_PORT (2553), MILTER_PORT (2554),
#        PEER (rspamd; "none" runs only Postern plain and spam: a quick A/B of the spam path's
#        own cost, which the Postfix + Rspamd trials, ~55 s each, would slow tenfold),
#        GATEWAY_BIN (a postern-gateway binary to measure instead of this checkout's build)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
# A Postfix instance of its own: the milter setting must not reach bench/run.sh's instance.
export BENCH_ROOT=${BENCH_ROOT:-/var/tmp/peers-bench}/spam
. "$PEERS/lib.sh"
BASE_PORT=${BASE_PORT:-2550}
DNS_PORT=${DNS_PORT:-2553}
MILTER_PORT=${MILTER_PORT:-2554}
DIR=$BENCH_ROOT/work
modes=("$@"); [[ ${#modes[@]} -gt 0 ]] || modes=(multi)
PEER=${PEER:-rspamd}
[[ $PEER == rspamd || $PEER == none ]] || die "PEER is rspamd or none, not $PEER"


"$REPO/scripts/install-test-deps.sh" || exit 1
for pkg in dnsmasq:dnsmasq-base rspamd:rspamd; do
  command -v "${pkg%%:*}" >/dev/null || [[ -x /usr/sbin/${pkg%%:*} ]] \
    || apt-get install -y -qq --no-install-recommends "${pkg##*:}" >/dev/null || die "${pkg##*:} is needed"
done
if [[ -z ${GATEWAY_BIN:-} ]]; then
  (cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
  GATEWAY_BIN=$REPO/target/release/postern-gateway
fi
rm -rf "$DIR"; mkdir -p "$DIR"

. "$REPO/bench/spam-env.sh"
spam_message "$DIR/message.eml"
SIZE=$(wc -c <"$DIR/message.eml")

DNS_PID=; PLAIN_PID=; SPAM_PID=; RSPAMD_PID=
# Whatever was started goes, however the script ends (die included).
trap 'stop_pid "$PLAIN_PID" 10; stop_pid "$SPAM_PID" 10; "$PEERS/postfix-relay.sh" stop >/dev/null 2>&1; stop_pid "$RSPAMD_PID" 10; stop_pid "$DNS_PID" 2' EXIT
port_in_use "$DNS_PORT" && die "port $DNS_PORT already in use (a dnsmasq left over?)"
# For the check, every query is logged; the trials run on a dnsmasq that logs nothing.
start_dns "$DNS_PORT" --log-queries --log-facility="$DIR/dns-queries.log"

# Rspamd: the packaged configuration, our local.d/override.d, its state under $DIR/rspamd.
RS=$DIR/rspamd
if [[ $PEER == rspamd ]]; then
mkdir -p "$RS/local/local.d" "$RS/local/override.d" "$RS/db" "$RS/run" "$RS/log"
cat >"$RS/rspamd.conf" <<CONF
.include "\$CONFDIR/common.conf"
options {
  pidfile = "\$RUNDIR/rspamd.pid";
  .include "\$CONFDIR/options.inc"
  .include(try=true; priority=1,duplicate=merge) "\$LOCAL_CONFDIR/local.d/options.inc"
}
logging { type = "file"; filename = "\$LOGDIR/rspamd.log"; level = "warning"; }
worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:$MILTER_PORT";
  milter = yes;
  timeout = 120s;
  upstream "local" { default = yes; self_scan = yes; }
  count = $(nproc);
}
# As the packaged configuration has it (maps, periodic jobs); no mail goes through it.
worker "controller" {
  bind_socket = "127.0.0.1:$((MILTER_PORT + 1))";
  .include "\$CONFDIR/worker-controller.inc"
}
CONF
cat >"$RS/local/local.d/options.inc" <<CONF
dns { nameserver = ["127.0.0.1:$DNS_PORT"]; }
# Check mail from the loopback client like any other (the benchmark's client is 127.0.0.1).
check_local = true;
local_addrs = [];
CONF
for m in spf dkim dmarc; do echo "check_local = true;" >"$RS/local/local.d/$m.conf"; done
cat >"$RS/local/override.d/rbl.conf" <<CONF
rbls {
  bench {
    symbol = "RBL_BENCH";
    rbl = "bl.test";
    ipv4 = true; ipv6 = false; received = false; from = true;
    exclude_local = false; exclude_private_ips = false;
  }
}
CONF
# Off: what needs the Internet, and DKIM signing (outbound; it would sign our local client's mail).
for m in fuzzy_check asn rspamd_update dkim_signing; do echo "enabled = false;" >"$RS/local/override.d/$m.conf"; done
# The result header shows which rules ran (checked by the check below).
echo 'use = ["x-spamd-result"]; skip_local = false; skip_authenticated = false;' >"$RS/local/local.d/milter_headers.conf"
chown -R _rspamd:_rspamd "$RS"
port_in_use "$MILTER_PORT" && die "port $MILTER_PORT already in use"
rspamd -f -u _rspamd -g _rspamd -c "$RS/rspamd.conf" --var="LOCAL_CONFDIR=$RS/local" --var="DBDIR=$RS/db" \
  --var="RUNDIR=$RS/run" --var="LOGDIR=$RS/log" >"$RS/stdout.log" 2>&1 &
RSPAMD_PID=$!
wait_port "$MILTER_PORT" 30 || die "rspamd did not listen: $(tail -5 "$RS/stdout.log" "$RS/log/rspamd.log")"

# Postfix with Rspamd as its milter.
"$PEERS/postfix-relay.sh" setup >/dev/null 2>&1 || die "postfix setup failed"
PFCONF=$BENCH_ROOT/postfix/etc
postconf -c "$PFCONF" -e "smtpd_milters = inet:127.0.0.1:$MILTER_PORT" "milter_default_action = tempfail" \
  "milter_protocol = 6" || die "postconf failed"
postsuper -c "$PFCONF" -d ALL >/dev/null 2>&1
"$PEERS/postfix-relay.sh" start >/dev/null 2>&1 || die "postfix instance did not start"
PF_PID=$(tr -d ' \n' <"$BENCH_ROOT/postfix/spool/pid/master.pid")
fi

# start_gateway NAME PORT SPAM_YAML -> prints the PID
start_gateway() {
  local name=$1 port=$2 dir=$DIR/$1
  mkdir -p "$dir"
  cat >"$dir/gateway.yaml" <<YAML
hostname: $name.bench.test
listeners: [{name: smtp, address: "127.0.0.1:$port"}]
admin: {address: "127.0.0.1:$((port + 100))"}
store: {embedded: {path: "$dir/store"}}
relay: {trustedNetworks: [127.0.0.0/8]}
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
delivery: {concurrencyPerDestination: 20, nameservers: ["127.0.0.1:$DNS_PORT"]}
logging: {format: text, level: info}
$3
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$SINK_PORT"], tls: {mode: none}}
    ${4:-}
YAML
  port_in_use "$port" && die "port $port already in use"
  "$GATEWAY_BIN" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
  echo $!
}
PLAIN_PORT=$BASE_PORT; SPAM_PORT=$((BASE_PORT + 1))
PLAIN_PID=$(start_gateway plain $PLAIN_PORT "")
SPAM_PID=$(start_gateway spam $SPAM_PORT "$SPAM_POLICY" "spamPolicy: checks")
wait_port $PLAIN_PORT 15 && wait_port $SPAM_PORT 15 || die "gateways did not listen"

# The check: the signed message through Postfix+Rspamd and through Postern's spam gateway to a
# dumping sink. Rspamd's header must show SPF, DKIM and DMARC passing; both must have asked the
# DNSBL (the query log) and Postern must say so in its Authentication-Results.
mkdir -p "$DIR/dump"; chmod 777 "$DIR/dump"
"$SMTP_SINK" -u nobody -d "$DIR/dump/%M." 127.0.0.1:"$SINK_PORT" 10 >/dev/null 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" 10 || die "sink did not listen"
check_ports=("$SPAM_PORT"); [[ $PEER == rspamd ]] && check_ports+=("$POSTFIX_PORT")
for port in "${check_ports[@]}"; do
  "$SMTP_SOURCE" -F "$DIR/message.eml" -m 1 -f "$SENDER" -t "$RCPT" 127.0.0.1:$port >/dev/null 2>&1 \
    || die "the check message through port $port was not accepted"
done
for _ in $(seq 100); do [[ $(ls "$DIR"/dump | wc -l) -ge ${#check_ports[@]} ]] && break; sleep 0.1; done
stop_pid $SINK_PID 2
for _ in $(seq 50); do port_in_use "$SINK_PORT" || break; sleep 0.1; done
if [[ $PEER == rspamd ]]; then
rspamd_result=$(awk '/^X-Spamd-Result/ { on = 1; print; next } on && /^[ \t]/ { print; next } { on = 0 }' "$DIR"/dump/* | tr -d '\n\t')
for sym in R_SPF_ALLOW R_DKIM_ALLOW DMARC_POLICY_ALLOW; do
  [[ $rspamd_result == *"$sym"* ]] || die "rspamd did not report $sym: $rspamd_result"
done
fi
grep -q 'dmarc=pass' "$DIR"/dump/* || die "postern's Authentication-Results does not show dmarc=pass"
bl_queries=$(grep -c 'query\[A\] 1.0.0.127.bl.test' "$DIR/dns-queries.log")
[[ $bl_queries -ge ${#check_ports[@]} ]] || die "the DNSBL was asked $bl_queries times, not by every relay"
[[ $PEER == none ]] && echo "check: postern dmarc=pass; DNSBL asked $bl_queries times (PEER=none: no Postfix + Rspamd trials)"
[[ $PEER == rspamd ]] && echo "check: rspamd $(sed -nE 's/.*(default: [^;]*);.*/\1/p' <<<"$rspamd_result") with R_SPF_ALLOW R_DKIM_ALLOW DMARC_POLICY_ALLOW; DNSBL asked $bl_queries times"
# The trials' dnsmasq logs no query, only its counters when asked (SIGUSR1): each trial line
# ends with dns_queries, the queries the relay under test sent during the trial.
stop_pid "$DNS_PID" 2
for _ in $(seq 50); do port_in_use "$DNS_PORT" || break; sleep 0.1; done
start_dns "$DNS_PORT" --log-facility="$DIR/dns-stats.log"
dns_answered() {
  local before; before=$(grep -c 'queries answered locally' "$DIR/dns-stats.log" 2>/dev/null)
  kill -USR1 "$DNS_PID"
  for _ in $(seq 50); do
    [[ $(grep -c 'queries answered locally' "$DIR/dns-stats.log" 2>/dev/null) -gt ${before:-0} ]] && break
    sleep 0.05
  done
  grep -o 'queries answered locally [0-9]*' "$DIR/dns-stats.log" | tail -1 | awk '{print $4}'
}
# Context switches of a process's threads so far (voluntary ones are wake-ups after waiting).
ctx_switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}
# trial_with_dns PORT MODE PID: run_trial's line plus dns_queries=N and the relay's context
# switches per message (its main process's threads: for Postfix, the master only)
trial_with_dns() {
  local d0 d1 c0 c1 line
  d0=$(dns_answered); c0=$(ctx_switches "$3")
  line=$(run_trial "$@")
  d1=$(dns_answered); c1=$(ctx_switches "$3")
  echo "$line dns_queries=$((d1 - d0)) ctxsw_per_msg=$(awk -v a="$c0" -v b="$c1" -v n="$MSGS" 'BEGIN{printf "%.2f", (b-a)/n}')"
}

# Every trial sends the signed file (-F; run_trial's -l, which -F excludes, is dropped).
cat >"$DIR/smtp-source" <<SH
#!/usr/bin/env bash
args=()
while [[ \$# -gt 0 ]]; do
  if [[ \$1 == -l ]]; then shift 2; else args+=("\$1"); shift; fi
done
exec $SMTP_SOURCE -F $DIR/message.eml "\${args[@]}"
SH
chmod +x "$DIR/smtp-source"; SMTP_SOURCE=$DIR/smtp-source

for mode in "${modes[@]}"; do
  p_mps=(); s_mps=(); r_mps=(); p_cpu=(); s_cpu=(); r_cpu=(); ratio=(); vs=()
  for ((i = 1; i <= REPS; i++)); do
    p=$(trial_with_dns $PLAIN_PORT "$mode" "$PLAIN_PID"); echo "plain          mode=$mode rep=$i $p"
    s=$(trial_with_dns $SPAM_PORT "$mode" "$SPAM_PID"); echo "spam           mode=$mode rep=$i $s"
    [[ $(kv ok "$p") == 1 && $(kv ok "$s") == 1 ]] || { log "trial failed"; continue; }
    p_mps+=("$(kv e2e_mps "$p")"); s_mps+=("$(kv e2e_mps "$s")")
    p_cpu+=("$(kv srv_cpu_ms_per_msg "$p")"); s_cpu+=("$(kv srv_cpu_ms_per_msg "$s")")
    ratio+=("$(awk -v a="$(kv e2e_mps "$s")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
    [[ $PEER == rspamd ]] || continue
    d0=$(tree_ticks "$RSPAMD_PID")
    r=$(trial_with_dns "$POSTFIX_PORT" "$mode" "$PF_PID"); echo "postfix+rspamd mode=$mode rep=$i $r"
    d1=$(tree_ticks "$RSPAMD_PID")
    [[ $(kv ok "$r") == 1 ]] || { log "trial failed"; continue; }
    r_mps+=("$(kv e2e_mps "$r")")
    # Postfix's processes and Rspamd's, per message.
    r_cpu+=("$(awk -v a="$d0" -v b="$d1" -v hz="$HZ" -v n="$MSGS" -v pf="$(kv srv_cpu_ms_per_msg "$r")" 'BEGIN{print pf + (b-a)/hz/n*1000}')")
    vs+=("$(awk -v a="$(kv e2e_mps "$s")" -v b="$(kv e2e_mps "$r")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  echo "  plain_e2e_mps                 $(printf '%s\n' "${p_mps[@]}" | stats)"
  echo "  spam_e2e_mps                  $(printf '%s\n' "${s_mps[@]}" | stats)"
  [[ $PEER == rspamd ]] && echo "  postfix_rspamd_e2e_mps        $(printf '%s\n' "${r_mps[@]}" | stats)"
  echo "  spam/plain mps                $(printf '%s\n' "${ratio[@]}" | stats3)"
  [[ $PEER == rspamd ]] && echo "  spam/postfix_rspamd mps       $(printf '%s\n' "${vs[@]}" | stats3)"
  echo "  plain_cpu_ms_per_msg          $(printf '%s\n' "${p_cpu[@]}" | stats3)"
  echo "  spam_cpu_ms_per_msg           $(printf '%s\n' "${s_cpu[@]}" | stats3)"
  [[ $PEER == rspamd ]] && echo "  postfix_rspamd_cpu_ms_per_msg $(printf '%s\n' "${r_cpu[@]}" | stats3)"
done
# Proof the checks ran, and passed, on the spam gateway:
echo "spam gateway check results:"
curl -s "http://127.0.0.1:$((SPAM_PORT + 100))/metrics" | grep -E '^postern_(auth_results|spam_verdicts)_total' | sed 's/^/  /'
if [[ $PEER == rspamd ]]; then
  echo "rspamd warnings or errors logged: $(grep -c . "$RS/log/rspamd.log" 2>/dev/null || echo 0)"
fi
