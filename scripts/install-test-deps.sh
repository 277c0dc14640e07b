#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, when they are missing.
# Idempotent and quiet when everything is there already.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || need+=(postfix)
command -v swaks >/dev/null || need+=(swaks)
# swaks speaks TLS (STARTTLS, implicit TLS) through Net::SSLeay.
perl -MNet::SSLeay -e1 2>/dev/null || need+=(libnet-ssleay-perl)
# Node.js runs the OAuth tests' authorization server (oidc-provider).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Debian's Chromium: the quarantine console's browser test (never a downloaded browser).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or install them yourself)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Keep postfix idle: we only want its smtp-sink/smtp-source tools and a private bench instance.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# dkimpy: an independent DKIM signer for the spam tests (signatures not made by our own code)
# and verifier for the Direct sending accounts' signatures; PyNaCl lets it do Ed25519, and
# dnspython lets it ask the tests' DNS server.
if ! python3 -c 'import dkim' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore dkimpy
fi
if ! python3 -c 'import nacl, dns.resolver' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pynacl dnspython
fi

# helm-python-sdk: the real Helm v4 engine, to render and lint charts/postern in the tests.
if ! python3 -c 'import helm_python' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore helm-python-sdk
fi

# kubernetes-validate (the Kubernetes OpenAPI schemas) and checkov (misconfiguration and Pod
# Security checks): the offline checks of what the operator and the chart would apply.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate
fi
if ! python3 -c 'import checkov' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore checkov
fi

# aiosmtpd: a provider's submission server (AUTH, STARTTLS, implicit TLS) for the sending-account
# tests (tests/peers/submission_server.py).
if ! python3 -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore aiosmtpd
fi

# lupa: a real Lua interpreter, to run the Argo CD health check (examples/argocd/health.lua).
if ! python3 -c 'import lupa' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore lupa
fi

# requests: the consent step of the OAuth sending-account tests is driven like a browser by
# tests/peers/oauth/consent.py.
if ! python3 -c 'import requests' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore requests
fi

# oidc-provider (npm): the real OAuth 2.0 authorization server of those tests, at the version
# tests/peers/oauth/package-lock.json pins.
if [ ! -d "$(dirname "$0")/../tests/peers/oauth/node_modules/oidc-provider" ]; then
  (cd "$(dirname "$0")/../tests/peers/oauth" && npm ci --no-audit --no-fund --silent)
fi

# playwright-core (npm) drives Debian's Chromium in the console test, at the version
# tests/peers/browser/package-lock.json pins (playwright-core downloads no browser).
if [ ! -d "$(dirname "$0")/../tests/peers/browser/node_modules/playwright-core" ]; then
  (cd "$(dirname "$0")/../tests/peers/browser" && npm ci --no-audit --no-fund --silent)
fi
