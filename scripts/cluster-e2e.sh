#!/usr/bin/env bash
# End to end on a real cluster (kind, k3s, or any you point KUBECONFIG at): installs the chart
# with the image you built and pushed, applies a Gateway + MailDomain, waits for their
# conditions, sends one message through the gateway Service with swaks from a pod, checks that
# the admin API follows RBAC, then that a message queued while the destination is down survives
# deleting the gateway pod.
#
# Usage: KUBECONFIG=... IMAGE=registry/postern:tag scripts/cluster-e2e.sh
# Skipped (exit 0) when KUBECONFIG is not set: the CI machines have no cluster.
set -euo pipefail
if [[ -z ${KUBECONFIG:-} ]]; then
  echo "KUBECONFIG is not set: skipping the real-cluster test"
  exit 0
fi
: "${IMAGE:?set IMAGE to the pushed postern image (repository:tag)}"
NS=${NS:-postern-e2e}
REPO=$(cd "$(dirname "$0")/.." && pwd)
repo=${IMAGE%:*}; tag=${IMAGE##*:}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
helm upgrade --install postern "$REPO/charts/postern" -n "$NS" --wait \
  --set image.repository="$repo" --set image.tag="$tag"

# A mailbox "server" to deliver to: Postfix's smtp-sink in a pod.
SINK_POD='apiVersion: v1
kind: Pod
metadata: {name: sink, labels: {app: sink}}
spec:
  containers:
    - name: sink
      image: debian:bookworm-slim
      command: [sh, -c, "apt-get update -qq && apt-get install -y -qq postfix >/dev/null; /usr/sbin/smtp-sink -u nobody -d /tmp/%M 0.0.0.0:2525 100"]'
printf '%s\n' "$SINK_POD" | kubectl -n "$NS" apply -f -
kubectl -n "$NS" apply -f - <<YAML
apiVersion: v1
kind: Service
metadata: {name: sink}
spec: {selector: {app: sink}, ports: [{port: 2525}]}
---
apiVersion: mail.postern.dev/v1alpha1
kind: Gateway
metadata: {name: e2e}
spec:
  image: $IMAGE
  listeners: [{name: smtp, port: 2525}]
  domainSelector: {matchLabels: {postern.dev/gateway: e2e}}
---
apiVersion: mail.postern.dev/v1alpha1
kind: MailDomain
metadata: {name: e2e-test, labels: {postern.dev/gateway: e2e}}
spec:
  domain: e2e.test
  primary: {hosts: ["sink.$NS.svc:2525"], tls: {mode: none}}
YAML
kubectl -n "$NS" wait --for=condition=Ready maildomain/e2e-test --timeout=120s
kubectl -n "$NS" wait --for=condition=Ready gateway/e2e --timeout=300s
kubectl -n "$NS" run swaks --rm -i --restart=Never --image=debian:bookworm-slim -- \
  sh -c "apt-get update -qq && apt-get install -y -qq swaks >/dev/null && swaks --server e2e.$NS.svc:2525 --to u@e2e.test --from a@sender.test"
echo "delivered: $(kubectl -n "$NS" exec sink -- sh -c 'ls /tmp | wc -l') message(s) at the sink"

# The admin API answers by RBAC (TokenReview, then SubjectAccessReview): a service account
# bound to the chart's quarantine reviewer role may list held mail, another may not.
kubectl -n "$NS" create serviceaccount reviewer --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create serviceaccount outsider --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" create rolebinding reviewer --clusterrole=postern-quarantine-reviewer \
  --serviceaccount="$NS:reviewer" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" port-forward svc/e2e-admin 18025:8025 >/dev/null &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
for _ in $(seq 1 30); do curl -fs http://127.0.0.1:18025/healthz >/dev/null && break; sleep 1; done
status_as() {
  curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(kubectl -n "$NS" create token "$1")" \
    http://127.0.0.1:18025/api/v1/quarantine
}
[[ $(status_as reviewer) == 200 ]] || { echo "the reviewer was refused the quarantine" >&2; exit 1; }
[[ $(status_as outsider) == 403 ]] || { echo "an unbound account reached the quarantine" >&2; exit 1; }
echo "the admin API follows RBAC"

# Restart durability: with the sink gone the message waits in the queue (on the embedded store's
# PersistentVolumeClaim); the gateway pod is deleted; the new pod finds the message and delivers
# it once the sink is back.
kubectl -n "$NS" wait --for=condition=Durable gateway/e2e --timeout=120s
kubectl -n "$NS" delete pod sink --wait
kubectl -n "$NS" run swaks2 --rm -i --restart=Never --image=debian:bookworm-slim -- \
  sh -c "apt-get update -qq && apt-get install -y -qq swaks >/dev/null && swaks --server e2e.$NS.svc:2525 --to durable@e2e.test --from a@sender.test --header 'Subject: survives a restart'"
kubectl -n "$NS" delete pod e2e-0 --wait
kubectl -n "$NS" wait --for=condition=Ready gateway/e2e --timeout=300s
printf '%s\n' "$SINK_POD" | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait --for=condition=Ready pod/sink --timeout=300s
for _ in $(seq 1 60); do
  if kubectl -n "$NS" exec sink -- sh -c 'grep -l "survives a restart" /tmp/* 2>/dev/null' | grep -q .; then
    echo "the queued message survived the pod's deletion and was delivered"
    exit 0
  fi
  sleep 10
done
echo "the message queued before the restart did not arrive" >&2
exit 1
