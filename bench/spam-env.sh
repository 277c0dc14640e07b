# Sourced by bench/spam.sh and bench/instructions.sh (after ../shared/bench/peers/lib.sh, for
# SENDER, RCPT, wait_port, die; REPO and DIR set): the spam benchmarks' signed message and DNS.

# spam_message FILE: ~5 KB of text, signed by dkimpy with the tests' key (relaxed/relaxed, so
# the CRLFs smtp-source adds do not matter). smtp-source -F wants LF lines.
spam_message() {
  python3 - "$1" "$REPO/tests/fixtures/dkim-test-key.pem" "$SENDER" "$RCPT" <<'PY'
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
  [[ -s $1 ]] || die "could not sign the message (dkimpy)"
}

# start_dns PORT [EXTRA dnsmasq options] -> DNS_PID. Local DNS (dnsmasq: no quotes; a comma
# starts the next string): SPF, the DKIM key (split into 255-byte strings), DMARC p=reject;
# bl.test is a DNSBL zone that does not list 127.0.0.1. Every other .test name is NXDOMAIN
# (--local), as on the Internet; without it dnsmasq would refuse them and DMARC would see a
# temperror.
start_dns() {
  local port=$1; shift
  local key rec parts
  key=$(tr -d '\n' <"$REPO/tests/fixtures/dkim-test-key.pub.b64")
  rec="v=DKIM1; k=rsa; p=$key"
  parts=$(python3 -c 'import sys; r=sys.argv[1]; print(",".join(r[i:i+255] for i in range(0,len(r),255)))' "$rec")
  dnsmasq --keep-in-foreground --no-resolv --no-hosts --port="$port" --listen-address=127.0.0.1 \
    --bind-interfaces --local-ttl=300 --neg-ttl=300 --local=/test/ \
    --pid-file="$DIR/dnsmasq.pid" \
    --txt-record='bench.test,v=spf1 ip4:127.0.0.0/8 -all' \
    --txt-record="test2026._domainkey.bench.test,$parts" \
    --txt-record='_dmarc.bench.test,v=DMARC1; p=reject' "$@" >>"$DIR/dnsmasq.log" 2>&1 &
  DNS_PID=$!
  wait_port "$port" 10 && kill -0 $DNS_PID 2>/dev/null || die "dnsmasq did not start: $(cat "$DIR/dnsmasq.log")"
}

# spam_setup PORT: what a benchmark of the spam path needs beside the gateway: dnsmasq (installed
# if missing) serving the records on PORT, the signed message in $DIR/message.eml; sets SIZE to
# its size and content to smtp-source's arguments for sending it.
spam_setup() {
  command -v dnsmasq >/dev/null || apt-get install -y -qq --no-install-recommends dnsmasq-base >/dev/null || die "dnsmasq"
  spam_message "$DIR/message.eml"
  SIZE=$(wc -c <"$DIR/message.eml"); content=(-F "$DIR/message.eml")
  port_in_use "$1" && die "port $1 already in use (a dnsmasq left over?)"
  start_dns "$1"
}

# The spam benchmarks' SpamPolicy (SPF, DKIM, DMARC and content rules on by default, one DNSBL
# zone), as top-level YAML; a domain takes it with `spamPolicy: checks`.
SPAM_POLICY="spamPolicies: {checks: {dnsbl: {zones: [bl.test]}}}"
