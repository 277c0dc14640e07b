#!/usr/bin/env bash
# Operator rendering at scale: DOMAINS MailDomains with ACCOUNTS accounts each (plus a
# RoutingPolicy and a SpamPolicy they share) rendered into one GatewayConfig by
# `postern-operator render -f` (release build): wall time and peak memory of the whole
# command (read + parse + render + validate + write YAML), and the in-process split.
#
# Usage: bench/render.sh      Env: DOMAINS (1000) ACCOUNTS (100) REPS (5)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
DOMAINS=${DOMAINS:-1000}; ACCOUNTS=${ACCOUNTS:-100}; REPS=${REPS:-5}
DIR=$(mktemp -d); trap 'rm -rf "$DIR"' EXIT
(cd "$REPO" && cargo build --release -q -p postern-operator)
python3 - "$DIR" "$DOMAINS" "$ACCOUNTS" <<'PY'
import sys
out, n, a = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(f"{out}/policies.yaml", "w") as f:
    f.write("""apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: edge}
spec: {hostname: mx.example.com}
---
apiVersion: mail.postern.dev/v1alpha1
kind: RoutingPolicy
metadata: {name: split}
spec: {mode: Split, destination: {mx: legacy.example.net}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: SpamPolicy
metadata: {name: standard}
spec: {dnsbl: {zones: [zen.spamhaus.org]}}
""")
with open(f"{out}/domains.yaml", "w") as f:
    for d in range(n):
        accounts = ", ".join(f"{{address: user{i}, aliases: [u{i}]}}" for i in range(a))
        f.write(f"""---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {{name: d{d}}}
spec:
  domain: d{d}.example.com
  primary: {{hosts: ["mail{d}.example.com:25"]}}
  accounts: [{accounts}]
  routingPolicyRef: split
  spamPolicyRef: standard
""")
PY
BIN=$REPO/target/release/postern-operator
echo "input: $(du -sh "$DIR" | cut -f1) of manifests, $DOMAINS domains x $ACCOUNTS accounts"
for ((i = 1; i <= REPS; i++)); do
  /usr/bin/time -f "rep=$i wall_s=%e max_rss_kb=%M" "$BIN" render -f "$DIR" --timings >"$DIR/out.yaml" 2>"$DIR/err" || { cat "$DIR/err"; exit 1; }
  grep -E "^(timings|rep=)" "$DIR/err" | tr '\n' ' '; echo
done
echo "output: $(wc -c <"$DIR/out.yaml") bytes of GatewayConfig YAML"
