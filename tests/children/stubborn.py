"""Ignores SIGTERM and starts a grandchild that ignores it too, stays in the
child's process group and also holds fd 3. The child records
"start PID T alive=..." (earlier children or grandchildren still alive);
both record "ready ROLE". With "leave" the child exits 1 as soon as its
grandchild is ready, leaving it behind in the group."""

import os
import signal
import subprocess
import sys
import time

import childlib as c

signal.signal(signal.SIGTERM, signal.SIG_IGN)
args = sys.argv[2:]
role = "grandchild" if "grandchild" in args else "child"
if role == "child":
    others = c.live_predecessors()
    c.event("start", "alive=" + ",".join(str(p) for p in others))
    gc = subprocess.Popen([sys.executable, c.SCRIPT, c.DIR, "grandchild"], pass_fds=(3,))
    if "leave" in args:
        mark = "ready %d " % gc.pid
        while True:
            with open(c.path("events.log")) as f:
                if any(line.startswith(mark) for line in f):
                    break
            time.sleep(0.01)
        c.event("exit")
        sys.exit(1)
c.event("ready", role)
while True:
    time.sleep(3600)
