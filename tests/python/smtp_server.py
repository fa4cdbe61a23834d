"""A real SMTP server (aiosmtpd) for the responder's email receiver: STARTTLS with a
certificate signed by a CA made here (written to CERT_DIR/ca.pem for Warden's ca_file), AUTH
required after TLS, every accepted message appended to OUT as one JSON line.

Usage: smtp_server.py PORT CERT_DIR OUT USER   (the password is in $SMTP_TEST_PASSWORD)
Prints "ready" once it listens; runs until killed.
"""

import json
import os
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from test_certs import make_certificates


class Recorder:
    def __init__(self, out):
        self.out = out

    async def handle_DATA(self, server, session, envelope):
        with open(self.out, "a") as f:
            f.write(
                json.dumps(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": envelope.rcpt_tos,
                        "data": envelope.content.decode("utf-8", "replace"),
                        "authenticated_as": session.auth_data.login.decode()
                        if session.auth_data
                        else None,
                        "tls": session.ssl is not None,
                    }
                )
                + "\n"
            )
        return "250 OK"


def main():
    port, cert_dir, out, user = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    password = os.environ["SMTP_TEST_PASSWORD"]
    cert, key = make_certificates(cert_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    controller = Controller(
        Recorder(out),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticate,
    )
    controller.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
