"""Children that escape their process group or break the socket, the way
real programs do. The mode is argv[2]:

  daemon    the classic daemon: fork, setsid, fork again; the first two
            exit at once and the grandchild serves fd 3
  setsid    serves, and starts a grandchild that calls setsid() and serves
            fd 3 too
  setpgid   the same with setpgid(0, 0)
  leave     tries to move itself into its parent's (the supervisor's)
            process group ("left" or, refused, "stayed PGRP ERRNO"), then
            serves and ignores SIGTERM until argv[3] == "polite"
  shutdown  serves one request, then shuts fd 3 down (SHUT_RDWR, a common
            way to wake a blocked accept) and exits 1
  helper    starts a helper in a new session (no fd 3, stdout and stderr
            inherited) that prints now and then, and serves

Every process that serves records "serve PID T GEN", GEN being the pid of
the supervisor's direct child it descends from; the direct child records
"start PID T". Answers are "PID\n".
"""

import os
import signal
import socket
import subprocess
import sys
import time

import childlib as c

mode = sys.argv[2]
args = sys.argv[3:]


def serve_as(gen):
    sock = c.listener()
    c.event("serve", gen)
    c.serve(sock)


def grandchild(how):
    """Runs in a forked grandchild: leave the group, then serve."""
    gen = os.getppid()
    if how == "setsid":
        os.setsid()
    else:
        os.setpgid(0, 0)
    serve_as(gen)


c.event("start")
me = os.getpid()

if mode == "daemon":
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    serve_as(me)

elif mode in ("setsid", "setpgid"):
    if os.fork() == 0:
        grandchild(mode)
        os._exit(0)
    serve_as(me)

elif mode == "leave":
    if "polite" not in args:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The child leads a session of its own: it cannot join another
    # session's group (EPERM), nor leave its own while it leads it.
    try:
        os.setpgid(0, os.getpgid(os.getppid()))
    except OSError as e:
        c.event("stayed", os.getpgrp(), e.errno)
    else:
        c.event("left", os.getpgrp())
    serve_as(me)

elif mode == "shutdown":
    sock = c.listener()
    c.event("serve", me)
    conn, _ = sock.accept()
    with conn:
        conn.recv(1024)
        conn.sendall(b"%d\n" % me)
    sock.shutdown(socket.SHUT_RDWR)
    c.event("shut")
    sys.exit(1)

elif mode == "helper":
    # It outlives the supervisor on purpose, and then loses its stdout
    # (nobody reads the pipe any more): it keeps going quietly.
    code = (
        "import time, sys\n"
        "while True:\n"
        "    try:\n"
        "        print('helper alive', flush=True)\n"
        "    except OSError:\n"
        "        pass\n"
        "    time.sleep(0.2)\n"
    )
    helper = subprocess.Popen(
        [sys.executable, "-c", code, c.DIR, "helper"], start_new_session=True
    )
    c.event("helper", helper.pid)
    serve_as(me)
