"""uvicorn, for overlapped restarts: answer what was accepted before the stop.

Run it exactly as you would run uvicorn (it takes the same arguments):

    [child]
    command = ["/path/to/venv/bin/python", "/path/to/uvicorn_handover.py",
               "--fd", "3", "myapp:app"]

or, where the app starts uvicorn in code, call `patch()` from this file
before `uvicorn.run(...)` / `Server.serve(...)`.

Why: with `[restart] overlap = true` the old and the new child accept from
the one listening socket until the old one's shutdown closes its copy.
uvicorn's graceful shutdown (0.54 and 0.55: `shutdown()` in
`protocols/http/h11_impl.py` and `httptools_impl.py`) closes at once every
connection that has no request cycle yet, including one it accepted a
moment before the stop signal whose request is still unread in the
kernel's buffer: that client gets no answer. Upstream knows it
(Kludex/uvicorn#2757). In tests/servers_handover.rs, five overlapped
restarts of stock uvicorn under a client loop lose 0 to 2 such requests;
through this launcher, none.

What it changes, and nothing else: at shutdown, a connection that has not
had its first request yet is given uvicorn's own keep-alive timeout
(`--timeout-keep-alive`, 5 s by default) to send it; that one request is
answered with `Connection: close`, and a connection that sends nothing in
that time is closed as before. Connections that already had a request
(idle keep-alive ones) are closed at once, as uvicorn does: a client
reusing one must be ready for that anyway (RFC 9112, section 9.3.1).

Should a future uvicorn not have the parts this relies on, it says so on
stderr and runs uvicorn unchanged. One process only: `--workers` starts
fresh interpreters this patch does not reach (and a supervisor that hands
over a socket wants one server process anyway).
"""

import sys


def _patch(protocol):
    """Make `protocol.shutdown` wait for a fresh connection's first request."""
    original_shutdown = protocol.shutdown
    original_data_received = protocol.data_received

    def shutdown(self):
        if self.cycle is not None or self.transport.is_closing():
            return original_shutdown(self)
        # Accepted, nothing read yet: its request is on its way (or in the
        # kernel's buffer already); answer it, then close.
        self._last_request_only = True
        self._first_request_timer = self.loop.call_later(
            self.timeout_keep_alive, original_shutdown, self
        )

    def data_received(self, data):
        original_data_received(self, data)
        if getattr(self, "_last_request_only", False) and self.cycle is not None:
            self._last_request_only = False
            self.cycle.keep_alive = False
            _say_close(self.cycle)
            timer = getattr(self, "_first_request_timer", None)
            if timer is not None:
                timer.cancel()
                self._first_request_timer = None

    protocol.shutdown = shutdown
    protocol.data_received = data_received


def _say_close(cycle):
    """Add `Connection: close` to the cycle's answer. `keep_alive = False`
    alone closes the connection after the answer without saying so (h11
    says it itself only to an HTTP/1.0 request): a keep-alive client would
    take the connection back into its pool and may send its next request
    into the close. The app's task is only scheduled yet: it calls
    `cycle.send` through the instance, so this one is used."""
    original_send = cycle.send

    async def send(message):
        if message.get("type") == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(bytes(k).lower() == b"connection" for k, _ in headers):
                message = dict(message, headers=headers + [(b"connection", b"close")])
        await original_send(message)

    cycle.send = send


def patch():
    """Patch every HTTP protocol uvicorn has here, or none: True if done."""
    protocols = []
    for module, name in [
        ("uvicorn.protocols.http.h11_impl", "H11Protocol"),
        ("uvicorn.protocols.http.httptools_impl", "HttpToolsProtocol"),
    ]:
        try:
            protocol = getattr(__import__(module, fromlist=[name]), name)
        except ImportError:
            continue  # that parser is not installed
        needed = ("shutdown", "data_received", "timeout_keep_alive_handler")
        if not all(hasattr(protocol, a) for a in needed):
            return False  # nothing patched: uvicorn runs unchanged
        protocols.append(protocol)
    for protocol in protocols:
        _patch(protocol)
    return bool(protocols)


if __name__ == "__main__":
    import uvicorn
    import uvicorn.main

    if not patch():
        print(
            "uvicorn_handover: this uvicorn (%s) is not the one this launcher "
            "knows; running it unchanged" % uvicorn.__version__,
            file=sys.stderr,
        )
    sys.argv[0] = "uvicorn"
    sys.exit(uvicorn.main.main())
