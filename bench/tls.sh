#!/usr/bin/env bash
# The TLS path: STARTTLS on both sides, client -> relay and relay -> sink, for postern-gateway
# and for Postfix in the same run, trials interleaved.
# - Client: tests/src/bin/smtp-load (smtp-source cannot do STARTTLS; same flags, one thread per
#   session, one command at a time), STARTTLS on every session, verifying the relay's
#   certificate against the run's CA.
# - Sink: tests/src/bin/smtp-tls-sink (smtp-sink -c's count record, plus STARTTLS with rustls'
#   in-memory session cache; it counts TLS sessions and resumed handshakes).
# - Postern: a listener with the run's certificate; the destination with `tls: {mode:
#   required}` (encrypt, like Postfix's `encrypt`); outbound TLS sessions resume by themselves.
# - Postfix: its own instance (../shared/bench's, plus TLS): smtpd_tls_security_level = may
#   with the same certificate, smtp_tls_security_level = encrypt, both TLS session caches on,
#   and smtp_tls_connection_reuse = yes (through tlsproxy), so it too keeps TLS connections to
#   the sink open across deliveries: Postfix as one would tune it for this.
# Certificates: ECDSA P-256 from a CA made for the run (openssl).
#
# Usage: bench/tls.sh [multi|single ...]   (default: multi)
# Env:   MSGS SESSIONS SIZE REPS (lib.sh), GW_PORT (2570)
set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench/peers}
[[ -r $PEERS/lib.sh ]] || { echo "bench harness not found at $PEERS (set PEERS)" >&2; exit 1; }
# A Postfix instance of its own: the TLS settings must not reach bench/run.sh's instance.
export BENCH_ROOT=${BENCH_ROOT:-/var/tmp/peers-bench}/tls
. "$PEERS/lib.sh"
GW_PORT=${GW_PORT:-2570}
DIR=$BENCH_ROOT/work
modes=("$@"); [[ ${#modes[@]} -gt 0 ]] || modes=(multi)

"$REPO/scripts/install-test-deps.sh" || exit 1
(cd "$REPO" && cargo build --release -q -p postern-gateway -p postern-tests --bin postern-gateway \
  --bin smtp-load --bin smtp-tls-sink) || die "build failed"
rm -rf "$DIR"; mkdir -p "$DIR"

# The run's CA and two leaves: the relays' (relay.bench.test) and the sink's.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$DIR/ca.key" -out "$DIR/ca.pem" 2>/dev/null || die "CA"
for name in relay sink; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$name.bench.test" \
    -keyout "$DIR/$name.key" -out "$DIR/$name.csr" 2>/dev/null &&
  openssl x509 -req -in "$DIR/$name.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca.key" -CAcreateserial -days 2 \
    -extfile <(echo "subjectAltName=DNS:$name.bench.test") -out "$DIR/$name.pem" 2>/dev/null || die "certificate $name"
done
chmod 644 "$DIR"/*.key

# Client and sink as the harness calls smtp-source and smtp-sink.
cat >"$DIR/source" <<SH
#!/usr/bin/env bash
exec $REPO/target/release/smtp-load --starttls $DIR/ca.pem relay.bench.test "\$@"
SH
cat >"$DIR/sink" <<SH
#!/usr/bin/env bash
exec $REPO/target/release/smtp-tls-sink --tls $DIR/sink.pem $DIR/sink.key 127.0.0.1:$SINK_PORT
SH
chmod +x "$DIR/source" "$DIR/sink"
SMTP_SOURCE=$DIR/source; SMTP_SINK=$DIR/sink

GW_PID=
trap 'stop_pid "$GW_PID" 10; "$PEERS/postfix-relay.sh" stop >/dev/null 2>&1' EXIT

# Postfix with TLS on both sides.
"$PEERS/postfix-relay.sh" setup >/dev/null 2>&1 || die "postfix setup failed"
PFCONF=$BENCH_ROOT/postfix/etc
postconf -c "$PFCONF" -e "smtpd_tls_security_level = may" "smtpd_tls_cert_file = $DIR/relay.pem" \
  "smtpd_tls_key_file = $DIR/relay.key" "smtp_tls_security_level = encrypt" \
  "smtpd_tls_session_cache_database = btree:\$data_directory/smtpd_scache" \
  "smtp_tls_session_cache_database = btree:\$data_directory/smtp_scache" \
  "smtp_tls_connection_reuse = yes" || die "postconf failed"
grep -q '^tlsproxy' "$PFCONF/master.cf" ||
  echo "tlsproxy  unix  -       -       n       -       0       tlsproxy" >>"$PFCONF/master.cf"
postfix -c "$PFCONF" check || die "postfix check failed"
postsuper -c "$PFCONF" -d ALL >/dev/null 2>&1
"$PEERS/postfix-relay.sh" start >/dev/null 2>&1 || die "postfix instance did not start"
PF_PID=$(tr -d ' \n' <"$BENCH_ROOT/postfix/spool/pid/master.pid")

cat >"$DIR/gateway.yaml" <<YAML
hostname: relay.bench.test
listeners: [{name: smtp, address: "127.0.0.1:$GW_PORT", tls: {certFile: "$DIR/relay.pem", keyFile: "$DIR/relay.key"}}]
admin: {address: "127.0.0.1:0"}
store: {embedded: {path: "$DIR/store"}}
relay: {trustedNetworks: [127.0.0.0/8]}
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
delivery: {concurrencyPerDestination: 20}
logging: {format: text, level: info}
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$SINK_PORT"], tls: {mode: required}}
YAML
port_in_use "$GW_PORT" && die "port $GW_PORT already in use"
"$REPO/target/release/postern-gateway" run --config "$DIR/gateway.yaml" >"$DIR/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GW_PORT" 15 || die "gateway did not listen: $(tail -3 "$DIR/gateway.log")"

# The sink's last count record: how many sessions used TLS and how many resumed.
sink_tls() { tr '\r' '\n' <"$BENCH_ROOT/sink.count" | grep . | tail -1 | sed -nE 's/.*(tls=[0-9]+ resumed=[0-9]+).*/\1/p'; }

for mode in "${modes[@]}"; do
  p_mps=(); g_mps=(); p_cpu=(); g_cpu=(); ratio=()
  for ((i = 1; i <= REPS; i++)); do
    p=$(run_trial "$POSTFIX_PORT" "$mode" "$PF_PID"); echo "postfix-tls mode=$mode rep=$i $p sink_$(sink_tls)"
    g=$(run_trial "$GW_PORT" "$mode" "$GW_PID"); echo "postern-tls mode=$mode rep=$i $g sink_$(sink_tls)"
    [[ $(kv ok "$p") == 1 && $(kv ok "$g") == 1 ]] || { log "trial failed"; continue; }
    p_mps+=("$(kv e2e_mps "$p")"); g_mps+=("$(kv e2e_mps "$g")")
    p_cpu+=("$(kv srv_cpu_ms_per_msg "$p")"); g_cpu+=("$(kv srv_cpu_ms_per_msg "$g")")
    ratio+=("$(awk -v a="$(kv e2e_mps "$g")" -v b="$(kv e2e_mps "$p")" 'BEGIN{print a/b}')")
  done
  echo "SUMMARY mode=$mode msgs=$MSGS sessions=$SESSIONS size=$SIZE (median min max n)"
  echo "  postfix_tls_e2e_mps    $(printf '%s\n' "${p_mps[@]}" | stats)"
  echo "  postern_tls_e2e_mps    $(printf '%s\n' "${g_mps[@]}" | stats)"
  echo "  postern/postfix mps    $(printf '%s\n' "${ratio[@]}" | stats3)"
  echo "  postfix_cpu_ms_per_msg $(printf '%s\n' "${p_cpu[@]}" | stats3)"
  echo "  postern_cpu_ms_per_msg $(printf '%s\n' "${g_cpu[@]}" | stats3)"
done
