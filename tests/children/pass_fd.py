"""Passes its listening socket (fd 3) over the Unix socket <dir>/pass.sock
(SCM_RIGHTS) to whoever listens there — a process outside the
supervisor's tree — then serves its pid like serve.py. Nobody there (the
receiver is gone): it just serves."""

import socket
import time

import childlib as c

c.exit_on_term()
sock = c.listener()
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
    for _ in range(1000):
        try:
            u.connect(c.path("pass.sock"))
            socket.send_fds(u, [b"fd3"], [sock.fileno()])
            break
        except FileNotFoundError:
            time.sleep(0.01)
        except OSError:
            break
c.event("start")
c.serve(sock)
