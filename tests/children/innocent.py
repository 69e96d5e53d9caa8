"""A process the supervisor did not start. The tests plant its pid (and
process group) in the supervisor's pid file or state.json and check that it
survives untouched.

Catches every catchable signal and records it in <dir>/innocent.log as
"signal PID SIGNUM"; records "ready PID PGID" once its handlers are set.
With "daemon" it forks the way a classic daemon does and the parent exits
at once, leaving the child alive in a process group whose leader is gone.
"""

import os
import signal
import sys
import time

DIR = sys.argv[1]


def log(line):
    fd = os.open(
        os.path.join(DIR, "innocent.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
    )
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def on_signal(signum, frame):
    log("signal %d %d" % (os.getpid(), signum))


for s in signal.valid_signals():
    if s in (signal.SIGKILL, signal.SIGSTOP):
        continue
    try:
        signal.signal(s, on_signal)
    except (OSError, ValueError):
        pass

if "daemon" in sys.argv[2:] and os.fork() > 0:
    os._exit(0)
log("ready %d %d" % (os.getpid(), os.getpgrp()))
while True:
    time.sleep(3600)
