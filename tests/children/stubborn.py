"""Ignores SIGTERM and starts a grandchild that ignores it too, stays in the
child's process group and also holds fd 3. Both record "ready ROLE"."""

import os
import signal
import subprocess
import sys
import time

import childlib as c

signal.signal(signal.SIGTERM, signal.SIG_IGN)
role = sys.argv[2] if len(sys.argv) > 2 else "child"
if role == "child":
    subprocess.Popen([sys.executable, c.SCRIPT, c.DIR, "grandchild"], pass_fds=(3,))
c.event("ready", role)
while True:
    time.sleep(3600)
