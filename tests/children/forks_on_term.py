"""A notify child that leaves a helper behind when asked to stop.

READY=1 after argv[2] seconds, or after the seconds in a file `next-ready`
in the temp dir (read and removed at start, so a test can slow down only
the next child), then serve. On SIGTERM: a "term" event, then it forks a
helper in its own process group (without the listening socket, so only
the group names it) that records "helper" and sleeps, and exits 0.
"""

import os
import signal
import socket
import sys
import time

import childlib as c


def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.sendto(msg.encode(), addr)
    finally:
        s.close()


def on_term(signum, frame):
    c.event("term")
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.closerange(3, 1024)
        c.event("helper")
        time.sleep(120)
        os._exit(0)
    os._exit(0)


def delay():
    try:
        with open(c.path("next-ready")) as f:
            text = f.read()
        os.unlink(c.path("next-ready"))
        return float(text)
    except OSError:
        return float(sys.argv[2])


signal.signal(signal.SIGTERM, on_term)
sock = c.listener()
wait = delay()
c.event("start")
time.sleep(wait)
notify("READY=1")
c.event("ready")
c.serve(sock)
