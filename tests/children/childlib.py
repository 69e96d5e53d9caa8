"""Shared helpers for the test children. Standard library only.

Every child gets the test's temp dir as argv[1]; that also lets the test
find every process it caused by its argv. Events go to <dir>/events.log as
one O_APPEND write per line: "KIND PID MONOTONIC [EXTRA...]".
"""

import os
import select
import signal
import socket
import subprocess
import sys
import time

DIR = sys.argv[1]
SCRIPT = os.path.abspath(sys.argv[0])


def path(name):
    return os.path.join(DIR, name)


def append(name, line):
    fd = os.open(path(name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def event(kind, *extra):
    words = [kind, str(os.getpid()), "%.6f" % time.monotonic()]
    words.extend(str(x) for x in extra)
    append("events.log", " ".join(words))


def exit_on_term():
    """On SIGTERM: record a "term" event and exit 0 at once."""

    def on_term(signum, frame):
        event("term")
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)


def touch(name):
    with open(path(name), "a"):
        pass


def write_atomic(name, text):
    tmp = path("%s.tmp%d" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path(name))


def alive(pid):
    """A live, non-zombie process running this same script for this same dir."""
    if not os.path.isdir("/proc/self"):
        return _alive_ps(pid)
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return SCRIPT.encode() in argv and DIR.encode() in argv


def _alive_ps(pid):
    """alive() without /proc (macOS): `ps` gives the state and the command
    line, its words joined by spaces, so the paths are looked for as text."""
    try:
        out = subprocess.run(
            ["ps", "-ww", "-o", "stat=", "-o", "args=", "-p", str(pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=10,
        ).stdout.decode(errors="replace")
    except (OSError, subprocess.SubprocessError):
        return False
    line = out.strip()
    if not line or line.startswith("Z"):
        return False
    return SCRIPT in line and DIR in line


def live_predecessors():
    """Pids of earlier children or grandchildren (anything that recorded an
    event) that are still alive."""
    try:
        with open(path("events.log")) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    pids = set()
    for line in lines:
        words = line.split()
        if len(words) >= 2 and words[1].isdigit():
            pids.add(int(words[1]))
    pids.discard(os.getpid())
    return sorted(p for p in pids if alive(p))


def notify(msg, fds=()):
    """One sd_notify datagram to $NOTIFY_SOCKET (`@name`: an abstract
    socket): `msg` as text or bytes, with `fds` passed along (SCM_RIGHTS)
    as a client handing descriptors over does."""
    if isinstance(msg, str):
        msg = msg.encode()
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if fds:
            import array

            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
            s.sendmsg([msg], anc, 0, addr)
        else:
            s.sendto(msg, addr)
    finally:
        s.close()


def listener():
    """The inherited listening socket (fd 3)."""
    return socket.socket(fileno=3)


def serve(sock, on_request=None):
    """One short request per connection, answered with our pid and a newline;
    `on_request()`, if given, runs for each connection before the answer."""
    reply = b"%d\n" % os.getpid()
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            select.select([sock], [], [])
            continue
        if on_request is not None:
            on_request()
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(1024)
                conn.sendall(reply)
            except OSError:
                pass
