"""An HTTP service with /healthz. After `freeze` appears in the temp dir it
stops serving while its process lives on (a frozen event loop). Records
SIGTERM, then exits on it."""

import os
import select
import signal

import childlib as c

c.exit_on_term()
sock = c.listener()
c.event("start")
reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%d\n"
body = b"%d\n" % os.getpid()
while True:
    if os.path.exists(c.path("freeze")) and not os.path.exists(c.path("frozen-once")):
        c.touch("frozen-once")
        c.event("frozen")
        while True:
            signal.pause()
    r, _, _ = select.select([sock], [], [], 0.05)
    if not r:
        continue
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        continue
    with conn:
        conn.settimeout(5)
        try:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except OSError:
            pass
