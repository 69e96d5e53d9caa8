"""A notify child for handover tests, serving HTTP from threads as a real
server does. argv[2] is the mode:

  ready AFTER        READY=1 after AFTER seconds (before that it does not
                     accept), then serve
  exit AFTER CODE    exit CODE after AFTER seconds, never ready
  never              never send READY=1 (serves nothing either)

followed by any of (for max_memory):

  grow MIB           take MIB MiB of resident memory at start ("grown")
  grow-on-term MIB   take MIB MiB more on SIGTERM, while draining
  ping SECS          once ready, WATCHDOG=1 every SECS until SIGTERM
                     (a "pinged N" event each second)

It records $NOTIFY_SOCKET at start (a "notify-socket PATH" event).

The mode can be overridden for the next start by a file `next-mode` in the
temp dir (one line, the words above; removed once read), so a test can make
only the new child of a handover misbehave.

GET / answers "PID\\n" at once; GET /slow?SECS answers "PID\\n" after SECS
seconds (default 1). On SIGTERM: a "term" event, then it stops accepting,
finishes the requests it holds, records "drained" and exits 0.
"""

import os
import sys
import threading
import time

import childlib as c


def mode():
    try:
        with open(c.path("next-mode")) as f:
            words = f.read().split()
        os.unlink(c.path("next-mode"))
        return words
    except OSError:
        return sys.argv[2:]


stopping = threading.Event()
busy = [0]
lock = threading.Lock()


def handle(conn):
    with lock:
        busy[0] += 1
    try:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 8192:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        target = line.split(" ")[1] if line.count(" ") >= 2 else "/"
        if target.startswith("/slow"):
            secs = float(target.split("?", 1)[1]) if "?" in target else 1.0
            c.event("slow-begin")
            time.sleep(secs)
            c.event("slow-end")
        body = b"%d\n" % os.getpid()
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
    except OSError:
        pass
    finally:
        conn.close()
        with lock:
            busy[0] -= 1


hog = []


def grow(mib):
    hog.append(b"x" * (int(mib) << 20))
    c.event("grown", mib)


def option(name):
    return words[words.index(name) + 1] if name in words else None


def on_term(signum, frame):
    c.event("term")
    stopping.set()
    if option("grow-on-term"):
        grow(option("grow-on-term"))


import signal  # noqa: E402

signal.signal(signal.SIGTERM, on_term)
words = mode()
sock = c.listener()
c.event("start", *words)
c.event("notify-socket", os.environ.get("NOTIFY_SOCKET", "-"))
if option("grow"):
    grow(option("grow"))
if words[0] == "ready":
    time.sleep(float(words[1]))
    # Recorded before it is said: the supervisor may signal the old child
    # (which records "term") before this process runs again.
    c.event("ready")
    c.notify("STATUS=serving\nREADY=1")
    if option("ping"):

        def ping(every):
            sent, last = 0, time.monotonic()
            while not stopping.is_set():
                c.notify("WATCHDOG=1")
                sent += 1
                if time.monotonic() - last >= 1:
                    c.event("pinged", sent)
                    last = time.monotonic()
                time.sleep(every)

        threading.Thread(target=ping, args=(float(option("ping")),), daemon=True).start()
elif words[0] == "exit":
    time.sleep(float(words[1]))
    c.event("exit", words[2])
    os._exit(int(words[2]))
else:
    while not stopping.is_set():
        time.sleep(0.05)
    os._exit(0)

sock.setblocking(False)
import select  # noqa: E402

while not stopping.is_set():
    try:
        r, _, _ = select.select([sock], [], [], 0.05)
    except InterruptedError:
        continue
    if not r:
        continue
    try:
        conn, _ = sock.accept()
    except (BlockingIOError, InterruptedError):
        continue
    conn.setblocking(True)
    threading.Thread(target=handle, args=(conn,), daemon=True).start()

# Drain: no more accepts; finish what we hold.
while True:
    with lock:
        if busy[0] == 0:
            break
    time.sleep(0.01)
c.event("drained")
os._exit(0)
