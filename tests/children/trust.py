"""A child for the trust tests (tests/hardening_proc.rs). argv[2] is the
mode, argv[3] a folder it may write (the child may run as another user,
who cannot write the test's temp dir):

  report OUT         write OUT/trust-PID.json (pid, session, process group,
                     what opening /dev/tty did, umask, uid, environment),
                     then serve
  helper OUT         start a detached helper (`setsid sleep 100000`, its
                     stdout and stderr the inherited log pipes), append its
                     pid to OUT/helpers, and exit 1 at once
  status OUT TEXT    send STATUS=TEXT (Python escapes such as \\x1b are
                     decoded) and READY=1 to $NOTIFY_SOCKET, then serve
  shout OUT TEXT     write TEXT (decoded the same way) and a newline to
                     stdout, then serve
  chatty OUT N       READY=1, then N distinct STATUS= texts 2 ms apart, then
                     STATUS=final, then serve
  notify OUT         serve; each line "MSG" written to OUT/send is sent as a
                     notify datagram once (for the socket tests)
"""

import errno
import json
import os
import subprocess
import sys
import time

import childlib as c

mode = sys.argv[2]
out = sys.argv[3]


def write_json(name, value):
    tmp = os.path.join(out, "%s.tmp" % name)
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, os.path.join(out, name))


if mode == "report":
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
        os.close(fd)
        tty = "opened"
    except OSError as e:
        tty = errno.errorcode.get(e.errno, str(e.errno))
    mask = os.umask(0)
    os.umask(mask)
    pid = os.getpid()
    write_json(
        "trust-%d.json" % pid,
        {
            "pid": pid,
            "sid": os.getsid(0),
            "pgid": os.getpgrp(),
            "tty": tty,
            "umask": "%03o" % mask,
            "uid": os.getuid(),
            "env": dict(os.environ),
        },
    )
    c.serve(c.listener())

elif mode == "helper":
    helper = subprocess.Popen(
        ["sleep", "100000"], start_new_session=True, stdin=subprocess.DEVNULL
    )
    fd = os.open(os.path.join(out, "helpers"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, b"%d\n" % helper.pid)
    os.close(fd)
    sys.exit(1)

elif mode == "status":
    text = sys.argv[4].encode().decode("unicode_escape")
    c.notify(("STATUS=%s\nREADY=1" % text).encode("latin-1"))
    c.serve(c.listener())

elif mode == "shout":
    text = sys.argv[4].encode().decode("unicode_escape")
    sys.stdout.buffer.write(text.encode("latin-1") + b"\n")
    sys.stdout.buffer.flush()
    c.serve(c.listener())

elif mode == "chatty":
    c.notify(b"READY=1")
    for i in range(int(sys.argv[4])):
        c.notify(b"STATUS=step %d" % i)
        time.sleep(0.002)
    c.notify(b"STATUS=final")
    c.serve(c.listener())

elif mode == "notify":
    c.notify(b"READY=1")
    sock = c.listener()
    import threading

    threading.Thread(target=c.serve, args=(sock,), daemon=True).start()
    path = os.path.join(out, "send")
    done = 0
    while True:
        try:
            with open(path) as f:
                lines = f.read().splitlines()
        except OSError:
            lines = []
        for line in lines[done:]:
            c.notify(line.encode())
        done = len(lines)
        time.sleep(0.05)
