"""Writes what it inherited to <dir>/report-PID.json, then serves with fd 3
switched to non-blocking (as asyncio or tokio apps do).

Run behind the sh prelude in the tests, which puts the signal mask and
ignored set it saw before python changed them (python ignores SIGPIPE and
SIGXFSZ itself) into $SUPTEST_SIG. Where no /proc/self/status tells the
prelude (macOS), the same line is made here: python leaves the mask alone
and reports inherited SIG_IGN through getsignal(); only SIGPIPE and
SIGXFSZ, which it ignores itself, cannot be told apart.
"""

import fcntl
import json
import os
import signal
import socket
import stat
import sys

import childlib as c


def own_signal_state():
    """SigBlk:HEX;SigIgn:HEX; as the Linux prelude writes it."""
    python_ignores = {signal.SIGPIPE, getattr(signal, "SIGXFSZ", signal.SIGPIPE)}
    blocked = ignored = 0
    for sig in signal.pthread_sigmask(signal.SIG_BLOCK, []):
        blocked |= 1 << (int(sig) - 1)
    for sig in signal.valid_signals():
        if sig in python_ignores:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                ignored |= 1 << (int(sig) - 1)
        except (OSError, ValueError):
            pass
    return "SigBlk:%016x;SigIgn:%016x;" % (blocked, ignored)


# /dev/fd lists our descriptors on Linux (a link to /proc/self/fd) and macOS.
fds = {}
for name in os.listdir("/dev/fd"):
    fd = int(name)
    try:
        os.fstat(fd)  # the fd listdir used is closed by now
    except OSError:
        continue
    try:
        fds[fd] = os.readlink("/dev/fd/%d" % fd)
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
    "sig_prelude": os.environ.get("SUPTEST_SIG")
    or (None if sys.platform.startswith("linux") else own_signal_state()),
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
