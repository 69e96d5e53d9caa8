#!/usr/bin/env python3
"""A tiny HTTP service that serves on the socket the supervisor hands over.

It never binds: it takes fd 3 as the systemd socket-activation protocol
describes (LISTEN_FDS=1, LISTEN_PID=<our pid>), the way `uvicorn --fd 3`,
gunicorn and sd_listen_fds() do. Only the standard library is used, so the
default config runs on a fresh machine.
"""
import http.server
import json
import os
import signal
import socket
import sys
import time

SD_LISTEN_FDS_START = 3


def inherited_socket():
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        sys.exit("demo_app: no socket handed over (run me under `supervisor run`)")
    return socket.socket(fileno=SD_LISTEN_FDS_START)


class Handler(http.server.BaseHTTPRequestHandler):
    started = time.time()

    def do_GET(self):
        body = json.dumps(
            {
                "hello": "from the supervised demo app",
                "pid": os.getpid(),
                "up_seconds": round(time.time() - self.started, 1),
                "listen_fdnames": os.environ.get("LISTEN_FDNAMES"),
            }
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        # One line per request on stdout: the supervisor captures it into child.log.
        print("%s %s" % (self.address_string(), fmt % args), flush=True)


def main():
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), Handler, bind_and_activate=False
    )
    server.socket.close()
    server.socket = inherited_socket()
    server.server_address = server.socket.getsockname()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("demo_app %d serving on %s:%d" % ((os.getpid(),) + server.server_address[:2]), flush=True)
    try:
        server.serve_forever()
    finally:
        print("demo_app %d stopping" % os.getpid(), flush=True)


if __name__ == "__main__":
    main()
