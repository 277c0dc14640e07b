"""A provider's submission server for the sending-account tests: aiosmtpd (PyPI) on loopback,
with AUTH (PLAIN, LOGIN) for one user, allowed only under TLS, and TLS as the mode says:
"starttls" (STARTTLS required before anything else), "tls" (implicit TLS from the first byte)
or "plain" (no TLS, no AUTH: a relay on a private network). Mode "xoauth2" is "starttls" with
AUTH XOAUTH2 only (Google's and Microsoft's SASL mechanism): USER is then the authorization
server's token introspection URL and PASSWORD "client_id:client_secret"; a login succeeds when
the server says the bearer token is active and was granted by the user the login names.

Each accepted message is written to OUT_DIR as one JSON file: envelope, the login used (or
null), whether the session was under TLS, and the data. Prints "ready" once listening and
stops when its standard input closes.

Usage: submission_server.py MODE PORT CERT KEY USER PASSWORD OUT_DIR
"""
import base64
import json
import os
import ssl
import sys
import urllib.parse
import urllib.request
import uuid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, user, password, out_dir = sys.argv[1:8]
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data.login.decode() if ok else None)


class Recorder:
    async def handle_DATA(self, server, session, envelope):
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": session.auth_data if session.authenticated else None,
            # Under STARTTLS aiosmtpd sets session.ssl; under implicit TLS the transport is TLS.
            "tls": session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None,
            "data": envelope.content.decode("utf-8", "replace"),
        }
        name = uuid.uuid4().hex
        tmp = os.path.join(out_dir, f".{name}.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(out_dir, f"{name}.json"))
        return "250 2.0.0 OK: queued"


def introspect(token):
    client_id, client_secret = password.split(":", 1)
    body = urllib.parse.urlencode({"token": token, "client_id": client_id, "client_secret": client_secret})
    with urllib.request.urlopen(user, data=body.encode()) as response:
        return json.load(response)


class XOAuth2Recorder(Recorder):
    async def auth_XOAUTH2(self, server, args):
        # RFC-less but documented by Google and Microsoft: base64 of
        # "user=<mailbox>^Aauth=Bearer <token>^A^A" as the initial response.
        try:
            fields = base64.b64decode(args[1]).decode().split("\x01")
            login = next(f[5:] for f in fields if f.startswith("user="))
            token = next(f[12:] for f in fields if f.startswith("auth=Bearer "))
        except Exception:
            return AuthResult(success=False, handled=False)
        info = introspect(token)
        ok = info.get("active") is True and info.get("sub") == login
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)


kwargs = {"authenticator": authenticator, "auth_require_tls": True}
handler = Recorder()
if mode == "xoauth2":
    handler = XOAuth2Recorder()
    kwargs = {"auth_require_tls": True, "tls_context": context, "require_starttls": True, "auth_required": True,
              "auth_exclude_mechanism": ["PLAIN", "LOGIN"]}
elif mode == "starttls":
    kwargs.update(tls_context=context, require_starttls=True, auth_required=True)
elif mode == "tls":
    # Implicit TLS: every byte is encrypted, but aiosmtpd's auth_require_tls only knows
    # STARTTLS, so it would refuse AUTH here.
    kwargs.update(ssl_context=context, auth_required=True, auth_require_tls=False)
controller = Controller(handler, hostname="127.0.0.1", port=int(port), **kwargs)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
