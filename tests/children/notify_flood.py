"""A notify-protocol child whose own process group floods the notify socket
while it keeps its watchdog fed (issue 20 item 7).

argv[2]: seconds to flood; argv[3]: how many flooder processes (default 1).

READY=1 at once. The flooders (forked, so in the child's group and of its
user) send STATUS=flood N in a tight loop, non-blocking, and each records
"flooder SENT EAGAIN" when done. The main thread pings WATCHDOG=1 every
200 ms: first non-blocking (an EAGAIN is counted: a sender that does not
retry would have lost that ping), then, if that failed, blocking on a
connected socket until it is queued (at most 1 s). When the flood is over
it records "flood PINGS EAGAIN LOST MAX_WAIT_MS" and serves on quietly
(still pinging).
"""

import os
import signal
import socket
import sys
import time

import childlib as c

SECONDS = float(sys.argv[2])
FLOODERS = int(sys.argv[3]) if len(sys.argv) > 3 else 1
EVERY = 0.2

c.exit_on_term()
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the flooders reap themselves
sock = c.listener()
c.event("start", os.environ.get("WATCHDOG_USEC", "-"))


def address():
    addr = os.environ["NOTIFY_SOCKET"]
    return "\0" + addr[1:] if addr.startswith("@") else addr


def flooder():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.setblocking(False)
    addr = address()
    end = time.monotonic() + SECONDS
    sent = eagain = n = 0
    while True:
        # The clock is read every 256 sends, to keep the loop tight.
        if n & 255 == 0 and time.monotonic() >= end:
            break
        n += 1
        try:
            s.sendto(b"STATUS=flood %d" % n, addr)
            sent += 1
        except BlockingIOError:
            eagain += 1
    c.event("flooder", sent, eagain)
    os._exit(0)


def ping(sock):
    """One WATCHDOG=1: (EAGAIN on the first try, queued, ms waited)."""
    sock.setblocking(False)
    try:
        sock.send(b"WATCHDOG=1")
        return (False, True, 0.0)
    except BlockingIOError:
        pass
    t0 = time.monotonic()
    sock.settimeout(1.0)
    try:
        sock.send(b"WATCHDOG=1")
        ok = True
    except OSError:
        ok = False
    return (True, ok, (time.monotonic() - t0) * 1000)


c.notify("READY=1")
pinger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
pinger.connect(address())
for _ in range(FLOODERS):
    if os.fork() == 0:
        flooder()
c.event("flooding", SECONDS, FLOODERS)
end = time.monotonic() + SECONDS
pings = eagain = lost = 0
max_wait = 0.0
while time.monotonic() < end:
    first_failed, ok, waited = ping(pinger)
    pings += 1
    eagain += first_failed
    lost += not ok
    max_wait = max(max_wait, waited)
    time.sleep(EVERY)
c.event("flood", pings, eagain, lost, "%.1f" % max_wait)
while True:
    ping(pinger)
    time.sleep(EVERY)
