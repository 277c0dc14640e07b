#!/usr/bin/env bash
# Direct sending with DKIM: postern-gateway with a Direct sending account (RSA-2048 or Ed25519)
# next to Postfix + OpenDKIM (Debian's opendkim as a milter, same key, relaxed/relaxed),
# in the same run, both relaying to smtp-sink; smtp-source is the client (a trusted network,
# sender@bench.test). Postern verifies the account's domain through a local dnsmasq holding
# the key record. Trials interleave Postfix+OpenDKIM and Postern.
#
# Usage: bench/dkim.sh [multi|single ...]   (default: multi)
# Env:   MSGS SESSIONS SIZE REPS (lib.sh), BASE_PORT (2560), DNS_PORT (2563), MILTER_PORT (2564),
#        ALG (rsa: the tests' RSA-2048 key, or ed25519: a key made by openssl for the run)
# Reports e2e msgs/s of each, their ratio per trial, Postern's CPU per message and
# OpenDKIM's (Postfix's own CPU is in bench/run.sh).
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
# A Postfix instance of its own: the milter setting must not reach bench/run.sh's instance.
export BENCH_ROOT=${BENCH_ROOT:-/var/tmp/peers-bench}/dkim
. "$PEERS/lib.sh"
BASE_PORT=${BASE_PORT:-2560}
DNS_PORT=${DNS_PORT:-2563}
MILTER_PORT=${MILTER_PORT:-2564}
DIR=$BENCH_ROOT/postern-dkim
ALG=${ALG:-rsa}
modes=("$@"); [[ ${#modes[@]} -gt 0 ]] || modes=(multi)

"$REPO/scripts/install-test-deps.sh" || exit 1
for pkg in opendkim:opendkim dnsmasq:dnsmasq-base; do
  command -v "${pkg%%:*}" >/dev/null || [[ -x /usr/sbin/${pkg%%:*} ]] \
    || apt-get install -y -qq --no-install-recommends "${pkg##*:}" >/dev/null || die "${pkg##*:} is needed"
done
(cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
rm -rf "$DIR"; mkdir -p "$DIR"

# The key and its record (for Postern's verification of its account's domain).
case $ALG in
  rsa)
    KEY=$REPO/tests/fixtures/dkim-test-key.pem
    record="v=DKIM1; k=rsa; p=$(tr -d '\n' <"$REPO/tests/fixtures/dkim-test-key.pub.b64")"
    PG_ALG=RsaSha256; ODK_ALG=rsa-sha256 ;;
  ed25519)
    KEY=$DIR/ed25519.pem
    openssl genpkey -algorithm ed25519 -out "$KEY" || die "openssl genpkey failed"
    record="v=DKIM1; k=ed25519; p=$(openssl pkey -in "$KEY" -pubout -outform DER | tail -c 32 | base64 -w0)"
    PG_ALG=Ed25519Sha256; ODK_ALG=ed25519-sha256 ;;
  *) die "ALG is rsa or ed25519" ;;
esac
parts=$(python3 -c 'import sys; r=sys.argv[1]; print(",".join(r[i:i+255] for i in range(0,len(r),255)))' "$record")
port_in_use "$DNS_PORT" && die "port $DNS_PORT already in use (a dnsmasq left over?)"
dnsmasq --keep-in-foreground --no-resolv --no-hosts --port="$DNS_PORT" --listen-address=127.0.0.1 \
  --bind-interfaces --local-ttl=300 --neg-ttl=300 --local=/test/ --pid-file="$DIR/dnsmasq.pid" \
  --txt-record="test2026._domainkey.bench.test,$parts" >"$DIR/dnsmasq.log" 2>&1 &
DNS_PID=$!
DKIM_PID=; GW_PID=
# Whatever was started goes, however the script ends (die included).
trap 'stop_pid "$GW_PID" 10; "$PEERS/postfix-relay.sh" stop >/dev/null 2>&1; stop_pid "$DKIM_PID" 5; stop_pid $DNS_PID 2' EXIT
wait_port "$DNS_PORT" 10 && kill -0 $DNS_PID 2>/dev/null || die "dnsmasq did not start: $(cat "$DIR/dnsmasq.log")"

# OpenDKIM signing everything from 127.0.0.0/8 for bench.test with the same key. It refuses
# files under a directory others may write (/var/tmp), so its own stay under /run.
ODK=/run/postern-bench-opendkim
rm -rf "$ODK"; mkdir -m 755 "$ODK"
install -o opendkim -m 600 "$KEY" "$ODK/opendkim.key"
cat >"$ODK/opendkim.conf" <<CONF
Syslog no
Mode s
Domain bench.test
Selector test2026
KeyFile $ODK/opendkim.key
Canonicalization relaxed/relaxed
SignatureAlgorithm $ODK_ALG
InternalHosts 127.0.0.0/8
Socket inet:$MILTER_PORT@127.0.0.1
UserID opendkim
PidFile $ODK/opendkim.pid
CONF
opendkim -f -x "$ODK/opendkim.conf" >"$DIR/opendkim.log" 2>&1 &
DKIM_PID=$!
wait_port "$MILTER_PORT" 15 || die "opendkim did not listen: $(cat "$DIR/opendkim.log")"

# Postfix with the milter.
"$PEERS/postfix-relay.sh" setup >/dev/null 2>&1 || die "postfix setup failed"
PFCONF=$BENCH_ROOT/postfix/etc
postconf -c "$PFCONF" -e "smtpd_milters = inet:127.0.0.1:$MILTER_PORT" "milter_default_action = tempfail" \
  "milter_protocol = 6" || die "postconf failed"
postsuper -c "$PFCONF" -d ALL >/dev/null 2>&1
"$PEERS/postfix-relay.sh" start >/dev/null 2>&1 || die "postfix instance did not start"
PF_PID=$(tr -d ' \n' <"$BENCH_ROOT/postfix/spool/pid/master.pid")

GW_PORT=$BASE_PORT
cat >"$DIR/gateway.yaml" <<YAML
hostname: gw.bench.test
listeners: [{name: smtp, address: "127.0.0.1:$GW_PORT"}]
admin: {address: "127.0.0.1:$((GW_PORT + 100))"}
store: {embedded: {path: "$DIR/store"}}
relay: {trustedNetworks: [127.0.0.0/8]}
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
delivery: {concurrencyPerDestination: 20, nameservers: ["127.0.0.1:$DNS_PORT"]}
logging: {format: text, level: info}
accounts:
  - {name: bench, from: "@bench.test", type: Direct,
     direct: {selector: test2026, privateKeyFile: "$KEY", algorithm: $PG_ALG}}
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$SINK_PORT"], tls: {mode: none}}
YAML
port_in_use "$GW_PORT" && die "port $GW_PORT already in use"
"$REPO/target/release/postern-gateway" run --config "$DIR/gateway.yaml" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GW_PORT" 15 || die "gateway did not listen"

# Both sign: one message through each to a dumping smtp-sink, and a DKIM-Signature in each.
mkdir -p "$DIR/dump"; chmod 777 "$DIR/dump"
"$SMTP_SINK" -u nobody -d "$DIR/dump/%M." 127.0.0.1:"$SINK_PORT" 10 >/dev/null 2>&1 &
SINK_PID=$!
wait_port "$SINK_PORT" 10 || die "sink did not listen"
for port in "$POSTFIX_PORT" "$GW_PORT"; do
  swaks --server 127.0.0.1:$port --from "$SENDER" --to "$RCPT" --header "Subject: signed via $port" >/dev/null 2>&1 \
    || die "a message through port $port was not accepted"
done
for _ in $(seq 100); do [[ $(grep -l 'DKIM-Signature' "$DIR"/dump/* 2>/dev/null | wc -l) -ge 2 ]] && break; sleep 0.1; done
signed=$(grep -l 'DKIM-Signature' "$DIR"/dump/* 2>/dev/null | wc -l)
stop_pid $SINK_PID 2
for _ in $(seq 50); do port_in_use "$SINK_PORT" || break; sleep 0.1; done
[[ $signed -ge 2 ]] || die "only $signed of the 2 check messages arrived signed (see $DIR/dump)"
echo "check: both paths deliver DKIM-signed mail ($signed signed messages in $DIR/dump)"

for mode in "${modes[@]}"; do
  p_mps=(); g_mps=(); g_cpu=(); d_cpu=(); ratio=()
  for ((i = 1; i <= REPS; i++)); do
    d0=$(tree_ticks "$DKIM_PID")
    p=$(run_trial "$POSTFIX_PORT" "$mode" "$PF_PID"); echo "postfix+opendkim mode=$mode rep=$i $p"
    d1=$(tree_ticks "$DKIM_PID")
    g=$(run_trial "$GW_PORT" "$mode" "$GW_PID"); echo "postern-direct   mode=$mode rep=$i $g"
    [[ $(kv ok "$p") == 1 && $(kv ok "$g") == 1 ]] || { log "trial failed"; continue; }
    p_mps+=("$(kv e2e_mps "$p")"); g_mps+=("$(kv e2e_mps "$g")")
    g_cpu+=("$(kv srv_cpu_ms_per_msg "$g")")
    d_cpu+=("$(awk -v a="$d0" -v b="$d1" -v hz="$HZ" -v n="$MSGS" 'BEGIN{print (b-a)/hz/n*1000}')")
    ratio+=("$(awk -v a="$(kv e2e_mps "$g")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  echo "  postfix_opendkim_e2e_mps  $(printf '%s\n' "${p_mps[@]}" | stats)"
  echo "  postern_direct_e2e_mps    $(printf '%s\n' "${g_mps[@]}" | stats)"
  echo "  postern/postfix mps       $(printf '%s\n' "${ratio[@]}" | stats3)"
  echo "  postern_cpu_ms_per_msg    $(printf '%s\n' "${g_cpu[@]}" | stats3)"
  echo "  opendkim_cpu_ms_per_msg   $(printf '%s\n' "${d_cpu[@]}" | stats3)"
done
echo "postern: $(grep -c 'message accepted' "$DIR/gateway.log") accepted, $(grep -c 'account=bench' "$DIR/gateway.log") through the Direct account"
