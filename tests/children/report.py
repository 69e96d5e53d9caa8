"""Writes what it inherited to <dir>/report-PID.json, then serves with fd 3
switched to non-blocking (as asyncio or tokio apps do).

Run behind the sh prelude in the tests, which puts the signal mask and
ignored set it saw before python changed them (python ignores SIGPIPE and
SIGXFSZ itself) into $SUPTEST_SIG.
"""

import fcntl
import json
import os
import socket
import stat

import childlib as c

fds = {}
for name in os.listdir("/proc/self/fd"):
    fd = int(name)
    try:
        os.fstat(fd)  # the fd listdir used is closed by now
    except OSError:
        continue
    try:
        fds[fd] = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        fds[fd] = "?"

pid = os.getpid()
rep = {
    "pid": pid,
    "env": {
        k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
    },
    "fds": sorted(fds),
    "fd_targets": {str(k): v for k, v in sorted(fds.items())},
    "pgrp": os.getpgrp(),
    "sig_prelude": os.environ.get("SUPTEST_SIG"),
}

sock = None
try:
    rep["fd3_blocking"] = os.get_blocking(3)
    rep["fd3_cloexec"] = bool(fcntl.fcntl(3, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
    sock = c.listener()
    rep["fd3_stream"] = (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
    )
    rep["fd3_accepting"] = bool(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    )
    rep["fd3_inet"] = sock.family == socket.AF_INET
    rep["fd3_name"] = list(sock.getsockname()[:2])
except Exception as e:  # reported, and the test fails on it
    rep["fd3_error"] = repr(e)

st0 = os.fstat(0)
rep["stdin_is_devnull"] = (
    stat.S_ISCHR(st0.st_mode) and st0.st_rdev == os.stat("/dev/null").st_rdev
)

c.write_atomic("report-%d.json" % pid, json.dumps(rep))
c.event("start")
if sock is not None:
    os.set_blocking(3, False)
    c.serve(sock)
