#!/usr/bin/env bash
# What the spam checks cost: two postern-gateway processes in the same run, one plain relay
# and one with a SpamPolicy doing SPF, DKIM, DMARC, one DNSBL zone and the default content
# rules. Both get the same DKIM-signed ~5 KB message (smtp-source -F), and answers come from a
# local dnsmasq (records with a 300 s TTL, so the gateway's resolver caches serve repeats).
# Trials interleave plain, spam, plain, spam, ...
#
# Usage: bench/spam.sh [multi|single ...]   (default: multi)
# Env:   MSGS SESSIONS REPS (lib.sh), BASE_PORT (2550), DNS_PORT (2553)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
. "$PEERS/lib.sh"
BASE_PORT=${BASE_PORT:-2550}
DNS_PORT=${DNS_PORT:-2553}
DIR=$BENCH_ROOT/spam
modes=("$@"); [[ ${#modes[@]} -gt 0 ]] || modes=(multi)

"$REPO/scripts/install-test-deps.sh" || exit 1
command -v dnsmasq >/dev/null || apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null \
  || die "dnsmasq (dnsmasq-base) is needed"
(cd "$REPO" && cargo build --release -q -p postern-gateway) || die "build failed"
rm -rf "$DIR"; mkdir -p "$DIR"

# The message: ~5 KB of text, signed by dkimpy with the tests' key (relaxed/relaxed, so the
# CRLFs smtp-source adds do not matter). smtp-source -F wants LF lines.
python3 - "$DIR/message.eml" "$REPO/tests/fixtures/dkim-test-key.pem" "$SENDER" "$RCPT" <<'PY'
import sys, dkim
out, key, sender, rcpt = sys.argv[1:]
body = "".join(f"Line {i:03d} of the benchmark message, plain text as most mail is.\r\n" for i in range(70))
msg = (f"From: Bench <{sender}>\r\nTo: <{rcpt}>\r\nSubject: spam-check benchmark\r\n"
       f"Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@bench.test>\r\nMIME-Version: 1.0\r\n"
       f"Content-Type: text/plain; charset=utf-8\r\n\r\n{body}").encode()
sig = dkim.sign(msg, b"test2026", b"bench.test", open(key, "rb").read(), canonicalize=(b"relaxed", b"relaxed"),
                include_headers=[b"from", b"to", b"subject", b"date", b"message-id"], linesep=b"\r\n")
open(out, "wb").write((sig + msg).replace(b"\r\n", b"\n"))
PY
[[ -s $DIR/message.eml ]] || die "could not sign the message (dkimpy)"
SIZE=$(wc -c <"$DIR/message.eml")

# Local DNS (dnsmasq: no quotes; a comma starts the next string): SPF, the DKIM key (split into 255-byte strings), DMARC p=reject; bl.test is a
# DNSBL zone that does not list 127.0.0.1. Every other .test name is NXDOMAIN (--local), as on
# the Internet; without it dnsmasq would refuse them and DMARC would see a temperror.
key=$(tr -d '\n' <"$REPO/tests/fixtures/dkim-test-key.pub.b64")
rec="v=DKIM1; k=rsa; p=$key"
parts=$(python3 -c 'import sys; r=sys.argv[1]; print(",".join(r[i:i+255] for i in range(0,len(r),255)))' "$rec")
dnsmasq --keep-in-foreground --no-resolv --no-hosts --port="$DNS_PORT" --listen-address=127.0.0.1 \
  --bind-interfaces --local-ttl=300 --neg-ttl=300 --local=/test/ \
  --pid-file="$DIR/dnsmasq.pid" \
  --txt-record='bench.test,v=spf1 ip4:127.0.0.0/8 -all' \
  --txt-record="test2026._domainkey.bench.test,$parts" \
  --txt-record='_dmarc.bench.test,v=DMARC1; p=reject' >"$DIR/dnsmasq.log" 2>&1 &
DNS_PID=$!
sleep 0.5
kill -0 $DNS_PID 2>/dev/null || die "dnsmasq did not start: $(cat "$DIR/dnsmasq.log")"

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
  "$REPO/target/release/postern-gateway" run --config "$dir/gateway.yaml" >"$dir/gateway.log" 2>&1 &
  echo $!
}
PLAIN_PORT=$BASE_PORT; SPAM_PORT=$((BASE_PORT + 1))
PLAIN_PID=$(start_gateway plain $PLAIN_PORT "")
SPAM_PID=$(start_gateway spam $SPAM_PORT "spamPolicies: {checks: {dnsbl: {zones: [bl.test]}}}" "spamPolicy: checks")
trap 'stop_pid $PLAIN_PID 10; stop_pid $SPAM_PID 10; stop_pid $DNS_PID 2' EXIT
wait_port $PLAIN_PORT 15 && wait_port $SPAM_PORT 15 || die "gateways did not listen"

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
  p_mps=(); s_mps=(); p_cpu=(); s_cpu=(); ratio=()
  for ((i = 1; i <= REPS; i++)); do
    p=$(run_trial $PLAIN_PORT "$mode" "$PLAIN_PID"); echo "plain mode=$mode rep=$i $p"
    s=$(run_trial $SPAM_PORT "$mode" "$SPAM_PID"); echo "spam  mode=$mode rep=$i $s"
    [[ $(kv ok "$p") == 1 && $(kv ok "$s") == 1 ]] || { log "trial failed"; continue; }
    p_mps+=("$(kv e2e_mps "$p")"); s_mps+=("$(kv e2e_mps "$s")")
    p_cpu+=("$(kv srv_cpu_ms_per_msg "$p")"); s_cpu+=("$(kv srv_cpu_ms_per_msg "$s")")
    ratio+=("$(awk -v a="$(kv e2e_mps "$s")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  echo "  plain_e2e_mps        $(printf '%s\n' "${p_mps[@]}" | stats)"
  echo "  spam_e2e_mps         $(printf '%s\n' "${s_mps[@]}" | stats)"
  echo "  spam/plain mps       $(printf '%s\n' "${ratio[@]}" | stats3)"
  echo "  plain_cpu_ms_per_msg $(printf '%s\n' "${p_cpu[@]}" | stats3)"
  echo "  spam_cpu_ms_per_msg  $(printf '%s\n' "${s_cpu[@]}" | stats3)"
done
# Proof the checks ran, and passed, on the spam gateway:
echo "spam gateway check results:"
curl -s "http://127.0.0.1:$((SPAM_PORT + 100))/metrics" | grep -E '^postern_(auth_results|spam_verdicts)_total' | sed 's/^/  /'
