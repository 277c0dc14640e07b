# Sourced by the benchmarks (after ../shared/bench/peers/lib.sh, for RCPT_DOMAIN and SINK_PORT).
# relay_config HOSTNAME PORT STORE_YAML [DNS_PORT]: the plain-relay gateway config every relay
# benchmark measures (trusted loopback clients, example.test to smtp-sink without TLS, limits
# out of the way, info logs with a line per message and per delivery, as in production), on
# stdout. With DNS_PORT (bench/spam-env.sh's DNS), the domain also takes the spam benchmarks'
# SpamPolicy ($SPAM_POLICY) with DNS from that port.
relay_config() {
  local spam_policy="" domain_policy="" nameservers=""
  if [[ -n ${4:-} ]]; then
    spam_policy=$SPAM_POLICY domain_policy="spamPolicy: checks" nameservers=", nameservers: [\"127.0.0.1:$4\"]"
  fi
  cat <<YAML
hostname: $1
listeners: [{name: smtp, address: "127.0.0.1:$2"}]
admin: {address: "127.0.0.1:0"}
store: $3
relay: {trustedNetworks: [127.0.0.0/8]}
domains:
  - name: $RCPT_DOMAIN
    primary: {hosts: ["127.0.0.1:$SINK_PORT"], tls: {mode: none}}
    $domain_policy
limits: {maxConnectionsPerIp: 1000, maxConnections: 2000, maxMessagesPerSession: 1000000}
delivery: {concurrencyPerDestination: 20$nameservers}
logging: {format: text, level: info}
$spam_policy
YAML
}
