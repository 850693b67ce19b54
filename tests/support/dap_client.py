"""A small scripted Debug Adapter Protocol client for tests and benchmarks.

It speaks real DAP over TCP (``Content-Length`` framed JSON) and drives a
session the way VS Code attaches to debugpy, so tests can check that the
relay chain carries a debug session end to end. Stdlib only.

Framing (:class:`FrameParser`) is kept apart from I/O so it can be tested
on its own; :class:`DapClient` adds a socket, a reader thread and helpers.
"""

import itertools
import json
import socket
import threading
import time

MAX_HEADER_BYTES = 8192


class FrameError(ValueError):
    """The peer sent bytes that are not a valid DAP frame."""


class DapError(Exception):
    """A request failed (``success: false``); ``response`` is the full message."""

    def __init__(self, command, message, response=None):
        super().__init__(f"{command}: {message}")
        self.command = command
        self.response = response


class DapConnectionClosed(ConnectionError):
    """The connection ended (or broke) before the awaited message arrived."""


class FrameParser:
    """Turn a byte stream into DAP messages (sans-I/O).

    ``feed()`` accepts chunks of any size: a partial frame is buffered until
    the rest arrives, and one chunk may hold several frames.
    """

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        """Add bytes; return the complete messages (dicts), raise FrameError if malformed."""
        self._buffer += data
        messages = []
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    raise FrameError("no end of header within %d bytes" % MAX_HEADER_BYTES)
                return messages
            length = self._content_length(bytes(self._buffer[:end]))
            start = end + 4
            if len(self._buffer) < start + length:
                return messages
            body = bytes(self._buffer[start : start + length])
            del self._buffer[: start + length]
            try:
                message = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise FrameError(f"body is not valid JSON: {exc}") from None
            if not isinstance(message, dict):
                raise FrameError("body is not a JSON object")
            messages.append(message)

    @staticmethod
    def _content_length(header):
        length = None
        for line in header.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                raise FrameError(f"malformed header line {line[:80]!r}")
            if name.strip().lower() == b"content-length":
                value = value.strip()
                if not value.isdigit():
                    raise FrameError(f"bad Content-Length {value[:80]!r}")
                length = int(value)
        if length is None:
            raise FrameError(f"header without Content-Length: {header[:80]!r}")
        return length


def encode_message(message):
    """Return one DAP frame (header and body) for a message dict."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


class DapClient:
    """A DAP client over one TCP connection, with a background reader thread.

    Attributes:
        messages: every message received, in order of arrival.
        events: every event message received, in order of arrival.
        closed_reason: ``None`` while connected, else why the reader stopped.
    """

    def __init__(self, sock):
        self.sock = sock
        self.messages = []  # every message received, in order of arrival
        self.events = []
        self.closed_reason = None
        self._reader_error = None  # the FrameError or OSError that stopped the reader
        self._responses = {}  # request_seq -> response message
        self._consumed = set()  # indexes into events already returned by wait_event
        self._seq = itertools.count(1)
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="dap-client-reader", daemon=True)
        self._reader.start()

    @classmethod
    def connect(cls, host, port, timeout=10.0):
        """Connect, retrying until ``timeout`` since the server may not listen yet."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
        sock.settimeout(None)
        # We write whole frames in one call, but Nagle would still delay a
        # request while an earlier segment is unacknowledged.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock)

    def close(self):
        """Close the connection and stop the reader thread."""
        with self._cond:
            self.closed_reason = self.closed_reason or "closed by client"
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _read_loop(self):
        parser = FrameParser()
        reason = "connection closed by peer"
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for message in parser.feed(data):
                    self._dispatch(message)
        except (OSError, FrameError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._reader_error = exc
        with self._cond:
            self.closed_reason = self.closed_reason or reason
            self._cond.notify_all()

    def _dispatch(self, message):
        kind = message.get("type")
        if kind == "request":
            # Reverse requests (runInTerminal, startDebugging) are not supported.
            self._send(
                {
                    "type": "response",
                    "request_seq": message.get("seq"),
                    "success": False,
                    "command": message.get("command"),
                    "message": "not supported by test client",
                }
            )
            return
        with self._cond:
            self.messages.append(message)
            if kind == "response":
                self._responses[message.get("request_seq")] = message
            elif kind == "event":
                self.events.append(message)
            self._cond.notify_all()

    def _send(self, message):
        with self._send_lock:  # seq order is wire order
            message["seq"] = next(self._seq)
            self.sock.sendall(encode_message(message))
        return message["seq"]

    def _wait_for(self, find, timeout, what):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = find()
                if found is not None:
                    return found
                if self.closed_reason is not None:
                    raise DapConnectionClosed(f"waiting for {what}: {self.closed_reason}") from self._reader_error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
                self._cond.wait(remaining)

    def send_request(self, command, arguments=None):
        """Send a request without waiting; return its ``seq``."""
        message = {"type": "request", "command": command}
        if arguments is not None:
            message["arguments"] = arguments
        return self._send(message)

    def wait_response(self, seq, timeout=10.0):
        """Wait for the response to request ``seq``; return its body (``{}`` if none).

        Raises:
            DapError: the response has ``success: false``.
            TimeoutError, DapConnectionClosed: no response came.
        """
        response = self._wait_for(lambda: self._responses.pop(seq, None), timeout, f"response to #{seq}")
        if not response.get("success"):
            raise DapError(response.get("command"), response.get("message", "failed"), response)
        return response.get("body") or {}

    def exchange(self, command, arguments=None, timeout=10.0):
        """Send a request and return its whole response message, failed or not."""
        seq = self.send_request(command, arguments)
        return self._wait_for(lambda: self._responses.pop(seq, None), timeout, f"response to #{seq}")

    def request(self, command, arguments=None, timeout=10.0):
        """Send a request and return the body of its successful response."""
        return self.wait_response(self.send_request(command, arguments), timeout)

    def wait_event(self, name, timeout=10.0, predicate=None):
        """Return the earliest event ``name`` not yet returned (matching ``predicate``).

        Events received before the call count, so there is no race with the
        request that triggers them. Each event is returned at most once.
        """

        def find():
            for index, event in enumerate(self.events):
                if (
                    index not in self._consumed
                    and event.get("event") == name
                    and (predicate is None or predicate(event))
                ):
                    self._consumed.add(index)
                    return event
            return None

        return self._wait_for(find, timeout, f"event {name!r}")

    def output(self, category=None):
        """Text of the ``output`` events so far, of one ``category`` (e.g. ``"stdout"``)
        or of all but ``telemetry`` (which debugpy's adapter sends on connect)."""
        with self._cond:
            bodies = [e.get("body", {}) for e in self.events if e.get("event") == "output"]
        wanted = (lambda c: c == category) if category else (lambda c: c != "telemetry")
        return "".join(b.get("output", "") for b in bodies if wanted(b.get("category")))

    def attach_and_configure(
        self, breakpoints, *, path_mappings=None, just_my_code=True, exception_filters=(), attach_args=None, timeout=10
    ):
        """Initialize, attach, set breakpoints and finish configuration.

        Works against debugpy's adapter (which answers ``attach`` only after
        ``configurationDone``) and pydevd's in-process DAP (which answers it
        at once, right after sending ``initialized``): the attach response is
        collected last.

        Args:
            breakpoints: ``{path: [line, ...]}`` as the client sees paths.
            path_mappings: VS Code ``pathMappings`` (``localRoot``/``remoteRoot`` dicts).
            exception_filters: e.g. ``["uncaught"]``; none by default so a test
                whose handler raises is not left suspended.
            attach_args: more ``attach`` arguments, e.g. ``{"redirectOutput": True}``.
        Returns:
            ``{path: [breakpoint, ...]}`` from the setBreakpoints responses.
        """
        self.request(
            "initialize",
            {
                "clientID": "lambda-debugger-tests",
                "clientName": "lambda-debugger tests",
                "adapterID": "debugpy",
                "locale": "en",
                "pathFormat": "path",
                "linesStartAt1": True,
                "columnsStartAt1": True,
                "supportsVariableType": True,
                "supportsVariablePaging": True,
                "supportsRunInTerminalRequest": False,
            },
            timeout=timeout,
        )
        attach = self.send_request(
            "attach",
            {
                "name": "lambda-debugger tests",
                "type": "debugpy",
                "request": "attach",
                "justMyCode": just_my_code,
                "pathMappings": list(path_mappings or []),
                **(attach_args or {}),
            },
        )
        self.wait_event("initialized", timeout=timeout)
        result = {}
        for path, lines in breakpoints.items():
            body = self.request(
                "setBreakpoints",
                {
                    "source": {"path": path},
                    "breakpoints": [{"line": line} for line in lines],
                    "lines": list(lines),
                    "sourceModified": False,
                },
                timeout=timeout,
            )
            result[path] = body.get("breakpoints", [])
        self.request("setExceptionBreakpoints", {"filters": list(exception_filters)}, timeout=timeout)
        self.request("configurationDone", timeout=timeout)
        self.wait_response(attach, timeout=timeout)
        return result

    def wait_stopped(self, timeout=10.0):
        """Wait for the next ``stopped`` event; return its body."""
        return self.wait_event("stopped", timeout=timeout).get("body", {})

    def threads(self):
        """The debuggee's threads (list of ``{"id", "name"}``)."""
        return self.request("threads").get("threads", [])

    def stack_trace(self, thread_id):
        """The frames of a stopped thread, innermost first."""
        return self.request("stackTrace", {"threadId": thread_id}).get("stackFrames", [])

    def scopes(self, frame_id):
        """The scopes (``Locals``, ``Globals``) of a frame."""
        return self.request("scopes", {"frameId": frame_id}).get("scopes", [])

    def variables(self, ref):
        """The variables of a ``variablesReference``, as ``{name: variable}``."""
        body = self.request("variables", {"variablesReference": ref})
        return {v["name"]: v for v in body.get("variables", [])}

    def evaluate(self, expression, frame_id, context="repl"):
        """Evaluate an expression in a frame; return the ``result`` string."""
        return self.request("evaluate", {"expression": expression, "frameId": frame_id, "context": context})["result"]

    def continue_(self, thread_id):
        """Resume the debuggee (debugpy resumes all threads)."""
        return self.request("continue", {"threadId": thread_id})

    def disconnect(self, terminate=False, timeout=10.0):
        """Send ``disconnect`` (the debuggee runs on unless ``terminate``); a
        connection that closes before the response comes is fine here."""
        try:
            self.request("disconnect", {"restart": False, "terminateDebuggee": terminate}, timeout=timeout)
        except (DapConnectionClosed, OSError):
            pass
