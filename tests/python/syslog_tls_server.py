"""A syslog-over-TLS server (RFC 5425: octet-counted frames on TLS) for the responder's
syslog receiver, with a certificate signed by a CA made here (CERT_DIR/ca.pem). Every frame
received is appended to OUT as one line.

Usage: syslog_tls_server.py PORT CERT_DIR OUT
Prints "ready" once it listens; runs until killed.
"""

import socket
import ssl
import sys
import threading

from test_certs import make_certificates


def serve(connection, out):
    buffer = b""
    with connection:
        while True:
            data = connection.recv(65536)
            if not data:
                return
            buffer += data
            while True:
                space = buffer.find(b" ")
                if space <= 0:
                    break
                length = int(buffer[:space])
                if len(buffer) < space + 1 + length:
                    break
                frame = buffer[space + 1 : space + 1 + length]
                buffer = buffer[space + 1 + length :]
                with open(out, "ab") as f:
                    f.write(frame + b"\n")


def main():
    port, cert_dir, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    cert, key = make_certificates(cert_dir)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    while True:
        raw, _ = listener.accept()
        try:
            connection = context.wrap_socket(raw, server_side=True)
        except ssl.SSLError:
            raw.close()
            continue
        threading.Thread(target=serve, args=(connection, out), daemon=True).start()


if __name__ == "__main__":
    main()
